//! `config/`: every kustomize overlay builds, parses, and holds what a cluster install needs;
//! the webhook configurations match what the scenarios register; the Dockerfile copies
//! binaries that exist, and `hack/images.sh` builds the same images; the Tiltfile's build
//! context holds every workspace member; the controller's RBAC covers every call it makes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn kustomize(dir: &str) -> Option<Vec<Value>> {
    if std::env::var_os("HOSTPORT_SKIP_KUBECTL").is_some() {
        eprintln!("HOSTPORT_SKIP_KUBECTL is set: not rendering {dir}");
        return None;
    }
    let output = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(root())
        .output()
        .expect("kubectl is needed to render config/ (install it, or set HOSTPORT_SKIP_KUBECTL=1)");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    Some(
        serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{dir} output does not parse: {e}")),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_overlay_builds() {
    for (dir, kinds) in [
        ("config/crd", vec!["CustomResourceDefinition"]),
        (
            "config/rbac",
            vec![
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ],
        ),
        ("config/controller", vec!["Deployment"]),
        (
            "config/publisher/node",
            vec![
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "DaemonSet",
            ],
        ),
        (
            "config/publisher/edge",
            vec![
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
            ],
        ),
        (
            "config/publisher/router",
            vec![
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "DaemonSet",
            ],
        ),
        (
            "config/webhook",
            vec![
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
            ],
        ),
        (
            "config/default",
            vec![
                "CustomResourceDefinition",
                "Deployment",
                "Service",
                "MutatingWebhookConfiguration",
            ],
        ),
        (
            "config/cert-manager",
            vec!["Certificate", "Issuer", "Deployment"],
        ),
        (
            "config/samples",
            vec!["Namespace", "HostPortClass", "HostPortClaim", "Pod"],
        ),
        (
            "config/monitored",
            vec![
                "Deployment",
                "ServiceMonitor",
                "PrometheusRule",
                "ConfigMap",
                "MutatingWebhookConfiguration",
            ],
        ),
    ] {
        let Some(objects) = kustomize(dir) else {
            return;
        };
        let present: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        for kind in kinds {
            assert!(present.contains(kind), "{dir} has no {kind}: {present:?}");
        }
    }
}

#[test]
fn default_install_is_hardened_and_highly_available() {
    let Some(objects) = kustomize("config/default") else {
        return;
    };
    for name in ["hostport-controller", "hostport-webhook"] {
        let deployment = find(&objects, "Deployment", name);
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 2, "{name}");
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], name);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"], true,
            "{name}"
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"], false,
            "{name}"
        );
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"][0],
            "ALL"
        );
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert!(
            container["image"]
                .as_str()
                .expect("image")
                .ends_with(":0.1.0")
        );
        assert_eq!(container["command"][0], format!("/usr/local/bin/{name}"));
    }
    let webhook_args = &find(&objects, "Deployment", "hostport-webhook")["spec"]["template"]["spec"]
        ["containers"][0]["args"];
    assert!(
        webhook_args
            .as_array()
            .expect("args")
            .contains(&Value::from("--self-signed"))
    );
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "hostport-webhook")["spec"]["minAvailable"],
        1
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for webhook in find(&objects, kind, "hostport-allocator")["webhooks"]
            .as_array()
            .expect("webhooks")
        {
            assert_eq!(webhook["failurePolicy"], "Fail");
            let side_effects = if webhook["name"] == "pods.hostport.rmb938.com" {
                "NoneOnDryRun"
            } else {
                "None"
            };
            assert_eq!(webhook["sideEffects"], side_effects, "{}", webhook["name"]);
            assert!(webhook["timeoutSeconds"].as_i64().expect("timeout") <= 5);
            if webhook["name"] == "pods.hostport.rmb938.com" {
                assert_eq!(
                    webhook["rules"],
                    hostport_e2e::webhooks::pod_rules(),
                    "the scenarios register the pod webhook with the rules config/ installs"
                );
            }
            // The scenarios register every webhook with the matchConditions config/ installs.
            let name = webhook["name"].as_str().expect("name");
            let expected = hostport_e2e::webhooks::match_conditions(
                name,
                kind == "ValidatingWebhookConfiguration",
            );
            let collapse = |v: &Value| {
                v.as_str()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let installed = &webhook["matchConditions"];
            match expected {
                Some(expected) => {
                    assert_eq!(installed[0]["name"], expected[0]["name"], "{name}");
                    assert_eq!(
                        collapse(&installed[0]["expression"]),
                        collapse(&expected[0]["expression"]),
                        "{name}"
                    );
                }
                None => assert!(installed.is_null(), "{name}: {installed}"),
            }
            assert_eq!(
                webhook["clientConfig"]["service"]["name"],
                "hostport-webhook"
            );
        }
    }
    let cert_manager = kustomize("config/cert-manager").expect("rendered");
    let args = &find(&cert_manager, "Deployment", "hostport-webhook")["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--tls-cert-file=/tls/tls.crt") && !args.contains(&"--self-signed"),
        "{args:?}"
    );
    assert_eq!(
        find(
            &cert_manager,
            "MutatingWebhookConfiguration",
            "hostport-allocator"
        )["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "hostport-system/hostport-webhook"
    );
}

/// What the scenarios register must be what a cluster install registers.
#[test]
fn webhook_configurations_match_the_scenarios() {
    let Some(objects) = kustomize("config/webhook") else {
        return;
    };
    let (mutating, validating) = hostport_e2e::webhooks::configurations(
        "hostport-allocator",
        "https://x",
        "",
        serde_json::json!({"matchLabels": {"hostport.rmb938.com": "true"}}),
    );
    for (kind, expected) in [
        ("MutatingWebhookConfiguration", mutating),
        ("ValidatingWebhookConfiguration", validating),
    ] {
        let installed = find(&objects, kind, "hostport-allocator");
        let strip = |webhooks: &Value| -> Vec<Value> {
            webhooks
                .as_array()
                .expect("webhooks")
                .iter()
                .map(|w| {
                    let mut w = w.clone();
                    let path = w["clientConfig"]["service"]["path"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| {
                            w["clientConfig"]["url"]
                                .as_str()
                                .expect("url")
                                .trim_start_matches("https://x")
                                .to_owned()
                        });
                    w["clientConfig"] = Value::from(path);
                    w
                })
                .collect()
        };
        assert_eq!(
            strip(&installed["webhooks"]),
            strip(&expected["webhooks"]),
            "{kind}"
        );
    }
}

#[test]
fn dockerfile_builds_and_copies_binaries_that_exist() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    for (package, binary) in [
        ("controller", "hostport-controller"),
        ("webhook", "hostport-webhook"),
        ("publisher", "hostport-publisher"),
    ] {
        let manifest =
            std::fs::read_to_string(root().join(package).join("Cargo.toml")).expect("manifest");
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{package} has no bin {binary}"
        );
        assert!(
            dockerfile.contains(&format!("-p {binary}")),
            "the Dockerfile does not build the package {binary}"
        );
        assert!(
            dockerfile.contains(&format!(
                "COPY --from=build /src/target/release/{binary} /usr/local/bin/{binary}"
            )),
            "the Dockerfile does not copy {binary}"
        );
    }
    assert!(dockerfile.contains("--locked"));
    assert!(dockerfile.contains("USER 65532:65532"));
    // What `cargo bench -p hostport-e2e --bench memory` measures with (see BENCHMARKS.md).
    assert!(dockerfile.contains("ENV MALLOC_MMAP_THRESHOLD_=131072"));
}

/// One image as a Dockerfile stage or `hack/images.sh` describes it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Image {
    copied: BTreeSet<String>,
    user: String,
    entrypoint: String,
    env: BTreeSet<String>,
    packages: BTreeSet<String>,
}

/// The Dockerfile's stages by name (the last, unnamed one is `final`).
fn dockerfile_images(dockerfile: &str) -> std::collections::BTreeMap<String, Image> {
    let mut images = std::collections::BTreeMap::new();
    let mut stage = String::new();
    let mut in_install = false;
    // Continuation lines joined, so an `apt-get install` reads as one line.
    let joined = dockerfile.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        if let Some(from) = line.strip_prefix("FROM ") {
            stage = from
                .split_once(" AS ")
                .map_or("final", |(_, name)| name.trim())
                .to_owned();
            images.insert(stage.clone(), Image::default());
            continue;
        }
        let Some(image) = images.get_mut(&stage) else {
            continue;
        };
        if let Some(copy) = line.strip_prefix("COPY --from=build ") {
            let destination = copy.split_whitespace().last().unwrap_or_default();
            image.copied.insert(destination.to_owned());
        } else if let Some(user) = line.strip_prefix("USER ") {
            image.user = user.trim().to_owned();
        } else if let Some(entrypoint) = line.strip_prefix("ENTRYPOINT ") {
            let parsed: Vec<String> =
                serde_json::from_str(entrypoint).expect("exec-form ENTRYPOINT");
            image.entrypoint = parsed.join(" ");
        } else if let Some(env) = line.strip_prefix("ENV ") {
            image.env.insert(env.trim().to_owned());
        }
        if let Some((_, packages)) = line.split_once("apt-get install") {
            in_install = true;
            let packages = packages.split("&&").next().unwrap_or_default();
            image.packages.extend(
                packages
                    .split_whitespace()
                    .filter(|word| !word.starts_with('-'))
                    .map(str::to_owned),
            );
        }
    }
    assert!(
        in_install,
        "the publisher stage installs its tools with apt-get install"
    );
    images
}

/// `hack/images.sh`'s `<prefix>_copy=(…)`, `_user=`, `_entrypoint=`, `_env=(…)`,
/// `_packages=(…)`.
fn script_image(script: &str, prefix: &str) -> Image {
    let value = |name: &str| -> String {
        let key = format!("{prefix}_{name}=");
        script
            .lines()
            .find_map(|line| line.strip_prefix(&key))
            .map(|v| v.trim_start_matches('(').trim_end_matches(')').to_owned())
            .unwrap_or_default()
    };
    let words = |name: &str| -> BTreeSet<String> {
        value(name).split_whitespace().map(str::to_owned).collect()
    };
    Image {
        copied: words("copy"),
        user: value("user"),
        entrypoint: value("entrypoint"),
        env: words("env"),
        packages: words("packages"),
    }
}

#[test]
fn the_images_script_builds_what_the_dockerfile_builds() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let script = std::fs::read_to_string(root().join("hack/images.sh")).expect("hack/images.sh");
    let stages = dockerfile_images(&dockerfile);
    for (stage, prefix) in [("final", "allocator"), ("publisher", "publisher")] {
        let from_dockerfile = &stages[stage];
        let from_script = script_image(&script, prefix);
        assert!(
            !from_dockerfile.copied.is_empty() && !from_dockerfile.entrypoint.is_empty(),
            "the Dockerfile's {stage} stage copies a binary and names its entrypoint"
        );
        assert_eq!(
            &from_script, from_dockerfile,
            "hack/images.sh's {prefix} image differs from the Dockerfile's {stage} stage: change both"
        );
    }
    // The images carry the tags config/ runs.
    let manifests = [
        "config/controller/deployment.yaml",
        "config/webhook/deployment.yaml",
        "config/publisher/node/daemonset.yaml",
    ];
    for manifest in manifests {
        let text = std::fs::read_to_string(root().join(manifest)).expect("manifest");
        let image = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .expect("an image");
        let (name, tag) = image.split_once(':').expect("a tag");
        assert!(
            script.contains(&format!("_image={name}")) && script.contains(&format!("tag={tag}")),
            "hack/images.sh does not build {image} ({manifest})"
        );
    }
}

#[test]
fn the_tiltfile_builds_with_every_workspace_member() {
    let tiltfile = std::fs::read_to_string(root().join("Tiltfile")).expect("Tiltfile");
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let members = cargo
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    let only = tiltfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("only="))
        .expect("the Tiltfile's only= list");
    for member in members.trim_matches(|c| c == '[' || c == ']').split(',') {
        let member = member.trim().trim_matches('"');
        let top = member.split('/').next().unwrap_or(member);
        assert!(
            only.contains(&format!("'{top}'")),
            "the Tiltfile's only= lacks {top}: the Dockerfile builds the whole workspace"
        );
    }
}

#[test]
fn uninstalling_removes_the_webhook_configurations_first() {
    for overlay in ["config/default", "config/cert-manager", "config/monitored"] {
        let Some(objects) = kustomize(overlay) else {
            return;
        };
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds[..2],
            [
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration"
            ],
            "{overlay}: `kubectl delete -k` deletes in this order; the webhook configurations must go before the webhook"
        );
    }
}
