//! The HostPort reconciler: deletes HostPorts whose claim is gone (matched by UID, so a
//! recreated claim of the same name does not inherit a port) once no pod that named the claim
//! still runs, marks reservations (HostPorts without claimRef), and lets go of HostPorts the
//! Go project left with its finalizer.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::Action;
use hostport_api::conditions::{self, Condition, reasons, status, types};
use hostport_api::pod_claims::is_pod_claim;
use hostport_api::{HostPort, HostPortClaim, HostPortPhase, HostPortStatus};
use kube::ResourceExt;
use kube::api::Api;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::pods;
use crate::writes;

/// Name of this reconciler in metrics and logs.
pub const CONTROLLER: &str = "hostport";

/// Retry when the API server has a claim the cache does not have yet.
const CLAIM_CACHE_LAG: Duration = Duration::from_secs(5);

/// Safety net while pods hold the port of a deleted claim (pod watch events wake it sooner).
const PODS_RECHECK: Duration = Duration::from_secs(60);

/// Reconciles one HostPort.
pub async fn reconcile(host_port: Arc<HostPort>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_host_port(&host_port, &ctx).await
}

async fn reconcile_host_port(host_port: &HostPort, ctx: &Context) -> Result<Action> {
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    let name = host_port.name_any();
    if host_port.metadata.deletion_timestamp.is_some() {
        // Only HostPorts written by the Go project carry this finalizer; nothing to wait for.
        writes::remove_finalizer(ctx, &api, host_port).await?;
        return Ok(Action::await_change());
    }
    let Some((namespace, claim_name)) = host_port.claim_key() else {
        // No claimRef: a port an admin holds back on purpose. It stays taken.
        set_allocated(
            host_port,
            reasons::RESERVED,
            "reserved by an administrator (no spec.claimRef): never handed to a claim".into(),
            ctx,
        )
        .await?;
        return Ok(Action::await_change());
    };
    let claim_uid = host_port.claim_uid();
    let matches =
        |claim: &HostPortClaim| claim_uid.is_none_or(|uid| claim.uid().as_deref() == Some(uid));
    let cached_claim = ctx.caches.claims.get(namespace, claim_name);
    if cached_claim.is_some_and(|cached| {
        claim_uid.is_none_or(|uid| cached.uid().is_some_and(|own| own.is(uid)))
    }) {
        // Alive. Duplicates of a bound claim are the claim reconciler's to remove.
        return Ok(Action::await_change());
    }
    // The cache says the claim is gone; ask the API server before deleting anything, since
    // the claim cache may lag behind the HostPort cache.
    let claims: Api<HostPortClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let owner = claims.get_opt(claim_name).await.map_err(Error::api(
        "reading",
        "HostPortClaim",
        format!("{namespace}/{claim_name}"),
    ))?;
    if owner.as_ref().is_some_and(matches) {
        return Ok(Action::requeue(CLAIM_CACHE_LAG));
    }
    // The claim is gone, but the port is free only once no pod that named the claim (or
    // declares its port) may still run: its finalizer can have been removed early (a mistaken RBAC grant, an
    // uninstall), and the pod keeps the port on its node until it stops.
    let of = pods::ClaimUse {
        namespace,
        claim: claim_name,
        port: host_port.port(),
    };
    let using = pods::using_now(&ctx.client, of).await?;
    if !using.is_empty() {
        let message = format!(
            "HostPortClaim {namespace}/{claim_name} is gone, but {} that named it still exist; the port is released once they stop",
            pods::describe(&using)
        );
        if set_allocated(host_port, reasons::CLAIM_GONE_PODS_RUNNING, message, ctx).await? {
            tracing::warn!(host_port = %name, claim = %format!("{namespace}/{claim_name}"), pods = ?using, "claim gone while pods use its port; holding the port");
        }
        return Ok(Action::requeue(PODS_RECHECK));
    }
    tracing::info!(host_port = %name, port = ?host_port.port(), claim = ?host_port.claim_key(), "deleting HostPort whose claim is gone");
    writes::delete_host_port(ctx, &name, host_port.uid()).await?;
    Ok(Action::await_change())
}

/// The status of a HostPort just bound to `claim`: [`set_allocated`] for a hand-made claim
/// (the Go-compatible object), nothing for a claim the webhook made for a pod. Such a
/// HostPort is complete at its create (`spec.port`, `claimRef`, the pod-claim label) and the
/// status would only mirror it: skipping it saves one API write per port on the path of a
/// pod admission. Its status is still written when there is news (`ClaimGonePodsRunning`).
pub(crate) async fn set_bound(
    host_port: &HostPort,
    claim: &HostPortClaim,
    message: String,
    ctx: &Context,
) -> Result<bool> {
    if is_pod_claim(claim.labels()) {
        return Ok(false);
    }
    set_allocated(host_port, reasons::ALLOCATED, message, ctx).await
}

/// Sets phase Allocated, the port and the `Allocated` condition (True, `reason`) in the
/// HostPort's status if they differ; returns whether it wrote. Used for bound, held and
/// reserved HostPorts alike.
pub(crate) async fn set_allocated(
    host_port: &HostPort,
    reason: &'static str,
    message: String,
    ctx: &Context,
) -> Result<bool> {
    let current = host_port.status.clone().unwrap_or_default();
    let mut desired = current.clone();
    desired.phase = Some(HostPortPhase::Allocated);
    desired.port = host_port.port().map(i32::from);
    desired.observed_generation = host_port.metadata.generation;
    conditions::set(
        &mut desired.conditions,
        Condition::new(
            types::ALLOCATED,
            status::TRUE,
            reason,
            message,
            host_port.metadata.generation,
            crate::clock::now(),
        ),
    );
    // Cached HostPorts carry no condition messages (memory), so they are not compared.
    let without_messages = |status: &HostPortStatus| {
        let mut status = status.clone();
        status.conditions.iter_mut().for_each(|c| c.message.clear());
        status
    };
    if without_messages(&desired) == without_messages(&current) || ctx.is_stale(host_port) {
        // Current, or a cached copy of a version whose status we already wrote.
        return Ok(false);
    }
    writes::host_port_status(ctx, host_port, &desired).await?;
    Ok(true)
}
