//! The resource types the server serves: a fixed set of built-ins plus every
//! CustomResourceDefinition created through the API (this project's CRDs are created from
//! `crds/` at start, exactly as `kubectl apply -f crds/` would on a cluster).

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::core::cel::{CompiledSchema, compile_schema};
use serde_json::Value;

/// `(group, plural)`: identifies a resource across versions.
pub type ResourceKey = (String, String);

/// One served resource.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// Served (and stored) version.
    pub version: String,
    /// Kind, e.g. `HostPortClaim`.
    pub kind: String,
    /// Plural resource name, e.g. `hostportclaims`.
    pub plural: String,
    /// Singular resource name.
    pub singular: String,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// kubectl categories.
    pub categories: Vec<String>,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (spec and status written separately).
    pub status_subresource: bool,
    /// Schema, CEL rules and printer columns of a custom resource.
    pub custom: Option<Arc<CustomSchema>>,
}

/// What a CRD adds to a resource type.
#[derive(Debug)]
pub struct CustomSchema {
    /// `openAPIV3Schema` of the served version.
    pub schema: Value,
    /// Its `x-kubernetes-validations`, compiled once.
    pub compiled: CompiledSchema,
    /// `additionalPrinterColumns` of the served version.
    pub printer_columns: Vec<Value>,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            short_names: vec![],
            categories: vec![],
            namespaced,
            status_subresource: false,
            custom: None,
        }
    }

    fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `(group, plural)`.
    pub fn key(&self) -> ResourceKey {
        (self.group.clone(), self.plural.clone())
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `hostports.hostport.rmb938.com`, as error messages name a resource.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether this is the Namespace resource itself.
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }

    /// Whether this is the CRD resource.
    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }
}

/// Why a CRD cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A required field is missing.
    #[error("spec.{0} is required")]
    Missing(&'static str),
    /// No version is both served and the storage version.
    #[error("spec.versions has no served storage version")]
    NoStorageVersion,
    /// A CEL rule does not compile.
    #[error("invalid x-kubernetes-validations rule: {0}")]
    Cel(String),
    /// A group of Kubernetes' own (`*.k8s.io`, `*.kubernetes.io`) without the approval
    /// annotation kube-apiserver requires.
    #[error(
        "metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111"
    )]
    ProtectedGroup,
}

/// Every served resource type, keyed by `(group, plural)`.
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<ResourceKey, ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let builtins = [
            ResourceType::builtin("", "v1", "Namespace", "namespaces", false)
                .with_status()
                .with_short_names(&["ns"]),
            ResourceType::builtin("", "v1", "Pod", "pods", true)
                .with_status()
                .with_short_names(&["po"]),
            // Stored, no service controller: nodePorts are whatever the object says.
            ResourceType::builtin("", "v1", "Service", "services", true)
                .with_status()
                .with_short_names(&["svc"]),
            ResourceType::builtin("", "v1", "Node", "nodes", false)
                .with_status()
                .with_short_names(&["no"]),
            ResourceType::builtin("", "v1", "Event", "events", true).with_short_names(&["ev"]),
            ResourceType::builtin("", "v1", "Secret", "secrets", true),
            ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true)
                .with_short_names(&["cm"]),
            ResourceType::builtin("", "v1", "ServiceAccount", "serviceaccounts", true)
                .with_short_names(&["sa"]),
            // Stored, not enforced.
            ResourceType::builtin("", "v1", "ResourceQuota", "resourcequotas", true)
                .with_status()
                .with_short_names(&["quota"]),
            ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true)
                .with_short_names(&["ev"]),
            ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
            // Stored, no controllers: tests create their pods as those controllers would.
            ResourceType::builtin("apps", "v1", "StatefulSet", "statefulsets", true)
                .with_status()
                .with_short_names(&["sts"]),
            ResourceType::builtin("apps", "v1", "ReplicaSet", "replicasets", true)
                .with_status()
                .with_short_names(&["rs"]),
            ResourceType::builtin("apps", "v1", "Deployment", "deployments", true)
                .with_status()
                .with_short_names(&["deploy"]),
            ResourceType::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
                false,
            ),
            ResourceType::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                false,
            ),
            ResourceType::builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            )
            .with_status()
            .with_short_names(&["crd", "crds"]),
        ];
        Self {
            types: builtins.into_iter().map(|t| (t.key(), t)).collect(),
        }
    }
}

impl Registry {
    /// The type served at `group/version` under `plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_owned(), plural.to_owned()))
            .filter(|t| t.version == version)
    }

    /// The type with this key, whatever its version.
    pub fn by_key(&self, key: &ResourceKey) -> Option<&ResourceType> {
        self.types.get(key)
    }

    /// Every served type.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// Serves the resource a CRD object defines (replacing an earlier definition).
    pub fn register_crd(&mut self, crd: &Value) -> Result<ResourceType, CrdError> {
        let rt = resource_type_from_crd(crd)?;
        self.types.insert(rt.key(), rt.clone());
        Ok(rt)
    }

    /// Stops serving a CRD's resource; returns its key.
    pub fn unregister_crd(&mut self, crd: &Value) -> Option<ResourceKey> {
        let spec = &crd["spec"];
        let key = (
            spec["group"].as_str()?.to_owned(),
            spec["names"]["plural"].as_str()?.to_owned(),
        );
        self.types.remove(&key).map(|_| key)
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The resource type a CRD object describes (its served storage version).
pub fn resource_type_from_crd(crd: &Value) -> Result<ResourceType, CrdError> {
    let spec = &crd["spec"];
    let text = |v: &Value, what: &'static str| {
        v.as_str().map(str::to_owned).ok_or(CrdError::Missing(what))
    };
    let group = text(&spec["group"], "group")?;
    let protected = ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|g| group == *g || group.ends_with(&format!(".{g}")));
    let approved = crd["metadata"]["annotations"]["api-approved.kubernetes.io"]
        .as_str()
        .is_some_and(|v| !v.is_empty());
    if protected && !approved {
        return Err(CrdError::ProtectedGroup);
    }
    let names = &spec["names"];
    let kind = text(&names["kind"], "names.kind")?;
    let plural = text(&names["plural"], "names.plural")?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let namespaced = spec["scope"].as_str() == Some("Namespaced");
    let version = spec["versions"]
        .as_array()
        .and_then(|vs| {
            vs.iter().find(|v| {
                v["served"].as_bool().unwrap_or(false) && v["storage"].as_bool().unwrap_or(false)
            })
        })
        .ok_or(CrdError::NoStorageVersion)?;
    let schema = version["schema"]["openAPIV3Schema"].clone();
    let compiled = compile_schema(&schema);
    if let Some(error) = first_compile_error(&compiled) {
        return Err(CrdError::Cel(error));
    }
    Ok(ResourceType {
        group,
        version: text(&version["name"], "versions[].name")?,
        kind,
        plural,
        singular,
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        namespaced,
        status_subresource: version["subresources"]["status"].is_object(),
        custom: Some(Arc::new(CustomSchema {
            schema,
            compiled,
            printer_columns: version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        })),
    })
}

fn first_compile_error(schema: &CompiledSchema) -> Option<String> {
    if let Some(error) = schema.compilation_errors().first() {
        return Some(error.to_string());
    }
    schema
        .properties
        .values()
        .chain(schema.items.as_deref())
        .chain(schema.additional_properties.as_deref())
        .find_map(first_compile_error)
}

/// The status kube-apiserver gives a CRD it serves: names accepted, established.
pub(crate) fn crd_status(rt: &ResourceType) -> Value {
    let time = crate::object::now();
    serde_json::json!({
        "acceptedNames": {"kind": rt.kind, "plural": rt.plural, "singular": rt.singular,
                          "shortNames": rt.short_names, "categories": rt.categories},
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": time},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": time},
        ],
        "storedVersions": [rt.version],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(group: &str, annotations: Value) -> Value {
        json!({"metadata": {"name": format!("things.{group}"), "annotations": annotations},
               "spec": {"group": group, "scope": "Namespaced",
                        "names": {"kind": "Thing", "plural": "things"},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                                      "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    #[test]
    fn kubernetes_groups_need_the_approval_annotation_as_in_kube_apiserver() {
        for group in ["externaldns.k8s.io", "k8s.io", "x.kubernetes.io"] {
            assert!(
                matches!(
                    resource_type_from_crd(&crd(group, json!({}))),
                    Err(CrdError::ProtectedGroup)
                ),
                "{group}"
            );
            let approved = json!({"api-approved.kubernetes.io": "https://example.com/pr/1"});
            assert!(
                resource_type_from_crd(&crd(group, approved)).is_ok(),
                "{group}"
            );
        }
        assert!(resource_type_from_crd(&crd("hostport.rmb938.com", json!({}))).is_ok());
        assert!(resource_type_from_crd(&crd("notk8s.io", json!({}))).is_ok());
    }
}
