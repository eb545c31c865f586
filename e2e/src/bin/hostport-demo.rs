//! The demo: an in-process Kubernetes API server, the real controller and the real webhook
//! (TLS, registered like on a cluster), and `config/samples/` applied to them — a class, a
//! claim bound to a port, a pod given that port, then everything released.
//!
//! ```sh
//! cargo run --release -p hostport-e2e --bin hostport-demo
//! cargo run --release -p hostport-e2e --bin hostport-demo -- --keep-running   # then use kubectl
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use hostport_e2e::harness::controller_user;
use hostport_e2e::workloads::{PodName, pod_from_template};
use hostport_e2e::{local, samples};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use kube_testserver::{TestApiServer, UserInfo};
use serde_json::json;

/// Runs hostport-allocator end to end against an in-process API server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory of the sample manifests.
    #[arg(long, default_value_os_t = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples"))]
    samples: PathBuf,
    /// Where to write a kubeconfig for the server.
    #[arg(long, default_value = "hostport-demo.kubeconfig")]
    kubeconfig: PathBuf,
    /// Keep the objects and the server running after the demo (ctrl-c to stop), to explore
    /// with kubectl.
    #[arg(long)]
    keep_running: bool,
}

const TIMEOUT: Duration = Duration::from_secs(20);

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn apply_samples(
    client: &Client,
    dir: &std::path::Path,
    files: &[&str],
) -> anyhow::Result<()> {
    for file in files {
        let path = dir.join(file);
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for object in samples::apply_yaml(client, file, &yaml).await? {
            let kind = object
                .types
                .as_ref()
                .map(|t| t.kind.to_lowercase())
                .unwrap_or_default();
            let name = match object.namespace() {
                Some(ns) => format!("{ns}/{}", object.name_any()),
                None => object.name_any(),
            };
            println!("   {kind}/{name} created ({file})");
        }
    }
    Ok(())
}

fn describe_claim(claim: &HostPortClaim) -> String {
    let phase = claim.phase().as_str();
    let condition = claim
        .bound_condition()
        .map(|c| format!(" — {}: {}", c.reason, c.message))
        .unwrap_or_default();
    format!("{phase}{condition}")
}

async fn demo(args: &Args) -> anyhow::Result<()> {
    let server = TestApiServer::start_with(hostport_e2e::test_server_options())
        .await
        .context("starting the in-process API server")?;
    let admin = server.client();
    let kubeconfig =
        serde_saphyr::to_string(&server.kubeconfig(UserInfo::admin())).context("kubeconfig")?;
    std::fs::write(&args.kubeconfig, kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
    let stack = local::start_stack(&server)
        .await
        .context("starting the controller and the webhook")?;
    let webhook = &stack.webhook;

    println!("hostport-allocator demo");
    println!("   Kubernetes API server (in-process): {}", server.url());
    println!("   kubeconfig:  {}", args.kubeconfig.display());
    println!("   controller:  running as {}", controller_user().username);
    println!(
        "   webhook:     {} (TLS, registered as hostport-allocator webhook configurations)",
        webhook.url
    );

    println!("\n1. Apply {}", args.samples.display());
    apply_samples(
        &admin,
        &args.samples,
        &["namespace.yaml", "hostportclass.yaml", "hostportclaim.yaml"],
    )
    .await?;

    let claims: Api<HostPortClaim> = Api::namespaced(admin.clone(), "demo");
    let first = claims.get("echo-web").await?;
    println!(
        "   the claim webhook added the finalizer: {:?}",
        first.finalizers()
    );

    println!("\n2. The controller binds the claim");
    println!("   hostportclaim/demo/echo-web: {}", describe_claim(&first));
    let bound = wait_for("the claim to be Bound", || {
        let claims = claims.clone();
        async move {
            claims
                .get("echo-web")
                .await
                .ok()
                .filter(|c| c.bound_port().is_some())
        }
    })
    .await?;
    let port = bound.bound_port().context("bound port")?;
    println!("   hostportclaim/demo/echo-web: {}", describe_claim(&bound));
    let host_port_name = bound
        .bound_host_port_name()
        .context("the bound claim names no HostPort")?
        .into_owned();
    let host_port = Api::<HostPort>::all(admin.clone())
        .get(&host_port_name)
        .await?;
    println!(
        "   hostport/{host_port_name}: port {}, class {}, claim {}, phase {}",
        host_port.port().map(|p| p.to_string()).unwrap_or_default(),
        host_port.spec.host_port_class_name,
        host_port
            .claim_key()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .unwrap_or_default(),
        host_port
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| p.as_str())
            .unwrap_or("-")
    );
    if host_port.port() != Some(port) {
        bail!(
            "the claim says port {port} but its HostPort holds {:?}",
            host_port.port()
        );
    }
    let classes: Api<HostPortClass> = Api::all(admin.clone());
    let class = wait_for("the class status", || {
        let classes = classes.clone();
        async move {
            classes
                .get("sample")
                .await
                .ok()
                .filter(|c| c.status.as_ref().and_then(|s| s.allocated) == Some(1))
        }
    })
    .await?;
    let status = class.status.unwrap_or_default();
    println!(
        "   hostportclass/sample: capacity {}, allocated {}, available {}",
        status.capacity.unwrap_or_default(),
        status.allocated.unwrap_or_default(),
        status.available.unwrap_or_default()
    );

    println!("\n3. The webhook gives the pod its port");
    apply_samples(&admin, &args.samples, &["pod.yaml"]).await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "demo");
    let pod = pods.get("echo").await?;
    let container = &pod.spec.as_ref().context("pod spec")?.containers[0];
    let web = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("web"))
        .context("web port")?;
    let annotation = pod
        .annotations()
        .get("port.hostport.rmb938.com/web")
        .cloned()
        .unwrap_or_default();
    println!("   stored pod/demo/echo:");
    println!(
        "     spec.containers[0].ports: name web, containerPort {}, hostPort {}",
        web.container_port,
        web.host_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!("     metadata.annotations[\"port.hostport.rmb938.com/web\"]: {annotation:?}");
    for var in container.env.iter().flatten() {
        if let Some(field) = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
            println!(
                "     env {} from {}  → the container sees {}={annotation}",
                var.name, field.field_path, var.name
            );
        }
    }
    if web.host_port != Some(i32::from(port)) || annotation != port.to_string() {
        bail!(
            "the pod did not get port {port}: hostPort {:?}, annotation {annotation:?}",
            web.host_port
        );
    }
    let grabby: Pod = serde_json::from_value(json!({
        "metadata": {"name": "grabby", "namespace": "demo"},
        "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"name": "web", "containerPort": 80, "hostPort": 80}]}]}
    }))?;
    match pods.create(&PostParams::default(), &grabby).await {
        Err(kube::Error::Api(status)) => println!(
            "   a pod taking hostPort 80 without a claim is refused:\n     {}",
            status.message
        ),
        Ok(_) => bail!("a pod with a hostPort and no claim was admitted"),
        Err(other) => return Err(other.into()),
    }

    println!("\n3b. One file: a claim and its pod applied together (config/samples/app.yaml)");
    let started = std::time::Instant::now();
    apply_samples(&admin, &args.samples, &["app.yaml"]).await?;
    let app = pods.get("app").await?;
    let app_port = app
        .annotations()
        .get("port.hostport.rmb938.com/web")
        .cloned()
        .unwrap_or_default();
    if app_port.is_empty() {
        bail!("the pod applied with its claim got no port");
    }
    println!(
        "   pod/demo/app admitted the first time, {} ms after the apply began: port.hostport.rmb938.com/web = {app_port:?}",
        started.elapsed().as_millis()
    );

    println!("\n3c. A port per pod, no claim written by hand (config/samples/web-deployment.yaml)");
    apply_samples(&admin, &args.samples, &["web-deployment.yaml"]).await?;
    // No ReplicaSet controller runs here: one replica made as it would make it.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "demo");
    let web = deployments.get("web").await?;
    let template = web.spec.map(|s| s.template).unwrap_or_default();
    let uid = web.metadata.uid.unwrap_or_default();
    let replica = pod_from_template(
        &template,
        "demo",
        PodName::GenerateName("web-5d8f9c-"),
        ("apps/v1", "ReplicaSet", "web-5d8f9c", &uid),
    );
    let replica = pods.create(&PostParams::default(), &replica).await?;
    let claim_name = replica
        .annotations()
        .get("claim.hostport.rmb938.com/http")
        .cloned()
        .unwrap_or_default();
    let replica_port = replica
        .annotations()
        .get("port.hostport.rmb938.com/http")
        .cloned()
        .unwrap_or_default();
    if claim_name.is_empty() || replica_port.is_empty() {
        bail!("the pod with a class annotation got no claim or no port");
    }
    let made = claims.get(&claim_name).await?;
    println!(
        "   pod/demo/{} (class.hostport.rmb938.com/http: sample) admitted with claim {claim_name:?} made for it by the webhook: {}",
        replica.name_any(),
        describe_claim(&made)
    );
    println!("   its env MY_HOST_PORT reads port.hostport.rmb938.com/http = {replica_port:?}");

    println!(
        "\n3d. A server that must listen on its public port (config/samples/passthrough.yaml)"
    );
    apply_samples(&admin, &args.samples, &["passthrough.yaml"]).await?;
    let srcds = pods.get("srcds").await?;
    let container = srcds
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("the srcds pod has a container")?;
    let game = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("game"))
        .context("the srcds pod has its game port")?;
    if Some(game.container_port) != game.host_port {
        bail!("the passthrough port kept its container port {game:?}");
    }
    let probe = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.tcp_socket.as_ref())
        .map(|t| t.port.clone());
    println!(
        "   pod/demo/srcds (portPolicy: Passthrough): port game containerPort = hostPort = {}, its readinessProbe follows: {probe:?}",
        game.container_port
    );

    if args.keep_running {
        println!("\nThe server keeps running with these objects. Try:");
        println!("   export KUBECONFIG={}", args.kubeconfig.display());
        println!("   kubectl get hostport-allocator -A");
        println!("   kubectl -n demo get pod echo -o yaml");
        println!(
            "   kubectl -n demo delete hostportclaim echo-web   # stays Deleting while the pod runs"
        );
        println!(
            "kubectl verbs the server supports: get (-w, -o yaml, printer columns), create, apply --server-side"
        );
        println!(
            "(or apply --validate=false), patch, label, annotate, delete; not: explain, describe's events lookup by field, exec/logs."
        );
        println!("ctrl-c to stop.");
        tokio::signal::ctrl_c().await?;
        drop(stack);
        return Ok(());
    }

    println!("\n4. Release");
    claims.delete("echo-web", &DeleteParams::default()).await?;
    // First AdmissionsInFlight (admissions that read the port may still be on their way),
    // then InUseByPods once the controller found the running pod.
    let held = wait_for("the claim to show Deleting, held by its pod", || {
        let claims = claims.clone();
        async move {
            claims.get("echo-web").await.ok().filter(|c| {
                c.phase() == hostport_api::ClaimPhase::Deleting
                    && c.bound_condition().is_some_and(|b| {
                        b.reason == hostport_api::conditions::reasons::IN_USE_BY_PODS
                    })
            })
        }
    })
    .await?;
    println!(
        "   hostportclaim/demo/echo-web deleted while pod/demo/echo runs: {}",
        describe_claim(&held)
    );
    pods.delete("echo", &DeleteParams::default()).await?;
    println!("   pod/demo/echo deleted");
    pods.delete("app", &DeleteParams::default()).await?;
    claims.delete("app-web", &DeleteParams::default()).await?;
    println!("   pod/demo/app and hostportclaim/demo/app-web deleted");
    pods.delete(&replica.name_any(), &DeleteParams::default())
        .await?;
    wait_for("the claim made for the replica to go with it", || {
        let (claims, name) = (claims.clone(), claim_name.clone());
        async move { claims.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await?;
    println!(
        "   pod/demo/{} deleted: the claim made for it, {claim_name}, went with it",
        replica.name_any()
    );
    wait_for("the HostPort and the claim to go", || {
        let (claims, host_ports) = (claims.clone(), Api::<HostPort>::all(admin.clone()));
        let name = host_port_name.clone();
        async move {
            (claims.get_opt("echo-web").await.ok()?.is_none()
                && host_ports.get_opt(&name).await.ok()?.is_none())
            .then_some(())
        }
    })
    .await?;
    println!(
        "   hostportclaim/demo/echo-web and hostport/{host_port_name} are gone: port {port} is free again"
    );
    let freed = wait_for("the class to show the port free", || {
        let classes = classes.clone();
        async move {
            classes
                .get("sample")
                .await
                .ok()
                .filter(|c| c.status.as_ref().and_then(|s| s.allocated) == Some(0))
        }
    })
    .await?;
    println!(
        "   hostportclass/sample: available {}",
        freed.status.and_then(|s| s.available).unwrap_or_default()
    );
    drop(stack);
    println!("\nDemo complete: every step above was read back from the API server.");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    match demo(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
