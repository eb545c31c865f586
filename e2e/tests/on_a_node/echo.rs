//! The pod's program answers on its host port, from another network namespace, with the
//! port it read from the downward API; a StatefulSet pod deleted comes back with its port.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::{answer, echo_pod, on_a_node_scenario, running};

#[tokio::test]
async fn the_pod_answers_on_its_host_port_with_the_port_it_read() {
    let Some(scenario) = on_a_node_scenario("node-echo", &[(38100, 38109)]).await else {
        return;
    };
    let (env, node, class) = (&scenario.env, scenario.node, scenario.class.as_str());
    env.create_claim("echo", class, None).await;
    let port = env.bound("echo").await.bound_port().expect("bound");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod = echo_pod("echo", &[("echo-tcp", "TCP"), ("echo-udp", "UDP")]);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("admitted");
    running(env, "echo").await;
    let expected = format!("host port {port}\n");
    assert_eq!(answer(env, node, port, false).await, expected, "tcp");
    assert_eq!(answer(env, node, port, true).await, expected, "udp");
    scenario.finish().await;
}

#[tokio::test]
async fn a_statefulset_pod_comes_back_with_its_port_and_the_same_answer() {
    let Some(scenario) = on_a_node_scenario("node-set", &[(38110, 38119)]).await else {
        return;
    };
    let (env, node, class) = (&scenario.env, scenario.node, scenario.class.as_str());
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.namespace);
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "game"},
        "spec": {
            "replicas": 1, "serviceName": "game",
            "selector": {"matchLabels": {"app": "game"}},
            "template": {
                "metadata": {"labels": {"app": "game"},
                             "annotations": {"class.hostport.rmb938.com/game": class}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "game", "image": hostport_e2e::pod_image(),
                    "ports": [{"name": "game", "containerPort": 8080}],
                    "env": [{"name": "HOST_PORT", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.annotations['port.hostport.rmb938.com/game']"}}}]}]}}}
    }))
    .expect("statefulset");
    sets.create(&PostParams::default(), &set)
        .await
        .expect("created");
    let first = running(env, "game-0").await;
    let port_of = |pod: &Pod| -> u16 {
        pod.annotations()
            .get("port.hostport.rmb938.com/game")
            .and_then(|p| p.parse().ok())
            .expect("the pod's port annotation")
    };
    let port = port_of(&first);
    let expected = format!("host port {port}\n");
    assert_eq!(answer(env, node, port, false).await, expected);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    pods.delete("game-0", &DeleteParams::default())
        .await
        .expect("deleted");
    let first_uid = first.metadata.uid.clone();
    env.wait_for("game-0 back as a new pod", Duration::from_secs(90), || {
        let pods = pods.clone();
        let first_uid = first_uid.clone();
        async move {
            let pod = pods.get_opt("game-0").await.ok().flatten()?;
            (pod.metadata.uid != first_uid).then_some(())
        }
    })
    .await;
    let second = running(env, "game-0").await;
    assert_eq!(
        port_of(&second),
        port,
        "the same port after the pod came back"
    );
    assert_eq!(answer(env, node, port, false).await, expected);
    scenario.finish().await;
}
