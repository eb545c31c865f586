//! The `hostport.rmb938.com/v1alpha1` API: custom resource types, the names the three binaries agree
//! on (annotations, finalizer, namespace label, webhook paths) and pure helpers over them.
//!
//! Everything here is wire-compatible with the Go project rmb938/hostport-allocator: field
//! names, annotation keys and the finalizer are a contract, and objects that project stored
//! deserialize unchanged. Additions are optional fields only.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod cache;
pub mod claim;
pub mod class;
pub mod conditions;
pub mod container_ports;
pub mod crds;
pub mod finalizer;
pub mod host_port;
pub mod identity;
pub mod names;
pub mod pod_claims;
pub mod port_set;
pub mod ports;
pub mod selector;

pub use claim::{
    ClaimPhase, ExternalEndpoint, HostPortClaim, HostPortClaimSpec, HostPortClaimStatus, PortPolicy,
};
pub use class::{
    DnsPublish, ExternalPortPolicy, HostPortClass, HostPortClassSpec, HostPortClassStatus,
    IpFamily, NamespaceAllocation, PortInUseOutside, Publish, RouterProtocol, RouterPublish,
};
pub use conditions::Condition;
pub use host_port::{ClaimReference, HostPort, HostPortPhase, HostPortSpec, HostPortStatus};
pub use ports::PortPool;

/// API group of every resource in this crate.
pub const GROUP: &str = "hostport.rmb938.com";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every resource in this crate.
pub const API_VERSION: &str = "hostport.rmb938.com/v1alpha1";

/// Finalizer on claims (held while pods use the claim) and classes (held while claims use them).
pub const FINALIZER: &str = "hostport.rmb938.com";

/// Namespace label that turns the pod webhook on for a namespace (value `"true"`).
pub const NAMESPACE_LABEL: &str = "hostport.rmb938.com";

/// Namespace annotation (value `"true"`, set by a cluster admin) that lets `hostNetwork`
/// pods into a labelled namespace. Without it they are refused: a pod on the host network
/// can bind every port of its node, bypassing the allocator.
pub const ALLOW_HOST_NETWORK_ANNOTATION: &str = "hostport.rmb938.com/allow-host-network";

/// `kubectl get hostport-allocator` lists all three kinds. Not `hostport`: that is the
/// HostPort kind's singular name, which kubectl resolves before categories.
pub const CATEGORY: &str = "hostport-allocator";

/// Webhook paths, as the Go project's webhook configurations name them.
pub mod webhook_paths {
    /// Pod mutation: injects `hostPort` and the port annotation.
    pub const MUTATE_POD: &str = "/mutate-v1-pod";
    /// HostPort defaulting.
    pub const MUTATE_HOST_PORT: &str = "/mutate-hostport-rmb938-com-v1alpha1-hostport";
    /// HostPortClaim defaulting (adds the finalizer).
    pub const MUTATE_CLAIM: &str = "/mutate-hostport-rmb938-com-v1alpha1-hostportclaim";
    /// HostPortClass defaulting.
    pub const MUTATE_CLASS: &str = "/mutate-hostport-rmb938-com-v1alpha1-hostportclass";
    /// HostPort validation.
    pub const VALIDATE_HOST_PORT: &str = "/validate-hostport-rmb938-com-v1alpha1-hostport";
    /// HostPortClaim validation.
    pub const VALIDATE_CLAIM: &str = "/validate-hostport-rmb938-com-v1alpha1-hostportclaim";
    /// HostPortClass validation.
    pub const VALIDATE_CLASS: &str = "/validate-hostport-rmb938-com-v1alpha1-hostportclass";
}

/// Deserializes an absent, `null` or empty string as `None`.
///
/// The Go project serialized optional strings without `omitempty` (`"hostPortName": ""`), so
/// an empty string on the wire means "not set".
pub(crate) fn empty_string_as_none<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.filter(|s| !s.is_empty()))
}
