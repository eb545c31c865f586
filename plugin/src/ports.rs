//! `kubectl hostport ports`: every held port, with its class, claim, the pods using it, their
//! nodes and where it is reachable from outside.

use serde::Serialize;

use hostport_api::annotations::{EXTERNAL_PREFIX, parse_claim_annotations};
use kube::ResourceExt;

use crate::snapshot::{Snapshot, node_of};

/// One held port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldPort {
    /// The port.
    pub port: u16,
    /// The HostPort holding it.
    pub host_port: String,
    /// Its class.
    pub class: String,
    /// The claim it is bound to, `namespace/name`; none for an admin's reservation.
    pub claim: Option<String>,
    /// The pods naming that claim (running or about to), `name`.
    pub pods: Vec<String>,
    /// The nodes they run on.
    pub nodes: Vec<String>,
    /// Where it is reachable from outside: the router's mappings (`status.external`) and
    /// what the publishers wrote on the pods (`external.hostport.rmb938.com/`).
    pub public: Vec<String>,
}

/// The held ports, lowest first; of claims in `namespace` only when given.
pub fn held_ports(snapshot: &Snapshot, namespace: Option<&str>) -> Vec<HeldPort> {
    let mut out = vec![];
    for (port, host_port) in &snapshot.host_ports {
        let claim_key = host_port.claim_key();
        if let Some(ns) = namespace
            && claim_key.map(|(n, _)| n) != Some(ns)
        {
            continue;
        }
        let mut row = HeldPort {
            port: *port,
            host_port: host_port.name_any(),
            class: host_port.spec.host_port_class_name.clone(),
            claim: claim_key.map(|(ns, name)| format!("{ns}/{name}")),
            pods: vec![],
            nodes: vec![],
            public: vec![],
        };
        if let Some((ns, name)) = claim_key {
            if let Some(status) = snapshot
                .claims
                .get(&(ns.to_owned(), name.to_owned()))
                .and_then(|c| c.status.as_ref())
            {
                for endpoint in &status.external {
                    push_unique(
                        &mut row.public,
                        format!(
                            "{}:{}/{}",
                            endpoint.address, endpoint.port, endpoint.protocol
                        ),
                    );
                }
            }
            for pod in snapshot.pods_of(ns, name) {
                row.pods.push(pod.name_any());
                if let Some(node) = node_of(pod) {
                    push_unique(&mut row.nodes, node.to_owned());
                }
                let named = parse_claim_annotations(pod.annotations()).unwrap_or_default();
                for annotation in named.iter().filter(|a| a.claim_name == name) {
                    let key = format!("{EXTERNAL_PREFIX}{}", annotation.port_name);
                    for address in pod
                        .annotations()
                        .get(&key)
                        .into_iter()
                        .flat_map(|v| v.split(','))
                    {
                        push_unique(&mut row.public, address.trim().to_owned());
                    }
                }
            }
        }
        out.push(row);
    }
    out
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !value.is_empty() && !list.contains(&value) {
        list.push(value);
    }
}

/// `ports` as a table.
pub fn table(rows: &[HeldPort]) -> String {
    if rows.is_empty() {
        return "No port is held.\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.port.to_string(),
                r.class.clone(),
                r.claim.clone().unwrap_or_else(|| "(reserved)".into()),
                r.pods.join(","),
                r.nodes.join(","),
                r.public.join(","),
            ]
        })
        .collect();
    crate::table::render(
        &["port", "class", "claim", "pods", "node", "public"],
        &cells,
    )
}
