//! `HostPortClaim`: a tenant's request for one host port, bound by the controller to a
//! `HostPort` the way a PersistentVolumeClaim is bound to a PersistentVolume.

use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use std::borrow::Cow;

use crate::HostPort;
use crate::conditions::{self, Condition, reasons, status, types};
use crate::ports::port_from_wire;

/// A request for one node host port from a HostPortClass. Pods in the same namespace use it
/// through the `claim.hostport.rmb938.com/<containerPortName>: <claimName>` annotation.
// Several `printcolumn`s and `shortname`s are how kube-derive takes lists.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hostport.rmb938.com",
    version = "v1alpha1",
    kind = "HostPortClaim",
    namespaced,
    shortname = "hpclaim",
    shortname = "hpc",
    category = "hostport-allocator",
    status = "HostPortClaimStatus",
    derive = "PartialEq",
    doc = "HostPortClaim requests one node host port from a HostPortClass for pods in its namespace.",
    printcolumn(
        name = "Class",
        type_ = "string",
        json_path = ".spec.hostPortClassName",
        description = "HostPortClass the port comes from"
    ),
    printcolumn(
        name = "Ports",
        type_ = "string",
        json_path = ".status.ports",
        description = "Bound host port, or the block of ports (first-last)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Bound or Deleting"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the claim is or is not Ready (Bound, PoolExhausted, WaitingForPublish, ...)"
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".spec.portPolicy",
        priority = "1",
        description = "Mapped (default) or Passthrough (containerPort = hostPort)"
    ),
    printcolumn(
        name = "HostPort",
        type_ = "string",
        json_path = ".spec.hostPortName",
        priority = "1",
        description = "HostPort bound to this claim (hand-made claims; a claim made for a pod leaves it empty: its HostPort is port-<Ports>)"
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".metadata.labels.hostport\\.rmb938\\.com/pod",
        priority = "1",
        description = "The pod the webhook made this claim for (claims made by annotation)"
    ),
    printcolumn(
        name = "External",
        type_ = "string",
        json_path = ".status.external[0].address",
        priority = "1",
        description = "Router public address the port is mapped on (spec.publish.router)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// `hostPortName` has no CEL rule: CEL cannot tell the allocator from a tenant, and the
// allocator must be able to re-point a claim whose HostPort is gone. The webhook denies every
// other writer, and the controller never trusts the field (it adopts by claimRef.uid).
#[x_kube(
    validation = Rule::new(
        "has(self.port) == has(oldSelf.port) && (!has(self.port) || self.port == oldSelf.port)"
    ).message("port is immutable: delete and recreate the claim to request another port").field_path(".port")
)]
#[x_kube(
    validation = Rule::new(
        "has(self.portPolicy) == has(oldSelf.portPolicy) && (!has(self.portPolicy) || self.portPolicy == oldSelf.portPolicy)"
    ).message("portPolicy is immutable: delete and recreate the claim to use another policy").field_path(".portPolicy")
)]
#[x_kube(
    validation = Rule::new(
        "has(self.count) == has(oldSelf.count) && (!has(self.count) || self.count == oldSelf.count)"
    ).message("count is immutable: delete and recreate the claim to ask for another block").field_path(".count")
)]
#[x_kube(
    validation = Rule::new(
        "has(self.alignment) == has(oldSelf.alignment) && (!has(self.alignment) || self.alignment == oldSelf.alignment)"
    ).message("alignment is immutable: delete and recreate the claim to ask for another block").field_path(".alignment")
)]
pub struct HostPortClaimSpec {
    /// Name of the HostPortClass to allocate the port from. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("hostPortClassName is immutable: delete and recreate the claim to use another class"))]
    pub host_port_class_name: String,

    /// Name of the HostPort bound to this claim. Written by the allocator only: the webhook
    /// denies anyone else who sets or changes it. Leave it empty.
    #[schemars(length(max = 253))]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::empty_string_as_none"
    )]
    pub host_port_name: Option<String>,

    /// A specific port to allocate (static allocation). It must lie inside a pool of the
    /// class; the claim stays Pending while another HostPort holds it. Omit to get the lowest
    /// free port of the class. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// How pods use the port. `Mapped` (the default): the container port keeps its number and
    /// the host port forwards to it. `Passthrough`: the pod's container port becomes the
    /// allocated port too (`containerPort` = `hostPort`), for programs that must listen on the
    /// port clients reach them on (game servers that announce their port, SIP, WebRTC); the
    /// webhook rewrites the port's `containerPort` and the probes that named the old number.
    /// Needs a class with `allowPassthrough: true`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_policy: Option<PortPolicy>,

    /// How many consecutive ports to allocate: a block (e.g. an RTP media range), default 1.
    /// More than 1 needs a class whose `maxBlockSize` allows it. The claim is Bound only once
    /// every port of the block is held (one HostPort each, `port-<n>`); pods get the first
    /// port in `port.hostport.rmb938.com/<name>` and the count in
    /// `count.hostport.rmb938.com/<name>`, and one container port per port. With
    /// `spec.port`, the block starts there. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub count: Option<i32>,

    /// The first port of a block is a multiple of this (2: an even base, as RTP wants);
    /// default 1. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub alignment: Option<i32>,
}

/// How pods use the claim's port. `Mapped` (the default): the container port keeps its
/// number and the host port forwards to it. `Passthrough`: the pod's container port becomes
/// the allocated port too (`containerPort` = `hostPort`), for programs that must listen on the
/// port clients reach them on (game servers that announce their port, SIP, WebRTC); the
/// webhook rewrites the port's `containerPort` and the probes that named the old number.
/// Needs a class with `allowPassthrough: true`. Immutable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PortPolicy {
    /// The container port keeps its number; the host port forwards to it.
    #[default]
    Mapped,
    /// The container port is the allocated port (`containerPort` = `hostPort`).
    Passthrough,
}

impl PortPolicy {
    /// The policy as written on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            PortPolicy::Mapped => "Mapped",
            PortPolicy::Passthrough => "Passthrough",
        }
    }
}

impl std::str::FromStr for PortPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "Mapped" => Ok(PortPolicy::Mapped),
            "Passthrough" => Ok(PortPolicy::Passthrough),
            other => Err(format!(
                "{other:?} is not a port policy: use \"Mapped\" or \"Passthrough\""
            )),
        }
    }
}

/// Lifecycle phase of a claim.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClaimPhase {
    /// Waiting for a port (see the `Bound` condition for why).
    Pending,
    /// Bound to a HostPort holding a port; pods may use it.
    Bound,
    /// Being deleted; held until no running pod references it.
    Deleting,
}

impl ClaimPhase {
    /// The phase as written on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClaimPhase::Pending => "Pending",
            ClaimPhase::Bound => "Bound",
            ClaimPhase::Deleting => "Deleting",
        }
    }
}

/// Observed state of a HostPortClaim, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostPortClaimStatus {
    /// Pending, Bound or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClaimPhase>,
    /// The bound host port (a copy of the HostPort's port, for `kubectl get`); of a block, its
    /// first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// The bound ports as text, `9000` or a block's `9000-9009` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 11))]
    pub ports: Option<String>,
    /// The `.metadata.generation` this status describes (written by the allocator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state; `Bound` explains a Pending claim (reasons ClassNotFound, PoolExhausted,
    /// PortUnavailable, PortOutsidePools); `Ready` sums it up (Bound and, where the class
    /// publishes on a router, `Published`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Where the port is reachable from outside: one entry per port (of a block: each) and
    /// protocol mapped on the router (written by `hostport-publisher --mode router` when the
    /// class has `spec.publish.router`; see the `Published` condition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2048))]
    pub external: Vec<ExternalEndpoint>,
}

impl HostPortClaimStatus {
    /// The `Ready` condition these conditions add up to: True once Bound and, when the
    /// class publishes on a router (`publishes`), Published; otherwise False with the reason
    /// of the condition that holds it back.
    pub fn ready(&self, publishes: bool, generation: Option<i64>, now: Time) -> Condition {
        let bound = conditions::find(&self.conditions, types::BOUND);
        let published = conditions::find(&self.conditions, types::PUBLISHED);
        let (state, reason, message) = match (self.phase, bound) {
            (Some(ClaimPhase::Deleting), bound) => (
                status::FALSE,
                reasons::DELETING,
                bound.map_or_else(|| "being deleted".to_owned(), |b| b.message.clone()),
            ),
            (Some(ClaimPhase::Bound), Some(bound)) if bound.is_true() => match published {
                _ if !publishes => (status::TRUE, reasons::BOUND, bound.message.clone()),
                Some(p) if p.is_true() => (status::TRUE, reasons::PUBLISHED, p.message.clone()),
                Some(p) => (status::FALSE, p.reason.as_str(), p.message.clone()),
                None => (
                    status::FALSE,
                    reasons::WAITING_FOR_PUBLISH,
                    format!(
                        "{}; the class publishes on a router and hostport-publisher --mode router has not mapped it yet",
                        bound.message
                    ),
                ),
            },
            (_, Some(bound)) if !bound.is_true() => {
                (status::FALSE, bound.reason.as_str(), bound.message.clone())
            }
            _ => (
                status::FALSE,
                reasons::WAITING_FOR_PORT,
                "waiting for the allocator to bind a port".to_owned(),
            ),
        };
        Condition::new(types::READY, state, reason, message, generation, now)
    }

    /// Sets the `Ready` condition from the others (see [`Self::ready`]); returns whether it
    /// changed.
    pub fn set_ready(&mut self, publishes: bool, generation: Option<i64>, now: Time) -> bool {
        let ready = self.ready(publishes, generation, now);
        conditions::set(&mut self.conditions, ready)
    }
}

/// One router port mapping of a claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalEndpoint {
    /// The router's public address (an IPv6 pinhole: the node's own address).
    pub address: String,
    /// `IPv4` (a port mapping) or `IPv6` (a firewall pinhole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family: Option<crate::IpFamily>,
    /// The external port (the allocated port unless the class allows `externalPort: any`).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TCP or UDP.
    pub protocol: String,
    /// How it was mapped: PCP, NAT-PMP or UPnP.
    pub method: String,
    /// The node the router forwards to (the node that runs the pod).
    pub node_name: String,
    /// When the router drops the mapping unless it is renewed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl HostPortClaimSpec {
    /// A claim of any free port of `class`.
    pub fn of_class(class: &str) -> Self {
        Self {
            host_port_class_name: class.to_owned(),
            host_port_name: None,
            port: None,
            port_policy: None,
            count: None,
            alignment: None,
        }
    }

    /// How many ports the claim asks for (unset or out of range: 1).
    pub fn count(&self) -> u16 {
        self.count
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 1)
            .unwrap_or(1)
    }

    /// The alignment of its first port (unset or out of range: 1).
    pub fn alignment(&self) -> u16 {
        self.alignment
            .and_then(|a| u16::try_from(a).ok())
            .filter(|a| *a >= 1)
            .unwrap_or(1)
    }

    /// The port policy (unset: `Mapped`).
    pub fn port_policy(&self) -> PortPolicy {
        self.port_policy.unwrap_or_default()
    }
}

impl HostPortClaim {
    /// Phase from the status; a claim with no status yet is Pending.
    pub fn phase(&self) -> ClaimPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(ClaimPhase::Pending)
    }

    /// The `Bound` condition, if the allocator has written one.
    pub fn bound_condition(&self) -> Option<&Condition> {
        crate::conditions::find(
            &self.status.as_ref()?.conditions,
            crate::conditions::types::BOUND,
        )
    }

    /// Whether the stored `Ready` condition is the one the other conditions add up to when
    /// the class does (`publishes`) or does not publish on a router (no status: nothing to
    /// say yet, so current).
    pub fn ready_is_current(&self, publishes: bool) -> bool {
        let Some(status) = self.status.as_ref() else {
            return true;
        };
        let stored = conditions::find(&status.conditions, types::READY);
        let derived = status.ready(
            publishes,
            None,
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        stored.is_some_and(|c| (&c.status, &c.reason) == (&derived.status, &derived.reason))
    }

    /// The port the claim is bound to (of a block: its first): set only once the claim is
    /// Bound and carries a valid port. Status is the allocator's to write (the webhook denies
    /// anyone else); a reader that hands the port out still checks that HostPort
    /// [`Self::bound_host_port_name`] holds it for the claim's UID.
    pub fn bound_port(&self) -> Option<u16> {
        let status = self.status.as_ref()?;
        bound_port(status.phase, status.port)
    }

    /// The name of the HostPort the claim is bound to (of a block: its first port's):
    /// `spec.hostPortName`, else for a Bound claim `port-<status.port>`. The allocator leaves
    /// `spec.hostPortName` empty on the claims the webhook makes for pods (one API write less
    /// per port; hand-made claims get it as in the Go project). Only a HostPort whose
    /// `claimRef.uid` is the claim's proves the binding.
    pub fn bound_host_port_name(&self) -> Option<Cow<'_, str>> {
        let status = self.status.as_ref();
        bound_host_port_name(
            self.spec.host_port_name.as_deref(),
            status.and_then(|s| s.phase),
            status.and_then(|s| s.port),
        )
    }

    /// The statically requested port, if it is a valid port number.
    pub fn requested_port(&self) -> Option<u16> {
        self.spec.port.and_then(port_from_wire)
    }

    /// Whether the claim carries this project's finalizer.
    pub fn has_finalizer(&self) -> bool {
        self.finalizers().iter().any(|f| f == crate::FINALIZER)
    }
}

/// [`HostPortClaim::bound_port`] from a claim's `status.phase` and `status.port` (for
/// readers that keep a compact copy).
pub fn bound_port(phase: Option<ClaimPhase>, status_port: Option<i32>) -> Option<u16> {
    if phase != Some(ClaimPhase::Bound) {
        return None;
    }
    status_port.and_then(port_from_wire)
}

/// [`HostPortClaim::bound_host_port_name`] from a claim's `spec.hostPortName`,
/// `status.phase` and `status.port` (for readers that keep a compact copy).
pub fn bound_host_port_name(
    host_port_name: Option<&str>,
    phase: Option<ClaimPhase>,
    status_port: Option<i32>,
) -> Option<Cow<'_, str>> {
    match host_port_name {
        Some(name) => Some(Cow::Borrowed(name)),
        None => Some(Cow::Owned(HostPort::name_for_port(bound_port(
            phase,
            status_port,
        )?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("time"))
    }

    fn status_with(phase: ClaimPhase, conditions: Vec<Condition>) -> HostPortClaimStatus {
        HostPortClaimStatus {
            phase: Some(phase),
            conditions,
            ..HostPortClaimStatus::default()
        }
    }

    fn condition(type_: &str, state: &str, reason: &str, message: &str) -> Condition {
        Condition::new(type_, state, reason, message, Some(1), at(1))
    }

    fn ready(status: &HostPortClaimStatus, publishes: bool) -> (String, String, String) {
        let c = status.ready(publishes, Some(2), at(2));
        assert_eq!(
            (c.type_.as_str(), c.observed_generation),
            ("Ready", Some(2))
        );
        (c.status, c.reason, c.message)
    }

    #[test]
    fn a_bound_claim_is_ready_unless_its_class_publishes_and_it_is_not_published() {
        let bound = condition(
            types::BOUND,
            status::TRUE,
            reasons::BOUND,
            "bound to port 9000",
        );
        let plain = status_with(ClaimPhase::Bound, vec![bound.clone()]);
        assert_eq!(
            ready(&plain, false),
            ("True".into(), "Bound".into(), "bound to port 9000".into())
        );
        let (state, reason, message) = ready(&plain, true);
        assert_eq!(
            (state.as_str(), reason.as_str()),
            ("False", "WaitingForPublish")
        );
        assert!(
            message.contains("hostport-publisher --mode router"),
            "{message}"
        );

        let failed = condition(
            types::PUBLISHED,
            status::FALSE,
            "MappingFailed",
            "router said no",
        );
        let refused = status_with(ClaimPhase::Bound, vec![bound.clone(), failed]);
        assert_eq!(
            ready(&refused, true),
            (
                "False".into(),
                "MappingFailed".into(),
                "router said no".into()
            )
        );
        // A class that stopped publishing: the stale Published no longer counts.
        assert_eq!(ready(&refused, false).0, "True");

        let done = condition(
            types::PUBLISHED,
            status::TRUE,
            "Published",
            "at 203.0.113.1:9000",
        );
        let published = status_with(ClaimPhase::Bound, vec![bound, done]);
        assert_eq!(
            ready(&published, true),
            (
                "True".into(),
                "Published".into(),
                "at 203.0.113.1:9000".into()
            )
        );
    }

    #[test]
    fn a_pending_or_deleting_claim_is_not_ready_and_says_why() {
        let exhausted = condition(
            types::BOUND,
            status::FALSE,
            reasons::POOL_EXHAUSTED,
            "all 10 ports are in use",
        );
        let pending = status_with(ClaimPhase::Pending, vec![exhausted]);
        assert_eq!(
            ready(&pending, false),
            (
                "False".into(),
                "PoolExhausted".into(),
                "all 10 ports are in use".into()
            )
        );

        let fresh = HostPortClaimStatus::default();
        assert_eq!(ready(&fresh, false).1, "WaitingForPort");

        let held = condition(
            types::BOUND,
            status::TRUE,
            reasons::IN_USE_BY_PODS,
            "held for pod a",
        );
        let deleting = status_with(ClaimPhase::Deleting, vec![held]);
        assert_eq!(
            ready(&deleting, false),
            ("False".into(), "Deleting".into(), "held for pod a".into())
        );
    }

    #[test]
    fn setting_ready_twice_changes_nothing_the_second_time() {
        let bound = condition(types::BOUND, status::TRUE, reasons::BOUND, "bound");
        let mut status = status_with(ClaimPhase::Bound, vec![bound]);
        assert!(status.set_ready(false, Some(1), at(5)));
        assert!(
            !status.set_ready(false, Some(1), at(9)),
            "same Ready: no change, no write"
        );
        let ready = conditions::find(&status.conditions, types::READY).expect("Ready");
        assert_eq!(ready.last_transition_time, at(5));
    }

    fn claim_with(
        host_port_name: Option<&str>,
        phase: Option<ClaimPhase>,
        port: Option<i32>,
    ) -> HostPortClaim {
        let mut claim = HostPortClaim::new("web", HostPortClaimSpec::of_class("games"));
        claim.spec.host_port_name = host_port_name.map(str::to_owned);
        claim.status = phase.map(|phase| HostPortClaimStatus {
            phase: Some(phase),
            port,
            ..HostPortClaimStatus::default()
        });
        claim
    }

    #[test]
    fn a_claim_names_its_host_port_by_spec_or_else_by_its_bound_port() {
        let named = claim_with(Some("hpc-6f1c"), Some(ClaimPhase::Bound), Some(9000));
        assert_eq!(
            named.bound_host_port_name().as_deref(),
            Some("hpc-6f1c"),
            "spec wins (Go-era names)"
        );
        let pod_claim = claim_with(None, Some(ClaimPhase::Bound), Some(9000));
        assert_eq!(pod_claim.bound_port(), Some(9000));
        assert_eq!(
            pod_claim.bound_host_port_name().as_deref(),
            Some("port-9000")
        );
        for (phase, port) in [
            (None, None),
            (Some(ClaimPhase::Pending), Some(9000)),
            (Some(ClaimPhase::Deleting), Some(9000)),
            (Some(ClaimPhase::Bound), None),
            (Some(ClaimPhase::Bound), Some(0)),
            (Some(ClaimPhase::Bound), Some(70000)),
        ] {
            let claim = claim_with(None, phase, port);
            assert_eq!(
                (claim.bound_port(), claim.bound_host_port_name()),
                (None, None),
                "{phase:?} {port:?}"
            );
        }
        let pending_named = claim_with(Some("port-9000"), Some(ClaimPhase::Pending), None);
        assert_eq!(pending_named.bound_port(), None, "named but not Bound yet");
    }
}
