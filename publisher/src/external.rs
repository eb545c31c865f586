//! The public address inside the pod: each publisher keeps
//! `external.hostport.rmb938.com/<portName>: <address>:<port>[,…]` on the pods whose ports
//! it publishes, so a downward-API volume (which the kubelet refreshes) tells the program
//! where its clients reach it, and when that changes.
//!
//! One port is described by one publisher: router mode when the class has
//! `spec.publish.router`, else edge mode (`spec.publish.edge`), else node mode. Each mode
//! writes the ports it describes, removes the annotations of ports no mode describes (the
//! claim is gone, the class stopped publishing), and leaves the others alone, so two modes
//! never undo each other. [`wanted`] is pure; [`Annotator`] patches the pods that differ.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hostport_api::annotations::external_annotation_key;
use hostport_api::cache::MAX_EXTERNAL_VALUE;
use hostport_api::{IpFamily, Publish};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::claimed::{ClaimedPort, Inputs, claimed_ports};
use crate::forwarding::rules::ForwardSet;
use crate::published::PublishedPod;

/// Which publisher describes a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Describer {
    /// `--mode router` (the class has `spec.publish.router`).
    Router,
    /// `--mode edge` (`spec.publish.edge`, no router).
    Edge,
    /// `--mode node` (`spec.publish.node` only).
    Node,
}

impl Describer {
    /// Who describes ports of a class publishing as `publish` (`None`: nobody).
    pub fn of(publish: Option<&Publish>) -> Option<Self> {
        let publish = publish?;
        if publish.router.is_some() {
            Some(Self::Router)
        } else if publish.edge {
            Some(Self::Edge)
        } else if publish.node {
            Some(Self::Node)
        } else {
            None
        }
    }
}

/// One public address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublicEndpoint {
    /// The public address.
    pub address: IpAddr,
    /// The public port.
    pub port: u16,
}

/// The annotation value: IPv4 addresses first, IPv6 in brackets, consecutive ports of one
/// address as a range (`198.51.100.1:9000-9009,[2001:db8::1]:9000-9009`), cut at an item
/// boundary to stay within [`MAX_EXTERNAL_VALUE`] bytes.
pub fn value(endpoints: &[PublicEndpoint]) -> String {
    let mut by_address: BTreeMap<(IpFamily, IpAddr), BTreeSet<u16>> = BTreeMap::new();
    for endpoint in endpoints {
        by_address
            .entry((IpFamily::of(endpoint.address), endpoint.address))
            .or_default()
            .insert(endpoint.port);
    }
    let mut items = vec![];
    for ((_, address), ports) in by_address {
        let host = match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let mut ports = ports.into_iter().peekable();
        while let Some(first) = ports.next() {
            let mut last = first;
            while ports.peek() == Some(&last.saturating_add(1)) && last < u16::MAX {
                last = ports.next().unwrap_or(last);
            }
            items.push(if first == last {
                format!("{host}:{first}")
            } else {
                format!("{host}:{first}-{last}")
            });
        }
    }
    let mut out = String::new();
    for item in items {
        let separator = usize::from(!out.is_empty());
        if out.len() + separator + item.len() > MAX_EXTERNAL_VALUE {
            break;
        }
        if separator == 1 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out
}

/// What this publisher knows of where ports are reachable.
#[derive(Clone, Copy, Debug)]
pub enum Knowledge<'a> {
    /// Edge or node mode: the public addresses (`--public-address`, or the node's
    /// ExternalIPs in node mode) and the forwards in place; a port is described over a
    /// public address's family when a forward of that family goes to this pod.
    Forwards {
        /// Edge or node.
        describer: Describer,
        /// The public addresses.
        public: &'a [IpAddr],
        /// The forwards applied.
        forwards: &'a ForwardSet,
    },
    /// Router mode on node `node`: the claim's `status.external` entries of this node.
    Router {
        /// This node's name.
        node: &'a str,
    },
}

impl Knowledge<'_> {
    /// Who describes with this knowledge.
    pub(crate) fn describer(&self) -> Describer {
        match self {
            Self::Forwards { describer, .. } => *describer,
            Self::Router { .. } => Describer::Router,
        }
    }

    /// Where `used` is reachable, by what this publisher knows.
    pub(crate) fn endpoints(&self, used: &ClaimedPort<'_>) -> Vec<PublicEndpoint> {
        match *self {
            Self::Forwards {
                describer,
                public,
                forwards,
            } => {
                let targets = match describer {
                    Describer::Node => &used.pod.pod_addresses,
                    _ => &used.pod.host_addresses,
                };
                public
                    .iter()
                    .filter(|address| {
                        forwards
                            .get(IpFamily::of(**address), used.protocol, used.port)
                            .is_some_and(|t| targets.contains(&t.address))
                    })
                    .map(|address| PublicEndpoint {
                        address: *address,
                        port: used.port,
                    })
                    .collect()
            }
            Self::Router { node } => {
                let protocol = used.protocol.as_str().to_uppercase();
                used.claim
                    .external()
                    .iter()
                    .filter(|e| e.node_name == node && e.protocol == protocol)
                    .filter_map(|e| {
                        Some(PublicEndpoint {
                            address: e.address.parse().ok()?,
                            port: u16::try_from(e.port).ok()?,
                        })
                    })
                    .collect()
            }
        }
    }
}

/// A pod by namespace and name.
pub type PodKey = (String, String);

/// Per pod, the external annotations wanted (port name → value).
pub type WantedAnnotations = BTreeMap<PodKey, BTreeMap<String, String>>;

/// Per pod, the port names another publisher describes.
pub type DescribedElsewhere = BTreeMap<PodKey, BTreeSet<String>>;

/// A claimed port of a publishing class, as this publisher sees it.
#[derive(Clone, Debug)]
pub struct Described<'a> {
    /// The port.
    pub used: ClaimedPort<'a>,
    /// Where it is reachable, when this publisher describes it; `None` when another one does.
    pub endpoints: Option<Vec<PublicEndpoint>>,
}

/// Every claimed port of a class that publishes, with `knowledge`'s endpoints for those its
/// publisher describes: computed once per pass, read by the annotations and the DNS records.
pub fn describe<'a>(inputs: Inputs<'a>, knowledge: Knowledge<'_>) -> Vec<Described<'a>> {
    let mine = knowledge.describer();
    claimed_ports(inputs, |_| true)
        .into_iter()
        .filter_map(|used| {
            let describer = Describer::of(used.class.spec.publish.as_ref())?;
            let endpoints = (describer == mine).then(|| knowledge.endpoints(&used));
            Some(Described { used, endpoints })
        })
        .collect()
}

/// The annotations (port name → value) each pod should have, for the ports this publisher
/// describes; and the port names other publishers describe, per pod (left alone).
pub fn wanted(described: &[Described<'_>]) -> (WantedAnnotations, DescribedElsewhere) {
    let mut endpoints: BTreeMap<PodKey, BTreeMap<String, Vec<PublicEndpoint>>> = BTreeMap::new();
    let mut others = DescribedElsewhere::new();
    for Described {
        used,
        endpoints: ours,
    } in described
    {
        let key = used.pod.key();
        let port_name = used.port_name.to_owned();
        match ours {
            Some(ours) => endpoints
                .entry(key)
                .or_default()
                .entry(port_name)
                .or_default()
                .extend(ours.iter().copied()),
            None => {
                others.entry(key).or_default().insert(port_name);
            }
        }
    }
    let wanted = endpoints
        .into_iter()
        .map(|(pod, ports)| {
            let ports = ports
                .into_iter()
                .map(|(name, endpoints)| (name, value(&endpoints)))
                .filter(|(_, value)| !value.is_empty())
                .collect();
            (pod, ports)
        })
        .filter(|(_, ports): &(PodKey, BTreeMap<String, String>)| !ports.is_empty())
        .collect();
    (wanted, others)
}

/// The merge patch of `pod`'s annotations that makes its external annotations `wanted`
/// (leaving `others` alone); `None` when it already has them.
pub fn patch_for(
    pod: &PublishedPod,
    wanted: Option<&BTreeMap<String, String>>,
    others: Option<&BTreeSet<String>>,
) -> Option<Value> {
    let empty = BTreeMap::new();
    let wanted = wanted.unwrap_or(&empty);
    let current: BTreeMap<&str, &str> = pod
        .external
        .iter()
        .map(|(name, value)| (name.as_ref(), value.as_ref()))
        .collect();
    let mut changes = serde_json::Map::new();
    for (name, value) in wanted {
        if current.get(name.as_str()) != Some(&value.as_str()) {
            changes.insert(external_annotation_key(name), json!(value));
        }
    }
    for name in current.keys() {
        let described_elsewhere = others.is_some_and(|o| o.contains(*name));
        if !wanted.contains_key(*name) && !described_elsewhere {
            changes.insert(external_annotation_key(name), Value::Null);
        }
    }
    (!changes.is_empty()).then(|| json!({"metadata": {"annotations": changes}}))
}

/// Keeps the pods' external annotations.
#[derive(Clone)]
pub struct Annotator {
    client: Client,
}

impl std::fmt::Debug for Annotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Annotator").finish_non_exhaustive()
    }
}

impl Annotator {
    /// Writes with `client` (the publisher's ServiceAccount: the webhook lets only it).
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Patches every pod among `pods` whose external annotations differ from what
    /// `described` says (pods being deleted are left alone). Returns how many were patched;
    /// failures are logged and retried on the next pass.
    pub async fn keep(&self, pods: &[Arc<PublishedPod>], described: &[Described<'_>]) -> usize {
        let (wanted, others) = wanted(described);
        let mut patched = 0;
        for pod in pods {
            if pod.deleting {
                continue;
            }
            let key = pod.key();
            let Some(patch) = patch_for(pod, wanted.get(&key), others.get(&key)) else {
                continue;
            };
            let (namespace, name) = key;
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            match pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    patched += 1;
                    tracing::info!(pod = %format!("{namespace}/{name}"), annotations = %patch["metadata"]["annotations"], "public address annotations written");
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "writing the public address annotations failed; retrying on the next pass");
                }
            }
        }
        patched
    }
}

/// Parses `--public-address` values.
pub fn parse_public_addresses(text: &[String]) -> Result<Vec<IpAddr>, String> {
    text.iter()
        .map(|a| {
            a.trim()
                .parse()
                .map_err(|_| format!("{a:?} is not an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests;
