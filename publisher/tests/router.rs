//! `hostport-publisher --mode router` against a real router (miniupnpd in network
//! namespaces, see `router_lab`) and the in-process API server: assertions are on the
//! router's own view (its lease list and nft DNAT rules) and on the objects' status.

mod api;
mod netns;
mod router_lab;

use std::time::Duration;

use hostport_api::HostPortClaim;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use router_lab::{GATEWAY, GATEWAY6, Lab, PUBLIC, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

macro_rules! lab_or_skip {
    ($nodes:expr) => {{
        if let Some(reason) = router_lab::unavailable() {
            eprintln!("{reason}");
            return;
        }
        Lab::new($nodes)
    }};
}

async fn apply<K>(api: &Api<K>, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("created")
}

/// A class `name` on `start..=end` published on the router with `router` settings.
async fn class(client: &Client, name: &str, (start, end): (u16, u16), router: serde_json::Value) {
    apply::<hostport_api::HostPortClass>(
        &Api::all(client.clone()),
        json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
            "metadata": {"name": name},
            "spec": {"pools": [{"start": start, "end": end}], "publish": {"router": router}}
        }),
    )
    .await;
}

/// Pod `pod` using claim `claim` for its port `game` (`protocols`, host port `port`),
/// Running on node `node` of the lab.
async fn running_pod(
    client: &Client,
    pod: &str,
    claim: &str,
    port: u16,
    protocols: &[&str],
    node: usize,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ports: Vec<_> = protocols
        .iter()
        .map(|p| json!({"name": "game", "containerPort": 7777, "hostPort": port, "protocol": p}))
        .collect();
    apply(
        &pods,
        json!({
            "metadata": {"name": pod, "annotations": {"claim.hostport.rmb938.com/game": claim}},
            "spec": {"nodeName": format!("node-{node}"), "containers": [{"name": "game", "image": "game", "ports": ports}]}
        }),
    )
    .await;
    pods.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "hostIP": Lab::node_address(node).to_string()}}),
        ),
    )
    .await
    .expect("running");
}

async fn delete_pod(client: &Client, pod: &str) {
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete(pod, &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
}

async fn claim(client: &Client, name: &str) -> HostPortClaim {
    Api::<HostPortClaim>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .expect("claim")
}

/// The claim's `Published` condition `(status, reason, message)`.
async fn published(client: &Client, name: &str) -> Option<(String, String, String)> {
    let claim = claim(client, name).await;
    let condition = hostport_api::conditions::find(&claim.status?.conditions, "Published")?.clone();
    Some((condition.status, condition.reason, condition.message))
}

async fn wait_published(client: &Client, name: &str, reason: &str) -> (String, String, String) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let condition = published(client, name).await;
        if let Some(c) = &condition
            && c.1 == reason
        {
            return c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "claim {name} never got Published reason {reason}: {condition:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The expiry field of a lease line.
fn expiry(lease: &str) -> String {
    lease.split(':').nth(4).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natpmp_mapping_is_created_renewed_moved_with_the_pod_and_removed() {
    let mut lab = lab_or_skip!(2);
    let server = api::server().await;
    let client = server.client();
    let kubeconfig = lab.connect(&server);
    class(
        &client,
        "home",
        (40000, 40100),
        json!({"protocol": "natpmp", "lifetimeSeconds": 600}),
    )
    .await;
    api::bound_claim(&client, "game", "home", 40005).await;
    let renew = ["--max-renew-interval-seconds=2", "--deny-ports=22"];
    let node0 = lab.publisher(0, &kubeconfig, &renew);
    let node1 = lab.publisher(1, &kubeconfig, &renew);

    running_pod(&client, "game-a", "game", 40005, &["TCP", "UDP"], 0).await;
    let tcp = eventually(WAIT, "the TCP mapping on the router", || {
        lab.lease("TCP", 40005)
    })
    .await;
    assert!(tcp.starts_with("TCP:40005:198.51.100.2:40005:"), "{tcp}");
    let udp = eventually(WAIT, "the UDP mapping", || lab.lease("UDP", 40005)).await;
    assert!(udp.starts_with("UDP:40005:198.51.100.2:40005:"), "{udp}");
    let rules = lab.dnat_rules();
    assert!(
        rules.contains("th dport 40005 dnat ip to 198.51.100.2:40005"),
        "{rules}"
    );

    let (status, _, message) = wait_published(&client, "game", "Published").await;
    assert_eq!(status, "True");
    assert!(message.contains("203.0.113.1:40005"), "{message}");
    let external = claim(&client, "game")
        .await
        .status
        .expect("status")
        .external;
    assert_eq!(external.len(), 2, "{external:?}");
    for entry in &external {
        assert_eq!(entry.address, PUBLIC.to_string());
        assert_eq!(entry.port, 40005);
        assert_eq!(entry.method, "NAT-PMP");
        assert_eq!(entry.node_name, "node-0");
        assert!(entry.expires_at.is_some());
    }

    // Renewed: the router's expiry moves forward.
    let first = expiry(&tcp);
    eventually(WAIT, "a renewal on the router", || {
        lab.lease("TCP", 40005).filter(|l| expiry(l) > first)
    })
    .await;

    // The pod moves to node 1: the mapping follows it.
    delete_pod(&client, "game-a").await;
    running_pod(&client, "game-b", "game", 40005, &["TCP"], 1).await;
    eventually(WAIT, "the mapping on node 1", || {
        lab.lease("TCP", 40005)
            .filter(|l| l.starts_with("TCP:40005:198.51.100.3:40005:"))
    })
    .await;
    eventually(WAIT, "node 0's UDP mapping removed", || {
        lab.lease("UDP", 40005).is_none().then_some(())
    })
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let external = claim(&client, "game")
            .await
            .status
            .expect("status")
            .external;
        if external.len() == 1 && external[0].node_name == "node-1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never moved: {external:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The pod stops: nothing stays on the router, and the claim says so.
    delete_pod(&client, "game-b").await;
    eventually(WAIT, "every mapping removed", || {
        lab.leases().is_empty().then_some(())
    })
    .await;
    let rules = lab.dnat_rules();
    assert!(!rules.contains("dnat"), "{rules}");
    let (status, _, _) = wait_published(&client, "game", "NotPublished").await;
    assert_eq!(status, "False");
    assert!(
        claim(&client, "game")
            .await
            .status
            .expect("status")
            .external
            .is_empty()
    );
    drop((node0, node1));
}

/// The router restarts with another public address (an ISP's new lease): the publisher's
/// next renewal maps the port again, the claim's `status.external` and the pod's
/// `external.hostport.rmb938.com/` annotation (the program's view, through a downward-API
/// volume) follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_public_address_of_the_router_reaches_the_pod() {
    let mut lab = lab_or_skip!(1);
    let server = api::server().await;
    let client = server.client();
    let kubeconfig = lab.connect(&server);
    class(
        &client,
        "home",
        (40600, 40610),
        json!({"protocol": "natpmp"}),
    )
    .await;
    api::bound_claim(&client, "game", "home", 40601).await;
    running_pod(&client, "game", "game", 40601, &["UDP"], 0).await;
    let publisher = lab.publisher(0, &kubeconfig, &["--max-renew-interval-seconds=1"]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let annotation = || async {
        pods.get("game")
            .await
            .ok()?
            .metadata
            .annotations?
            .get("external.hostport.rmb938.com/game")
            .cloned()
    };
    let until_annotated = |expected: &'static str| async move {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let now = annotation().await;
            if now.as_deref() == Some(expected) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the pod's public address is {now:?}, not {expected}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    until_annotated("203.0.113.1:40601").await;
    let moved = std::net::Ipv4Addr::new(203, 0, 113, 5);
    lab.restart_router_with_public_address(moved);
    until_annotated("203.0.113.5:40601").await;
    let external = claim(&client, "game")
        .await
        .status
        .expect("status")
        .external;
    assert_eq!(external[0].address, moved.to_string());
    assert!(lab.lease("UDP", 40601).is_some(), "mapped again");
    assert!(publisher.stop().success());
}

/// Over IPv6 there is no NAT: a dual-stack class gets, beside the IPv4 mapping, a pinhole in
/// the router's firewall to the node's own IPv6 address, with PCP `MAP` over IPv6 and with
/// UPnP IGD:2 `AddPinhole`. Traffic from outside reaches the node over IPv6 only while the
/// pinhole is there; the claim lists both families; the pinhole goes with the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_pinholes_with_pcp_and_upnp_let_traffic_in_and_go_with_the_pod() {
    let mut lab = lab_or_skip!(1);
    let server = api::server().await;
    let client = server.client();
    let kubeconfig = lab.connect(&server);
    for (name, (start, end), protocol) in [
        ("pcp6", (40400, 40410), "pcp"),
        ("upnp6", (40500, 40510), "upnp"),
    ] {
        apply::<hostport_api::HostPortClass>(
            &Api::all(client.clone()),
            json!({
                "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
                "metadata": {"name": name},
                "spec": {"pools": [{"start": start, "end": end}], "publish": {
                    "router": {"protocol": protocol, "gateway6": GATEWAY6.to_string()},
                    "ipFamilies": ["IPv4", "IPv6"]}}
            }),
        )
        .await;
    }
    let node6 = Lab::node_address6(0);
    let pinhole_rule = format!("0x{:032x}", u128::from(node6));
    lab.serve6(0, 40401);
    lab.serve6(0, 40501);
    assert_eq!(
        lab.exchange6(node6, 40401, "closed"),
        None,
        "the router drops IPv6 without a pinhole"
    );
    api::bound_claim(&client, "pcp6-game", "pcp6", 40401).await;
    api::bound_claim(&client, "upnp6-game", "upnp6", 40501).await;
    running_pod(&client, "pcp6-game", "pcp6-game", 40401, &["TCP"], 0).await;
    running_pod(&client, "upnp6-game", "upnp6-game", 40501, &["TCP"], 0).await;

    let publisher = lab.publisher(0, &kubeconfig, &[]);
    for (name, port, method) in [("pcp6-game", 40401, "PCP"), ("upnp6-game", 40501, "UPnP")] {
        let (_, _, message) = wait_published(&client, name, "Published").await;
        assert!(
            message.starts_with("published over IPv4 and IPv6 at"),
            "{message}"
        );
        let external: Vec<(String, String, Option<hostport_api::IpFamily>)> = claim(&client, name)
            .await
            .status
            .expect("status")
            .external
            .into_iter()
            .map(|e| (e.address, e.method, e.ip_family))
            .collect();
        assert!(
            external.contains(&(
                node6.to_string(),
                method.to_owned(),
                Some(hostport_api::IpFamily::Ipv6)
            )),
            "{name}: {external:?}"
        );
        assert!(
            external
                .iter()
                .any(|(a, _, family)| *a == PUBLIC.to_string()
                    && *family == Some(hostport_api::IpFamily::Ipv4)),
            "{name}: {external:?}"
        );
        eventually(WAIT, "IPv6 traffic through the pinhole", || {
            (lab.exchange6(node6, port, "hello6").as_deref() == Some("hello6")).then_some(())
        })
        .await;
    }
    assert_eq!(
        lab.pinholes().matches(&pinhole_rule).count(),
        2,
        "one pinhole per claim: {}",
        lab.pinholes()
    );

    // The pods go: so do the pinholes, and the router drops IPv6 to them again.
    delete_pod(&client, "pcp6-game").await;
    delete_pod(&client, "upnp6-game").await;
    eventually(WAIT, "the pinholes removed", || {
        (!lab.pinholes().contains(&pinhole_rule)).then_some(())
    })
    .await;
    assert_eq!(lab.exchange6(node6, 40401, "closed"), None);
    assert_eq!(lab.exchange6(node6, 40501, "closed"), None);
    assert!(publisher.stop().success());

    // Renewed (here every second; at half the lifetime by default): the router extends
    // both pinholes (PCP: the same MAP again; UPnP: UpdatePinhole) and traffic keeps flowing.
    // (Debian's miniupnpd 2.3.1 then refuses to delete a renewed PCP pinhole before it
    // lapses, "Unauthorized to remove PCP mapping": not asserted here.)
    let publisher = lab.publisher(0, &kubeconfig, &["--max-renew-interval-seconds=1"]);
    running_pod(&client, "upnp6-again", "upnp6-game", 40501, &["TCP"], 0).await;
    running_pod(&client, "pcp6-again", "pcp6-game", 40401, &["TCP"], 0).await;
    eventually(WAIT, "both pinholes renewed", || {
        let log = lab.router_log();
        (log.matches("UpdatePinhole: (inbound) updating lease")
            .count()
            >= 2
            && log
                .matches("updating pinhole to 2001:db8:a::2:40401")
                .count()
                >= 2)
            .then_some(())
    })
    .await;
    for port in [40401, 40501] {
        assert_eq!(
            lab.exchange6(node6, port, "renewed").as_deref(),
            Some("renewed"),
            "{port}"
        );
    }
    assert!(publisher.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcp_and_upnp_map_and_a_stopped_publisher_removes_its_mappings_unless_told_to_keep() {
    let mut lab = lab_or_skip!(1);
    let server = api::server().await;
    let client = server.client();
    let kubeconfig = lab.connect(&server);
    class(&client, "pcp", (40200, 40210), json!({"protocol": "pcp"})).await;
    class(
        &client,
        "upnp",
        (40300, 40310),
        json!({"protocol": "upnp", "gateway": GATEWAY.to_string()}),
    )
    .await;
    api::bound_claim(&client, "pcp-game", "pcp", 40201).await;
    api::bound_claim(&client, "upnp-game", "upnp", 40301).await;
    running_pod(&client, "pcp-game", "pcp-game", 40201, &["UDP"], 0).await;
    running_pod(&client, "upnp-game", "upnp-game", 40301, &["TCP"], 0).await;

    let publisher = lab.publisher(0, &kubeconfig, &[]);
    let pcp = eventually(WAIT, "the PCP mapping", || lab.lease("UDP", 40201)).await;
    assert!(pcp.starts_with("UDP:40201:198.51.100.2:40201:"), "{pcp}");
    let upnp = eventually(WAIT, "the UPnP mapping", || lab.lease("TCP", 40301)).await;
    assert!(upnp.starts_with("TCP:40301:198.51.100.2:40301:"), "{upnp}");
    assert!(
        upnp.ends_with("hostport-allocator default/upnp-game"),
        "{upnp}"
    );
    wait_published(&client, "pcp-game", "Published").await;
    wait_published(&client, "upnp-game", "Published").await;
    let methods: Vec<String> = [
        claim(&client, "pcp-game").await,
        claim(&client, "upnp-game").await,
    ]
    .into_iter()
    .map(|c| c.status.expect("status").external[0].method.clone())
    .collect();
    assert_eq!(methods, ["PCP", "UPnP"]);

    // Stopped: its mappings go, and the claims say they are not published.
    assert!(publisher.stop().success());
    assert!(lab.leases().is_empty(), "{:?}", lab.leases());
    wait_published(&client, "pcp-game", "NotPublished").await;

    // Told to keep them: they stay after it stops (and lapse after their lifetime).
    let publisher = lab.publisher(0, &kubeconfig, &["--keep-mappings"]);
    eventually(WAIT, "the mappings again", || {
        (lab.leases().len() == 2).then_some(())
    })
    .await;
    assert!(publisher.stop().success());
    assert_eq!(lab.leases().len(), 2, "{:?}", lab.leases());
    let kept = lab.lease("UDP", 40201).expect("kept");
    // The next run takes them over (renews them; for PCP with the nonce of the run before,
    // which strict PCP servers require), and removes them when it stops.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let publisher = lab.publisher(0, &kubeconfig, &[]);
    eventually(WAIT, "the kept PCP mapping renewed by the new run", || {
        let lease = lab.lease("UDP", 40201)?;
        (expiry(&lease) != expiry(&kept)).then_some(())
    })
    .await;
    wait_published(&client, "pcp-game", "Published").await;
    assert!(publisher.stop().success());
    assert!(lab.leases().is_empty(), "{:?}", lab.leases());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_taken_on_the_router_is_reported_or_another_is_taken_with_external_port_any() {
    let mut lab = lab_or_skip!(2);
    let server = api::server().await;
    let client = server.client();
    let kubeconfig = lab.connect(&server);
    // Another host (node 1's address, no publisher there) holds 40401 and 40501 on the router.
    for port in ["40401", "40501"] {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.nodes[1],
                "natpmpc",
                "-g",
                "198.51.100.1",
                "-a",
            ])
            .args([port, port, "tcp", "600"])
            .output()
            .expect("natpmpc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    class(&client, "same", (40400, 40410), json!({"protocol": "upnp"})).await;
    class(
        &client,
        "any",
        (40500, 40510),
        json!({"protocol": "upnp", "externalPort": "any"}),
    )
    .await;
    class(
        &client,
        "denied",
        (40600, 40610),
        json!({"protocol": "natpmp"}),
    )
    .await;
    api::bound_claim(&client, "same", "same", 40401).await;
    api::bound_claim(&client, "any", "any", 40501).await;
    api::bound_claim(&client, "denied", "denied", 40601).await;
    running_pod(&client, "same", "same", 40401, &["TCP"], 0).await;
    running_pod(&client, "any", "any", 40501, &["TCP"], 0).await;
    running_pod(&client, "denied", "denied", 40601, &["TCP"], 0).await;
    let _publisher = lab.publisher(0, &kubeconfig, &["--deny-ports=22,40600-40610"]);

    let (status, _, message) = wait_published(&client, "same", "PortTakenExternally").await;
    assert_eq!(status, "False");
    assert!(
        message.contains("port 40401") && message.contains("externalPort: any"),
        "{message}"
    );
    let lease = lab
        .lease("TCP", 40401)
        .expect("the other host's mapping stays");
    assert!(lease.contains(":198.51.100.3:"), "{lease}");

    wait_published(&client, "any", "Published").await;
    let external = claim(&client, "any").await.status.expect("status").external;
    assert_eq!(external.len(), 1);
    let offered = u16::try_from(external[0].port).expect("port");
    assert_ne!(offered, 40501, "the router's offer is reported");
    let lease = lab.lease("TCP", offered).expect("the offered mapping");
    assert!(
        lease.starts_with(&format!("TCP:{offered}:198.51.100.2:40501:")),
        "{lease}"
    );

    let (_, _, message) = wait_published(&client, "denied", "PortDenied").await;
    assert!(message.contains("deny-list"), "{message}");
    assert!(lab.lease("TCP", 40601).is_none());

    // Warning Events name the reason.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "PortTakenExternally"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "PortDenied"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_of_allowed_namespaces_get_the_router_address() {
    let mut lab = lab_or_skip!(1);
    let server = api::server().await;
    let client = server.client();
    let kubeconfig = lab.connect(&server);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (name, labels) in [
        ("hostport-system", json!({})),
        ("web", json!({"hostport.rmb938.com/publish": "true"})),
        ("tenant", json!({})),
    ] {
        apply(
            &namespaces,
            json!({"metadata": {"name": name, "labels": labels}}),
        )
        .await;
    }
    let service = |namespace: &str, port: u16, node_port: u16| {
        json!({
            "metadata": {"name": "site", "namespace": namespace},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "hostport.rmb938.com/router",
                     "ports": [{"port": port, "nodePort": node_port, "protocol": "TCP"}]}
        })
    };
    apply::<Service>(
        &Api::namespaced(client.clone(), "web"),
        service("web", 8080, 30080),
    )
    .await;
    apply::<Service>(
        &Api::namespaced(client.clone(), "tenant"),
        service("tenant", 8081, 30081),
    )
    .await;

    let _publisher = lab.publisher(
        0,
        &kubeconfig,
        &[
            "--service-namespace-selector=hostport.rmb938.com/publish=true",
            "--service-protocol=natpmp",
        ],
    );
    let lease = eventually(WAIT, "the Service's mapping", || lab.lease("TCP", 8080)).await;
    assert!(lease.starts_with("TCP:8080:198.51.100.2:30080:"), "{lease}");
    let services: Api<Service> = Api::namespaced(client.clone(), "web");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ip = services
            .get("site")
            .await
            .expect("service")
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.first().and_then(|i| i.ip.clone()));
        if ip.as_deref() == Some("203.0.113.1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingress never set: {ip:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Not from a namespace the admin did not allow.
    assert!(lab.lease("TCP", 8081).is_none(), "{:?}", lab.leases());

    // Deleted: its mapping goes.
    services
        .delete("site", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually(WAIT, "the Service's mapping removed", || {
        lab.lease("TCP", 8080).is_none().then_some(())
    })
    .await;
}
