//! No host port in use outside the allocator's books: a pod never keeps a port whose claim
//! was released while the pod was in admission, and the allocator never hands out a port
//! that a live pod already declares (a `hostPort` set by hand where the webhook does not
//! act, a `hostNetwork` pod). Each scenario ends with the books invariant checked against
//! what the API server stores (`hostport_e2e::books`).

use std::time::Duration;

use hostport_api::conditions::{self, reasons, types};
use hostport_api::{HostPortClaim, HostPortClaimSpec, HostPortClass};
use hostport_controller::{RunOptions, Settings};
use hostport_e2e::books;
use hostport_e2e::harness::{Env, webhook_user};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube_testserver::RequestMatch;
use serde_json::json;

fn claim(name: &str, class: &str, port: Option<i32>) -> HostPortClaim {
    HostPortClaim::new(
        name,
        HostPortClaimSpec {
            host_port_class_name: class.into(),
            host_port_name: None,
            port,
            port_policy: None,
            count: None,
            alignment: None,
        },
    )
}

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).expect("pod")
}

/// A pod naming `claims` as `(portName, claimName)`, one container port each.
fn pod_naming(name: &str, claims: &[(&str, &str)]) -> Pod {
    let annotations: serde_json::Map<String, serde_json::Value> = claims
        .iter()
        .map(|(port, claim)| (format!("claim.hostport.rmb938.com/{port}"), json!(claim)))
        .collect();
    let ports: Vec<serde_json::Value> = claims
        .iter()
        .enumerate()
        .map(|(i, (port, _))| json!({"name": port, "containerPort": 8000 + i}))
        .collect();
    pod(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": hostport_e2e::pod_image(), "ports": ports}]}
    }))
}

async fn tenant_or_admin(env: &Env) -> Client {
    env.tenant().await.unwrap_or_else(|| env.client.clone())
}

/// Waits until claim `name` is gone (its port released).
async fn gone(env: &Env, name: &str) {
    let claims = env.claims();
    env.wait_for(
        &format!("claim {name} to be released"),
        Duration::from_secs(30),
        || {
            let claims = claims.clone();
            async move { matches!(claims.get_opt(name).await, Ok(None)).then_some(()) }
        },
    )
    .await;
}

/// Case 1 of the issue, driven with a held-open admission: the pod names a Bound claim and a
/// claim that does not exist yet, so its admission waits; meanwhile the tenant deletes the
/// Bound claim and the controller releases its port. When the missing claim appears, the
/// admission must not use the port it read before the wait.
#[tokio::test]
async fn a_pod_does_not_keep_a_port_released_while_it_was_in_admission() {
    let env = Env::new("books-admission").await;
    let tenant = tenant_or_admin(&env).await;
    let webhook = env
        .start_webhook_with(hostport_webhook::RunOptions {
            bind_wait: Duration::from_secs(4),
            ..Default::default()
        })
        .await;
    // The webhook's half on its own: the controller releases at once (no admission grace),
    // so the release fits well inside the held admission on a busy machine too.
    let _controller = env.start_controller(RunOptions {
        settings: Settings {
            admission_grace: Duration::ZERO,
            ..Settings::default()
        },
        ..RunOptions::default()
    });
    let class = env.create_class("pool", &[(37000, 37002)]).await;
    let claims: Api<HostPortClaim> = Api::namespaced(tenant.clone(), &env.namespace);
    claims
        .create(&PostParams::default(), &claim("a-web", &class, None))
        .await
        .expect("claim a-web");
    assert_eq!(env.bound("a-web").await.bound_port(), Some(37000));

    // The admission is held open: it waits for `late`, which does not exist yet.
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &env.namespace);
    let held = pod_naming("held", &[("web", "a-web"), ("game", "late")]);
    let admission = tokio::spawn({
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &held).await }
    });
    let metrics = webhook.metrics.clone();
    env.wait_for(
        "the admission to wait for claim late",
        Duration::from_secs(10),
        || {
            let waiting = metrics.claim_waits.get();
            async move { (waiting > 0).then_some(()) }
        },
    )
    .await;

    // Meanwhile: a-web is deleted and its port released.
    claims
        .delete("a-web", &DeleteParams::default())
        .await
        .expect("delete a-web");
    gone(&env, "a-web").await;
    // The missing claim appears (on another port), and the admission wakes.
    claims
        .create(&PostParams::default(), &claim("late", &class, Some(37001)))
        .await
        .expect("claim late");
    let answer = admission.await.expect("admission task");
    match answer {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains("\"a-web\"")
                    && status.message.contains("was deleted while it waited"),
                "{}",
                status.message
            );
        }
        Ok(pod) => panic!(
            "the pod was admitted with ports {:?} from a claim released during its admission",
            pod.spec.map(|s| s.containers[0].ports.clone())
        ),
        Err(other) => panic!("{other}"),
    }
    // 37000 is free and goes to the next claim; no pod holds it.
    claims
        .create(&PostParams::default(), &claim("next", &class, None))
        .await
        .expect("claim next");
    assert_eq!(env.bound("next").await.bound_port(), Some(37000));
    books::assert_hold(&env.client, &[&env.namespace]).await;
    drop(webhook);
    env.cleanup().await;
}

/// The controller's half of case 1: a deleted claim keeps its port while an admission that
/// read it may still store its pod. The webhook's caches are frozen (an admission that read
/// the claim before the deletion), so the pod is admitted with the port after the deletion;
/// the claim must still hold the port when the pod is stored. In-process only (it freezes
/// the webhook's watches).
#[tokio::test]
async fn a_deleted_claim_keeps_its_port_while_admissions_may_be_in_flight() {
    let env = Env::new("books-grace").await;
    let Some(server) = env.server() else {
        eprintln!("needs the in-process server to freeze the webhook's watches; skipped");
        return env.cleanup().await;
    };
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions {
        settings: Settings {
            admission_grace: Duration::from_secs(3),
            ..Settings::default()
        },
        ..RunOptions::default()
    });
    let class = env.create_class("pool", &[(37010, 37011)]).await;
    env.create_claim("a-web", &class, None).await;
    assert_eq!(env.bound("a-web").await.bound_port(), Some(37010));

    // The webhook still sees a-web Bound (its watches are frozen) after it is deleted.
    let webhook = webhook_user();
    for resource in ["hostportclaims", "hostports"] {
        server.freeze_watches(RequestMatch::resource(resource).by_user(&webhook.username));
    }
    env.claims()
        .delete("a-web", &DeleteParams::default())
        .await
        .expect("delete a-web");
    let deleting = env
        .claim_with_reason("a-web", reasons::ADMISSIONS_IN_FLIGHT)
        .await;
    assert_eq!(
        deleting.status.as_ref().and_then(|s| s.port),
        Some(37010),
        "the port is kept and shown"
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let stored = pods
        .create(
            &PostParams::default(),
            &pod_naming("late-pod", &[("web", "a-web")]),
        )
        .await
        .expect("admitted from the stale cache");
    let host_port = stored
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].ports.as_ref())
        .and_then(|p| p[0].host_port);
    assert_eq!(host_port, Some(37010));
    server.thaw_watches();
    // The final check finds the stored pod: the claim keeps the port for it.
    env.claim_with_reason("a-web", reasons::IN_USE_BY_PODS)
        .await;
    env.create_claim("next", &class, None).await;
    assert_eq!(env.bound("next").await.bound_port(), Some(37011));
    books::assert_hold(&env.client, &[&env.namespace]).await;
    // The pod goes: the port is released.
    pods.delete("late-pod", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    gone(&env, "a-web").await;
    env.cleanup().await;
}

/// Case 2 of the issue: ports that pods declare where the webhook does not act (a namespace
/// without the label, a `hostNetwork` pod) are never handed out; the class shows them, a
/// claim asking for one says why it waits, and the port binds once the pod is gone.
#[tokio::test]
async fn ports_pods_declare_outside_the_books_are_not_handed_out() {
    let env = Env::new("books-outside").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let plain = env.plain_namespace("plain").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &plain);
    pods.create(
        &PostParams::default(),
        &pod(json!({
            "metadata": {"name": "squatter"},
            "spec": {"containers": [{"name": "app", "image": hostport_e2e::pod_image(),
                "ports": [{"containerPort": 8080, "hostPort": 37100}]}]}
        })),
    )
    .await
    .expect("squatter pod");
    pods.create(
        &PostParams::default(),
        &pod(json!({
            "metadata": {"name": "agent"},
            "spec": {"hostNetwork": true, "containers": [{"name": "agent", "image": hostport_e2e::pod_image(),
                "ports": [{"containerPort": 37102}]}]}
        })),
    )
    .await
    .expect("hostNetwork pod");
    let class = env.create_class("pool", &[(37100, 37103)]).await;

    env.create_claim("any", &class, None).await;
    assert_eq!(
        env.bound("any").await.bound_port(),
        Some(37101),
        "37100 is declared by the squatter"
    );
    env.create_claim("next", &class, None).await;
    assert_eq!(
        env.bound("next").await.bound_port(),
        Some(37103),
        "37102 is the hostNetwork pod's"
    );
    env.create_claim("wants-37100", &class, Some(37100)).await;
    let waiting = env
        .claim_with_reason("wants-37100", reasons::PORT_IN_USE)
        .await;
    let message = waiting
        .bound_condition()
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("port 37100") && message.contains(&format!("pod {plain}/squatter")),
        "{message}"
    );
    env.create_claim("full", &class, None).await;
    let full = env.claim_with_reason("full", reasons::POOL_EXHAUSTED).await;
    let message = full
        .bound_condition()
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("2 of them declared by pods outside the allocator"),
        "{message}"
    );

    // The class shows them.
    let classes: Api<HostPortClass> = env.classes();
    let status = env
        .wait_for(
            "the class to list the ports in use outside",
            Duration::from_secs(30),
            || {
                let classes = classes.clone();
                let class = class.clone();
                async move {
                    let status = classes.get(&class).await.ok()?.status?;
                    let listed = status.ports_in_use_outside.clone().unwrap_or_default();
                    (listed.len() == 2).then_some(status)
                }
            },
        )
        .await;
    let listed: Vec<(i32, String)> = status
        .ports_in_use_outside
        .iter()
        .flatten()
        .map(|p| (p.port, p.pod.clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (37100, format!("{plain}/squatter")),
            (37102, format!("{plain}/agent"))
        ]
    );
    let condition =
        conditions::find(&status.conditions, types::PORTS_IN_USE_OUTSIDE).expect("condition");
    assert_eq!(condition.status, "True");
    assert!(
        condition.message.starts_with("2 port(s)"),
        "{}",
        condition.message
    );
    books::assert_hold(&env.client, &[&env.namespace, &plain]).await;

    // The squatter goes: the claim that waited for 37100 gets it (the claim waiting for any
    // port goes first, so it cannot take 37100 instead).
    env.claims()
        .delete("full", &DeleteParams::default())
        .await
        .expect("delete full");
    gone(&env, "full").await;
    pods.delete("squatter", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete squatter");
    assert_eq!(env.bound("wants-37100").await.bound_port(), Some(37100));
    books::assert_hold(&env.client, &[&env.namespace, &plain]).await;
    env.cleanup().await;
}

/// A class whose pools overlap the NodePort Service range says so.
#[tokio::test]
async fn a_class_in_the_node_port_range_gets_a_warning_condition() {
    let env = Env::new("books-nodeport").await;
    let _controller = env.start_controller(RunOptions::default());
    let inside = env.create_class("inside", &[(32700, 32701)]).await;
    let outside = env.create_class("outside", &[(37200, 37201)]).await;
    let classes: Api<HostPortClass> = env.classes();
    for (class, expected) in [(inside, "True"), (outside, "False")] {
        let condition = env
            .wait_for(
                &format!("class {class} to have OverlapsNodePortRange"),
                Duration::from_secs(30),
                || {
                    let classes = classes.clone();
                    let class = class.clone();
                    async move {
                        let status = classes.get(&class).await.ok()?.status?;
                        conditions::find(&status.conditions, types::OVERLAPS_NODE_PORT_RANGE)
                            .cloned()
                    }
                },
            )
            .await;
        assert_eq!(condition.status, expected, "{class}: {}", condition.message);
        if expected == "True" {
            assert!(
                condition.message.contains("30000-32767")
                    && condition.message.contains("--service-node-port-range"),
                "{}",
                condition.message
            );
        }
    }
    env.cleanup().await;
}

/// `pods/status` is covered: a status update can change a pod's annotations, and the claim
/// and port annotations are fixed there too (otherwise a tenant with `pods/status` could
/// move a running pod off its claim, so the claim's port is released under it).
#[tokio::test]
async fn a_pods_claim_cannot_be_changed_through_its_status() {
    let env = Env::new("books-status").await;
    let tenant = tenant_or_admin(&env).await;
    if env.server().is_none() && std::env::var_os("E2E_RBAC").is_some() {
        // A mistaken grant: the tenant may write pod status.
        env.grant_tenant(
            "pod-status",
            json!([{"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch", "update"]}]),
        )
        .await;
    }
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("pool", &[(37300, 37301)]).await;
    // One after the other: two claims created together may bind in either order.
    env.create_claim("web", &class, None).await;
    assert_eq!(env.bound("web").await.bound_port(), Some(37300));
    env.create_claim("other", &class, None).await;
    assert_eq!(env.bound("other").await.bound_port(), Some(37301));
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &env.namespace);
    pods.create(
        &PostParams::default(),
        &pod_naming("app", &[("web", "web")]),
    )
    .await
    .expect("admitted");
    let moved = json!({"metadata": {"annotations": {
        "claim.hostport.rmb938.com/web": "other",
        "port.hostport.rmb938.com/web": "37301"}}});
    // RBAC sees a new binding after a moment: retry while the API server says Forbidden by RBAC.
    let denial = env
        .wait_for(
            "the status write to reach admission",
            Duration::from_secs(30),
            || {
                let pods = pods.clone();
                let moved = moved.clone();
                async move {
                    match pods
                        .patch_status(
                            "app",
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(&moved),
                        )
                        .await
                    {
                        Err(kube::Error::Api(status)) if status.message.contains("RBAC") => None,
                        other => Some(other),
                    }
                }
            },
        )
        .await;
    match denial {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{}", status.message);
            assert!(
                status.message.contains("claim.hostport.rmb938.com/web")
                    && status.message.contains("cannot change once the pod exists"),
                "{}",
                status.message
            );
        }
        other => panic!("the claim annotation was changed through pods/status: {other:?}"),
    }
    books::assert_hold(&env.client, &[&env.namespace]).await;
    env.cleanup().await;
}

/// Removes the optional policy when the scenario ends, even when it panics (it is cluster-wide).
struct PolicyApplied;

impl Drop for PolicyApplied {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args([
                "delete",
                "--ignore-not-found",
                "-k",
                "config/policies/unmanaged-host-ports",
            ])
            .env(
                "KUBECONFIG",
                std::env::var_os("E2E_KUBECONFIG").unwrap_or_default(),
            )
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status();
    }
}

/// The optional ValidatingAdmissionPolicy (`config/policies/unmanaged-host-ports`) refuses a
/// pod taking a pool port without a claim outside labelled namespaces. kube-apiserver runs it
/// itself: real clusters only.
#[tokio::test]
async fn the_optional_policy_refuses_pool_ports_outside_labelled_namespaces() {
    let env = Env::new("books-policy").await;
    if env.server().is_some() {
        eprintln!("ValidatingAdmissionPolicy is kube-apiserver's own; skipped in-process");
        return env.cleanup().await;
    }
    let class = env.create_class("pool", &[(37600, 37601)]).await;
    let _policy = PolicyApplied;
    let applied = std::process::Command::new("kubectl")
        .args(["apply", "-k", "config/policies/unmanaged-host-ports"])
        .env(
            "KUBECONFIG",
            std::env::var_os("E2E_KUBECONFIG").unwrap_or_default(),
        )
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("kubectl");
    assert!(applied.success());
    let plain = env.plain_namespace("plain").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &plain);
    let with_host_port = |name: &str, port: i32| {
        pod(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": hostport_e2e::pod_image(),
                "ports": [{"containerPort": 8080, "hostPort": port}]}]}
        }))
    };
    // The policy is picked up by the API server after a moment.
    let denial = env
        .wait_for(
            "the policy to refuse a pool port",
            Duration::from_secs(30),
            || {
                let pods = pods.clone();
                let pod = with_host_port("inside", 37600);
                async move {
                    match pods.create(&PostParams::default(), &pod).await {
                        Err(kube::Error::Api(status)) => Some(status),
                        Ok(_) => {
                            let _ = pods
                                .delete("inside", &DeleteParams::default().grace_period(0))
                                .await;
                            None
                        }
                        Err(_) => None,
                    }
                }
            },
        )
        .await;
    assert!(
        denial
            .message
            .contains(&format!("pools of HostPortClass {class}"))
            && denial.message.contains("without a claim"),
        "{}",
        denial.message
    );
    pods.create(&PostParams::default(), &with_host_port("outside", 37700))
        .await
        .expect("a port outside every pool is allowed");
    env.cleanup().await;
}

/// Waiting out admissions in flight costs one status write, not one per pass (in-process:
/// it counts requests).
#[tokio::test]
async fn waiting_out_admissions_writes_the_claim_status_once() {
    let env = Env::new("books-grace-writes").await;
    let Some(server) = env.server() else {
        eprintln!("needs the in-process server to count requests; skipped");
        return env.cleanup().await;
    };
    let _controller = env.start_controller(RunOptions {
        settings: Settings {
            admission_grace: Duration::from_secs(2),
            ..Settings::default()
        },
        ..RunOptions::default()
    });
    let class = env.create_class("pool", &[(37020, 37020)]).await;
    env.create_claim("a-web", &class, None).await;
    env.bound("a-web").await;
    server.reset_counts();
    env.claims()
        .delete("a-web", &DeleteParams::default())
        .await
        .expect("delete");
    gone(&env, "a-web").await;
    let status_writes = server.count(
        &RequestMatch::new(kube_testserver::Verb::Patch, "hostportclaims/status")
            .by_user(&hostport_e2e::harness::controller_user().username),
    );
    assert_eq!(
        status_writes, 1,
        "AdmissionsInFlight once, then the release"
    );
    env.cleanup().await;
}
