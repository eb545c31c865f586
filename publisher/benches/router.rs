//! Router mode against a real router (miniupnpd in network namespaces, as in the tests;
//! needs root, says why and exits otherwise):
//!
//! 1. pod Running → mapping in the router's lease list: 20 pods one after another, through
//!    the API server, the publisher binary on the node and NAT-PMP or UPnP-IGD;
//! 2. requests per second one publisher makes (map, renew, remove; 40 mappings, one after
//!    another as the table does), measured by this program re-run inside the node namespace.
//!
//! ```sh
//! cargo bench -p hostport-publisher --bench router
//! ```

#[path = "../tests/api/mod.rs"]
mod api;
#[path = "../tests/netns/mod.rs"]
mod netns;
#[path = "../tests/router_lab/mod.rs"]
mod router_lab;

use std::time::{Duration, Instant};

use hostport_api::{ExternalPortPolicy, RouterProtocol};
use hostport_publisher::claimed::Protocol;
use hostport_publisher::router::client::network::NetworkRouter;
use hostport_publisher::router::client::{MapRequest, Router};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use router_lab::Lab;
use serde_json::json;

const PODS: u16 = 20;
const MAPPINGS: u16 = 40;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Inside the node namespace: map, renew and remove `MAPPINGS` mappings with `method`.
async fn requests_per_second(method: RouterProtocol) {
    let router = NetworkRouter::default();
    let request = |port: u16| MapRequest {
        gateway: router_lab::GATEWAY.into(),
        client: Lab::node_address(0).into(),
        protocol: Protocol::Udp,
        internal_port: port,
        external_port: port,
        policy: ExternalPortPolicy::Same,
        method,
        lifetime_seconds: 600,
        description: "bench".into(),
    };
    let ports = 42000..42000 + MAPPINGS;
    let started = Instant::now();
    let mut leases = vec![];
    let mut each = vec![];
    for port in ports.clone() {
        let one = Instant::now();
        let (lease, _) = router.map(&request(port)).await.expect("mapped");
        each.push(one.elapsed());
        leases.push((port, lease));
    }
    let map = started.elapsed();
    each.sort();
    println!(
        "{method:?}: one map request: p50 {:.1} ms, max {:.1} ms",
        percentile(&each, 0.5).as_secs_f64() * 1e3,
        each.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    for (port, lease) in &mut leases {
        router.renew(lease, &request(*port)).await.expect("renewed");
    }
    let renew = started.elapsed();
    let started = Instant::now();
    for (_, lease) in leases {
        router.unmap(lease).await.expect("removed");
    }
    let remove = started.elapsed();
    let rate = |d: Duration| f64::from(MAPPINGS) / d.as_secs_f64();
    println!(
        "{method:?}: {MAPPINGS} mappings: map {:.0}/s, renew {:.0}/s, remove {:.0}/s",
        rate(map),
        rate(renew),
        rate(remove)
    );
}

async fn running_to_mapped(lab: &mut Lab, method: &str, first_port: u16) {
    let server = api::server().await;
    let client = server.client();
    let kubeconfig = lab.connect(&server);
    let class: hostport_api::HostPortClass = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
        "metadata": {"name": method},
        "spec": {"pools": [{"start": first_port, "end": first_port + PODS}],
                 "publish": {"router": {"protocol": method}}}
    }))
    .expect("class");
    Api::<hostport_api::HostPortClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    let publisher = lab.publisher(0, &kubeconfig, &[]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut took = vec![];
    for i in 0..PODS {
        let port = first_port + i;
        let name = format!("{method}-{i}");
        api::bound_claim(&client, &name, method, port).await;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"claim.hostport.rmb938.com/game": name}},
            "spec": {"nodeName": "node-0", "containers": [{"name": "game", "image": "game", "ports": [
                {"name": "game", "containerPort": 7777, "hostPort": port, "protocol": "TCP"}]}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod");
        let started = Instant::now();
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "hostIP": "198.51.100.2"}})),
        )
        .await
        .expect("running");
        while lab.lease("TCP", port).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no mapping: {}",
                publisher.log()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "{method}: pod Running -> mapping in the router's lease list, {PODS} pods: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        percentile(&took, 0.9).as_secs_f64() * 1e3,
        took.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    drop(publisher);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--requests") {
        let method = match args.get(at + 1).map(String::as_str) {
            Some("upnp") => RouterProtocol::Upnp,
            Some("pcp") => RouterProtocol::Pcp,
            _ => RouterProtocol::Natpmp,
        };
        requests_per_second(method).await;
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if let Some(reason) = router_lab::unavailable() {
        println!("{reason}");
        return;
    }
    let mut lab = Lab::new(1);
    running_to_mapped(&mut lab, "natpmp", 43000).await;
    running_to_mapped(&mut lab, "upnp", 43100).await;
    let me = std::env::current_exe().expect("own path");
    for method in ["natpmp", "pcp", "upnp"] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.nodes[0]])
            .arg(&me)
            .args(["--requests", method])
            .output()
            .expect("worker");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
