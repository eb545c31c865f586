//! Case 3 of the books issue, through the API and the edge publisher's own rules: a Service
//! never takes over a claimed port. Its loop runs as `hostport-publisher` (on a real cluster
//! with `E2E_RBAC=1` impersonated, `config/publisher/rbac` applied; in-process every call it
//! made is checked against that file) with a dry-run syncer: what it would forward is read
//! from `--render`'s code path, and the refusal shows as an Event on the Service.

use std::sync::Arc;
use std::time::Duration;

use hostport_api::IpFamily;
use hostport_e2e::harness::{Env, SYSTEM_NAMESPACE};
use hostport_e2e::nodes;
use hostport_e2e::rbac::{calls_of, rules_of};
use hostport_publisher::claimed::Protocol;
use hostport_publisher::deny::DenyList;
use hostport_publisher::external::Annotator;
use hostport_publisher::forwarding::exec::Executor;
use hostport_publisher::forwarding::nft::Rules;
use hostport_publisher::forwarding::run::{self, Mode, RunOptions};
use hostport_publisher::forwarding::sync::{Backend, Syncer};
use hostport_publisher::metrics::Metrics;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_testserver::UserInfo;
use serde_json::{Value, json};

fn publisher_user() -> UserInfo {
    UserInfo::service_account(SYSTEM_NAMESPACE, "hostport-publisher")
}

#[tokio::test]
async fn a_service_never_takes_a_claimed_port_from_the_edge() {
    let env = Env::new("claimswin").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(Default::default());
    let class = env.create_class("public", &[(37400, 37409)]).await;
    env.classes()
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"publish": {"edge": true}}})),
        )
        .await
        .expect("opted in");
    env.create_claim("game", &class, None).await;
    assert_eq!(env.bound("game").await.bound_port(), Some(37400));

    // A Ready node (the Services' target) and the game pod on it, Running.
    let node_name = nodes::ready_node(&env, "198.51.100.1").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "game", "annotations": {"claim.hostport.rmb938.com/game": "game"}},
        "spec": {"nodeName": node_name, "containers": [{"name": "game", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "game", "containerPort": 7777, "protocol": "TCP"}]}]}
    }))
    .expect("pod");
    nodes::running(&pods, &pod, "198.51.100.2").await;

    // A tenant's Service on the claim's port, one on a pool port no claim holds yet, and one
    // outside the pools. Its target (the node, 198.51.100.1) is lower than the pod's node
    // (198.51.100.2): before, it won the conflict for 37400.
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    // nodePorts of its own (the in-process server allocates none).
    let node_port = 30000 + i32::try_from(std::process::id() % 2700).expect("small");
    for (i, (name, port)) in [("taker", 37400), ("pool", 37405), ("site", 8443)]
        .into_iter()
        .enumerate()
    {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"hostport.rmb938.com/forward": "true"}},
            "spec": {"type": "NodePort", "selector": {"app": name},
                     "ports": [{"port": port, "nodePort": node_port + i32::try_from(i).expect("small"),
                                "protocol": "TCP"}]}
        }))
        .expect("service");
        services
            .create(&PostParams::default(), &service)
            .await
            .expect("service");
    }

    let mode = Mode::Edge {
        service_namespaces: vec![env.namespace.clone()],
    };
    let client = env.client_as(publisher_user());
    let forwards = run::wanted_once(&client, &mode, &DenyList::default(), &[IpFamily::Ipv4]).await;
    let target = forwards
        .get(IpFamily::Ipv4, Protocol::Tcp, 37400)
        .expect("the claim's forward");
    assert_eq!(
        (target.address.to_string(), target.port),
        ("198.51.100.2".to_owned(), 37400),
        "the claim keeps its port"
    );
    assert!(
        forwards.get(IpFamily::Ipv4, Protocol::Tcp, 37405).is_none(),
        "a pool port"
    );
    let site = forwards
        .get(IpFamily::Ipv4, Protocol::Tcp, 8443)
        .expect("the Service outside the pools");
    assert_eq!(site.address.to_string(), "198.51.100.1");

    // The loop reports the refusals as Events on the Services, and counts them.
    let syncer = Syncer::new(
        Backend::Nft,
        Rules::default(),
        DenyList::default(),
        Executor::local(),
        true,
    );
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn(run::run(
        client.clone(),
        RunOptions {
            metrics: metrics.clone(),
            ready: Arc::default(),
            families: vec![IpFamily::Ipv4],
            mode,
            batch_window: Duration::from_millis(50),
            resync: Duration::from_secs(60),
            instance: "edge-a".into(),
            annotator: Some(Annotator::new(client)),
            public_addresses: vec!["203.0.113.5".parse().expect("ip")],
        },
        syncer,
        async move {
            let _ = stopped.await;
        },
    ));
    assert!(env.has_event("PortClaimed").await, "a PortClaimed Event");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let refused: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("PortClaimed"))
        .filter_map(|e| e.regarding?.name)
        .collect();
    env.wait_for("both refusals counted", Duration::from_secs(10), || {
        let counted = metrics.claimed_service_ports.get();
        async move { (counted == 2).then_some(()) }
    })
    .await;
    // The pod reads where the edge publishes it (the edge's public address, the claimed
    // port), written through the webhook as the publisher.
    env.wait_for(
        "the public address on the pod",
        Duration::from_secs(10),
        || async {
            let pod = pods.get("game").await.ok()?;
            (pod.annotations().get("external.hostport.rmb938.com/game")
                == Some(&"203.0.113.5:37400".to_owned()))
            .then_some(())
        },
    )
    .await;
    let _ = stop.send(());
    publisher.await.expect("publisher stopped");
    assert!(
        refused.iter().all(|name| name == "taker" || name == "pool") && !refused.is_empty(),
        "{refused:?}"
    );

    // In-process: every call it made is allowed by config/publisher/rbac.
    if let Some(server) = env.server() {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/publisher/rbac/rbac.yaml"
        ))
        .expect("rbac.yaml");
        let objects: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("yaml");
        let rules = rules_of(&objects, "hostport-publisher");
        let (used, missing) = calls_of(server, &publisher_user(), &rules);
        assert!(
            missing.is_empty(),
            "config/publisher/rbac/rbac.yaml does not allow {missing:?}"
        );
        assert!(
            used.contains(&("create".into(), "events".into()))
                && used.contains(&("patch".into(), "pods".into())),
            "{used:?}"
        );
    }
    let _ = Api::<Node>::all(env.client.clone())
        .delete(&node_name, &DeleteParams::default())
        .await;
    env.cleanup().await;
}
