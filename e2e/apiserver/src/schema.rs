//! What kube-apiserver does with a custom resource's body before storing it: prune fields the
//! structural schema does not know (or reject them under `fieldValidation=Strict`), apply
//! schema defaults, check the OpenAPI constraints and evaluate the CEL rules
//! (`x-kubernetes-validations`, transition rules with the old object on update).

use kube::core::cel::{Validator, apply_defaults};
use serde_json::{Map, Value};

use crate::registry::CustomSchema;
use crate::status::FieldError;

thread_local! {
    // Building a validator registers every Kubernetes CEL function: do it once per thread.
    static VALIDATOR: Validator = Validator::new();
}

/// Removes unknown fields in place; returns their paths (for `Strict` errors or warnings).
pub fn prune(schema: &Value, value: &mut Value) -> Vec<String> {
    let mut unknown = vec![];
    if let Value::Object(map) = value {
        // apiVersion, kind and metadata are always kept at the root.
        for (key, child) in map.iter_mut() {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema["properties"].get(key) {
                Some(child_schema) => prune_node(child_schema, child, key, &mut unknown),
                None if preserves_unknown(schema) => {}
                None => unknown.push(key.clone()),
            }
        }
        map.retain(|key, _| {
            matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                || schema["properties"].get(key).is_some()
                || preserves_unknown(schema)
        });
    }
    unknown
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

fn prune_node(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if preserves_unknown(schema) && schema.get("properties").is_none() {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let mut kept = Map::new();
                for (key, mut child) in std::mem::take(map) {
                    let child_path = format!("{path}.{key}");
                    match props.get(&key) {
                        Some(child_schema) => {
                            prune_node(child_schema, &mut child, &child_path, unknown);
                            kept.insert(key, child);
                        }
                        None if preserves_unknown(schema) => {
                            kept.insert(key, child);
                        }
                        None => unknown.push(child_path),
                    }
                }
                *map = kept;
            } else if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (key, child) in map.iter_mut() {
                    prune_node(extra, child, &format!("{path}.{key}"), unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item_schema, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Applies the schema's `default`s (as the API server does when decoding).
pub fn default(schema: &Value, value: &Value) -> Value {
    apply_defaults(schema, value)
}

/// Checks the OpenAPI constraints and CEL rules; every violation, in kube-apiserver's words.
pub fn validate(custom: &CustomSchema, value: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = vec![];
    let schema = &custom.schema;
    if let Some(props) = schema["properties"].as_object() {
        for (key, child_schema) in props {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match value.get(key) {
                Some(child) => check(child_schema, child, key, &mut errors),
                None if is_required(schema, key) => errors.push(FieldError::required(key.clone())),
                None => {}
            }
        }
    }
    if errors.is_empty() {
        // Like kube-apiserver, CEL runs only on objects that pass the schema.
        let result = VALIDATOR.with(|v| v.validate_compiled(&custom.compiled, value, old));
        if let Err(failures) = result {
            for failure in failures.iter() {
                let field = failure.field_path.trim_start_matches('.').to_owned();
                let at = lookup(value, &field);
                errors.push(FieldError::invalid(
                    field,
                    &Value::String(type_name(&at).to_owned()),
                    &failure.message,
                ));
            }
        }
    }
    errors
}

fn lookup(value: &Value, path: &str) -> Value {
    let mut current = value;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let name = segment.split('[').next().unwrap_or(segment);
        current = &current[name];
    }
    current.clone()
}

fn is_required(schema: &Value, key: &str) -> bool {
    schema["required"]
        .as_array()
        .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(key)))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match (expected, value) {
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        ("number", Value::Number(_)) => true,
        ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("array", Value::Array(_)) => true,
        ("object", Value::Object(_)) => true,
        _ => false,
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if schema["nullable"].as_bool() != Some(true) {
            errors.push(FieldError::invalid(
                path,
                value,
                format!(
                    "{path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if let Some(expected) = schema["type"].as_str()
        && !type_matches(expected, value)
    {
        errors.push(FieldError::invalid(
            path,
            value,
            format!(
                "{path} in body must be of type {expected}: \"{}\"",
                type_name(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(FieldError::not_supported(path, value, allowed));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            errors.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body should be greater than or equal to {min}"),
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            errors.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body should be less than or equal to {max}"),
            ));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema["minLength"].as_u64()
            && len < min
        {
            errors.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = schema["maxLength"].as_u64()
            && len > max
        {
            errors.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body may not be longer than {max}"),
            ));
        }
    }
    match value {
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema["minItems"].as_u64()
                && len < min
            {
                errors.push(FieldError::invalid(
                    path,
                    &Value::from(len),
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && len > max
            {
                errors.push(FieldError::invalid(
                    path,
                    &Value::from(len),
                    format!("{path} in body should have at most {max} items"),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (key, child_schema) in props {
                    match map.get(key) {
                        Some(child) => check(child_schema, child, &format!("{path}.{key}"), errors),
                        None if is_required(schema, key) => {
                            errors.push(FieldError::required(format!("{path}.{key}")))
                        }
                        None => {}
                    }
                }
            } else if let Some(extra) = schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (key, child) in map {
                    check(extra, child, &format!("{path}.{key}"), errors);
                }
            }
        }
        _ => {}
    }
}
