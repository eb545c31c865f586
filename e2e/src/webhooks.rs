//! The webhook configurations of hostport-allocator (the same rules as
//! `config/webhook`), pointed at a webhook served on 127.0.0.1 for a scenario.

use hostport_api::webhook_paths as paths;
use serde_json::{Value, json};

/// One webhook entry.
fn webhook(
    name: &str,
    url: String,
    ca_bundle: &str,
    rule: Value,
    namespace_selector: Option<Value>,
) -> Value {
    // One rule, or a list of them.
    let rules = match rule {
        Value::Array(rules) => rules,
        rule => vec![rule],
    };
    // The pod webhook creates the claims of pods with class annotations, never on a dry-run.
    let side_effects = if name.starts_with("pods.") {
        "NoneOnDryRun"
    } else {
        "None"
    };
    let mut webhook = json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": side_effects,
        "failurePolicy": "Fail",
        "timeoutSeconds": 5,
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "rules": rules,
    });
    if let Some(selector) = namespace_selector {
        webhook["namespaceSelector"] = selector;
    }
    if name.starts_with("pods.") {
        webhook["matchConditions"] = pod_match_conditions();
    }
    webhook
}

fn rule(group: &str, resources: &[&str], operations: &[&str]) -> Value {
    json!({"apiGroups": [group], "apiVersions": ["v1alpha1"], "resources": resources, "operations": operations, "scope": "*"})
}

/// The pod webhook's rules, as in `config/webhook/webhooks.yaml`: pods on create and update,
/// and their status on update (which can change annotations too).
pub fn pod_rules() -> Value {
    json!([
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"},
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/status"], "operations": ["UPDATE"], "scope": "Namespaced"}
    ])
}

/// The pod webhook's `matchConditions`, as in `config/webhook/webhooks.yaml`: of the status
/// writes, only those that change annotations.
pub fn pod_match_conditions() -> Value {
    json!([{
        "name": "status-writes-that-change-annotations",
        "expression": "!has(request.subResource) || request.subResource != 'status' || (has(object.metadata.annotations) ? object.metadata.annotations : {}) != (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {})"
    }])
}

/// `(mutating, validating)` configurations named `name`, calling `base_url` (e.g.
/// `https://127.0.0.1:9443`) trusted through `ca_bundle` (base64 PEM). `pod_selector` is the
/// pods' namespaceSelector (`hostport.rmb938.com: "true"` plus whatever narrows it).
pub fn configurations(
    name: &str,
    base_url: &str,
    ca_bundle: &str,
    pod_selector: Value,
) -> (Value, Value) {
    let url = |path: &str| format!("{base_url}{path}");
    let group = hostport_api::GROUP;
    let pods = pod_rules();
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            webhook("pods.hostport.rmb938.com", url(paths::MUTATE_POD), ca_bundle, pods, Some(pod_selector)),
            webhook("hostportclaims.hostport.rmb938.com", url(paths::MUTATE_CLAIM), ca_bundle, rule(group, &["hostportclaims"], &["CREATE"]), None),
        ],
    });
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            webhook("hostportclaims.hostport.rmb938.com", url(paths::VALIDATE_CLAIM), ca_bundle, rule(group, &["hostportclaims", "hostportclaims/status"], &["CREATE", "UPDATE"]), None),
            webhook("hostportclasses.hostport.rmb938.com", url(paths::VALIDATE_CLASS), ca_bundle, rule(group, &["hostportclasses", "hostportclasses/status"], &["CREATE", "UPDATE"]), None),
            webhook("hostports.hostport.rmb938.com", url(paths::VALIDATE_HOST_PORT), ca_bundle, rule(group, &["hostports", "hostports/status"], &["CREATE", "UPDATE"]), None),
        ],
    });
    (mutating, validating)
}
