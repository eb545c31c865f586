//! The forwarding loop (`--mode edge` and `--mode node`): watch-fed caches of classes,
//! claims, pods (and Services and nodes when Services are forwarded), a change counter bumped by
//! every event, and one sync per batch window: many changes within the window become one
//! transaction. A periodic full sync repairs rules someone changed behind our back.

use std::future::Future;
use std::time::Duration;

use std::net::IpAddr;

use hostport_api::IpFamily;
use hostport_api::cache::{strip_node, strip_service};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Client;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::caches::{ClaimCaches, spawn_cache};
use crate::claimed::{PORT_CLAIMED, claimable_ports};
use crate::deny::DenyList;
use crate::dns::{self, DnsKeeper};
use crate::external::{self, Annotator, Describer, Knowledge};
use crate::forwarding::rules::ForwardSet;
use crate::forwarding::sync::{Outcome, Syncer};
use crate::forwarding::wanted::{self, RefusedServicePort, WantedForwards};
use hostport_process::events::{EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use std::collections::BTreeSet;

/// Which forwards this publisher keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On an edge host: claimed ports of `spec.publish.edge` classes to their nodes, and
    /// Services that opted in.
    Edge {
        /// Namespaces whose annotated Services are forwarded (`*`: all; empty: none).
        service_namespaces: Vec<String>,
    },
    /// On node `node`: claimed ports of `spec.publish.node` classes to the pods there.
    Node {
        /// This node's name.
        node: String,
    },
}

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Set once the caches are synced and the first sync succeeded (`/readyz`).
    pub ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Edge or node.
    pub mode: Mode,
    /// Families for classes whose `spec.publish.ipFamilies` is unset (`--ip-families`).
    pub families: Vec<IpFamily>,
    /// Changes within this window after the first one are applied together.
    pub batch_window: Duration,
    /// A full sync at least this often.
    pub resync: Duration,
    /// Instance name in the Events it publishes (pod or host name).
    pub instance: String,
    /// Keeps the pods' `external.hostport.rmb938.com/` annotations and the classes' DNS
    /// records (`None`: leaves both alone, as with `--dry-run`).
    pub annotator: Option<Annotator>,
    /// The public addresses written there (`--public-address`); node mode without any: the
    /// node's ExternalIPs.
    pub public_addresses: Vec<IpAddr>,
}

impl RunOptions {
    /// Which publisher this loop is, for the ports it describes.
    fn describer(&self) -> Describer {
        match self.mode {
            Mode::Edge { .. } => Describer::Edge,
            Mode::Node { .. } => Describer::Node,
        }
    }
}

/// The public addresses to write: the configured ones, else (node mode) this node's
/// ExternalIPs.
fn public_addresses(caches: &Caches, options: &RunOptions) -> Vec<IpAddr> {
    if !options.public_addresses.is_empty() || options.describer() != Describer::Node {
        return options.public_addresses.clone();
    }
    caches
        .nodes
        .iter()
        .flat_map(|nodes| nodes.state())
        .flat_map(|n| {
            n.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == "ExternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect::<Vec<IpAddr>>()
        })
        .collect()
}

/// The watch-fed caches.
#[derive(Clone, Debug)]
struct Caches {
    claimed: ClaimCaches,
    services: Option<Store<Service>>,
    nodes: Option<Store<Node>>,
}

/// The forwards the caches ask for now: claims first, then Services (none in a class's
/// pools or on a claim's port), the deny-list applied before any conflict is settled.
fn wanted_now(
    caches: &Caches,
    mode: &Mode,
    deny: &DenyList,
    families: &[IpFamily],
) -> WantedForwards {
    let snapshot = caches.claimed.snapshot();
    let inputs = snapshot.inputs();
    match mode {
        Mode::Node { node } => {
            let pod_cidrs: Vec<String> = caches
                .nodes
                .iter()
                .flat_map(|nodes| nodes.state())
                .filter_map(|n| n.spec.as_ref()?.pod_cidrs.clone())
                .flatten()
                .collect();
            wanted::node(inputs, node, &pod_cidrs, deny, families)
        }
        Mode::Edge { service_namespaces } => {
            let mut forwards = wanted::edge(inputs, deny, families);
            if let (Some(services), Some(nodes)) = (&caches.services, &caches.nodes) {
                let allowed = |ns: &str| service_namespaces.iter().any(|n| n == "*" || n == ns);
                let claimable = claimable_ports(inputs.classes, inputs.claims);
                let services =
                    wanted::services(&services.state(), &nodes.state(), allowed, &claimable);
                forwards.merge(services, deny);
            }
            forwards
        }
    }
}

/// Starts the watches; the caches once they are complete, and the tasks to keep them so.
async fn start(
    client: &Client,
    mode: &Mode,
    changes: &watch::Sender<u64>,
) -> (Caches, Vec<tokio::task::JoinHandle<()>>) {
    let mut tasks = vec![];
    let node = match mode {
        Mode::Node { node } => Some(node.as_str()),
        Mode::Edge { .. } => None,
    };
    let claimed = ClaimCaches::spawn(client, node, changes, &mut tasks);
    let (mut services, mut nodes) = (None, None);
    if let Mode::Node { node } = mode {
        // Its own Node only: the pod CIDRs a forward's target must lie in.
        nodes = Some(spawn_cache(
            client,
            watcher::Config::default().fields(&format!("metadata.name={node}")),
            strip_node,
            changes,
            &mut tasks,
        ));
    }
    if let Mode::Edge { service_namespaces } = mode
        && !service_namespaces.is_empty()
    {
        services = Some(spawn_cache(
            client,
            watcher::Config::default(),
            strip_service,
            changes,
            &mut tasks,
        ));
        nodes = Some(spawn_cache(
            client,
            watcher::Config::default(),
            strip_node,
            changes,
            &mut tasks,
        ));
    }
    let caches = Caches {
        claimed,
        services,
        nodes,
    };
    caches.claimed.wait_until_ready().await;
    if let Some(services) = &caches.services {
        let _ = services.wait_until_ready().await;
    }
    if let Some(nodes) = &caches.nodes {
        let _ = nodes.wait_until_ready().await;
    }
    (caches, tasks)
}

/// Runs until `shutdown` completes: keeps the host's rules equal to what the API asks for.
/// The rules stay when it stops (a restart must not cut traffic); `--cleanup` removes them.
pub async fn run(
    client: Client,
    options: RunOptions,
    mut syncer: Syncer,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (changes, mut changed) = watch::channel(0u64);
    tokio::pin!(shutdown);
    let (caches, tasks) = tokio::select! {
        started = start(&client, &options.mode, &changes) => started,
        () = &mut shutdown => return,
    };
    let _abort = hostport_process::AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    tracing::info!(mode = ?options.mode, "caches synced; applying the rules");
    let mut refusals = Refusals {
        events: Recorder::new(
            client.clone(),
            "hostport-publisher".into(),
            options.instance.clone(),
        ),
        reported: BTreeSet::new(),
    };
    let mut dns = DnsKeeper::new(client.clone());
    let mut last_full = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        changed.borrow_and_update();
        if last_full.elapsed() >= options.resync {
            syncer.forget();
            last_full = tokio::time::Instant::now();
        }
        let wanted = wanted_now(&caches, &options.mode, syncer.deny(), &options.families);
        for conflict in &wanted.conflicts {
            tracing::warn!(%conflict, "two targets for one port");
        }
        let metrics = &options.metrics;
        metrics
            .conflicts
            .set(i64::try_from(wanted.conflicts.len()).unwrap_or(i64::MAX));
        metrics
            .claimed_service_ports
            .set(i64::try_from(wanted.refused.len()).unwrap_or(i64::MAX));
        refusals
            .report(&wanted.refused, caches.services.as_ref())
            .await;
        let allowed = syncer.allowed(&wanted.forwards);
        let (forwards, denied) = (
            allowed.forwards().len(),
            allowed.denied().len() + wanted.denied.len(),
        );
        metrics
            .denied
            .set(i64::try_from(denied).unwrap_or(i64::MAX));
        let started = std::time::Instant::now();
        let result = syncer.sync_allowed(allowed).await;
        let seconds = started.elapsed().as_secs_f64();
        let retry = match result {
            Ok(outcome) => {
                failures = 0;
                metrics.synced(outcome.label(), seconds);
                metrics
                    .forwards
                    .set(i64::try_from(forwards).unwrap_or(i64::MAX));
                options
                    .ready
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                if outcome != Outcome::Unchanged {
                    tracing::info!(?outcome, forwards, "rules in sync");
                }
                if let (Some(annotator), Some(applied)) = (&options.annotator, syncer.applied()) {
                    let public = public_addresses(&caches, &options);
                    let snapshot = caches.claimed.snapshot();
                    let knowledge = Knowledge::Forwards {
                        describer: options.describer(),
                        public: &public,
                        forwards: applied,
                    };
                    let described = external::describe(snapshot.inputs(), knowledge);
                    annotator.keep(snapshot.inputs().pods, &described).await;
                    dns.keep(&dns::wanted(&described)).await;
                }
                None
            }
            Err(error) => {
                metrics.synced("failed", seconds);
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis(500) * 2u32.saturating_pow(failures.min(6));
                tracing::error!(%error, ?delay, "applying the rules failed; retrying");
                Some(delay)
            }
        };
        let wait = retry.unwrap_or(options.resync);
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {},
            result = changed.changed() => {
                if result.is_err() { return; }
                // Let the burst finish: one transaction for all of it.
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(options.batch_window) => {},
                }
            }
        }
    }
}

/// The forwards the API asks for now, listed once (for `--render`).
pub async fn wanted_once(
    client: &Client,
    mode: &Mode,
    deny: &DenyList,
    families: &[IpFamily],
) -> ForwardSet {
    let (changes, _) = watch::channel(0u64);
    let (caches, tasks) = start(client, mode, &changes).await;
    let _abort = hostport_process::AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    wanted_now(&caches, mode, deny, families).forwards
}

/// Service ports left out because claims may hold them: a Warning Event on the Service the
/// first time each is seen (logged every time it is first seen again after going away).
struct Refusals {
    events: Recorder,
    reported: BTreeSet<RefusedServicePort>,
}

impl Refusals {
    async fn report(&mut self, refused: &[RefusedServicePort], services: Option<&Store<Service>>) {
        let now: BTreeSet<RefusedServicePort> = refused.iter().cloned().collect();
        for refusal in now.difference(&self.reported) {
            let RefusedServicePort {
                namespace,
                name,
                port,
            } = refusal;
            tracing::warn!(
                service = %format!("{namespace}/{name}"),
                port,
                "Service port lies in a HostPortClass's pools or is a claim's port; not forwarded (claims win)"
            );
            let key = ObjectRef::new(name).within(namespace);
            if let Some(object) = services.and_then(|s| s.get(&key)) {
                self.events
                    .publish(
                        object.as_ref(),
                        EventType::Warning,
                        PORT_CLAIMED,
                        "Forward",
                        format!(
                            "port {port} is not forwarded: it lies in a HostPortClass's pools or is held by a claim, and claims win over Services; give the Service another port"
                        ),
                    )
                    .await;
            }
        }
        self.reported = now;
    }
}
