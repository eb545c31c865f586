//! The install a user makes, on a real node, and what they then do to it: `kubectl apply -k
//! config/default` with the project's images, claims written without a refusal while the
//! webhook restarts, the standby controller taking over when the active one's pod is
//! deleted, and `kubectl delete -k config/default` leaving nothing behind.
//!
//! Opt-in: `E2E_NODE=1` with `E2E_KUBECONFIG` naming a cluster whose node has the images
//! (`hack/images.sh`), and `kubectl` on the PATH (or `KUBECTL`). It installs and removes the
//! operator itself, so run it alone: other scenarios start controllers of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hostport_api::{HostPortClaim, HostPortClaimSpec};
use hostport_e2e::harness::Env;
use hostport_e2e::kubectl;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const SYSTEM: &str = "hostport-system";

fn claim(name: &str, class: &str) -> HostPortClaim {
    HostPortClaim::new(
        name,
        HostPortClaimSpec {
            host_port_class_name: class.into(),
            host_port_name: None,
            port: None,
            port_policy: None,
            count: None,
            alignment: None,
        },
    )
}

/// Writers creating claims until `done`; the count of creates and the refusals.
async fn write_claims_until(
    claims: Api<HostPortClaim>,
    class: String,
    writers: usize,
    done: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let created = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (claims, class, done, created) =
                (claims.clone(), class.clone(), done.clone(), created.clone());
            tokio::spawn(async move {
                let mut refused = vec![];
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    i += 1;
                    let name = format!("w{writer}-{i}");
                    match claims
                        .create(&PostParams::default(), &claim(&name, &class))
                        .await
                    {
                        Ok(_) => {
                            created.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => refused.push(format!("{name}: {error}")),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                refused
            })
        })
        .collect();
    let mut refused = vec![];
    for task in tasks {
        refused.extend(task.await.expect("writer"));
    }
    (created.load(Ordering::Relaxed), refused)
}

#[tokio::test]
async fn install_restart_take_over_and_uninstall() {
    if std::env::var_os("E2E_NODE").is_none() || std::env::var_os("E2E_KUBECONFIG").is_none() {
        eprintln!("skipped: needs E2E_NODE=1 and E2E_KUBECONFIG (a node with the images)");
        return;
    }
    let env = Env::new("installed").await;
    kubectl(&["apply", "-k", "config/default"]).unwrap_or_else(|e| panic!("{e}"));
    kubectl(&[
        "-n",
        SYSTEM,
        "rollout",
        "status",
        "deploy/hostport-controller",
        "deploy/hostport-webhook",
        "--timeout=180s",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    // The webhook answers through its Service once kube-proxy has programmed it.
    let class = env
        .wait_for(
            "the webhook to answer through its Service",
            Duration::from_secs(30),
            || async { env.try_create_class("pool", &[(38200, 38999)]).await.ok() },
        )
        .await;
    let claims = env.claims();

    // A rolling restart of the webhook while claims are written: none refused.
    let done = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn(write_claims_until(
        claims.clone(),
        class.clone(),
        4,
        done.clone(),
    ));
    kubectl(&[
        "-n",
        SYSTEM,
        "rollout",
        "restart",
        "deploy/hostport-webhook",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    kubectl(&[
        "-n",
        SYSTEM,
        "rollout",
        "status",
        "deploy/hostport-webhook",
        "--timeout=180s",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    // The last old replica drains for its shutdown delay after the rollout reports done.
    tokio::time::sleep(Duration::from_secs(7)).await;
    done.store(true, Ordering::Relaxed);
    let (created, refused) = writers.await.expect("writers");
    eprintln!(
        "{created} claims created during the webhook's rollout, {} refused",
        refused.len()
    );
    assert!(
        created > 20,
        "the writers wrote through the rollout ({created})"
    );
    assert!(
        refused.is_empty(),
        "refused during the rollout: {refused:#?}"
    );

    // The active controller's pod deleted: a claim binds within the lease duration.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), SYSTEM);
    let holder = leases
        .get("hostport-controller")
        .await
        .expect("the controller's Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a holder");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), SYSTEM);
    let deleted = Instant::now();
    pods.delete(&holder, &DeleteParams::default())
        .await
        .expect("delete the active controller's pod");
    claims
        .create(&PostParams::default(), &claim("after-takeover", &class))
        .await
        .expect("created");
    env.bound("after-takeover").await;
    let took = deleted.elapsed();
    eprintln!("a claim bound {took:?} after the active controller's pod was deleted");
    assert!(
        took < Duration::from_secs(20),
        "took over within the lease: {took:?}"
    );
    let all = claims.list(&ListParams::default()).await.expect("claims");
    let mut ports: Vec<u16> = all.items.iter().filter_map(|c| c.bound_port()).collect();
    ports.sort_unstable();
    let bound = ports.len();
    ports.dedup();
    assert_eq!(ports.len(), bound, "no port bound twice");

    // Uninstall: claims first (their finalizer needs the controller), then the rest.
    claims
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete the claims");
    env.wait_for("the claims gone", Duration::from_secs(120), || {
        let claims = claims.clone();
        async move {
            let left = claims.list(&ListParams::default()).await.ok()?;
            left.items.is_empty().then_some(())
        }
    })
    .await;
    env.cleanup().await;
    kubectl(&["delete", "-k", "config/default", "--wait=true"]).unwrap_or_else(|e| panic!("{e}"));
    for (kind, name) in [
        ("mutatingwebhookconfiguration", "hostport-allocator"),
        ("validatingwebhookconfiguration", "hostport-allocator"),
        ("namespace", SYSTEM),
        (
            "customresourcedefinition",
            "hostportclaims.hostport.rmb938.com",
        ),
        ("clusterrole", "hostport-controller"),
        ("clusterrole", "hostport-webhook"),
    ] {
        let left = kubectl(&["get", kind, name, "--ignore-not-found", "-o", "name"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(left.trim().is_empty(), "{kind}/{name} left behind: {left}");
    }
}
