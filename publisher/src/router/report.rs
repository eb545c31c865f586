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

use hostport_api::conditions::{self, Condition};
use hostport_api::{ExternalEndpoint, HostPortClaim};
use hostport_process::events::{EventType, Publisher};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::router::table::Report;
use crate::router::wanted::Owner;

/// Condition type on claims.
pub const PUBLISHED: &str = "Published";
/// Reason: mapped on the router.
pub const REASON_PUBLISHED: &str = "Published";
/// Reason: nothing maps it (no Running pod of the claim on a publishing node).
pub const REASON_NOT_PUBLISHED: &str = "NotPublished";

/// Writes reports as node `node`.
#[derive(Clone)]
pub struct Reporter {
    client: Client,
    node: String,
    events: Publisher,
    /// Claims this process reported on, so it also reports when their mappings are gone.
    touched: Arc<std::sync::Mutex<BTreeSet<(String, String)>>>,
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
    /// The `Published` condition.
    pub condition: Condition,
}

/// What node `node` wants a claim's status to say, from its current `status` and `report`
/// (`None`: this node maps nothing for it now). `None` when there is nothing for us to say.
pub fn claim_report(
    claim: &HostPortClaim,
    node: &str,
    report: Option<&Report>,
    touched: bool,
) -> Option<ClaimReport> {
    let status = claim.status.clone().unwrap_or_default();
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
    let (state, reason, message) = match error {
        Some(error) => (
            conditions::status::FALSE,
            error.reason(),
            format!("node {node}: {error}"),
        ),
        None if !external.is_empty() => (
            conditions::status::TRUE,
            REASON_PUBLISHED,
            format!(
                "published at {}",
                external
                    .iter()
                    .map(|e| format!(
                        "{} {}:{} ({}, node {})",
                        e.protocol, e.address, e.port, e.method, e.node_name
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        None => (
            conditions::status::FALSE,
            REASON_NOT_PUBLISHED,
            "no Running pod of this claim is mapped on the router".to_owned(),
        ),
    };
    let mut conditions_now = status.conditions.clone();
    conditions::set(
        &mut conditions_now,
        Condition::new(
            PUBLISHED,
            state,
            reason,
            message,
            claim.metadata.generation,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        ),
    );
    let condition = conditions::find(&conditions_now, PUBLISHED)?.clone();
    Some(ClaimReport {
        external,
        condition,
    })
}

impl Reporter {
    /// Reports as `node`; Events come from `hostport-publisher` instance `instance`.
    pub fn new(client: Client, node: String, instance: String) -> Self {
        Self {
            events: Publisher::new(client.clone(), "hostport-publisher".into(), instance),
            client,
            node,
            touched: Arc::default(),
        }
    }

    /// Writes what changed for every claim in `claims` (the cache) given `reports`.
    pub async fn claims(&self, claims: &[Arc<HostPortClaim>], reports: &BTreeMap<Owner, Report>) {
        for claim in claims {
            let key = (claim.namespace().unwrap_or_default(), claim.name_any());
            let owner = Owner::Claim {
                namespace: key.0.clone(),
                name: key.1.clone(),
            };
            let report = reports.get(&owner);
            let touched = self.touched.lock().is_ok_and(|t| t.contains(&key));
            let Some(wanted) = claim_report(claim, &self.node, report, touched) else {
                continue;
            };
            let status = claim.status.clone().unwrap_or_default();
            let current = conditions::find(&status.conditions, PUBLISHED);
            let same_condition = current.is_some_and(|c| {
                c.status == wanted.condition.status
                    && c.reason == wanted.condition.reason
                    && c.message == wanted.condition.message
            });
            if same_condition && status.external == wanted.external {
                if report.is_none()
                    && let Ok(mut touched) = self.touched.lock()
                {
                    touched.remove(&key);
                }
                continue;
            }
            let mut conditions_now = status.conditions.clone();
            conditions::set(&mut conditions_now, wanted.condition.clone());
            let patch = json!({
                "metadata": {"resourceVersion": claim.resource_version()},
                "status": {"external": wanted.external, "conditions": conditions_now},
            });
            let api: Api<HostPortClaim> = Api::namespaced(self.client.clone(), &key.0);
            match api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if let Ok(mut touched) = self.touched.lock() {
                        touched.insert(key.clone());
                    }
                    let reason_changed =
                        current.is_none_or(|c| c.reason != wanted.condition.reason);
                    if reason_changed {
                        let type_ = if wanted.condition.reason == REASON_PUBLISHED
                            || wanted.condition.reason == REASON_NOT_PUBLISHED
                        {
                            EventType::Normal
                        } else {
                            EventType::Warning
                        };
                        self.events
                            .publish(
                                claim.as_ref(),
                                type_,
                                &wanted.condition.reason,
                                "Publish",
                                wanted.condition.message.clone(),
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

    /// Writes `status.loadBalancer.ingress` of our Services: the router's address once every
    /// port is mapped; empty when none is. `ours` is false when another publisher leads (we
    /// then leave Services alone).
    pub async fn services(
        &self,
        services: &[Arc<Service>],
        reports: &BTreeMap<Owner, Report>,
        previous: &mut BTreeMap<Owner, Option<String>>,
    ) {
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
            let known = previous.get(&owner).cloned();
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
            if current == address && known == Some(address.clone()) {
                continue;
            }
            let ingress: Vec<serde_json::Value> = address
                .iter()
                .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
                .collect();
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
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
                        previous.remove(&owner);
                    } else {
                        previous.insert(owner.clone(), address.clone());
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

#[cfg(test)]
mod tests;
