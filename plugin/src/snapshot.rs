//! One read of what the commands look at: classes, claims, HostPorts and the pods that name
//! claims, listed once so every answer is about the same moment.

use std::collections::BTreeMap;

use hostport_api::annotations::referenced_claim_names;
use hostport_api::container_ports::finished;
use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::error::Error;

/// The hostport-allocator objects of the cluster (claims and pods of one namespace, or of
/// all).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Classes by name.
    pub classes: BTreeMap<String, HostPortClass>,
    /// Claims by `(namespace, name)`.
    pub claims: BTreeMap<(String, String), HostPortClaim>,
    /// HostPorts, by port (a port is held by at most one).
    pub host_ports: BTreeMap<u16, HostPort>,
    /// Pods with claim annotations that have not finished, by `(namespace, name)`.
    pub pods: BTreeMap<(String, String), Pod>,
}

impl Snapshot {
    /// Lists everything; claims and pods of `namespace` only when given.
    pub async fn fetch(client: &Client, namespace: Option<&str>) -> Result<Self, Error> {
        let classes: Api<HostPortClass> = Api::all(client.clone());
        let host_ports: Api<HostPort> = Api::all(client.clone());
        let (claims, pods): (Api<HostPortClaim>, Api<Pod>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let all = ListParams::default();
        let mut snapshot = Snapshot::default();
        for class in classes
            .list(&all)
            .await
            .map_err(Error::api("listing HostPortClasses"))?
        {
            snapshot.classes.insert(class.name_any(), class);
        }
        for claim in claims
            .list(&all)
            .await
            .map_err(Error::api("listing HostPortClaims"))?
        {
            snapshot.claims.insert(key(&claim), claim);
        }
        for host_port in host_ports
            .list(&all)
            .await
            .map_err(Error::api("listing HostPorts"))?
        {
            if let Some(port) = host_port.port() {
                snapshot.host_ports.insert(port, host_port);
            }
        }
        for pod in pods.list(&all).await.map_err(Error::api("listing Pods"))? {
            let names_a_claim = referenced_claim_names(pod.annotations()).next().is_some();
            if names_a_claim && !finished(&pod) {
                snapshot.pods.insert(key(&pod), pod);
            }
        }
        Ok(snapshot)
    }

    /// The pods that name claim `namespace/name`, by name.
    pub fn pods_of(&self, namespace: &str, name: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|((ns, _), pod)| {
                ns == namespace && referenced_claim_names(pod.annotations()).any(|c| c == name)
            })
            .map(|(_, pod)| pod)
            .collect()
    }

    /// Every port held by a HostPort, whatever its class (a node port is handed out once).
    pub fn held(&self) -> hostport_api::port_set::PortSet {
        let mut held = hostport_api::port_set::PortSet::default();
        for port in self.host_ports.keys() {
            held.insert(*port);
        }
        held
    }
}

/// `(namespace, name)` of a namespaced object.
pub fn key<K: kube::Resource>(object: &K) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// The node a pod runs on, once scheduled.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}
