//! The race between a pod's admission and its claim's release, as a model checked over every
//! interleaving on a 250 ms grid: a pod admission reads claim `a` (Bound to 37000), may wait
//! for another claim and read `a` again, answers, and its pod is stored after the rest of the
//! admission chain; meanwhile a tenant deletes `a`, the webhook's cache and the controller
//! see the deletion after their own lags, and the controller releases the port once its
//! admission grace is over and its final look at the stored pods finds none using it.
//!
//! Time and caches are the model's; the decisions are the binaries' own:
//! `ClaimState::recheck` (the webhook's second read), `claim::admission_wait` (the
//! controller's grace) and `pods::using` (the final check, on a real `Pod` object).
//!
//! The promise checked: no interleaving stores a pod with port 37000 after the port was
//! released (it would hold a port no claim holds, and the next claim would get it too).

use std::time::Duration;

use hostport_controller::claim::admission_wait;
use hostport_controller::pods::{ClaimUse, PodUse, using};
use hostport_webhook::pod::{Binding, ClaimState};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

const STEP: u64 = 250;
const PORT: u16 = 37000;
/// The webhook's `timeoutSeconds` in `config/`: kube-apiserver fails a call that takes longer.
const WEBHOOK_TIMEOUT: u64 = 5_000;
/// The webhook's default `--bind-wait-ms`.
const BIND_WAIT: u64 = 2_000;

/// What the webhook and the controller do (the parts the fix changed).
#[derive(Clone, Copy, Debug)]
struct Binaries {
    /// The webhook reads every claim again after a wait.
    recheck: bool,
    /// The controller's admission grace.
    grace: Duration,
}

/// The world: when things happen (ms).
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// The admission starts and reads `a`.
    start: u64,
    /// How long it waits for the other claim (0: no wait).
    wait: u64,
    /// The tenant deletes `a`.
    delete: u64,
    /// The webhook's cache shows the deletion this much later.
    webhook_lag: u64,
    /// The controller sees the deletion this much later.
    controller_lag: u64,
    /// The rest of the admission chain after our webhook answers, until the pod is stored.
    chain: u64,
}

fn binding() -> Binding {
    Binding {
        port: PORT,
        claim_uid: "uid-a".into(),
        host_port: format!("port-{PORT}"),
        policy: hostport_api::PortPolicy::Mapped,
        count: 1,
        host_network: false,
    }
}

/// The pod as stored when admitted: claim `a` on `web`, the other claim on `game`.
static STORED_POD: std::sync::LazyLock<Pod> = std::sync::LazyLock::new(stored_pod);

fn stored_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "held", "namespace": "team", "annotations": {
            "claim.hostport.rmb938.com/web": "a",
            "claim.hostport.rmb938.com/game": "late"}},
        "spec": {"containers": [{"name": "app", "ports": [
            {"name": "web", "containerPort": 8080, "hostPort": PORT},
            {"name": "game", "containerPort": 7777, "hostPort": 37001}]}]},
        "status": {"phase": "Pending"}
    }))
    .expect("pod")
}

/// Claim `a` as the webhook's cache shows it at `t`.
fn webhook_reads(t: u64, timing: &Timing, released_at: Option<u64>) -> ClaimState {
    if t < timing.delete + timing.webhook_lag {
        return ClaimState::Bound(binding());
    }
    match released_at {
        Some(released) if t >= released + timing.webhook_lag => ClaimState::Missing,
        _ => ClaimState::Deleting,
    }
}

/// When the controller frees port 37000 (`None`: it holds it for the stored pod), given when
/// (if ever) the pod is stored.
fn release(timing: &Timing, binaries: Binaries, stored_at: Option<u64>) -> Option<u64> {
    let seen = timing.delete + timing.controller_lag;
    let since = Duration::from_millis(seen - timing.delete);
    let final_check = match admission_wait(since, binaries.grace) {
        Some(wait) => seen + u64::try_from(wait.as_millis()).expect("ms"),
        None => seen,
    };
    let (pods, mut cache) = hostport_process::compact::compact_store::<PodUse>();
    if stored_at.is_some_and(|stored| stored <= final_check) {
        cache.apply(&kube::runtime::watcher::Event::Apply(STORED_POD.clone()));
    }
    let of = ClaimUse {
        namespace: "team",
        claim: "a",
        port: Some(PORT),
    };
    using(of, &pods).is_empty().then_some(final_check)
}

/// When the pod is stored with port 37000, if it is: the webhook's verdict (with the release
/// time the admission saw, for a second read) plus the chain.
fn admitted(timing: &Timing, binaries: Binaries, released_at: Option<u64>) -> Option<u64> {
    let first = webhook_reads(timing.start, timing, released_at);
    let mut state = first;
    let answer = timing.start + timing.wait;
    if timing.wait > 0
        && binaries.recheck
        && let ClaimState::Bound(before) = &state
    {
        state = ClaimState::recheck(before, webhook_reads(answer, timing, released_at));
    }
    let in_time = answer - timing.start <= WEBHOOK_TIMEOUT;
    (matches!(state, ClaimState::Bound(_)) && in_time).then_some(answer + timing.chain)
}

/// Whether this interleaving breaks the promise. The release depends on whether the pod was
/// stored before the final check, and the verdict on whether the release was seen: iterate
/// to the fixed point (two rounds settle it: both are monotone in the other).
fn breaks(timing: &Timing, binaries: Binaries) -> bool {
    let mut released = release(timing, binaries, None);
    let mut stored = admitted(timing, binaries, released);
    for _ in 0..4 {
        let next_released = release(timing, binaries, stored);
        let next_stored = admitted(timing, binaries, next_released);
        if (next_released, next_stored) == (released, stored) {
            break;
        }
        (released, stored) = (next_released, next_stored);
    }
    matches!((released, stored), (Some(released), Some(stored)) if stored > released)
}

/// Every interleaving on the grid with lags up to `max_lag` and a chain up to `max_chain`.
fn interleavings(max_lag: u64, max_chain: u64) -> impl Iterator<Item = Timing> {
    let grid = |max: u64| (0..=max / STEP).map(|i| i * STEP);
    grid(4_000).flat_map(move |start| {
        grid(BIND_WAIT).flat_map(move |wait| {
            grid(6_000).flat_map(move |delete| {
                grid(max_lag).flat_map(move |webhook_lag| {
                    grid(max_lag).flat_map(move |controller_lag| {
                        grid(max_chain).map(move |chain| Timing {
                            start,
                            wait,
                            delete,
                            webhook_lag,
                            controller_lag,
                            chain,
                        })
                    })
                })
            })
        })
    })
}

fn violations(binaries: Binaries, max_lag: u64, max_chain: u64) -> Vec<Timing> {
    interleavings(max_lag, max_chain)
        .filter(|timing| breaks(timing, binaries))
        .collect()
}

const FIXED: Binaries = Binaries {
    recheck: true,
    grace: Duration::from_secs(10),
};

#[test]
fn no_interleaving_stores_a_pod_on_a_released_port() {
    // Caches up to 500 ms behind, up to 2 s of other webhooks after ours.
    let found = violations(FIXED, 500, 2_000);
    assert!(
        found.is_empty(),
        "{} interleavings break it, e.g. {:?}",
        found.len(),
        found.first()
    );
}

#[test]
fn without_the_fix_the_issues_race_is_found() {
    // Before: no second read, the port released as soon as no stored pod named the claim.
    let before = Binaries {
        recheck: false,
        grace: Duration::ZERO,
    };
    let found = violations(before, 0, 0);
    assert!(!found.is_empty(), "the model must find the reported race");
    // The reported one: read Bound, wait, the claim is deleted and released meanwhile.
    assert!(
        found
            .iter()
            .any(|t| t.start < t.delete && t.delete < t.start + t.wait),
        "{:?}",
        found.first()
    );
}

#[test]
fn each_half_of_the_fix_is_needed() {
    // The second read alone closes the race while caches are current and the pod is stored
    // at once, but not a slow admission chain: that is what the grace is for.
    let recheck_only = Binaries {
        recheck: true,
        grace: Duration::ZERO,
    };
    assert!(violations(recheck_only, 0, 0).is_empty());
    assert!(!violations(recheck_only, 0, 2_000).is_empty());
    // A grace shorter than the webhook's timeout plus the chain is not enough either.
    let short_grace = Binaries {
        recheck: true,
        grace: Duration::from_secs(1),
    };
    assert!(!violations(short_grace, 500, 2_000).is_empty());
}
