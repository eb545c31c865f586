//! `HostPort`: one allocated node port, bound to one claim (like a PersistentVolume).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::ports::port_from_wire;

/// Prefix of the names of HostPorts this project creates (`port-<number>`).
const NAME_PREFIX: &str = "port-";

/// One node host port allocated from a HostPortClass to a HostPortClaim. Created and managed
/// by the allocator, named `port-<number>` so that a port can only ever be allocated once.
// Several `printcolumn`s and `shortname`s are how kube-derive takes lists.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hostport.rmb938.com",
    version = "v1alpha1",
    kind = "HostPort",
    shortname = "hp",
    category = "hostport-allocator",
    status = "HostPortStatus",
    derive = "PartialEq",
    doc = "HostPort is one node host port allocated from a HostPortClass to a HostPortClaim.",
    printcolumn(
        name = "Port",
        type_ = "integer",
        json_path = ".spec.port",
        description = "Allocated host port"
    ),
    printcolumn(
        name = "Class",
        type_ = "string",
        json_path = ".spec.hostPortClassName",
        description = "HostPortClass the port comes from"
    ),
    printcolumn(
        name = "Claim",
        type_ = "string",
        json_path = ".spec.claimRef.name",
        description = "Bound HostPortClaim"
    ),
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".spec.claimRef.namespace",
        priority = "1",
        description = "Namespace of the bound claim"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Allocated or Deleting"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.port) || has(self.port)")
    .message("port cannot be removed once set").field_path(".port"))]
pub struct HostPortSpec {
    /// The claim this port is bound to (with its UID, so a recreated claim of the same name
    /// does not inherit it). Omit it to reserve the port: a HostPort without claimRef, named
    /// `port-<spec.port>`, keeps that port away from every claim (e.g. for a node agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ClaimReference>,

    /// Name of the HostPortClass the port was allocated from. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("hostPortClassName is immutable"))]
    pub host_port_class_name: String,

    /// The allocated port, fixed at creation (mirrored in status.port). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("port is immutable: a HostPort holds one port for its whole life"))]
    pub port: Option<i32>,
}

/// Reference to the bound HostPortClaim (the fields of a core `ObjectReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimReference {
    /// API version of the claim, `hostport.rmb938.com/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the claim, `HostPortClaim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// UID of the claim; a claim with the same name but another UID is a different claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Resource version of the claim when referenced (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Unused; kept for ObjectReference compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

/// Lifecycle phase of a HostPort.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum HostPortPhase {
    /// Created, port not yet confirmed in status.
    Pending,
    /// Holds its port for its claim.
    Allocated,
    /// Being deleted; the port frees when it is gone.
    Deleting,
}

impl HostPortPhase {
    /// The phase as written on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            HostPortPhase::Pending => "Pending",
            HostPortPhase::Allocated => "Allocated",
            HostPortPhase::Deleting => "Deleting",
        }
    }
}

/// Observed state of a HostPort, written by the controller. A HostPort of a claim the webhook
/// made for a pod (label `hostport.rmb938.com/pod-claim`) has none while it is bound: it
/// holds its port from its create (`spec.port`), and the status would only repeat that.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostPortStatus {
    /// Pending, Allocated or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<HostPortPhase>,
    /// The allocated port. `0` means none (as stored by the Go project before allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i32>,
    /// The `.metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state (`Allocated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl HostPort {
    /// The port this HostPort holds: `spec.port` (this project), else `status.port` (objects
    /// written by the Go project). `None` while neither names a valid port.
    pub fn port(&self) -> Option<u16> {
        Self::port_of(self.spec.port, self.status.as_ref().and_then(|s| s.port))
    }

    /// [`HostPort::port`] from `spec.port` and `status.port` (for caches that keep those
    /// two, not the object).
    pub fn port_of(spec_port: Option<i32>, status_port: Option<i32>) -> Option<u16> {
        spec_port
            .and_then(port_from_wire)
            .or_else(|| status_port.and_then(port_from_wire))
    }

    /// UID of the bound claim, if recorded.
    pub fn claim_uid(&self) -> Option<&str> {
        self.spec
            .claim_ref
            .as_ref()?
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
    }

    /// `(namespace, name)` of the bound claim, if recorded.
    pub fn claim_key(&self) -> Option<(&str, &str)> {
        let r = self.spec.claim_ref.as_ref()?;
        Some((r.namespace.as_deref()?, r.name.as_deref()?))
    }

    /// Name of the HostPort that holds `port`: the API server's name uniqueness is what makes
    /// a second allocation of the same port impossible.
    pub fn name_for_port(port: u16) -> String {
        format!("{NAME_PREFIX}{port}")
    }

    /// The port a `port-<n>` name stands for (the inverse of [`HostPort::name_for_port`]);
    /// `None` for any other name, e.g. the Go project's `hpc-<claimUID>`.
    pub fn port_from_name(name: &str) -> Option<u16> {
        let digits = name.strip_prefix(NAME_PREFIX)?;
        let port: u16 = digits.parse().ok()?;
        // Only the canonical spelling: `port-09000` is not the lock of port 9000.
        (port >= crate::ports::MIN_PORT && digits == port.to_string()).then_some(port)
    }

    /// Whether this HostPort is a reservation: a port held back by an administrator, bound to
    /// no claim, which the allocator never hands out.
    pub fn is_reservation(&self) -> bool {
        self.spec.claim_ref.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports_are_inverse() {
        for port in [1u16, 22, 9000, 65535] {
            assert_eq!(
                HostPort::port_from_name(&HostPort::name_for_port(port)),
                Some(port)
            );
        }
        for other in [
            "hpc-6f1c",
            "port-",
            "port-0",
            "port-09000",
            "port-65536",
            "port-+22",
            "x-port-22",
        ] {
            assert_eq!(HostPort::port_from_name(other), None, "{other}");
        }
    }
}
