//! Applying YAML manifests (such as `config/samples/`) through the API, for the demo and for
//! the test that every sample is accepted.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Why a manifest could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The YAML does not parse.
    #[error("{file}: not valid YAML: {message}")]
    Yaml {
        /// File name.
        file: String,
        /// Parser message.
        message: String,
    },
    /// A document lacks apiVersion or kind.
    #[error("{file}: a document has no apiVersion/kind")]
    NoKind {
        /// File name.
        file: String,
    },
    /// The API server refused it.
    #[error("{file}: applying {kind} {name}: {source}")]
    Api {
        /// File name.
        file: String,
        /// Kind of the object.
        kind: String,
        /// Its name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// Server-side applies every document of `yaml`; returns the objects as stored.
pub async fn apply_yaml(
    client: &Client,
    file: &str,
    yaml: &str,
) -> Result<Vec<DynamicObject>, ApplyError> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| ApplyError::Yaml {
            file: file.into(),
            message: e.to_string(),
        })?;
    let mut applied = vec![];
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        let (Some(api_version), Some(kind)) =
            (document["apiVersion"].as_str(), document["kind"].as_str())
        else {
            return Err(ApplyError::NoKind { file: file.into() });
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let object: DynamicObject =
            serde_json::from_value(document.clone()).map_err(|e| ApplyError::Yaml {
                file: file.into(),
                message: e.to_string(),
            })?;
        let name = object.name_any();
        let api_error = |source| ApplyError::Api {
            file: file.into(),
            kind: kind.into(),
            name: name.clone(),
            source,
        };
        let (resource, capabilities) = pinned_kind(client, &gvk).await.map_err(api_error)?;
        let api: Api<DynamicObject> = match (capabilities.scope, object.namespace()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), &ns, &resource)
            }
            (kube::discovery::Scope::Namespaced, None) => {
                Api::default_namespaced_with(client.clone(), &resource)
            }
            (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let stored = api
            .patch(
                &name,
                &PatchParams::apply("hostport-demo"),
                &Patch::Apply(&document),
            )
            .await
            .map_err(|source| ApplyError::Api {
                file: file.into(),
                kind: kind.into(),
                name: name.clone(),
                source,
            })?;
        applied.push(stored);
    }
    Ok(applied)
}
