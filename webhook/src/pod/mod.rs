//! Admitting a pod, in one folder: [`admit`] decides one request (the orchestration: host
//! network, the claims a pod's class annotations ask for, the wait for the claims it names,
//! the decision on what holds after the wait); `check` is the pure decision (which container
//! port gets which host port, as a JSONPatch, or a denial); `plan` plans the claims of class
//! annotations (pure); `claims` makes them (I/O); `passthrough` moves the probes of ports
//! whose number changes (pure); `block` adds the further ports of a block (pure).

mod block;
mod check;
pub mod claims;
mod passthrough;
pub mod plan;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, Operation};

pub use check::{Binding, ClaimState, ClaimStates, NewPod, admit_create, admit_update};

use crate::context::Context;
use crate::verdict::{Verdict, deny, reasons};

/// The verdict on one pod admission request: `object` and `old` are its pod and old pod
/// (taken out of `request`, so a big pod is held once).
pub async fn admit(
    ctx: &Context,
    request: &AdmissionRequest<Pod>,
    object: Option<Pod>,
    old: Option<Pod>,
) -> Verdict {
    match request.operation {
        Operation::Create => {
            let Some(pod) = object else {
                return deny(reasons::UNDECODABLE, "the request has no pod".into());
            };
            let namespace = request
                .namespace
                .clone()
                .or_else(|| pod.metadata.namespace.clone())
                .unwrap_or_default();
            admit_new(ctx, &pod, &namespace, request.dry_run).await
        }
        // Also `pods/status`: a status write can change annotations too.
        Operation::Update => match (old, object) {
            (Some(old), Some(new)) => {
                let user = request.user_info.username.as_deref().unwrap_or_default();
                admit_update(&old, &new, ctx.is_publisher(user))
            }
            _ => Verdict::Allow,
        },
        _ => Verdict::Allow,
    }
}

/// A pod's creation: the claims of its class annotations made (or found), every claim it
/// names waited for (one deadline for all) and, after any wait, read again.
async fn admit_new(ctx: &Context, pod: &Pod, namespace: &str, dry_run: bool) -> Verdict {
    let new_pod = NewPod::new(pod);
    let host_network_allowed = if new_pod.uses_host_network() {
        match ctx.host_network_allowed(namespace).await {
            Ok(allowed) => allowed,
            Err(why) => {
                let message = format!(
                    "spec.hostNetwork is true and the webhook cannot tell whether namespace {namespace:?} allows it ({why}); try again"
                );
                return deny(reasons::HOST_NETWORK, message);
            }
        }
    } else {
        false
    };
    // One deadline for everything the pod waits on.
    let deadline = tokio::time::Instant::now() + ctx.bind_wait;
    let plans = match plan::plan(&new_pod, host_network_allowed) {
        Ok(plans) => plans,
        Err(verdict) => return verdict,
    };
    let unexempt_host_network = new_pod.uses_host_network() && !host_network_allowed;
    let made = match claims::make(ctx, namespace, &plans, unexempt_host_network, dry_run).await {
        Ok(made) => made,
        Err(verdict) => return verdict,
    };
    // Every claim the pod names or was given: waiting for claims applied together with the
    // pod or made just now, then the cache or one bounded API read each.
    let mut states = made.predicted;
    let names: BTreeSet<&str> = new_pod
        .claim_names()
        .into_iter()
        .chain(made.existing.iter().map(String::as_str))
        .collect();
    let mut waited = false;
    for name in names {
        let (state, waited_for) = ctx
            .claim_state_when_settled(namespace, name, deadline)
            .await;
        waited |= waited_for;
        states.insert(name.to_owned(), state);
    }
    // Decided on what holds now, not when the wait began: a claim deleted while the pod
    // waited may have lost its port to another claim.
    if waited {
        ctx.recheck_bound(namespace, &mut states).await;
    }
    admit_create(&new_pod, host_network_allowed, &made.annotations, &states)
}
