//! Allocation scenarios: the real controller against the in-process API server (or a real
//! cluster with `E2E_KUBECONFIG`), asserting on what the API server stores.

use std::collections::BTreeSet;
use std::time::Duration;

use hostport_api::conditions::{self, reasons, types};
use hostport_api::{ClaimPhase, HostPortPhase};
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn reason_of(claim: &hostport_api::HostPortClaim) -> Option<String> {
    claim.bound_condition().map(|c| c.reason.clone())
}

async fn pending_with(env: &Env, name: &str, reason: &str) -> hostport_api::HostPortClaim {
    let claims = env.claims();
    env.wait_for(
        &format!("claim {name} Pending with {reason}"),
        Duration::from_secs(20),
        || {
            let claims = claims.clone();
            async move {
                claims.get(name).await.ok().filter(|c| {
                    c.phase() == ClaimPhase::Pending && reason_of(c).as_deref() == Some(reason)
                })
            }
        },
    )
    .await
}

#[tokio::test]
async fn go_readme_flow_binds_the_lowest_port() {
    let env = Env::new("readme").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(9000, 9500)]).await;
    let created = env.create_claim("echo-web", &class, None).await;

    let claim = env.bound("echo-web").await;
    assert_eq!(claim.bound_port(), Some(9000));
    assert_eq!(claim.spec.host_port_name.as_deref(), Some("port-9000"));
    assert!(
        claim.has_finalizer(),
        "the controller adds the finalizer when no webhook did"
    );
    let condition = conditions::find(
        &claim.status.as_ref().expect("status").conditions,
        types::BOUND,
    )
    .expect("Bound condition");
    assert!(condition.is_true());
    assert_eq!(condition.reason, reasons::BOUND);
    assert_eq!(condition.message, "bound to HostPort port-9000 (port 9000)");

    let host_port = env.host_ports().get("port-9000").await.expect("HostPort");
    assert_eq!(host_port.port(), Some(9000));
    assert_eq!(host_port.spec.host_port_class_name, class);
    assert_eq!(
        host_port.claim_uid(),
        created.uid().as_deref(),
        "linked by claim UID"
    );
    let status = host_port.status.expect("HostPort status");
    assert_eq!(status.phase, Some(HostPortPhase::Allocated));
    assert_eq!(status.port, Some(9000));

    // The class shows what is used (status writes are coalesced, so wait for it).
    let classes = env.classes();
    let class_status = env
        .wait_for("class status", Duration::from_secs(10), || {
            let classes = classes.clone();
            let class = class.clone();
            async move {
                classes
                    .get(&class)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .filter(|s| s.allocated == Some(1))
            }
        })
        .await;
    assert_eq!(
        (class_status.capacity, class_status.available),
        (Some(501), Some(500))
    );
    assert!(env.has_event("Bound").await);
    env.cleanup().await;
}

fn pod_using(name: &str, claim: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"claim.hostport.rmb938.com/web": claim}},
        // On a node the echo program, as PID 1, has no SIGTERM handler: a short grace period.
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "echo", "image": hostport_e2e::pod_image(), "ports": [{"name": "web", "containerPort": 8080}]}]}
    }))
    .expect("pod")
}

#[tokio::test]
async fn deletion_waits_for_pods_then_frees_the_port() {
    let env = Env::new("deletion").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(11100, 11200)]).await;
    env.create_claim("echo-web", &class, None).await;
    assert_eq!(env.bound("echo-web").await.bound_port(), Some(11100));

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    pods.create(&PostParams::default(), &pod_using("echo", "echo-web"))
        .await
        .expect("pod");
    env.claims()
        .delete("echo-web", &DeleteParams::default())
        .await
        .expect("delete claim");
    let held = env
        .wait_for(
            "claim Deleting while a pod uses it",
            Duration::from_secs(20),
            || {
                let claims = env.claims();
                async move {
                    claims
                        .get("echo-web")
                        .await
                        .ok()
                        // AdmissionsInFlight first (admissions that read the port), then
                        // the pod holds it.
                        .filter(|c| {
                            c.phase() == ClaimPhase::Deleting
                                && reason_of(c).as_deref() == Some(reasons::IN_USE_BY_PODS)
                        })
                }
            },
        )
        .await;
    assert_eq!(reason_of(&held).as_deref(), Some(reasons::IN_USE_BY_PODS));
    assert!(
        env.host_ports().get("port-11100").await.is_ok(),
        "the port stays held"
    );

    pods.delete("echo", &DeleteParams::default())
        .await
        .expect("delete pod");
    env.wait_for("claim and HostPort gone", Duration::from_secs(20), || {
        let (claims, host_ports) = (env.claims(), env.host_ports());
        async move {
            let gone = claims.get_opt("echo-web").await.ok()?.is_none()
                && host_ports.get_opt("port-11100").await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await;
    env.create_claim("next", &class, None).await;
    assert_eq!(
        env.bound("next").await.bound_port(),
        Some(11100),
        "the freed port is reused"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn finished_pods_do_not_hold_a_claim() {
    let env = Env::new("finished").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(11300, 11300)]).await;
    env.create_claim("job", &class, None).await;
    env.bound("job").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    // A program that finishes at once (`EXIT=1`), never restarted.
    let mut pod = pod_using("done", "job");
    if let Some(spec) = pod.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
        spec.containers[0].env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "EXIT".into(),
            value: Some("1".into()),
            value_from: None,
        }]);
    }
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    if hostport_e2e::pods_run() {
        // The kubelet says so when the program has exited.
        env.wait_for("pod done Succeeded", Duration::from_secs(90), || {
            let pods = pods.clone();
            async move {
                let pod = pods.get_opt("done").await.ok()??;
                (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
            }
        })
        .await;
    } else {
        pods.patch_status(
            "done",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .expect("pod status");
    }
    env.claims()
        .delete("job", &DeleteParams::default())
        .await
        .expect("delete");
    env.wait_for("claim gone", Duration::from_secs(20), || {
        let claims = env.claims();
        async move { claims.get_opt("job").await.ok()?.is_none().then_some(()) }
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn exhaustion_then_recovery() {
    let env = Env::new("exhaustion").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("tiny", &[(11400, 11401)]).await;
    env.create_claim("a", &class, None).await;
    env.create_claim("b", &class, None).await;
    let a_port = env.bound("a").await.bound_port();
    env.bound("b").await;
    env.create_claim("c", &class, None).await;
    let pending = pending_with(&env, "c", reasons::POOL_EXHAUSTED).await;
    let message = conditions::find(&pending.status.expect("status").conditions, types::BOUND)
        .expect("condition")
        .message
        .clone();
    assert!(
        message.contains("all 2 ports of HostPortClass"),
        "{message}"
    );
    assert!(env.has_event(reasons::POOL_EXHAUSTED).await);

    env.claims()
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    let c = env.bound("c").await;
    assert_eq!(c.bound_port(), a_port, "c gets a's port once it is free");
    env.cleanup().await;
}

#[tokio::test]
async fn unknown_class_then_created() {
    let env = Env::new("noclass").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.class_name("later");
    env.create_claim("early", &class, None).await;
    pending_with(&env, "early", reasons::CLASS_NOT_FOUND).await;
    assert!(env.has_event(reasons::CLASS_NOT_FOUND).await);
    env.create_class("later", &[(11500, 11510)]).await;
    assert_eq!(env.bound("early").await.bound_port(), Some(11500));
    env.cleanup().await;
}

#[tokio::test]
async fn static_ports() {
    let env = Env::new("static").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(11600, 11610)]).await;
    env.create_claim("fixed", &class, Some(11605)).await;
    assert_eq!(env.bound("fixed").await.bound_port(), Some(11605));
    env.create_claim("dynamic", &class, None).await;
    assert_eq!(env.bound("dynamic").await.bound_port(), Some(11600));
    env.create_claim("taken", &class, Some(11605)).await;
    pending_with(&env, "taken", reasons::PORT_UNAVAILABLE).await;
    env.create_claim("outside", &class, Some(20000)).await;
    pending_with(&env, "outside", reasons::PORT_OUTSIDE_POOLS).await;
    env.claims()
        .delete("fixed", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        env.bound("taken").await.bound_port(),
        Some(11605),
        "bound once the port is free"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn many_claims_across_overlapping_classes_get_distinct_ports() {
    let env = Env::new("many").await;
    let _controller = env.start_controller(RunOptions::default());
    let classes = [
        // Overlapping on purpose, with room for ~167 claims each whichever class takes the
        // shared ports first.
        env.create_class("a", &[(10000, 10399)]).await,
        env.create_class("b", &[(10200, 10499)]).await,
        env.create_class("c", &[(10100, 10150), (10400, 10699)])
            .await,
    ];
    let claims = env.claims();
    let creates = (0..500).map(|i| {
        let claims = claims.clone();
        let class = classes[i % 3].clone();
        async move {
            let claim = hostport_api::HostPortClaim::new(
                &format!("c{i}"),
                hostport_api::HostPortClaimSpec::of_class(&class),
            );
            claims
                .create(&PostParams::default(), &claim)
                .await
                .expect("create");
        }
    });
    futures::future::join_all(creates).await;
    env.wait_for("500 claims Bound", Duration::from_secs(120), || {
        let claims = claims.clone();
        async move {
            let list = claims.list(&ListParams::default()).await.ok()?;
            (list.items.len() == 500 && list.items.iter().all(|c| c.bound_port().is_some()))
                .then_some(())
        }
    })
    .await;
    // Controllers racing with stale caches (every scenario's, on a real cluster) may create
    // a second HostPort for a claim; the claim's controller deletes it once bound.
    let host_ports = env
        .wait_for(
            "one HostPort per claim, none leaked",
            Duration::from_secs(30),
            || async {
                let host_ports = env.namespace_host_ports().await;
                (host_ports.len() == 500).then_some(host_ports)
            },
        )
        .await;
    let ports: BTreeSet<u16> = host_ports.iter().filter_map(|hp| hp.port()).collect();
    assert_eq!(ports.len(), 500, "no two HostPorts share a port");
    for claim in claims
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let class = env
            .classes()
            .get(&claim.spec.host_port_class_name)
            .await
            .expect("class");
        let port = claim.bound_port().expect("bound");
        assert!(
            class.ranges().iter().any(|r| r.contains(port)),
            "{} got {port} outside its class",
            claim.name_any()
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let env = Env::new("metrics").await;
    let options = RunOptions::default();
    let (metrics, ready) = (options.metrics.clone(), options.ready.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = hostport_controller::health_router(metrics, ready.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        503,
        "not ready before the caches sync"
    );

    let _controller = env.start_controller(options);
    let class = env.create_class("sample", &[(11900, 11909)]).await;
    env.create_claim("a", &class, None).await;
    env.bound("a").await;
    // Another scenario's controller may have bound `a` before this one synced its caches.
    env.wait_for("/readyz 200", Duration::from_secs(30), || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let status = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .ok()?
                .status();
            (status == 200).then_some(())
        }
    })
    .await;
    let text = env
        .wait_for("class gauges", Duration::from_secs(10), || {
            let (http, base) = (http.clone(), base.clone());
            let class = class.clone();
            async move {
                let text = http
                    .get(format!("{base}/metrics"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                text.contains(&format!(
                    "hostport_class_ports_allocated{{class=\"{class}\"}} 1"
                ))
                .then_some(text)
            }
        })
        .await;
    assert!(
        text.contains(&format!(
            "hostport_class_ports_capacity{{class=\"{class}\"}} 10"
        )),
        "{text}"
    );
    assert!(
        text.contains("hostport_allocation_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE hostport_reconcile_duration_seconds histogram"),
        "{text}"
    );
    env.cleanup().await;
}

/// The binary itself: flags, KUBECONFIG, leader election, graceful SIGTERM that gives the
/// Lease up.
#[tokio::test]
async fn controller_binary_binds_and_stops_gracefully() {
    let env = Env::new("process").await;
    let class = env.create_class("sample", &[(11990, 11999)]).await;
    let lease_namespace = hostport_e2e::harness::SYSTEM_NAMESPACE;
    let process = env.start_controller_process(
        std::path::Path::new(env!("CARGO_BIN_EXE_hostport-controller-under-test")),
        hostport_e2e::harness::controller_user(),
        &[
            "--metrics-address=127.0.0.1:0",
            "--leader-election=true",
            &format!("--leader-election-namespace={lease_namespace}"),
            &format!("--leader-election-id={}", env.prefix),
            "--identity=process-test",
        ],
    );
    env.create_claim("a", &class, None).await;
    assert_eq!(env.bound("a").await.bound_port(), Some(11990));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), lease_namespace);
    // On a real cluster another scenario's controller may bind `a` before the process holds
    // its Lease: wait for it.
    env.wait_for("the process's Lease", Duration::from_secs(30), || {
        let leases = leases.clone();
        let name = env.prefix.clone();
        async move {
            let held = leases.get_opt(&name).await.ok()??;
            (held.spec?.holder_identity.as_deref() == Some("process-test")).then_some(())
        }
    })
    .await;

    let status = tokio::task::spawn_blocking(move || process.terminate(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the controller stops within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let released = leases.get(&env.prefix).await.expect("lease");
    assert_eq!(
        released.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease is given up on shutdown"
    );
    env.cleanup().await;
}
