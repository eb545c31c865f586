//! DNS records for clients, through external-dns: for each claim of a class with
//! `spec.publish.dns` whose ports this publisher describes (see [`crate::external`]), one
//! `DNSEndpoint` (`externaldns.k8s.io/v1alpha1`) named `hostport-<claim>` in the claim's
//! namespace, owned by the claim (garbage-collected with it): A/AAAA records
//! `<claim>.<namespace>.<zone>` for its public addresses, and an SRV record
//! `_<portName>._<tcp|udp>.<claim>.<namespace>.<zone>` for each port name.
//!
//! [`wanted`] is pure. [`DnsKeeper`] finds out whether the CRD is installed (saying once when
//! it is not, and looking again every few minutes), then makes the objects match: applied
//! when they differ, deleted when this process wrote them and no longer wants them (in
//! router mode several nodes may describe one claim: each leaves the others' alone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hostport_api::{DnsPublish, HostPortClaim};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::api::{Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::claimed::Protocol;
use crate::external::{Described, PodKey};

/// Label on every DNSEndpoint we keep: the claim's name.
pub const CLAIM_LABEL: &str = "hostport.rmb938.com/claim";
/// Field manager of our applies.
const MANAGER: &str = "hostport-publisher";
/// How often a missing CRD is looked for again.
const LOOK_AGAIN: Duration = Duration::from_secs(300);

/// external-dns's kind.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

/// The name of a claim's DNSEndpoint.
pub fn object_name(claim: &str) -> String {
    format!("hostport-{claim}")
}

/// One claim's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimRecords {
    /// `<claim>.<namespace>.<zone>`.
    pub host: String,
    /// TTL in seconds.
    pub ttl: i64,
    /// Public addresses (A and AAAA).
    pub addresses: BTreeSet<IpAddr>,
    /// Per port name and protocol, the public ports (SRV).
    pub services: BTreeMap<(String, Protocol), BTreeSet<u16>>,
    /// The claim's UID (owner reference).
    pub claim_uid: String,
}

impl ClaimRecords {
    /// external-dns's `spec.endpoints`: A, AAAA, then one SRV per port name and protocol.
    pub fn endpoints(&self) -> Vec<Value> {
        let mut endpoints = vec![];
        for (record, v6) in [("A", false), ("AAAA", true)] {
            let targets: Vec<String> = self
                .addresses
                .iter()
                .filter(|a| a.is_ipv6() == v6)
                .map(IpAddr::to_string)
                .collect();
            if !targets.is_empty() {
                endpoints.push(json!({"dnsName": self.host, "recordType": record,
                    "recordTTL": self.ttl, "targets": targets}));
            }
        }
        for ((port_name, protocol), ports) in &self.services {
            let targets: Vec<String> = ports
                .iter()
                .map(|port| format!("0 0 {port} {}.", self.host))
                .collect();
            endpoints.push(json!({
                "dnsName": format!("_{port_name}._{protocol}.{}", self.host),
                "recordType": "SRV", "recordTTL": self.ttl, "targets": targets}));
        }
        endpoints
    }

    /// The whole object for claim `name` in `namespace`.
    pub fn object(&self, namespace: &str, name: &str) -> Value {
        json!({
            "apiVersion": "externaldns.k8s.io/v1alpha1",
            "kind": "DNSEndpoint",
            "metadata": {
                "name": object_name(name),
                "namespace": namespace,
                "labels": {CLAIM_LABEL: name, "app.kubernetes.io/managed-by": MANAGER},
                "ownerReferences": [{
                    "apiVersion": HostPortClaim::api_version(&()),
                    "kind": HostPortClaim::kind(&()), "name": name, "uid": self.claim_uid,
                    "blockOwnerDeletion": false}],
            },
            "spec": {"endpoints": self.endpoints()},
        })
    }
}

/// The records each claim should have (by namespace and name), for the claims of classes
/// with `spec.publish.dns` whose ports this publisher describes and has a public address for.
pub fn wanted(described: &[Described<'_>]) -> BTreeMap<PodKey, ClaimRecords> {
    let mut records: BTreeMap<PodKey, ClaimRecords> = BTreeMap::new();
    for Described { used, endpoints } in described {
        let Some(dns) = used
            .class
            .spec
            .publish
            .as_ref()
            .and_then(|p| p.dns.as_ref())
        else {
            continue;
        };
        let Some(endpoints) = endpoints.as_ref().filter(|e| !e.is_empty()) else {
            continue;
        };
        let namespace = used.claim.namespace.to_string();
        let name = used.claim.name.to_string();
        let entry = records
            .entry((namespace.clone(), name.clone()))
            .or_insert_with(|| ClaimRecords {
                host: host(&name, &namespace, dns),
                ttl: dns.ttl_seconds(),
                claim_uid: used.claim.uid.to_string(),
                ..ClaimRecords::default()
            });
        for endpoint in endpoints {
            entry.addresses.insert(endpoint.address);
            entry
                .services
                .entry((used.port_name.to_owned(), used.protocol))
                .or_default()
                .insert(endpoint.port);
        }
    }
    records
}

fn host(claim: &str, namespace: &str, dns: &DnsPublish) -> String {
    format!("{claim}.{namespace}.{}", dns.zone.trim_end_matches('.'))
}

/// Whether external-dns's CRD is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crd {
    Unknown,
    Missing { since: Instant },
    Present,
}

/// Keeps the DNSEndpoints.
pub struct DnsKeeper {
    client: Client,
    crd: Crd,
    /// What this process applied, by claim (deleted when no longer wanted).
    written: BTreeMap<PodKey, ClaimRecords>,
    /// When the DNSEndpoints were last listed: a pass that wants what was written skips the
    /// list until [`LOOK_AGAIN`] has passed (records changed or deleted by hand are put
    /// back then), so a steady state costs no API call per pass.
    listed_at: Option<Instant>,
}

impl std::fmt::Debug for DnsKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsKeeper")
            .field("crd", &self.crd)
            .field("written", &self.written.len())
            .finish()
    }
}

impl DnsKeeper {
    /// Writes with `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            crd: Crd::Unknown,
            written: BTreeMap::new(),
            listed_at: None,
        }
    }

    /// Whether every record in `wanted` is the one last written, and nothing else was.
    fn wants_what_is_written(&self, wanted: &BTreeMap<PodKey, ClaimRecords>) -> bool {
        wanted.len() == self.written.len()
            && wanted
                .iter()
                .all(|(key, records)| self.written.get(key) == Some(records))
    }

    /// Makes the DNSEndpoints match `wanted` (a no-op while nothing is wanted and nothing
    /// was written). Failures are logged and retried on the next pass.
    pub async fn keep(&mut self, wanted: &BTreeMap<PodKey, ClaimRecords>) {
        if wanted.is_empty() && self.written.is_empty() {
            return;
        }
        if let Crd::Missing { since } = self.crd
            && since.elapsed() < LOOK_AGAIN
        {
            return;
        }
        if self.crd == Crd::Present
            && self.listed_at.is_some_and(|at| at.elapsed() < LOOK_AGAIN)
            && self.wants_what_is_written(wanted)
        {
            return;
        }
        let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource());
        let listed = all
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}")))
            .await;
        let existing: BTreeMap<PodKey, Value> = match listed {
            Ok(list) => {
                if self.crd != Crd::Present {
                    tracing::info!(
                        "external-dns's DNSEndpoint CRD is installed: keeping DNS records for classes with spec.publish.dns"
                    );
                }
                self.crd = Crd::Present;
                self.listed_at = Some(Instant::now());
                list.items
                    .into_iter()
                    .filter_map(|o| {
                        let claim = o.labels().get(CLAIM_LABEL)?.clone();
                        Some(((o.namespace()?, claim), o.data["spec"].clone()))
                    })
                    .collect()
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                if !matches!(self.crd, Crd::Missing { .. }) {
                    tracing::warn!(
                        "external-dns's DNSEndpoint CRD (dnsendpoints.externaldns.k8s.io) is not installed: no DNS records for classes with spec.publish.dns; install external-dns with --source=crd (looking again every 5 minutes)"
                    );
                }
                self.crd = Crd::Missing {
                    since: Instant::now(),
                };
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "listing DNSEndpoints failed; retrying on the next pass");
                return;
            }
        };
        for ((namespace, name), records) in wanted {
            let object = records.object(namespace, name);
            let key = (namespace.clone(), name.clone());
            if existing.get(&key) == Some(&object["spec"]) {
                self.written.insert(key, records.clone());
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &resource());
            let params = PatchParams::apply(MANAGER).force();
            match api
                .patch(&object_name(name), &params, &Patch::Apply(&object))
                .await
            {
                Ok(_) => {
                    tracing::info!(claim = %format!("{namespace}/{name}"), host = %records.host, "DNS records written");
                    self.written.insert(key, records.clone());
                }
                Err(error) => {
                    tracing::warn!(claim = %format!("{namespace}/{name}"), %error, "writing the DNSEndpoint failed; retrying on the next pass");
                }
            }
        }
        let gone: Vec<PodKey> = self
            .written
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &namespace, &resource());
            match api
                .delete(&object_name(&name), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(claim = %format!("{namespace}/{name}"), "DNS records removed");
                    self.written.remove(&(namespace, name));
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.written.remove(&(namespace, name));
                }
                Err(error) => {
                    tracing::warn!(claim = %format!("{namespace}/{name}"), %error, "removing the DNSEndpoint failed; retrying on the next pass");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
