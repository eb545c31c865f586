//! The router publisher's loop (`--mode router`, one per node): watch-fed caches of classes,
//! claims and this node's pods (plus Services and namespaces when Services are published),
//! one reconcile pass per change batch and whenever a renewal or retry is due, reports
//! written after each pass. Services are published by the holder of a Lease only; the others
//! stand by. On shutdown every mapping is removed unless told to keep them.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;

use hostport_api::IpFamily;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hostport_api::cache::{strip_metadata, strip_namespace};
use hostport_api::selector::LabelSelector;
use hostport_process::leader::{LeaseConfig, LeaseLock};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::caches::{ClaimCaches, spawn_cache};
use crate::claimed::claimable_ports;
use crate::deny::DenyList;
use crate::dns::{self, DnsKeeper};
use crate::external::{self, Annotator, Knowledge};
use crate::metrics::Metrics;
use crate::router::client::Router;
use crate::router::report::Reporter;
use crate::router::table::Table;
use crate::router::wanted::{self, ServiceSettings, ThisNode, WantedMappings};

/// Longest sleep between passes when nothing is due (repairs what a lost event missed).
const IDLE_PASS: Duration = Duration::from_secs(30);

/// LoadBalancer Services publishing (the elected publisher only).
#[derive(Clone, Debug)]
pub struct ServicePublishing {
    /// Namespaces whose Services are published, by their labels.
    pub namespaces: LabelSelector,
    /// How they are mapped.
    pub settings: ServiceSettings,
    /// The Lease that elects the one publisher serving Services.
    pub lease: LeaseConfig,
}

/// How the router loop runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set after the first pass (`/readyz`).
    pub ready: Arc<AtomicBool>,
    /// This node's name.
    pub node: String,
    /// This node's addresses, at most one per family.
    pub node_addresses: Vec<IpAddr>,
    /// The routers when a class names none, at most one per family (default: the default
    /// routes' gateways).
    pub default_gateways: Vec<IpAddr>,
    /// Families for classes whose `spec.publish.ipFamilies` is unset (`--ip-families`).
    pub families: Vec<IpFamily>,
    /// Ports never mapped.
    pub deny: DenyList,
    /// Services, if published.
    pub services: Option<ServicePublishing>,
    /// Leave the mappings on the router at shutdown (they lapse after their lifetime).
    pub keep_on_shutdown: bool,
    /// Log what would be mapped; ask the router nothing and write no status.
    pub dry_run: bool,
    /// Changes within this window after the first one are handled in one pass.
    pub batch_window: Duration,
    /// Who we are (pod name): Lease holder and Event instance.
    pub instance: String,
    /// Renew at least this often (default: at half the lifetime).
    pub renew_at_most: Option<Duration>,
}

#[derive(Clone, Debug)]
struct Caches {
    claimed: ClaimCaches,
    services: Option<(Store<Service>, Store<Namespace>)>,
}

async fn start(
    client: &Client,
    options: &RunOptions,
    changes: &watch::Sender<u64>,
) -> (Caches, Vec<tokio::task::JoinHandle<()>>) {
    let mut tasks = vec![];
    let claimed = ClaimCaches::spawn(client, Some(&options.node), changes, &mut tasks);
    let services = if options.services.is_some() {
        let services = spawn_cache(
            client,
            watcher::Config::default(),
            strip_metadata::<Service>,
            changes,
            &mut tasks,
        );
        let namespaces = spawn_cache(
            client,
            watcher::Config::default(),
            strip_namespace,
            changes,
            &mut tasks,
        );
        Some((services, namespaces))
    } else {
        None
    };
    let caches = Caches { claimed, services };
    caches.claimed.wait_until_ready().await;
    if let Some((services, namespaces)) = &caches.services {
        let _ = services.wait_until_ready().await;
        let _ = namespaces.wait_until_ready().await;
    }
    (caches, tasks)
}

impl RunOptions {
    fn this_node(&self) -> ThisNode<'_> {
        ThisNode {
            name: &self.node,
            addresses: &self.node_addresses,
            default_gateways: &self.default_gateways,
            deny: &self.deny,
            families: &self.families,
        }
    }
}

/// The claim mappings the caches ask for now.
fn wanted_claims(caches: &Caches, options: &RunOptions) -> WantedMappings {
    wanted::claims(caches.claimed.snapshot().inputs(), options.this_node())
}

/// The Service mappings the caches ask for now.
fn wanted_services(caches: &Caches, options: &RunOptions) -> WantedMappings {
    let (Some((services, namespaces)), Some(publishing)) = (&caches.services, &options.services)
    else {
        return WantedMappings::default();
    };
    // An empty selector allows nothing: Services are published only where an admin said.
    let selector = &publishing.namespaces;
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        return WantedMappings::default();
    }
    let allowed = |name: &str| {
        namespaces
            .get(&kube::runtime::reflector::ObjectRef::new(name))
            .is_some_and(|ns| {
                selector.matches(ns.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
            })
    };
    let claimable = claimable_ports(
        &caches.claimed.classes.state(),
        &caches.claimed.claims.all(),
    );
    wanted::services(
        &services.state(),
        allowed,
        &claimable,
        options.this_node(),
        publishing.settings,
    )
}

/// Takes part in the election for Services; `leading` follows the outcome.
fn elect(
    client: Client,
    lease: LeaseConfig,
    leading: watch::Sender<bool>,
) -> (LeaseLock, tokio::task::JoinHandle<()>) {
    let lock = LeaseLock::new(client, lease);
    let campaign = lock.clone();
    let task = tokio::spawn(async move {
        loop {
            campaign.acquire().await;
            let _ = leading.send(true);
            let lost = campaign.hold().await;
            tracing::warn!(error = %lost, "no longer publishing Services");
            let _ = leading.send(false);
        }
    });
    (lock, task)
}

/// Runs until `shutdown` completes.
pub async fn run<R: Router + Clone>(
    client: Client,
    options: RunOptions,
    router: R,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (changes, mut changed) = watch::channel(0u64);
    tokio::pin!(shutdown);
    let (caches, mut tasks) = tokio::select! {
        started = start(&client, &options, &changes) => started,
        () = &mut shutdown => return,
    };
    let (leading_tx, mut leading) = watch::channel(false);
    let lock = match &options.services {
        Some(publishing) => {
            let (lock, task) = elect(client.clone(), publishing.lease.clone(), leading_tx.clone());
            tasks.push(task);
            Some(lock)
        }
        None => None,
    };
    let _abort = hostport_process::AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    let mut reporter = Reporter::new(
        client.clone(),
        options.node.clone(),
        options.instance.clone(),
    );
    let annotator = Annotator::new(client.clone());
    let mut dns = DnsKeeper::new(client.clone());
    let mut claims_table = Table::new(router.clone()).renewing_at_most(options.renew_at_most);
    let mut services_table = Table::new(router).renewing_at_most(options.renew_at_most);
    tracing::info!(node = %options.node, addresses = ?options.node_addresses, gateways = ?options.default_gateways, services = options.services.is_some(), dry_run = options.dry_run, "caches synced; mapping this node's ports on the router");
    loop {
        changed.borrow_and_update();
        let now = std::time::Instant::now();
        let wanted = wanted_claims(&caches, &options);
        let pass = claims_table.reconcile(&wanted, now).await;
        options.metrics.router_pass("claim", pass);
        let reports = claims_table.reports(&wanted.problems);
        if !options.dry_run {
            reporter
                .claims(&caches.claimed.claims.all(), &reports)
                .await;
            // From the claims' `status.external` as the cache has it: a write just made
            // shows up on the pass its watch event brings.
            let snapshot = caches.claimed.snapshot();
            let knowledge = Knowledge::Router {
                node: &options.node,
            };
            let described = external::describe(snapshot.inputs(), knowledge);
            annotator.keep(snapshot.inputs().pods, &described).await;
            dns.keep(&dns::wanted(&described)).await;
        }
        let is_leading = *leading.borrow_and_update();
        if is_leading {
            let wanted = wanted_services(&caches, &options);
            let pass = services_table.reconcile(&wanted, now).await;
            options.metrics.router_pass("service", pass);
            if let (Some((services, _)), false) = (&caches.services, options.dry_run) {
                let reports = services_table.reports(&wanted.problems);
                reporter.services(&services.state(), &reports).await;
            }
        } else if services_table.held() > 0 {
            let removed = services_table.clear().await;
            tracing::info!(removed, "not leading: removed the Services' mappings");
            reporter.forget_services();
        }
        options.metrics.router_mappings(
            claims_table.held() + services_table.held(),
            claims_table.failing() + services_table.failing(),
        );
        options.ready.store(true, Ordering::Relaxed);
        let due = [claims_table.next_due(), services_table.next_due()]
            .into_iter()
            .flatten()
            .min()
            .map_or(IDLE_PASS, |at| {
                at.saturating_duration_since(std::time::Instant::now())
            })
            .min(IDLE_PASS);
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(due) => {},
            // The sender lives in this function: never closed.
            _ = leading.changed() => {},
            result = changed.changed() => {
                if result.is_err() { break; }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(options.batch_window) => {},
                }
            }
        }
    }
    if options.keep_on_shutdown {
        tracing::info!(
            mappings = claims_table.held() + services_table.held(),
            "stopping; the mappings stay on the router until their lifetime ends"
        );
    } else {
        let removed = claims_table.clear().await + services_table.clear().await;
        tracing::info!(removed, "stopping; removed our mappings from the router");
        if !options.dry_run {
            reporter
                .claims(&caches.claimed.claims.all(), &claims_table.reports(&[]))
                .await;
        }
    }
    if let Some(lock) = &lock {
        lock.release().await;
    }
    drop(leading_tx);
}
