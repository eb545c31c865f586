use hostport_api::HostPortClass;

use super::*;
use crate::claimed::{Protocol, claimable_ports};
use crate::published::fixtures::{claim_from, pod_from};
use crate::published::{PublishedClaim, PublishedPod};

/// Today's default: IPv4 only.
const V4: &[IpFamily] = &[IpFamily::Ipv4];

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}
use serde_json::json;

fn class(name: &str, edge: bool, node: bool) -> Arc<HostPortClass> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
            "metadata": {"name": name},
            "spec": {"pools": [{"start": 9000, "end": 9100}],
                     "publish": {"edge": edge, "node": node}}
        }))
        .expect("class"),
    )
}

fn claim(namespace: &str, name: &str, class: &str, port: Option<i32>) -> Arc<PublishedClaim> {
    let status = port.map(|p| json!({"phase": "Bound", "port": p}));
    claim_from(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hostPortClassName": class, "hostPortName": port.map(|p| format!("port-{p}"))},
        "status": status
    }))
}

/// A game server: `game-tcp`/`game-udp` on container port 7777 with hostPort `port`, named
/// claim `claim`.
fn pod(
    name: &str,
    node: &str,
    host_ip: &str,
    pod_ip: &str,
    claim: &str,
    port: i32,
) -> Arc<PublishedPod> {
    pod_from(json!({
        "metadata": {"name": name, "namespace": "games", "annotations": {
            "claim.hostport.rmb938.com/game-tcp": claim,
            "claim.hostport.rmb938.com/game-udp": claim}},
        "spec": {"nodeName": node, "containers": [{"name": "game", "ports": [
            {"name": "game-tcp", "containerPort": 7777, "hostPort": port, "protocol": "TCP"},
            {"name": "game-udp", "containerPort": 7777, "hostPort": port, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "hostIP": host_ip, "podIP": pod_ip}
    }))
}

fn target(address: &str, port: u16) -> Target {
    Target {
        address: address.parse().expect("ip"),
        port,
    }
}

#[test]
fn edge_forwards_claimed_ports_of_opted_in_classes_to_the_node() {
    let classes = [class("public", true, false), class("private", false, false)];
    let claims = [
        claim("games", "a", "public", Some(9000)),
        claim("games", "b", "private", Some(9001)),
        claim("games", "pending", "public", None),
    ];
    let pods = [
        pod("a-0", "n1", "198.51.100.2", "10.0.0.5", "a", 9000),
        pod("b-0", "n1", "198.51.100.2", "10.0.0.6", "b", 9001),
        pod("p-0", "n1", "198.51.100.2", "10.0.0.7", "pending", 9002),
        // A hostPort that is not the claim's port is not forwarded.
        pod("forged", "n2", "198.51.100.3", "10.0.1.5", "a", 9050),
    ];
    let wanted = edge(
        Inputs {
            classes: &classes,
            claims: &claims,
            pods: &pods,
        },
        &DenyList::default(),
        V4,
    );
    let forwards: Vec<Forward> = wanted.forwards.iter().collect();
    assert_eq!(forwards.len(), 2, "{forwards:?}");
    assert_eq!(
        wanted.forwards.get(IpFamily::Ipv4, Protocol::Tcp, 9000),
        Some(target("198.51.100.2", 9000))
    );
    assert_eq!(
        wanted.forwards.get(IpFamily::Ipv4, Protocol::Udp, 9000),
        Some(target("198.51.100.2", 9000))
    );
    assert!(wanted.conflicts.is_empty());
}

#[test]
fn node_mode_forwards_to_the_pods_of_its_node_only() {
    let classes = [class("cni", false, true)];
    let claims = [
        claim("games", "a", "cni", Some(9000)),
        claim("games", "b", "cni", Some(9001)),
    ];
    let pods = [
        pod("a-0", "n1", "198.51.100.2", "10.0.0.5", "a", 9000),
        pod("b-0", "n2", "198.51.100.3", "10.0.1.5", "b", 9001),
    ];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let wanted = node(inputs, "n1", &[], &DenyList::default(), V4);
    assert_eq!(wanted.forwards.len(), 2);
    assert_eq!(
        wanted.forwards.get(IpFamily::Ipv4, Protocol::Tcp, 9000),
        Some(target("10.0.0.5", 7777))
    );
    assert!(
        edge(inputs, &DenyList::default(), V4).forwards.is_empty(),
        "not opted in for the edge"
    );
}

#[test]
fn two_pods_on_one_claim_conflict_and_the_result_is_deterministic() {
    let classes = [class("public", true, false)];
    let claims = [claim("games", "a", "public", Some(9000))];
    let one = pod("a-0", "n1", "198.51.100.3", "10.0.0.5", "a", 9000);
    let two = pod("a-1", "n2", "198.51.100.2", "10.0.1.5", "a", 9000);
    let forwards = |pods: &[Arc<PublishedPod>]| {
        edge(
            Inputs {
                classes: &classes,
                claims: &claims,
                pods,
            },
            &DenyList::default(),
            V4,
        )
    };
    let (ab, ba) = (forwards(&[one.clone(), two.clone()]), forwards(&[two, one]));
    assert_eq!(ab.forwards, ba.forwards);
    assert_eq!(ab.conflicts.len(), 2, "TCP and UDP");
    assert_eq!(
        ab.forwards.get(IpFamily::Ipv4, Protocol::Tcp, 9000),
        Some(target("198.51.100.2", 9000))
    );
}

#[test]
fn services_opt_in_by_annotation_and_namespace() {
    let service = |namespace: &str, annotated: bool, type_: &str| {
        let annotations = if annotated {
            json!({SERVICE_ANNOTATION: "true"})
        } else {
            json!({})
        };
        Arc::new(
            serde_json::from_value::<Service>(json!({
                "metadata": {"name": "web", "namespace": namespace, "annotations": annotations},
                "spec": {"type": type_, "ports": [
                    {"port": 8443, "nodePort": 30443, "protocol": "TCP"},
                    {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}
            }))
            .expect("service"),
        )
    };
    let node = |name: &str, ready: &str, address: &str| {
        Arc::new(
            serde_json::from_value::<Node>(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}],
                           "addresses": [{"type": "InternalIP", "address": address}]}
            }))
            .expect("node"),
        )
    };
    let nodes = [
        node("b", "True", "198.51.100.3"),
        node("a", "False", "198.51.100.2"),
    ];
    let services_in = [
        service("public", true, "NodePort"),
        service("private", true, "LoadBalancer"),
        service("public", false, "NodePort"),
        service("public", true, "ClusterIP"),
    ];
    let none = PortSet::default();
    let wanted = services(&services_in, &nodes, |ns| ns == "public", &none);
    assert_eq!(wanted.forwards.len(), 2);
    assert_eq!(
        wanted.forwards.get(IpFamily::Ipv4, Protocol::Tcp, 8443),
        Some(target("198.51.100.3", 30443)),
        "to the first Ready node"
    );
    assert!(
        services(&services_in, &[], |_| true, &none)
            .forwards
            .is_empty()
    );
}

/// Case 3 of the security issue: a Service port equal to a claim's port, or inside a class's
/// pools, is never forwarded; the claim keeps its forward whatever the Service's nodePort
/// and the deny-list say.
#[test]
fn claims_win_over_services_and_the_deny_list_comes_first() {
    let classes = [class("public", true, false)];
    let claims = [claim("games", "a", "public", Some(9000))];
    let pods = [pod("a-0", "n1", "198.51.100.2", "10.0.0.5", "a", 9000)];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let service = |name: &str, port: i32, node_port: i32| {
        Arc::new(
            serde_json::from_value::<Service>(json!({
                "metadata": {"name": name, "namespace": "public",
                    "annotations": {SERVICE_ANNOTATION: "true"}},
                "spec": {"type": "NodePort", "ports": [
                    {"port": port, "nodePort": node_port, "protocol": "TCP"}]}
            }))
            .expect("service"),
        )
    };
    let ready = Arc::new(
        serde_json::from_value::<Node>(json!({
            "metadata": {"name": "a"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "198.51.100.1"}]}
        }))
        .expect("node"),
    );
    // The Service's target (198.51.100.1) is lower than the claim's (198.51.100.2): before,
    // it won the conflict. A pool port that no claim holds yet is refused as well.
    let taker = [
        service("taker", 9000, 30080),
        service("pool", 9050, 30081),
        service("fine", 8080, 30082),
    ];
    // 30080 is denied: before, the deny-list came after the conflict and took the claim's
    // forward away with it.
    let deny = DenyList::parse("30080").expect("deny");
    let claimable = claimable_ports(&classes, &claims);
    let mut wanted = edge(inputs, &deny, V4);
    wanted.merge(services(&taker, &[ready], |_| true, &claimable), &deny);
    assert_eq!(
        wanted.forwards.get(IpFamily::Ipv4, Protocol::Tcp, 9000),
        Some(target("198.51.100.2", 9000)),
        "the claim keeps its port"
    );
    assert_eq!(
        wanted.forwards.get(IpFamily::Ipv4, Protocol::Tcp, 8080),
        Some(target("198.51.100.1", 30082))
    );
    let refused: Vec<(String, u16)> = wanted
        .refused
        .iter()
        .map(|r| (format!("{}/{}", r.namespace, r.name), r.port))
        .collect();
    assert_eq!(
        refused,
        vec![
            ("public/taker".to_owned(), 9000),
            ("public/pool".to_owned(), 9050)
        ]
    );
    assert!(wanted.conflicts.is_empty(), "{:?}", wanted.conflicts);
}

#[test]
fn a_denied_claim_does_not_displace_an_allowed_one() {
    // Two pods of one claim: the lower target's forward is denied (its target port), so the
    // other one is forwarded instead of nothing.
    let classes = [class("cni", false, true)];
    let claims = [claim("games", "a", "cni", Some(9000))];
    let pods = [pod("a-0", "n1", "198.51.100.2", "10.0.0.5", "a", 9000)];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let deny = DenyList::parse("7777").expect("deny");
    let wanted = node(inputs, "n1", &[], &deny, V4);
    assert!(wanted.forwards.is_empty());
    assert_eq!(wanted.denied.len(), 2, "TCP and UDP to 7777");
}

#[test]
fn node_mode_forwards_only_to_pod_addresses_of_its_node() {
    let classes = [class("cni", false, true)];
    let claims = [
        claim("games", "a", "cni", Some(9000)),
        claim("games", "b", "cni", Some(9001)),
    ];
    let pods = [
        pod("a-0", "n1", "198.51.100.2", "10.244.1.5", "a", 9000),
        // A pod of this node whose status names an address elsewhere (another node's range).
        pod("b-0", "n1", "198.51.100.2", "10.244.2.5", "b", 9001),
    ];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let cidrs = ["10.244.1.0/24".to_owned(), "fd00:1::/64".to_owned()];
    let wanted = node(inputs, "n1", &cidrs, &DenyList::default(), V4);
    let ports: Vec<u16> = wanted.forwards.iter().map(|f| f.port).collect();
    assert_eq!(ports, vec![9000, 9000], "TCP and UDP of a-0 only");
    // Without podCIDRs on the Node there is nothing to check against.
    assert_eq!(
        node(inputs, "n1", &[], &DenyList::default(), V4)
            .forwards
            .len(),
        4
    );
    assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
    assert!("2001:db8::/129".parse::<IpCidr>().is_err());
    assert!("x/8".parse::<IpCidr>().is_err());
    let all: IpCidr = "0.0.0.0/0".parse().expect("cidr");
    assert!(all.contains(ip("203.0.113.1")));
    assert!(!all.contains(ip("2001:db8::1")), "never the other family");
    let six: IpCidr = "2001:db8:1::/64".parse().expect("cidr");
    assert!(six.contains(ip("2001:db8:1::5")) && !six.contains(ip("2001:db8:2::5")));
    let any6: IpCidr = "::/0".parse().expect("cidr");
    assert!(any6.contains(ip("2001:db8:2::5")));
}

#[test]
fn every_port_of_a_block_is_forwarded_and_claimed() {
    let classes = [class("media", true, true)];
    let block: Arc<PublishedClaim> = claim_from(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "rtp", "namespace": "games"},
        "spec": {"hostPortClassName": "media", "hostPortName": "port-9010", "count": 3},
        "status": {"phase": "Bound", "port": 9010}
    }));
    // As the webhook admits it: the named first port and one more per port of the block.
    let media: Arc<PublishedPod> = pod_from(json!({
        "metadata": {"name": "media-0", "namespace": "games", "annotations": {
            "claim.hostport.rmb938.com/rtp": "rtp"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "media", "ports": [
            {"name": "rtp", "containerPort": 10000, "hostPort": 9010, "protocol": "UDP"},
            {"containerPort": 10001, "hostPort": 9011, "protocol": "UDP"},
            {"containerPort": 10002, "hostPort": 9012, "protocol": "UDP"},
            // Not the block's protocol: not its port.
            {"containerPort": 10003, "hostPort": 9013, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "hostIP": "198.51.100.2", "podIP": "10.0.0.9"}
    }));
    let claims = [block];
    let pods = [media];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let wanted = edge(inputs, &DenyList::default(), V4);
    assert_eq!(wanted.forwards.len(), 3, "{:?}", wanted.forwards);
    for port in 9010..=9012 {
        assert_eq!(
            wanted.forwards.get(IpFamily::Ipv4, Protocol::Udp, port),
            Some(target("198.51.100.2", port))
        );
    }
    // Node mode: each port to its own container port.
    let wanted = node(inputs, "n1", &[], &DenyList::default(), V4);
    assert_eq!(
        wanted.forwards.get(IpFamily::Ipv4, Protocol::Udp, 9012),
        Some(target("10.0.0.9", 10002))
    );
    let claimable = claimable_ports(&[], &claims);
    assert!((9010..=9012).all(|p| claimable.contains(p)));
    assert!(!claimable.contains(9013));
}

/// A dual-stack game server: `hostIPs` and `podIPs` of both families.
fn dual_stack_pod(name: &str, claim: &str, port: i32, pod_ips: &[&str]) -> Arc<PublishedPod> {
    let pod_ips: Vec<serde_json::Value> = pod_ips.iter().map(|ip| json!({"ip": ip})).collect();
    pod_from(json!({
        "metadata": {"name": name, "namespace": "games", "annotations": {
            "claim.hostport.rmb938.com/game-tcp": claim}},
        "spec": {"nodeName": "n1", "containers": [{"name": "game", "ports": [
            {"name": "game-tcp", "containerPort": 7777, "hostPort": port}]}]},
        "status": {"phase": "Running", "hostIP": "198.51.100.2",
            "hostIPs": [{"ip": "198.51.100.2"}, {"ip": "2001:db8::2"}],
            "podIP": pod_ips.first().and_then(|ip| ip["ip"].as_str()), "podIPs": pod_ips}
    }))
}

fn class_with_families(families: serde_json::Value) -> Arc<HostPortClass> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
            "metadata": {"name": "public"},
            "spec": {"pools": [{"start": 9000, "end": 9100}],
                     "publish": {"edge": true, "node": true, "ipFamilies": families}}
        }))
        .expect("class"),
    )
}

#[test]
fn the_class_or_the_flag_picks_the_families_and_each_goes_to_its_own_address() {
    let claims = [claim("games", "a", "public", Some(9000))];
    let pods = [dual_stack_pod(
        "a-0",
        "a",
        9000,
        &["10.0.0.5", "2001:db8:1::5"],
    )];
    let forwards = |class: Arc<HostPortClass>, flag: &[IpFamily]| {
        let classes = [class];
        let inputs = Inputs {
            classes: &classes,
            claims: &claims,
            pods: &pods,
        };
        (
            edge(inputs, &DenyList::default(), flag).forwards,
            node(inputs, "n1", &[], &DenyList::default(), flag).forwards,
        )
    };
    let (edge_both, node_both) = forwards(class_with_families(json!(["IPv6", "IPv4"])), V4);
    assert_eq!(edge_both.len(), 2, "{edge_both:?}");
    assert_eq!(
        edge_both.get(IpFamily::Ipv6, Protocol::Tcp, 9000),
        Some(target("2001:db8::2", 9000)),
        "IPv6 goes to the node's IPv6 address"
    );
    assert_eq!(
        edge_both.get(IpFamily::Ipv4, Protocol::Tcp, 9000),
        Some(target("198.51.100.2", 9000))
    );
    assert_eq!(
        node_both.get(IpFamily::Ipv6, Protocol::Tcp, 9000),
        Some(target("2001:db8:1::5", 7777)),
        "and to the pod's IPv6 address in node mode"
    );
    let (edge_v6, _) = forwards(class_with_families(json!(["IPv6"])), V4);
    assert_eq!(
        edge_v6.iter().map(|f| f.family()).collect::<Vec<_>>(),
        [IpFamily::Ipv6],
        "the class wins over the flag"
    );
    let (edge_flag, _) = forwards(class("public", true, true), &IpFamily::ALL);
    assert_eq!(edge_flag.len(), 2, "an unset class field follows the flag");
    let (edge_default, _) = forwards(class("public", true, true), V4);
    assert_eq!(edge_default.len(), 1, "IPv4 only, as before");
}

#[test]
fn a_family_without_an_address_or_outside_the_pod_cidrs_is_left_out() {
    let classes = [class_with_families(json!(["IPv4", "IPv6"]))];
    let claims = [
        claim("games", "a", "public", Some(9000)),
        claim("games", "b", "public", Some(9001)),
    ];
    let pods = [
        // A single-stack pod on a dual-stack node.
        dual_stack_pod("a-0", "a", 9000, &["10.244.1.5"]),
        // Its IPv6 address lies in another node's range.
        dual_stack_pod("b-0", "b", 9001, &["10.244.1.6", "2001:db8:2::6"]),
    ];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let cidrs = ["10.244.1.0/24".to_owned(), "2001:db8:1::/64".to_owned()];
    let wanted = node(inputs, "n1", &cidrs, &DenyList::default(), V4);
    let forwards: Vec<(u16, IpFamily)> = wanted
        .forwards
        .iter()
        .map(|f| (f.port, f.family()))
        .collect();
    assert_eq!(
        forwards,
        [(9000, IpFamily::Ipv4), (9001, IpFamily::Ipv4)],
        "no IPv6 forward without an address, none to another node's range"
    );
}

#[test]
fn services_are_forwarded_on_their_own_families() {
    let service = |families: serde_json::Value| {
        Arc::new(
            serde_json::from_value::<Service>(json!({
                "metadata": {"name": "web", "namespace": "public",
                    "annotations": {SERVICE_ANNOTATION: "true"}},
                "spec": {"type": "NodePort", "ipFamilies": families, "ports": [
                    {"port": 8443, "nodePort": 30443, "protocol": "TCP"}]}
            }))
            .expect("service"),
        )
    };
    let node = |name: &str, addresses: &[&str]| {
        let addresses: Vec<serde_json::Value> = addresses
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a}))
            .collect();
        Arc::new(
            serde_json::from_value::<Node>(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                           "addresses": addresses}
            }))
            .expect("node"),
        )
    };
    // `a` has IPv4 only; `b` both: IPv6 goes to `b`, IPv4 to `a`.
    let nodes = [
        node("b", &["198.51.100.3", "2001:db8::3"]),
        node("a", &["198.51.100.2"]),
    ];
    let none = PortSet::default();
    let dual = services(&[service(json!(["IPv6", "IPv4"]))], &nodes, |_| true, &none);
    assert_eq!(
        dual.forwards.get(IpFamily::Ipv6, Protocol::Tcp, 8443),
        Some(target("2001:db8::3", 30443))
    );
    assert_eq!(
        dual.forwards.get(IpFamily::Ipv4, Protocol::Tcp, 8443),
        Some(target("198.51.100.2", 30443))
    );
    let single = services(&[service(json!(null))], &nodes, |_| true, &none);
    assert_eq!(single.forwards.len(), 1, "a Service is IPv4 unless it says");
}
