//! The HostPort reconciler: deletes HostPorts whose claim is gone (matched by UID, so a
//! recreated claim of the same name does not inherit a port) and lets go of HostPorts the
//! Go project left with its finalizer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hostport_api::{FINALIZER, HostPort, HostPortClaim};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::writes;

/// Name of this reconciler in metrics and logs.
pub const CONTROLLER: &str = "hostport";

/// Reconciles one HostPort.
pub async fn reconcile(host_port: Arc<HostPort>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_host_port(&host_port, &ctx).await;
    ctx.metrics
        .reconciled(CONTROLLER, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&ObjectRef::from_obj(host_port.as_ref()).erase());
    }
    result
}

async fn reconcile_host_port(host_port: &HostPort, ctx: &Context) -> Result<Action> {
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    let name = host_port.name_any();
    if host_port.metadata.deletion_timestamp.is_some() {
        // Only HostPorts written by the Go project carry this finalizer; nothing to wait for.
        if writes::remove_finalizer(&api, host_port, FINALIZER, "HostPort")
            .await?
            .is_some()
        {
            ctx.wrote(host_port);
        }
        return Ok(Action::await_change());
    }
    if !ctx.book().is_synced() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let Some((namespace, claim_name)) = host_port.claim_key() else {
        // No claimRef: a port an admin holds back on purpose. It stays taken.
        return Ok(Action::await_change());
    };
    let claim_uid = host_port.claim_uid();
    let matches =
        |claim: &HostPortClaim| claim_uid.is_none_or(|uid| claim.uid().as_deref() == Some(uid));
    let cached_claim = ctx
        .caches
        .claims
        .get(&ObjectRef::new(claim_name).within(namespace));
    if cached_claim.as_deref().is_some_and(matches) {
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
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    tracing::info!(host_port = %name, port = ?host_port.port(), claim = ?host_port.claim_key(), "deleting HostPort whose claim is gone");
    writes::delete_host_port(&api, &name, host_port.uid()).await?;
    Ok(Action::await_change())
}
