//! The watch loops: each keeps a cache current and tells the reconcilers which objects a
//! change concerns (a HostPort's claim and class, a deleting claim's pods, a class's
//! pending claims). The HostPort loop also keeps the port book.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hostport_api::annotations::{CLAIM_PREFIX, referenced_claim_names};
use hostport_api::cache::{strip_claim, strip_host_port, strip_metadata};
use hostport_api::pod_claims::is_pod_claim;
use hostport_api::{ClaimPhase, HostPort, HostPortClaim, HostPortClass};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::watcher::{self, Event, watcher};

use crate::context::Context;
use crate::metrics::PhaseLabels;

/// Drives a watch: every event goes into the cache, then to `on_event`; errors are logged
/// (the stream backs off and resumes by itself).
async fn follow<K, S>(
    stream: S,
    kind: &str,
    writer: &mut Writer<K>,
    mut on_event: impl FnMut(&Event<K>),
) where
    K: kube::Resource + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                writer.apply_watcher_event(&event);
                on_event(&event);
            }
            Err(error) => log_watch_error(kind, &error),
        }
    }
}

fn log_watch_error(kind: &str, error: &watcher::Error) {
    tracing::warn!(%error, kind, "watch failed; retrying with backoff");
}

fn touched_host_port(ctx: &Context, host_port: &HostPort) {
    let _ = ctx.triggers.host_ports.send(ObjectRef::from_obj(host_port));
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

/// HostPorts: cache, port book, and wake-ups of their claims and classes.
pub async fn host_ports(ctx: Arc<Context>, mut writer: Writer<HostPort>) {
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip_host_port);
    follow(stream, "HostPort", &mut writer, |event| match event {
        Event::Init => ctx.book().relist_start(),
        Event::InitApply(host_port) => {
            ctx.book().relist_apply(host_port);
            touched_host_port(&ctx, host_port);
        }
        Event::InitDone => {
            ctx.book().relist_done();
            ctx.wake_waiting();
        }
        Event::Apply(host_port) => {
            ctx.book().apply(host_port);
            touched_host_port(&ctx, host_port);
        }
        Event::Delete(host_port) => {
            ctx.book().delete(&host_port.name_any());
            touched_host_port(&ctx, host_port);
            ctx.wake_waiting();
        }
    })
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
pub async fn claims(ctx: Arc<Context>, mut writer: Writer<HostPortClaim>) {
    let api: Api<HostPortClaim> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip_claim);
    follow(stream, "HostPortClaim", &mut writer, |event| {
        match event {
            Event::InitApply(claim) | Event::Apply(claim) => {
                let _ = ctx.triggers.claims.send(ObjectRef::from_obj(claim));
                if is_pod_claim(claim.labels()) {
                    let _ = ctx.triggers.pod_claims.send(ObjectRef::from_obj(claim));
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
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip_metadata);
    follow(stream, "HostPortClass", &mut writer, |event| {
        match event {
            Event::InitApply(class) => {
                let _ = ctx.triggers.classes.send(ObjectRef::from_obj(class));
            }
            Event::Apply(class) | Event::Delete(class) => {
                let name = class.name_any();
                // Overlap conditions of every class may change.
                for other in ctx.caches.classes.state() {
                    let _ = ctx
                        .triggers
                        .classes
                        .send(ObjectRef::from_obj(other.as_ref()));
                }
                let _ = ctx.triggers.classes.send(ObjectRef::from_obj(class));
                for claim in ctx.caches.claims.state() {
                    if claim.spec.host_port_class_name == name
                        && claim.spec.host_port_name.is_none()
                    {
                        let _ = ctx
                            .triggers
                            .claims
                            .send(ObjectRef::from_obj(claim.as_ref()));
                    }
                }
                ctx.wake_waiting();
            }
            Event::Init | Event::InitDone => {}
        }
    })
    .await;
}

/// Claim annotations kept per cached pod (a pod cannot use more: it has fewer named ports).
const MAX_CLAIM_ANNOTATIONS: usize = 64;

/// Keeps what deletion gating needs of a pod: name, namespace, claim annotations, phase.
fn strip(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    pod.metadata.finalizers = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(CLAIM_PREFIX));
        // A pod has a handful of claimed ports; thousands of claim annotations are an
        // attack on memory (the pod webhook refuses such pods in labelled namespaces).
        if let Some(first_dropped) = annotations.keys().nth(MAX_CLAIM_ANNOTATIONS).cloned() {
            annotations.split_off(&first_dropped);
        }
    }
    pod.spec = None;
    if let Some(status) = pod.status.as_mut() {
        *status = PodStatus {
            phase: status.phase.take(),
            ..PodStatus::default()
        };
    }
}

/// Queues the HostPorts still bound to the deleted claim `namespace/claim` (held while its
/// pods run). Rare: only pods that name a claim which no longer exists get here.
fn wake_held_host_ports(ctx: &Context, namespace: &str, claim: &str) {
    for host_port in ctx.caches.host_ports.state() {
        if host_port.claim_key() == Some((namespace, claim)) {
            let _ = ctx
                .triggers
                .host_ports
                .send(ObjectRef::from_obj(host_port.as_ref()));
        }
    }
}

/// Pods: a stripped cache, and wake-ups of the deleting claims they hold and of the claims
/// made for them.
pub async fn pods(ctx: Arc<Context>, mut writer: Writer<Pod>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip);
    follow(stream, "Pod", &mut writer, |event| {
        if let Event::Apply(pod) | Event::Delete(pod) = &event {
            let namespace = pod.namespace().unwrap_or_default();
            for claim in referenced_claim_names(pod.annotations()) {
                let key = ObjectRef::new(claim).within(&namespace);
                match ctx.caches.claims.get(&key) {
                    Some(cached) if cached.metadata.deletion_timestamp.is_some() => {
                        let _ = ctx.triggers.claims.send(key);
                    }
                    // Its owner, or its StatefulSet ordinal, may have come or gone.
                    Some(cached) if is_pod_claim(cached.labels()) => {
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
        for claim in ctx.caches.claims.state() {
            let index = match claim.phase() {
                ClaimPhase::Pending => 0,
                ClaimPhase::Bound => 1,
                ClaimPhase::Deleting => 2,
            };
            counts[index] += 1;
        }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_pod_keeps_a_bounded_set_of_claim_annotations_and_nothing_else() {
        let mut annotations: std::collections::BTreeMap<String, String> = (0..100)
            .map(|i| (format!("{CLAIM_PREFIX}p{i:03}"), format!("claim-{i}")))
            .collect();
        annotations.insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            "x".repeat(200 * 1024),
        );
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(annotations);
        pod.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        strip(&mut pod);
        let kept = pod.metadata.annotations.unwrap_or_default();
        assert_eq!(kept.len(), MAX_CLAIM_ANNOTATIONS);
        assert!(kept.keys().all(|k| k.starts_with(CLAIM_PREFIX)));
        assert_eq!(
            kept.keys().last().map(String::as_str),
            Some("claim.hostport.rmb938.com/p063")
        );
        assert_eq!(pod.metadata.finalizers, None);
    }
}
