//! The publisher end to end: claims, classes and pods in an API server (the in-process one)
//! → the publisher's loop → nftables rules in a router namespace → real traffic from a
//! client to the node running the pod. Skipped, saying why, only where network namespaces
//! cannot be created.

mod api;
mod netns;

use std::time::Duration;

use hostport_api::IpFamily;
use hostport_publisher::claimed::Protocol;
use hostport_publisher::deny::DenyList;
use hostport_publisher::external::Annotator;
use hostport_publisher::forwarding::nft::Rules;
use hostport_publisher::forwarding::run::{self, Mode, RunOptions};
use hostport_publisher::forwarding::sync::{Backend, Syncer};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use netns::{ROUTER, ROUTER6, Topology};

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..150 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Edge mode, IPv4 for classes that do not say, no annotations: what each test changes.
fn edge_options(batch_window: Duration) -> RunOptions {
    RunOptions {
        metrics: Default::default(),
        ready: Default::default(),
        families: vec![IpFamily::Ipv4],
        mode: Mode::Edge {
            service_namespaces: vec![],
        },
        batch_window,
        resync: Duration::from_secs(60),
        instance: "test".into(),
        annotator: None,
        public_addresses: vec![],
    }
}

async fn until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_claimed_port_of_an_opted_in_class_is_forwarded_to_the_pods_node() {
    if let Some(why) = netns::unavailable() {
        return eprintln!("{why}");
    }
    let topology = Topology::new(&[9000, 9001]);
    let server = api::server().await;
    let client = server.client();
    api::class(&client, "public", (9000, 9000), true).await;
    api::class(&client, "private", (9001, 9001), false).await;
    for (claim, class, port) in [("game", "public", 9000), ("hidden", "private", 9001)] {
        api::bound_claim(&client, claim, class, port).await;
        api::running_pod(&client, claim, port, "TCP", &netns::NODE.to_string()).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let rules = Rules {
        interface: Some("ext0".into()),
        masquerade: true,
        masquerade6: false,
    };
    let syncer = Syncer::new(
        Backend::Nft,
        rules.clone(),
        DenyList::default(),
        topology.router_executor(),
        false,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = std::sync::Arc::new(hostport_publisher::metrics::Metrics::default());
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = tokio::spawn(run::run(
        client.clone(),
        RunOptions {
            metrics: metrics.clone(),
            ready: ready.clone(),
            ..edge_options(Duration::from_millis(50))
        },
        syncer,
        async move {
            let _ = stopped.await;
        },
    ));
    until("the claimed port forwarded", || {
        topology.exchange(Protocol::Tcp, 9000, "api") == Some("api".into())
    })
    .await;
    assert!(ready.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(metrics.forwards.get(), 1);
    assert!(
        metrics
            .encode()
            .contains("hostport_publisher_syncs_total{outcome=\"replaced\"} 1"),
        "{}",
        metrics.encode()
    );
    assert_eq!(
        topology.exchange(Protocol::Tcp, 9001, "not opted in"),
        None,
        "a class without spec.publish.edge is not forwarded"
    );
    // The pod goes: the path closes.
    pods.delete("game", &DeleteParams::default())
        .await
        .expect("delete pod");
    until("the path closed", || {
        topology.exchange(Protocol::Tcp, 9000, "gone").is_none()
    })
    .await;
    let _ = stop.send(());
    publisher.await.expect("the publisher stops");
    Syncer::new(
        Backend::Nft,
        rules,
        DenyList::default(),
        topology.router_executor(),
        false,
    )
    .cleanup()
    .await
    .expect("cleanup");
}

/// A dual-stack pod of a class published on both families is reached over IPv4 and IPv6;
/// the class narrowed to IPv4 closes the IPv6 path and keeps the IPv4 one.
#[tokio::test]
async fn a_dual_stack_class_is_forwarded_over_both_families() {
    if let Some(why) = netns::unavailable() {
        return eprintln!("{why}");
    }
    let topology = Topology::new(&[9000]);
    let server = api::server().await;
    let client = server.client();
    api::class(&client, "public", (9000, 9000), true).await;
    let classes: Api<hostport_api::HostPortClass> = Api::all(client.clone());
    let families = |list: serde_json::Value| {
        Patch::Merge(serde_json::json!({"spec": {"publish": {"ipFamilies": list}}}))
    };
    classes
        .patch(
            "public",
            &PatchParams::default(),
            &families(serde_json::json!(["IPv4", "IPv6"])),
        )
        .await
        .expect("dual stack");
    api::bound_claim(&client, "game", "public", 9000).await;
    let (node, node6) = (netns::NODE.to_string(), netns::NODE6.to_string());
    api::running_pod_on(&client, "game", 9000, "TCP", &[&node, &node6]).await;
    let rules = Rules {
        interface: Some("ext0".into()),
        masquerade: true,
        masquerade6: false,
    };
    let syncer = Syncer::new(
        Backend::Nft,
        rules.clone(),
        DenyList::default(),
        topology.router_executor(),
        false,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn(run::run(
        client.clone(),
        // The class says both families; the options' IPv4 is only for classes that do not.
        RunOptions {
            annotator: Some(Annotator::new(client.clone())),
            public_addresses: vec![ROUTER.into(), ROUTER6.into()],
            ..edge_options(Duration::from_millis(50))
        },
        syncer,
        async move {
            let _ = stopped.await;
        },
    ));
    let over = |family| topology.exchange_over(family, Protocol::Tcp, 9000, "dual");
    until("both families forwarded", || {
        over(IpFamily::Ipv4).as_deref() == Some("dual")
            && over(IpFamily::Ipv6).as_deref() == Some("dual")
    })
    .await;
    // The program's public address, over both families, in the annotation a downward-API
    // volume shows it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let public = || async {
        pods.get("game")
            .await
            .expect("pod")
            .annotations()
            .get("external.hostport.rmb938.com/game")
            .cloned()
    };
    until_async("the public addresses on the pod", || async {
        public().await.as_deref() == Some("203.0.113.1:9000,[2001:db8:c::1]:9000")
    })
    .await;
    classes
        .patch(
            "public",
            &PatchParams::default(),
            &families(serde_json::json!(["IPv4"])),
        )
        .await
        .expect("IPv4 only");
    until("the IPv6 path closed", || over(IpFamily::Ipv6).is_none()).await;
    assert_eq!(over(IpFamily::Ipv4).as_deref(), Some("dual"));
    until_async("the IPv6 address gone from the pod", || async {
        public().await.as_deref() == Some("203.0.113.1:9000")
    })
    .await;
    let _ = stop.send(());
    publisher.await.expect("the publisher stops");
    Syncer::new(
        Backend::Nft,
        rules,
        DenyList::default(),
        topology.router_executor(),
        false,
    )
    .cleanup()
    .await
    .expect("cleanup");
}

/// Many changes within the batch window are applied as one transaction: 40 pods appearing
/// at once cost a couple of applies, not 40.
#[tokio::test]
async fn a_burst_of_changes_is_one_transaction() {
    if let Some(why) = netns::unavailable() {
        return eprintln!("{why}");
    }
    let topology = Topology::new(&[]);
    let server = api::server().await;
    let client = server.client();
    api::class(&client, "public", (9000, 9100), true).await;
    // Every apply is logged by a wrapper around the real command.
    let log = std::env::temp_dir().join(format!("hpub-applies-{}", topology.router));
    let _ = std::fs::remove_file(&log);
    let wrapper = format!(
        "echo apply >> {}; exec ip netns exec {} \"$@\"",
        log.display(),
        topology.router
    );
    let executor = hostport_publisher::forwarding::exec::Executor::Local {
        prefix: vec!["sh".into(), "-c".into(), wrapper, "sh".into()],
    };
    let syncer = Syncer::new(
        Backend::Nft,
        Rules::default(),
        DenyList::default(),
        executor,
        false,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn(run::run(
        client.clone(),
        edge_options(Duration::from_millis(1500)),
        syncer,
        async move {
            let _ = stopped.await;
        },
    ));
    let applies = || {
        std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    until("the first (empty) sync", || applies() == 1).await;
    let burst = (0..40u16).map(|i| {
        let client = client.clone();
        async move {
            let name = format!("game-{i}");
            api::bound_claim(&client, &name, "public", 9000 + i).await;
            api::running_pod(&client, &name, 9000 + i, "TCP", "198.51.100.2").await;
        }
    });
    futures::future::join_all(burst).await;
    until("all 40 forwarded", || {
        topology
            .router_nft(&["list", "map", "inet", "hostport", "tcp_forwards"])
            .matches(" : 198.51.100.2 . ")
            .count()
            == 40
    })
    .await;
    let total = applies();
    let _ = stop.send(());
    publisher.await.expect("stops");
    let _ = std::fs::remove_file(&log);
    assert!(
        total <= 4,
        "40 pods (160 API events) took {total} applies; the batch window should fold them"
    );
    eprintln!(
        "40 pods forwarded in {} apply(ies) after the first",
        total - 1
    );
}

/// A class asks for DNS records, but external-dns's CRD is not installed: nothing is created,
/// nothing fails, and the API is not asked again on every pass.
#[tokio::test]
async fn without_external_dns_no_records_are_made_and_it_is_asked_rarely() {
    use hostport_publisher::dns::{ClaimRecords, DnsKeeper};
    let server = api::server().await;
    let mut keeper = DnsKeeper::new(server.client());
    let records = ClaimRecords {
        host: "game.default.games.example.com".into(),
        ttl: 60,
        addresses: ["203.0.113.1".parse().expect("ip")].into(),
        claim_uid: "uid".into(),
        ..ClaimRecords::default()
    };
    let wanted =
        std::collections::BTreeMap::from([(("default".to_owned(), "game".to_owned()), records)]);
    let asked = || {
        server
            .counts()
            .into_iter()
            .filter(|((_, _, resource), _)| resource.starts_with("dnsendpoints"))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    keeper.keep(&wanted).await;
    let first = asked();
    assert!(format!("{keeper:?}").contains("Missing"), "{keeper:?}");
    for _ in 0..5 {
        keeper.keep(&wanted).await;
    }
    assert_eq!(asked(), first, "asked again within five minutes");
    assert!(format!("{keeper:?}").contains("written: 0"), "{keeper:?}");
}
