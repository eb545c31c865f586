//! Which pods still use a claim: pods in the claim's namespace, not Succeeded or Failed,
//! whose `claim.hostport.rmb938.com/<port>` annotations name it, or that declare the claim's
//! port as a `hostPort` (a pod admitted with the port whose annotations were read before a
//! change). Such a pod holds its host port on its node, so the port must not be handed to
//! anyone else before it stops.
//!
//! The cache answers first; before a port is released the API server is asked as well
//! (a pod created a moment ago may not be in the cache yet), in small pages. The cache keeps
//! each pod as a [`PodUse`]: what these questions read, a few dozen bytes where a stripped
//! `Pod` costs ~6 KB.

use hostport_api::annotations::referenced_claim_names;
use hostport_api::container_ports::declared_host_ports;
use hostport_process::compact::{Compact, CompactStore};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::error::{Error, Result};

/// Pods per page of a metadata-only list (annotations are at most 256 KiB a pod).
const PAGE: u32 = 20;

/// A claim as the pods that may use it see it: its namespace, name and, once bound, port.
#[derive(Clone, Copy, Debug)]
pub struct ClaimUse<'a> {
    /// The claim's namespace.
    pub namespace: &'a str,
    /// The claim's name.
    pub claim: &'a str,
    /// Its port, if it holds one.
    pub port: Option<u16>,
}

impl<'a> ClaimUse<'a> {
    /// The claim `namespace/claim`, whatever its port.
    pub fn named(namespace: &'a str, claim: &'a str) -> Self {
        Self {
            namespace,
            claim,
            port: None,
        }
    }
}

/// A pod as the questions of this module read it (its namespace and name are the cache's
/// key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUse {
    /// `metadata.uid` (empty if the API server gave none).
    pub uid: Box<str>,
    /// Succeeded or Failed: it holds no port any more.
    pub finished: bool,
    /// The claims its `claim.hostport.rmb938.com/` annotations name.
    pub claims: Box<[Box<str>]>,
    /// The host ports it declares (any protocol).
    pub host_ports: Box<[u16]>,
}

impl From<&Pod> for PodUse {
    fn from(pod: &Pod) -> Self {
        let mut host_ports: Vec<u16> = declared_host_ports(pod).iter().map(|(p, _)| *p).collect();
        host_ports.sort_unstable();
        host_ports.dedup();
        Self {
            uid: pod.uid().unwrap_or_default().into(),
            finished: hostport_api::container_ports::finished(pod),
            claims: referenced_claim_names(pod.annotations())
                .map(Into::into)
                .collect(),
            host_ports: host_ports.into(),
        }
    }
}

impl Compact for PodUse {
    type Source = Pod;
    fn compact(source: &Pod) -> Self {
        source.into()
    }
}

impl PodUse {
    /// Whether the pod (of the claim's namespace) may still run, and names the claim or
    /// declares its port.
    fn holds(&self, of: ClaimUse<'_>) -> bool {
        !self.finished
            && (self.claims.iter().any(|c| **c == *of.claim)
                || of.port.is_some_and(|port| self.host_ports.contains(&port)))
    }
}

/// Names of the cached pods that use the claim, sorted.
pub fn using(of: ClaimUse<'_>, pods: &CompactStore<PodUse>) -> Vec<String> {
    let mut names = pods.fold_namespace(of.namespace, vec![], |mut names, name, pod| {
        if pod.holds(of) {
            names.push(name.to_owned());
        }
        names
    });
    names.sort();
    names
}

/// Whether any cached pod uses the claim.
pub fn is_used(of: ClaimUse<'_>, pods: &CompactStore<PodUse>) -> bool {
    pods.fold_namespace(of.namespace, false, |used, _, pod| used || pod.holds(of))
}

/// Names of the pods that use the claim, as the API server has them now, sorted: a metadata-only
/// list in small pages (a namespace of big pods costs a few KiB per pod, not their specs),
/// then one read of each pod whose annotations name the claim, for its phase. A pod that
/// declares the claim's port without naming it is the cache's to see (it also holds the port
/// in the port book, whoever it names).
pub async fn using_now(client: &Client, of: ClaimUse<'_>) -> Result<Vec<String>> {
    let namespace = of.namespace;
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut candidates = vec![];
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list_metadata(&params).await.map_err(Error::api(
            "listing",
            "Pod",
            format!("{namespace}/*"),
        ))?;
        candidates.extend(
            page.items
                .iter()
                .filter(|pod| referenced_claim_names(pod.annotations()).any(|c| c == of.claim))
                .map(ResourceExt::name_any),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let mut users = vec![];
    for name in candidates {
        let found = api.get_opt(&name).await.map_err(Error::api(
            "reading",
            "Pod",
            format!("{namespace}/{name}"),
        ))?;
        users.extend(
            found
                .filter(|pod| PodUse::from(pod).holds(of))
                .map(|pod| pod.name_any()),
        );
    }
    users.sort();
    Ok(users)
}

/// Whether the pod `namespace/name` with UID `uid` exists: the cache first, then the API
/// server (a pod created a moment ago may not be cached yet).
pub async fn exists(
    client: &Client,
    pods: &CompactStore<PodUse>,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<bool> {
    if pods
        .get(namespace, name)
        .is_some_and(|pod| uid.is_none_or(|uid| *pod.uid == *uid))
    {
        return Ok(true);
    }
    let same = |pod: &Pod| uid.is_none_or(|uid| pod.uid().as_deref() == Some(uid));
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(Error::api(
        "reading",
        "Pod",
        format!("{namespace}/{name}"),
    ))?;
    Ok(found.is_some_and(|pod| same(&pod)))
}

/// "2 pod(s) …: a, b" with at most five names shown.
pub fn describe(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    format!(
        "{} pod(s): {}{}",
        names.len(),
        shown.join(", "),
        if names.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_process::compact::compact_store;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn pod(name: &str, namespace: &str, claim: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace,
                "annotations": {"claim.hostport.rmb938.com/web": claim}},
            "status": {"phase": phase}
        }))
        .expect("pod")
    }

    fn cached(pods: &[Pod]) -> CompactStore<PodUse> {
        let (store, mut writer) = compact_store::<PodUse>();
        for pod in pods {
            writer.apply(&Event::Apply(pod.clone()));
        }
        store
    }

    #[test]
    fn a_pod_declaring_the_claims_port_uses_it_whatever_it_names() {
        let squatter: Pod = serde_json::from_value(json!({
            "metadata": {"name": "kept", "namespace": "team",
                "annotations": {"claim.hostport.rmb938.com/web": "other"}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 37000}]}]},
            "status": {"phase": "Pending"}
        }))
        .expect("pod");
        let pods = cached(&[squatter]);
        let with_port = |port| ClaimUse {
            namespace: "team",
            claim: "a-web",
            port: Some(port),
        };
        assert_eq!(using(with_port(37000), &pods), vec!["kept"]);
        assert!(using(with_port(37001), &pods).is_empty());
        let elsewhere = ClaimUse {
            namespace: "elsewhere",
            ..with_port(37000)
        };
        assert!(using(elsewhere, &pods).is_empty());
    }

    #[test]
    fn only_live_pods_of_the_namespace_that_name_the_claim() {
        let pods = cached(&[
            pod("b", "team", "web", "Running"),
            pod("a", "team", "web", "Pending"),
            pod("done", "team", "web", "Succeeded"),
            pod("failed", "team", "web", "Failed"),
            pod("other-claim", "team", "db", "Running"),
            pod("other-ns", "elsewhere", "web", "Running"),
        ]);
        assert_eq!(using(ClaimUse::named("team", "web"), &pods), vec!["a", "b"]);
        let many: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        assert_eq!(describe(&many), "7 pod(s): p0, p1, p2, p3, p4, ...");
    }

    #[test]
    fn a_cached_pod_keeps_its_uid_claims_and_host_ports_only() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "big", "namespace": "team", "uid": "u-1",
                "annotations": {"claim.hostport.rmb938.com/web": "a-web",
                    "claim.hostport.rmb938.com/game": "a-game", "noise": "x".repeat(100_000)}},
            "spec": {"containers": [{"name": "c", "image": "x".repeat(10_000), "ports": [
                {"containerPort": 80, "hostPort": 37001},
                {"containerPort": 80, "hostPort": 37001, "protocol": "UDP"},
                {"containerPort": 81, "hostPort": 37000},
                {"containerPort": 82}]}]},
            "status": {"phase": "Failed"}
        }))
        .expect("pod");
        assert_eq!(
            PodUse::from(&pod),
            PodUse {
                uid: "u-1".into(),
                finished: true,
                claims: ["a-game".into(), "a-web".into()].into(),
                host_ports: [37000, 37001].into(),
            }
        );
        let pods = cached(std::slice::from_ref(&pod));
        let of = ClaimUse::named("team", "a-web");
        assert!(!is_used(of, &pods), "a finished pod holds no port");
    }
}
