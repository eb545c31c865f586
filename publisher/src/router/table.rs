//! The mappings this publisher holds on the router, and one reconcile pass that makes them
//! what is wanted: map what is missing, renew what is half-way to expiry, remove what is no
//! longer wanted (or wanted differently). A failed request is retried with a backoff; a
//! mapping that could not be renewed is dropped from the table when its lease ends (the
//! router drops it then too).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::claimed::Protocol;
use crate::router::client::{MapRequest, Mapped, Method, Router, RouterError};
use crate::router::wanted::{MappingKey, Owner, WantedMappings};

/// First retry of a failed request; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A mapping the router granted.
#[derive(Debug)]
struct Held<L> {
    owner: Owner,
    request: MapRequest,
    lease: L,
    mapped: Mapped,
    renew_at: Instant,
    expires_at: Instant,
    expires_wall: Timestamp,
}

/// A request that failed, and when to try again.
#[derive(Debug)]
struct Failing {
    owner: Owner,
    request: MapRequest,
    error: RouterError,
    failures: u32,
    retry_at: Instant,
}

/// One external endpoint, as reported on its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Protocol.
    pub protocol: Protocol,
    /// The router's public address (an IPv6 pinhole: the node's own address).
    pub address: std::net::IpAddr,
    /// External port.
    pub port: u16,
    /// How it was mapped.
    pub method: Method,
    /// When the router drops it unless renewed.
    pub expires_at: Timestamp,
}

/// What one object got: its endpoints and its problems.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Mappings held.
    pub endpoints: Vec<Endpoint>,
    /// Requests that failed (and are being retried), or problems found before asking.
    pub errors: Vec<RouterError>,
}

/// Counts of one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// New mappings granted.
    pub mapped: usize,
    /// Mappings renewed.
    pub renewed: usize,
    /// Renewals that failed.
    pub renew_failures: usize,
    /// Mappings removed.
    pub removed: usize,
    /// Requests that failed.
    pub failed: usize,
}

/// The mappings held through `router`.
#[derive(Debug)]
pub struct Table<R: Router> {
    router: R,
    held: BTreeMap<MappingKey, Held<R::Lease>>,
    failing: BTreeMap<MappingKey, Failing>,
    renew_at_most: Option<Duration>,
}

impl<R: Router> Table<R> {
    /// An empty table.
    pub fn new(router: R) -> Self {
        Self {
            router,
            held: BTreeMap::new(),
            failing: BTreeMap::new(),
            renew_at_most: None,
        }
    }

    /// Renews at least every `interval` (not only at half the lifetime): a router that
    /// rebooted and lost its mappings gets them back sooner.
    pub fn renewing_at_most(mut self, interval: Option<Duration>) -> Self {
        self.renew_at_most = interval;
        self
    }

    /// The router.
    pub fn router(&self) -> &R {
        &self.router
    }

    /// Mappings held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Requests failing.
    pub fn failing(&self) -> usize {
        self.failing.len()
    }

    /// One pass towards `wanted` at `now`.
    pub async fn reconcile(&mut self, wanted: &WantedMappings, now: Instant) -> Pass {
        let mut pass = Pass::default();
        let stale: Vec<MappingKey> = self
            .held
            .iter()
            .filter(|(key, held)| {
                wanted
                    .mappings
                    .get(key)
                    .is_none_or(|w| w.owner != held.owner || w.request != held.request)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some(held) = self.held.remove(&key) {
                self.remove(held).await;
                pass.removed += 1;
            }
        }
        self.failing.retain(|key, failing| {
            wanted
                .mappings
                .get(key)
                .is_some_and(|w| w.owner == failing.owner && w.request == failing.request)
        });
        for (key, want) in &wanted.mappings {
            if let Some(held) = self.held.get_mut(key) {
                if now < held.renew_at {
                    continue;
                }
                match self.router.renew(&mut held.lease, &want.request).await {
                    Ok(mapped) => {
                        pass.renewed += 1;
                        held.granted(mapped, now, self.renew_at_most);
                    }
                    Err(error) => {
                        pass.renew_failures += 1;
                        tracing::warn!(owner = %want.owner, %error, "renewing a router mapping failed");
                        if now >= held.expires_at {
                            self.held.remove(key);
                            self.fail(*key, &want.owner, &want.request, error, now);
                        } else {
                            // Try again before it lapses.
                            held.renew_at = now + FIRST_BACKOFF.min(held.expires_at - now);
                        }
                    }
                }
                continue;
            }
            if self.failing.get(key).is_some_and(|f| now < f.retry_at) {
                continue;
            }
            match self.router.map(&want.request).await {
                Ok((lease, mapped)) => {
                    pass.mapped += 1;
                    tracing::info!(owner = %want.owner, protocol = %want.request.protocol, external = %format!("{}:{}", mapped.external_address, mapped.external_port), internal = %format!("{}:{}", want.request.client, want.request.internal_port), method = %mapped.method, "mapped on the router");
                    self.failing.remove(key);
                    let (renew_at, expires_at, expires_wall) =
                        schedule(&mapped, now, self.renew_at_most);
                    self.held.insert(
                        *key,
                        Held {
                            owner: want.owner.clone(),
                            request: want.request.clone(),
                            lease,
                            mapped,
                            renew_at,
                            expires_at,
                            expires_wall,
                        },
                    );
                }
                Err(error) => {
                    pass.failed += 1;
                    self.fail(*key, &want.owner, &want.request, error, now);
                }
            }
        }
        pass
    }

    fn fail(
        &mut self,
        key: MappingKey,
        owner: &Owner,
        request: &MapRequest,
        error: RouterError,
        now: Instant,
    ) {
        let failures = self.failing.get(&key).map_or(0, |f| f.failures) + 1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << failures.min(10).saturating_sub(1))
            .min(MAX_BACKOFF);
        tracing::warn!(%owner, %error, retry_in = ?backoff, "router mapping failed");
        self.failing.insert(
            key,
            Failing {
                owner: owner.clone(),
                request: request.clone(),
                error,
                failures,
                retry_at: now + backoff,
            },
        );
    }

    async fn remove(&self, held: Held<R::Lease>) {
        let owner = held.owner.clone();
        let port = held.mapped.external_port;
        match self.router.unmap(held.lease).await {
            Ok(()) => tracing::info!(%owner, port, "removed the router mapping"),
            // It lapses by itself when its lease ends.
            Err(error) => {
                tracing::warn!(%owner, port, %error, "removing a router mapping failed; it lapses when its lifetime ends")
            }
        }
    }

    /// Removes every mapping (shutdown, or leadership lost for Services).
    pub async fn clear(&mut self) -> usize {
        let held = std::mem::take(&mut self.held);
        self.failing.clear();
        let count = held.len();
        for held in held.into_values() {
            self.remove(held).await;
        }
        count
    }

    /// When the next renewal or retry is due.
    pub fn next_due(&self) -> Option<Instant> {
        let renewals = self.held.values().map(|h| h.renew_at);
        let retries = self.failing.values().map(|f| f.retry_at);
        renewals.chain(retries).min()
    }

    /// What each object got, including `problems` found before asking the router.
    pub fn reports(&self, problems: &[(Owner, RouterError)]) -> BTreeMap<Owner, Report> {
        let mut reports: BTreeMap<Owner, Report> = BTreeMap::new();
        for held in self.held.values() {
            reports
                .entry(held.owner.clone())
                .or_default()
                .endpoints
                .push(Endpoint {
                    protocol: held.request.protocol,
                    address: held.mapped.external_address,
                    port: held.mapped.external_port,
                    method: held.mapped.method,
                    expires_at: held.expires_wall,
                });
        }
        for failing in self.failing.values() {
            reports
                .entry(failing.owner.clone())
                .or_default()
                .errors
                .push(failing.error.clone());
        }
        for (owner, error) in problems {
            reports
                .entry(owner.clone())
                .or_default()
                .errors
                .push(error.clone());
        }
        reports
    }
}

/// When a grant is renewed and when it ends: renewed at half its lifetime (RFC 6886 §3.3),
/// as routers expect, or sooner when `at_most` says so.
fn schedule(
    mapped: &Mapped,
    now: Instant,
    at_most: Option<Duration>,
) -> (Instant, Instant, Timestamp) {
    let half = mapped.lifetime / 2;
    let renew_at = now + at_most.map_or(half, |cap| half.min(cap));
    let lifetime = SignedDuration::try_from(mapped.lifetime).unwrap_or(SignedDuration::ZERO);
    let expires_wall = Timestamp::now()
        .checked_add(lifetime)
        .unwrap_or_else(|_| Timestamp::now());
    (renew_at, now + mapped.lifetime, expires_wall)
}

impl<L> Held<L> {
    /// Records a renewal.
    fn granted(&mut self, mapped: Mapped, now: Instant, at_most: Option<Duration>) {
        (self.renew_at, self.expires_at, self.expires_wall) = schedule(&mapped, now, at_most);
        self.mapped = mapped;
    }
}

#[cfg(test)]
mod tests;
