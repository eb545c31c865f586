//! What admission decisions read: watch-fed caches of claims, HostPorts and classes, with one
//! bounded API read on a miss or a not-yet-Bound claim (so a claim bound a moment ago is
//! never wrongly denied because the cache lags).

use std::sync::Arc;
use std::time::Duration;

use hostport_api::conditions::{self, types};
use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::metrics::Metrics;
use crate::pod::ClaimState;

/// Shared by every admission request.
pub struct State {
    /// API client for the reads behind a cache miss.
    pub client: Client,
    /// Every HostPortClaim.
    pub claims: Store<HostPortClaim>,
    /// Every HostPort.
    pub host_ports: Store<HostPort>,
    /// Every HostPortClass.
    pub classes: Store<HostPortClass>,
    /// Users allowed to create and change HostPorts (the controller's service account).
    pub allocator_users: Vec<String>,
    /// Longest one API read may take (the webhook must answer within its timeout).
    pub api_timeout: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("allocator_users", &self.allocator_users)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A claim's state for pod admission.
    pub async fn claim_state(&self, namespace: &str, name: &str) -> ClaimState {
        let cached = self.claims.get(&ObjectRef::new(name).within(namespace));
        if let Some(claim) = &cached {
            let state = self.state_of(claim).await;
            if matches!(state, ClaimState::Bound { .. } | ClaimState::Deleting) {
                return state;
            }
        }
        let api: Api<HostPortClaim> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(self.api_timeout, api.get_opt(name)).await {
            Ok(Ok(Some(claim))) => self.state_of(&claim).await,
            Ok(Ok(None)) => ClaimState::Missing,
            Ok(Err(error)) => ClaimState::Pending {
                why: Some(format!(
                    "the webhook could not read it from the API server: {error}"
                )),
            },
            Err(_) => ClaimState::Pending {
                why: Some(format!(
                    "the webhook could not read it from the API server within {:?}",
                    self.api_timeout
                )),
            },
        }
    }

    async fn state_of(&self, claim: &HostPortClaim) -> ClaimState {
        if claim.metadata.deletion_timestamp.is_some() {
            return ClaimState::Deleting;
        }
        if let Some(port) = claim.bound_port() {
            return ClaimState::Bound { port };
        }
        // Claims bound by the Go project carry no status.port: the port is their HostPort's.
        if claim.phase() == hostport_api::ClaimPhase::Bound
            && let Some(name) = &claim.spec.host_port_name
            && let Some(port) = self.host_port_port(name).await
        {
            return ClaimState::Bound { port };
        }
        let why = claim
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::BOUND))
            .map(|c| format!("{}: {}", c.reason, c.message));
        ClaimState::Pending { why }
    }

    async fn host_port_port(&self, name: &str) -> Option<u16> {
        if let Some(port) = self
            .host_ports
            .get(&ObjectRef::new(name))
            .and_then(|hp| hp.port())
        {
            return Some(port);
        }
        let api: Api<HostPort> = Api::all(self.client.clone());
        let fetched = tokio::time::timeout(self.api_timeout, api.get_opt(name))
            .await
            .ok()?
            .ok()??;
        fetched.port()
    }

    /// A class, from the cache, else from the API server (bounded).
    pub async fn class(&self, name: &str) -> Option<HostPortClass> {
        if let Some(class) = self.classes.get(&ObjectRef::new(name)) {
            return Some((*class).clone());
        }
        let api: Api<HostPortClass> = Api::all(self.client.clone());
        tokio::time::timeout(self.api_timeout, api.get_opt(name))
            .await
            .ok()?
            .ok()?
            .filter(|c| c.name_any() == name)
    }
}
