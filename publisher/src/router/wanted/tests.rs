use hostport_api::HostPortClass;
use serde_json::json;

use super::*;
use crate::claimed::Protocol;
use crate::published::fixtures::{claim_from, pod_from};
use crate::published::{PublishedClaim, PublishedPod};

const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn class(name: &str, router: serde_json::Value) -> Arc<HostPortClass> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
            "metadata": {"name": name},
            "spec": {"pools": [{"start": 7000, "end": 7100}], "publish": {"router": router}}
        }))
        .expect("class"),
    )
}

fn claim(name: &str, class: &str, port: i32) -> Arc<PublishedClaim> {
    claim_from(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": name, "namespace": "games"},
        "spec": {"hostPortClassName": class, "hostPortName": format!("port-{port}")},
        "status": {"phase": "Bound", "port": port}
    }))
}

fn pod(name: &str, node: &str, phase: &str, claim: &str, host_port: i32) -> Arc<PublishedPod> {
    pod_from(json!({
        "metadata": {"name": name, "namespace": "games",
                     "annotations": {"claim.hostport.rmb938.com/game": claim}},
        "spec": {"nodeName": node, "containers": [{"name": "game", "ports": [
            {"name": "game", "containerPort": 7777, "hostPort": host_port, "protocol": "UDP"}]}]},
        // A hostIP the pod's status claims is never the mapping's target.
        "status": {"phase": phase, "hostIP": "198.51.100.99"}
    }))
}

const ADDRESSES: [IpAddr; 1] = [IpAddr::V4(NODE)];
const GATEWAYS: [IpAddr; 1] = [IpAddr::V4(GATEWAY)];
const V4: [IpFamily; 1] = [IpFamily::Ipv4];

fn this_node(deny: &DenyList) -> ThisNode<'_> {
    ThisNode {
        name: "node-a",
        addresses: &ADDRESSES,
        default_gateways: &GATEWAYS,
        deny,
        families: &V4,
    }
}

fn keys(wanted: &WantedMappings) -> Vec<(MappingKey, String)> {
    wanted
        .mappings
        .iter()
        .map(|(k, w)| (*k, w.owner.to_string()))
        .collect()
}

#[test]
fn only_running_pods_of_this_node_with_the_claimed_port_of_an_opted_in_class_are_mapped() {
    let deny = DenyList::parse("22").expect("deny");
    let classes = [
        class(
            "home",
            json!({"protocol": "natpmp", "lifetimeSeconds": 600}),
        ),
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
                "metadata": {"name": "private"}, "spec": {"pools": [{"start": 7000, "end": 7100}]}
            }))
            .expect("class"),
        ),
    ];
    let claims = [
        claim("a", "home", 7001),
        claim("b", "home", 7002),
        claim("c", "private", 7003),
        claim("d", "home", 7004),
        claim("e", "home", 7005),
    ];
    let pods = [
        pod("a", "node-a", "Running", "a", 7001),
        pod("b", "node-b", "Running", "b", 7002), // another node's
        pod("c", "node-a", "Running", "c", 7003), // class not opted in
        pod("d", "node-a", "Pending", "d", 7004), // not running yet
        pod("e", "node-a", "Running", "e", 7099), // a hostPort not from its claim
    ];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let wanted = claims_wanted(inputs, this_node(&deny));
    assert_eq!(
        keys(&wanted),
        [(
            (IpFamily::Ipv4, Protocol::Udp, 7001),
            "HostPortClaim games/a".to_owned()
        )]
    );
    let request = &wanted.mappings[&(IpFamily::Ipv4, Protocol::Udp, 7001)].request;
    assert_eq!(
        (request.gateway, request.client, request.external_port),
        (IpAddr::from(GATEWAY), IpAddr::from(NODE), 7001)
    );
    assert_eq!(request.method, RouterProtocol::Natpmp);
    assert_eq!(request.lifetime_seconds, 600);
    assert_eq!(request.description, "hostport-allocator games/a");
    assert!(wanted.problems.is_empty());
}

fn claims_wanted(inputs: Inputs<'_>, node: ThisNode<'_>) -> WantedMappings {
    claims(inputs, node)
}

#[test]
fn denied_ports_and_a_missing_gateway_are_problems_not_requests() {
    let deny = DenyList::parse("7001").expect("deny");
    let classes = [class("home", json!({}))];
    let claims = [claim("a", "home", 7001), claim("b", "home", 7002)];
    let pods = [
        pod("a", "node-a", "Running", "a", 7001),
        pod("b", "node-a", "Running", "b", 7002),
    ];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let mut node = this_node(&deny);
    node.default_gateways = &[];
    let wanted = claims_wanted(inputs, node);
    assert!(wanted.mappings.is_empty());
    let reasons: Vec<(String, &str)> = wanted
        .problems
        .iter()
        .map(|(o, e)| (o.to_string(), e.reason()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("HostPortClaim games/a".to_owned(), "PortDenied"),
            ("HostPortClaim games/b".to_owned(), "NoGateway")
        ]
    );
    // The class's own gateway needs no default route.
    let classes = [class("home", json!({"gateway": "192.0.2.1"}))];
    let inputs = Inputs {
        classes: &classes,
        ..inputs
    };
    let wanted = claims_wanted(inputs, node);
    assert_eq!(
        wanted.mappings[&(IpFamily::Ipv4, Protocol::Udp, 7002)]
            .request
            .gateway,
        IpAddr::from(Ipv4Addr::new(192, 0, 2, 1))
    );
}

fn service(namespace: &str, type_: &str, class: Option<&str>) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "site", "namespace": namespace},
            "spec": {"type": type_, "loadBalancerClass": class, "ports": [
                {"port": 80, "nodePort": 30080, "protocol": "TCP"},
                {"port": 53, "nodePort": 30053, "protocol": "UDP"},
                {"port": 9000, "protocol": "TCP"}]}
        }))
        .expect("service"),
    )
}

#[test]
fn only_load_balancers_of_our_class_in_allowed_namespaces_are_mapped_to_this_nodes_node_ports() {
    let deny = DenyList::parse("53").expect("deny");
    let services = [
        service("web", "LoadBalancer", Some(LOAD_BALANCER_CLASS)),
        service("tenant", "LoadBalancer", Some(LOAD_BALANCER_CLASS)),
        service("web2", "LoadBalancer", Some("metallb")),
        service("web3", "NodePort", Some(LOAD_BALANCER_CLASS)),
    ];
    let settings = ServiceSettings {
        method: RouterProtocol::Upnp,
        gateway: None,
        lifetime_seconds: 3600,
    };
    let wanted = super::services(
        &services,
        |ns| ns.starts_with("web"),
        &PortSet::default(),
        this_node(&deny),
        settings,
    );
    assert_eq!(
        keys(&wanted),
        [(
            (IpFamily::Ipv4, Protocol::Tcp, 80),
            "Service web/site".to_owned()
        )]
    );
    let request = &wanted.mappings[&(IpFamily::Ipv4, Protocol::Tcp, 80)].request;
    assert_eq!(
        (request.internal_port, request.client),
        (30080, NODE.into())
    );
    // Port 53 is denied: reported on the Service.
    assert_eq!(wanted.problems.len(), 1);
    assert_eq!(wanted.problems[0].1.reason(), "PortDenied");
}

#[test]
fn one_router_port_serves_one_object_the_first_by_name() {
    let deny = DenyList::parse("22").expect("deny");
    let mut wanted = WantedMappings::default();
    let settings = ServiceSettings {
        method: RouterProtocol::Auto,
        gateway: Some(GATEWAY),
        lifetime_seconds: 3600,
    };
    let none = PortSet::default();
    let b = super::services(
        &[service("b", "LoadBalancer", Some(LOAD_BALANCER_CLASS))],
        |_| true,
        &none,
        this_node(&deny),
        settings,
    );
    let a = super::services(
        &[service("a", "LoadBalancer", Some(LOAD_BALANCER_CLASS))],
        |_| true,
        &none,
        this_node(&deny),
        settings,
    );
    wanted.merge(b);
    wanted.merge(a);
    assert_eq!(
        wanted.mappings[&(IpFamily::Ipv4, Protocol::Tcp, 80)]
            .owner
            .to_string(),
        "Service a/site"
    );
}

/// Case 3 of the security issue: a LoadBalancer Service does not race a claim for the
/// router port. Mappings are keyed by the router's port, the claim keeps it, and a Service
/// port in a class's pools is refused and reported on the Service.
#[test]
fn claims_win_the_router_port_over_services() {
    let deny = DenyList::parse("22").expect("deny");
    let classes = [class("home", json!({}))];
    let claims = [claim("a", "home", 7001)];
    let pods = [pod("a", "node-a", "Running", "a", 7001)];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let settings = ServiceSettings {
        method: RouterProtocol::Auto,
        gateway: Some(GATEWAY),
        lifetime_seconds: 3600,
    };
    let taker = Arc::new(
        serde_json::from_value::<Service>(json!({
            "metadata": {"name": "taker", "namespace": "web"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS, "ports": [
                {"port": 7001, "nodePort": 30001, "protocol": "UDP"},
                {"port": 7050, "nodePort": 30002, "protocol": "UDP"},
                {"port": 8080, "nodePort": 30003, "protocol": "UDP"}]}
        }))
        .expect("service"),
    );
    // Without the pools check, the claim still wins the router port by its key.
    let mut unchecked = claims_wanted(inputs, this_node(&deny));
    unchecked.merge(super::services(
        std::slice::from_ref(&taker),
        |_| true,
        &PortSet::default(),
        this_node(&deny),
        settings,
    ));
    assert_eq!(
        unchecked.mappings[&(IpFamily::Ipv4, Protocol::Udp, 7001)]
            .owner
            .to_string(),
        "HostPortClaim games/a"
    );
    assert!(
        unchecked
            .problems
            .iter()
            .any(|(o, e)| o.to_string() == "Service web/taker" && e.reason() == "PortClaimed"),
        "{:?}",
        unchecked.problems
    );
    // With it (what the publisher does), no pool port is asked for a Service at all.
    let claimable = crate::claimed::claimable_ports(&classes, &claims);
    let mut wanted = claims_wanted(inputs, this_node(&deny));
    wanted.merge(super::services(
        &[taker],
        |_| true,
        &claimable,
        this_node(&deny),
        settings,
    ));
    assert_eq!(
        keys(&wanted),
        [
            (
                (IpFamily::Ipv4, Protocol::Udp, 7001),
                "HostPortClaim games/a".to_owned()
            ),
            (
                (IpFamily::Ipv4, Protocol::Udp, 8080),
                "Service web/taker".to_owned()
            )
        ]
    );
    let refused: Vec<String> = wanted
        .problems
        .iter()
        .map(|(o, e)| format!("{o}: {}", e.reason()))
        .collect();
    assert_eq!(
        refused,
        [
            "Service web/taker: PortClaimed",
            "Service web/taker: PortClaimed"
        ]
    );
}

#[test]
fn a_block_is_one_mapping_per_port() {
    let deny = DenyList::default();
    let classes = [class("home", json!({}))];
    let block: Arc<PublishedClaim> = claim_from(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "rtp", "namespace": "games"},
        "spec": {"hostPortClassName": "home", "hostPortName": "port-7010", "count": 3},
        "status": {"phase": "Bound", "port": 7010}
    }));
    let media: Arc<PublishedPod> = pod_from(json!({
        "metadata": {"name": "media", "namespace": "games",
                     "annotations": {"claim.hostport.rmb938.com/rtp": "rtp"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "media", "ports": [
            {"name": "rtp", "containerPort": 10000, "hostPort": 7010, "protocol": "UDP"},
            {"containerPort": 10001, "hostPort": 7011, "protocol": "UDP"},
            {"containerPort": 10002, "hostPort": 7012, "protocol": "UDP"}]}]},
        "status": {"phase": "Running"}
    }));
    let (claims, pods) = ([block], [media]);
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let wanted = claims_wanted(inputs, this_node(&deny));
    let owner = "HostPortClaim games/rtp".to_owned();
    assert_eq!(
        keys(&wanted),
        (7010..=7012)
            .map(|port| ((IpFamily::Ipv4, Protocol::Udp, port), owner.clone()))
            .collect::<Vec<_>>()
    );
    assert!((7010..=7012).all(|port| {
        wanted.mappings[&(IpFamily::Ipv4, Protocol::Udp, port)]
            .request
            .external_port
            == port
    }));
}

#[test]
fn a_dual_stack_class_asks_for_a_pinhole_beside_the_mapping_and_says_why_it_cannot() {
    let deny = DenyList::default();
    let classes = [Arc::new(
        serde_json::from_value::<HostPortClass>(json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
            "metadata": {"name": "home"},
            "spec": {"pools": [{"start": 7000, "end": 7100}], "publish": {
                "router": {}, "ipFamilies": ["IPv4", "IPv6"]}}
        }))
        .expect("class"),
    )];
    let claims = [claim("a", "home", 7001)];
    let pods = [pod("a", "node-a", "Running", "a", 7001)];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let node6: IpAddr = "2001:db8:a::2".parse().expect("ip");
    let gateway6: IpAddr = "2001:db8:a::1".parse().expect("ip");
    let addresses = [IpAddr::V4(NODE), node6];
    let gateways = [IpAddr::V4(GATEWAY), gateway6];
    let dual = ThisNode {
        addresses: &addresses,
        default_gateways: &gateways,
        ..this_node(&deny)
    };
    let wanted = claims_wanted(inputs, dual);
    let pinhole = &wanted.mappings[&(IpFamily::Ipv6, Protocol::Udp, 7001)].request;
    assert_eq!((pinhole.gateway, pinhole.client), (gateway6, node6));
    assert!(
        wanted
            .mappings
            .contains_key(&(IpFamily::Ipv4, Protocol::Udp, 7001))
    );
    assert!(wanted.problems.is_empty());
    // A node without an IPv6 address, then without an IPv6 router: IPv4 still mapped, the
    // IPv6 half reported.
    let reasons = |node: ThisNode<'_>| {
        let wanted = claims_wanted(inputs, node);
        assert_eq!(wanted.mappings.len(), 1, "IPv4 goes on");
        wanted
            .problems
            .iter()
            .map(|(_, e)| e.reason())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons(ThisNode {
            default_gateways: &gateways,
            ..this_node(&deny)
        }),
        ["NoIPv6Address"]
    );
    assert_eq!(
        reasons(ThisNode {
            addresses: &addresses,
            ..this_node(&deny)
        }),
        ["NoGateway"]
    );
    // The class may name the IPv6 router; an IPv4 address there is not one.
    let named = |gateway6: &str| {
        let classes = [Arc::new(
            serde_json::from_value::<HostPortClass>(json!({
                "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
                "metadata": {"name": "home"},
                "spec": {"pools": [{"start": 7000, "end": 7100}], "publish": {
                    "router": {"gateway6": gateway6}, "ipFamilies": ["IPv6"]}}
            }))
            .expect("class"),
        )];
        let inputs = Inputs {
            classes: &classes,
            ..inputs
        };
        claims_wanted(
            inputs,
            ThisNode {
                addresses: &addresses,
                ..this_node(&deny)
            },
        )
    };
    assert_eq!(
        named("2001:db8:a::fe").mappings[&(IpFamily::Ipv6, Protocol::Udp, 7001)]
            .request
            .gateway,
        "2001:db8:a::fe".parse::<IpAddr>().expect("ip")
    );
    assert_eq!(named("198.51.100.1").problems[0].1.reason(), "NoGateway");
}
