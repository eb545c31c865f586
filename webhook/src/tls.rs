//! TLS for the webhook server: certificates generated with rcgen (a CA and a serving
//! certificate signed by it), a certificate resolver whose key can be swapped while serving
//! (rotation without restart), and an HTTPS accept loop (HTTP/1.1 and HTTP/2, TLS 1.2+, ring).

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Why certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM input is unusable.
    #[error("{what}: {message}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the key or configuration.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A CA and a serving certificate it signed, in PEM.
#[derive(Clone, Debug)]
pub struct GeneratedCerts {
    /// The CA certificate: what goes into a webhook configuration's `caBundle`.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

/// Generates a CA and a serving certificate for `dns_names` and `ips`, valid for `validity`.
pub fn generate(
    dns_names: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> Result<GeneratedCerts, TlsError> {
    let now = time_now();
    let not_after = now + validity;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hostport-allocator webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::from_secs(300);
    ca_params.not_after = not_after;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names
            .first()
            .map(String::as_str)
            .unwrap_or("hostport-webhook"),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::from_secs(300);
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(GeneratedCerts {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A rustls key from a PEM certificate chain and private key.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        what: "private key",
        message: e.to_string(),
    })?;
    let signing_key = any_supported_type(&key)?;
    Ok(CertifiedKey::new(chain, signing_key))
}

/// Serves whatever key was stored last: swapping it rotates the certificate for the next
/// handshake without a restart.
#[derive(Debug)]
pub struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl SwappableCert {
    /// Starts with `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self(RwLock::new(Arc::new(key)))
    }

    /// Replaces the key served from the next handshake on.
    pub fn swap(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }

    /// The key served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration (ring, TLS 1.2+, ALPN h2 and http/1.1) serving `certs`.
pub fn server_config(certs: Arc<SwappableCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Bounds on what clients may hold of the server, so a flood of connections, streams or
/// headers cannot exhaust memory (the webhook fails closed: an outage blocks admission).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/2 streams in flight per connection.
    pub max_streams: u32,
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list), in bytes.
    pub max_header_bytes: usize,
    /// How long a client may take to finish the TLS handshake, and to send a request head.
    pub handshake_timeout: Duration,
    /// A connection is closed gracefully after this long, busy or idle (kube-apiserver
    /// reconnects at once), so an idle connection never holds its slot for long.
    pub max_connection_age: Duration,
    /// At shutdown, how long requests in flight may take to finish (longer than the webhook
    /// configurations' `timeoutSeconds`, so none is cut).
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_streams: 64,
            max_header_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(15),
        }
    }
}

/// Serves `router` over HTTPS on `listener` until `shutdown` completes, within the default
/// [`Limits`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: rustls::ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    serve_with_limits(listener, router, config, Limits::default(), shutdown).await;
}

/// Serves `router` over HTTPS on `listener` until `shutdown` completes. Each connection is
/// handled on its own task; a failed handshake only ends that connection. At shutdown no new
/// connection is accepted, every open one is closed gracefully (requests in flight finish,
/// HTTP/2 clients get a GOAWAY and reconnect elsewhere) and this returns once all are closed,
/// or after [`Limits::drain_timeout`].
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    config: rustls::ServerConfig,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let max_connections = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (draining, drain) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A free slot first: at the limit, new clients wait in the kernel's backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut drain = drain.clone();
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.handshake_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_streams)
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(10));
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            let aged = tokio::time::sleep(limits.max_connection_age);
            tokio::pin!(aged);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = &mut aged => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = async { let _ = drain.wait_for(|draining| *draining).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = draining.send(true);
    // Every slot back means every connection closed.
    let permits = u32::try_from(max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.drain_timeout, slots.acquire_many(permits)).await {
        Ok(_) => tracing::info!("every connection closed"),
        Err(_) => tracing::warn!(
            open = max_connections - slots.available_permits(),
            "connections still open after the drain timeout; closing them"
        ),
    }
}

/// Re-reads `cert` and `key` every `interval` and swaps them in when either file changed
/// (cert-manager rotates Secrets mounted as files). A bad pair is logged and the old one kept.
pub async fn reload_files(
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    certs: Arc<SwappableCert>,
    interval: Duration,
) {
    let stamp = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last = (stamp(&cert), stamp(&key));
    loop {
        tokio::time::sleep(interval).await;
        let now = (stamp(&cert), stamp(&key));
        if now == last {
            continue;
        }
        match (std::fs::read(&cert), std::fs::read(&key)) {
            (Ok(cert_pem), Ok(key_pem)) => match certified_key(&cert_pem, &key_pem) {
                Ok(loaded) => {
                    certs.swap(loaded);
                    last = now;
                    tracing::info!(cert = %cert.display(), "reloaded the serving certificate");
                }
                Err(error) => {
                    tracing::warn!(%error, "the new certificate files are unusable; keeping the old ones")
                }
            },
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "reading the certificate files failed; keeping the old ones")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load() {
        let certs = generate(
            &["hostport-webhook.hostport-system.svc".into()],
            &[],
            Duration::from_secs(86_400),
        )
        .expect("certs");
        certified_key(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()).expect("loads");
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        let err = certified_key(b"not pem", b"not pem").expect_err("bad");
        assert!(err.to_string().starts_with("certificate:"), "{err}");
    }
}
