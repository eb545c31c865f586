//! What the hostport-controller and hostport-webhook processes share around their work: the
//! log format flag and logging set-up, the rustls crypto provider, the SIGTERM/ctrl-c stop
//! signal every task of the process waits on, and the plain-HTTP `/healthz` `/readyz`
//! `/metrics` server. Nothing here knows Kubernetes or this project's API.
#![forbid(unsafe_code)]

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
