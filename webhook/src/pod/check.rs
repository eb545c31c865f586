//! Pod admission, pure: which container ports get which host port, as a minimal JSONPatch,
//! or a denial whose message names the annotation or field, the value and the fix.

use std::collections::{BTreeMap, BTreeSet};

use hostport_api::ALLOW_HOST_NETWORK_ANNOTATION;
use hostport_api::PortPolicy;
use hostport_api::annotations::{
    AnnotationError, CLAIM_PREFIX, CLASS_PREFIX, ClaimAnnotation, ClassAnnotation, EXTERNAL_PREFIX,
    PORT_PREFIX, PortPolicyAnnotation, claim_annotation_key, is_hostport_annotation,
    parse_claim_annotations, parse_class_annotations, parse_port_policy_annotations,
    port_annotation_key, port_policy_annotation_key,
};
use hostport_api::container_ports::{PortPlace, container_ports};
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::verdict::{Verdict, deny, reasons};

/// What the webhook knows about a claim the pod names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// No claim of that name in the pod's namespace.
    Missing,
    /// Not bound yet; `why` is its Bound condition's reason and message, if any.
    Pending {
        /// e.g. `PoolExhausted: all 501 ports ... are in use`.
        why: Option<String>,
    },
    /// Being deleted.
    Deleting,
    /// Says it is Bound, but the chain claim → HostPort → `claimRef.uid` → port does not
    /// hold (a forged or stale status, a HostPort gone or bound elsewhere).
    Unverified {
        /// What does not hold.
        why: String,
    },
    /// Bound, the chain verified.
    Bound(Binding),
    /// Was Bound when the admission first read it, but was deleted or re-bound while the
    /// admission waited for another claim: its old port may belong to someone else now.
    Changed {
        /// What changed.
        why: String,
    },
}

/// A verified binding: which claim (by UID) holds which port through which HostPort. Two
/// reads of a claim agree only if all three are the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The host port.
    pub port: u16,
    /// The claim's UID (a claim deleted and created again under the same name differs).
    pub claim_uid: String,
    /// The HostPort holding the port.
    pub host_port: String,
    /// How the pod uses the port (the claim's `spec.portPolicy`).
    pub policy: PortPolicy,
    /// How many ports from `port` (a block: more than 1), each verified held by the claim.
    pub count: u16,
    /// Whether the claim's class allows `hostNetwork` pods (`spec.allowHostNetwork`).
    pub host_network: bool,
}

impl ClaimState {
    /// What a claim read again after a wait means for a pod that read `before` earlier: the
    /// same binding stands, anything else is not used (a port read before a wait may have
    /// been released and handed to another claim meanwhile).
    pub fn recheck(before: &Binding, now: ClaimState) -> ClaimState {
        let was = format!(
            "it was Bound to HostPort {:?} (port {}) when the admission began",
            before.host_port, before.port
        );
        match now {
            ClaimState::Bound(binding) if binding == *before => ClaimState::Bound(binding),
            ClaimState::Deleting => ClaimState::Deleting,
            ClaimState::Missing => ClaimState::Changed {
                why: format!("{was} and was deleted while it waited"),
            },
            ClaimState::Bound(binding) if binding.claim_uid != before.claim_uid => {
                ClaimState::Changed {
                    why: format!("{was} and was deleted and created again while it waited"),
                }
            }
            ClaimState::Bound(binding) => ClaimState::Changed {
                why: format!(
                    "{was} and is bound to HostPort {:?} (port {}) now",
                    binding.host_port, binding.port
                ),
            },
            ClaimState::Pending { why } => ClaimState::Changed {
                why: format!(
                    "{was} and is not Bound now ({})",
                    why.unwrap_or_else(|| "no reason given".into())
                ),
            },
            ClaimState::Unverified { why } => ClaimState::Changed {
                why: format!("{was}, but now {why}"),
            },
            ClaimState::Changed { why } => ClaimState::Changed { why },
        }
    }
}

/// What the webhook knows about each claim a pod names, by claim name (absent: `Missing`).
pub type ClaimStates = BTreeMap<String, ClaimState>;

/// A container port of the pod, where it is.
#[derive(Clone, Debug)]
pub(super) struct PortSlot {
    /// JSON pointer of the port, e.g. `/spec/containers/0/ports/1`.
    pointer: String,
    /// JSON pointer of its container's ports, e.g. `/spec/containers/0/ports`.
    pub(super) ports_pointer: String,
    /// Field path for messages, e.g. `spec.containers[0].ports[1]`.
    pub(super) field: String,
    host_port: Option<i32>,
    pub(super) container_port: i32,
    /// TCP, UDP or SCTP (the API's default: TCP).
    pub(super) protocol: String,
    /// Position among the pod's ports (spec order), so "the first port" is well defined.
    pub(super) order: usize,
}

/// Container ports by name (see [`container_ports`]), and the unnamed ones.
fn named_ports(pod: &Pod) -> (BTreeMap<String, Vec<PortSlot>>, Vec<PortSlot>) {
    let mut named: BTreeMap<String, Vec<PortSlot>> = BTreeMap::new();
    let mut unnamed = vec![];
    for (order, (place, port)) in container_ports(pod).enumerate() {
        let PortPlace {
            list,
            container: ci,
            port: pi,
        } = place;
        let slot = PortSlot {
            pointer: format!("/spec/{list}/{ci}/ports/{pi}"),
            ports_pointer: format!("/spec/{list}/{ci}/ports"),
            field: format!("spec.{list}[{ci}].ports[{pi}]"),
            host_port: port.host_port.filter(|p| *p != 0),
            container_port: port.container_port,
            protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            order,
        };
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => named.entry(name.to_owned()).or_default().push(slot),
            None => unnamed.push(slot),
        }
    }
    (named, unnamed)
}

/// JSON pointer escaping of one path segment (`/` → `~1`, `~` → `~0`).
pub(super) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

pub(super) fn add(pointer: &str, value: Value) -> Option<PatchOperation> {
    Some(PatchOperation::Add(AddOperation {
        path: json_patch::jsonptr::PointerBuf::parse(pointer).ok()?,
        value,
    }))
}

pub(super) fn replace(pointer: &str, value: Value) -> Option<PatchOperation> {
    Some(PatchOperation::Replace(ReplaceOperation {
        path: json_patch::jsonptr::PointerBuf::parse(pointer).ok()?,
        value,
    }))
}

/// Whether the pod asks for the node's network namespace.
pub fn uses_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// A new pod as admission reads it, once: its annotations, its claim annotations and its
/// container ports.
#[derive(Debug)]
pub struct NewPod<'a> {
    pub(super) pod: &'a Pod,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) claims: Result<Vec<ClaimAnnotation>, AnnotationError>,
    classes: Result<Vec<ClassAnnotation>, AnnotationError>,
    policies: Result<Vec<PortPolicyAnnotation>, AnnotationError>,
    pub(super) named: BTreeMap<String, Vec<PortSlot>>,
    pub(super) unnamed: Vec<PortSlot>,
}

impl<'a> NewPod<'a> {
    /// Reads `pod`.
    pub fn new(pod: &'a Pod) -> Self {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let claims = parse_claim_annotations(&annotations);
        let classes = parse_class_annotations(&annotations);
        let policies = parse_port_policy_annotations(&annotations);
        let (named, unnamed) = named_ports(pod);
        Self {
            pod,
            annotations,
            claims,
            classes,
            policies,
            named,
            unnamed,
        }
    }

    /// The port policy the pod asks for the claim made for port `port_name` (checked by
    /// [`check_pod`]; unset: `Mapped`).
    pub fn port_policy(&self, port_name: &str) -> PortPolicy {
        self.policies
            .iter()
            .flatten()
            .find(|p| p.port_name == port_name)
            .map_or(PortPolicy::Mapped, |p| p.policy)
    }

    /// The claims the pod names (each once), whose state admission needs.
    pub fn claim_names(&self) -> BTreeSet<&str> {
        self.claims
            .iter()
            .flatten()
            .map(|c| c.claim_name.as_str())
            .collect()
    }

    /// Whether the pod asks for the node's network namespace.
    pub fn uses_host_network(&self) -> bool {
        uses_host_network(self.pod)
    }
}

/// The checks of a new pod that need no claim: `hostNetwork`, the annotations, host ports
/// set by hand. Returns the claim and class annotations the pod carries.
pub(super) fn check_pod(
    pod: &NewPod,
    host_network_allowed: bool,
) -> Result<(Vec<ClaimAnnotation>, Vec<ClassAnnotation>), Verdict> {
    let invalid = |error: &AnnotationError| deny(reasons::INVALID_ANNOTATION, error.to_string());
    let claims = pod.claims.as_ref().map_err(invalid)?;
    let classes = pod.classes.as_ref().map_err(invalid)?;
    check_host_network(pod, host_network_allowed, claims.len() + classes.len())?;
    let claimed: BTreeSet<&str> = claims
        .iter()
        .map(|c| c.port_name.as_str())
        .chain(classes.iter().map(|c| c.port_name.as_str()))
        .collect();
    check_stray_port_annotations(pod, &claimed)?;
    check_no_external_annotations(pod)?;
    check_port_policies(pod, claims, classes)?;
    super::block::check_block_annotations(pod, claims, classes)?;
    check_unclaimed_host_ports(pod, &claimed)?;
    Ok((claims.clone(), classes.clone()))
}

/// A port policy annotation asks for the policy of a claim made for the pod, so it goes
/// beside a class annotation; a hand-made claim's own `spec.portPolicy` decides for it.
fn check_port_policies(
    pod: &NewPod,
    claims: &[ClaimAnnotation],
    classes: &[ClassAnnotation],
) -> Result<(), Verdict> {
    let policies = pod
        .policies
        .as_ref()
        .map_err(|error| deny(reasons::INVALID_ANNOTATION, error.to_string()))?;
    for PortPolicyAnnotation { port_name, .. } in policies {
        let key = port_policy_annotation_key(port_name);
        if let Some(claim) = claims.iter().find(|c| c.port_name == *port_name) {
            return Err(deny(
                reasons::STRAY_PORT_POLICY,
                format!(
                    "annotation {key:?} asks for a port policy, but port {port_name:?} uses HostPortClaim {:?} (annotation {:?}), whose spec.portPolicy decides: remove the annotation, or set portPolicy on that claim",
                    claim.claim_name,
                    claim.key()
                ),
            ));
        }
        if !classes.iter().any(|c| c.port_name == *port_name) {
            return Err(deny(
                reasons::STRAY_PORT_POLICY,
                format!(
                    "annotation {key:?} asks for a port policy, but port {port_name:?} gets no claim made for the pod: add \"{CLASS_PREFIX}{port_name}: <className>\" beside it, or remove it"
                ),
            ));
        }
    }
    Ok(())
}

/// Admission of a new pod in a namespace with the webhook on. `host_network_allowed`: the
/// namespace carries the admin's opt-out annotation for `hostNetwork` pods; `made`: the
/// claims made for the pod's class annotations (see [`super::plan::plan`]), by port; `states`:
/// the claims of [`NewPod::claim_names`] and of `made`.
pub fn admit_create(
    pod: &NewPod,
    host_network_allowed: bool,
    made: &[ClaimAnnotation],
    states: &ClaimStates,
) -> Verdict {
    let phases = || -> Result<Patch, Verdict> {
        let (claims, _) = check_pod(pod, host_network_allowed)?;
        let mut operations = vec![];
        let mut moved = vec![];
        let by_hand: BTreeSet<&str> = claims.iter().map(|c| c.port_name.as_str()).collect();
        // Claims named by hand, then those made for the pod (whose annotation is added).
        let made_for_pod = made
            .iter()
            .filter(|c| !by_hand.contains(c.port_name.as_str()));
        for (claim, annotate) in claims
            .iter()
            .map(|c| (c, false))
            .chain(made_for_pod.map(|c| (c, true)))
        {
            if annotate {
                operations.extend(add(
                    &format!("/metadata/annotations/{}", escape(&claim.key())),
                    Value::String(claim.claim_name.clone()),
                ));
            }
            operations.extend(patch_claimed_port(
                pod,
                claim,
                states,
                &mut moved,
                host_network_allowed,
            )?);
        }
        operations.extend(super::passthrough::probe_operations(pod, &moved));
        Ok(Patch(operations))
    };
    match phases() {
        Err(denial) => denial,
        Ok(patch) if patch.0.is_empty() => Verdict::Allow,
        Ok(patch) => Verdict::Patch(patch),
    }
}

/// A `hostNetwork` pod may use the node's network here only for ports it claims from classes
/// that allow it (checked per claim), or when the namespace's admin exempted it; one that
/// claims nothing would use every port unseen.
fn check_host_network(pod: &NewPod, allowed: bool, claimed: usize) -> Result<(), Verdict> {
    if pod.uses_host_network() && !allowed && claimed == 0 {
        return Err(deny(
            reasons::HOST_NETWORK,
            format!(
                "spec.hostNetwork is true and the pod claims no port, so it would use any host port of its node unseen: in this namespace host ports are handed out by HostPortClaims; claim the ports it listens on with \"{CLAIM_PREFIX}<portName>: <claimName>\" (of a class with spec.allowHostNetwork), or remove hostNetwork (a cluster admin can exempt the namespace with the annotation {ALLOW_HOST_NETWORK_ANNOTATION}: \"true\")"
            ),
        ));
    }
    Ok(())
}

/// External annotations are the publisher's to write, on pods that exist: a new pod has none
/// (a copied manifest must not tell the program a stale or made-up public address).
fn check_no_external_annotations(pod: &NewPod) -> Result<(), Verdict> {
    match pod
        .annotations
        .keys()
        .find(|k| k.starts_with(EXTERNAL_PREFIX))
    {
        Some(key) => Err(deny(
            reasons::EXTERNAL_ANNOTATION,
            format!(
                "annotation {key:?} is written by hostport-publisher once the port is published; remove it from the pod"
            ),
        )),
        None => Ok(()),
    }
}

/// Port annotations are the webhook's to write, for claimed ports only.
fn check_stray_port_annotations(pod: &NewPod, claimed: &BTreeSet<&str>) -> Result<(), Verdict> {
    for key in pod.annotations.keys() {
        if let Some(port_name) = key.strip_prefix(PORT_PREFIX)
            && !claimed.contains(port_name)
        {
            return Err(deny(
                reasons::STRAY_PORT_ANNOTATION,
                format!(
                    "annotation {key:?} is written by the hostport webhook for a claimed port; remove it, or add \"{CLAIM_PREFIX}{port_name}: <claimName>\" (or \"{CLASS_PREFIX}{port_name}: <className>\") to claim a port"
                ),
            ));
        }
    }
    Ok(())
}

/// Every hostPort must come from a claim.
fn check_unclaimed_host_ports(pod: &NewPod, claimed: &BTreeSet<&str>) -> Result<(), Verdict> {
    for (name, slots) in &pod.named {
        if claimed.contains(name.as_str()) {
            continue;
        }
        if let Some(slot) = slots.iter().find(|s| s.host_port.is_some()) {
            return Err(deny(
                reasons::HOST_PORT_WITHOUT_CLAIM,
                format!(
                    "{} (port {name:?}) sets hostPort {} without a claim: in this namespace host ports are handed out by HostPortClaims; remove hostPort and add the annotation \"{CLAIM_PREFIX}{name}: <claimName>\"",
                    slot.field,
                    slot.host_port.unwrap_or_default()
                ),
            ));
        }
    }
    if let Some(slot) = pod.unnamed.iter().find(|s| s.host_port.is_some()) {
        return Err(deny(
            reasons::HOST_PORT_WITHOUT_CLAIM,
            format!(
                "{} sets hostPort {} without a claim: in this namespace host ports are handed out by HostPortClaims; give the port a name, remove hostPort and add the annotation \"{CLAIM_PREFIX}<portName>: <claimName>\"",
                slot.field,
                slot.host_port.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// The operations that give the port a claim annotation names its claim's host port and the
/// port annotation (none when both are there already); for a passthrough claim (or a
/// `hostNetwork` pod, whose container port is the host's) also its `containerPort`, recorded
/// in `moved` for the probes. Claim annotations exist, so `/metadata/annotations` does:
/// adding keys to it is valid.
fn patch_claimed_port(
    pod: &NewPod,
    claim: &ClaimAnnotation,
    states: &ClaimStates,
    moved: &mut Vec<super::passthrough::MovedPort>,
    namespace_allows_host_network: bool,
) -> Result<Vec<PatchOperation>, Verdict> {
    let ClaimAnnotation {
        port_name,
        claim_name,
    } = claim;
    let key = claim_annotation_key(port_name);
    let slot = single_slot(pod, &key, port_name)?;
    let binding = bound_binding(&key, claim_name, states.get(claim_name))?;
    let port = binding.port;
    let mut operations = vec![];
    let host_network = pod.uses_host_network();
    if host_network && !namespace_allows_host_network && !binding.host_network {
        return Err(deny(
            reasons::HOST_NETWORK_NOT_ALLOWED,
            format!(
                "spec.hostNetwork is true, but annotation {key:?} names HostPortClaim {claim_name:?}, whose class does not allow hostNetwork pods (its spec.allowHostNetwork is false; a cluster admin decides): use a claim of a class that allows them, or remove hostNetwork"
            ),
        ));
    }
    let passthrough = binding.policy == PortPolicy::Passthrough || host_network;
    if passthrough && slot.container_port != i32::from(port) {
        operations.extend(replace(
            &format!("{}/containerPort", slot.pointer),
            Value::from(port),
        ));
        moved.push(super::passthrough::MovedPort {
            from: slot.container_port,
            to: port,
            protocol: slot.protocol.clone(),
            order: slot.order,
        });
    }
    // The API server defaults a hostNetwork pod's hostPort to its containerPort: that is the
    // number the pod asked to listen on, now the allocated port.
    let defaulted = host_network && slot.host_port == Some(slot.container_port);
    match slot.host_port {
        Some(existing) if defaulted && existing != i32::from(port) => operations.extend(replace(
            &format!("{}/hostPort", slot.pointer),
            Value::from(port),
        )),
        Some(existing) if existing != i32::from(port) => {
            return Err(deny(
                reasons::HOST_PORT_MISMATCH,
                format!(
                    "{} (port {port_name:?}) sets hostPort {existing}, but HostPortClaim {claim_name:?} is bound to port {port}: remove hostPort, the webhook sets it",
                    slot.field
                ),
            ));
        }
        Some(_) => {}
        None => operations.extend(add(
            &format!("{}/hostPort", slot.pointer),
            Value::from(port),
        )),
    }
    let annotation = port_annotation_key(port_name);
    if pod.annotations.get(&annotation).map(String::as_str) != Some(port.to_string().as_str()) {
        operations.extend(add(
            &format!("/metadata/annotations/{}", escape(&annotation)),
            Value::String(port.to_string()),
        ));
    }
    operations.extend(super::block::block_operations(
        pod,
        slot,
        binding,
        claim,
        passthrough,
    )?);
    Ok(operations)
}

/// The one container port named `port_name`, which annotation `key` names.
pub(super) fn single_slot<'p>(
    pod: &'p NewPod,
    key: &str,
    port_name: &str,
) -> Result<&'p PortSlot, Verdict> {
    let Some(slots) = pod.named.get(port_name) else {
        return Err(deny(
            reasons::UNKNOWN_PORT_NAME,
            format!(
                "annotation {key:?} names container port {port_name:?}, but no container port of the pod has that name: add `name: {port_name}` to a port in spec.containers[].ports, or fix the annotation"
            ),
        ));
    };
    let [slot] = slots.as_slice() else {
        let fields: Vec<&str> = slots.iter().map(|s| s.field.as_str()).collect();
        return Err(deny(
            reasons::DUPLICATE_PORT_NAME,
            format!(
                "annotation {key:?} names container port {port_name:?}, which {} ports share ({}): give each port its own name and one annotation each (several annotations may name the same claim)",
                slots.len(),
                fields.join(", ")
            ),
        ));
    };
    Ok(slot)
}

/// The binding of the claim annotation `key` names, or why the pod cannot have its port.
fn bound_binding<'s>(
    key: &str,
    claim_name: &str,
    state: Option<&'s ClaimState>,
) -> Result<&'s Binding, Verdict> {
    match state.unwrap_or(&ClaimState::Missing) {
        ClaimState::Bound(binding) => Ok(binding),
        ClaimState::Missing => Err(deny(
            reasons::CLAIM_NOT_FOUND,
            format!(
                "annotation {key:?} names HostPortClaim {claim_name:?}, which does not exist in the pod's namespace: create the claim first, or fix the annotation"
            ),
        )),
        ClaimState::Pending { why } => {
            let why = why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default();
            Err(deny(
                reasons::CLAIM_NOT_BOUND,
                format!(
                    "annotation {key:?} names HostPortClaim {claim_name:?}, which is not Bound yet{why}: create the pod again once `kubectl get hostportclaim {claim_name}` shows a port"
                ),
            ))
        }
        ClaimState::Unverified { why } => Err(deny(
            reasons::CLAIM_NOT_VERIFIED,
            format!(
                "annotation {key:?} names HostPortClaim {claim_name:?}, which claims to be Bound but {why}: no port is injected; the allocator repairs the claim, then create the pod again"
            ),
        )),
        ClaimState::Changed { why } => Err(deny(
            reasons::CLAIM_CHANGED,
            format!(
                "annotation {key:?} names HostPortClaim {claim_name:?}: {why}; no port is injected: create the pod again"
            ),
        )),
        ClaimState::Deleting => Err(deny(
            reasons::CLAIM_DELETING,
            format!(
                "annotation {key:?} names HostPortClaim {claim_name:?}, which is being deleted: use another claim"
            ),
        )),
    }
}

/// Admission of a pod update: the claim and port annotations are fixed once the pod exists;
/// the external annotations change only when `by_publisher` (the request comes from a
/// publisher's ServiceAccount).
pub fn admit_update(old: &Pod, new: &Pod, by_publisher: bool) -> Verdict {
    let empty = BTreeMap::new();
    let before = old.metadata.annotations.as_ref().unwrap_or(&empty);
    let after = new.metadata.annotations.as_ref().unwrap_or(&empty);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let show = |v: Option<&String>| v.map_or_else(|| "unset".to_owned(), |v| format!("{v:?}"));
    for key in keys {
        let (was, now) = (before.get(key), after.get(key));
        if was == now {
            continue;
        }
        if is_hostport_annotation(key) {
            return deny(
                reasons::ANNOTATION_CHANGED,
                format!(
                    "annotation {key:?} cannot change once the pod exists (was {}, now {}): delete the pod and create it again",
                    show(was),
                    show(now)
                ),
            );
        }
        if key.starts_with(EXTERNAL_PREFIX) && !by_publisher {
            return deny(
                reasons::EXTERNAL_ANNOTATION,
                format!(
                    "annotation {key:?} is written by hostport-publisher only (was {}, now {}): it tells the program its public address",
                    show(was),
                    show(now)
                ),
            );
        }
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests;
