//! A hostile tenant (a ServiceAccount with rights on claims and pods in its namespace only)
//! against the allocator's promise: a host port only from a pool of a class, only through a
//! claim the allocator bound, only while the claim holds it. Each numbered case of the
//! security issue runs twice where it applies: with the webhook (the write is denied) and
//! without it (the controller alone still never hands out the port).
//!
//! Longer than ~500 lines on purpose: one scenario per attack, each independent, with the
//! helpers they share; splitting would scatter one threat model over several files.

use std::time::Duration;

use hostport_api::conditions::{self, reasons, types};
use hostport_api::{HostPort, HostPortClaim, HostPortClaimSpec};
use hostport_controller::RunOptions;
use hostport_e2e::harness::{Env, controller_user};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

fn claim(name: &str, class: &str, host_port_name: Option<&str>) -> HostPortClaim {
    HostPortClaim::new(
        name,
        HostPortClaimSpec {
            host_port_class_name: class.into(),
            host_port_name: host_port_name.map(Into::into),
            port: None,
            port_policy: None,
            count: None,
            alignment: None,
        },
    )
}

fn pod(name: &str, claim: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"claim.hostport.rmb938.com/web": claim}},
        "spec": {"containers": [{"name": "app", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "web", "containerPort": 8080}]}]}
    }))
    .expect("pod")
}

fn denied(result: Result<impl std::fmt::Debug, kube::Error>, expected: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{}", status.message);
            assert!(
                status.message.contains(expected),
                "expected {expected:?} in {:?}",
                status.message
            );
        }
        other => panic!("expected a denial containing {expected:?}, got {other:?}"),
    }
}

async fn tenant_or_skip(env: &Env) -> Option<Client> {
    let tenant = env.tenant().await;
    if tenant.is_none() {
        eprintln!("a real cluster without E2E_RBAC has no tenant identity; skipped");
    }
    tenant
}

/// A Role letting the scenario's tenant write `hostportclaims/status` (real clusters only).
async fn grant_claim_status(env: &Env) {
    if env.server().is_some() {
        return;
    }
    env.grant_tenant(
        "mistaken-status",
        json!([{"apiGroups": [hostport_api::GROUP], "resources": ["hostportclaims/status"],
                "verbs": ["get", "patch", "update"]}]),
    )
    .await;
    // RBAC's authorizer sees new bindings asynchronously: wait until it allows the write.
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": format!("system:serviceaccount:{}:tenant", env.namespace),
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {"namespace": env.namespace, "verb": "patch",
                "group": hostport_api::GROUP, "resource": "hostportclaims", "subresource": "status"},
        },
    });
    env.wait_for(
        "RBAC to allow the status write",
        Duration::from_secs(30),
        || {
            let client = env.client.clone();
            let body = serde_json::to_vec(&review).expect("json");
            async move {
                let request =
                    http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
                        .header("content-type", "application/json")
                        .body(body)
                        .ok()?;
                let answer: Value = client.request(request).await.ok()?;
                (answer["status"]["allowed"] == true).then_some(())
            }
        },
    )
    .await;
}

/// Creates claim `name` of `class` through `claims` (the tenant's) and waits until it is Bound.
async fn create_bound(
    env: &Env,
    claims: &Api<HostPortClaim>,
    name: &str,
    class: &str,
) -> HostPortClaim {
    claims
        .create(&PostParams::default(), &claim(name, class, None))
        .await
        .expect("claim");
    env.bound(name).await
}

fn host_port_name(claim: &HostPortClaim) -> String {
    claim.spec.host_port_name.clone().expect("bound")
}

fn host_port_of_pod(pod: &Pod) -> Option<i32> {
    pod.spec.as_ref()?.containers[0].ports.as_ref()?[0].host_port
}

/// Case 1 and 2: `spec.hostPortName` chosen by the tenant, on create and on a Pending claim.
#[tokio::test]
async fn tenant_cannot_choose_the_host_port_name() {
    let env = Env::new("tenant-names").await;
    let Some(tenant) = tenant_or_skip(&env).await else {
        return env.cleanup().await;
    };
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("pool", &[(33000, 33001)]).await;
    let claims: Api<HostPortClaim> = Api::namespaced(tenant.clone(), &env.namespace);
    denied(
        claims
            .create(
                &PostParams::default(),
                &claim("evil", &class, Some("port-22")),
            )
            .await,
        "spec.hostPortName of HostPortClaim",
    );
    // Fill the class, then try to point a Pending claim at port 23. (`pending` is created once
    // the two ports are taken: created together, it could take one before `b`.)
    for name in ["a", "b"] {
        claims
            .create(&PostParams::default(), &claim(name, &class, None))
            .await
            .expect("claim");
    }
    env.bound("a").await;
    let b_port = env.bound("b").await.spec.host_port_name.expect("bound");
    claims
        .create(&PostParams::default(), &claim("pending", &class, None))
        .await
        .expect("claim");
    denied(
        claims
            .patch(
                "pending",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostPortName": "port-23"}})),
            )
            .await,
        "is set by the hostport allocator only",
    );
    // Nor can a tenant re-point a Bound claim (at the other claim's port: which of the two
    // `a` got is the allocator's race).
    denied(
        claims
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hostPortName": b_port}})),
            )
            .await,
        "is set by the hostport allocator only",
    );
    assert!(
        env.host_ports()
            .get_opt("port-23")
            .await
            .expect("get")
            .is_none(),
        "no HostPort for a port outside the pools"
    );
    // Nor can a tenant write the HostPort itself, pointing at its own claim.
    let own = claims.get("pending").await.expect("claim");
    let forged: HostPort = serde_json::from_value(json!({
        "metadata": {"name": "port-22"},
        "spec": {"hostPortClassName": class, "port": 22, "claimRef": {
            "namespace": env.namespace, "name": "pending", "uid": own.metadata.uid}}
    }))
    .expect("HostPort");
    let written = Api::<HostPort>::all(tenant.clone())
        .create(&PostParams::default(), &forged)
        .await;
    // A real cluster's RBAC refuses it before the webhook does.
    let expected = if env.server().is_some() {
        "such HostPorts are created and changed by the hostport allocator only"
    } else {
        "forbidden"
    };
    denied(written, expected);
    env.cleanup().await;
}

/// Case 1 and 2 without the webhook: the controller alone never binds a claim-supplied port.
#[tokio::test]
async fn controller_ignores_a_claim_supplied_host_port_name() {
    let env = Env::new("tenant-names-nowebhook").await;
    let Some(tenant) = tenant_or_skip(&env).await else {
        return env.cleanup().await;
    };
    if env.server().is_none() {
        // The scenario needs the webhook absent; a real cluster may have one installed.
        eprintln!("needs an API server without the webhook; skipped");
        return env.cleanup().await;
    }
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("pool", &[(33100, 33101)]).await;
    let claims: Api<HostPortClaim> = Api::namespaced(tenant.clone(), &env.namespace);
    claims
        .create(
            &PostParams::default(),
            &claim("evil", &class, Some("port-22")),
        )
        .await
        .expect("no webhook: stored");
    let bound = env.bound("evil").await;
    let port = bound.bound_port().expect("bound");
    assert!((33100..=33101).contains(&port), "bound to {port}");
    assert_eq!(host_port_name(&bound), format!("port-{port}"));
    assert!(
        env.host_ports()
            .get_opt("port-22")
            .await
            .expect("get")
            .is_none(),
        "port 22 was never created"
    );
    assert!(
        env.has_event(reasons::HOST_PORT_NOT_OWNED).await,
        "{:?}",
        env.event_reasons().await
    );

    // A Pending claim (class full) patched to name port 23 stays Pending on the pools.
    create_bound(&env, &claims, "second", &class).await;
    claims
        .create(&PostParams::default(), &claim("waiting", &class, None))
        .await
        .expect("claim");
    env.claim_with_reason("waiting", reasons::POOL_EXHAUSTED)
        .await;
    claims
        .patch(
            "waiting",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostPortName": "port-23"}})),
        )
        .await
        .expect("no webhook: stored");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.host_ports()
            .get_opt("port-23")
            .await
            .expect("get")
            .is_none(),
        "port 23 was never created"
    );
    let waiting = claims.get("waiting").await.expect("claim");
    assert_eq!(waiting.bound_port(), None);
    env.cleanup().await;
}

/// Case 3: removing the finalizer of a claim whose pod still runs.
#[tokio::test]
async fn finalizer_cannot_free_a_port_early() {
    let env = Env::new("tenant-finalizer").await;
    let Some(tenant) = tenant_or_skip(&env).await else {
        return env.cleanup().await;
    };
    let webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("pool", &[(33200, 33201)]).await;
    let claims: Api<HostPortClaim> = Api::namespaced(tenant.clone(), &env.namespace);
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), &env.namespace);
    let bound = create_bound(&env, &claims, "game", &class).await;
    let held = host_port_name(&bound);
    pods.create(&PostParams::default(), &pod("server", "game"))
        .await
        .expect("pod admitted");
    claims
        .delete("game", &DeleteParams::default())
        .await
        .expect("delete");
    env.claim_with_reason("game", reasons::IN_USE_BY_PODS).await;
    let remove = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
            .expect("patch"),
    );
    denied(
        claims.patch("game", &PatchParams::default(), &remove).await,
        "is removed by the hostport allocator only",
    );

    // Without the webhook the finalizer goes, the claim disappears, and still the HostPort
    // stays while the pod exists.
    if env.server().is_none() {
        return env.cleanup().await;
    }
    hostport_e2e::local::unregister_webhooks(&env.client, &env.webhook_configurations()).await;
    drop(webhook);
    claims
        .patch("game", &PatchParams::default(), &remove)
        .await
        .expect("no webhook: finalizer removed");
    env.wait_for("claim gone", Duration::from_secs(10), || {
        let claims = claims.clone();
        async move { claims.get_opt("game").await.ok()?.is_none().then_some(()) }
    })
    .await;
    host_port_with_reason(&env, &held, reasons::CLAIM_GONE_PODS_RUNNING).await;
    // A new claim cannot get the held port.
    let next = create_bound(&env, &claims, "next", &class).await;
    assert_ne!(host_port_name(&next), held);
    // The pod goes: the port is released.
    pods.delete("server", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    env.wait_for("held HostPort released", Duration::from_secs(30), || {
        let api = env.host_ports();
        let held = held.clone();
        async move { api.get_opt(&held).await.ok()?.is_none().then_some(()) }
    })
    .await;
    env.cleanup().await;
}

/// Case 4: a forged `status.port`, written by someone allowed to write claim status.
#[tokio::test]
async fn forged_status_never_reaches_a_pod() {
    let env = Env::new("tenant-status").await;
    let Some(tenant) = tenant_or_skip(&env).await else {
        return env.cleanup().await;
    };
    let _webhook = env.start_webhook().await;
    let controller = env.start_controller(RunOptions::default());
    let class = env.create_class("pool", &[(33300, 33301)]).await;
    let claims: Api<HostPortClaim> = Api::namespaced(tenant.clone(), &env.namespace);
    let bound = create_bound(&env, &claims, "web", &class).await;
    controller.kill();
    // The mistaken binding of the issue: the tenant may write claim status (on a real
    // cluster RBAC would refuse it first; the in-process server has no authorization).
    grant_claim_status(&env).await;
    let forge = Patch::Merge(json!({"status": {"port": 22}}));
    denied(
        claims
            .patch_status("web", &PatchParams::default(), &forge)
            .await,
        "the status of HostPortClaim",
    );
    // Even a write that passes the status guard (here: the allocator's own identity, as if
    // the guard were bypassed) does not get port 22 into a pod.
    let as_allocator: Api<HostPortClaim> =
        Api::namespaced(env.client_as(controller_user()), &env.namespace);
    if env.as_service_accounts() {
        as_allocator
            .patch_status("web", &PatchParams::default(), &forge)
            .await
            .expect("allocator identity may write status");
        let pods: Api<Pod> = Api::namespaced(tenant, &env.namespace);
        let created = pods
            .create(&PostParams::default(), &pod("web", "web"))
            .await;
        match (&created, env.server()) {
            // On a shared cluster another scenario's controller may repair the status
            // first: then the pod gets the HostPort's port, and never 22.
            (Ok(admitted), None) => {
                let held = env
                    .host_ports()
                    .get(&host_port_name(&bound))
                    .await
                    .expect("HostPort");
                assert_eq!(
                    host_port_of_pod(admitted),
                    held.port().map(i32::from),
                    "the pod got a port its HostPort does not hold"
                );
            }
            _ => denied(created, "status.port 22 differs from port"),
        }
    }
    // Nor can a tenant forge a class's or a HostPort's status.
    let classes: Api<hostport_api::HostPortClass> = Api::all(env.client.clone());
    denied(
        classes
            .patch_status(
                &class,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"available": 99}})),
            )
            .await,
        "is written by the hostport allocator only",
    );
    // A controller again, to release the claim when the namespace goes.
    let _controller = env.start_controller(RunOptions::default());
    env.cleanup().await;
}

/// Case 5: `hostNetwork` pods in a labelled namespace, and the admin's opt-out.
#[tokio::test]
async fn host_network_pods_are_refused() {
    let env = Env::new("tenant-hostnet").await;
    let Some(tenant) = tenant_or_skip(&env).await else {
        return env.cleanup().await;
    };
    let _webhook = env.start_webhook().await;
    let pods: Api<Pod> = Api::namespaced(tenant, &env.namespace);
    let host_network: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sniffer"},
        "spec": {"hostNetwork": true, "containers": [{"name": "a", "image": hostport_e2e::pod_image()}]}
    }))
    .expect("pod");
    denied(
        pods.create(&PostParams::default(), &host_network).await,
        "spec.hostNetwork is true and the pod claims no port, so it would use any host port of its node",
    );
    // A cluster admin opts the namespace out.
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &env.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                hostport_api::ALLOW_HOST_NETWORK_ANNOTATION: "true"}}})),
        )
        .await
        .expect("annotate namespace");
    pods.create(&PostParams::default(), &host_network)
        .await
        .expect("allowed after the opt-out");
    env.cleanup().await;
}

/// Reservations: an admin's HostPort without claimRef keeps its port from every claim.
#[tokio::test]
async fn reserved_ports_are_never_handed_out() {
    let env = Env::new("reservation").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("pool", &[(33400, 33401)]).await;
    let reservation: HostPort = serde_json::from_value(json!({
        "metadata": {"name": "port-33400"},
        "spec": {"hostPortClassName": "node-agent", "port": 33400}
    }))
    .expect("HostPort");
    env.host_ports()
        .create(&PostParams::default(), &reservation)
        .await
        .expect("an admin reserves a port");
    let misnamed: HostPort = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"hostPortClassName": "node-agent", "port": 33401}
    }))
    .expect("HostPort");
    if env.as_service_accounts() {
        denied(
            env.host_ports()
                .create(&PostParams::default(), &misnamed)
                .await,
            "so it must be named \"port-33401\"",
        );
    }
    env.create_claim("web", &class, None).await;
    let bound = env.bound("web").await;
    assert_eq!(bound.bound_port(), Some(33401));
    let reserved = host_port_with_reason(&env, "port-33400", reasons::RESERVED).await;
    assert_eq!(reserved.port(), Some(33400));
    let _ = env
        .host_ports()
        .delete("port-33400", &DeleteParams::default())
        .await;
    env.cleanup().await;
}

/// Waits until HostPort `name`'s `Allocated` condition has `reason`; returns the HostPort.
async fn host_port_with_reason(env: &Env, name: &str, reason: &str) -> HostPort {
    env.wait_for(
        &format!("HostPort {name} with reason {reason}"),
        Duration::from_secs(10),
        || {
            let api = env.host_ports();
            async move {
                let hp = api.get_opt(name).await.ok()??;
                let found = hp
                    .status
                    .as_ref()
                    .and_then(|s| conditions::find(&s.conditions, types::ALLOCATED))?
                    .reason
                    .clone();
                (found == reason).then_some(hp)
            }
        },
    )
    .await
}

/// Every pod with a host port holds it through a HostPort of its claim, inside the pools.
async fn assert_pods_hold_their_ports(env: &Env, pools: (u16, u16)) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let mut seen: std::collections::BTreeMap<i32, String> = Default::default();
    for pod in pods.list(&ListParams::default()).await.expect("pods").items {
        let Some(port) = host_port_of_pod(&pod) else {
            continue;
        };
        let claim = pod
            .annotations()
            .get("claim.hostport.rmb938.com/web")
            .cloned()
            .unwrap_or_default();
        let in_pools = u16::try_from(port).is_ok_and(|p| (pools.0..=pools.1).contains(&p));
        assert!(
            in_pools,
            "pod {} got port {port} outside the pools",
            pod.name_any()
        );
        let holder = env
            .host_ports()
            .get_opt(&format!("port-{port}"))
            .await
            .expect("get")
            .unwrap_or_else(|| {
                panic!(
                    "pod {} uses port {port}, held by no HostPort",
                    pod.name_any()
                )
            });
        assert_eq!(
            holder.claim_key().map(|(_, name)| name.to_owned()),
            Some(claim.clone()),
            "port {port} of pod {} is held for another claim",
            pod.name_any()
        );
        if let Some(other) = seen.insert(port, claim.clone()) {
            assert_eq!(other, claim, "two claims' pods share port {port}");
        }
    }
}

/// Random sequences of tenant writes (claims with chosen names, patches of the allocator's
/// fields, status forgeries, finalizer removals, deletes, recreates, pods) never yield a
/// pod whose host port is outside its class pools or held for another claim.
#[tokio::test]
async fn random_tenant_writes_never_steal_a_port() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};

    #[derive(Clone, Debug)]
    enum Op {
        Create { claim: u8, named: Option<u16> },
        PatchName { claim: u8, port: u16 },
        ForgeStatus { claim: u8, port: u16 },
        DropFinalizer { claim: u8 },
        Delete { claim: u8 },
        Pod { claim: u8 },
        Settle,
    }
    let port = prop_oneof![Just(22u16), Just(10250), 33500u16..33504];
    let op = prop_oneof![
        (0u8..4, proptest::option::of(port.clone()))
            .prop_map(|(claim, named)| Op::Create { claim, named }),
        (0u8..4, port.clone()).prop_map(|(claim, port)| Op::PatchName { claim, port }),
        (0u8..4, port).prop_map(|(claim, port)| Op::ForgeStatus { claim, port }),
        (0u8..4).prop_map(|claim| Op::DropFinalizer { claim }),
        (0u8..4).prop_map(|claim| Op::Delete { claim }),
        (0u8..4).prop_map(|claim| Op::Pod { claim }),
        Just(Op::Settle),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 4,
        ..Config::default()
    });
    let sequences = proptest::collection::vec(op, 10..24);
    for case in 0..4 {
        let ops = sequences.new_tree(&mut runner).expect("sequence").current();
        let env = Env::new(&format!("tenant-random-{case}")).await;
        let Some(tenant) = tenant_or_skip(&env).await else {
            return env.cleanup().await;
        };
        let _webhook = env.start_webhook().await;
        let _controller = env.start_controller(RunOptions::default());
        let class = env.create_class("pool", &[(33500, 33502)]).await;
        let claims: Api<HostPortClaim> = Api::namespaced(tenant.clone(), &env.namespace);
        let pods: Api<Pod> = Api::namespaced(tenant.clone(), &env.namespace);
        let mut pod_count = 0;
        for op in &ops {
            let name = |c: &u8| format!("c{c}");
            // Every write may be denied; what matters is what ends up in pods.
            let _ = match op {
                Op::Create { claim: c, named } => {
                    let named = named.map(|p| format!("port-{p}"));
                    claims
                        .create(
                            &PostParams::default(),
                            &claim(&name(c), &class, named.as_deref()),
                        )
                        .await
                        .map(|_| ())
                }
                Op::PatchName { claim: c, port } => claims
                    .patch(
                        &name(c),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"hostPortName": format!("port-{port}")}})),
                    )
                    .await
                    .map(|_| ()),
                Op::ForgeStatus { claim: c, port } => claims
                    .patch_status(
                        &name(c),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"phase": "Bound", "port": port}})),
                    )
                    .await
                    .map(|_| ()),
                Op::DropFinalizer { claim: c } => claims
                    .patch(
                        &name(c),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": Value::Null}})),
                    )
                    .await
                    .map(|_| ()),
                Op::Delete { claim: c } => claims
                    .delete(&name(c), &DeleteParams::default())
                    .await
                    .map(|_| ()),
                Op::Pod { claim: c } => {
                    pod_count += 1;
                    pods.create(
                        &PostParams::default(),
                        &pod(&format!("p{pod_count}"), &name(c)),
                    )
                    .await
                    .map(|_| ())
                }
                Op::Settle => {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok(())
                }
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_pods_hold_their_ports(&env, (33500, 33502)).await;
        env.cleanup().await;
    }
}
