//! Which router mappings this node's publisher wants, pure (the caches in, requests out):
//!
//! - **claims**: every port a Running pod on this node holds through a Bound claim of a class
//!   with `spec.publish.router`, per protocol of the named container ports: external port
//!   (the allocated one) → this node's address and the host port.
//! - **Services** (the elected publisher only): each TCP/UDP port of a `type: LoadBalancer`
//!   Service with `spec.loadBalancerClass: hostport.rmb938.com/router` in a namespace the
//!   configuration allows: external `port` → this node's address and the `nodePort`.
//!
//! Ports on the deny-list and classes without a usable router address become problems
//! reported on their object instead of requests, and so does a Service port that a claim may
//! hold (in a class's pools, or a claim's bound port): claims win over Services. Mappings are
//! keyed by family and external port, so two wants for one router port are a conflict too,
//! which the claim wins. Every request maps to this node's own address, never to an address a
//! pod reports in its status (a pod's status is not proof of where it runs).
//!
//! A class publishing over IPv6 (`spec.publish.ipFamilies`) gets one more request per port:
//! a pinhole on the router's IPv6 address to this node's IPv6 address. Services are
//! published over IPv4.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hostport_api::port_set::PortSet;
use hostport_api::{ExternalPortPolicy, IpFamily, RouterProtocol, RouterPublish};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::claimed::{Inputs, NodePort, Protocol, claimed_ports, node_ports};
use crate::deny::DenyList;
use crate::router::client::{MapRequest, RouterError};

/// A mapping's key: one router port per family and protocol.
pub type MappingKey = (IpFamily, Protocol, u16);

/// `spec.loadBalancerClass` of the Services this publisher serves.
pub const LOAD_BALANCER_CLASS: &str = "hostport.rmb938.com/router";

/// The object a mapping is made for, where its result is reported.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A HostPortClaim (`status.external`, condition `Published`).
    Claim {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A LoadBalancer Service (`status.loadBalancer.ingress`).
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Claim { namespace, name } => write!(f, "HostPortClaim {namespace}/{name}"),
            Self::Service { namespace, name } => write!(f, "Service {namespace}/{name}"),
        }
    }
}

/// One wanted mapping and whom it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// Whom it is for.
    pub owner: Owner,
    /// What to ask the router.
    pub request: MapRequest,
}

/// The wanted mappings and the objects that cannot get one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WantedMappings {
    /// One request per port of this node and protocol.
    pub mappings: BTreeMap<MappingKey, Want>,
    /// Objects that get no mapping, and why.
    pub problems: Vec<(Owner, RouterError)>,
}

impl WantedMappings {
    fn add(&mut self, want: Want) {
        let request = &want.request;
        let key = (
            IpFamily::of(request.gateway),
            request.protocol,
            request.external_port,
        );
        match self.mappings.get(&key) {
            // One router port serves one object: claims before Services, then the first by
            // name keeps it.
            Some(kept) if kept.owner <= want.owner => {
                tracing::warn!(kept = %kept.owner, left_out = %want.owner, port = key.2, protocol = %key.1, family = %key.0, "two objects want one router port; the claim, else the first by name, keeps it");
                if matches!(kept.owner, Owner::Claim { .. })
                    && matches!(want.owner, Owner::Service { .. })
                {
                    self.problems.push((
                        want.owner,
                        RouterError::PortClaimed {
                            port: want.request.external_port,
                        },
                    ));
                }
            }
            _ => {
                self.mappings.insert(key, want);
            }
        }
    }

    /// Adds `other`'s mappings and problems (claims first, then Services).
    pub fn merge(&mut self, other: WantedMappings) {
        for want in other.mappings.into_values() {
            self.add(want);
        }
        self.problems.extend(other.problems);
    }
}

/// What this node is.
#[derive(Clone, Copy, Debug)]
pub struct ThisNode<'a> {
    /// Node name.
    pub name: &'a str,
    /// Its addresses, at most one per family (the mapping target, and the address requests
    /// come from).
    pub addresses: &'a [IpAddr],
    /// Its default routes' gateways, at most one per family.
    pub default_gateways: &'a [IpAddr],
    /// Ports never mapped.
    pub deny: &'a DenyList,
    /// The families of classes whose `spec.publish.ipFamilies` is unset (`--ip-families`).
    pub families: &'a [IpFamily],
}

impl ThisNode<'_> {
    /// This node's address of `family`.
    pub fn address(&self, family: IpFamily) -> Option<IpAddr> {
        family.first_of(self.addresses.iter().copied())
    }

    fn default_gateway(&self, family: IpFamily) -> Option<IpAddr> {
        family.first_of(self.default_gateways.iter().copied())
    }

    /// The router to ask over `family`: the class's (`gateway`, `gateway6`), else this
    /// node's default route's.
    fn gateway(&self, router: &RouterPublish, family: IpFamily) -> Result<IpAddr, RouterError> {
        let (configured, missing) = match family {
            IpFamily::Ipv4 => (router.gateway.as_deref(), RouterError::NoGateway),
            IpFamily::Ipv6 => (router.gateway6.as_deref(), RouterError::NoIpv6Gateway),
        };
        match configured {
            Some(address) => address
                .parse::<IpAddr>()
                .ok()
                .filter(|a| IpFamily::of(*a) == family)
                .ok_or(missing),
            None => self.default_gateway(family).ok_or(missing),
        }
    }
}

/// The mappings for claimed ports of pods on this node, one per family the class publishes
/// on.
pub fn claims(inputs: Inputs<'_>, node: ThisNode<'_>) -> WantedMappings {
    let mut wanted = WantedMappings::default();
    for used in claimed_ports(inputs, |p| p.router.is_some()) {
        if used.pod.node.as_deref() != Some(node.name) || !used.pod.running {
            continue;
        }
        let Some(publish) = used.class.spec.publish.as_ref() else {
            continue;
        };
        let Some(router) = publish.router.as_ref() else {
            continue;
        };
        let owner = Owner::Claim {
            namespace: used.claim.namespace.to_string(),
            name: used.claim.name.to_string(),
        };
        if node.deny.denies(used.port) {
            wanted
                .problems
                .push((owner, RouterError::Denied { port: used.port }));
            continue;
        }
        for &family in publish.families(node.families) {
            // This node's address from its flags, never the pod's `status.hostIP`.
            let Some(client) = node.address(family) else {
                wanted.problems.push((
                    owner.clone(),
                    RouterError::NoAddress {
                        node: node.name.to_owned(),
                        family,
                    },
                ));
                continue;
            };
            let gateway = match node.gateway(router, family) {
                Ok(gateway) => gateway,
                Err(error) => {
                    wanted.problems.push((owner.clone(), error));
                    continue;
                }
            };
            let description = format!("hostport-allocator {}", owner_path(&owner));
            wanted.add(Want {
                owner: owner.clone(),
                request: MapRequest {
                    gateway,
                    client,
                    protocol: used.protocol,
                    internal_port: used.port,
                    external_port: used.port,
                    policy: router.external_port,
                    method: router.protocol,
                    lifetime_seconds: router.lifetime_seconds(),
                    description,
                },
            });
        }
    }
    wanted
}

/// How Services are mapped (publisher flags: Services have no class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Which protocols to try.
    pub method: RouterProtocol,
    /// The router, if not the default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Lifetime asked for.
    pub lifetime_seconds: u32,
}

/// The mappings for LoadBalancer Services of our class in allowed namespaces, to this node's
/// nodePorts.
pub fn services(
    services: &[Arc<Service>],
    namespace_allowed: impl Fn(&str) -> bool,
    claimable: &PortSet,
    node: ThisNode<'_>,
    settings: ServiceSettings,
) -> WantedMappings {
    let mut wanted = WantedMappings::default();
    for service in services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let namespace = service.namespace().unwrap_or_default();
        if spec.type_.as_deref() != Some("LoadBalancer")
            || spec.load_balancer_class.as_deref() != Some(LOAD_BALANCER_CLASS)
            || service.metadata.deletion_timestamp.is_some()
            || !namespace_allowed(&namespace)
        {
            continue;
        }
        let owner = Owner::Service {
            namespace,
            name: service.name_any(),
        };
        let gateway = match settings
            .gateway
            .map(IpAddr::V4)
            .or(node.default_gateway(IpFamily::Ipv4))
        {
            Some(gateway) => gateway,
            None => {
                wanted.problems.push((owner, RouterError::NoGateway));
                continue;
            }
        };
        let Some(client) = node.address(IpFamily::Ipv4) else {
            wanted.problems.push((
                owner,
                RouterError::NoAddress {
                    node: node.name.to_owned(),
                    family: IpFamily::Ipv4,
                },
            ));
            continue;
        };
        for NodePort {
            protocol,
            port: external,
            node_port,
        } in node_ports(service)
        {
            if claimable.contains(external) {
                wanted
                    .problems
                    .push((owner.clone(), RouterError::PortClaimed { port: external }));
                continue;
            }
            if node.deny.denies(external) || node.deny.denies(node_port) {
                let denied = if node.deny.denies(external) {
                    external
                } else {
                    node_port
                };
                wanted
                    .problems
                    .push((owner.clone(), RouterError::Denied { port: denied }));
                continue;
            }
            wanted.add(Want {
                owner: owner.clone(),
                request: MapRequest {
                    gateway,
                    client,
                    protocol,
                    internal_port: node_port,
                    external_port: external,
                    policy: ExternalPortPolicy::Same,
                    method: settings.method,
                    lifetime_seconds: settings.lifetime_seconds,
                    description: format!("hostport-allocator {}", owner_path(&owner)),
                },
            });
        }
    }
    wanted
}

fn owner_path(owner: &Owner) -> String {
    match owner {
        Owner::Claim { namespace, name } | Owner::Service { namespace, name } => {
            format!("{namespace}/{name}")
        }
    }
}

#[cfg(test)]
mod tests;
