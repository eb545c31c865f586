//! What a node and its kubelet would write, for scenarios on a control plane without nodes:
//! a Ready Node with an address, and a pod on it reported Running with its host address.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::{Env, SCENARIO_LABEL};

/// Creates the Node `<prefix>-node`, Ready with InternalIP `address` (labelled with the
/// scenario, so a run that panics before its cleanup is swept by the next one); returns its
/// name. The scenario deletes it.
pub async fn ready_node(env: &Env, address: &str) -> String {
    let name = format!("{}-node", env.prefix);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name,
        "labels": {SCENARIO_LABEL: env.prefix}}}))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node");
    nodes
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "Scenario",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "addresses": [{"type": "InternalIP", "address": address}]}})),
        )
        .await
        .expect("node ready");
    name
}

/// Creates `pod` (admitted like any pod) and reports it Running on `host_ip`, as its kubelet
/// would.
pub async fn running(pods: &Api<Pod>, pod: &Pod, host_ip: &str) -> Pod {
    let name = pod.metadata.name.clone().unwrap_or_default();
    pods.create(&PostParams::default(), pod).await.expect("pod");
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "hostIP": host_ip}})),
    )
    .await
    .expect("running")
}
