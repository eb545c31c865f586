//! `hostNetwork` pods in a labelled namespace: allowed for ports they claim from classes with
//! `spec.allowHostNetwork` (declared with `containerPort` = `hostPort` = the allocated port, so
//! the scheduler counts them), refused when a class does not allow it or when they claim
//! nothing. On a real API server the pod's `hostPort` arrives defaulted to its
//! `containerPort`; where pods run (`E2E_POD_IMAGE`) the program listens on its port on the
//! node's network and gets Ready through it.

use std::time::Duration;

use hostport_controller::RunOptions;
use hostport_e2e::denial_message;
use hostport_e2e::harness::Env;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Lets `class` hand out ports to `hostNetwork` pods.
async fn allow_host_network(env: &Env, class: &str) {
    env.classes()
        .patch(
            class,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allowHostNetwork": true}})),
        )
        .await
        .expect("allowHostNetwork");
}

/// The echo program on the node's network, listening on the port it is given; `annotations`
/// name its claim or class.
fn host_network_pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "server", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "api", "containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": "api"}, "periodSeconds": 1},
            "env": [
                {"name": "HOST_PORT", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.annotations['port.hostport.rmb938.com/api']"}}},
                {"name": "LISTEN", "value": "0.0.0.0:$(HOST_PORT)"}]}]}
    }))
    .expect("pod")
}

fn first_port(pod: &Pod) -> (i32, Option<i32>) {
    let port = &pod.spec.as_ref().expect("spec").containers[0]
        .ports
        .as_ref()
        .expect("ports")[0];
    (port.container_port, port.host_port)
}

#[tokio::test]
async fn host_network_pods_get_ports_of_classes_that_allow_them_and_nothing_else() {
    let env = Env::new("host-network").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let allowing = env.create_class("direct", &[(16600, 16609)]).await;
    allow_host_network(&env, &allowing).await;
    let plain = env.create_class("bridged", &[(16610, 16619)]).await;
    env.create_claim("db", &allowing, None).await;
    env.create_claim("web", &plain, None).await;
    let port = i32::from(env.bound("db").await.bound_port().expect("bound"));
    env.bound("web").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);

    let stored = pods
        .create(
            &PostParams::default(),
            &host_network_pod("db", json!({"claim.hostport.rmb938.com/api": "db"})),
        )
        .await
        .expect("admitted");
    assert_eq!(first_port(&stored), (port, Some(port)));
    if hostport_e2e::pods_run() {
        // Ready only if the program listens on its port on the node's network.
        env.wait_for(
            "the hostNetwork pod Ready",
            Duration::from_secs(90),
            || async {
                let pod = pods.get_opt("db").await.ok()??;
                pod.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }

    let refused = denial_message(
        pods.create(
            &PostParams::default(),
            &host_network_pod("web", json!({"claim.hostport.rmb938.com/api": "web"})),
        )
        .await,
    );
    assert!(
        refused.contains("whose class does not allow hostNetwork pods"),
        "{refused}"
    );
    let bare = denial_message(
        pods.create(&PostParams::default(), &host_network_pod("bare", json!({})))
            .await,
    );
    assert!(bare.contains("claims no port"), "{bare}");

    // A claim made for the pod: the class decides the same way, before anything is made.
    let made = pods
        .create(
            &PostParams::default(),
            &host_network_pod("cache", json!({"class.hostport.rmb938.com/api": allowing})),
        )
        .await
        .expect("admitted");
    let (container_port, host_port) = first_port(&made);
    assert_eq!(Some(container_port), host_port);
    assert!((16600..=16609).contains(&container_port));
    let refused = denial_message(
        pods.create(
            &PostParams::default(),
            &host_network_pod("proxy", json!({"class.hostport.rmb938.com/api": plain})),
        )
        .await,
    );
    assert!(
        refused.contains("does not allow hostNetwork pods"),
        "{refused}"
    );
    let claims = env
        .claims()
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    assert_eq!(claims.len(), 3, "db, web and the one made for cache");
    for name in ["db", "cache"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    env.cleanup().await;
}
