//! `kubectl hostport` against the in-process API server, or a real cluster with
//! `E2E_KUBECONFIG`: held ports with their claims, pods and reservations; a class's free
//! ranges; the chain of reasons for a bound claim, a waiting one, a pod and a pod the webhook
//! refused; reserving and releasing as an admin, and refusing to release a claim's port. The
//! commands run through the plugin's library, and once as a binary found by kubectl's own
//! plugin lookup.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use kubectl_hostport::cli::{Args, run};
use serde_json::{Value, json};

/// `kubectl hostport <args>` in the scenario's namespace: the printed text, or the error.
async fn hostport(env: &Env, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["kubectl-hostport"];
    argv.extend(args);
    let parsed = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
    run(&parsed, &env.client, &env.namespace)
        .await
        .map_err(|e| e.to_string())
}

async fn json_of(env: &Env, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let text = hostport(env, &args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn findings(why: &Value) -> Vec<(String, String, String)> {
    why["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (text("subject"), text("state"), text("reason"))
        })
        .collect()
}

fn has(found: &[(String, String, String)], subject_part: &str, state: &str, reason: &str) -> bool {
    found
        .iter()
        .any(|(s, st, r)| s.contains(subject_part) && st == state && r == reason)
}

#[tokio::test]
async fn ports_free_why_reserve_and_release() {
    let env = Env::new("plugin").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("ten", &[(39140, 39149)]).await;
    let full = env.create_class("full", &[(39150, 39150)]).await;
    let ns = env.namespace.clone();
    env.create_claim("web", &class, None).await;
    let web = env.bound("web").await.bound_port().expect("bound");
    env.create_claim("game", &class, None).await;
    let game = env.bound("game").await.bound_port().expect("bound");
    env.create_claim("first", &full, None).await;
    env.bound("first").await;
    env.create_claim("second", &full, None).await;
    env.claim_with_reason("second", "PoolExhausted").await;
    env.create_claim("lost", &env.class_name("missing"), None)
        .await;
    env.claim_with_reason("lost", "ClassNotFound").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-pod", "annotations": {"claim.hostport.rmb938.com/http": "web"}},
        "spec": {"nodeSelector": hostport_e2e::no_node(), "containers": [{"name": "app",
            "image": hostport_e2e::pod_image(), "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");

    // An admin's reservation of the class's last port.
    let reserved = hostport(&env, &["reserve", "39149", "--class", &class])
        .await
        .expect("reserve");
    assert!(reserved.contains("reserved port 39149"), "{reserved}");
    let taken = hostport(&env, &["reserve", &web.to_string(), "--class", &class]).await;
    let taken = taken.expect_err("a claim's port cannot be reserved");
    assert!(taken.contains(&format!("by claim {ns}/web")), "{taken}");

    // ports: the claims' ports with their pod, and the reservation.
    let held = json_of(&env, &["ports", "-A"]).await;
    let row = |port: u16| {
        held.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["port"] == port)
            .cloned()
            .unwrap_or_else(|| panic!("port {port} in {held:#}"))
    };
    assert_eq!(row(web)["claim"], format!("{ns}/web"));
    assert_eq!(row(web)["pods"], json!(["web-pod"]));
    assert_eq!(row(web)["class"], class);
    assert_eq!(row(game)["claim"], format!("{ns}/game"));
    assert_eq!(row(39149)["claim"], Value::Null);
    let narrowed = json_of(&env, &["ports", "-n", &ns]).await;
    assert!(
        narrowed
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r["claim"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{ns}/"))))),
        "-n keeps the namespace's claims only: {narrowed:#}"
    );
    let table = hostport(&env, &["ports"]).await.expect("table");
    assert!(table.starts_with("PORT"), "{table}");
    assert!(
        table.contains("(reserved)") && table.contains("web-pod"),
        "{table}"
    );

    // free: the class's ports less the claims' and the reservation.
    let free = json_of(&env, &["free", &class]).await;
    assert_eq!(
        (free["capacity"].as_u64(), free["free"].as_u64()),
        (Some(10), Some(7))
    );
    assert_eq!(free["ranges"], json!([{"start": 39142, "end": 39148}]));
    let missing = hostport(&env, &["free", "no-such-class"])
        .await
        .expect_err("no class");
    assert!(
        missing.contains("HostPortClass \"no-such-class\" not found"),
        "{missing}"
    );

    // why: a bound claim, one that waits on a full class, one whose class is missing.
    let bound = findings(&json_of(&env, &["why", "claim/web"]).await);
    assert!(has(&bound, "claim", "Ok", "Bound"), "{bound:#?}");
    assert!(has(&bound, "Ready", "Ok", "Bound"), "{bound:#?}");
    assert!(
        has(&bound, "HostPort port-", "Ok", "Allocated"),
        "{bound:#?}"
    );
    assert!(has(&bound, "pod", "Info", "Pending"), "{bound:#?}");
    let waiting = findings(&json_of(&env, &["why", "second"]).await);
    assert!(
        has(&waiting, "claim", "Problem", "PoolExhausted"),
        "{waiting:#?}"
    );
    assert!(
        has(&waiting, "class", "Problem", "NoPortsAvailable"),
        "{waiting:#?}"
    );
    assert!(
        has(
            &waiting,
            "event on HostPortClaim second",
            "Problem",
            "PoolExhausted"
        ),
        "{waiting:#?}"
    );
    let lost = findings(&json_of(&env, &["why", "hpclaim/lost"]).await);
    assert!(has(&lost, "class", "Problem", "ClassNotFound"), "{lost:#?}");
    let table = hostport(&env, &["why", "second"]).await.expect("why");
    assert!(
        table.starts_with(&format!("claim {ns}/second:\nSTATE")),
        "{table}"
    );

    // why a pod: the claims it names, each with its chain.
    let pod = findings(&json_of(&env, &["why", "pod/web-pod"]).await);
    assert!(has(&pod, "pod", "Info", "NamesClaim"), "{pod:#?}");
    assert!(has(&pod, "Ready", "Ok", "Bound"), "{pod:#?}");
    // A pod that never was: what its StatefulSet was told (the Event its controller records).
    let events: Api<Event> = Api::namespaced(env.client.clone(), &ns);
    let denial: Event = serde_json::from_value(json!({
        "metadata": {"name": "game.denied"},
        "eventTime": "2026-12-06T12:00:00.000000Z", "reportingController": "statefulset-controller",
        "reportingInstance": "kube-controller-manager", "action": "Create", "type": "Warning",
        "reason": "FailedCreate",
        "note": "create Pod game-0 in StatefulSet game failed error: admission webhook \"pods.hostport.rmb938.com\" denied the request: pod game-0: class.hostport.rmb938.com/game names HostPortClass \"x\", which does not exist",
        "regarding": {"kind": "StatefulSet", "name": "game", "namespace": ns, "apiVersion": "apps/v1"}
    }))
    .expect("event");
    events
        .create(&PostParams::default(), &denial)
        .await
        .expect("event");
    let never = findings(&json_of(&env, &["why", "pod/game-0"]).await);
    assert!(
        has(&never, "StatefulSet game", "Problem", "FailedCreate"),
        "{never:#?}"
    );
    let unknown = hostport(&env, &["why", "pod/nobody"])
        .await
        .expect_err("no pod");
    assert!(
        unknown.contains("Pod") && unknown.contains("not found"),
        "{unknown}"
    );

    // release: a reservation goes; a claim's port is refused, naming the claim and the fix.
    let refused = hostport(&env, &["release", &game.to_string()])
        .await
        .expect_err("a claim's port");
    assert!(
        refused.contains(&format!("held by claim {ns}/game"))
            && refused.contains("delete hostportclaim game"),
        "{refused}"
    );
    assert!(
        env.host_ports()
            .get_opt(&format!("port-{game}"))
            .await
            .expect("read")
            .is_some()
    );

    // The binary, found by kubectl's plugin lookup as `kubectl hostport`.
    let binary = hostport_e2e::workspace_binary("kubectl-hostport", "kubectl-hostport");
    let kubeconfig = env.kubeconfig_for("plugin", kube_testserver::UserInfo::admin());
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let path = format!(
        "{}:{}",
        binary
            .parent()
            .map(Path::display)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let release = {
        let ns = ns.clone();
        tokio::task::spawn_blocking(move || {
            hostport_e2e::run_command(
                std::process::Command::new(kubectl)
                    .args(["hostport", "release", "39149", "-n", &ns])
                    .env("PATH", path)
                    .env("KUBECONFIG", kubeconfig),
            )
        })
    };
    let released = release
        .await
        .expect("kubectl")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(released.contains("released port 39149"), "{released}");
    env.wait_for("the reservation gone", Duration::from_secs(10), || async {
        env.host_ports()
            .get_opt("port-39149")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let again = hostport(&env, &["release", "39149"])
        .await
        .expect_err("gone");
    assert!(again.contains("is not held"), "{again}");
    env.cleanup().await;
}
