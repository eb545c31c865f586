//! The webhook configurations of hostport-allocator (the same rules as
//! `config/webhook`), pointed at a webhook served on 127.0.0.1 for a scenario.

use hostport_api::webhook_paths as paths;
use serde_json::{Value, json};

/// One webhook entry.
fn webhook(
    name: &str,
    validating: bool,
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
    if let Some(conditions) = match_conditions(name, validating) {
        webhook["matchConditions"] = conditions;
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

/// The allocator identity as `config/` installs it (the controller's ServiceAccount).
pub const INSTALLED_ALLOCATOR: &str = "system:serviceaccount:hostport-system:hostport-controller";

/// The `matchConditions` of the webhook `name` (validating or mutating), as in
/// `config/webhook/webhooks.yaml`: the pod webhook sees only the status writes that change
/// annotations; the validating webhooks of our kinds do not see the allocator's own writes
/// (they would allow every one of them: three calls per binding saved).
pub fn match_conditions(name: &str, validating: bool) -> Option<Value> {
    if name.starts_with("pods.") {
        return Some(pod_match_conditions());
    }
    validating.then(|| {
        json!([{
            "name": "not-the-allocator",
            "expression": format!("request.userInfo.username != '{INSTALLED_ALLOCATOR}'"),
        }])
    })
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
            webhook("pods.hostport.rmb938.com", false, url(paths::MUTATE_POD), ca_bundle, pods, Some(pod_selector)),
            webhook("hostportclaims.hostport.rmb938.com", false, url(paths::MUTATE_CLAIM), ca_bundle, rule(group, &["hostportclaims"], &["CREATE"]), None),
        ],
    });
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            webhook("hostportclaims.hostport.rmb938.com", true, url(paths::VALIDATE_CLAIM), ca_bundle, rule(group, &["hostportclaims", "hostportclaims/status"], &["CREATE", "UPDATE"]), None),
            webhook("hostportclasses.hostport.rmb938.com", true, url(paths::VALIDATE_CLASS), ca_bundle, rule(group, &["hostportclasses", "hostportclasses/status"], &["CREATE", "UPDATE"]), None),
            webhook("hostports.hostport.rmb938.com", true, url(paths::VALIDATE_HOST_PORT), ca_bundle, rule(group, &["hostports", "hostports/status"], &["CREATE", "UPDATE"]), None),
        ],
    });
    (mutating, validating)
}
