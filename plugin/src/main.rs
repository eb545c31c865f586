//! `kubectl-hostport`: see `kubectl hostport --help`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    kubectl_hostport::cli::main().await
}
