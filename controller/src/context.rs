//! What every reconcile shares: the client, the watch-fed caches, the port book, metrics,
//! the Event recorder, and the channels that let one kind of object wake another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use tokio::sync::mpsc::UnboundedSender;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::port_book::PortBook;
use crate::superseded::Superseded;
use hostport_process::events::{EventType, Recorder};

/// Default [`Settings::admission_grace`]: twice the webhook's `timeoutSeconds` (5 s in
/// `config/`), for the rest of the admission chain.
pub const DEFAULT_ADMISSION_GRACE: Duration = Duration::from_secs(10);

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// At most one pass (and status write) per class per this interval (bursts of bindings
    /// are coalesced into one).
    pub class_status_interval: Duration,
    /// Name written as the Events' reporting controller.
    pub reporter: String,
    /// Instance name (Events' reporting instance, leader election identity).
    pub identity: String,
    /// How long a claim the webhook made for a pod waits for that pod before it is deleted
    /// as never used.
    pub pod_claim_grace: Duration,
    /// How long a deleted claim keeps its port before the final check for pods using it:
    /// the longest a pod admission that read the port before the deletion can take to store
    /// its pod (the webhook's `timeoutSeconds` plus the rest of the admission chain).
    pub admission_grace: Duration,
    /// The cluster's NodePort Service range (kube-apiserver `--service-node-port-range`): a
    /// class whose pools overlap it gets a Warning condition.
    pub node_port_range: Option<hostport_api::ports::PortRange>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            class_status_interval: Duration::from_secs(1),
            reporter: "hostport-controller".into(),
            identity: "hostport-controller".into(),
            pod_claim_grace: Duration::from_secs(60),
            admission_grace: DEFAULT_ADMISSION_GRACE,
            node_port_range: hostport_api::ports::PortRange::new(30000, 32767),
        }
    }
}

/// The watch-fed caches.
#[derive(Clone, Debug)]
pub struct Caches {
    /// Every HostPortClaim.
    pub claims: hostport_process::compact::CompactStore<crate::cached::CachedClaim>,
    /// Every HostPortClass.
    pub classes: Store<HostPortClass>,
    /// Pods, as the questions of `crate::pods` read them.
    pub pods: hostport_process::compact::CompactStore<crate::pods::PodUse>,
}

/// Senders that queue a reconcile of an object.
#[derive(Clone, Debug)]
pub struct Triggers {
    /// Claims.
    pub claims: UnboundedSender<ObjectRef<HostPortClaim>>,
    /// The lifetime of claims made for pods.
    pub pod_claims: UnboundedSender<ObjectRef<HostPortClaim>>,
    /// HostPorts.
    pub host_ports: UnboundedSender<ObjectRef<HostPort>>,
    /// Classes.
    pub classes: UnboundedSender<ObjectRef<HostPortClass>>,
}

/// The queue key of `object`: its kind, namespace and name only (`ObjectRef::from_obj` also
/// copies its UID and version, which keys never compare: ~100 bytes per queued object).
pub fn key_of<K: Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let name = object.meta().name.as_deref().unwrap_or_default();
    match object.meta().namespace.as_deref() {
        Some(namespace) => ObjectRef::new(name).within(namespace),
        None => ObjectRef::new(name),
    }
}

/// Serializes the allocations of one (namespace, class) with a per-namespace limit.
pub type QuotaLock = Arc<tokio::sync::Mutex<()>>;

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub events: Recorder,
    /// Caches.
    pub caches: Caches,
    /// Ports taken, from the HostPort cache, plus this process's reservations.
    book: Mutex<PortBook>,
    /// Claims waiting for a port to free (PoolExhausted, PortUnavailable).
    waiting: Mutex<HashSet<ObjectRef<HostPortClaim>>>,
    /// Pod claims a pod that named them was seen leaving (deleted, or terminated): they need
    /// not wait out their grace period (see `pod_claims`). Taken by the next reconcile.
    pods_left: Mutex<HashSet<ObjectRef<HostPortClaim>>>,
    /// One lock per (namespace, class) with a per-namespace limit: such claims get ports
    /// one at a time.
    quota_locks: Mutex<HashMap<(String, String), QuotaLock>>,
    /// When each class's status was last written.
    class_status_written: Mutex<HashMap<String, Instant>>,
    /// Versions of objects this process has replaced with its own writes (recorded by
    /// `writes`): a cached copy at one of them is stale.
    pub(crate) superseded: Superseded,
    /// Retry delays after failed reconciles.
    pub backoff: Backoff,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Queues reconciles of related objects.
    pub triggers: Triggers,
    /// Tunables.
    pub settings: Settings,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Context {
    /// A context over the given caches.
    pub fn new(
        client: Client,
        caches: Caches,
        book: PortBook,
        metrics: Arc<Metrics>,
        triggers: Triggers,
        settings: Settings,
    ) -> Self {
        let events = Recorder::new(
            client.clone(),
            settings.reporter.clone(),
            settings.identity.clone(),
        );
        Self {
            client,
            events,
            caches,
            book: Mutex::new(book),
            waiting: Mutex::default(),
            pods_left: Mutex::default(),
            class_status_written: Mutex::default(),
            quota_locks: Mutex::default(),
            superseded: Superseded::default(),
            backoff: Backoff::default(),
            metrics,
            triggers,
            settings,
        }
    }

    /// The claim `namespace/name` as the cache has it.
    pub fn cached_claim(&self, namespace: &str, name: &str) -> Option<HostPortClaim> {
        self.caches
            .claims
            .get(namespace, name)
            .map(|cached| cached.to_claim(namespace, name))
    }

    /// The HostPort `name` as the cache has it.
    pub fn cached_host_port(&self, name: &str) -> Option<HostPort> {
        // The port book is the HostPort cache.
        self.book()
            .host_port(name)
            .map(|cached| cached.to_host_port(name))
    }

    /// The port book (held briefly, never across an await).
    pub fn book(&self) -> MutexGuard<'_, PortBook> {
        lock(&self.book)
    }

    /// The lock that serializes allocations of `class` in `namespace`.
    pub fn quota_lock(&self, namespace: &str, class: &str) -> QuotaLock {
        lock(&self.quota_locks)
            .entry((namespace.to_owned(), class.to_owned()))
            .or_default()
            .clone()
    }

    /// Remembers a claim that waits for a port to free.
    pub fn wait_for_port(&self, claim: ObjectRef<HostPortClaim>) {
        lock(&self.waiting).insert(claim);
    }

    /// Remembers that a pod naming the pod claim `claim` left (deleted or terminated).
    pub fn pod_left(&self, claim: ObjectRef<HostPortClaim>) {
        lock(&self.pods_left).insert(claim);
    }

    /// Whether a pod naming `claim` was seen leaving since the last call (and forgets it).
    pub fn take_pod_left(&self, claim: &ObjectRef<HostPortClaim>) -> bool {
        lock(&self.pods_left).remove(claim)
    }

    /// Queues every claim waiting for a port (a port was freed or a class grew).
    pub fn wake_waiting(&self) {
        let waiting = std::mem::take(&mut *lock(&self.waiting));
        for claim in waiting {
            let _ = self.triggers.claims.send(claim);
        }
    }

    /// Time left before `class`'s status may be computed again (`None`: now, and the pass is
    /// recorded as happening now).
    pub fn class_status_slot(&self, class: &str) -> Option<Duration> {
        let mut written = lock(&self.class_status_written);
        let now = Instant::now();
        if let Some(last) = written.get(class) {
            let next = *last + self.settings.class_status_interval;
            if next > now {
                return Some(next - now);
            }
        }
        written.insert(class.to_owned(), now);
        None
    }

    /// Whether `object` is a cached copy of a version we already wrote over (the watch has
    /// not caught up): acting on it would repeat work, so wait for the newer copy.
    pub fn is_stale<K: Resource<DynamicType = ()>>(&self, object: &K) -> bool {
        self.superseded.is_stale(object)
    }

    /// A watch delivered `object` (the record of our writes over it may go).
    pub fn arrived<K: Resource<DynamicType = ()>>(&self, object: &K) {
        self.superseded.arrived(object, Instant::now());
    }

    /// Publishes an Event about `object`; a failure is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.events
            .publish(object, type_, reason, action, note)
            .await;
    }
}
