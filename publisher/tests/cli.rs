//! The `hostport-publisher` command line: what `--render`, `--dry-run` and bad flags do.

mod api;

use std::process::Command;

use kube_testserver::UserInfo;

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
        (
            vec!["--mode", "router"],
            "--mode router needs --node-name (or NODE_NAME",
        ),
        (
            vec!["--mode", "router", "--node-name", "n1"],
            "--mode router needs --node-ip (or NODE_IP",
        ),
        (
            vec![
                "--mode",
                "router",
                "--node-name",
                "n1",
                "--node-ip",
                "192.0.2.2",
                "--service-namespace-selector",
                "games",
            ],
            "\"games\" is not key=value (e.g. hostport.rmb938.com/publish=true)",
        ),
        (
            vec!["--mode", "router", "--service-lifetime-seconds", "60"],
            "60 is not in 120..=86400",
        ),
        (
            vec!["--mode", "router", "--node-ip", "198.51.100.300"],
            "invalid value '198.51.100.300' for '--node-ip",
        ),
    ] {
        let out = Command::new(BINARY)
            .args(&args)
            .env_remove("NODE_NAME")
            .env_remove("NODE_IP")
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
    let server = api::server().await;
    let client = server.client();
    api::class(&client, "public", (9000, 9010), true).await;
    api::bound_claim(&client, "game", "public", 9005).await;
    api::running_pod(&client, "game", 9005, "UDP", "198.51.100.7").await;

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
