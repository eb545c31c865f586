//! The `hostport-controller` command line (its `main` is a few lines in `src/main.rs`, and
//! the e2e tests run the same code as a process).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{LeaseConfig, RunOptions, Settings};
use anyhow::Context as _;
use clap::{ArgAction, Parser};
use hostport_api::ports::PortRange;
use hostport_process::{LogFormat, Stop};

/// Binds HostPortClaims to HostPorts holding free node ports (hostport.rmb938.com).
#[derive(Debug, Parser)]
#[command(name = "hostport-controller", version, about)]
pub struct Args {
    /// Address serving /healthz, /readyz and /metrics.
    #[arg(long, env = "HOSTPORT_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease so one replica works at a time
    /// (correctness does not depend on it).
    #[arg(long, env = "HOSTPORT_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader election Lease (default: $POD_NAMESPACE, else the
    /// kubeconfig's namespace).
    #[arg(long, env = "HOSTPORT_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "HOSTPORT_LEADER_ELECTION_ID",
        default_value = "hostport-controller"
    )]
    leader_election_id: String,
    /// Seconds a leader keeps the Lease without renewing it.
    #[arg(long, env = "HOSTPORT_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// This replica's identity in the Lease and in Events (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Reconciles in flight at once, per kind of object.
    #[arg(long, env = "HOSTPORT_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// At most one status write per HostPortClass per this many milliseconds.
    #[arg(
        long,
        env = "HOSTPORT_CLASS_STATUS_INTERVAL_MS",
        default_value_t = 1000
    )]
    class_status_interval_ms: u64,
    /// How long a claim the webhook made for a pod (class annotation) waits for its pod
    /// before it is deleted as never used.
    #[arg(long, env = "HOSTPORT_POD_CLAIM_GRACE_SECONDS", default_value_t = 60)]
    pod_claim_grace_seconds: u64,
    /// How long a deleted claim keeps its port before the final check for pods using it:
    /// the longest a pod admission that read the port before the deletion can take to store
    /// its pod (at least the webhook's timeoutSeconds, 5 in config/).
    #[arg(long, env = "HOSTPORT_ADMISSION_GRACE_SECONDS", default_value_t = 10)]
    admission_grace_seconds: u64,
    /// The cluster's NodePort Service range (kube-apiserver --service-node-port-range); a
    /// class whose pools overlap it gets a Warning condition. `none` turns the check off.
    #[arg(long, env = "HOSTPORT_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = node_port_range)]
    service_node_port_range: NodePortRange,
    /// Log format.
    #[arg(long, env = "HOSTPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--service-node-port-range`: a range, or none.
#[derive(Clone, Copy, Debug)]
struct NodePortRange(Option<PortRange>);

fn node_port_range(text: &str) -> Result<NodePortRange, String> {
    if text == "none" {
        return Ok(NodePortRange(None));
    }
    text.parse()
        .map(|range| NodePortRange(Some(range)))
        .map_err(|e| format!("{e}, or none"))
}

/// Parses the command line and runs until SIGTERM/ctrl-c.
pub async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hostport_process::start(args.log_format);
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("hostport-controller-{}", std::process::id()));
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;

    let options = RunOptions {
        settings: Settings {
            class_status_interval: Duration::from_millis(args.class_status_interval_ms),
            reporter: "hostport-controller".into(),
            identity: identity.clone(),
            pod_claim_grace: Duration::from_secs(args.pod_claim_grace_seconds),
            admission_grace: Duration::from_secs(args.admission_grace_seconds),
            node_port_range: args.service_node_port_range.0,
        },
        leader_election: args.leader_election.then(|| LeaseConfig {
            namespace,
            name: args.leader_election_id.clone(),
            identity,
            duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
        }),
        concurrency: args.concurrency.max(1),
        ..RunOptions::default()
    };

    let stop = Stop::on_signal();
    let health = crate::health_router(options.metrics.clone(), Arc::clone(&options.ready));
    let health_server = hostport_process::serve_health(args.metrics_address, health, &stop)
        .await
        .with_context(|| format!("binding --metrics-address {}", args.metrics_address))?;
    tracing::info!(metrics = %args.metrics_address, leader_election = args.leader_election, "starting");
    let result = crate::run(client, options, stop.stopped()).await;
    health_server.abort();
    result.context("hostport-controller stopped")
}
