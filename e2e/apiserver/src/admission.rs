//! Dynamic admission as kube-apiserver does it: the registered Mutating- and
//! ValidatingWebhookConfigurations are matched against each request (rules, scope,
//! namespaceSelector, objectSelector), called over HTTPS with the configured `caBundle` and
//! timeout as AdmissionReview v1, JSONPatch responses applied, `failurePolicy` honoured;
//! mutating webhooks first, validating after schema validation.
//!
//! Over ~500 lines on purpose: matching, calling and applying are one chain, in the order
//! kube-apiserver runs them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::db::Db;
use crate::identity::UserInfo;
use crate::registry::ResourceType;
use crate::selectors::{LabelSelector, labels_of};
use crate::status::{ApiError, ApiResult};

/// Default `timeoutSeconds` of a webhook (kube-apiserver's).
const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// An admission operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// CREATE.
    Create,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// HTTPS clients per CA bundle (building a TLS config per call would dominate the cost).
#[derive(Debug, Default)]
pub struct WebhookCaller {
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

impl WebhookCaller {
    fn client(&self, ca_bundle: &str) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(ca_bundle) {
            return Ok(client.clone());
        }
        let pem = BASE64
            .decode(ca_bundle.trim())
            .map_err(|e| format!("caBundle is not base64: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("caBundle is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("caBundle certificate rejected: {e}"))?;
        }
        if roots.is_empty() {
            return Err("caBundle holds no certificate".into());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| e.to_string())?;
        clients.insert(ca_bundle.to_owned(), client.clone());
        Ok(client)
    }
}

/// One webhook due for a request, with what is needed to call it.
struct Due {
    configuration: String,
    webhook: Value,
}

/// One request as admission sees it.
#[derive(Clone, Copy)]
pub(crate) struct Admission<'a> {
    pub db: &'a Db,
    pub webhooks: &'a WebhookCaller,
    pub rt: &'a ResourceType,
    pub operation: Operation,
    pub subresource: Option<&'a str>,
    pub old: Option<&'a Value>,
    pub user: &'a UserInfo,
    pub namespace: Option<&'a str>,
    pub dry_run: bool,
}

impl Admission<'_> {
    /// Runs the matching mutating webhooks in order, applying their patches to `object`.
    pub async fn mutate(&self, object: &mut Value) -> ApiResult<()> {
        for webhook in self.due("mutatingwebhookconfigurations", object) {
            if let Some(response) = self.ask(&webhook, object).await?
                && !response["patch"].is_null()
            {
                apply_response_patch(&webhook, &response["patch"], object)?;
            }
        }
        Ok(())
    }

    /// Runs the matching validating webhooks.
    pub async fn validate(&self, object: &Value) -> ApiResult<()> {
        for webhook in self.due("validatingwebhookconfigurations", object) {
            self.ask(&webhook, object).await?;
        }
        Ok(())
    }

    fn due(&self, configurations: &str, object: &Value) -> Vec<Due> {
        due_webhooks(
            self.db,
            configurations,
            self.rt,
            self.operation,
            self.subresource,
            object,
            self.old,
            self.namespace,
        )
    }

    /// Calls one webhook; its response when it allowed the request (`None`: failed, ignored).
    async fn ask(&self, webhook: &Due, object: &Value) -> ApiResult<Option<Value>> {
        // As kube-apiserver: a dry-run may only reach webhooks without side effects then.
        let side_effects = webhook.webhook["sideEffects"].as_str().unwrap_or("Unknown");
        if self.dry_run && !matches!(side_effects, "None" | "NoneOnDryRun") {
            return Err(ApiError::bad_request(format!(
                "admission webhook \"{}\" does not support dry run",
                name_of(webhook)
            )));
        }
        let review = review(
            self.rt,
            self.operation,
            self.subresource,
            object,
            self.old,
            self.user,
            self.namespace,
            self.dry_run,
            self.db.new_uid(),
        );
        let response = call(self.webhooks, webhook, &review).await?;
        if let Some(response) = &response {
            verdict(webhook, response)?;
        }
        Ok(response)
    }
}

fn name_of(webhook: &Due) -> &str {
    webhook.webhook["name"]
        .as_str()
        .unwrap_or(&webhook.configuration)
}

#[allow(clippy::too_many_arguments)]
fn due_webhooks(
    db: &Db,
    configurations: &str,
    rt: &ResourceType,
    operation: Operation,
    subresource: Option<&str>,
    object: &Value,
    old: Option<&Value>,
    namespace: Option<&str>,
) -> Vec<Due> {
    let state = db.state();
    let key = (
        "admissionregistration.k8s.io".to_owned(),
        configurations.to_owned(),
    );
    let configs = state.store.list(&key, None);
    if configs.is_empty() {
        return vec![];
    }
    // What a namespaceSelector is matched against: the object's namespace, or the
    // Namespace itself; cluster-scoped objects match every namespaceSelector.
    let namespace_labels = if rt.is_namespace() {
        Some(labels_of(
            object
                .as_object()
                .map_or(old.unwrap_or(&Value::Null), |_| object),
        ))
    } else {
        namespace.map(|ns| {
            state
                .store
                .get(
                    &(String::new(), "namespaces".into()),
                    &(String::new(), ns.to_owned()),
                )
                .map(|n| labels_of(&n))
                .unwrap_or_default()
        })
    };
    let resource = match subresource {
        Some(sub) => format!("{}/{sub}", rt.plural),
        None => rt.plural.clone(),
    };
    let mut due = vec![];
    for config in configs {
        let configuration = config["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for webhook in config["webhooks"].as_array().into_iter().flatten() {
            if !rules_match(webhook, rt, operation, &resource) {
                continue;
            }
            if let Some(labels) = &namespace_labels
                && !selector_matches(&webhook["namespaceSelector"], labels)
            {
                continue;
            }
            let object_labels_match = [Some(object), old]
                .into_iter()
                .flatten()
                .filter(|o| o.is_object())
                .any(|o| selector_matches(&webhook["objectSelector"], &labels_of(o)));
            if !object_labels_match {
                continue;
            }
            due.push(Due {
                configuration: configuration.clone(),
                webhook: webhook.clone(),
            });
        }
    }
    due
}

fn selector_matches(selector: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    // An unparsable selector matches nothing, as kube-apiserver refuses to call the webhook.
    LabelSelector::from_object(selector).is_ok_and(|s| s.matches(labels))
}

fn listed(values: &Value, wanted: &str) -> bool {
    values.as_array().is_some_and(|a| {
        a.iter()
            .any(|v| v.as_str() == Some("*") || v.as_str() == Some(wanted))
    })
}

fn rules_match(webhook: &Value, rt: &ResourceType, operation: Operation, resource: &str) -> bool {
    webhook["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| {
            let scope = rule["scope"].as_str().unwrap_or("*");
            let scope_ok = match scope {
                "Cluster" => !rt.namespaced,
                "Namespaced" => rt.namespaced,
                _ => true,
            };
            let resource_ok = rule["resources"].as_array().is_some_and(|rs| {
                rs.iter().filter_map(Value::as_str).any(|r| {
                    r == resource
                        || (r == "*" && !resource.contains('/'))
                        || (r == "*/*")
                        || r.strip_prefix("*/").is_some_and(|sub| {
                            resource.split_once('/').is_some_and(|(_, s)| s == sub)
                        })
                        || r.strip_suffix("/*").is_some_and(|base| {
                            resource.split('/').next() == Some(base) && resource.contains('/')
                        })
                })
            });
            scope_ok
                && resource_ok
                && listed(&rule["operations"], operation.as_str())
                && listed(&rule["apiGroups"], &rt.group)
                && listed(&rule["apiVersions"], &rt.version)
        })
}

#[allow(clippy::too_many_arguments)]
fn review(
    rt: &ResourceType,
    operation: Operation,
    subresource: Option<&str>,
    object: &Value,
    old: Option<&Value>,
    user: &UserInfo,
    namespace: Option<&str>,
    dry_run: bool,
    uid: String,
) -> Value {
    let kind = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
    let resource = json!({"group": rt.group, "version": rt.version, "resource": rt.plural});
    let name = [Some(object), old]
        .into_iter()
        .flatten()
        .find_map(|o| o["metadata"]["name"].as_str().filter(|n| !n.is_empty()));
    let options_kind = match operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
    };
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "operation": operation.as_str(),
        "userInfo": user,
        "object": if operation == Operation::Delete { Value::Null } else { object.clone() },
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": dry_run,
        "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"},
    });
    if let Some(name) = name {
        request["name"] = json!(name);
    }
    if let Some(ns) = namespace.or_else(|| object["metadata"]["namespace"].as_str()) {
        request["namespace"] = json!(ns);
    }
    if let Some(sub) = subresource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Calls one webhook; `Ok(None)` when it failed and its failurePolicy is Ignore.
async fn call(webhooks: &WebhookCaller, due: &Due, review: &Value) -> ApiResult<Option<Value>> {
    let name = name_of(due);
    let fail = |message: String| -> ApiResult<Option<Value>> {
        if due.webhook["failurePolicy"].as_str() == Some("Ignore") {
            tracing::warn!(webhook = name, %message, "webhook call failed; failurePolicy Ignore lets the request through");
            Ok(None)
        } else {
            Err(ApiError::internal(format!(
                "failed calling webhook \"{name}\": {message}"
            )))
        }
    };
    let timeout = due.webhook["timeoutSeconds"]
        .as_u64()
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let config = &due.webhook["clientConfig"];
    let Some(url) = config["url"].as_str() else {
        return fail("clientConfig.service is not supported by the test API server: register the webhook with clientConfig.url".into());
    };
    let client = match webhooks.client(config["caBundle"].as_str().unwrap_or_default()) {
        Ok(client) => client,
        Err(e) => return fail(format!("failed to call webhook: {e}")),
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}timeout={timeout}s");
    let sent = client
        .post(&url)
        .timeout(Duration::from_secs(timeout))
        .json(review)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return fail(format!(
                "failed to call webhook: Post \"{url}\": context deadline exceeded"
            ));
        }
        Err(e) => {
            return fail(format!(
                "failed to call webhook: Post \"{url}\": {}",
                error_chain(&e)
            ));
        }
    };
    let status = response.status();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(e) => {
            return fail(format!(
                "received invalid webhook response (HTTP {status}): {e}"
            ));
        }
    };
    if !status.is_success() {
        return fail(format!(
            "received invalid webhook response: HTTP {status}: {body}"
        ));
    }
    let answer = &body["response"];
    if body["kind"] != "AdmissionReview" || !answer.is_object() {
        return fail(
            "received invalid webhook response: expected an AdmissionReview with a response".into(),
        );
    }
    if answer["uid"] != review["request"]["uid"] {
        return fail(format!(
            "expected response.uid={}, got {}",
            review["request"]["uid"], answer["uid"]
        ));
    }
    Ok(Some(answer.clone()))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A denial as kube-apiserver reports it.
fn verdict(due: &Due, response: &Value) -> ApiResult<()> {
    if response["allowed"].as_bool() == Some(true) {
        return Ok(());
    }
    let status = &response["status"];
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(403);
    let message = status["message"].as_str().unwrap_or_default();
    // As kube-apiserver (`webhookerrors.ToStatusErr`): the webhook's reason is kept as given.
    let reason = status["reason"].as_str().unwrap_or_default().to_owned();
    let text = if message.is_empty() && !reason.is_empty() {
        format!(
            "admission webhook \"{}\" denied the request: {reason}",
            name_of(due)
        )
    } else if message.is_empty() {
        format!(
            "admission webhook \"{}\" denied the request without explanation",
            name_of(due)
        )
    } else {
        format!(
            "admission webhook \"{}\" denied the request: {message}",
            name_of(due)
        )
    };
    Err(ApiError::with_code(code, reason, text))
}

/// Applies a webhook's JSONPatch. Like kube-apiserver (Go's `[]byte`), the patch may be a
/// base64 string or an array of byte values (what kube-rs's `AdmissionResponse` sends).
fn apply_response_patch(due: &Due, patch: &Value, object: &mut Value) -> ApiResult<()> {
    let name = name_of(due);
    let bytes = match patch {
        Value::String(text) => BASE64.decode(text).map_err(|e| {
            ApiError::internal(format!(
                "webhook \"{name}\" returned a patch that is not base64: {e}"
            ))
        })?,
        Value::Array(items) => items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "webhook \"{name}\" returned a patch array that is not bytes"
                ))
            })?,
        _ => {
            return Err(ApiError::internal(format!(
                "webhook \"{name}\" returned a patch that is neither base64 nor bytes"
            )));
        }
    };
    let operations: json_patch::Patch = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::internal(format!(
            "webhook \"{name}\" returned an invalid JSONPatch: {e}"
        ))
    })?;
    json_patch::patch(object, &operations).map_err(|e| {
        ApiError::internal(format!(
            "webhook \"{name}\" returned a JSONPatch that does not apply: {e}"
        ))
    })
}
