//! The versions of objects this process has replaced with its own writes. A watch-fed cache
//! lags behind those writes; a reconcile handed a copy at one of these versions would repeat
//! work already done (or undo it), so it waits for the newer copy instead. A record goes as
//! soon as the watch delivers a newer copy (or after [`SUPERSEDED_TTL`]), so a burst of
//! bindings leaves nothing behind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hostport_process::ids::{ResourceVersion, Uid};
use kube::Resource;

use crate::context::lock;

/// How long a record of our own write is kept (a watch this late is broken anyway).
pub const SUPERSEDED_TTL: Duration = Duration::from_secs(60);

/// Written-over versions per object (keyed by UID: names are reused, UIDs are not).
#[derive(Debug, Default)]
pub struct Superseded {
    by_object: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    /// When each object was last written, and the versions written over (one or two: a
    /// claim's spec, then its status).
    versions: HashMap<Uid, (Instant, Vec<ResourceVersion>)>,
    /// When expired records were last dropped: at most once per [`PRUNE_EVERY`], not on
    /// every write (a sweep is O(records), tens of thousands while a fleet is bound).
    pruned_at: Option<Instant>,
}

/// How often expired records are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

fn object_key<K: Resource>(object: &K) -> Uid {
    let meta = object.meta();
    Uid::new(
        meta.uid
            .as_deref()
            .or(meta.name.as_deref())
            .unwrap_or_default(),
    )
}

impl Records {
    fn prune(&mut self, now: Instant) {
        if self
            .pruned_at
            .is_some_and(|at| now.duration_since(at) < PRUNE_EVERY)
        {
            return;
        }
        self.versions
            .retain(|_, (at, _)| now.duration_since(*at) < SUPERSEDED_TTL);
        // A burst of bindings grows the table to tens of thousands of records; give the room
        // back once they are gone.
        if self.versions.capacity() > 4 * self.versions.len().max(64) {
            self.versions.shrink_to_fit();
        }
        self.pruned_at = Some(now);
    }

    /// Whether `object` is at a version written over; a copy at any other version means the
    /// cache moved past our writes, and the record is dropped.
    fn check<K: Resource>(&mut self, object: &K) -> bool {
        let Some(version) = object.meta().resource_version.as_deref() else {
            return false;
        };
        let (key, version) = (object_key(object), ResourceVersion::new(version));
        match self.versions.get(&key) {
            Some((_, versions)) if versions.contains(&version) => true,
            Some(_) => {
                self.versions.remove(&key);
                false
            }
            None => false,
        }
    }
}

impl Superseded {
    /// Records that we wrote over `before` at `now` (its version is superseded).
    pub fn wrote_over<K: Resource>(&self, before: &K, now: Instant) {
        let Some(version) = before.meta().resource_version.as_deref() else {
            return;
        };
        let mut records = lock(&self.by_object);
        records.prune(now);
        let entry = records
            .versions
            .entry(object_key(before))
            .or_insert_with(|| (now, vec![]));
        entry.0 = now;
        entry.1.push(ResourceVersion::new(version));
    }

    /// Whether `object` is a copy at a version we already wrote over. A copy at any other
    /// version means the cache moved past our writes, and the record is dropped.
    pub fn is_stale<K: Resource>(&self, object: &K) -> bool {
        lock(&self.by_object).check(object)
    }

    /// A watch delivered `object` at `now`: once the cache holds a version we did not write
    /// over, the record has done its job (and goes now, not only when a reconcile asks).
    pub fn arrived<K: Resource>(&self, object: &K, now: Instant) {
        let mut records = lock(&self.by_object);
        if !records.versions.is_empty() {
            records.check(object);
            records.prune(now);
        }
    }

    /// How many objects have records (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.by_object).versions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::{HostPortClaim, HostPortClaimSpec};

    fn claim(uid: &str, version: &str) -> HostPortClaim {
        let spec = HostPortClaimSpec {
            host_port_class_name: "games".into(),
            host_port_name: None,
            port: None,
            port_policy: None,
            count: None,
            alignment: None,
        };
        let mut claim = HostPortClaim::new("web", spec);
        claim.metadata.uid = Some(uid.into());
        claim.metadata.resource_version = Some(version.into());
        claim
    }

    #[test]
    fn copies_at_written_over_versions_are_stale_until_a_newer_one_arrives() {
        let superseded = Superseded::default();
        let now = Instant::now();
        superseded.wrote_over(&claim("u1", "10"), now);
        superseded.wrote_over(&claim("u1", "11"), now);
        assert!(superseded.is_stale(&claim("u1", "10")));
        assert!(superseded.is_stale(&claim("u1", "11")));
        assert!(!superseded.is_stale(&claim("u2", "10")), "another object");
        assert!(
            !superseded.is_stale(&claim("u1", "12")),
            "the cache caught up"
        );
        assert!(
            !superseded.is_stale(&claim("u1", "10")),
            "after catching up the record is gone"
        );
    }

    #[test]
    fn records_expire_after_the_ttl() {
        let superseded = Superseded::default();
        let then = Instant::now();
        superseded.wrote_over(&claim("old", "1"), then);
        // Any later write sweeps records older than the TTL.
        superseded.wrote_over(&claim("new", "5"), then + SUPERSEDED_TTL);
        assert!(!superseded.is_stale(&claim("old", "1")));
        assert!(superseded.is_stale(&claim("new", "5")));
    }

    #[test]
    fn objects_without_a_version_are_never_stale() {
        let superseded = Superseded::default();
        let mut fresh = claim("u1", "1");
        fresh.metadata.resource_version = None;
        superseded.wrote_over(&fresh, Instant::now());
        assert!(!superseded.is_stale(&fresh));
    }

    #[test]
    fn a_newer_copy_arriving_drops_the_record_and_expired_ones_go_without_writes() {
        let superseded = Superseded::default();
        let then = Instant::now();
        superseded.wrote_over(&claim("u1", "10"), then);
        superseded.wrote_over(&claim("u2", "20"), then);
        superseded.arrived(&claim("u1", "10"), then);
        assert!(
            superseded.is_stale(&claim("u1", "10")),
            "our own write's copy"
        );
        superseded.arrived(&claim("u1", "11"), then);
        assert!(
            !superseded.is_stale(&claim("u1", "10")),
            "the cache caught up"
        );
        assert_eq!(superseded.len(), 1);
        // No more writes: an arrival sweeps what expired.
        superseded.arrived(&claim("u3", "1"), then + SUPERSEDED_TTL);
        assert_eq!(superseded.len(), 0);
    }

    #[test]
    fn the_room_of_a_burst_is_given_back() {
        let superseded = Superseded::default();
        let then = Instant::now();
        for i in 0..10_000 {
            superseded.wrote_over(&claim(&format!("u{i}"), "1"), then);
        }
        superseded.arrived(&claim("other", "1"), then + SUPERSEDED_TTL);
        let records = lock(&superseded.by_object);
        assert!(
            records.versions.capacity() < 1_000,
            "{}",
            records.versions.capacity()
        );
    }
}
