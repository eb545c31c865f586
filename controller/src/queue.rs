//! The reconcile queue of one kind: what kube-runtime's `applier` does for the controller
//! (each object reconciled once per burst of triggers, never two reconciles of one object at
//! once, requeues after a delay, a bound on reconciles in flight), over any key and any
//! lookup. kube-runtime's scheduler and runner are private and its `applier` hands each
//! reconcile the object from a `Store` of API structs; with a lookup of our own the caches
//! can keep compact forms instead. Its maps also give their room back once a burst is over
//! (a full class queues 64,512 claims at start-up).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// What to do after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile the object again after `delay`, unless a trigger comes sooner.
    #[must_use]
    pub const fn requeue(delay: Duration) -> Self {
        Self {
            requeue_after: Some(delay),
        }
    }

    /// Reconcile the object again only when a trigger names it.
    #[must_use]
    pub const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }
}

/// A reconcile in flight: its key and, once done, its action.
type InFlight<Key> = Pin<Box<dyn Future<Output = (Key, Action)> + Send>>;

/// Room a drained map keeps; beyond it, a map with less than a quarter in use shrinks.
const KEEP_ROOM: usize = 1024;

/// The room a collection holding `len` in `capacity` shrinks to, if it keeps too much.
fn shrunk(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEEP_ROOM && len < capacity / 4).then(|| KEEP_ROOM.max(len * 2))
}

/// Which keys wait, run and are due later.
struct Queue<Key> {
    /// Keys to reconcile now, in trigger order; each at most once (`ready_set`).
    ready: VecDeque<Key>,
    ready_set: HashSet<Key>,
    /// Keys with a reconcile in flight.
    running: HashSet<Key>,
    /// Running keys triggered again meanwhile: reconciled once more when they finish.
    again: HashSet<Key>,
    /// Each delayed key's due time (the earliest asked for).
    due: HashMap<Key, Instant>,
    /// The same by time; an entry whose time is no longer the key's `due` is stale.
    timers: BTreeMap<(Instant, u64), Key>,
    next_timer: u64,
}

impl<Key: Clone + Eq + Hash> Queue<Key> {
    fn new() -> Self {
        Self {
            ready: VecDeque::new(),
            ready_set: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
            due: HashMap::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
        }
    }

    /// `key` is to be reconciled now (a trigger, or its time came).
    fn wake(&mut self, key: Key) {
        self.due.remove(&key);
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.ready_set.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// `key` is to be reconciled at `at`, unless it is due sooner already.
    fn schedule(&mut self, key: Key, at: Instant) {
        if self.ready_set.contains(&key) || self.due.get(&key).is_some_and(|due| *due <= at) {
            return;
        }
        self.due.insert(key.clone(), at);
        self.timers.insert((at, self.next_timer), key);
        self.next_timer += 1;
    }

    /// When the next timer fires.
    fn next_due(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Wakes the keys due by `now`.
    fn fire(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), key) = entry.remove_entry();
            if self.due.get(&key) == Some(&at) {
                self.wake(key);
            }
        }
    }

    /// The next key to start, marked running.
    fn start(&mut self) -> Option<Key> {
        let key = self.ready.pop_front()?;
        self.ready_set.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// `key`'s reconcile ended with `action`.
    fn finished(&mut self, key: Key, action: Action, now: Instant) {
        self.running.remove(&key);
        if self.again.remove(&key) {
            self.wake(key);
        } else if let Some(delay) = action.requeue_after {
            self.schedule(key, now + delay);
        }
        self.shrink();
    }

    /// Gives back the room of a burst that is over.
    fn shrink(&mut self) {
        for set in [&mut self.ready_set, &mut self.running, &mut self.again] {
            if let Some(room) = shrunk(set.len(), set.capacity()) {
                set.shrink_to(room);
            }
        }
        if let Some(room) = shrunk(self.due.len(), self.due.capacity()) {
            self.due.shrink_to(room);
        }
        if let Some(room) = shrunk(self.ready.len(), self.ready.capacity()) {
            self.ready.shrink_to(room);
        }
    }

    fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.running.is_empty() && self.timers.is_empty()
    }
}

/// Reconciles the objects `triggers` name: each key is looked up with `lookup` when its turn
/// comes (`None`: the object is gone, nothing to do) and handed to `reconcile`, at most
/// `concurrency` at once. Returns once `triggers` is closed and nothing is left to do.
pub async fn run<Key, Object, Fut>(
    mut triggers: UnboundedReceiver<Key>,
    lookup: impl Fn(&Key) -> Option<Object>,
    reconcile: impl Fn(Object) -> Fut,
    concurrency: usize,
) where
    Key: Clone + Eq + Hash + Send + 'static,
    Fut: Future<Output = Action> + Send + 'static,
{
    let concurrency = concurrency.max(1);
    let mut queue = Queue::new();
    let mut in_flight: FuturesUnordered<InFlight<Key>> = FuturesUnordered::new();
    let mut open = true;
    loop {
        while in_flight.len() < concurrency {
            let Some(key) = queue.start() else {
                break;
            };
            match lookup(&key) {
                Some(object) => {
                    let done = reconcile(object);
                    in_flight.push(Box::pin(async move { (key, done.await) }));
                }
                // Gone since it was triggered: nothing to reconcile.
                None => queue.finished(key, Action::await_change(), Instant::now()),
            }
        }
        if !open && in_flight.is_empty() && queue.is_idle() {
            return;
        }
        let next_due = queue.next_due();
        tokio::select! {
            trigger = triggers.recv(), if open => match trigger {
                Some(key) => queue.wake(key),
                None => open = false,
            },
            Some((key, action)) = in_flight.next(), if !in_flight.is_empty() => {
                queue.finished(key, action, Instant::now());
            }
            () = sleep_until(next_due), if next_due.is_some() => queue.fire(Instant::now()),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
