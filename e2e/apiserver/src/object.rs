//! Reading and stamping the metadata of stored JSON objects.

use serde_json::Value;

use crate::store::ObjectKey;

pub(crate) fn resource_version(object: &Value) -> Option<u64> {
    object["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Everything but `metadata` and `status`: what `generation` tracks.
pub(crate) fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    copy
}

/// The object without its `resourceVersion`, to tell a no-op write.
pub(crate) fn without_version(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    copy
}

pub(crate) fn object_key(object: &Value) -> ObjectKey {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// apimachinery's object name rule, with its message: a DNS-1123 subdomain, or a DNS-1123
/// label for namespaces.
pub(crate) fn check_name(name: &str, label_only: bool) -> Result<(), String> {
    let (limit, parts): (usize, Vec<&str>) = if label_only {
        (63, vec![name])
    } else {
        (253, name.split('.').collect())
    };
    if name.len() > limit {
        return Err(format!("must be no more than {limit} characters"));
    }
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = |part: &&str| {
        part.starts_with(alphanumeric)
            && part.ends_with(alphanumeric)
            && part.chars().all(|c| alphanumeric(c) || c == '-')
    };
    if parts.iter().all(valid) {
        Ok(())
    } else {
        Err(format!(
            "must consist of lower case alphanumeric characters, '-'{}, and must start and end with an alphanumeric character",
            if label_only { "" } else { " or '.'" }
        ))
    }
}
