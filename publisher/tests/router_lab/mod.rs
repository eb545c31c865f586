//! A home network in network namespaces made by the test, with a real router: Debian's
//! `miniupnpd` (nftables build) speaking PCP, NAT-PMP and UPnP-IGD. Documentation-range
//! addresses only, routed nowhere else:
//!
//! ```text
//! outside 203.0.113.2/.3 (STUN) ── ext0 203.0.113.1  router  int0 198.51.100.1 (bridge)
//!         2001:db8:c::2                 2001:db8:c::1         2001:db8:a::1
//!                                                              ├── node 0 198.51.100.2
//!                                                              │          2001:db8:a::2
//!                                                              └── node 1 198.51.100.3
//!                                                                         2001:db8:a::3
//! ```
//!
//! Over IPv6 there is no NAT: the router forwards to the nodes' own addresses, and its
//! forward policy drops what no pinhole (miniupnpd's `miniupnpd` chain) lets through.
//!
//! miniupnpd only enables port forwarding once it knows its public address is not a
//! private/reserved one, or (2.3.1) once a STUN server outside confirms it is not behind
//! another NAT: coturn runs outside with two addresses for that. The publisher runs inside a
//! node's namespace (`ip netns exec`), so its requests come from the node as on a real
//! network; it reaches the in-process API server through a socat pair joined by a Unix
//! socket (sockets on the filesystem cross network namespaces). Everything is removed on drop.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The router's public address.
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The router's LAN address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The router's LAN IPv6 address (where PCP and UPnP requests over IPv6 go).
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why the lab cannot run here (skip with this message), if it cannot.
pub fn unavailable() -> Option<String> {
    for tool in [
        "/usr/sbin/miniupnpd",
        "/usr/bin/turnserver",
        "/usr/bin/socat",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is not installed (.ci/run installs miniupnpd-nftables, coturn, socat); skipping"
            ));
        }
    }
    crate::netns::unavailable()
}

fn run(args: &[&str]) {
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

fn run_input(args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// miniupnpd's chains, as its `nft_init.sh` makes them (written here: the script writes a
/// fixed file under /tmp, which parallel tests would share), in a home router's forward
/// chain: replies and the LAN's own connections out pass, new connections in only through
/// miniupnpd's rules.
const ROUTER_RULESET: &str = "table inet filter {
  chain forward { type filter hook forward priority 0; policy drop; ct state established,related accept; oifname \"ext0\" accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
";

/// The namespaces, the router and what runs in them.
#[derive(Debug)]
pub struct Lab {
    /// The outside namespace.
    pub outside: String,
    /// The router's namespace.
    pub router: String,
    /// The nodes' namespaces.
    pub nodes: Vec<String>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    /// Builds the network with `nodes` nodes and starts the STUN server and miniupnpd; returns
    /// once miniupnpd forwards ports.
    pub fn new(nodes: usize) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("hplab-{id}"));
        std::fs::create_dir_all(&dir).expect("lab dir");
        let mut lab = Self {
            outside: format!("hplab-{id}-o"),
            router: format!("hplab-{id}-r"),
            nodes: (0..nodes).map(|i| format!("hplab-{id}-n{i}")).collect(),
            dir,
            children: vec![],
        };
        for ns in [&lab.outside, &lab.router].into_iter().chain(&lab.nodes) {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (r, o) = (lab.router.clone(), lab.outside.clone());
        // veth names are at most 15 bytes: unique in the root namespace, renamed inside.
        let (ext, out) = (format!("hl{id}e"), format!("hl{id}o"));
        run(&[
            "ip", "link", "add", &ext, "type", "veth", "peer", "name", &out,
        ]);
        run(&["ip", "link", "set", &ext, "netns", &r]);
        run(&["ip", "link", "set", &out, "netns", &o]);
        run(&["ip", "-n", &r, "link", "set", &ext, "name", "ext0"]);
        run(&["ip", "-n", &o, "link", "set", &out, "name", "eth0"]);
        run(&["ip", "-n", &r, "link", "add", "int0", "type", "bridge"]);
        for (ns, dev) in [(&r, "ext0"), (&o, "eth0"), (&r, "int0")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "203.0.113.1/24",
            "dev",
            "ext0",
        ]);
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "int0",
        ]);
        run(&[
            "ip",
            "-n",
            &o,
            "addr",
            "add",
            "203.0.113.2/24",
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            &o,
            "addr",
            "add",
            "203.0.113.3/24",
            "dev",
            "eth0",
        ]);
        for (i, node) in lab.nodes.clone().iter().enumerate() {
            let (lan, port) = (format!("hl{id}n{i}"), format!("hl{id}b{i}"));
            run(&[
                "ip", "link", "add", &lan, "type", "veth", "peer", "name", &port,
            ]);
            run(&["ip", "link", "set", &lan, "netns", node]);
            run(&["ip", "link", "set", &port, "netns", &r]);
            run(&["ip", "-n", node, "link", "set", &lan, "name", "eth0"]);
            run(&["ip", "-n", node, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &r, "link", "set", &port, "master", "int0"]);
            run(&["ip", "-n", &r, "link", "set", &port, "up"]);
            let address = format!("{}/24", Self::node_address(i));
            run(&["ip", "-n", node, "addr", "add", &address, "dev", "eth0"]);
            run(&[
                "ip",
                "-n",
                node,
                "route",
                "add",
                "default",
                "via",
                "198.51.100.1",
            ]);
            let address6 = format!("{}/64", Self::node_address6(i));
            run(&[
                "ip", "-n", node, "-6", "addr", "add", &address6, "dev", "eth0", "nodad",
            ]);
            run(&[
                "ip",
                "-n",
                node,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:a::1",
            ]);
        }
        for (ns, dev, address) in [
            (&r, "ext0", "2001:db8:c::1/64"),
            (&r, "int0", "2001:db8:a::1/64"),
            (&o, "eth0", "2001:db8:c::2/64"),
        ] {
            run(&[
                "ip", "-n", ns, "-6", "addr", "add", address, "dev", dev, "nodad",
            ]);
        }
        run(&[
            "ip",
            "-n",
            &o,
            "-6",
            "route",
            "add",
            "2001:db8:a::/64",
            "via",
            "2001:db8:c::1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        run_input(
            &["ip", "netns", "exec", &r, "nft", "-f", "-"],
            ROUTER_RULESET,
        );
        lab.start_stun();
        lab.start_miniupnpd();
        lab
    }

    /// Node `i`'s address.
    pub fn node_address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, 2 + u8::try_from(i).expect("few nodes"))
    }

    /// Node `i`'s IPv6 address.
    pub fn node_address6(i: usize) -> Ipv6Addr {
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xa,
            0,
            0,
            0,
            0,
            2 + u16::try_from(i).expect("few nodes"),
        )
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join(name)).expect("log file")
    }

    fn start_stun(&mut self) {
        let pid = self.dir.join("turnserver.pid");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.outside,
                "turnserver",
                "-c",
                "/dev/null",
            ])
            .args(["--stun-only", "-L", "203.0.113.2", "-L", "203.0.113.3"])
            .args([
                "--listening-port",
                "3478",
                "--no-cli",
                "--log-file",
                "stdout",
            ])
            .arg("--pidfile")
            .arg(&pid)
            .stdout(self.log("turnserver.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver");
        self.children.push(child);
    }

    /// miniupnpd's lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("miniupnpd.leases")
    }

    fn start_miniupnpd(&mut self) {
        let config = self.dir.join("miniupnpd.conf");
        std::fs::write(
            &config,
            format!(
                "ext_ifname=ext0\next_ifname6=ext0\nlistening_ip=int0\n\
                 http_port=0\nenable_natpmp=yes\n\
                 enable_upnp=yes\nsecure_mode=yes\nsystem_uptime=yes\nlease_file={}\n\
                 uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\next_perform_stun=yes\n\
                 ext_stun_host=203.0.113.2\next_stun_port=3478\n\
                 allow 1024-65535 198.51.100.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                self.lease_file().display()
            ),
        )
        .expect("miniupnpd.conf");
        let log = self.dir.join("miniupnpd.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        // The STUN server may not listen yet on the first try: miniupnpd then gives up.
        loop {
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.router,
                    "/usr/sbin/miniupnpd",
                    "-d",
                    "-f",
                ])
                .arg(&config)
                // Its own pid file: the default one would stop a second lab's router.
                .arg("-P")
                .arg(self.dir.join("miniupnpd.pid"))
                .stdout(Stdio::null())
                .stderr(self.log("miniupnpd.log"))
                .spawn()
                .expect("miniupnpd");
            self.children.push(child);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Port forwarding is now enabled") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(mut child) = self.children.pop() {
                let _ = child.kill();
                let _ = child.wait();
            }
            assert!(
                Instant::now() < deadline,
                "miniupnpd did not enable port forwarding: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Restarts the router with another public address (an ISP's new lease): miniupnpd
    /// stops (its mappings are gone), `ext0` gets `address` instead of 203.0.113.1, and
    /// miniupnpd starts again (learning the address by STUN).
    pub fn restart_router_with_public_address(&mut self, address: Ipv4Addr) {
        let pid = std::fs::read_to_string(self.dir.join("miniupnpd.pid")).unwrap_or_default();
        let _ = Command::new("kill").arg(pid.trim()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", pid.trim())).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        run(&[
            "ip",
            "-n",
            &self.router,
            "addr",
            "flush",
            "dev",
            "ext0",
            "scope",
            "global",
        ]);
        let cidr = format!("{address}/24");
        run(&[
            "ip",
            "-n",
            &self.router,
            "addr",
            "add",
            &cidr,
            "dev",
            "ext0",
        ]);
        run(&[
            "ip",
            "-n",
            &self.router,
            "-6",
            "addr",
            "add",
            "2001:db8:c::1/64",
            "dev",
            "ext0",
            "nodad",
        ]);
        let _ = std::fs::remove_file(self.lease_file());
        self.start_miniupnpd();
    }

    /// miniupnpd's log so far.
    pub fn router_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("miniupnpd.log")).unwrap_or_default()
    }

    /// The router's lease list: `PROTO:EXT:CLIENT:INT:EXPIRES:DESCRIPTION` lines.
    pub fn leases(&self) -> Vec<String> {
        std::fs::read_to_string(self.lease_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lease of external `port`/`protocol` (`TCP`/`UDP`), if any.
    pub fn lease(&self, protocol: &str, port: u16) -> Option<String> {
        let prefix = format!("{protocol}:{port}:");
        self.leases().into_iter().find(|l| l.starts_with(&prefix))
    }

    /// The router's DNAT rules (miniupnpd's chain).
    pub fn dnat_rules(&self) -> String {
        self.router_chain("prerouting_miniupnpd")
    }

    /// The router's pinholes (miniupnpd's filter chain, IPv6 rules and IPv4 accepts).
    pub fn pinholes(&self) -> String {
        self.router_chain("miniupnpd")
    }

    /// `nft list chain inet filter <chain>` in the router's namespace.
    fn router_chain(&self, chain: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.router,
                "nft",
                "list",
                "chain",
                "inet",
                "filter",
            ])
            .arg(chain)
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Serves a TCP echo over IPv6 on `port` in node `i`'s namespace.
    pub fn serve6(&mut self, i: usize, port: u16) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i], "socat"])
            .arg(format!("TCP6-LISTEN:{port},ipv6only=1,reuseaddr,fork"))
            .arg("EXEC:/bin/cat")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        self.children.push(child);
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Sends `payload` from outside to `[address]:port` over TCP; what came back.
    pub fn exchange6(&self, address: Ipv6Addr, port: u16, payload: &str) -> Option<String> {
        let target = format!("TCP6:[{address}]:{port},connect-timeout=2");
        crate::netns::exchange_in(&self.outside, &target, payload)
    }

    /// Makes the API server at `127.0.0.1:port` reachable at the same address inside node
    /// `i`'s namespace.
    pub fn bridge_api(&mut self, i: usize, port: u16) {
        let socket = self.dir.join(format!("api-{i}-{port}.sock"));
        let root = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        self.children.push(root);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let inside = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i], "socat"])
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        self.children.push(inside);
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Makes `server` reachable from every node and writes a kubeconfig for it (as the router
    /// publisher's ServiceAccount); returns its path.
    pub fn connect(&mut self, server: &kube_testserver::TestApiServer) -> PathBuf {
        let port: u16 = server
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("port in the URL");
        for i in 0..self.nodes.len() {
            self.bridge_api(i, port);
        }
        let path = self.dir.join(format!("api-{port}.kubeconfig"));
        let user = kube_testserver::UserInfo::service_account(
            "hostport-system",
            "hostport-publisher-router",
        );
        let yaml = serde_saphyr::to_string(&server.kubeconfig(user)).expect("kubeconfig");
        std::fs::write(&path, yaml).expect("kubeconfig");
        path
    }

    /// Starts `hostport-publisher --mode router` in node `i`'s namespace with `kubeconfig`
    /// and `extra` flags; its log goes to `publisher-<i>-<n>.log` in the lab directory.
    pub fn publisher(&self, i: usize, kubeconfig: &Path, extra: &[&str]) -> Publisher {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.join(format!("publisher-{i}-{n}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i]])
            .arg(env!("CARGO_BIN_EXE_hostport-publisher"))
            .args(["--mode", "router", "--metrics-address", "127.0.0.1:0"])
            .arg(format!("--node-name=node-{i}"))
            .arg(format!(
                "--node-ip={},{}",
                Self::node_address(i),
                Self::node_address6(i)
            ))
            .arg(format!("--pod-name=publisher-{i}-{n}"))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,hostport_publisher=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("publisher");
        Publisher { child, log }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.outside, &self.router].into_iter().chain(&self.nodes) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running publisher.
#[derive(Debug)]
pub struct Publisher {
    child: Child,
    /// Its log.
    pub log: PathBuf,
}

impl Publisher {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "publisher did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
