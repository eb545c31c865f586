//! The versions of objects this process has replaced with its own writes. A watch-fed cache
//! lags behind those writes; a reconcile handed a copy at one of these versions would repeat
//! work already done (or undo it), so it waits for the newer copy instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    versions: HashMap<String, (Instant, Vec<String>)>,
    /// When expired records were last dropped: at most once per [`PRUNE_EVERY`], not on
    /// every write (a sweep is O(records), tens of thousands while a fleet is bound).
    pruned_at: Option<Instant>,
}

/// How often expired records are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

fn object_key<K: Resource>(object: &K) -> String {
    object
        .meta()
        .uid
        .clone()
        .unwrap_or_else(|| object.meta().name.clone().unwrap_or_default())
}

impl Superseded {
    /// Records that we wrote over `before` at `now` (its version is superseded).
    pub fn wrote_over<K: Resource>(&self, before: &K, now: Instant) {
        let Some(version) = before.meta().resource_version.clone() else {
            return;
        };
        let mut records = lock(&self.by_object);
        if records
            .pruned_at
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            records
                .versions
                .retain(|_, (at, _)| now.duration_since(*at) < SUPERSEDED_TTL);
            records.pruned_at = Some(now);
        }
        let entry = records
            .versions
            .entry(object_key(before))
            .or_insert_with(|| (now, vec![]));
        entry.0 = now;
        entry.1.push(version);
    }

    /// Whether `object` is a copy at a version we already wrote over. A copy at any other
    /// version means the cache moved past our writes, and the record is dropped.
    pub fn is_stale<K: Resource>(&self, object: &K) -> bool {
        let Some(version) = object.meta().resource_version.as_deref() else {
            return false;
        };
        let key = object_key(object);
        let mut records = lock(&self.by_object);
        match records.versions.get(&key) {
            Some((_, versions)) if versions.iter().any(|v| v == version) => true,
            Some(_) => {
                records.versions.remove(&key);
                false
            }
            None => false,
        }
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
}
