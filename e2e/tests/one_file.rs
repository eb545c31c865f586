//! One `kubectl apply -f app.yaml` with a claim and the pod that uses it works the first time:
//! the pod webhook waits (watch-fed, bounded) for a claim applied together with the pod to
//! appear and bind, and tells at once when the claim cannot bind by itself.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hostport_api::conditions::reasons;
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use hostport_e2e::samples::apply_yaml;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

fn claim_yaml(namespace: &str, name: &str, class: &str) -> String {
    format!(
        "apiVersion: hostport.rmb938.com/v1alpha1\nkind: HostPortClaim\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  hostPortClassName: {class}\n"
    )
}

/// The README's pod: port `web` from claim `claim`, read back through the downward API.
fn pod_yaml(namespace: &str, name: &str, claim: &str) -> String {
    let image = hostport_e2e::pod_image();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  annotations:
    claim.hostport.rmb938.com/web: {claim}
spec:
  containers:
  - name: echo
    image: {image}
    ports:
    - name: web
      containerPort: 8080
    env:
    - name: MY_HOST_PORT
      valueFrom:
        fieldRef:
          fieldPath: metadata.annotations['port.hostport.rmb938.com/web']
"#
    )
}

fn pod(namespace: &str, name: &str, claim: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"claim.hostport.rmb938.com/web": claim}},
        "spec": {"nodeSelector": hostport_e2e::no_node(),
                 "containers": [{"name": "echo", "image": hostport_e2e::pod_image(),
                                 "ports": [{"name": "web", "containerPort": 8080}]}]}
    }))
    .expect("pod")
}

fn host_port_of(pod: &Pod) -> Option<i32> {
    pod.spec.as_ref()?.containers[0].ports.as_ref()?[0].host_port
}

/// The webhook's metrics text.
fn metrics_of(webhook: &hostport_e2e::local::LocalWebhook) -> String {
    webhook.metrics.encode()
}

#[tokio::test]
async fn claim_then_pod_in_one_file_applies_the_first_time() {
    let env = Env::new("one-file").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("games", &[(13000, 13009)]).await;
    let ns = &env.namespace;
    let file = format!(
        "{}---\n{}",
        claim_yaml(ns, "app", &class),
        pod_yaml(ns, "app", "app")
    );
    let applied = apply_yaml(&env.client, "app.yaml", &file)
        .await
        .expect("the claim and the pod apply in one go");
    let pod: Pod =
        serde_json::from_value(serde_json::to_value(&applied[1]).expect("json")).expect("pod");
    let port = host_port_of(&pod).expect("hostPort injected");
    assert!((13000..=13009).contains(&port), "{port}");
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("port.hostport.rmb938.com/web"))
            .map(String::as_str),
        Some(port.to_string().as_str())
    );
    assert_eq!(
        env.bound("app").await.bound_port(),
        u16::try_from(port).ok()
    );
    env.cleanup().await;
}

/// Tools that do not keep file order (Argo CD sync waves aside) may send the pod first: its
/// admission waits for the claim to appear, then to bind.
#[tokio::test]
async fn pod_sent_before_its_claim_is_admitted_once_the_claim_binds() {
    let env = Env::new("pod-first").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("games", &[(13010, 13019)]).await;
    let ns = env.namespace.clone();
    let pod_file = pod_yaml(&ns, "early", "late");
    let client = env.client.clone();
    let pod_apply = tokio::spawn(async move { apply_yaml(&client, "app.yaml", &pod_file).await });
    // The pod's admission is in flight (waiting) before the claim is sent.
    env.wait_for(
        "the pod's admission waiting",
        Duration::from_secs(10),
        || async { (_webhook.metrics.claim_waits.get() > 0).then_some(()) },
    )
    .await;
    apply_yaml(&env.client, "app.yaml", &claim_yaml(&ns, "late", &class))
        .await
        .expect("claim");
    let applied = pod_apply.await.expect("join").expect("the pod is admitted");
    let pod: Pod =
        serde_json::from_value(serde_json::to_value(&applied[0]).expect("json")).expect("pod");
    assert_eq!(
        host_port_of(&pod),
        env.bound("late").await.bound_port().map(i32::from)
    );
    env.cleanup().await;
}

/// A claim that cannot bind by itself (its class is full) is not waited for: the pod is told
/// why at once, and nothing waited.
#[tokio::test]
async fn a_pod_naming_an_exhausted_claim_is_denied_at_once() {
    let env = Env::new("no-wait").await;
    let webhook = env
        .start_webhook_with(hostport_webhook::RunOptions {
            bind_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("tiny", &[(13020, 13020)]).await;
    env.create_claim("first", &class, None).await;
    env.bound("first").await;
    env.create_claim("second", &class, None).await;
    env.wait_for(
        "second Pending on PoolExhausted",
        Duration::from_secs(10),
        || async {
            let claim = env.claims().get("second").await.ok()?;
            (claim.bound_condition()?.reason == reasons::POOL_EXHAUSTED).then_some(())
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let started = Instant::now();
    let error = pods
        .create(
            &PostParams::default(),
            &pod(&env.namespace, "late", "second"),
        )
        .await
        .expect_err("denied");
    let kube::Error::Api(status) = error else {
        panic!("{error:?}")
    };
    assert!(
        status.message.contains("PoolExhausted"),
        "{}",
        status.message
    );
    // Against a 30 s wait, "at once" is unmistakable; the metric says no admission waited.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        metrics_of(&webhook).contains("hostport_webhook_claim_wait_duration_seconds_count 0"),
        "{}",
        metrics_of(&webhook)
    );
    env.cleanup().await;
}

/// 200 claims and their 200 pods sent together: every pod admitted with its claim's port,
/// all ports distinct and in the class.
#[tokio::test]
async fn two_hundred_pods_with_just_created_claims() {
    let env = Env::new("two-hundred").await;
    let webhook = env
        .start_webhook_with(hostport_webhook::RunOptions {
            bind_wait: Duration::from_millis(4500),
            ..Default::default()
        })
        .await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("games", &[(13100, 13399)]).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let admissions = (0..200).map(|i| {
        let (env, pods, class) = (&env, pods.clone(), class.clone());
        async move {
            let name = format!("app-{i}");
            env.create_claim(&name, &class, None).await;
            let started = Instant::now();
            let created = pods
                .create(&PostParams::default(), &pod(&env.namespace, &name, &name))
                .await
                .unwrap_or_else(|e| panic!("pod {name}: {e}"));
            (started.elapsed(), host_port_of(&created))
        }
    });
    let results = futures::future::join_all(admissions).await;
    let ports: BTreeSet<i32> = results.iter().filter_map(|(_, port)| *port).collect();
    assert_eq!(ports.len(), 200, "200 distinct ports");
    assert!(ports.iter().all(|p| (13100..=13399).contains(p)));
    let slowest = results
        .iter()
        .map(|(took, _)| *took)
        .max()
        .unwrap_or_default();
    eprintln!("slowest of 200 admissions: {slowest:?}");
    assert_eq!(webhook.metrics.claim_waits.get(), 0, "nothing left waiting");
    env.cleanup().await;
}

/// An admission waiting for a claim ends with its request: a client that gives up leaves
/// nothing waiting, long before the wait's own deadline.
#[tokio::test]
async fn a_request_that_goes_away_leaves_nothing_waiting() {
    let env = Env::new("gone").await;
    let webhook = env
        .start_webhook_with(hostport_webhook::RunOptions {
            bind_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await;
    // No controller: the claim stays Pending without a condition, which is worth waiting for.
    let class = env.create_class("games", &[(13400, 13409)]).await;
    env.create_claim("never", &class, None).await;
    let config = hostport_e2e::local::client_trusting(webhook.ca_pem.as_bytes()).expect("TLS");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .expect("client");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "gone-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": env.namespace, "operation": "CREATE",
            "userInfo": {"username": "tenant"},
            "object": serde_json::to_value(pod(&env.namespace, "p", "never")).expect("json"),
            "oldObject": Value::Null,
        }
    });
    let url = format!("{}/mutate-v1-pod", webhook.url);
    let request = tokio::spawn(async move { client.post(url).json(&review).send().await });
    env.wait_for("the admission waiting", Duration::from_secs(10), || async {
        (webhook.metrics.claim_waits.get() == 1).then_some(())
    })
    .await;
    request.abort();
    env.wait_for("nothing left waiting", Duration::from_secs(10), || async {
        (webhook.metrics.claim_waits.get() == 0).then_some(())
    })
    .await;
    env.cleanup().await;
}
