use super::*;
use hostport_api::{
    ClaimReference, HostPortClaimSpec, HostPortClassSpec, HostPortSpec, PortPolicy,
};

fn claim(class: &str, port: Option<i32>, bound: Option<&str>) -> HostPortClaim {
    HostPortClaim::new(
        "c",
        HostPortClaimSpec {
            host_port_class_name: class.into(),
            host_port_name: bound.map(Into::into),
            port,
            port_policy: None,
            count: None,
            alignment: None,
        },
    )
}

fn class(pools: &[(i32, i32)]) -> HostPortClass {
    HostPortClass::new("sample", HostPortClassSpec::with_pools(pools))
}

const TENANT: Requester<'static> = Requester {
    user: "system:serviceaccount:team-a:deployer",
    is_allocator: false,
    is_publisher: false,
};
const ALLOCATOR: Requester<'static> = Requester {
    user: "system:serviceaccount:hostport-system:hostport-controller",
    is_allocator: true,
    is_publisher: false,
};

fn with_finalizer(mut claim: HostPortClaim) -> HostPortClaim {
    claim.metadata.finalizers = Some(vec![FINALIZER.into()]);
    claim
}

fn denied(verdict: Verdict, expected: &str) {
    match verdict {
        Verdict::Deny { message, .. } => assert!(message.contains(expected), "{message}"),
        other => panic!("expected a denial containing {expected:?}, got {other:?}"),
    }
}

#[test]
fn claim_defaulting_adds_the_finalizer_once() {
    let fresh = claim("sample", None, None);
    let Verdict::Patch(patch) = default_claim(&fresh) else {
        panic!()
    };
    let mut value = serde_json::to_value(&fresh).expect("json");
    json_patch::patch(&mut value, &patch).expect("applies");
    assert_eq!(
        value["metadata"]["finalizers"],
        serde_json::json!(["hostport.rmb938.com"])
    );
    let mut other = fresh.clone();
    other.metadata.finalizers = Some(vec!["other".into()]);
    let Verdict::Patch(patch) = default_claim(&other) else {
        panic!()
    };
    let mut value = serde_json::to_value(&other).expect("json");
    json_patch::patch(&mut value, &patch).expect("applies");
    assert_eq!(
        value["metadata"]["finalizers"],
        serde_json::json!(["other", "hostport.rmb938.com"])
    );
    let done: HostPortClaim = serde_json::from_value(value).expect("claim");
    assert_eq!(default_claim(&done), Verdict::Allow);
}

#[test]
fn claim_rules() {
    let sample = class(&[(9000, 9500)]);
    assert_eq!(
        validate_claim(
            &claim("sample", Some(9001), None),
            None,
            Some(&sample),
            TENANT,
            None
        ),
        Verdict::Allow
    );
    assert_eq!(
        validate_claim(&claim("later", Some(20000), None), None, None, TENANT, None),
        Verdict::Allow,
        "class checked when it exists"
    );
    denied(
        validate_claim(
            &claim("sample", Some(20000), None),
            None,
            Some(&sample),
            TENANT,
            None,
        ),
        "spec.port 20000 is outside the pools of HostPortClass \"sample\" (9000-9500)",
    );
    denied(
        validate_claim(&claim("sample", Some(0), None), None, None, TENANT, None),
        "spec.port is 0",
    );
    denied(
        validate_claim(&claim("", None, None), None, None, TENANT, None),
        "spec.hostPortClassName is empty",
    );
    denied(
        validate_claim(
            &claim("other", None, None),
            Some(&claim("sample", None, None)),
            None,
            TENANT,
            None,
        ),
        "spec.hostPortClassName cannot change (was \"sample\", now \"other\")",
    );
    denied(
        validate_claim(
            &claim("sample", None, Some("port-2")),
            Some(&claim("sample", None, Some("port-1"))),
            None,
            TENANT,
            None,
        ),
        "or keep it \"port-1\"",
    );
    assert_eq!(
        validate_claim(
            &claim("sample", None, Some("port-2")),
            Some(&claim("sample", None, Some("port-1"))),
            None,
            ALLOCATOR,
            None
        ),
        Verdict::Allow,
        "the allocator re-points a claim whose HostPort is gone"
    );
    denied(
        validate_claim(
            &claim("sample", Some(9001), None),
            Some(&claim("sample", None, None)),
            None,
            TENANT,
            None,
        ),
        "spec.port cannot change",
    );
    assert_eq!(
        validate_claim(
            &claim("sample", None, Some("port-1")),
            Some(&claim("sample", None, None)),
            None,
            ALLOCATOR,
            None
        ),
        Verdict::Allow,
        "binding is the allocator's"
    );
}

#[test]
fn passthrough_is_the_class_admins_decision_and_fixed_once_asked() {
    let mut passthrough = claim("sample", None, None);
    passthrough.spec.port_policy = Some(PortPolicy::Passthrough);
    let plain = class(&[(9000, 9500)]);
    let verdict = validate_claim(&passthrough, None, Some(&plain), TENANT, None);
    assert!(
        matches!(&verdict, Verdict::Deny { reason, .. } if *reason == reasons::PASSTHROUGH_NOT_ALLOWED),
        "{verdict:?}"
    );
    denied(
        verdict,
        "HostPortClaim /c: port policy Passthrough is not allowed by HostPortClass \"sample\" (its spec.allowPassthrough is false",
    );
    let mut allowing = plain.clone();
    allowing.spec.allow_passthrough = true;
    assert_eq!(
        validate_claim(&passthrough, None, Some(&allowing), TENANT, None),
        Verdict::Allow
    );
    // Once made, the policy stays: pods already use the port as it was.
    let mut mapped = passthrough.clone();
    mapped.spec.port_policy = Some(PortPolicy::Mapped);
    denied(
        validate_claim(&mapped, Some(&passthrough), Some(&allowing), TENANT, None),
        "spec.portPolicy cannot change",
    );
    let mut unset = passthrough.clone();
    unset.spec.port_policy = None;
    denied(
        validate_claim(&unset, Some(&passthrough), Some(&allowing), TENANT, None),
        "spec.portPolicy cannot change",
    );
    // An update of a claim the class stopped allowing is not refused for that: the class
    // decides at creation, and the allocator before binding.
    let mut labelled = passthrough.clone();
    labelled.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
    assert_eq!(
        validate_claim(&labelled, Some(&passthrough), Some(&plain), TENANT, None),
        Verdict::Allow
    );
}

#[test]
fn blocks_are_the_class_admins_decision_inside_one_pool_and_fixed_once_asked() {
    let block = |port: Option<i32>, count: i32, alignment: Option<i32>| {
        let mut claim = claim("sample", port, None);
        claim.spec.count = Some(count);
        claim.spec.alignment = alignment;
        claim
    };
    let mut sample = class(&[(9000, 9009), (9010, 9019)]);
    let verdict = validate_claim(&block(None, 4, None), None, Some(&sample), TENANT, None);
    assert!(
        matches!(&verdict, Verdict::Deny { reason, .. } if *reason == reasons::BLOCK_TOO_LARGE),
        "{verdict:?}"
    );
    denied(verdict, "its spec.maxBlockSize is 1");
    sample.spec.max_block_size = Some(8);
    assert_eq!(
        validate_claim(&block(None, 8, Some(2)), None, Some(&sample), TENANT, None),
        Verdict::Allow
    );
    denied(
        validate_claim(
            &block(Some(9006), 8, None),
            None,
            Some(&sample),
            TENANT,
            None,
        ),
        "ports 9006-9013 (spec.port and spec.count) do not lie inside one pool",
    );
    denied(
        validate_claim(
            &block(Some(9001), 2, Some(2)),
            None,
            Some(&sample),
            TENANT,
            None,
        ),
        "spec.port 9001 is not a multiple of spec.alignment 2",
    );
    denied(
        validate_claim(&block(None, 0, None), None, Some(&sample), TENANT, None),
        "spec.count is 0",
    );
    denied(
        validate_claim(&block(Some(65530), 8, None), None, None, TENANT, None),
        "runs past port 65535",
    );
    let asked = block(None, 4, None);
    for changed in [
        block(None, 5, None),
        block(None, 4, Some(2)),
        claim("sample", None, None),
    ] {
        denied(
            validate_claim(&changed, Some(&asked), Some(&sample), TENANT, None),
            "spec.count and spec.alignment cannot change",
        );
    }
}

#[test]
fn tenants_cannot_write_what_decides_the_port() {
    // Case 1: a claim created with spec.hostPortName.
    denied(
        validate_claim(
            &claim("sample", None, Some("port-22")),
            None,
            None,
            TENANT,
            None,
        ),
        "spec.hostPortName of HostPortClaim /c is set by the hostport allocator only, not by \"system:serviceaccount:team-a:deployer\"",
    );
    // Case 2: set on a Pending claim, or changed, or removed.
    denied(
        validate_claim(
            &claim("sample", None, Some("port-23")),
            Some(&claim("sample", None, None)),
            None,
            TENANT,
            None,
        ),
        "remove spec.hostPortName",
    );
    denied(
        validate_claim(
            &claim("sample", None, None),
            Some(&claim("sample", None, Some("port-9000"))),
            None,
            TENANT,
            None,
        ),
        "keep it \"port-9000\"",
    );
    // A Go-era claim updated without touching the field passes.
    assert_eq!(
        validate_claim(
            &claim("sample", None, Some("hpc-1")),
            Some(&claim("sample", None, Some("hpc-1"))),
            None,
            TENANT,
            None
        ),
        Verdict::Allow
    );
    // Case 3: removing the finalizer.
    let held = with_finalizer(claim("sample", None, Some("port-9000")));
    denied(
        validate_claim(
            &claim("sample", None, Some("port-9000")),
            Some(&held),
            None,
            TENANT,
            None,
        ),
        "finalizer \"hostport.rmb938.com\" of HostPortClaim /c is removed by the hostport allocator only",
    );
    assert_eq!(
        validate_claim(
            &claim("sample", None, Some("port-9000")),
            Some(&held),
            None,
            ALLOCATOR,
            None
        ),
        Verdict::Allow
    );
    // Case 4: status writes.
    denied(
        validate_claim(&held, Some(&held), None, TENANT, Some("status")),
        "the status of HostPortClaim /c is written by the hostport allocator only",
    );
    assert_eq!(
        validate_claim(&held, Some(&held), None, ALLOCATOR, Some("status")),
        Verdict::Allow
    );
    denied(
        validate_class_status(&class(&[(1, 2)]), TENANT),
        "the status of HostPortClass \"sample\" is written by the hostport allocator only",
    );
}

#[test]
fn class_rules() {
    assert_eq!(validate_class(&class(&[(9000, 9500)])), Verdict::Allow);
    denied(validate_class(&class(&[])), "spec.pools is empty");
    denied(
        validate_class(&class(&[(9500, 9000)])),
        "starts at 9500 after its end 9000",
    );
    denied(
        validate_class(&class(&[(0, 10)])),
        "spec.pools[0].start is 0",
    );
    denied(validate_class(&class(&[(1, 10), (10, 20)])), "overlaps");
}

#[test]
fn host_port_rules() {
    let hp = |name: &str, port, bound: bool| {
        HostPort::new(
            name,
            HostPortSpec {
                claim_ref: bound.then(ClaimReference::default),
                host_port_class_name: "sample".into(),
                port,
            },
        )
    };
    let bound = hp("port-9000", Some(9000), true);
    assert_eq!(
        validate_host_port(&bound, None, ALLOCATOR, None),
        Verdict::Allow
    );
    denied(
        validate_host_port(&bound, None, TENANT, None),
        "HostPort \"port-9000\" is bound to a claim (spec.claimRef), and such HostPorts are created and changed by the hostport allocator only",
    );
    denied(
        validate_host_port(
            &hp("port-9000", Some(9001), true),
            Some(&bound),
            ALLOCATOR,
            None,
        ),
        "cannot change (it holds 9000)",
    );
    denied(
        validate_host_port(&hp("port-9000", Some(70000), true), None, ALLOCATOR, None),
        "spec.port is 70000",
    );
    // Reservations: no claimRef, named after the port.
    let reserved = hp("port-22", Some(22), false);
    assert_eq!(
        validate_host_port(&reserved, None, TENANT, None),
        Verdict::Allow
    );
    assert_eq!(
        validate_host_port(&reserved, Some(&reserved), TENANT, None),
        Verdict::Allow
    );
    denied(
        validate_host_port(&hp("ssh", Some(22), false), None, TENANT, None),
        "so it must be named \"port-22\"",
    );
    denied(
        validate_host_port(&hp("port-22", None, false), None, TENANT, None),
        "reserves no port: set spec.port",
    );
    denied(
        validate_host_port(
            &hp("port-22", Some(22), true),
            Some(&reserved),
            TENANT,
            None,
        ),
        "is bound to a claim",
    );
    denied(
        validate_host_port(&reserved, Some(&reserved), TENANT, Some("status")),
        "the status of HostPort \"port-22\" is written by the hostport allocator only",
    );
}

#[test]
fn the_router_publisher_writes_external_and_published_and_nothing_else_of_a_status() {
    let publisher = Requester {
        user: "system:serviceaccount:hostport-system:hostport-publisher-router",
        is_allocator: false,
        is_publisher: true,
    };
    let mut old = claim("sample", None, Some("port-20000"));
    old.status = Some(hostport_api::HostPortClaimStatus {
        phase: Some(hostport_api::ClaimPhase::Bound),
        port: Some(20000),
        ..Default::default()
    });
    let mut published = old.clone();
    let status = published.status.as_mut().expect("status");
    status.external = vec![hostport_api::ExternalEndpoint {
        address: "203.0.113.1".into(),
        ip_family: Some(hostport_api::IpFamily::Ipv4),
        port: 20000,
        protocol: "UDP".into(),
        method: "PCP".into(),
        node_name: "node-a".into(),
        expires_at: None,
    }];
    status
        .conditions
        .push(hostport_api::conditions::Condition::new(
            "Published",
            "True",
            "Published",
            "",
            None,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        ));
    assert_eq!(
        validate_claim(&published, Some(&old), None, publisher, Some("status")),
        Verdict::Allow
    );
    // With the Ready condition the other conditions add up to: allowed; a Ready of its own
    // making (True for a claim whose Bound condition says it waits): denied.
    let now = || {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
    };
    let mut ready = published.clone();
    let status = ready.status.as_mut().expect("status");
    status
        .conditions
        .push(hostport_api::conditions::Condition::new(
            "Bound",
            "True",
            "Bound",
            "bound",
            None,
            now(),
        ));
    let mut with_bound = old.clone();
    with_bound.status.as_mut().expect("status").conditions = status.conditions.clone();
    status.set_ready(true, None, now());
    assert_eq!(
        validate_claim(&ready, Some(&with_bound), None, publisher, Some("status")),
        Verdict::Allow
    );
    let mut pending = with_bound.clone();
    let status = pending.status.as_mut().expect("status");
    status.conditions = vec![hostport_api::conditions::Condition::new(
        "Bound",
        "False",
        "PoolExhausted",
        "no port",
        None,
        now(),
    )];
    let mut declared_ready = pending.clone();
    declared_ready
        .status
        .as_mut()
        .expect("status")
        .conditions
        .push(hostport_api::conditions::Condition::new(
            "Ready",
            "True",
            "Published",
            "",
            None,
            now(),
        ));
    denied(
        validate_claim(
            &declared_ready,
            Some(&pending),
            None,
            publisher,
            Some("status"),
        ),
        "written by the hostport allocator only",
    );
    // The port is the allocator's, for the publisher too; and a tenant may not publish.
    let mut forged = published.clone();
    forged.status.as_mut().expect("status").port = Some(22);
    denied(
        validate_claim(&forged, Some(&published), None, publisher, Some("status")),
        "written by the hostport allocator only",
    );
    denied(
        validate_claim(&published, Some(&old), None, TENANT, Some("status")),
        "written by the hostport allocator only",
    );
}
