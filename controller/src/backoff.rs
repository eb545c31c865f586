//! Per-object retry backoff after failed reconciles: 100 ms doubling to 60 s, forgotten after
//! a success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::reflector::ObjectRef;

use crate::context::lock;

/// Delay after the first failure.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest delay between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Consecutive failed reconciles per object.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectRef<DynamicObject>, u32>>,
}

impl Backoff {
    /// The retry delay after another failed reconcile of `object`.
    pub fn failed(&self, object: &ObjectRef<DynamicObject>) -> Duration {
        let mut failures = lock(&self.failures);
        let count = failures.entry(object.clone()).or_default();
        *count = count.saturating_add(1);
        // 2^10 × 100 ms is past the cap already; a larger shift would overflow.
        let exponent = (*count - 1).min(10);
        (FIRST_RETRY * 2u32.pow(exponent)).min(MAX_RETRY)
    }

    /// Forgets the failures of `object` after a successful reconcile.
    pub fn succeeded(&self, object: &ObjectRef<DynamicObject>) {
        let mut failures = lock(&self.failures);
        if !failures.is_empty() {
            failures.remove(object);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::HostPortClaim;

    fn claim(name: &str) -> ObjectRef<DynamicObject> {
        ObjectRef::<HostPortClaim>::new(name).within("team").erase()
    }

    #[test]
    fn doubles_from_100_ms_up_to_a_minute() {
        let backoff = Backoff::default();
        let delays: Vec<u128> = (0..12)
            .map(|_| backoff.failed(&claim("a")).as_millis())
            .collect();
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000
            ]
        );
        for _ in 0..1000 {
            backoff.failed(&claim("a"));
        }
        assert_eq!(backoff.failed(&claim("a")), MAX_RETRY, "no overflow");
    }

    #[test]
    fn objects_back_off_separately_and_success_resets() {
        let backoff = Backoff::default();
        backoff.failed(&claim("a"));
        backoff.failed(&claim("a"));
        assert_eq!(backoff.failed(&claim("b")), FIRST_RETRY);
        backoff.succeeded(&claim("a"));
        assert_eq!(backoff.failed(&claim("a")), FIRST_RETRY);
        assert_eq!(backoff.failed(&claim("b")), FIRST_RETRY * 2);
    }
}
