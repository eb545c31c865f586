//! hostport-controller: binds HostPortClaims to HostPorts holding free node ports.
//!
//! Start-up order matters for correctness: every watch cache (HostPorts above all) is synced
//! and the port book rebuilt from it *before* any claim is reconciled, so a restart never
//! hands out a port that is already held. Even then the book is only a guess; the lock on a
//! port is the API server's name uniqueness of `port-<n>` HostPorts.
#![forbid(unsafe_code)]

mod backoff;
mod block;
pub mod cached;
pub mod claim;
pub mod class;
pub mod cli;
mod clock;
pub mod context;
pub mod declared;
pub mod error;
pub mod host_port;
pub mod host_port_name;
pub mod metrics;
mod pick;
pub mod pod_claims;
pub mod pods;
pub mod port_book;
pub mod queue;
mod runner;
mod superseded;
mod watches;
mod writes;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub use context::{Context, Settings};
pub use error::{Error, Result};
pub use hostport_process::leader::LeaseConfig;
pub use metrics::Metrics;
pub use runner::{RunOptions, check_crds, run};

/// `/healthz` (alive), `/readyz` (caches synced) and `/metrics` (OpenMetrics text).
pub fn health_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> axum::Router {
    hostport_process::health_router(move || metrics.encode(), ready)
}
