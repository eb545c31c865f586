//! The Helm chart installed with its default values on a real node, the way a user without
//! the helm binary would (rendered by the Helm v4 SDK, the output applied), then the
//! README's flow: a namespace opted in, a class, a claim that becomes Ready, and a pod
//! naming it that runs with its `hostPort` and reads its port from the downward API (the
//! echo program answers on the node's port with the number it read). Then uninstalled,
//! leaving nothing of the release.
//!
//! Opt-in: `E2E_NODE=1` with `E2E_KUBECONFIG` naming a cluster whose node has the images
//! (`hack/images.sh --echo`), and `kubectl` on the PATH (or `KUBECTL`). It installs the
//! operator cluster-wide, so run it alone, like `installed`.

use std::time::Duration;

use hostport_e2e::chart;
use hostport_e2e::harness::Env;
use hostport_e2e::kubectl;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const SYSTEM: &str = "hostport-system";

fn write(path: &std::path::Path, objects: &[Value]) {
    std::fs::write(path, chart::to_yaml(objects)).expect("manifest");
}

fn must(result: Result<String, String>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn installed_from_the_chart_it_serves_the_readme_flow() {
    if std::env::var_os("E2E_NODE").is_none() || std::env::var_os("E2E_KUBECONFIG").is_none() {
        eprintln!("skipped: needs E2E_NODE=1 and E2E_KUBECONFIG (a node with the images)");
        return;
    }
    let rendered = chart::render(&Value::Null, SYSTEM, None).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("hostport-helm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (crds, release) = (dir.join("crds.yaml"), dir.join("release.yaml"));
    write(&crds, &rendered.crds);
    write(&release, &rendered.objects);
    let (crds, release) = (crds.to_string_lossy(), release.to_string_lossy());

    // What `helm install -n hostport-system --create-namespace` does: CRDs, then the rest.
    must(kubectl(&["apply", "--server-side", "-f", &crds]));
    must(
        kubectl(&[
            "create",
            "namespace",
            SYSTEM,
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .and_then(|ns| {
            let path = dir.join("namespace.yaml");
            std::fs::write(&path, ns).map_err(|e| e.to_string())?;
            kubectl(&["apply", "-f", &path.to_string_lossy()])
        }),
    );
    must(kubectl(&["apply", "--server-side", "-f", &release]));
    must(kubectl(&[
        "-n",
        SYSTEM,
        "rollout",
        "status",
        "deploy/hostport-controller",
        "deploy/hostport-webhook",
        "--timeout=180s",
    ]));

    // The README: the scenario's namespace carries the opt-in label; a class, a claim.
    let env = Env::new("helm").await;
    let class = env
        .wait_for(
            "the webhook to answer through its Service",
            Duration::from_secs(30),
            || async { env.try_create_class("readme", &[(38100, 38109)]).await.ok() },
        )
        .await;
    env.create_claim("echo-web", &class, None).await;
    must(
        env.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "hostportclaim/echo-web",
            "--timeout=60s",
        ])
        .await,
    );
    let port = env.bound("echo-web").await.bound_port().expect("bound");

    // The pod of config/samples/pod.yaml, with the scenarios' echo program.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo", "annotations": {"claim.hostport.rmb938.com/web": "echo-web"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "echo", "image": hostport_e2e::pod_image(),
            "ports": [{"name": "web", "containerPort": 8080}],
            "env": [{"name": "HOST_PORT", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['port.hostport.rmb938.com/web']"}}}]}]}
    }))
    .expect("pod");
    let stored = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("admitted by the chart's webhook");
    let annotation = stored
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("port.hostport.rmb938.com/web").cloned());
    assert_eq!(annotation, Some(port.to_string()));
    let declared = stored
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].ports.as_ref())
        .and_then(|p| p[0].host_port);
    assert_eq!(declared, Some(i32::from(port)));
    env.wait_for("the pod Running", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("echo").await.ok()?;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await;
    // The program read its port from the downward API: the node's port answers with it.
    let node = std::env::var("E2E_NODE_ADDRESS").unwrap_or_else(|_| "198.18.0.1".into());
    let heard = env
        .wait_for("the echo program's answer", Duration::from_secs(30), || {
            let target = format!("TCP:{node}:{port}");
            async move {
                hostport_e2e::run_command(
                    std::process::Command::new("sh")
                        .args(["-c", &format!("echo ask | timeout 3 socat - {target}")]),
                )
                .ok()
                .filter(|a| !a.is_empty())
            }
        })
        .await;
    assert_eq!(heard, format!("host port {port}\n"));

    // Uninstall: the scenario's objects while the controller runs (finalizers), then the
    // webhook configurations first, then the release and its namespace.
    env.cleanup().await;
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        must(kubectl(&[
            "delete",
            kind,
            "hostport-allocator",
            "--ignore-not-found",
        ]));
    }
    must(kubectl(&[
        "delete",
        "-f",
        &release,
        "--ignore-not-found",
        "--wait=true",
    ]));
    must(kubectl(&["delete", "namespace", SYSTEM, "--wait=true"]));
    for (kind, name) in [
        ("clusterrole", "hostport-controller"),
        ("clusterrole", "hostport-webhook"),
        ("namespace", SYSTEM),
    ] {
        let left = must(kubectl(&[
            "get",
            kind,
            name,
            "--ignore-not-found",
            "-o",
            "name",
        ]));
        assert!(left.trim().is_empty(), "{kind}/{name} left behind: {left}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
