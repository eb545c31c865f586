//! The router loop's reconcile logic against the in-process API server, with a recording
//! router: what it writes on claims, how it repairs a status someone else overwrote, what a
//! class opting out does, and that `--dry-run` writes nothing.

mod api;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hostport_api::HostPortClaim;
use hostport_publisher::deny::DenyList;
use hostport_publisher::metrics::Metrics;
use hostport_publisher::router::client::dry_run::LoggingRouter;
use hostport_publisher::router::client::recording::RecordingRouter;
use hostport_publisher::router::run::{self, RunOptions};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::oneshot;

fn options(dry_run: bool) -> RunOptions {
    RunOptions {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::default(),
        node: "node-a".into(),
        node_addresses: vec![Ipv4Addr::new(198, 51, 100, 2).into()],
        default_gateways: vec![Ipv4Addr::new(198, 51, 100, 1).into()],
        families: vec![hostport_api::IpFamily::Ipv4],
        deny: DenyList::parse("22").expect("deny"),
        services: None,
        keep_on_shutdown: false,
        dry_run,
        batch_window: Duration::from_millis(20),
        instance: "publisher-a".into(),
        renew_at_most: None,
    }
}

async fn objects(client: &Client, port: u16) {
    let class: hostport_api::HostPortClass = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
        "metadata": {"name": "home"},
        "spec": {"pools": [{"start": 41000, "end": 41100}], "publish": {"router": {}}}
    }))
    .expect("class");
    Api::<hostport_api::HostPortClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    let claim: HostPortClaim = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "game"},
        "spec": {"hostPortClassName": "home", "hostPortName": format!("port-{port}")}
    }))
    .expect("claim");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    claims
        .patch_status(
            "game",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound", "port": port, "conditions": [
                {"type": "Bound", "status": "True", "reason": "Bound", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("bound");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "game", "annotations": {"claim.hostport.rmb938.com/game": "game"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "game", "image": "game", "ports": [
            {"name": "game", "containerPort": 7777, "hostPort": port, "protocol": "UDP"}]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    pods.patch_status(
        "game",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "hostIP": "198.51.100.2"}})),
    )
    .await
    .expect("running");
}

async fn status(client: &Client) -> hostport_api::HostPortClaimStatus {
    Api::<HostPortClaim>::namespaced(client.clone(), "default")
        .get("game")
        .await
        .expect("claim")
        .status
        .unwrap_or_default()
}

async fn until(
    client: &Client,
    what: &str,
    check: impl Fn(&hostport_api::HostPortClaimStatus) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = status(client).await;
        if check(&now) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {what}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn published_reason(status: &hostport_api::HostPortClaimStatus) -> Option<String> {
    hostport_api::conditions::find(&status.conditions, "Published").map(|c| c.reason.clone())
}

#[tokio::test]
async fn the_loop_reports_repairs_an_overwritten_status_and_unmaps_when_the_class_opts_out() {
    let server = api::server().await;
    let client = server.client();
    objects(&client, 41001).await;
    let router = Arc::new(RecordingRouter::new(Ipv4Addr::new(203, 0, 113, 9)));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run::run(
        client.clone(),
        options(false),
        router.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    until(&client, "published", |s| {
        published_reason(s).as_deref() == Some("Published")
    })
    .await;
    let now = status(&client).await;
    assert_eq!(now.external.len(), 1);
    assert_eq!(
        (now.external[0].address.as_str(), now.external[0].port),
        ("203.0.113.9", 41001)
    );
    // The allocator's Bound condition is kept.
    assert!(hostport_api::conditions::find(&now.conditions, "Bound").is_some());

    // Another writer replaces the conditions and the list (a merge patch replaces lists): the
    // publisher writes them back, without asking the router again.
    Api::<HostPortClaim>::namespaced(client.clone(), "default")
        .patch_status(
            "game",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"external": [], "conditions": [
                {"type": "Bound", "status": "True", "reason": "Bound", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("overwritten");
    until(&client, "repaired", |s| {
        s.external.len() == 1 && published_reason(s).as_deref() == Some("Published")
    })
    .await;
    assert_eq!(router.calls(), ["map 41001"]);

    // The class opts out: unmapped, and the claim says so.
    Api::<hostport_api::HostPortClass>::all(client.clone())
        .patch(
            "home",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"publish": null}})),
        )
        .await
        .expect("opted out");
    until(&client, "unpublished", |s| {
        s.external.is_empty() && published_reason(s).as_deref() == Some("NotPublished")
    })
    .await;
    assert_eq!(router.calls(), ["map 41001", "unmap 41001"]);
    let _ = stop.send(());
    task.await.expect("stopped");
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let server = api::server().await;
    let client = server.client();
    objects(&client, 41002).await;
    let options = options(true);
    let ready = options.ready.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run::run(client.clone(), options, LoggingRouter, async {
        let _ = stopped.await;
    }));
    while !ready.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = status(&client).await;
    assert!(
        now.external.is_empty() && published_reason(&now).is_none(),
        "{now:?}"
    );
    let _ = stop.send(());
    task.await.expect("stopped");
}
