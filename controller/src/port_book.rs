//! Which ports are taken, as the controller knows it: every HostPort in the watch-fed cache
//! (whatever its class or name, including HostPorts written by the Go project), the ports
//! this process reserved for HostPorts it is creating and has not seen in the watch yet, and
//! the host ports live pods declare (`declared`: a port some pod uses is never handed out,
//! whether or not the allocator gave it). Pure data; the controller feeds it watch events.
//!
//! The book is only a guess: the API server's name uniqueness (`port-<n>`) is the lock. A
//! guess that is stale costs a 409 and another pick, never a duplicate port.
//!
//! Over ~500 lines only with its tests (from line ~340): one structure and its invariants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hostport_api::HostPort;
use hostport_api::ports::PortRange;
use kube::ResourceExt;

use hostport_api::port_set::PortSet;
use hostport_process::compact::{CacheWriter, Compact};
use hostport_process::ids::Uid;
use kube::runtime::watcher;

use crate::cached::CachedHostPort;
use crate::host_port_name::HostPortName;

use crate::declared::{DeclaredPorts, PodPorts};

/// How long a reservation may wait for its HostPort to show up in the watch before it is
/// forgotten (the create failed in a way we did not see, or another controller holds it).
pub const RESERVATION_TTL: Duration = Duration::from_secs(60);

/// A HostPort as the book keeps it, under its name: the controller's HostPort cache.
fn cached_of(host_port: &HostPort) -> (HostPortName, Box<CachedHostPort>) {
    (
        HostPortName::new(&host_port.name_any()),
        Box::new(CachedHostPort::compact(host_port)),
    )
}

/// The names of a claim's HostPorts: one (kept inline, no allocation per claim) or a block's.
#[derive(Debug)]
enum ClaimNames {
    One(HostPortName),
    Many(Vec<HostPortName>),
}

impl ClaimNames {
    fn as_slice(&self) -> &[HostPortName] {
        match self {
            Self::One(name) => std::slice::from_ref(name),
            Self::Many(names) => names,
        }
    }

    fn add(&mut self, name: HostPortName) {
        if self.as_slice().contains(&name) {
            return;
        }
        match self {
            Self::One(first) => *self = Self::Many(vec![first.clone(), name]),
            Self::Many(names) => names.push(name),
        }
    }

    /// Removes `name`; whether any name is left.
    fn remove(&mut self, name: &HostPortName) -> bool {
        match self {
            Self::One(only) => only != name,
            Self::Many(names) => {
                names.retain(|n| n != name);
                !names.is_empty()
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Reservation {
    claim_uid: Option<Uid>,
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
    /// Every HostPort: the book is also the controller's HostPort cache (one copy of each,
    /// not a cache and a book's own copy of names and claims).
    /// Boxed: a table sized for 64,512 entries has room for twice as many, and empty room
    /// costs a pointer per slot instead of a whole HostPort.
    host_ports: HashMap<HostPortName, Box<CachedHostPort>>,
    /// Claim UID → its HostPorts' names (almost always one: a `Vec`, not a tree).
    by_claim: HashMap<Uid, ClaimNames>,
    reserved: HashMap<u16, Reservation>,
    /// Filled during a (re)list, swapped in when the list is complete.
    relisting: Option<Vec<(HostPortName, Box<CachedHostPort>)>>,
    synced: bool,
    /// Host ports of live pods (kept across relists of HostPorts).
    pods: DeclaredPorts,
}

impl PortBook {
    /// Whether the book has been built from complete lists of HostPorts and pods.
    pub fn is_synced(&self) -> bool {
        self.synced && self.pods.is_synced()
    }

    /// Keeps `used` equal to held ∪ reserved ∪ declared for `port`.
    fn mark(&mut self, port: u16) {
        if self.holders.contains_key(&port)
            || self.reserved.contains_key(&port)
            || self.pods.contains(port)
        {
            self.used.insert(port);
        } else {
            self.used.remove(port);
        }
    }

    /// A pod was created or changed (`ports`: what it declares now, `None` when gone,
    /// finished or declaring nothing); returns the ports that became declared or free.
    pub fn set_pod(&mut self, key: &str, ports: Option<PodPorts>) -> Vec<u16> {
        let changed = self.pods.set(ports, key);
        changed.iter().for_each(|port| self.mark(*port));
        changed
    }

    /// A (re)list of pods starts.
    pub fn pods_relist_start(&mut self) {
        self.pods.relist_start();
    }

    /// One pod of a (re)list.
    pub fn pods_relist_apply(&mut self, ports: Option<PodPorts>) {
        self.pods.relist_apply(ports);
    }

    /// The (re)list of pods is complete; returns the ports that changed.
    pub fn pods_relist_done(&mut self) -> Vec<u16> {
        let changed = self.pods.relist_done();
        changed.iter().for_each(|port| self.mark(*port));
        changed
    }

    /// Whether `port` may go to the claim `namespace/claim`: no HostPort holds it, nobody
    /// reserved it, and every live pod declaring it holds it through that very claim (a claim
    /// whose HostPort vanished gets the port its pods use back).
    pub fn is_free_for(&self, port: u16, namespace: &str, claim: &str) -> bool {
        !self.holders.contains_key(&port)
            && !self.reserved.contains_key(&port)
            && self
                .pods
                .pods_on(port)
                .all(|p| p.uses_claim(namespace, claim))
    }

    /// Whether a live pod declares `port`.
    pub fn is_declared(&self, port: u16) -> bool {
        self.pods.contains(port)
    }

    /// Whether a HostPort holds `port`.
    pub fn is_held(&self, port: u16) -> bool {
        self.holders.contains_key(&port)
    }

    /// The live pods declaring `port` that do not hold it through the claim of a HostPort on
    /// it: ports in use outside the allocator's books.
    pub fn outside_users(&self, port: u16) -> Vec<&PodPorts> {
        let claims: Vec<(&str, &str)> = self
            .host_ports
            .values()
            .filter(|host_port| host_port.port() == Some(port))
            .filter_map(|host_port| host_port.claim_key())
            .collect();
        self.outside_of(port, &claims)
    }

    /// The pods declaring `port` that name none of `claims` (those of the HostPorts on it).
    fn outside_of<'a>(&'a self, port: u16, claims: &[(&str, &str)]) -> Vec<&'a PodPorts> {
        self.pods
            .pods_on(port)
            .filter(|pod| !claims.iter().any(|(ns, claim)| pod.uses_claim(ns, claim)))
            .collect()
    }

    /// The ports of `ranges` in use outside the books (see [`Self::outside_users`]), sorted,
    /// each with the first such pod by key. One pass over the HostPorts, not one per port: a
    /// class status is computed on every pod change that touches its pools.
    pub fn outside_in(&self, ranges: &[PortRange]) -> Vec<(u16, &PodPorts)> {
        let mut claims_on: HashMap<u16, Vec<(&str, &str)>> = HashMap::new();
        for host_port in self.host_ports.values() {
            if let (Some(port), Some(claim)) = (host_port.port(), host_port.claim_key()) {
                claims_on.entry(port).or_default().push(claim);
            }
        }
        let mut found: Vec<(u16, &PodPorts)> = self
            .pods
            .ports()
            .filter(|port| ranges.iter().any(|r| r.contains(*port)))
            .filter_map(|port| {
                let claims = claims_on.get(&port).map(Vec::as_slice).unwrap_or_default();
                let users = self.outside_of(port, claims);
                users.into_iter().min_by_key(|p| p.key()).map(|p| (port, p))
            })
            .collect();
        found.sort_by_key(|(port, _)| *port);
        found
    }

    /// A (re)list starts: HostPorts arrive through `relist_apply`, then `relist_done`.
    pub fn relist_start(&mut self) {
        self.relisting = Some(vec![]);
    }

    /// One HostPort of a (re)list.
    pub fn relist_apply(&mut self, host_port: &HostPort) {
        match &mut self.relisting {
            Some(list) => list.push(cached_of(host_port)),
            None => self.apply(host_port),
        }
    }

    /// The (re)list is complete: the book becomes exactly what it listed (plus reservations).
    pub fn relist_done(&mut self) {
        let listed = self.relisting.take().unwrap_or_default();
        let reserved = std::mem::take(&mut self.reserved);
        let pods = std::mem::take(&mut self.pods);
        *self = PortBook {
            pods,
            ..PortBook::default()
        };
        let declared: Vec<u16> = self.pods.ports().collect();
        for port in declared {
            self.used.insert(port);
        }
        for (name, host_port) in listed {
            self.insert(name, host_port);
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
        let (name, host_port) = cached_of(host_port);
        self.insert(name, host_port);
    }

    fn insert(&mut self, name: HostPortName, host_port: Box<CachedHostPort>) {
        if self.host_ports.get(&name) == Some(&host_port) {
            return;
        }
        self.forget(&name);
        if let Some(port) = host_port.port() {
            *self.holders.entry(port).or_default() += 1;
            self.used.insert(port);
            self.reserved.remove(&port);
        }
        if let Some(uid) = host_port.claim_uid() {
            match self.by_claim.get_mut(uid) {
                Some(names) => names.add(name.clone()),
                None => {
                    self.by_claim
                        .insert(uid.clone(), ClaimNames::One(name.clone()));
                }
            }
        }
        self.host_ports.insert(name, host_port);
    }

    /// A HostPort is gone.
    pub fn delete(&mut self, name: &str) {
        self.forget(&HostPortName::new(name));
    }

    fn forget(&mut self, name: &HostPortName) {
        let Some(host_port) = self.host_ports.remove(name) else {
            return;
        };
        if let Some(port) = host_port.port()
            && let Some(count) = self.holders.get_mut(&port)
        {
            *count -= 1;
            if *count == 0 {
                self.holders.remove(&port);
                self.mark(port);
            }
        }
        if let Some(uid) = host_port.claim_uid()
            && let Some(names) = self.by_claim.get_mut(uid)
            && !names.remove(name)
        {
            self.by_claim.remove(uid);
        }
    }

    /// Whether `port` is held, reserved or declared by a live pod.
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

    /// Reserves the lowest block of `count` free ports aligned to `alignment` inside one of
    /// `ranges` for `claim_uid`; returns its first port.
    pub fn reserve_lowest_run(
        &mut self,
        ranges: &[PortRange],
        count: u16,
        alignment: u16,
        claim_uid: &str,
        now: Instant,
    ) -> Option<u16> {
        self.expire(now);
        let base = self.used.lowest_free_run(ranges, count, alignment)?;
        for port in (0..count).filter_map(|i| base.checked_add(i)) {
            self.reserve(port, Some(claim_uid), now);
        }
        Some(base)
    }

    /// Marks `port` reserved (for a claim, or `None`: held by someone we have not seen yet,
    /// learned from a 409).
    pub fn reserve(&mut self, port: u16, claim_uid: Option<&str>, now: Instant) {
        self.used.insert(port);
        self.reserved.insert(
            port,
            Reservation {
                claim_uid: claim_uid.map(Uid::new),
                expires: now + RESERVATION_TTL,
            },
        );
    }

    /// Drops a reservation whose HostPort was not created.
    pub fn release(&mut self, port: u16) {
        if self.reserved.remove(&port).is_some() {
            self.mark(port);
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
        self.of_claim_uid(&Uid::new(claim_uid))
    }

    /// [`Self::of_claim`] for a UID as the caches keep it.
    pub fn of_claim_uid(&self, claim_uid: &Uid) -> (Vec<ClaimHostPort>, Option<u16>) {
        let cached = self
            .by_claim
            .get(claim_uid)
            .map(ClaimNames::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|name| ClaimHostPort {
                name: name.to_string(),
                port: self.host_ports.get(name).and_then(|h| h.port()),
            })
            .collect();
        let reserved = self
            .reserved
            .iter()
            .find(|(_, r)| r.claim_uid.as_ref() == Some(claim_uid))
            .map(|(port, _)| *port);
        (cached, reserved)
    }

    /// The HostPort `name`, as cached.
    pub fn host_port(&self, name: &str) -> Option<&CachedHostPort> {
        self.host_ports.get(&HostPortName::new(name)).map(|h| &**h)
    }

    /// How many HostPorts are cached.
    pub fn host_port_count(&self) -> usize {
        self.host_ports.len()
    }

    /// Every cached HostPort, in no particular order.
    pub fn host_ports(&self) -> impl Iterator<Item = (&HostPortName, &CachedHostPort)> {
        self.host_ports.iter().map(|(name, h)| (name, &**h))
    }

    /// Ports of the union of `ranges` that are used.
    pub fn used_in(&self, ranges: &[PortRange]) -> u32 {
        self.used.count_in_all(ranges)
    }
}

/// The HostPort watch feeds the book as its cache.
impl CacheWriter<HostPort> for PortBook {
    fn apply_event(&mut self, event: &watcher::Event<HostPort>) {
        match event {
            watcher::Event::Init => self.relist_start(),
            watcher::Event::InitApply(host_port) => self.relist_apply(host_port),
            watcher::Event::InitDone => self.relist_done(),
            watcher::Event::Apply(host_port) => self.apply(host_port),
            watcher::Event::Delete(host_port) => self.delete(&host_port.name_any()),
        }
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
        assert!(!book.is_synced(), "the pods are not listed yet");
        book.pods_relist_start();
        book.pods_relist_done();
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

    fn pod(name: &str, ports: &[u16], claims: &[&str]) -> PodPorts {
        PodPorts {
            namespace: "team".into(),
            name: name.into(),
            node: Some("n1".into()),
            ports: ports.to_vec(),
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn synced() -> PortBook {
        let mut book = PortBook::default();
        book.relist_start();
        book.relist_done();
        book.pods_relist_start();
        book.pods_relist_done();
        book
    }

    #[test]
    fn ports_pods_declare_are_never_handed_out() {
        let mut book = synced();
        assert_eq!(
            book.set_pod("team/squatter", Some(pod("squatter", &[9000], &[]))),
            vec![9000]
        );
        let now = Instant::now();
        assert_eq!(book.reserve_lowest(&pool(), "a", now), Some(9001));
        assert!(!book.is_free_for(9000, "team", "web"));
        let outside = book.outside_in(&pool());
        assert_eq!(outside.len(), 1);
        assert_eq!(
            (outside[0].0, outside[0].1.name.as_str()),
            (9000, "squatter")
        );
        // Gone: the port is free again.
        assert_eq!(book.set_pod("team/squatter", None), vec![9000]);
        assert!(!book.is_used(9000));
        assert!(book.outside_in(&pool()).is_empty());
    }

    #[test]
    fn a_pod_using_its_claims_port_is_inside_the_books() {
        let mut book = synced();
        let mut held = host_port("port-9002", Some(9002), None, "uid-web");
        if let Some(claim) = held.spec.claim_ref.as_mut() {
            claim.namespace = Some("team".into());
            claim.name = Some("web".into());
        }
        book.apply(&held);
        book.set_pod("team/user", Some(pod("user", &[9002], &["web"])));
        assert!(
            book.outside_in(&pool()).is_empty(),
            "held through its claim"
        );
        book.set_pod("team/other", Some(pod("other", &[9002], &["db"])));
        let outside: Vec<&str> = book
            .outside_users(9002)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(outside, vec!["other"]);
        // The HostPort vanished: the port goes back to the claim its pod uses, not to others.
        book.delete("port-9002");
        book.set_pod("team/other", None);
        assert!(book.is_used(9002), "the pod still declares it");
        assert!(book.is_free_for(9002, "team", "web"));
        assert!(!book.is_free_for(9002, "team", "db"));
        // A HostPort relist keeps the pods' ports.
        book.relist_start();
        book.relist_done();
        assert!(book.is_used(9002));
        assert!(book.is_synced());
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

    #[test]
    fn a_blocks_host_ports_are_found_by_their_claim_until_the_last_goes() {
        let uid = "0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56ef";
        let mut book = PortBook::default();
        for port in 9000..9003 {
            let name = HostPort::name_for_port(port);
            book.apply(&host_port(&name, Some(i32::from(port)), None, uid));
            // A repeated event changes nothing.
            book.apply(&host_port(&name, Some(i32::from(port)), None, uid));
        }
        let names = |book: &PortBook| -> Vec<(String, Option<u16>)> {
            let mut found: Vec<_> = book
                .of_claim(uid)
                .0
                .into_iter()
                .map(|h| (h.name, h.port))
                .collect();
            found.sort();
            found
        };
        assert_eq!(
            names(&book),
            [9000, 9001, 9002].map(|p| (format!("port-{p}"), Some(p)))
        );
        book.delete("port-9001");
        assert_eq!(
            names(&book),
            [9000, 9002].map(|p| (format!("port-{p}"), Some(p)))
        );
        book.delete("port-9000");
        book.delete("port-9002");
        assert_eq!(names(&book), []);
        assert!(book.by_claim.is_empty());
        assert_eq!(book.host_port_count(), 0);
        // A single port's claim, and a Go-era name.
        book.apply(&host_port("hpc-x", Some(9003), None, "x"));
        assert_eq!(
            book.of_claim("x").0,
            vec![ClaimHostPort {
                name: "hpc-x".into(),
                port: Some(9003)
            }]
        );
        assert_eq!(
            book.host_port("hpc-x").and_then(CachedHostPort::port),
            Some(9003)
        );
    }
}
