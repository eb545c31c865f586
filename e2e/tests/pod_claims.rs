//! Ports per pod without hand-made claims: `class.hostport.rmb938.com/<portName>:
//! <className>` makes the webhook create a claim for the pod inside its admission and inject
//! the port once the allocator bound it. StatefulSet pods keep their claim (and port) across
//! restarts, subject to the retention policy; other pods' claims go with them; claims whose
//! pod never appeared are deleted after the grace period; dry-runs create nothing.
//!
//! The in-process server runs no StatefulSet, ReplicaSet or garbage collector controllers:
//! there the scenarios create the pods (with the owner references) as those controllers
//! would; on a real cluster (`E2E_KUBECONFIG`) the real controllers do. Ports 15000-15999.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hostport_api::HostPortClaim;
use hostport_api::pod_claims::{POD_CLAIM_LABEL, is_pod_claim};
use hostport_controller::RunOptions;
use hostport_controller::context::Settings;
use hostport_e2e::harness::Env;
use hostport_e2e::workloads::{PodName, pod_from_template};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A game server's ports: TCP and UDP on 7777 (one claim), a query port on 27015.
fn game_container() -> Value {
    json!({"name": "game", "image": hostport_e2e::pod_image(), "ports": [
        {"name": "game-tcp", "containerPort": 7777, "protocol": "TCP"},
        {"name": "game-udp", "containerPort": 7777, "protocol": "UDP"},
        {"name": "query", "containerPort": 27015, "protocol": "UDP"},
    ]})
}

fn game_annotations(class: &str) -> Value {
    json!({
        "class.hostport.rmb938.com/game-tcp": class,
        "class.hostport.rmb938.com/game-udp": class,
        "class.hostport.rmb938.com/query": class,
    })
}

fn web_pod(metadata: Value, class: &str) -> Pod {
    let mut metadata = metadata;
    metadata["annotations"]["class.hostport.rmb938.com/http"] = json!(class);
    serde_json::from_value(json!({
        "metadata": metadata,
        "spec": {"containers": [{"name": "web", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .expect("pod")
}

/// The host port of each named container port of `pod`.
fn host_ports(pod: &Pod) -> BTreeMap<String, i32> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.clone()?, p.host_port?)))
        .collect()
}

fn annotation<'p>(pod: &'p Pod, key: &str) -> Option<&'p str> {
    pod.annotations().get(key).map(String::as_str)
}

fn pods(env: &Env) -> Api<Pod> {
    Api::namespaced(env.client.clone(), &env.namespace)
}

fn statefulsets(env: &Env) -> Api<StatefulSet> {
    Api::namespaced(env.client.clone(), &env.namespace)
}

/// A StatefulSet of `replicas` game servers (Parallel: pods on a cluster without nodes never
/// get Ready, which OrderedReady would wait for).
async fn create_statefulset(
    env: &Env,
    name: &str,
    class: &str,
    replicas: i32,
    annotations: Value,
) -> StatefulSet {
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": game_annotations(class)},
                "spec": {"containers": [game_container()]}
            }
        }
    }))
    .expect("statefulset");
    statefulsets(env)
        .create(&PostParams::default(), &set)
        .await
        .unwrap_or_else(|e| panic!("StatefulSet {name}: {e}"))
}

/// On the in-process server, what the StatefulSet controller does: create the missing pods
/// of ordinals below `spec.replicas` (its pod template, its name, its controller reference)
/// and delete the pods above. On a real cluster the real controller does it.
async fn run_statefulset_controller(env: &Env, set: &str) {
    if env.server().is_none() {
        return;
    }
    let set = statefulsets(env).get(set).await.expect("statefulset");
    let spec = set.spec.clone().expect("spec");
    let replicas = spec.replicas.unwrap_or(1);
    let existing: BTreeSet<String> = pods(env)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let name = set.name_any();
    for ordinal in 0..replicas {
        let pod_name = format!("{name}-{ordinal}");
        if existing.contains(&pod_name) {
            continue;
        }
        let uid = set.uid().unwrap_or_default();
        let pod = pod_from_template(
            &spec.template,
            &env.namespace,
            PodName::Name(&pod_name),
            ("apps/v1", "StatefulSet", &name, &uid),
        );
        pods(env)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("pod {pod_name}: {e}"));
    }
    for pod in &existing {
        let ordinal = pod
            .strip_prefix(&format!("{name}-"))
            .and_then(|o| o.parse::<i32>().ok());
        if ordinal.is_some_and(|o| o >= replicas) {
            let _ = pods(env).delete(pod, &DeleteParams::default()).await;
        }
    }
}

/// Pod `name` once it exists with its host ports.
async fn admitted_pod(env: &Env, name: &str) -> Pod {
    env.wait_for(&format!("pod {name} admitted"), WAIT, || async {
        let pod = pods(env).get_opt(name).await.ok()??;
        (pod.metadata.deletion_timestamp.is_none() && !host_ports(&pod).is_empty()).then_some(pod)
    })
    .await
}

async fn gone<K>(env: &Env, api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    env.wait_for(&format!("{name} gone"), WAIT, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

async fn pod_claims(env: &Env) -> Vec<HostPortClaim> {
    env.claims()
        .list(&ListParams::default().labels(&format!("{POD_CLAIM_LABEL}=true")))
        .await
        .expect("claims")
        .items
}

fn denial(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn a_statefulset_pod_keeps_its_port_when_recreated() {
    let env = Env::new("sts-keep").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("games", &[(15000, 15019)]).await;
    let set = create_statefulset(&env, "arena", &class, 2, json!({})).await;
    run_statefulset_controller(&env, "arena").await;
    let first = admitted_pod(&env, "arena-0").await;
    let second = admitted_pod(&env, "arena-1").await;
    let ports = host_ports(&first);
    // TCP and UDP of 7777 share one claim and one number; the query port has its own.
    assert_eq!(ports["game-tcp"], ports["game-udp"], "{ports:?}");
    assert_ne!(ports["game-tcp"], ports["query"]);
    assert!(
        ports.values().all(|p| (15000..=15019).contains(p)),
        "{ports:?}"
    );
    assert_eq!(
        annotation(&first, "claim.hostport.rmb938.com/game-udp"),
        Some("arena-0-game-tcp")
    );
    assert_eq!(
        annotation(&first, "port.hostport.rmb938.com/game-udp"),
        Some(ports["game-udp"].to_string().as_str())
    );
    let all: BTreeSet<i32> = ports
        .values()
        .chain(host_ports(&second).values())
        .copied()
        .collect();
    assert_eq!(all.len(), 4, "two pods, two ports each, all distinct");
    let claim = env.bound("arena-0-game-tcp").await;
    assert!(is_pod_claim(claim.labels()));
    assert_eq!(claim.bound_port().map(i32::from), Some(ports["game-tcp"]));
    let owner = &claim.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(owner.uid.clone())),
        ("StatefulSet", set.uid())
    );

    // Deleted and recreated with the same name (a restart, a reschedule): the same ports.
    pods(&env)
        .delete("arena-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    env.wait_for("arena-0 replaced", WAIT, || async {
        run_statefulset_controller(&env, "arena").await;
        let pod = pods(&env).get_opt("arena-0").await.ok()??;
        (pod.uid() != first.uid() && !host_ports(&pod).is_empty()).then_some(())
    })
    .await;
    let again = admitted_pod(&env, "arena-0").await;
    assert_eq!(host_ports(&again), ports, "ordinal 0 keeps its ports");
    assert_eq!(pod_claims(&env).await.len(), 4, "no new claim");
    env.cleanup().await;
}

#[tokio::test]
async fn scale_down_retains_or_releases_per_policy_and_deleting_the_set_frees_the_ports() {
    let env = Env::new("sts-scale").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("games", &[(15100, 15119)]).await;
    create_statefulset(&env, "keep", &class, 2, json!({})).await;
    create_statefulset(
        &env,
        "drop",
        &class,
        2,
        json!({"hostport.rmb938.com/when-scaled": "Delete"}),
    )
    .await;
    for set in ["keep", "drop"] {
        run_statefulset_controller(&env, set).await;
    }
    let kept_ports = host_ports(&admitted_pod(&env, "keep-1").await);
    admitted_pod(&env, "drop-1").await;
    env.bound("drop-1-game-tcp").await;

    let scale = |replicas: i32| Patch::Merge(json!({"spec": {"replicas": replicas}}));
    for set in ["keep", "drop"] {
        statefulsets(&env)
            .patch(set, &PatchParams::default(), &scale(1))
            .await
            .expect("scale down");
        run_statefulset_controller(&env, set).await;
    }
    // whenScaled: Delete (the StatefulSet's annotation): ordinal 1's claims go, ports freed.
    gone(&env, &env.claims(), "drop-1-game-tcp").await;
    gone(&env, &env.claims(), "drop-1-query").await;
    assert!(env.has_event("ScaledDown").await);
    // whenScaled: Retain (the default): ordinal 1 keeps its claims...
    gone(&env, &pods(&env), "keep-1").await;
    let kept = env.bound("keep-1-game-tcp").await;
    assert_eq!(
        kept.bound_port().map(i32::from),
        Some(kept_ports["game-tcp"])
    );
    // ... and gets its old ports back when the set scales up again.
    statefulsets(&env)
        .patch("keep", &PatchParams::default(), &scale(2))
        .await
        .expect("scale up");
    run_statefulset_controller(&env, "keep").await;
    assert_eq!(host_ports(&admitted_pod(&env, "keep-1").await), kept_ports);

    // whenDeleted: Delete (the default): deleting the StatefulSet frees its ports once its
    // pods are gone (the garbage collector deletes them on a cluster; here the test does).
    statefulsets(&env)
        .delete("keep", &DeleteParams::background())
        .await
        .expect("delete");
    if env.server().is_some() {
        for pod in ["keep-0", "keep-1"] {
            pods(&env)
                .delete(pod, &DeleteParams::default())
                .await
                .expect("pod");
        }
    }
    for claim in [
        "keep-0-game-tcp",
        "keep-0-query",
        "keep-1-game-tcp",
        "keep-1-query",
    ] {
        gone(&env, &env.claims(), claim).await;
    }
    env.wait_for("keep's ports released", WAIT, || async {
        let held: BTreeSet<i32> = env
            .host_ports()
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .filter_map(|hp| hp.port().map(i32::from))
            .collect();
        kept_ports.values().all(|p| !held.contains(p)).then_some(())
    })
    .await;
    env.cleanup().await;
}

/// The mutating pod-webhook entry of `configuration`, limited to pods labelled
/// `webhook: <instance>`.
async fn route_pods(env: &Env, configuration: &str, mut mutating: Value, instance: &str) {
    let webhooks = mutating["webhooks"].as_array_mut().expect("webhooks");
    webhooks.retain(|w| w["name"] == "pods.hostport.rmb938.com");
    webhooks[0]["objectSelector"] = json!({"matchLabels": {"webhook": instance}});
    mutating["metadata"] = json!({"name": configuration});
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        env.client.clone(),
    )
    .patch(
        configuration,
        &PatchParams::apply("hostport-e2e").force(),
        &Patch::Apply(&mutating),
    )
    .await
    .expect("webhook configuration");
}

#[tokio::test]
async fn two_hundred_pods_with_class_annotations_against_two_webhooks() {
    use base64::Engine;
    let env = Env::new("pod-claims-200").await;
    // Claim creation, the wait and the last read stay inside the 5 s webhook timeout.
    let options = || hostport_webhook::RunOptions {
        bind_wait: Duration::from_secs(3),
        ..Default::default()
    };
    let first = env.start_webhook_with(options()).await;
    let mut second = env.start_webhook_with(options()).await;
    // `start_webhook_with` registered the second one last; route half the pods to each.
    let name = env.webhook_configurations();
    let second_name = format!("{name}-b");
    let selector = json!({"matchLabels": {"hostport.rmb938.com": "true", "hostport-e2e/scenario": env.namespace}});
    for (webhook, configuration, instance) in [(&first, &name, "a"), (&second, &second_name, "b")] {
        let bundle = base64::engine::general_purpose::STANDARD.encode(&webhook.ca_pem);
        let (mutating, _) = hostport_e2e::webhooks::configurations(
            configuration,
            &webhook.url,
            &bundle,
            selector.clone(),
        );
        route_pods(&env, configuration, mutating, instance).await;
    }
    // The claim webhooks stay on the first configuration (the claim path is not under test).
    let bundle = base64::engine::general_purpose::STANDARD.encode(&first.ca_pem);
    let (mutating, validating) =
        hostport_e2e::webhooks::configurations(&name, &first.url, &bundle, selector.clone());
    let mut mutating = mutating;
    for webhook in mutating["webhooks"].as_array_mut().expect("webhooks") {
        if webhook["name"] == "pods.hostport.rmb938.com" {
            webhook["objectSelector"] = json!({"matchLabels": {"webhook": "a"}});
        }
    }
    let apply = PatchParams::apply("hostport-e2e").force();
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        env.client.clone(),
    )
    .patch(&name, &apply, &Patch::Apply(&mutating))
    .await
    .expect("mutating");
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
        env.client.clone(),
    )
    .patch(&name, &apply, &Patch::Apply(&validating))
    .await
    .expect("validating");
    if env.server().is_none() {
        let config = kube::Config::infer().await.ok();
        if let Some(config) = config {
            second.unregister_on_drop(config, second_name.clone());
        }
    }
    let _controller = env.start_controller(RunOptions {
        settings: Settings {
            pod_claim_grace: Duration::from_secs(5),
            ..Settings::default()
        },
        ..RunOptions::default()
    });
    let class = env.create_class("games", &[(15200, 15499)]).await;

    // Half named like a StatefulSet's or a bare pod, half generateName like a ReplicaSet's.
    // A pod denied because its claim was not bound within the wait (or whose admission
    // timed out) is created again, as a ReplicaSet or StatefulSet would: a small real
    // control plane running debug builds binds fewer than 200 claims in the wait, and a
    // busy CI machine may too (the release bench measures the latency: BENCHMARKS.md).
    let api = pods(&env);
    let retries = std::sync::atomic::AtomicUsize::new(0);
    let creates = (0..200).map(|i| {
        let (api, class, retries) = (api.clone(), class.clone(), &retries);
        async move {
            let instance = if i % 2 == 0 { "a" } else { "b" };
            let metadata = if i % 4 < 2 {
                json!({"name": format!("named-{i}"), "labels": {"webhook": instance}})
            } else {
                json!({"generateName": "rs-", "labels": {"webhook": instance}})
            };
            let mut pod = web_pod(metadata, &class);
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_selector = serde_json::from_value(hostport_e2e::no_node()).ok();
            }
            loop {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(created) => break created,
                    Err(kube::Error::Api(status))
                        if matches!(status.reason.as_str(), "ClaimNotBound" | "PodClaimFailed")
                            || status.code == 500 =>
                    {
                        retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => panic!("pod {i}: {e}"),
                }
            }
        }
    });
    let created = futures::future::join_all(creates).await;
    let retries = retries.into_inner();
    eprintln!("200 pods admitted; {retries} admission(s) retried (ClaimNotBound or timeout)");
    let ports: BTreeSet<i32> = created.iter().map(|p| host_ports(p)["http"]).collect();
    assert_eq!(ports.len(), 200, "200 distinct ports");
    assert!(ports.iter().all(|p| (15200..=15499).contains(p)));
    for pod in &created {
        let claim = annotation(pod, "claim.hostport.rmb938.com/http").expect("claim annotation");
        let bound = env.bound(claim).await;
        assert_eq!(
            bound.bound_port().map(i32::from),
            Some(host_ports(pod)["http"])
        );
    }
    // Claims of retried generateName pods were never used: gone after the grace period.
    env.wait_for("exactly one claim per pod", WAIT, || async {
        (pod_claims(&env).await.len() == 200).then_some(())
    })
    .await;
    assert_eq!(
        first.metrics.claim_waits.get() + second.metrics.claim_waits.get(),
        0
    );

    // Every claim goes with its pod: no ownerReference (a write saved), the pod watch.
    assert!(
        pod_claims(&env)
            .await
            .iter()
            .all(|c| c.owner_references().is_empty())
    );
    for pod in &created {
        api.delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
    }
    env.wait_for(
        "no claim and no HostPort left",
        Duration::from_secs(120),
        || async {
            let claims = env.claims().list(&ListParams::default()).await.ok()?.items;
            let held = env.namespace_host_ports().await;
            (claims.is_empty() && held.is_empty()).then_some(())
        },
    )
    .await;
    drop(second);
    env.cleanup().await;
}

#[tokio::test]
async fn a_pod_denied_later_in_admission_leaves_nothing_after_the_grace_period() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let env = Env::new("denied-later").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions {
        settings: Settings {
            pod_claim_grace: Duration::from_secs(3),
            ..Settings::default()
        },
        ..RunOptions::default()
    });
    let class = env.create_class("web", &[(15500, 15509)]).await;
    // A validating webhook that cannot be reached: every pod labelled deny=true fails after
    // our mutating webhook made its claim (as a later policy denying it would).
    let name = format!("{}-deny", env.webhook_configurations());
    let deny = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "deny.hostport-e2e.example.com", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 2,
            "clientConfig": {"url": "https://127.0.0.1:1/deny"},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                       "operations": ["CREATE"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"hostport-e2e/scenario": env.namespace}},
            "objectSelector": {"matchLabels": {"deny": "true"}},
        }],
    });
    // An empty mutating configuration of the same name, so a run killed midway is swept.
    let empty = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": name}, "webhooks": []});
    let apply = PatchParams::apply("hostport-e2e").force();
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .patch(&name, &apply, &Patch::Apply(&empty))
        .await
        .expect("mutating");
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .patch(&name, &apply, &Patch::Apply(&deny))
        .await
        .expect("validating");

    let pod = web_pod(
        json!({"generateName": "job-", "labels": {"deny": "true"}}),
        &class,
    );
    let error = pods(&env)
        .create(&PostParams::default(), &pod)
        .await
        .expect_err("denied by the later webhook");
    assert!(denial(error).contains("deny.hostport-e2e.example.com"));
    let left = pod_claims(&env).await;
    assert_eq!(left.len(), 1, "the claim made before the denial");
    let claim = left[0].name_any();
    assert!(claim.starts_with("job-http-"), "{claim}");
    gone(&env, &env.claims(), &claim).await;
    assert!(env.has_event("Unused").await);
    env.wait_for("its port released", WAIT, || async {
        env.namespace_host_ports().await.is_empty().then_some(())
    })
    .await;
    // A pod that was created in time keeps its claim past the grace period.
    let kept = pods(&env)
        .create(
            &PostParams::default(),
            &web_pod(json!({"generateName": "job-"}), &class),
        )
        .await
        .expect("admitted");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let claim = annotation(&kept, "claim.hostport.rmb938.com/http").expect("claim");
    let bound = env.bound(claim).await;
    assert!(bound.owner_references().is_empty(), "no write for an owner");
    // Its pod gone (long past the grace period), the claim goes, and then its port.
    pods(&env)
        .delete(&kept.name_any(), &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    gone(&env, &env.claims(), claim).await;
    assert!(env.has_event("PodGone").await);
    env.wait_for("its port released", WAIT, || async {
        env.namespace_host_ports().await.is_empty().then_some(())
    })
    .await;
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("cleanup");
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("cleanup");
    env.cleanup().await;
}

#[tokio::test]
async fn a_dry_run_answers_with_the_port_and_creates_nothing() {
    let env = Env::new("dry-run").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("web", &[(15600, 15601)]).await;
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for metadata in [json!({"name": "web"}), json!({"generateName": "web-"})] {
        let answered = pods(&env)
            .create(&dry, &web_pod(metadata, &class))
            .await
            .expect("dry-run admitted");
        assert_eq!(
            host_ports(&answered)["http"],
            15600,
            "the port it would get"
        );
        assert_eq!(
            annotation(&answered, "port.hostport.rmb938.com/http"),
            Some("15600")
        );
    }
    assert!(pod_claims(&env).await.is_empty(), "no claim on a dry-run");
    assert!(env.namespace_host_ports().await.is_empty());
    assert!(
        pods(&env)
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .is_empty()
    );
    // The real one gets the port the dry-run announced.
    let created = pods(&env)
        .create(
            &PostParams::default(),
            &web_pod(json!({"name": "web"}), &class),
        )
        .await
        .expect("admitted");
    assert_eq!(host_ports(&created)["http"], 15600);
    // A dry-run for a full class is denied, as the real request would be.
    env.create_claim("other", &class, None).await;
    env.bound("other").await;
    let error = pods(&env)
        .create(&dry, &web_pod(json!({"generateName": "web-"}), &class))
        .await
        .expect_err("denied");
    assert!(denial(error).contains("are all in use"));
    env.cleanup().await;
}

#[tokio::test]
async fn bad_class_annotations_are_denied_with_the_reason_and_make_nothing() {
    let env = Env::new("pod-claims-denied").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("one", &[(15700, 15700)]).await;
    let create = |metadata: Value, class: String| {
        let api = pods(&env);
        async move {
            api.create(&PostParams::default(), &web_pod(metadata, &class))
                .await
        }
    };
    let missing = format!("{class}-missing");
    let message = denial(
        create(json!({"name": "a"}), missing.clone())
            .await
            .expect_err("denied"),
    );
    assert!(
        message.contains(&format!(
            "names HostPortClass \"{missing}\", which does not exist"
        )),
        "{message}"
    );
    create(json!({"name": "b"}), class.clone())
        .await
        .expect("takes the only port");
    let message = denial(
        create(json!({"name": "c"}), class.clone())
            .await
            .expect_err("full"),
    );
    assert!(message.contains("are all in use"), "{message}");
    assert!(message.contains("15700"), "{message}");
    let message = denial(
        create(json!({"name": "d"}), "Bad_Class".into())
            .await
            .expect_err("bad"),
    );
    assert!(
        message.contains("not a valid HostPortClass name"),
        "{message}"
    );
    assert_eq!(pod_claims(&env).await.len(), 1, "only b's claim");

    // A hostile tenant's claim of the name the pod's claim would have is not taken over.
    env.create_claim("e-http", &class, None).await;
    let message = denial(
        create(json!({"name": "e"}), class.clone())
            .await
            .expect_err("taken"),
    );
    assert!(message.contains("was not made for a pod"), "{message}");
    env.cleanup().await;
}

#[tokio::test]
async fn class_access_rules_apply_to_pod_claims() {
    let env = Env::new("pod-claims-access").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let closed = env.create_class("closed", &[(15800, 15809)]).await;
    env.classes()
        .patch(
            &closed,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"namespaceSelector": {"matchLabels": {"team": "elsewhere"}}}}),
            ),
        )
        .await
        .expect("selector");
    let limited = env.create_class("limited", &[(15810, 15819)]).await;
    env.classes()
        .patch(
            &limited,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxClaimsPerNamespace": 1}})),
        )
        .await
        .expect("limit");
    let api = pods(&env);
    let error = api
        .create(
            &PostParams::default(),
            &web_pod(json!({"name": "a"}), &closed),
        )
        .await
        .expect_err("namespace not selected");
    let message = denial(error);
    assert!(
        message.contains("is not selected by the namespaceSelector"),
        "{message}"
    );
    api.create(
        &PostParams::default(),
        &web_pod(json!({"name": "b"}), &limited),
    )
    .await
    .expect("first of the namespace");
    let error = api
        .create(
            &PostParams::default(),
            &web_pod(json!({"name": "c"}), &limited),
        )
        .await
        .expect_err("over the limit");
    let message = denial(error);
    assert!(message.contains("maxClaimsPerNamespace"), "{message}");
    assert_eq!(pod_claims(&env).await.len(), 1);
    env.cleanup().await;
}

/// The same admission sent twice (a retry after a timeout) finds the claim the first one
/// made: one claim, the same port.
#[tokio::test]
async fn a_retried_admission_reuses_the_claim_it_made() {
    let env = Env::new("pod-claims-retry").await;
    let webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("web", &[(15900, 15909)]).await;
    let config = hostport_e2e::local::client_trusting(webhook.ca_pem.as_bytes()).expect("TLS");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .expect("client");
    let pod = web_pod(
        json!({"name": "retried", "namespace": env.namespace}),
        &class,
    );
    let mut patches = vec![];
    for uid in ["first-try", "second-try"] {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": env.namespace, "name": "retried", "operation": "CREATE",
                "userInfo": {"username": "tenant"},
                "object": serde_json::to_value(&pod).expect("json"),
                "oldObject": Value::Null,
            }
        });
        let answer: Value = client
            .post(format!("{}/mutate-v1-pod", webhook.url))
            .json(&review)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("review");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        patches.push(answer["response"]["patch"].clone());
    }
    assert_eq!(patches[0], patches[1], "the same claim and port");
    assert_eq!(pod_claims(&env).await.len(), 1);
    assert_eq!(webhook.metrics.pod_claims_created.get(), 1);
    env.cleanup().await;
}

/// A hostile tenant's bare pod posing as a StatefulSet's (a forged controller reference):
/// its claim is owned by a StatefulSet that does not exist, so the controller deletes it,
/// and the port is released once the pod is gone.
#[tokio::test]
async fn a_forged_statefulset_owner_does_not_keep_a_claim() {
    let env = Env::new("pod-claims-forged").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("web", &[(15950, 15959)]).await;
    let pod = web_pod(
        json!({"name": "ghost-0", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "StatefulSet", "name": "ghost", "uid": "forged-uid", "controller": true}]}),
        &class,
    );
    // The controller may delete the claim before the admission is over (the pod is then
    // denied), or after (the port is held until the pod goes).
    match pods(&env).create(&PostParams::default(), &pod).await {
        Ok(created) => {
            assert!(host_ports(&created)["http"] >= 15950);
            env.wait_for("the claim deleted", WAIT, || async {
                let claim = env.claims().get_opt("ghost-0-http").await.ok()?;
                claim
                    .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
                    .then_some(())
            })
            .await;
            if env.server().is_some() {
                pods(&env)
                    .delete("ghost-0", &DeleteParams::default())
                    .await
                    .expect("delete");
            }
        }
        Err(error) => assert!(denial(error).contains("is being deleted")),
    }
    gone(&env, &env.claims(), "ghost-0-http").await;
    if env.server().is_some() {
        // On a cluster the garbage collector may act first.
        assert!(env.has_event("StatefulSetDeleted").await);
    }
    env.wait_for("its port released", WAIT, || async {
        env.namespace_host_ports().await.is_empty().then_some(())
    })
    .await;
    env.cleanup().await;
}

/// A Deployment's replicas (generateName pods of its ReplicaSet) each get a port; scaling
/// down frees the ports of the removed replicas, deleting the Deployment frees the rest. On
/// a real cluster the Deployment, ReplicaSet and garbage collector controllers do the pod
/// work; in-process the scenario does it as they would.
#[tokio::test]
async fn a_deployment_gives_each_replica_a_port_and_frees_it_with_the_replica() {
    use k8s_openapi::api::apps::v1::Deployment;
    let env = Env::new("pod-claims-deploy").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("web", &[(15960, 15969)]).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"},
                    "annotations": {"class.hostport.rmb938.com/http": class}},
                "spec": {"containers": [{"name": "web", "image": hostport_e2e::pod_image(),
                    "ports": [{"name": "http", "containerPort": 8080}]}]}
            }
        }
    }))
    .expect("deployment");
    let deployment = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");
    if env.server().is_some() {
        let template = deployment.spec.clone().expect("spec").template;
        for _ in 0..3 {
            let pod = pod_from_template(
                &template,
                &env.namespace,
                PodName::GenerateName("web-7c9d-"),
                ("apps/v1", "ReplicaSet", "web-7c9d", "rs-uid"),
            );
            pods(&env)
                .create(&PostParams::default(), &pod)
                .await
                .expect("replica admitted");
        }
    }
    let replicas = || async {
        let listed = pods(&env)
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        Some(
            listed
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect::<Vec<Pod>>(),
        )
    };
    let running = env
        .wait_for("3 replicas with ports", WAIT, || async {
            let running = replicas().await?;
            (running.len() == 3 && running.iter().all(|p| host_ports(p).contains_key("http")))
                .then_some(running)
        })
        .await;
    let ports: BTreeSet<i32> = running.iter().map(|p| host_ports(p)["http"]).collect();
    assert_eq!(ports.len(), 3, "{ports:?}");
    env.wait_for("one claim per replica", WAIT, || async {
        (pod_claims(&env).await.len() == 3).then_some(())
    })
    .await;

    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale down");
    if env.server().is_some() {
        for pod in &running[1..] {
            pods(&env)
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
                .expect("delete replica");
        }
    }
    env.wait_for("one claim and one port left", WAIT, || async {
        let claims = pod_claims(&env).await.len();
        let held = env.namespace_host_ports().await.len();
        (claims == 1 && held == 1).then_some(())
    })
    .await;

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete deployment");
    if env.server().is_some() {
        for pod in replicas().await.unwrap_or_default() {
            pods(&env)
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
                .expect("delete replica");
        }
    }
    env.wait_for("no claim and no port left", WAIT, || async {
        (pod_claims(&env).await.is_empty() && env.namespace_host_ports().await.is_empty())
            .then_some(())
    })
    .await;
    env.cleanup().await;
}

/// The writes a pod with class annotations costs beyond the pod itself: per annotation the
/// webhook's claim create and the controller's HostPort create and claim status; no
/// `spec.hostPortName` (the status port names `port-<n>`), no HostPort status (it would repeat
/// `spec.port`) and no ownerReference (the pod watch sees the pod leave). Counted by the
/// in-process API server per user and resource.
#[tokio::test]
async fn a_pod_claim_costs_three_writes_per_annotation() {
    let Some(env) = Env::in_process("pod-claims-writes").await else {
        return;
    };
    let server = env.server().expect("in-process");
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("web", &[(15950, 15959)]).await;
    let binding = [
        "hostports",
        "hostports/status",
        "hostportclaims",
        "hostportclaims/status",
    ];
    for (annotations, name) in [(1, "one"), (2, "two")] {
        let mut pod = web_pod(json!({"name": name}), &class);
        if annotations == 2 {
            let spec = pod.spec.as_mut().expect("spec");
            spec.containers[0].ports.get_or_insert_default().push(
                serde_json::from_value(json!({"name": "metrics", "containerPort": 9090}))
                    .expect("port"),
            );
            pod.annotations_mut()
                .insert("class.hostport.rmb938.com/metrics".into(), class.clone());
        }
        server.reset_counts();
        let admitted = pods(&env)
            .create(&PostParams::default(), &pod)
            .await
            .expect("admitted");
        assert_eq!(host_ports(&admitted).len(), annotations);
        // Settled: nothing more is written for it.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let writes = server.writes(|_, resource| binding.contains(&resource));
        assert_eq!(
            writes,
            3 * annotations as u64,
            "{name}: {:?}",
            server.counts()
        );
        assert_eq!(
            server.writes(|_, resource| resource == "hostports/status"),
            0,
            "no HostPort status for a pod claim"
        );
    }
    let claims = pod_claims(&env).await;
    assert_eq!(claims.len(), 3);
    assert!(claims.iter().all(|c| c.owner_references().is_empty()));
    let held = env.namespace_host_ports().await;
    assert_eq!(held.len(), 3);
    for claim in &claims {
        assert_eq!(claim.spec.host_port_name, None, "{claim:?}");
        let name = claim
            .bound_host_port_name()
            .expect("named by its status port");
        let host_port = held
            .iter()
            .find(|hp| hp.metadata.name.as_deref() == Some(&*name))
            .expect("its HostPort");
        assert_eq!(host_port.claim_uid(), claim.metadata.uid.as_deref());
        assert_eq!(host_port.port(), claim.bound_port());
    }
    for host_port in held {
        assert!(
            is_pod_claim(host_port.labels()),
            "labelled as a pod claim's"
        );
        assert!(host_port.status.is_none(), "no status: {host_port:?}");
    }
    env.cleanup().await;
}
