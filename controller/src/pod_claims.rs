//! The lifetime of the claims the webhook made for pods (label
//! `hostport.rmb938.com/pod-claim`; see `hostport_api::pod_claims`).
//!
//! - A claim of a StatefulSet's pod follows the StatefulSet's retention policy: with
//!   `whenDeleted: Delete` it carries the StatefulSet as owner (so the garbage collector, or
//!   this reconciler when the owner is gone, deletes it with the StatefulSet); with
//!   `whenScaled: Delete` it is deleted once its ordinal is at or above `spec.replicas` and
//!   its pod is gone. The policy is read from the StatefulSet at every reconcile (its
//!   annotation wins over the pod template's), so a changed policy applies at the next pod
//!   or claim change.
//! - Any other pod's claim lives while a pod names it (`claim.hostport.rmb938.com/<port>`)
//!   and is deleted once no pod has named it for the grace period after its last admission:
//!   its pod is gone, or was never created (denied later in the admission chain, quota, a
//!   timed-out request retried). No ownerReference is written for it: the pod watch is what
//!   notices the pod going, which saves one API write per pod (a claim from an earlier release
//!   that has its pod as owner still goes with that pod).
//!
//! Deleting a claim only starts its release: its finalizer keeps the port while a pod uses
//! it. Every step reads before it writes and is safe to repeat.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::Action;
use hostport_api::HostPortClaim;
use hostport_api::pod_claims::{
    POD_LABEL, Retention, RetentionPolicy, STATEFULSET_LABEL, admitted_at, is_pod_claim, ordinal,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::Api;

use crate::context::{Context, key_of};
use crate::error::{Error, Result};
use crate::pods;
use crate::writes::{self, claim_name};
use hostport_process::events::EventType;

/// Name of this reconciler in metrics and logs.
pub const CONTROLLER: &str = "pod-claim";

/// Safety net for a claim whose cached copy predates our own write.
const STALE_RECHECK: Duration = Duration::from_secs(5);

/// Reconciles the lifetime of one claim (claims not made for a pod are left alone).
pub async fn reconcile(claim: Arc<HostPortClaim>, ctx: Arc<Context>) -> Result<Action> {
    // Taken on every path, so no record outlives its claim.
    let pod_left = ctx.take_pod_left(&key_of(claim.as_ref()));
    if !is_pod_claim(claim.labels()) || claim.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if ctx.is_stale(claim.as_ref()) {
        if pod_left {
            ctx.pod_left(key_of(claim.as_ref()));
        }
        return Ok(Action::requeue(STALE_RECHECK));
    }
    match claim.labels().get(STATEFULSET_LABEL) {
        Some(set) => statefulset_claim(&claim, set, &ctx).await,
        None => pod_claim(&claim, pod_left, &ctx).await,
    }
}

fn owner<'c>(claim: &'c HostPortClaim, kind: &str) -> Option<&'c OwnerReference> {
    claim.owner_references().iter().find(|o| o.kind == kind)
}

/// Deletes the claim (with `unchanged`: only the version given) and says why (log and
/// Event).
async fn delete(
    claim: &HostPortClaim,
    unchanged: bool,
    reason: &str,
    why: String,
    ctx: &Context,
) -> Result<Action> {
    writes::delete_claim(ctx, claim, unchanged).await?;
    tracing::info!(claim = %claim_name(claim), reason, %why, "deleted a claim made for a pod");
    ctx.event(
        claim,
        EventType::Normal,
        reason,
        "Deleting",
        format!("Deleted: {why}"),
    )
    .await;
    Ok(Action::await_change())
}

async fn pod_claim(claim: &HostPortClaim, pod_left: bool, ctx: &Context) -> Result<Action> {
    let namespace = claim.namespace().unwrap_or_default();
    // Claims made before this release carry their pod as owner: they go with that pod.
    if let Some(pod) = owner(claim, "Pod") {
        let alive = pods::exists(
            &ctx.client,
            &ctx.caches.pods,
            &namespace,
            &pod.name,
            Some(&pod.uid),
        )
        .await?;
        if alive {
            return Ok(Action::await_change());
        }
        let why = format!("its pod {} (uid {}) is gone", pod.name, pod.uid);
        return delete(claim, false, "PodGone", why, ctx).await;
    }
    // No ownerReference is written (one API write per pod saved): the claim lives while a
    // pod names it, and goes once none has for the grace period after its last admission.
    let in_use = pods::is_used(
        pods::ClaimUse::named(&namespace, &claim.name_any()),
        &ctx.caches.pods,
    );
    if in_use {
        return Ok(Action::await_change());
    }
    unused_after_grace(claim, &namespace, pod_left, ctx).await
}

/// A claim no cached pod names: kept through its grace period (its pod may still be on its
/// way through admission), then deleted unless the API server knows a pod that names it.
/// With `pod_left` (a pod that named it was seen leaving) the grace period is already over
/// unless an admission renewed the claim since the cached copy.
async fn unused_after_grace(
    claim: &HostPortClaim,
    namespace: &str,
    pod_left: bool,
    ctx: &Context,
) -> Result<Action> {
    let grace = ctx.settings.pod_claim_grace;
    let waited = waited_for_pod(claim);
    if waited < grace && !pod_left {
        return Ok(Action::requeue(grace - waited));
    }
    // Before deleting: the claim as it is now (a retried admission may have just renewed it)
    // and the pods as they are now (one created a moment ago may not be cached).
    let Some(fresh) = writes::fresh_claim(ctx, claim).await? else {
        return Ok(Action::await_change());
    };
    // The pod that left was the last one admitted with it: no admission renewed it since.
    let gone = pod_left && admitted_at(fresh.labels()) == admitted_at(claim.labels());
    let waited = waited_for_pod(&fresh);
    if waited < grace && !gone {
        return Ok(Action::requeue(grace - waited));
    }
    let name = claim.name_any();
    if !pods::using_now(&ctx.client, pods::ClaimUse::named(namespace, &name))
        .await?
        .is_empty()
    {
        // The pod cache lags: its event wakes this claim again when the pod goes.
        return Ok(Action::await_change());
    }
    let (reason, why) = if gone {
        (
            "PodGone",
            "the pod that named it is gone (or terminated)".to_owned(),
        )
    } else {
        (
            "Unused",
            format!(
                "no pod has named it since {grace:?} after its last admission: the pod it was made for is gone, or was never created (denied later in admission, or the request timed out)"
            ),
        )
    };
    // Only the version just read: an admission renewing it meanwhile wins.
    delete(&fresh, true, reason, why, ctx).await
}

/// How long the claim has waited for its pod: since its creation or the last admission that
/// made or reused it, whichever is later.
fn waited_for_pod(claim: &HostPortClaim) -> Duration {
    let created = claim.creation_timestamp().map(|c| crate::clock::age(&c));
    let admitted = admitted_at(claim.labels()).map(|seconds| {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        Duration::from_secs(now.saturating_sub(seconds).max(0).unsigned_abs())
    });
    match (created, admitted) {
        (Some(created), Some(admitted)) => created.min(admitted),
        (created, admitted) => created.or(admitted).unwrap_or_default(),
    }
}

async fn statefulset_claim(claim: &HostPortClaim, set_name: &str, ctx: &Context) -> Result<Action> {
    let namespace = claim.namespace().unwrap_or_default();
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let set = api.get_opt(set_name).await.map_err(Error::api(
        "reading",
        "StatefulSet",
        format!("{namespace}/{set_name}"),
    ))?;
    let owned_by = owner(claim, "StatefulSet").cloned();
    let Some(set) = set.filter(|s| {
        owned_by
            .as_ref()
            .is_none_or(|o| s.uid().as_deref() == Some(o.uid.as_str()))
    }) else {
        // Gone (or replaced by a new one of the same name): the claim goes with it only if
        // it was its owner, as the garbage collector would.
        return match owned_by {
            Some(owner) => {
                let why = format!("its StatefulSet {} (uid {}) is gone", owner.name, owner.uid);
                delete(claim, false, "StatefulSetDeleted", why, ctx).await
            }
            None => Ok(Action::await_change()),
        };
    };
    let template = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let (policy, errors) = RetentionPolicy::resolve(&[&template, set.annotations()]);
    for error in errors {
        tracing::warn!(statefulset = %format!("{namespace}/{set_name}"), %error, "bad retention policy; the default applies");
        ctx.event(
            &set,
            EventType::Warning,
            "InvalidRetentionPolicy",
            "Reconciling",
            format!("{error}; the default applies"),
        )
        .await;
    }
    let set_uid = set.uid().unwrap_or_default();
    let want_owner = policy.when_deleted == Retention::Delete;
    if want_owner != owned_by.is_some() {
        writes::edit_claim_owners(ctx, claim, |owners| {
            let before = owners.len();
            owners.retain(|o| o.kind != "StatefulSet");
            if want_owner {
                owners.push(OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "StatefulSet".into(),
                    name: set_name.to_owned(),
                    uid: set_uid.clone(),
                    controller: None,
                    block_owner_deletion: None,
                });
            }
            want_owner || owners.len() != before
        })
        .await?;
    }
    if policy.when_scaled == Retention::Delete {
        let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let pod = claim.labels().get(POD_LABEL);
        let scaled_away = pod
            .and_then(|pod| ordinal(pod, set_name))
            .is_some_and(|n| i64::from(n) >= i64::from(replicas));
        if let Some(pod) = pod.filter(|_| scaled_away)
            && !pods::exists(&ctx.client, &ctx.caches.pods, &namespace, pod, None).await?
        {
            let why = format!(
                "StatefulSet {set_name} was scaled to {replicas} and its policy deletes the claims of removed ordinals (whenScaled: Delete)"
            );
            return delete(claim, false, "ScaledDown", why, ctx).await;
        }
    }
    Ok(Action::await_change())
}
