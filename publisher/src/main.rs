//! `hostport-publisher`: see `--help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hostport_publisher::cli::main().await
}
