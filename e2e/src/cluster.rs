//! Real-cluster mode (`E2E_KUBECONFIG`): what the scenarios need installed first.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

/// Applies this repository's CRDs (server-side apply) and waits until they are Established;
/// with `rbac`, also `config/rbac`, so the binaries can run impersonating their
/// ServiceAccounts.
pub async fn prepare(client: &Client, rbac: bool) {
    if rbac {
        let output = std::process::Command::new("kubectl")
            .args(["kustomize", "config/rbac"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .output()
            .expect("kubectl renders config/rbac");
        assert!(
            output.status.success(),
            "kubectl kustomize config/rbac failed"
        );
        let yaml = String::from_utf8(output.stdout).expect("utf-8");
        crate::samples::apply_yaml(client, "config/rbac", &yaml)
            .await
            .expect("applying config/rbac");
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("hostport-e2e").force();
    for (_, crd) in hostport_api::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        let established = kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(std::time::Duration::from_secs(30), established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established after 30s"))
            .unwrap_or_else(|e| panic!("waiting for CRD {name}: {e}"));
    }
}
