//! A watch-fed cache that keeps each object in a compact form of the consumer's choosing
//! instead of the API struct: what one binary reads of a kind, in a few hundred bytes, where
//! a stripped API struct in kube-runtime's `Store` costs ~1.5 KB (its layout, `ObjectMeta`'s
//! strings and a four-string `ObjectRef` key). At 64,512 claims and as many HostPorts that
//! is the difference between ~40 and ~200 MiB.
//!
//! Objects are looked up by namespace and name (cluster-scoped kinds: namespace `""`) and
//! iterated per namespace or all, under a short read lock that is never held across an
//! `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kube::runtime::watcher;
use kube::{Resource as _, ResourceExt};
use tokio::sync::watch;

use crate::Watched;

/// What a cache keeps of one object of `Source`.
pub trait Compact: Send + Sync + Sized + 'static {
    /// The API kind it is made from.
    type Source: Watched;

    /// The compact form of `source` (its namespace and name are the cache's key: they need
    /// not be kept again).
    fn compact(source: &Self::Source) -> Self;
}

/// Objects by name, in one namespace.
type Names<C> = HashMap<Box<str>, Arc<C>>;
/// Namespaces by name.
type Namespaces<C> = HashMap<Box<str>, Names<C>>;

/// A cache of compact objects; cheap to clone (every clone reads the same objects).
pub struct CompactStore<C> {
    objects: Arc<RwLock<Namespaces<C>>>,
    synced: watch::Receiver<bool>,
}

impl<C> Clone for CompactStore<C> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<C> std::fmt::Debug for CompactStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactStore")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<C> CompactStore<C> {
    fn read(&self) -> RwLockReadGuard<'_, Namespaces<C>> {
        // A writer that panicked left whole maps behind (each change is one insert or remove).
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The object `namespace/name` (`""` for a cluster-scoped kind).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<C>> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f` over every object of `namespace` with its name, under the read lock.
    pub fn fold_namespace<T>(
        &self,
        namespace: &str,
        init: T,
        mut f: impl FnMut(T, &str, &C) -> T,
    ) -> T {
        let objects = self.read();
        match objects.get(namespace) {
            Some(names) => names
                .iter()
                .fold(init, |acc, (name, object)| f(acc, name, object)),
            None => init,
        }
    }

    /// `f` over every object with its namespace and name, under the read lock.
    pub fn fold<T>(&self, init: T, mut f: impl FnMut(T, &str, &str, &C) -> T) -> T {
        let objects = self.read();
        objects.iter().fold(init, |acc, (namespace, names)| {
            names
                .iter()
                .fold(acc, |acc, (name, object)| f(acc, namespace, name, object))
        })
    }

    /// Every object, in no particular order (a snapshot: later changes do not reach it).
    pub fn all(&self) -> Vec<Arc<C>> {
        let objects = self.read();
        let mut all = Vec::with_capacity(objects.values().map(HashMap::len).sum());
        for names in objects.values() {
            all.extend(names.values().cloned());
        }
        all
    }

    /// Waits until the first complete list has been cached; `Err` if the feed is gone first.
    pub async fn wait_until_ready(&self) -> Result<(), watch::error::RecvError> {
        let mut synced = self.synced.clone();
        synced.wait_for(|synced| *synced).await.map(drop)
    }
}

/// Applies watcher events to a [`CompactStore`], as kube-runtime's reflector does for its
/// `Store`: a (re)list is built aside and swapped in whole when it completes, so readers
/// never see half a list, and objects gone during a watch outage leave with the swap.
pub struct CompactWriter<C> {
    objects: Arc<RwLock<Namespaces<C>>>,
    synced: watch::Sender<bool>,
    listing: Option<Namespaces<C>>,
}

impl<C> std::fmt::Debug for CompactWriter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactWriter")
            .field("listing", &self.listing.as_ref().map(HashMap::len))
            .finish_non_exhaustive()
    }
}

impl<C: Compact> CompactWriter<C> {
    fn write(&self) -> RwLockWriteGuard<'_, Namespaces<C>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &watcher::Event<C::Source>) {
        match event {
            watcher::Event::Init => self.listing = Some(Namespaces::default()),
            watcher::Event::InitApply(object) => {
                let listing = self.listing.get_or_insert_with(Namespaces::default);
                insert(listing, object);
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                *self.write() = listed;
                self.synced.send_replace(true);
            }
            watcher::Event::Apply(object) => insert(&mut self.write(), object),
            watcher::Event::Delete(object) => {
                let namespace = object.namespace().unwrap_or_default();
                let mut objects = self.write();
                if let Some(names) = objects.get_mut(namespace.as_str()) {
                    names.remove(object.name_any().as_str());
                    if names.is_empty() {
                        objects.remove(namespace.as_str());
                    }
                }
            }
        }
    }
}

/// A cache a watch feeds: kube-runtime's store of API structs, or a compact one.
pub trait CacheWriter<K> {
    /// Applies one watcher event.
    fn apply_event(&mut self, event: &watcher::Event<K>);
}

impl<K> CacheWriter<K> for kube::runtime::reflector::store::Writer<K>
where
    K: kube::Resource + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn apply_event(&mut self, event: &watcher::Event<K>) {
        self.apply_watcher_event(event);
    }
}

impl<C: Compact> CacheWriter<C::Source> for CompactWriter<C> {
    fn apply_event(&mut self, event: &watcher::Event<C::Source>) {
        self.apply(event);
    }
}

fn insert<C: Compact>(objects: &mut Namespaces<C>, object: &C::Source) {
    let namespace = object.namespace().unwrap_or_default();
    let names = match objects.get_mut(namespace.as_str()) {
        Some(names) => names,
        None => objects.entry(namespace.into_boxed_str()).or_default(),
    };
    names.insert(
        object.name_any().into_boxed_str(),
        Arc::new(C::compact(object)),
    );
}

/// An empty cache and its writer.
pub fn compact_store<C: Compact>() -> (CompactStore<C>, CompactWriter<C>) {
    let objects = Arc::new(RwLock::new(Namespaces::default()));
    let (synced_tx, synced_rx) = watch::channel(false);
    (
        CompactStore {
            objects: objects.clone(),
            synced: synced_rx,
        },
        CompactWriter {
            objects,
            synced: synced_tx,
            listing: None,
        },
    )
}

/// A watch-fed [`CompactStore`] of every `C::Source` `api` sees, and the future that keeps
/// it current: initial lists come in small pages (each page's API structs are dropped once
/// compacted); after each event has reached the cache `changes` is bumped (what waits for
/// objects to change waits on that). Watch errors are logged and the watch resumes with
/// backoff.
pub fn compact_cache<C: Compact>(
    api: kube::Api<C::Source>,
    config: watcher::Config,
    changes: watch::Sender<u64>,
) -> (CompactStore<C>, impl Future<Output = ()> + Send + 'static) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let (store, mut writer) = compact_store::<C>();
    let stream = watcher(api, crate::paged(config)).default_backoff();
    let feed = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    writer.apply(&event);
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(error) => {
                    tracing::warn!(%error, kind = %C::Source::kind(&()), "watch failed; retrying with backoff");
                }
            }
        }
    };
    (store, feed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event;

    /// A ConfigMap kept as the length of its `data["v"]`.
    struct Length(usize);

    impl Compact for Length {
        type Source = ConfigMap;
        fn compact(source: &ConfigMap) -> Self {
            Self(
                source
                    .data
                    .as_ref()
                    .and_then(|d| d.get("v"))
                    .map_or(0, String::len),
            )
        }
    }

    fn config_map(namespace: &str, name: &str, value: &str) -> ConfigMap {
        let mut map = ConfigMap::default();
        map.metadata.namespace = Some(namespace.into());
        map.metadata.name = Some(name.into());
        map.data = Some([("v".to_owned(), value.to_owned())].into());
        map
    }

    fn lengths(store: &CompactStore<Length>) -> Vec<(String, String, usize)> {
        let mut all = store.fold(vec![], |mut all, namespace, name, length| {
            all.push((namespace.to_owned(), name.to_owned(), length.0));
            all
        });
        all.sort();
        all
    }

    #[tokio::test]
    async fn a_list_is_seen_whole_once_done_and_then_kept_current() {
        let (store, mut writer) = compact_store::<Length>();
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(config_map("a", "x", "123")));
        assert!(store.is_empty(), "half a list is never visible");
        writer.apply(&Event::InitApply(config_map("b", "x", "1")));
        writer.apply(&Event::InitDone);
        store.wait_until_ready().await.expect("ready");
        assert_eq!(store.get("a", "x").map(|l| l.0), Some(3));
        assert_eq!(store.len(), 2);
        let mut all: Vec<usize> = store.all().iter().map(|l| l.0).collect();
        all.sort_unstable();
        assert_eq!(all, [1, 3]);

        writer.apply(&Event::Apply(config_map("a", "x", "12345")));
        writer.apply(&Event::Apply(config_map("a", "y", "")));
        assert_eq!(store.get("a", "x").map(|l| l.0), Some(5));
        assert_eq!(store.fold_namespace("a", 0, |n, _, _| n + 1), 2);

        writer.apply(&Event::Delete(config_map("b", "x", "")));
        assert!(store.get("b", "x").is_none());
        assert_eq!(
            lengths(&store),
            [("a".into(), "x".into(), 5), ("a".into(), "y".into(), 0)]
        );
    }

    #[test]
    fn a_relist_replaces_everything_so_objects_deleted_during_an_outage_leave() {
        let (store, mut writer) = compact_store::<Length>();
        for event in [
            Event::Init,
            Event::InitApply(config_map("a", "gone", "1")),
            Event::InitApply(config_map("a", "kept", "1")),
            Event::InitDone,
        ] {
            writer.apply(&event);
        }
        for event in [
            Event::Init,
            Event::InitApply(config_map("a", "kept", "22")),
            Event::InitDone,
        ] {
            writer.apply(&event);
        }
        assert_eq!(lengths(&store), [("a".into(), "kept".into(), 2)]);
    }

    #[test]
    fn deleting_what_is_not_cached_changes_nothing() {
        let (store, mut writer) = compact_store::<Length>();
        writer.apply(&Event::Apply(config_map("a", "x", "1")));
        writer.apply(&Event::Delete(config_map("a", "other", "")));
        writer.apply(&Event::Delete(config_map("elsewhere", "x", "")));
        assert_eq!(lengths(&store), [("a".into(), "x".into(), 1)]);
    }
}
