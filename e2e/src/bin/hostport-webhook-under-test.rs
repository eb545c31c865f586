//! The `hostport-webhook` command line, built inside this package so the e2e tests can run
//! it as a process. Same code as `webhook/src/main.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hostport_webhook::cli::main().await
}
