//! The binaries' command lines: `--help` documents every flag, `--version` answers, and bad
//! flag combinations fail with a message that names the flag.

use std::process::Command;

fn run(binary: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(binary)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

const CONTROLLER: &str = env!("CARGO_BIN_EXE_hostport-controller-under-test");
const WEBHOOK: &str = env!("CARGO_BIN_EXE_hostport-webhook-under-test");

#[test]
fn help_documents_every_flag_and_version_answers() {
    let (ok, help) = run(CONTROLLER, &["--help"]);
    assert!(ok);
    for flag in [
        "--metrics-address",
        "--leader-election",
        "--leader-election-namespace",
        "--leader-election-id",
        "--lease-duration-seconds",
        "--identity",
        "--concurrency",
        "--class-status-interval-ms",
        "--log-format",
    ] {
        assert!(help.contains(flag), "controller --help lacks {flag}");
    }
    let (ok, help) = run(WEBHOOK, &["--help"]);
    assert!(ok);
    for flag in [
        "--listen",
        "--metrics-address",
        "--tls-cert-file",
        "--tls-key-file",
        "--tls-reload-seconds",
        "--self-signed",
        "--secret",
        "--namespace",
        "--service",
        "--mutating-webhook-configuration",
        "--validating-webhook-configuration",
        "--allocator-user",
        "--api-timeout-ms",
        "--log-format",
    ] {
        assert!(help.contains(flag), "webhook --help lacks {flag}");
    }
    for binary in [CONTROLLER, WEBHOOK] {
        let (ok, version) = run(binary, &["--version"]);
        assert!(
            ok && version.contains(env!("CARGO_PKG_VERSION")),
            "{version}"
        );
    }
}

#[test]
fn webhook_flag_errors_name_the_flag() {
    for (args, expected) in [
        (
            vec![],
            "no serving certificate: set --tls-cert-file and --tls-key-file, or --self-signed",
        ),
        (
            vec!["--tls-cert-file=/x"],
            "--tls-key-file must be set together with --tls-cert-file",
        ),
        (
            vec!["--tls-key-file=/x"],
            "--tls-cert-file must be set together with --tls-key-file",
        ),
        (
            vec!["--tls-cert-file=/x", "--tls-key-file=/y", "--self-signed"],
            "use either --tls-cert-file/--tls-key-file or --self-signed",
        ),
        (
            vec!["--log-format=xml"],
            "invalid value 'xml' for '--log-format",
        ),
    ] {
        let (ok, output) = run(WEBHOOK, &args);
        assert!(!ok, "{args:?} should fail");
        assert!(output.contains(expected), "{args:?}: {output}");
    }
}

#[test]
fn controller_without_a_cluster_says_so() {
    let (ok, output) = run(CONTROLLER, &["--metrics-address=127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        output.contains("no Kubernetes configuration (in-cluster or KUBECONFIG)"),
        "{output}"
    );
}
