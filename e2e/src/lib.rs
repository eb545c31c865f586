//! End-to-end scenarios for hostport-allocator and the in-process Kubernetes API server they
//! run on by default (`apiserver`). With `E2E_KUBECONFIG` set, the same scenarios run against
//! a real cluster.
#![forbid(unsafe_code)]

pub mod apiserver;
mod cluster;
pub mod harness;
pub mod local;
pub mod measure;
pub mod samples;
pub mod webhooks;
