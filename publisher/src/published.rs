//! What the publisher keeps of claims and pods: compact forms of the few fields its rules
//! read, instead of API structs in kube-runtime stores. A stripped claim there costs ~1.5 KB
//! and a stripped pod ~5.8 KB; these cost a few hundred bytes, which is what keeps an edge
//! publisher at a full class (64,512 claims, 10,000 pods) within its memory goal.
//!
//! A claim keeps its status only once router mode has written to it (`status.external` or a
//! `Published` condition): the status is what router mode compares and rewrites. For a claim
//! router mode writes the first time, it reads the claim from the API server
//! (`router::report`), so no other publisher pays for statuses it never reads.

use std::net::IpAddr;

use hostport_api::annotations::{ClaimAnnotation, EXTERNAL_PREFIX, parse_claim_annotations};
use hostport_api::cache::{MAX_POD_PORTS, kept_pod_annotations};
use hostport_api::conditions::{self, types::PUBLISHED};
use hostport_api::container_ports::{container_ports, finished};
use hostport_api::{HostPortClaim, HostPortClaimSpec, HostPortClaimStatus};
use hostport_process::compact::Compact;
use k8s_openapi::api::core::v1::{ContainerPort, Pod};
use kube::ResourceExt;

use crate::claimed::Protocol;

/// A claim as the publisher reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedClaim {
    /// Namespace.
    pub namespace: Box<str>,
    /// Name.
    pub name: Box<str>,
    /// UID (the owner of its DNSEndpoint).
    pub uid: Box<str>,
    /// `spec.hostPortClassName`.
    pub class: Box<str>,
    /// Its first port while it is Bound (`HostPortClaim::bound_port`).
    pub port: Option<u16>,
    /// Ports in its block (1 for a single port).
    pub count: u16,
    /// What router mode compares and rewrites, once it has written to this claim.
    pub router: Option<Box<RouterView>>,
}

/// The part of a claim router mode reads and rewrites.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouterView {
    /// `metadata.resourceVersion`: router writes are guarded by it.
    pub resource_version: Option<String>,
    /// `metadata.generation`, for the conditions' `observedGeneration`.
    pub generation: Option<i64>,
    /// The whole status (router mode writes back the whole condition list).
    pub status: HostPortClaimStatus,
}

impl RouterView {
    /// The view of `claim`.
    pub fn of(claim: &HostPortClaim) -> Self {
        Self {
            resource_version: claim.resource_version(),
            generation: claim.metadata.generation,
            status: claim.status.clone().unwrap_or_default(),
        }
    }
}

impl PublishedClaim {
    /// Its ports while Bound: the first and the rest of its block.
    pub fn bound_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.port
            .into_iter()
            .flat_map(|first| (0..self.count).filter_map(move |i| first.checked_add(i)))
    }

    /// Its `status.external` entries (kept only once router mode wrote some).
    pub fn external(&self) -> &[hostport_api::ExternalEndpoint] {
        self.router
            .as_deref()
            .map_or(&[], |view| view.status.external.as_slice())
    }

    /// A claim carrying only the identity of this one: what an Event's `regarding` names.
    pub fn reference(&self) -> HostPortClaim {
        let mut claim = HostPortClaim::new(&self.name, HostPortClaimSpec::of_class(&self.class));
        claim.metadata.namespace = Some(self.namespace.to_string());
        claim.metadata.uid = Some(self.uid.to_string());
        claim
    }
}

impl Compact for PublishedClaim {
    type Source = HostPortClaim;

    fn compact(claim: &HostPortClaim) -> Self {
        let written_by_router = claim.status.as_ref().is_some_and(|status| {
            !status.external.is_empty() || conditions::find(&status.conditions, PUBLISHED).is_some()
        });
        Self {
            namespace: claim.namespace().unwrap_or_default().into(),
            name: claim.name_any().into(),
            uid: claim.uid().unwrap_or_default().into(),
            class: claim.spec.host_port_class_name.as_str().into(),
            port: claim.bound_port(),
            count: claim.spec.count(),
            router: written_by_router.then(|| Box::new(RouterView::of(claim))),
        }
    }
}

/// A container port of a pod, as the publisher reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPort {
    /// Its name (a claim annotation names it).
    pub name: Option<Box<str>>,
    /// `containerPort`.
    pub container_port: i32,
    /// `hostPort`.
    pub host_port: Option<i32>,
    /// TCP or UDP; `None` for another protocol (never published).
    pub protocol: Option<Protocol>,
}

impl PodPort {
    fn of(port: &ContainerPort) -> Self {
        Self {
            name: port.name.as_deref().map(Into::into),
            container_port: port.container_port,
            host_port: port.host_port,
            protocol: Protocol::from_kubernetes(port.protocol.as_deref()),
        }
    }
}

/// A pod as the publisher reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedPod {
    /// Namespace.
    pub namespace: Box<str>,
    /// Name.
    pub name: Box<str>,
    /// `spec.nodeName`.
    pub node: Option<Box<str>>,
    /// Phase `Running`.
    pub running: bool,
    /// Terminating (`deletionTimestamp` set).
    pub deleting: bool,
    /// Finished (Succeeded, Failed).
    pub finished: bool,
    /// Its claim annotations; `None` when one of them is invalid (the webhook denies such
    /// pods; one that got in anyway is not published).
    pub claims: Option<Box<[ClaimAnnotation]>>,
    /// Its `external.hostport.rmb938.com/<portName>` annotations: port name → value.
    pub external: Box<[(Box<str>, Box<str>)]>,
    /// The container ports that can serve a host port (containers and sidecars; at most
    /// [`MAX_POD_PORTS`], those with a `hostPort` first).
    pub ports: Box<[PodPort]>,
    /// Its node's addresses (`status.hostIP`, then `status.hostIPs`; at most one per family
    /// listed).
    pub host_addresses: Box<[IpAddr]>,
    /// Its own addresses (`status.podIP`, then `status.podIPs`).
    pub pod_addresses: Box<[IpAddr]>,
}

impl PublishedPod {
    /// Terminating or finished: it holds no port any more.
    pub fn leaving(&self) -> bool {
        self.deleting || self.finished
    }

    /// Its namespace and name, owned (a map key).
    pub fn key(&self) -> (String, String) {
        (self.namespace.to_string(), self.name.to_string())
    }

    /// `namespace/name`, for messages.
    pub fn path(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The value of its external annotation for `port_name`.
    pub fn external_annotation(&self, port_name: &str) -> Option<&str> {
        self.external
            .iter()
            .find(|(name, _)| name.as_ref() == port_name)
            .map(|(_, value)| value.as_ref())
    }
}

impl Compact for PublishedPod {
    type Source = Pod;

    fn compact(pod: &Pod) -> Self {
        let annotations = kept_pod_annotations(pod.metadata.annotations.as_ref());
        let claims = parse_claim_annotations(&annotations)
            .ok()
            .map(Vec::into_boxed_slice);
        let external = annotations
            .iter()
            .filter_map(|(key, value)| {
                let port_name = key.strip_prefix(EXTERNAL_PREFIX)?;
                Some((port_name.into(), value.as_str().into()))
            })
            .collect();
        let status = pod.status.as_ref();
        let host_addresses = addresses(
            status.and_then(|s| s.host_ip.as_deref()),
            status
                .and_then(|s| s.host_ips.as_ref())
                .into_iter()
                .flatten()
                .map(|a| a.ip.as_str()),
        );
        let pod_addresses = addresses(
            status.and_then(|s| s.pod_ip.as_deref()),
            status
                .and_then(|s| s.pod_ips.as_ref())
                .into_iter()
                .flatten()
                .map(|a| a.ip.as_str()),
        );
        Self {
            namespace: pod.namespace().unwrap_or_default().into(),
            name: pod.name_any().into(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .map(Into::into),
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            finished: finished(pod),
            claims,
            external,
            ports: kept_ports(pod),
            host_addresses,
            pod_addresses,
        }
    }
}

/// The pod's container ports in declaration order, at most [`MAX_POD_PORTS`]: when a hostile
/// pod declares more, those with a `hostPort` are kept first, so the cap never hides one.
fn kept_ports(pod: &Pod) -> Box<[PodPort]> {
    let all: Vec<&ContainerPort> = container_ports(pod).map(|(_, port)| port).collect();
    if all.len() <= MAX_POD_PORTS {
        return all.into_iter().map(PodPort::of).collect();
    }
    let has_host_port = |port: &ContainerPort| port.host_port.is_some_and(|h| h != 0);
    let mut chosen: Vec<usize> = (0..all.len())
        .filter(|&i| has_host_port(all[i]))
        .chain((0..all.len()).filter(|&i| !has_host_port(all[i])))
        .take(MAX_POD_PORTS)
        .collect();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| PodPort::of(all[i])).collect()
}

/// `single` (`status.hostIP`, `status.podIP`) first, then the first two of `listed` (one per
/// family: the kubelet lists at most two), those that parse, each once.
fn addresses<'a>(single: Option<&'a str>, listed: impl Iterator<Item = &'a str>) -> Box<[IpAddr]> {
    parsed(single.into_iter().chain(listed.take(2)))
}

/// The addresses that parse, first occurrence only.
fn parsed<'a>(addresses: impl Iterator<Item = &'a str>) -> Box<[IpAddr]> {
    let mut out: Vec<IpAddr> = vec![];
    for address in addresses.filter_map(|a| a.parse().ok()) {
        if !out.contains(&address) {
            out.push(address);
        }
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests;

/// Test fixtures: the compact forms of objects written as JSON.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use super::*;

    /// The compact form of the claim `value`.
    pub(crate) fn claim_from(value: serde_json::Value) -> Arc<PublishedClaim> {
        let claim: HostPortClaim = serde_json::from_value(value).expect("claim");
        Arc::new(PublishedClaim::compact(&claim))
    }

    /// The compact form of the pod `value`.
    pub(crate) fn pod_from(value: serde_json::Value) -> Arc<PublishedPod> {
        let pod: Pod = serde_json::from_value(value).expect("pod");
        Arc::new(PublishedPod::compact(&pod))
    }
}
