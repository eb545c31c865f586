//! The `hostport-publisher` command line: what `--render`, `--dry-run` and bad flags do.

use std::process::Command;

use hostport_api::{HostPortClaim, HostPortClass};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_testserver::UserInfo;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_hostport-publisher");

#[test]
fn cleanup_dry_run_prints_what_it_would_remove_and_touches_nothing() {
    let out = Command::new(BINARY)
        .args(["--cleanup", "--dry-run", "--backend", "nft"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "table inet hostport\ndelete table inet hostport"
    );
    let out = Command::new(BINARY)
        .args([
            "--cleanup",
            "--dry-run",
            "--backend",
            "iptables",
            "--iptables",
            "iptables-legacy",
        ])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("iptables-legacy -w -t nat -X HOSTPORT-PREROUTING")
    );
}

#[test]
fn bad_flags_say_what_to_fix() {
    for (args, expected) in [
        (vec!["--deny-ports", "22,ssh"], "\"ssh\" is not a port"),
        (
            vec!["--external-interface", "eth0; rm", "--cleanup", "--dry-run"],
            "is not an interface name",
        ),
        (
            vec![
                "--mode",
                "node",
                "--cleanup",
                "--dry-run",
                "--backend",
                "nft",
            ],
            "",
        ),
    ] {
        let out = Command::new(BINARY)
            .args(&args)
            .env_remove("NODE_NAME")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if expected.is_empty() {
            assert!(
                stderr.contains("--mode node needs --node-name"),
                "{args:?}: {stderr}"
            );
        } else {
            assert!(
                !out.status.success() && stderr.contains(expected),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn render_prints_the_ruleset_the_api_asks_for() {
    let server = kube_testserver::TestApiServer::start_with(kube_testserver::Options {
        crds_dir: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds").into()),
        ..Default::default()
    })
    .await
    .expect("API server");
    let client = server.client();
    let post = PostParams::default();
    let class: HostPortClass = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
        "metadata": {"name": "public"},
        "spec": {"pools": [{"start": 9000, "end": 9010}], "publish": {"edge": true}}
    }))
    .expect("class");
    Api::<HostPortClass>::all(client.clone())
        .create(&post, &class)
        .await
        .expect("class");
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    let claim: HostPortClaim = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClaim",
        "metadata": {"name": "game"},
        "spec": {"hostPortClassName": "public", "hostPortName": "port-9005"}
    }))
    .expect("claim");
    claims.create(&post, &claim).await.expect("claim");
    claims
        .patch_status(
            "game",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound", "port": 9005}})),
        )
        .await
        .expect("bound");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "game", "annotations": {"claim.hostport.rmb938.com/game": "game"}},
        "spec": {"containers": [{"name": "game", "image": "game",
            "ports": [{"name": "game", "containerPort": 7777, "hostPort": 9005, "protocol": "UDP"}]}]}
    }))
    .expect("pod");
    pods.create(&post, &pod).await.expect("pod");
    pods.patch_status(
        "game",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "hostIP": "198.51.100.7"}})),
    )
    .await
    .expect("running");

    let kubeconfig =
        std::env::temp_dir().join(format!("hpub-render-{}.kubeconfig", std::process::id()));
    let yaml = serde_saphyr::to_string(&server.kubeconfig(UserInfo::service_account(
        "hostport-system",
        "hostport-publisher",
    )))
    .expect("kubeconfig");
    std::fs::write(&kubeconfig, yaml).expect("write");
    let output = tokio::process::Command::new(BINARY)
        .args([
            "--render",
            "--backend",
            "nft",
            "--external-interface",
            "wan0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .expect("runs");
    let _ = std::fs::remove_file(&kubeconfig);
    let rendered = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        rendered.contains("9005 : 198.51.100.7 . 9005"),
        "{rendered}"
    );
    assert!(rendered.contains("iifname \"wan0\""), "{rendered}");
    assert!(
        rendered.starts_with("table inet hostport\ndelete table inet hostport\n"),
        "{rendered}"
    );
}
