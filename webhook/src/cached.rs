//! What admission keeps of claims and HostPorts: the fields its decisions read, and nothing
//! a tenant can grow (a few hundred bytes each, whatever the object weighs). A claim or
//! HostPort read from the API server on a cache miss is reduced to the same form, so one
//! piece of logic decides on both.

use std::collections::BTreeMap;

use hostport_api::pod_claims::POD_CLAIM_LABELS;
use hostport_api::{ClaimPhase, HostPort, HostPortClaim, HostPortClaimSpec};
use hostport_process::compact::Compact;

/// A claim as admission reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedClaim {
    /// `metadata.uid` (empty if the API server gave none).
    pub uid: Box<str>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The spec as written (class, HostPort name, policy, block).
    pub spec: HostPortClaimSpec,
    /// `status.phase` (no status: Pending).
    pub phase: ClaimPhase,
    /// `status.port`.
    pub status_port: Option<i32>,
    /// The `Bound` condition's reason and message while the claim is not Bound (a denial
    /// quotes them; a Bound claim's are never read).
    pub pending: Option<(Box<str>, Box<str>)>,
    /// The labels that mark a claim made for a pod (marker, pod, StatefulSet, admitted at).
    pub pod_claim_labels: BTreeMap<String, String>,
    /// Its first `Pod` owner's name and UID (a claim that goes with an earlier pod).
    pub pod_owner: Option<(Box<str>, Box<str>)>,
}

impl From<&HostPortClaim> for CachedClaim {
    fn from(claim: &HostPortClaim) -> Self {
        let meta = &claim.metadata;
        let phase = claim.phase();
        let pending = match phase {
            ClaimPhase::Bound => None,
            _ => claim
                .bound_condition()
                .map(|bound| (bound.reason.as_str().into(), bound.message.as_str().into())),
        };
        let pod_claim_labels = meta
            .labels
            .iter()
            .flatten()
            .filter(|(key, _)| POD_CLAIM_LABELS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let pod_owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.kind == "Pod")
            .map(|owner| (owner.name.as_str().into(), owner.uid.as_str().into()));
        Self {
            uid: meta.uid.as_deref().unwrap_or_default().into(),
            deleting: meta.deletion_timestamp.is_some(),
            spec: claim.spec.clone(),
            phase,
            status_port: claim.status.as_ref().and_then(|s| s.port),
            pending,
            pod_claim_labels,
            pod_owner,
        }
    }
}

impl CachedClaim {
    /// The HostPort it is bound to by name (`HostPortClaim::bound_host_port_name`).
    pub fn bound_host_port_name(&self) -> Option<std::borrow::Cow<'_, str>> {
        hostport_api::claim::bound_host_port_name(
            self.spec.host_port_name.as_deref(),
            Some(self.phase),
            self.status_port,
        )
    }
}

impl Compact for CachedClaim {
    type Source = HostPortClaim;
    fn compact(source: &HostPortClaim) -> Self {
        source.into()
    }
}

/// A HostPort as admission reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedHostPort {
    /// The port it holds (`HostPort::port`).
    pub port: Option<u16>,
    /// `spec.claimRef.uid`, if recorded.
    pub claim_uid: Option<Box<str>>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

impl From<&HostPort> for CachedHostPort {
    fn from(host_port: &HostPort) -> Self {
        Self {
            port: host_port.port(),
            claim_uid: host_port.claim_uid().map(Into::into),
            deleting: host_port.metadata.deletion_timestamp.is_some(),
        }
    }
}

impl Compact for CachedHostPort {
    type Source = HostPort;
    fn compact(source: &HostPort) -> Self {
        source.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::conditions::Condition;
    use hostport_api::conditions::types::BOUND;
    use hostport_api::pod_claims::POD_CLAIM_LABEL;
    use hostport_api::{ClaimReference, HostPortClaimStatus, HostPortSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn pending_claim() -> HostPortClaim {
        let mut claim = HostPortClaim::new("web", HostPortClaimSpec::of_class("games"));
        claim.metadata.uid = Some("uid-1".into());
        claim.metadata.annotations = Some([("big".to_owned(), "x".repeat(200_000))].into());
        claim.metadata.labels = Some(
            [
                (POD_CLAIM_LABEL.to_owned(), "true".to_owned()),
                ("team".to_owned(), "x".repeat(63)),
            ]
            .into(),
        );
        claim.metadata.owner_references = Some(vec![
            OwnerReference {
                kind: "Deployment".into(),
                name: "d".into(),
                uid: "u0".into(),
                ..OwnerReference::default()
            },
            OwnerReference {
                kind: "Pod".into(),
                name: "p".into(),
                uid: "u1".into(),
                ..OwnerReference::default()
            },
        ]);
        claim.status = Some(HostPortClaimStatus {
            conditions: vec![Condition::new(
                BOUND,
                "False",
                "NoPortsAvailable",
                "class games is full",
                None,
                Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            )],
            ..HostPortClaimStatus::default()
        });
        claim
    }

    #[test]
    fn a_claim_keeps_what_admission_reads_and_drops_what_a_tenant_can_grow() {
        let cached = CachedClaim::from(&pending_claim());
        assert_eq!(&*cached.uid, "uid-1");
        assert_eq!(cached.phase, ClaimPhase::Pending);
        assert_eq!(
            cached.pending,
            Some(("NoPortsAvailable".into(), "class games is full".into()))
        );
        assert_eq!(
            cached.pod_claim_labels,
            BTreeMap::from([(POD_CLAIM_LABEL.to_owned(), "true".to_owned())])
        );
        assert_eq!(cached.pod_owner, Some(("p".into(), "u1".into())));
        assert_eq!(cached.spec.host_port_class_name, "games");
        assert!(!cached.deleting);
    }

    #[test]
    fn a_bound_claim_keeps_its_port_and_no_condition_text() {
        let mut claim = pending_claim();
        claim.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        if let Some(status) = claim.status.as_mut() {
            status.phase = Some(ClaimPhase::Bound);
            status.port = Some(40_000);
        }
        let cached = CachedClaim::from(&claim);
        assert_eq!(
            (
                cached.phase,
                cached.status_port,
                cached.pending,
                cached.deleting
            ),
            (ClaimPhase::Bound, Some(40_000), None, true)
        );
    }

    #[test]
    fn a_host_port_keeps_its_port_and_claim_uid() {
        let mut host_port = HostPort::new(
            "port-40000",
            HostPortSpec {
                host_port_class_name: "games".into(),
                port: Some(40_000),
                claim_ref: Some(ClaimReference {
                    uid: Some("uid-1".into()),
                    ..ClaimReference::default()
                }),
            },
        );
        assert_eq!(
            CachedHostPort::from(&host_port),
            CachedHostPort {
                port: Some(40_000),
                claim_uid: Some("uid-1".into()),
                deleting: false
            }
        );
        host_port.spec.claim_ref = None;
        host_port.spec.port = Some(0);
        assert_eq!(
            CachedHostPort::from(&host_port),
            CachedHostPort {
                port: None,
                claim_uid: None,
                deleting: false
            }
        );
    }
}
