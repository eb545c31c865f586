//! Talking to the router: PCP and NAT-PMP through `crab_nat`, UPnP-IGD through `igd-next`,
//! behind one [`Router`] trait so the reconcile logic can be tested without a network.
//!
//! Every request is sent from this host, and routers only map ports to the host that asks
//! (NAT-PMP by design, UPnP under miniupnpd's default `secure_mode`, PCP without the
//! THIRD_PARTY option): so the publisher maps the ports of its own node only.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::Mutex;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType, TimeoutConfig};
use hostport_api::{ExternalPortPolicy, RouterProtocol};
use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway as UpnpGateway;
use igd_next::aio::tokio::Tokio;

use crate::forward::Protocol;

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

    /// The methods `protocol` allows, in the order they are tried.
    pub fn candidates(protocol: RouterProtocol) -> &'static [Method] {
        match protocol {
            RouterProtocol::Auto => &[Self::Pcp, Self::NatPmp, Self::Upnp],
            RouterProtocol::Pcp => &[Self::Pcp],
            RouterProtocol::Natpmp => &[Self::NatPmp],
            RouterProtocol::Upnp => &[Self::Upnp],
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
    /// The router.
    pub gateway: Ipv4Addr,
    /// This host's address, where the router sends the traffic.
    pub client: Ipv4Addr,
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
    /// The router's public address.
    pub external_address: Ipv4Addr,
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
    /// The router did not answer (or does not speak the protocol).
    #[error("router {gateway} did not answer {methods}: {detail}")]
    Unreachable {
        /// The router.
        gateway: Ipv4Addr,
        /// The methods tried.
        methods: String,
        /// What went wrong, per method.
        detail: String,
    },
    /// The router answered no.
    #[error("router {gateway} refused the {method} mapping: {detail}")]
    Refused {
        /// The router.
        gateway: Ipv4Addr,
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
        gateway: Ipv4Addr,
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
            Self::PortClaimed { .. } => crate::desired::PORT_CLAIMED,
            Self::NoGateway => "NoGateway",
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

/// A mapping made on a real router.
#[derive(Debug)]
pub enum Lease {
    /// PCP or NAT-PMP, as `crab_nat` keeps it.
    PortControl(PortMapping),
    /// UPnP-IGD: removed by external port and protocol.
    Upnp {
        /// The router.
        gateway: Ipv4Addr,
        /// Protocol.
        protocol: Protocol,
        /// External port.
        external_port: u16,
    },
}

/// Real routers, over the network.
#[derive(Debug)]
pub struct NetworkRouter {
    timeouts: TimeoutConfig,
    search_timeout: Duration,
    /// Per router, the method that worked last (tried first next time).
    working: Mutex<HashMap<Ipv4Addr, Method>>,
    /// Per router, its UPnP control endpoint once found.
    upnp: tokio::sync::Mutex<HashMap<Ipv4Addr, UpnpGateway<Tokio>>>,
    /// The PCP nonce: a PCP server lets only the same nonce renew or delete a mapping, so a
    /// restarted publisher must present the one it used before.
    pcp_nonce: Option<crab_nat::pcp::Nonce>,
}

impl Default for NetworkRouter {
    fn default() -> Self {
        Self::new(Duration::from_millis(250), 3)
    }
}

impl NetworkRouter {
    /// A client whose PCP/NAT-PMP requests wait `first_timeout` and double it for each of
    /// `retries` retries (RFC 6886 starts at 250 ms; 3 retries give up after ~4 s).
    pub fn new(first_timeout: Duration, retries: usize) -> Self {
        Self {
            timeouts: TimeoutConfig {
                initial_timeout: first_timeout,
                max_retries: retries,
                max_retry_timeout: Some(first_timeout * 8),
            },
            search_timeout: first_timeout * 8,
            working: Mutex::new(HashMap::new()),
            upnp: tokio::sync::Mutex::new(HashMap::new()),
            pcp_nonce: None,
        }
    }

    /// Uses a PCP nonce derived from `identity` (the node name): the same after a restart,
    /// so the mappings a previous run left (`--keep-mappings`) are renewed and removed rather
    /// than refused until they lapse.
    pub fn with_stable_pcp_nonce(mut self, identity: &str) -> Self {
        self.pcp_nonce = Some(stable_nonce(identity));
        self
    }

    fn order(&self, request: &MapRequest) -> Vec<Method> {
        let mut methods = Method::candidates(request.method).to_vec();
        let worked = self
            .working
            .lock()
            .ok()
            .and_then(|w| w.get(&request.gateway).copied());
        if let Some(worked) = worked
            && let Some(at) = methods.iter().position(|m| *m == worked)
        {
            methods[..=at].rotate_right(1);
        }
        methods
    }

    fn remember(&self, gateway: Ipv4Addr, method: Method) {
        if let Ok(mut working) = self.working.lock() {
            working.insert(gateway, method);
        }
    }

    fn options(&self, request: &MapRequest) -> PortMappingOptions {
        PortMappingOptions {
            external_port: NonZeroU16::new(request.external_port),
            lifetime_seconds: Some(request.lifetime_seconds),
            timeout_config: Some(self.timeouts),
        }
    }

    async fn map_with(
        &self,
        method: Method,
        request: &MapRequest,
    ) -> Result<(Lease, Mapped), Attempt> {
        match method {
            Method::Pcp | Method::NatPmp => self.port_control(method, request).await,
            Method::Upnp => self.upnp_map(request).await,
        }
    }

    async fn port_control(
        &self,
        method: Method,
        request: &MapRequest,
    ) -> Result<(Lease, Mapped), Attempt> {
        let internal = NonZeroU16::new(request.internal_port)
            .ok_or_else(|| Attempt::Refused("internal port 0".into()))?;
        let gateway = crab_nat::GatewayAddress::from(request.gateway);
        let protocol = internet_protocol(request.protocol);
        let mapping = if method == Method::Pcp {
            let base = crab_nat::pcp::BaseMapRequest::new(
                gateway,
                IpAddr::V4(request.client),
                protocol,
                internal,
            );
            crab_nat::pcp::port_mapping(base, self.pcp_nonce, None, self.options(request))
                .await
                .map_err(Attempt::from_pcp)?
        } else {
            crab_nat::natpmp::port_mapping(gateway, protocol, internal, self.options(request))
                .await
                .map_err(Attempt::from_natpmp)?
        };
        let mapped = self.granted(&mapping).await?;
        let lease = Lease::PortControl(mapping);
        if request.policy == ExternalPortPolicy::Same
            && mapped.external_port != request.external_port
        {
            // Offered another port: give it back rather than hold a port nobody asked for.
            let offered = mapped.external_port;
            if let Err(error) = self.unmap(lease).await {
                tracing::warn!(%error, "giving back a mapping on another port failed");
            }
            return Err(Attempt::Taken {
                offered: Some(offered),
            });
        }
        Ok((lease, mapped))
    }

    /// What a PCP or NAT-PMP grant is: PCP answers with the public address, NAT-PMP is asked
    /// for it (again at each renewal: the router's public address may change).
    async fn granted(&self, mapping: &PortMapping) -> Result<Mapped, Attempt> {
        let external_address = match mapping.mapping_type() {
            PortMappingType::Pcp {
                external_ip: IpAddr::V4(ip),
                ..
            } => ip,
            PortMappingType::Pcp { .. } => {
                return Err(Attempt::Refused("the router gave an IPv6 address".into()));
            }
            PortMappingType::NatPmp => {
                crab_nat::natpmp::external_address(mapping.gateway(), Some(self.timeouts))
                    .await
                    .map_err(Attempt::from_natpmp)?
            }
        };
        Ok(Mapped {
            method: port_control_method(mapping),
            external_address,
            external_port: mapping.external_port().get(),
            lifetime: Duration::from_secs(u64::from(mapping.lifetime())),
        })
    }

    async fn upnp_gateway(&self, gateway: Ipv4Addr) -> Result<UpnpGateway<Tokio>, Attempt> {
        let mut known = self.upnp.lock().await;
        if let Some(found) = known.get(&gateway) {
            return Ok(found.clone());
        }
        let mut options = igd_next::SearchOptions::default();
        // Ask the router itself, not the whole LAN: the answer must come from the gateway.
        options.broadcast_address = SocketAddr::from((gateway, 1900));
        options.timeout = Some(self.search_timeout);
        options.single_search_timeout = Some(self.search_timeout);
        let found = igd_next::aio::tokio::search_gateway(options)
            .await
            .map_err(|e| Attempt::NoAnswer(format!("SSDP search: {e}")))?;
        known.insert(gateway, found.clone());
        Ok(found)
    }

    async fn forget_upnp(&self, gateway: Ipv4Addr) {
        self.upnp.lock().await.remove(&gateway);
    }

    async fn upnp_map(&self, request: &MapRequest) -> Result<(Lease, Mapped), Attempt> {
        let found = self.upnp_gateway(request.gateway).await?;
        let local = SocketAddr::from((request.client, request.internal_port));
        let protocol = upnp_protocol(request.protocol);
        let added = found
            .add_port(
                protocol,
                request.external_port,
                local,
                request.lifetime_seconds,
                &request.description,
            )
            .await;
        let external_port = match added {
            Ok(()) => request.external_port,
            Err(igd_next::AddPortError::PortInUse) if request.policy == ExternalPortPolicy::Any => {
                found
                    .add_any_port(
                        protocol,
                        local,
                        request.lifetime_seconds,
                        &request.description,
                    )
                    .await
                    .map_err(|e| Attempt::Refused(e.to_string()))?
            }
            Err(igd_next::AddPortError::PortInUse) => {
                return Err(Attempt::Taken { offered: None });
            }
            Err(igd_next::AddPortError::RequestError(e)) => {
                self.forget_upnp(request.gateway).await;
                return Err(Attempt::NoAnswer(e.to_string()));
            }
            Err(e) => return Err(Attempt::Refused(e.to_string())),
        };
        let external_address = match found.get_external_ip().await {
            Ok(IpAddr::V4(ip)) => ip,
            Ok(IpAddr::V6(_)) => {
                return Err(Attempt::Refused("the router gave an IPv6 address".into()));
            }
            Err(e) => return Err(Attempt::Refused(format!("GetExternalIPAddress: {e}"))),
        };
        Ok((
            Lease::Upnp {
                gateway: request.gateway,
                protocol: request.protocol,
                external_port,
            },
            Mapped {
                method: Method::Upnp,
                external_address,
                external_port,
                lifetime: Duration::from_secs(u64::from(request.lifetime_seconds)),
            },
        ))
    }
}

/// One method's failure, before it becomes a [`RouterError`].
#[derive(Debug)]
enum Attempt {
    /// No answer, or the router does not speak this method: the next method is tried.
    NoAnswer(String),
    /// The router said no.
    Refused(String),
    /// The port is someone else's.
    Taken { offered: Option<u16> },
}

impl Attempt {
    /// The error this failure of `method` is, for `request`.
    fn into_error(self, method: Method, request: &MapRequest) -> RouterError {
        let gateway = request.gateway;
        match self {
            Self::NoAnswer(detail) => RouterError::Unreachable {
                gateway,
                methods: method.to_string(),
                detail,
            },
            Self::Refused(detail) => RouterError::Refused {
                gateway,
                method,
                detail,
            },
            Self::Taken { offered } => RouterError::PortTaken {
                gateway,
                method,
                protocol: request.protocol,
                port: request.external_port,
                offered: offered
                    .map(|p| format!(", offered {p}"))
                    .unwrap_or_default(),
            },
        }
    }

    fn from_pcp(failure: crab_nat::pcp::Failure) -> Self {
        use crab_nat::pcp::Failure as F;
        match failure {
            F::Socket(_)
            | F::Timeout
            | F::UnsupportedVersion(_)
            | F::UnsupportedOpcode
            | F::InvalidResponse(_) => Self::NoAnswer(format!("PCP: {failure}")),
            F::CannotProvideExternal(_) => Self::Taken { offered: None },
            other => Self::Refused(other.to_string()),
        }
    }

    fn from_natpmp(failure: crab_nat::natpmp::Failure) -> Self {
        use crab_nat::natpmp::Failure as F;
        match failure {
            F::Socket(_)
            | F::Timeout
            | F::UnsupportedVersion(_)
            | F::UnsupportedOpcode
            | F::InvalidResponse(_) => Self::NoAnswer(format!("NAT-PMP: {failure}")),
            other => Self::Refused(other.to_string()),
        }
    }
}

impl Router for NetworkRouter {
    type Lease = Lease;

    async fn map(&self, request: &MapRequest) -> Result<(Lease, Mapped), RouterError> {
        let mut unanswered = vec![];
        let methods = self.order(request);
        for &method in &methods {
            match self.map_with(method, request).await {
                Ok(granted) => {
                    self.remember(request.gateway, method);
                    return Ok(granted);
                }
                Err(Attempt::NoAnswer(detail)) => unanswered.push(detail),
                Err(failure) => {
                    if matches!(failure, Attempt::Taken { .. }) {
                        // It speaks this method: ask it this way first next time.
                        self.remember(request.gateway, method);
                    }
                    return Err(failure.into_error(method, request));
                }
            }
        }
        Err(RouterError::Unreachable {
            gateway: request.gateway,
            methods: methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            detail: unanswered.join("; "),
        })
    }

    async fn renew(&self, lease: &mut Lease, request: &MapRequest) -> Result<Mapped, RouterError> {
        match lease {
            Lease::PortControl(mapping) => {
                let method = port_control_method(mapping);
                let renewed = match mapping.renew().await {
                    Ok(()) => self.granted(mapping).await,
                    Err(crab_nat::MappingFailure::Pcp(f)) => Err(Attempt::from_pcp(f)),
                    Err(crab_nat::MappingFailure::NatPmp(f)) => Err(Attempt::from_natpmp(f)),
                };
                renewed.map_err(|failure| failure.into_error(method, request))
            }
            Lease::Upnp { external_port, .. } => {
                let renew = MapRequest {
                    external_port: *external_port,
                    policy: ExternalPortPolicy::Same,
                    ..request.clone()
                };
                self.upnp_map(&renew)
                    .await
                    .map(|(_, mapped)| mapped)
                    .map_err(|failure| failure.into_error(Method::Upnp, request))
            }
        }
    }

    async fn unmap(&self, lease: Lease) -> Result<(), RouterError> {
        match lease {
            Lease::PortControl(mapping) => {
                let gateway = match mapping.gateway() {
                    crab_nat::GatewayAddress::IpV4(ip) => ip,
                    crab_nat::GatewayAddress::IpV6(..) => Ipv4Addr::UNSPECIFIED,
                };
                let method = port_control_method(&mapping);
                mapping
                    .try_drop()
                    .await
                    .map_err(|(failure, _)| RouterError::Refused {
                        gateway,
                        method,
                        detail: failure.to_string(),
                    })
            }
            Lease::Upnp {
                gateway,
                protocol,
                external_port,
            } => {
                let found =
                    self.upnp_gateway(gateway)
                        .await
                        .map_err(|a| RouterError::Unreachable {
                            gateway,
                            methods: Method::Upnp.to_string(),
                            detail: format!("{a:?}"),
                        })?;
                match found
                    .remove_port(upnp_protocol(protocol), external_port)
                    .await
                {
                    Ok(()) | Err(igd_next::RemovePortError::NoSuchPortMapping) => Ok(()),
                    Err(e) => Err(RouterError::Refused {
                        gateway,
                        method: Method::Upnp,
                        detail: e.to_string(),
                    }),
                }
            }
        }
    }
}

/// Three 32-bit FNV-1a hashes of `identity` (with different seeds): stable across runs and
/// releases, unlike `std`'s hasher.
fn stable_nonce(identity: &str) -> crab_nat::pcp::Nonce {
    let hash = |seed: u32| {
        identity.bytes().fold(0x811c_9dc5_u32 ^ seed, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    };
    [hash(0), hash(0x9e37_79b9), hash(0x7f4a_7c15)]
}

/// PCP or NAT-PMP, as `crab_nat` made the mapping.
fn port_control_method(mapping: &PortMapping) -> Method {
    match mapping.mapping_type() {
        PortMappingType::Pcp { .. } => Method::Pcp,
        PortMappingType::NatPmp => Method::NatPmp,
    }
}

fn internet_protocol(protocol: Protocol) -> InternetProtocol {
    match protocol {
        Protocol::Tcp => InternetProtocol::Tcp,
        Protocol::Udp => InternetProtocol::Udp,
    }
}

fn upnp_protocol(protocol: Protocol) -> PortMappingProtocol {
    match protocol {
        Protocol::Tcp => PortMappingProtocol::TCP,
        Protocol::Udp => PortMappingProtocol::UDP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: RouterProtocol) -> MapRequest {
        MapRequest {
            gateway: Ipv4Addr::new(192, 0, 2, 1),
            client: Ipv4Addr::new(192, 0, 2, 2),
            protocol: Protocol::Tcp,
            internal_port: 7777,
            external_port: 7777,
            policy: ExternalPortPolicy::Same,
            method,
            lifetime_seconds: 3600,
            description: String::new(),
        }
    }

    #[test]
    fn auto_tries_pcp_then_natpmp_then_upnp_and_then_what_worked_first() {
        let router = NetworkRouter::default();
        let auto = request(RouterProtocol::Auto);
        assert_eq!(
            router.order(&auto),
            [Method::Pcp, Method::NatPmp, Method::Upnp]
        );
        router.remember(auto.gateway, Method::Upnp);
        assert_eq!(
            router.order(&auto),
            [Method::Upnp, Method::Pcp, Method::NatPmp]
        );
        assert_eq!(
            router.order(&request(RouterProtocol::Natpmp)),
            [Method::NatPmp]
        );
    }

    #[tokio::test]
    async fn a_router_that_does_not_answer_is_reported_with_every_method_tried() {
        // Nothing listens on 127.0.0.1:5351 or :1900: no answer to any method.
        let router = NetworkRouter::new(Duration::from_millis(20), 0);
        let mut request = request(RouterProtocol::Auto);
        request.gateway = Ipv4Addr::LOCALHOST;
        request.client = Ipv4Addr::LOCALHOST;
        let error = router.map(&request).await.expect_err("no router");
        assert_eq!(error.reason(), "RouterUnreachable");
        let text = error.to_string();
        assert!(
            text.starts_with("router 127.0.0.1 did not answer PCP, NAT-PMP, UPnP: "),
            "{text}"
        );
        assert!(text.contains("SSDP search"), "{text}");
    }

    #[test]
    fn the_pcp_nonce_is_stable_per_identity() {
        assert_eq!(stable_nonce("node-a"), stable_nonce("node-a"));
        assert_ne!(stable_nonce("node-a"), stable_nonce("node-b"));
        assert_eq!(stable_nonce("")[0], 0x811c_9dc5);
    }

    #[test]
    fn every_error_names_a_reason_and_the_fix() {
        let taken = RouterError::PortTaken {
            gateway: Ipv4Addr::new(192, 0, 2, 1),
            method: Method::NatPmp,
            protocol: Protocol::Udp,
            port: 7777,
            offered: ", offered 7778".into(),
        };
        assert_eq!(taken.reason(), "PortTakenExternally");
        let text = taken.to_string();
        assert!(
            text.contains("udp port 7777") && text.contains("externalPort: any"),
            "{text}"
        );
        assert!(RouterError::NoGateway.to_string().contains("gateway"));
        assert_eq!(RouterError::NoGateway.reason(), "NoGateway");
    }
}
