//! Objects written for or by the Go project rmb938/hostport-allocator deserialize unchanged.

use hostport_api::{ClaimPhase, HostPort, HostPortClaim, HostPortClass, HostPortPhase};
use kube::ResourceExt;

/// The class from the Go project's README, step 2.
const GO_README_CLASS: &str = r#"
---
apiVersion: hostport.rmb938.com/v1alpha1
kind: HostPortClass
metadata:
  name: sample
spec:
  pools:
    - start: 9000
      end: 9500
"#;

/// The claim from the Go project's README, step 3.
const GO_README_CLAIM: &str = r#"
---
apiVersion: hostport.rmb938.com/v1alpha1
kind: HostPortClaim
metadata:
  name: echo-web
  namespace: default
spec:
  hostPortClassName: sample
"#;

/// A HostPort as the Go controller stored it: named `hpc-<claim uid>`, port in status only,
/// no `spec.port`, a condition without observedGeneration.
const GO_STORED_HOST_PORT: &str = r#"{
  "apiVersion": "hostport.rmb938.com/v1alpha1",
  "kind": "HostPort",
  "metadata": {
    "name": "hpc-6f1c2b3a-8d4e-4f5a-9b6c-7d8e9f0a1b2c",
    "uid": "0a1b2c3d-0000-4000-8000-000000000001",
    "resourceVersion": "4242",
    "finalizers": ["hostport.rmb938.com"]
  },
  "spec": {
    "claimRef": {
      "apiVersion": "hostport.rmb938.com/v1alpha1",
      "kind": "HostPortClaim",
      "name": "echo-web",
      "namespace": "default",
      "uid": "6f1c2b3a-8d4e-4f5a-9b6c-7d8e9f0a1b2c",
      "resourceVersion": "4200"
    },
    "hostPortClassName": "sample"
  },
  "status": {
    "conditions": [
      {"type": "Allocated", "status": "True", "lastTransitionTime": "2020-07-01T10:00:00Z",
       "reason": "Allocated", "message": ""}
    ],
    "port": 9000,
    "phase": "Allocated"
  }
}"#;

/// A claim as the Go controller stored it: `hostPortName` without omitempty.
const GO_STORED_PENDING_CLAIM: &str = r#"{
  "apiVersion": "hostport.rmb938.com/v1alpha1",
  "kind": "HostPortClaim",
  "metadata": {"name": "pending", "namespace": "default"},
  "spec": {"hostPortClassName": "sample", "hostPortName": ""},
  "status": {"phase": "Pending"}
}"#;

/// A HostPort the Go controller created but had not allocated yet: `port: 0`.
const GO_STORED_PENDING_HOST_PORT: &str = r#"{
  "apiVersion": "hostport.rmb938.com/v1alpha1",
  "kind": "HostPort",
  "metadata": {"name": "hpc-1"},
  "spec": {"hostPortClassName": "sample"},
  "status": {"port": 0, "phase": "Pending"}
}"#;

#[test]
fn go_readme_class_deserializes() {
    let class: HostPortClass = serde_saphyr::from_str(GO_README_CLASS).expect("class");
    assert_eq!(class.name_any(), "sample");
    assert_eq!(class.spec.pools.len(), 1);
    assert_eq!(
        (class.spec.pools[0].start, class.spec.pools[0].end),
        (9000, 9500)
    );
    let ranges = class.ranges();
    assert_eq!(hostport_api::ports::distinct_port_count(&ranges), 501);
}

#[test]
fn go_readme_claim_deserializes() {
    let claim: HostPortClaim = serde_saphyr::from_str(GO_README_CLAIM).expect("claim");
    assert_eq!(claim.namespace().as_deref(), Some("default"));
    assert_eq!(claim.spec.host_port_class_name, "sample");
    assert_eq!(claim.spec.host_port_name, None);
    assert_eq!(claim.phase(), ClaimPhase::Pending);
    assert_eq!(claim.bound_port(), None);
}

#[test]
fn go_stored_host_port_is_adopted_as_is() {
    let hp: HostPort = serde_json::from_str(GO_STORED_HOST_PORT).expect("HostPort");
    assert_eq!(hp.port(), Some(9000), "the port in status.port stays taken");
    assert_eq!(hp.claim_uid(), Some("6f1c2b3a-8d4e-4f5a-9b6c-7d8e9f0a1b2c"));
    assert_eq!(hp.claim_key(), Some(("default", "echo-web")));
    assert_eq!(
        hp.status.as_ref().and_then(|s| s.phase),
        Some(HostPortPhase::Allocated)
    );
    assert_eq!(hp.finalizers(), ["hostport.rmb938.com"]);
}

#[test]
fn go_stored_empty_fields_mean_unset() {
    let claim: HostPortClaim = serde_json::from_str(GO_STORED_PENDING_CLAIM).expect("claim");
    assert_eq!(claim.spec.host_port_name, None);
    let hp: HostPort = serde_json::from_str(GO_STORED_PENDING_HOST_PORT).expect("HostPort");
    assert_eq!(hp.port(), None, "port 0 means not allocated");
}

#[test]
fn round_trip_keeps_every_field() {
    let hp: HostPort = serde_json::from_str(GO_STORED_HOST_PORT).expect("HostPort");
    let again: HostPort =
        serde_json::from_value(serde_json::to_value(&hp).expect("serialize")).expect("reparse");
    assert_eq!(hp, again);
    let value = serde_json::to_value(&hp).expect("serialize");
    let original: serde_json::Value = serde_json::from_str(GO_STORED_HOST_PORT).expect("json");
    assert_eq!(value["spec"], original["spec"]);
    assert_eq!(value["status"], original["status"]);
}

#[test]
fn bound_claim_reports_its_port() {
    let claim: HostPortClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "echo-web", "namespace": "default",
                     "finalizers": ["hostport.rmb938.com"]},
        "spec": {"hostPortClassName": "sample", "hostPortName": "port-9000"},
        "status": {"phase": "Bound", "port": 9000}
    }))
    .expect("claim");
    assert_eq!(claim.bound_port(), Some(9000));
    assert!(claim.has_finalizer());
    assert_eq!(HostPort::name_for_port(9000), "port-9000");
}
