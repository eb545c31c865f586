//! Request counters and fault injection: what the scenarios use to count API writes and to
//! make the server misbehave the ways a real one does (errors, latency, dropped and stalled
//! watches).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::status::ApiError;

/// The Kubernetes verb of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// GET one object.
    Get,
    /// GET a collection.
    List,
    /// GET with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE one object.
    Delete,
    /// DELETE a collection.
    DeleteCollection,
}

impl Verb {
    /// Lowercase name, as in RBAC rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    /// Whether the verb changes state.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

/// Which requests a fault applies to; `None` fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMatch {
    /// The verb.
    pub verb: Option<Verb>,
    /// Resource plural, with `/status` for the subresource (e.g. `hostportclaims/status`).
    pub resource: Option<String>,
    /// User name the request authenticated as.
    pub user: Option<String>,
}

impl RequestMatch {
    /// Matches requests of `verb` on `resource`.
    pub fn new(verb: Verb, resource: &str) -> Self {
        Self {
            verb: Some(verb),
            resource: Some(resource.to_owned()),
            user: None,
        }
    }

    /// Matches every verb on `resource`.
    pub fn resource(resource: &str) -> Self {
        Self {
            resource: Some(resource.to_owned()),
            ..Self::default()
        }
    }

    /// Narrows the match to one user.
    pub fn by_user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    fn matches(&self, verb: Verb, resource: &str, user: &str) -> bool {
        self.verb.is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self.user.as_deref().is_none_or(|u| u == user)
    }
}

#[derive(Clone, Debug)]
struct ErrorFault {
    target: RequestMatch,
    remaining: u32,
    code: u16,
}

#[derive(Clone, Debug)]
struct LatencyFault {
    target: RequestMatch,
    delay: Duration,
}

/// What a request should suffer before it is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Sleep this long first.
    pub delay: Duration,
    /// Then fail with this HTTP code instead of serving.
    pub fail_with: Option<u16>,
}

impl Injected {
    /// The error an injected failure answers with, its reason as kube-apiserver names it for
    /// that code (clients retry on the reason, not only the code).
    pub fn error(code: u16, verb: Verb, resource: &str) -> ApiError {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        ApiError::with_code(
            code,
            reason,
            format!("injected fault: {} {resource}", verb.as_str()),
        )
    }
}

/// Counters and faults; lives inside the server's state.
#[derive(Debug, Default)]
pub struct Faults {
    counts: BTreeMap<(String, Verb, String), u64>,
    errors: Vec<ErrorFault>,
    latencies: Vec<LatencyFault>,
    frozen: Vec<RequestMatch>,
}

impl Faults {
    /// Counts the request and returns the faults it hits.
    pub fn on_request(&mut self, verb: Verb, resource: &str, user: &str) -> Injected {
        *self
            .counts
            .entry((user.to_owned(), verb, resource.to_owned()))
            .or_default() += 1;
        let delay = self
            .latencies
            .iter()
            .filter(|l| l.target.matches(verb, resource, user))
            .map(|l| l.delay)
            .max()
            .unwrap_or_default();
        let mut fail_with = None;
        if let Some(fault) = self
            .errors
            .iter_mut()
            .find(|f| f.remaining > 0 && f.target.matches(verb, resource, user))
        {
            fault.remaining -= 1;
            fail_with = Some(fault.code);
        }
        self.errors.retain(|f| f.remaining > 0);
        Injected { delay, fail_with }
    }

    /// Counts a request as `verb` as well, without injecting anything: what a real API
    /// server authorizes besides the HTTP verb (a server-side apply that creates the object
    /// needs `create` too).
    pub fn also_authorized_as(&mut self, verb: Verb, resource: &str, user: &str) {
        *self
            .counts
            .entry((user.to_owned(), verb, resource.to_owned()))
            .or_default() += 1;
    }

    /// Fails the next `count` matching requests with HTTP `code`.
    pub fn fail_next(&mut self, target: RequestMatch, count: u32, code: u16) {
        self.errors.push(ErrorFault {
            target,
            remaining: count,
            code,
        });
    }

    /// Delays every matching request by `delay` until cleared.
    pub fn add_latency(&mut self, target: RequestMatch, delay: Duration) {
        self.latencies.push(LatencyFault { target, delay });
    }

    /// Stops delivering watch events of matching watches (a stale cache) until thawed.
    pub fn freeze_watches(&mut self, target: RequestMatch) {
        self.frozen.push(target);
    }

    /// Delivers everything frozen watches held back and lets them run again.
    pub fn thaw_watches(&mut self) {
        self.frozen.clear();
    }

    /// Whether a watch on `resource` by `user` is frozen.
    pub fn is_frozen(&self, resource: &str, user: &str) -> bool {
        self.frozen
            .iter()
            .any(|f| f.matches(Verb::Watch, resource, user))
    }

    /// Removes every error and latency fault and thaws watches.
    pub fn clear(&mut self) {
        self.errors.clear();
        self.latencies.clear();
        self.frozen.clear();
    }

    /// Requests served so far matching `target`.
    pub fn count(&self, target: &RequestMatch) -> u64 {
        self.counts
            .iter()
            .filter(|((user, verb, resource), _)| target.matches(*verb, resource, user))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every counter: `(user, verb, resource) → requests`.
    pub fn counts(&self) -> BTreeMap<(String, Verb, String), u64> {
        self.counts.clone()
    }

    /// Zeroes the counters.
    pub fn reset_counts(&mut self) {
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fire_the_given_number_of_times_for_matching_requests_only() {
        let mut faults = Faults::default();
        faults.fail_next(RequestMatch::new(Verb::Create, "hostports"), 2, 500);
        assert_eq!(
            faults.on_request(Verb::Create, "hostports", "a").fail_with,
            Some(500)
        );
        assert_eq!(
            faults.on_request(Verb::Get, "hostports", "a").fail_with,
            None
        );
        assert_eq!(
            faults.on_request(Verb::Create, "hostports", "b").fail_with,
            Some(500)
        );
        assert_eq!(
            faults.on_request(Verb::Create, "hostports", "a").fail_with,
            None
        );
        assert_eq!(
            faults.count(&RequestMatch::new(Verb::Create, "hostports")),
            3
        );
        assert_eq!(
            faults.count(&RequestMatch::new(Verb::Create, "hostports").by_user("a")),
            2
        );
    }

    #[test]
    fn latency_and_freeze_match_by_user() {
        let mut faults = Faults::default();
        faults.add_latency(RequestMatch::resource("pods"), Duration::from_millis(5));
        assert_eq!(
            faults.on_request(Verb::List, "pods", "x").delay,
            Duration::from_millis(5)
        );
        faults.freeze_watches(RequestMatch::resource("hostports").by_user("stale"));
        assert!(faults.is_frozen("hostports", "stale"));
        assert!(!faults.is_frozen("hostports", "fresh"));
        faults.thaw_watches();
        assert!(!faults.is_frozen("hostports", "stale"));
    }
}
