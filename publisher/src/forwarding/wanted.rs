//! The forwards the API asks for, pure (the caches in, a [`ForwardSet`] out):
//!
//! - **edge**: every port a running pod holds through a Bound claim of a class with
//!   `spec.publish.edge`, to the pod's node (`status.hostIP`), one forward per protocol of the
//!   named container ports; and every port of a NodePort/LoadBalancer Service annotated
//!   `hostport.rmb938.com/forward: "true"` in an allowed namespace, to a Ready node's
//!   nodePort.
//! - **node**: on node `N`, every port a pod on `N` holds through a claim of a class with
//!   `spec.publish.node`, to the pod (`status.podIP`, the container port).
//!
//! Only what an admin opted in is forwarded (the class field, the namespaces allowed for
//! Services); a port the pod did not get from its claim (a `hostPort` that differs from the
//! claim's) is not forwarded.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hostport_api::Publish;
use hostport_api::port_set::PortSet;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::ResourceExt;

use crate::claimed::{Inputs, NodePort, claimed_ports, node_ports};
use crate::deny::DenyList;
use crate::forwarding::rules::{Conflict, Forward, ForwardSet, Target};

/// Service annotation (value `"true"`) that asks for its ports to be forwarded from the edge.
pub const SERVICE_ANNOTATION: &str = hostport_api::annotations::FORWARD_SERVICE_ANNOTATION;

/// The forwards wanted, and what was left out on the way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WantedForwards {
    /// One target per external port and protocol.
    pub forwards: ForwardSet,
    /// What was left out for a conflict (two targets for one port).
    pub conflicts: Vec<Conflict>,
    /// Service ports left out because claims may hold them.
    pub refused: Vec<RefusedServicePort>,
    /// Forwards left out by the deny-list (before conflicts are settled, so a denied
    /// candidate never displaces an allowed one).
    pub denied: Vec<Forward>,
}

impl WantedForwards {
    /// Adds a forward, recording a conflict.
    pub fn add(&mut self, forward: Forward) {
        if let Err(conflict) = self.forwards.insert(forward) {
            self.conflicts.push(conflict);
        }
    }

    /// Adds `forward` unless `deny` denies its external or target port.
    pub fn add_allowed(&mut self, forward: Forward, deny: &DenyList) {
        if forward.is_denied(deny) {
            self.denied.push(forward);
        } else {
            self.add(forward);
        }
    }

    /// Adds what `later` wants after what is here (claims first, then Services): the
    /// deny-list first, then a conflict keeps what is here.
    pub fn merge(&mut self, later: WantedForwards, deny: &DenyList) {
        for forward in later.forwards.iter() {
            if forward.is_denied(deny) {
                self.denied.push(forward);
            } else if let Some(kept) = self.forwards.get(forward.protocol, forward.port) {
                if kept != forward.target {
                    self.conflicts.push(Conflict {
                        protocol: forward.protocol,
                        port: forward.port,
                        kept,
                        dropped: forward.target,
                    });
                }
            } else {
                self.add(forward);
            }
        }
        self.conflicts.extend(later.conflicts);
        self.refused.extend(later.refused);
        self.denied.extend(later.denied);
    }
}

/// Which side of the pod a forward goes to (node mode: which node, its pod CIDRs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode<'a> {
    Edge,
    Node(&'a str, &'a [Ipv4Cidr]),
}

/// The edge host's forwards for claimed ports (the deny-list applied first).
pub fn edge(inputs: Inputs<'_>, deny: &DenyList) -> WantedForwards {
    claimed(inputs, Mode::Edge, deny)
}

/// Node `node`'s forwards for the pods there (the deny-list applied first), only to pod
/// addresses inside the node's `pod_cidrs` when it has any: a pod's `status.podIP` is not
/// proof of where it runs, and a forward must never point at another host.
pub fn node(
    inputs: Inputs<'_>,
    node: &str,
    pod_cidrs: &[String],
    deny: &DenyList,
) -> WantedForwards {
    let cidrs: Vec<Ipv4Cidr> = pod_cidrs.iter().filter_map(|c| c.parse().ok()).collect();
    claimed(inputs, Mode::Node(node, &cidrs), deny)
}

/// An IPv4 CIDR (`10.244.1.0/24`); IPv6 ones do not parse (forwards are IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: u32,
    mask: u32,
}

impl Ipv4Cidr {
    /// Whether `address` lies inside.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask == self.network
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (address, bits) = text.split_once('/').ok_or(())?;
        let address: Ipv4Addr = address.parse().map_err(|_| ())?;
        let bits: u32 = bits.parse().map_err(|_| ())?;
        let mask = match bits {
            0 => 0,
            1..=32 => u32::MAX << (32 - bits),
            _ => return Err(()),
        };
        Ok(Self {
            network: u32::from(address) & mask,
            mask,
        })
    }
}

fn claimed(inputs: Inputs<'_>, mode: Mode<'_>, deny: &DenyList) -> WantedForwards {
    let mut wanted = WantedForwards::default();
    let opted_in = |publish: &Publish| match mode {
        Mode::Edge => publish.edge,
        Mode::Node(..) => publish.node,
    };
    for used in claimed_ports(inputs, opted_in) {
        let status = used.pod.status.as_ref();
        let (address, target_port) = match mode {
            Mode::Edge => (status.and_then(|s| s.host_ip.as_deref()), Some(used.port)),
            Mode::Node(node, cidrs) => {
                if used.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                    continue;
                }
                let pod_ip = status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|a| a.parse::<Ipv4Addr>().ok());
                if !cidrs.is_empty()
                    && !pod_ip.is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip)))
                {
                    tracing::warn!(pod = %format!("{}/{}", used.pod.namespace().unwrap_or_default(), used.pod.name_any()), pod_ip = ?pod_ip, "pod address outside this node's pod CIDRs; not forwarded");
                    continue;
                }
                (
                    status.and_then(|s| s.pod_ip.as_deref()),
                    u16::try_from(used.container_port.container_port).ok(),
                )
            }
        };
        let (Some(address), Some(target_port)) = (
            address.and_then(|a| a.parse::<Ipv4Addr>().ok()),
            target_port,
        ) else {
            continue;
        };
        wanted.add_allowed(
            Forward {
                protocol: used.protocol,
                port: used.port,
                target: Target {
                    address,
                    port: target_port,
                },
            },
            deny,
        );
    }
    wanted
}

/// A Service port left out because claims may hold it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefusedServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Its port.
    pub port: u16,
}

/// The edge host's forwards for Services that opted in: each port of a NodePort or
/// LoadBalancer Service annotated [`SERVICE_ANNOTATION`] in a namespace `namespace_allowed`
/// accepts, from its `port` to the nodePort of the first Ready node (by name) with an
/// InternalIP; except ports in `claimable` (see [`crate::claimed::claimable_ports`]), which go to
/// [`WantedForwards::refused`].
pub fn services(
    services: &[Arc<Service>],
    nodes: &[Arc<Node>],
    namespace_allowed: impl Fn(&str) -> bool,
    claimable: &PortSet,
) -> WantedForwards {
    let mut wanted = WantedForwards::default();
    let Some(node) = ready_node_address(nodes) else {
        return wanted;
    };
    for service in services {
        let opted_in = service
            .annotations()
            .get(SERVICE_ANNOTATION)
            .is_some_and(|v| v == "true");
        let spec = service.spec.as_ref();
        let exposed = matches!(
            spec.and_then(|s| s.type_.as_deref()),
            Some("NodePort" | "LoadBalancer")
        );
        if !opted_in || !exposed || !namespace_allowed(&service.namespace().unwrap_or_default()) {
            continue;
        }
        for NodePort {
            protocol,
            port: external,
            node_port,
        } in node_ports(service)
        {
            if claimable.contains(external) {
                wanted.refused.push(RefusedServicePort {
                    namespace: service.namespace().unwrap_or_default(),
                    name: service.name_any(),
                    port: external,
                });
                continue;
            }
            wanted.add(Forward {
                protocol,
                port: external,
                target: Target {
                    address: node,
                    port: node_port,
                },
            });
        }
    }
    wanted
}

/// The InternalIP of the first Ready, schedulable node by name.
fn ready_node_address(nodes: &[Arc<Node>]) -> Option<Ipv4Addr> {
    let mut ready: Vec<&Arc<Node>> = nodes
        .iter()
        .filter(|n| {
            let status = n.status.as_ref();
            let is_ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
            is_ready && !cordoned
        })
        .collect();
    ready.sort_by_key(|n| n.name_any());
    ready.into_iter().find_map(|n| {
        n.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .find(|a| a.type_ == "InternalIP")?
            .address
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests;
