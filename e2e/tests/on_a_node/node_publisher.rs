//! `config/publisher/node` (the DaemonSet on the host network) for a CNI without portmap.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use hostport_e2e::kubectl;

use crate::{answer, echo_behind_a_claim, on_a_node_scenario, rolled_out, run, uninstall};

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
        rolled_out("ds/hostport-publisher-node")?;
        env.classes()
            .patch(
                class,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"publish": {"node": true}}})),
            )
            .await
            .map_err(|e| e.to_string())?;
        let port = echo_behind_a_claim(env, class).await?;
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
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
    uninstall("config/publisher/node");
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
