//! What the controller's HostPort cache keeps of each HostPort: every field a reconcile reads
//! or guards a write with, without `ObjectMeta`'s layout, the store's four-string key and the
//! condition messages. A reconcile gets the HostPort back as the API struct
//! ([`CachedHostPort::to_host_port`]), so the code that decides is the same whichever way it
//! is cached; only the cache is smaller (~1.4 KB per HostPort in kube-runtime's store).

use hostport_api::{ClaimReference, HostPort, HostPortSpec, HostPortStatus};
use hostport_process::compact::Compact;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A HostPort's `spec.claimRef`, as far as anything reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClaimRef {
    name: Option<Box<str>>,
    namespace: Option<Box<str>>,
    uid: Option<Box<str>>,
}

/// A cached HostPort (its name is the cache's key).
#[derive(Clone, Debug, PartialEq)]
pub struct CachedHostPort {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    generation: Option<i64>,
    deletion: Option<Time>,
    /// Only HostPorts the Go project wrote carry one (its own finalizer).
    finalizers: Option<Box<[String]>>,
    class: Box<str>,
    port: Option<i32>,
    claim: Option<ClaimRef>,
    /// Condition messages dropped: nothing compares them (`host_port::set_allocated`).
    status: Option<Box<HostPortStatus>>,
}

fn boxed(text: Option<&str>) -> Option<Box<str>> {
    text.map(Into::into)
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(ToOwned::to_owned)
}

impl Compact for CachedHostPort {
    type Source = HostPort;

    fn compact(host_port: &HostPort) -> Self {
        let meta = &host_port.metadata;
        let status = host_port.status.as_ref().map(|status| {
            let mut status = status.clone();
            status.conditions.iter_mut().for_each(|c| c.message.clear());
            Box::new(status)
        });
        Self {
            uid: boxed(meta.uid.as_deref()),
            resource_version: boxed(meta.resource_version.as_deref()),
            generation: meta.generation,
            deletion: meta.deletion_timestamp.clone(),
            finalizers: meta
                .finalizers
                .as_ref()
                .filter(|f| !f.is_empty())
                .map(|f| f.clone().into_boxed_slice()),
            class: host_port.spec.host_port_class_name.as_str().into(),
            port: host_port.spec.port,
            claim: host_port.spec.claim_ref.as_ref().map(|r| ClaimRef {
                name: boxed(r.name.as_deref()),
                namespace: boxed(r.namespace.as_deref()),
                uid: boxed(r.uid.as_deref()),
            }),
            status,
        }
    }
}

impl CachedHostPort {
    /// The HostPort `name` as cached (what a reconcile reads).
    pub fn to_host_port(&self, name: &str) -> HostPort {
        let mut host_port = HostPort::new(
            name,
            HostPortSpec {
                claim_ref: self.claim.as_ref().map(|r| ClaimReference {
                    name: owned(r.name.as_deref()),
                    namespace: owned(r.namespace.as_deref()),
                    uid: owned(r.uid.as_deref()),
                    ..ClaimReference::default()
                }),
                host_port_class_name: self.class.to_string(),
                port: self.port,
            },
        );
        let meta = &mut host_port.metadata;
        meta.uid = owned(self.uid.as_deref());
        meta.resource_version = owned(self.resource_version.as_deref());
        meta.generation = self.generation;
        meta.deletion_timestamp = self.deletion.clone();
        meta.finalizers = self.finalizers.as_deref().map(<[String]>::to_vec);
        host_port.status = self.status.as_deref().cloned();
        host_port
    }

    /// `spec.hostPortClassName`.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// Its port (`HostPort::port`: `spec.port`, else a Go-era `status.port`).
    pub fn port(&self) -> Option<u16> {
        let from_status = || self.status.as_ref()?.port;
        self.port
            .or_else(from_status)
            .and_then(hostport_api::ports::port_from_wire)
    }

    /// The namespace and name of the claim it is bound to (`HostPort::claim_key`).
    pub fn claim_key(&self) -> Option<(&str, &str)> {
        let claim = self.claim.as_ref()?;
        Some((claim.namespace.as_deref()?, claim.name.as_deref()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::HostPortPhase;
    use hostport_api::conditions::Condition;

    fn host_port() -> HostPort {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPort",
            "metadata": {"name": "port-9000", "uid": "hp-uid", "resourceVersion": "12", "generation": 3,
                "finalizers": ["hostport.rmb938.com/finalizer"],
                "deletionTimestamp": "2026-12-06T00:00:00Z",
                "labels": {"big": "x"}, "annotations": {"payload": "x".repeat(100_000)}},
            "spec": {"hostPortClassName": "games", "port": 9000,
                "claimRef": {"apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
                    "name": "lobby", "namespace": "games", "uid": "claim-uid", "resourceVersion": "5"}},
            "status": {"phase": "Allocated", "port": 9000, "observedGeneration": 3, "conditions": [
                {"type": "Allocated", "status": "True", "reason": "Allocated", "message": "port 9000 allocated",
                 "lastTransitionTime": "2026-12-06T00:00:00Z", "observedGeneration": 3}]}
        }))
        .expect("host port")
    }

    #[test]
    fn a_reconcile_gets_back_every_field_it_reads_and_nothing_a_tenant_can_grow() {
        let original = host_port();
        let cached = CachedHostPort::compact(&original);
        let back = cached.to_host_port("port-9000");
        let mut expected = original.clone();
        hostport_api::cache::strip_host_port(&mut expected);
        assert_eq!(back.metadata.name, expected.metadata.name);
        assert_eq!(back.metadata.uid, expected.metadata.uid);
        assert_eq!(
            back.metadata.resource_version,
            expected.metadata.resource_version
        );
        assert_eq!(back.metadata.generation, expected.metadata.generation);
        assert_eq!(
            back.metadata.deletion_timestamp,
            expected.metadata.deletion_timestamp
        );
        assert_eq!(back.metadata.finalizers, expected.metadata.finalizers);
        assert_eq!(back.metadata.annotations, None);
        assert_eq!(back.metadata.labels, None);
        assert_eq!(back.spec, expected.spec);
        assert_eq!(back.status, expected.status);
        assert_eq!(back.port(), Some(9000));
        assert_eq!(back.claim_uid(), Some("claim-uid"));
        assert_eq!(cached.claim_key(), Some(("games", "lobby")));
        assert_eq!(cached.class(), "games");
    }

    #[test]
    fn a_go_era_host_port_with_its_port_only_in_the_status_keeps_it() {
        let mut go_era = host_port();
        go_era.spec.port = None;
        go_era.spec.claim_ref = None;
        go_era.status = Some(HostPortStatus {
            phase: Some(HostPortPhase::Allocated),
            port: Some(9001),
            observed_generation: None,
            conditions: Vec::<Condition>::new(),
        });
        let cached = CachedHostPort::compact(&go_era);
        assert_eq!(cached.port(), Some(9001));
        assert_eq!(cached.to_host_port("port-9001").port(), Some(9001));
        assert_eq!(cached.claim_key(), None);
    }
}
