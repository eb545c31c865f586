//! Memory against object count and size, and startup with a full book: N claims (default
//! 10,000; `MEMORY_BENCH_CLAIMS=64512` fills a whole 1024-65535 class) bound by the real
//! `hostport-controller` while the real `hostport-webhook` caches them, and P Running pods
//! (default 10,000) that use them, forwarded by the real `hostport-publisher` (edge mode,
//! dry-run); all three release binaries run as processes against the in-process API server.
//! Run once with no annotations and once with `MEMORY_BENCH_ANNOTATION_BYTES` (default
//! 200 KB) on every claim and pod. Prints each binary's resident memory once everything is
//! bound and settled, and its peak; after the first run, how long a restarted controller
//! takes to its first bind (caches synced, book rebuilt from every HostPort) and a restarted
//! webhook to `/readyz`.
//!
//! The goals: each binary's memory the same within 10% whatever the annotations weigh (their
//! caches keep only what decisions read), so a tenant cannot grow them by writing big
//! objects; at 64,512 claims each ≤ 96 MiB; the controller's first bind ≤ 5 s, the webhook
//! ready ≤ 3 s.
//!
//! ```sh
//! cargo build --release -p hostport-controller --bin hostport-controller -p hostport-webhook --bin hostport-webhook \
//!   -p hostport-publisher --bin hostport-publisher
//! cargo bench -p hostport-e2e --bench memory
//! MEMORY_BENCH_CLAIMS=64512 MEMORY_BENCH_ANNOTATION_BYTES=20480 cargo bench -p hostport-e2e --bench memory
//! ```
//!
//! `MEMORY_BENCH_ANNOTATION_BYTES=0` makes only the first run.
//!
//! With `E2E_KUBECONFIG` the three binaries run against that cluster's API server with its
//! credentials, in a namespace, classes and a Node of their own (named after the bench's
//! process), removed at the end: the claims released by the controller, the pods (on a Node
//! no kubelet serves) deleted at once.
//!
//! ```sh
//! E2E_KUBECONFIG=~/kapi/run-node/admin.kubeconfig MEMORY_BENCH_CLAIMS=64512 MEMORY_BENCH_ANNOTATION_BYTES=0 \
//!   cargo bench -p hostport-e2e --bench memory
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostport_api::{HostPort, HostPortClaim, HostPortClass, HostPortClassSpec};
use hostport_e2e::measure::{
    ACCOUNTS, Process, bench_dir, bench_runtime, bench_server, claim_with_finalizer, controller,
    edge_publisher, free_port, in_parallel, service_account_kubeconfigs, setting, webhook,
    webhook_certificate,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Concurrent writers creating claims and pods.
const WRITERS: usize = 8;

/// The API server a run uses and the names of what it makes there.
struct Target {
    client: kube::Client,
    /// The controller's, the webhook's and the publisher's kubeconfigs.
    configs: [PathBuf; 3],
    /// Where the claims and pods go.
    namespace: String,
    /// The class every claim is of, the class of the startup probe, the Node of every pod.
    class: String,
    probe_class: String,
    node: String,
    /// The in-process server, if it is one (kept alive for the run).
    server: Option<kube_testserver::TestApiServer>,
}

impl Target {
    /// The in-process server, or the cluster of `E2E_KUBECONFIG` (names made unique).
    async fn new(dir: &Path) -> Self {
        let Some(path) = std::env::var_os("E2E_KUBECONFIG") else {
            let (server, _) = bench_server("memory").await;
            return Self {
                client: server.client(),
                configs: service_account_kubeconfigs(&server, dir, ACCOUNTS),
                namespace: "default".into(),
                class: "bench".into(),
                probe_class: "probe".into(),
                node: "node-1".into(),
                server: Some(server),
            };
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&path).expect("E2E_KUBECONFIG"),
            &Default::default(),
        )
        .await
        .expect("E2E_KUBECONFIG");
        let client = kube::Client::try_from(config).expect("client");
        hostport_e2e::cluster::prepare(&client, false).await;
        let unique = format!("memory-bench-{}", std::process::id());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": unique}})).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace");
        let kubeconfig = PathBuf::from(path);
        Self {
            client,
            configs: [kubeconfig.clone(), kubeconfig.clone(), kubeconfig],
            namespace: unique.clone(),
            probe_class: format!("{unique}-probe"),
            node: unique.clone(),
            class: unique,
            server: None,
        }
    }

    /// On a real cluster: deletes the pods at once (no kubelet serves their Node), then the
    /// claims, waits for the controller (still running) to release every port, and deletes
    /// the classes, the Node and the namespace.
    async fn clean_up(&self) {
        if self.server.is_some() {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let _ = pods
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default(),
            )
            .await;
        // One delete per claim: a delete-collection of tens of thousands outlasts the API
        // server's request timeout and stops part way.
        let claims: Api<HostPortClaim> = Api::namespaced(self.client.clone(), &self.namespace);
        let names: Vec<String> = claims
            .list_metadata(&ListParams::default())
            .await
            .map(|list| {
                list.items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect()
            })
            .unwrap_or_default();
        let names = std::sync::Arc::new(names);
        let started = Instant::now();
        in_parallel(names.len(), 2 * WRITERS, {
            let (claims, names) = (claims.clone(), names.clone());
            move |i| {
                let (claims, names) = (claims.clone(), names.clone());
                async move {
                    let _ = claims.delete(&names[i], &DeleteParams::default()).await;
                }
            }
        })
        .await;
        while started.elapsed() < Duration::from_secs(1800) {
            match claims.list_metadata(&ListParams::default().limit(1)).await {
                Ok(left) if left.items.is_empty() => break,
                _ => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
        let classes = Api::<HostPortClass>::all(self.client.clone());
        for class in [&self.class, &self.probe_class] {
            let _ = classes.delete(class, &DeleteParams::default()).await;
        }
        let _ = Api::<Node>::all(self.client.clone())
            .delete(&self.node, &DeleteParams::default())
            .await;
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        println!(
            "memory: cleaned up {} after {:.0} s",
            self.namespace,
            started.elapsed().as_secs_f64()
        );
    }
}

struct Figures {
    settled_kib: u64,
    peak_kib: u64,
}

fn figures(process: &Process) -> Figures {
    Figures {
        settled_kib: process.rss_kib(),
        peak_kib: process.peak_kib(),
    }
}

struct Run {
    controller: Figures,
    webhook: Figures,
    publisher: Figures,
    /// Controller start → first bind, webhook start → ready.
    startup: Option<(Duration, Duration)>,
}

fn claim(name: &str, class: &str, payload: &str) -> HostPortClaim {
    let mut claim = claim_with_finalizer(name, class);
    if !payload.is_empty() {
        claim.metadata.annotations =
            Some([("bench.example/payload".to_owned(), payload.to_owned())].into());
    }
    claim
}

/// Waits until `count` HostPorts of `class` hold a port with a status (every binding's last
/// write but the claim's status).
async fn all_bound(host_ports: &Api<HostPort>, class: &str, count: usize) {
    let started = Instant::now();
    loop {
        let allocated = host_ports
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|hp| hp.spec.host_port_class_name == class)
            .filter(|hp| hp.status.as_ref().and_then(|s| s.port).is_some())
            .count();
        if allocated >= count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{allocated} of {count} allocated after 30 minutes"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Creates `count` Running pods on the target's Node, pod `i` using claim `claim-i` and its
/// port.
async fn running_pods(target: &Target, count: usize, payload: &str) {
    let (client, node) = (&target.client, target.node.clone());
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), &target.namespace);
    let ports: std::collections::HashMap<String, i32> = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .filter_map(|c| Some((c.metadata.name.clone()?, i32::from(c.bound_port()?))))
        .collect();
    let ports = std::sync::Arc::new(ports);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let payload = payload.to_owned();
    in_parallel(count, WRITERS, move |i| {
        let (pods, ports, payload, node) =
            (pods.clone(), ports.clone(), payload.clone(), node.clone());
        async move {
            let claim = format!("claim-{i}");
            let port = ports[&claim];
            let mut annotations = json!({
                "claim.hostport.rmb938.com/web": claim,
                "port.hostport.rmb938.com/web": port.to_string(),
            });
            if !payload.is_empty() {
                annotations["bench.example/payload"] = json!(payload);
            }
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("pod-{i}"), "annotations": annotations},
                // Tolerates the taints a Node no kubelet serves gets on a real cluster.
                "spec": {"nodeName": node, "tolerations": [{"operator": "Exists", "effect": "NoExecute"}],
                    "containers": [{"name": "app", "image": "registry.invalid/app:1",
                    "ports": [{"name": "web", "containerPort": 8080, "hostPort": port}]}]}
            }))
            .expect("pod");
            let name = format!("pod-{i}");
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
            let status = json!({"status": {"phase": "Running",
                "hostIP": "198.51.100.10", "hostIPs": [{"ip": "198.51.100.10"}],
                "podIP": "198.19.0.10", "podIPs": [{"ip": "198.19.0.10"}]}});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .expect("pod status");
        }
    })
    .await;
}

/// Time from a new controller's start until `claim` is Bound.
async fn first_bind(target: &Target) -> (Process, Duration) {
    let (client, kubeconfig) = (&target.client, &target.configs[0]);
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), &target.namespace);
    claims
        .create(
            &PostParams::default(),
            &claim("probe", &target.probe_class, ""),
        )
        .await
        .expect("probe claim");
    let started = Instant::now();
    let process = controller(kubeconfig, &[]);
    loop {
        let probe = claims.get("probe").await.expect("probe");
        if probe.bound_port().is_some() {
            return (process, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "probe not bound"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Time from a new webhook's start until its `/readyz` answers 200.
async fn ready(kubeconfig: &Path, tls: &[String; 2]) -> (Process, Duration) {
    let port = free_port();
    let started = Instant::now();
    let process = webhook(kubeconfig, tls, 0, port);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        if let Ok(answer) = client.get(&url).send().await
            && answer.status().is_success()
        {
            return (process, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "webhook not ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(claims_count: usize, pods_count: usize, payload_bytes: usize, startup: bool) -> Run {
    let dir = bench_dir("memory");
    let target = Target::new(&dir).await;
    let (tls, _) = webhook_certificate(&dir);

    let client = target.client.clone();
    let classes = Api::<HostPortClass>::all(client.clone());
    let mut bench = HostPortClassSpec::with_pools(&[(1024, 65535)]);
    bench.publish = Some(serde_json::from_value(json!({"edge": true})).expect("publish"));
    for (name, spec) in [
        (&target.class, bench),
        (
            &target.probe_class,
            HostPortClassSpec::with_pools(&[(1000, 1000)]),
        ),
    ] {
        classes
            .create(&PostParams::default(), &HostPortClass::new(name, spec))
            .await
            .expect("class");
    }
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": target.node}})).expect("node");
    let nodes = Api::<Node>::all(client.clone());
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node");
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.10"}],
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    nodes
        .patch_status(&target.node, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node status");
    let configs = &target.configs;
    let mut controller_process = controller(&configs[0], &[]);
    let mut webhook_process = webhook(&configs[1], &tls, 0, free_port());
    let publisher = edge_publisher(&configs[2]);

    let payload = "x".repeat(payload_bytes);
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), &target.namespace);
    let (claim_payload, class) = (payload.clone(), target.class.clone());
    in_parallel(claims_count, WRITERS, move |i| {
        let (claims, payload, class) = (claims.clone(), claim_payload.clone(), class.clone());
        async move {
            claims
                .create(
                    &PostParams::default(),
                    &claim(&format!("claim-{i}"), &class, &payload),
                )
                .await
                .expect("create");
        }
    })
    .await;
    let host_ports: Api<HostPort> = Api::all(client.clone());
    all_bound(&host_ports, &target.class, claims_count).await;
    // The claims' status writes land.
    tokio::time::sleep(Duration::from_secs(5)).await;
    running_pods(&target, pods_count.min(claims_count), &payload).await;
    // Watches and the publisher's passes settle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let measured = (
        figures(&controller_process),
        figures(&webhook_process),
        figures(&publisher),
    );
    println!(
        "memory: {}: {claims_count} claims Bound, {pods_count} Running pods, {payload_bytes} B of annotations each: controller RSS {:.1} MiB (peak {:.1}), webhook RSS {:.1} MiB (peak {:.1}), publisher RSS {:.1} MiB (peak {:.1})",
        if target.server.is_some() {
            "in-process API server"
        } else {
            "the cluster's API server (E2E_KUBECONFIG)"
        },
        mib(measured.0.settled_kib),
        mib(measured.0.peak_kib),
        mib(measured.1.settled_kib),
        mib(measured.1.peak_kib),
        mib(measured.2.settled_kib),
        mib(measured.2.peak_kib),
    );
    let startup = if startup {
        drop(controller_process);
        let (restarted, bind) = first_bind(&target).await;
        controller_process = restarted;
        drop(webhook_process);
        let (restarted, ready) = ready(&configs[1], &tls).await;
        webhook_process = restarted;
        Some((bind, ready))
    } else {
        None
    };
    target.clean_up().await;
    drop((controller_process, webhook_process, publisher));
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        controller: measured.0,
        webhook: measured.1,
        publisher: measured.2,
        startup,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let runtime = bench_runtime();
    let claims = setting("MEMORY_BENCH_CLAIMS", 10_000);
    let pods = setting("MEMORY_BENCH_PODS", 10_000);
    let payload = setting("MEMORY_BENCH_ANNOTATION_BYTES", 200 * 1024);
    let mut results = vec![];
    // `MEMORY_BENCH_ANNOTATION_BYTES=0`: the first run only (no size comparison).
    let runs: &[(usize, bool)] = if payload == 0 {
        &[(0, true)]
    } else {
        &[(0, true), (payload, false)]
    };
    for &(bytes, startup) in runs {
        let run = runtime.block_on(run(claims, pods, bytes, startup));
        if let Some((bind, ready)) = run.startup {
            println!(
                "memory: startup with {claims} HostPorts: controller start → first bind {:.2} s (goal ≤ 5 s), webhook start → ready {:.2} s (goal ≤ 3 s)",
                bind.as_secs_f64(),
                ready.as_secs_f64()
            );
        }
        results.push([
            run.controller.settled_kib,
            run.webhook.settled_kib,
            run.publisher.settled_kib,
        ]);
    }
    if let [without, with] = &results[..] {
        let change = |i: usize| (with[i] as f64 / without[i] as f64 - 1.0) * 100.0;
        println!(
            "memory: {payload} B annotations vs none: controller {:+.1} %, webhook {:+.1} %, publisher {:+.1} % (goal: within ±10 %)",
            change(0),
            change(1),
            change(2)
        );
    }
}
