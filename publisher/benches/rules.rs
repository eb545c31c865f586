//! How long applying forwards takes on a real kernel, in a network namespace made for the
//! bench (needs root; says why and exits otherwise): a full ruleset of 1,000 and of 10,000
//! forwards, of 1,000 dual-stack ones (each port over IPv4 and IPv6: 2,000 entries, one
//! transaction for nftables), and one port changed among 10,000, for nftables (full replace
//! vs element delta) and the iptables fallback (which rewrites its chains, then the
//! ip6tables ones), each the median of 7 runs,
//! the program's start included (`nft -f -`, `sh -s` with `iptables-restore`).
//!
//! ```sh
//! cargo bench -p hostport-publisher --bench rules
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use hostport_publisher::claimed::Protocol;
use hostport_publisher::deny::DenyList;
use hostport_publisher::forwarding::exec::Executor;
use hostport_publisher::forwarding::nft::Rules;
use hostport_publisher::forwarding::rules::{Forward, ForwardSet, Target};
use hostport_publisher::forwarding::sync::{Backend, Outcome, Syncer};

const RUNS: usize = 7;

fn forwards(ports: std::ops::Range<u16>) -> ForwardSet {
    ports
        .map(|port| Forward {
            protocol: Protocol::Tcp,
            port,
            target: Target {
                address: Ipv4Addr::new(198, 51, 100, 2).into(),
                port,
            },
        })
        .collect()
}

/// Each port over IPv4 and IPv6.
fn dual_stack(ports: std::ops::Range<u16>) -> ForwardSet {
    let v6 = ports.clone().map(|port| Forward {
        protocol: Protocol::Tcp,
        port,
        target: Target {
            address: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
            port,
        },
    });
    forwards(ports).iter().chain(v6).collect()
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn syncer(ns: &str, backend: Backend) -> Syncer {
    Syncer::new(
        backend,
        Rules {
            interface: Some("ext0".into()),
            masquerade: true,
            masquerade6: false,
        },
        DenyList::default(),
        Executor::Local {
            prefix: vec!["ip".into(), "netns".into(), "exec".into(), ns.into()],
        },
        false,
    )
}

/// Median time of `RUNS` full syncs of `set` (each from scratch).
async fn full(ns: &str, backend: &Backend, set: &ForwardSet) -> f64 {
    let mut samples = vec![];
    for _ in 0..RUNS {
        let mut syncer = syncer(ns, backend.clone());
        let started = Instant::now();
        let outcome = syncer.sync(set).await.expect("full sync");
        samples.push(started.elapsed());
        assert!(matches!(outcome, Outcome::Replaced { .. }));
    }
    median(samples)
}

/// Median time of changing one port among `set`, after a full sync of it.
async fn one_change(ns: &str, backend: &Backend, set: &ForwardSet) -> f64 {
    let mut syncer = syncer(ns, backend.clone());
    syncer.sync(set).await.expect("full sync");
    let mut samples = vec![];
    let mut current = set.clone();
    for run in 0..RUNS {
        let changed: ForwardSet = current
            .iter()
            .filter(|f| f.port != 20_000 + run as u16)
            .chain(forwards(60_000 + run as u16..60_001 + run as u16).iter())
            .collect();
        let started = Instant::now();
        syncer.sync(&changed).await.expect("change");
        samples.push(started.elapsed());
        current = changed;
    }
    median(samples)
}

#[tokio::main]
async fn main() {
    let name = format!("hpub-bench-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &name]).status() {
        Ok(status) if status.success() => {}
        _ => {
            eprintln!("rules: network namespaces cannot be created here (needs root); no figures");
            return;
        }
    }
    let ns = Namespace(name);
    // Clear of the default deny-list (10250, …): exactly 1,000 and 10,000 forwards.
    let (thousand, ten_thousand) = (forwards(20_000..21_000), forwards(20_000..30_000));
    let thousand_dual = dual_stack(20_000..21_000);
    for (label, backend) in [
        ("nftables", Backend::Nft),
        (
            "iptables-nft",
            Backend::Iptables {
                command: "iptables".into(),
            },
        ),
        (
            "iptables-legacy",
            Backend::Iptables {
                command: "iptables-legacy".into(),
            },
        ),
    ] {
        let full_1k = full(&ns.0, &backend, &thousand).await;
        let full_10k = full(&ns.0, &backend, &ten_thousand).await;
        let full_dual = full(&ns.0, &backend, &thousand_dual).await;
        let change = one_change(&ns.0, &backend, &ten_thousand).await;
        println!(
            "rules: {label}: full apply of 1,000 forwards {full_1k:.1} ms, of 10,000 {full_10k:.1} ms, of 1,000 dual-stack {full_dual:.1} ms; one port changed among 10,000 {change:.1} ms (median of {RUNS})"
        );
        syncer(&ns.0, backend).cleanup().await.expect("cleanup");
    }
}
