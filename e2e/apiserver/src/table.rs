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

/// One step of a printer column's JSONPath.
#[derive(Debug, PartialEq)]
enum Step {
    /// `.name` (`\.` escapes a dot inside the name, as in a label key).
    Field(String),
    /// `[3]`.
    Index(usize),
    /// `[*]`.
    All,
    /// `[?(@.a.b=="value")]`: the items whose field at the path equals the value.
    Filter(Vec<String>, String),
}

/// The JSONPath subset CRD printer columns use in practice (kube-apiserver takes any path
/// its jsonpath package parses; these are the forms our CRDs and common ones use).
fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = vec![];
    let mut chars = path.chars().peekable();
    let mut field = String::new();
    let flush = |field: &mut String, steps: &mut Vec<Step>| {
        if !field.is_empty() {
            steps.push(Step::Field(std::mem::take(field)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            '.' => flush(&mut field, &mut steps),
            '[' => {
                flush(&mut field, &mut steps);
                let mut inner = String::new();
                for c in chars.by_ref() {
                    // A filter's own brackets end only after its closing parenthesis.
                    let in_filter = inner.starts_with("?(") && !inner.ends_with(')');
                    if c == ']' && !in_filter {
                        break;
                    }
                    inner.push(c);
                }
                steps.push(bracket(&inner));
            }
            c => field.push(c),
        }
    }
    flush(&mut field, &mut steps);
    steps
}

fn bracket(inner: &str) -> Step {
    if inner == "*" {
        return Step::All;
    }
    if let Ok(index) = inner.parse() {
        return Step::Index(index);
    }
    let filter = inner
        .strip_prefix("?(@.")
        .and_then(|f| f.strip_suffix(')'))
        .and_then(|f| f.split_once("=="));
    match filter {
        Some((path, value)) => Step::Filter(
            path.split('.').map(str::to_owned).collect(),
            value.trim_matches(|c| c == '"' || c == '\'').to_owned(),
        ),
        None => Step::Field(inner.to_owned()),
    }
}

/// What `json_path` selects in `object`: the first match, as the API server prints a
/// column (a list of matches of `[*]`, comma-joined as kubectl shows them).
fn lookup(object: &Value, json_path: &str) -> Value {
    let mut current = vec![object];
    let mut many = false;
    for step in parse_path(json_path) {
        current = current
            .into_iter()
            .flat_map(|value| -> Vec<&Value> {
                match &step {
                    Step::Field(name) => value.get(name).into_iter().collect(),
                    Step::Index(i) => value.get(i).into_iter().collect(),
                    Step::All => value
                        .as_array()
                        .map(|a| a.iter().collect())
                        .unwrap_or_default(),
                    Step::Filter(path, wanted) => value
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter(|item| {
                                    path.iter()
                                        .try_fold(*item, |v, segment| v.get(segment))
                                        .and_then(Value::as_str)
                                        == Some(wanted.as_str())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        many |= step == Step::All;
    }
    match (many, current.as_slice()) {
        (_, []) => Value::Null,
        (true, values) => Value::String(
            values
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (false, [first, ..]) => (*first).clone(),
    }
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
        (Some("date"), Value::String(t)) => Value::String(age(&t)),
        (_, other) => other,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_select_as_the_api_server_does() {
        let claim = json!({
            "metadata": {"labels": {"hostport.rmb938.com/pod": "web-0"}},
            "spec": {"pools": [{"start": 9000}, {"start": 9100}]},
            "status": {
                "external": [{"address": "203.0.113.1"}],
                "conditions": [
                    {"type": "Bound", "status": "True", "reason": "Bound"},
                    {"type": "Ready", "status": "False", "reason": "WaitingForPublish"},
                ],
            },
        });
        let at = |path: &str| lookup(&claim, path);
        assert_eq!(
            at(".status.conditions[?(@.type==\"Ready\")].reason"),
            "WaitingForPublish"
        );
        assert_eq!(
            at(".status.conditions[?(@.type==\"Bound\")].status"),
            "True"
        );
        assert_eq!(
            at(".status.conditions[?(@.type==\"Gone\")].status"),
            Value::Null
        );
        assert_eq!(at(".status.external[0].address"), "203.0.113.1");
        assert_eq!(at(".status.external[1].address"), Value::Null);
        assert_eq!(at(".metadata.labels.hostport\\.rmb938\\.com/pod"), "web-0");
        assert_eq!(at(".spec.pools[*].start"), "9000,9100");
        assert_eq!(at(".spec.missing.deeper"), Value::Null);
    }
}
