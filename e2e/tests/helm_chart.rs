//! `charts/hostport-allocator`: rendered, linted and schema-checked with the Helm v4 SDK
//! (`helm-python-sdk` from PyPI: Helm's Go library, no helm binary, no cluster) and
//! `check-jsonschema`; its default render compared with `kubectl kustomize config/default`
//! (the two installs must not drift apart); each value rendering what it says. On a real node
//! (`E2E_NODE=1`), installed from its default render and put through the README's flow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hostport_e2e::chart::{CHART, Rendered, kustomize};
use serde_json::{Value, json};

const SYSTEM: &str = "hostport-system";

fn root() -> &'static Path {
    hostport_e2e::chart::root()
}

fn python() -> std::path::PathBuf {
    hostport_e2e::chart::python().unwrap_or_else(|e| panic!("the Python tools: {e}"))
}

fn render_in(values: Value, namespace: &str, package_to: Option<&Path>) -> Rendered {
    hostport_e2e::chart::render(&values, namespace, package_to)
        .unwrap_or_else(|e| panic!("rendering the chart: {e}"))
}

fn render(values: Value) -> Rendered {
    let rendered = render_in(values.clone(), SYSTEM, None);
    assert_eq!(rendered.schema_error, None, "values {values}");
    assert_eq!(rendered.render_error, None, "values {values}");
    rendered
}

fn key(object: &Value) -> (String, String) {
    (
        object["kind"].as_str().unwrap_or_default().to_owned(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| key(o) == (kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "{kind} {name} in {:?}",
                objects.iter().map(key).collect::<Vec<_>>()
            )
        })
}

fn kinds(objects: &[Value]) -> BTreeSet<(String, String)> {
    objects.iter().map(key).collect()
}

/// RBAC rules as a set of (apiGroup, resource, resourceName, verb): the same grants
/// however they are grouped and ordered.
fn grants(role: &Value) -> BTreeSet<String> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let names = list(&rule["resourceNames"]);
        let names = if names.is_empty() {
            vec!["*".to_owned()]
        } else {
            names
        };
        for group in list(&rule["apiGroups"]) {
            for resource in list(&rule["resources"]) {
                for name in &names {
                    for verb in list(&rule["verbs"]) {
                        out.insert(format!("{group}/{resource}/{name}:{verb}"));
                    }
                }
            }
        }
    }
    out
}

/// The parts of a webhook that decide what it sees and how it is called.
fn webhook_contract(webhook: &Value) -> Value {
    let mut contract = webhook.clone();
    if let Some(map) = contract.as_object_mut() {
        map.retain(|k, _| {
            matches!(
                k.as_str(),
                "name"
                    | "rules"
                    | "matchConditions"
                    | "namespaceSelector"
                    | "failurePolicy"
                    | "timeoutSeconds"
                    | "sideEffects"
                    | "admissionReviewVersions"
                    | "clientConfig"
            )
        });
    }
    contract
}

/// A workload's pod template, as far as behaviour goes: containers (image, command, flags,
/// env, ports, probes, resources, security), security context, service account, volumes,
/// scheduling.
fn pod_contract(workload: &Value) -> Value {
    let spec = &workload["spec"]["template"]["spec"];
    let mut pod = spec.clone();
    if let Some(map) = pod.as_object_mut() {
        for container in map
            .get_mut("containers")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = container.as_object_mut() {
                c.remove("imagePullPolicy");
            }
        }
    }
    json!({"replicas": workload["spec"]["replicas"], "strategy": workload["spec"]["strategy"],
           "selector": workload["spec"]["selector"], "pod": pod})
}

#[test]
fn the_default_render_installs_what_config_default_installs() {
    let chart = render(Value::Null);
    let kustomized = kustomize("config/default");
    let (crds, rest): (Vec<Value>, Vec<Value>) = kustomized
        .into_iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");

    // The same objects, but the Namespace: Helm installs into one it is given
    // (`helm install -n hostport-system --create-namespace`).
    let mut expected = kinds(&rest);
    expected.remove(&("Namespace".to_owned(), SYSTEM.to_owned()));
    assert_eq!(kinds(&chart.objects), expected);
    // Byte for byte crdgen's (api/tests/crds.rs): here, the same three.
    assert_eq!(kinds(&chart.crds), kinds(&crds), "the chart's crds/");

    for object in &rest {
        let (kind, name) = key(object);
        if kind == "Namespace" {
            continue;
        }
        let ours = find(&chart.objects, &kind, &name);
        assert_eq!(
            ours["metadata"]["namespace"], object["metadata"]["namespace"],
            "{kind} {name}: namespace"
        );
        match kind.as_str() {
            "ClusterRole" | "Role" => {
                assert_eq!(grants(ours), grants(object), "{kind} {name}: rules")
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                assert_eq!(ours["roleRef"], object["roleRef"], "{kind} {name}");
                assert_eq!(ours["subjects"], object["subjects"], "{kind} {name}");
            }
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                let contracts = |o: &Value| -> Vec<Value> {
                    o["webhooks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(webhook_contract)
                        .collect()
                };
                assert_eq!(
                    contracts(ours),
                    contracts(object),
                    "{kind} {name}: webhooks"
                );
            }
            "Deployment" => {
                assert_eq!(
                    pod_contract(ours),
                    pod_contract(object),
                    "{kind} {name}: pods"
                );
                assert_eq!(
                    ours["metadata"]["labels"]["app.kubernetes.io/name"],
                    object["metadata"]["labels"]["app.kubernetes.io/name"]
                );
            }
            "Service" | "PodDisruptionBudget" => {
                assert_eq!(ours["spec"], object["spec"], "{kind} {name}: spec")
            }
            "ServiceAccount" => {}
            other => panic!("{other} {name}: compare it here"),
        }
    }
    assert!(
        chart
            .notes
            .contains("kubectl label namespace <your-namespace> hostport.rmb938.com=true"),
        "{}",
        chart.notes
    );
    assert!(
        chart.notes.contains("wait --for=condition=Ready"),
        "{}",
        chart.notes
    );
}

#[test]
fn the_publishers_render_what_their_kustomizations_install() {
    let chart = render(json!({"publisher": {
        "edge": {"enabled": true, "ssh": "root@192.0.2.1"},
        "node": {"enabled": true},
        "router": {"enabled": true},
    }}));
    for (dir, workload) in [
        (
            "config/publisher/edge",
            ("Deployment", "hostport-publisher-edge"),
        ),
        (
            "config/publisher/node",
            ("DaemonSet", "hostport-publisher-node"),
        ),
        (
            "config/publisher/router",
            ("DaemonSet", "hostport-publisher-router"),
        ),
    ] {
        let kustomized = kustomize(dir);
        for object in &kustomized {
            let (kind, name) = key(object);
            let ours = find(&chart.objects, &kind, &name);
            match kind.as_str() {
                "ClusterRole" | "Role" => {
                    assert_eq!(grants(ours), grants(object), "{dir}: {kind} {name}")
                }
                "ClusterRoleBinding" | "RoleBinding" => {
                    assert_eq!(ours["subjects"], object["subjects"], "{dir}: {name}")
                }
                _ => {}
            }
        }
        let (kind, name) = workload;
        let ours = pod_contract(find(&chart.objects, kind, name));
        let theirs = pod_contract(find(&kustomized, kind, name));
        assert_eq!(ours, theirs, "{dir}: {kind} {name}");
    }
}

#[test]
fn the_chart_lints_clean_and_its_schema_holds() {
    let chart = render(Value::Null);
    let errors = chart.lint["errors"].as_array().cloned().unwrap_or_default();
    assert!(errors.is_empty(), "helm lint --strict: {:#}", chart.lint);
    let warnings: Vec<&Value> = chart.lint["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["severity"].as_i64().unwrap_or(0) >= 2)
        .collect();
    assert!(warnings.is_empty(), "lint warnings: {warnings:#?}");

    // values.yaml against values.schema.json, and the schema against its metaschema.
    let check = |args: &[&str]| {
        hostport_e2e::run_command(
            std::process::Command::new(python())
                .args(["-m", "check_jsonschema"])
                .args(args)
                .current_dir(root().join(CHART)),
        )
    };
    check(&["--schemafile", "values.schema.json", "values.yaml"]).unwrap_or_else(|e| panic!("{e}"));
    check(&["--check-metaschema", "values.schema.json"]).unwrap_or_else(|e| panic!("{e}"));

    // A typo, a wrong type and an unknown mode are refused, naming the field.
    for (values, field) in [
        (json!({"controler": {"replicas": 1}}), "controler"),
        (json!({"webhook": {"replicas": "two"}}), "/webhook/replicas"),
        (
            json!({"webhook": {"tls": {"mode": "letsencrypt"}}}),
            "/webhook/tls/mode",
        ),
        (
            json!({"webhook": {"failurePolicy": "Sometimes"}}),
            "/webhook/failurePolicy",
        ),
        (
            json!({"publisher": {"denyPorts": "ssh"}}),
            "/publisher/denyPorts",
        ),
    ] {
        let refused = render_in(values.clone(), SYSTEM, None);
        let error = refused
            .schema_error
            .unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(error.contains(field), "{values}: {error}");
    }
}

fn args_of(objects: &[Value], kind: &str, name: &str) -> Vec<String> {
    find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn each_value_renders_what_it_says() {
    // cert-manager: a Certificate (and an Issuer unless one is named), the CA injected, the
    // webhook serving the Secret's files, and no rights to write its own.
    let cert_manager = render(json!({"webhook": {"tls": {"mode": "certManager"}}}));
    let objects = &cert_manager.objects;
    let certificate = find(objects, "Certificate", "hostport-webhook");
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        "hostport-selfsigned"
    );
    find(objects, "Issuer", "hostport-selfsigned");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            find(objects, kind, "hostport-allocator")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "hostport-system/hostport-webhook"
        );
    }
    let args = args_of(objects, "Deployment", "hostport-webhook");
    assert!(
        args.contains(&"--tls-cert-file=/tls/tls.crt".to_owned())
            && !args.contains(&"--self-signed".to_owned()),
        "{args:?}"
    );
    assert!(!kinds(objects).contains(&("Role".into(), "hostport-webhook-certificate".into())));
    assert!(
        !grants(find(objects, "ClusterRole", "hostport-webhook"))
            .iter()
            .any(|g| g.contains("webhookconfigurations"))
    );
    let kustomized = kustomize("config/cert-manager");
    assert_eq!(
        pod_contract(find(objects, "Deployment", "hostport-webhook")),
        pod_contract(find(&kustomized, "Deployment", "hostport-webhook")),
        "the same webhook as config/cert-manager"
    );
    let named = render(
        json!({"webhook": {"tls": {"mode": "certManager", "certManager": {"issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}}}}),
    );
    assert_eq!(
        find(&named.objects, "Certificate", "hostport-webhook")["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "corp-ca"})
    );
    assert!(!kinds(&named.objects).contains(&("Issuer".into(), "hostport-selfsigned".into())));

    // Your own Secret: its CA in every webhook, its files served; without them, an error
    // that names the value.
    let own = render(
        json!({"webhook": {"tls": {"mode": "secret", "secret": {"name": "my-tls", "caBundle": "Q0E="}}}}),
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for webhook in find(&own.objects, kind, "hostport-allocator")["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(webhook["clientConfig"]["caBundle"], "Q0E=", "{kind}");
        }
    }
    let volumes = &find(&own.objects, "Deployment", "hostport-webhook")["spec"]["template"]["spec"]
        ["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "my-tls");
    let missing = render_in(
        json!({"webhook": {"tls": {"mode": "secret"}}}),
        SYSTEM,
        None,
    );
    let error = missing.render_error.expect("refused");
    assert!(
        error.contains("webhook.tls.secret.name is required"),
        "{error}"
    );

    // Another namespace: every reference follows, the allocator's identity included.
    let elsewhere = render_in(Value::Null, "ports", None);
    assert_eq!(elsewhere.render_error, None);
    for object in &elsewhere.objects {
        let ns = &object["metadata"]["namespace"];
        assert!(ns.is_null() || ns == "ports", "{:?} in {ns}", key(object));
    }
    let validating = find(
        &elsewhere.objects,
        "ValidatingWebhookConfiguration",
        "hostport-allocator",
    );
    for webhook in validating["webhooks"].as_array().into_iter().flatten() {
        assert_eq!(webhook["clientConfig"]["service"]["namespace"], "ports");
        assert_eq!(
            webhook["matchConditions"][0]["expression"],
            "request.userInfo.username != 'system:serviceaccount:ports:hostport-controller'"
        );
    }

    // Images, pull secrets, replicas, scheduling, resources, the webhook's policy and the
    // namespaces it serves.
    let custom = render(json!({
        "image": {"repository": "registry.example/hp", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
        "namespaceLabel": {"key": "team", "value": "games"},
        "controller": {"replicas": 3, "nodeSelector": {"role": "infra"}, "priorityClassName": "high",
                       "tolerations": [{"key": "infra", "operator": "Exists"}], "extraArgs": ["--pod-claim-grace-seconds=120"]},
        "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 10, "resources": {"limits": {"memory": "1Gi"}}},
        "publisher": {"image": {"tag": "9.9.9"}, "node": {"enabled": true}, "denyPorts": "22,6443"},
    }));
    let controller = find(&custom.objects, "Deployment", "hostport-controller");
    let pod = &controller["spec"]["template"]["spec"];
    assert_eq!(controller["spec"]["replicas"], 3);
    assert_eq!(pod["containers"][0]["image"], "registry.example/hp:1.2.3");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "pull"}]));
    assert_eq!(pod["nodeSelector"], json!({"role": "infra"}));
    assert_eq!(pod["priorityClassName"], "high");
    assert_eq!(pod["tolerations"][0]["key"], "infra");
    assert!(
        args_of(&custom.objects, "Deployment", "hostport-controller")
            .contains(&"--pod-claim-grace-seconds=120".to_owned())
    );
    assert_eq!(
        find(&custom.objects, "Deployment", "hostport-webhook")["spec"]["template"]["spec"]["containers"]
            [0]["resources"]["limits"]["memory"],
        "1Gi"
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for webhook in find(&custom.objects, kind, "hostport-allocator")["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                (&webhook["failurePolicy"], &webhook["timeoutSeconds"]),
                (&json!("Ignore"), &json!(10)),
                "{kind}"
            );
        }
    }
    let pods_webhook = &find(
        &custom.objects,
        "MutatingWebhookConfiguration",
        "hostport-allocator",
    )["webhooks"][0];
    assert_eq!(
        pods_webhook["namespaceSelector"],
        json!({"matchLabels": {"team": "games"}})
    );
    assert!(
        custom
            .notes
            .contains("kubectl label namespace <your-namespace> team=games"),
        "{}",
        custom.notes
    );
    let node = find(&custom.objects, "DaemonSet", "hostport-publisher-node");
    assert_eq!(
        node["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/hostport-allocator/hostport-publisher:9.9.9"
    );
    assert!(
        args_of(&custom.objects, "DaemonSet", "hostport-publisher-node")
            .contains(&"--deny-ports=22,6443".to_owned())
    );

    // The publisher is off by default; metrics Services and ServiceMonitors on request.
    let defaults = render(Value::Null);
    assert!(
        !defaults
            .objects
            .iter()
            .any(|o| key(o).1.starts_with("hostport-publisher"))
    );
    assert!(
        !defaults
            .objects
            .iter()
            .any(|o| o["kind"] == "ServiceMonitor")
    );
    let monitored = render(
        json!({"metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus"}}},
                                  "publisher": {"router": {"enabled": true}}}),
    );
    let monitors: BTreeMap<String, Value> = monitored
        .objects
        .iter()
        .filter(|o| o["kind"] == "ServiceMonitor")
        .map(|o| (key(o).1, o.clone()))
        .collect();
    assert_eq!(
        monitors.keys().cloned().collect::<Vec<_>>(),
        [
            "hostport-controller",
            "hostport-publisher-router",
            "hostport-webhook"
        ]
    );
    for (name, monitor) in &monitors {
        assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus");
        let service = find(&monitored.objects, "Service", &format!("{name}-metrics"));
        for (label, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                &service["metadata"]["labels"][label], value,
                "{name}: the monitor selects its Service"
            );
        }
        // The Service reaches the pods' metrics port, not the webhook's HTTPS one.
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
        let workload = monitored
            .objects
            .iter()
            .find(|o| {
                matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")) && key(o).1 == *name
            })
            .expect("workload");
        assert_eq!(
            service["spec"]["selector"]["app.kubernetes.io/name"],
            workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        );
    }
}

#[test]
fn the_chart_packages() {
    let dir = std::env::temp_dir().join(format!("hostport-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let packaged = render_in(Value::Null, SYSTEM, Some(&dir));
    let archive = packaged.package.expect("a package");
    assert!(
        archive.ends_with("hostport-allocator-0.1.0.tgz"),
        "{archive}"
    );
    assert!(
        std::fs::metadata(&archive).is_ok_and(|m| m.len() > 1000),
        "{archive}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
