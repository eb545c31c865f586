//! The books invariant, checked against what the API server stores: every host port of a
//! live pod in a labelled namespace is held by a live HostPort of a claim that pod names, no
//! two live pods share a port and protocol, and no HostPort of a claim holds a port that a
//! live pod declares without naming that claim.

use std::collections::BTreeMap;

use hostport_api::annotations::referenced_claim_names;
use hostport_api::container_ports::declared_host_ports;
use hostport_api::{HostPort, HostPortClaim, NAMESPACE_LABEL};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// What breaks the books in `namespaces` (and the HostPorts of all claims there); empty when
/// they hold.
pub async fn broken(client: &Client, namespaces: &[&str]) -> Vec<String> {
    let mut problems = vec![];
    let host_ports: Vec<HostPort> = Api::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list HostPorts")
        .items;
    let mut holders: BTreeMap<(u16, String), String> = BTreeMap::new();
    for namespace in namespaces {
        let labelled = Api::<Namespace>::all(client.clone())
            .get_opt(namespace)
            .await
            .expect("read namespace")
            .is_some_and(|ns| {
                ns.labels()
                    .get(NAMESPACE_LABEL)
                    .is_some_and(|v| v == "true")
            });
        let claims: Vec<HostPortClaim> = Api::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("list claims")
            .items;
        let pods: Vec<Pod> = Api::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items;
        for pod in pods.iter().filter(|p| is_live(p)) {
            let key = format!("{namespace}/{}", pod.name_any());
            let named: Vec<&str> = referenced_claim_names(pod.annotations()).collect();
            for (port, protocol) in declared_host_ports(pod) {
                if let Some(other) = holders.insert((port, protocol.to_owned()), key.clone()) {
                    problems.push(format!(
                        "pods {other} and {key} both declare host port {port}/{protocol}"
                    ));
                }
                if !labelled {
                    continue;
                }
                let held = host_ports.iter().any(|hp| {
                    hp.port() == Some(port)
                        && hp.metadata.deletion_timestamp.is_none()
                        && hp.claim_key().is_some_and(|(ns, claim)| {
                            ns == *namespace
                                && named.contains(&claim)
                                && claims.iter().any(|c| {
                                    c.name_any() == claim && c.uid().as_deref() == hp.claim_uid()
                                })
                        })
                });
                if !held {
                    problems.push(format!(
                        "pod {key} declares host port {port}, which no live HostPort of a claim it names ({named:?}) holds"
                    ));
                }
            }
        }
        // A claim's port is never one that a pod declares without naming the claim.
        for host_port in &host_ports {
            let (Some(port), Some((claim_ns, claim))) = (host_port.port(), host_port.claim_key())
            else {
                continue;
            };
            for pod in pods.iter().filter(|p| is_live(p)) {
                let declares = declared_host_ports(pod).iter().any(|(p, _)| *p == port);
                let names = pod.namespace().as_deref() == Some(claim_ns)
                    && referenced_claim_names(pod.annotations()).any(|c| c == claim);
                if declares && !names {
                    problems.push(format!(
                        "HostPort {} of claim {claim_ns}/{claim} holds port {port}, which pod {namespace}/{} declares without naming the claim",
                        host_port.name_any(),
                        pod.name_any()
                    ));
                }
            }
        }
    }
    problems
}

fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Panics with every problem when the books do not hold in `namespaces`.
pub async fn assert_hold(client: &Client, namespaces: &[&str]) {
    let problems = broken(client, namespaces).await;
    assert!(
        problems.is_empty(),
        "the books do not hold:\n{}",
        problems.join("\n")
    );
}
