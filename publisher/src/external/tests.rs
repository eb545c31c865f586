use std::sync::Arc;

use hostport_api::HostPortClass;
use serde_json::json;

use super::*;
use crate::claimed::Protocol;
use crate::forwarding::rules::{Forward, Target};
use crate::published::fixtures::{claim_from, pod_from};
use crate::published::{PublishedClaim, PublishedPod};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn class(name: &str, publish: Value) -> Arc<HostPortClass> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
            "metadata": {"name": name},
            "spec": {"pools": [{"start": 9000, "end": 9100}], "publish": publish}
        }))
        .expect("class"),
    )
}

fn claim(name: &str, class: &str, port: i32, external: Value) -> Arc<PublishedClaim> {
    claim_from(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": name, "namespace": "games"},
        "spec": {"hostPortClassName": class, "hostPortName": format!("port-{port}")},
        "status": {"phase": "Bound", "port": port, "external": external}
    }))
}

/// Pod `name` on n1 (dual stack) claiming `claim` for its TCP port `game`, with
/// `annotations` beside the claim annotation.
fn pod(name: &str, claim: &str, port: i32, annotations: Value) -> Arc<PublishedPod> {
    let mut all = json!({"claim.hostport.rmb938.com/game": claim});
    for (k, v) in annotations.as_object().into_iter().flatten() {
        all[k] = v.clone();
    }
    pod_from(json!({
        "metadata": {"name": name, "namespace": "games", "annotations": all},
        "spec": {"nodeName": "n1", "containers": [{"name": "game", "ports": [
            {"name": "game", "containerPort": 7777, "hostPort": port}]}]},
        "status": {"phase": "Running", "hostIP": "198.51.100.2",
            "hostIPs": [{"ip": "198.51.100.2"}, {"ip": "2001:db8::2"}],
            "podIP": "10.0.0.5"}
    }))
}

fn forward(port: u16, to: &str) -> Forward {
    Forward {
        protocol: Protocol::Tcp,
        port,
        target: Target {
            address: ip(to),
            port,
        },
    }
}

#[test]
fn values_list_ipv4_first_bracket_ipv6_and_fold_blocks_into_ranges() {
    let endpoints: Vec<PublicEndpoint> = [("2001:db8::1", 9001), ("198.51.100.1", 9000)]
        .into_iter()
        .chain((9000..=9009).map(|p| ("198.51.100.1", p)))
        .chain([("2001:db8::1", 9000), ("198.51.100.1", 9020)])
        .map(|(a, port)| PublicEndpoint {
            address: ip(a),
            port,
        })
        .collect();
    assert_eq!(
        value(&endpoints),
        "198.51.100.1:9000-9009,198.51.100.1:9020,[2001:db8::1]:9000-9001"
    );
    assert_eq!(value(&[]), "");
    // Scattered ports (a block mapped with `externalPort: any`) are cut at an item, never
    // past the cap the caches keep.
    let scattered: Vec<PublicEndpoint> = (0..1000)
        .map(|i| PublicEndpoint {
            address: ip("2001:db8::1"),
            port: 10_000 + i * 2,
        })
        .collect();
    let long = value(&scattered);
    assert!(long.len() <= MAX_EXTERNAL_VALUE, "{}", long.len());
    assert!(long.ends_with(|c: char| c.is_ascii_digit()), "{long}");
}

#[test]
fn edge_describes_the_families_forwarded_to_this_pod() {
    let classes = [class("public", json!({"edge": true}))];
    let claims = [claim("a", "public", 9000, json!([]))];
    let pods = [pod("a-0", "a", 9000, json!({}))];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let public = [ip("203.0.113.1"), ip("2001:db8:c::1")];
    let dual: ForwardSet = [forward(9000, "198.51.100.2"), forward(9000, "2001:db8::2")]
        .into_iter()
        .collect();
    let knowledge = |forwards| Knowledge::Forwards {
        describer: Describer::Edge,
        public: &public,
        forwards,
    };
    let (wanted_now, _) = wanted(&describe(inputs, knowledge(&dual)));
    let key = ("games".to_owned(), "a-0".to_owned());
    assert_eq!(
        wanted_now[&key]["game"],
        "203.0.113.1:9000,[2001:db8:c::1]:9000"
    );
    // IPv4 only forwarded: IPv4 only described. Another pod's forward: nothing.
    let v4: ForwardSet = [forward(9000, "198.51.100.2")].into_iter().collect();
    assert_eq!(
        wanted(&describe(inputs, knowledge(&v4))).0[&key]["game"],
        "203.0.113.1:9000"
    );
    let elsewhere: ForwardSet = [forward(9000, "198.51.100.9")].into_iter().collect();
    assert!(
        wanted(&describe(inputs, knowledge(&elsewhere)))
            .0
            .is_empty()
    );
}

#[test]
fn router_mode_describes_this_nodes_entries_of_the_claim_status() {
    let classes = [class("home", json!({"router": {}}))];
    let entry = |address: &str, port: i32, node: &str, protocol: &str| {
        json!({"address": address, "port": port, "protocol": protocol, "method": "PCP",
               "nodeName": node})
    };
    let claims = [claim(
        "a",
        "home",
        9000,
        json!([
            entry("198.51.100.1", 9000, "n1", "TCP"),
            entry("2001:db8:1::2", 9000, "n1", "TCP"),
            entry("198.51.100.1", 9000, "n1", "UDP"),
            entry("198.51.100.1", 9500, "n2", "TCP"),
        ]),
    )];
    let pods = [pod("a-0", "a", 9000, json!({}))];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let (wanted_now, _) = wanted(&describe(inputs, Knowledge::Router { node: "n1" }));
    assert_eq!(
        wanted_now[&("games".to_owned(), "a-0".to_owned())]["game"],
        "198.51.100.1:9000,[2001:db8:1::2]:9000",
        "this node's TCP entries only"
    );
}

#[test]
fn a_patch_writes_what_differs_removes_what_nobody_describes_and_leaves_the_rest() {
    let edge = class("public", json!({"edge": true}));
    let router = class("home", json!({"router": {}}));
    let classes = [edge, router];
    let claims = [
        claim("a", "public", 9000, json!([])),
        claim("b", "home", 9001, json!([])),
    ];
    let current = pod(
        "a-0",
        "a",
        9000,
        json!({"external.hostport.rmb938.com/game": "203.0.113.9:9000"}),
    );
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: std::slice::from_ref(&current),
    };
    let public = [ip("203.0.113.1")];
    let forwards: ForwardSet = [forward(9000, "198.51.100.2")].into_iter().collect();
    let knowledge = Knowledge::Forwards {
        describer: Describer::Edge,
        public: &public,
        forwards: &forwards,
    };
    let (wanted_now, others) = wanted(&describe(inputs, knowledge));
    let key = ("games".to_owned(), "a-0".to_owned());
    let patch = patch_for(&current, wanted_now.get(&key), others.get(&key)).expect("a change");
    assert_eq!(
        patch,
        json!({"metadata": {"annotations": {"external.hostport.rmb938.com/game": "203.0.113.1:9000"}}})
    );
    // Already right: nothing to do.
    let right = pod(
        "a-0",
        "a",
        9000,
        json!({"external.hostport.rmb938.com/game": "203.0.113.1:9000"}),
    );
    assert_eq!(
        patch_for(&right, wanted_now.get(&key), others.get(&key)),
        None
    );
    // The claim of another class (router): the edge publisher leaves its annotation alone;
    // a port nobody publishes any more loses it.
    let routed = pod(
        "b-0",
        "b",
        9001,
        json!({"external.hostport.rmb938.com/game": "198.51.100.1:9001"}),
    );
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: std::slice::from_ref(&routed),
    };
    let (wanted_now, others) = wanted(&describe(inputs, knowledge));
    let key = ("games".to_owned(), "b-0".to_owned());
    assert_eq!(
        patch_for(&routed, wanted_now.get(&key), others.get(&key)),
        None
    );
    let unpublished = [class("home", json!({}))];
    let inputs = Inputs {
        classes: &unpublished,
        claims: &claims,
        pods: std::slice::from_ref(&routed),
    };
    let (wanted_now, others) = wanted(&describe(inputs, knowledge));
    assert_eq!(
        patch_for(&routed, wanted_now.get(&key), others.get(&key)),
        Some(json!({"metadata": {"annotations": {"external.hostport.rmb938.com/game": null}}}))
    );
}

#[test]
fn the_most_direct_publisher_describes_a_port() {
    let publish = |v: Value| serde_json::from_value::<Publish>(v).expect("publish");
    assert_eq!(
        Describer::of(Some(&publish(json!({"edge": true, "router": {}})))),
        Some(Describer::Router)
    );
    assert_eq!(
        Describer::of(Some(&publish(json!({"edge": true, "node": true})))),
        Some(Describer::Edge)
    );
    assert_eq!(
        Describer::of(Some(&publish(json!({"node": true})))),
        Some(Describer::Node)
    );
    assert_eq!(Describer::of(Some(&publish(json!({})))), None);
    assert_eq!(
        parse_public_addresses(&["203.0.113.1".into(), " 2001:db8::1".into()]),
        Ok(vec![ip("203.0.113.1"), ip("2001:db8::1")])
    );
    assert!(parse_public_addresses(&["example.com".into()]).is_err());
}
