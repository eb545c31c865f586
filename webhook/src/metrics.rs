//! Prometheus metrics of the webhook (prefix `hostport_webhook`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Webhook path.
    pub path: String,
    /// allowed, patched, denied or error.
    pub outcome: String,
}

/// Labels of a denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// A fixed reason, e.g. `ClaimNotBound`.
    pub reason: String,
}

/// Every metric of the webhook.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Admission requests by path and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Denials by reason.
    pub denials: Family<DenialLabels, Counter>,
    /// Time to answer, seconds.
    pub latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hostport_webhook");
        let requests = Family::default();
        registry.register(
            "admission_requests",
            "Admission requests by path and outcome",
            requests.clone(),
        );
        let denials = Family::default();
        registry.register(
            "denials",
            "Denied admission requests by reason",
            denials.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            latency.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            denials,
            latency,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        hostport_process::encode_metrics(&self.registry)
    }
}
