//! `hostport-webhook`: see `--help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hostport_webhook::cli::main().await
}
