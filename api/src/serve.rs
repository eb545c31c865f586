//! What both binaries' `main`s share (feature `serve`): the log format flag and logging set-up,
//! the SIGTERM/ctrl-c future, and the plain-HTTP `/healthz` `/readyz` `/metrics` router.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--log-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`) in `format`.
pub fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
