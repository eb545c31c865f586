//! The status conventions the ecosystem's tools read: `status.observedGeneration` and a
//! `Ready` condition (so `kubectl wait --for=condition=Ready`, Flux's kstatus and Argo CD
//! can tell a Pending claim from a done one), and the printer columns `kubectl get` shows.
//! Against the in-process API server, or a real cluster with `E2E_KUBECONFIG`.

use std::time::Duration;

use hostport_api::conditions::{self, Condition, types};
use hostport_api::{HostPortClass, HostPortClassSpec};
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

fn condition(conditions: &[Condition], type_: &str) -> Option<(String, String)> {
    conditions::find(conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

fn ready_of(claim: &hostport_api::HostPortClaim) -> Option<(String, String)> {
    condition(&claim.status.as_ref()?.conditions, types::READY)
}

fn pair(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.into(), reason.into()))
}

#[tokio::test]
async fn claims_and_classes_say_when_they_are_ready_and_which_generation_they_saw() {
    let env = Env::new("ready").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = env.create_class("two", &[(39100, 39101)]).await;
    env.create_claim("first", &class, None).await;

    // What a GitOps pipeline or a script waits on.
    let waited = env
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "hostportclaim/first",
            "--timeout=30s",
        ])
        .await;
    assert!(waited.is_ok(), "kubectl wait: {waited:?}");
    let claim = env.claims().get("first").await.expect("claim");
    assert_eq!(ready_of(&claim), pair("True", "Bound"));
    let status = claim.status.as_ref().expect("status");
    assert_eq!(
        status.observed_generation, claim.metadata.generation,
        "the status describes the claim as it is now (spec.hostPortName included)"
    );
    let ready = conditions::find(&status.conditions, types::READY).expect("Ready");
    assert_eq!(ready.message, "bound to HostPort port-39100 (port 39100)");

    let host_port = env.host_ports().get("port-39100").await.expect("HostPort");
    assert_eq!(
        host_port
            .status
            .as_ref()
            .and_then(|s| s.observed_generation),
        host_port.metadata.generation
    );

    // The class: Ready while ports are free, its pools in the status for `kubectl get`.
    let classes = env.classes();
    let class_status = env
        .wait_for("class Ready", Duration::from_secs(15), || {
            let classes = classes.clone();
            let class = class.clone();
            async move {
                let found = classes.get(&class).await.ok()?;
                let status = found.status.clone()?;
                (condition(&status.conditions, types::READY) == pair("True", "PortsAvailable")
                    && status.observed_generation == found.metadata.generation)
                    .then_some(status)
            }
        })
        .await;
    assert_eq!(class_status.pools.as_deref(), Some("39100-39101"));

    // The second takes the last port; the third waits, and says why in Ready too.
    env.create_claim("second", &class, None).await;
    env.bound("second").await;
    env.create_claim("third", &class, None).await;
    let third = env.claim_with_reason("third", "PoolExhausted").await;
    assert_eq!(ready_of(&third), pair("False", "PoolExhausted"));
    env.wait_for("class not Ready", Duration::from_secs(15), || {
        let classes = classes.clone();
        let class = class.clone();
        async move {
            let status = classes.get(&class).await.ok()?.status?;
            (condition(&status.conditions, types::READY) == pair("False", "NoPortsAvailable"))
                .then_some(())
        }
    })
    .await;
    let timed_out = env
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "hostportclaim/third",
            "--timeout=1s",
        ])
        .await;
    assert!(timed_out.is_err(), "a Pending claim is not Ready");

    // Printer columns, as the API server prints them (server-side Table).
    let table = env
        .kubectl(&["get", "hostportclaims", "-o", "wide"])
        .await
        .expect("kubectl get");
    let header = table.lines().next().unwrap_or_default();
    for column in ["CLASS", "PORTS", "PHASE", "REASON", "HOSTPORT", "POD"] {
        assert!(header.contains(column), "{column} in {header:?}");
    }
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {table}"))
            .to_owned()
    };
    assert!(row("first").contains("Bound"), "{table}");
    assert!(row("third").contains("PoolExhausted"), "{table}");
    let classes_table = env
        .kubectl(&["get", "hostportclass", &class])
        .await
        .expect("kubectl get class");
    let header = classes_table.lines().next().unwrap_or_default();
    assert!(
        header.contains("POOLS") && header.contains("READY"),
        "{header}"
    );
    assert!(classes_table.contains("39100-39101"), "{classes_table}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_claim_of_a_class_that_publishes_on_a_router_waits_for_it_to_be_ready() {
    let env = Env::new("ready-router").await;
    let _controller = env.start_controller(RunOptions::default());
    let name = env.class_name("routed");
    let mut class = HostPortClass::new(&name, HostPortClassSpec::with_pools(&[(39110, 39111)]));
    class.spec.publish =
        Some(serde_json::from_value(json!({"router": {}})).expect("publish on the router"));
    env.classes()
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    env.create_claim("routed", &name, None).await;
    let claims = env.claims();
    let claim = env
        .wait_for(
            "Ready waiting for the router",
            Duration::from_secs(30),
            || {
                let claims = claims.clone();
                async move {
                    let claim = claims.get("routed").await.ok()?;
                    (ready_of(&claim) == pair("False", "WaitingForPublish")).then_some(claim)
                }
            },
        )
        .await;
    assert!(claim.bound_port().is_some(), "Bound meanwhile");

    // The admin stops publishing the class: the claim is Ready on being Bound alone.
    let mut unpublished = env.classes().get(&name).await.expect("class");
    unpublished.spec.publish = None;
    unpublished.metadata.managed_fields = None;
    env.classes()
        .replace(&name, &PostParams::default(), &unpublished)
        .await
        .expect("class without publish");
    env.wait_for("Ready once not published", Duration::from_secs(30), || {
        let claims = claims.clone();
        async move {
            let claim = claims.get("routed").await.ok()?;
            (ready_of(&claim) == pair("True", "Bound")).then_some(claim.name_any())
        }
    })
    .await;
    env.cleanup().await;
}
