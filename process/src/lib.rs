//! What the hostport processes (controller, webhook, publisher) share around their work: the
//! log format flag and logging set-up, the rustls crypto provider, the SIGTERM/ctrl-c stop
//! signal every task of the process waits on, the plain-HTTP `/healthz` `/readyz` `/metrics`
//! server, watch-fed caches with a change counter (API structs, or compact forms:
//! [`compact`]), Events ([`events`]) and leader election on a Lease ([`leader`]). Nothing
//! here knows this project's API.
#![forbid(unsafe_code)]

pub mod compact;
pub mod events;
pub mod ids;
pub mod intern;
pub mod leader;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `--log-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`) in `format`, on
/// stderr (stdout is for what a command was asked to print, e.g. a rendered ruleset).
pub fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Sets up a process: logging in `format`, then the `ring` rustls provider (the one kube and
/// our TLS code are built with; a second provider would make rustls panic).
pub fn start(format: LogFormat) {
    init_logging(format);
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
}

/// The process's stop signal: SIGTERM or ctrl-c, handed to as many tasks as need it.
#[derive(Clone, Debug)]
pub struct Stop {
    stopped: watch::Receiver<bool>,
}

impl Stop {
    /// Starts listening for SIGTERM and ctrl-c.
    pub fn on_signal() -> Self {
        let (tx, stopped) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        Self { stopped }
    }

    /// Completes once the process is told to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    }
}

/// Serves `router` (the health and metrics endpoints) on `address` until `stop`; the bind
/// happens before this returns, so a taken address is an error at start-up.
pub async fn serve_health(
    address: SocketAddr,
    router: axum::Router,
    stop: &Stop,
) -> std::io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let serve = axum::serve(listener, router).with_graceful_shutdown(stop.stopped());
    Ok(tokio::spawn(async move {
        if let Err(error) = serve.await {
            tracing::error!(%error, "health server stopped");
        }
    }))
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// `/healthz` (alive), `/readyz` (`ready` is set) and `/metrics` (`encode()`, OpenMetrics text).
pub fn health_router(
    encode: impl Fn() -> String + Clone + Send + Sync + 'static,
    ready: Arc<AtomicBool>,
) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
}

/// The OpenMetrics text of `registry`.
pub fn encode_metrics(
    registry: &std::sync::Mutex<prometheus_client::registry::Registry>,
) -> String {
    let mut out = String::new();
    let registry = registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(%error, "encoding metrics");
    }
    out
}

/// Background tasks that stop with their owner: aborted when this is dropped (a run that
/// returns early leaves no watch running).
#[derive(Debug)]
pub struct AbortOnDrop(pub Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// What a watch-fed cache can hold: a typed API object that kube's watcher and reflector can
/// decode, store and share across tasks. One bound for every cache of the three binaries.
pub trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// `config` with initial lists in small pages, each stripped or compacted before the next
/// arrives (at most [`hostport_api::cache::LIST_PAGE`] objects).
fn paged(mut config: kube::runtime::watcher::Config) -> kube::runtime::watcher::Config {
    config.page_size = Some(
        config
            .page_size
            .unwrap_or(hostport_api::cache::LIST_PAGE)
            .min(hostport_api::cache::LIST_PAGE),
    );
    config
}

/// A watch-fed cache of `K` (objects `strip`ped before they are stored) and the future that
/// keeps it current: after each event has reached the cache, `changes` is bumped, so what
/// waits for objects to change waits on that (no API call per waiter). Watch errors are
/// logged and the watch resumes with backoff.
pub fn watched_cache<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
    strip: fn(&mut K),
    changes: watch::Sender<u64>,
) -> (
    kube::runtime::reflector::Store<K>,
    impl Future<Output = ()> + Send + 'static,
)
where
    K: Watched,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store::<K>();
    let stream = kube::runtime::reflector::reflector(
        writer,
        kube::runtime::watcher(api, paged(config))
            .default_backoff()
            .modify(strip),
    );
    let feed = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // The reflector has applied the event to the store before it is yielded.
                Ok(_) => changes.send_modify(|n| *n = n.wrapping_add(1)),
                Err(error) => {
                    tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying with backoff");
                }
            }
        }
    };
    (store, feed)
}
