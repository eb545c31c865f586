//! What the controller's caches keep of each claim and HostPort: every field a reconcile
//! reads or guards a write with, without `ObjectMeta`'s layout, the store's four-string key,
//! and with the status the controller itself wrote kept as the few values it is made from. A
//! reconcile gets the object back as the API struct ([`CachedClaim::to_claim`],
//! [`CachedHostPort::to_host_port`]) equal to the stripped object kube-runtime's store held,
//! so the code that decides is the same; only the cache is smaller (~1.5 KB per claim and
//! ~1.4 KB per HostPort in kube-runtime's store).

use std::collections::BTreeMap;
use std::sync::Arc;

use hostport_api::conditions::{Condition, reasons, status, types};
use hostport_api::pod_claims::is_pod_claim;
use hostport_api::{
    ClaimPhase, ClaimReference, HostPort, HostPortClaim, HostPortClaimSpec, HostPortClaimStatus,
    HostPortPhase, HostPortSpec, HostPortStatus, PortPolicy,
};
use hostport_process::compact::Compact;

use crate::host_port_name::HostPortName;
use hostport_process::ids::{ResourceVersion, Uid};
use hostport_process::intern::intern;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

/// The metadata a cached object keeps (what `hostport_api::cache::strip_claim` keeps, less
/// the name and namespace, which are the cache's key). What nearly every object has is kept
/// inline and small; the rest behind one pointer.
#[derive(Clone, Debug, PartialEq)]
struct Meta {
    uid: Option<Uid>,
    resource_version: Option<ResourceVersion>,
    generation: Option<i64>,
    created: Option<Time>,
    /// `metadata.finalizers` is exactly ours (`rare` keeps any other list).
    our_finalizer: bool,
    rare: Option<Box<RareMeta>>,
    /// The pod-claim labels and the first Pod and StatefulSet owner (claims made for pods).
    pod_claim: Option<Box<PodClaimMeta>>,
}

/// Metadata only some objects have: being deleted, a generated name, other finalizers.
#[derive(Clone, Debug, Default, PartialEq)]
struct RareMeta {
    deletion: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    generate_name: Option<Box<str>>,
    /// `Some` when `metadata.finalizers` is set and not exactly ours.
    finalizers: Option<Box<[String]>>,
}

/// The labels and owners `strip_claim` keeps (only claims made for pods have any).
type PodClaimMeta = (BTreeMap<String, String>, Vec<OwnerReference>);

impl Meta {
    fn of(meta: &ObjectMeta) -> Self {
        let our_finalizer = matches!(
            meta.finalizers.as_deref(),
            Some([ours]) if ours == hostport_api::FINALIZER
        );
        let rare = RareMeta {
            deletion: meta.deletion_timestamp.clone(),
            deletion_grace_period_seconds: meta.deletion_grace_period_seconds,
            generate_name: meta.generate_name.as_deref().map(Into::into),
            finalizers: meta
                .finalizers
                .as_deref()
                .filter(|_| !our_finalizer)
                .map(Into::into),
        };
        let labels = meta.labels.clone().unwrap_or_default();
        let owners = meta.owner_references.clone().unwrap_or_default();
        Self {
            uid: meta.uid.as_deref().map(Uid::new),
            resource_version: meta.resource_version.as_deref().map(ResourceVersion::new),
            generation: meta.generation,
            created: meta.creation_timestamp.clone(),
            our_finalizer,
            rare: (rare != RareMeta::default()).then(|| Box::new(rare)),
            pod_claim: (!labels.is_empty() || !owners.is_empty())
                .then(|| Box::new((labels, owners))),
        }
    }

    fn is_deleting(&self) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|rare| rare.deletion.is_some())
    }

    /// The metadata back, named `namespace/name`.
    fn to_meta(&self, namespace: Option<&str>, name: &str) -> ObjectMeta {
        let (labels, owners) = match self.pod_claim.as_deref() {
            Some((labels, owners)) => (
                Some(labels.clone()).filter(|l| !l.is_empty()),
                Some(owners.clone()).filter(|o| !o.is_empty()),
            ),
            None => (None, None),
        };
        let rare = self.rare.as_deref().cloned().unwrap_or_default();
        let finalizers = match rare.finalizers {
            Some(list) => Some(list.into_vec()),
            None => self
                .our_finalizer
                .then(|| vec![hostport_api::FINALIZER.to_owned()]),
        };
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: owned(namespace),
            uid: self.uid.as_ref().map(ToString::to_string),
            resource_version: self.resource_version.as_ref().map(ToString::to_string),
            generation: self.generation,
            creation_timestamp: self.created.clone(),
            deletion_timestamp: rare.deletion,
            deletion_grace_period_seconds: rare.deletion_grace_period_seconds,
            generate_name: rare.generate_name.map(String::from),
            finalizers,
            labels,
            owner_references: owners,
            ..ObjectMeta::default()
        }
    }
}

/// A cached claim (its namespace and name are the cache's key).
#[derive(Clone, Debug, PartialEq)]
pub struct CachedClaim {
    meta: Meta,
    spec: ClaimSpec,
    status: ClaimStatus,
}

/// A claim's spec, with the class name shared between claims ([`intern`]) and a `port-<n>`
/// HostPort name held as its port.
#[derive(Clone, Debug, PartialEq)]
struct ClaimSpec {
    class: Arc<str>,
    host_port_name: Option<HostPortName>,
    port: Option<i32>,
    port_policy: Option<PortPolicy>,
    count: Option<i32>,
    alignment: Option<i32>,
}

impl ClaimSpec {
    fn of(spec: &HostPortClaimSpec) -> Self {
        Self {
            class: intern(&spec.host_port_class_name),
            host_port_name: spec.host_port_name.as_deref().map(HostPortName::new),
            port: spec.port,
            port_policy: spec.port_policy,
            count: spec.count,
            alignment: spec.alignment,
        }
    }

    fn to_spec(&self) -> HostPortClaimSpec {
        HostPortClaimSpec {
            host_port_class_name: self.class.to_string(),
            host_port_name: self.host_port_name.as_ref().map(ToString::to_string),
            port: self.port,
            port_policy: self.port_policy,
            count: self.count,
            alignment: self.alignment,
        }
    }
}

/// A claim's status. Almost every claim's is what the controller writes on binding one port
/// (phase Bound, its port, `Bound` and `Ready` True with the binding's message): that is kept
/// as its port and the two transition times.
#[derive(Clone, Debug, PartialEq)]
enum ClaimStatus {
    None,
    Bound {
        port: u16,
        bound_since: Time,
        ready_since: Time,
    },
    Other(Box<HostPortClaimStatus>),
}

/// The status the controller writes for a claim bound to one port through HostPort `name`
/// at `generation`.
fn bound(
    name: &str,
    port: u16,
    generation: Option<i64>,
    bound_since: Time,
    ready_since: Time,
) -> HostPortClaimStatus {
    let message = crate::claim::bound_message(name, port);
    let condition = |type_: &str, since: Time| {
        Condition::new(
            type_,
            status::TRUE,
            reasons::BOUND,
            message.clone(),
            generation,
            since,
        )
    };
    HostPortClaimStatus {
        phase: Some(ClaimPhase::Bound),
        port: Some(i32::from(port)),
        ports: Some(port.to_string()),
        observed_generation: generation,
        conditions: vec![
            condition(types::BOUND, bound_since),
            condition(types::READY, ready_since),
        ],
        external: vec![],
    }
}

impl ClaimStatus {
    fn of(claim: &HostPortClaim) -> Self {
        let Some(status) = &claim.status else {
            return Self::None;
        };
        let generation = claim.metadata.generation;
        if let (Some(name), Some(port), [bound_condition, ready_condition]) = (
            claim.bound_host_port_name(),
            status.port.and_then(hostport_api::ports::port_from_wire),
            status.conditions.as_slice(),
        ) {
            let (bound_since, ready_since) = (
                bound_condition.last_transition_time.clone(),
                ready_condition.last_transition_time.clone(),
            );
            // Kept short only when it is exactly what the short form gives back.
            if bound(
                &name,
                port,
                generation,
                bound_since.clone(),
                ready_since.clone(),
            ) == *status
            {
                return Self::Bound {
                    port,
                    bound_since,
                    ready_since,
                };
            }
        }
        Self::Other(Box::new(status.clone()))
    }

    fn to_status(&self, spec: &ClaimSpec, generation: Option<i64>) -> Option<HostPortClaimStatus> {
        match self {
            Self::None => None,
            Self::Bound {
                port,
                bound_since,
                ready_since,
            } => {
                // As `HostPortClaim::bound_host_port_name` names it (see `of`).
                let name = spec
                    .host_port_name
                    .as_ref()
                    .map_or_else(|| HostPort::name_for_port(*port), ToString::to_string);
                Some(bound(
                    &name,
                    *port,
                    generation,
                    bound_since.clone(),
                    ready_since.clone(),
                ))
            }
            Self::Other(status) => Some((**status).clone()),
        }
    }
}

impl Compact for CachedClaim {
    type Source = HostPortClaim;

    fn compact(claim: &HostPortClaim) -> Self {
        // What kube-runtime's store kept before: the same strip, then the short forms.
        let mut stripped = claim.clone();
        hostport_api::cache::strip_claim(&mut stripped);
        Self {
            meta: Meta::of(&stripped.metadata),
            status: ClaimStatus::of(&stripped),
            spec: ClaimSpec::of(&stripped.spec),
        }
    }
}

impl CachedClaim {
    /// The claim `namespace/name` as cached (what a reconcile reads): equal to the claim
    /// `hostport_api::cache::strip_claim` leaves.
    pub fn to_claim(&self, namespace: &str, name: &str) -> HostPortClaim {
        HostPortClaim {
            metadata: self.meta.to_meta(Some(namespace), name),
            spec: self.spec.to_spec(),
            status: self.status.to_status(&self.spec, self.meta.generation),
        }
    }

    /// `spec.hostPortClassName`.
    pub fn class(&self) -> &str {
        &self.spec.class
    }

    /// Whether it names a HostPort: `spec.hostPortName`, or Bound (a pod claim's status
    /// port names it; see `HostPortClaim::bound_host_port_name`).
    pub fn names_host_port(&self) -> bool {
        self.spec.host_port_name.is_some()
            || match &self.status {
                ClaimStatus::None => false,
                ClaimStatus::Bound { .. } => true,
                ClaimStatus::Other(status) => {
                    hostport_api::claim::bound_port(status.phase, status.port).is_some()
                }
            }
    }

    /// Its UID.
    pub fn uid(&self) -> Option<&Uid> {
        self.meta.uid.as_ref()
    }

    /// Whether it is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.meta.is_deleting()
    }

    /// Whether the webhook made it for a pod (`hostport_api::pod_claims::is_pod_claim`).
    pub fn is_pod_claim(&self) -> bool {
        self.meta
            .pod_claim
            .as_deref()
            .is_some_and(|(labels, _)| is_pod_claim(labels))
    }

    /// When it was created.
    pub fn created(&self) -> Option<&Time> {
        self.meta.created.as_ref()
    }

    /// Its phase (`HostPortClaim::phase`).
    pub fn phase(&self) -> ClaimPhase {
        match &self.status {
            ClaimStatus::None => ClaimPhase::Pending,
            ClaimStatus::Bound { .. } => ClaimPhase::Bound,
            ClaimStatus::Other(status) => status.phase.unwrap_or(ClaimPhase::Pending),
        }
    }

    /// Whether its `Ready` condition is current (`HostPortClaim::ready_is_current`).
    pub fn ready_is_current(&self, publishes: bool) -> bool {
        let status = match &self.status {
            ClaimStatus::None => return true,
            // Ready True for being Bound: current unless the class publishes on a router.
            ClaimStatus::Bound { .. } => return !publishes,
            ClaimStatus::Other(_) => self.status.to_status(&self.spec, self.meta.generation),
        };
        let claim = HostPortClaim {
            metadata: ObjectMeta::default(),
            spec: self.spec.to_spec(),
            status,
        };
        claim.ready_is_current(publishes)
    }
}

/// A HostPort's `spec.claimRef`, as far as anything reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClaimRef {
    name: Option<Box<str>>,
    namespace: Option<Arc<str>>,
    uid: Option<Uid>,
}

/// A cached HostPort (its name is the cache's key).
#[derive(Clone, Debug, PartialEq)]
pub struct CachedHostPort {
    /// Only HostPorts the Go project wrote carry a finalizer (its own).
    meta: Meta,
    class: Arc<str>,
    port: Option<i32>,
    claim: Option<ClaimRef>,
    status: CachedStatus,
}

/// A HostPort's status. Almost every one is what `host_port::set_allocated` writes: phase
/// `Allocated`, the spec's port, the generation observed, one `Allocated` condition; that is
/// kept as its reason and time (~40 bytes instead of ~600). Condition messages are dropped
/// either way: nothing compares them.
#[derive(Clone, Debug, PartialEq)]
enum CachedStatus {
    None,
    Allocated { reason: &'static str, since: Time },
    Other(Box<HostPortStatus>),
}

/// The reasons `set_allocated` writes.
const ALLOCATED_REASONS: [&str; 3] = [
    reasons::ALLOCATED,
    reasons::RESERVED,
    reasons::CLAIM_GONE_PODS_RUNNING,
];

/// The status `set_allocated` writes for a HostPort at `generation` with `port` (messages
/// left empty).
fn allocated(
    port: Option<i32>,
    generation: Option<i64>,
    reason: &str,
    since: Time,
) -> HostPortStatus {
    HostPortStatus {
        phase: Some(HostPortPhase::Allocated),
        port,
        observed_generation: generation,
        conditions: vec![Condition::new(
            types::ALLOCATED,
            status::TRUE,
            reason,
            String::new(),
            generation,
            since,
        )],
    }
}

impl CachedStatus {
    fn of(host_port: &HostPort) -> Self {
        let Some(status) = &host_port.status else {
            return Self::None;
        };
        let mut status = status.clone();
        status.conditions.iter_mut().for_each(|c| c.message.clear());
        let generation = host_port.metadata.generation;
        if let [condition] = status.conditions.as_slice()
            && let Some(reason) = ALLOCATED_REASONS.iter().find(|r| **r == condition.reason)
        {
            let since = condition.last_transition_time.clone();
            // Kept short only when it is exactly what the short form gives back.
            if allocated(host_port.spec.port, generation, reason, since.clone()) == status {
                return Self::Allocated { reason, since };
            }
        }
        Self::Other(Box::new(status))
    }

    fn to_status(&self, port: Option<i32>, generation: Option<i64>) -> Option<HostPortStatus> {
        match self {
            Self::None => None,
            Self::Allocated { reason, since } => {
                Some(allocated(port, generation, reason, since.clone()))
            }
            Self::Other(status) => Some((**status).clone()),
        }
    }

    fn port(&self) -> Option<i32> {
        match self {
            Self::Other(status) => status.port,
            // The short form's port is the spec's.
            Self::None | Self::Allocated { .. } => None,
        }
    }
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
        // What kube-runtime's store kept before: the same strip, then the short forms.
        let mut stripped = host_port.clone();
        hostport_api::cache::strip_host_port(&mut stripped);
        let host_port = &stripped;
        Self {
            meta: Meta::of(&host_port.metadata),
            class: intern(&host_port.spec.host_port_class_name),
            port: host_port.spec.port,
            claim: host_port.spec.claim_ref.as_ref().map(|r| ClaimRef {
                name: boxed(r.name.as_deref()),
                namespace: r.namespace.as_deref().map(intern),
                uid: r.uid.as_deref().map(Uid::new),
            }),
            status: CachedStatus::of(host_port),
        }
    }
}

impl CachedHostPort {
    /// The HostPort `name` as cached (what a reconcile reads): equal to the HostPort
    /// `hostport_api::cache::strip_host_port` leaves.
    pub fn to_host_port(&self, name: &str) -> HostPort {
        HostPort {
            metadata: self.meta.to_meta(None, name),
            spec: HostPortSpec {
                claim_ref: self.claim.as_ref().map(|r| ClaimReference {
                    name: owned(r.name.as_deref()),
                    namespace: owned(r.namespace.as_deref()),
                    uid: r.uid.as_ref().map(ToString::to_string),
                    ..ClaimReference::default()
                }),
                host_port_class_name: self.class.to_string(),
                port: self.port,
            },
            status: self.status.to_status(self.port, self.meta.generation),
        }
    }

    /// `spec.hostPortClassName`.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// Its port (`HostPort::port`: `spec.port`, else a Go-era `status.port`).
    pub fn port(&self) -> Option<u16> {
        HostPort::port_of(self.port, self.status.port())
    }

    /// The UID of the claim it is bound to (`HostPort::claim_uid`).
    pub fn claim_uid(&self) -> Option<&Uid> {
        self.claim.as_ref()?.uid.as_ref()
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
        assert_eq!(back, expected);
        assert_eq!(back.metadata.annotations, None);
        assert_eq!(back.port(), Some(9000));
        assert_eq!(back.claim_uid(), Some("claim-uid"));
        assert_eq!(cached.claim_key(), Some(("games", "lobby")));
        assert_eq!(cached.class(), "games");
    }

    #[test]
    fn the_status_the_controller_writes_is_kept_short_and_any_other_whole() {
        let written = CachedHostPort::compact(&host_port());
        assert!(matches!(
            written.status,
            CachedStatus::Allocated {
                reason: reasons::ALLOCATED,
                ..
            }
        ));
        // Another writer's status (a second condition, an older generation observed) is kept
        // as it is.
        for edit in [
            |status: &mut HostPortStatus| status.observed_generation = Some(1),
            |status: &mut HostPortStatus| {
                let mut extra = status.conditions[0].clone();
                extra.type_ = "Other".into();
                status.conditions.push(extra);
            },
            |status: &mut HostPortStatus| status.conditions[0].reason = "Elsewhere".into(),
        ] {
            let mut other = host_port();
            edit(other.status.as_mut().expect("status"));
            let cached = CachedHostPort::compact(&other);
            assert!(matches!(cached.status, CachedStatus::Other(_)));
            let mut expected = other.clone();
            hostport_api::cache::strip_host_port(&mut expected);
            assert_eq!(cached.to_host_port("port-9000").status, expected.status);
        }
    }

    fn claim(extra: serde_json::Value) -> HostPortClaim {
        let mut value = serde_json::json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
            "metadata": {"name": "lobby", "namespace": "games", "uid": "claim-uid",
                "resourceVersion": "41", "generation": 2, "creationTimestamp": "2026-12-06T00:00:00Z",
                "finalizers": ["hostport.rmb938.com"],
                "labels": {"team": "a"}, "annotations": {"payload": "x".repeat(100_000)},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"hostPortClassName": "games", "hostPortName": "port-9000"},
            "status": {"phase": "Bound", "port": 9000, "ports": "9000", "observedGeneration": 2,
                "conditions": [
                    {"type": "Bound", "status": "True", "reason": "Bound", "observedGeneration": 2,
                     "message": "bound to HostPort port-9000 (port 9000)", "lastTransitionTime": "2026-12-06T00:00:01Z"},
                    {"type": "Ready", "status": "True", "reason": "Bound", "observedGeneration": 2,
                     "message": "bound to HostPort port-9000 (port 9000)", "lastTransitionTime": "2026-12-06T00:00:02Z"}]}
        });
        merge(&mut value, extra);
        serde_json::from_value(value).expect("claim")
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(into), serde_json::Value::Object(from)) => {
                for (key, value) in from {
                    merge(into.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (into, from) => *into = from,
        }
    }

    #[test]
    fn a_reconcile_gets_back_the_claim_kube_runtimes_store_held_whatever_its_state() {
        let cases = [
            ("bound", serde_json::json!({})),
            (
                "pending",
                serde_json::json!({"spec": {"hostPortName": null}, "status": {"phase": "Pending",
                "port": null, "ports": null, "conditions": [{"type": "Bound", "status": "False",
                "reason": "PoolExhausted", "message": "m", "lastTransitionTime": "2026-12-06T00:00:01Z"}]}}),
            ),
            (
                "no status",
                serde_json::json!({"status": null, "spec": {"hostPortName": null}}),
            ),
            (
                "deleting",
                serde_json::json!({"metadata": {"deletionTimestamp": "2026-12-06T01:00:00Z",
                "deletionGracePeriodSeconds": 0}, "status": {"phase": "Deleting"}}),
            ),
            (
                "a block",
                serde_json::json!({"spec": {"count": 4}, "status": {"ports": "9000-9003"}}),
            ),
            (
                "published on a router",
                serde_json::json!({"status": {"external": [{"address": "203.0.113.1",
                "port": 9000, "protocol": "UDP", "method": "PCP", "nodeName": "n1"}]}}),
            ),
            (
                "an older generation observed",
                serde_json::json!({"metadata": {"generation": 3}}),
            ),
            (
                "made for a pod",
                serde_json::json!({"metadata": {"generateName": "web-0-",
                "labels": {"hostport.rmb938.com/pod-claim": "true", "team": "b"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "pod-uid"},
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm-uid"}]}}),
            ),
            (
                "made for a pod, named by its port",
                serde_json::json!({"metadata": {"labels": {"hostport.rmb938.com/pod-claim": "true"}},
                "spec": {"hostPortName": null}}),
            ),
            (
                "no name, another HostPort in the message",
                serde_json::json!({"spec": {"hostPortName": null}, "status": {"conditions": [
                    {"type": "Bound", "status": "True", "reason": "Bound", "observedGeneration": 2,
                     "message": "bound to HostPort hpc-1 (port 9000)", "lastTransitionTime": "2026-12-06T00:00:01Z"},
                    {"type": "Ready", "status": "True", "reason": "Bound", "observedGeneration": 2,
                     "message": "bound to HostPort hpc-1 (port 9000)", "lastTransitionTime": "2026-12-06T00:00:02Z"}]}}),
            ),
            (
                "other finalizers",
                serde_json::json!({"metadata": {"finalizers": ["a", "hostport.rmb938.com"]}}),
            ),
            (
                "no finalizer",
                serde_json::json!({"metadata": {"finalizers": null}}),
            ),
        ];
        for (case, extra) in cases {
            let original = claim(extra);
            let mut expected = original.clone();
            hostport_api::cache::strip_claim(&mut expected);
            let cached = CachedClaim::compact(&original);
            assert_eq!(cached.to_claim("games", "lobby"), expected, "{case}");
            assert_eq!(cached.phase(), expected.phase(), "{case}");
            assert_eq!(cached.uid(), Some(&Uid::new("claim-uid")), "{case}");
            assert_eq!(cached.is_deleting(), case == "deleting", "{case}");
            assert_eq!(
                cached.is_pod_claim(),
                case.starts_with("made for a pod"),
                "{case}"
            );
            assert_eq!(
                cached.names_host_port(),
                expected.bound_host_port_name().is_some(),
                "{case}"
            );
            for publishes in [false, true] {
                assert_eq!(
                    cached.ready_is_current(publishes),
                    expected.ready_is_current(publishes),
                    "{case}"
                );
            }
        }
        assert!(matches!(
            CachedClaim::compact(&claim(serde_json::json!({}))).status,
            ClaimStatus::Bound { port: 9000, .. }
        ));
        let pod_claim = claim(serde_json::json!({"spec": {"hostPortName": null}}));
        assert!(
            matches!(
                CachedClaim::compact(&pod_claim).status,
                ClaimStatus::Bound { port: 9000, .. }
            ),
            "a claim without spec.hostPortName is kept short too"
        );
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

    #[test]
    fn the_cached_port_is_the_objects_port_whatever_spec_and_status_say() {
        for (spec_port, status_port) in [
            (Some(9000), Some(9000)),
            (Some(9000), None),
            (None, Some(9001)),
            (Some(0), Some(9001)),
            (Some(70_000), Some(9001)),
            (Some(0), None),
            (None, None),
        ] {
            let mut object = host_port();
            object.spec.port = spec_port;
            if let Some(status) = object.status.as_mut() {
                status.port = status_port;
            }
            let cached = CachedHostPort::compact(&object);
            assert_eq!(
                cached.port(),
                object.port(),
                "spec {spec_port:?}, status {status_port:?}"
            );
        }
    }
}
