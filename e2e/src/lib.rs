//! End-to-end scenarios for hostport-allocator: the harness that starts the product against
//! the in-process Kubernetes API server (`kube-testserver`, in `e2e/apiserver`) or, with
//! `E2E_KUBECONFIG` set, a real cluster, and the scenarios that run unchanged on both.
#![forbid(unsafe_code)]

pub mod books;
pub mod chart;
pub mod cluster;
pub mod controllers;
pub mod harness;
pub mod local;
pub mod measure;
pub mod nodes;
pub mod rbac;
pub mod samples;
pub mod tools;
pub mod webhooks;
pub mod workloads;

use std::path::PathBuf;

/// This repository's `crds/`, which the in-process API server installs at start.
pub fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

/// Options for the in-process API server with this project's CRDs installed.
pub fn test_server_options() -> kube_testserver::Options {
    kube_testserver::Options {
        crds_dir: Some(crds_dir()),
        ..kube_testserver::Options::default()
    }
}

/// Starts the in-process API server with this project's CRDs installed.
pub async fn start_test_server() -> kube_testserver::TestApiServer {
    kube_testserver::TestApiServer::start_with(test_server_options())
        .await
        .unwrap_or_else(|e| panic!("in-process API server: {e}"))
}

/// The image of the scenarios' pods: `E2E_POD_IMAGE` when set (on a cluster with a node, an
/// image the node has: `hack/images.sh --echo` imports `registry.invalid/hostport-echo:1`,
/// which answers on container port 8080 so the pods really run), else `app`, a name no node
/// pulls (the pods stay Pending, and the scenarios assert on what the API server stored).
pub fn pod_image() -> String {
    std::env::var("E2E_POD_IMAGE").unwrap_or_else(|_| "app".into())
}

/// Whether the scenarios' pods really run (`E2E_POD_IMAGE` names an image a node has): then
/// the kubelet writes their status, and a scenario must not write it for them.
pub fn pods_run() -> bool {
    std::env::var_os("E2E_POD_IMAGE").is_some()
}

/// The message of the API server's refusal `result` must be (a webhook's denial, a CEL
/// rule); panics, naming what came instead, when it is not one.
pub fn denial_message<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// Runs `command`; its standard output, or an error that names the program, its arguments
/// and what it wrote on standard error.
pub fn run_command(command: &mut std::process::Command) -> Result<String, String> {
    let what = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        ))
    }
}

/// A `nodeSelector` no node matches, for the scenarios about admission and binding at volume:
/// their pods need not run, and 200 containers starting at once on a small node starve the
/// control plane that shares it (what such a scenario measures is the allocator).
pub fn no_node() -> serde_json::Value {
    serde_json::json!({"hostport.rmb938.com/e2e": "no-node"})
}

/// `kubectl` (`KUBECTL`, else the one on the PATH) on the cluster of `E2E_KUBECONFIG`, run
/// from the checkout's root (so `-k config/...` works); its output or what it said.
pub fn kubectl(args: &[&str]) -> Result<String, String> {
    let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let kubeconfig = std::env::var("E2E_KUBECONFIG").unwrap_or_default();
    run_command(
        std::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    )
}

/// A binary of another workspace package, built now (a no-op when the workspace's build is
/// fresh; an older one would not be the code under test), from the test's `target/debug`.
pub fn workspace_binary(package: &str, bin: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let debug = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_command(
        std::process::Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    debug.join(bin)
}
