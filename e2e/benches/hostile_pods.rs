//! Memory under hostile pods: 40 never-scheduled pods of 1.4 MB each (a tenant's big
//! `command`, what kube-apiserver stores up to its 1.5 MiB object limit) created through the
//! pod webhook in a labelled namespace, each naming a claim, then every claim deleted (the
//! controller's release check looks at the pods) and the pods deleted (the ports released).
//! The release binaries of the controller, the webhook and the publisher (edge mode,
//! dry-run, watching every pod) run as processes against the in-process API server; each
//! one's resident memory is printed before and after, with its peak.
//!
//! The goal: each grows by less than 16 MiB (caches keep only what decisions read, lists come
//! in small pages, admission decodes one copy of a request, and few at once).
//!
//! ```sh
//! cargo build --release -p hostport-controller --bin hostport-controller -p hostport-webhook --bin hostport-webhook \
//!   -p hostport-publisher --bin hostport-publisher
//! cargo bench -p hostport-e2e --bench hostile_pods
//! ```

use std::time::{Duration, Instant};

use hostport_api::{HostPortClaim, HostPortClaimSpec, HostPortClass, HostPortClassSpec};
use hostport_e2e::measure::{
    ACCOUNTS, bench_server, controller, edge_publisher, free_port, service_account_kubeconfigs,
    webhook, webhook_certificate,
};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const PODS: usize = 40;
const POD_BYTES: usize = 1_400_000;
const NAMESPACE: &str = "games";

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run() {
    let (server, dir) = bench_server("hostile").await;
    let client = server.client();
    let configs = service_account_kubeconfigs(&server, &dir, ACCOUNTS);
    let (tls, ca_pem) = webhook_certificate(&dir);

    hostport_e2e::harness::ensure_namespace(
        &client,
        NAMESPACE,
        json!({hostport_api::NAMESPACE_LABEL: "true"}),
    )
    .await
    .expect("namespace");
    Api::<HostPortClass>::all(client.clone())
        .create(
            &PostParams::default(),
            &HostPortClass::new("bench", HostPortClassSpec::with_pools(&[(20000, 20999)])),
        )
        .await
        .expect("class");
    let webhook_port = free_port();
    let controller = controller(&configs[0], &["--admission-grace-seconds=1"]);
    let webhook = webhook(&configs[1], &tls, webhook_port, 0);
    let publisher = edge_publisher(&configs[2]);
    let ca = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ca_pem.as_bytes(),
    );
    let (mutating, validating) = hostport_e2e::webhooks::configurations(
        "hostport-allocator",
        &format!("https://127.0.0.1:{webhook_port}"),
        &ca,
        json!({"matchLabels": {hostport_api::NAMESPACE_LABEL: "true"}}),
    );
    // The webhook answers once its caches are synced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let apply = PatchParams::apply("hostport-bench").force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch("hostport-allocator", &apply, &Patch::Apply(&mutating))
        .await
        .expect("mutating webhooks");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch("hostport-allocator", &apply, &Patch::Apply(&validating))
        .await
        .expect("validating webhooks");

    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), NAMESPACE);
    for i in 0..PODS {
        claims
            .create(
                &PostParams::default(),
                &HostPortClaim::new(&format!("claim-{i}"), HostPortClaimSpec::of_class("bench")),
            )
            .await
            .expect("claim");
    }
    until("every claim bound", || {
        let claims = claims.clone();
        async move {
            let list = claims.list(&ListParams::default()).await.expect("claims");
            list.items
                .iter()
                .filter(|c| c.bound_port().is_some())
                .count()
                == PODS
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = [controller.rss_kib(), webhook.rss_kib(), publisher.rss_kib()];

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let big = "x".repeat(POD_BYTES);
    for i in 0..PODS {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("big-{i}"),
                "annotations": {"claim.hostport.rmb938.com/web": format!("claim-{i}")}},
            "spec": {"containers": [{"name": "app", "image": hostport_e2e::pod_image(), "command": [big],
                "ports": [{"name": "web", "containerPort": 8080}]}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("admitted");
    }
    // Claim releases: each waits for its pod, then the pods go and the ports are released.
    for i in 0..PODS {
        claims
            .delete(&format!("claim-{i}"), &DeleteParams::default())
            .await
            .expect("delete claim");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..PODS {
        pods.delete(
            &format!("big-{i}"),
            &DeleteParams::default().grace_period(0),
        )
        .await
        .expect("delete pod");
    }
    until("every claim released", || {
        let claims = claims.clone();
        async move {
            claims
                .list(&ListParams::default())
                .await
                .expect("claims")
                .items
                .is_empty()
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, process, before) in [
        ("controller", &controller, before[0]),
        ("webhook", &webhook, before[1]),
        ("publisher", &publisher, before[2]),
    ] {
        let (after, peak) = (process.rss_kib(), process.peak_kib());
        println!(
            "hostile pods: {name}: RSS {:.1} MiB before, {:.1} MiB after {PODS} pods of {:.1} MB and their claims' releases ({:+.1} MiB; goal < 16), peak {:.1} MiB",
            mib(before),
            mib(after),
            POD_BYTES as f64 / 1e6,
            mib(after) - mib(before),
            mib(peak)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    hostport_e2e::measure::bench_runtime().block_on(run());
}
