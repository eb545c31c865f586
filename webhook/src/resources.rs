//! Defaulting and validation of this project's resources, pure: what CRD CEL rules say, for
//! clusters and cases CEL cannot cover (pools against their class, who may write HostPorts).

use hostport_api::ports::{port_from_wire, validate_pools};
use hostport_api::{FINALIZER, HostPort, HostPortClaim, HostPortClass};
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::Value;

use crate::pod::Verdict;

fn deny(reason: &'static str, message: String) -> Verdict {
    Verdict::Deny { reason, message }
}

/// Claim defaulting on CREATE: the finalizer (so deletion waits for pods from the start).
pub fn default_claim(claim: &HostPortClaim) -> Verdict {
    let finalizers = claim.metadata.finalizers.as_deref().unwrap_or_default();
    if finalizers.iter().any(|f| f == FINALIZER) {
        return Verdict::Allow;
    }
    let (path, value) = if claim.metadata.finalizers.is_none() {
        ("/metadata/finalizers", Value::from(vec![FINALIZER]))
    } else {
        ("/metadata/finalizers/-", Value::from(FINALIZER))
    };
    match json_patch::jsonptr::PointerBuf::parse(path) {
        Ok(path) => Verdict::Patch(Patch(vec![PatchOperation::Add(AddOperation {
            path,
            value,
        })])),
        Err(_) => Verdict::Allow,
    }
}

/// Claim validation. `class` is the claim's class when it exists.
pub fn validate_claim(
    claim: &HostPortClaim,
    old: Option<&HostPortClaim>,
    class: Option<&HostPortClass>,
) -> Verdict {
    let name = &claim.spec.host_port_class_name;
    if name.is_empty() {
        return deny(
            "InvalidClaim",
            "spec.hostPortClassName is empty: name the HostPortClass to allocate from".into(),
        );
    }
    if let Some(old) = old {
        if old.spec.host_port_class_name != *name {
            return deny(
                "ImmutableField",
                format!(
                    "spec.hostPortClassName cannot change (was {:?}, now {name:?}): delete and recreate the claim to use another class",
                    old.spec.host_port_class_name
                ),
            );
        }
        if let Some(bound) = &old.spec.host_port_name
            && claim.spec.host_port_name.as_ref() != Some(bound)
        {
            return deny(
                "ImmutableField",
                format!(
                    "spec.hostPortName is set by the allocator and cannot change once set (it is {bound:?})"
                ),
            );
        }
        if old.spec.port != claim.spec.port {
            return deny(
                "ImmutableField",
                "spec.port cannot change: delete and recreate the claim to request another port"
                    .into(),
            );
        }
    }
    if let Some(requested) = claim.spec.port {
        let Some(port) = port_from_wire(requested) else {
            return deny(
                "InvalidClaim",
                format!("spec.port is {requested}: a port must be between 1 and 65535"),
            );
        };
        if old.is_none()
            && let Some(class) = class
        {
            let ranges = class.ranges();
            if !ranges.iter().any(|r| r.contains(port)) {
                let pools: Vec<String> = ranges.iter().map(ToString::to_string).collect();
                return deny(
                    "PortOutsidePools",
                    format!(
                        "spec.port {port} is outside the pools of HostPortClass {name:?} ({}): pick a port inside them, or omit spec.port",
                        pools.join(", ")
                    ),
                );
            }
        }
    }
    Verdict::Allow
}

/// Class validation: pools within 1–65535, `start <= end`, no overlap inside the class.
pub fn validate_class(class: &HostPortClass) -> Verdict {
    match validate_pools(&class.spec.pools) {
        Ok(_) => Verdict::Allow,
        Err(error) => deny("InvalidPools", error.to_string()),
    }
}

/// HostPort validation: only the allocator writes HostPorts, and a port never changes.
pub fn validate_host_port(
    host_port: &HostPort,
    old: Option<&HostPort>,
    user: &str,
    allowed_users: &[String],
) -> Verdict {
    if !allowed_users.iter().any(|u| u == user) {
        return deny(
            "NotAllocator",
            format!(
                "HostPorts are created and changed by the allocator only ({}), not by {user:?}: create a HostPortClaim instead",
                allowed_users.join(", ")
            ),
        );
    }
    if let Some(port) = host_port.spec.port
        && port_from_wire(port).is_none()
    {
        return deny(
            "InvalidHostPort",
            format!("spec.port is {port}: a port must be between 1 and 65535"),
        );
    }
    if let Some(old) = old
        && old.port().is_some()
        && old.port() != host_port.port()
    {
        return deny(
            "ImmutableField",
            format!(
                "the port of HostPort {:?} cannot change (it holds {:?})",
                host_port.metadata.name.as_deref().unwrap_or_default(),
                old.port().unwrap_or_default()
            ),
        );
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::{HostPortClaimSpec, HostPortClassSpec, HostPortSpec, PortPool};

    fn claim(class: &str, port: Option<i32>, bound: Option<&str>) -> HostPortClaim {
        HostPortClaim::new(
            "c",
            HostPortClaimSpec {
                host_port_class_name: class.into(),
                host_port_name: bound.map(Into::into),
                port,
            },
        )
    }

    fn class(pools: &[(i32, i32)]) -> HostPortClass {
        HostPortClass::new(
            "sample",
            HostPortClassSpec {
                pools: pools
                    .iter()
                    .map(|(start, end)| PortPool {
                        start: *start,
                        end: *end,
                    })
                    .collect(),
            },
        )
    }

    fn denied(verdict: Verdict, expected: &str) {
        match verdict {
            Verdict::Deny { message, .. } => assert!(message.contains(expected), "{message}"),
            other => panic!("expected a denial containing {expected:?}, got {other:?}"),
        }
    }

    #[test]
    fn claim_defaulting_adds_the_finalizer_once() {
        let fresh = claim("sample", None, None);
        let Verdict::Patch(patch) = default_claim(&fresh) else {
            panic!()
        };
        let mut value = serde_json::to_value(&fresh).expect("json");
        json_patch::patch(&mut value, &patch).expect("applies");
        assert_eq!(
            value["metadata"]["finalizers"],
            serde_json::json!(["hostport.rmb938.com"])
        );
        let mut other = fresh.clone();
        other.metadata.finalizers = Some(vec!["other".into()]);
        let Verdict::Patch(patch) = default_claim(&other) else {
            panic!()
        };
        let mut value = serde_json::to_value(&other).expect("json");
        json_patch::patch(&mut value, &patch).expect("applies");
        assert_eq!(
            value["metadata"]["finalizers"],
            serde_json::json!(["other", "hostport.rmb938.com"])
        );
        let done: HostPortClaim = serde_json::from_value(value).expect("claim");
        assert_eq!(default_claim(&done), Verdict::Allow);
    }

    #[test]
    fn claim_rules() {
        let sample = class(&[(9000, 9500)]);
        assert_eq!(
            validate_claim(&claim("sample", Some(9001), None), None, Some(&sample)),
            Verdict::Allow
        );
        assert_eq!(
            validate_claim(&claim("later", Some(20000), None), None, None),
            Verdict::Allow,
            "class checked when it exists"
        );
        denied(
            validate_claim(&claim("sample", Some(20000), None), None, Some(&sample)),
            "spec.port 20000 is outside the pools of HostPortClass \"sample\" (9000-9500)",
        );
        denied(
            validate_claim(&claim("sample", Some(0), None), None, None),
            "spec.port is 0",
        );
        denied(
            validate_claim(&claim("", None, None), None, None),
            "spec.hostPortClassName is empty",
        );
        denied(
            validate_claim(
                &claim("other", None, None),
                Some(&claim("sample", None, None)),
                None,
            ),
            "spec.hostPortClassName cannot change (was \"sample\", now \"other\")",
        );
        denied(
            validate_claim(
                &claim("sample", None, Some("port-2")),
                Some(&claim("sample", None, Some("port-1"))),
                None,
            ),
            "cannot change once set (it is \"port-1\")",
        );
        denied(
            validate_claim(
                &claim("sample", Some(9001), None),
                Some(&claim("sample", None, None)),
                None,
            ),
            "spec.port cannot change",
        );
        assert_eq!(
            validate_claim(
                &claim("sample", None, Some("port-1")),
                Some(&claim("sample", None, None)),
                None
            ),
            Verdict::Allow,
            "binding is allowed"
        );
    }

    #[test]
    fn class_rules() {
        assert_eq!(validate_class(&class(&[(9000, 9500)])), Verdict::Allow);
        denied(validate_class(&class(&[])), "spec.pools is empty");
        denied(
            validate_class(&class(&[(9500, 9000)])),
            "starts at 9500 after its end 9000",
        );
        denied(
            validate_class(&class(&[(0, 10)])),
            "spec.pools[0].start is 0",
        );
        denied(validate_class(&class(&[(1, 10), (10, 20)])), "overlaps");
    }

    #[test]
    fn host_port_rules() {
        let allocator =
            vec!["system:serviceaccount:hostport-system:hostport-controller".to_owned()];
        let hp = |port| {
            HostPort::new(
                "port-9000",
                HostPortSpec {
                    claim_ref: None,
                    host_port_class_name: "sample".into(),
                    port,
                },
            )
        };
        assert_eq!(
            validate_host_port(&hp(Some(9000)), None, &allocator[0], &allocator),
            Verdict::Allow
        );
        denied(
            validate_host_port(&hp(Some(9000)), None, "jane", &allocator),
            "HostPorts are created and changed by the allocator only",
        );
        denied(
            validate_host_port(
                &hp(Some(9001)),
                Some(&hp(Some(9000))),
                &allocator[0],
                &allocator,
            ),
            "cannot change (it holds 9000)",
        );
        denied(
            validate_host_port(&hp(Some(70000)), None, &allocator[0], &allocator),
            "spec.port is 70000",
        );
    }
}
