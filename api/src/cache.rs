//! Every cache strip of the three binaries, in one place: what they drop before an object
//! enters a watch cache (the webhook's class strip drops a little more; it keeps claims and
//! HostPorts in compact forms of its own, `hostport_webhook::cached`), so their memory grows
//! with the number of objects, never with their size (a tenant's 200 KB of annotations on
//! every claim, or a 1.4 MB pod, must not reach a cache).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::annotations::{CLAIM_PREFIX, EXTERNAL_PREFIX, FORWARD_SERVICE_ANNOTATION};
use crate::pod_claims::POD_CLAIM_LABELS;
use crate::{HostPort, HostPortClaim, HostPortClass};

/// Objects per page of a watch's initial list: a tenant can give each claim or Service up
/// to 256 KiB of metadata, so a page stays within ~12 MiB before its objects are stripped
/// (the watcher's default of 500 could be 125 MiB).
pub const LIST_PAGE: u32 = 50;

/// Pods per page of a watch's initial list: a pod can weigh 1.5 MiB (kube-apiserver's object
/// limit), so a page stays within ~15 MiB.
pub const POD_LIST_PAGE: u32 = 10;

/// Claim annotations kept per cached pod (a pod cannot use more: it has fewer named ports).
pub const MAX_CLAIM_ANNOTATIONS: usize = 64;

/// Longest `external.hostport.rmb938.com/<portName>` value kept (and written by the
/// publisher): a block of 1,024 ports over two families fits as ranges.
pub const MAX_EXTERNAL_VALUE: usize = 1024;

/// Container ports kept per cached pod. Real pods declare a handful; the cap bounds what a
/// hostile pod with thousands of ports costs (ports with a `hostPort` are kept first).
pub const MAX_POD_PORTS: usize = 256;

/// The annotations of a pod that caches keep: its claim annotations (at most
/// [`MAX_CLAIM_ANNOTATIONS`]) and the external annotations of their ports (at most
/// [`MAX_EXTERNAL_VALUE`] bytes each).
pub fn kept_pod_annotations(all: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let (mut annotations, mut external): (BTreeMap<_, _>, BTreeMap<_, _>) = all
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(CLAIM_PREFIX) || key.starts_with(EXTERNAL_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .partition(|(key, _)| key.starts_with(CLAIM_PREFIX));
    if let Some(first_dropped) = annotations.keys().nth(MAX_CLAIM_ANNOTATIONS).cloned() {
        annotations.split_off(&first_dropped);
    }
    external.retain(|key, value| {
        key.strip_prefix(EXTERNAL_PREFIX).is_some_and(|port_name| {
            value.len() <= MAX_EXTERNAL_VALUE
                && annotations.contains_key(&format!("{CLAIM_PREFIX}{port_name}"))
        })
    });
    annotations.append(&mut external);
    annotations
}

/// A pod as caches keep it: name, namespace, UID, deletion timestamp, claim annotations
/// (at most [`MAX_CLAIM_ANNOTATIONS`]) and the external annotations of their ports (at most
/// [`MAX_EXTERNAL_VALUE`] bytes each: what the publisher compares its own with), node, `hostNetwork`, each container's name, restart
/// policy and ports (at most [`MAX_POD_PORTS`] in all), phase and addresses. What decides a
/// release, a port in use outside the books and a forward; nothing a tenant can grow.
pub fn strip_pod(pod: &mut Pod) {
    let annotations = kept_pod_annotations(pod.metadata.annotations.as_ref());
    strip_metadata(pod);
    pod.metadata.finalizers = None;
    pod.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    pod.spec = pod.spec.take().map(|spec| {
        let mut containers: Vec<Container> = spec.containers;
        let mut init_containers: Vec<Container> = spec.init_containers.unwrap_or_default();
        // Host ports first, so the cap never hides a declared host port behind plain ones.
        let mut budget = MAX_POD_PORTS;
        let mut kept: Vec<Vec<_>> = vec![];
        for with_host_port in [true, false] {
            for (i, c) in containers.iter().chain(&init_containers).enumerate() {
                if kept.len() <= i {
                    kept.push(vec![]);
                }
                let ports = c.ports.iter().flatten();
                let chosen: Vec<_> = ports
                    .filter(|p| p.host_port.is_some_and(|h| h != 0) == with_host_port)
                    .take(budget)
                    .cloned()
                    .collect();
                budget -= chosen.len();
                kept[i].extend(chosen);
            }
        }
        let mut kept = kept.into_iter();
        let mut slim = |c: &mut Container| {
            *c = Container {
                name: std::mem::take(&mut c.name),
                restart_policy: c.restart_policy.take(),
                ports: kept.next().filter(|p| !p.is_empty()),
                ..Container::default()
            };
        };
        containers.iter_mut().for_each(&mut slim);
        init_containers.iter_mut().for_each(&mut slim);
        PodSpec {
            containers,
            init_containers: Some(init_containers).filter(|c| !c.is_empty()),
            host_network: spec.host_network,
            node_name: spec.node_name,
            ..PodSpec::default()
        }
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        host_ip: status.host_ip,
        // Dual-stack: one address per family (the kubelet writes at most two).
        host_ips: status.host_ips.map(|mut ips| {
            ips.truncate(2);
            ips
        }),
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips.map(|mut ips| {
            ips.truncate(2);
            ips
        }),
        ..PodStatus::default()
    });
}

/// Drops metadata no decision reads: managed fields, labels, annotations (kubectl's
/// last-applied copy among them), owner references.
pub fn strip_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
}

/// A claim as caches keep it: [`strip_metadata`], except the labels that mark a claim made for
/// a pod and its first Pod and StatefulSet owner (what a pod claim's lifetime is decided on;
/// a bounded amount whatever a tenant adds).
pub fn strip_claim(claim: &mut HostPortClaim) {
    let meta = &mut claim.metadata;
    let labels = meta.labels.take().map(|mut labels| {
        labels.retain(|k, _| POD_CLAIM_LABELS.contains(&k.as_str()));
        labels
    });
    let owners = meta.owner_references.take().map(|owners| {
        let mut kept: Vec<OwnerReference> = vec![];
        for owner in owners {
            if matches!(owner.kind.as_str(), "Pod" | "StatefulSet")
                && !kept.iter().any(|k| k.kind == owner.kind)
            {
                kept.push(owner);
            }
        }
        kept
    });
    strip_metadata(claim);
    claim.metadata.labels = labels.filter(|l| !l.is_empty());
    claim.metadata.owner_references = owners.filter(|o| !o.is_empty());
}

/// A Service as the publisher keeps it: its spec (ports, type, class), metadata without managed
/// fields and with only the forward annotation, no status.
pub fn strip_service(service: &mut Service) {
    service.metadata.managed_fields = None;
    if let Some(annotations) = service.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k == FORWARD_SERVICE_ANNOTATION);
    }
    service.status = None;
}

/// A Node as the publisher keeps it: [`strip_metadata`], its spec, and its status without
/// the image and volume lists (a node's images alone can weigh megabytes).
pub fn strip_node(node: &mut Node) {
    strip_metadata(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

/// A Namespace as the publisher keeps it: name and labels (what a namespace selector reads).
pub fn strip_namespace(namespace: &mut Namespace) {
    let labels = namespace.metadata.labels.take();
    strip_metadata(namespace);
    namespace.metadata.labels = labels;
    namespace.spec = None;
}

/// A HostPort as caches keep it: name, UID, the claim's name, namespace and UID, the port and
/// the status without condition messages (decisions compare reasons, never messages).
pub fn strip_host_port(host_port: &mut HostPort) {
    strip_metadata(host_port);
    if let Some(claim) = host_port.spec.claim_ref.as_mut() {
        claim.api_version = None;
        claim.kind = None;
        claim.resource_version = None;
        claim.field_path = None;
    }
    if let Some(status) = host_port.status.as_mut() {
        for condition in &mut status.conditions {
            condition.message = String::new();
        }
    }
}

/// What the webhook never reads, dropped beside [`strip_metadata`]'s: finalizers and
/// `generateName` (the controller keeps finalizers: it reads its own).
fn strip_admission_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.finalizers = None;
    meta.generate_name = None;
}

/// A class as the webhook keeps it: name and pools.
pub fn strip_class_for_admission(class: &mut HostPortClass) {
    strip_metadata(class);
    strip_admission_metadata(class);
    class.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_claims::POD_CLAIM_LABEL;
    use crate::{ClaimReference, HostPortSpec};

    #[test]
    fn a_stripped_claim_keeps_a_bounded_lifetime_view() {
        let owner = |kind: &str, uid: &str| OwnerReference {
            api_version: "v1".into(),
            kind: kind.into(),
            name: "x".into(),
            uid: uid.into(),
            ..OwnerReference::default()
        };
        let mut claim =
            HostPortClaim::new("web-0-game", crate::HostPortClaimSpec::of_class("games"));
        claim.metadata.labels = Some(
            [
                (POD_CLAIM_LABEL.to_owned(), "true".to_owned()),
                ("noise".to_owned(), "x".repeat(63)),
            ]
            .into(),
        );
        claim.metadata.owner_references = Some(
            (0..100)
                .map(|i| owner(if i % 2 == 0 { "Pod" } else { "ConfigMap" }, &i.to_string()))
                .chain([owner("StatefulSet", "s")])
                .collect(),
        );
        claim.metadata.annotations = Some([("a".into(), "x".repeat(1024))].into());
        strip_claim(&mut claim);
        assert_eq!(claim.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        let owners = claim
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default();
        let uids: Vec<&str> = owners.iter().map(|o| o.uid.as_str()).collect();
        assert_eq!(uids, vec!["0", "s"]);
        assert!(claim.metadata.annotations.is_none());
    }

    #[test]
    fn a_stripped_pod_keeps_ports_addresses_and_claims_within_caps() {
        let many_ports: Vec<serde_json::Value> = (0..1000)
            .map(|i| serde_json::json!({"name": format!("p{i}"), "containerPort": 1000 + i}))
            .collect();
        let mut annotations: std::collections::BTreeMap<String, String> = (0..100)
            .map(|i| (format!("{CLAIM_PREFIX}p{i:03}"), format!("claim-{i}")))
            .collect();
        annotations.insert("big".into(), "x".repeat(1024 * 1024));
        // The publisher's answer for a claimed port is kept; one for a port without a claim
        // annotation, or too long, is not.
        annotations.insert(format!("{EXTERNAL_PREFIX}p000"), "198.51.100.1:9000".into());
        annotations.insert(format!("{EXTERNAL_PREFIX}p001"), "x".repeat(2000));
        annotations.insert(format!("{EXTERNAL_PREFIX}nothing"), "198.51.100.1:1".into());
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u",
                "labels": {"app": "x"}, "finalizers": ["example.com/hold"],
                "annotations": annotations},
            "spec": {"nodeName": "n1", "hostNetwork": false,
                "containers": [
                    {"name": "plain", "image": "x", "command": ["x".repeat(100_000)],
                     "ports": many_ports},
                    {"name": "web", "image": "x", "ports": [
                        {"name": "web", "containerPort": 8080, "hostPort": 37200, "protocol": "UDP"}]}],
                "initContainers": [{"name": "side", "restartPolicy": "Always",
                    "ports": [{"name": "s", "containerPort": 9, "hostPort": 37201}]}]},
            "status": {"phase": "Running", "hostIP": "198.51.100.2", "podIP": "203.0.113.9",
                "hostIPs": [{"ip": "198.51.100.2"}, {"ip": "2001:db8::2"}],
                "podIPs": [{"ip": "203.0.113.9"}, {"ip": "2001:db8:1::9"}, {"ip": "2001:db8:1::a"}],
                "message": "x".repeat(100_000)}
        }))
        .expect("pod");
        strip_pod(&mut pod);
        let mut kept = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            kept.remove(&format!("{EXTERNAL_PREFIX}p000")).as_deref(),
            Some("198.51.100.1:9000")
        );
        assert_eq!(kept.len(), MAX_CLAIM_ANNOTATIONS);
        assert!(kept.keys().all(|k| k.starts_with(CLAIM_PREFIX)));
        assert_eq!(pod.metadata.finalizers, None);
        assert_eq!(pod.metadata.uid.as_deref(), Some("u"));
        assert_eq!(
            crate::container_ports::declared_host_ports(&pod),
            vec![(37200, "UDP"), (37201, "TCP")],
            "host ports survive the cap"
        );
        let spec = pod.spec.as_ref().expect("spec");
        let ports: usize = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| c.ports.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(ports, MAX_POD_PORTS);
        assert_eq!(spec.containers[0].command, None);
        assert_eq!(
            spec.init_containers.as_ref().expect("init")[0]
                .restart_policy
                .as_deref(),
            Some("Always")
        );
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.host_ip.as_deref(), Some("198.51.100.2"));
        assert_eq!(
            status.host_ips.as_ref().map_or(0, Vec::len),
            2,
            "both families of a dual-stack node"
        );
        assert_eq!(
            status.pod_ips.as_ref().map_or(0, Vec::len),
            2,
            "at most one per family"
        );
        assert_eq!(status.message, None);
        assert!(serde_json::to_vec(&pod).expect("json").len() < 32 * 1024);
    }

    #[test]
    fn publisher_strips_keep_what_it_reads() {
        let mut service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "annotations": {
                FORWARD_SERVICE_ANNOTATION: "true", "big": "x".repeat(100_000)}},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}
        }))
        .expect("service");
        strip_service(&mut service);
        let annotations = service.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            vec![FORWARD_SERVICE_ANNOTATION]
        );
        assert!(service.status.is_none() && service.spec.is_some());
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"a": "b"}},
            "spec": {"podCIDRs": ["10.244.1.0/24"]},
            "status": {"images": [{"names": ["x".repeat(100_000)]}],
                "addresses": [{"type": "InternalIP", "address": "198.51.100.1"}]}
        }))
        .expect("node");
        strip_node(&mut node);
        let status = node.status.as_ref().expect("status");
        assert!(status.images.is_none() && status.addresses.is_some());
        assert!(node.metadata.labels.is_none());
        assert_eq!(
            node.spec.and_then(|s| s.pod_cidrs),
            Some(vec!["10.244.1.0/24".to_owned()])
        );
        let mut namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "team", "labels": {"team": "a"}, "annotations": {"x": "y"}}
        }))
        .expect("namespace");
        strip_namespace(&mut namespace);
        assert!(namespace.metadata.annotations.is_none());
        assert_eq!(namespace.metadata.labels.map(|l| l.len()), Some(1));
    }

    #[test]
    fn a_stripped_host_port_weighs_the_same_whatever_its_metadata() {
        let mut host_port = HostPort::new(
            "port-9000",
            HostPortSpec {
                claim_ref: Some(ClaimReference {
                    name: Some("web".into()),
                    uid: Some("uid".into()),
                    ..ClaimReference::default()
                }),
                host_port_class_name: "sample".into(),
                port: Some(9000),
            },
        );
        let small = serde_json::to_vec(&host_port).expect("json").len();
        host_port.metadata.annotations = Some([("a".into(), "x".repeat(200 * 1024))].into());
        host_port.metadata.labels = Some([("l".into(), "x".repeat(63))].into());
        strip_host_port(&mut host_port);
        assert_eq!(serde_json::to_vec(&host_port).expect("json").len(), small);
        assert_eq!(host_port.port(), Some(9000));
        assert_eq!(host_port.claim_uid(), Some("uid"));
    }
}
