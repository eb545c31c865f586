//! Objects in an in-process API server as the allocator and the kubelet would leave them: a
//! class (opted in or not), a claim Bound to a port, a Running pod holding that port.

#![allow(dead_code)]

use hostport_api::{HostPortClaim, HostPortClass};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_testserver::TestApiServer;
use serde_json::json;

/// The in-process API server with this project's CRDs.
pub async fn server() -> TestApiServer {
    TestApiServer::start_with(kube_testserver::Options {
        crds_dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds").into()),
        ..Default::default()
    })
    .await
    .expect("API server")
}

/// A class with one pool `start..=end`, forwarded from the edge when `edge`.
pub async fn class(client: &Client, name: &str, (start, end): (u16, u16), edge: bool) {
    let class: HostPortClass = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
        "metadata": {"name": name},
        "spec": {"pools": [{"start": start, "end": end}], "publish": {"edge": edge}}
    }))
    .expect("class");
    Api::<HostPortClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
}

/// Claim `name` in `default`, Bound to `port` (what the controller writes).
pub async fn bound_claim(client: &Client, name: &str, class: &str, port: u16) {
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    let claim: HostPortClaim = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": name},
        "spec": {"hostPortClassName": class, "hostPortName": format!("port-{port}")}
    }))
    .expect("claim");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    claims
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound", "port": port}})),
        )
        .await
        .expect("bound");
}

/// Pod `name` in `default` naming claim `name` for its port `game` (`protocol`, host port
/// `port`), Running on the node `host_ip`.
pub async fn running_pod(client: &Client, name: &str, port: u16, protocol: &str, host_ip: &str) {
    running_pod_on(client, name, port, protocol, &[host_ip]).await;
}

/// [`running_pod`] on a node with `host_ips` (one per family: dual stack).
pub async fn running_pod_on(
    client: &Client,
    name: &str,
    port: u16,
    protocol: &str,
    host_ips: &[&str],
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"claim.hostport.rmb938.com/game": name}},
        "spec": {"containers": [{"name": "game", "image": "game", "ports": [
            {"name": "game", "containerPort": 7777, "hostPort": port, "protocol": protocol}]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "hostIP": host_ips[0],
            "hostIPs": host_ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()}})),
    )
    .await
    .expect("running");
}
