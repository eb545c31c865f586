//! A small, faithful Kubernetes API server in one process, for tests and demos (see README.md).
//!
//! It speaks the real REST protocol over HTTP on 127.0.0.1, so `kube::Client`, kube-runtime's
//! watchers and `kubectl` work against it unchanged: discovery, get/list/watch (bookmarks,
//! resourceVersion semantics, 410 Gone), create/update/patch/delete with resourceVersion
//! conflicts, finalizers and deletionTimestamp, status subresources, label and field
//! selectors, namespaces, CRDs with schema pruning, defaulting, OpenAPI checks and CEL rules,
//! and calls to admission webhooks over HTTPS like kube-apiserver. It counts requests and can
//! inject faults. The README says what it leaves out.

mod admission;
mod db;
mod discovery;
mod faults;
mod identity;
mod namespace_lifecycle;
mod object;
mod patch;
mod registry;
mod request;
mod schema;
mod selectors;
mod server;
mod status;
mod store;
mod table;
mod verbs;
mod watch;

pub use faults::{RequestMatch, Verb};
pub use identity::UserInfo;
pub use server::{Options, TestApiServer};
pub use store::DEFAULT_LOG_CAPACITY;
