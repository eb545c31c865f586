//! Class access control: `spec.namespaceSelector` (which namespaces may claim from a class)
//! and `spec.maxClaimsPerNamespace`, enforced by the webhook at creation and by the allocator
//! before binding (for claims that got past a webhook that was down or not installed).

use std::time::Duration;

use hostport_api::conditions::reasons;
use hostport_api::selector::LabelSelector;
use hostport_api::{HostPortClaim, HostPortClaimSpec, HostPortClass, HostPortClassSpec};
use hostport_controller::RunOptions;
use hostport_e2e::harness::Env;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const TEAM: &str = "hostport-e2e/team";

/// A class for team `a` only, with at most `max` claims per namespace.
async fn team_class(env: &Env, pools: (i32, i32), max: i32) -> String {
    let name = env.class_name("team");
    let class = HostPortClass::new(
        &name,
        HostPortClassSpec {
            namespace_selector: Some(LabelSelector {
                match_labels: [(TEAM.to_owned(), "a".to_owned())].into(),
                ..LabelSelector::default()
            }),
            max_claims_per_namespace: Some(max),
            ..HostPortClassSpec::with_pools(&[pools])
        },
    );
    env.classes()
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    name
}

async fn label_namespace(env: &Env, team: &str) {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &env.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {TEAM: team}}})),
        )
        .await
        .expect("label namespace");
}

fn claim(name: &str, class: &str) -> HostPortClaim {
    HostPortClaim::new(name, HostPortClaimSpec::of_class(class))
}

/// A 403 whose message says `text` (the reason is the webhook's metric label; kube-apiserver
/// reports every webhook denial as `Forbidden`).
fn denied_with(result: Result<HostPortClaim, kube::Error>, text: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains(text), "{}", status.message);
        }
        other => panic!("expected a denial saying {text:?}, got {other:?}"),
    }
}

async fn pending_with(env: &Env, name: &str, reason: &str) -> String {
    env.wait_for(
        &format!("claim {name} Pending on {reason}"),
        Duration::from_secs(30),
        || async {
            let claim = env.claims().get(name).await.ok()?;
            let bound = claim.bound_condition()?;
            (bound.reason == reason).then(|| bound.message.clone())
        },
    )
    .await
}

#[tokio::test]
async fn the_webhook_denies_claims_outside_the_class_rules() {
    let env = Env::new("access-webhook").await;
    let _webhook = env.start_webhook().await;
    let _controller = env.start_controller(RunOptions::default());
    let class = team_class(&env, (14000, 14009), 1).await;
    let claims = env.claims();
    label_namespace(&env, "b").await;
    denied_with(
        claims
            .create(&PostParams::default(), &claim("outsider", &class))
            .await,
        "is not selected by the namespaceSelector",
    );
    label_namespace(&env, "a").await;
    claims
        .create(&PostParams::default(), &claim("one", &class))
        .await
        .expect("a selected namespace may claim");
    assert!(env.bound("one").await.bound_port().is_some());
    // The class status names who holds its ports.
    env.wait_for(
        "the class's topNamespaces",
        Duration::from_secs(30),
        || async {
            let status = env.classes().get(&class).await.ok()?.status?;
            (status.top_namespaces?
                == vec![hostport_api::NamespaceAllocation {
                    namespace: env.namespace.clone(),
                    allocated: 1,
                }])
            .then_some(())
        },
    )
    .await;
    denied_with(
        claims
            .create(&PostParams::default(), &claim("two", &class))
            .await,
        "maxClaimsPerNamespace is 1",
    );
    env.cleanup().await;
}

/// Without the webhook (down, or never installed) the allocator applies the same rules: it
/// leaves such claims Pending with the reason, and binds the one over the limit once a place
/// frees.
#[tokio::test]
async fn the_allocator_refuses_claims_that_got_past() {
    // No webhook is started: the scenario's namespace has none on a real cluster either.
    let env = Env::new("access-controller").await;
    let _controller = env.start_controller(RunOptions::default());
    let class = team_class(&env, (14010, 14019), 1).await;
    let claims = env.claims();
    label_namespace(&env, "b").await;
    claims
        .create(&PostParams::default(), &claim("outsider", &class))
        .await
        .expect("no webhook");
    let message = pending_with(&env, "outsider", reasons::NAMESPACE_NOT_ALLOWED).await;
    assert!(message.contains(&format!("{TEAM}=a")), "{message}");
    claims
        .delete("outsider", &DeleteParams::default())
        .await
        .expect("delete");

    label_namespace(&env, "a").await;
    for name in ["one", "two"] {
        claims
            .create(&PostParams::default(), &claim(name, &class))
            .await
            .expect("no webhook");
    }
    // One of them binds, the other waits for the place.
    let (bound, waiting) = env
        .wait_for("one claim Bound", Duration::from_secs(30), || async {
            let one = claims.get("one").await.ok()?;
            let two = claims.get("two").await.ok()?;
            match (one.bound_port(), two.bound_port()) {
                (Some(_), None) => Some(("one", "two")),
                (None, Some(_)) => Some(("two", "one")),
                _ => None,
            }
        })
        .await;
    pending_with(&env, waiting, reasons::NAMESPACE_LIMIT_REACHED).await;
    assert!(
        claims
            .get(waiting)
            .await
            .expect("claim")
            .bound_port()
            .is_none(),
        "never both"
    );
    claims
        .delete(bound, &DeleteParams::default())
        .await
        .expect("delete");
    assert!(env.bound(waiting).await.bound_port().is_some());
    env.cleanup().await;
}

/// A selector requirement without values where it needs them is refused by the API server
/// (the CRD's CEL rule), with the fix.
#[tokio::test]
async fn a_malformed_namespace_selector_is_refused() {
    let env = Env::new("access-cel").await;
    let class: HostPortClass = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
        "metadata": {"name": env.class_name("bad")},
        "spec": {"pools": [{"start": 14020, "end": 14029}],
                 "namespaceSelector": {"matchExpressions": [{"key": TEAM, "operator": "In"}]}}
    }))
    .expect("class");
    match env.classes().create(&PostParams::default(), &class).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status
                    .message
                    .contains("values must list at least one value for In and NotIn"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
    env.cleanup().await;
}
