//! Correctness under the conditions that break naive allocators: two controllers at once,
//! stale caches, injected API errors, controllers killed between any two calls, objects
//! left by the Go project, orphans. In-process only where faults must be injected.
//!
//! Longer than ~500 lines on purpose: one scenario per failure mode, each independent, with
//! the consistency checks they share.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hostport_api::{ClaimPhase, HostPort, HostPortClaim, HostPortClaimSpec};
use hostport_controller::{LeaseConfig, RunOptions};
use hostport_e2e::harness::{Env, SYSTEM_NAMESPACE, controller_user};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_testserver::{RequestMatch, UserInfo, Verb};
use serde_json::json;

/// Claims as the webhook would hand them over: with the finalizer already set.
fn claim_with_finalizer(name: &str, class: &str) -> HostPortClaim {
    let mut claim = HostPortClaim::new(
        name,
        HostPortClaimSpec {
            host_port_class_name: class.into(),
            host_port_name: None,
            port: None,
            port_policy: None,
            count: None,
            alignment: None,
        },
    );
    claim.finalizers_mut().push(hostport_api::FINALIZER.into());
    claim
}

async fn create_claims(env: &Env, class: &str, count: usize) {
    let claims = env.claims();
    let creates = (0..count).map(|i| {
        let claims = claims.clone();
        let claim = claim_with_finalizer(&format!("c{i}"), class);
        async move {
            claims
                .create(&PostParams::default(), &claim)
                .await
                .expect("create claim")
        }
    });
    futures::future::join_all(creates).await;
}

async fn all_bound(env: &Env, count: usize, timeout: Duration) {
    let claims = env.claims();
    env.wait_for(&format!("{count} claims Bound"), timeout, || {
        let claims = claims.clone();
        async move {
            let list = claims.list(&ListParams::default()).await.ok()?;
            (list.items.len() == count && list.items.iter().all(|c| c.bound_port().is_some()))
                .then_some(())
        }
    })
    .await;
}

/// The invariants: one HostPort per claim (the one it is bound to), ports distinct, claim
/// status agrees with its HostPort.
async fn assert_consistent(env: &Env, count: usize) {
    let claims = env
        .claims()
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    let host_ports: Vec<HostPort> = env.namespace_host_ports().await;
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for hp in &host_ports {
        by_port
            .entry(hp.port().expect("HostPort with a port"))
            .or_default()
            .push(hp.name_any());
    }
    let shared: Vec<_> = by_port
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .collect();
    assert!(shared.is_empty(), "ports held twice: {shared:?}");
    assert_eq!(
        host_ports.len(),
        count,
        "exactly one HostPort per claim, none leaked"
    );
    for claim in &claims {
        let name = claim.spec.host_port_name.clone().expect("bound");
        let hp = host_ports
            .iter()
            .find(|hp| hp.name_any() == name)
            .expect("bound HostPort exists");
        assert_eq!(hp.claim_uid(), claim.uid().as_deref());
        assert_eq!(hp.port(), claim.bound_port());
    }
}

fn writes_by(env: &Env, user: &str, resource: &str) -> u64 {
    let server = env.server().expect("in-process");
    [Verb::Create, Verb::Update, Verb::Patch, Verb::Delete]
        .into_iter()
        .map(|verb| server.count(&RequestMatch::new(verb, resource).by_user(user)))
        .sum()
}

#[tokio::test]
async fn four_writes_per_binding() {
    // Counting writes needs the in-process API server.
    let Some(env) = Env::in_process("writes").await else {
        return;
    };
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(20000, 20999)]).await;
    create_claims(&env, &class, 200).await;
    all_bound(&env, 200, Duration::from_secs(60)).await;
    // Let the coalesced class status catch up too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let user = controller_user().username;
    let per_resource: BTreeMap<&str, u64> = [
        "hostports",
        "hostports/status",
        "hostportclaims",
        "hostportclaims/status",
        "hostportclasses",
        "hostportclasses/status",
    ]
    .into_iter()
    .map(|r| (r, writes_by(&env, &user, r)))
    .collect();
    let binding: u64 = [
        "hostports",
        "hostports/status",
        "hostportclaims",
        "hostportclaims/status",
    ]
    .iter()
    .map(|r| per_resource[r])
    .sum();
    let class_writes = per_resource["hostportclasses"] + per_resource["hostportclasses/status"];
    eprintln!("writes for 200 bindings: {per_resource:?}");
    assert_eq!(
        binding, 800,
        "HostPort create + status, claim bind + status: {per_resource:?}"
    );
    assert!(
        class_writes <= 10,
        "class writes are coalesced: {class_writes}"
    );
    assert_consistent(&env, 200).await;
}

#[tokio::test]
async fn two_controllers_stale_cache_and_injected_errors() {
    let env = Env::new("two").await;
    let Some(server) = env.server() else {
        eprintln!("fault injection needs the in-process API server; skipped on a real cluster");
        // Its namespace is made anyway: skipped or not, nothing stays behind.
        return env.cleanup().await;
    };
    let stale = UserInfo::service_account(SYSTEM_NAMESPACE, "stale-controller");
    let class = env.create_class("sample", &[(21000, 21299)]).await;
    let _fresh = env.start_controller(RunOptions::default());
    let _stale = env.start_controller_as(stale.clone(), RunOptions::default());
    // Let both sync, then freeze the second one's HostPort watch: its port book goes stale.
    env.wait_for(
        "two controllers watching",
        Duration::from_secs(10),
        || async { (server.watch_count() >= 8).then_some(()) },
    )
    .await;
    server.freeze_watches(RequestMatch::resource("hostports").by_user(&stale.username));
    server.fail_next(RequestMatch::new(Verb::Create, "hostports"), 15, 500);
    server.fail_next(
        RequestMatch::new(Verb::Patch, "hostportclaims/status"),
        15,
        503,
    );
    server.fail_next(RequestMatch::new(Verb::Patch, "hostportclaims"), 10, 409);
    create_claims(&env, &class, 150).await;
    all_bound(&env, 150, Duration::from_secs(90)).await;
    server.thaw_watches();
    // Duplicates from the race (one per claim at most) are cleaned up.
    env.wait_for(
        "no HostPort beyond one per claim",
        Duration::from_secs(30),
        || async { (env.namespace_host_ports().await.len() == 150).then_some(()) },
    )
    .await;
    assert_consistent(&env, 150).await;
    let conflicts =
        server.count(&RequestMatch::new(Verb::Create, "hostports").by_user(&stale.username));
    eprintln!("HostPort creates by the stale controller: {conflicts}");
}

#[tokio::test]
async fn killed_at_random_points_converges() {
    let env = Env::new("chaos").await;
    let class = env.create_class("sample", &[(22000, 22199)]).await;
    create_claims(&env, &class, 80).await;
    // Kill the controller after a random-ish number of milliseconds, many times.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let controller = env.start_controller(RunOptions::default());
        tokio::time::sleep(Duration::from_millis(5 + seed % 120)).await;
        controller.kill();
    }
    // Delete some claims while nothing runs: their release happens after a restart.
    for i in 0..10 {
        env.claims()
            .delete(&format!("c{i}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    let _controller = env.start_controller(RunOptions::default());
    all_bound(&env, 70, Duration::from_secs(60)).await;
    env.wait_for(
        "released HostPorts gone",
        Duration::from_secs(30),
        || async { (env.namespace_host_ports().await.len() == 70).then_some(()) },
    )
    .await;
    assert_consistent(&env, 70).await;
    env.cleanup().await;
}

/// A claim `legacy` and its HostPort as the Go controller left them: the HostPort named
/// after the claim UID, with the Go finalizer, its port only in `status` (`host_port_status`),
/// the claim bound to it and Bound. Returns the HostPort's name.
async fn go_era_binding(env: &Env, class: &str, host_port_status: serde_json::Value) -> String {
    let claims = env.claims();
    let claim = claims
        .create(
            &PostParams::default(),
            &claim_with_finalizer("legacy", class),
        )
        .await
        .expect("claim");
    let uid = claim.uid().expect("uid");
    let legacy_name = format!("hpc-{uid}");
    let legacy: HostPort = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPort",
        "metadata": {"name": legacy_name, "finalizers": ["hostport.rmb938.com"]},
        "spec": {"hostPortClassName": class, "claimRef": {
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
            "namespace": env.namespace, "name": "legacy", "uid": uid}}
    }))
    .expect("HostPort");
    env.host_ports()
        .create(&PostParams::default(), &legacy)
        .await
        .expect("legacy HostPort");
    env.host_ports()
        .patch_status(
            &legacy_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": host_port_status })),
        )
        .await
        .expect("legacy status");
    claims
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostPortName": legacy_name}})),
        )
        .await
        .expect("bind legacy");
    claims
        .patch_status(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("legacy claim status");
    legacy_name
}

#[tokio::test]
async fn go_project_objects_are_adopted() {
    let env = Env::new("adopt").await;
    let class = env.create_class("sample", &[(23000, 23010)]).await;
    // A claim and HostPort exactly as the Go controller left them.
    let legacy_name =
        go_era_binding(&env, &class, json!({"port": 23000, "phase": "Allocated"})).await;

    let _controller = env.start_controller(RunOptions::default());
    env.create_claim("new", &class, None).await;
    assert_eq!(
        env.bound("new").await.bound_port(),
        Some(23001),
        "the Go-held port stays taken"
    );
    let legacy_claim = env.bound("legacy").await;
    assert_eq!(
        legacy_claim.spec.host_port_name.as_deref(),
        Some(legacy_name.as_str())
    );
    assert_eq!(legacy_claim.bound_port(), Some(23000));
    assert!(
        env.host_ports()
            .get_opt("port-23000")
            .await
            .expect("get")
            .is_none(),
        "no second HostPort for the legacy claim"
    );

    // Releasing the legacy claim deletes the Go HostPort (its finalizer is ours too).
    env.claims()
        .delete("legacy", &DeleteParams::default())
        .await
        .expect("delete");
    env.wait_for("legacy HostPort gone", Duration::from_secs(20), || async {
        env.host_ports()
            .get_opt(&legacy_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    env.create_claim("reuse", &class, None).await;
    assert_eq!(env.bound("reuse").await.bound_port(), Some(23000));
    env.cleanup().await;
}

#[tokio::test]
async fn orphans_are_deleted_and_a_recreated_claim_does_not_inherit() {
    let env = Env::new("orphan").await;
    let class = env.create_class("sample", &[(24000, 24010)]).await;
    let orphan: HostPort = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPort",
        "metadata": {"name": "port-24000"},
        "spec": {"hostPortClassName": class, "port": 24000, "claimRef": {
            "namespace": env.namespace, "name": "echo", "uid": "0000-gone"}}
    }))
    .expect("HostPort");
    env.host_ports()
        .create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    // Same name as the orphan's claim, but another UID.
    env.create_claim("echo", &class, None).await;
    let _controller = env.start_controller(RunOptions::default());
    let claim = env.bound("echo").await;
    env.wait_for("orphan deleted", Duration::from_secs(20), || async {
        env.host_ports()
            .get_opt("port-24000")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_ne!(
        claim.spec.host_port_name.as_deref(),
        Some("port-24000"),
        "matched by UID, not name"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn class_deletion_waits_for_its_claims() {
    let env = Env::new("classdel").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(25000, 25010)]).await;
    env.create_claim("user", &class, None).await;
    env.bound("user").await;
    env.classes()
        .delete(&class, &DeleteParams::default())
        .await
        .expect("delete class");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = env.classes().get(&class).await.expect("class still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    env.claims()
        .delete("user", &DeleteParams::default())
        .await
        .expect("delete claim");
    env.wait_for("class gone", Duration::from_secs(20), || async {
        env.classes()
            .get_opt(&class)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn leader_election_lets_one_replica_work() {
    let env = Env::new("leader").await;
    let Some(server) = env.server() else {
        eprintln!("counting writes per replica needs the in-process API server");
        return env.cleanup().await;
    };
    let lease = |identity: &str| LeaseConfig {
        namespace: SYSTEM_NAMESPACE.into(),
        name: "hostport-controller".into(),
        identity: identity.into(),
        duration: Duration::from_secs(3),
    };
    let (one, two) = (
        UserInfo::service_account(SYSTEM_NAMESPACE, "replica-one"),
        UserInfo::service_account(SYSTEM_NAMESPACE, "replica-two"),
    );
    let first = env.start_controller_as(
        one.clone(),
        RunOptions {
            leader_election: Some(lease("one")),
            ..RunOptions::default()
        },
    );
    let class = env.create_class("sample", &[(26000, 26100)]).await;
    env.create_claim("a", &class, None).await;
    env.bound("a").await;
    let _second = env.start_controller_as(
        two.clone(),
        RunOptions {
            leader_election: Some(lease("two")),
            ..RunOptions::default()
        },
    );
    env.create_claim("b", &class, None).await;
    env.bound("b").await;
    assert_eq!(
        writes_by(&env, &two.username, "hostports"),
        0,
        "the standby did not allocate"
    );
    // The leader dies without releasing the Lease: the standby takes over once it expires.
    first.kill();
    env.create_claim("c", &class, None).await;
    let claims = env.claims();
    env.wait_for("standby takes over", Duration::from_secs(20), || {
        let claims = claims.clone();
        async move {
            claims
                .get("c")
                .await
                .ok()
                .filter(|c| c.phase() == ClaimPhase::Bound)
        }
    })
    .await;
    assert!(writes_by(&env, &two.username, "hostports") >= 1);
    let ports: BTreeSet<u16> = env
        .namespace_host_ports()
        .await
        .iter()
        .filter_map(|hp| hp.port())
        .collect();
    assert_eq!(ports.len(), 3);
    let _ = server;
}

/// A Go-era claim Bound to an `hpc-<uid>` HostPort that never got a port (status.port 0)
/// gets a port from its pools, and the empty HostPort goes.
#[tokio::test]
async fn go_era_claim_without_a_port_gets_one() {
    let env = Env::new("adopt-portless").await;
    let class = env.create_class("sample", &[(23100, 23110)]).await;
    let legacy_name = go_era_binding(&env, &class, json!({"port": 0, "phase": "Pending"})).await;
    let _controller = env.start_controller(RunOptions::default());
    let bound = env.bound("legacy").await;
    assert_eq!(bound.bound_port(), Some(23100));
    assert_eq!(bound.spec.host_port_name.as_deref(), Some("port-23100"));
    env.wait_for(
        "the portless HostPort deleted",
        Duration::from_secs(10),
        || {
            let api = env.host_ports();
            let name = legacy_name.clone();
            async move { api.get_opt(&name).await.ok()?.is_none().then_some(()) }
        },
    )
    .await;
    env.cleanup().await;
}

/// A static-port claim that lost its port to another writer (409) binds as soon as that
/// HostPort is deleted, not after a reservation times out.
#[tokio::test]
async fn static_claim_binds_once_its_port_frees_after_a_conflict() {
    let env = Env::new("static-409").await;
    let Some(server) = env.server() else {
        eprintln!("freezing the controller's watch needs the in-process API server");
        return env.cleanup().await;
    };
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(23200, 23210)]).await;
    env.create_claim("warm", &class, None).await;
    env.bound("warm").await;
    // Another writer takes port 23205 while the controller's HostPort watch is stalled.
    server.freeze_watches(RequestMatch::resource("hostports").by_user(&controller_user().username));
    let holder: HostPort = serde_json::from_value(json!({
        "metadata": {"name": "port-23205"},
        "spec": {"hostPortClassName": "other-writer", "port": 23205}
    }))
    .expect("HostPort");
    env.host_ports()
        .create(&PostParams::default(), &holder)
        .await
        .expect("holder");
    let claims = env.claims();
    claims
        .create(
            &PostParams::default(),
            &HostPortClaim::new(
                "static",
                HostPortClaimSpec {
                    host_port_class_name: class.clone(),
                    host_port_name: None,
                    port: Some(23205),
                    port_policy: None,
                    count: None,
                    alignment: None,
                },
            ),
        )
        .await
        .expect("claim");
    env.wait_for(
        "PortUnavailable after the 409",
        Duration::from_secs(10),
        || {
            let claims = claims.clone();
            async move {
                let claim = claims.get("static").await.ok()?;
                let reason = claim
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Bound")?
                    .reason;
                (reason == "PortUnavailable").then_some(())
            }
        },
    )
    .await;
    server.thaw_watches();
    env.host_ports()
        .delete("port-23205", &DeleteParams::default())
        .await
        .expect("release");
    let claims = env.claims();
    let bound = env
        .wait_for("the static claim bound", Duration::from_secs(10), || {
            let claims = claims.clone();
            async move { claims.get("static").await.ok()?.bound_port() }
        })
        .await;
    assert_eq!(bound, 23205);
    env.cleanup().await;
}

/// A leader whose Lease renewals hang gives up leadership before the Lease expires for
/// the others (never two leaders for longer than a renewal).
#[tokio::test]
async fn hung_lease_renewal_gives_up_leadership_in_time() {
    let env = Env::new("lease-hang").await;
    let Some(server) = env.server() else {
        eprintln!("injecting latency needs the in-process API server");
        return env.cleanup().await;
    };
    let user = UserInfo::service_account(SYSTEM_NAMESPACE, "replica-hung");
    let leader = env.start_controller_as(
        user.clone(),
        RunOptions {
            leader_election: Some(LeaseConfig {
                namespace: SYSTEM_NAMESPACE.into(),
                name: "hostport-controller-hang".into(),
                identity: "hung".into(),
                duration: Duration::from_secs(3),
            }),
            ..RunOptions::default()
        },
    );
    let class = env.create_class("sample", &[(23300, 23310)]).await;
    env.create_claim("a", &class, None).await;
    env.bound("a").await;
    server.add_latency(
        RequestMatch::resource("leases").by_user(&user.username),
        Duration::from_secs(120),
    );
    let hung_at = std::time::Instant::now();
    env.wait_for("the leader to give up", Duration::from_secs(10), || {
        let finished = leader.is_finished();
        async move { finished.then_some(()) }
    })
    .await;
    assert!(
        hung_at.elapsed() < Duration::from_secs(3),
        "still leading {:?} after renewals hung; the Lease lasts 3 s",
        hung_at.elapsed()
    );
    server.clear_faults();
    env.cleanup().await;
}
