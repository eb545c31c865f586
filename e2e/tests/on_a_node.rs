//! What only a node can show: the pod's program answers on its host port, from another
//! network namespace, with the port it read from the downward API (TCP and UDP); a
//! StatefulSet pod that is deleted comes back with its port and the same answer; the edge
//! publisher running as a pod forwards from a router namespace it reaches over SSH; the node
//! publisher (DaemonSet) forwards to pods of a CNI without portmap.
//!
//! Over ~500 lines on purpose: each scenario builds a piece of network the others do not.
//!
//! Opt-in: `E2E_NODE=1` with `E2E_KUBECONFIG` naming a cluster whose node runs the image
//! `E2E_POD_IMAGE` (`hack/images.sh --echo` imports `registry.invalid/hostport-echo:1`), and
//! root on this machine (a client network namespace). `E2E_NODE_ADDRESS` is the node's
//! address (default: its InternalIP). Elsewhere each scenario says why it skips.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use hostport_controller::RunOptions;
use hostport_e2e::harness::{ControllerHandle, Env};
use hostport_e2e::kubectl;
use hostport_e2e::local::LocalWebhook;
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

#[tokio::test]
async fn the_pod_answers_on_its_host_port_with_the_port_it_read() {
    let Some(scenario) = on_a_node_scenario("node-echo", &[(38100, 38109)]).await else {
        return;
    };
    let (env, node, class) = (&scenario.env, scenario.node, scenario.class.as_str());
    env.create_claim("echo", class, None).await;
    let port = env.bound("echo").await.bound_port().expect("bound");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod = echo_pod("echo", &[("echo-tcp", "TCP"), ("echo-udp", "UDP")]);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("admitted");
    running(env, "echo").await;
    let expected = format!("host port {port}\n");
    assert_eq!(answer(env, node, port, false).await, expected, "tcp");
    assert_eq!(answer(env, node, port, true).await, expected, "udp");
    scenario.finish().await;
}

#[tokio::test]
async fn a_statefulset_pod_comes_back_with_its_port_and_the_same_answer() {
    let Some(scenario) = on_a_node_scenario("node-set", &[(38110, 38119)]).await else {
        return;
    };
    let (env, node, class) = (&scenario.env, scenario.node, scenario.class.as_str());
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
    let first = running(env, "game-0").await;
    let port_of = |pod: &Pod| -> u16 {
        pod.annotations()
            .get("port.hostport.rmb938.com/game")
            .and_then(|p| p.parse().ok())
            .expect("the pod's port annotation")
    };
    let port = port_of(&first);
    let expected = format!("host port {port}\n");
    assert_eq!(answer(env, node, port, false).await, expected);
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
    let second = running(env, "game-0").await;
    assert_eq!(
        port_of(&second),
        port,
        "the same port after the pod came back"
    );
    assert_eq!(answer(env, node, port, false).await, expected);
    scenario.finish().await;
}

/// The router the edge scenario reaches over SSH: a network namespace with `lan0`
/// (198.18.8.2, towards the node) and `eth0` (203.0.113.1, the outside, where a client
/// namespace sits at 203.0.113.2), an sshd on 198.18.8.2 that accepts one generated key.
/// Returns the private key and the known_hosts line.
const EDGE_SETUP: &str = r#"
set -e
dir=/tmp/hp-e2e-edge; rm -rf "$dir"; mkdir -p "$dir" /run/sshd
ip netns del hp-e2e-router 2>/dev/null || true; ip netns del hp-e2e-outside 2>/dev/null || true
ip link del hp-e2e-r 2>/dev/null || true
ip netns add hp-e2e-router; ip netns add hp-e2e-outside
ip link add hp-e2e-r type veth peer name lan0; ip link set lan0 netns hp-e2e-router
ip addr add 198.18.8.1/24 dev hp-e2e-r; ip link set hp-e2e-r up
ip route replace 203.0.113.0/24 via 198.18.8.2
ip -n hp-e2e-router link add eth0 type veth peer name eth0 netns hp-e2e-outside
ip -n hp-e2e-router addr add 198.18.8.2/24 dev lan0
ip -n hp-e2e-router addr add 203.0.113.1/24 dev eth0
ip -n hp-e2e-outside addr add 203.0.113.2/24 dev eth0
for ns in hp-e2e-router hp-e2e-outside; do ip -n $ns link set lo up; done
ip -n hp-e2e-router link set lan0 up; ip -n hp-e2e-router link set eth0 up
ip -n hp-e2e-outside link set eth0 up
ip -n hp-e2e-router route add default via 198.18.8.1
ip -n hp-e2e-outside route add default via 203.0.113.1
ip netns exec hp-e2e-router sysctl -qw net.ipv4.ip_forward=1
ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"; ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519"
cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
echo "198.18.8.2 $(cat "$dir/host_key.pub")" > "$dir/known_hosts"
printf 'ListenAddress 198.18.8.2\nPort 22\nHostKey %s\nAuthorizedKeysFile %s\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile %s\n' \
  "$dir/host_key" "$dir/authorized_keys" "$dir/sshd.pid" > "$dir/sshd_config"
ip netns exec hp-e2e-router /usr/sbin/sshd -f "$dir/sshd_config"
"#;

const EDGE_TEARDOWN: &str = r#"
dir=/tmp/hp-e2e-edge
[ -f "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null
ip netns exec hp-e2e-router nft delete table inet hostport 2>/dev/null
ip netns del hp-e2e-router 2>/dev/null; ip netns del hp-e2e-outside 2>/dev/null
ip link del hp-e2e-r 2>/dev/null; ip route del 203.0.113.0/24 2>/dev/null
rm -rf "$dir"; true
"#;

/// `config/publisher/edge` as a pod (its image from `hack/images.sh`), reaching a router
/// namespace over SSH: a client outside the router reaches the pod's program through the
/// router's external address and the claim's port.
#[tokio::test]
async fn the_edge_publisher_pod_forwards_from_a_router_over_ssh() {
    let Some(scenario) = on_a_node_scenario("node-edge", &[(38120, 38129)]).await else {
        return;
    };
    let (env, node, class) = (&scenario.env, scenario.node, scenario.class.as_str());
    run("sh", &["-c", EDGE_SETUP]).unwrap_or_else(|e| panic!("{e}"));
    env.classes()
        .patch(
            class,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"publish": {"edge": true}}})),
        )
        .await
        .expect("publish.edge");
    env.create_claim("echo", class, None).await;
    let port = env.bound("echo").await.bound_port().expect("bound");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    pods.create(
        &PostParams::default(),
        &echo_pod("echo", &[("echo", "TCP")]),
    )
    .await
    .expect("admitted");
    running(env, "echo").await;

    // The publisher's Secret and the Deployment, pointed at this router.
    let dir = "/tmp/hp-e2e-edge";
    let _ = kubectl(&[
        "-n",
        "hostport-system",
        "delete",
        "secret",
        "hostport-publisher-ssh",
        "--ignore-not-found",
    ]);
    kubectl(&[
        "-n",
        "hostport-system",
        "create",
        "secret",
        "generic",
        "hostport-publisher-ssh",
        &format!("--from-file=id_ed25519={dir}/id_ed25519"),
        &format!("--from-file=known_hosts={dir}/known_hosts"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    // Inside the checkout (kustomize refuses absolute paths), under the ignored `target/`.
    let overlay = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/e2e-edge-overlay");
    std::fs::create_dir_all(overlay).expect("overlay dir");
    std::fs::write(
        format!("{overlay}/kustomization.yaml"),
            "resources:\n  - ../../config/publisher/edge\npatches:\n  - target:\n      kind: Deployment\n      name: hostport-publisher-edge\n    patch: |-\n      - op: replace\n        path: /spec/template/spec/containers/0/args/2\n        value: --ssh=root@198.18.8.2\n",
    )
    .expect("kustomization");
    kubectl(&["apply", "-k", overlay]).unwrap_or_else(|e| panic!("{e}"));
    let rolled = kubectl(&[
        "-n",
        "hostport-system",
        "rollout",
        "status",
        "deploy/hostport-publisher-edge",
        "--timeout=120s",
    ]);
    let answered = rolled.and_then(|_| {
        let target = format!("TCP:203.0.113.1:{port}");
        let script = format!(
            "for i in $(seq 60); do a=$(echo ask | timeout 2 socat - {target} 2>/dev/null) && [ -n \"$a\" ] && echo \"$a\" && exit 0; sleep 1; done; exit 1"
        );
        run("ip", &["netns", "exec", "hp-e2e-outside", "sh", "-c", &script])
    });
    let rules = run(
        "ip",
        &[
            "netns",
            "exec",
            "hp-e2e-router",
            "nft",
            "list",
            "table",
            "inet",
            "hostport",
        ],
    );
    let _ = kubectl(&["delete", "-k", overlay, "--wait=true"]);
    let _ = kubectl(&[
        "-n",
        "hostport-system",
        "delete",
        "secret",
        "hostport-publisher-ssh",
    ]);
    let _ = run("sh", &["-c", EDGE_TEARDOWN]);
    let answer =
        answered.unwrap_or_else(|e| panic!("no answer through the router: {e}; rules: {rules:?}"));
    assert_eq!(answer, format!("host port {port}\n"), "node {node}");
    scenario.finish().await;
}

/// A CNI configuration without portmap, read before the kit's (`05-` sorts first): pods
/// made while it is there get no host port forward from the CNI. Same network name, so the
/// IP allocations stay one pool.
const NO_PORTMAP: &str = r#"{"cniVersion": "1.0.0", "name": "kapi", "plugins": [
  {"type": "bridge", "bridge": "kapi-br0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "DATA_DIR", "ranges": [[{"subnet": "SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
"#;

/// `config/publisher/node` (the DaemonSet, on the host network) for a CNI without portmap:
/// the publisher's DNAT, not the CNI, brings the node's port to the pod.
#[tokio::test]
async fn the_node_publisher_forwards_to_pods_of_a_cni_without_portmap() {
    let Some(scenario) = on_a_node_scenario("node-dnat", &[(38130, 38139)]).await else {
        return;
    };
    let (env, node, class) = (&scenario.env, scenario.node, scenario.class.as_str());
    // The kit's node: KAPI_RUN's CNI directory and pod range.
    let run_dir = std::env::var("KAPI_RUN").unwrap_or_else(|_| {
        format!(
            "{}/kapi/run-node",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let subnet = std::env::var("KAPI_POD_CIDR").unwrap_or_else(|_| "198.19.0.0/24".into());
    let conf = format!("{run_dir}/node/cni/05-no-portmap.conflist");
    std::fs::write(
        &conf,
        NO_PORTMAP
            .replace("DATA_DIR", &format!("{run_dir}/node/cni-ipam"))
            .replace("SUBNET", &subnet),
    )
    .expect("CNI configuration without portmap");
    kubectl(&["apply", "-k", "config/publisher/node"]).unwrap_or_else(|e| panic!("{e}"));
    let outcome = async {
        kubectl(&[
            "-n",
            "hostport-system",
            "rollout",
            "status",
            "ds/hostport-publisher-node",
            "--timeout=120s",
        ])?;
        env.classes()
            .patch(
                class,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"publish": {"node": true}}})),
            )
            .await
            .map_err(|e| e.to_string())?;
        env.create_claim("echo", class, None).await;
        let port = env.bound("echo").await.bound_port().ok_or("not bound")?;
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
        pods.create(
            &PostParams::default(),
            &echo_pod("echo", &[("echo", "TCP")]),
        )
        .await
        .map_err(|e| e.to_string())?;
        running(env, "echo").await;
        let portmap = run("iptables", &["-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])?;
        let answer = answer(env, node, port, false).await;
        let _ = pods.delete("echo", &DeleteParams::default()).await;
        Ok::<_, String>((port, portmap, answer))
    }
    .await;
    // The pod goes while the configuration it was made with is still there.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    env.wait_for("the echo pod gone", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { pods.get_opt("echo").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let _ = std::fs::remove_file(&conf);
    let _ = kubectl(&["delete", "-k", "config/publisher/node", "--wait=true"]);
    let (port, portmap, answer) = outcome.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !portmap.contains(&format!("--dport {port}")),
        "the CNI forwarded the port itself: {portmap}"
    );
    assert_eq!(answer, format!("host port {port}\n"));
    // The pod's forward went with the pod; the empty table stays (a publisher that stops
    // keeps its rules: a restart must not cut traffic) until the README's uninstall step.
    let left = run("nft", &["list", "table", "inet", "hostport"]).unwrap_or_default();
    assert!(!left.contains(&format!("{port} :")), "{left}");
    let _ = run("nft", &["delete", "table", "inet", "hostport"]);
    scenario.finish().await;
}
