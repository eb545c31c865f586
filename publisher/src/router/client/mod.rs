//! Talking to the router, behind one [`Router`] trait so the reconcile logic can be tested
//! without a network: the requests, grants and errors here, the real client in [`network`]
//! (PCP and NAT-PMP through `crab_nat`, UPnP-IGD through `igd-next`), `--dry-run`'s logging
//! router in [`dry_run`], and a recording test double in `recording` (tests and the
//! `testing` feature only).
//!
//! Every request is sent from this host, and routers only map ports to the host that asks
//! (NAT-PMP by design, UPnP under miniupnpd's default `secure_mode`, PCP without the
//! THIRD_PARTY option): so the publisher maps the ports of its own node only.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use hostport_api::{ExternalPortPolicy, IpFamily, RouterProtocol};

use crate::claimed::Protocol;

pub mod dry_run;
pub mod network;
#[cfg(any(test, feature = "testing"))]
pub mod recording;

/// How a mapping was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// Port Control Protocol.
    Pcp,
    /// NAT-PMP.
    NatPmp,
    /// UPnP-IGD.
    Upnp,
}

impl Method {
    /// As written in `status.external[].method` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pcp => "PCP",
            Self::NatPmp => "NAT-PMP",
            Self::Upnp => "UPnP",
        }
    }

    /// The methods `protocol` allows for `family`, in the order they are tried (NAT-PMP is
    /// IPv4 only; over IPv6 PCP `MAP` and UPnP IGD:2 `AddPinhole` open a pinhole to this
    /// host's own address).
    pub fn candidates(protocol: RouterProtocol, family: IpFamily) -> &'static [Method] {
        match (protocol, family) {
            (RouterProtocol::Auto, IpFamily::Ipv4) => &[Self::Pcp, Self::NatPmp, Self::Upnp],
            (RouterProtocol::Auto, IpFamily::Ipv6) => &[Self::Pcp, Self::Upnp],
            (RouterProtocol::Pcp, _) => &[Self::Pcp],
            (RouterProtocol::Natpmp, IpFamily::Ipv4) => &[Self::NatPmp],
            (RouterProtocol::Natpmp, IpFamily::Ipv6) => &[],
            (RouterProtocol::Upnp, _) => &[Self::Upnp],
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One mapping to ask the router for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRequest {
    /// The router (an IPv6 address for an IPv6 pinhole).
    pub gateway: IpAddr,
    /// This host's address, where the router sends the traffic (of the gateway's family).
    pub client: IpAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port on this host.
    pub internal_port: u16,
    /// The external port asked for.
    pub external_port: u16,
    /// Whether another external port is acceptable.
    pub policy: ExternalPortPolicy,
    /// Which protocols to try.
    pub method: RouterProtocol,
    /// Lifetime asked for.
    pub lifetime_seconds: u32,
    /// Shown in the router's UPnP mapping list.
    pub description: String,
}

/// What the router granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// How.
    pub method: Method,
    /// The router's public address (IPv6: this host's own address, opened by a pinhole).
    pub external_address: IpAddr,
    /// The external port.
    pub external_port: u16,
    /// Lifetime granted.
    pub lifetime: Duration,
}

/// Why a mapping failed; [`RouterError::reason`] is the condition and Event reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The port is on the publisher's deny-list: it is never published.
    #[error(
        "port {port} is on the publisher's deny-list (--deny-ports) and is never published; use a port outside it"
    )]
    Denied {
        /// The port.
        port: u16,
    },
    /// A Service port that claims may hold (in a class's pools, or a claim's port): claims
    /// win over Services, so it is never published for the Service.
    #[error(
        "port {port} belongs to the host ports of a HostPortClass (in its pools, or held by a claim): claims win over Services, so it is not published; give the Service another port"
    )]
    PortClaimed {
        /// The port.
        port: u16,
    },
    /// No gateway configured and no default route.
    #[error(
        "no router address: set spec.publish.router.gateway on the class (or --gateway) or give the node a default route"
    )]
    NoGateway,
    /// No IPv6 router configured and no IPv6 default route.
    #[error(
        "no IPv6 router address: set spec.publish.router.gateway6 on the class (or --gateway6) or give the node an IPv6 default route"
    )]
    NoIpv6Gateway,
    /// The class publishes over a family this node has no address of.
    #[error(
        "node {node} has no {family} address (--node-ip, from the pod's status.hostIPs): its pods are not published over {family}"
    )]
    NoAddress {
        /// The node.
        node: String,
        /// The family.
        family: IpFamily,
    },
    /// The router answers neither PCP over IPv6 nor UPnP IGD:2 pinholes.
    #[error(
        "router {gateway} opens no IPv6 pinholes (tried {methods}: {detail}); enable PCP or UPnP IGD:2 IPv6 firewall control on it, or publish over IPv4 only (spec.publish.ipFamilies)"
    )]
    PinholesNotSupported {
        /// The router.
        gateway: IpAddr,
        /// The methods tried.
        methods: String,
        /// What went wrong, per method.
        detail: String,
    },
    /// The router did not answer (or does not speak the protocol).
    #[error("router {gateway} did not answer {methods}: {detail}")]
    Unreachable {
        /// The router.
        gateway: IpAddr,
        /// The methods tried.
        methods: String,
        /// What went wrong, per method.
        detail: String,
    },
    /// The router answered no.
    #[error("router {gateway} refused the {method} mapping: {detail}")]
    Refused {
        /// The router.
        gateway: IpAddr,
        /// How it was asked.
        method: Method,
        /// The router's answer.
        detail: String,
    },
    /// The external port is mapped to another host (or the router offered another port and
    /// the class wants the same one).
    #[error(
        "router {gateway} has {protocol} port {port} mapped elsewhere ({method}{offered}); free it on the router or set spec.publish.router.externalPort: any on the class"
    )]
    PortTaken {
        /// The router.
        gateway: IpAddr,
        /// How it was asked.
        method: Method,
        /// Protocol.
        protocol: Protocol,
        /// The port asked for.
        port: u16,
        /// ", offered N" when the router offered another port.
        offered: String,
    },
}

impl RouterError {
    /// The `Published` condition reason and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied { .. } => "PortDenied",
            Self::PortClaimed { .. } => crate::claimed::PORT_CLAIMED,
            Self::NoGateway | Self::NoIpv6Gateway => "NoGateway",
            Self::NoAddress {
                family: IpFamily::Ipv6,
                ..
            } => "NoIPv6Address",
            Self::NoAddress { .. } => "NoIPv4Address",
            Self::PinholesNotSupported { .. } => "PinholesNotSupported",
            Self::Unreachable { .. } => "RouterUnreachable",
            Self::Refused { .. } => "RouterRefused",
            Self::PortTaken { .. } => "PortTakenExternally",
        }
    }
}

/// A router that maps ports. `Lease` is what it needs to renew or remove a mapping.
pub trait Router: Send + Sync {
    /// A granted mapping's handle.
    type Lease: Send + Sync + fmt::Debug;

    /// Asks for a mapping.
    fn map(
        &self,
        request: &MapRequest,
    ) -> impl Future<Output = Result<(Self::Lease, Mapped), RouterError>> + Send;

    /// Renews a mapping (same external port).
    fn renew(
        &self,
        lease: &mut Self::Lease,
        request: &MapRequest,
    ) -> impl Future<Output = Result<Mapped, RouterError>> + Send;

    /// Removes a mapping.
    fn unmap(&self, lease: Self::Lease) -> impl Future<Output = Result<(), RouterError>> + Send;
}

/// One router shared by the loops (claims and Services).
impl<R: Router> Router for std::sync::Arc<R> {
    type Lease = R::Lease;

    fn map(
        &self,
        request: &MapRequest,
    ) -> impl Future<Output = Result<(Self::Lease, Mapped), RouterError>> + Send {
        (**self).map(request)
    }

    fn renew(
        &self,
        lease: &mut Self::Lease,
        request: &MapRequest,
    ) -> impl Future<Output = Result<Mapped, RouterError>> + Send {
        (**self).renew(lease, request)
    }

    fn unmap(&self, lease: Self::Lease) -> impl Future<Output = Result<(), RouterError>> + Send {
        (**self).unmap(lease)
    }
}
