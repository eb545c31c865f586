use std::net::Ipv4Addr;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::claimed::Protocol;
use crate::router::client::{Method, RouterError};
use crate::router::table::Endpoint;

/// What router mode reads of a claim with these `status.external` entries and conditions.
fn claim(external: serde_json::Value, conditions: serde_json::Value) -> RouterView {
    let claim: HostPortClaim = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "game", "namespace": "games"},
        "spec": {"hostPortClassName": "home", "hostPortName": "port-7001"},
        "status": {"phase": "Bound", "port": 7001, "external": external, "conditions": conditions}
    }))
    .expect("claim");
    RouterView::of(&claim)
}

fn entry(node: &str) -> serde_json::Value {
    json!({"address": "203.0.113.1", "port": 7001, "protocol": "UDP", "method": "PCP", "nodeName": node})
}

fn endpoint() -> Endpoint {
    Endpoint {
        protocol: Protocol::Tcp,
        address: Ipv4Addr::new(203, 0, 113, 1).into(),
        port: 7001,
        method: Method::NatPmp,
        expires_at: Timestamp::from_second(1_800_000_000).expect("time"),
    }
}

#[test]
fn a_node_replaces_only_its_own_entries_and_says_published() {
    let claim = claim(json!([entry("node-a"), entry("node-b")]), json!([]));
    let report = Report {
        endpoints: vec![endpoint()],
        errors: vec![],
    };
    let wanted = claim_report(&claim, "node-a", Some(&report), false).expect("something to say");
    let nodes: Vec<(&str, &str)> = wanted
        .external
        .iter()
        .map(|e| (e.protocol.as_str(), e.node_name.as_str()))
        .collect();
    assert_eq!(nodes, [("TCP", "node-a"), ("UDP", "node-b")]);
    assert_eq!(wanted.external[0].method, "NAT-PMP");
    assert_eq!(
        wanted.external[0].expires_at.as_deref(),
        Some("2027-01-15T08:00:00Z")
    );
    assert_eq!(
        (
            wanted.published().expect("Published").status.as_str(),
            wanted.published().expect("Published").reason.as_str()
        ),
        ("True", REASON_PUBLISHED)
    );
    assert!(
        wanted
            .published()
            .expect("Published")
            .message
            .contains("TCP 203.0.113.1:7001 (NAT-PMP, node node-a)")
    );
}

#[test]
fn an_error_is_the_condition_with_its_reason_and_the_node() {
    let claim = claim(json!([]), json!([]));
    let report = Report {
        endpoints: vec![],
        errors: vec![RouterError::NoGateway],
    };
    let wanted = claim_report(&claim, "node-a", Some(&report), false).expect("something to say");
    assert_eq!(wanted.published().expect("Published").status, "False");
    assert_eq!(wanted.published().expect("Published").reason, "NoGateway");
    assert!(
        wanted
            .published()
            .expect("Published")
            .message
            .starts_with("node node-a: no router address")
    );
}

#[test]
fn a_node_with_nothing_for_a_claim_says_nothing_unless_it_said_something_before() {
    let untouched = claim(json!([entry("node-b")]), json!([]));
    assert_eq!(claim_report(&untouched, "node-a", None, false), None);
    // Its entries are gone now: removed, and the claim is no longer published.
    let ours = claim(json!([entry("node-a")]), json!([]));
    let wanted = claim_report(&ours, "node-a", None, false).expect("something to say");
    assert!(wanted.external.is_empty());
    assert_eq!(
        wanted.published().expect("Published").reason,
        REASON_NOT_PUBLISHED
    );
    // After an error it reported: cleared the same way.
    let wanted = claim_report(&untouched, "node-a", None, true).expect("something to say");
    assert_eq!(wanted.external.len(), 1);
    assert_eq!(
        wanted.published().expect("Published").reason,
        REASON_PUBLISHED
    );
}

#[test]
fn a_family_not_published_is_said_beside_the_one_that_is() {
    let claim = claim(json!([]), json!([]));
    let pinhole = Endpoint {
        address: "2001:db8:a::2".parse().expect("ip"),
        method: Method::Pcp,
        ..endpoint()
    };
    let both = Report {
        endpoints: vec![endpoint(), pinhole],
        errors: vec![],
    };
    let wanted = claim_report(&claim, "node-a", Some(&both), false).expect("report");
    let published = wanted.published().expect("Published");
    assert_eq!(published.status, "True");
    assert!(
        published.message.starts_with(
            "published over IPv4 and IPv6 at TCP 203.0.113.1:7001 (NAT-PMP, node node-a), TCP [2001:db8:a::2]:7001 (PCP, node node-a)"
        ),
        "{}",
        published.message
    );
    assert_eq!(wanted.external[1].address, "2001:db8:a::2");
    let half = Report {
        endpoints: vec![endpoint()],
        errors: vec![RouterError::PinholesNotSupported {
            gateway: "2001:db8:a::1".parse().expect("ip"),
            methods: "PCP, UPnP".into(),
            detail: "PCP: timeout; AddPinhole: no WANIPv6FirewallControl".into(),
        }],
    };
    let wanted = claim_report(&claim, "node-a", Some(&half), false).expect("report");
    let published = wanted.published().expect("Published");
    assert_eq!(
        (published.status.as_str(), published.reason.as_str()),
        ("False", "PinholesNotSupported")
    );
    assert!(
        published.message.contains("opens no IPv6 pinholes")
            && published
                .message
                .contains("; published over IPv4 at TCP 203.0.113.1:7001"),
        "{}",
        published.message
    );
}
