//! Leader election on a `coordination.k8s.io/v1` Lease, so one replica works at a time.
//! Correctness does not depend on it (a port is locked by its HostPort's name); it only
//! saves the work and the 409s of two replicas racing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// What leader election reports.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Reading or writing the Lease failed.
    #[error("{action} Lease {lease}: {source}")]
    Api {
        /// What we were doing ("reading", "creating", "renewing").
        action: &'static str,
        /// `namespace/name` of the Lease.
        lease: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Leadership was lost; the process must stop working.
    #[error("lost the leader election lease {lease}")]
    LeadershipLost {
        /// `namespace/name` of the Lease.
        lease: String,
    },
}

type Result<T, E = LeaseError> = std::result::Result<T, E>;

/// The HTTP status of an API error, if it is one.
fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Where the Lease lives and how long it lasts.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// Who we are (pod name).
    pub identity: String,
    /// How long a holder keeps the Lease without renewing it.
    pub duration: Duration,
}

/// A Lease we try to hold.
#[derive(Clone, Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaseLock {
    /// A lock on the configured Lease.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn renew_every(&self) -> Duration {
        self.config.duration / 3
    }

    /// Takes or renews the Lease if it is ours or expired; returns whether we hold it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|source| LeaseError::Api {
                action: "reading",
                lease: self.lease_name(),
                source,
            })?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if status_code(&e) == Some(409) => Ok(false),
                Err(source) => Err(LeaseError::Api {
                    action: "creating",
                    lease: self.lease_name(),
                    source,
                }),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let held_for =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expired = spec.holder_identity.as_deref().is_none_or(str::is_empty)
            || spec
                .renew_time
                .as_ref()
                .is_none_or(|renewed| renewed.0 + held_for < now);
        if !ours && !expired {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.config.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(source) => Err(LeaseError::Api {
                action: "renewing",
                lease: self.lease_name(),
                source,
            }),
        }
    }

    /// Waits until we hold the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "acquired the leader lease");
                    return;
                }
                Ok(false) => {
                    tracing::debug!(lease = %self.lease_name(), "another replica leads; waiting")
                }
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.renew_every()).await;
        }
    }

    /// Keeps renewing; returns when the Lease could not be renewed for its whole duration
    /// (or someone else took it).
    ///
    /// Every attempt is bounded by the renew interval, so a hung request cannot keep us
    /// leading; and we give up one interval *before* the Lease expires for the others, so
    /// two replicas never both think they lead (client-go's renewDeadline < leaseDuration).
    pub async fn hold(&self) -> LeaseError {
        let mut last_renewed = tokio::time::Instant::now();
        let give_up_after = self.config.duration.saturating_sub(self.renew_every());
        loop {
            tokio::time::sleep(self.renew_every()).await;
            let attempt =
                tokio::time::timeout(self.renew_every(), self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_renewed = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    return LeaseError::LeadershipLost {
                        lease: self.lease_name(),
                    };
                }
                Ok(Err(error)) => tracing::warn!(%error, "renewing the leader lease failed"),
                Err(_) => tracing::warn!(
                    timeout = ?self.renew_every(),
                    "renewing the leader lease did not finish in time"
                ),
            }
            if last_renewed.elapsed() >= give_up_after {
                return LeaseError::LeadershipLost {
                    lease: self.lease_name(),
                };
            }
        }
    }

    /// Gives the Lease up on shutdown so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(error) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "releasing the leader lease failed");
        }
    }
}
