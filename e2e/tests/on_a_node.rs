//! What only a node can show: the pod's program answers on its host port, from another
//! network namespace, with the port it read from the downward API (TCP and UDP), and a
//! StatefulSet pod that is deleted comes back with its port and the same answer.
//!
//! Opt-in: `E2E_NODE=1` with `E2E_KUBECONFIG` naming a cluster whose node runs the image
//! `E2E_POD_IMAGE` (`hack/images.sh --echo` imports `registry.invalid/hostport-echo:1`), and
//! root on this machine (a client network namespace). `E2E_NODE_ADDRESS` is the node's
//! address (default: its InternalIP). Elsewhere each scenario says why it skips.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
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

#[tokio::test]
async fn the_pod_answers_on_its_host_port_with_the_port_it_read() {
    if !on_a_node() {
        return;
    }
    let env = Env::new("node-echo").await;
    let node = node_address(&env).await;
    client_namespace(node);
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("echo", &[(38100, 38109)]).await;
    env.create_claim("echo", &class, None).await;
    let port = env.bound("echo").await.bound_port().expect("bound");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo", "annotations": {
            "claim.hostport.rmb938.com/echo-tcp": "echo",
            "claim.hostport.rmb938.com/echo-udp": "echo"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "echo", "image": hostport_e2e::pod_image(),
            "ports": [
                {"name": "echo-tcp", "containerPort": 8080, "protocol": "TCP"},
                {"name": "echo-udp", "containerPort": 8080, "protocol": "UDP"}],
            "env": [{"name": "HOST_PORT", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['port.hostport.rmb938.com/echo-tcp']"}}}]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("admitted");
    running(&env, "echo").await;
    let expected = format!("host port {port}\n");
    assert_eq!(answer(&env, node, port, false).await, expected, "tcp");
    assert_eq!(answer(&env, node, port, true).await, expected, "udp");
    env.cleanup().await;
}

#[tokio::test]
async fn a_statefulset_pod_comes_back_with_its_port_and_the_same_answer() {
    if !on_a_node() {
        return;
    }
    let env = Env::new("node-set").await;
    let node = node_address(&env).await;
    client_namespace(node);
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("games", &[(38110, 38119)]).await;
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.namespace);
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "game"},
        "spec": {
            "replicas": 1, "serviceName": "game",
            "selector": {"matchLabels": {"app": "game"}},
            "template": {
                "metadata": {"labels": {"app": "game"},
                             "annotations": {"class.hostport.rmb938.com/game": class}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "game", "image": hostport_e2e::pod_image(),
                    "ports": [{"name": "game", "containerPort": 8080}],
                    "env": [{"name": "HOST_PORT", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.annotations['port.hostport.rmb938.com/game']"}}}]}]}}}
    }))
    .expect("statefulset");
    sets.create(&PostParams::default(), &set)
        .await
        .expect("created");
    let first = running(&env, "game-0").await;
    let port_of = |pod: &Pod| -> u16 {
        pod.annotations()
            .get("port.hostport.rmb938.com/game")
            .and_then(|p| p.parse().ok())
            .expect("the pod's port annotation")
    };
    let port = port_of(&first);
    let expected = format!("host port {port}\n");
    assert_eq!(answer(&env, node, port, false).await, expected);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    pods.delete("game-0", &DeleteParams::default())
        .await
        .expect("deleted");
    let first_uid = first.metadata.uid.clone();
    env.wait_for("game-0 back as a new pod", Duration::from_secs(90), || {
        let pods = pods.clone();
        let first_uid = first_uid.clone();
        async move {
            let pod = pods.get_opt("game-0").await.ok().flatten()?;
            (pod.metadata.uid != first_uid).then_some(())
        }
    })
    .await;
    let second = running(&env, "game-0").await;
    assert_eq!(
        port_of(&second),
        port,
        "the same port after the pod came back"
    );
    assert_eq!(answer(&env, node, port, false).await, expected);
    env.cleanup().await;
}
