//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch
//! (the parts of it pods and object metadata use) and server-side apply (approximated as a
//! merge of the applied configuration, without field ownership or conflicts).

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// The patch flavours, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// From a `Content-Type` header value.
    pub fn from_content_type(content_type: &str) -> ApiResult<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }
}

/// Applies `patch` to `target`; the result is the new object.
pub fn apply_patch(
    kind: PatchKind,
    target: &Value,
    patch: &[u8],
    custom: bool,
) -> ApiResult<Value> {
    let mut doc = target.clone();
    match kind {
        PatchKind::Json => {
            let mut ops: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            // kube-apiserver (evanphx/json-patch) passes a `test` for null on a missing path.
            ops.0.retain(|op| match op {
                json_patch::PatchOperation::Test(test) => {
                    !(test.value.is_null() && doc.pointer(test.path.as_str()).is_none())
                }
                _ => true,
            });
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::with_code(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchKind::Merge | PatchKind::Apply => {
            let patch = parse_object(patch, kind)?;
            json_patch::merge(&mut doc, &patch);
        }
        PatchKind::Strategic => {
            if custom {
                return Err(ApiError::unsupported_media_type(
                    "strategic merge patch is not supported for custom resources: use a JSON merge patch",
                ));
            }
            let patch = parse_object(patch, kind)?;
            strategic_merge(&mut doc, &patch, "");
        }
    }
    Ok(doc)
}

fn parse_object(body: &[u8], kind: PatchKind) -> ApiResult<Value> {
    let value: Value = if kind == PatchKind::Apply {
        // Apply configurations are YAML (JSON is YAML too).
        serde_json::from_slice(body)
            .or_else(|_| {
                std::str::from_utf8(body)
                    .map_err(|e| e.to_string())
                    .and_then(|text| serde_saphyr::from_str(text).map_err(|e| e.to_string()))
            })
            .map_err(|e| {
                ApiError::bad_request(format!("error decoding apply configuration: {e}"))
            })?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("patch body must be a JSON object"));
    }
    Ok(value)
}

/// Merge key of the lists strategic merge patch merges instead of replacing (by path).
fn merge_key(path: &str) -> Option<&'static str> {
    match path {
        "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers" | "spec.volumes" => {
            Some("name")
        }
        "spec.containers.env" | "spec.initContainers.env" => Some("name"),
        "spec.containers.ports" | "spec.initContainers.ports" => Some("containerPort"),
        "status.conditions" => Some("type"),
        "metadata.ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Primitive lists strategic merge patch unions instead of replacing.
fn is_merged_primitive_list(path: &str) -> bool {
    path == "metadata.finalizers"
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Strategic merge patch over maps and the known merge-keyed lists, with the `$patch`
/// and `$deleteFromPrimitiveList/<field>` directives.
pub fn strategic_merge(target: &mut Value, patch: &Value, path: &str) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch_map.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if key == "$patch" || key.starts_with("$setElementOrder/") || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) =
                (target_map.get_mut(field), value.as_array())
            {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        let child_path = join(path, key);
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => strategic_merge(
                target_map.entry(key.clone()).or_insert(Value::Null),
                value,
                &child_path,
            ),
            Value::Array(items) => {
                let existing = target_map
                    .entry(key.clone())
                    .or_insert(Value::Array(vec![]));
                merge_list(existing, items, &child_path);
            }
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(existing: &mut Value, patch_items: &[Value], path: &str) {
    if is_merged_primitive_list(path)
        && let Value::Array(items) = existing
    {
        for item in patch_items {
            if !items.contains(item) {
                items.push(item.clone());
            }
        }
        return;
    }
    let (Some(key), Value::Array(items)) = (merge_key(path), &mut *existing) else {
        *existing = Value::Array(patch_items.to_vec());
        return;
    };
    for patch_item in patch_items {
        let id = &patch_item[key];
        let position = items.iter().position(|item| &item[key] == id);
        let delete = patch_item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                items.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut items[i], patch_item, path),
            (None, false) => {
                let mut item = Value::Null;
                strategic_merge(&mut item, patch_item, path);
                items.push(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_with_a_failing_test_is_rejected() {
        let doc = json!({"metadata": {"finalizers": ["a"]}});
        let patch = br#"[{"op":"test","path":"/metadata/finalizers/0","value":"b"},{"op":"remove","path":"/metadata/finalizers/0"}]"#;
        let err = apply_patch(PatchKind::Json, &doc, patch, true).expect_err("test op fails");
        assert_eq!(err.code, 422);
    }

    #[test]
    fn json_patch_test_for_null_passes_on_a_missing_path() {
        let doc = json!({"metadata": {}});
        let patch = br#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["a"]}]"#;
        let out = apply_patch(PatchKind::Json, &doc, patch, true).expect("applies");
        assert_eq!(out["metadata"]["finalizers"], json!(["a"]));
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}});
        let out = apply_patch(
            PatchKind::Merge,
            &doc,
            br#"{"metadata":{"labels":{"a":null},"finalizers":["y"]}}"#,
            true,
        )
        .expect("merge");
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]}})
        );
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_unions_finalizers() {
        let doc = json!({
            "metadata": {"finalizers": ["a"]},
            "spec": {"containers": [
                {"name": "app", "image": "v1", "ports": [{"containerPort": 80, "name": "web"}]},
                {"name": "sidecar", "image": "s1"}
            ]}
        });
        let patch = json!({
            "metadata": {"finalizers": ["b"]},
            "spec": {"containers": [
                {"name": "app", "ports": [{"containerPort": 80, "hostPort": 9000}]},
                {"name": "sidecar", "$patch": "delete"}
            ]}
        });
        let out = apply_patch(
            PatchKind::Strategic,
            &doc,
            patch.to_string().as_bytes(),
            false,
        )
        .expect("smp");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "app", "image": "v1", "ports": [{"containerPort": 80, "name": "web", "hostPort": 9000}]}])
        );
        let removed = apply_patch(
            PatchKind::Strategic,
            &out,
            br#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}"#,
            false,
        )
        .expect("delete from list");
        assert_eq!(removed["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn strategic_merge_is_refused_for_custom_resources() {
        let err = apply_patch(PatchKind::Strategic, &json!({}), b"{}", true).expect_err("refused");
        assert_eq!(err.code, 415);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8")
                .expect("ok"),
            PatchKind::Merge
        );
        assert_eq!(
            PatchKind::from_content_type("text/plain")
                .expect_err("bad")
                .code,
            415
        );
    }
}
