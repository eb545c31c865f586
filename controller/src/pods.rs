//! Which pods still use a claim: pods in the claim's namespace, not Succeeded or Failed,
//! whose `claim.hostport.rmb938.com/<port>` annotations name it, or that declare the claim's
//! port as a `hostPort` (a pod admitted with the port whose annotations were read before a
//! change). Such a pod holds its host port on its node, so the port must not be handed to
//! anyone else before it stops.
//!
//! The cache answers first; before a port is released the API server is asked as well
//! (a pod created a moment ago may not be in the cache yet), in small pages.

use std::sync::Arc;

use hostport_api::annotations::referenced_claim_names;
use hostport_api::container_ports::declared_host_ports;
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

/// Whether `pod` is in the claim's namespace, may still run, and names the claim or declares
/// its port.
fn holds(pod: &Pod, of: ClaimUse<'_>) -> bool {
    pod.namespace().as_deref() == Some(of.namespace)
        && !hostport_api::container_ports::finished(pod)
        && (referenced_claim_names(pod.annotations()).any(|c| c == of.claim)
            || of
                .port
                .is_some_and(|port| declared_host_ports(pod).iter().any(|(p, _)| *p == port)))
}

/// Names of the pods among `pods` that use the claim, sorted.
pub fn using(of: ClaimUse<'_>, pods: &[Arc<Pod>]) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter(|pod| holds(pod, of))
        .map(|pod| pod.name_any())
        .collect();
    names.sort();
    names
}

/// Whether any of `pods` uses the claim.
pub fn is_used(of: ClaimUse<'_>, pods: &[Arc<Pod>]) -> bool {
    pods.iter().any(|pod| holds(pod, of))
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
        users.extend(found.filter(|pod| holds(pod, of)).map(|pod| pod.name_any()));
    }
    users.sort();
    Ok(users)
}

/// Whether the pod `namespace/name` with UID `uid` exists: the cache first, then the API
/// server (a pod created a moment ago may not be cached yet).
pub async fn exists(
    client: &Client,
    pods: &kube::runtime::reflector::Store<Pod>,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<bool> {
    let same = |pod: &Pod| uid.is_none_or(|uid| pod.uid().as_deref() == Some(uid));
    let key = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
    if pods.get(&key).is_some_and(|pod| same(&pod)) {
        return Ok(true);
    }
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
    use serde_json::json;

    fn pod(name: &str, namespace: &str, claim: &str, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace,
                    "annotations": {"claim.hostport.rmb938.com/web": claim}},
                "status": {"phase": phase}
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn a_pod_declaring_the_claims_port_uses_it_whatever_it_names() {
        let squatter: Arc<Pod> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "kept", "namespace": "team",
                    "annotations": {"claim.hostport.rmb938.com/web": "other"}},
                "spec": {"containers": [{"name": "c", "ports": [
                    {"containerPort": 80, "hostPort": 37000}]}]},
                "status": {"phase": "Pending"}
            }))
            .expect("pod"),
        );
        let with_port = |port| ClaimUse {
            namespace: "team",
            claim: "a-web",
            port: Some(port),
        };
        assert_eq!(
            using(with_port(37000), std::slice::from_ref(&squatter)),
            vec!["kept"]
        );
        assert!(using(with_port(37001), std::slice::from_ref(&squatter)).is_empty());
        let elsewhere = ClaimUse {
            namespace: "elsewhere",
            ..with_port(37000)
        };
        assert!(using(elsewhere, &[squatter]).is_empty());
    }

    #[test]
    fn only_live_pods_of_the_namespace_that_name_the_claim() {
        let pods = [
            pod("b", "team", "web", "Running"),
            pod("a", "team", "web", "Pending"),
            pod("done", "team", "web", "Succeeded"),
            pod("failed", "team", "web", "Failed"),
            pod("other-claim", "team", "db", "Running"),
            pod("other-ns", "elsewhere", "web", "Running"),
        ];
        assert_eq!(using(ClaimUse::named("team", "web"), &pods), vec!["a", "b"]);
        let many: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        assert_eq!(describe(&many), "7 pod(s): p0, p1, p2, p3, p4, ...");
    }
}
