//! `config/publisher/router` (the DaemonSet on the host network) maps the port of a pod that
//! really runs on a real router, miniupnpd, which a client outside reaches it through.
//!
//! ```text
//! wan namespace 198.51.100.2/.3 (STUN, client) ── ext0 198.51.100.1  router  lan0 <node>.254/24
//!                                                                      └── veth ── the node <node>
//! ```
//!
//! Routers map ports only for the LAN host that asks, and miniupnpd answers only hosts on its
//! LAN's subnet: the router's LAN is the node's /24, and the node reaches it with the node's
//! own address as the source (routes `src <node>`), as a node on a home LAN does.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use hostport_e2e::kubectl;

use crate::{echo_behind_a_claim, on_a_node_scenario, rolled_out, run, uninstall};

/// The router's public address, and the WAN namespace's (its STUN server and the client).
const PUBLIC: &str = "198.51.100.1";
const WAN_CLIENT: &str = "198.51.100.2";
const DIR: &str = "/tmp/hp-e2e-upnp";

/// The router's address on the node's LAN.
fn lan_router(node: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = node.octets();
    Ipv4Addr::new(a, b, c, 254)
}

/// The network, the STUN server and miniupnpd (nftables build, PCP, NAT-PMP and UPnP-IGD);
/// returns once miniupnpd says port forwarding is enabled. `NODE` and `ROUTER` are replaced.
const SETUP: &str = r#"
set -e
dir=/tmp/hp-e2e-upnp; mkdir -p "$dir"
ip netns add hp-e2e-gw; ip netns add hp-e2e-wan
ip link add hp-e2e-g type veth peer name lan0; ip link set lan0 netns hp-e2e-gw
ip link set hp-e2e-g up
ip route replace ROUTER/32 dev hp-e2e-g src NODE
ip route replace 198.51.100.0/24 via ROUTER dev hp-e2e-g src NODE
ip -n hp-e2e-gw link add ext0 type veth peer name eth0 netns hp-e2e-wan
ip -n hp-e2e-gw addr add ROUTER/24 dev lan0
ip -n hp-e2e-gw addr add 198.51.100.1/24 dev ext0
ip -n hp-e2e-wan addr add 198.51.100.2/24 dev eth0
ip -n hp-e2e-wan addr add 198.51.100.3/24 dev eth0
for ns in hp-e2e-gw hp-e2e-wan; do ip -n $ns link set lo up; done
ip -n hp-e2e-gw link set lan0 up; ip -n hp-e2e-gw link set ext0 up
ip -n hp-e2e-wan link set eth0 up
ip -n hp-e2e-wan route add default via 198.51.100.1
ip netns exec hp-e2e-gw sysctl -qw net.ipv4.ip_forward=1
# miniupnpd's chains as its nft_init.sh makes them, plus what a router lets through anyway:
# replies, and the LAN out.
ip netns exec hp-e2e-gw nft -f - <<'NFT'
table inet filter {
  chain forward { type filter hook forward priority 0; policy drop;
    ct state established,related accept; iifname "lan0" accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
NFT
# miniupnpd forwards only once a STUN server outside says its address is not behind a NAT.
setsid ip netns exec hp-e2e-wan turnserver -c /dev/null --stun-only -L 198.51.100.2 \
  -L 198.51.100.3 --listening-port 3478 --no-cli --log-file stdout \
  --pidfile "$dir/turnserver.pid" </dev/null >"$dir/turnserver.log" 2>&1 &
for i in $(seq 50); do
  ip netns exec hp-e2e-wan ss -lun | grep -q '198.51.100.2:3478' && break; sleep 0.1
done
cat > "$dir/miniupnpd.conf" <<CONF
ext_ifname=ext0
listening_ip=lan0
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
lease_file=$dir/miniupnpd.leases
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07c
ext_perform_stun=yes
ext_stun_host=198.51.100.2
ext_stun_port=3478
allow 1024-65535 ROUTER/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
CONF
setsid ip netns exec hp-e2e-gw /usr/sbin/miniupnpd -d -f "$dir/miniupnpd.conf" \
  -P "$dir/miniupnpd.pid" </dev/null >/dev/null 2>"$dir/miniupnpd.log" &
for i in $(seq 100); do
  grep -q 'Port forwarding is now enabled' "$dir/miniupnpd.log" && exit 0; sleep 0.1
done
cat "$dir/miniupnpd.log" >&2; exit 1
"#;

/// Undoes `SETUP` (and what a run that panicked left).
const TEARDOWN: &str = r#"
dir=/tmp/hp-e2e-upnp
for daemon in miniupnpd turnserver; do
  [ -f "$dir/$daemon.pid" ] && kill "$(cat "$dir/$daemon.pid")" 2>/dev/null
done
sleep 0.5
ip netns del hp-e2e-gw 2>/dev/null; ip netns del hp-e2e-wan 2>/dev/null
ip link del hp-e2e-g 2>/dev/null; ip route del 198.51.100.0/24 2>/dev/null
rm -rf "$dir"; true
"#;

/// Why this machine cannot run the router, if it cannot.
fn unavailable() -> Option<String> {
    [
        "/usr/sbin/miniupnpd",
        "/usr/bin/turnserver",
        "/usr/bin/socat",
    ]
    .into_iter()
    .find(|tool| !Path::new(tool).exists())
    .map(|tool| {
        format!("skipped: {tool} is not installed (apt: miniupnpd-nftables, coturn, socat)")
    })
}

/// The router's lease of `protocol` external `port`, if any (`PROTO:EXT:CLIENT:INT:...`).
fn lease(protocol: &str, port: u16) -> Option<String> {
    let leases = std::fs::read_to_string(format!("{DIR}/miniupnpd.leases")).unwrap_or_default();
    let prefix = format!("{protocol}:{port}:");
    leases
        .lines()
        .find(|line| line.starts_with(&prefix))
        .map(str::to_owned)
}

/// What the program answers through the router's public address and `port`, asked from the
/// WAN namespace (retried while the mapping and the CNI's forward settle).
fn ask_through_the_router(port: u16) -> Result<String, String> {
    let script = format!(
        "for i in $(seq 30); do a=$(echo ask | timeout 2 socat - TCP:{PUBLIC}:{port},bind={WAN_CLIENT} 2>/dev/null) && [ -n \"$a\" ] && echo \"$a\" && exit 0; sleep 1; done; exit 1"
    );
    run("ip", &["netns", "exec", "hp-e2e-wan", "sh", "-c", &script])
}

#[tokio::test]
async fn the_router_publisher_maps_the_pod_port_on_a_real_router() {
    if let Some(reason) = unavailable() {
        eprintln!("{reason}");
        return;
    }
    let Some(scenario) = on_a_node_scenario("node-upnp", &[(38140, 38149)]).await else {
        return;
    };
    let (env, node, class) = (&scenario.env, scenario.node, scenario.class.as_str());
    let router = lan_router(node);
    let _ = run("sh", &["-c", TEARDOWN]);
    let setup = SETUP
        .replace("NODE", &node.to_string())
        .replace("ROUTER", &router.to_string());
    run("sh", &["-c", &setup]).unwrap_or_else(|e| panic!("the router: {e}"));
    let outcome = async {
        env.classes()
            .patch(
                class,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"publish": {"router": {
                    "gateway": router.to_string(), "lifetimeSeconds": 600}}}})),
            )
            .await
            .map_err(|e| e.to_string())?;
        kubectl(&["apply", "-k", "config/publisher/router"])?;
        rolled_out("ds/hostport-publisher-router")?;
        let port = echo_behind_a_claim(env, class).await?;
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
        let mapped = env
            .wait_for(
                "the pod's mapping on the router",
                Duration::from_secs(60),
                || async move { lease("TCP", port) },
            )
            .await;
        let answer = ask_through_the_router(port)?;
        let external = env
            .wait_for(
                "the claim's external address",
                Duration::from_secs(30),
                || async {
                    let claim = env.claims().get("echo").await.ok()?;
                    let external = claim.status?.external;
                    (!external.is_empty()).then_some(external)
                },
            )
            .await;
        // The pod's public address, written by the DaemonSet's ServiceAccount through the
        // webhook (the router's address and the port from the mapping).
        let expected = format!("{PUBLIC}:{port}");
        let annotated = env
            .wait_for(
                "the public address on the pod",
                Duration::from_secs(30),
                || async {
                    let pod = pods.get("echo").await.ok()?;
                    let value = pod
                        .metadata
                        .annotations?
                        .get("external.hostport.rmb938.com/echo")
                        .cloned()?;
                    (value == expected).then_some(value)
                },
            )
            .await;
        let metrics = run("curl", &["-sf", &format!("http://{node}:9803/metrics")])?;
        // The pod goes: so does its mapping.
        pods.delete("echo", &DeleteParams::default())
            .await
            .map_err(|e| e.to_string())?;
        env.wait_for(
            "the mapping removed with the pod",
            Duration::from_secs(60),
            || async move { lease("TCP", port).is_none().then_some(()) },
        )
        .await;
        Ok::<_, String>((port, mapped, answer, external, metrics, annotated))
    }
    .await;
    uninstall("config/publisher/router");
    // Its election Lease is the publishers' own object, not the kustomization's: the README's
    // uninstall removes it with the namespace; here the namespace stays.
    let _ = kubectl(&[
        "-n",
        "hostport-system",
        "delete",
        "lease",
        "hostport-publisher-router",
        "--ignore-not-found",
    ]);
    let leases_left =
        std::fs::read_to_string(format!("{DIR}/miniupnpd.leases")).unwrap_or_default();
    let router_log = std::fs::read_to_string(format!("{DIR}/miniupnpd.log")).unwrap_or_default();
    let _ = run("sh", &["-c", TEARDOWN]);
    let (port, mapped, answer, external, metrics, annotated) =
        outcome.unwrap_or_else(|e| panic!("{e}; router log: {router_log}"));
    assert_eq!(annotated, format!("{PUBLIC}:{port}"));
    assert!(
        mapped.starts_with(&format!("TCP:{port}:{node}:{port}:")),
        "mapped to the node's address and the claim's port: {mapped}"
    );
    assert_eq!(
        answer,
        format!("host port {port}\n"),
        "through {PUBLIC}:{port}"
    );
    assert!(
        external
            .iter()
            .all(|e| e.address == PUBLIC && e.port == i32::from(port)),
        "{external:?}"
    );
    assert!(
        metrics.contains("hostport_publisher_router_mappings"),
        "{metrics}"
    );
    assert!(
        leases_left.trim().is_empty(),
        "left on the router: {leases_left}"
    );
    scenario.finish().await;
}
