//! hostport-controller: binds HostPortClaims to HostPorts holding free node ports.
//!
//! Start-up order matters for correctness: every watch cache (HostPorts above all) is synced
//! and the port book rebuilt from it *before* any claim is reconciled, so a restart never
//! hands out a port that is already held. Even then the book is only a guess; the lock on a
//! port is the API server's name uniqueness of `port-<n>` HostPorts.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod claim;
pub mod class;
pub mod cli;
pub mod context;
pub mod error;
pub mod events;
pub mod host_port;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod port_book;
mod watches;
mod writes;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use kube::api::{Api, ListParams};
use kube::runtime::applier;
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Client, Resource};
use tokio::sync::mpsc;

pub use context::{Context, Settings};
pub use error::{Error, Result};
pub use leader::LeaseConfig;
pub use metrics::Metrics;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Tunables.
    pub settings: Settings,
    /// Leader election; `None` runs without it.
    pub leader_election: Option<LeaseConfig>,
    /// Reconciles in flight at once, per kind.
    pub concurrency: u16,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Set once the caches are synced (what `/readyz` reports).
    pub ready: Arc<AtomicBool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            leader_election: None,
            concurrency: 16,
            metrics: Arc::default(),
            ready: Arc::default(),
        }
    }
}

/// Fails with a clear message when the CRDs are not installed.
pub async fn check_crds(client: &Client) -> Result<()> {
    let classes: Api<HostPortClass> = Api::all(client.clone());
    classes
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|source| Error::CrdsMissing { source })
}

fn queue<K: Resource>(
    rx: mpsc::UnboundedReceiver<ObjectRef<K>>,
) -> impl futures::Stream<Item = Result<ObjectRef<K>, std::convert::Infallible>> {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|r| (Ok(r), rx)) },
    )
}

/// Runs the controller until `shutdown` completes (graceful) or leadership is lost (error).
pub async fn run(
    client: Client,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    check_crds(&client).await?;
    let (claims, claim_writer) = reflector::store::<HostPortClaim>();
    let (host_ports, host_port_writer) = reflector::store::<HostPort>();
    let (classes, class_writer) = reflector::store::<HostPortClass>();
    let (pods, pod_writer) = reflector::store();
    let (claim_tx, claim_rx) = mpsc::unbounded_channel();
    let (host_port_tx, host_port_rx) = mpsc::unbounded_channel();
    let (class_tx, class_rx) = mpsc::unbounded_channel();
    let caches = context::Caches {
        claims: claims.clone(),
        host_ports: host_ports.clone(),
        classes: classes.clone(),
        pods: pods.clone(),
    };
    let triggers = context::Triggers {
        claims: claim_tx,
        host_ports: host_port_tx,
        classes: class_tx,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        caches,
        port_book::PortBook::default(),
        options.metrics.clone(),
        triggers,
        options.settings.clone(),
    ));

    let watch_tasks = [
        tokio::spawn(watches::host_ports(ctx.clone(), host_port_writer)),
        tokio::spawn(watches::claims(ctx.clone(), claim_writer)),
        tokio::spawn(watches::classes(ctx.clone(), class_writer)),
        tokio::spawn(watches::pods(ctx.clone(), pod_writer)),
        tokio::spawn(watches::phase_gauges(ctx.clone())),
    ];
    let _abort_watches = AbortOnDrop(watch_tasks.iter().map(|t| t.abort_handle()).collect());

    tokio::pin!(shutdown);
    let synced = async {
        let _ = claims.wait_until_ready().await;
        let _ = host_ports.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        while !ctx.book().is_synced() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = synced => {},
        () = &mut shutdown => return Ok(()),
    }
    options.ready.store(true, Ordering::Relaxed);
    tracing::info!("caches synced; port book rebuilt from the HostPorts");

    let lease = options
        .leader_election
        .clone()
        .map(|config| leader::LeaseLock::new(client.clone(), config));
    if let Some(lease) = &lease {
        tokio::select! {
            () = lease.acquire() => {},
            () = &mut shutdown => return Ok(()),
        }
    }

    let config = Config::default().concurrency(options.concurrency);
    let claim_loop = applier(
        |claim, ctx| Box::pin(claim::reconcile(claim, ctx)),
        |claim, error, ctx| retry(claim::CONTROLLER, claim.as_ref(), error, &ctx),
        ctx.clone(),
        claims.clone(),
        queue(claim_rx),
        config.clone(),
    )
    .for_each(|_| async {});
    let host_port_loop = applier(
        |host_port, ctx| Box::pin(host_port::reconcile(host_port, ctx)),
        |host_port, error, ctx| retry(host_port::CONTROLLER, host_port.as_ref(), error, &ctx),
        ctx.clone(),
        host_ports.clone(),
        queue(host_port_rx),
        config.clone(),
    )
    .for_each(|_| async {});
    let class_loop = applier(
        |class, ctx| Box::pin(class::reconcile(class, ctx)),
        |class, error, ctx| retry(class::CONTROLLER, class.as_ref(), error, &ctx),
        ctx.clone(),
        classes.clone(),
        queue(class_rx),
        config,
    )
    .for_each(|_| async {});

    let held = async {
        match &lease {
            Some(lease) => lease.hold().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        lost = held => Err(lost),
        () = async { tokio::join!(claim_loop, host_port_loop, class_loop); } => Ok(()),
    };
    if outcome.is_ok()
        && let Some(lease) = &lease
    {
        lease.release().await;
    }
    outcome
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Logs a failed reconcile and retries it with a per-object exponential backoff.
fn retry<K: Resource<DynamicType = ()>>(
    controller: &str,
    object: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.reconcile_failed(controller, error.reason());
    let delay = ctx.backoff(&ObjectRef::from_obj(object).erase());
    if error.reason() == "Conflict" {
        tracing::debug!(%error, ?delay, "conflict; retrying");
    } else {
        tracing::warn!(%error, reason = error.reason(), ?delay, "reconcile failed; retrying");
    }
    Action::requeue(delay)
}

/// `/healthz` (alive), `/readyz` (caches synced) and `/metrics` (OpenMetrics text).
pub fn health_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> axum::Router {
    hostport_api::serve::health_router(move || metrics.encode(), ready)
}
