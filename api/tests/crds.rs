//! The generated CRDs: `crds/` matches the code, the schemas are structural (what a real API
//! server accepts), every field is documented for `kubectl explain`, and the CEL rules compile
//! and accept/reject what they should when evaluated as kube-apiserver would.

use hostport_api::crds;
use kube::core::cel::{ValidationErrors, Validator, compile_schema, estimate_rule_cost};
use serde_json::{Value, json};

fn schema_of(kind_plural: &str) -> Value {
    let (_, crd) = crds::all()
        .into_iter()
        .find(|(_, crd)| crd.spec.names.plural == kind_plural)
        .expect("known CRD");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("schema to JSON")
}

#[test]
fn crds_directory_matches_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut expected = vec![("kustomization.yaml".to_owned(), crds::kustomization())];
    for (file, crd) in crds::all() {
        expected.push((file.to_owned(), crds::to_yaml(&crd).expect("yaml")));
    }
    // The Helm chart carries the same CRDs (Helm installs crds/ before the templates).
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crds::CHART_CRDS);
    let in_chart: Vec<_> = expected[1..]
        .iter()
        .map(|(file, want)| (chart.join(file), want.clone()))
        .collect();
    let in_crds = expected
        .into_iter()
        .map(|(file, want)| (dir.join(file), want));
    for (path, want) in in_crds.chain(in_chart) {
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date with api/src: run `{}` and commit the result",
            path.display(),
            crds::REGENERATE_COMMAND
        );
    }
}

#[test]
fn generated_yaml_parses_back_to_the_same_crd() {
    for (file, crd) in crds::all() {
        let yaml = crds::to_yaml(&crd).expect("yaml");
        let back: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(back, crd, "{file}");
    }
}

/// Walks every schema node, calling `check(path, node)`.
fn walk(path: &str, node: &Value, check: &mut dyn FnMut(&str, &Value)) {
    check(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, check);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, check);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), extra, check);
    }
}

#[test]
fn schemas_are_structural_and_documented() {
    for plural in ["hostportclasses", "hostportclaims", "hostports"] {
        let schema = schema_of(plural);
        let mut problems = vec![];
        walk(plural, &schema, &mut |path, node| {
            for forbidden in [
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "$ref",
                "definitions",
                "$defs",
            ] {
                if node.get(forbidden).is_some() {
                    problems.push(format!("{path}: has {forbidden}"));
                }
            }
            if node.get("type").and_then(Value::as_str).is_none() {
                problems.push(format!("{path}: no single type"));
            }
            if let Some(format) = node.get("format").and_then(Value::as_str)
                && !["int32", "int64", "date-time"].contains(&format)
            {
                problems.push(format!("{path}: unsupported format {format}"));
            }
            if path != plural
                && node
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                problems.push(format!("{path}: no description for kubectl explain"));
            }
        });
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

#[test]
fn names_printer_columns_and_categories() {
    let all = crds::all();
    let find = |plural: &str| {
        all.iter()
            .find(|(_, c)| c.spec.names.plural == plural)
            .map(|(_, c)| c.clone())
            .expect("crd")
    };
    let columns = |plural: &str| -> Vec<String> {
        find(plural).spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(
        columns("hostportclaims"),
        ["Class", "Ports", "Phase", "Reason", "Age"]
    );
    assert_eq!(
        columns("hostports"),
        ["Port", "Class", "Claim", "Phase", "Age"]
    );
    assert_eq!(
        columns("hostportclasses"),
        [
            "Pools",
            "Capacity",
            "Allocated",
            "Available",
            "Ready",
            "Age"
        ]
    );

    for (plural, scope, short) in [
        ("hostportclasses", "Cluster", "hpclass"),
        ("hostportclaims", "Namespaced", "hpclaim"),
        ("hostports", "Cluster", "hp"),
    ] {
        let crd = find(plural);
        assert_eq!(crd.spec.group, "hostport.rmb938.com");
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        assert_eq!(crd.spec.scope, scope);
        assert!(
            crd.spec
                .names
                .short_names
                .clone()
                .unwrap_or_default()
                .contains(&short.to_owned())
        );
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["hostport-allocator".to_owned()])
        );
        let subresources = crd.spec.versions[0]
            .subresources
            .clone()
            .expect("subresources");
        assert!(
            subresources.status.is_some(),
            "{plural} has a status subresource"
        );
    }
}

/// Every `x-kubernetes-validations` rule in a schema, as (path, rule).
fn rules(plural: &str) -> Vec<(String, String)> {
    let mut found = vec![];
    walk(plural, &schema_of(plural), &mut |path, node| {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            found.push((
                path.to_owned(),
                rule["rule"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    });
    found
}

#[test]
fn every_cel_rule_is_present_compiles_and_fits_the_cost_budget() {
    let expected = [
        (
            "hostportclasses",
            "hostportclasses.spec",
            "self.pools.all(a,",
        ),
        (
            "hostportclasses",
            "hostportclasses.spec.pools[]",
            "self.start <= self.end",
        ),
        (
            "hostportclaims",
            "hostportclaims.spec",
            "has(self.port) == has(oldSelf.port)",
        ),
        (
            "hostportclaims",
            "hostportclaims.spec",
            "has(self.portPolicy) == has(oldSelf.portPolicy)",
        ),
        (
            "hostportclaims",
            "hostportclaims.spec.hostPortClassName",
            "self == oldSelf",
        ),
        (
            "hostports",
            "hostports.spec",
            "!has(oldSelf.port) || has(self.port)",
        ),
        (
            "hostports",
            "hostports.spec.hostPortClassName",
            "self == oldSelf",
        ),
        ("hostports", "hostports.spec.port", "self == oldSelf"),
    ];
    for (plural, path, rule_start) in expected {
        let found = rules(plural);
        assert!(
            found
                .iter()
                .any(|(p, r)| p == path && r.starts_with(rule_start)),
            "{path}: no rule starting with {rule_start:?} in {found:?}"
        );
    }
    for plural in ["hostportclasses", "hostportclaims", "hostports"] {
        let mut errors = vec![];
        collect_compile_errors(&compile_schema(&schema_of(plural)), &mut errors);
        assert!(errors.is_empty(), "{plural}: {errors:?}");
        // Cost is estimated where each rule lives, with that node's maxItems bounds.
        walk(plural, &schema_of(plural), &mut |path, node| {
            let Some(node_rules) = node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            else {
                return;
            };
            let compiled = compile_schema(node);
            for rule in node_rules {
                let rule = rule["rule"].as_str().unwrap_or_default();
                let over_budget: Vec<_> = estimate_rule_cost(rule, &compiled)
                    .into_iter()
                    .filter(|w| w.message.contains("exceeds"))
                    .collect();
                assert!(over_budget.is_empty(), "{path}: {over_budget:?}");
            }
        });
    }
}

fn collect_compile_errors(schema: &kube::core::cel::CompiledSchema, out: &mut Vec<String>) {
    out.extend(schema.compilation_errors().iter().map(|e| e.to_string()));
    for child in schema.properties.values() {
        collect_compile_errors(child, out);
    }
    if let Some(items) = &schema.items {
        collect_compile_errors(items, out);
    }
}

fn validate(plural: &str, new: &Value, old: Option<&Value>) -> Result<(), ValidationErrors> {
    Validator::new().validate(&schema_of(plural), new, old)
}

fn class(pools: Value) -> Value {
    json!({"apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
           "metadata": {"name": "sample"}, "spec": {"pools": pools}})
}

fn claim(spec: Value) -> Value {
    json!({"apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
           "metadata": {"name": "echo-web", "namespace": "default"}, "spec": spec})
}

fn host_port(spec: Value) -> Value {
    json!({"apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPort",
           "metadata": {"name": "port-9000"}, "spec": spec})
}

fn expect_error(result: Result<(), ValidationErrors>, message: &str) {
    let errors = result.expect_err(message).to_string();
    assert!(
        errors.contains(message),
        "expected {message:?} in {errors:?}"
    );
}

#[test]
fn class_rules() {
    validate(
        "hostportclasses",
        &class(json!([{"start": 9000, "end": 9500}])),
        None,
    )
    .expect("Go README class");
    validate(
        "hostportclasses",
        &class(json!([{"start": 9000, "end": 9000}, {"start": 9001, "end": 9100}])),
        None,
    )
    .expect("adjacent pools");
    expect_error(
        validate(
            "hostportclasses",
            &class(json!([{"start": 9500, "end": 9000}])),
            None,
        ),
        "pool start must be less than or equal to pool end",
    );
    expect_error(
        validate(
            "hostportclasses",
            &class(json!([{"start": 9000, "end": 9100}, {"start": 9100, "end": 9200}])),
            None,
        ),
        "pools of one class must not overlap",
    );
    let published_on = |families: Value| {
        let mut class = class(json!([{"start": 9000, "end": 9100}]));
        class["spec"]["publish"] = json!({"edge": true, "ipFamilies": families});
        class
    };
    for families in [json!(["IPv4"]), json!(["IPv6"]), json!(["IPv6", "IPv4"])] {
        validate("hostportclasses", &published_on(families.clone()), None)
            .unwrap_or_else(|e| panic!("{families}: {e}"));
    }
    expect_error(
        validate(
            "hostportclasses",
            &published_on(json!(["IPv6", "IPv6"])),
            None,
        ),
        "ipFamilies lists each family once",
    );
    // The enum is the API server's job (this validator runs the CEL rules only).
    assert_eq!(
        schema_of("hostportclasses")["properties"]["spec"]["properties"]["publish"]["properties"]["ipFamilies"]
            ["items"]["enum"],
        json!(["IPv4", "IPv6"])
    );
}

#[test]
fn claim_rules() {
    let unbound = claim(json!({"hostPortClassName": "sample"}));
    let go_unbound = claim(json!({"hostPortClassName": "sample", "hostPortName": ""}));
    let bound = claim(json!({"hostPortClassName": "sample", "hostPortName": "port-9000"}));
    validate("hostportclaims", &unbound, None).expect("create");
    validate("hostportclaims", &bound, Some(&unbound)).expect("controller binds");
    validate("hostportclaims", &bound, Some(&go_unbound)).expect("binds a Go-project claim");
    validate("hostportclaims", &bound, Some(&bound)).expect("no-op update");
    // No CEL rule on hostPortName: CEL cannot tell the allocator (which re-points a claim
    // whose HostPort is gone) from a tenant; the webhook does.
    validate(
        "hostportclaims",
        &claim(json!({"hostPortClassName": "sample", "hostPortName": "port-9001"})),
        Some(&bound),
    )
    .expect("the allocator re-points");
    // Bounded, so a claim's size (and every cache of it) stays small.
    assert_eq!(
        schema_of("hostportclaims")["properties"]["spec"]["properties"]["hostPortName"]["maxLength"],
        253
    );
    expect_error(
        validate(
            "hostportclaims",
            &claim(json!({"hostPortClassName": "other"})),
            Some(&unbound),
        ),
        "hostPortClassName is immutable",
    );
    let static_port = claim(json!({"hostPortClassName": "sample", "port": 9000}));
    validate("hostportclaims", &static_port, None).expect("static port");
    for changed in [
        claim(json!({"hostPortClassName": "sample", "port": 9001})),
        unbound.clone(),
    ] {
        expect_error(
            validate("hostportclaims", &changed, Some(&static_port)),
            "port is immutable",
        );
    }
    expect_error(
        validate("hostportclaims", &static_port, Some(&unbound)),
        "port is immutable",
    );
    let passthrough = claim(json!({"hostPortClassName": "sample", "portPolicy": "Passthrough"}));
    validate("hostportclaims", &passthrough, None).expect("passthrough");
    validate("hostportclaims", &passthrough, Some(&passthrough)).expect("unchanged");
    for changed in [
        claim(json!({"hostPortClassName": "sample", "portPolicy": "Mapped"})),
        unbound.clone(),
    ] {
        expect_error(
            validate("hostportclaims", &changed, Some(&passthrough)),
            "portPolicy is immutable",
        );
    }
    expect_error(
        validate("hostportclaims", &passthrough, Some(&unbound)),
        "portPolicy is immutable",
    );
}

#[test]
fn host_port_rules() {
    let created = host_port(json!({"hostPortClassName": "sample", "port": 9000,
        "claimRef": {"namespace": "default", "name": "echo-web", "uid": "u1"}}));
    validate("hostports", &created, None).expect("create");
    validate("hostports", &created, Some(&created)).expect("no-op");
    expect_error(
        validate(
            "hostports",
            &host_port(json!({"hostPortClassName": "sample", "port": 9001})),
            Some(&created),
        ),
        "port is immutable",
    );
    expect_error(
        validate(
            "hostports",
            &host_port(json!({"hostPortClassName": "sample"})),
            Some(&created),
        ),
        "port cannot be removed once set",
    );
    expect_error(
        validate(
            "hostports",
            &host_port(json!({"hostPortClassName": "other", "port": 9000})),
            Some(&created),
        ),
        "hostPortClassName is immutable",
    );
    let go_host_port = host_port(json!({"hostPortClassName": "sample"}));
    validate("hostports", &go_host_port, Some(&go_host_port))
        .expect("Go HostPort without spec.port");
}
