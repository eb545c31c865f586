//! `--self-signed`: the certificate lives in a Secret shared by replicas, its CA goes into the
//! webhook configurations, and it is remade before it expires.

use hostport_e2e::harness::Env;
use hostport_webhook::self_signed::{self, NOT_AFTER_ANNOTATION, SelfSigned};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Webhook configurations `name` with this project's rules that never call anything: every
/// webhook's objectSelector matches no object, so on a shared cluster they cannot refuse
/// other scenarios' writes (their URL points nowhere), and only their caBundle matters here.
async fn create_inert_configurations(env: &Env, name: &str) {
    let (mut mutating, mut validating) =
        hostport_e2e::webhooks::configurations(name, "https://127.0.0.1:1", "", json!({}));
    for configuration in [&mut mutating, &mut validating] {
        for webhook in configuration["webhooks"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            webhook["objectSelector"] = json!({"matchLabels": {"hostport-e2e/never": "true"}});
        }
    }
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(mutating).expect("mutating"),
        )
        .await
        .expect("mutating");
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(validating).expect("validating"),
        )
        .await
        .expect("validating");
}

#[tokio::test]
async fn secret_ca_bundle_and_rotation() {
    let env = Env::new("selfsigned").await;
    let name = format!("hostport-e2e-{}", env.prefix);
    create_inert_configurations(&env, &name).await;
    let config = SelfSigned {
        namespace: env.namespace.clone(),
        secret: "hostport-webhook-tls".into(),
        dns_names: vec![format!("hostport-webhook.{}.svc", env.namespace)],
        mutating: vec![name.clone()],
        validating: vec![name.clone()],
    };

    let first = self_signed::ensure(&env.client, &config)
        .await
        .expect("ensure");
    let again = self_signed::ensure(&env.client, &config)
        .await
        .expect("ensure again");
    assert_eq!(
        first.certs.cert_pem, again.certs.cert_pem,
        "a second replica reuses the Secret"
    );
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let secret = secrets.get("hostport-webhook-tls").await.expect("secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(secret.annotations().contains_key(NOT_AFTER_ANNOTATION));

    assert_eq!(
        first.bundle, first.certs.ca_pem,
        "no previous CA before a rotation"
    );
    self_signed::publish_trust(&env.client, &config)
        .await
        .expect("caBundle");
    let stored = Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .get(&name)
        .await
        .expect("get");
    for webhook in stored.webhooks.expect("webhooks") {
        assert_eq!(
            webhook.client_config.ca_bundle.expect("caBundle").0,
            first.certs.ca_pem.as_bytes()
        );
    }
    let stored = Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .get(&name)
        .await
        .expect("get");
    assert!(
        stored
            .webhooks
            .expect("webhooks")
            .iter()
            .all(|w| w.client_config.ca_bundle.is_some())
    );

    // Ten days left is inside the rotation window: the next check makes a new certificate.
    let soon = (k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_hours(240))
    .to_string();
    secrets
        .patch(
            "hostport-webhook-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {NOT_AFTER_ANNOTATION: soon}}})),
        )
        .await
        .expect("age the Secret");
    let rotated = self_signed::ensure(&env.client, &config)
        .await
        .expect("rotate");
    assert_ne!(rotated.certs.cert_pem, first.certs.cert_pem);
    assert_eq!(
        rotated.bundle,
        format!("{}{}", rotated.certs.ca_pem, first.certs.ca_pem),
        "the previous CA stays trusted during the overlap"
    );
    env.cleanup().await;
}

/// One replica of `--self-signed`: its certificate, served over TLS on 127.0.0.1, kept
/// current by `keep_rotated` checking every `every` (and on every change of the Secret).
struct Replica {
    address: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

async fn start_replica(env: &Env, config: &SelfSigned, every: std::time::Duration) -> Replica {
    use hostport_webhook::tls;
    let published = self_signed::ensure(&env.client, config)
        .await
        .expect("ensure");
    self_signed::publish_trust(&env.client, config)
        .await
        .expect("caBundle");
    let certs = std::sync::Arc::new(tls::SwappableCert::new(
        tls::certified_key(
            published.certs.cert_pem.as_bytes(),
            published.certs.key_pem.as_bytes(),
        )
        .expect("key"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let serve = tokio::spawn(tls::serve(
        listener,
        axum::Router::new(),
        tls::server_config(certs.clone()).expect("tls"),
        std::future::pending(),
    ));
    let rotate = tokio::spawn(self_signed::keep_rotated(
        env.client.clone(),
        config.clone(),
        certs,
        published.certs,
        every,
    ));
    Replica {
        address,
        tasks: vec![serve, rotate],
    }
}

/// A TLS handshake with `replica` trusting only the `caBundle` stored in the webhook
/// configuration right now, as kube-apiserver would.
async fn trusted_by_ca_bundle(
    env: &Env,
    name: &str,
    dns_name: &str,
    replica: &Replica,
) -> Result<(), String> {
    let stored = Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    let bundle = stored.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .ok_or("no caBundle")?;
    handshake(&bundle.0, dns_name, replica).await
}

/// A TLS handshake with `replica` trusting only the CAs in `bundle` (PEM).
async fn handshake(bundle: &[u8], dns_name: &str, replica: &Replica) -> Result<(), String> {
    let client = hostport_e2e::local::client_trusting(bundle)?;
    let tcp = tokio::net::TcpStream::connect(replica.address)
        .await
        .map_err(|e| e.to_string())?;
    let server =
        rustls::pki_types::ServerName::try_from(dns_name.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(server, tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Two replicas, one rotating the certificate: at no moment does either serve a certificate
/// the `caBundle` does not trust, and the other follows the rotation through its watch of
/// the Secret (its own periodic check is an hour away).
#[tokio::test]
async fn two_replicas_rotate_without_an_untrusted_moment() {
    use std::time::{Duration, Instant};
    let env = Env::new("selfsigned-two").await;
    let name = format!("hostport-e2e-{}", env.prefix);
    create_inert_configurations(&env, &name).await;
    let dns_name = format!("hostport-webhook.{}.svc", env.namespace);
    let config = SelfSigned {
        namespace: env.namespace.clone(),
        secret: "hostport-webhook-tls".into(),
        dns_names: vec![dns_name.clone()],
        mutating: vec![name.clone()],
        validating: vec![name.clone()],
    };
    let rotating = start_replica(&env, &config, Duration::from_millis(300)).await;
    let following = start_replica(&env, &config, Duration::from_secs(3600)).await;
    let before = Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .get("hostport-webhook-tls")
        .await
        .expect("secret");
    // Inside the rotation window: the rotating replica's next check makes a new certificate.
    let soon = (k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_hours(240))
    .to_string();
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "hostport-webhook-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {NOT_AFTER_ANNOTATION: soon}}})),
        )
        .await
        .expect("age the Secret");
    let started = Instant::now();
    let mut handshakes = 0;
    let mut rotated_at = None;
    while started.elapsed() < Duration::from_secs(4) {
        for (which, replica) in [("rotating", &rotating), ("following", &following)] {
            if let Err(error) = trusted_by_ca_bundle(&env, &name, &dns_name, replica).await {
                panic!(
                    "the {which} replica served a certificate the caBundle does not trust after {:?}: {error}",
                    started.elapsed()
                );
            }
            handshakes += 1;
        }
        let secret = Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
            .get("hostport-webhook-tls")
            .await
            .expect("secret");
        if rotated_at.is_none()
            && secret.data.as_ref().map(|d| &d["tls.crt"])
                != before.data.as_ref().map(|d| &d["tls.crt"])
        {
            rotated_at = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rotated_at.is_some(), "the certificate was not rotated");
    // Both now serve the new certificate: a bundle of the new CA alone is enough for both.
    let secret = Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .get("hostport-webhook-tls")
        .await
        .expect("secret");
    let new_ca = secret.data.expect("data")["ca.crt"].0.clone();
    for replica in [&rotating, &following] {
        handshake(&new_ca, &dns_name, replica)
            .await
            .expect("serves the certificate of the new CA");
    }
    assert!(handshakes > 20, "{handshakes} handshakes");
    env.cleanup().await;
}
