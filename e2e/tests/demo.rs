//! The README's first command: the demo runs to the end and shows what it promises.

use std::process::Command;

#[test]
fn demo_runs_end_to_end() {
    let kubeconfig = std::env::temp_dir().join(format!(
        "hostport-demo-test-{}.kubeconfig",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_hostport-demo"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "hostportclaim/demo/echo-web: Bound — Bound: bound to HostPort port-9000 (port 9000)",
        "hostport/port-9000: port 9000, class sample, claim demo/echo-web, phase Allocated",
        "spec.containers[0].ports: name web, containerPort 8080, hostPort 9000",
        "metadata.annotations[\"port.hostport.rmb938.com/web\"]: \"9000\"",
        "the container sees MY_HOST_PORT=9000",
        "sets hostPort 80 without a claim",
        "pod/demo/app admitted the first time",
        "port.hostport.rmb938.com/web = \"9001\"",
        "Deleting — InUseByPods",
        "port 9000 is free again",
        "Demo complete",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        std::fs::read_to_string(&kubeconfig)
            .expect("kubeconfig written")
            .contains("server: http://127.0.0.1:")
    );
    let _ = std::fs::remove_file(kubeconfig);
}
