//! Every example in `config/samples/` (the README's examples) applies to the API server and
//! does what the README says, with the real controller and webhook.

use hostport_api::HostPortClaim;
use hostport_e2e::workloads::{PodName, pod_from_template};
use hostport_e2e::{local, samples};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples");

#[tokio::test]
async fn every_sample_applies_and_works() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The samples use fixed names (namespace demo, class sample): a server of their own.
    let server = hostport_e2e::start_test_server().await;
    let admin = server.client();
    let _stack = local::start_stack(&server)
        .await
        .expect("controller and webhook");

    let mut files: Vec<String> = std::fs::read_dir(SAMPLES)
        .expect("samples")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    // Namespace, class, claims, then pods, as the README orders them.
    files.sort_by_key(|f| {
        let text = std::fs::read_to_string(format!("{SAMPLES}/{f}")).unwrap_or_default();
        match f.as_str() {
            "namespace.yaml" => 0,
            "hostportclass.yaml" => 1,
            // Its class first, then its claim, then its pod: one file.
            "passthrough.yaml"
            | "media-blocks.yaml"
            | "host-network.yaml"
            | "public-address.yaml" => 3,
            _ if text.contains("kind: Pod") => 3,
            _ => 2,
        }
    });
    for file in &files {
        let yaml = std::fs::read_to_string(format!("{SAMPLES}/{file}")).expect("read");
        // Each file applies the first time: a pod's admission waits for its claim to bind.
        samples::apply_yaml(&admin, file, &yaml)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let claims: Api<HostPortClaim> = Api::namespaced(admin.clone(), "demo");
    // No pod waits for the static claim: it binds on its own time.
    let mut minecraft = claims.get("minecraft").await.expect("static claim");
    for _ in 0..200 {
        if minecraft.bound_port().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        minecraft = claims.get("minecraft").await.expect("static claim");
    }
    assert_eq!(
        minecraft.bound_port(),
        Some(9250),
        "the static claim gets exactly its port"
    );
    let game = claims
        .get("game")
        .await
        .expect("game claim")
        .bound_port()
        .expect("bound");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "demo");
    let server_pod = pods.get("game-server").await.expect("game pod");
    let ports = server_pod.spec.expect("spec").containers[0]
        .ports
        .clone()
        .expect("ports");
    assert!(
        ports.iter().all(|p| p.host_port == Some(i32::from(game))),
        "TCP and UDP share the claim's port: {ports:?}"
    );
    // passthrough.yaml: the container port is the claim's port, and the probe follows it.
    let srcds = claims
        .get("srcds")
        .await
        .expect("passthrough claim")
        .bound_port()
        .map(i32::from)
        .expect("bound");
    let container = pods
        .get("srcds")
        .await
        .expect("srcds pod")
        .spec
        .expect("spec")
        .containers[0]
        .clone();
    let ports = container.ports.clone().expect("ports");
    assert!(
        ports
            .iter()
            .all(|p| p.container_port == srcds && p.host_port == Some(srcds)),
        "{ports:?}"
    );
    assert_eq!(
        container
            .readiness_probe
            .and_then(|p| p.tcp_socket)
            .map(|t| t.port),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(srcds))
    );
    // media-blocks.yaml: the pod has all 10 ports of the block, from an even base.
    let sfu = pods.get("sfu").await.expect("sfu pod");
    let base = sfu
        .annotations()
        .get("port.hostport.rmb938.com/rtp")
        .and_then(|p| p.parse::<i32>().ok())
        .expect("base");
    assert_eq!(base % 2, 0);
    assert_eq!(
        sfu.annotations()
            .get("count.hostport.rmb938.com/rtp")
            .map(String::as_str),
        Some("10")
    );
    let ports: Vec<(i32, Option<i32>)> = sfu.spec.expect("spec").containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.container_port, p.host_port))
        .collect();
    assert_eq!(
        ports,
        (0..10)
            .map(|i| (10000 + i, Some(base + i)))
            .collect::<Vec<_>>()
    );
    // host-network.yaml: containerPort = hostPort = the port of the claim made for it.
    let db = pods.get("db").await.expect("db pod");
    let port = &db.spec.expect("spec").containers[0]
        .ports
        .clone()
        .expect("ports")[0];
    assert_eq!(Some(port.container_port), port.host_port);
    assert!((9900..=9949).contains(&port.container_port), "{port:?}");
    let echo = pods.get("echo").await.expect("echo pod");
    assert!(
        echo.metadata
            .annotations
            .expect("annotations")
            .contains_key("port.hostport.rmb938.com/web")
    );
    // public-address.yaml: admitted with its port; the public address comes from a
    // publisher (e2e/tests/on_a_node reads it through the volume on a real node).
    let lobby = pods.get("lobby").await.expect("lobby pod");
    let lobby_port = lobby
        .annotations()
        .get("port.hostport.rmb938.com/lobby")
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    assert!((9950..=9999).contains(&lobby_port), "{lobby_port}");
    let quota: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(admin.clone(), "demo");
    quota
        .get("host-ports")
        .await
        .expect("the quota sample is stored");

    // game-servers-statefulset.yaml and web-deployment.yaml: no StatefulSet or ReplicaSet
    // controller runs here, so one replica of each is made as those controllers would.
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "demo");
    let arena = sets.get("arena").await.expect("StatefulSet sample");
    let arena_uid = arena.metadata.uid.clone().unwrap_or_default();
    let arena_0 = pod_from_template(
        &arena.spec.expect("spec").template,
        "demo",
        PodName::Name("arena-0"),
        ("apps/v1", "StatefulSet", "arena", &arena_uid),
    );
    let arena_0 = pods
        .create(&Default::default(), &arena_0)
        .await
        .expect("arena-0 admitted");
    let ports: Vec<Option<i32>> = arena_0.spec.expect("spec").containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| p.host_port)
        .collect();
    assert!(ports.iter().all(Option::is_some), "{ports:?}");
    assert_eq!(ports[0], ports[1], "TCP and UDP of 7777 share a port");
    assert_ne!(ports[0], ports[2], "the query port has its own");
    claims
        .get("arena-0-game-tcp")
        .await
        .expect("the claim the webhook made for arena-0");
    let web: Api<Deployment> = Api::namespaced(admin.clone(), "demo");
    let web = web.get("web").await.expect("Deployment sample");
    let replica = pod_from_template(
        &web.spec.expect("spec").template,
        "demo",
        PodName::GenerateName("web-5d8f9c-"),
        ("apps/v1", "ReplicaSet", "web-5d8f9c", "rs-uid"),
    );
    let replica = pods
        .create(&Default::default(), &replica)
        .await
        .expect("web replica admitted");
    assert!(
        replica
            .annotations()
            .get("claim.hostport.rmb938.com/http")
            .is_some_and(|c| c.starts_with("web-5d8f9c-http-")),
        "{:?}",
        replica.annotations()
    );

    // team-class.yaml: namespace demo (by its kubernetes.io/metadata.name label) only.
    let team_claim = |name: &str| {
        HostPortClaim::new(name, hostport_api::HostPortClaimSpec::of_class("team-demo"))
    };
    claims
        .create(&Default::default(), &team_claim("team"))
        .await
        .expect("demo may claim from team-demo");
    let elsewhere = Api::<HostPortClaim>::namespaced(admin, "default")
        .create(&Default::default(), &team_claim("team"))
        .await;
    assert!(
        matches!(&elsewhere, Err(kube::Error::Api(s)) if s.message.contains("is not selected by the namespaceSelector")),
        "{elsewhere:?}"
    );
}
