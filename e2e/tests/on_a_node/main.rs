//! What only a node can show, one module per piece of network a scenario builds:
//! - `echo`: the pod's program answers on its host port, from another network namespace,
//!   with the port it read from the downward API (TCP and UDP); a StatefulSet pod that is
//!   deleted comes back with its port and the same answer;
//! - `edge`: the edge publisher running as a pod forwards from a router namespace it reaches
//!   over SSH;
//! - `node_publisher`: the node publisher (DaemonSet) forwards to pods of a CNI without
//!   portmap;
//! - `router`: the router publisher (DaemonSet) maps the pod's port on miniupnpd, and a
//!   client outside the router reaches the pod through it.
//!
//! This file holds what they share: the client namespace, the node's address, the scenario's
//! webhook and controller, the echo pod.
//!
//! Opt-in: `E2E_NODE=1` with `E2E_KUBECONFIG` naming a cluster whose node runs the image
//! `E2E_POD_IMAGE` (`hack/images.sh --echo` imports `registry.invalid/hostport-echo:1`), and
//! root on this machine (a client network namespace). `E2E_NODE_ADDRESS` is the node's
//! address (default: its InternalIP). Elsewhere each scenario says why it skips.

mod echo;
mod edge;
mod node_publisher;
mod router;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use hostport_controller::RunOptions;
use hostport_e2e::harness::{ControllerHandle, Env};
use hostport_e2e::kubectl;
use hostport_e2e::local::LocalWebhook;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;

/// The client's network namespace and its veth pair, in the benchmarking range.
const CLIENT_NAMESPACE: &str = "hp-e2e-client";
const HOST_SIDE: &str = "198.18.7.1";
const CLIENT_SIDE: &str = "198.18.7.2";

fn on_a_node() -> bool {
    let wanted = std::env::var_os("E2E_NODE").is_some()
        && std::env::var_os("E2E_KUBECONFIG").is_some()
        && std::env::var_os("E2E_POD_IMAGE").is_some();
    if !wanted {
        eprintln!("skipped: needs E2E_NODE=1, E2E_KUBECONFIG and E2E_POD_IMAGE (a node)");
    }
    wanted
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    hostport_e2e::run_command(Command::new(program).args(args))
}

/// Another host: a network namespace routed to the node through a veth pair (made once,
/// kept: scenarios of several runs share it).
fn client_namespace(node: Ipv4Addr) {
    if run("ip", &["netns", "exec", CLIENT_NAMESPACE, "true"]).is_ok() {
        return;
    }
    let steps: Vec<Vec<String>> = vec![
        vec!["netns".into(), "add".into(), CLIENT_NAMESPACE.into()],
        "link add hp-e2e-h type veth peer name hp-e2e-c"
            .split(' ')
            .map(String::from)
            .collect(),
        vec![
            "link".into(),
            "set".into(),
            "hp-e2e-c".into(),
            "netns".into(),
            CLIENT_NAMESPACE.into(),
        ],
        vec![
            "addr".into(),
            "add".into(),
            format!("{HOST_SIDE}/24"),
            "dev".into(),
            "hp-e2e-h".into(),
        ],
        "link set hp-e2e-h up"
            .split(' ')
            .map(String::from)
            .collect(),
    ];
    for step in steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        run("ip", &args).unwrap_or_else(|e| panic!("{e}"));
    }
    let node = node.to_string();
    for step in [
        vec![
            "addr",
            "add",
            &format!("{CLIENT_SIDE}/24"),
            "dev",
            "hp-e2e-c",
        ],
        vec!["link", "set", "hp-e2e-c", "up"],
        vec!["link", "set", "lo", "up"],
        vec!["route", "add", &format!("{node}/32"), "via", HOST_SIDE],
    ] {
        let mut args = vec!["netns", "exec", CLIENT_NAMESPACE, "ip"];
        args.extend(step.iter().copied());
        run("ip", &args).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// What the program on `node`'s `port` answers, asked from the client namespace.
fn ask(node: Ipv4Addr, port: u16, udp: bool) -> Result<String, String> {
    let target = if udp {
        format!("UDP:{node}:{port}")
    } else {
        format!("TCP:{node}:{port}")
    };
    let script = format!("echo ask | timeout 3 socat - {target}");
    run(
        "ip",
        &["netns", "exec", CLIENT_NAMESPACE, "sh", "-c", &script],
    )
}

async fn node_address(env: &Env) -> Ipv4Addr {
    if let Ok(address) = std::env::var("E2E_NODE_ADDRESS") {
        return address
            .parse()
            .expect("E2E_NODE_ADDRESS is an IPv4 address");
    }
    let nodes: Api<Node> = Api::all(env.client.clone());
    let list = nodes.list(&ListParams::default()).await.expect("nodes");
    list.items
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
        .expect("a node with an IPv4 InternalIP")
}

/// Waits until pod `name` is Running and ready; returns it.
async fn running(env: &Env, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    env.wait_for(
        &format!("pod {name} Running and ready"),
        Duration::from_secs(90),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get_opt(name).await.ok().flatten()?;
                let status = pod.status.as_ref()?;
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (status.phase.as_deref() == Some("Running")
                    && ready
                    && pod.metadata.deletion_timestamp.is_none())
                .then_some(pod)
            }
        },
    )
    .await
}

/// Polls `ask` until it answers (the CNI's port forward may lag the pod's readiness).
async fn answer(env: &Env, node: Ipv4Addr, port: u16, udp: bool) -> String {
    env.wait_for(
        &format!("an answer on {node}:{port} (udp: {udp})"),
        Duration::from_secs(30),
        || async move { ask(node, port, udp).ok().filter(|a| !a.is_empty()) },
    )
    .await
}

/// A scenario on the node: its environment, the node's address, the class, and the webhook
/// and controller it runs.
struct OnANode {
    env: Env,
    node: Ipv4Addr,
    class: String,
    _webhook: LocalWebhook,
    _controller: ControllerHandle,
}

impl OnANode {
    /// Cleans the scenario up while its webhook and controller still run.
    async fn finish(self) {
        self.env.cleanup().await;
    }
}

/// Starts scenario `name` with a class of `pools`, or `None` (said why) when not on a node.
async fn on_a_node_scenario(name: &str, pools: &[(i32, i32)]) -> Option<OnANode> {
    if !on_a_node() {
        return None;
    }
    let env = Env::new(name).await;
    let node = node_address(&env).await;
    client_namespace(node);
    let webhook = env.start_webhook().await;
    let controller = env.start_controller(RunOptions::default());
    let class = env.create_class(name, pools).await;
    Some(OnANode {
        env,
        node,
        class,
        _webhook: webhook,
        _controller: controller,
    })
}

/// The echo program's pod: container port 8080 named `ports` (name, protocol), each naming
/// claim `claim`; `HOST_PORT` read from the first one's port annotation.
fn echo_pod(claim: &str, ports: &[(&str, &str)]) -> Pod {
    let annotations: serde_json::Map<String, serde_json::Value> = ports
        .iter()
        .map(|(name, _)| (format!("claim.hostport.rmb938.com/{name}"), json!(claim)))
        .collect();
    let container_ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|(name, protocol)| json!({"name": name, "containerPort": 8080, "protocol": protocol}))
        .collect();
    let first = ports.first().map_or("", |(name, _)| name);
    serde_json::from_value(json!({
        "metadata": {"name": "echo", "annotations": annotations},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "echo", "image": hostport_e2e::pod_image(), "ports": container_ports,
            "env": [{"name": "HOST_PORT", "valueFrom": {"fieldRef": {
                "fieldPath": format!("metadata.annotations['port.hostport.rmb938.com/{first}']")}}}]}]}
    }))
    .expect("pod")
}

/// `pod` reading its public address: the annotation `external.hostport.rmb938.com/<port>`
/// through a downward-API volume, named to the program by `PUBLIC_FILE`.
fn reading_the_public_address(mut pod: Pod, port: &str) -> Pod {
    let volume: k8s_openapi::api::core::v1::Volume = serde_json::from_value(json!({
        "name": "public", "downwardAPI": {"items": [{"path": "address", "fieldRef": {
            "fieldPath": format!("metadata.annotations['external.hostport.rmb938.com/{port}']")}}]}
    }))
    .expect("volume");
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes.get_or_insert_with(Vec::new).push(volume);
        let container = &mut spec.containers[0];
        container.volume_mounts.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({"name": "public", "mountPath": "/etc/hostport"}))
                .expect("mount"),
        );
        container.env.get_or_insert_with(Vec::new).push(
            serde_json::from_value(
                json!({"name": "PUBLIC_FILE", "value": "/etc/hostport/address"}),
            )
            .expect("env"),
        );
    }
    pod
}

/// `kubectl delete -k kustomization`, returning once its pods are gone too (foreground
/// cascade), so a publisher has removed its rules before the scenario takes its network down.
fn uninstall(kustomization: &str) {
    if let Err(e) = kubectl(&[
        "delete",
        "-k",
        kustomization,
        "--cascade=foreground",
        "--wait=true",
        "--ignore-not-found",
    ]) {
        eprintln!("uninstalling {kustomization}: {e}");
    }
}

/// `kubectl rollout status` of `workload` (`ds/...`, `deploy/...`) in `hostport-system`.
fn rolled_out(workload: &str) -> Result<String, String> {
    kubectl(&[
        "-n",
        "hostport-system",
        "rollout",
        "status",
        workload,
        "--timeout=120s",
    ])
}

/// Claim `echo` of `class`, bound, and the echo pod on its port (TCP), Running: its port.
async fn echo_behind_a_claim(env: &Env, class: &str) -> Result<u16, String> {
    env.create_claim("echo", class, None).await;
    let port = env.bound("echo").await.bound_port().ok_or("not bound")?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    pods.create(
        &kube::api::PostParams::default(),
        &echo_pod("echo", &[("echo", "TCP")]),
    )
    .await
    .map_err(|e| e.to_string())?;
    running(env, "echo").await;
    Ok(port)
}
