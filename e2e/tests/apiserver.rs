//! The in-process API server behaves like kube-apiserver for what kube-rs, kube-runtime and
//! this project use: CRUD, conflicts, finalizers, status, selectors, watches (bookmarks,
//! 410 Gone, reconnects), CRD validation (pruning, OpenAPI, CEL) and fault injection.
//!
//! Longer than ~500 lines on purpose: one short test per behaviour of the server, each
//! independent; they stay together as the server's conformance list.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use hostport_api::{HostPortClaim, HostPortClaimSpec, HostPortClass};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use kube_testserver::{RequestMatch, TestApiServer, UserInfo, Verb};
use serde_json::json;

fn claim(name: &str, class: &str) -> HostPortClaim {
    HostPortClaim::new(name, HostPortClaimSpec::of_class(class))
}

fn status_code(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn server() -> (TestApiServer, Client) {
    let server = hostport_e2e::start_test_server().await;
    let client = server.client();
    (server, client)
}

#[tokio::test]
async fn crud_conflicts_and_generation() {
    let (_server, client) = server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(client, "default");
    let created = claims
        .create(&PostParams::default(), &claim("echo-web", "sample"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());

    let again = claims
        .create(&PostParams::default(), &claim("echo-web", "sample"))
        .await
        .expect_err("duplicate");
    assert_eq!(status_code(&again), 409);
    assert_eq!(
        message(&again),
        r#"hostportclaims.hostport.rmb938.com "echo-web" already exists"#
    );

    let mut stale = created.clone();
    stale.spec.port = Some(9000);
    let updated = claims
        .replace("echo-web", &PostParams::default(), &stale)
        .await;
    // CEL: spec.port cannot be added after creation.
    let err = updated.expect_err("immutable port");
    assert_eq!(status_code(&err), 422);
    assert!(
        message(&err).contains("port is immutable"),
        "{}",
        message(&err)
    );

    let mut labelled = created.clone();
    labelled.labels_mut().insert("team".into(), "a".into());
    let relabelled = claims
        .replace("echo-web", &PostParams::default(), &labelled)
        .await
        .expect("replace");
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    let stale_write = claims
        .replace("echo-web", &PostParams::default(), &labelled)
        .await
        .expect_err("stale rv");
    assert_eq!(status_code(&stale_write), 409);
    assert!(message(&stale_write).contains("the object has been modified"));

    let got = claims.get("echo-web").await.expect("get");
    assert_eq!(got.labels().get("team").map(String::as_str), Some("a"));
    let missing = claims.get("nope").await.expect_err("missing");
    assert_eq!(status_code(&missing), 404);
    assert_eq!(
        message(&missing),
        r#"hostportclaims.hostport.rmb938.com "nope" not found"#
    );
}

#[tokio::test]
async fn status_subresource_is_written_separately() {
    let (_server, client) = server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(client, "default");
    claims
        .create(&PostParams::default(), &claim("c", "sample"))
        .await
        .expect("create");
    let status = json!({"status": {"phase": "Bound", "port": 9000}});
    let patched = claims
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(patched.status.as_ref().and_then(|s| s.port), Some(9000));
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );

    // Status in a main-resource write is ignored; spec in a status write is ignored.
    let main = json!({"spec": {"hostPortName": "port-9000"}, "status": {"port": 1}});
    let after = claims
        .patch("c", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .expect("patch");
    assert_eq!(after.status.as_ref().and_then(|s| s.port), Some(9000));
    assert_eq!(after.spec.host_port_name.as_deref(), Some("port-9000"));
    assert_eq!(
        after.metadata.generation,
        Some(2),
        "spec change bumps the generation"
    );
    let spec_via_status = json!({"spec": {"hostPortClassName": "other"}});
    let after = claims
        .patch_status(
            "c",
            &PatchParams::default(),
            &Patch::Merge(&spec_via_status),
        )
        .await
        .expect("status patch");
    assert_eq!(after.spec.host_port_class_name, "sample");

    // A status value outside the schema is rejected like on a real cluster.
    let bad = json!({"status": {"port": 70000}});
    let err = claims
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .expect_err("invalid status");
    assert_eq!(status_code(&err), 422);
    assert!(
        message(&err).contains("status.port in body should be less than or equal to 65535"),
        "{}",
        message(&err)
    );
}

#[tokio::test]
async fn finalizers_and_deletion() {
    let (_server, client) = server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(client, "default");
    let mut with_finalizer = claim("held", "sample");
    with_finalizer
        .finalizers_mut()
        .push("hostport.rmb938.com".into());
    let created = claims
        .create(&PostParams::default(), &with_finalizer)
        .await
        .expect("create");

    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = claims
        .delete("held", &wrong_uid)
        .await
        .expect_err("uid precondition");
    assert_eq!(status_code(&err), 409);

    claims
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let deleting = claims.get("held").await.expect("still there");
    assert!(deleting.metadata.deletion_timestamp.is_some());

    let add = json!({"metadata": {"finalizers": ["hostport.rmb938.com", "other"]}});
    let err = claims
        .patch("held", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .expect_err("no new finalizers");
    assert!(
        message(&err).contains("no new finalizers can be added"),
        "{}",
        message(&err)
    );

    let remove = Patch::Json::<()>(json_patch::Patch(vec![
        json_patch::PatchOperation::Test(json_patch::TestOperation {
            path: json_patch::jsonptr::PointerBuf::parse("/metadata/finalizers/0")
                .expect("pointer"),
            value: json!("hostport.rmb938.com"),
        }),
        json_patch::PatchOperation::Remove(json_patch::RemoveOperation {
            path: json_patch::jsonptr::PointerBuf::parse("/metadata/finalizers/0")
                .expect("pointer"),
        }),
    ]));
    claims
        .patch("held", &PatchParams::default(), &remove)
        .await
        .expect("remove finalizer");
    assert_eq!(
        status_code(&claims.get("held").await.expect_err("gone")),
        404
    );

    // A new claim of the same name is a different object.
    let recreated = claims
        .create(&PostParams::default(), &claim("held", "sample"))
        .await
        .expect("recreate");
    assert_ne!(recreated.uid(), created.uid());
}

#[tokio::test]
async fn names_namespaces_and_generate_name() {
    let (_server, client) = server().await;
    let bad: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    let err = bad
        .create(&PostParams::default(), &claim("Bad_Name", "sample"))
        .await
        .expect_err("bad name");
    assert_eq!(status_code(&err), 422);
    assert!(message(&err).contains("metadata.name"), "{}", message(&err));

    let nowhere: Api<HostPortClaim> = Api::namespaced(client.clone(), "missing");
    let err = nowhere
        .create(&PostParams::default(), &claim("a", "sample"))
        .await
        .expect_err("no namespace");
    assert_eq!(status_code(&err), 404);
    assert_eq!(message(&err), r#"namespaces "missing" not found"#);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "echo-"},
        "spec": {"containers": [{"name": "echo", "image": "echo"}]}
    }))
    .expect("pod");
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("generateName");
    assert!(
        created.name_any().starts_with("echo-") && created.name_any().len() == 10,
        "{}",
        created.name_any()
    );

    // Deleting a namespace deletes what is in it, then the namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns"),
        )
        .await
        .expect("namespace");
    let team: Api<HostPortClaim> = Api::namespaced(client.clone(), "team-a");
    team.create(&PostParams::default(), &claim("x", "sample"))
        .await
        .expect("claim in team-a");
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .expect("delete namespace");
    assert_eq!(
        status_code(&namespaces.get("team-a").await.expect_err("namespace gone")),
        404
    );
}

#[tokio::test]
async fn crd_fields_are_pruned_or_rejected_when_strict() {
    let (server, client) = server().await;
    let raw =
        kube::api::DynamicObject::new("c", &kube::api::ApiResource::erase::<HostPortClaim>(&()))
            .data(json!({"spec": {"hostPortClassName": "sample", "unknownField": 1}}));
    let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<HostPortClaim>(&()),
    );
    dynamic
        .create(&PostParams::default(), &raw)
        .await
        .expect("create prunes");
    let stored = server
        .stored(
            "hostport.rmb938.com",
            "hostportclaims",
            Some("default"),
            "c",
        )
        .expect("stored");
    assert!(stored["spec"].get("unknownField").is_none(), "{stored}");

    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..PatchParams::default()
    };
    let err = dynamic
        .patch(
            "c",
            &strict,
            &Patch::Merge(json!({"spec": {"other": true}})),
        )
        .await
        .expect_err("strict");
    assert_eq!(status_code(&err), 400);
    assert!(
        message(&err).contains(r#"unknown field "spec.other""#),
        "{}",
        message(&err)
    );

    let classes: Api<HostPortClass> = Api::all(client);
    let class: HostPortClass = serde_json::from_value(json!({
        "apiVersion": "hostport.rmb938.com/v1alpha1", "kind": "HostPortClass",
        "metadata": {"name": "bad"}, "spec": {"pools": [{"start": 9500, "end": 9000}]}
    }))
    .expect("class");
    let err = classes
        .create(&PostParams::default(), &class)
        .await
        .expect_err("CEL start <= end");
    assert_eq!(status_code(&err), 422);
    assert!(
        message(&err).contains("pool start must be less than or equal to pool end"),
        "{}",
        message(&err)
    );
}

#[tokio::test]
async fn selectors_and_paging() {
    let (_server, client) = server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let mut c = claim(&format!("c{i}"), "sample");
        c.labels_mut().insert(
            "parity".into(),
            if i % 2 == 0 { "even" } else { "odd" }.into(),
        );
        claims
            .create(&PostParams::default(), &c)
            .await
            .expect("create");
    }
    let even = claims
        .list(&ListParams::default().labels("parity=even"))
        .await
        .expect("list");
    assert_eq!(even.items.len(), 4);
    let named = claims
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .expect("list");
    assert_eq!(
        named.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["c3"]
    );

    let mut names = vec![];
    let mut params = ListParams::default().limit(3);
    loop {
        let page = claims.list(&params).await.expect("page");
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);

    let across: Api<HostPortClaim> = Api::all(client);
    assert_eq!(
        across
            .list(&ListParams::default())
            .await
            .expect("all")
            .items
            .len(),
        7
    );
}

/// Waits until the reflector's store satisfies `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn reflector_follows_writes_through_reconnects_and_410() {
    let (server, client) = server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    claims
        .create(&PostParams::default(), &claim("before", "sample"))
        .await
        .expect("create");

    let (reader, writer) = reflector::store::<HostPortClaim>();
    let stream = reflector::reflector(
        writer,
        watcher(
            Api::<HostPortClaim>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .applied_objects()
    .boxed();
    // Errors (the 410) are yielded and the watcher carries on, as in a controller.
    let task = tokio::spawn(stream.for_each(|_| async {}));
    eventually("initial list", || reader.state().len() == 1).await;

    claims
        .create(&PostParams::default(), &claim("live", "sample"))
        .await
        .expect("create");
    eventually("live event", || reader.state().len() == 2).await;

    server.close_watches();
    claims
        .create(&PostParams::default(), &claim("after-close", "sample"))
        .await
        .expect("create");
    eventually("event after reconnect", || reader.state().len() == 3).await;

    // Writes the watcher has not seen, then the history is compacted: resuming gets 410 Gone
    // and the watcher re-lists.
    server.freeze_watches(RequestMatch::resource("hostportclaims"));
    claims
        .delete("before", &DeleteParams::default())
        .await
        .expect("delete");
    claims
        .create(&PostParams::default(), &claim("after-compact", "sample"))
        .await
        .expect("create");
    server.compact();
    server.close_watches();
    server.thaw_watches();
    eventually("relist after 410", || {
        let mut names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        names.sort();
        names == ["after-close", "after-compact", "live"]
    })
    .await;
    assert!(
        server.count(&RequestMatch::new(Verb::List, "hostportclaims")) >= 2,
        "the 410 forced a re-list"
    );
    task.abort();
}

#[tokio::test]
async fn frozen_watch_is_a_stale_cache_until_thawed() {
    let (server, _admin) = server().await;
    let stale_user = UserInfo::service_account("hostport-system", "stale");
    let stale = server.client_as(stale_user.clone());
    let admin: Api<HostPortClaim> = Api::namespaced(server.client(), "default");

    let (reader, writer) = reflector::store::<HostPortClaim>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<HostPortClaim>::all(stale), watcher::Config::default()),
    )
    .applied_objects()
    .boxed();
    let task = tokio::spawn(async move {
        let _ = stream.try_for_each(|_| async { Ok(()) }).await;
    });
    eventually("initial list", || server.watch_count() == 1).await;
    server.freeze_watches(RequestMatch::resource("hostportclaims").by_user(&stale_user.username));
    admin
        .create(&PostParams::default(), &claim("unseen", "sample"))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(reader.state().is_empty(), "a frozen watch delivers nothing");
    server.thaw_watches();
    eventually("held events delivered", || reader.state().len() == 1).await;
    task.abort();
}

#[tokio::test]
async fn bookmarks_and_streaming_lists() {
    let server = TestApiServer::start_with(kube_testserver::Options {
        bookmark_interval: Duration::from_millis(50),
        ..hostport_e2e::test_server_options()
    })
    .await
    .expect("start");
    let client = server.client();
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    claims
        .create(&PostParams::default(), &claim("a", "sample"))
        .await
        .expect("create");
    // sendInitialEvents=true: objects as ADDED, then the initial-events-end bookmark.
    let config = watcher::Config::default().streaming_lists();
    let events: Vec<_> = watcher(Api::<HostPortClaim>::all(client.clone()), config)
        .take(3)
        .try_collect()
        .await
        .expect("stream");
    assert!(matches!(events[0], watcher::Event::Init));
    assert!(matches!(&events[1], watcher::Event::InitApply(c) if c.name_any() == "a"));
    assert!(matches!(events[2], watcher::Event::InitDone));
    assert_eq!(
        server.count(&RequestMatch::new(Verb::List, "hostportclaims")),
        0,
        "no list call"
    );

    // Plain watch with bookmarks: a bookmark arrives with no writes.
    let params = kube::api::WatchParams {
        bookmarks: true,
        ..Default::default()
    };
    let mut stream = claims.watch(&params, "0").await.expect("watch").boxed();
    let mut saw_bookmark = false;
    for _ in 0..3 {
        if let Some(Ok(kube::api::WatchEvent::Bookmark(_))) = stream.next().await {
            saw_bookmark = true;
            break;
        }
    }
    assert!(saw_bookmark);
}

#[tokio::test]
async fn injected_faults_and_counters() {
    let (server, client) = server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(client, "default");
    server.fail_next(RequestMatch::new(Verb::Create, "hostportclaims"), 1, 500);
    let err = claims
        .create(&PostParams::default(), &claim("a", "sample"))
        .await
        .expect_err("injected");
    assert_eq!(status_code(&err), 500);
    claims
        .create(&PostParams::default(), &claim("a", "sample"))
        .await
        .expect("second try passes");
    assert_eq!(
        server.count(&RequestMatch::new(Verb::Create, "hostportclaims")),
        2
    );

    server.add_latency(
        RequestMatch::new(Verb::Get, "hostportclaims"),
        Duration::from_millis(200),
    );
    let started = std::time::Instant::now();
    claims.get("a").await.expect("get");
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.clear_faults();
}

#[tokio::test]
async fn events_and_leases_are_served() {
    let (_server, client) = server().await;
    let recorder = kube::runtime::events::Recorder::new(client.clone(), "hostport-e2e".into());
    let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), "default");
    let c = claims
        .create(&PostParams::default(), &claim("a", "sample"))
        .await
        .expect("create");
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Normal,
                reason: "Bound".into(),
                note: Some("bound to port 9000".into()),
                action: "Binding".into(),
                secondary: None,
            },
            &c.object_ref(&()),
        )
        .await
        .expect("event");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let listed = events.list(&ListParams::default()).await.expect("events");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].reason.as_deref(), Some("Bound"));

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "default");
    let lease = serde_json::from_value(
        json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
    )
    .expect("lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("lease");
}

#[tokio::test]
async fn server_owned_metadata_is_immutable() {
    let (_server, client) = server().await;
    let claims: Api<HostPortClaim> = Api::namespaced(client, "default");
    let created = claims
        .create(&PostParams::default(), &claim("c", "sample"))
        .await
        .expect("create");
    let mut other_uid = created.clone();
    other_uid.metadata.uid = Some("another".into());
    let err = claims
        .replace("c", &PostParams::default(), &other_uid)
        .await
        .expect_err("uid change");
    assert_eq!(status_code(&err), 422);
    assert!(
        message(&err).contains("metadata.uid: Invalid value: \"another\": field is immutable"),
        "{}",
        message(&err)
    );
    let mut other_time = created.clone();
    other_time.metadata.creation_timestamp = None;
    let kept = claims
        .replace("c", &PostParams::default(), &other_time)
        .await
        .expect("replace");
    assert_eq!(
        kept.metadata.creation_timestamp, created.metadata.creation_timestamp,
        "creationTimestamp is the server's"
    );
}

/// A metadata-only list carries each object's metadata, not its spec (what the controller's
/// release check relies on to stay small with big pods), in pages.
#[tokio::test]
async fn metadata_only_lists_carry_metadata_in_pages() {
    let (_server, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("big-{i}"), "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x", "command": ["x".repeat(100_000)]}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod");
    }
    let page = pods
        .list_metadata(&ListParams::default().limit(2))
        .await
        .expect("metadata list");
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[0].name_any(), "big-0");
    assert_eq!(
        page.items[0].annotations().get("a").map(String::as_str),
        Some("b")
    );
    assert!(page.metadata.continue_.is_some_and(|c| !c.is_empty()));
    let raw: serde_json::Value = client
        .request(
            http::Request::get("/api/v1/namespaces/default/pods")
                .header(
                    "accept",
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                )
                .body(vec![])
                .expect("request"),
        )
        .await
        .expect("raw list");
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert!(raw["items"][0].get("spec").is_none(), "{}", raw["items"][0]);
}
