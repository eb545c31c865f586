//! Objects, the revision counter (etcd's role: every write bumps one global
//! `resourceVersion`) and the event log that watches resume from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::registry::ResourceKey;

/// `(namespace or "", name)`.
pub type ObjectKey = (String, String);

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Changed (including getting a deletionTimestamp).
    Modified,
    /// Removed from the store.
    Deleted,
}

/// One write, as watches see it.
#[derive(Debug)]
pub struct LogEntry {
    /// Revision of the write (the object's new `resourceVersion`).
    pub revision: u64,
    /// Which resource.
    pub resource: ResourceKey,
    /// Namespace of the object ("" for cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventKind,
    /// The object after the write (for `Deleted`: as it was, with the new revision).
    pub object: Arc<Value>,
    /// The object before the write, if it existed (selector-filtered watches need it).
    pub old: Option<Arc<Value>>,
}

/// A live watch: the store pushes every entry of its resource (and namespace) to it.
#[derive(Debug)]
pub struct WatchSubscription {
    resource: ResourceKey,
    namespace: Option<String>,
    sender: mpsc::UnboundedSender<Arc<LogEntry>>,
}

/// What a new watch gets: the logged writes it missed, then live writes.
pub type Subscription = (Vec<Arc<LogEntry>>, mpsc::UnboundedReceiver<Arc<LogEntry>>);

/// Default number of writes a watch can resume across before it gets 410 Gone.
pub const DEFAULT_LOG_CAPACITY: usize = 50_000;

/// The object store.
#[derive(Debug)]
pub struct Store {
    revision: u64,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Arc<Value>>>,
    log: VecDeque<Arc<LogEntry>>,
    log_capacity: usize,
    /// Highest revision dropped from the log: resuming at or after it is possible.
    compacted: u64,
    watches: Vec<WatchSubscription>,
}

impl Default for Store {
    fn default() -> Self {
        Self::with_log_capacity(DEFAULT_LOG_CAPACITY)
    }
}

/// Why a watch cannot resume from a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// Oldest revision still resumable.
    pub oldest: u64,
}

impl Store {
    /// A store whose watch log keeps `capacity` writes.
    pub fn with_log_capacity(capacity: usize) -> Self {
        Self {
            revision: 1,
            objects: HashMap::new(),
            log: VecDeque::new(),
            log_capacity: capacity.max(1),
            compacted: 0,
            watches: vec![],
        }
    }

    /// The current revision (what a list returns as its `resourceVersion`).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The next revision; the caller stamps it on the object it is about to write.
    pub fn next_revision(&self) -> u64 {
        self.revision + 1
    }

    /// One object.
    pub fn get(&self, resource: &ResourceKey, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(resource)?.get(key).cloned()
    }

    /// Every object of a resource, optionally in one namespace, in name order.
    pub fn list(&self, resource: &ResourceKey, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objects) = self.objects.get(resource) else {
            return vec![];
        };
        match namespace {
            Some(ns) => objects
                .range((ns.to_owned(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => objects.values().cloned().collect(),
        }
    }

    /// Up to `limit` objects (0: all) of a resource, optionally in one namespace, in key
    /// order after the key `after` (exclusive), that `keep` accepts; with the key of the
    /// last one returned when more follow (a list page and its continue point). A page costs
    /// its own length, not the whole collection's, as kube-apiserver's watch cache serves it.
    pub fn page(
        &self,
        resource: &ResourceKey,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Arc<Value>>, Option<ObjectKey>) {
        let Some(objects) = self.objects.get(resource) else {
            return (vec![], None);
        };
        use std::ops::Bound;
        let start = match (after, namespace) {
            (Some(after), _) => Bound::Excluded(after.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut items = vec![];
        let mut last = None;
        for ((ns, name), object) in objects.range((start, Bound::Unbounded)) {
            if namespace.is_some_and(|wanted| wanted != ns) {
                break;
            }
            if !keep(object) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                return (items, last);
            }
            items.push(object.clone());
            last = Some((ns.clone(), name.clone()));
        }
        (items, None)
    }

    /// Number of objects of a resource in a namespace.
    pub fn count_in_namespace(&self, namespace: &str) -> usize {
        self.objects
            .values()
            .map(|objects| {
                objects
                    .range((namespace.to_owned(), String::new())..)
                    .take_while(|((n, _), _)| n == namespace)
                    .count()
            })
            .sum()
    }

    /// Stores `object` (already stamped with `next_revision()`), logs and broadcasts the write.
    pub fn put(
        &mut self,
        resource: &ResourceKey,
        key: ObjectKey,
        object: Value,
        kind: EventKind,
    ) -> Arc<Value> {
        self.revision += 1;
        let object = Arc::new(object);
        let old = self
            .objects
            .entry(resource.clone())
            .or_default()
            .insert(key.clone(), object.clone());
        self.record(resource, key.0, kind, object.clone(), old);
        object
    }

    /// Removes an object; the DELETED event carries it stamped with a new revision.
    pub fn remove(&mut self, resource: &ResourceKey, key: &ObjectKey) -> Option<Arc<Value>> {
        let old = self.objects.get_mut(resource)?.remove(key)?;
        self.revision += 1;
        let mut gone = (*old).clone();
        gone["metadata"]["resourceVersion"] = Value::String(self.revision.to_string());
        let gone = Arc::new(gone);
        self.record(
            resource,
            key.0.clone(),
            EventKind::Deleted,
            gone.clone(),
            Some(old),
        );
        Some(gone)
    }

    /// Removes every object of a resource (its CRD went away), without events.
    pub fn drop_resource(&mut self, resource: &ResourceKey) {
        self.objects.remove(resource);
        self.watches.retain(|w| &w.resource != resource);
    }

    fn record(
        &mut self,
        resource: &ResourceKey,
        namespace: String,
        kind: EventKind,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let entry = Arc::new(LogEntry {
            revision: self.revision,
            resource: resource.clone(),
            namespace,
            kind,
            object,
            old,
        });
        self.watches.retain(|w| {
            if &w.resource != resource
                || w.namespace
                    .as_ref()
                    .is_some_and(|ns| *ns != entry.namespace)
            {
                return !w.sender.is_closed();
            }
            w.sender.send(entry.clone()).is_ok()
        });
        self.log.push_back(entry);
        while self.log.len() > self.log_capacity {
            if let Some(dropped) = self.log.pop_front() {
                self.compacted = dropped.revision;
            }
        }
    }

    /// Forgets the whole watch log, so any watch resuming from an earlier revision gets 410
    /// Gone (as after an etcd compaction).
    pub fn compact(&mut self) {
        self.compacted = self.revision;
        self.log.clear();
    }

    /// Subscribes to the writes after `from` (`None`: only future writes); returns the
    /// logged writes after `from` that match, then live ones through the receiver.
    pub fn subscribe(
        &mut self,
        resource: &ResourceKey,
        namespace: Option<&str>,
        from: Option<u64>,
    ) -> Result<Subscription, TooOld> {
        let backlog = match from {
            Some(revision) if revision < self.compacted => {
                return Err(TooOld {
                    oldest: self.compacted,
                });
            }
            Some(revision) => self
                .log
                .iter()
                .filter(|e| {
                    e.revision > revision
                        && &e.resource == resource
                        && namespace.is_none_or(|ns| ns == e.namespace)
                })
                .cloned()
                .collect(),
            None => vec![],
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        self.watches.push(WatchSubscription {
            resource: resource.clone(),
            namespace: namespace.map(str::to_owned),
            sender,
        });
        Ok((backlog, receiver))
    }

    /// Ends every live watch (clients see the stream close and re-watch).
    pub fn close_watches(&mut self) {
        self.watches.clear();
    }

    /// Number of live watches.
    pub fn watch_count(&self) -> usize {
        self.watches
            .iter()
            .filter(|w| !w.sender.is_closed())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_every_object_once_in_key_order() {
        let mut store = Store::default();
        let resource: ResourceKey = ("".into(), "configmaps".into());
        // "a-b/…" sorts before "a/…" as text but after it as a (namespace, name) key.
        for (namespace, name) in [("a", "x"), ("a", "y"), ("a-b", "x"), ("b", "z")] {
            let key = (namespace.to_owned(), name.to_owned());
            let object = serde_json::json!({"metadata": {"namespace": namespace, "name": name}});
            store.put(&resource, key, object, EventKind::Added);
        }
        let mut seen = vec![];
        let mut after = None;
        loop {
            let (items, next) = store.page(&resource, None, after.as_ref(), 1, |_| true);
            seen.extend(items.iter().map(|o| o["metadata"]["name"].to_string()));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["\"x\"", "\"y\"", "\"x\"", "\"z\""]);
        let (in_a, next) = store.page(&resource, Some("a"), None, 0, |_| true);
        assert_eq!((in_a.len(), next), (2, None), "one namespace only");
        let (none, _) = store.page(&resource, None, None, 0, |o| o["metadata"]["name"] == "q");
        assert!(none.is_empty(), "filtered");
    }
}
