//! `hostport-controller`: see `--help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hostport_controller::cli::main().await
}
