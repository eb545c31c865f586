//! End to end: N claims created at once against the in-process API server, bound by the
//! real `hostport-controller` binary running as its own process. Prints time until all are
//! Bound, per-claim latency (p50/p99, creation → Bound), API writes per binding, the
//! controller's peak RSS, and the time to release them all when the class and every claim
//! are deleted at once.
//!
//! ```sh
//! cargo build --release -p hostport-controller --bin hostport-controller
//! cargo bench -p hostport-e2e --bench binding            # 1,000 and 10,000 claims
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hostport_api::{HostPortClaim, HostPortClaimSpec, HostPortClass, HostPortClassSpec};
use hostport_e2e::measure::{peak_rss_kib, proc_status_kib, release_binary};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube_testserver::{Options, RequestMatch, TestApiServer, UserInfo, Verb};

fn controller_binary() -> PathBuf {
    release_binary("hostport-controller", "controller")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn run(claims_count: usize) {
    let server = TestApiServer::start_with(Options {
        log_capacity: 200_000,
        ..hostport_e2e::test_server_options()
    })
    .await
    .expect("server");
    let controller_user = UserInfo::service_account("hostport-system", "hostport-controller");
    let kubeconfig =
        std::env::temp_dir().join(format!("hostport-bench-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &kubeconfig,
        serde_saphyr::to_string(&server.kubeconfig(controller_user.clone())).expect("yaml"),
    )
    .expect("kubeconfig");
    let client = server.client();
    let classes: Api<HostPortClass> = Api::all(client.clone());
    let class = HostPortClass::new("bench", HostPortClassSpec::with_pools(&[(1024, 65535)]));
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("class");

    let mut child = Command::new(controller_binary())
        .args([
            "--leader-election=false",
            "--metrics-address=127.0.0.1:0",
            "--concurrency=16",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hostport-controller");
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = peak_rss_kib(pid).unwrap_or(0);

    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    // When each claim was seen Bound, by a watch of our own.
    let seen_bound = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
    let watch = {
        let seen_bound = seen_bound.clone();
        let stream =
            kube::runtime::watcher(claims.clone(), kube::runtime::watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.applied_objects());
            while let Some(Ok(claim)) = stream.next().await {
                if claim.bound_port().is_some() {
                    seen_bound
                        .lock()
                        .expect("lock")
                        .entry(claim.name_any())
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    let created_at = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
    let started = Instant::now();
    let writers = 16;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let claims = claims.clone();
            let created_at = created_at.clone();
            tokio::spawn(async move {
                for i in (w..claims_count).step_by(writers) {
                    let mut claim = HostPortClaim::new(
                        &format!("claim-{i}"),
                        HostPortClaimSpec {
                            host_port_class_name: "bench".into(),
                            host_port_name: None,
                            port: None,
                            port_policy: None,
                            count: None,
                            alignment: None,
                        },
                    );
                    // As the claim defaulting webhook would.
                    claim.metadata.finalizers = Some(vec![hostport_api::FINALIZER.into()]);
                    claims
                        .create(&PostParams::default(), &claim)
                        .await
                        .expect("create");
                    created_at
                        .lock()
                        .expect("lock")
                        .insert(format!("claim-{i}"), Instant::now());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let created = started.elapsed();
    let mut rss_peak = 0;
    let all_bound = loop {
        rss_peak = rss_peak.max(peak_rss_kib(pid).unwrap_or(0));
        let list = claims.list(&ListParams::default()).await.expect("list");
        if list
            .items
            .iter()
            .filter(|c| c.bound_port().is_some())
            .count()
            == claims_count
        {
            break (started.elapsed(), list.items);
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not all claims bound after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (elapsed, _items) = all_bound;
    tokio::time::sleep(Duration::from_millis(200)).await;
    watch.abort();
    let mut latencies: Vec<f64> = {
        let created_at = created_at.lock().expect("lock");
        let seen_bound = seen_bound.lock().expect("lock");
        created_at
            .iter()
            .filter_map(|(name, created)| {
                Some(
                    seen_bound
                        .get(name)?
                        .saturating_duration_since(*created)
                        .as_secs_f64(),
                )
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rss_peak = rss_peak.max(peak_rss_kib(pid).unwrap_or(0));
    let settled_rss = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let user = controller_user.username;
    let writes: u64 = [
        "hostports",
        "hostports/status",
        "hostportclaims",
        "hostportclaims/status",
        "hostportclasses",
        "hostportclasses/status",
    ]
    .iter()
    .flat_map(|r| {
        [Verb::Create, Verb::Update, Verb::Patch, Verb::Delete]
            .map(|v| RequestMatch::new(v, r).by_user(&user))
    })
    .map(|m| server.count(&m))
    .sum();
    let class_writes: u64 = ["hostportclasses", "hostportclasses/status"]
        .iter()
        .flat_map(|r| [Verb::Update, Verb::Patch].map(|v| RequestMatch::new(v, r).by_user(&user)))
        .map(|m| server.count(&m))
        .sum();
    let released = release_all(&classes, &claims).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&kubeconfig);
    println!(
        "binding: {claims_count} claims: the class and every claim deleted at once (a namespace torn down): all released and the class gone after {:.2} s ({:.0} releases/s)",
        released.as_secs_f64(),
        claims_count as f64 / released.as_secs_f64()
    );
    println!(
        "binding: {claims_count} claims: created in {:.2} s, all Bound after {:.2} s ({:.0} bindings/s); per claim (create returned → Bound seen by a watch) p50 {:.0} ms, p99 {:.0} ms; {:.3} API writes per binding ({} class status writes in all); controller peak RSS {:.1} MiB (idle before the claims: {:.1} MiB, settled after: {:.1} MiB)",
        created.as_secs_f64(),
        elapsed.as_secs_f64(),
        claims_count as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5) * 1000.0,
        percentile(&latencies, 0.99) * 1000.0,
        writes as f64 / claims_count as f64,
        class_writes,
        rss_peak as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
        settled_rss as f64 / 1024.0
    );
}

/// Deletes class `bench` and then every claim at once, as a namespace teardown does; the time
/// until the controller has released them all and the class is gone.
async fn release_all(classes: &Api<HostPortClass>, claims: &Api<HostPortClaim>) -> Duration {
    let started = Instant::now();
    classes
        .delete("bench", &DeleteParams::default())
        .await
        .expect("delete class");
    claims
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete claims");
    loop {
        let left = claims
            .list_metadata(&ListParams::default().limit(1))
            .await
            .expect("list");
        let class = classes.get_opt("bench").await.expect("class");
        if left.items.is_empty() && class.is_none() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not all claims released after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let runtime = hostport_e2e::measure::bench_runtime();
    let sizes: Vec<usize> = std::env::var("BINDING_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    for size in sizes {
        runtime.block_on(run(size));
    }
}
