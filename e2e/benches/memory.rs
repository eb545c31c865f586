//! Memory against object size: N claims carrying 0 B and then 200 KB of annotations each,
//! bound by the real `hostport-controller` while the real `hostport-webhook` caches them,
//! both release binaries running as processes against the in-process API server. Prints
//! each binary's resident memory once everything is bound and settled, and its peak.
//!
//! The goal: both binaries' memory is the same within 10% whatever the annotations weigh
//! (their caches keep only what decisions read), so a tenant cannot grow them by writing
//! big objects.
//!
//! ```sh
//! cargo build --release -p hostport-controller --bin hostport-controller -p hostport-webhook --bin hostport-webhook
//! cargo bench -p hostport-e2e --bench memory      # MEMORY_BENCH_CLAIMS=10000 by default
//! ```

use std::time::{Duration, Instant};

use hostport_api::{HostPort, HostPortClaim, HostPortClaimSpec, HostPortClass, HostPortClassSpec};
use hostport_e2e::measure::{Process, release_binary, webhook_certificate, write_kubeconfig};
use kube::api::{Api, ListParams, PostParams};
use kube_testserver::{Options, TestApiServer, UserInfo};

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

async fn run(claims_count: usize, annotation_bytes: usize) -> (Figures, Figures) {
    let server = TestApiServer::start_with(Options {
        log_capacity: 10_000,
        ..hostport_e2e::test_server_options()
    })
    .await
    .expect("server");
    let dir = std::env::temp_dir().join(format!("hostport-memory-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let controller_config = dir.join("controller.kubeconfig");
    let webhook_config = dir.join("webhook.kubeconfig");
    write_kubeconfig(
        &server,
        UserInfo::service_account("hostport-system", "hostport-controller"),
        &controller_config,
    );
    write_kubeconfig(
        &server,
        UserInfo::service_account("hostport-system", "hostport-webhook"),
        &webhook_config,
    );
    let ([tls_cert, tls_key], _) = webhook_certificate(&dir);

    let client = server.client();
    Api::<HostPortClass>::all(client.clone())
        .create(
            &PostParams::default(),
            &HostPortClass::new("bench", HostPortClassSpec::with_pools(&[(1024, 65535)])),
        )
        .await
        .expect("class");
    let controller = Process::spawn(
        &release_binary("hostport-controller", "controller"),
        &[
            "--leader-election=false".into(),
            "--metrics-address=127.0.0.1:0".into(),
        ],
        &controller_config,
    );
    let webhook = Process::spawn(
        &release_binary("hostport-webhook", "webhook"),
        &[
            "--listen=127.0.0.1:0".into(),
            "--metrics-address=127.0.0.1:0".into(),
            tls_cert,
            tls_key,
        ],
        &webhook_config,
    );

    let payload = "x".repeat(annotation_bytes);
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    let writers = 8;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let claims = claims.clone();
            let payload = payload.clone();
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
                    claim.metadata.finalizers = Some(vec![hostport_api::FINALIZER.into()]);
                    if !payload.is_empty() {
                        claim.metadata.annotations =
                            Some([("bench.example/payload".to_owned(), payload.clone())].into());
                    }
                    claims
                        .create(&PostParams::default(), &claim)
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    // Bound: every claim has its HostPort with a status (HostPorts are small to list).
    let host_ports: Api<HostPort> = Api::all(client.clone());
    let started = Instant::now();
    loop {
        let allocated = host_ports
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|hp| hp.status.as_ref().and_then(|s| s.port).is_some())
            .count();
        if allocated == claims_count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{allocated} of {claims_count} allocated after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Claim status writes and the webhook's watch settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let measured = (figures(&controller), figures(&webhook));
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let claims: usize = std::env::var("MEMORY_BENCH_CLAIMS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(10_000);
    let mut results = vec![];
    for bytes in [0, 200 * 1024] {
        let (controller, webhook) = runtime.block_on(run(claims, bytes));
        println!(
            "memory: {claims} claims with {bytes} B of annotations each: controller RSS {:.1} MiB (peak {:.1}), webhook RSS {:.1} MiB (peak {:.1})",
            mib(controller.settled_kib),
            mib(controller.peak_kib),
            mib(webhook.settled_kib),
            mib(webhook.peak_kib)
        );
        results.push((controller.settled_kib, webhook.settled_kib));
    }
    if let [(c0, w0), (c1, w1)] = results[..] {
        println!(
            "memory: 200 KB annotations vs none: controller {:+.1} %, webhook {:+.1} % (goal: within ±10 %)",
            (c1 as f64 / c0 as f64 - 1.0) * 100.0,
            (w1 as f64 / w0 as f64 - 1.0) * 100.0
        );
    }
}
