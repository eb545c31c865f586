//! `config/rbac` grants each binary every call it makes: the scenarios run with the
//! in-process API server counting requests per user, and each (verb, resource) a binary used
//! must be allowed by its ServiceAccount's rules. (On a real cluster the same is proven by
//! impersonation: see the README, "RBAC on a real cluster".)

use std::time::Duration;

use hostport_controller::{LeaseConfig, RunOptions};
use hostport_e2e::harness::{Env, SYSTEM_NAMESPACE, controller_user};
use hostport_e2e::rbac::{calls_of, rules_of};
use hostport_e2e::workloads::{PodName, pod_from_template};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_testserver::UserInfo;
use serde_json::{Value, json};

#[tokio::test]
async fn rbac_covers_every_call_of_each_binary() {
    if std::env::var_os("HOSTPORT_SKIP_KUBECTL").is_some() {
        return eprintln!("HOSTPORT_SKIP_KUBECTL is set: config/rbac not rendered");
    }
    let Some(env) = Env::in_process("rbac").await else {
        return;
    };
    let server = env.server().expect("in-process");
    let lease = LeaseConfig {
        namespace: SYSTEM_NAMESPACE.into(),
        name: "hostport-controller".into(),
        identity: "a".into(),
        duration: Duration::from_secs(3),
    };
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions {
        leader_election: Some(lease),
        ..RunOptions::default()
    });

    // Bind, use, release; a class deleted after its claims; a Go-era HostPort released.
    let class = env.create_class("sample", &[(12950, 12960)]).await;
    env.create_claim("echo-web", &class, None).await;
    env.bound("echo-web").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo", "annotations": {"claim.hostport.rmb938.com/web": "echo-web"}},
        "spec": {"containers": [{"name": "echo", "image": hostport_e2e::pod_image(), "ports": [{"name": "web", "containerPort": 8080}]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    env.claims()
        .delete("echo-web", &DeleteParams::default())
        .await
        .expect("delete claim");
    tokio::time::sleep(Duration::from_millis(300)).await;
    pods.delete("echo", &DeleteParams::default())
        .await
        .expect("delete pod");
    // Ports per pod: a StatefulSet's pod and a ReplicaSet-like pod; their claims go with them.
    let set: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "arena", "annotations": {"hostport.rmb938.com/when-scaled": "Delete"}},
        "spec": {"replicas": 1, "serviceName": "arena", "selector": {"matchLabels": {"app": "arena"}},
            "template": {"metadata": {"labels": {"app": "arena"},
                "annotations": {"class.hostport.rmb938.com/web": class}},
                "spec": {"containers": [{"name": "echo", "image": hostport_e2e::pod_image(),
                    "ports": [{"name": "web", "containerPort": 8080}]}]}}}
    }))
    .expect("statefulset");
    let sets = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(
        env.client.clone(),
        &env.namespace,
    );
    let set = sets
        .create(&PostParams::default(), &set)
        .await
        .expect("statefulset");
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let template = set.spec.expect("spec").template;
    // A StatefulSet's pod: scaled to zero (whenScaled: Delete), then the pod goes, and its
    // claim with it (the controller reads the StatefulSet and the pods).
    let arena = pod_from_template(
        &template,
        &env.namespace,
        PodName::Name("arena-0"),
        ("apps/v1", "StatefulSet", "arena", uid.as_str()),
    );
    pods.create(&PostParams::default(), &arena)
        .await
        .expect("pod with a class annotation");
    sets.patch(
        "arena",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .expect("scale");
    pods.delete("arena-0", &DeleteParams::default())
        .await
        .expect("delete pod");
    // A ReplicaSet's pod: the pod goes and its claim with it (the controller's pod watch sees
    // it leave; no ownerReference is written).
    let replica = pod_from_template(
        &template,
        &env.namespace,
        PodName::GenerateName("web-"),
        ("apps/v1", "ReplicaSet", "web", "rs-uid"),
    );
    let replica = pods
        .create(&PostParams::default(), &replica)
        .await
        .expect("pod with a class annotation");
    let claim = replica
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("claim.hostport.rmb938.com/web"))
        .cloned()
        .expect("claim annotation");
    assert!(
        env.claims()
            .get(&claim)
            .await
            .expect("claim")
            .metadata
            .owner_references
            .is_none(),
        "no ownerReference is written for a pod claim"
    );
    pods.delete(
        &replica.metadata.name.unwrap_or_default(),
        &DeleteParams::default(),
    )
    .await
    .expect("delete pod");
    env.wait_for(
        "the claims made for pods gone",
        Duration::from_secs(20),
        || async {
            let claims = env.claims().list(&Default::default()).await.ok()?.items;
            claims.is_empty().then_some(())
        },
    )
    .await;
    env.create_claim("legacy", &class, None).await;
    let legacy = env.bound("legacy").await;
    let host_port = legacy.spec.host_port_name.clone().expect("bound");
    // Give the HostPort the Go project's finalizer (as the controller itself would not).
    let controller_client = server.client_as(controller_user());
    Api::<hostport_api::HostPort>::all(controller_client)
        .patch(
            &host_port,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["hostport.rmb938.com"]}})),
        )
        .await
        .expect("finalizer");
    env.claims()
        .delete("legacy", &DeleteParams::default())
        .await
        .expect("delete legacy");
    env.classes()
        .delete(&class, &DeleteParams::default())
        .await
        .expect("delete class");
    env.wait_for("everything released", Duration::from_secs(20), || async {
        env.classes()
            .get_opt(&class)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    let output = std::process::Command::new("kubectl")
        .args(["kustomize", "config/rbac"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("kubectl");
    assert!(output.status.success());
    let objects: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(output.stdout).expect("utf-8"))
            .expect("rbac yaml");
    for (user, service_account) in [
        (controller_user(), "hostport-controller"),
        (
            UserInfo::service_account(SYSTEM_NAMESPACE, "hostport-webhook"),
            "hostport-webhook",
        ),
    ] {
        let rules = rules_of(&objects, service_account);
        assert!(!rules.is_empty(), "no rules bound to {service_account}");
        let (used, missing) = calls_of(server, &user, &rules);
        assert!(!used.is_empty(), "{service_account} made no calls");
        assert!(
            missing.is_empty(),
            "config/rbac does not let {service_account} make these calls: {missing:?}"
        );
        eprintln!("{service_account} used: {used:?}");
    }
}
