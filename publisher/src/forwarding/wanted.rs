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
//!
//! Each forward exists once per address family the class publishes on (`spec.publish.
//! ipFamilies`, else the publisher's `--ip-families`) and the target has an address of:
//! `status.hostIPs` (edge), `status.podIPs` (node), a Service's `spec.ipFamilies` and the
//! node's InternalIPs (Services).

use std::net::IpAddr;
use std::sync::Arc;

use hostport_api::port_set::PortSet;
use hostport_api::{IpFamily, Publish};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::ResourceExt;

use crate::claimed::{Inputs, NodePort, claimed_ports, node_ports};
use crate::deny::DenyList;
use crate::forwarding::rules::{Conflict, Forward, ForwardSet, Target};
use crate::published::PublishedPod;

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
            } else if let Some(kept) =
                self.forwards
                    .get(forward.family(), forward.protocol, forward.port)
            {
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
    Node(&'a str, &'a [IpCidr]),
}

/// The edge host's forwards for claimed ports (the deny-list applied first), on the class's
/// families (`families` where the class does not say).
pub fn edge(inputs: Inputs<'_>, deny: &DenyList, families: &[IpFamily]) -> WantedForwards {
    claimed(inputs, Mode::Edge, deny, families)
}

/// Node `node`'s forwards for the pods there (the deny-list applied first), only to pod
/// addresses inside the node's `pod_cidrs` when it has any: a pod's `status.podIPs` is not
/// proof of where it runs, and a forward must never point at another host.
pub fn node(
    inputs: Inputs<'_>,
    node: &str,
    pod_cidrs: &[String],
    deny: &DenyList,
    families: &[IpFamily],
) -> WantedForwards {
    let cidrs: Vec<IpCidr> = pod_cidrs.iter().filter_map(|c| c.parse().ok()).collect();
    claimed(inputs, Mode::Node(node, &cidrs), deny, families)
}

/// An IPv4 or IPv6 CIDR (`10.244.1.0/24`, `2001:db8:1::/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpCidr {
    network: IpAddr,
    bits: u8,
}

impl IpCidr {
    /// Whether `address` lies inside (never for the other family).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                prefix(u128::from(u32::from(network)), 32, self.bits)
                    == prefix(u128::from(u32::from(address)), 32, self.bits)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                prefix(u128::from(network), 128, self.bits)
                    == prefix(u128::from(address), 128, self.bits)
            }
            _ => false,
        }
    }
}

/// The first `bits` of a `width`-bit address.
fn prefix(address: u128, width: u8, bits: u8) -> u128 {
    match width.saturating_sub(bits) {
        128.. => 0,
        shift => address >> shift,
    }
}

impl std::str::FromStr for IpCidr {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (address, bits) = text.split_once('/').ok_or(())?;
        let network: IpAddr = address.parse().map_err(|_| ())?;
        let bits: u8 = bits.parse().map_err(|_| ())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        if bits > width {
            return Err(());
        }
        Ok(Self { network, bits })
    }
}

/// Where a forward of this side goes: the node's addresses (edge), the pod's (node).
fn pod_addresses<'p>(pod: &'p PublishedPod, mode: Mode<'_>) -> &'p [IpAddr] {
    match mode {
        Mode::Edge => &pod.host_addresses,
        Mode::Node(..) => &pod.pod_addresses,
    }
}

fn claimed(
    inputs: Inputs<'_>,
    mode: Mode<'_>,
    deny: &DenyList,
    default_families: &[IpFamily],
) -> WantedForwards {
    let mut wanted = WantedForwards::default();
    let opted_in = |publish: &Publish| match mode {
        Mode::Edge => publish.edge,
        Mode::Node(..) => publish.node,
    };
    for used in claimed_ports(inputs, opted_in) {
        let target_port = match mode {
            Mode::Edge => Some(used.port),
            Mode::Node(node, _) => {
                if used.pod.node.as_deref() != Some(node) {
                    continue;
                }
                u16::try_from(used.container_port.container_port).ok()
            }
        };
        let Some(target_port) = target_port else {
            continue;
        };
        let addresses = pod_addresses(used.pod, mode);
        let families = used
            .class
            .spec
            .publish
            .as_ref()
            .map_or(default_families, |p| p.families(default_families));
        for family in families {
            let Some(address) = family.first_of(addresses.iter().copied()) else {
                continue;
            };
            if let Mode::Node(_, cidrs) = mode
                && !cidrs.is_empty()
                && !cidrs.iter().any(|c| c.contains(address))
            {
                tracing::warn!(pod = %used.pod.path(), pod_ip = %address, "pod address outside this node's pod CIDRs; not forwarded");
                continue;
            }
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
/// InternalIP, once for each of the Service's `spec.ipFamilies` (default IPv4) such a node
/// has an address of; except ports in `claimable` (see [`crate::claimed::claimable_ports`]),
/// which go to [`WantedForwards::refused`].
pub fn services(
    services: &[Arc<Service>],
    nodes: &[Arc<Node>],
    namespace_allowed: impl Fn(&str) -> bool,
    claimable: &PortSet,
) -> WantedForwards {
    let mut wanted = WantedForwards::default();
    let node_addresses = ready_node_addresses(nodes);
    if node_addresses.is_empty() {
        return wanted;
    }
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
        let families: Vec<IpFamily> = spec
            .and_then(|s| s.ip_families.as_ref())
            .map(|f| f.iter().filter_map(|f| IpFamily::parse(f)).collect())
            .filter(|f: &Vec<IpFamily>| !f.is_empty())
            .unwrap_or_else(|| vec![IpFamily::Ipv4]);
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
            for family in &families {
                let Some(address) = family.first_of(node_addresses.iter().copied()) else {
                    continue;
                };
                wanted.add(Forward {
                    protocol,
                    port: external,
                    target: Target {
                        address,
                        port: node_port,
                    },
                });
            }
        }
    }
    wanted
}

/// For each family, the InternalIP of that family of the first Ready, schedulable node by
/// name that has one.
fn ready_node_addresses(nodes: &[Arc<Node>]) -> Vec<IpAddr> {
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
    let internal: Vec<IpAddr> = ready
        .into_iter()
        .flat_map(|n| {
            n.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse::<IpAddr>().ok())
        })
        .collect();
    IpFamily::one_each(&internal)
}

#[cfg(test)]
mod tests;
