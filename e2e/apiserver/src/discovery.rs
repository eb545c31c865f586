//! Discovery (`/api`, `/apis`, group and group-version resource lists) and `/version`,
//! in the legacy (non-aggregated) format that kube-rs and kubectl both understand.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::db::Db;
use crate::registry::ResourceType;
use crate::request::Route;
use crate::server::ok_text;
use crate::status::ApiError;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut entries = vec![json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": VERBS,
        "shortNames": rt.short_names,
        "categories": rt.categories,
    })];
    if rt.status_subresource {
        entries.push(json!({
            "name": format!("{}/status", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    entries
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first()})
}

/// Serves a discovery route.
pub(crate) fn serve(db: &Db, route: &Route) -> Response {
    let types: Vec<ResourceType> = db.state().registry.all().cloned().collect();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rt in types.iter().filter(|t| !t.group.is_empty()) {
        let versions = groups.entry(rt.group.clone()).or_default();
        if !versions.contains(&rt.version) {
            versions.push(rt.version.clone());
        }
    }
    let body = match route {
        Route::Health => return ok_text("ok"),
        Route::Version => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-testserver",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64",
        }),
        Route::CoreVersions => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }),
        Route::Groups => json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups.iter().map(|(g, vs)| group_entry(g, vs)).collect::<Vec<_>>(),
        }),
        Route::Group(group) => match groups.get(group) {
            Some(versions) => {
                let mut entry = group_entry(group, versions);
                entry["kind"] = json!("APIGroup");
                entry["apiVersion"] = json!("v1");
                entry
            }
            None => return ApiError::no_such_resource(&format!("/apis/{group}")).into_response(),
        },
        Route::Resources(group, version) => {
            let resources: Vec<Value> = types
                .iter()
                .filter(|t| &t.group == group && &t.version == version)
                .flat_map(resource_entries)
                .collect();
            if resources.is_empty() {
                return ApiError::no_such_resource(&format!("{group}/{version}")).into_response();
            }
            let group_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
        }
        Route::Resource(_) => return ApiError::no_such_resource("resource").into_response(),
    };
    axum::Json(body).into_response()
}
