//! `--dry-run`: a [`Router`] that logs what it would ask and asks nothing.

use std::net::Ipv4Addr;

use hostport_api::IpFamily;
use std::time::Duration;

use crate::router::client::{MapRequest, Mapped, Method, Router, RouterError};

/// Logs requests; grants them all on the unspecified address.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoggingRouter;

impl Router for LoggingRouter {
    type Lease = MapRequest;

    async fn map(&self, request: &MapRequest) -> Result<(MapRequest, Mapped), RouterError> {
        tracing::info!(gateway = %request.gateway, protocol = %request.protocol, external_port = request.external_port, internal = %format!("{}:{}", request.client, request.internal_port), method = ?request.method, lifetime_seconds = request.lifetime_seconds, "dry run: would map");
        Ok((request.clone(), granted(request)))
    }

    async fn renew(
        &self,
        _lease: &mut MapRequest,
        request: &MapRequest,
    ) -> Result<Mapped, RouterError> {
        tracing::info!(gateway = %request.gateway, protocol = %request.protocol, external_port = request.external_port, "dry run: would renew");
        Ok(granted(request))
    }

    async fn unmap(&self, lease: MapRequest) -> Result<(), RouterError> {
        tracing::info!(gateway = %lease.gateway, protocol = %lease.protocol, external_port = lease.external_port, "dry run: would remove");
        Ok(())
    }
}

fn granted(request: &MapRequest) -> Mapped {
    Mapped {
        method: Method::candidates(request.method, IpFamily::of(request.gateway))
            .first()
            .copied()
            .unwrap_or(Method::Pcp),
        // A pinhole's public address is the host's own; a mapping's is not known here.
        external_address: if request.client.is_ipv6() {
            request.client
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        },
        external_port: request.external_port,
        lifetime: Duration::from_secs(u64::from(request.lifetime_seconds)),
    }
}
