//! The real router client: PCP and NAT-PMP through `crab_nat`, UPnP-IGD through `igd-next`;
//! `auto` tries them in that order and remembers per router what worked. Over IPv6 (a
//! request to the router's IPv6 address) the mapping is a firewall pinhole to this host's
//! own address: PCP `MAP` over IPv6, else UPnP IGD:2 `WANIPv6FirewallControl.AddPinhole`
//! (found with an SSDP search sent to the router's IPv6 address, so the router sees the
//! request come from the address it opens the pinhole to).
//!
//! Over ~500 lines only with its tests (from line ~470): three protocols behind one client.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::num::NonZeroU16;
use std::sync::Mutex;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType, TimeoutConfig};
use hostport_api::{ExternalPortPolicy, IpFamily};
use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway as UpnpGateway;
use igd_next::aio::tokio::Tokio;

use crate::claimed::Protocol;
use crate::router::client::{MapRequest, Mapped, Method, Router, RouterError};

/// A mapping made on a real router.
#[derive(Debug)]
pub enum Lease {
    /// PCP or NAT-PMP, as `crab_nat` keeps it.
    PortControl(PortMapping),
    /// UPnP-IGD: removed by external port and protocol.
    Upnp {
        /// The router.
        gateway: IpAddr,
        /// Protocol.
        protocol: Protocol,
        /// External port.
        external_port: u16,
    },
    /// UPnP IGD:2 IPv6 pinhole: renewed and removed by the id the router gave.
    Pinhole {
        /// The router.
        gateway: IpAddr,
        /// The router's `UniqueID` for it.
        unique_id: u16,
    },
}

/// Real routers, over the network.
#[derive(Debug)]
pub struct NetworkRouter {
    timeouts: TimeoutConfig,
    search_timeout: Duration,
    /// Per router, the method that worked last (tried first next time).
    working: Mutex<HashMap<IpAddr, Method>>,
    /// Per router, its UPnP control endpoint once found.
    upnp: tokio::sync::Mutex<HashMap<IpAddr, UpnpGateway<Tokio>>>,
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
        let family = IpFamily::of(request.gateway);
        let mut methods = Method::candidates(request.method, family).to_vec();
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

    fn remember(&self, gateway: IpAddr, method: Method) {
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
            let base =
                crab_nat::pcp::BaseMapRequest::new(gateway, request.client, protocol, internal);
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
            PortMappingType::Pcp { external_ip, .. } => external_ip,
            PortMappingType::NatPmp => IpAddr::V4(
                crab_nat::natpmp::external_address(mapping.gateway(), Some(self.timeouts))
                    .await
                    .map_err(Attempt::from_natpmp)?,
            ),
        };
        Ok(Mapped {
            method: port_control_method(mapping),
            external_address,
            external_port: mapping.external_port().get(),
            lifetime: Duration::from_secs(u64::from(mapping.lifetime())),
        })
    }

    async fn upnp_gateway(&self, gateway: IpAddr) -> Result<UpnpGateway<Tokio>, Attempt> {
        let mut known = self.upnp.lock().await;
        if let Some(found) = known.get(&gateway) {
            return Ok(found.clone());
        }
        let mut options = igd_next::SearchOptions::default();
        // Ask the router itself, not the whole LAN: the answer must come from the gateway.
        options.broadcast_address = SocketAddr::new(gateway, 1900);
        if gateway.is_ipv6() {
            options.bind_addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
        }
        options.timeout = Some(self.search_timeout);
        options.single_search_timeout = Some(self.search_timeout);
        let found = igd_next::aio::tokio::search_gateway(options)
            .await
            .map_err(|e| Attempt::NoAnswer(format!("SSDP search: {e}")))?;
        known.insert(gateway, found.clone());
        Ok(found)
    }

    /// The UPnP control endpoint of `gateway`, to remove a mapping or pinhole there.
    async fn upnp_gateway_for_removal(
        &self,
        gateway: IpAddr,
    ) -> Result<UpnpGateway<Tokio>, RouterError> {
        self.upnp_gateway(gateway)
            .await
            .map_err(|a| RouterError::Unreachable {
                gateway,
                methods: Method::Upnp.to_string(),
                detail: format!("{a:?}"),
            })
    }

    async fn forget_upnp(&self, gateway: IpAddr) {
        self.upnp.lock().await.remove(&gateway);
    }

    async fn upnp_map(&self, request: &MapRequest) -> Result<(Lease, Mapped), Attempt> {
        let found = self.upnp_gateway(request.gateway).await?;
        if let IpAddr::V6(client) = request.client {
            return self.upnp_pinhole(&found, request, client).await;
        }
        let local = SocketAddr::new(request.client, request.internal_port);
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
        let external_address = found
            .get_external_ip()
            .await
            .map_err(|e| Attempt::Refused(format!("GetExternalIPAddress: {e}")))?;
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

impl NetworkRouter {
    /// An IGD:2 pinhole to `client`'s port: no NAT, so the public address is the client's
    /// and the port is the internal one.
    async fn upnp_pinhole(
        &self,
        found: &UpnpGateway<Tokio>,
        request: &MapRequest,
        client: Ipv6Addr,
    ) -> Result<(Lease, Mapped), Attempt> {
        let local = SocketAddrV6::new(client, request.internal_port, 0, 0);
        let lifetime = request.lifetime_seconds.clamp(1, 86_400);
        let unique_id = found
            .add_pinhole(upnp_protocol(request.protocol), local, lifetime)
            .await
            .map_err(|e| pinhole_attempt(e, "AddPinhole"))?;
        Ok((
            Lease::Pinhole {
                gateway: request.gateway,
                unique_id,
            },
            pinhole_mapped(request, lifetime),
        ))
    }
}

fn pinhole_mapped(request: &MapRequest, lifetime: u32) -> Mapped {
    Mapped {
        method: Method::Upnp,
        external_address: request.client,
        external_port: request.internal_port,
        lifetime: Duration::from_secs(u64::from(lifetime)),
    }
}

/// A pinhole request's failure: no IPv6 firewall control (or no answer) lets the next
/// method be tried; anything else is the router's no.
fn pinhole_attempt(error: igd_next::PinholeError, action: &str) -> Attempt {
    match error {
        igd_next::PinholeError::FirewallControlUnavailable
        | igd_next::PinholeError::RequestError(_) => {
            Attempt::NoAnswer(format!("{action}: {error}"))
        }
        other => Attempt::Refused(format!("{action}: {other}")),
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
        let methods = methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let detail = unanswered.join("; ");
        Err(if request.gateway.is_ipv6() {
            RouterError::PinholesNotSupported {
                gateway: request.gateway,
                methods,
                detail,
            }
        } else {
            RouterError::Unreachable {
                gateway: request.gateway,
                methods,
                detail,
            }
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
            Lease::Pinhole { gateway, unique_id } => {
                let lifetime = request.lifetime_seconds.clamp(1, 86_400);
                let found = self
                    .upnp_gateway(*gateway)
                    .await
                    .map_err(|failure| failure.into_error(Method::Upnp, request))?;
                found
                    .update_pinhole(*unique_id, lifetime)
                    .await
                    .map_err(|e| {
                        pinhole_attempt(e, "UpdatePinhole").into_error(Method::Upnp, request)
                    })?;
                Ok(pinhole_mapped(request, lifetime))
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
                let gateway = IpAddr::from(mapping.gateway());
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
                let found = self.upnp_gateway_for_removal(gateway).await?;
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
            Lease::Pinhole { gateway, unique_id } => {
                let found = self.upnp_gateway_for_removal(gateway).await?;
                match found.remove_pinhole(unique_id).await {
                    Ok(()) | Err(igd_next::PinholeError::NoSuchEntry) => Ok(()),
                    Err(e) => Err(RouterError::Refused {
                        gateway,
                        method: Method::Upnp,
                        detail: format!("DeletePinhole: {e}"),
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
    use hostport_api::RouterProtocol;

    use std::net::Ipv4Addr;

    fn request(method: RouterProtocol) -> MapRequest {
        MapRequest {
            gateway: Ipv4Addr::new(192, 0, 2, 1).into(),
            client: Ipv4Addr::new(192, 0, 2, 2).into(),
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
        // Over IPv6: pinholes, with PCP or UPnP IGD:2 only.
        let mut six = request(RouterProtocol::Auto);
        six.gateway = "2001:db8::1".parse().expect("ip");
        assert_eq!(router.order(&six), [Method::Pcp, Method::Upnp]);
        six.method = RouterProtocol::Natpmp;
        assert!(router.order(&six).is_empty());
    }

    #[tokio::test]
    async fn a_router_that_does_not_answer_is_reported_with_every_method_tried() {
        // Nothing listens on 127.0.0.1:5351 or :1900: no answer to any method.
        let router = NetworkRouter::new(Duration::from_millis(20), 0);
        let mut request = request(RouterProtocol::Auto);
        request.gateway = Ipv4Addr::LOCALHOST.into();
        request.client = Ipv4Addr::LOCALHOST.into();
        let error = router.map(&request).await.expect_err("no router");
        assert_eq!(error.reason(), "RouterUnreachable");
        let text = error.to_string();
        assert!(
            text.starts_with("router 127.0.0.1 did not answer PCP, NAT-PMP, UPnP: "),
            "{text}"
        );
        assert!(text.contains("SSDP search"), "{text}");
        // Over IPv6 the same silence is a router that opens no pinholes.
        request.gateway = std::net::Ipv6Addr::LOCALHOST.into();
        request.client = std::net::Ipv6Addr::LOCALHOST.into();
        let error = router.map(&request).await.expect_err("no router");
        assert_eq!(error.reason(), "PinholesNotSupported");
        assert!(
            error
                .to_string()
                .starts_with("router ::1 opens no IPv6 pinholes (tried PCP, UPnP: "),
            "{error}"
        );
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
            gateway: Ipv4Addr::new(192, 0, 2, 1).into(),
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
