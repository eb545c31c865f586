//! The run loop: watches feed the caches and the port book; once every cache is synced (and
//! the lease is held, with leader election) three reconcile loops run, one per kind.
//!
//! Each loop is a `queue` of its own instead of a kube-runtime `Controller`: the caches must
//! be complete and the port book rebuilt from the HostPorts *before* the first claim is
//! reconciled (a `Controller` starts reconciling as its first objects arrive, which could
//! hand out a port whose HostPort has not been listed yet), and one kind's reconcile queues
//! another's through our own channels (`context::Triggers`) with the filtering `watches`
//! does, rather than through mapper functions over every event.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Client, Resource};
use tokio::sync::mpsc;

use crate::context::{self, Context, Settings};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::queue::{self, Action};
use crate::{claim, class, host_port, pod_claims, port_book, watches};
use hostport_process::leader::{self, LeaseConfig};

/// How often start-up checks whether the port book is built.
const SYNC_POLL: Duration = Duration::from_millis(20);

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

/// Runs the controller until `shutdown` completes (graceful) or leadership is lost (error).
pub async fn run(
    client: Client,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    check_crds(&client).await?;
    let (claims, claim_writer) = hostport_process::compact::compact_store();
    let (classes, class_writer) = reflector::store::<HostPortClass>();
    let (pods, pod_writer) = hostport_process::compact::compact_store();
    let (claim_tx, claim_rx) = mpsc::unbounded_channel();
    let (pod_claim_tx, pod_claim_rx) = mpsc::unbounded_channel();
    let (host_port_tx, host_port_rx) = mpsc::unbounded_channel();
    let (class_tx, class_rx) = mpsc::unbounded_channel();
    let caches = context::Caches {
        claims: claims.clone(),
        classes: classes.clone(),
        pods: pods.clone(),
    };
    let triggers = context::Triggers {
        claims: claim_tx,
        pod_claims: pod_claim_tx,
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
        tokio::spawn(watches::host_ports(ctx.clone())),
        tokio::spawn(watches::claims(ctx.clone(), claim_writer)),
        tokio::spawn(watches::classes(ctx.clone(), class_writer)),
        tokio::spawn(watches::pods(ctx.clone(), pod_writer)),
        tokio::spawn(watches::phase_gauges(ctx.clone())),
    ];
    let _abort_watches =
        hostport_process::AbortOnDrop(watch_tasks.iter().map(|t| t.abort_handle()).collect());

    tokio::pin!(shutdown);
    let synced = async {
        let _ = claims.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        // The book swaps in a complete list at once and stays synced from then on (a relist
        // builds a new one beside it), so reconcilers never see an unsynced book.
        while !ctx.book().is_synced() {
            tokio::time::sleep(SYNC_POLL).await;
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

    let concurrency = usize::from(options.concurrency);
    let claim_loop = reconcile_loop(
        claim::CONTROLLER,
        claim::reconcile,
        &ctx,
        cached_claims(&ctx),
        claim_rx,
        concurrency,
    );
    let pod_claim_loop = reconcile_loop(
        pod_claims::CONTROLLER,
        pod_claims::reconcile,
        &ctx,
        cached_claims(&ctx),
        pod_claim_rx,
        concurrency,
    );
    let host_port_loop = reconcile_loop(
        host_port::CONTROLLER,
        host_port::reconcile,
        &ctx,
        {
            let ctx = ctx.clone();
            move |key: &ObjectRef<HostPort>| ctx.cached_host_port(&key.name).map(Arc::new)
        },
        host_port_rx,
        concurrency,
    );
    let class_loop = reconcile_loop(
        class::CONTROLLER,
        class::reconcile,
        &ctx,
        in_store(classes),
        class_rx,
        concurrency,
    );

    let held = async {
        match &lease {
            Some(lease) => Error::from(lease.hold().await),
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        lost = held => Err(lost),
        () = async { tokio::join!(claim_loop, pod_claim_loop, host_port_loop, class_loop); } => Ok(()),
    };
    if outcome.is_ok()
        && let Some(lease) = &lease
    {
        lease.release().await;
    }
    outcome
}

/// The reconciles of one kind: objects queued on `queued` are reconciled as `lookup` finds
/// them in the cache, instrumented, and retried with backoff on failure.
fn reconcile_loop<K, Fut>(
    controller: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    ctx: &Arc<Context>,
    lookup: impl Fn(&ObjectRef<K>) -> Option<Arc<K>>,
    queued: mpsc::UnboundedReceiver<ObjectRef<K>>,
    concurrency: usize,
) -> impl Future<Output = ()>
where
    K: hostport_process::Watched,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let ctx = ctx.clone();
    queue::run(
        queued,
        lookup,
        move |object| {
            let ctx = ctx.clone();
            async move {
                match instrumented(controller, object.clone(), ctx.clone(), reconcile).await {
                    Ok(action) => action,
                    Err(error) => retry(controller, object.as_ref(), &error, &ctx),
                }
            }
        },
        concurrency,
    )
}

/// Looks claims up in the compact cache.
fn cached_claims(
    ctx: &Arc<Context>,
) -> impl Fn(&ObjectRef<HostPortClaim>) -> Option<Arc<HostPortClaim>> + use<> {
    let ctx = ctx.clone();
    move |key| {
        let namespace = key.namespace.as_deref().unwrap_or_default();
        ctx.cached_claim(namespace, &key.name).map(Arc::new)
    }
}

/// Looks objects up in a kube-runtime store.
fn in_store<K: hostport_process::Watched>(
    store: Store<K>,
) -> impl Fn(&ObjectRef<K>) -> Option<Arc<K>> {
    move |key| store.get(key)
}

/// One reconcile, timed and counted; a success resets the object's retry backoff.
async fn instrumented<K, Fut>(
    controller: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    Fut: Future<Output = Result<Action>>,
{
    let started = Instant::now();
    let key = ObjectRef::from_obj(object.as_ref()).erase();
    let result = reconcile(object, ctx.clone()).await;
    ctx.metrics
        .reconciled(controller, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Logs a failed reconcile and retries it with a per-object exponential backoff.
fn retry<K: Resource<DynamicType = ()>>(
    controller: &str,
    object: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.reconcile_failed(controller, error.reason());
    let delay = ctx.backoff.failed(&ObjectRef::from_obj(object).erase());
    if error.is_retryable() {
        tracing::debug!(%error, ?delay, "conflict; retrying");
    } else {
        tracing::warn!(%error, reason = error.reason(), ?delay, "reconcile failed; retrying");
    }
    Action::requeue(delay)
}
