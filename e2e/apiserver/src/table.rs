//! `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`: the server-side printing kubectl
//! asks for, with a CRD's `additionalPrinterColumns` (so `kubectl get hostportclaims` shows
//! Class, Port, Phase and Age as on a real cluster).

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// Whether the request asks for a Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    })
}

/// Whether the request asks for metadata only (`as=PartialObjectMetadataList`, what
/// `Api::list_metadata` sends).
pub fn wants_metadata(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
    })
}

/// A list of `objects` as `PartialObjectMetadataList`: metadata only, as kube-apiserver
/// answers a metadata-only list.
pub fn metadata_list(objects: &[&Value], list_metadata: Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": list_metadata,
        "items": objects.iter().map(|o| json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": o["metadata"],
        })).collect::<Vec<_>>(),
    })
}

fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0});
    match &rt.custom {
        Some(custom) if !custom.printer_columns.is_empty() => {
            let mut all = vec![name];
            all.extend(custom.printer_columns.iter().map(|c| {
                json!({
                    "name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")),
                    "description": c.get("description").cloned().unwrap_or(json!("")),
                    "priority": c.get("priority").cloned().unwrap_or(json!(0)),
                    "jsonPath": c["jsonPath"],
                })
            }));
            all
        }
        _ => vec![
            name,
            json!({"name": "Age", "type": "date", "description": "Time since creation", "priority": 0, "jsonPath": ".metadata.creationTimestamp"}),
        ],
    }
}

fn lookup<'a>(object: &'a Value, json_path: &str) -> &'a Value {
    json_path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .fold(object, |current, segment| &current[segment])
}

/// `5s`, `12m`, `3h`, `2d`, like kubectl's `translateTimestampSince`.
fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let seconds = (k8s_openapi::jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn cell(column: &Value, object: &Value) -> Value {
    if column["format"] == "name" {
        return object["metadata"]["name"].clone();
    }
    let value = lookup(object, column["jsonPath"].as_str().unwrap_or_default());
    match (column["type"].as_str(), value) {
        (_, Value::Null) => Value::Null,
        (Some("date"), Value::String(t)) => Value::String(age(t)),
        (_, other) => other.clone(),
    }
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub fn table(rt: &ResourceType, objects: &[&Value], resource_version: &str) -> Value {
    let columns = columns(rt);
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            json!({
                "cells": columns.iter().map(|c| cell(c, object)).collect::<Vec<_>>(),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]},
            })
        })
        .collect();
    let definitions: Vec<Value> = columns
        .into_iter()
        .map(|mut c| {
            if let Some(map) = c.as_object_mut() {
                map.remove("jsonPath");
            }
            c
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}
