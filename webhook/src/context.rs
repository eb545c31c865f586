//! What admission decisions read: watch-fed caches of claims, HostPorts and classes, with one
//! bounded API read on a miss or a not-yet-Bound claim (so a claim bound a moment ago is
//! never wrongly denied because the cache lags).
//!
//! A pod admitted together with its claim (one `kubectl apply` of both) waits for the claim
//! to appear and bind, fed by the claim watch: no API call per waiting pod, bounded by
//! `bind_wait`, and over as soon as the claim binds or is Pending for a reason that needs
//! someone to act (`reasons::blocks_binding`). The wait is a future of the request: a
//! client that goes away drops it.
//!
//! A port is injected only when the whole chain holds: the claim names a HostPort
//! (`spec.hostPortName`, or a Bound pod claim's `port-<status.port>`), that HostPort's
//! `claimRef.uid` is the claim's UID and it holds a port, and the claim's `status.port` (if
//! any) agrees. A claim's status alone is never trusted: it is one RBAC mistake away from a
//! tenant.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use hostport_api::conditions::reasons;
use hostport_api::{ALLOW_HOST_NETWORK_ANNOTATION, HostPort, HostPortClaim, HostPortClass};
use hostport_process::compact::CompactStore;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::cached::{CachedClaim, CachedHostPort};
use crate::metrics::Metrics;
use crate::pod::{Binding, ClaimState, ClaimStates};
use crate::verdict::{Verdict, deny, reasons as verdict_reasons};

/// Shared by every admission request.
pub struct Context {
    /// API client for the reads behind a cache miss.
    pub client: Client,
    /// Every HostPortClaim, as admission reads it.
    pub claims: CompactStore<CachedClaim>,
    /// Bumped after every change of `claims`.
    pub claim_changes: watch::Receiver<u64>,
    /// Every HostPort, as admission reads it.
    pub host_ports: CompactStore<CachedHostPort>,
    /// Every HostPortClass (stripped).
    pub classes: Store<HostPortClass>,
    /// The allocator identity: the users who may write what decides a port.
    pub allocator_users: Vec<String>,
    /// The router publishers: may write a claim's `status.external` and `Published` only.
    pub publisher_users: Vec<String>,
    /// Longest one API read may take (the webhook must answer within its timeout).
    pub api_timeout: Duration,
    /// Longest a pod's admission waits for its claims to appear and bind.
    pub bind_wait: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("allocator_users", &self.allocator_users)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Whether `user` is the allocator identity.
    pub fn is_allocator(&self, user: &str) -> bool {
        self.allocator_users.iter().any(|u| u == user)
    }

    /// Whether `user` is a router publisher.
    pub fn is_publisher(&self, user: &str) -> bool {
        self.publisher_users.iter().any(|u| u == user)
    }

    /// A claim's state for pod admission, after waiting (until `deadline`) while it does not
    /// exist yet or is Pending for a reason the allocator gets past by itself; and whether it
    /// waited.
    pub async fn claim_state_when_settled(
        &self,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> (ClaimState, bool) {
        let mut changes = self.claim_changes.clone();
        let mut waiting: Option<WaitGuard> = None;
        let settled = loop {
            // Marked seen before the look, so a change right after it still wakes us.
            changes.borrow_and_update();
            let settled = self
                .claims
                .get(namespace, name)
                .is_some_and(|claim| is_settled(&claim));
            if settled || Instant::now() >= deadline {
                break settled;
            }
            waiting.get_or_insert_with(|| WaitGuard::start(&self.metrics));
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break false },
                () = tokio::time::sleep_until(deadline) => {},
            }
        };
        let waited = waiting.is_some();
        drop(waiting);
        let state = match self.claim_state(namespace, name).await {
            ClaimState::Pending { why } if waited && !settled => {
                let waited = format!(
                    "not Bound after the webhook waited {:?} for the allocator",
                    self.bind_wait
                );
                ClaimState::Pending {
                    why: Some(why.map_or(waited.clone(), |why| format!("{why}; {waited}"))),
                }
            }
            state => state,
        };
        (state, waited)
    }

    /// After an admission waited, every claim it found Bound before is read again (cache
    /// first, else one bounded API read): one deleted or re-bound meanwhile is not used, since
    /// its old port may have been released and handed to another claim during the wait.
    pub async fn recheck_bound(&self, namespace: &str, states: &mut ClaimStates) {
        for (name, state) in states.iter_mut() {
            if let ClaimState::Bound(before) = state {
                let now = self.claim_state(namespace, name).await;
                *state = ClaimState::recheck(before, now);
            }
        }
    }

    /// A claim's state for pod admission.
    pub async fn claim_state(&self, namespace: &str, name: &str) -> ClaimState {
        let cached = self.claims.get(namespace, name);
        if let Some(claim) = &cached {
            let state = self.state_of(claim).await;
            if matches!(state, ClaimState::Bound { .. } | ClaimState::Deleting) {
                return state;
            }
        }
        let api: Api<HostPortClaim> = Api::namespaced(self.client.clone(), namespace);
        match self.read(&api, name, "it from the API server").await {
            Ok(Some(claim)) => self.state_of(&CachedClaim::from(&claim)).await,
            Ok(None) => ClaimState::Missing,
            Err(why) => ClaimState::Pending { why: Some(why) },
        }
    }

    /// One read from the API server, bounded by `api_timeout`; the error says what could not
    /// be read (`what`) and why, for a denial message.
    pub(crate) async fn read<K>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
    ) -> Result<Option<K>, String>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match tokio::time::timeout(self.api_timeout, api.get_opt(name)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(error)) => Err(format!("the webhook could not read {what}: {error}")),
            Err(_) => Err(format!(
                "the webhook could not read {what} within {:?}",
                self.api_timeout
            )),
        }
    }

    async fn state_of(&self, claim: &CachedClaim) -> ClaimState {
        if claim.deleting {
            return ClaimState::Deleting;
        }
        if claim.phase != hostport_api::ClaimPhase::Bound {
            let why = claim
                .pending
                .as_ref()
                .map(|(reason, message)| format!("{reason}: {message}"));
            return ClaimState::Pending { why };
        }
        let Some(host_port_name) = claim.bound_host_port_name() else {
            return ClaimState::Unverified {
                why: "it is Bound but names no HostPort (spec.hostPortName and status.port are empty)".into(),
            };
        };
        let host_port_name = &*host_port_name;
        // The cache first; if it disagrees, the API server (the HostPort cache may lag the
        // claim cache).
        let cached = self.host_ports.get("", host_port_name);
        if let Some(host_port) = &cached
            && let Ok(binding) = verify_binding(claim, host_port_name, host_port)
        {
            return self.complete_binding(claim, binding).await;
        }
        let api: Api<HostPort> = Api::all(self.client.clone());
        let what = format!("HostPort {host_port_name:?}");
        let fresh = match self.read(&api, host_port_name, &what).await {
            Ok(fresh) => fresh,
            Err(why) => return ClaimState::Pending { why: Some(why) },
        };
        let Some(host_port) = fresh else {
            return ClaimState::Unverified {
                why: format!("its HostPort {host_port_name:?} does not exist"),
            };
        };
        match verify_binding(claim, host_port_name, &(&host_port).into()) {
            Ok(binding) => self.complete_binding(claim, binding).await,
            Err(why) => ClaimState::Unverified { why },
        }
    }

    /// `binding` once every further port of its block is held by a HostPort of the claim
    /// (`port-<n>`, `claimRef.uid`; the cache first, then the API server for what it lacks),
    /// with what its class allows.
    async fn complete_binding(&self, claim: &CachedClaim, mut binding: Binding) -> ClaimState {
        let api: Api<HostPort> = Api::all(self.client.clone());
        for port in (1..binding.count).filter_map(|i| binding.port.checked_add(i)) {
            let name = HostPort::name_for_port(port);
            let ours = |hp: &CachedHostPort| {
                hp.claim_uid.as_deref() == Some(binding.claim_uid.as_str())
                    && hp.port == Some(port)
                    && !hp.deleting
            };
            if self.host_ports.get("", &name).is_some_and(|hp| ours(&hp)) {
                continue;
            }
            let what = format!("HostPort {name:?}");
            match self.read(&api, &name, &what).await {
                Ok(Some(fresh)) if ours(&(&fresh).into()) => {}
                Ok(_) => {
                    return ClaimState::Unverified {
                        why: format!(
                            "port {port} of its block of {} is not held by a HostPort {name:?} of it",
                            binding.count
                        ),
                    };
                }
                Err(why) => return ClaimState::Pending { why: Some(why) },
            }
        }
        binding.host_network = self
            .class(&claim.spec.host_port_class_name)
            .await
            .is_some_and(|c| c.spec.allow_host_network);
        ClaimState::Bound(binding)
    }

    /// A class, from the cache, else from the API server (bounded).
    pub async fn class(&self, name: &str) -> Option<HostPortClass> {
        if let Some(class) = self.classes.get(&ObjectRef::new(name)) {
            return Some((*class).clone());
        }
        let api: Api<HostPortClass> = Api::all(self.client.clone());
        self.read(&api, name, "the class")
            .await
            .ok()?
            .filter(|c| c.name_any() == name)
    }

    /// A Namespace, read from the API server (bounded): only `hostNetwork` pods and claims of
    /// a class with a `namespaceSelector` ask, so no namespace cache is kept. `Err` says why
    /// it is unknown.
    async fn namespace(&self, namespace: &str) -> Result<Option<Namespace>, String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        self.read(&api, namespace, &format!("namespace {namespace:?}"))
            .await
    }

    /// The labels of `namespace` (for a class's `namespaceSelector`).
    pub async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let found = self.namespace(namespace).await?;
        Ok(found.map(|ns| ns.labels().clone()).unwrap_or_default())
    }

    /// Claims of `class` in `namespace` other than `name`, from the cache.
    pub fn claims_of_class(&self, namespace: &str, class: &str, name: &str) -> usize {
        self.claims
            .fold_namespace(namespace, 0, |holding, claim_name, claim| {
                let counts = claim.spec.host_port_class_name == class
                    && claim_name != name
                    && !claim.deleting;
                holding + usize::from(counts)
            })
    }

    /// The claim `namespace/name` from the cache, else from the API server (bounded); `Err`
    /// when it cannot be told.
    pub async fn claim_for_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CachedClaim>, Verdict> {
        if let Some(cached) = self.claims.get(namespace, name) {
            return Ok(Some((*cached).clone()));
        }
        let api: Api<HostPortClaim> = Api::namespaced(self.client.clone(), namespace);
        self.read(&api, name, &format!("HostPortClaim {name:?}"))
            .await
            .map(|found| found.as_ref().map(CachedClaim::from))
            .map_err(|why| {
                deny(
                    verdict_reasons::POD_CLAIM_FAILED,
                    format!("{why}; try again"),
                )
            })
    }

    /// A new claim against its class's `namespaceSelector` and `maxClaimsPerNamespace`;
    /// `also_new`: claims of the class in the namespace about to be made with it (not cached
    /// yet).
    pub async fn class_access(
        &self,
        claim: &HostPortClaim,
        class: &HostPortClass,
        also_new: usize,
    ) -> Verdict {
        let namespace = claim.metadata.namespace.clone().unwrap_or_default();
        let labels = if class.spec.namespace_selector.is_some() {
            match self.namespace_labels(&namespace).await {
                Ok(labels) => labels,
                Err(why) => {
                    return deny(
                        verdict_reasons::NAMESPACE_NOT_ALLOWED,
                        format!(
                            "HostPortClass {:?} admits selected namespaces only, and {why}; try again",
                            class.name_any()
                        ),
                    );
                }
            }
        } else {
            Default::default()
        };
        let holding = self.claims_of_class(
            &namespace,
            &claim.spec.host_port_class_name,
            &claim.name_any(),
        ) + also_new;
        crate::resources::check_class_access(claim, class, &labels, holding)
    }

    /// Whether a cluster admin allowed `hostNetwork` pods in `namespace` (its annotation
    /// [`ALLOW_HOST_NETWORK_ANNOTATION`] is `"true"`).
    pub async fn host_network_allowed(&self, namespace: &str) -> Result<bool, String> {
        let found = self.namespace(namespace).await?;
        Ok(found.is_some_and(|ns| {
            ns.annotations()
                .get(ALLOW_HOST_NETWORK_ANNOTATION)
                .is_some_and(|v| v == "true")
        }))
    }
}

/// Whether a cached claim is as bound as it will get without someone acting: Bound, being
/// deleted, or Pending for a reason that blocks binding.
fn is_settled(claim: &CachedClaim) -> bool {
    if claim.deleting || claim.phase == hostport_api::ClaimPhase::Bound {
        return true;
    }
    claim
        .pending
        .as_ref()
        .is_some_and(|(reason, _)| reasons::blocks_binding(reason))
}

/// One admission waiting for a claim, counted while it waits (also when the request is
/// dropped mid-wait: the gauge is what shows nothing is left waiting).
struct WaitGuard<'a> {
    metrics: &'a Metrics,
    started: Instant,
}

impl<'a> WaitGuard<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.claim_waits.inc();
        Self {
            metrics,
            started: Instant::now(),
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.metrics.claim_waits.dec();
        self.metrics
            .claim_wait_seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// The binding (and so the port) a Bound claim may inject, if the chain claim → HostPort →
/// `claimRef.uid` → port holds; otherwise what breaks it.
pub fn verify_binding(
    claim: &CachedClaim,
    name: &str,
    host_port: &CachedHostPort,
) -> Result<Binding, String> {
    if host_port.deleting {
        return Err(format!("its HostPort {name:?} is being deleted"));
    }
    let claim_uid = &*claim.uid;
    if claim_uid.is_empty() || host_port.claim_uid.as_deref() != Some(claim_uid) {
        return Err(format!(
            "its HostPort {name:?} is not bound to it (spec.claimRef.uid differs)"
        ));
    }
    let Some(port) = host_port.port else {
        return Err(format!("its HostPort {name:?} holds no port yet"));
    };
    if let Some(status_port) = claim.status_port
        && status_port != i32::from(port)
    {
        return Err(format!(
            "its status.port {status_port} differs from port {port} held by its HostPort {name:?}"
        ));
    }
    Ok(Binding {
        port,
        claim_uid: claim_uid.to_owned(),
        host_port: name.to_owned(),
        policy: claim.spec.port_policy(),
        count: claim.spec.count(),
        host_network: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::{
        ClaimPhase, ClaimReference, HostPortClaimSpec, HostPortClaimStatus, HostPortSpec,
    };

    fn claim(uid: &str, status_port: Option<i32>) -> CachedClaim {
        let mut claim = HostPortClaim::new(
            "web",
            HostPortClaimSpec {
                host_port_class_name: "sample".into(),
                host_port_name: Some("port-9000".into()),
                port: None,
                port_policy: None,
                count: None,
                alignment: None,
            },
        );
        claim.metadata.uid = Some(uid.into());
        claim.status = Some(HostPortClaimStatus {
            phase: Some(ClaimPhase::Bound),
            port: status_port,
            ..HostPortClaimStatus::default()
        });
        (&claim).into()
    }

    fn host_port(claim_uid: &str, port: i32) -> HostPort {
        HostPort::new(
            "port-9000",
            HostPortSpec {
                claim_ref: Some(ClaimReference {
                    uid: Some(claim_uid.into()),
                    ..ClaimReference::default()
                }),
                host_port_class_name: "sample".into(),
                port: Some(port),
            },
        )
    }

    fn verify(claim: &CachedClaim, host_port: &HostPort) -> Result<Binding, String> {
        verify_binding(claim, "port-9000", &host_port.into())
    }

    #[test]
    fn the_chain_must_hold() {
        assert_eq!(
            verify(&claim("a", Some(9000)), &host_port("a", 9000)).map(|b| b.port),
            Ok(9000)
        );
        // Go-era claims carry no status.port.
        assert_eq!(
            verify(&claim("a", None), &host_port("a", 9000)).map(|b| b.port),
            Ok(9000)
        );
        let forged = verify(&claim("a", Some(22)), &host_port("a", 9000));
        assert!(
            forged
                .as_ref()
                .is_err_and(|e| e.contains("status.port 22 differs")),
            "{forged:?}"
        );
        let stolen = verify(&claim("a", Some(9000)), &host_port("b", 9000));
        assert!(
            stolen
                .as_ref()
                .is_err_and(|e| e.contains("not bound to it")),
            "{stolen:?}"
        );
        let mut deleting = host_port("a", 9000);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(verify(&claim("a", None), &deleting).is_err());
        // A claim the API server gave no UID never matches, not even a HostPort whose
        // claimRef has none either.
        // A pod claim leaves spec.hostPortName empty: its status port names the HostPort,
        // which must still hold the port for the claim's UID.
        let mut unnamed = claim("a", Some(9000));
        unnamed.spec.host_port_name = None;
        assert_eq!(unnamed.bound_host_port_name().as_deref(), Some("port-9000"));
        assert!(verify(&unnamed, &host_port("b", 9000)).is_err());
        assert_eq!(
            verify(&unnamed, &host_port("a", 9000)).map(|b| b.port),
            Ok(9000)
        );
        unnamed.status_port = None;
        assert_eq!(
            unnamed.bound_host_port_name(),
            None,
            "nothing names a HostPort"
        );
        let no_uid = verify(&claim("", Some(9000)), &host_port("", 9000));
        assert!(
            no_uid
                .as_ref()
                .is_err_and(|e| e.contains("not bound to it")),
            "{no_uid:?}"
        );
    }
}
