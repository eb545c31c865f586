use std::sync::Arc;

use serde_json::json;

use super::fixtures::{claim_from, pod_from};
use super::*;

fn bound_claim(status: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "lobby", "namespace": "games", "uid": "uid-1", "resourceVersion": "7",
            "generation": 2, "annotations": {"bench.example/payload": "x".repeat(200 * 1024)}},
        "spec": {"hostPortClassName": "public", "hostPortName": "port-9000", "count": 3},
        "status": status
    })
}

#[test]
fn a_claim_keeps_what_publishing_reads_and_no_status_router_mode_never_wrote() {
    let claim = claim_from(bound_claim(
        json!({"phase": "Bound", "port": 9000, "conditions": [
        {"type": "Bound", "status": "True", "reason": "Bound", "message": "bound to HostPort port-9000 (port 9000)",
         "lastTransitionTime": "2026-12-06T00:00:00Z"}]}),
    ));
    assert_eq!(
        (&*claim.namespace, &*claim.name, &*claim.uid, &*claim.class),
        ("games", "lobby", "uid-1", "public")
    );
    assert_eq!(claim.bound_ports().collect::<Vec<_>>(), [9000, 9001, 9002]);
    assert_eq!(claim.router, None, "an edge publisher keeps no status");
    assert!(claim.external().is_empty());
    let reference = claim.reference();
    assert_eq!(reference.metadata.uid.as_deref(), Some("uid-1"));
    assert_eq!(reference.metadata.namespace.as_deref(), Some("games"));
}

#[test]
fn a_pending_claim_has_no_ports() {
    let claim = claim_from(bound_claim(json!({"phase": "Pending"})));
    assert_eq!(claim.bound_ports().count(), 0);
    // Bound without a port: nothing to publish.
    let mut value = bound_claim(json!({"phase": "Bound"}));
    assert_eq!(claim_from(value.clone()).bound_ports().count(), 0);
    // A pod claim leaves spec.hostPortName empty: its status port is its binding.
    value["spec"]["hostPortName"] = serde_json::Value::Null;
    value["status"]["port"] = json!(9000);
    assert_eq!(claim_from(value).bound_ports().count(), 3);
}

#[test]
fn a_claim_router_mode_wrote_to_keeps_its_status_and_version() {
    for status in [
        json!({"phase": "Bound", "port": 9000, "external": [{"address": "203.0.113.1", "port": 9000,
            "protocol": "UDP", "method": "PCP", "nodeName": "node-a"}]}),
        json!({"phase": "Bound", "port": 9000, "conditions": [{"type": "Published", "status": "False",
            "reason": "NotPublished", "message": "m", "lastTransitionTime": "2026-12-06T00:00:00Z"}]}),
    ] {
        let claim = claim_from(bound_claim(status.clone()));
        let view = claim.router.as_deref().expect("kept");
        assert_eq!(view.resource_version.as_deref(), Some("7"));
        assert_eq!(view.generation, Some(2));
        assert_eq!(
            serde_json::to_value(&view.status).expect("json")["phase"],
            status["phase"]
        );
    }
}

fn pod(
    annotations: serde_json::Value,
    spec: serde_json::Value,
    status: serde_json::Value,
) -> Arc<PublishedPod> {
    pod_from(json!({
        "metadata": {"name": "lobby-0", "namespace": "games", "annotations": annotations},
        "spec": spec,
        "status": status
    }))
}

#[test]
fn a_pod_keeps_its_claims_the_external_annotations_of_their_ports_node_phase_and_addresses() {
    let pod = pod(
        json!({
            "claim.hostport.rmb938.com/game": "lobby",
            "external.hostport.rmb938.com/game": "203.0.113.1:9000",
            // Not a port with a claim: dropped.
            "external.hostport.rmb938.com/other": "203.0.113.1:1",
            "bench.example/payload": "x".repeat(200 * 1024),
        }),
        json!({"nodeName": "n1", "containers": [{"name": "app", "ports": [
            {"name": "game", "containerPort": 7000, "hostPort": 9000, "protocol": "UDP"},
            {"name": "sctp", "containerPort": 7001, "protocol": "SCTP"}]}]}),
        json!({"phase": "Running", "hostIP": "198.51.100.2",
            "hostIPs": [{"ip": "198.51.100.2"}, {"ip": "2001:db8::2"}, {"ip": "2001:db8::3"}],
            "podIP": "not an address", "podIPs": [{"ip": "198.19.0.5"}]}),
    );
    assert_eq!((&*pod.namespace, &*pod.name), ("games", "lobby-0"));
    assert_eq!(pod.node.as_deref(), Some("n1"));
    assert!(pod.running && !pod.leaving());
    let claims = pod.claims.as_deref().expect("valid annotations");
    assert_eq!(
        (claims[0].port_name.as_str(), claims[0].claim_name.as_str()),
        ("game", "lobby")
    );
    assert_eq!(pod.external_annotation("game"), Some("203.0.113.1:9000"));
    assert_eq!(pod.external.len(), 1);
    assert_eq!(
        pod.ports
            .iter()
            .map(|p| (p.container_port, p.host_port, p.protocol))
            .collect::<Vec<_>>(),
        [(7000, Some(9000), Some(Protocol::Udp)), (7001, None, None)]
    );
    let ips = |list: &[IpAddr]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    // One per family listed (the first two), the single field first, duplicates once.
    assert_eq!(ips(&pod.host_addresses), ["198.51.100.2", "2001:db8::2"]);
    assert_eq!(ips(&pod.pod_addresses), ["198.19.0.5"]);
}

#[test]
fn a_pod_with_a_bad_claim_annotation_publishes_nothing() {
    let pod = pod(
        json!({"claim.hostport.rmb938.com/game": "Not A Name!"}),
        json!({"containers": [{"name": "app"}]}),
        json!({"phase": "Running"}),
    );
    assert_eq!(pod.claims, None);
}

#[test]
fn finished_and_terminating_pods_are_leaving() {
    for (phase, deleted, leaving) in [
        ("Running", false, false),
        ("Succeeded", false, true),
        ("Failed", false, true),
        ("Running", true, true),
    ] {
        let mut value = json!({"metadata": {"name": "p", "namespace": "games"},
            "spec": {"containers": []}, "status": {"phase": phase}});
        if deleted {
            value["metadata"]["deletionTimestamp"] = json!("2026-12-06T00:00:00Z");
        }
        assert_eq!(
            pod_from(value).leaving(),
            leaving,
            "{phase} deleted={deleted}"
        );
    }
}

#[test]
fn sidecars_serve_ports_and_plain_init_containers_do_not() {
    let pod = pod(
        json!({}),
        json!({"containers": [{"name": "app", "ports": [{"name": "a", "containerPort": 1}]}],
            "initContainers": [
                {"name": "setup", "ports": [{"name": "b", "containerPort": 2}]},
                {"name": "proxy", "restartPolicy": "Always", "ports": [{"name": "c", "containerPort": 3}]}]}),
        json!({}),
    );
    let names: Vec<&str> = pod.ports.iter().filter_map(|p| p.name.as_deref()).collect();
    assert_eq!(names, ["a", "c"]);
}

#[test]
fn a_hostile_pod_keeps_at_most_the_cap_of_ports_host_ports_first_in_order() {
    let mut ports: Vec<serde_json::Value> = (0..MAX_POD_PORTS + 100)
        .map(|i| json!({"containerPort": 10_000 + i}))
        .collect();
    // Declared after thousands of plain ports: still kept.
    ports.push(json!({"name": "game", "containerPort": 7000, "hostPort": 9000}));
    let pod = pod(
        json!({}),
        json!({"containers": [{"name": "app", "ports": ports}]}),
        json!({}),
    );
    assert_eq!(pod.ports.len(), MAX_POD_PORTS);
    assert_eq!(pod.ports.last().and_then(|p| p.host_port), Some(9000));
    assert_eq!(pod.ports[0].container_port, 10_000);
}
