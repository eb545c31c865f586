//! The webhook over real HTTPS with real AdmissionReview v1 JSON, as kube-apiserver sends
//! it: verdicts, malformed input, fuzzed input, certificate reload, health and metrics.
//!
//! Longer than ~500 lines on purpose: one scenario per face of the HTTPS endpoint, sharing the
//! review builders and the client.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hostport_e2e::harness::Env;
use hostport_e2e::local::{LocalTls, LocalWebhook, client_trusting, localhost_tls};
use hostport_webhook::tls;
use proptest::prelude::*;
use serde_json::{Value, json};

fn https_client(ca_pem: &str) -> reqwest::Client {
    let config = client_trusting(ca_pem.as_bytes()).expect("client TLS");
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .expect("client")
}

fn review(
    uid: &str,
    kind: Value,
    resource: &str,
    operation: &str,
    namespace: &str,
    object: Value,
    old: Value,
) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": kind,
            "resource": {"group": kind["group"], "version": kind["version"], "resource": resource},
            "name": object["metadata"]["name"], "namespace": namespace, "operation": operation,
            "userInfo": {"username": "jane", "groups": ["system:authenticated"]},
            "object": object, "oldObject": old, "dryRun": false,
        }
    })
}

fn pod_kind() -> Value {
    json!({"group": "", "version": "v1", "kind": "Pod"})
}

async fn post(
    client: &reqwest::Client,
    webhook: &LocalWebhook,
    path: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = client
        .post(format!("{}{path}", webhook.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn verdicts_over_https() {
    let env = Env::new("https").await;
    let webhook = env.start_webhook().await;
    let client = https_client(&webhook.ca_pem);
    let class = env.create_class("sample", &[(12800, 12810)]).await;
    // A bound claim and its HostPort, written as the controller would (as its identity).
    let allocator = env.client_as(hostport_e2e::harness::controller_user());
    let claims: kube::Api<hostport_api::HostPortClaim> =
        kube::Api::namespaced(allocator.clone(), &env.namespace);
    let created = env.create_claim("echo-web", &class, None).await;
    let host_port: hostport_api::HostPort = serde_json::from_value(json!({
        "metadata": {"name": "port-12800"},
        "spec": {"hostPortClassName": class, "port": 12800, "claimRef": {
            "namespace": env.namespace, "name": "echo-web", "uid": created.metadata.uid}}
    }))
    .expect("HostPort");
    kube::Api::<hostport_api::HostPort>::all(allocator)
        .create(&Default::default(), &host_port)
        .await
        .expect("HostPort");
    claims
        .patch_status(
            "echo-web",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Bound", "port": 12800}})),
        )
        .await
        .expect("status");
    claims
        .patch(
            "echo-web",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"spec": {"hostPortName": "port-12800"}})),
        )
        .await
        .expect("bind");

    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo", "namespace": env.namespace, "annotations": {"claim.hostport.rmb938.com/web": "echo-web"}},
        "spec": {"containers": [{"name": "echo", "image": "k8s.gcr.io/echoserver:1.4", "ports": [{"name": "web", "containerPort": 8080}]}]}
    });
    let body = review(
        "uid-1",
        pod_kind(),
        "pods",
        "CREATE",
        &env.namespace,
        pod.clone(),
        Value::Null,
    );
    let (status, answer) = post(
        &client,
        &webhook,
        "/mutate-v1-pod",
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(response["uid"], "uid-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // The patch applied to the request object gives the expected pod.
    let patch_bytes: Vec<u8> = match &response["patch"] {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64"),
        Value::Array(bytes) => bytes
            .iter()
            .map(|b| b.as_u64().expect("byte") as u8)
            .collect(),
        other => panic!("patch {other}"),
    };
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).expect("JSONPatch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("applies");
    let mut expected = pod.clone();
    expected["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(12800);
    expected["metadata"]["annotations"]["port.hostport.rmb938.com/web"] = json!("12800");
    assert_eq!(patched, expected);

    // Denied, with the reason in the status.
    let mut orphan = pod.clone();
    orphan["metadata"]["annotations"] = json!({"claim.hostport.rmb938.com/web": "nope"});
    let body = review(
        "uid-2",
        pod_kind(),
        "pods",
        "CREATE",
        &env.namespace,
        orphan,
        Value::Null,
    );
    let (status, answer) = post(
        &client,
        &webhook,
        "/mutate-v1-pod",
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 403);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .expect("message")
            .contains("\"nope\", which does not exist")
    );

    // Claim-bound HostPort writes by anyone but the allocator.
    let host_port = json!({"apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPort", "metadata": {"name": "port-1"},
                           "spec": {"hostPortClassName": class, "port": 1, "claimRef": {"name": "x", "namespace": "y"}}});
    let kind = json!({"group": "hostport.rmb938.com", "version": "v1alpha1", "kind": "HostPort"});
    let body = review(
        "uid-3",
        kind,
        "hostports",
        "CREATE",
        "",
        host_port,
        Value::Null,
    );
    let (_, answer) = post(
        &client,
        &webhook,
        "/validate-hostport-rmb938-com-v1alpha1-hostport",
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .expect("message")
            .contains("not by \"jane\"")
    );

    // An object of the wrong kind on a path is refused, never allowed.
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}});
    let body = review(
        "uid-4",
        json!({"group": "", "version": "v1", "kind": "Namespace"}),
        "namespaces",
        "CREATE",
        "",
        namespace,
        Value::Null,
    );
    let (_, answer) = post(
        &client,
        &webhook,
        "/mutate-v1-pod",
        serde_json::to_vec(&body).expect("json"),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .expect("message")
            .contains("this webhook admits Pod objects, not Namespace")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_an_error_review() {
    let env = Env::new("malformed").await;
    let webhook = env.start_webhook().await;
    let client = https_client(&webhook.ca_pem);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "the body is not an AdmissionReview"),
        (serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": null})).expect("json"), "expected apiVersion admission.k8s.io/v1"),
        (serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})).expect("json"), "has no request"),
        (serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"})).expect("json"), "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview"),
    ];
    for (body, expected) in cases {
        let (status, answer) = post(&client, &webhook, "/mutate-v1-pod", body).await;
        assert_eq!(status, 400);
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(message.contains(expected), "{message}");
    }
    let big = vec![b' '; hostport_webhook::server::MAX_BODY + 1];
    let response = client
        .post(format!("{}/mutate-v1-pod", webhook.url))
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 413, "bodies are limited");
    // Our own kinds are small: their paths take less, a pod's size is refused there.
    for path in [
        "/validate-hostport-rmb938-com-v1alpha1-hostportclaim",
        "/mutate-hostport-rmb938-com-v1alpha1-hostportclaim",
        "/validate-hostport-rmb938-com-v1alpha1-hostportclass",
    ] {
        let response = client
            .post(format!("{}{path}", webhook.url))
            .body(vec![b' '; hostport_webhook::server::MAX_RESOURCE_BODY + 1])
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 413, "{path}");
    }
    env.cleanup().await;
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z./-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z./-]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Random pod-shaped objects: annotations from the hostport family, ports with and without
/// names and host ports.
fn arbitrary_pod() -> impl Strategy<Value = Value> {
    let annotation = prop_oneof![
        "claim\\.hostport\\.rmb938\\.com/[a-z-]{0,6}",
        "port\\.hostport\\.rmb938\\.com/[a-z-]{0,6}",
        "[a-z]{1,5}",
    ];
    let port = (
        proptest::option::of("[a-z-]{0,6}"),
        1i64..70000,
        proptest::option::of(0i64..70000),
    );
    (
        proptest::collection::btree_map(annotation, "[a-z-]{0,8}", 0..4),
        proptest::collection::vec(proptest::collection::vec(port, 0..3), 0..3),
    )
        .prop_map(|(annotations, containers)| {
            let containers: Vec<Value> = containers
                .into_iter()
                .enumerate()
                .map(|(i, ports)| {
                    let ports: Vec<Value> = ports
                        .into_iter()
                        .map(|(name, container_port, host_port)| json!({"name": name, "containerPort": container_port, "hostPort": host_port}))
                        .collect();
                    json!({"name": format!("c{i}"), "image": "x", "ports": ports})
                })
                .collect();
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": annotations},
                   "spec": {"containers": containers}})
        })
}

#[test]
fn fuzzed_input_never_panics_and_always_answers_the_request_uid() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (env, webhook) = runtime.block_on(async {
        let env = Env::new("fuzz").await;
        let webhook = env.start_webhook().await;
        (env, webhook)
    });
    let client = https_client(&webhook.ca_pem);
    let namespace = env.namespace.clone();
    let config = ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    };
    // Pod-shaped objects (old objects too) are decodable reviews: a verdict for that uid.
    proptest!(config, |(object in arbitrary_pod(), old in prop_oneof![Just(Value::Null), arbitrary_pod()], operation in prop_oneof![Just("CREATE"), Just("UPDATE"), Just("DELETE")], uid in "[a-f0-9]{8}")| {
        let body = review(&uid, pod_kind(), "pods", operation, &namespace, object, old);
        let (status, answer) = runtime.block_on(post(&client, &webhook, "/mutate-v1-pod", serde_json::to_vec(&body).expect("json")));
        prop_assert_eq!(status, 200, "{}", answer);
        prop_assert_eq!(&answer["response"]["uid"], &json!(uid));
        prop_assert!(answer["response"]["allowed"].is_boolean());
    });
    // Any JSON in object/oldObject: a verdict for that uid, or (undecodable) a 400 error review;
    // never an allowed pod that could not be read.
    proptest!(config, |(object in arbitrary_json(), old in arbitrary_json(), uid in "[a-f0-9]{8}")| {
        let body = review(&uid, pod_kind(), "pods", "CREATE", &namespace, object, old);
        let (status, answer) = runtime.block_on(post(&client, &webhook, "/mutate-v1-pod", serde_json::to_vec(&body).expect("json")));
        match status {
            200 => prop_assert_eq!(&answer["response"]["uid"], &json!(uid)),
            400 => prop_assert_eq!(&answer["response"]["allowed"], &json!(false)),
            other => prop_assert!(false, "HTTP {}", other),
        }
    });
    // Raw garbage too: always a well-formed error review.
    proptest!(config, |(garbage in proptest::collection::vec(any::<u8>(), 0..200))| {
        let (status, answer) = runtime.block_on(post(&client, &webhook, "/mutate-v1-pod", garbage));
        prop_assert!(status == 400 || status == 200);
        prop_assert_eq!(&answer["response"]["allowed"], &json!(false));
    });
    drop(webhook);
    runtime.block_on(env.cleanup());
}

#[tokio::test]
async fn replaced_certificate_files_are_served_on_the_next_handshake() {
    let dir = std::env::temp_dir().join(format!("hostport-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let names = ["localhost".to_owned()];
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let first = tls::generate(&names, &ips, Duration::from_secs(3600)).expect("certs");
    std::fs::write(&cert, &first.cert_pem).expect("write");
    std::fs::write(&key, &first.key_pem).expect("write");
    let served = Arc::new(tls::SwappableCert::new(
        tls::certified_key(first.cert_pem.as_bytes(), first.key_pem.as_bytes()).expect("key"),
    ));
    let reload = tokio::spawn(tls::reload_files(
        cert.clone(),
        key.clone(),
        served.clone(),
        Duration::from_millis(100),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}/healthz",
        listener.local_addr().expect("addr").port()
    );
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(tls::serve(
        listener,
        router,
        tls::server_config(served).expect("config"),
        std::future::pending(),
    ));

    let trusts_first = https_client(&first.ca_pem);
    assert!(trusts_first.get(&url).send().await.is_ok());
    let second = tls::generate(&names, &ips, Duration::from_secs(3600)).expect("certs");
    let trusts_second = https_client(&second.ca_pem);
    assert!(
        trusts_second.get(&url).send().await.is_err(),
        "the new CA is not served yet"
    );
    // Files change (a key first, then the certificate: a broken pair in between is ignored).
    std::fs::write(&key, &second.key_pem).expect("write");
    std::fs::write(&cert, &second.cert_pem).expect("write");
    let mut switched = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A fresh client per attempt: a fresh handshake.
        if https_client(&second.ca_pem).get(&url).send().await.is_ok() {
            switched = true;
            break;
        }
    }
    assert!(switched, "the replaced certificate was not served");
    assert!(
        https_client(&first.ca_pem).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
    reload.abort();
    server.abort();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let metrics = Arc::new(hostport_webhook::metrics::Metrics::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = hostport_webhook::runner::health_router(metrics.clone(), ready.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        503
    );
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    metrics
        .denials
        .get_or_create(&hostport_webhook::metrics::DenialLabels {
            reason: "ClaimNotFound".into(),
        })
        .inc();
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("hostport_webhook_denials_total{reason=\"ClaimNotFound\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE hostport_webhook_admission_duration_seconds histogram"),
        "{text}"
    );
}

#[tokio::test]
async fn serves_http2_and_http1() {
    let env = Env::new("alpn").await;
    let webhook = env.start_webhook().await;
    for (alpn, expected) in [
        (b"h2".to_vec(), reqwest::Version::HTTP_2),
        (b"http/1.1".to_vec(), reqwest::Version::HTTP_11),
    ] {
        let mut config = client_trusting(webhook.ca_pem.as_bytes()).expect("client TLS");
        config.alpn_protocols = vec![alpn];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .expect("client");
        let response = client
            .post(format!("{}/mutate-v1-pod", webhook.url))
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(response.version(), expected);
    }
    env.cleanup().await;
}

/// At the connection limit a new client waits until a slot frees, and a connection is closed
/// once it reaches its maximum age, so idle clients cannot hold every slot.
#[tokio::test]
async fn connections_are_bounded_and_aged_out() {
    use tokio::io::AsyncReadExt;
    let LocalTls {
        listener,
        config,
        ca_pem,
    } = localhost_tls().await;
    let address = listener.local_addr().expect("addr");
    let limits = tls::Limits {
        max_connections: 1,
        max_connection_age: Duration::from_millis(1500),
        ..tls::Limits::default()
    };
    tokio::spawn(tls::serve_with_limits(
        listener,
        axum::Router::new(),
        config,
        limits,
        std::future::pending(),
    ));
    let client = Arc::new(client_trusting(ca_pem.as_bytes()).expect("client TLS"));
    let connect = || {
        let connector = tokio_rustls::TlsConnector::from(client.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(address).await.expect("tcp");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            connector.connect(name, tcp).await
        }
    };
    let mut first = connect().await.expect("first connection");
    let second = tokio::time::timeout(Duration::from_millis(500), connect()).await;
    assert!(
        second.is_err(),
        "a second connection was served at the limit of one"
    );
    // The first one is closed by the server at its maximum age (EOF), freeing the slot.
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buffer))
        .await
        .expect("closed within its maximum age");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    tokio::time::timeout(Duration::from_secs(5), connect())
        .await
        .expect("served once the slot is free")
        .expect("handshake");
}

/// At shutdown a request in flight finishes with its answer (over a kept-alive HTTP/2
/// connection, as kube-apiserver sends them), no new connection is accepted afterwards, and
/// the server returns once its connections are closed.
#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    let LocalTls {
        listener,
        config,
        ca_pem,
    } = localhost_tls().await;
    let address = listener.local_addr().expect("addr");
    let slow = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "done"
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tls::serve_with_limits(
        listener,
        slow,
        config,
        tls::Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = https_client(&ca_pem);
    let url = format!("https://localhost:{}/slow", address.port());
    let in_flight = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).send().await?.text().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !server.is_finished(),
        "the server returned with a request in flight (the process would exit and cut it)"
    );
    let answer = in_flight
        .await
        .expect("task")
        .expect("the request in flight is answered");
    assert_eq!(answer, "done");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server returns once its connections closed")
        .expect("server task");
    let refused = tokio::net::TcpStream::connect(address).await;
    assert!(refused.is_err(), "nothing listens after shutdown");
}

/// A stopping webhook says it is not ready at once but keeps answering for its shutdown
/// delay (the Service drops it meanwhile), then stops.
#[tokio::test]
async fn a_stopping_webhook_is_not_ready_but_answers_until_its_delay_ends() {
    let env = Env::new("webhook-drain").await;
    let LocalTls {
        listener,
        config,
        ca_pem,
    } = localhost_tls().await;
    let address = listener.local_addr().expect("addr");
    let options = hostport_webhook::RunOptions {
        shutdown_delay: Duration::from_millis(1500),
        ..hostport_webhook::RunOptions::default()
    };
    let ready = options.ready.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hostport_webhook::run(
        env.client.clone(),
        listener,
        config,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    for _ in 0..400 {
        if ready.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready.load(std::sync::atomic::Ordering::Relaxed), "ready");
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !ready.load(std::sync::atomic::Ordering::Relaxed),
        "not ready once stopping"
    );
    // A new connection during the delay is still answered (an unknown path: 404).
    let client = https_client(&ca_pem);
    let response = client
        .get(format!("https://localhost:{}/none", address.port()))
        .send()
        .await
        .expect("answered while draining");
    assert_eq!(response.status(), 404);
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped after its delay")
        .expect("task");
    env.cleanup().await;
}
