//! `config/crd` builds with kustomize and installs exactly the generated CRDs.
//!
//! Needs `kubectl` on the PATH (`.ci/run` installs it). Set `HOSTPORT_SKIP_KUBECTL=1` to skip
//! on a machine without it; the skip is printed, never silent.

use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn kustomize(dir: &str) -> Option<String> {
    if std::env::var_os("HOSTPORT_SKIP_KUBECTL").is_some() {
        eprintln!("HOSTPORT_SKIP_KUBECTL is set: not rendering {dir}");
        return None;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(&root)
        .output()
        .expect("kubectl is needed to render config/ (install it, or set HOSTPORT_SKIP_KUBECTL=1)");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("utf-8 output"))
}

#[test]
fn config_crd_renders_the_generated_crds() {
    let Some(rendered) = kustomize("config/crd") else {
        return;
    };
    let mut documents: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&rendered)
        .expect("kustomize output parses as CustomResourceDefinitions");
    documents.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut expected: Vec<CustomResourceDefinition> = hostport_api::crds::all()
        .into_iter()
        .map(|(_, crd)| crd)
        .collect();
    expected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    assert_eq!(documents, expected);
}
