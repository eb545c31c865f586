use super::*;
use hostport_api::PortPolicy;
use serde_json::json;

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("pod")
}

/// The Go project's README pod, with extra ports as a case needs.
fn readme_pod(annotations: Value, ports: Value) -> Pod {
    pod(json!({
        "metadata": {"name": "echo", "namespace": "default", "annotations": annotations},
        "spec": {"containers": [{
            "name": "echo", "image": "k8s.gcr.io/echoserver:1.4", "ports": ports,
            "env": [{"name": "MY_HOST_PORT", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['port.hostport.rmb938.com/web']"}}}]
        }]}
    }))
}

/// The claims `echo-web` and `game` in `state`; any other is missing.
fn claims(state: ClaimState) -> ClaimStates {
    ["echo-web", "game"]
        .into_iter()
        .map(|name| (name.to_owned(), state.clone()))
        .collect()
}

/// A verified binding to `port`.
fn bound(port: u16) -> ClaimState {
    ClaimState::Bound(Binding {
        port,
        claim_uid: "uid-1".into(),
        host_port: format!("port-{port}"),
        policy: PortPolicy::Mapped,
        count: 1,
        host_network: false,
    })
}

fn admit(pod: &Pod, host_network_allowed: bool, states: ClaimStates) -> Verdict {
    admit_create(&NewPod::new(pod), host_network_allowed, &[], &states)
}

fn apply(pod: &Pod, verdict: &Verdict) -> Value {
    let mut value = serde_json::to_value(pod).expect("json");
    if let Verdict::Patch(patch) = verdict {
        json_patch::patch(&mut value, patch).expect("patch applies");
    }
    value
}

#[test]
fn readme_pod_gets_its_host_port_and_annotation() {
    let p = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web"}),
        json!([{"name": "web", "containerPort": 8080}]),
    );
    let verdict = admit(&p, false, claims(bound(9000)));
    let Verdict::Patch(patch) = &verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(patch.0.len(), 2, "minimal: hostPort and the annotation");
    let patched = apply(&p, &verdict);
    assert_eq!(
        patched["spec"]["containers"][0]["ports"][0]["hostPort"],
        9000
    );
    assert_eq!(
        patched["metadata"]["annotations"]["port.hostport.rmb938.com/web"],
        "9000"
    );
}

#[test]
fn two_ports_share_one_claim() {
    let p = readme_pod(
        json!({"claim.hostport.rmb938.com/game-tcp": "game", "claim.hostport.rmb938.com/game-udp": "game"}),
        json!([{"name": "game-tcp", "containerPort": 7777, "protocol": "TCP"}, {"name": "game-udp", "containerPort": 7777, "protocol": "UDP"}]),
    );
    let patched = apply(&p, &admit(&p, false, claims(bound(27015))));
    assert_eq!(
        patched["spec"]["containers"][0]["ports"][0]["hostPort"],
        27015
    );
    assert_eq!(
        patched["spec"]["containers"][0]["ports"][1]["hostPort"],
        27015
    );
    assert_eq!(
        patched["metadata"]["annotations"]["port.hostport.rmb938.com/game-udp"],
        "27015"
    );
}

#[test]
fn sidecar_ports_can_be_claimed_but_plain_init_containers_cannot() {
    let p = pod(json!({
        "metadata": {"name": "x", "annotations": {"claim.hostport.rmb938.com/proxy": "echo-web"}},
        "spec": {
            "initContainers": [
                {"name": "setup", "image": "i", "ports": [{"name": "setup", "containerPort": 1}]},
                {"name": "proxy", "image": "p", "restartPolicy": "Always", "ports": [{"name": "proxy", "containerPort": 8443}]}
            ],
            "containers": [{"name": "app", "image": "a"}]
        }
    }));
    let patched = apply(&p, &admit(&p, false, claims(bound(9001))));
    assert_eq!(
        patched["spec"]["initContainers"][1]["ports"][0]["hostPort"],
        9001
    );
}

#[test]
fn pods_without_claims_or_host_ports_pass_unchanged() {
    let p = readme_pod(
        json!({"other": "x"}),
        json!([{"name": "web", "containerPort": 8080}]),
    );
    assert_eq!(
        admit(&p, false, claims(ClaimState::Missing)),
        Verdict::Allow
    );
    let bare = pod(
        json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "a", "image": "a"}]}}),
    );
    assert_eq!(
        admit(&bare, false, claims(ClaimState::Missing)),
        Verdict::Allow
    );
}

#[test]
fn already_correct_host_port_needs_only_the_annotation() {
    let p = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web"}),
        json!([{"name": "web", "containerPort": 8080, "hostPort": 9000}]),
    );
    let Verdict::Patch(patch) = admit(&p, false, claims(bound(9000))) else {
        panic!()
    };
    assert_eq!(patch.0.len(), 1);
}

#[test]
fn every_denial_names_the_problem_and_the_fix() {
    let web = json!([{"name": "web", "containerPort": 8080}]);
    let cases: Vec<(Pod, ClaimState, &str, &str)> = vec![
        (
            readme_pod(
                json!({"claim.hostport.rmb938.com/": "echo-web"}),
                web.clone(),
            ),
            ClaimState::Missing,
            "InvalidAnnotation",
            "has no port name after the prefix",
        ),
        (
            readme_pod(json!({"claim.hostport.rmb938.com/web": ""}), web.clone()),
            ClaimState::Missing,
            "InvalidAnnotation",
            "has an empty value",
        ),
        (
            readme_pod(
                json!({"claim.hostport.rmb938.com/http": "echo-web"}),
                web.clone(),
            ),
            bound(9000),
            "UnknownPortName",
            "no container port of the pod has that name: add `name: http`",
        ),
        (
            pod(
                json!({"metadata": {"name": "d", "annotations": {"claim.hostport.rmb938.com/web": "echo-web"}},
                "spec": {"containers": [{"name": "a", "image": "a", "ports": [{"name": "web", "containerPort": 1}]},
                                        {"name": "b", "image": "b", "ports": [{"name": "web", "containerPort": 2}]}]}}),
            ),
            bound(9000),
            "DuplicatePortName",
            "which 2 ports share (spec.containers[0].ports[0], spec.containers[1].ports[0])",
        ),
        (
            readme_pod(
                json!({"claim.hostport.rmb938.com/web": "nope"}),
                web.clone(),
            ),
            ClaimState::Missing,
            "ClaimNotFound",
            "names HostPortClaim \"nope\", which does not exist",
        ),
        (
            readme_pod(
                json!({"claim.hostport.rmb938.com/web": "echo-web"}),
                web.clone(),
            ),
            ClaimState::Pending {
                why: Some("PoolExhausted: all 2 ports are in use".into()),
            },
            "ClaimNotBound",
            "is not Bound yet (PoolExhausted: all 2 ports are in use): create the pod again once",
        ),
        (
            readme_pod(
                json!({"claim.hostport.rmb938.com/web": "echo-web"}),
                web.clone(),
            ),
            ClaimState::Deleting,
            "ClaimDeleting",
            "which is being deleted",
        ),
        (
            readme_pod(
                json!({}),
                json!([{"name": "web", "containerPort": 8080, "hostPort": 8080}]),
            ),
            ClaimState::Missing,
            "HostPortWithoutClaim",
            "spec.containers[0].ports[0] (port \"web\") sets hostPort 8080 without a claim",
        ),
        (
            readme_pod(
                json!({}),
                json!([{"containerPort": 8080, "hostPort": 8080}]),
            ),
            ClaimState::Missing,
            "HostPortWithoutClaim",
            "spec.containers[0].ports[0] sets hostPort 8080 without a claim: in this namespace",
        ),
        (
            readme_pod(
                json!({"claim.hostport.rmb938.com/web": "echo-web"}),
                json!([{"name": "web", "containerPort": 8080, "hostPort": 1234}]),
            ),
            bound(9000),
            "HostPortMismatch",
            "sets hostPort 1234, but HostPortClaim \"echo-web\" is bound to port 9000",
        ),
        (
            readme_pod(json!({"port.hostport.rmb938.com/web": "9000"}), web.clone()),
            ClaimState::Missing,
            "StrayPortAnnotation",
            "annotation \"port.hostport.rmb938.com/web\" is written by the hostport webhook",
        ),
    ];
    for (pod, state, reason, message) in cases {
        match admit(&pod, false, claims(state)) {
            Verdict::Deny {
                reason: got,
                message: text,
            } => {
                assert_eq!(got, reason, "{text}");
                assert!(text.contains(message), "{reason}: {text}");
            }
            other => panic!("{reason}: expected a denial, got {other:?}"),
        }
    }
}

#[test]
fn host_network_pods_are_refused_unless_the_namespace_allows_them() {
    let p = pod(json!({
        "metadata": {"name": "x"},
        "spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "a"}]}
    }));
    let Verdict::Deny { reason, message } = admit(&p, false, claims(ClaimState::Missing)) else {
        panic!("hostNetwork admitted")
    };
    assert_eq!(reason, "HostNetwork");
    assert!(
        message.contains("claims no port, so it would use any host port of its node"),
        "{message}"
    );
    assert!(message.contains(ALLOW_HOST_NETWORK_ANNOTATION), "{message}");
    assert_eq!(admit(&p, true, claims(ClaimState::Missing)), Verdict::Allow);
}

#[test]
fn an_unverified_binding_injects_nothing() {
    let p = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web"}),
        json!([{"name": "web", "containerPort": 8080}]),
    );
    let state = ClaimState::Unverified {
        why: "HostPort \"port-9000\" is bound to another claim".into(),
    };
    let Verdict::Deny { reason, message } = admit(&p, false, claims(state)) else {
        panic!("admitted")
    };
    assert_eq!(reason, "ClaimNotVerified");
    assert!(message.contains("is bound to another claim"), "{message}");
}

#[test]
fn updates_may_not_touch_hostport_annotations() {
    let old = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web", "port.hostport.rmb938.com/web": "9000"}),
        json!([]),
    );
    let mut relabelled = old.clone();
    relabelled.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
    assert_eq!(admit_update(&old, &relabelled, false), Verdict::Allow);
    let mut changed = old.clone();
    changed
        .metadata
        .annotations
        .as_mut()
        .expect("annotations")
        .insert("port.hostport.rmb938.com/web".into(), "9001".into());
    let Verdict::Deny { message, .. } = admit_update(&old, &changed, true) else {
        panic!()
    };
    assert!(
        message.contains("cannot change once the pod exists (was \"9000\", now \"9001\")"),
        "{message}"
    );
    let mut removed = old.clone();
    removed
        .metadata
        .annotations
        .as_mut()
        .expect("annotations")
        .remove("claim.hostport.rmb938.com/web");
    assert!(matches!(
        admit_update(&old, &removed, true),
        Verdict::Deny { .. }
    ));
}

/// The public address a program reads is the publisher's word: a tenant can neither forge it
/// on a new pod nor change it later; a publisher may change it and nothing else of ours.
#[test]
fn external_annotations_are_the_publishers_alone() {
    let old = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web", "port.hostport.rmb938.com/web": "9000"}),
        json!([]),
    );
    let mut published = old.clone();
    published
        .metadata
        .annotations
        .as_mut()
        .expect("annotations")
        .insert(
            "external.hostport.rmb938.com/web".into(),
            "198.51.100.1:9000".into(),
        );
    assert_eq!(admit_update(&old, &published, true), Verdict::Allow);
    let Verdict::Deny { reason, message } = admit_update(&old, &published, false) else {
        panic!("a tenant wrote the public address")
    };
    assert_eq!(reason, "ExternalAnnotationReserved");
    assert!(
        message.contains("\"external.hostport.rmb938.com/web\" is written by hostport-publisher only (was unset, now \"198.51.100.1:9000\")"),
        "{message}"
    );
    let Verdict::Deny { .. } = admit_update(&published, &old, false) else {
        panic!("a tenant removed it")
    };
    let mut also_port = published.clone();
    also_port
        .metadata
        .annotations
        .as_mut()
        .expect("annotations")
        .insert("port.hostport.rmb938.com/web".into(), "9001".into());
    let Verdict::Deny { reason, .. } = admit_update(&old, &also_port, true) else {
        panic!("a publisher changed the port annotation")
    };
    assert_eq!(reason, "AnnotationChanged");
    // On a new pod (a copied manifest): refused, whoever creates it.
    let copied = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web",
               "external.hostport.rmb938.com/web": "203.0.113.66:9000"}),
        json!([]),
    );
    let Verdict::Deny { reason, message } = admit(&copied, false, claims(bound(9000))) else {
        panic!("admitted a forged public address")
    };
    assert_eq!(reason, "ExternalAnnotationReserved");
    assert!(message.contains("remove it from the pod"), "{message}");
}

#[test]
fn a_claim_read_again_after_a_wait_is_used_only_if_its_binding_stands() {
    let before = Binding {
        port: 37000,
        claim_uid: "uid-1".into(),
        host_port: "port-37000".into(),
        policy: PortPolicy::Mapped,
        count: 1,
        host_network: false,
    };
    assert_eq!(
        ClaimState::recheck(&before, ClaimState::Bound(before.clone())),
        ClaimState::Bound(before.clone())
    );
    assert_eq!(
        ClaimState::recheck(&before, ClaimState::Deleting),
        ClaimState::Deleting
    );
    let changed = |now: ClaimState| match ClaimState::recheck(&before, now) {
        ClaimState::Changed { why } => why,
        other => panic!("expected Changed, got {other:?}"),
    };
    let gone = changed(ClaimState::Missing);
    assert!(
        gone.contains("HostPort \"port-37000\" (port 37000)") && gone.contains("was deleted"),
        "{gone}"
    );
    let recreated = changed(ClaimState::Bound(Binding {
        claim_uid: "uid-2".into(),
        ..before.clone()
    }));
    assert!(recreated.contains("created again"), "{recreated}");
    let moved = changed(ClaimState::Bound(Binding {
        port: 37001,
        host_port: "port-37001".into(),
        ..before.clone()
    }));
    assert!(moved.contains("port 37001"), "{moved}");
    let pending = changed(ClaimState::Pending { why: None });
    assert!(pending.contains("not Bound now"), "{pending}");
    let unverified = changed(ClaimState::Unverified {
        why: "its HostPort \"port-37000\" does not exist".into(),
    });
    assert!(unverified.contains("does not exist"), "{unverified}");
    // The denial names the annotation, the claim and the fix.
    let p = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web"}),
        json!([{"name": "web", "containerPort": 8080}]),
    );
    let verdict = admit(&p, false, claims(ClaimState::Changed { why: gone }));
    let Verdict::Deny { reason, message } = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(reason, reasons::CLAIM_CHANGED);
    assert!(
        message.contains("\"claim.hostport.rmb938.com/web\"")
            && message.contains("\"echo-web\"")
            && message.contains("create the pod again"),
        "{message}"
    );
}

/// A verified binding to `port` with portPolicy Passthrough.
fn bound_passthrough(port: u16) -> ClaimState {
    ClaimState::Bound(Binding {
        port,
        claim_uid: "uid-1".into(),
        host_port: format!("port-{port}"),
        policy: PortPolicy::Passthrough,
        count: 1,
        host_network: false,
    })
}

#[test]
fn a_passthrough_port_listens_on_its_host_port_and_its_probes_follow() {
    let p = pod(json!({
        "metadata": {"name": "srcds", "annotations": {
            "claim.hostport.rmb938.com/game": "game",
            "claim.hostport.rmb938.com/game-udp": "game"}},
        "spec": {"containers": [{
            "name": "srcds", "image": "s",
            "ports": [{"name": "game", "containerPort": 27015},
                      {"name": "game-udp", "containerPort": 27015, "protocol": "UDP"},
                      {"name": "metrics", "containerPort": 9100}],
            "livenessProbe": {"tcpSocket": {"port": 27015}},
            "readinessProbe": {"httpGet": {"port": "game", "path": "/"}},
            "startupProbe": {"httpGet": {"port": 9100, "path": "/"}},
            "env": [{"name": "PORT", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['port.hostport.rmb938.com/game']"}}}]}]}
    }));
    let patched = apply(&p, &admit(&p, false, claims(bound_passthrough(31000))));
    let container = &patched["spec"]["containers"][0];
    for index in [0, 1] {
        assert_eq!(container["ports"][index]["containerPort"], 31000);
        assert_eq!(container["ports"][index]["hostPort"], 31000);
    }
    assert_eq!(container["ports"][0]["name"], "game", "the name stays");
    assert_eq!(container["ports"][2]["containerPort"], 9100, "unclaimed");
    assert_eq!(container["livenessProbe"]["tcpSocket"]["port"], 31000);
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "game");
    assert_eq!(container["startupProbe"]["httpGet"]["port"], 9100);
    assert_eq!(
        patched["metadata"]["annotations"]["port.hostport.rmb938.com/game"],
        "31000"
    );
}

#[test]
fn a_passthrough_port_already_on_its_number_and_mapped_ports_keep_their_container_port() {
    let p = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web"}),
        json!([{"name": "web", "containerPort": 31000}]),
    );
    let verdict = admit(&p, false, claims(bound_passthrough(31000)));
    let Verdict::Patch(patch) = &verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(patch.0.len(), 2, "hostPort and the annotation only");
    let mapped = readme_pod(
        json!({"claim.hostport.rmb938.com/web": "echo-web"}),
        json!([{"name": "web", "containerPort": 8080}]),
    );
    let patched = apply(&mapped, &admit(&mapped, false, claims(bound(31000))));
    assert_eq!(
        patched["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
}

#[test]
fn a_host_network_pod_gets_container_port_equal_to_its_host_port() {
    let p = pod(json!({
        "metadata": {"name": "db", "annotations": {"claim.hostport.rmb938.com/sql": "game"}},
        "spec": {"hostNetwork": true, "containers": [{"name": "db", "image": "d",
            "ports": [{"name": "sql", "containerPort": 5432}]}]}
    }));
    let patched = apply(&p, &admit(&p, true, claims(bound(31001))));
    let port = &patched["spec"]["containers"][0]["ports"][0];
    assert_eq!(
        (port["containerPort"].clone(), port["hostPort"].clone()),
        (json!(31001), json!(31001))
    );
}

#[test]
fn port_policy_annotations_go_beside_a_class_annotation_only() {
    let with = |annotations: Value| {
        readme_pod(annotations, json!([{"name": "web", "containerPort": 8080}]))
    };
    for (annotations, expected) in [
        (
            json!({"claim.hostport.rmb938.com/web": "echo-web",
                   "port-policy.hostport.rmb938.com/web": "Passthrough"}),
            "whose spec.portPolicy decides",
        ),
        (
            json!({"port-policy.hostport.rmb938.com/web": "Passthrough"}),
            "gets no claim made for the pod",
        ),
        (
            json!({"class.hostport.rmb938.com/web": "games",
                   "port-policy.hostport.rmb938.com/web": "passthrough"}),
            "use \"Mapped\" or \"Passthrough\"",
        ),
    ] {
        let verdict = admit(&with(annotations.clone()), false, claims(bound(31000)));
        assert!(
            matches!(&verdict, Verdict::Deny { message, .. } if message.contains(expected)),
            "{annotations}: {verdict:?}"
        );
    }
}

#[test]
fn the_port_policy_annotation_is_fixed_once_the_pod_exists() {
    let before = readme_pod(
        json!({"class.hostport.rmb938.com/web": "games", "port.hostport.rmb938.com/web": "31000"}),
        json!([]),
    );
    let mut after = before.clone();
    after.metadata.annotations.get_or_insert_default().insert(
        "port-policy.hostport.rmb938.com/web".into(),
        "Passthrough".into(),
    );
    assert!(matches!(
        admit_update(&before, &after, false),
        Verdict::Deny { reason, .. } if reason == reasons::ANNOTATION_CHANGED
    ));
}

/// A verified binding to a block of `count` ports from `port`.
fn bound_block(port: u16, count: u16, policy: PortPolicy) -> ClaimState {
    ClaimState::Bound(Binding {
        port,
        claim_uid: "uid-1".into(),
        host_port: format!("port-{port}"),
        policy,
        count,
        host_network: false,
    })
}

#[test]
fn a_block_claim_gives_the_pod_one_port_per_port_and_the_count() {
    let p = pod(json!({
        "metadata": {"name": "media", "annotations": {"claim.hostport.rmb938.com/rtp": "game"}},
        "spec": {"containers": [{"name": "media", "image": "m",
            "ports": [{"name": "rtp", "containerPort": 10000, "protocol": "UDP"}]}]}
    }));
    let patched = apply(
        &p,
        &admit(&p, false, claims(bound_block(31000, 4, PortPolicy::Mapped))),
    );
    let ports = patched["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .clone();
    let pairs: Vec<(i64, i64, String)> = ports
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_i64().unwrap_or_default(),
                p["hostPort"].as_i64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        (0..4)
            .map(|i| (10000 + i, 31000 + i, "UDP".to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(ports[0]["name"], "rtp");
    let annotations = &patched["metadata"]["annotations"];
    assert_eq!(annotations["port.hostport.rmb938.com/rtp"], "31000");
    assert_eq!(annotations["count.hostport.rmb938.com/rtp"], "4");

    // Passthrough: the container ports are the host ports.
    let patched = apply(
        &p,
        &admit(
            &p,
            false,
            claims(bound_block(31000, 3, PortPolicy::Passthrough)),
        ),
    );
    let ports = patched["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .clone();
    for (i, port) in ports.iter().enumerate() {
        assert_eq!(port["containerPort"], port["hostPort"], "{i}");
        assert_eq!(
            port["hostPort"],
            31000 + i64::try_from(i).unwrap_or_default()
        );
    }
}

#[test]
fn block_annotations_that_lie_or_collide_are_refused() {
    let with = |annotations: Value, ports: Value| {
        pod(
            json!({"metadata": {"name": "media", "annotations": annotations},
            "spec": {"containers": [{"name": "media", "image": "m", "ports": ports}]}}),
        )
    };
    let rtp = json!([{"name": "rtp", "containerPort": 10000, "protocol": "UDP"}]);
    for (annotations, ports, expected) in [
        (
            json!({"claim.hostport.rmb938.com/rtp": "game", "count.hostport.rmb938.com/rtp": "8"}),
            rtp.clone(),
            "holds 4 port(s)",
        ),
        (
            json!({"count.hostport.rmb938.com/rtp": "4"}),
            rtp.clone(),
            "gets no claim made for the pod",
        ),
        (
            json!({"claim.hostport.rmb938.com/rtp": "game", "alignment.hostport.rmb938.com/rtp": "2"}),
            rtp.clone(),
            "a hand-made claim's spec.alignment decides",
        ),
        (
            json!({"class.hostport.rmb938.com/rtp": "media", "count.hostport.rmb938.com/rtp": "0"}),
            rtp.clone(),
            "it must be a number between 1 and 1024",
        ),
        (
            json!({"claim.hostport.rmb938.com/rtp": "game"}),
            json!([{"name": "rtp", "containerPort": 10000, "protocol": "UDP"},
                   {"name": "rtcp", "containerPort": 10001, "protocol": "UDP"}]),
            "declares it already",
        ),
        (
            json!({"claim.hostport.rmb938.com/rtp": "game"}),
            json!([{"name": "rtp", "containerPort": 65534, "protocol": "UDP"}]),
            "run past container port 65535",
        ),
    ] {
        let p = with(annotations.clone(), ports);
        let verdict = admit(&p, false, claims(bound_block(31000, 4, PortPolicy::Mapped)));
        assert!(
            matches!(&verdict, Verdict::Deny { message, .. } if message.contains(expected)),
            "{annotations}: {verdict:?}"
        );
    }
    // A count annotation that says what the claim holds is fine.
    let p = with(
        json!({"claim.hostport.rmb938.com/rtp": "game", "count.hostport.rmb938.com/rtp": "4"}),
        rtp,
    );
    assert!(matches!(
        admit(&p, false, claims(bound_block(31000, 4, PortPolicy::Mapped))),
        Verdict::Patch(_)
    ));
}

#[test]
fn a_host_network_pod_claims_from_classes_that_allow_it_and_listens_on_its_port() {
    let allowing = ClaimState::Bound(Binding {
        port: 31002,
        claim_uid: "uid-1".into(),
        host_port: "port-31002".into(),
        policy: PortPolicy::Mapped,
        count: 1,
        host_network: true,
    });
    // As the API server stores it: hostPort defaulted to containerPort.
    let p = pod(json!({
        "metadata": {"name": "db", "annotations": {"claim.hostport.rmb938.com/sql": "game"}},
        "spec": {"hostNetwork": true, "containers": [{"name": "db", "image": "d",
            "ports": [{"name": "sql", "containerPort": 5432, "hostPort": 5432}]}]}
    }));
    let patched = apply(&p, &admit(&p, false, claims(allowing)));
    let port = &patched["spec"]["containers"][0]["ports"][0];
    assert_eq!(
        (port["containerPort"].clone(), port["hostPort"].clone()),
        (json!(31002), json!(31002))
    );
    // Of a class that does not allow hostNetwork pods: refused, naming the rule.
    let verdict = admit(&p, false, claims(bound(31002)));
    assert!(
        matches!(&verdict, Verdict::Deny { reason, message }
            if *reason == reasons::HOST_NETWORK_NOT_ALLOWED && message.contains("spec.allowHostNetwork is false")),
        "{verdict:?}"
    );
    // Claiming nothing: it would use any port unseen.
    let bare = pod(json!({
        "metadata": {"name": "db"},
        "spec": {"hostNetwork": true, "containers": [{"name": "db", "image": "d"}]}
    }));
    let verdict = admit(&bare, false, claims(bound(31002)));
    assert!(
        matches!(&verdict, Verdict::Deny { reason, message }
            if *reason == reasons::HOST_NETWORK && message.contains("claims no port")),
        "{verdict:?}"
    );
    // An unclaimed port beside a claimed one: its defaulted hostPort is unclaimed.
    let extra = pod(json!({
        "metadata": {"name": "db", "annotations": {"claim.hostport.rmb938.com/sql": "game"}},
        "spec": {"hostNetwork": true, "containers": [{"name": "db", "image": "d",
            "ports": [{"name": "sql", "containerPort": 5432, "hostPort": 5432},
                      {"name": "admin", "containerPort": 8008, "hostPort": 8008}]}]}
    }));
    let verdict = admit(&extra, false, claims(bound(31002)));
    assert!(
        matches!(&verdict, Verdict::Deny { reason, .. } if *reason == reasons::HOST_PORT_WITHOUT_CLAIM),
        "{verdict:?}"
    );
}
