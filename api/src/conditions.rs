//! Status conditions in the `metav1.Condition` shape, and the helper that sets them the way
//! apimachinery's `meta.SetStatusCondition` does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types this project writes.
pub mod types {
    /// HostPortClaim: a HostPort with a port is bound to the claim.
    pub const BOUND: &str = "Bound";
    /// HostPort: the port is allocated to its claim.
    pub const ALLOCATED: &str = "Allocated";
    /// HostPortClass: every port of the class pools is in use.
    pub const EXHAUSTED: &str = "Exhausted";
    /// HostPortClass: a pool shares ports with a pool of another class (information only:
    /// a port is still handed out once whatever its class).
    pub const POOLS_OVERLAP_OTHER_CLASS: &str = "PoolsOverlapOtherClass";
    /// Class: live pods declare ports of its pools outside the allocator's books (the
    /// allocator skips them; `status.portsInUseOutside` lists them).
    pub const PORTS_IN_USE_OUTSIDE: &str = "PortsInUseOutside";
    /// Class: a pool overlaps the cluster's NodePort Service range (a Service may take a
    /// port a claim holds, or the other way round).
    pub const OVERLAPS_NODE_PORT_RANGE: &str = "OverlapsNodePortRange";
    /// HostPortClaim: the port is mapped on the router (written by the router publisher,
    /// beside the `Ready` it recomputes).
    pub const PUBLISHED: &str = "Published";
    /// HostPortClaim and HostPortClass: the summary that `kubectl wait --for=condition=Ready`,
    /// Flux (kstatus) and Argo CD read. A claim is Ready when Bound and, where its class
    /// publishes on a router, Published; a class when it has free ports.
    pub const READY: &str = "Ready";
}

/// Condition reasons this project writes (PascalCase, a fixed set: they are also Event reasons).
pub mod reasons {
    /// The claim is bound to a HostPort holding a port.
    pub const BOUND: &str = "Bound";
    /// The HostPort holds a port for its claim.
    pub const ALLOCATED: &str = "Allocated";
    /// The claim waits for the allocator to pick a port.
    pub const WAITING_FOR_PORT: &str = "WaitingForPort";
    /// The claim names a HostPortClass that does not exist.
    pub const CLASS_NOT_FOUND: &str = "ClassNotFound";
    /// Every port of the claim's class is in use.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// The claim's requested `spec.port` is held by another HostPort.
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    /// The claim's requested `spec.port` is in none of its class's pools.
    pub const PORT_OUTSIDE_POOLS: &str = "PortOutsidePools";
    /// The claim's requested (or previous) port is declared by a live pod that did not get
    /// it from the allocator (a `hostPort` set by hand, a `hostNetwork` pod).
    pub const PORT_IN_USE: &str = "PortInUse";
    /// The claim is being deleted; its port is kept while pod admissions that may have read
    /// it can still complete.
    pub const ADMISSIONS_IN_FLIGHT: &str = "AdmissionsInFlight";
    /// Class: live pods declare ports of its pools that no claim of theirs holds.
    pub const PORTS_IN_USE_OUTSIDE: &str = "PortsInUseOutside";
    /// Class: every port of its pools in use is held through a claim.
    pub const NO_PORTS_IN_USE_OUTSIDE: &str = "NoPortsInUseOutside";
    /// Class: a pool overlaps the cluster's NodePort Service range.
    pub const NODE_PORT_RANGE: &str = "NodePortRange";
    /// Class: no pool overlaps the cluster's NodePort Service range.
    pub const OUTSIDE_NODE_PORT_RANGE: &str = "OutsideNodePortRange";
    /// The claim's namespace is not selected by its class's `namespaceSelector`.
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// The claim's namespace already holds `maxClaimsPerNamespace` claims of its class.
    pub const NAMESPACE_LIMIT_REACHED: &str = "NamespaceLimitReached";
    /// The claim asks for `portPolicy: Passthrough` of a class that does not allow it.
    pub const PASSTHROUGH_NOT_ALLOWED: &str = "PassthroughNotAllowed";
    /// The claim asks for a block larger than its class's `maxBlockSize`.
    pub const BLOCK_TOO_LARGE: &str = "BlockTooLarge";
    /// A `hostNetwork` pod asks for a port of a class that does not allow such pods.
    pub const HOST_NETWORK_NOT_ALLOWED: &str = "HostNetworkNotAllowed";
    /// The claim's block cannot be: its `spec.port` is not a multiple of `spec.alignment`.
    pub const INVALID_BLOCK: &str = "InvalidBlock";
    /// The claim is being deleted and pods still reference it.
    pub const IN_USE_BY_PODS: &str = "InUseByPods";
    /// HostPort: its claim is gone, but pods that named the claim still run, so the port
    /// stays held until they stop.
    pub const CLAIM_GONE_PODS_RUNNING: &str = "ClaimGonePodsRunning";
    /// Claim: `spec.hostPortName` names a HostPort that does not exist or is not bound to
    /// this claim (by UID); the allocator binds a port from the class pools instead.
    pub const HOST_PORT_NOT_OWNED: &str = "HostPortNotOwned";
    /// HostPort: a port held back by an administrator (no claimRef).
    pub const RESERVED: &str = "Reserved";
    /// Class: free ports remain.
    pub const PORTS_AVAILABLE: &str = "PortsAvailable";
    /// Class: no free port remains.
    pub const NO_PORTS_AVAILABLE: &str = "NoPortsAvailable";
    /// Claim `Ready`: Bound, and its class publishes on a router, which has not mapped it yet.
    pub const WAITING_FOR_PUBLISH: &str = "WaitingForPublish";
    /// Claim `Ready`: mapped on the router.
    pub const PUBLISHED: &str = "Published";
    /// Claim `Ready`: being deleted.
    pub const DELETING: &str = "Deleting";
    /// Class: a pool overlaps a pool of another class.
    pub const OVERLAP: &str = "Overlap";
    /// Class: no pool overlaps another class.
    pub const NO_OVERLAP: &str = "NoOverlap";

    /// Whether a claim Pending for `reason` stays Pending until someone acts (creates the
    /// class, frees a port, recreates the claim): a pod naming it is told at once rather
    /// than made to wait for a binding that will not come by itself.
    pub fn blocks_binding(reason: &str) -> bool {
        matches!(
            reason,
            CLASS_NOT_FOUND
                | POOL_EXHAUSTED
                | PORT_UNAVAILABLE
                | PORT_IN_USE
                | PORT_OUTSIDE_POOLS
                | NAMESPACE_NOT_ALLOWED
                | NAMESPACE_LIMIT_REACHED
        )
    }
}

/// `True`, `False` or `Unknown`, as `metav1.ConditionStatus`.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// It is not known whether the condition holds.
    pub const UNKNOWN: &str = "Unknown";
}

/// One aspect of an object's current state (`metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition in CamelCase, e.g. `Bound`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// Status of the condition: `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// The `.metadata.generation` the condition was set based upon; a condition with an older
    /// generation than the object is out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When the condition last changed from one status to another.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub last_transition_time: Time,
    /// Machine-readable reason for the condition's last transition, in CamelCase.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Human-readable details about the transition; may be empty.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
}

impl Condition {
    /// A condition of `type_` with `status` ("True"/"False"/"Unknown"), stamped `now`.
    pub fn new(
        type_: &str,
        status: &str,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status: status.to_owned(),
            observed_generation,
            last_transition_time: now,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// Whether the condition's status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == status::TRUE
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets `new` in `conditions`, replacing the condition of the same type.
///
/// `lastTransitionTime` only moves when the status changes, so a reconcile that repeats
/// itself leaves the condition byte-for-byte as it was. Returns whether anything changed.
pub fn set(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(existing) => {
            let transition_time = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            let updated = Condition {
                last_transition_time: transition_time,
                ..new
            };
            if *existing == updated {
                false
            } else {
                *existing = updated;
                true
            }
        }
    }
}

/// Removes the condition of `type_`; returns whether one was there.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn bound(status: &str, reason: &str, generation: i64, now: Time) -> Condition {
        Condition::new(types::BOUND, status, reason, "msg", Some(generation), now)
    }

    #[test]
    fn adds_a_missing_condition() {
        let mut conditions = vec![];
        assert!(set(&mut conditions, bound("True", "Bound", 1, at(10))));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn same_status_keeps_transition_time_and_reports_no_change() {
        let mut conditions = vec![bound("True", "Bound", 1, at(10))];
        assert!(!set(&mut conditions, bound("True", "Bound", 1, at(20))));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn same_status_new_reason_updates_but_keeps_transition_time() {
        let mut conditions = vec![bound("False", "ClassNotFound", 1, at(10))];
        assert!(set(
            &mut conditions,
            bound("False", "PoolExhausted", 2, at(20))
        ));
        assert_eq!(conditions[0].reason, "PoolExhausted");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut conditions = vec![bound("False", "PoolExhausted", 1, at(10))];
        assert!(set(&mut conditions, bound("True", "Bound", 1, at(30))));
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn other_types_are_left_alone() {
        let other = Condition::new(types::EXHAUSTED, "False", "PortsAvailable", "", None, at(1));
        let mut conditions = vec![other.clone()];
        set(&mut conditions, bound("True", "Bound", 1, at(5)));
        assert_eq!(conditions[0], other);
        assert_eq!(
            find(&conditions, types::BOUND).map(Condition::is_true),
            Some(true)
        );
        assert!(remove(&mut conditions, types::EXHAUSTED));
        assert!(!remove(&mut conditions, types::EXHAUSTED));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn go_project_condition_deserializes() {
        let json = r#"{"type":"Bound","status":"True","lastTransitionTime":"2020-07-01T10:00:00Z","reason":"Bound","message":""}"#;
        let c: Condition = serde_json::from_str(json).expect("Go condition");
        assert!(c.is_true());
        assert_eq!(c.observed_generation, None);
    }
}
