//! A three-host network in network namespaces made by the test, with documentation-range
//! addresses only, routed nowhere else:
//!
//! ```text
//! client 203.0.113.2   ── ext0 203.0.113.1    router  int0 198.51.100.1  ── node 198.51.100.2
//!        2001:db8:c::2         2001:db8:c::1          2001:db8:a::1          2001:db8:a::2
//! ```
//!
//! The node runs TCP and UDP echo servers (socat); the client talks to the router's external
//! address; the publisher's rules are applied inside the router namespace
//! (`ip netns exec <router> …`). Everything is removed on drop.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hostport_api::IpFamily;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use hostport_publisher::claimed::Protocol;
use hostport_publisher::forwarding::exec::Executor;

/// The router's external address, as the client sees it.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The node's address, as the router sees it.
pub const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The router's external IPv6 address.
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
/// The node's IPv6 address.
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 2);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why the topology could not be made: a clear reason to skip on machines without
/// namespaces (anything else is a failure).
pub fn unavailable() -> Option<String> {
    // Unique per call: tests of one process probe in parallel.
    let probe = format!(
        "hpub-probe-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let added = Command::new("ip").args(["netns", "add", &probe]).output();
    match added {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(out) => Some(format!(
            "network namespaces cannot be created here (`ip netns add`: {}); skipping",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => Some(format!("`ip` is not available ({error}); skipping")),
    }
}

/// Sends `payload` with socat from namespace `namespace` to socat address `address`
/// (`TCP4:…`, `UDP6:…`); what came back (`None`: nothing within the timeouts).
pub fn exchange_in(namespace: &str, address: &str, payload: &str) -> Option<String> {
    let mut child = Command::new("timeout")
        .args([
            "5", "ip", "netns", "exec", namespace, "socat", "-T1", "-", address,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = writeln!(stdin, "{payload}");
    }
    let out = child.wait_with_output().expect("socat output");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Runs a command, panicking with its output when it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The three namespaces and the echo servers.
#[derive(Debug)]
pub struct Topology {
    /// Namespace names.
    pub client: String,
    /// The router's namespace.
    pub router: String,
    /// The node's namespace.
    pub node: String,
    servers: Vec<Child>,
}

impl Topology {
    /// Builds the network; echo servers listen on `ports` (TCP and UDP) on the node.
    pub fn new(ports: &[u16]) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let name = |role: &str| format!("hpub-{id}-{role}");
        let topology = Self {
            client: name("c"),
            router: name("r"),
            node: name("n"),
            servers: vec![],
        };
        for ns in [&topology.client, &topology.router, &topology.node] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // veth names are at most 15 bytes: made unique in the root namespace, renamed inside.
        let veth = |side: &str| format!("hp{id}{side}");
        for (a, a_ns, a_name, b, b_ns, b_name) in [
            (
                veth("c"),
                &topology.client,
                "eth0",
                veth("e"),
                &topology.router,
                "ext0",
            ),
            (
                veth("i"),
                &topology.router,
                "int0",
                veth("n"),
                &topology.node,
                "eth0",
            ),
        ] {
            run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            for (dev, ns, new) in [(&a, a_ns, a_name), (&b, b_ns, b_name)] {
                run(&["ip", "link", "set", dev, "netns", ns]);
                run(&["ip", "-n", ns, "link", "set", dev, "name", new]);
                run(&["ip", "-n", ns, "link", "set", new, "up"]);
            }
        }
        for (ns, dev, address) in [
            (&topology.client, "eth0", "203.0.113.2/24"),
            (&topology.router, "ext0", "203.0.113.1/24"),
            (&topology.router, "int0", "198.51.100.1/24"),
            (&topology.node, "eth0", "198.51.100.2/24"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", address, "dev", dev]);
        }
        // `nodad`: usable at once, not after duplicate address detection.
        for (ns, dev, address) in [
            (&topology.client, "eth0", "2001:db8:c::2/64"),
            (&topology.router, "ext0", "2001:db8:c::1/64"),
            (&topology.router, "int0", "2001:db8:a::1/64"),
            (&topology.node, "eth0", "2001:db8:a::2/64"),
        ] {
            run(&[
                "ip", "-n", ns, "-6", "addr", "add", address, "dev", dev, "nodad",
            ]);
        }
        run(&[
            "ip",
            "netns",
            "exec",
            &topology.router,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        run(&[
            "ip",
            "-n",
            &topology.node,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:a::1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &topology.router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        // Replies without masquerade (node mode) go back through the router.
        run(&[
            "ip",
            "-n",
            &topology.node,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
        ]);
        let mut topology = topology;
        for port in ports {
            topology.serve(*port);
        }
        topology
    }

    fn serve(&mut self, port: u16) {
        for listen in [
            format!("TCP4-LISTEN:{port},reuseaddr,fork"),
            format!("UDP4-RECVFROM:{port},fork"),
            format!("TCP6-LISTEN:{port},ipv6only=1,reuseaddr,fork"),
            format!("UDP6-RECVFROM:{port},ipv6only=1,fork"),
        ] {
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.node,
                    "socat",
                    &listen,
                    "EXEC:/bin/cat",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat (installed by .ci/run)");
            self.servers.push(child);
        }
        // Until the TCP server listens.
        for _ in 0..100 {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.node, "ss", "-ltn"])
                .output()
                .expect("ss");
            let listening = String::from_utf8_lossy(&out.stdout).into_owned();
            if listening.contains(&format!("0.0.0.0:{port} "))
                && listening.contains(&format!("[::]:{port} "))
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the echo server on port {port} did not start");
    }

    /// Runs rules inside the router namespace.
    pub fn router_executor(&self) -> Executor {
        Executor::Local {
            prefix: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                self.router.clone(),
            ],
        }
    }

    /// Sends `payload` from the client to the router's external IPv4 address; what came back.
    pub fn exchange(&self, protocol: Protocol, port: u16, payload: &str) -> Option<String> {
        self.exchange_over(IpFamily::Ipv4, protocol, port, payload)
    }

    /// Sends `payload` from the client to the router's external address of `family`; what
    /// came back.
    pub fn exchange_over(
        &self,
        family: IpFamily,
        protocol: Protocol,
        port: u16,
        payload: &str,
    ) -> Option<String> {
        let (router, suffix) = match family {
            IpFamily::Ipv4 => (IpAddr::from(ROUTER), "4"),
            IpFamily::Ipv6 => (IpAddr::from(ROUTER6), "6"),
        };
        let destination = std::net::SocketAddr::new(router, port);
        let address = match protocol {
            Protocol::Tcp => format!("TCP{suffix}:{destination}"),
            Protocol::Udp => format!("UDP{suffix}:{destination}"),
        };
        exchange_in(&self.client, &address, payload)
    }

    /// `nft` output inside the router namespace.
    pub fn router_nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.router, "nft"])
            .args(args)
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        // `ip netns exec` children may leave socat behind: kill what runs in the namespaces.
        for ns in [&self.client, &self.router, &self.node] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
