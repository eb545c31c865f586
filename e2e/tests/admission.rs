//! The in-process API server calls admission webhooks like kube-apiserver: HTTPS with the
//! registered caBundle, AdmissionReview v1 requests, JSONPatch applied, denials and failures
//! reported with kube-apiserver's wording, selectors, rules and failurePolicy honoured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hostport_e2e::local::{LocalTls, localhost_tls};
use hostport_webhook::tls;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube_testserver::UserInfo;
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

async fn mutate(State(seen): State<Seen>, Json(review): Json<Value>) -> Json<Value> {
    seen.lock().expect("lock").push(review.clone());
    let request = &review["request"];
    let uid = request["uid"].clone();
    let object = &request["object"];
    if object["metadata"]["annotations"]["deny"].is_string() {
        return Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": false, "status": {"code": 403, "message": "pods may not say deny"}}}),
        );
    }
    if object["metadata"]["annotations"]["slow"].is_string() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let patch = json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "true"}}]);
    Json(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true, "patchType": "JSONPatch",
                     "patch": BASE64.encode(patch.to_string())}}),
    )
}

struct Webhook {
    port: u16,
    ca_bundle: String,
    seen: Seen,
}

async fn start_webhook() -> Webhook {
    let LocalTls {
        listener,
        config,
        ca_pem,
    } = localhost_tls().await;
    let port = listener.local_addr().expect("addr").port();
    let seen = Seen::default();
    let router = Router::new()
        .route("/mutate", post(mutate))
        .with_state(seen.clone());
    tokio::spawn(tls::serve(listener, router, config, std::future::pending()));
    Webhook {
        port,
        ca_bundle: BASE64.encode(&ca_pem),
        seen,
    }
}

fn configuration(
    name: &str,
    url: &str,
    ca_bundle: &str,
    failure_policy: &str,
    timeout: i32,
) -> MutatingWebhookConfiguration {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": format!("{name}.pods.test"),
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "timeoutSeconds": timeout,
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "namespaceSelector": {"matchLabels": {"hostport.rmb938.com": "true"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
        }]
    }))
    .expect("configuration")
}

fn pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app"}]}
    }))
    .expect("pod")
}

async fn namespace(client: &kube::Client, name: &str, labelled: bool) {
    let labels = if labelled {
        json!({"hostport.rmb938.com": "true"})
    } else {
        json!({})
    };
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("ns"),
        )
        .await
        .expect("namespace");
}

fn api_message(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn mutating_webhook_round_trip() {
    let server = hostport_e2e::start_test_server().await;
    let admin = server.client();
    let webhook = start_webhook().await;
    let url = format!("https://127.0.0.1:{}/mutate", webhook.port);
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .create(
            &PostParams::default(),
            &configuration("mutate", &url, &webhook.ca_bundle, "Fail", 2),
        )
        .await
        .expect("register");
    namespace(&admin, "games", true).await;
    namespace(&admin, "plain", false).await;

    let user = UserInfo::service_account("games", "deployer");
    let pods: Api<Pod> = Api::namespaced(server.client_as(user.clone()), "games");
    let created = pods
        .create(&PostParams::default(), &pod("echo", json!({})))
        .await
        .expect("create");
    assert_eq!(
        created.labels().get("mutated").map(String::as_str),
        Some("true"),
        "JSONPatch applied"
    );

    let review = webhook
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a review");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    let request = &review["request"];
    assert!(request["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(
        request["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(request["namespace"], "games");
    assert_eq!(request["name"], "echo");
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["userInfo"]["username"], user.username);
    assert_eq!(request["dryRun"], false);
    assert_eq!(request["object"]["metadata"]["name"], "echo");
    assert!(request["oldObject"].is_null());

    // Unlabelled namespaces are not sent to the webhook.
    let before = webhook.seen.lock().expect("lock").len();
    let plain: Api<Pod> = Api::namespaced(admin.clone(), "plain");
    let untouched = plain
        .create(&PostParams::default(), &pod("echo", json!({})))
        .await
        .expect("create");
    assert!(untouched.labels().get("mutated").is_none());
    assert_eq!(webhook.seen.lock().expect("lock").len(), before);

    let (code, message) = api_message(
        pods.create(
            &PostParams::default(),
            &pod("denied", json!({"deny": "yes"})),
        )
        .await
        .expect_err("denied"),
    );
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"admission webhook "mutate.pods.test" denied the request: pods may not say deny"#
    );

    let (code, message) = api_message(
        pods.create(&PostParams::default(), &pod("slow", json!({"slow": "yes"})))
            .await
            .expect_err("timeout"),
    );
    assert_eq!(code, 500);
    assert!(
        message.contains(r#"failed calling webhook "mutate.pods.test""#)
            && message.contains("context deadline exceeded"),
        "{message}"
    );
}

#[tokio::test]
async fn failure_policy_and_ca_bundle() {
    let server = hostport_e2e::start_test_server().await;
    let admin = server.client();
    let webhook = start_webhook().await;
    namespace(&admin, "games", true).await;
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "games");

    // Nothing listens on this port: Fail refuses the pod, Ignore lets it through.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let down = format!("https://127.0.0.1:{closed}/mutate");
    configurations
        .create(
            &PostParams::default(),
            &configuration("down", &down, &webhook.ca_bundle, "Fail", 2),
        )
        .await
        .expect("register");
    let (code, message) = api_message(
        pods.create(&PostParams::default(), &pod("a", json!({})))
            .await
            .expect_err("fails closed"),
    );
    assert_eq!(code, 500);
    assert!(message.starts_with(r#"Internal error occurred: failed calling webhook "down.pods.test": failed to call webhook: Post"#), "{message}");

    configurations
        .delete("down", &Default::default())
        .await
        .expect("unregister");
    configurations
        .create(
            &PostParams::default(),
            &configuration("down", &down, &webhook.ca_bundle, "Ignore", 2),
        )
        .await
        .expect("register");
    pods.create(&PostParams::default(), &pod("b", json!({})))
        .await
        .expect("Ignore lets it through");
    configurations
        .delete("down", &Default::default())
        .await
        .expect("unregister");

    // A caBundle that did not sign the serving certificate: the TLS handshake fails.
    let other_ca =
        tls::generate(&["localhost".into()], &[], Duration::from_secs(3600)).expect("certs");
    let url = format!("https://127.0.0.1:{}/mutate", webhook.port);
    configurations
        .create(
            &PostParams::default(),
            &configuration(
                "wrong-ca",
                &url,
                &BASE64.encode(&other_ca.ca_pem),
                "Fail",
                2,
            ),
        )
        .await
        .expect("register");
    let (code, message) = api_message(
        pods.create(&PostParams::default(), &pod("c", json!({})))
            .await
            .expect_err("untrusted"),
    );
    assert_eq!(code, 500);
    assert!(message.contains("certificate"), "{message}");
}
