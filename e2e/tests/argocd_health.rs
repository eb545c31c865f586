//! The Argo CD health checks of `config/argocd/argocd-cm-patch.yaml`, run with Lua 5.1
//! (lupa from PyPI; Argo CD's gopher-lua speaks 5.1) against objects the allocator wrote in
//! a scenario: what Argo CD would show for each. Argo CD itself does not run here.

use std::collections::BTreeMap;
use std::time::Duration;

use hostport_api::{HostPortClass, HostPortClassSpec};
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use kube::api::PostParams;
use serde_json::{Value, json};

const LUPA: &str = "lupa==2.8";
const GROUP: &str = "hostport.rmb938.com";

/// The health scripts by kind, from the ConfigMap patch users apply.
fn scripts() -> BTreeMap<String, String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/argocd/argocd-cm-patch.yaml"
    );
    let text = std::fs::read_to_string(path).expect("argocd-cm-patch.yaml");
    let patch: Value = serde_saphyr::from_str(&text).expect("YAML");
    ["HostPortClaim", "HostPort", "HostPortClass"]
        .into_iter()
        .map(|kind| {
            let key = format!("resource.customizations.health.{GROUP}_{kind}");
            let script = patch["data"][&key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} in {path}"));
            (kind.to_owned(), script.to_owned())
        })
        .collect()
}

/// What Argo CD would say of each `(kind, object)`: `(status, message)`.
async fn health(cases: &[(&str, Value)]) -> Vec<(String, String)> {
    let request = json!({
        "scripts": scripts(),
        "cases": cases.iter().map(|(kind, object)| json!({"kind": kind, "object": object})).collect::<Vec<_>>(),
    });
    let results = hostport_e2e::tools::python_json(&[LUPA], "argocd_health.py", request)
        .await
        .unwrap_or_else(|e| panic!("running the health scripts: {e}"));
    let results = results.as_array().cloned().unwrap_or_default();
    results
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// An object as the API server serves it (JSON).
fn as_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("JSON")
}

#[tokio::test]
async fn argo_cd_tells_a_bound_claim_from_a_waiting_one() {
    let env = Env::new("argocd").await;
    let _controller = env.start_controller(RunOptions::default());
    let full = env.create_class("one", &[(39120, 39120)]).await;
    let roomy = env.create_class("roomy", &[(39121, 39125)]).await;
    let routed = env.class_name("routed");
    let mut class = HostPortClass::new(&routed, HostPortClassSpec::with_pools(&[(39126, 39127)]));
    class.spec.publish = Some(serde_json::from_value(json!({"router": {}})).expect("publish"));
    env.classes()
        .create(&PostParams::default(), &class)
        .await
        .expect("class");

    env.create_claim("bound", &full, None).await;
    let bound = env.bound("bound").await;
    env.create_claim("waiting", &full, None).await;
    let waiting = env.claim_with_reason("waiting", "PoolExhausted").await;
    env.create_claim("no-class", &env.class_name("missing"), None)
        .await;
    let no_class = env.claim_with_reason("no-class", "ClassNotFound").await;
    env.create_claim("routed", &routed, None).await;
    let routed_claim = env.bound("routed").await;
    let host_port = env
        .host_ports()
        .get(bound.spec.host_port_name.as_deref().expect("bound"))
        .await
        .expect("HostPort");
    let classes = env.classes();
    let class_ready = |name: String, wanted: &'static str| {
        let classes = classes.clone();
        async move {
            let class = classes.get(&name).await.ok()?;
            let status = class.status.as_ref()?;
            let ready = hostport_api::conditions::find(&status.conditions, "Ready")?;
            (ready.status == wanted).then_some(class)
        }
    };
    let full_class = env
        .wait_for("the full class not Ready", Duration::from_secs(15), || {
            class_ready(full.clone(), "False")
        })
        .await;
    let roomy_class = env
        .wait_for("the roomy class Ready", Duration::from_secs(15), || {
            class_ready(roomy.clone(), "True")
        })
        .await;

    let mut unseen = as_json(&bound);
    unseen["metadata"]["generation"] = json!(bound.metadata.generation.unwrap_or(1) + 1);
    let mut fresh = as_json(&bound);
    fresh.as_object_mut().expect("object").remove("status");
    let mut deleting = as_json(&bound);
    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-06T12:00:00Z");

    let cases = [
        ("HostPortClaim", as_json(&bound), "Healthy"),
        ("HostPortClaim", as_json(&waiting), "Degraded"),
        ("HostPortClaim", as_json(&no_class), "Degraded"),
        ("HostPortClaim", as_json(&routed_claim), "Progressing"),
        ("HostPortClaim", unseen, "Progressing"),
        ("HostPortClaim", fresh, "Progressing"),
        ("HostPortClaim", deleting, "Progressing"),
        ("HostPort", as_json(&host_port), "Healthy"),
        ("HostPortClass", as_json(&full_class), "Degraded"),
        ("HostPortClass", as_json(&roomy_class), "Healthy"),
    ];
    let input: Vec<(&str, Value)> = cases.iter().map(|(k, o, _)| (*k, o.clone())).collect();
    let results = health(&input).await;
    for ((kind, object, wanted), (status, message)) in cases.iter().zip(&results) {
        assert_eq!(
            status, wanted,
            "{kind} {}: {message}",
            object["metadata"]["name"]
        );
    }
    assert!(
        results[1].1.starts_with("PoolExhausted: "),
        "{:?}",
        results[1]
    );
    assert!(
        results[3].1.starts_with("WaitingForPublish: "),
        "{:?}",
        results[3]
    );
    assert!(results[7].1.contains("39120"), "{:?}", results[7]);
    env.cleanup().await;
}
