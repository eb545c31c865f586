//! Real kernels, real `nft` and `iptables`, real traffic: a client reaches an echo server on
//! a node through the router's DNAT, and stops reaching it when the forward goes.
//! Skipped, saying why, only where network namespaces cannot be created.

mod netns;

use std::time::Duration;

use hostport_api::IpFamily;
use hostport_publisher::claimed::Protocol;
use hostport_publisher::deny::DenyList;
use hostport_publisher::forwarding::exec::Executor;
use hostport_publisher::forwarding::nft::Rules;
use hostport_publisher::forwarding::rules::{Forward, ForwardSet, Target};
use hostport_publisher::forwarding::sync::{Backend, Outcome, Syncer};
use netns::{NODE, NODE6, Topology};

fn to_node(protocol: Protocol, port: u16, node_port: u16) -> Forward {
    Forward {
        protocol,
        port,
        target: Target {
            address: NODE.into(),
            port: node_port,
        },
    }
}

/// `payload` sent from the client to the router's `port` comes back from the node's echo.
fn assert_reaches(topology: &Topology, protocol: Protocol, port: u16, payload: &str) {
    assert_eq!(
        topology.exchange(protocol, port, payload).as_deref(),
        Some(payload),
        "{protocol} {port} does not reach the node"
    );
}

fn to_node6(protocol: Protocol, port: u16, node_port: u16) -> Forward {
    Forward {
        protocol,
        port,
        target: Target {
            address: NODE6.into(),
            port: node_port,
        },
    }
}

fn edge_rules() -> Rules {
    Rules {
        interface: Some("ext0".into()),
        masquerade: true,
        masquerade6: false,
    }
}

fn syncer(topology: &Topology, backend: Backend) -> Syncer {
    Syncer::new(
        backend,
        edge_rules(),
        DenyList::default(),
        topology.router_executor(),
        false,
    )
}

macro_rules! need_namespaces {
    () => {
        if let Some(why) = netns::unavailable() {
            eprintln!("{why}");
            return;
        }
    };
}

/// TCP and UDP through the DNAT; a retarget and a removal take effect at once.
async fn forwards_open_and_close(backend: Backend) {
    let topology = Topology::new(&[7000, 7001]);
    let mut syncer = syncer(&topology, backend);
    let both: ForwardSet = [
        to_node(Protocol::Tcp, 9000, 7000),
        to_node(Protocol::Udp, 9000, 7000),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        syncer.sync(&both).await.expect("sync"),
        Outcome::Replaced { forwards: 2 }
    );
    assert_reaches(&topology, Protocol::Tcp, 9000, "tcp-hello");
    assert_reaches(&topology, Protocol::Udp, 9000, "udp-hello");
    assert_eq!(
        topology.exchange(Protocol::Tcp, 9001, "nothing there"),
        None
    );

    // The claim moves to another port, then goes.
    let moved: ForwardSet = [to_node(Protocol::Tcp, 9001, 7001)].into_iter().collect();
    syncer.sync(&moved).await.expect("sync");
    assert_reaches(&topology, Protocol::Tcp, 9001, "moved");
    assert_eq!(topology.exchange(Protocol::Tcp, 9000, "closed"), None);
    assert_eq!(topology.exchange(Protocol::Udp, 9000, "closed"), None);
    syncer.sync(&ForwardSet::new()).await.expect("sync");
    assert_eq!(topology.exchange(Protocol::Tcp, 9001, "closed"), None);
    syncer.cleanup().await.expect("cleanup");
}

/// Dual stack: IPv4 and IPv6 of one port reach the node over their own family (IPv6 without
/// masquerade: the node routes its replies back through the router); the IPv6 forward goes
/// without touching the IPv4 one; the deny-list holds for IPv6 as well.
async fn dual_stack_forwards(backend: Backend) {
    let topology = Topology::new(&[7000]);
    let mut syncer = Syncer::new(
        backend,
        edge_rules(),
        DenyList::parse("9009").expect("deny-list"),
        topology.router_executor(),
        false,
    );
    let both: ForwardSet = [
        to_node(Protocol::Tcp, 9000, 7000),
        to_node(Protocol::Udp, 9000, 7000),
        to_node6(Protocol::Tcp, 9000, 7000),
        to_node6(Protocol::Udp, 9000, 7000),
        to_node6(Protocol::Tcp, 9009, 7000),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        syncer.sync(&both).await.expect("sync"),
        Outcome::Replaced { forwards: 4 }
    );
    for family in IpFamily::ALL {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let payload = format!("{family}-{protocol}-hello");
            assert_eq!(
                topology
                    .exchange_over(family, protocol, 9000, &payload)
                    .as_deref(),
                Some(payload.as_str()),
                "{family} {protocol} 9000 does not reach the node"
            );
        }
    }
    assert_eq!(
        topology.exchange_over(IpFamily::Ipv6, Protocol::Tcp, 9009, "denied"),
        None
    );
    let v4_only: ForwardSet = both
        .iter()
        .filter(|f| f.family() == IpFamily::Ipv4)
        .collect();
    syncer.sync(&v4_only).await.expect("sync");
    assert_eq!(
        topology.exchange_over(IpFamily::Ipv6, Protocol::Tcp, 9000, "closed"),
        None
    );
    assert_eq!(
        topology.exchange_over(IpFamily::Ipv6, Protocol::Udp, 9000, "closed"),
        None
    );
    assert_reaches(&topology, Protocol::Tcp, 9000, "still-v4");
    syncer.sync(&both).await.expect("sync");
    assert_eq!(
        topology
            .exchange_over(IpFamily::Ipv6, Protocol::Udp, 9000, "back")
            .as_deref(),
        Some("back")
    );
    syncer.cleanup().await.expect("cleanup");
    assert_eq!(
        topology.exchange_over(IpFamily::Ipv6, Protocol::Tcp, 9000, "gone"),
        None
    );
}

#[tokio::test]
async fn nftables_forwards_ipv6_beside_ipv4() {
    need_namespaces!();
    dual_stack_forwards(Backend::Nft).await;
}

#[tokio::test]
async fn ip6tables_fallback_forwards_ipv6_beside_ipv4() {
    need_namespaces!();
    dual_stack_forwards(Backend::Iptables {
        command: "iptables".into(),
    })
    .await;
}

#[tokio::test]
async fn ip6tables_legacy_fallback_forwards_ipv6_too() {
    need_namespaces!();
    dual_stack_forwards(Backend::Iptables {
        command: "iptables-legacy".into(),
    })
    .await;
}

#[tokio::test]
async fn nftables_forwards_tcp_and_udp_and_closes_the_path() {
    need_namespaces!();
    forwards_open_and_close(Backend::Nft).await;
}

#[tokio::test]
async fn iptables_fallback_forwards_tcp_and_udp_and_closes_the_path() {
    need_namespaces!();
    forwards_open_and_close(Backend::Iptables {
        command: "iptables".into(),
    })
    .await;
}

#[tokio::test]
async fn iptables_legacy_fallback_forwards_too() {
    need_namespaces!();
    forwards_open_and_close(Backend::Iptables {
        command: "iptables-legacy".into(),
    })
    .await;
}

/// Node mode: the router namespace plays the node, the other one a pod on it; `<node>:9000`
/// goes to `<pod>:7000` on any interface, without masquerade (the client's address stays).
#[tokio::test]
async fn node_mode_forwards_a_host_port_to_the_pod_keeping_the_client_address() {
    need_namespaces!();
    let topology = Topology::new(&[7000]);
    let mut node = Syncer::new(
        Backend::Nft,
        Rules::default(),
        DenyList::default(),
        topology.router_executor(),
        false,
    );
    let pod: ForwardSet = [
        to_node(Protocol::Tcp, 9000, 7000),
        to_node(Protocol::Udp, 9000, 7000),
    ]
    .into_iter()
    .collect();
    node.sync(&pod).await.expect("sync");
    assert_reaches(&topology, Protocol::Tcp, 9000, "node-tcp");
    assert_reaches(&topology, Protocol::Udp, 9000, "node-udp");
    let table = topology.router_nft(&["list", "table", "inet", "hostport"]);
    assert!(
        !table.contains("masquerade") && !table.contains("iifname"),
        "{table}"
    );
    node.cleanup().await.expect("cleanup");
}

/// A small change is applied as a change (one transaction of elements), and a table changed
/// behind our back is replaced whole.
#[tokio::test]
async fn changes_are_deltas_and_a_tampered_table_is_replaced() {
    need_namespaces!();
    let topology = Topology::new(&[7000]);
    let mut syncer = syncer(&topology, Backend::Nft);
    let many: ForwardSet = (10_000..11_000)
        .map(|port| to_node(Protocol::Tcp, port, 7000))
        .collect();
    syncer.sync(&many).await.expect("full");
    let mut changed = many.clone();
    changed = changed
        .iter()
        .filter(|f| f.port != 10_500)
        .chain([to_node(Protocol::Tcp, 9000, 7000)])
        .collect();
    assert_eq!(
        syncer.sync(&changed).await.expect("delta"),
        Outcome::Changed {
            removed: 1,
            added: 1
        }
    );
    assert_reaches(&topology, Protocol::Tcp, 9000, "delta");
    assert_eq!(
        syncer.sync(&changed).await.expect("again"),
        Outcome::Unchanged
    );
    // Someone flushes our table: the next change cannot apply as a delta, so the whole
    // table is written again.
    netns::run(&[
        "ip",
        "netns",
        "exec",
        &topology.router,
        "nft",
        "delete",
        "table",
        "inet",
        "hostport",
    ]);
    let one_more: ForwardSet = changed
        .iter()
        .chain([to_node(Protocol::Udp, 9000, 7000)])
        .collect();
    // 10250, 10255, 10256, 10257 and 10259 are on the default deny-list.
    let allowed = syncer.allowed(&one_more);
    assert_eq!(allowed.denied().len(), 5);
    assert_eq!(
        syncer.sync(&one_more).await.expect("repaired"),
        Outcome::Replaced {
            forwards: allowed.forwards().len()
        }
    );
    assert_reaches(&topology, Protocol::Udp, 9000, "repaired");
}

/// Ports on the deny-list are never forwarded, whatever is asked.
#[tokio::test]
async fn denied_ports_are_never_forwarded() {
    need_namespaces!();
    let topology = Topology::new(&[7000]);
    let mut syncer = Syncer::new(
        Backend::Nft,
        edge_rules(),
        DenyList::parse("22,6443,9000").expect("deny-list"),
        topology.router_executor(),
        false,
    );
    let asked: ForwardSet = [
        to_node(Protocol::Tcp, 22, 7000),
        to_node(Protocol::Tcp, 6443, 7000),
        to_node(Protocol::Udp, 9000, 7000),
        to_node(Protocol::Tcp, 9001, 7000),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        syncer.sync(&asked).await.expect("sync"),
        Outcome::Replaced { forwards: 1 }
    );
    for (protocol, port) in [
        (Protocol::Tcp, 22),
        (Protocol::Tcp, 6443),
        (Protocol::Udp, 9000),
    ] {
        assert_eq!(topology.exchange(protocol, port, "denied"), None, "{port}");
    }
    assert_reaches(&topology, Protocol::Tcp, 9001, "allowed");
    let table = topology.router_nft(&["list", "table", "inet", "hostport"]);
    assert!(
        !table.contains("22 :") && !table.contains("6443 :"),
        "{table}"
    );
}

/// Our table is the only thing we write: other tables stay, and cleanup removes ours only.
#[tokio::test]
async fn other_tables_are_never_touched() {
    need_namespaces!();
    let topology = Topology::new(&[7000]);
    netns::run(&[
        "ip",
        "netns",
        "exec",
        &topology.router,
        "nft",
        "add",
        "table",
        "ip",
        "admin",
    ]);
    netns::run(&[
        "ip",
        "netns",
        "exec",
        &topology.router,
        "nft",
        "add",
        "chain",
        "ip",
        "admin",
        "keep",
    ]);
    let mut syncer = syncer(&topology, Backend::Nft);
    let one: ForwardSet = [to_node(Protocol::Tcp, 9000, 7000)].into_iter().collect();
    syncer.sync(&one).await.expect("sync");
    syncer.cleanup().await.expect("cleanup");
    let tables = topology.router_nft(&["list", "tables"]);
    assert!(tables.contains("table ip admin"), "{tables}");
    assert!(!tables.contains("hostport"), "{tables}");
    // Cleaning up twice is fine.
    syncer.cleanup().await.expect("cleanup again");
}

/// A sync killed at any moment leaves the old ruleset or the new one, never a mix: nft
/// commits one transaction.
#[tokio::test]
async fn a_sync_killed_midway_leaves_the_old_or_the_new_ruleset() {
    need_namespaces!();
    let topology = Topology::new(&[7000]);
    let executor = topology.router_executor();
    let rules = edge_rules();
    let old: ForwardSet = (10_000..11_000)
        .map(|port| to_node(Protocol::Tcp, port, 7000))
        .collect();
    let new: ForwardSet = (20_000..40_000)
        .map(|port| to_node(Protocol::Tcp, port, 7000))
        .collect();
    let (old_script, new_script) = (
        hostport_publisher::forwarding::nft::full(&rules, &old),
        hostport_publisher::forwarding::nft::full(&rules, &new),
    );
    let count = || {
        let map = topology.router_nft(&["list", "map", "inet", "hostport", "tcp_forwards"]);
        map.matches(" : 198.51.100.2 . 7000").count()
    };
    let mut seen = std::collections::BTreeSet::new();
    for attempt in 0..12u64 {
        executor
            .run(&["nft", "-f", "-"], &old_script, Duration::from_secs(30))
            .await
            .expect("old ruleset");
        // Killed after 1 ms, 2 ms, 4 ms … (kill_on_drop when the timeout fires).
        let limit = Duration::from_millis(1 << (attempt % 10));
        let _ = executor.run(&["nft", "-f", "-"], &new_script, limit).await;
        // The kernel may still be committing what nft sent: wait for it to settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let entries = count();
        assert!(
            entries == old.len() || entries == new.len(),
            "attempt {attempt}: {entries} entries, neither {} nor {}",
            old.len(),
            new.len()
        );
        seen.insert(entries);
    }
    eprintln!("entry counts seen after killed syncs: {seen:?}");
}

/// `Executor::Local` reports a failing program with what it said.
#[tokio::test]
async fn a_failing_apply_says_why() {
    let error = Executor::local()
        .run(
            &["sh", "-c", "echo broken >&2; exit 3"],
            "",
            Duration::from_secs(5),
        )
        .await
        .expect_err("fails");
    assert!(error.to_string().contains("broken"), "{error}");
}

/// An sshd in the router namespace (reached through `ProxyCommand`, as a jump host would
/// be), a key of the test's own, a known_hosts with the router's host key.
struct Sshd {
    dir: std::path::PathBuf,
    server: std::process::Child,
}

impl Sshd {
    fn start(topology: &Topology) -> Self {
        let dir = std::env::temp_dir().join(format!("hpub-ssh-{}", topology.router));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::create_dir_all("/run/sshd").expect("privilege separation dir");
        let path = |name: &str| dir.join(name).display().to_string();
        for key in ["host_key", "client_key"] {
            netns::run(&[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &path(key),
            ]);
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).expect("authorized_keys");
        let host_public = std::fs::read_to_string(path("host_key.pub")).expect("host key");
        std::fs::write(path("known_hosts"), format!("router {host_public}")).expect("known_hosts");
        std::fs::write(
            path("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort 22\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile {}\n",
                path("host_key"),
                path("authorized_keys"),
                path("sshd.pid")
            ),
        )
        .expect("sshd_config");
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &topology.router,
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(path("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sshd (installed by .ci/run)");
        // Until it listens.
        for _ in 0..100 {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &topology.router, "ss", "-ltn"])
                .output()
                .expect("ss");
            if String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:22 ") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { dir, server }
    }

    /// The executor a publisher outside the router would use.
    fn executor(&self, topology: &Topology, known_hosts: &str) -> Executor {
        let path = |name: &str| self.dir.join(name).display().to_string();
        Executor::Ssh {
            destination: "root@router".into(),
            options: vec![
                "-i".into(),
                path("client_key"),
                "-o".into(),
                format!("UserKnownHostsFile={known_hosts}"),
                "-o".into(),
                "HostKeyAlias=router".into(),
                "-o".into(),
                format!(
                    "ProxyCommand=ip netns exec {} socat - TCP4:127.0.0.1:22",
                    topology.router
                ),
            ],
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The router is another machine: the same rules go there over SSH (key auth, host key
/// checked), and an unknown host key refuses the connection before anything is applied.
#[tokio::test]
async fn rules_are_applied_on_a_remote_router_over_ssh() {
    need_namespaces!();
    let topology = Topology::new(&[7000]);
    let sshd = Sshd::start(&topology);
    let known = sshd.dir.join("known_hosts").display().to_string();
    let one: ForwardSet = [to_node(Protocol::Tcp, 9000, 7000)].into_iter().collect();
    for backend in [
        Backend::Nft,
        Backend::Iptables {
            command: "iptables".into(),
        },
    ] {
        let mut remote = Syncer::new(
            backend,
            edge_rules(),
            DenyList::default(),
            sshd.executor(&topology, &known),
            false,
        );
        remote.sync(&one).await.expect("applied over ssh");
        assert_reaches(&topology, Protocol::Tcp, 9000, "over-ssh");
        remote.cleanup().await.expect("cleanup over ssh");
        assert_eq!(topology.exchange(Protocol::Tcp, 9000, "gone"), None);
    }

    let empty = sshd.dir.join("empty_known_hosts");
    std::fs::write(&empty, "").expect("empty known_hosts");
    let mut untrusted = Syncer::new(
        Backend::Nft,
        edge_rules(),
        DenyList::default(),
        sshd.executor(&topology, &empty.display().to_string()),
        false,
    );
    let error = untrusted.sync(&one).await.expect_err("unknown host key");
    assert!(
        error.to_string().contains("Host key verification failed"),
        "{error}"
    );
    assert!(
        !topology
            .router_nft(&["list", "tables"])
            .contains("hostport")
    );
}
