//! Blocks of consecutive ports (`spec.count`): bound whole or not at all, inside one pool,
//! never overlapping however claims and controllers race, released as one; a block left
//! half-made by a crash is completed; the class's `maxBlockSize` and the block's fields are
//! the admin's and fixed once asked.

use std::collections::BTreeSet;
use std::time::Duration;

use hostport_api::{ClaimPhase, HostPort, HostPortClaim};
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Long enough for a waiting claim's recheck (60 s) on a busy cluster.
const WAIT: Duration = Duration::from_secs(90);
/// How long racing controllers may take to settle: the allocator's 60 s recheck of waiting
/// claims after the race.
const SETTLE_WAIT: Duration = Duration::from_secs(150);

/// A class of `pools` that allows blocks of up to `max`.
async fn block_class(env: &Env, name: &str, pools: &[(i32, i32)], max: i32) -> String {
    let class = env.create_class(name, pools).await;
    env.classes()
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxBlockSize": max}})),
        )
        .await
        .expect("maxBlockSize");
    class
}

fn block_claim(name: &str, class: &str, spec: serde_json::Value) -> HostPortClaim {
    let mut value = json!({"metadata": {"name": name}, "spec": {"hostPortClassName": class}});
    if let (Some(target), Some(extra)) = (value["spec"].as_object_mut(), spec.as_object()) {
        target.extend(extra.clone());
    }
    serde_json::from_value(value).expect("claim")
}

async fn create(env: &Env, claim: &HostPortClaim) -> Result<HostPortClaim, kube::Error> {
    env.claims().create(&PostParams::default(), claim).await
}

/// The ports of the HostPorts whose `claimRef.uid` is `claim`'s.
async fn held_by(env: &Env, claim: &HostPortClaim) -> BTreeSet<u16> {
    let uid = claim.uid().unwrap_or_default();
    env.host_ports()
        .list(&ListParams::default())
        .await
        .expect("HostPorts")
        .items
        .iter()
        .filter(|hp| hp.claim_uid() == Some(uid.as_str()))
        .filter_map(HostPort::port)
        .collect()
}

/// Asserts `claim` is Bound to exactly `count` consecutive ports inside `pool`, each held by
/// a HostPort of its own; returns them.
async fn assert_whole_block(env: &Env, name: &str, count: u16, pool: (u16, u16)) -> BTreeSet<u16> {
    let claim = env.bound(name).await;
    let base = claim.bound_port().expect("bound");
    let held = held_by(env, &claim).await;
    let expected: BTreeSet<u16> = (base..base + count).collect();
    assert_eq!(held, expected, "claim {name}: a whole block from its port");
    assert!(
        base >= pool.0 && base + count - 1 <= pool.1,
        "{name}: {held:?}"
    );
    let status = claim.status.expect("status");
    assert_eq!(
        status.ports.as_deref(),
        Some(format!("{base}-{}", base + count - 1).as_str())
    );
    assert_eq!(
        claim.spec.host_port_name.as_deref(),
        Some(HostPort::name_for_port(base).as_str())
    );
    held
}

#[tokio::test]
async fn blocks_of_2_10_and_100_bind_whole_and_release_as_one() {
    let env = Env::new("blocks").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = block_class(&env, "media", &[(16200, 16399)], 100).await;
    for (name, count) in [("two", 2), ("ten", 10), ("hundred", 100)] {
        create(&env, &block_claim(name, &class, json!({"count": count})))
            .await
            .expect("claim");
    }
    let mut all = BTreeSet::new();
    for (name, count) in [("two", 2), ("ten", 10), ("hundred", 100)] {
        let held = assert_whole_block(&env, name, count, (16200, 16399)).await;
        assert!(all.is_disjoint(&held), "{name} overlaps: {held:?}");
        all.extend(held);
    }
    // Released as one: every HostPort of the block goes.
    let hundred = env.bound("hundred").await;
    env.claims()
        .delete("hundred", &DeleteParams::default())
        .await
        .expect("delete");
    env.wait_for("the block released", WAIT, || async {
        let gone = env.claims().get_opt("hundred").await.ok()?.is_none();
        (gone && held_by(&env, &hundred).await.is_empty()).then_some(())
    })
    .await;
    env.cleanup().await;
}

/// Whether an aligned block of `count` free ports is left in `pool`, given the ports every
/// HostPort holds.
fn room_for(pool: (u16, u16), count: u16, alignment: u16, used: &BTreeSet<u16>) -> bool {
    (pool.0..=pool.1 + 1 - count)
        .filter(|base| base.is_multiple_of(alignment))
        .any(|base| (base..base + count).all(|p| !used.contains(&p)))
}

#[tokio::test]
async fn racing_blocks_of_two_controllers_never_overlap_and_waiters_really_do_not_fit() {
    let env = Env::new("blocks-race").await;
    let _first = env.start_controller(RunOptions::default());
    let _second = env.start_controller(RunOptions::default());
    // 60 ports, one held in the middle by a reservation: room for at most 14 blocks of 4
    // (aligned to 2); fifteen claims race for them through two controllers.
    let pool = (16400, 16459);
    let class = block_class(&env, "media", &[(16400, 16459)], 10).await;
    let reservation: HostPort = serde_json::from_value(json!({
        "metadata": {"name": "port-16429"}, "spec": {"port": 16429, "hostPortClassName": class}
    }))
    .expect("reservation");
    env.host_ports()
        .create(&PostParams::default(), &reservation)
        .await
        .expect("reservation");
    let creates = (0..15).map(|i| {
        let claim = block_claim(
            &format!("rtp-{i}"),
            &class,
            json!({"count": 4, "alignment": 2}),
        );
        let env = &env;
        async move { create(env, &claim).await.expect("claim") }
    });
    futures::future::join_all(creates).await;
    // Settled: every claim Bound to exactly its block or waiting for room with nothing held
    // (HostPorts a losing controller made meanwhile are given back). A waiter may need the
    // allocator's 60 s recheck, after the race itself, which on a real API server sharing two
    // cores takes tens of seconds: 90 s timed out there once.
    let (bound, waiting) = env
        .wait_for(
            "every claim bound to its block or waiting",
            SETTLE_WAIT,
            || async {
                let claims = env.claims().list(&ListParams::default()).await.ok()?.items;
                let (bound, waiting): (Vec<_>, Vec<_>) = claims
                    .into_iter()
                    .partition(|c| c.phase() == ClaimPhase::Bound);
                let mut settled = bound.len() + waiting.len() == 15
                    && waiting.iter().all(|c| {
                        c.bound_condition()
                            .is_some_and(|b| b.reason == "PoolExhausted")
                    });
                for claim in &bound {
                    let base = claim.bound_port()?;
                    settled &= held_by(&env, claim).await == (base..base + 4).collect();
                }
                for claim in &waiting {
                    settled &= held_by(&env, claim).await.is_empty();
                }
                // A waiter is retried when ports free up (at the latest after the
                // allocator's recheck): settled once none fits what the bound ones hold.
                let mut used: BTreeSet<u16> = BTreeSet::from([16429]);
                for claim in &bound {
                    used.extend(held_by(&env, claim).await);
                }
                settled &= !room_for(pool, 4, 2, &used);
                settled.then_some((bound, waiting))
            },
        )
        .await;
    let mut used: BTreeSet<u16> = BTreeSet::from([16429]);
    for claim in &bound {
        let held = held_by(&env, claim).await;
        let base = claim.bound_port().expect("bound");
        assert_eq!(held, (base..base + 4).collect(), "{}", claim.name_any());
        assert_eq!(base % 2, 0, "aligned");
        assert!(used.is_disjoint(&held), "overlap: {held:?} and {used:?}");
        used.extend(&held);
    }
    for claim in &waiting {
        assert!(held_by(&env, claim).await.is_empty(), "no half block");
    }
    assert!(!waiting.is_empty(), "15 blocks of 4 cannot fit in 59 ports");
    // A block frees: a waiting claim gets one.
    env.claims()
        .delete(&bound[0].name_any(), &DeleteParams::default())
        .await
        .expect("delete");
    env.bound(&waiting[0].name_any()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_block_half_made_by_a_crash_is_completed_in_place() {
    let env = Env::new("blocks-crash").await;
    let class = block_class(&env, "media", &[(16460, 16479)], 8).await;
    // The claim exists before any controller runs; then "a crashed controller" made 3 of
    // its 5 HostPorts (16466-16468) and nothing else.
    let claim = create(&env, &block_claim("rtp", &class, json!({"count": 5})))
        .await
        .expect("claim");
    let uid = claim.uid().expect("uid");
    for port in 16466..=16468 {
        let host_port: HostPort = serde_json::from_value(json!({
            "metadata": {"name": format!("port-{port}")},
            "spec": {"port": port, "hostPortClassName": class,
                     "claimRef": {"namespace": env.namespace, "name": "rtp", "uid": uid}}
        }))
        .expect("HostPort");
        env.host_ports()
            .create(&PostParams::default(), &host_port)
            .await
            .expect("a half-made block");
    }
    let _controller = env.start_controller(RunOptions::default());
    let held = assert_whole_block(&env, "rtp", 5, (16460, 16479)).await;
    assert_eq!(held, (16466..=16470).collect(), "completed where it began");
    env.cleanup().await;
}

#[tokio::test]
async fn block_requests_the_class_does_not_allow_or_that_cross_pools_are_refused() {
    let env = Env::new("blocks-refused").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = block_class(&env, "media", &[(16480, 16489), (16490, 16499)], 8).await;
    let message = hostport_e2e::denial_message::<HostPortClaim>;
    let too_large = message(create(&env, &block_claim("big", &class, json!({"count": 9}))).await);
    assert!(
        too_large.contains("its spec.maxBlockSize is 8"),
        "{too_large}"
    );
    let crossing = message(
        create(
            &env,
            &block_claim("cross", &class, json!({"count": 4, "port": 16488})),
        )
        .await,
    );
    assert!(
        crossing.contains("do not lie inside one pool"),
        "{crossing}"
    );
    // Bound, then edited: refused.
    create(&env, &block_claim("rtp", &class, json!({"count": 4})))
        .await
        .expect("claim");
    env.bound("rtp").await;
    let edit = env
        .claims()
        .patch(
            "rtp",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"count": 2}})),
        )
        .await;
    let edit = message(edit);
    assert!(edit.contains("count"), "{edit}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_block_costs_at_most_2n_plus_2_writes() {
    let env = Env::new("blocks-writes").await;
    let Some(server) = env.server() else {
        eprintln!("skipped: counts requests on the in-process API server");
        return;
    };
    let _controller = env.start_controller(RunOptions::default());
    let class = block_class(&env, "media", &[(16500, 16519)], 10).await;
    // The finalizer is the claim webhook's write, not the binding's: the claim carries it.
    let mut claim = block_claim("rtp", &class, json!({"count": 10}));
    claim.metadata.finalizers = Some(vec![hostport_api::FINALIZER.into()]);
    server.reset_counts();
    create(&env, &claim).await.expect("claim");
    assert_whole_block(&env, "rtp", 10, (16500, 16519)).await;
    // Settled: nothing more is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let controller = hostport_e2e::harness::controller_user().username;
    let writes = server.writes(|user, resource| {
        user == controller
            && [
                "hostports",
                "hostports/status",
                "hostportclaims",
                "hostportclaims/status",
            ]
            .contains(&resource)
    });
    assert!(writes <= 2 * 10 + 2, "{writes} writes for a block of 10");
    env.cleanup().await;
}

/// `(hostPort, containerPort, protocol)` of every port of `pod`'s first container.
fn declared(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<(i32, i32, String)> {
    pod.spec.as_ref().expect("spec").containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.host_port.unwrap_or_default(),
                p.container_port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect()
}

/// A media server: container port `rtp` (UDP 10000); `annotations` name its claim or class.
fn media_pod(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"app": "media"}, "annotations": annotations},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "media", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "rtp", "containerPort": 10000, "protocol": "UDP"}],
            "env": [
                {"name": "RTP_BASE", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.annotations['port.hostport.rmb938.com/rtp']"}}},
                {"name": "RTP_COUNT", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.annotations['count.hostport.rmb938.com/rtp']"}}}]}]}
    })
}

#[tokio::test]
async fn pods_get_their_whole_block_and_statefulset_replicas_each_keep_theirs() {
    let env = Env::new("blocks-pods").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = block_class(&env, "media", &[(16520, 16579)], 10).await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);

    // A hand-made block claim: the pod gets every port of it, and the count.
    create(&env, &block_claim("rtp", &class, json!({"count": 4})))
        .await
        .expect("claim");
    let base = i32::from(env.bound("rtp").await.bound_port().expect("bound"));
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(media_pod(
        "media",
        json!({"claim.hostport.rmb938.com/rtp": "rtp"}),
    ))
    .expect("pod");
    let stored = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("admitted");
    let expected: Vec<(i32, i32, String)> = (0..4)
        .map(|i| (base + i, 10000 + i, "UDP".to_owned()))
        .collect();
    assert_eq!(declared(&stored), expected);
    assert_eq!(
        stored
            .annotations()
            .get("count.hostport.rmb938.com/rtp")
            .map(String::as_str),
        Some("4")
    );

    // A StatefulSet of three, each replica a block of 5 (even base) made for it.
    let template = media_pod(
        "media",
        json!({"class.hostport.rmb938.com/rtp": class,
               "count.hostport.rmb938.com/rtp": "5",
               "alignment.hostport.rmb938.com/rtp": "2"}),
    );
    let set: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "sfu"},
        "spec": {"replicas": 3, "serviceName": "sfu", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "media"}},
                 "template": {"metadata": {"labels": template["metadata"]["labels"],
                                           "annotations": template["metadata"]["annotations"]},
                              "spec": template["spec"]}}
    }))
    .expect("statefulset");
    let sets: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    let set = sets
        .create(&PostParams::default(), &set)
        .await
        .expect("statefulset");
    let mut taken: BTreeSet<i32> = (base..base + 4).collect();
    let mut first_block = vec![];
    for ordinal in 0..3 {
        let replica = hostport_e2e::workloads::statefulset_pod(&env, &set, ordinal, None).await;
        let ports = declared(&replica);
        assert_eq!(ports.len(), 5, "{ports:?}");
        let first = ports[0].0;
        assert_eq!(first % 2, 0, "aligned");
        for (i, (host, container, _)) in ports.iter().enumerate() {
            let i = i32::try_from(i).unwrap_or_default();
            assert_eq!((*host, *container), (first + i, 10000 + i));
            assert!(taken.insert(*host), "port {host} given twice");
        }
        if ordinal == 0 {
            first_block = ports;
        }
    }
    // Replica 0 recreated: the same block.
    let zero = pods.get("sfu-0").await.expect("sfu-0");
    pods.delete("sfu-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
    if env.server().is_some() {
        env.wait_for("sfu-0 gone", WAIT, || async {
            matches!(pods.get_opt("sfu-0").await, Ok(None)).then_some(())
        })
        .await;
    }
    let again =
        hostport_e2e::workloads::statefulset_pod(&env, &set, 0, zero.metadata.uid.as_deref()).await;
    assert_eq!(declared(&again), first_block, "sfu-0 keeps its block");
    env.cleanup().await;
}

#[tokio::test]
async fn blocks_of_2_10_and_100_racing_for_one_pool_are_all_or_nothing() {
    let env = Env::new("blocks-mixed").await;
    let _first = env.start_controller(RunOptions::default());
    let _second = env.start_controller(RunOptions::default());
    // 150 ports; 2 + 10 + 100 + 10 + 2 + 100 asked at once: not all of them fit.
    let pool = (17000, 17149);
    let class = block_class(&env, "media", &[(17000, 17149)], 100).await;
    let sizes: [(&str, u16); 6] = [
        ("a2", 2),
        ("b10", 10),
        ("c100", 100),
        ("d10", 10),
        ("e2", 2),
        ("f100", 100),
    ];
    let creates = sizes.iter().map(|(name, count)| {
        let claim = block_claim(name, &class, json!({"count": count}));
        let env = &env;
        async move { create(env, &claim).await.expect("claim") }
    });
    futures::future::join_all(creates).await;
    let settled = env
        .wait_for(
            "every block whole or waiting with nothing",
            WAIT,
            || async {
                let mut held_all = vec![];
                for (name, count) in &sizes {
                    let claim = env.claims().get(name).await.ok()?;
                    let held = held_by(&env, &claim).await;
                    match claim.bound_port() {
                        Some(base) if held == (base..base + count).collect() => {
                            held_all.push((*name, held));
                        }
                        None if held.is_empty()
                            && claim
                                .bound_condition()
                                .is_some_and(|c| c.reason == "PoolExhausted") => {}
                        _ => return None,
                    }
                }
                // Settled once no waiting block fits what the bound ones hold (a waiter is
                // retried when ports free up, at the latest after the allocator's recheck).
                let used: BTreeSet<u16> = held_all.iter().flat_map(|(_, h)| h.clone()).collect();
                let waiting_fits = sizes
                    .iter()
                    .filter(|(name, _)| !held_all.iter().any(|(bound, _)| bound == name))
                    .any(|(_, count)| room_for(pool, *count, 1, &used));
                (!waiting_fits).then_some(held_all)
            },
        )
        .await;
    let mut used = BTreeSet::new();
    for (name, held) in &settled {
        assert!(used.is_disjoint(held), "{name} overlaps");
        assert!(held.iter().all(|p| (pool.0..=pool.1).contains(p)), "{name}");
        used.extend(held);
    }
    // Two controllers with books of their own may leave the pool fragmented, so which blocks
    // bind is not fixed; that 2 + 10 + 100 + 10 + 2 + 100 cannot all fit in 150 is.
    let bound: Vec<&str> = settled.iter().map(|(name, _)| *name).collect();
    assert!(bound.len() < sizes.len(), "{bound:?}");
    env.cleanup().await;
}
