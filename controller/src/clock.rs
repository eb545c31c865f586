//! Wall-clock times as the API writes them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Now, for conditions and timestamps.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// How long ago `time` was (zero if it is in the future: another machine's clock).
pub fn age(time: &Time) -> Duration {
    Duration::try_from(Timestamp::now().duration_since(time.0)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_count_whole_seconds_too() {
        let then = Time(Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_millis(2_500));
        let age = age(&then);
        assert!(
            age >= Duration::from_millis(2_500) && age < Duration::from_secs(10),
            "{age:?}"
        );
        let later = Time(Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(5));
        assert_eq!(super::age(&later), Duration::ZERO);
    }
}
