//! The router publisher's writes through the real admission chain and its ServiceAccount's
//! rules: its loop (with a recording router: the router side is tested against miniupnpd in
//! `publisher/tests/router.rs`) runs as `hostport-publisher-router` next to the webhook and
//! the controller. On a real cluster with `E2E_RBAC=1` it is impersonated with
//! `config/publisher/router/rbac.yaml` applied; in-process, every call it makes is checked
//! against those rules.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hostport_e2e::harness::{Env, SYSTEM_NAMESPACE};
use hostport_e2e::nodes;
use hostport_e2e::rbac::{calls_of, rules_of};
use hostport_publisher::deny::DenyList;
use hostport_publisher::dns;
use hostport_publisher::metrics::Metrics;
use hostport_publisher::router::client::recording::RecordingRouter;
use hostport_publisher::router::run::{self, RunOptions, ServicePublishing};
use hostport_publisher::router::wanted::ServiceSettings;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube_testserver::UserInfo;
use serde_json::{Value, json};

const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn publisher_user() -> UserInfo {
    UserInfo::service_account(SYSTEM_NAMESPACE, "hostport-publisher-router")
}

#[tokio::test]
async fn the_router_publisher_reports_through_admission_with_its_own_rules() {
    let env = Env::new("routerpub").await;
    // external-dns's kind, as a cluster with external-dns has it (external-dns not needed:
    // the records are read from the objects).
    let dns_crd = include_str!("../testdata/dnsendpoints.yaml");
    hostport_e2e::samples::apply_yaml(&env.client, "dnsendpoints.yaml", dns_crd)
        .await
        .expect("the DNSEndpoint CRD");
    let endpoints: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.namespace, &dns::resource());
    env.wait_for(
        "the DNSEndpoint kind served",
        Duration::from_secs(30),
        || async { endpoints.list(&Default::default()).await.ok().map(|_| ()) },
    )
    .await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(Default::default());
    let class = env.create_class("home", &[(16000, 16010)]).await;
    env.classes()
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"publish": {"router": {"gateway": "198.51.100.1"},
                "dns": {"zone": "games.example.com", "ttlSeconds": 30}}}}),
            ),
        )
        .await
        .expect("opted in");
    env.create_claim("game", &class, None).await;
    let bound = env.bound("game").await;
    let waiting = bound
        .status
        .as_ref()
        .and_then(|s| hostport_api::conditions::find(&s.conditions, "Ready"));
    assert_eq!(
        waiting.map(|c| c.reason.as_str()),
        Some("WaitingForPublish"),
        "Bound, not yet Ready: the class publishes on the router"
    );
    let port = bound.status.and_then(|s| s.port).expect("port");
    let node_name = nodes::ready_node(&env, "198.51.100.2").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "game", "annotations": {"claim.hostport.rmb938.com/game": "game"}},
        "spec": {"nodeName": node_name, "containers": [{"name": "game", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "game", "containerPort": 7777, "protocol": "UDP"}]}]}
    }))
    .expect("pod");
    nodes::running(&pods, &pod, "198.51.100.2").await;
    let node_port = 30000 + i32::try_from(std::process::id() % 2700).expect("small");
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "site"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "hostport.rmb938.com/router",
                 "ports": [{"port": 8443, "nodePort": node_port, "protocol": "TCP"}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    // A tenant's LoadBalancer Service on the claim's port: claims win, it is refused.
    let taker: Service = serde_json::from_value(json!({
        "metadata": {"name": "taker"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "hostport.rmb938.com/router",
                 "ports": [{"port": port, "nodePort": node_port + 1, "protocol": "UDP"}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &taker)
        .await
        .expect("service");

    let mut scenario = hostport_api::selector::LabelSelector::default();
    scenario
        .match_labels
        .insert("hostport-e2e/scenario".into(), env.prefix.clone());
    let options = RunOptions {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::default(),
        node: node_name.clone(),
        node_addresses: vec![Ipv4Addr::new(198, 51, 100, 2).into()],
        default_gateways: vec![],
        families: vec![hostport_api::IpFamily::Ipv4],
        deny: DenyList::parse("22").expect("deny"),
        services: Some(ServicePublishing {
            namespaces: scenario,
            settings: ServiceSettings {
                method: hostport_api::RouterProtocol::Auto,
                gateway: Some(Ipv4Addr::new(198, 51, 100, 1)),
                lifetime_seconds: 3600,
            },
            lease: hostport_controller::LeaseConfig {
                namespace: SYSTEM_NAMESPACE.into(),
                name: format!("{}-router", env.prefix),
                identity: "publisher-a".into(),
                duration: Duration::from_secs(6),
            },
        }),
        keep_on_shutdown: false,
        dry_run: false,
        batch_window: Duration::from_millis(50),
        instance: "publisher-a".into(),
        // Renewals often: the router's new public address is seen within a second.
        renew_at_most: Some(Duration::from_secs(1)),
    };
    let router = Arc::new(RecordingRouter::new(PUBLIC));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn(run::run(
        env.client_as(publisher_user()),
        options,
        router.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    // Its claim status write passes the webhook (external + Published only) and RBAC.
    let claim = env
        .wait_for("the claim published", Duration::from_secs(30), || async {
            let claim = env.claims().get("game").await.ok()?;
            let status = claim.status.clone()?;
            let published = hostport_api::conditions::find(&status.conditions, "Published")?;
            (published.reason == "Published" && status.external.len() == 1).then_some(claim)
        })
        .await;
    let status = claim.status.expect("status");
    let ready = hostport_api::conditions::find(&status.conditions, "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Published"),
        "the publisher's write makes the claim Ready, which the webhook lets it write"
    );
    assert_eq!(status.external[0].address, PUBLIC.to_string());
    assert_eq!(status.external[0].port, port);
    assert_eq!(status.external[0].node_name, node_name);
    assert_eq!(status.phase, Some(hostport_api::ClaimPhase::Bound));
    // The pod learns its public address from the annotation the publisher keeps (through
    // the webhook, which lets the publisher write it) ...
    let public_address_is = |expected: String| {
        let (env, pods) = (&env, &pods);
        async move {
            env.wait_for(
                &format!("the public address {expected} on the pod"),
                Duration::from_secs(30),
                || async {
                    let pod = pods.get("game").await.ok()?;
                    (pod.annotations().get("external.hostport.rmb938.com/game") == Some(&expected))
                        .then_some(())
                },
            )
            .await;
        }
    };
    public_address_is(format!("{PUBLIC}:{port}")).await;
    // ... and nobody else may write it: not the pod's owner, not an admin.
    let forged = pods
        .patch(
            "game",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"external.hostport.rmb938.com/game": "203.0.113.66:22"}}}),
            ),
        )
        .await;
    match forged {
        Err(kube::Error::Api(status)) => assert!(
            status
                .message
                .contains("is written by hostport-publisher only"),
            "{}",
            status.message
        ),
        other => panic!("a forged public address was written: {other:?}"),
    }
    // Clients find it by DNS: one DNSEndpoint owned by the claim, A and SRV records.
    let host = format!("game.{}.games.example.com", env.namespace);
    let records = env
        .wait_for("the DNS records", Duration::from_secs(30), || async {
            endpoints.get("hostport-game").await.ok()
        })
        .await;
    assert_eq!(
        records.data["spec"]["endpoints"],
        json!([
            {"dnsName": host, "recordType": "A", "recordTTL": 30, "targets": [PUBLIC.to_string()]},
            {"dnsName": format!("_game._udp.{host}"), "recordType": "SRV", "recordTTL": 30,
             "targets": [format!("0 0 {port} {host}.")]},
        ])
    );
    let owner = &records
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("HostPortClaim", claim.metadata.uid.as_ref())
    );
    // The router's public address changes (a new lease from the ISP): the next renewal
    // reports it, and the pod's annotation and the A record follow.
    let moved = Ipv4Addr::new(203, 0, 113, 8);
    router.set_address(moved);
    public_address_is(format!("{moved}:{port}")).await;
    env.wait_for("the A record moved", Duration::from_secs(30), || async {
        let records = endpoints.get("hostport-game").await.ok()?;
        (records.data["spec"]["endpoints"][0]["targets"] == json!([moved.to_string()]))
            .then_some(())
    })
    .await;
    router.set_address(PUBLIC);
    // The Service gets the router's address (the elected publisher).
    env.wait_for("the Service's ingress", Duration::from_secs(30), || async {
        let service = services.get("site").await.ok()?;
        let ip = service
            .status?
            .load_balancer?
            .ingress?
            .first()?
            .ip
            .clone()?;
        (ip == PUBLIC.to_string()).then_some(())
    })
    .await;
    // The Service on the claim's port gets no mapping and says why.
    let refused = env
        .wait_for(
            "the taker Service refused",
            Duration::from_secs(30),
            || async {
                let status = services.get("taker").await.ok()?.status?;
                let condition = status
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "hostport.rmb938.com/Published")?;
                (condition.reason == "PortClaimed").then_some((condition, status.load_balancer))
            },
        )
        .await;
    assert_eq!(refused.0.status, "False");
    assert!(
        refused.0.message.contains(&format!("port {port}")),
        "{}",
        refused.0.message
    );
    assert!(
        refused
            .1
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .is_empty(),
        "no ingress for a refused Service"
    );
    // The publisher may not write what decides the port.
    let forged = Api::<hostport_api::HostPortClaim>::namespaced(
        env.client_as(publisher_user()),
        &env.namespace,
    )
    .patch_status(
        "game",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"port": 22}})),
    )
    .await;
    assert!(
        forged.is_err(),
        "the publisher changed the claim's port: {forged:?}"
    );

    // The pod stops: unmapped, reported.
    pods.delete("game", &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
    env.wait_for("the claim unpublished", Duration::from_secs(30), || async {
        let status = env.claims().get("game").await.ok()?.status?;
        let published = hostport_api::conditions::find(&status.conditions, "Published")?;
        (published.reason == "NotPublished" && status.external.is_empty()).then_some(())
    })
    .await;
    env.wait_for("the DNS records removed", Duration::from_secs(30), || async {
        matches!(endpoints.get("hostport-game").await, Err(kube::Error::Api(s)) if s.code == 404)
            .then_some(())
    })
    .await;
    let calls = router.calls();
    assert!(calls.contains(&format!("map {port}")), "{calls:?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| **c == format!("map {port}"))
            .count(),
        1,
        "the router port is asked for the claim only: {calls:?}"
    );
    assert!(calls.contains(&format!("unmap {port}")), "{calls:?}");
    let _ = stop.send(());
    publisher.await.expect("publisher stopped");

    // In-process: every call it made is allowed by config/publisher/router/rbac.yaml.
    if let Some(server) = env.server() {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/publisher/router/rbac.yaml"
        ))
        .expect("rbac.yaml");
        let objects: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("yaml");
        let rules = rules_of(&objects, "hostport-publisher-router");
        let (used, missing) = calls_of(server, &publisher_user(), &rules);
        assert!(
            missing.is_empty(),
            "config/publisher/router/rbac.yaml does not allow {missing:?}"
        );
        assert!(
            used.contains(&("patch".into(), "hostportclaims/status".into())),
            "{used:?}"
        );
        assert!(used.contains(&("patch".into(), "pods".into())), "{used:?}");
        eprintln!("hostport-publisher-router used: {used:?}");
    }
    let _ = Api::<Node>::all(env.client.clone())
        .delete(&node_name, &DeleteParams::default())
        .await;
    env.cleanup().await;
}
