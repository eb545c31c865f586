//! The `hostport-controller` command line, built inside this package so the e2e tests can
//! run it as a process (`CARGO_BIN_EXE_*` names only the tested package's binaries). Same
//! code as `controller/src/main.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hostport_controller::cli::main().await
}
