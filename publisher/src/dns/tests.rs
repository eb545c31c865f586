use std::sync::Arc;

use hostport_api::HostPortClass;
use serde_json::json;

use super::*;
use crate::claimed::Inputs;
use crate::external::{Describer, Knowledge, describe};
use crate::forwarding::rules::{Forward, ForwardSet, Target};
use crate::published::fixtures::{claim_from, pod_from};
use crate::published::{PublishedClaim, PublishedPod};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

#[test]
fn a_claim_gets_a_aaaa_and_an_srv_per_port_name() {
    let classes: [Arc<HostPortClass>; 1] = [Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
            "metadata": {"name": "public"},
            "spec": {"pools": [{"start": 9000, "end": 9100}],
                     "publish": {"edge": true, "dns": {"zone": "games.example.com."}}}
        }))
        .expect("class"),
    )];
    let claims: [Arc<PublishedClaim>; 1] = [claim_from(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "lobby", "namespace": "games", "uid": "claim-uid"},
        "spec": {"hostPortClassName": "public", "hostPortName": "port-9000"},
        "status": {"phase": "Bound", "port": 9000}
    }))];
    let pods: [Arc<PublishedPod>; 1] = [pod_from(json!({
        "metadata": {"name": "lobby-0", "namespace": "games", "annotations": {
            "claim.hostport.rmb938.com/game": "lobby", "claim.hostport.rmb938.com/voice": "lobby"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "lobby", "ports": [
            {"name": "game", "containerPort": 7000, "hostPort": 9000},
            {"name": "voice", "containerPort": 7001, "hostPort": 9000, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "hostIP": "198.51.100.2",
            "hostIPs": [{"ip": "198.51.100.2"}, {"ip": "2001:db8::2"}]}
    }))];
    let inputs = Inputs {
        classes: &classes,
        claims: &claims,
        pods: &pods,
    };
    let forwards: ForwardSet = [
        (Protocol::Tcp, "198.51.100.2"),
        (Protocol::Tcp, "2001:db8::2"),
        (Protocol::Udp, "198.51.100.2"),
    ]
    .into_iter()
    .map(|(protocol, to)| Forward {
        protocol,
        port: 9000,
        target: Target {
            address: ip(to),
            port: 9000,
        },
    })
    .collect();
    let public = [ip("203.0.113.1"), ip("2001:db8:c::1")];
    let knowledge = Knowledge::Forwards {
        describer: Describer::Edge,
        public: &public,
        forwards: &forwards,
    };
    let wanted = wanted(&describe(inputs, knowledge));
    let records = &wanted[&("games".to_owned(), "lobby".to_owned())];
    let object = records.object("games", "lobby");
    assert_eq!(
        object["spec"]["endpoints"],
        json!([
            {"dnsName": "lobby.games.games.example.com", "recordType": "A", "recordTTL": 60,
             "targets": ["203.0.113.1"]},
            {"dnsName": "lobby.games.games.example.com", "recordType": "AAAA", "recordTTL": 60,
             "targets": ["2001:db8:c::1"]},
            {"dnsName": "_game._tcp.lobby.games.games.example.com", "recordType": "SRV",
             "recordTTL": 60, "targets": ["0 0 9000 lobby.games.games.example.com."]},
            {"dnsName": "_voice._udp.lobby.games.games.example.com", "recordType": "SRV",
             "recordTTL": 60, "targets": ["0 0 9000 lobby.games.games.example.com."]},
        ])
    );
    assert_eq!(object["metadata"]["name"], "hostport-lobby");
    assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "claim-uid");
    assert_eq!(
        object["metadata"]["ownerReferences"][0]["kind"],
        "HostPortClaim"
    );
    // No public address: no records (a DNS name that points nowhere helps nobody).
    let nothing = Knowledge::Forwards {
        describer: Describer::Edge,
        public: &[],
        forwards: &forwards,
    };
    assert!(super::wanted(&describe(inputs, nothing)).is_empty());
    // Another publisher describes the class: not ours.
    let node = Knowledge::Forwards {
        describer: Describer::Node,
        public: &public,
        forwards: &forwards,
    };
    assert!(super::wanted(&describe(inputs, node)).is_empty());
}
