//! A [`Router`] that grants every request on one public address (unless told to refuse) and
//! records the calls: for tests of the reconcile loop and of what the publisher writes, where
//! the router side is not the subject (it is tested against miniupnpd in
//! `publisher/tests/router.rs`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::router::client::{MapRequest, Mapped, Method, Router, RouterError};

/// Grants on `address`; calls recorded as `map <port>`, `renew <port>`, `unmap <port>`.
#[derive(Debug)]
pub struct RecordingRouter {
    address: Mutex<Ipv4Addr>,
    lifetime: Option<Duration>,
    calls: Mutex<Vec<String>>,
    refuse: AtomicBool,
}

impl RecordingRouter {
    /// Grants on `address` the lifetime asked for.
    pub fn new(address: Ipv4Addr) -> Self {
        Self {
            address: Mutex::new(address),
            lifetime: None,
            calls: Mutex::default(),
            refuse: AtomicBool::new(false),
        }
    }

    /// Grants `lifetime` whatever is asked.
    pub fn granting(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Grants on `address` from now on (a router whose public address changed: new
    /// mappings and renewals report it).
    pub fn set_address(&self, address: Ipv4Addr) {
        if let Ok(mut current) = self.address.lock() {
            *current = address;
        }
    }

    /// Refuses (`RouterRefused`) maps and renewals from now on, or stops refusing.
    pub fn refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::Relaxed);
    }

    /// The calls so far, forgotten once returned.
    pub fn take_calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .map(|mut calls| std::mem::take(&mut *calls))
            .unwrap_or_default()
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: String) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }

    fn answer(&self, call: String, request: &MapRequest) -> Result<Mapped, RouterError> {
        self.record(call);
        if self.refuse.load(Ordering::Relaxed) {
            return Err(RouterError::Refused {
                gateway: request.gateway,
                method: Method::NatPmp,
                detail: "not authorized".into(),
            });
        }
        Ok(Mapped {
            method: Method::NatPmp,
            // A pinhole's public address is the host's own.
            external_address: if request.client.is_ipv6() {
                request.client
            } else {
                IpAddr::V4(self.address.lock().map_or(Ipv4Addr::UNSPECIFIED, |a| *a))
            },
            external_port: request.external_port,
            lifetime: self
                .lifetime
                .unwrap_or(Duration::from_secs(u64::from(request.lifetime_seconds))),
        })
    }
}

impl Router for RecordingRouter {
    type Lease = u16;

    async fn map(&self, request: &MapRequest) -> Result<(u16, Mapped), RouterError> {
        let mapped = self.answer(format!("map {}", request.external_port), request)?;
        Ok((request.external_port, mapped))
    }

    async fn renew(&self, lease: &mut u16, request: &MapRequest) -> Result<Mapped, RouterError> {
        self.answer(format!("renew {lease}"), request)
    }

    async fn unmap(&self, lease: u16) -> Result<(), RouterError> {
        self.record(format!("unmap {lease}"));
        Ok(())
    }
}
