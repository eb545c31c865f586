//! Real-cluster mode (`E2E_KUBECONFIG`): what the scenarios need installed first.

use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::harness::SCENARIO_LABEL;

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
        // The publishers' own ServiceAccounts and rules.
        for file in [
            "config/publisher/router/rbac.yaml",
            "config/publisher/rbac/rbac.yaml",
        ] {
            let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
            let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            crate::samples::apply_yaml(client, file, &yaml)
                .await
                .unwrap_or_else(|e| panic!("applying {file}: {e}"));
        }
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

/// What earlier runs left on the cluster, deleted once per test process: a run that panicked
/// never reached its cleanup, and its claims would keep competing for the scenarios' port
/// ranges. Scenario objects carry the process id in their names (`<scenario>-<pid>-<n>`),
/// so only other processes' are touched. One run per cluster at a time.
pub async fn sweep_earlier_runs(client: &Client) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| sweep(client.clone(), format!("-{}-", std::process::id())))
        .await;
}

/// Deletes `name` whatever finalizers it carries (no controller of an earlier run is left to
/// remove them); gone already is fine.
pub(crate) async fn force_delete<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let unfinalize = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let _ = api.patch(name, &PatchParams::default(), &unfinalize).await;
    let _ = api.delete(name, &DeleteParams::default()).await;
}

async fn sweep(client: Client, ours: String) {
    let stale = |name: &str| !name.contains(&ours);
    let delete = DeleteParams::default();
    // Webhooks first: a dead run's configurations would refuse every write in its namespaces.
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for name in names(&mutating).await {
        if name.starts_with("hostport-e2e-") && stale(&name) {
            let _ = mutating.delete(&name, &delete).await;
            let _ = validating.delete(&name, &delete).await;
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let scenario_namespaces: Vec<String> = namespaces
        .list(&ListParams::default().labels(SCENARIO_LABEL))
        .await
        .map(|list| list.items.iter().map(ResourceExt::name_any).collect())
        .unwrap_or_default();
    let stale_namespaces: Vec<&String> = scenario_namespaces.iter().filter(|n| stale(n)).collect();
    for namespace in &stale_namespaces {
        let claims: Api<HostPortClaim> = Api::namespaced(client.clone(), namespace);
        for name in names(&claims).await {
            force_delete(&claims, &name).await;
        }
        let _ = namespaces.delete(namespace, &delete).await;
    }
    // Nodes a scenario made for its pods (labelled with the scenario).
    let nodes: Api<Node> = Api::all(client.clone());
    if let Ok(list) = nodes
        .list(&ListParams::default().labels(SCENARIO_LABEL))
        .await
    {
        for node in list.items {
            if stale(&node.name_any()) {
                let _ = nodes.delete(&node.name_any(), &delete).await;
            }
        }
    }
    let classes: Api<HostPortClass> = Api::all(client.clone());
    for name in names(&classes).await {
        if stale_namespaces
            .iter()
            .any(|ns| name.starts_with(&format!("{ns}-")))
        {
            force_delete(&classes, &name).await;
        }
    }
    let host_ports: Api<HostPort> = Api::all(client.clone());
    for host_port in host_ports
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let owner = host_port.claim_key().map(|(namespace, _)| namespace);
        if owner.is_some_and(|ns| stale_namespaces.iter().any(|s| **s == ns)) {
            force_delete(&host_ports, &host_port.name_any()).await;
        }
    }
    if !stale_namespaces.is_empty() {
        eprintln!(
            "swept {} namespace(s) an earlier run left behind",
            stale_namespaces.len()
        );
    }
}

async fn names<K>(api: &Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list_metadata(&ListParams::default())
        .await
        .map(|list| list.items.iter().map(ResourceExt::name_any).collect())
        .unwrap_or_default()
}
