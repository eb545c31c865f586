//! Which ports are taken, as the controller knows it: every HostPort in the watch-fed cache
//! (whatever its class or name, including HostPorts written by the Go project) plus the
//! ports this process reserved for HostPorts it is creating and has not seen in the watch
//! yet. Pure data; the controller feeds it watch events.
//!
//! The book is only a guess: the API server's name uniqueness (`port-<n>`) is the lock. A
//! guess that is stale costs a 409 and another pick, never a duplicate port.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hostport_api::HostPort;
use hostport_api::ports::PortRange;
use kube::ResourceExt;

use hostport_api::port_set::PortSet;

/// How long a reservation may wait for its HostPort to show up in the watch before it is
/// forgotten (the create failed in a way we did not see, or another controller holds it).
pub const RESERVATION_TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    port: Option<u16>,
    claim_uid: Option<String>,
}

#[derive(Clone, Debug)]
struct Reservation {
    claim_uid: Option<String>,
    expires: Instant,
}

/// A HostPort of a claim, as the book knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimHostPort {
    /// HostPort name.
    pub name: String,
    /// Its port, when it has a valid one.
    pub port: Option<u16>,
}

/// Ports taken, HostPorts by claim, and this process's reservations.
#[derive(Debug, Default)]
pub struct PortBook {
    used: PortSet,
    holders: HashMap<u16, u32>,
    by_name: HashMap<String, Held>,
    /// Claim UID → its HostPorts' names (almost always one: a `Vec`, not a tree).
    by_claim: HashMap<String, Vec<String>>,
    reserved: HashMap<u16, Reservation>,
    /// Filled during a (re)list, swapped in when the list is complete.
    relisting: Option<Vec<HostPort>>,
    synced: bool,
}

impl PortBook {
    /// Whether the book has been built from a complete list of HostPorts.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// A (re)list starts: HostPorts arrive through `relist_apply`, then `relist_done`.
    pub fn relist_start(&mut self) {
        self.relisting = Some(vec![]);
    }

    /// One HostPort of a (re)list.
    pub fn relist_apply(&mut self, host_port: &HostPort) {
        match &mut self.relisting {
            Some(list) => list.push(host_port.clone()),
            None => self.apply(host_port),
        }
    }

    /// The (re)list is complete: the book becomes exactly what it listed (plus reservations).
    pub fn relist_done(&mut self) {
        let listed = self.relisting.take().unwrap_or_default();
        let reserved = std::mem::take(&mut self.reserved);
        *self = PortBook::default();
        for host_port in &listed {
            self.apply(host_port);
        }
        for (port, reservation) in reserved {
            if !self.holders.contains_key(&port) {
                self.used.insert(port);
                self.reserved.insert(port, reservation);
            }
        }
        self.synced = true;
    }

    /// A HostPort was created or changed.
    pub fn apply(&mut self, host_port: &HostPort) {
        let name = host_port.name_any();
        let held = Held {
            port: host_port.port(),
            claim_uid: host_port.claim_uid().map(str::to_owned),
        };
        if self.by_name.get(&name) == Some(&held) {
            return;
        }
        self.forget(&name);
        if let Some(port) = held.port {
            *self.holders.entry(port).or_default() += 1;
            self.used.insert(port);
            self.reserved.remove(&port);
        }
        if let Some(uid) = &held.claim_uid {
            let names = self.by_claim.entry(uid.clone()).or_default();
            if !names.contains(&name) {
                names.push(name.clone());
            }
        }
        self.by_name.insert(name, held);
    }

    /// A HostPort is gone.
    pub fn delete(&mut self, name: &str) {
        self.forget(name);
    }

    fn forget(&mut self, name: &str) {
        let Some(held) = self.by_name.remove(name) else {
            return;
        };
        if let Some(port) = held.port
            && let Some(count) = self.holders.get_mut(&port)
        {
            *count -= 1;
            if *count == 0 {
                self.holders.remove(&port);
                if !self.reserved.contains_key(&port) {
                    self.used.remove(port);
                }
            }
        }
        if let Some(uid) = held.claim_uid
            && let Some(names) = self.by_claim.get_mut(&uid)
        {
            names.retain(|n| n != name);
            if names.is_empty() {
                self.by_claim.remove(&uid);
            }
        }
    }

    /// Whether `port` is held or reserved.
    pub fn is_used(&self, port: u16) -> bool {
        self.used.contains(port)
    }

    /// Reserves the lowest free port of `ranges` for `claim_uid`.
    pub fn reserve_lowest(
        &mut self,
        ranges: &[PortRange],
        claim_uid: &str,
        now: Instant,
    ) -> Option<u16> {
        self.expire(now);
        let port = self.used.lowest_free(ranges)?;
        self.reserve(port, Some(claim_uid), now);
        Some(port)
    }

    /// Marks `port` reserved (for a claim, or `None`: held by someone we have not seen yet,
    /// learned from a 409).
    pub fn reserve(&mut self, port: u16, claim_uid: Option<&str>, now: Instant) {
        self.used.insert(port);
        self.reserved.insert(
            port,
            Reservation {
                claim_uid: claim_uid.map(str::to_owned),
                expires: now + RESERVATION_TTL,
            },
        );
    }

    /// Drops a reservation whose HostPort was not created.
    pub fn release(&mut self, port: u16) {
        if self.reserved.remove(&port).is_some() && !self.holders.contains_key(&port) {
            self.used.remove(port);
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<u16> = self
            .reserved
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(port, _)| *port)
            .collect();
        for port in expired {
            self.release(port);
        }
    }

    /// The HostPorts the cache holds for a claim, and the port reserved for it, if any.
    pub fn of_claim(&self, claim_uid: &str) -> (Vec<ClaimHostPort>, Option<u16>) {
        let cached = self
            .by_claim
            .get(claim_uid)
            .into_iter()
            .flatten()
            .map(|name| ClaimHostPort {
                name: name.clone(),
                port: self.by_name.get(name).and_then(|h| h.port),
            })
            .collect();
        let reserved = self
            .reserved
            .iter()
            .find(|(_, r)| r.claim_uid.as_deref() == Some(claim_uid))
            .map(|(port, _)| *port);
        (cached, reserved)
    }

    /// Ports of the union of `ranges` that are used.
    pub fn used_in(&self, ranges: &[PortRange]) -> u32 {
        self.used.count_in_all(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::{ClaimReference, HostPortSpec, HostPortStatus};

    fn host_port(
        name: &str,
        port: Option<i32>,
        status_port: Option<i32>,
        claim_uid: &str,
    ) -> HostPort {
        let mut hp = HostPort::new(
            name,
            HostPortSpec {
                claim_ref: Some(ClaimReference {
                    uid: Some(claim_uid.into()),
                    ..ClaimReference::default()
                }),
                host_port_class_name: "sample".into(),
                port,
            },
        );
        hp.status = status_port.map(|p| HostPortStatus {
            port: Some(p),
            ..HostPortStatus::default()
        });
        hp
    }

    fn pool() -> Vec<PortRange> {
        vec![PortRange::new(9000, 9003).expect("range")]
    }

    #[test]
    fn relist_builds_the_book_and_marks_it_synced() {
        let mut book = PortBook::default();
        assert!(!book.is_synced());
        book.relist_start();
        book.relist_apply(&host_port("port-9000", Some(9000), None, "a"));
        // A HostPort written by the Go project: named by claim, port in status only.
        book.relist_apply(&host_port("hpc-b", None, Some(9001), "b"));
        book.relist_done();
        assert!(book.is_synced());
        assert!(book.is_used(9000) && book.is_used(9001));
        let now = Instant::now();
        assert_eq!(book.reserve_lowest(&pool(), "c", now), Some(9002));
        assert_eq!(
            book.of_claim("b").0,
            vec![ClaimHostPort {
                name: "hpc-b".into(),
                port: Some(9001)
            }]
        );
    }

    #[test]
    fn reservations_hold_until_the_watch_shows_the_host_port() {
        let mut book = PortBook::default();
        book.relist_start();
        book.relist_done();
        let now = Instant::now();
        assert_eq!(book.reserve_lowest(&pool(), "a", now), Some(9000));
        assert_eq!(book.of_claim("a"), (vec![], Some(9000)));
        assert_eq!(
            book.reserve_lowest(&pool(), "b", now),
            Some(9001),
            "a reservation is taken"
        );
        book.apply(&host_port("port-9000", Some(9000), None, "a"));
        assert_eq!(book.of_claim("a").1, None, "the cache now holds it");
        book.release(9001);
        assert_eq!(
            book.reserve_lowest(&pool(), "c", now),
            Some(9001),
            "a failed create frees its port"
        );
        // A relist keeps reservations whose HostPort it did not see yet.
        book.relist_start();
        book.relist_apply(&host_port("port-9000", Some(9000), None, "a"));
        book.relist_done();
        assert!(book.is_used(9001));
        // Reservations expire.
        let later = now + RESERVATION_TTL + Duration::from_secs(1);
        assert_eq!(book.reserve_lowest(&pool(), "d", later), Some(9001));
    }

    #[test]
    fn two_host_ports_on_one_port_free_it_only_when_both_are_gone() {
        let mut book = PortBook::default();
        book.relist_start();
        book.relist_done();
        book.apply(&host_port("hpc-x", None, Some(9000), "x"));
        book.apply(&host_port("port-9000", Some(9000), None, "y"));
        book.delete("hpc-x");
        assert!(book.is_used(9000));
        book.delete("port-9000");
        assert!(!book.is_used(9000));
        assert_eq!(book.used_in(&pool()), 0);
        assert_eq!(book.of_claim("x"), (vec![], None));
    }

    #[test]
    fn a_changed_port_moves() {
        let mut book = PortBook::default();
        book.apply(&host_port("hpc-x", None, Some(0), "x"));
        assert_eq!(book.used_in(&pool()), 0, "port 0 means none");
        book.apply(&host_port("hpc-x", None, Some(9002), "x"));
        assert!(book.is_used(9002));
        assert_eq!(book.used_in(&pool()), 1);
    }
}
