//! Ports per pod: pods with `class.hostport.rmb938.com/<port>` annotations, whose admission
//! creates their claims and waits for the allocator to bind them. Prints the pod admission
//! latency (create sent → stored with its ports), p50/p99, for pods with one and with two
//! class annotations created one after another, the API writes per such pod (in-process
//! only: the server counts requests), the API server's create rate (ConfigMaps), 600 pods at
//! a steady 50 pods/s, and 1,000 pods created by 16 clients at once: total time, pods/s
//! against the create rate, slowest admission, and how many came within 1 s of the 5 s
//! webhook timeout.
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
        "metadata": {"generateName": "bench-", "annotations": annotations,
                     "labels": {"bench-annotations": ports.to_string()}},
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

/// API writes a pod with one class annotation costs, the pod included (counted above when
/// the API server is in-process).
const WRITES_PER_POD: f64 = 4.0;

/// `total` pods with `ports` class annotations created by `clients` concurrent clients: how
/// long all took, and each one's admission latency (`None`: refused).
async fn concurrently(
    pods: &Api<Pod>,
    class: &str,
    ports: usize,
    total: usize,
    clients: usize,
) -> (Duration, Vec<Option<Duration>>) {
    let started = Instant::now();
    let results: Vec<Vec<Option<Duration>>> = futures::future::join_all((0..clients).map(|c| {
        let (pods, class) = (pods.clone(), class.to_owned());
        async move {
            let mut mine = vec![];
            for _ in (c..total).step_by(clients) {
                mine.push(admit(&pods, &pod(&class, ports), ports).await);
            }
            mine
        }
    }))
    .await;
    (started.elapsed(), results.into_iter().flatten().collect())
}

/// Creates per second of `total` ConfigMaps by `clients` concurrent clients (deleted after).
async fn create_rate(env: &Env, total: usize, clients: usize) -> f64 {
    use k8s_openapi::api::core::v1::ConfigMap;
    let maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.namespace);
    let started = Instant::now();
    futures::future::join_all((0..clients).map(|c| {
        let maps = maps.clone();
        async move {
            for i in (c..total).step_by(clients) {
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("rate-{i}")}, "data": {"k": "v"}
                }))
                .expect("configmap");
                maps.create(&PostParams::default(), &map)
                    .await
                    .expect("create ConfigMap");
            }
        }
    }))
    .await;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = maps
        .delete_collection(&Default::default(), &Default::default())
        .await;
    rate
}

/// Admission latencies of `total` pods (one class annotation) created at `per_second`,
/// each on its own task, whatever the earlier ones take (an open loop).
async fn paced(pods: &Api<Pod>, class: &str, per_second: f64, total: usize) -> Vec<Duration> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    let mut tasks = vec![];
    for _ in 0..total {
        ticker.tick().await;
        let (pods, pod) = (pods.clone(), pod(class, 1));
        tasks.push(tokio::spawn(async move { admit(&pods, &pod, 1).await }));
    }
    let mut latencies = vec![];
    for task in tasks {
        latencies.extend(task.await.ok().flatten());
    }
    latencies
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

    // The API server's own create rate in this run (ConfigMaps: no webhook of ours), the
    // yardstick for pods/s: a pod costs 1 + 3 writes with one class annotation.
    let create_rate = create_rate(&env, 1000, 16).await;
    println!(
        "pod_claims: the API server's create rate (1,000 ConfigMaps by 16 clients): {create_rate:.0} creates/s"
    );

    // A steady 50 pods/s, as a fleet scaling up: admission latency under that load.
    let paced = paced(&pods, &class, 50.0, 600).await;
    report("600 pods at a steady 50 pods/s", paced);

    let clients = 16;
    let total = 1000;
    // The same API server's rate for pods with no class annotation (the same webhooks, no
    // claim): what a pod alone costs it, the yardstick a ConfigMap is not.
    let (plain_elapsed, plain) = concurrently(&pods, &class, 0, total, clients).await;
    let plain_rate = total as f64 / plain_elapsed.as_secs_f64();
    report(
        &format!("{total} pods without a class annotation by {clients} clients"),
        plain.into_iter().flatten().collect(),
    );
    println!(
        "pod_claims: {total} pods without a class annotation by {clients} clients: {plain_rate:.0} pods/s"
    );
    let plain_pods = kube::api::ListParams::default().labels("bench-annotations=0");
    let _ = pods
        .delete_collection(&Default::default(), &plain_pods)
        .await;

    let (elapsed, all) = concurrently(&pods, &class, 1, total, clients).await;
    let refused = all.iter().filter(|l| l.is_none()).count();
    let latencies: Vec<Duration> = all.into_iter().flatten().collect();
    let near_timeout = latencies
        .iter()
        .filter(|l| **l >= Duration::from_secs(4))
        .count();
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    report(&format!("{total} pods by {clients} clients"), latencies);
    let pods_per_second = total as f64 / elapsed.as_secs_f64();
    println!(
        "pod_claims: {total} pods by {clients} clients: all done after {:.2} s ({pods_per_second:.0} pods/s); slowest admission {:.0} ms; {near_timeout} at or above 4 s (timeout 5 s); {refused} refused",
        elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    let ceiling = create_rate / WRITES_PER_POD;
    println!(
        "pod_claims: pods/s against the create rate / {WRITES_PER_POD} writes per pod ({ceiling:.0}): {:.2}; against pods without a class annotation: {:.2}",
        pods_per_second / ceiling,
        pods_per_second / plain_rate
    );
    env.cleanup().await;
}
