//! The `hostport-webhook` command line (its `main` is a few lines in `src/main.rs`, and the
//! e2e tests run the same code as a process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::runner::{self, RunOptions};
use crate::self_signed::{self, SelfSigned};
use crate::tls::{self, SwappableCert};
use anyhow::{Context as _, bail};
use clap::Parser;
use hostport_api::identity::{DEFAULT_NAMESPACE, allocator_user};
use hostport_process::{LogFormat, Stop};

/// Admission webhook of hostport-allocator: injects host ports into pods that name a bound
/// HostPortClaim and guards the hostport.rmb938.com resources.
#[derive(Debug, Parser)]
#[command(name = "hostport-webhook", version, about)]
pub struct Args {
    /// HTTPS address serving the admission paths.
    #[arg(long, env = "HOSTPORT_WEBHOOK_LISTEN", default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Plain-HTTP address serving /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "HOSTPORT_WEBHOOK_METRICS_ADDRESS",
        default_value = "0.0.0.0:8081"
    )]
    metrics_address: SocketAddr,
    /// Serving certificate (PEM), e.g. from cert-manager; reloaded when the file changes.
    #[arg(long, env = "HOSTPORT_WEBHOOK_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file (PEM).
    #[arg(long, env = "HOSTPORT_WEBHOOK_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes, in seconds.
    #[arg(
        long,
        env = "HOSTPORT_WEBHOOK_TLS_RELOAD_SECONDS",
        default_value_t = 10
    )]
    tls_reload_seconds: u64,
    /// Generate a CA and serving certificate, keep them in a Secret shared by the replicas,
    /// write the CA into the webhook configurations' caBundle, rotate before expiry.
    #[arg(long, env = "HOSTPORT_WEBHOOK_SELF_SIGNED", default_value_t = false)]
    self_signed: bool,
    /// Secret holding the self-signed certificate.
    #[arg(
        long,
        env = "HOSTPORT_WEBHOOK_SECRET",
        default_value = "hostport-webhook-tls"
    )]
    secret: String,
    /// Namespace of the Secret and the Service (default: $POD_NAMESPACE, else hostport-system).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Service in front of the webhook: the certificate is made for its DNS names.
    #[arg(
        long,
        env = "HOSTPORT_WEBHOOK_SERVICE",
        default_value = "hostport-webhook"
    )]
    service: String,
    /// MutatingWebhookConfigurations whose caBundle --self-signed sets (repeatable).
    #[arg(
        long = "mutating-webhook-configuration",
        env = "HOSTPORT_WEBHOOK_MUTATING_CONFIGURATIONS",
        value_delimiter = ',',
        default_value = "hostport-allocator"
    )]
    mutating: Vec<String>,
    /// ValidatingWebhookConfigurations whose caBundle --self-signed sets (repeatable).
    #[arg(
        long = "validating-webhook-configuration",
        env = "HOSTPORT_WEBHOOK_VALIDATING_CONFIGURATIONS",
        value_delimiter = ',',
        default_value = "hostport-allocator"
    )]
    validating: Vec<String>,
    /// The allocator identity: users who may write claim spec.hostPortName, the status of
    /// the three kinds, the claim finalizer's removal and claim-bound HostPorts (repeatable).
    /// Default: the ServiceAccount --controller-service-account in --controller-namespace.
    #[arg(
        long = "allocator-user",
        env = "HOSTPORT_WEBHOOK_ALLOCATOR_USERS",
        value_delimiter = ','
    )]
    allocator_users: Vec<String>,
    /// The publishers: users who may write a claim's `status.external` and its `Published`
    /// condition and nothing else of it, and pods' `external.hostport.rmb938.com/`
    /// annotations (repeatable). Default: the ServiceAccounts `hostport-publisher-router` and
    /// `hostport-publisher` in --controller-namespace.
    #[arg(
        long = "publisher-user",
        env = "HOSTPORT_WEBHOOK_PUBLISHER_USERS",
        value_delimiter = ','
    )]
    publisher_users: Vec<String>,
    /// Namespace of the controller's ServiceAccount (default: the webhook's own namespace,
    /// --namespace/$POD_NAMESPACE, else hostport-system): both are installed together.
    #[arg(long, env = "HOSTPORT_CONTROLLER_NAMESPACE")]
    controller_namespace: Option<String>,
    /// Name of the controller's ServiceAccount.
    #[arg(
        long,
        env = "HOSTPORT_CONTROLLER_SERVICE_ACCOUNT",
        default_value = "hostport-controller"
    )]
    controller_service_account: String,
    /// Longest one API read may take while deciding, in milliseconds (keep it well below the
    /// webhook configurations' timeoutSeconds).
    #[arg(long, env = "HOSTPORT_WEBHOOK_API_TIMEOUT_MS", default_value_t = 2000)]
    api_timeout_ms: u64,
    /// Longest a pod's admission waits, in milliseconds, for the claims it names to appear
    /// and bind (a claim and its pod applied in one go); 0 turns waiting off. Keep it plus
    /// --api-timeout-ms below the webhook configurations' timeoutSeconds.
    #[arg(long, env = "HOSTPORT_WEBHOOK_BIND_WAIT_MS", default_value_t = 2000)]
    bind_wait_ms: u64,

    /// At SIGTERM, seconds to keep serving while /readyz says not ready, so the Service drops
    /// this replica before it stops answering; requests in flight then finish. Keep it plus
    /// 15 s below the pod's terminationGracePeriodSeconds.
    #[arg(
        long,
        env = "HOSTPORT_WEBHOOK_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 5
    )]
    shutdown_delay_seconds: u64,
    /// Log format.
    #[arg(long, env = "HOSTPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Parses the command line and serves until SIGTERM/ctrl-c.
pub async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hostport_process::start(args.log_format);
    match (&args.tls_cert_file, &args.tls_key_file, args.self_signed) {
        (Some(_), None, _) => bail!("--tls-key-file must be set together with --tls-cert-file"),
        (None, Some(_), _) => bail!("--tls-cert-file must be set together with --tls-key-file"),
        (Some(_), Some(_), true) => {
            bail!("use either --tls-cert-file/--tls-key-file or --self-signed, not both")
        }
        (None, None, false) => bail!(
            "no serving certificate: set --tls-cert-file and --tls-key-file, or --self-signed"
        ),
        _ => {}
    }
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;

    let certs = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = std::fs::read(cert)
                .with_context(|| format!("reading --tls-cert-file {}", cert.display()))?;
            let key_pem = std::fs::read(key)
                .with_context(|| format!("reading --tls-key-file {}", key.display()))?;
            let loaded = tls::certified_key(&cert_pem, &key_pem)
                .context("loading --tls-cert-file/--tls-key-file")?;
            let certs = Arc::new(SwappableCert::new(loaded));
            tokio::spawn(tls::reload_files(
                cert.clone(),
                key.clone(),
                certs.clone(),
                Duration::from_secs(args.tls_reload_seconds.max(1)),
            ));
            certs
        }
        _ => {
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
            let service = &args.service;
            let config = SelfSigned {
                dns_names: vec![
                    service.clone(),
                    format!("{service}.{namespace}"),
                    format!("{service}.{namespace}.svc"),
                    format!("{service}.{namespace}.svc.cluster.local"),
                ],
                namespace,
                secret: args.secret.clone(),
                mutating: args.mutating.clone(),
                validating: args.validating.clone(),
            };
            let generated = self_signed::ensure(&client, &config)
                .await
                .context("--self-signed: preparing the certificate")?;
            self_signed::publish_trust(&client, &config)
                .await
                .context("--self-signed: writing caBundle")?;
            let certs = Arc::new(SwappableCert::new(tls::certified_key(
                generated.certs.cert_pem.as_bytes(),
                generated.certs.key_pem.as_bytes(),
            )?));
            tokio::spawn(self_signed::keep_rotated(
                client.clone(),
                config,
                certs.clone(),
                generated.certs,
                Duration::from_secs(3600),
            ));
            certs
        }
    };

    let namespace = args
        .controller_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let allocator_users = if args.allocator_users.is_empty() {
        vec![allocator_user(&namespace, &args.controller_service_account)]
    } else {
        args.allocator_users.clone()
    };
    let publisher_users = if args.publisher_users.is_empty() {
        crate::runner::PUBLISHER_SERVICE_ACCOUNTS
            .iter()
            .map(|account| allocator_user(&namespace, account))
            .collect()
    } else {
        args.publisher_users.clone()
    };
    tracing::info!(allocator = %allocator_users.join(","), "allocator identity");
    let options = RunOptions {
        allocator_users,
        publisher_users,
        api_timeout: Duration::from_millis(args.api_timeout_ms.max(100)),
        bind_wait: Duration::from_millis(args.bind_wait_ms),
        shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
        ..RunOptions::default()
    };
    let stop = Stop::on_signal();
    let health = runner::health_router(options.metrics.clone(), options.ready.clone());
    hostport_process::serve_health(args.metrics_address, health, &stop)
        .await
        .with_context(|| format!("binding --metrics-address {}", args.metrics_address))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    tracing::info!(listen = %args.listen, metrics = %args.metrics_address, "serving admission");
    runner::run(
        client,
        listener,
        tls::server_config(certs)?,
        options,
        stop.stopped(),
    )
    .await;
    Ok(())
}
