//! Reporting the router mappings where users look: a claim's `status.external` entries of
//! this node and its `Published` condition; a Service's `status.loadBalancer.ingress`; Events
//! on transitions.
//!
//! Several nodes may publish one claim (pods on two nodes sharing it): each writes only its
//! own entries (`nodeName`), with the claim's `resourceVersion` as precondition so two
//! writers never overwrite each other (a 409 is retried on the next pass, from the newer
//! cache). The condition is derived from all entries, so every node computes the same one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hostport_api::conditions::{self, Condition, status};
use hostport_api::{ExternalEndpoint, HostPortClaim};
use hostport_process::events::{EventType, Recorder};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as ServiceCondition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::published::{PublishedClaim, RouterView};
use crate::router::table::Report;
use crate::router::wanted::Owner;

/// Condition type on claims.
pub use hostport_api::conditions::types::PUBLISHED;
/// Reason: mapped on the router.
pub const REASON_PUBLISHED: &str = "Published";
/// Reason: nothing maps it (no Running pod of the claim on a publishing node).
pub const REASON_NOT_PUBLISHED: &str = "NotPublished";

/// Writes reports as node `node`.
pub struct Reporter {
    client: Client,
    node: String,
    events: Recorder,
    /// Claims this process reported on, so it also reports when their mappings are gone.
    touched: BTreeSet<(String, String)>,
    /// Services whose ingress this process wrote, and the address it wrote (`None`: cleared).
    services_written: BTreeMap<Owner, Option<String>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("node", &self.node)
            .finish()
    }
}

/// A claim's status part this publisher writes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimReport {
    /// Every node's entries (ours replaced).
    pub external: Vec<ExternalEndpoint>,
    /// The claim's conditions with `Published` set.
    pub conditions: Vec<Condition>,
}

impl ClaimReport {
    /// The `Published` condition.
    pub fn published(&self) -> Option<&Condition> {
        conditions::find(&self.conditions, PUBLISHED)
    }
}

/// What node `node` wants a claim's status to say, from its current status (`claim`) and
/// `report` (`None`: this node maps nothing for it now). `None` when there is nothing for us
/// to say.
pub fn claim_report(
    claim: &RouterView,
    node: &str,
    report: Option<&Report>,
    touched: bool,
) -> Option<ClaimReport> {
    let status = claim.status.clone();
    let ours_listed = status.external.iter().any(|e| e.node_name == node);
    if report.is_none() && !ours_listed && !touched {
        return None;
    }
    let mut external: Vec<ExternalEndpoint> = status
        .external
        .iter()
        .filter(|e| e.node_name != node)
        .cloned()
        .collect();
    for endpoint in report.map(|r| r.endpoints.as_slice()).unwrap_or_default() {
        external.push(ExternalEndpoint {
            address: endpoint.address.to_string(),
            ip_family: Some(hostport_api::IpFamily::of(endpoint.address)),
            port: i32::from(endpoint.port),
            protocol: endpoint.protocol.as_str().to_uppercase(),
            method: endpoint.method.as_str().into(),
            node_name: node.into(),
            expires_at: Some(
                endpoint
                    .expires_at
                    .round(k8s_openapi::jiff::Unit::Second)
                    .map_or_else(|_| endpoint.expires_at.to_string(), |t| t.to_string()),
            ),
        });
    }
    external.sort_by(|a, b| {
        (&a.protocol, &a.node_name, a.port).cmp(&(&b.protocol, &b.node_name, b.port))
    });
    let error = report.and_then(|r| r.errors.first());
    let published = published_at(&external);
    let (state, reason, message) = match (error, published) {
        // One family (or one port) failing is not published as asked: False, and the
        // message says what is published meanwhile.
        (Some(error), published) => (
            conditions::status::FALSE,
            error.reason(),
            match published {
                Some(published) => format!("node {node}: {error}; {published}"),
                None => format!("node {node}: {error}"),
            },
        ),
        (None, Some(published)) => (conditions::status::TRUE, REASON_PUBLISHED, published),
        (None, None) => (
            conditions::status::FALSE,
            REASON_NOT_PUBLISHED,
            "no Running pod of this claim is mapped on the router".to_owned(),
        ),
    };
    let mut status = status;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let generation = claim.generation;
    conditions::set(
        &mut status.conditions,
        Condition::new(PUBLISHED, state, reason, message, generation, now.clone()),
    );
    // The claim is reported because its class publishes on a router.
    status.set_ready(true, generation, now);
    Some(ClaimReport {
        external,
        conditions: status.conditions,
    })
}

/// `published over IPv4 and IPv6 at UDP 203.0.113.1:9000 (PCP, node n1), …`, or `None`.
fn published_at(external: &[ExternalEndpoint]) -> Option<String> {
    if external.is_empty() {
        return None;
    }
    let mut families = BTreeSet::new();
    let list = external
        .iter()
        .map(|e| {
            let at = match e.address.parse::<std::net::IpAddr>() {
                Ok(address) => {
                    families.insert(hostport_api::IpFamily::of(address));
                    std::net::SocketAddr::new(address, u16::try_from(e.port).unwrap_or(0))
                        .to_string()
                }
                Err(_) => format!("{}:{}", e.address, e.port),
            };
            format!("{} {at} ({}, node {})", e.protocol, e.method, e.node_name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let families: Vec<&str> = families.into_iter().map(|f| f.as_str()).collect();
    Some(format!(
        "published over {} at {list}",
        families.join(" and ")
    ))
}

impl Reporter {
    /// Reports as `node`; Events come from `hostport-publisher` instance `instance`.
    pub fn new(client: Client, node: String, instance: String) -> Self {
        Self {
            events: Recorder::new(client.clone(), "hostport-publisher".into(), instance),
            client,
            node,
            touched: BTreeSet::new(),
            services_written: BTreeMap::new(),
        }
    }

    /// Forgets the Services written (leadership lost: the next leader writes them).
    pub fn forget_services(&mut self) {
        self.services_written.clear();
    }

    /// The claim `namespace/name` as the API server has it now, for a first write to a claim
    /// whose status the cache does not keep (`None`: gone, or unreadable; logged, and tried
    /// again on the next pass).
    async fn read(&self, namespace: &str, name: &str) -> Option<RouterView> {
        let api: Api<HostPortClaim> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(claim) => claim.as_ref().map(RouterView::of),
            Err(error) => {
                tracing::warn!(claim = %format!("{namespace}/{name}"), %error, "reading the claim to report its router mappings failed; retrying on the next pass");
                None
            }
        }
    }

    /// Writes what changed for every claim in `claims` (the cache) given `reports`.
    pub async fn claims(
        &mut self,
        claims: &[Arc<PublishedClaim>],
        reports: &BTreeMap<Owner, Report>,
    ) {
        let unwritten = RouterView::default();
        for claim in claims {
            let key = (claim.namespace.to_string(), claim.name.to_string());
            let owner = Owner::Claim {
                namespace: key.0.clone(),
                name: key.1.clone(),
            };
            let report = reports.get(&owner);
            let touched = self.touched.contains(&key);
            let cached = claim.router.as_deref();
            let Some(wanted) =
                claim_report(cached.unwrap_or(&unwritten), &self.node, report, touched)
            else {
                continue;
            };
            // The cache keeps a claim's status once router mode wrote to it: before the
            // first write, read the status to write over.
            let fresh;
            let (view, wanted) = match cached {
                Some(view) => (view, wanted),
                None => {
                    let Some(read) = self.read(&key.0, &key.1).await else {
                        continue;
                    };
                    fresh = read;
                    let Some(wanted) = claim_report(&fresh, &self.node, report, touched) else {
                        continue;
                    };
                    (&fresh, wanted)
                }
            };
            let Some(published) = wanted.published() else {
                continue;
            };
            let status = &view.status;
            let current = conditions::find(&status.conditions, PUBLISHED);
            // `conditions::set` kept each unchanged condition's transition time, so equal
            // lists mean nothing (Published, Ready) changed.
            if status.conditions == wanted.conditions && status.external == wanted.external {
                if report.is_none() {
                    self.touched.remove(&key);
                }
                continue;
            }
            let patch = json!({
                "metadata": {"resourceVersion": view.resource_version},
                "status": {"external": wanted.external, "conditions": wanted.conditions},
            });
            let api: Api<HostPortClaim> = Api::namespaced(self.client.clone(), &key.0);
            match api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.touched.insert(key.clone());
                    if current.is_none_or(|c| c.reason != published.reason) {
                        let type_ = if published.reason == REASON_PUBLISHED
                            || published.reason == REASON_NOT_PUBLISHED
                        {
                            EventType::Normal
                        } else {
                            EventType::Warning
                        };
                        self.events
                            .publish(
                                &claim.reference(),
                                type_,
                                &published.reason,
                                "Publish",
                                published.message.clone(),
                            )
                            .await;
                    }
                }
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                    tracing::debug!(claim = %format!("{}/{}", key.0, key.1), "claim changed meanwhile; reporting on the next pass");
                }
                Err(error) => {
                    tracing::warn!(claim = %format!("{}/{}", key.0, key.1), %error, "writing the claim's router mappings failed");
                }
            }
        }
    }

    /// Writes `status.loadBalancer.ingress` of our Services (called by the leader only): the
    /// router's address once every port is mapped; empty when none is, or when a Service it
    /// wrote is no longer published.
    pub async fn services(&mut self, services: &[Arc<Service>], reports: &BTreeMap<Owner, Report>) {
        for service in services {
            let owner = Owner::Service {
                namespace: service.namespace().unwrap_or_default(),
                name: service.name_any(),
            };
            let report = reports.get(&owner);
            let address = report
                .filter(|r| r.errors.is_empty())
                .and_then(|r| r.endpoints.first())
                .map(|e| e.address.to_string());
            let known = self.services_written.get(&owner).cloned();
            let current = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.first())
                .and_then(|i| i.ip.clone());
            if report.is_none() && known.is_none() {
                continue;
            }
            let conditions = service_conditions(service, report, address.as_deref());
            let current_conditions = service.status.as_ref().and_then(|s| s.conditions.clone());
            if current == address
                && known == Some(address.clone())
                && same_conditions(current_conditions.as_deref(), &conditions)
            {
                continue;
            }
            let ingress: Vec<serde_json::Value> = address
                .iter()
                .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
                .collect();
            let patch =
                json!({"status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions}});
            let api: Api<Service> = Api::namespaced(
                self.client.clone(),
                &service.namespace().unwrap_or_default(),
            );
            match api
                .patch_status(
                    &service.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    if report.is_none() {
                        self.services_written.remove(&owner);
                    } else {
                        self.services_written.insert(owner.clone(), address.clone());
                    }
                    if let Some(error) = report.and_then(|r| r.errors.first()) {
                        self.events
                            .publish(
                                service.as_ref(),
                                EventType::Warning,
                                error.reason(),
                                "Publish",
                                error.to_string(),
                            )
                            .await;
                    } else if let Some(address) = &address {
                        self.events
                            .publish(
                                service.as_ref(),
                                EventType::Normal,
                                REASON_PUBLISHED,
                                "Publish",
                                format!("every port is mapped on the router at {address}"),
                            )
                            .await;
                    }
                }
                Err(error) => {
                    tracing::warn!(service = %owner, %error, "writing the Service's load balancer status failed");
                }
            }
        }
    }
}

/// Condition type on the LoadBalancer Services this publisher serves: whether every port is
/// mapped on the router, and if not, why (e.g. `PortClaimed`).
pub const SERVICE_CONDITION: &str = "hostport.rmb938.com/Published";

/// The Service's `status.conditions` with ours set from `report` (removed when there is no
/// report: the Service is not ours any more); other writers' conditions are kept.
fn service_conditions(
    service: &Service,
    report: Option<&Report>,
    address: Option<&str>,
) -> Vec<ServiceCondition> {
    let mut conditions: Vec<ServiceCondition> = service
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let previous = conditions
        .iter()
        .find(|c| c.type_ == SERVICE_CONDITION)
        .cloned();
    conditions.retain(|c| c.type_ != SERVICE_CONDITION);
    let Some(report) = report else {
        return conditions;
    };
    let (status, reason, message) = match (report.errors.first(), address) {
        (Some(error), _) => (status::FALSE, error.reason().to_owned(), error.to_string()),
        (None, Some(address)) => (
            status::TRUE,
            REASON_PUBLISHED.to_owned(),
            format!("every port is mapped on the router at {address}"),
        ),
        (None, None) => (
            status::FALSE,
            REASON_NOT_PUBLISHED.to_owned(),
            "no port is mapped on the router yet".to_owned(),
        ),
    };
    let last_transition_time = match &previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    conditions.push(ServiceCondition {
        type_: SERVICE_CONDITION.into(),
        status: status.into(),
        reason,
        message,
        last_transition_time,
        observed_generation: service.metadata.generation,
    });
    conditions
}

/// Whether two condition lists say the same (transition times aside).
fn same_conditions(current: Option<&[ServiceCondition]>, desired: &[ServiceCondition]) -> bool {
    let key = |c: &ServiceCondition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
        )
    };
    let mut a: Vec<_> = current.unwrap_or_default().iter().map(key).collect();
    let mut b: Vec<_> = desired.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests;
