//! Monitoring: every metric the alert rules and the Grafana dashboard query is one the
//! binaries export (their `/metrics` scraped: the controller, the webhook and the publisher
//! run as processes against the in-process API server), every expression parses as PromQL
//! (promql-parser from PyPI, the Rust parser Prometheus-compatible tools use), and the copies
//! in the chart and in `config/monitoring` are the same. No Prometheus or Grafana runs here.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use hostport_e2e::chart::{self, CHART};
use hostport_e2e::harness::{Env, controller_user, webhook_user};
use hostport_e2e::measure::{Process, free_port, webhook_certificate};
use serde_json::{Value, json};

const PROMQL: &str = "promql-parser==0.12.0";
const CONTROLLER: &str = env!("CARGO_BIN_EXE_hostport-controller-under-test");
const WEBHOOK: &str = env!("CARGO_BIN_EXE_hostport-webhook-under-test");

fn read(path: &str) -> String {
    std::fs::read_to_string(chart::root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The alert rules (`spec.groups` of the PrometheusRule) as the chart ships them.
fn rule_groups() -> Value {
    serde_saphyr::from_str(&read(&format!("{CHART}/files/prometheus-rules.yaml"))).expect("YAML")
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&format!("{CHART}/files/grafana-dashboard.json"))).expect("JSON")
}

/// Every PromQL expression of the rules and the dashboard, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut out = vec![];
    for group in rule_groups()["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["alert"].as_str().unwrap_or("?");
            out.push((
                format!("alert {name}"),
                rule["expr"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    let dashboard = dashboard();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            // Grafana's variables, as Grafana substitutes them.
            let expr = target["expr"]
                .as_str()
                .unwrap_or("")
                .replace("$class", ".*");
            out.push((format!("panel {title:?}"), expr));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["definition"].as_str() {
            // label_values(<metric>, <label>) is Grafana's, not PromQL: its metric.
            let metric = query
                .trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap_or_default();
            out.push((format!("variable {}", variable["name"]), metric.to_owned()));
        }
    }
    out
}

/// The series names an OpenMetrics exposition offers, from its `# TYPE` lines (a counter
/// `x` is scraped as `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`).
fn series(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The binary's `/metrics` once it shows every one of `families` (a family appears with its
/// first sample).
async fn scrape(what: &str, port: u16, families: &[&str], env: &Env) -> String {
    env.wait_for(
        &format!("{what}'s /metrics with {families:?}"),
        Duration::from_secs(60),
        || async move {
            let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            families
                .iter()
                .all(|f| text.contains(&format!("# TYPE {f} ")))
                .then_some(text)
        },
    )
    .await
}

/// Real AdmissionReviews to the webhook process: a pod naming a claim that does not exist
/// (denied) and a body that is not one (an error), so its request and denial counters have
/// samples.
async fn admissions(listen: u16, ca: &str, namespace: &str) {
    let Ok(tls) = hostport_e2e::local::client_trusting(ca.as_bytes()) else {
        return;
    };
    let Ok(http) = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
    else {
        return;
    };
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace,
                     "annotations": {"claim.hostport.rmb938.com/web": "missing"}},
        "spec": {"containers": [{"name": "c", "image": "app",
                 "ports": [{"name": "web", "containerPort": 80}]}]}});
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p", "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "jane"}, "object": pod, "dryRun": false}});
    let url = format!("https://localhost:{listen}/mutate-v1-pod");
    for body in [review.to_string(), "not a review".to_owned()] {
        let _ = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
    }
}

#[tokio::test]
async fn rules_and_dashboard_query_only_what_the_binaries_export() {
    let Some(env) = Env::in_process("monitoring").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("hostport-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    // The controller: a class, one claim bound after a failed HostPort create (an error
    // counted), one left Pending.
    let server = env.server().expect("in-process");
    let class = env.create_class("one", &[(39130, 39130)]).await;
    server.fail_next(
        kube_testserver::RequestMatch::new(kube_testserver::Verb::Create, "hostports"),
        1,
        500,
    );
    let controller_port = free_port();
    let _controller = env.start_controller_process(
        Path::new(CONTROLLER),
        controller_user(),
        &[
            "--leader-election=false",
            &format!("--metrics-address=127.0.0.1:{controller_port}"),
        ],
    );
    env.create_claim("bound", &class, None).await;
    env.bound("bound").await;
    env.create_claim("waiting", &class, None).await;

    let (tls, ca) = webhook_certificate(&dir);
    let (listen, webhook_port) = (free_port(), free_port());
    let _webhook = Process::spawn(
        Path::new(WEBHOOK),
        &[
            format!("--listen=127.0.0.1:{listen}"),
            format!("--metrics-address=127.0.0.1:{webhook_port}"),
            tls[0].clone(),
            tls[1].clone(),
        ],
        &env.kubeconfig_for("webhook", webhook_user()),
    );
    let publisher = hostport_e2e::workspace_binary("hostport-publisher", "hostport-publisher");
    let kubeconfig = env.kubeconfig_for("publisher", controller_user());
    let (edge_port, router_port) = (free_port(), free_port());
    let _edge = Process::spawn(
        &publisher,
        &[
            "--mode=edge".into(),
            "--backend=nft".into(),
            "--dry-run".into(),
            format!("--metrics-address=127.0.0.1:{edge_port}"),
        ],
        &kubeconfig,
    );
    let _router = Process::spawn(
        &publisher,
        &[
            "--mode=router".into(),
            "--dry-run".into(),
            "--node-name=node-1".into(),
            "--node-ip=198.51.100.2".into(),
            "--gateway=198.51.100.1".into(),
            format!("--metrics-address=127.0.0.1:{router_port}"),
        ],
        &kubeconfig,
    );
    let webhook_families = [
        "hostport_webhook_admission_requests",
        "hostport_webhook_denials",
    ];
    env.wait_for(
        "the webhook's first answers",
        Duration::from_secs(60),
        || {
            let (ca, namespace) = (ca.clone(), env.namespace.clone());
            async move {
                admissions(listen, &ca, &namespace).await;
                let text = reqwest::get(format!("http://127.0.0.1:{webhook_port}/metrics"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                webhook_families
                    .iter()
                    .all(|f| text.contains(&format!("# TYPE {f} ")))
                    .then_some(())
            }
        },
    )
    .await;

    let mut exported = BTreeSet::new();
    let watched: [(&str, u16, &[&str]); 4] = [
        (
            "the controller",
            controller_port,
            &[
                "hostport_class_ports_capacity",
                "hostport_reconcile_errors",
                "hostport_reconcile_duration_seconds",
            ],
        ),
        ("the webhook", webhook_port, &webhook_families),
        (
            "the edge publisher",
            edge_port,
            &["hostport_publisher_forwards"],
        ),
        (
            "the router publisher",
            router_port,
            &[
                "hostport_publisher_router_mappings",
                "hostport_publisher_router_operations",
            ],
        ),
    ];
    for (what, port, families) in watched {
        exported.extend(series(&scrape(what, port, families, &env).await));
    }
    // Prometheus' own series for every target.
    exported.insert("up".into());

    let expressions = expressions();
    let input = Value::from(
        expressions
            .iter()
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>(),
    );
    let parsed = hostport_e2e::tools::python_json(&[PROMQL], "promql_names.py", input)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let parsed = parsed.as_array().cloned().unwrap_or_default();
    let mut queried = BTreeSet::new();
    for ((place, expr), result) in expressions.iter().zip(&parsed) {
        assert!(result["error"].is_null(), "{place}: {}", result["error"]);
        let metrics: Vec<String> = result["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect();
        assert!(!metrics.is_empty(), "{place} queries no metric: {expr}");
        for metric in metrics {
            assert!(
                exported.contains(&metric),
                "{place} queries {metric}, which no binary exports: {expr}"
            );
            queried.insert(metric);
        }
    }
    // What the issue asks the alerts to watch is watched.
    for needed in [
        "hostport_class_ports_allocated",
        "hostport_claims_pending_oldest_seconds",
        "hostport_webhook_admission_requests_total",
        "hostport_webhook_admission_duration_seconds_bucket",
        "hostport_reconcile_errors_total",
        "hostport_publisher_syncs_total",
        "hostport_publisher_router_mappings",
    ] {
        assert!(queried.contains(needed), "nothing queries {needed}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

#[test]
fn the_rules_and_the_dashboard_are_complete_and_the_same_everywhere() {
    // Every alert: a name, a duration, a severity, a summary and a description saying what
    // to do.
    let groups = rule_groups();
    let mut alerts = BTreeSet::new();
    for rule in groups["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = rule["alert"].as_str().expect("alert name");
        assert!(alerts.insert(name.to_owned()), "{name} twice");
        assert!(rule["for"].is_string(), "{name}: for");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("info" | "warning" | "critical")
            ),
            "{name}: severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|s| s.len() > 10),
                "{name}: {annotation}"
            );
        }
    }
    // config/monitoring carries the same rules and dashboard.
    let component: Value =
        serde_saphyr::from_str(&read("config/monitoring/prometheusrule.yaml")).expect("YAML");
    assert_eq!(
        component["spec"]["groups"], groups["groups"],
        "config/monitoring/prometheusrule.yaml"
    );
    let copy: Value =
        serde_json::from_str(&read("config/monitoring/grafana-dashboard.json")).expect("JSON");
    assert_eq!(
        copy,
        dashboard(),
        "config/monitoring/grafana-dashboard.json"
    );

    // The dashboard: unique panel ids, the Prometheus data source chosen by a variable, every
    // panel placed.
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        assert!(
            panel["gridPos"]["w"].as_i64().is_some_and(|w| w > 0),
            "{}",
            panel["title"]
        );
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for section in [
        "Pools",
        "Bindings per second",
        "Admission latency",
        "Pods waiting for a claim",
        "Router mappings",
    ] {
        assert!(titles.contains(&section), "a {section} panel: {titles:?}");
    }

    // The chart renders both behind its values, labelled for the Grafana sidecar.
    let rendered = chart::render(
        &json!({"metrics": {"prometheusRule": {"enabled": true}, "dashboard": {"enabled": true}}}),
        "hostport-system",
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let find = |kind: &str| {
        rendered
            .objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind}"))
            .clone()
    };
    assert_eq!(find("PrometheusRule")["spec"]["groups"], groups["groups"]);
    let config_map = find("ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value = serde_json::from_str(
        config_map["data"]["hostport-allocator.json"]
            .as_str()
            .expect("dashboard"),
    )
    .expect("JSON");
    assert_eq!(embedded, dashboard);
}

#[test]
fn each_servicemonitor_scrapes_its_binarys_metrics_port() {
    let publishers: Vec<Value> =
        serde_saphyr::from_multiple(&read("config/monitoring/publisher.yaml")).expect("YAML");
    let mut objects = chart::kustomize("config/monitored");
    objects.extend(publishers.into_iter().filter(|o| !o.is_null()));
    for dir in [
        "config/publisher/edge",
        "config/publisher/node",
        "config/publisher/router",
    ] {
        objects.extend(chart::kustomize(dir));
    }
    let monitors: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ServiceMonitor")
        .collect();
    assert_eq!(
        monitors.len(),
        5,
        "controller, webhook and the three publishers"
    );
    for monitor in monitors {
        let name = monitor["metadata"]["name"].as_str().unwrap_or_default();
        let selector = &monitor["spec"]["selector"]["matchLabels"];
        let service = objects
            .iter()
            .find(|o| {
                o["kind"] == "Service"
                    && selector
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| &o["metadata"]["labels"][k] == v)
            })
            .unwrap_or_else(|| panic!("{name}: no Service matches {selector}"));
        let workload = objects
            .iter()
            .find(|o| {
                matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet"))
                    && o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
                        == service["spec"]["selector"]["app.kubernetes.io/name"]
            })
            .unwrap_or_else(|| panic!("{name}: no workload behind its Service"));
        let container_port = workload["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "metrics")
            .unwrap_or_else(|| panic!("{name}: no metrics port"));
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"], "metrics",
            "{name}"
        );
        assert_eq!(
            service["spec"]["ports"][0]["port"], container_port["containerPort"],
            "{name}: the Service's port is the container's"
        );
        let args = workload["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains(&format!(
                "--metrics-address=0.0.0.0:{}",
                container_port["containerPort"]
            )),
            "{name}: the binary serves /metrics there: {args}"
        );
    }
}
