//! Defaulting and validation of this project's resources, pure: what CRD CEL rules say, for
//! clusters and cases CEL cannot cover (pools against their class, who may write HostPorts).

use hostport_api::ports::{port_from_wire, validate_pools};
use hostport_api::{FINALIZER, HostPort, HostPortClaim, HostPortClass};
use json_patch::Patch;

use crate::verdict::{Verdict, deny, reasons};

/// Claim defaulting on CREATE: the finalizer (so deletion waits for pods from the start).
pub fn default_claim(claim: &HostPortClaim) -> Verdict {
    let Some(operation) =
        hostport_api::finalizer::add_operation(claim.metadata.finalizers.as_deref())
    else {
        return Verdict::Allow;
    };
    match serde_json::from_value::<Patch>(serde_json::json!([operation])) {
        Ok(patch) => Verdict::Patch(patch),
        Err(error) => deny(
            reasons::UNDECODABLE,
            format!("building the finalizer patch failed: {error}"),
        ),
    }
}

/// Who sent an admission request, as far as decisions go.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    /// User name from the request's `userInfo`.
    pub user: &'a str,
    /// Whether that is the allocator identity (the controller's ServiceAccount).
    pub is_allocator: bool,
    /// Whether that is a router publisher (writes `status.external`, `Published` and the
    /// `Ready` they add up to, only).
    pub is_publisher: bool,
}

fn claim_label(claim: &HostPortClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

fn not_allocator(what: String, who: &str) -> Verdict {
    deny(
        reasons::NOT_ALLOCATOR,
        format!("{what} is written by the hostport allocator only, not by {who:?}"),
    )
}

/// A claim's status without what the router publisher writes (`external`, `Published`,
/// `Ready`).
fn without_publisher_part(claim: &HostPortClaim) -> Option<hostport_api::HostPortClaimStatus> {
    use hostport_api::conditions::types::{PUBLISHED, READY};
    let mut status = claim.status.clone()?;
    status.external.clear();
    status
        .conditions
        .retain(|c| c.type_ != PUBLISHED && c.type_ != READY);
    Some(status)
}

/// Whether the claim's `Ready` condition, if any, is the one its other conditions add up to
/// for a class that publishes: a publisher can report a mapping, not declare a claim Ready.
fn ready_follows(claim: &HostPortClaim) -> bool {
    let Some(status) = claim.status.as_ref() else {
        return true;
    };
    let Some(written) =
        hostport_api::conditions::find(&status.conditions, hostport_api::conditions::types::READY)
    else {
        return true;
    };
    let derived = status.ready(true, None, written.last_transition_time.clone());
    (&derived.status, &derived.reason, &derived.message)
        == (&written.status, &written.reason, &written.message)
}

/// Claim validation. `class` is the claim's class when it exists; `subresource` is `status`
/// for a status write.
pub fn validate_claim(
    claim: &HostPortClaim,
    old: Option<&HostPortClaim>,
    class: Option<&HostPortClass>,
    requester: Requester<'_>,
    subresource: Option<&str>,
) -> Verdict {
    if subresource.is_some() {
        let publisher_part_only = requester.is_publisher
            && old.is_some_and(|old| without_publisher_part(old) == without_publisher_part(claim))
            && ready_follows(claim);
        return if requester.is_allocator || publisher_part_only {
            Verdict::Allow
        } else {
            not_allocator(
                format!("the status of HostPortClaim {}", claim_label(claim)),
                requester.user,
            )
        };
    }
    if !requester.is_allocator {
        let verdict = guard_allocator_fields(claim, old, requester.user);
        if verdict != Verdict::Allow {
            return verdict;
        }
    }
    let name = &claim.spec.host_port_class_name;
    if name.is_empty() {
        return deny(
            reasons::INVALID_CLAIM,
            "spec.hostPortClassName is empty: name the HostPortClass to allocate from".into(),
        );
    }
    if let Some(old) = old {
        if old.spec.host_port_class_name != *name {
            return deny(
                reasons::IMMUTABLE_FIELD,
                format!(
                    "spec.hostPortClassName cannot change (was {:?}, now {name:?}): delete and recreate the claim to use another class",
                    old.spec.host_port_class_name
                ),
            );
        }
        if old.spec.port != claim.spec.port {
            return deny(
                reasons::IMMUTABLE_FIELD,
                "spec.port cannot change: delete and recreate the claim to request another port"
                    .into(),
            );
        }
        if old.spec.port_policy != claim.spec.port_policy {
            return deny(
                reasons::IMMUTABLE_FIELD,
                "spec.portPolicy cannot change: pods already use the port as it was; delete and recreate the claim to use another policy"
                    .into(),
            );
        }
        if (old.spec.count, old.spec.alignment) != (claim.spec.count, claim.spec.alignment) {
            return deny(
                reasons::IMMUTABLE_FIELD,
                "spec.count and spec.alignment cannot change: the block is allocated as it was asked; delete and recreate the claim to ask for another block"
                    .into(),
            );
        }
    } else {
        if let Some(verdict) = invalid_block(claim) {
            return verdict;
        }
        if let Some((reason, rule)) = class.and_then(|c| c.refuses_claim_spec(&claim.spec)) {
            return deny(
                reason,
                format!(
                    "HostPortClaim {}: {rule}: use a class that allows it, or leave {} out",
                    claim_label(claim),
                    if reason == reasons::BLOCK_TOO_LARGE {
                        "spec.count"
                    } else {
                        "spec.portPolicy"
                    }
                ),
            );
        }
    }
    if let Some(requested) = claim.spec.port {
        let Some(port) = port_from_wire(requested) else {
            return deny(
                reasons::INVALID_CLAIM,
                format!("spec.port is {requested}: a port must be between 1 and 65535"),
            );
        };
        if old.is_none()
            && let Some(outside) =
                class.and_then(|c| c.block_outside_pools(port, claim.spec.count()))
        {
            return deny(
                reasons::PORT_OUTSIDE_POOLS,
                format!("{outside}: pick a port inside them, or omit spec.port"),
            );
        }
    }
    Verdict::Allow
}

/// What makes a new claim's block impossible whatever its class: a count or alignment out of
/// range (CEL says so too), a static first port that is not aligned or whose block runs past
/// 65535.
fn invalid_block(claim: &HostPortClaim) -> Option<Verdict> {
    let label = claim_label(claim);
    for (field, value) in [
        ("spec.count", claim.spec.count),
        ("spec.alignment", claim.spec.alignment),
    ] {
        if let Some(value) = value
            && !(1..=1024).contains(&value)
        {
            return Some(deny(
                reasons::INVALID_CLAIM,
                format!("HostPortClaim {label}: {field} is {value}: it must be between 1 and 1024"),
            ));
        }
    }
    let (count, alignment) = (claim.spec.count(), claim.spec.alignment());
    let port = claim.requested_port()?;
    if !port.is_multiple_of(alignment) {
        return Some(deny(
            reasons::INVALID_CLAIM,
            format!(
                "HostPortClaim {label}: spec.port {port} is not a multiple of spec.alignment {alignment}: pick an aligned port, or omit spec.alignment"
            ),
        ));
    }
    if u32::from(port) + u32::from(count) - 1 > u32::from(u16::MAX) {
        return Some(deny(
            reasons::INVALID_CLAIM,
            format!(
                "HostPortClaim {label}: the block of {count} ports from spec.port {port} runs past port 65535"
            ),
        ));
    }
    None
}

/// A new claim against its class's access rules: its namespace must be selected by the
/// class's `namespaceSelector` (`labels`) and hold fewer than `maxClaimsPerNamespace` other
/// claims of the class (`holding`). The allocator applies the same rule before binding.
pub fn check_class_access(
    claim: &HostPortClaim,
    class: &HostPortClass,
    labels: &std::collections::BTreeMap<String, String>,
    holding: usize,
) -> Verdict {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    match class.refuses_namespace(namespace, labels, holding) {
        Some((reason, message)) => deny(
            reason,
            format!("HostPortClaim {}: {message}", claim_label(claim)),
        ),
        None => Verdict::Allow,
    }
}

/// What only the allocator may write on a claim: `spec.hostPortName` (set or changed) and
/// the removal of the finalizer (which would free the port while pods still use it).
/// Unchanged values pass, so objects the Go project stored keep working.
fn guard_allocator_fields(
    claim: &HostPortClaim,
    old: Option<&HostPortClaim>,
    user: &str,
) -> Verdict {
    let before = old.and_then(|o| o.spec.host_port_name.as_deref());
    if let Some(name) = claim.spec.host_port_name.as_deref()
        && before != Some(name)
    {
        return deny(
            reasons::ALLOCATOR_FIELD,
            format!(
                "spec.hostPortName of HostPortClaim {} is set by the hostport allocator only, not by {user:?} (it names the HostPort the claim is bound to): remove spec.hostPortName{}",
                claim_label(claim),
                before.map_or_else(String::new, |b| format!(" or keep it {b:?}"))
            ),
        );
    }
    if let (Some(before), None) = (before, claim.spec.host_port_name.as_deref()) {
        return deny(
            reasons::ALLOCATOR_FIELD,
            format!(
                "spec.hostPortName of HostPortClaim {} is set by the hostport allocator only, not by {user:?}: keep it {before:?}",
                claim_label(claim)
            ),
        );
    }
    let had_finalizer = old.is_some_and(HostPortClaim::has_finalizer);
    if had_finalizer && !claim.has_finalizer() {
        return deny(
            reasons::FINALIZER_PROTECTED,
            format!(
                "finalizer {FINALIZER:?} of HostPortClaim {} is removed by the hostport allocator only, not by {user:?}: it keeps the port held while pods use it; delete the claim and the allocator releases it once no running pod names it (`kubectl describe hostportclaim` shows what it waits for)",
                claim_label(claim)
            ),
        );
    }
    Verdict::Allow
}

/// Class validation of a status write: the allocator's only.
pub fn validate_class_status(class: &HostPortClass, requester: Requester<'_>) -> Verdict {
    if requester.is_allocator {
        return Verdict::Allow;
    }
    not_allocator(
        format!(
            "the status of HostPortClass {:?}",
            class.metadata.name.as_deref().unwrap_or_default()
        ),
        requester.user,
    )
}

/// Class validation: pools within 1–65535, `start <= end`, no overlap inside the class.
pub fn validate_class(class: &HostPortClass) -> Verdict {
    match validate_pools(&class.spec.pools) {
        Ok(_) => Verdict::Allow,
        Err(error) => deny(reasons::INVALID_POOLS, error.to_string()),
    }
}

/// HostPort validation. The allocator writes HostPorts bound to claims and every status;
/// anyone else (RBAC keeps that to cluster admins) may only reserve a port: a HostPort
/// without claimRef, named `port-<spec.port>` so the name locks the port like any other.
pub fn validate_host_port(
    host_port: &HostPort,
    old: Option<&HostPort>,
    requester: Requester<'_>,
    subresource: Option<&str>,
) -> Verdict {
    let name = host_port.metadata.name.as_deref().unwrap_or_default();
    if subresource.is_some() {
        return if requester.is_allocator {
            Verdict::Allow
        } else {
            not_allocator(format!("the status of HostPort {name:?}"), requester.user)
        };
    }
    if let Some(port) = host_port.spec.port
        && port_from_wire(port).is_none()
    {
        return deny(
            reasons::INVALID_HOST_PORT,
            format!("spec.port is {port}: a port must be between 1 and 65535"),
        );
    }
    if let Some(old) = old
        && old.port().is_some()
        && old.port() != host_port.port()
    {
        return deny(
            reasons::IMMUTABLE_FIELD,
            format!(
                "the port of HostPort {name:?} cannot change (it holds {:?})",
                old.port().unwrap_or_default()
            ),
        );
    }
    if requester.is_allocator {
        return Verdict::Allow;
    }
    let user = requester.user;
    if !host_port.is_reservation() || old.is_some_and(|o| !o.is_reservation()) {
        return deny(
            reasons::NOT_ALLOCATOR,
            format!(
                "HostPort {name:?} is bound to a claim (spec.claimRef), and such HostPorts are created and changed by the hostport allocator only, not by {user:?}: create a HostPortClaim instead, or omit spec.claimRef to reserve the port"
            ),
        );
    }
    let Some(port) = host_port.spec.port.and_then(port_from_wire) else {
        return deny(
            reasons::INVALID_RESERVATION,
            format!("HostPort {name:?} reserves no port: set spec.port to the port to hold back"),
        );
    };
    if HostPort::port_from_name(name) != Some(port) {
        return deny(
            reasons::INVALID_RESERVATION,
            format!(
                "HostPort {name:?} reserves port {port}, so it must be named {:?}: the name is what keeps two HostPorts from holding one port",
                HostPort::name_for_port(port)
            ),
        );
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests;
