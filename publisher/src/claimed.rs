//! What both halves of the publisher read the same way: which ports live pods hold through
//! Bound claims ([`claimed_ports`]), which ports claims may hold and Services therefore never
//! get ([`claimable_ports`]), and a Service's node ports ([`node_ports`]). Forwarding
//! ([`crate::forwarding`]) and router mode ([`crate::router`]) each decide from these what to
//! forward or map.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hostport_api::port_set::PortSet;
use hostport_api::{HostPortClass, Publish};
use k8s_openapi::api::core::v1::Service;

use crate::published::{PodPort, PublishedClaim, PublishedPod};

/// A transport protocol a port is forwarded or mapped for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as nft and iptables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// From a Kubernetes `protocol` (`TCP`, `UDP`; SCTP is not forwarded).
    pub fn from_kubernetes(protocol: Option<&str>) -> Option<Self> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The external side of a forward or a router mapping: protocol and port, one target each.
pub type ExternalPort = (Protocol, u16);

/// What the caches hold.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// Every class.
    pub classes: &'a [Arc<HostPortClass>],
    /// Every claim.
    pub claims: &'a [Arc<PublishedClaim>],
    /// Every pod (edge) or the node's pods (node mode).
    pub pods: &'a [Arc<PublishedPod>],
}

/// A port a live pod holds through a Bound claim of a class that opted in.
#[derive(Clone, Debug)]
pub struct ClaimedPort<'a> {
    /// The pod.
    pub pod: &'a PublishedPod,
    /// The claim.
    pub claim: &'a PublishedClaim,
    /// The claim's class.
    pub class: &'a HostPortClass,
    /// The container port serving it (its `hostPort` is `port`).
    pub container_port: &'a PodPort,
    /// The port name of the pod's claim annotation (a block's further ports: the first's).
    pub port_name: &'a str,
    /// The allocated port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

/// Every port a pod not finished or terminating holds through a Bound claim of a class
/// whose `spec.publish` `opted_in` accepts, once per protocol of the named container ports;
/// only where the pod's `hostPort` is the claim's port (the one the webhook gave it).
pub fn claimed_ports<'a>(
    inputs: Inputs<'a>,
    opted_in: impl Fn(&Publish) -> bool,
) -> Vec<ClaimedPort<'a>> {
    let classes: HashMap<&str, &HostPortClass> = inputs
        .classes
        .iter()
        .filter(|c| {
            c.metadata.deletion_timestamp.is_none()
                && c.spec.publish.as_ref().is_some_and(&opted_in)
        })
        .filter_map(|c| Some((c.metadata.name.as_deref()?, c.as_ref())))
        .collect();
    // Borrowed keys: a pass over a full class maps 64,512 claims without copying a name.
    let claims: HashMap<(&str, &str), (&PublishedClaim, &HostPortClass, u16)> = inputs
        .claims
        .iter()
        .filter_map(|c| {
            let class = classes.get(c.class.as_ref())?;
            Some((
                (c.namespace.as_ref(), c.name.as_ref()),
                (c.as_ref(), *class, c.port?),
            ))
        })
        .collect();
    let mut used = vec![];
    for pod in inputs.pods {
        if pod.leaving() {
            continue;
        }
        let Some(annotations) = pod.claims.as_deref() else {
            continue;
        };
        for annotation in annotations {
            let Some(&(claim, class, port)) =
                claims.get(&(pod.namespace.as_ref(), annotation.claim_name.as_str()))
            else {
                continue;
            };
            for container_port in named_ports(pod, &annotation.port_name) {
                if container_port.host_port != Some(i32::from(port)) {
                    continue;
                }
                let Some(port_name) = container_port.name.as_deref() else {
                    continue;
                };
                let Some(protocol) = container_port.protocol else {
                    continue;
                };
                used.push(ClaimedPort {
                    pod,
                    claim,
                    class,
                    container_port,
                    port_name,
                    port,
                    protocol,
                });
                // The rest of a block: the ports the webhook added with the block's host
                // ports, same protocol.
                for (further, served_by) in block_ports(pod, claim, port, protocol) {
                    used.push(ClaimedPort {
                        pod,
                        claim,
                        class,
                        container_port: served_by,
                        port_name,
                        port: further,
                        protocol,
                    });
                }
            }
        }
    }
    used
}

/// The further ports of `claim`'s block from `first` (none for a single port), each with the
/// container port of the pod that declares it as its host port with `protocol`.
fn block_ports<'p>(
    pod: &'p PublishedPod,
    claim: &PublishedClaim,
    first: u16,
    protocol: Protocol,
) -> Vec<(u16, &'p PodPort)> {
    (1..claim.count)
        .filter_map(|i| first.checked_add(i))
        .filter_map(|port| {
            pod.ports
                .iter()
                .find(|p| p.host_port == Some(i32::from(port)) && p.protocol == Some(protocol))
                .map(|p| (port, p))
        })
        .collect()
}

/// The container ports named `name` that can serve a host port.
fn named_ports<'p, 'n>(
    pod: &'p PublishedPod,
    name: &'n str,
) -> impl Iterator<Item = &'p PodPort> + use<'p, 'n> {
    pod.ports
        .iter()
        .filter(move |p| p.name.as_deref() == Some(name))
}

/// The ports claims may hold: every port of every class's pools (whether the class opted in
/// or not) and every claim's bound ports (a Go-era HostPort may lie outside today's pools).
/// A Service never gets one of them forwarded or mapped: claims win over Services.
pub fn claimable_ports(classes: &[Arc<HostPortClass>], claims: &[Arc<PublishedClaim>]) -> PortSet {
    let mut ports = PortSet::default();
    for class in classes {
        for range in class.ranges() {
            ports.fill(range);
        }
    }
    for claim in claims {
        for port in claim.bound_ports() {
            ports.insert(port);
        }
    }
    ports
}

/// One TCP or UDP port of a Service that has a nodePort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePort {
    /// Its protocol.
    pub protocol: Protocol,
    /// The Service `port` (the external one).
    pub port: u16,
    /// The `nodePort` every node serves it on.
    pub node_port: u16,
}

/// `service`'s TCP and UDP ports that have a nodePort (SCTP and ports without one are
/// skipped).
pub fn node_ports(service: &Service) -> impl Iterator<Item = NodePort> + '_ {
    service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|port| {
            Some(NodePort {
                protocol: Protocol::from_kubernetes(port.protocol.as_deref())?,
                port: u16::try_from(port.port).ok()?,
                node_port: u16::try_from(port.node_port?).ok()?,
            })
        })
}

/// Event and condition reason for a Service port left out because claims may hold it.
pub const PORT_CLAIMED: &str = "PortClaimed";
