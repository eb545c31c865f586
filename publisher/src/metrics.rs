//! Prometheus metrics of the publisher (prefix `hostport_publisher`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a sync.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `replaced`, `changed`, `unchanged` or `failed`.
    pub outcome: String,
}

/// Labels of a router operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouterLabels {
    /// `claim` or `service`.
    pub kind: String,
    /// `map`, `renew`, `remove`.
    pub operation: String,
    /// `ok` or `failed`.
    pub outcome: String,
}

/// Labels of the mappings gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `active` (held) or `failing` (being retried).
    pub state: String,
}

/// Every metric of the publisher.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Forwards in the applied ruleset.
    pub forwards: Gauge,
    /// Forwards left out for the deny-list.
    pub denied: Gauge,
    /// Forwards left out for a conflict (two targets for one port).
    pub conflicts: Gauge,
    /// Service ports left out: claims may hold the port (edge mode), or router Services
    /// refused for it.
    pub claimed_service_ports: Gauge,
    /// Syncs by outcome.
    pub syncs: Family<SyncLabels, Counter>,
    /// Time one sync took, seconds.
    pub sync_seconds: Histogram,
    /// Router mappings by state.
    pub router_mappings: Family<StateLabels, Gauge>,
    /// Router operations by kind, operation and outcome.
    pub router_operations: Family<RouterLabels, Counter>,
    /// Renewals that failed.
    pub router_renew_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hostport_publisher");
        let forwards = Gauge::default();
        registry.register(
            "forwards",
            "Forwards in the applied ruleset",
            forwards.clone(),
        );
        let denied = Gauge::default();
        registry.register(
            "denied_forwards",
            "Forwards left out: port on the deny-list",
            denied.clone(),
        );
        let conflicts = Gauge::default();
        registry.register(
            "conflicts",
            "Forwards left out: another target has the port",
            conflicts.clone(),
        );
        let claimed_service_ports = Gauge::default();
        registry.register(
            "claimed_service_ports",
            "Service ports left out: in a HostPortClass's pools or a claim's port (claims win over Services)",
            claimed_service_ports.clone(),
        );
        let syncs = Family::default();
        registry.register("syncs", "Syncs of the rules by outcome", syncs.clone());
        let sync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "sync_duration_seconds",
            "Time to apply one sync",
            sync_seconds.clone(),
        );
        let router_mappings = Family::default();
        registry.register(
            "router_mappings",
            "Router port mappings by state (active: held; failing: being retried)",
            router_mappings.clone(),
        );
        let router_operations = Family::default();
        registry.register(
            "router_operations",
            "Router requests by object kind, operation and outcome",
            router_operations.clone(),
        );
        let router_renew_failures = Counter::default();
        registry.register(
            "router_renew_failures",
            "Router mapping renewals that failed",
            router_renew_failures.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            router_mappings,
            router_operations,
            router_renew_failures,
            forwards,
            denied,
            conflicts,
            claimed_service_ports,
            syncs,
            sync_seconds,
        }
    }
}

impl Metrics {
    /// Counts a sync with `outcome`.
    pub fn synced(&self, outcome: &str, seconds: f64) {
        self.syncs
            .get_or_create(&SyncLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.sync_seconds.observe(seconds);
    }

    /// Counts one router pass of `kind` (`claim` or `service`). Every series exists from the
    /// first pass on (at 0), so rates and alerts see 0 rather than no data.
    pub fn router_pass(&self, kind: &str, pass: crate::router::table::Pass) {
        let count = |operation: &str, outcome: &str, n: usize| {
            self.router_operations
                .get_or_create(&RouterLabels {
                    kind: kind.into(),
                    operation: operation.into(),
                    outcome: outcome.into(),
                })
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        };
        count("map", "ok", pass.mapped);
        count("map", "failed", pass.failed);
        count("renew", "ok", pass.renewed);
        count("renew", "failed", pass.renew_failures);
        count("remove", "ok", pass.removed);
        self.router_renew_failures
            .inc_by(u64::try_from(pass.renew_failures).unwrap_or(u64::MAX));
    }

    /// Sets the mappings gauge.
    pub fn router_mappings(&self, active: usize, failing: usize) {
        for (state, n) in [("active", active), ("failing", failing)] {
            self.router_mappings
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        hostport_process::encode_metrics(&self.registry)
    }
}
