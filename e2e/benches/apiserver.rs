//! The test API server must not be the bottleneck of the end-to-end benchmarks: time 1,000
//! creates (10 concurrent clients) and a watch delivering all of them.
//!
//! `cargo bench -p hostport-e2e --bench apiserver`

use std::time::{Duration, Instant};

use futures::StreamExt;
use hostport_api::{HostPortClaim, HostPortClaimSpec};
use kube::Api;
use kube::api::{PostParams, WatchEvent, WatchParams};

const OBJECTS: usize = 1_000;
const CLIENTS: usize = 10;

fn claim(i: usize) -> HostPortClaim {
    HostPortClaim::new(
        &format!("claim-{i}"),
        HostPortClaimSpec {
            host_port_class_name: "sample".into(),
            host_port_name: None,
            port: None,
            port_policy: None,
            count: None,
            alignment: None,
        },
    )
}

async fn run() -> (Duration, Duration) {
    let server = hostport_e2e::start_test_server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(server.client(), "default");
    let mut stream = claims
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    let watched = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(Ok(event)) = stream.next().await {
            if matches!(event, WatchEvent::Added(_)) {
                seen += 1;
                if seen == OBJECTS {
                    return Instant::now();
                }
            }
        }
        panic!("watch ended after {seen} events");
    });
    let start = Instant::now();
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let claims = claims.clone();
            tokio::spawn(async move {
                for i in (w..OBJECTS).step_by(CLIENTS) {
                    claims
                        .create(&PostParams::default(), &claim(i))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let created = start.elapsed();
    let delivered = watched.await.expect("watcher") - start;
    (created, delivered)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runs = vec![];
    for _ in 0..5 {
        runs.push(runtime.block_on(run()));
    }
    runs.sort();
    let (created, delivered) = runs[runs.len() / 2];
    println!(
        "apiserver: {OBJECTS} creates by {CLIENTS} clients: {:.0} ms, all {OBJECTS} watch events delivered after {:.0} ms (median of 5; {:.0} creates/s)",
        created.as_secs_f64() * 1000.0,
        delivered.as_secs_f64() * 1000.0,
        OBJECTS as f64 / created.as_secs_f64()
    );
}
