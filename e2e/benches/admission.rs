//! The webhook's pod admissions over HTTPS: the release `hostport-webhook` binary runs as its
//! own process against the in-process API server, its caches filled with 10,000 Bound claims
//! (bound by the release controller, which is then stopped) and their HostPorts. The bench
//! sends real `AdmissionReview` requests for pods naming those claims, the API server's way
//! (`POST /mutate-v1-pod`, JSON), over HTTP/1.1 (one request at a time per connection) and
//! HTTP/2 (one, four and eight streams per connection), with 2 and 16 connections, for 5 s each
//! after a warm-up, and prints admissions/s with p50/p99 latency.
//!
//! The goal: ≥ 10,000 admissions/s at p99 ≤ 2 ms with 2 connections on the 2-core machine
//! (the load generator shares those cores).
//!
//! ```sh
//! cargo build --release -p hostport-controller --bin hostport-controller -p hostport-webhook --bin hostport-webhook
//! cargo bench -p hostport-e2e --bench admission     # ADMISSION_BENCH_CLAIMS=10000 by default
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use hostport_api::{HostPortClaim, HostPortClass, HostPortClassSpec};
use hostport_e2e::measure::{
    Process, bench_runtime, bench_server, claim_with_finalizer, controller, free_port, in_parallel,
    service_account_kubeconfigs, setting, webhook, webhook_certificate,
};
use kube::api::{Api, ListParams, PostParams};
use kube_testserver::TestApiServer;
use serde_json::json;

/// How long each configuration is measured, after [`WARM_UP`].
const MEASURE: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);

/// The `AdmissionReview` of a pod named `pod-<i>` naming claim `claim-<i>`.
fn review(i: usize) -> bytes::Bytes {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": "default",
            "annotations": {"claim.hostport.rmb938.com/web": format!("claim-{i}")}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1",
            "ports": [{"name": "web", "containerPort": 8080}]}]}
    });
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("bench-{i}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": format!("pod-{i}"), "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    });
    serde_json::to_vec(&review).expect("json").into()
}

#[derive(Clone, Copy, Debug)]
enum Http {
    One,
    Two { streams: usize },
}

fn client(ca_pem: &str, http: Http) -> reqwest::Client {
    let mut tls = hostport_e2e::local::client_trusting(ca_pem.as_bytes()).expect("TLS");
    tls.alpn_protocols = match http {
        Http::One => vec![b"http/1.1".to_vec()],
        Http::Two { .. } => vec![b"h2".to_vec()],
    };
    let builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(1);
    match http {
        Http::One => builder.http1_only(),
        Http::Two { .. } => builder.http2_prior_knowledge(),
    }
    .build()
    .expect("client")
}

/// Admissions/s, p50 and p99 of `connections` clients (one connection each) sending
/// `reviews` in turn for [`MEASURE`].
async fn measure(
    url: &str,
    ca_pem: &str,
    http: Http,
    connections: usize,
    reviews: &Arc<Vec<bytes::Bytes>>,
) -> (f64, Duration, Duration) {
    let per_connection = match http {
        Http::One => 1,
        Http::Two { streams } => streams,
    };
    let started = Instant::now();
    let mut tasks = vec![];
    for c in 0..connections {
        let client = client(ca_pem, http);
        for s in 0..per_connection {
            let (client, reviews, url) = (client.clone(), reviews.clone(), url.to_owned());
            let lane = c * per_connection + s;
            tasks.push(tokio::spawn(async move {
                let mut latencies = vec![];
                let mut i = lane;
                loop {
                    let sent = Instant::now();
                    if sent.duration_since(started) > WARM_UP + MEASURE {
                        return latencies;
                    }
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(reviews[i % reviews.len()].clone())
                        .send()
                        .await
                        .expect("sent");
                    assert!(answer.status().is_success(), "{}", answer.status());
                    let body = answer.bytes().await.expect("body");
                    assert!(
                        allowed_with_patch(&body),
                        "denied: {}",
                        String::from_utf8_lossy(&body)
                    );
                    if sent.duration_since(started) >= WARM_UP {
                        latencies.push(sent.elapsed());
                    }
                    i += 7919;
                }
            }));
        }
    }
    let mut latencies = vec![];
    for task in tasks {
        latencies.extend(task.await.expect("lane"));
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    (
        latencies.len() as f64 / MEASURE.as_secs_f64(),
        at(0.5),
        at(0.99),
    )
}

/// Whether an AdmissionReview answer allowed the pod with a patch (a cheap byte search:
/// decoding it would cost the load generator more than the webhook).
fn allowed_with_patch(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("\"allowed\":true") && text.contains("\"patch\"")
}

async fn setup(claims_count: usize) -> (TestApiServer, Process, String, String) {
    let (server, dir) = bench_server("admission").await;
    let [controller_config, webhook_config] =
        service_account_kubeconfigs(&server, &dir, ["hostport-controller", "hostport-webhook"]);
    let (tls, ca_pem) = webhook_certificate(&dir);
    let client = server.client();
    Api::<HostPortClass>::all(client.clone())
        .create(
            &PostParams::default(),
            &HostPortClass::new("bench", HostPortClassSpec::with_pools(&[(20000, 40000)])),
        )
        .await
        .expect("class");
    let controller = controller(&controller_config, &[]);
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    let writer = claims.clone();
    in_parallel(claims_count, 8, move |i| {
        let claims = writer.clone();
        async move {
            claims
                .create(
                    &PostParams::default(),
                    &claim_with_finalizer(&format!("claim-{i}"), "bench"),
                )
                .await
                .expect("claim");
        }
    })
    .await;
    let started = Instant::now();
    loop {
        let listed = claims.list(&ListParams::default()).await.expect("claims");
        if listed.items.iter().all(|c| c.bound_port().is_some()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not all bound"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Bound: the controller's work is done; only the webhook shares the cores with the bench.
    drop(controller);
    let port = free_port();
    let webhook = webhook(&webhook_config, &tls, port, 0);
    let url = format!(
        "https://127.0.0.1:{port}{}",
        hostport_api::webhook_paths::MUTATE_POD
    );
    (server, webhook, url, ca_pem)
}

fn main() {
    let runtime = bench_runtime();
    let claims = setting("ADMISSION_BENCH_CLAIMS", 10_000);
    runtime.block_on(async {
        let (_server, _webhook, url, ca_pem) = setup(claims).await;
        let reviews = Arc::new((0..claims).map(review).collect::<Vec<_>>());
        // Ready when an admission answers.
        let probe = client(&ca_pem, Http::One);
        let started = Instant::now();
        while probe
            .post(&url)
            .body(reviews[0].clone())
            .send()
            .await
            .map(|a| a.status().is_success())
            .is_err()
        {
            assert!(started.elapsed() < Duration::from_secs(30), "webhook not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (http, connections) in [
            (Http::One, 2),
            (Http::One, 16),
            (Http::Two { streams: 1 }, 2),
            (Http::Two { streams: 1 }, 16),
            (Http::Two { streams: 4 }, 2),
            (Http::Two { streams: 8 }, 2),
        ] {
            let (rate, p50, p99) = measure(&url, &ca_pem, http, connections, &reviews).await;
            println!(
                "admission: {http:?} × {connections} connections, {claims} claims cached: {rate:.0} admissions/s, p50 {:.2} ms, p99 {:.2} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
    });
}
