//! Running the webhook: watch-fed caches, then HTTPS on the given listener.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hostport_api::cache::strip_class_for_admission;
use hostport_api::identity::{CONTROLLER_SERVICE_ACCOUNT, DEFAULT_NAMESPACE, allocator_user};
use hostport_process::compact::{Compact, CompactStore};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cached::{CachedClaim, CachedHostPort};
use crate::context::Context;
use crate::metrics::Metrics;

/// The publishers' ServiceAccounts: router mode (`config/publisher/router`), edge and node
/// modes (`config/publisher/rbac`).
pub const PUBLISHER_SERVICE_ACCOUNTS: [&str; 2] =
    ["hostport-publisher-router", "hostport-publisher"];

/// How the webhook runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The allocator identity: users who may write claim `spec.hostPortName`, statuses, the
    /// claim finalizer's removal and claim-bound HostPorts.
    pub allocator_users: Vec<String>,
    /// The publishers: users who may write a claim's `status.external` and its `Published`
    /// condition, and nothing else of it, and pods' `external.hostport.rmb938.com/`
    /// annotations.
    pub publisher_users: Vec<String>,
    /// Longest one API read may take.
    pub api_timeout: Duration,
    /// Longest a pod's admission waits for the claims it names to appear and bind (a claim
    /// and its pod applied together); keep it and `api_timeout` together below the webhook
    /// configuration's `timeoutSeconds`.
    pub bind_wait: Duration,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Set once the caches are synced (a certificate is loaded before `run` is called);
    /// cleared when shutting down.
    pub ready: Arc<AtomicBool>,
    /// At shutdown, how long to keep serving while not ready, so the Service drops this pod
    /// before it stops answering (kube-proxy and the API server's endpoint view lag).
    pub shutdown_delay: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            allocator_users: vec![allocator_user(
                DEFAULT_NAMESPACE,
                CONTROLLER_SERVICE_ACCOUNT,
            )],
            publisher_users: PUBLISHER_SERVICE_ACCOUNTS
                .iter()
                .map(|account| allocator_user(DEFAULT_NAMESPACE, account))
                .collect(),
            api_timeout: Duration::from_secs(2),
            bind_wait: Duration::from_secs(2),
            metrics: Arc::default(),
            ready: Arc::default(),
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// A watch-fed cache of every `K`, the task that feeds it, and a counter bumped after each
/// change has reached the cache (what admissions waiting for an object to change wait on).
fn cache<K>(
    client: &Client,
    strip: fn(&mut K),
) -> (Store<K>, watch::Receiver<u64>, tokio::task::JoinHandle<()>)
where
    K: hostport_process::Watched,
{
    let (changed, changes) = watch::channel(0u64);
    let (store, feed) = hostport_process::watched_cache(
        Api::<K>::all(client.clone()),
        watcher::Config::default(),
        strip,
        changed,
    );
    (store, changes, tokio::spawn(feed))
}

/// [`cache`] of compact forms `C` (claims and HostPorts: one entry per port of a class).
fn compact_cache<C: Compact>(
    client: &Client,
) -> (
    CompactStore<C>,
    watch::Receiver<u64>,
    tokio::task::JoinHandle<()>,
) {
    let (changed, changes) = watch::channel(0u64);
    let (store, feed) = hostport_process::compact::compact_cache(
        Api::<C::Source>::all(client.clone()),
        watcher::Config::default(),
        changed,
    );
    (store, changes, tokio::spawn(feed))
}

/// Serves admission on `listener` with `tls` until `shutdown` completes.
pub async fn run(
    client: Client,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (claims, claim_changes, claim_task) = compact_cache::<CachedClaim>(&client);
    let (host_ports, _, host_port_task) = compact_cache::<CachedHostPort>(&client);
    let (classes, _, class_task) = cache(&client, strip_class_for_admission);
    let state = Arc::new(Context {
        client,
        claims: claims.clone(),
        host_ports: host_ports.clone(),
        classes: classes.clone(),
        claim_changes,
        allocator_users: options.allocator_users.clone(),
        publisher_users: options.publisher_users.clone(),
        api_timeout: options.api_timeout,
        bind_wait: options.bind_wait,
        metrics: options.metrics.clone(),
    });
    let ready = options.ready.clone();
    let mark_ready = tokio::spawn(async move {
        let _ = claims.wait_until_ready().await;
        let _ = host_ports.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
        ready.store(true, Ordering::Relaxed);
        tracing::info!("caches synced; ready");
    });
    // Ready-but-draining: not ready at once, serving for `shutdown_delay`, then the server
    // closes its connections gracefully (requests in flight finish).
    let not_ready = options.ready.clone();
    let delay = options.shutdown_delay;
    // Caches that finish syncing during the drain must not mark it ready again.
    let syncing = mark_ready.abort_handle();
    let drained = async move {
        shutdown.await;
        syncing.abort();
        not_ready.store(false, Ordering::Relaxed);
        tracing::info!(
            ?delay,
            "stopping: not ready; serving until the Service drops this pod"
        );
        tokio::time::sleep(delay).await;
    };
    crate::tls::serve(listener, crate::router(state), tls, drained).await;
    for task in [claim_task, host_port_task, class_task, mark_ready] {
        task.abort();
    }
}

/// `/healthz`, `/readyz` (caches synced, certificate loaded) and `/metrics`, plain HTTP.
pub fn health_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> axum::Router {
    hostport_process::health_router(move || metrics.encode(), ready)
}
