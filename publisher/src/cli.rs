//! The `hostport-publisher` command line.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use hostport_process::{LogFormat, Stop};

use crate::deny::{DEFAULT_DENIED, DenyList};
use crate::forwarding::exec::Executor;
use crate::forwarding::nft::Rules;
use crate::forwarding::run::Mode;
use crate::forwarding::sync::{Backend, Syncer};
use crate::router::client::dry_run::LoggingRouter;
use crate::router::client::network::NetworkRouter;
use crate::router::gateway::system_default_gateways;
use crate::router::run::ServicePublishing;
use crate::router::wanted::ServiceSettings;
use crate::{forwarding, router};
use hostport_api::selector::LabelSelector;
use hostport_api::{IpFamily, RouterProtocol};

/// Where the publisher runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// On the router or edge host (or reaching it over --ssh): DNAT external ports to nodes.
    Edge,
    /// On each node (a DaemonSet): DNAT host ports to pods, for CNIs without portmap.
    Node,
    /// On each node (a DaemonSet on the host network): map this node's ports on the
    /// network's router with PCP, NAT-PMP or UPnP-IGD.
    Router,
}

/// A router port mapping protocol (`--service-protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RouterProtocolArg {
    /// PCP, then NAT-PMP, then UPnP-IGD.
    Auto,
    /// PCP only.
    Pcp,
    /// NAT-PMP only.
    Natpmp,
    /// UPnP-IGD only.
    Upnp,
}

impl From<RouterProtocolArg> for RouterProtocol {
    fn from(arg: RouterProtocolArg) -> Self {
        match arg {
            RouterProtocolArg::Auto => Self::Auto,
            RouterProtocolArg::Pcp => Self::Pcp,
            RouterProtocolArg::Natpmp => Self::Natpmp,
            RouterProtocolArg::Upnp => Self::Upnp,
        }
    }
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
    /// edge: on the router/edge host; node: on each node; router: on each node, asking the
    /// network's router.
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
    /// Rewrite the source of forwarded IPv4 connections (default: on in edge mode, off in node mode).
    #[arg(long, env = "HOSTPORT_PUBLISHER_MASQUERADE")]
    masquerade: Option<bool>,
    /// Rewrite the source of forwarded IPv6 connections (default: off; the client's address
    /// stays, replies must route back through this host).
    #[arg(long, env = "HOSTPORT_PUBLISHER_MASQUERADE6", default_value_t = false, action = clap::ArgAction::Set)]
    masquerade6: bool,
    /// Address families published for classes whose `spec.publish.ipFamilies` is unset
    /// (`IPv4`, `IPv6` or `IPv4,IPv6`).
    #[arg(long, env = "HOSTPORT_PUBLISHER_IP_FAMILIES", value_delimiter = ',', value_parser = parse_family, default_value = "IPv4")]
    ip_families: Vec<IpFamily>,
    /// The public addresses clients reach forwarded ports on (edge mode: the edge host's;
    /// node mode: default the node's ExternalIPs), one per family, written into each
    /// published pod's `external.hostport.rmb938.com/<portName>` annotation.
    #[arg(
        long = "public-address",
        env = "HOSTPORT_PUBLISHER_PUBLIC_ADDRESSES",
        value_delimiter = ','
    )]
    public_addresses: Vec<String>,
    /// This node's name (node and router modes).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// This node's addresses (router mode), one per family, comma-separated: where the router
    /// forwards to (the DaemonSet sets it from the pod's `status.hostIPs`).
    #[arg(long, env = "NODE_IP", value_delimiter = ',')]
    node_ip: Vec<std::net::IpAddr>,
    /// The router when a class names none. Default: the default route's gateway.
    #[arg(long, help_heading = "Router mode", env = "HOSTPORT_PUBLISHER_GATEWAY")]
    gateway: Option<std::net::Ipv4Addr>,
    /// The router's IPv6 address when a class names none (`gateway6`). Default: the IPv6
    /// default route's gateway when it is a global address.
    #[arg(
        long,
        help_heading = "Router mode",
        env = "HOSTPORT_PUBLISHER_GATEWAY6"
    )]
    gateway6: Option<std::net::Ipv6Addr>,
    /// Publish LoadBalancer Services of class `hostport.rmb938.com/router` from
    /// namespaces with these labels (`key=value,...`). Default: none.
    #[arg(
        long,
        help_heading = "Router mode",
        env = "HOSTPORT_PUBLISHER_SERVICE_NAMESPACE_SELECTOR"
    )]
    service_namespace_selector: Option<String>,
    /// How Services are mapped.
    #[arg(long, help_heading = "Router mode", env = "HOSTPORT_PUBLISHER_SERVICE_PROTOCOL", value_enum, default_value_t = RouterProtocolArg::Auto)]
    service_protocol: RouterProtocolArg,
    /// Lifetime asked for Services' mappings (renewed at half).
    #[arg(long, help_heading = "Router mode", env = "HOSTPORT_PUBLISHER_SERVICE_LIFETIME_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u32).range(120..=86400))]
    service_lifetime_seconds: u32,
    /// Leave the mappings on the router when stopping (they lapse after their
    /// lifetime unless a publisher renews them).
    #[arg(
        long,
        help_heading = "Router mode",
        env = "HOSTPORT_PUBLISHER_KEEP_MAPPINGS"
    )]
    keep_mappings: bool,
    /// Renew each mapping at least this often (default: at half its lifetime);
    /// a router that rebooted and lost its mappings gets them back within this time.
    #[arg(long, help_heading = "Router mode", env = "HOSTPORT_PUBLISHER_MAX_RENEW_INTERVAL_SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    max_renew_interval_seconds: Option<u64>,
    /// First wait for a PCP/NAT-PMP answer (doubled on each of 3 retries).
    #[arg(
        long,
        help_heading = "Router mode",
        env = "HOSTPORT_PUBLISHER_ROUTER_TIMEOUT_MS",
        default_value_t = 250
    )]
    router_timeout_ms: u64,
    /// Namespace of the Lease electing the publisher that serves Services.
    #[arg(
        long,
        help_heading = "Router mode",
        env = "POD_NAMESPACE",
        default_value = "hostport-system"
    )]
    lease_namespace: String,
    /// Name of that Lease.
    #[arg(
        long,
        help_heading = "Router mode",
        env = "HOSTPORT_PUBLISHER_LEASE_NAME",
        default_value = "hostport-publisher-router"
    )]
    lease_name: String,
    /// How long a leader keeps the Lease without renewing it.
    #[arg(
        long,
        help_heading = "Router mode",
        env = "HOSTPORT_PUBLISHER_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    lease_duration_seconds: u64,
    /// Who we are (Lease holder, Event instance). Default: the host name.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
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
    /// Print the scripts instead of applying them (router mode: log the mappings it would ask
    /// for, ask the router nothing and write no status).
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

impl Args {
    /// `--ip-families`, each family once, in the order given.
    fn families(&self) -> Vec<IpFamily> {
        let mut families: Vec<IpFamily> = vec![];
        for family in &self.ip_families {
            if !families.contains(family) {
                families.push(*family);
            }
        }
        families
    }
}

fn parse_family(text: &str) -> Result<IpFamily, String> {
    IpFamily::parse(text).ok_or_else(|| format!("{text:?} is not an address family: IPv4 or IPv6"))
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
        ModeArg::Router => return router_main(args, deny).await,
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
        masquerade6: args.masquerade6,
    };
    let families = args.families();
    let public_addresses = crate::external::parse_public_addresses(&args.public_addresses)
        .map_err(anyhow::Error::msg)
        .context("--public-address")?;
    let mut syncer = Syncer::new(backend, rules, deny, executor, args.dry_run);
    if args.cleanup {
        syncer.cleanup().await.context("removing our rules")?;
        if !args.dry_run {
            tracing::info!("our rules are removed");
        }
        return Ok(());
    }
    let client = client().await?;
    if args.render {
        let forwards = forwarding::run::wanted_once(&client, &mode, syncer.deny(), &families).await;
        print!("{}", syncer.render(&forwards));
        return Ok(());
    }
    let served = Served::start(args.metrics_address).await?;
    let options = forwarding::run::RunOptions {
        metrics: served.metrics.clone(),
        ready: served.ready.clone(),
        mode,
        families,
        batch_window: Duration::from_millis(args.batch_window_ms),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "hostport-publisher".into()),
        annotator: (!args.dry_run).then(|| crate::external::Annotator::new(client.clone())),
        public_addresses,
    };
    forwarding::run::run(client, options, syncer, served.stop.stopped()).await;
    served.finish().await;
    Ok(())
}

/// The Kubernetes client from the in-cluster configuration or KUBECONFIG.
async fn client() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The stop signal, the metrics, and the `/healthz` `/readyz` `/metrics` server.
struct Served {
    stop: Stop,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(address: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stop = Stop::on_signal();
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let encode = {
            let metrics = metrics.clone();
            move || metrics.encode()
        };
        let health = hostport_process::health_router(encode, ready.clone());
        let server = hostport_process::serve_health(address, health, &stop)
            .await
            .with_context(|| format!("serving /healthz and /metrics on {address}"))?;
        Ok(Self {
            stop,
            metrics,
            ready,
            server,
        })
    }

    /// Waits for the server to stop (after the stop signal).
    async fn finish(self) {
        let _ = self.server.await;
    }
}

/// `key=value,...` as a selector of namespace labels.
fn parse_namespace_selector(text: &str) -> anyhow::Result<LabelSelector> {
    let mut labels = std::collections::BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!(
                "--service-namespace-selector: {pair:?} is not key=value (e.g. hostport.rmb938.com/publish=true)"
            );
        };
        labels.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(LabelSelector {
        match_labels: labels,
        match_expressions: vec![],
    })
}

/// Serves `--mode router`.
async fn router_main(args: Args, deny: DenyList) -> anyhow::Result<()> {
    let node = args
        .node_name
        .clone()
        .context("--mode router needs --node-name (or NODE_NAME from the downward API)")?;
    if args.node_ip.is_empty() {
        bail!("--mode router needs --node-ip (or NODE_IP from the downward API: status.hostIPs)");
    }
    let node_addresses = IpFamily::one_each(&args.node_ip);
    let system = system_default_gateways();
    let default_gateways: Vec<std::net::IpAddr> = [
        args.gateway
            .map(std::net::IpAddr::V4)
            .or_else(|| IpFamily::Ipv4.first_of(system.iter().copied())),
        args.gateway6
            .map(std::net::IpAddr::V6)
            .or_else(|| IpFamily::Ipv6.first_of(system.iter().copied())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !default_gateways.iter().any(|a| a.is_ipv4()) {
        tracing::warn!(
            "no --gateway and no default route: only classes naming spec.publish.router.gateway can be mapped"
        );
    }
    let families = args.families();
    let instance = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| node.clone());
    let services = match &args.service_namespace_selector {
        Some(text) => Some(ServicePublishing {
            namespaces: parse_namespace_selector(text)?,
            settings: ServiceSettings {
                method: args.service_protocol.into(),
                gateway: args.gateway,
                lifetime_seconds: args.service_lifetime_seconds,
            },
            lease: hostport_process::leader::LeaseConfig {
                namespace: args.lease_namespace.clone(),
                name: args.lease_name.clone(),
                identity: instance.clone(),
                duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
            },
        }),
        None => None,
    };
    let client = client().await?;
    let served = Served::start(args.metrics_address).await?;
    let options = router::run::RunOptions {
        metrics: served.metrics.clone(),
        ready: served.ready.clone(),
        node,
        node_addresses,
        default_gateways,
        families,
        deny,
        services,
        keep_on_shutdown: args.keep_mappings,
        dry_run: args.dry_run,
        batch_window: Duration::from_millis(args.batch_window_ms),
        instance,
        renew_at_most: args.max_renew_interval_seconds.map(Duration::from_secs),
    };
    if args.dry_run {
        router::run::run(client, options, LoggingRouter, served.stop.stopped()).await;
    } else {
        let router = std::sync::Arc::new(
            NetworkRouter::new(Duration::from_millis(args.router_timeout_ms.max(1)), 3)
                .with_stable_pcp_nonce(&options.node),
        );
        router::run::run(client, options, router, served.stop.stopped()).await;
    }
    served.finish().await;
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
        assert_eq!(args.ip_families, [IpFamily::Ipv4], "IPv4 unless asked");
        assert!(!args.masquerade6);
    }

    #[test]
    fn families_are_parsed_and_bad_ones_named() {
        let args = Args::try_parse_from(["hostport-publisher", "--ip-families=IPv4,ipv6"])
            .expect("parses");
        assert_eq!(args.ip_families, IpFamily::ALL);
        let repeated = Args::try_parse_from(["hostport-publisher", "--ip-families=IPv6,IPv4,IPv6"])
            .expect("parses");
        assert_eq!(repeated.families(), [IpFamily::Ipv6, IpFamily::Ipv4]);
        let error =
            Args::try_parse_from(["hostport-publisher", "--ip-families=IPv5"]).expect_err("IPv5");
        assert!(
            error
                .to_string()
                .contains("\"IPv5\" is not an address family"),
            "{error}"
        );
    }
}
