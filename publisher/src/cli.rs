//! The `hostport-publisher` command line.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use hostport_process::{LogFormat, Stop};

use crate::deny::{DEFAULT_DENIED, DenyList};
use crate::exec::Executor;
use crate::nft::Rules;
use crate::runner::{self, Mode, RunOptions};
use crate::sync::{Backend, Syncer};

/// Where the publisher runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// On the router or edge host (or reaching it over --ssh): DNAT external ports to nodes.
    Edge,
    /// On each node (a DaemonSet): DNAT host ports to pods, for CNIs without portmap.
    Node,
}

/// Which firewall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// nftables when `nft` runs on the target host, else iptables.
    Auto,
    /// nftables: one table `inet hostport`.
    Nft,
    /// iptables chains `HOSTPORT-*` (see --iptables).
    Iptables,
}

/// Forwards allocated host ports (and opted-in Services) with nftables or iptables DNAT.
#[derive(Debug, Parser)]
#[command(name = "hostport-publisher", version, about)]
pub struct Args {
    /// Address serving /healthz, /readyz (caches synced, rules applied once) and /metrics.
    #[arg(
        long,
        env = "HOSTPORT_PUBLISHER_METRICS_ADDRESS",
        default_value = "0.0.0.0:8082"
    )]
    metrics_address: std::net::SocketAddr,
    /// edge: on the router/edge host; node: on each node.
    #[arg(long, env = "HOSTPORT_PUBLISHER_MODE", value_enum, default_value_t = ModeArg::Edge)]
    mode: ModeArg,
    /// Firewall to write.
    #[arg(long, env = "HOSTPORT_PUBLISHER_BACKEND", value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// The iptables command for the iptables backend (`iptables`, `iptables-legacy`, `iptables-nft`).
    #[arg(long, env = "HOSTPORT_PUBLISHER_IPTABLES", default_value = "iptables")]
    iptables: String,
    /// Forward only what arrives on this interface (edge mode: the external one).
    #[arg(long, env = "HOSTPORT_PUBLISHER_EXTERNAL_INTERFACE")]
    external_interface: Option<String>,
    /// Rewrite the source of forwarded connections (default: on in edge mode, off in node mode).
    #[arg(long, env = "HOSTPORT_PUBLISHER_MASQUERADE")]
    masquerade: Option<bool>,
    /// This node's name (node mode).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Apply the rules on this host over SSH (`user@host`) instead of locally.
    #[arg(long, env = "HOSTPORT_PUBLISHER_SSH")]
    ssh: Option<String>,
    /// Extra ssh option (repeatable), e.g. `-i /keys/id_ed25519` as two values or `-oPort=2222`.
    #[arg(
        long = "ssh-option",
        env = "HOSTPORT_PUBLISHER_SSH_OPTIONS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    ssh_options: Vec<String>,
    /// Ports never forwarded, in any mode (`22,6443,30000-30100`).
    #[arg(long, env = "HOSTPORT_PUBLISHER_DENY_PORTS", default_value_t = default_deny())]
    deny_ports: String,
    /// Namespaces whose Services annotated `hostport.rmb938.com/forward: "true"` are forwarded
    /// (comma-separated; `*`: all; default: none).
    #[arg(
        long,
        env = "HOSTPORT_PUBLISHER_SERVICE_NAMESPACES",
        value_delimiter = ','
    )]
    service_namespaces: Vec<String>,
    /// Changes within this many milliseconds are applied in one transaction.
    #[arg(
        long,
        env = "HOSTPORT_PUBLISHER_BATCH_WINDOW_MS",
        default_value_t = 200
    )]
    batch_window_ms: u64,
    /// A full sync at least this often (repairs rules changed by someone else).
    #[arg(long, env = "HOSTPORT_PUBLISHER_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Print the scripts instead of applying them.
    #[arg(long)]
    dry_run: bool,
    /// Print the whole ruleset for what the API asks for now, and exit (for a router managed
    /// by hand).
    #[arg(long, conflicts_with_all = ["dry_run", "cleanup"])]
    render: bool,
    /// Remove our table or chains from the host, and exit.
    #[arg(long)]
    cleanup: bool,
    /// Log format.
    #[arg(long, env = "HOSTPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn default_deny() -> String {
    DEFAULT_DENIED
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `name` is a Linux interface name (1-15 bytes, no `/`, whitespace or quotes).
fn valid_interface(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '\'' | '\\'))
}

/// Parses the command line and runs until SIGTERM/ctrl-c.
pub async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hostport_process::start(args.log_format);
    let deny = DenyList::parse(&args.deny_ports).context("--deny-ports")?;
    if let Some(interface) = &args.external_interface
        && !valid_interface(interface)
    {
        bail!(
            "--external-interface {interface:?} is not an interface name (1-15 characters, no '/', spaces or quotes)"
        );
    }
    let mode = match args.mode {
        ModeArg::Edge => Mode::Edge {
            service_namespaces: args.service_namespaces.clone(),
        },
        ModeArg::Node => Mode::Node {
            node: args
                .node_name
                .clone()
                .context("--mode node needs --node-name (or NODE_NAME from the downward API)")?,
        },
    };
    let executor = match &args.ssh {
        Some(destination) => Executor::Ssh {
            destination: destination.clone(),
            options: args.ssh_options.clone(),
        },
        None => Executor::local(),
    };
    let backend = match args.backend {
        BackendArg::Nft => Backend::Nft,
        BackendArg::Iptables => Backend::Iptables {
            command: args.iptables.clone(),
        },
        BackendArg::Auto => {
            let has_nft = executor
                .run(&["nft", "list", "tables"], "", Duration::from_secs(10))
                .await
                .is_ok();
            if has_nft {
                Backend::Nft
            } else {
                tracing::info!("nft does not run on the target host; using iptables");
                Backend::Iptables {
                    command: args.iptables.clone(),
                }
            }
        }
    };
    let rules = Rules {
        interface: args.external_interface.clone(),
        masquerade: args.masquerade.unwrap_or(args.mode == ModeArg::Edge),
    };
    let mut syncer = Syncer::new(backend, rules, deny, executor, args.dry_run);
    if args.cleanup {
        syncer.cleanup().await.context("removing our rules")?;
        if !args.dry_run {
            tracing::info!("our rules are removed");
        }
        return Ok(());
    }
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    if args.render {
        let forwards = runner::wanted_once(&client, &mode).await;
        print!("{}", syncer.render(&forwards));
        return Ok(());
    }
    let stop = Stop::on_signal();
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let encode = {
        let metrics = metrics.clone();
        move || metrics.encode()
    };
    let health = hostport_process::health_router(encode, ready.clone());
    let health_server = hostport_process::serve_health(args.metrics_address, health, &stop)
        .await
        .with_context(|| format!("serving /healthz and /metrics on {}", args.metrics_address))?;
    let options = RunOptions {
        metrics,
        ready,
        mode,
        batch_window: Duration::from_millis(args.batch_window_ms),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
    };
    runner::run(client, options, syncer, stop.stopped()).await;
    let _ = health_server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(valid_interface("eth0") && valid_interface("enp3s0f1.100"));
        for bad in ["", "a-name-of-16-byte", "eth0\"", "eth 0", "a/b"] {
            assert!(!valid_interface(bad), "{bad:?}");
        }
        assert_eq!(
            default_deny(),
            "22,53,2379,2380,6443,10250,10255,10256,10257,10259"
        );
    }

    #[test]
    fn ssh_options_split_into_words_as_the_deployment_writes_them() {
        let args = Args::try_parse_from([
            "hostport-publisher",
            "--ssh=root@192.0.2.1",
            "--ssh-option=-i /ssh/id_ed25519 -o UserKnownHostsFile=/ssh/known_hosts",
            "--service-namespaces=games,web",
        ])
        .expect("parses");
        assert_eq!(
            args.ssh_options,
            [
                "-i",
                "/ssh/id_ed25519",
                "-o",
                "UserKnownHostsFile=/ssh/known_hosts"
            ]
        );
        assert_eq!(args.service_namespaces, ["games", "web"]);
        assert_eq!(args.mode, ModeArg::Edge);
    }
}
