//! One file holding a claim and its pod, applied in one go: the pod's admission waits for the
//! claim to bind. Prints the pod's admission latency (create sent → stored with its port),
//! p50/p99, for applies one after another and for 200 at once, against the in-process API
//! server with the webhook and the controller in-process (release build).
//!
//! ```sh
//! cargo bench -p hostport-e2e --bench one_file      # ONE_FILE_BIND_WAIT_MS=2000 by default
//! E2E_KUBECONFIG=~/.kube/config cargo bench -p hostport-e2e --bench one_file   # on a real cluster
//! ```

use std::time::{Duration, Instant};

use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

fn pod(namespace: &str, name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"claim.hostport.rmb938.com/web": name}},
        "spec": {"containers": [{"name": "app", "image": hostport_e2e::pod_image(),
                                 "ports": [{"name": "web", "containerPort": 8080}]}]}
    }))
    .expect("pod")
}

/// Claim `name`, then at once its pod; the pod create's latency.
async fn apply(env: &Env, pods: &Api<Pod>, class: &str, name: &str) -> Duration {
    env.create_claim(name, class, None).await;
    let started = Instant::now();
    let created = pods
        .create(&PostParams::default(), &pod(&env.namespace, name))
        .await
        .unwrap_or_else(|e| panic!("pod {name}: {e}"));
    let took = started.elapsed();
    let port = created
        .spec
        .and_then(|s| s.containers[0].ports.clone()?[0].host_port);
    assert!(port.is_some(), "pod {name} has no hostPort");
    took
}

fn report(what: &str, bind_wait: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "one_file: {what}: pod admission p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (webhook timeoutSeconds 5 s, bind wait {bind_wait:?})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let env = Env::new("bench-one-file").await;
    let bind_wait = Duration::from_millis(
        std::env::var("ONE_FILE_BIND_WAIT_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(2000),
    );
    let webhook = env
        .start_webhook_with(hostport_webhook::RunOptions {
            bind_wait,
            ..Default::default()
        })
        .await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("bench", &[(20000, 29999)]).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);

    let mut sequential = vec![];
    for i in 0..200 {
        sequential.push(apply(&env, &pods, &class, &format!("seq-{i}")).await);
    }
    report("200 applies one after another", bind_wait, sequential);

    let started = Instant::now();
    let burst = futures::future::join_all((0..200).map(|i| {
        let (env, pods, class) = (&env, &pods, &class);
        async move { apply(env, pods, class, &format!("burst-{i}")).await }
    }))
    .await;
    let total = started.elapsed();
    report("200 applies at once", bind_wait, burst);
    println!(
        "one_file: 200 applies at once: all pods admitted after {:.0} ms; {}",
        total.as_secs_f64() * 1e3,
        webhook
            .metrics
            .encode()
            .lines()
            .filter(
                |l| l.starts_with("hostport_webhook_claim_wait_duration_seconds_count")
                    || l.starts_with("hostport_webhook_claim_wait_duration_seconds_sum")
            )
            .collect::<Vec<_>>()
            .join(", ")
    );
}
