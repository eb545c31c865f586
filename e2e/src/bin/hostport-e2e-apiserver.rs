//! Serves the in-process test API server (with this project's CRDs installed) and writes a
//! kubeconfig for it, so `kubectl` and the binaries can be pointed at it by hand.
//!
//! ```sh
//! cargo run -p hostport-e2e --bin hostport-e2e-apiserver -- --kubeconfig /tmp/e2e.kubeconfig
//! KUBECONFIG=/tmp/e2e.kubeconfig kubectl get hostport-allocator
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube_testserver::{Options, TestApiServer, UserInfo};

/// The hostport-allocator test API server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", env = "HOSTPORT_E2E_LISTEN")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (user `system:admin`).
    #[arg(
        long,
        default_value = "e2e-apiserver.kubeconfig",
        env = "HOSTPORT_E2E_KUBECONFIG_OUT"
    )]
    kubeconfig: PathBuf,
    /// Directory of CRD YAML files to install at start.
    #[arg(long, env = "HOSTPORT_E2E_CRDS")]
    crds: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut options = Options {
        listen: args.listen,
        ..hostport_e2e::test_server_options()
    };
    if let Some(crds) = args.crds {
        options.crds_dir = Some(crds);
    }
    let server = TestApiServer::start_with(options).await?;
    let kubeconfig = serde_saphyr::to_string(&server.kubeconfig(UserInfo::admin()))
        .context("serializing the kubeconfig")?;
    std::fs::write(&args.kubeconfig, kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
    println!(
        "serving {} (kubeconfig: {}); ctrl-c to stop",
        server.url(),
        args.kubeconfig.display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}
