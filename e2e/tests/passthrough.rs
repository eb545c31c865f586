//! Passthrough (`portPolicy: Passthrough`): the pod's container port becomes the allocated
//! port, for programs that must listen on the port clients reach them on. What the API server
//! stores (the rewritten port, its probes, the env var), the class's opt-in, the per-pod
//! annotation and a StatefulSet pod that keeps its passthrough port. Where pods really run
//! (`E2E_POD_IMAGE`), the pod gets Ready through its rewritten probe and a Service that
//! selects it by the port's name gets an EndpointSlice with the allocated port.

use std::time::Duration;

use hostport_controller::RunOptions;
use hostport_e2e::denial_message;
use hostport_e2e::harness::Env;
use hostport_e2e::workloads::statefulset_pod;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// Lets `class` hand out passthrough ports.
async fn allow_passthrough(env: &Env, class: &str) {
    env.classes()
        .patch(
            class,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allowPassthrough": true}})),
        )
        .await
        .expect("allowPassthrough");
}

/// A claim of `class` with `portPolicy: Passthrough`.
async fn passthrough_claim(env: &Env, name: &str, class: &str) -> Result<(), kube::Error> {
    let claim: hostport_api::HostPortClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"hostPortClassName": class, "portPolicy": "Passthrough"}
    }))
    .expect("claim");
    env.claims()
        .create(&PostParams::default(), &claim)
        .await
        .map(|_| ())
}

/// The echo program listening on the port it is given (`LISTEN` built from `HOST_PORT`), its
/// container port declared as 8080 and probed there by number; `annotations` name its claim.
fn server_pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "server", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "game", "containerPort": 8080},
                      {"name": "game-udp", "containerPort": 8080, "protocol": "UDP"}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            "env": [
                {"name": "HOST_PORT", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.annotations['port.hostport.rmb938.com/game']"}}},
                {"name": "LISTEN", "value": "0.0.0.0:$(HOST_PORT)"}]}]}
    }))
    .expect("pod")
}

/// `(containerPort, hostPort)` of the stored pod's port `index`.
fn ports(pod: &Pod, index: usize) -> (i32, Option<i32>) {
    let port = &pod.spec.as_ref().expect("spec").containers[0]
        .ports
        .as_ref()
        .expect("ports")[index];
    (port.container_port, port.host_port)
}

#[tokio::test]
async fn a_passthrough_pod_listens_on_its_port_and_a_service_finds_it_by_name() {
    let env = Env::new("passthrough").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("direct", &[(16100, 16109)]).await;
    allow_passthrough(&env, &class).await;
    passthrough_claim(&env, "game", &class)
        .await
        .expect("claim");
    let port = env.bound("game").await.bound_port().expect("bound");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod = server_pod(
        "server",
        json!({"claim.hostport.rmb938.com/game": "game",
               "claim.hostport.rmb938.com/game-udp": "game"}),
    );
    let stored = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("admitted");
    let port = i32::from(port);
    assert_eq!(ports(&stored, 0), (port, Some(port)), "TCP");
    assert_eq!(ports(&stored, 1), (port, Some(port)), "UDP");
    let container = &stored.spec.as_ref().expect("spec").containers[0];
    let probe = container.readiness_probe.as_ref().expect("probe");
    assert_eq!(
        probe.tcp_socket.as_ref().map(|t| t.port.clone()),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)),
        "the probe follows its port"
    );
    assert_eq!(
        container.ports.as_ref().expect("ports")[0].name.as_deref(),
        Some("game")
    );

    // A Service selecting it by the port's name.
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "server"},
        "spec": {"selector": {"app": "server"},
                 "ports": [{"name": "game", "port": 80, "targetPort": "game"}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    if hostport_e2e::pods_run() {
        // Ready only if the kubelet probes the port the program listens on; the EndpointSlice
        // controller resolves `targetPort: game` to the pod's (rewritten) container port.
        let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &env.namespace);
        let (slice_port, ready) = env
            .wait_for("a ready endpoint of the Service", WAIT, || async {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=server"))
                    .await
                    .ok()?;
                let slice = list.items.into_iter().find(|s| !s.endpoints.is_empty())?;
                let ready = slice.endpoints[0]
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(false);
                let port = slice.ports?.first()?.port?;
                ready.then_some((port, ready))
            })
            .await;
        assert_eq!(slice_port, port, "the Service reaches the pod on its port");
        assert!(ready);
    }
    let _ = pods.delete("server", &DeleteParams::default()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn passthrough_needs_a_class_that_allows_it() {
    let env = Env::new("passthrough-refused").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("mapped", &[(16110, 16119)]).await;
    let message = denial_message(passthrough_claim(&env, "game", &class).await);
    assert!(
        message.contains("port policy Passthrough is not allowed by HostPortClass")
            && message.contains("spec.allowPassthrough is false"),
        "{message}"
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod = server_pod(
        "server",
        json!({"class.hostport.rmb938.com/game": class,
               "port-policy.hostport.rmb938.com/game": "Passthrough"}),
    );
    let message = denial_message(pods.create(&PostParams::default(), &pod).await);
    assert!(
        message.contains("annotation \"port-policy.hostport.rmb938.com/game\"")
            && message.contains("not allowed by HostPortClass"),
        "{message}"
    );
    assert!(
        env.claims()
            .list(&ListParams::default())
            .await
            .expect("claims")
            .items
            .is_empty(),
        "a refused pod makes no claim"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_statefulset_pod_keeps_its_passthrough_port() {
    let env = Env::new("passthrough-keep").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("direct", &[(16120, 16129)]).await;
    allow_passthrough(&env, &class).await;
    // Both ports of 8080 share one claim made for the pod.
    let template = server_pod(
        "arena",
        json!({"class.hostport.rmb938.com/game": class,
               "class.hostport.rmb938.com/game-udp": class,
               "port-policy.hostport.rmb938.com/game": "Passthrough",
               "port-policy.hostport.rmb938.com/game-udp": "Passthrough"}),
    );
    let mut metadata = template.metadata;
    metadata.name = None;
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "arena"},
        "spec": {"replicas": 1, "serviceName": "arena", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "arena"}},
                 "template": {"metadata": metadata, "spec": template.spec}}
    }))
    .expect("statefulset");
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.namespace);
    let set = sets
        .create(&PostParams::default(), &set)
        .await
        .expect("statefulset");
    let first = statefulset_pod(&env, &set, 0, None).await;
    let (port, host_port) = ports(&first, 0);
    assert_eq!(Some(port), host_port);
    assert!((16120..=16129).contains(&port), "{port}");
    assert_eq!(ports(&first, 1), (port, Some(port)));
    let claim = env.bound("arena-0-game").await;
    assert_eq!(
        claim.spec.port_policy,
        Some(hostport_api::PortPolicy::Passthrough)
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    pods.delete("arena-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
    if env.server().is_some() {
        env.wait_for("arena-0 gone", WAIT, || async {
            matches!(pods.get_opt("arena-0").await, Ok(None)).then_some(())
        })
        .await;
    }
    let again = statefulset_pod(&env, &set, 0, first.metadata.uid.as_deref()).await;
    assert_eq!(ports(&again, 0), (port, Some(port)), "the same port");
    env.cleanup().await;
}
