//! What both binaries drop before an object enters a watch cache, so their memory grows with
//! the number of objects, never with their size (a tenant's 200 KB of annotations on every
//! claim must not reach either cache).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::pod_claims::{ADMITTED_LABEL, POD_CLAIM_LABEL, POD_LABEL, STATEFULSET_LABEL};
use crate::{HostPort, HostPortClaim};

/// Drops metadata no decision reads: managed fields, labels, annotations (kubectl's
/// last-applied copy among them), owner references.
pub fn strip_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
}

/// A claim as caches keep it: [`strip_metadata`], except the labels that mark a claim made for
/// a pod and its first Pod and StatefulSet owner (what a pod claim's lifetime is decided on;
/// a bounded amount whatever a tenant adds).
pub fn strip_claim(claim: &mut HostPortClaim) {
    let meta = &mut claim.metadata;
    let labels = meta.labels.take().map(|mut labels| {
        let kept = [
            POD_CLAIM_LABEL,
            POD_LABEL,
            STATEFULSET_LABEL,
            ADMITTED_LABEL,
        ];
        labels.retain(|k, _| kept.contains(&k.as_str()));
        labels
    });
    let owners = meta.owner_references.take().map(|owners| {
        let mut kept: Vec<OwnerReference> = vec![];
        for owner in owners {
            if matches!(owner.kind.as_str(), "Pod" | "StatefulSet")
                && !kept.iter().any(|k| k.kind == owner.kind)
            {
                kept.push(owner);
            }
        }
        kept
    });
    strip_metadata(claim);
    claim.metadata.labels = labels.filter(|l| !l.is_empty());
    claim.metadata.owner_references = owners.filter(|o| !o.is_empty());
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
    fn a_stripped_claim_keeps_a_bounded_lifetime_view() {
        let owner = |kind: &str, uid: &str| OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: "x".into(),
            uid: uid.into(),
            ..OwnerReference::default()
        };
        let mut claim =
            HostPortClaim::new("web-0-game", crate::HostPortClaimSpec::of_class("games"));
        claim.metadata.labels = Some(
            [
                (POD_CLAIM_LABEL.to_owned(), "true".to_owned()),
                ("noise".to_owned(), "x".repeat(63)),
            ]
            .into(),
        );
        claim.metadata.owner_references = Some(
            (0..100)
                .map(|i| owner(if i % 2 == 0 { "Pod" } else { "ConfigMap" }, &i.to_string()))
                .chain([owner("StatefulSet", "s")])
                .collect(),
        );
        claim.metadata.annotations = Some([("a".into(), "x".repeat(1024))].into());
        strip_claim(&mut claim);
        assert_eq!(claim.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        let owners = claim
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default();
        let uids: Vec<&str> = owners.iter().map(|o| o.uid.as_str()).collect();
        assert_eq!(uids, vec!["0", "s"]);
        assert!(claim.metadata.annotations.is_none());
    }

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
