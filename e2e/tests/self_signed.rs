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

#[tokio::test]
async fn secret_ca_bundle_and_rotation() {
    let env = Env::new("selfsigned").await;
    let name = format!("hostport-e2e-{}", env.prefix);
    let (mutating, validating) =
        hostport_e2e::webhooks::configurations(&name, "https://127.0.0.1:1", "", json!({}));
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
        first.cert_pem, again.cert_pem,
        "a second replica reuses the Secret"
    );
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    let secret = secrets.get("hostport-webhook-tls").await.expect("secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(secret.annotations().contains_key(NOT_AFTER_ANNOTATION));

    self_signed::patch_ca_bundles(&env.client, &config, &first.ca_pem)
        .await
        .expect("caBundle");
    let stored = Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .get(&name)
        .await
        .expect("get");
    for webhook in stored.webhooks.expect("webhooks") {
        assert_eq!(
            webhook.client_config.ca_bundle.expect("caBundle").0,
            first.ca_pem.as_bytes()
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
    assert_ne!(rotated.cert_pem, first.cert_pem);
    env.cleanup().await;
}
