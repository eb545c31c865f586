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
    /// Syncs by outcome.
    pub syncs: Family<SyncLabels, Counter>,
    /// Time one sync took, seconds.
    pub sync_seconds: Histogram,
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
        let syncs = Family::default();
        registry.register("syncs", "Syncs of the rules by outcome", syncs.clone());
        let sync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "sync_duration_seconds",
            "Time to apply one sync",
            sync_seconds.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            forwards,
            denied,
            conflicts,
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

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        hostport_process::encode_metrics(&self.registry)
    }
}
