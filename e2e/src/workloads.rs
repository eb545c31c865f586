//! What the StatefulSet and ReplicaSet controllers do that the in-process server does not:
//! pods made from a workload's pod template, with its controller reference.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// How the pod is named: `Name` (a StatefulSet's `<set>-<ordinal>`) or `GenerateName` (a
/// ReplicaSet's `<rs>-`).
#[derive(Clone, Copy, Debug)]
pub enum PodName<'a> {
    /// A fixed name.
    Name(&'a str),
    /// A `generateName` prefix.
    GenerateName(&'a str),
}

/// A pod of `template` in `namespace`, controlled by `owner` (`apiVersion`, `kind`, `name`,
/// `uid`).
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: PodName<'_>,
    owner: (&str, &str, &str, &str),
) -> Pod {
    let mut metadata = template.metadata.clone().unwrap_or_default();
    match name {
        PodName::Name(name) => metadata.name = Some(name.to_owned()),
        PodName::GenerateName(prefix) => metadata.generate_name = Some(prefix.to_owned()),
    }
    metadata.namespace = Some(namespace.to_owned());
    let (api_version, kind, name, uid) = owner;
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    Pod {
        metadata,
        spec: template.spec.clone(),
        status: None,
    }
}
