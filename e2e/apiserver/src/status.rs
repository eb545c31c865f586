//! API errors as kube-apiserver returns them: a `metav1.Status` body with the HTTP code,
//! reason and the same message wording, so clients (and people reading test failures) see
//! what a real cluster would say.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

use crate::registry::ResourceType;

/// One invalid field, as in `Status.details.causes`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueForbidden`…
    pub reason: &'static str,
    /// Path of the field, e.g. `spec.pools[0].start`.
    pub field: String,
    /// What is wrong, in kube-apiserver's words.
    pub message: String,
}

impl FieldError {
    /// `field: Invalid value: <value>: message`.
    pub fn invalid(
        field: impl Into<String>,
        value: &Value,
        message: impl std::fmt::Display,
    ) -> Self {
        let field = field.into();
        Self {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {message}", short_json(value)),
            field,
        }
    }

    /// `field: Required value`.
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// `field: Forbidden: message`.
    pub fn forbidden(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {message}"),
        }
    }

    /// `field: Unsupported value: <value>: supported values: …`.
    pub fn not_supported(field: impl Into<String>, value: &Value, allowed: &[Value]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(short_json).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                short_json(value),
                allowed.join(", ")
            ),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}...", &text[..text.floor_char_boundary(77)])
    } else {
        text
    }
}

/// An error response: HTTP status plus a `metav1.Status` body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `metav1.StatusReason`, e.g. `NotFound` (a webhook's denial keeps its own).
    pub reason: std::borrow::Cow<'static, str>,
    /// Human-readable message.
    pub message: String,
    /// `Status.details`, when the error is about one object.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(
        code: u16,
        reason: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
        .with_details(rt, name)
    }

    /// 404: the namespace of a namespaced request does not exist.
    pub fn not_found_namespace(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
    }

    /// 404 for a path that names no served resource.
    pub fn no_such_resource(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409: the name is taken.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        )
        .with_details(rt, name)
    }

    /// 409: stale `resourceVersion` or failed UID precondition.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_plural()
            ),
        )
        .with_details(rt, name)
    }

    /// 409 with the wording kube-apiserver uses for a stale `resourceVersion`.
    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: `Kind.group "name" is invalid: field: message, …`.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<FieldError>) -> Self {
        let summary: Vec<String> = causes.iter().map(ToString::to_string).collect();
        let kind = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid".into(),
            message: format!("{kind} \"{name}\" is invalid: {}", summary.join(", ")),
            details: Some(
                json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes}),
            ),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 410: the requested resourceVersion was compacted away.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// Any code, for injected faults and webhook-provided statuses.
    pub fn with_code(
        code: u16,
        reason: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(code, reason, message)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_status())).into_response()
    }
}

/// Result of a request handler.
pub type ApiResult<T> = Result<T, ApiError>;
