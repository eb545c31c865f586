//! The server's data behind one lock: served types, stored objects and the fault plan, and
//! the id generator for UIDs and generated names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::faults::Faults;
use crate::registry::Registry;
use crate::store::Store;

/// Everything behind the one lock: kept short, never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    pub registry: Registry,
    pub store: Store,
    pub faults: Faults,
}

/// The locked state and the id generator: what every verb reads and writes.
#[derive(Debug)]
pub(crate) struct Db {
    state: Mutex<State>,
    ids: AtomicU64,
}

impl Db {
    pub fn new(log_capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                registry: Registry::default(),
                store: Store::with_log_capacity(log_capacity),
                faults: Faults::default(),
            }),
            // Seeded by the clock so two servers in one test never share UIDs.
            ids: AtomicU64::new(k8s_openapi::jiff::Timestamp::now().as_nanosecond() as u64),
        }
    }

    /// The state, even if a panicking request poisoned the lock (state stays consistent:
    /// every mutation is a single `put`/`remove`).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh UUID-shaped id (unique per server, random-looking).
    pub fn new_uid(&self) -> String {
        let n = splitmix64(self.ids.fetch_add(1, Ordering::Relaxed));
        let m = splitmix64(n);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            n >> 32,
            (n >> 16) & 0xffff,
            n & 0xfff,
            m >> 52,
            m & 0xffff_ffff_ffff
        )
    }

    /// Five lowercase alphanumerics for `generateName`.
    pub fn name_suffix(&self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = splitmix64(self.ids.fetch_add(1, Ordering::Relaxed));
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
