//! The webhook served on 127.0.0.1 with a generated certificate and registered with the API
//! server, as the scenarios and the demo run it (a cluster install uses a Service instead).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the webhook on 127.0.0.1 (caches synced when this returns).
pub async fn start_webhook(client: Client, allocator_users: Vec<String>) -> LocalWebhook {
    let certs = hostport_webhook::tls::generate(
        &["localhost".into()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Duration::from_secs(86_400),
    )
    .expect("webhook certificates");
    let key =
        hostport_webhook::tls::certified_key(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
            .expect("key");
    let tls = hostport_webhook::tls::server_config(Arc::new(
        hostport_webhook::tls::SwappableCert::new(key),
    ))
    .expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let options = hostport_webhook::runner::Options {
        allocator_users,
        ..Default::default()
    };
    let ready = options.ready.clone();
    let task = tokio::spawn(hostport_webhook::runner::run(
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
        ca_pem: certs.ca_pem,
        task,
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
