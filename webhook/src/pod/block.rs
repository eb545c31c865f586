//! Blocks of consecutive ports in a pod, pure: a claim of `spec.count` N gives the port that
//! names it the block's first port and the pod one more container port per port of the block
//! (same container and protocol; container ports following the named one, or the host ports
//! themselves for passthrough), so the CNI forwards, the scheduler counts and the kubelet
//! reports every one; `count.hostport.rmb938.com/<name>` tells the program how many. The
//! annotations that ask for a block made for the pod are checked here too.

use hostport_api::annotations::{
    ALIGNMENT_PREFIX, CLASS_PREFIX, COUNT_PREFIX, ClaimAnnotation, ClassAnnotation, block_number,
    count_annotation_key,
};
use json_patch::PatchOperation;
use serde_json::{Value, json};

use super::check::{Binding, NewPod, PortSlot, add, escape};
use crate::verdict::{Verdict, deny, reasons};

/// The block a pod asks for the claim made for its port `port_name`: `(count, alignment)`,
/// 1 when unset (checked by [`check_block_annotations`]).
pub fn requested_block(pod: &NewPod, port_name: &str) -> (u16, u16) {
    let number = |prefix| {
        block_number(&pod.annotations, prefix, port_name)
            .ok()
            .flatten()
            .unwrap_or(1)
    };
    (number(COUNT_PREFIX), number(ALIGNMENT_PREFIX))
}

/// Count and alignment annotations: numbers between 1 and 1024, on a port that gets a claim
/// (a count beside a claim annotation must be the claim's, checked once the claim is known);
/// an alignment only beside a class annotation (a hand-made claim has its own).
pub(super) fn check_block_annotations(
    pod: &NewPod,
    claims: &[ClaimAnnotation],
    classes: &[ClassAnnotation],
) -> Result<(), Verdict> {
    for (key, _) in pod.annotations.iter() {
        let (prefix, port_name) = if let Some(port) = key.strip_prefix(COUNT_PREFIX) {
            (COUNT_PREFIX, port)
        } else if let Some(port) = key.strip_prefix(ALIGNMENT_PREFIX) {
            (ALIGNMENT_PREFIX, port)
        } else {
            continue;
        };
        block_number(&pod.annotations, prefix, port_name)
            .map_err(|error| deny(reasons::INVALID_ANNOTATION, error.to_string()))?;
        let by_class = classes.iter().any(|c| c.port_name == port_name);
        let by_claim = claims.iter().any(|c| c.port_name == port_name);
        if by_class || (by_claim && prefix == COUNT_PREFIX) {
            continue;
        }
        return Err(deny(
            reasons::STRAY_PORT_ANNOTATION,
            format!(
                "annotation {key:?} asks for a block for port {port_name:?}, which gets no claim made for the pod: add \"{CLASS_PREFIX}{port_name}: <className>\" beside it, or remove it{}",
                if by_claim {
                    " (a hand-made claim's spec.alignment decides its alignment)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// The operations that give a block claim's port the rest of its block: the count
/// annotation and one container port per further port. None for a single port.
pub(super) fn block_operations(
    pod: &NewPod,
    slot: &PortSlot,
    binding: &Binding,
    claim: &ClaimAnnotation,
    passthrough: bool,
) -> Result<Vec<PatchOperation>, Verdict> {
    let ClaimAnnotation {
        port_name,
        claim_name,
    } = claim;
    let count_key = count_annotation_key(port_name);
    let count = binding.count;
    let given = pod.annotations.get(&count_key);
    if count <= 1 {
        // A count on a single port's claim can only mislead the program.
        return match given {
            Some(value) if value != "1" => Err(mismatch(&count_key, value, claim_name, 1)),
            _ => Ok(vec![]),
        };
    }
    let mut operations = vec![];
    match given {
        Some(value) if *value == count.to_string() => {}
        Some(value) => return Err(mismatch(&count_key, value, claim_name, count)),
        None => operations.extend(add(
            &format!("/metadata/annotations/{}", escape(&count_key)),
            Value::String(count.to_string()),
        )),
    }
    // Where the program listens for port i of the block.
    let first = if passthrough {
        i32::from(binding.port)
    } else {
        slot.container_port
    };
    let last_container = i64::from(first) + i64::from(count) - 1;
    if last_container > 65535 {
        return Err(deny(
            reasons::HOST_PORT_MISMATCH,
            format!(
                "{} (port {port_name:?}) has containerPort {first}, but HostPortClaim {claim_name:?} is a block of {count} ports, which would run past container port 65535: use a lower containerPort",
                slot.field
            ),
        ));
    }
    let declared: Vec<(i32, &str, &str)> = pod
        .named
        .values()
        .flatten()
        .chain(&pod.unnamed)
        .filter(|other| other.order != slot.order)
        .map(|other| {
            (
                other.container_port,
                other.protocol.as_str(),
                other.field.as_str(),
            )
        })
        .collect();
    for i in 1..i32::from(count) {
        let container_port = first + i;
        if let Some((_, _, field)) = declared
            .iter()
            .find(|(port, protocol, _)| *port == container_port && *protocol == slot.protocol)
        {
            return Err(deny(
                reasons::DUPLICATE_PORT_NAME,
                format!(
                    "HostPortClaim {claim_name:?} is a block of {count} ports from {}, and the webhook adds container port {container_port}/{} for it, but {field} declares it already: declare only the block's first port (named {port_name:?}), the webhook adds the others",
                    slot.field, slot.protocol
                ),
            ));
        }
        operations.extend(add(
            &format!("{}/-", slot.ports_pointer),
            json!({
                "containerPort": container_port,
                "hostPort": i32::from(binding.port) + i,
                "protocol": slot.protocol,
            }),
        ));
    }
    Ok(operations)
}

fn mismatch(key: &str, value: &str, claim_name: &str, count: u16) -> Verdict {
    deny(
        reasons::HOST_PORT_MISMATCH,
        format!(
            "annotation {key:?} is {value:?}, but HostPortClaim {claim_name:?} holds {count} port(s): remove the annotation, the webhook sets it"
        ),
    )
}
