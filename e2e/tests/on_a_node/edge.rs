//! `config/publisher/edge` as a pod, applying to a router namespace it reaches over SSH.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

use hostport_e2e::kubectl;

use crate::{
    echo_pod, on_a_node_scenario, reading_the_public_address, rolled_out, run, running, uninstall,
};

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
/// router's external address and the claim's port, and the program answers with the public
/// address the publisher wrote on its pod (`--public-address`), read from a downward-API
/// volume.
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
        &reading_the_public_address(echo_pod("echo", &[("echo", "TCP")]), "echo"),
    )
    .await
    .expect("admitted");
    running(env, "echo").await;

    // The publisher's Secret and the Deployment, pointed at this router.
    let dir = "/tmp/hp-e2e-edge";
    delete_ssh_secret();
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
            "resources:\n  - ../../config/publisher/edge\npatches:\n  - target:\n      kind: Deployment\n      name: hostport-publisher-edge\n    patch: |-\n      - op: replace\n        path: /spec/template/spec/containers/0/args/2\n        value: --ssh=root@198.18.8.2\n      - op: add\n        path: /spec/template/spec/containers/0/args/-\n        value: --public-address=203.0.113.1\n",
    )
    .expect("kustomization");
    kubectl(&["apply", "-k", overlay]).unwrap_or_else(|e| panic!("{e}"));
    let rolled = rolled_out("deploy/hostport-publisher-edge");
    // Through the router, until the program also tells its public address: the publisher
    // wrote the annotation (as its ServiceAccount, through the webhook) and the kubelet
    // refreshed the pod's downward-API volume (on its sync period: up to a minute or two).
    let public = format!("public 203.0.113.1:{port}");
    // Off the runtime's thread: the scenario's webhook, served by this test, must answer the
    // publisher's annotation write meanwhile.
    let wanted = public.clone();
    let answered = tokio::task::spawn_blocking(move || {
        rolled?;
        let public = wanted;
        let target = format!("TCP:203.0.113.1:{port}");
        let script = format!(
            "for i in $(seq 180); do a=$(echo ask | timeout 2 socat - {target} 2>/dev/null) && case \"$a\" in *'{public}'*) echo \"$a\"; exit 0;; esac; sleep 1; done; echo \"last answer: $a\" >&2; exit 1"
        );
        run("ip", &["netns", "exec", "hp-e2e-outside", "sh", "-c", &script])
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let publisher_log = kubectl(&[
        "-n",
        "hostport-system",
        "logs",
        "deploy/hostport-publisher-edge",
        "--tail=40",
    ]);
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
    uninstall(overlay);
    delete_ssh_secret();
    let _ = run("sh", &["-c", EDGE_TEARDOWN]);
    let answer = answered.unwrap_or_else(|e| {
        panic!("no answer through the router: {e}; rules: {rules:?}; publisher: {publisher_log:?}")
    });
    assert_eq!(
        answer,
        format!("host port {port}\n{public}\n"),
        "node {node}"
    );
    scenario.finish().await;
}

/// The edge publisher's SSH Secret gone (if it was there).
fn delete_ssh_secret() {
    let _ = kubectl(&[
        "-n",
        "hostport-system",
        "delete",
        "secret",
        "hostport-publisher-ssh",
        "--ignore-not-found",
    ]);
}
