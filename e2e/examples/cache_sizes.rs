//! What one cached object costs: 20,000 claims, HostPorts and pods as the watches deliver
//! them (decoded, stripped by `hostport_api::cache`, applied to a kube-runtime store), and in
//! each compact form a binary keeps: the controller's claims (`CachedClaim`), HostPorts
//! (`CachedHostPort` in its port book, which is its HostPort cache) and pods (`PodUse`), the
//! webhook's claims and HostPorts (`CachedClaim`, `CachedHostPort`), the publisher's claims
//! and pods (`PublishedClaim`, `PublishedPod`); with the growth of this process's resident
//! memory per object. The profile behind the memory figures of
//! BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p hostport-e2e --example cache_sizes
//! ```

use hostport_api::cache::{strip_claim, strip_host_port, strip_pod};
use hostport_api::{HostPort, HostPortClaim};
use hostport_controller::cached::{CachedClaim as ControllerClaim, CachedHostPort};
use hostport_controller::pods::PodUse;
use hostport_controller::port_book::PortBook;
use hostport_process::compact::{CacheWriter, compact_store};
use hostport_publisher::published::{PublishedClaim, PublishedPod};
use hostport_webhook::cached::{CachedClaim, CachedHostPort as AdmissionHostPort};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::rc::Rc;

const OBJECTS: usize = 20_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn uid(kind: u32, i: usize) -> String {
    format!("{kind:08x}-8a9d-4c55-9e0b-{i:012}")
}

/// A claim as the controller leaves it bound to one port (`claim::reconcile`).
fn claim(i: usize) -> Value {
    let port = 1024 + i;
    let condition = |type_: &str| {
        json!({"type": type_, "status": "True", "reason": "Bound",
            "message": format!("bound to HostPort port-{port} (port {port})"),
            "lastTransitionTime": "2026-12-06T14:00:01Z", "observedGeneration": 1})
    };
    json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": format!("claim-{i}"), "namespace": "default", "uid": uid(1, i),
            "resourceVersion": (100_000 + i).to_string(), "generation": 1,
            "creationTimestamp": "2026-12-06T14:00:00Z", "finalizers": ["hostport.rmb938.com"]},
        "spec": {"hostPortClassName": "bench", "hostPortName": format!("port-{port}")},
        "status": {"phase": "Bound", "port": port, "ports": port.to_string(),
            "observedGeneration": 1, "conditions": [condition("Bound"), condition("Ready")]}
    })
}

/// A HostPort as the controller leaves it for a claim (`host_port::set_allocated`).
fn host_port(i: usize) -> Value {
    let port = 1024 + i;
    json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPort",
        "metadata": {"name": format!("port-{port}"), "uid": uid(2, i),
            "resourceVersion": (200_000 + i).to_string(), "generation": 1,
            "creationTimestamp": "2026-12-06T14:00:00Z"},
        "spec": {"hostPortClassName": "bench", "port": port, "claimRef": {
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
            "name": format!("claim-{i}"), "namespace": "default", "uid": uid(1, i)}},
        "status": {"phase": "Allocated", "port": port, "observedGeneration": 1,
            "conditions": [{"type": "Allocated", "status": "True", "reason": "Allocated",
            "message": format!("port {port} allocated to HostPortClaim default/claim-{i}"),
            "lastTransitionTime": "2026-12-06T14:00:01Z", "observedGeneration": 1}]}
    })
}

fn pod(i: usize) -> Value {
    let port = 1024 + i;
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": "default", "uid": uid(3, i),
            "resourceVersion": (300_000 + i).to_string(),
            "creationTimestamp": "2026-12-06T14:00:00Z",
            "annotations": {"claim.hostport.rmb938.com/web": format!("claim-{i}"),
                "port.hostport.rmb938.com/web": port.to_string()}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app",
            "image": "registry.invalid/app:1",
            "ports": [{"name": "web", "containerPort": 8080, "hostPort": port}]}]},
        "status": {"phase": "Running", "hostIP": "198.51.100.10",
            "hostIPs": [{"ip": "198.51.100.10"}], "podIP": "198.19.0.10",
            "podIPs": [{"ip": "198.19.0.10"}]}
    })
}

/// Fills a cache (`writer`, `store`: kube-runtime's, or compact) with [`OBJECTS`] objects
/// made by `make`, stripped by `strip`; prints the resident memory each one added, and
/// `stored_size`, the size of what the cache keeps of one. The store is returned so it stays
/// alive.
fn measure<K, S>(
    what: &str,
    stored_size: usize,
    make: fn(usize) -> Value,
    strip: fn(&mut K),
    (store, mut writer): (S, impl CacheWriter<K>),
) -> S
where
    K: serde::de::DeserializeOwned,
{
    let before = rss_kib();
    for i in 0..OBJECTS {
        let mut object: K = serde_json::from_value(make(i)).expect("object");
        strip(&mut object);
        writer.apply_event(&Event::Apply(object));
    }
    let each = (rss_kib() - before) * 1024 / OBJECTS as u64;
    println!(
        "cache_sizes: {what}: {each} B per cached object ({stored_size} B of it the struct itself)"
    );
    store
}

/// The controller's port book, which is its HostPort cache: the writer is the store.
fn book() -> (Rc<RefCell<PortBook>>, BookWriter) {
    let book = Rc::new(RefCell::new(PortBook::default()));
    (book.clone(), BookWriter(book))
}

struct BookWriter(Rc<RefCell<PortBook>>);

impl CacheWriter<HostPort> for BookWriter {
    fn apply_event(&mut self, event: &Event<HostPort>) {
        self.0.borrow_mut().apply_event(event);
    }
}

/// Leaves an object as the watch delivered it (a compact form takes what it reads itself).
fn unstripped<K>(_: &mut K) {}

fn main() {
    use std::mem::size_of;
    let claims = measure(
        "HostPortClaim",
        size_of::<HostPortClaim>(),
        claim,
        strip_claim,
        reflector::store(),
    );
    let controller_claims = measure(
        "HostPortClaim as the controller's CachedClaim",
        size_of::<ControllerClaim>(),
        claim,
        unstripped,
        compact_store::<ControllerClaim>(),
    );
    let admission_claims = measure(
        "HostPortClaim as the webhook's CachedClaim",
        size_of::<CachedClaim>(),
        claim,
        unstripped,
        compact_store::<CachedClaim>(),
    );
    let published_claims = measure(
        "HostPortClaim as the publisher's PublishedClaim",
        size_of::<PublishedClaim>(),
        claim,
        unstripped,
        compact_store::<PublishedClaim>(),
    );
    let host_ports = measure(
        "HostPort",
        size_of::<HostPort>(),
        host_port,
        strip_host_port,
        reflector::store(),
    );
    let controller_host_ports = measure(
        "HostPort in the controller's port book (its HostPort cache)",
        size_of::<CachedHostPort>(),
        host_port,
        unstripped,
        book(),
    );
    let admission_host_ports = measure(
        "HostPort as the webhook's CachedHostPort",
        size_of::<AdmissionHostPort>(),
        host_port,
        unstripped,
        compact_store::<AdmissionHostPort>(),
    );
    let pods = measure("Pod", size_of::<Pod>(), pod, strip_pod, reflector::store());
    let pod_uses = measure(
        "Pod as the controller's PodUse",
        size_of::<PodUse>(),
        pod,
        strip_pod,
        compact_store::<PodUse>(),
    );
    let published_pods = measure(
        "Pod as the publisher's PublishedPod",
        size_of::<PublishedPod>(),
        pod,
        unstripped,
        compact_store::<PublishedPod>(),
    );
    println!(
        "cache_sizes: cached {} claims ({} + {} + {} compact), {} HostPorts ({} + {} compact), {} pods ({} + {} compact)",
        claims.len(),
        controller_claims.len(),
        admission_claims.len(),
        published_claims.len(),
        host_ports.len(),
        controller_host_ports.borrow().host_port_count(),
        admission_host_ports.len(),
        pods.len(),
        pod_uses.len(),
        published_pods.len(),
    );
}
