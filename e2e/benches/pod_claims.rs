//! Ports per pod: pods with `class.hostport.rmb938.com/<port>` annotations, whose admission
//! creates their claims and waits for the allocator to bind them. Prints the pod admission
//! latency (create sent → stored with its ports), p50/p99, for pods with one and with two
//! class annotations created one after another, the API writes per such pod (in-process
//! only: the server counts requests), and 1,000 pods created by 16 clients at once: total
//! time, slowest admission, and how many came within 1 s of the 5 s webhook timeout.
//!
//! ```sh
//! cargo bench -p hostport-e2e --bench pod_claims
//! E2E_KUBECONFIG=~/.kube/config cargo bench -p hostport-e2e --bench pod_claims   # on a real cluster
//! E2E_KUBECONFIG=… E2E_INSTALLED=1 cargo bench -p hostport-e2e --bench pod_claims # the installed pods
//! ```
//!
//! With `E2E_INSTALLED=1` the bench starts no controller or webhook of its own: the ones
//! `kubectl apply -k config/default` runs as pods serve it. The bench's pods select no node
//! (`nodeSelector`), so they never start: what is measured is admission and binding, not the
//! node starting a thousand containers.

use std::time::{Duration, Instant};

use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

/// A pod whose `ports` container ports each get a claim of `class` (distinct numbers, so
/// one claim each).
fn pod(class: &str, ports: usize) -> Pod {
    let names = ["http", "metrics"];
    let mut annotations = serde_json::Map::new();
    let mut container_ports = vec![];
    for (i, name) in names.iter().take(ports).enumerate() {
        annotations.insert(format!("class.hostport.rmb938.com/{name}"), json!(class));
        container_ports.push(json!({"name": name, "containerPort": 8080 + i}));
    }
    serde_json::from_value(json!({
        "metadata": {"generateName": "bench-", "annotations": annotations},
        "spec": {"nodeSelector": hostport_e2e::no_node(),
                 "containers": [{"name": "app", "image": hostport_e2e::pod_image(), "ports": container_ports}]}
    }))
    .expect("pod")
}

/// Creates a pod; its admission latency, or `None` when it was refused.
async fn admit(pods: &Api<Pod>, pod: &Pod, ports: usize) -> Option<Duration> {
    let started = Instant::now();
    let created = match pods.create(&PostParams::default(), pod).await {
        Ok(created) => created,
        Err(error) => {
            eprintln!("pod_claims: a pod was refused: {error}");
            return None;
        }
    };
    let took = started.elapsed();
    let injected = created
        .spec
        .and_then(|s| s.containers[0].ports.clone())
        .map_or(0, |p| p.iter().filter(|p| p.host_port.is_some()).count());
    assert_eq!(injected, ports, "every annotated port got a hostPort");
    Some(took)
}

fn at(latencies: &[Duration], p: f64) -> f64 {
    latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "pod_claims: {what}: pod admission p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(&latencies, 0.5),
        at(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let env = Env::new("bench-pod-claims").await;
    let installed = std::env::var_os("E2E_INSTALLED").is_some();
    let _webhook = if installed {
        None
    } else {
        Some(env.start_webhook().await)
    };
    let _controller = (!installed).then(|| env.start_controller(RunOptions::default()));
    let class = env.create_class("bench", &[(20000, 29999)]).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);

    for ports in [1, 2] {
        if let Some(server) = env.server() {
            server.reset_counts();
        }
        let mut latencies = vec![];
        for _ in 0..200 {
            latencies.extend(admit(&pods, &pod(&class, ports), ports).await);
        }
        report(
            &format!("200 pods with {ports} class annotation(s), one after another"),
            latencies,
        );
        if let Some(server) = env.server() {
            // Let the last binding's trailing writes (class status) land.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let writes = |user_filter: &dyn Fn(&str) -> bool| -> u64 {
                server.writes(|user, resource| {
                    user_filter(user)
                        && !resource.contains("events")
                        && !resource.contains("leases")
                })
            };
            let average = |n: u64| n as f64 / 200.0;
            println!(
                "pod_claims: {ports} class annotation(s): API writes per pod {:.2} (webhook {:.2}, controller {:.2}, the pod itself {:.2}; Events and Leases not counted)",
                average(writes(&|_| true)),
                average(writes(&|u| u.ends_with(":hostport-webhook"))),
                average(writes(&|u| u.ends_with(":hostport-controller"))),
                average(writes(&|u| !u.contains(":hostport-"))),
            );
        }
    }

    let clients = 16;
    let total = 1000;
    let started = Instant::now();
    let results: Vec<Vec<Option<Duration>>> = futures::future::join_all((0..clients).map(|c| {
        let (pods, class) = (pods.clone(), class.clone());
        async move {
            let mut mine = vec![];
            for _ in (c..total).step_by(clients) {
                mine.push(admit(&pods, &pod(&class, 1), 1).await);
            }
            mine
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let all: Vec<Option<Duration>> = results.into_iter().flatten().collect();
    let refused = all.iter().filter(|l| l.is_none()).count();
    let latencies: Vec<Duration> = all.into_iter().flatten().collect();
    let near_timeout = latencies
        .iter()
        .filter(|l| **l >= Duration::from_secs(4))
        .count();
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    report(&format!("{total} pods by {clients} clients"), latencies);
    println!(
        "pod_claims: {total} pods by {clients} clients: all done after {:.2} s ({:.0} pods/s); slowest admission {:.0} ms; {near_timeout} at or above 4 s (timeout 5 s); {refused} refused",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    env.cleanup().await;
}
