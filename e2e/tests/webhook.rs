//! The webhook end to end: pods and resources created through the API server (in-process,
//! or a real cluster with `E2E_KUBECONFIG`) are mutated or denied by the real webhook over
//! HTTPS, with the real controller binding claims.

use std::time::Duration;

use hostport_api::{HostPort, HostPortClaim, HostPortClaimSpec, HostPortSpec};
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn pod(name: &str, annotations: Value, ports: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{
            "name": "echo", "image": hostport_e2e::pod_image(), "ports": ports,
            "env": [{"name": "MY_HOST_PORT", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['port.hostport.rmb938.com/web']"}}}]
        }]}
    }))
    .expect("pod")
}

fn web() -> Value {
    json!([{"name": "web", "containerPort": 8080}])
}

fn denial(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn go_readme_flow_end_to_end() {
    let env = Env::new("readme-webhook").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("sample", &[(12000, 12500)]).await;
    let created = env.create_claim("echo-web", &class, None).await;
    assert!(
        created.has_finalizer(),
        "the claim webhook adds the finalizer on create"
    );
    let claim = env.bound("echo-web").await;
    let port = claim.bound_port().expect("bound");

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    pods.create(
        &PostParams::default(),
        &pod(
            "echo",
            json!({"claim.hostport.rmb938.com/web": "echo-web"}),
            web(),
        ),
    )
    .await
    .expect("pod admitted");
    let stored = pods.get("echo").await.expect("stored pod");
    let host_port = env
        .host_ports()
        .get(claim.spec.host_port_name.as_deref().expect("bound"))
        .await
        .expect("HostPort");
    assert_eq!(host_port.port(), Some(port));
    let container = &stored.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        container.ports.as_ref().expect("ports")[0].host_port,
        Some(i32::from(port))
    );
    assert_eq!(
        stored.annotations().get("port.hostport.rmb938.com/web"),
        Some(&port.to_string())
    );
    let env_var = &container.env.as_ref().expect("env")[0];
    assert_eq!(
        env_var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.annotations['port.hostport.rmb938.com/web']"),
        "the downward-API env var reads the annotation the webhook wrote"
    );

    // Other updates pass; the hostport annotations are fixed.
    pods.patch(
        "echo",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "echo"}}})),
    )
    .await
    .expect("label update passes");
    let (code, message) = denial(
        pods.patch(
            "echo",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"port.hostport.rmb938.com/web": "1"}}}),
            ),
        )
        .await
        .expect_err("annotation change denied"),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot change once the pod exists"),
        "{message}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn pod_denials_through_the_api_server() {
    let env = Env::new("pod-denials").await;
    let _webhook = env.start_webhook().await;
    let class = env.create_class("sample", &[(12600, 12610)]).await;
    // No controller yet: the claim stays unbound.
    env.create_claim("waiting", &class, None).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let cases = [
        (
            pod(
                "a",
                json!({"claim.hostport.rmb938.com/web": "waiting"}),
                web(),
            ),
            "is not Bound yet",
        ),
        (
            pod(
                "b",
                json!({"claim.hostport.rmb938.com/web": "missing"}),
                web(),
            ),
            "which does not exist in the pod's namespace",
        ),
        (
            pod(
                "c",
                json!({"claim.hostport.rmb938.com/http": "waiting"}),
                web(),
            ),
            "no container port of the pod has that name",
        ),
        (
            pod("d", json!({"claim.hostport.rmb938.com/": "waiting"}), web()),
            "has no port name after the prefix",
        ),
        (
            pod("e", json!({"claim.hostport.rmb938.com/web": ""}), web()),
            "has an empty value",
        ),
        (
            pod(
                "f",
                json!({}),
                json!([{"name": "web", "containerPort": 8080, "hostPort": 8080}]),
            ),
            "sets hostPort 8080 without a claim",
        ),
    ];
    for (pod, expected) in cases {
        let name = pod.name_any();
        let (code, message) = denial(
            pods.create(&PostParams::default(), &pod)
                .await
                .expect_err(&name),
        );
        assert_eq!(code, 403, "{name}: {message}");
        assert!(
            message.starts_with(
                r#"admission webhook "pods.hostport.rmb938.com" denied the request: "#
            ) && message.contains(expected),
            "{name}: {message}"
        );
    }
    // A pod that needs no host port is none of the webhook's business.
    pods.create(&PostParams::default(), &pod("plain", json!({}), web()))
        .await
        .expect("plain pod");

    // Once bound, the same pod is admitted (the webhook reads the fresh claim).
    let _controller = env.start_controller(RunOptions::default());
    env.bound("waiting").await;
    pods.create(
        &PostParams::default(),
        &pod(
            "a",
            json!({"claim.hostport.rmb938.com/web": "waiting"}),
            web(),
        ),
    )
    .await
    .expect("admitted once bound");
    env.cleanup().await;
}

#[tokio::test]
async fn resource_denials_through_the_api_server() {
    // On a real cluster the admin is an allocator user, whose writes these denials allow.
    let Some(env) = Env::in_process("resource-denials").await else {
        return;
    };
    let _webhook = env.start_webhook().await;
    let class = env.create_class("sample", &[(12700, 12710)]).await;
    let claims = env.claims();
    let outside = HostPortClaim::new(
        "outside",
        HostPortClaimSpec {
            host_port_class_name: class.clone(),
            host_port_name: None,
            port: Some(20000),
            port_policy: None,
            count: None,
            alignment: None,
        },
    );
    let (code, message) = denial(
        claims
            .create(&PostParams::default(), &outside)
            .await
            .expect_err("outside the pools"),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("spec.port 20000 is outside the pools"),
        "{message}"
    );

    let host_port = HostPort::new(
        "port-12700",
        HostPortSpec {
            claim_ref: Some(hostport_api::ClaimReference {
                name: Some("outside".into()),
                namespace: Some(env.namespace.clone()),
                ..Default::default()
            }),
            host_port_class_name: class,
            port: Some(12700),
        },
    );
    let (code, message) = denial(
        env.host_ports()
            .create(&PostParams::default(), &host_port)
            .await
            .expect_err("admin HostPort"),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("such HostPorts are created and changed by the hostport allocator only"),
        "{message}"
    );
    let _ = Duration::ZERO;
}
