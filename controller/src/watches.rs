//! The watch loops: each keeps a cache current and tells the reconcilers which objects a
//! change concerns (a HostPort's claim and class, a deleting claim's pods, a class's
//! pending claims). The HostPort loop also keeps the port book.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hostport_api::annotations::referenced_claim_names;
use hostport_api::cache::{
    LIST_PAGE, POD_LIST_PAGE, strip_claim, strip_host_port, strip_metadata, strip_pod,
};
use hostport_api::container_ports::declared_host_ports;
use hostport_api::pod_claims::is_pod_claim;
use hostport_api::{ClaimPhase, HostPort, HostPortClaim, HostPortClass};
use hostport_process::compact::{CacheWriter, CompactWriter};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::watcher::{self, Event, watcher};

use crate::cached::CachedClaim;
use crate::context::{Context, key_of};
use crate::declared::PodPorts;
use crate::metrics::PhaseLabels;
use crate::pods::PodUse;

/// Drives a watch: every event goes into the cache, then to `on_event`; errors are logged
/// (the stream backs off and resumes by itself).
async fn follow<K, S>(
    stream: S,
    kind: &str,
    writer: &mut impl CacheWriter<K>,
    mut on_event: impl FnMut(&Event<K>),
) where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                writer.apply_event(&event);
                on_event(&event);
            }
            Err(error) => log_watch_error(kind, &error),
        }
    }
}

/// The HostPort watch's cache: the port book, behind the context's lock.
struct BookFeed<'a>(&'a Context);

impl CacheWriter<HostPort> for BookFeed<'_> {
    fn apply_event(&mut self, event: &Event<HostPort>) {
        self.0.book().apply_event(event);
    }
}

fn log_watch_error(kind: &str, error: &watcher::Error) {
    tracing::warn!(%error, kind, "watch failed; retrying with backoff");
}

fn touched_host_port(ctx: &Context, host_port: &HostPort) {
    let _ = ctx.triggers.host_ports.send(key_of(host_port));
    if let Some((namespace, claim)) = host_port.claim_key() {
        let _ = ctx
            .triggers
            .claims
            .send(ObjectRef::new(claim).within(namespace));
    }
    let _ = ctx
        .triggers
        .classes
        .send(ObjectRef::new(&host_port.spec.host_port_class_name));
}

/// HostPorts: the port book (which is also the HostPort cache), and wake-ups of their claims
/// and classes.
pub async fn host_ports(ctx: Arc<Context>) {
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default().page_size(LIST_PAGE))
        .default_backoff()
        .modify(strip_host_port);
    follow(
        stream,
        "HostPort",
        &mut BookFeed(&ctx),
        |event| match event {
            Event::Init => {}
            Event::InitApply(host_port) | Event::Apply(host_port) => {
                ctx.arrived(host_port);
                touched_host_port(&ctx, host_port);
            }
            Event::InitDone => ctx.wake_waiting(),
            Event::Delete(host_port) => {
                touched_host_port(&ctx, host_port);
                ctx.wake_waiting();
            }
        },
    )
    .await;
}

fn class_if_deleting(ctx: &Context, claim: &HostPortClaim) {
    let class = ObjectRef::new(&claim.spec.host_port_class_name);
    if ctx
        .caches
        .classes
        .get(&class)
        .is_some_and(|c| c.metadata.deletion_timestamp.is_some())
    {
        let _ = ctx.triggers.classes.send(class);
    }
}

/// HostPortClaims: cache and their own reconciles.
pub async fn claims(ctx: Arc<Context>, mut writer: CompactWriter<CachedClaim>) {
    let api: Api<HostPortClaim> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default().page_size(LIST_PAGE))
        .default_backoff()
        .modify(strip_claim);
    follow(stream, "HostPortClaim", &mut writer, |event| {
        match event {
            Event::InitApply(claim) | Event::Apply(claim) => {
                ctx.arrived(claim);
                let _ = ctx.triggers.claims.send(key_of(claim));
                if is_pod_claim(claim.labels()) {
                    let _ = ctx.triggers.pod_claims.send(key_of(claim));
                }
                class_if_deleting(&ctx, claim);
            }
            Event::Delete(claim) => {
                class_if_deleting(&ctx, claim);
                // HostPorts of a claim that vanished without its finalizer are orphans now.
                if let Some(uid) = claim.uid() {
                    let (cached, _) = ctx.book().of_claim(&uid);
                    for host_port in cached {
                        let _ = ctx
                            .triggers
                            .host_ports
                            .send(ObjectRef::new(&host_port.name));
                    }
                }
            }
            Event::Init | Event::InitDone => {}
        }
    })
    .await;
}

/// HostPortClasses: cache, their own reconciles, and retries of the claims waiting for them.
pub async fn classes(ctx: Arc<Context>, mut writer: Writer<HostPortClass>) {
    let api: Api<HostPortClass> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default().page_size(LIST_PAGE))
        .default_backoff()
        .modify(strip_metadata);
    follow(stream, "HostPortClass", &mut writer, |event| {
        match event {
            Event::InitApply(class) => {
                let _ = ctx.triggers.classes.send(key_of(class));
            }
            Event::Apply(class) | Event::Delete(class) => {
                ctx.arrived(class);
                let name = class.name_any();
                let publishes = matches!(event, Event::Apply(_)) && class.publishes_on_router();
                // Overlap conditions of every class may change.
                for other in ctx.caches.classes.state() {
                    let _ = ctx.triggers.classes.send(key_of(other.as_ref()));
                }
                let _ = ctx.triggers.classes.send(key_of(class));
                // Unbound claims may bind now; bound ones whose Ready depends on whether the
                // class publishes (set or removed `publish.router`) get it rewritten.
                let concerned = ctx.caches.claims.fold(
                    vec![],
                    |mut concerned, namespace, claim_name, claim| {
                        if claim.class() == name
                            && (!claim.names_host_port() || !claim.ready_is_current(publishes))
                        {
                            concerned.push(ObjectRef::new(claim_name).within(namespace));
                        }
                        concerned
                    },
                );
                for claim in concerned {
                    let _ = ctx.triggers.claims.send(claim);
                }
                ctx.wake_waiting();
            }
            Event::Init | Event::InitDone => {}
        }
    })
    .await;
}

/// What the port book keeps of a (stripped) pod: its declared host ports while it may run.
fn pod_ports(pod: &Pod) -> Option<PodPorts> {
    if hostport_api::container_ports::finished(pod) {
        return None;
    }
    let mut ports: Vec<u16> = declared_host_ports(pod)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    ports.dedup();
    if ports.is_empty() {
        return None;
    }
    Some(PodPorts {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ports,
        claims: referenced_claim_names(pod.annotations())
            .map(str::to_owned)
            .collect(),
    })
}

/// Ports that pods started or stopped declaring: the classes whose pools hold them report
/// them, and a port that became free may bind a waiting claim.
fn declared_ports_changed(ctx: &Context, changed: &[u16]) {
    if changed.is_empty() {
        return;
    }
    for class in ctx.caches.classes.state() {
        if class
            .ranges()
            .iter()
            .any(|r| changed.iter().any(|p| r.contains(*p)))
        {
            let _ = ctx.triggers.classes.send(key_of(class.as_ref()));
        }
    }
    // Only a port that became free can bind a waiting claim (one a pod starts declaring
    // cannot), so a pod's creation does not requeue every waiting claim.
    let freed = {
        let book = ctx.book();
        changed.iter().any(|port| !book.is_used(*port))
    };
    if freed {
        ctx.wake_waiting();
    }
}

/// Queues the HostPorts still bound to the deleted claim `namespace/claim` (held while its
/// pods run). Rare: only pods that name a claim which no longer exists get here.
fn wake_held_host_ports(ctx: &Context, namespace: &str, claim: &str) {
    let held: Vec<ObjectRef<HostPort>> = ctx
        .book()
        .host_ports()
        .filter(|(_, host_port)| host_port.claim_key() == Some((namespace, claim)))
        .map(|(name, _)| ObjectRef::new(&name.to_string()))
        .collect();
    for host_port in held {
        let _ = ctx.triggers.host_ports.send(host_port);
    }
}

/// Pods: a compact cache (`PodUse`, made from the stripped pod), the host ports they declare
/// (in the port book), and wake-ups of the deleting claims they hold and of the claims made
/// for them.
pub async fn pods(ctx: Arc<Context>, mut writer: CompactWriter<PodUse>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default().page_size(POD_LIST_PAGE))
        .default_backoff()
        .modify(strip_pod);
    follow(stream, "Pod", &mut writer, |event| {
        match event {
            Event::Init => ctx.book().pods_relist_start(),
            Event::InitApply(pod) => ctx.book().pods_relist_apply(pod_ports(pod)),
            Event::InitDone => {
                let changed = ctx.book().pods_relist_done();
                declared_ports_changed(&ctx, &changed);
            }
            Event::Apply(pod) => {
                let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                let changed = ctx.book().set_pod(&key, pod_ports(pod));
                declared_ports_changed(&ctx, &changed);
            }
            Event::Delete(pod) => {
                let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                let changed = ctx.book().set_pod(&key, None);
                declared_ports_changed(&ctx, &changed);
            }
        }
        if let Event::Apply(pod) | Event::Delete(pod) = &event {
            let namespace = pod.namespace().unwrap_or_default();
            let left =
                matches!(event, Event::Delete(_)) || hostport_api::container_ports::finished(pod);
            for claim in referenced_claim_names(pod.annotations()) {
                let key = ObjectRef::new(claim).within(&namespace);
                match ctx.caches.claims.get(&namespace, claim) {
                    Some(cached) if cached.is_deleting() => {
                        let _ = ctx.triggers.claims.send(key);
                    }
                    // Its pod, or its StatefulSet ordinal, may have come or gone.
                    Some(cached) if cached.is_pod_claim() => {
                        if left {
                            ctx.pod_left(key.clone());
                        }
                        let _ = ctx.triggers.pod_claims.send(key);
                    }
                    Some(_) => {}
                    // The claim is gone: its HostPort may be held for this pod.
                    None => wake_held_host_ports(&ctx, &namespace, claim),
                }
            }
        }
    })
    .await;
}

/// Refreshes the claims-by-phase gauges.
pub async fn phase_gauges(ctx: Arc<Context>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        let mut counts = [0i64; 3];
        let mut oldest_pending = Duration::ZERO;
        ctx.caches.claims.fold((), |(), _, _, claim| {
            let index = match claim.phase() {
                ClaimPhase::Pending => {
                    if let Some(created) = claim.created() {
                        oldest_pending = oldest_pending.max(crate::clock::age(created));
                    }
                    0
                }
                ClaimPhase::Bound => 1,
                ClaimPhase::Deleting => 2,
            };
            counts[index] += 1;
        });
        for (phase, count) in [ClaimPhase::Pending, ClaimPhase::Bound, ClaimPhase::Deleting]
            .iter()
            .zip(counts)
        {
            ctx.metrics
                .claims
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(count);
        }
        ctx.metrics
            .oldest_pending_seconds
            .set(i64::try_from(oldest_pending.as_secs()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_keeps_the_host_ports_of_pods_that_may_run() {
        let pod = |phase: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns",
                    "annotations": {"claim.hostport.rmb938.com/web": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                    {"containerPort": 80, "hostPort": 37200},
                    {"containerPort": 80, "hostPort": 37200, "protocol": "UDP"}]}]},
                "status": {"phase": phase}
            }))
            .expect("pod")
        };
        let running = pod_ports(&pod("Running")).expect("declares");
        assert_eq!(running.ports, vec![37200], "one port for TCP and UDP");
        assert_eq!(running.claims, vec!["web"]);
        assert_eq!(running.node.as_deref(), Some("n1"));
        assert_eq!(running.key(), "ns/p");
        assert!(pod_ports(&pod("Pending")).is_some());
        assert!(pod_ports(&pod("Succeeded")).is_none());
        assert!(pod_ports(&pod("Failed")).is_none());
        assert!(pod_ports(&Pod::default()).is_none());
    }
}
