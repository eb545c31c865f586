//! What both binaries drop before an object enters a watch cache, so their memory grows with
//! the number of objects, never with their size (a tenant's 200 KB of annotations on every
//! claim must not reach either cache).

use kube::Resource;

use crate::HostPort;

/// Drops metadata no decision reads: managed fields, labels, annotations (kubectl's
/// last-applied copy among them), owner references.
pub fn strip_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
}

/// A HostPort as caches keep it: name, UID, the claim's name, namespace and UID, the port and
/// the status without condition messages (decisions compare reasons, never messages).
pub fn strip_host_port(host_port: &mut HostPort) {
    strip_metadata(host_port);
    if let Some(claim) = host_port.spec.claim_ref.as_mut() {
        claim.api_version = None;
        claim.kind = None;
        claim.resource_version = None;
        claim.field_path = None;
    }
    if let Some(status) = host_port.status.as_mut() {
        for condition in &mut status.conditions {
            condition.message = String::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClaimReference, HostPortSpec};

    #[test]
    fn a_stripped_host_port_weighs_the_same_whatever_its_metadata() {
        let mut host_port = HostPort::new(
            "port-9000",
            HostPortSpec {
                claim_ref: Some(ClaimReference {
                    name: Some("web".into()),
                    uid: Some("uid".into()),
                    ..ClaimReference::default()
                }),
                host_port_class_name: "sample".into(),
                port: Some(9000),
            },
        );
        let small = serde_json::to_vec(&host_port).expect("json").len();
        host_port.metadata.annotations = Some([("a".into(), "x".repeat(200 * 1024))].into());
        host_port.metadata.labels = Some([("l".into(), "x".repeat(63))].into());
        strip_host_port(&mut host_port);
        assert_eq!(serde_json::to_vec(&host_port).expect("json").len(), small);
        assert_eq!(host_port.port(), Some(9000));
        assert_eq!(host_port.claim_uid(), Some("uid"));
    }
}
