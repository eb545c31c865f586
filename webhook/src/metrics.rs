//! Prometheus metrics of the webhook (prefix `hostport_webhook`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    /// Admissions waiting right now for a claim to appear or bind.
    pub claim_waits: Gauge,
    /// How long admissions waited for claims, seconds (only those that waited).
    pub claim_wait_seconds: Histogram,
    /// Claims created for pods with class annotations.
    pub pod_claims_created: Counter,
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
        let claim_waits = Gauge::default();
        registry.register(
            "claim_waits",
            "Pod admissions waiting right now for a named claim to appear or bind",
            claim_waits.clone(),
        );
        let claim_wait_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        registry.register(
            "claim_wait_duration_seconds",
            "Time pod admissions waited for named claims to appear or bind",
            claim_wait_seconds.clone(),
        );
        let pod_claims_created = Counter::default();
        registry.register(
            "pod_claims_created",
            "HostPortClaims created for pods with class.hostport.rmb938.com annotations",
            pod_claims_created.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            denials,
            latency,
            claim_waits,
            claim_wait_seconds,
            pod_claims_created,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        hostport_process::encode_metrics(&self.registry)
    }
}
