//! The webhook served on 127.0.0.1 with a generated certificate and registered with the API
//! server, as the scenarios and the demo run it (a cluster install uses a Service instead).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::{
    ControllerHandle, SYSTEM_NAMESPACE, controller_user, ensure_namespace, spawn_controller,
    webhook_user,
};
use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

/// A webhook running in this process.
#[derive(Debug)]
pub struct LocalWebhook {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA that signed its serving certificate (PEM).
    pub ca_pem: String,
    /// Its metrics.
    pub metrics: Arc<hostport_webhook::metrics::Metrics>,
    task: tokio::task::JoinHandle<()>,
    /// On a shared cluster: the configurations to delete when the webhook goes away.
    registered: Option<(kube::Config, String)>,
}

impl LocalWebhook {
    /// Deletes the webhook configurations `name` when this webhook stops, even when a
    /// scenario panics: on a shared cluster a configuration left pointing at a stopped
    /// webhook (failurePolicy Fail) would refuse every later write of claims, classes and
    /// HostPorts, in every scenario.
    pub fn unregister_on_drop(&mut self, config: kube::Config, name: String) {
        self.registered = Some((config, name));
    }
}

impl Drop for LocalWebhook {
    fn drop(&mut self) {
        self.task.abort();
        let Some((config, name)) = self.registered.take() else {
            return;
        };
        // Drop cannot await, and the scenario's runtime may be unwinding: a thread with a
        // runtime and a client of its own.
        let unregister = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                unregister_webhooks(&Client::try_from(config).ok()?, &name).await;
                Some(())
            })
        });
        let _ = unregister.join();
    }
}

/// HTTPS on 127.0.0.1 as the scenarios serve it: a listener on a free port and a server TLS
/// configuration for `localhost` and 127.0.0.1, signed by a fresh CA (`ca_pem`, for clients).
#[derive(Debug)]
pub struct LocalTls {
    /// Bound to 127.0.0.1:0.
    pub listener: tokio::net::TcpListener,
    /// The serving certificate.
    pub config: rustls::ServerConfig,
    /// The CA that signed it.
    pub ca_pem: String,
}

/// See [`LocalTls`].
pub async fn localhost_tls() -> LocalTls {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = hostport_webhook::tls::generate(
        &["localhost".into()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Duration::from_secs(86_400),
    )
    .expect("webhook certificates");
    let key =
        hostport_webhook::tls::certified_key(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
            .expect("key");
    let config = hostport_webhook::tls::server_config(Arc::new(
        hostport_webhook::tls::SwappableCert::new(key),
    ))
    .expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    LocalTls {
        listener,
        config,
        ca_pem: certs.ca_pem,
    }
}

/// Starts the webhook on 127.0.0.1 with `options` (caches synced when this returns).
pub async fn start_webhook(client: Client, options: hostport_webhook::RunOptions) -> LocalWebhook {
    let LocalTls {
        listener,
        config: tls,
        ca_pem,
    } = localhost_tls().await;
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let ready = options.ready.clone();
    let metrics = options.metrics.clone();
    let task = tokio::spawn(hostport_webhook::run(
        client,
        listener,
        tls,
        options,
        std::future::pending(),
    ));
    for _ in 0..400 {
        if ready.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        ready.load(Ordering::Relaxed),
        "the webhook's caches did not sync within 10 s"
    );
    LocalWebhook {
        url,
        ca_pem,
        metrics,
        task,
        registered: None,
    }
}

/// Registers (server-side applies) the webhook configurations `name` pointing at `webhook`;
/// `pod_selector` is the pods' namespaceSelector.
pub async fn register_webhooks(
    client: &Client,
    name: &str,
    webhook: &LocalWebhook,
    pod_selector: Value,
) -> Result<(), kube::Error> {
    let bundle = base64::engine::general_purpose::STANDARD.encode(&webhook.ca_pem);
    let (mutating, validating) =
        crate::webhooks::configurations(name, &webhook.url, &bundle, pod_selector);
    let apply = PatchParams::apply("hostport-e2e").force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(name, &apply, &Patch::Apply(&mutating))
        .await?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(name, &apply, &Patch::Apply(&validating))
        .await?;
    Ok(())
}

/// A rustls client (ring, TLS 1.2+) trusting exactly the CAs in `bundle` (PEM), as
/// kube-apiserver trusts a webhook configuration's `caBundle`.
pub fn client_trusting(bundle: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(bundle) {
        roots
            .add(cert.map_err(|e| format!("caBundle: {e}"))?)
            .map_err(|e| format!("caBundle: {e}"))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Deletes the webhook configurations `name` (mutating and validating); gone already is fine.
pub async fn unregister_webhooks(client: &Client, name: &str) {
    let params = kube::api::DeleteParams::default();
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(name, &params)
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete(name, &params)
        .await;
}

/// The controller and the webhook running against an in-process API server the way a cluster
/// install runs them: as their ServiceAccounts, the webhook registered as
/// `hostport-allocator` for namespaces labelled `hostport.rmb938.com: "true"`. Scenarios use
/// `harness::Env`, which starts the same pieces per scenario; this is the whole install on a
/// server of its own (the demo, the samples).
#[derive(Debug)]
pub struct Stack {
    /// The webhook.
    pub webhook: LocalWebhook,
    _controller: ControllerHandle,
}

/// Starts the stack on `server` (creating the `hostport-system` namespace).
pub async fn start_stack(server: &kube_testserver::TestApiServer) -> Result<Stack, kube::Error> {
    let admin = server.client();
    ensure_namespace(&admin, SYSTEM_NAMESPACE, serde_json::json!({})).await?;
    let options = hostport_webhook::RunOptions {
        allocator_users: vec![controller_user().username],
        ..Default::default()
    };
    let webhook = start_webhook(server.client_as(webhook_user()), options).await;
    register_webhooks(
        &admin,
        "hostport-allocator",
        &webhook,
        serde_json::json!({"matchLabels": {hostport_api::NAMESPACE_LABEL: "true"}}),
    )
    .await?;
    let controller = spawn_controller(
        server.client_as(controller_user()),
        hostport_controller::RunOptions::default(),
    );
    Ok(Stack {
        webhook,
        _controller: controller,
    })
}
