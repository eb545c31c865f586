//! hostport-webhook: the admission webhook of hostport-allocator. It injects `hostPort` and
//! the `port.hostport.rmb938.com/<name>` annotation into pods that name a bound claim, denies
//! pods that would take host ports any other way, and guards this project's resources.
#![forbid(unsafe_code)]

pub mod cached;
pub mod cli;
pub mod context;
pub mod metrics;
pub mod pod;
pub mod resources;
pub mod runner;
pub mod self_signed;
pub mod server;
pub mod tls;
pub mod verdict;

pub use context::Context;
pub use runner::{RunOptions, run};
pub use server::router;
