//! Checking RBAC rules against the calls a binary made: the in-process API server counts
//! requests per user, and each (verb, resource) one user made must be allowed by the rules
//! bound to its ServiceAccount in the rendered manifests. (On a real cluster the same is
//! proven by impersonation.)

use std::collections::BTreeSet;

use kube_testserver::{TestApiServer, UserInfo};
use serde_json::Value;

/// API group of a resource plural as the counters name it.
fn group_of(resource: &str) -> &'static str {
    match resource.split('/').next().unwrap_or_default() {
        "hostportclaims" | "hostports" | "hostportclasses" => "hostport.rmb938.com",
        "leases" => "coordination.k8s.io",
        "statefulsets" => "apps",
        "events" => "events.k8s.io",
        "dnsendpoints" => "externaldns.k8s.io",
        "mutatingwebhookconfigurations" | "validatingwebhookconfigurations" => {
            "admissionregistration.k8s.io"
        }
        _ => "",
    }
}

/// The rules bound to `service_account` in `objects` (rendered manifests).
pub fn rules_of(objects: &[Value], service_account: &str) -> Vec<Value> {
    let bound_roles: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
        .filter(|o| {
            o["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == service_account)
        })
        .map(|o| {
            (
                o["roleRef"]["kind"].as_str().unwrap_or_default().to_owned(),
                o["roleRef"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    objects
        .iter()
        .filter(|o| {
            bound_roles.contains(&(
                o["kind"].as_str().unwrap_or_default().to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        })
        .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn allowed(rules: &[Value], verb: &str, resource: &str) -> bool {
    let has = |list: &Value, item: &str| {
        list.as_array()
            .is_some_and(|a| a.iter().any(|v| v == item || v == "*"))
    };
    rules.iter().any(|r| {
        has(&r["verbs"], verb)
            && has(&r["resources"], resource)
            && has(&r["apiGroups"], group_of(resource))
    })
}

/// A call as the counters name it: verb and resource (`hostportclaims/status`).
pub type Call = (String, String);

/// The calls `user` made on `server`, and those `rules` do not allow.
pub fn calls_of(
    server: &TestApiServer,
    user: &UserInfo,
    rules: &[Value],
) -> (BTreeSet<Call>, Vec<Call>) {
    let used: BTreeSet<Call> = server
        .counts()
        .into_keys()
        .filter(|(u, _, _)| *u == user.username)
        .map(|(_, verb, resource)| (verb.as_str().to_owned(), resource))
        .collect();
    let missing = used
        .iter()
        .filter(|(verb, resource)| !allowed(rules, verb, resource))
        .cloned()
        .collect();
    (used, missing)
}
