//! Prometheus metrics (prefix `hostport`), served as OpenMetrics text on `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// HostPortClass name.
    pub class: String,
}

/// Labels naming a claim phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Pending, Bound or Deleting.
    pub phase: String,
}

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// claim, hostport or class.
    pub controller: String,
    /// A fixed reason from `Error::reason`.
    pub reason: String,
}

/// Labels of a reconcile loop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// claim, hostport or class.
    pub controller: String,
}

/// Every metric of the controller.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Claims by phase.
    pub claims: Family<PhaseLabels, Gauge>,
    /// Ports in each class's pools.
    pub class_capacity: Family<ClassLabels, Gauge>,
    /// Ports held by each class's HostPorts.
    pub class_allocated: Family<ClassLabels, Gauge>,
    /// Free ports in each class's pools.
    pub class_available: Family<ClassLabels, Gauge>,
    /// Ports of each class's pools that live pods declare outside the allocator's books.
    pub class_in_use_outside: Family<ClassLabels, Gauge>,
    /// Time from a claim's creation to Bound, seconds.
    pub allocation_seconds: Histogram,
    /// Reconcile durations by controller, seconds.
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// Reconcile errors by controller and reason.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Age of the oldest Pending claim, in seconds (0: none is Pending).
    pub oldest_pending_seconds: Gauge,
    /// HostPort creates that found the port already taken (409), i.e. a stale cache or
    /// another controller; each costs a re-pick, never a duplicate.
    pub allocation_conflicts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hostport");
        let claims = Family::default();
        registry.register("claims", "HostPortClaims by phase", claims.clone());
        let class_capacity = Family::default();
        registry.register(
            "class_ports_capacity",
            "Ports in the pools of a HostPortClass",
            class_capacity.clone(),
        );
        let class_allocated = Family::default();
        registry.register(
            "class_ports_allocated",
            "Ports held by HostPorts of a HostPortClass",
            class_allocated.clone(),
        );
        let class_available = Family::default();
        registry.register(
            "class_ports_available",
            "Free ports in the pools of a HostPortClass",
            class_available.clone(),
        );
        let class_in_use_outside = Family::default();
        registry.register(
            "class_ports_in_use_outside",
            "Ports in the pools of a HostPortClass that live pods declare without a claim holding them (skipped by the allocator)",
            class_in_use_outside.clone(),
        );
        let allocation_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "allocation_duration_seconds",
            "Time from HostPortClaim creation until it is Bound",
            allocation_seconds.clone(),
        );
        let reconcile_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_seconds.clone(),
        );
        let reconcile_errors = Family::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by controller and reason",
            reconcile_errors.clone(),
        );
        let oldest_pending_seconds = Gauge::default();
        registry.register(
            "claims_pending_oldest_seconds",
            "Age of the oldest Pending HostPortClaim (0 when none is Pending)",
            oldest_pending_seconds.clone(),
        );
        let allocation_conflicts = Counter::default();
        registry.register(
            "allocation_conflicts",
            "HostPort creates that found their port already taken (409) and picked again",
            allocation_conflicts.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            claims,
            class_capacity,
            class_allocated,
            class_available,
            class_in_use_outside,
            allocation_seconds,
            reconcile_seconds,
            oldest_pending_seconds,
            reconcile_errors,
            allocation_conflicts,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        hostport_process::encode_metrics(&self.registry)
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, controller: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Records how long a reconcile took.
    pub fn reconciled(&self, controller: &str, seconds: f64) {
        self.reconcile_seconds
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .observe(seconds);
    }
}
