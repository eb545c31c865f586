//! What the StatefulSet and ReplicaSet controllers do that the in-process server does not:
//! pods made from a workload's pod template, with its controller reference.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};

use crate::harness::Env;

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

/// StatefulSet `set`'s pod `ordinal` as its controller makes it: on a cluster the real
/// controller does (this waits for a pod of that name other than `previous`, not being
/// deleted); on the in-process server, which runs no controllers, this creates it (its
/// admission is then the caller's to see succeed).
pub async fn statefulset_pod(
    env: &Env,
    set: &StatefulSet,
    ordinal: u32,
    previous: Option<&str>,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let name = format!("{set_name}-{ordinal}");
    if env.server().is_some() {
        let template = &set
            .spec
            .as_ref()
            .expect("a StatefulSet has a spec")
            .template;
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let pod = pod_from_template(
            template,
            &env.namespace,
            PodName::Name(&name),
            ("apps/v1", "StatefulSet", &set_name, &uid),
        );
        return pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("pod {name} admitted: {e}"));
    }
    env.wait_for(
        &format!("{name} made by the StatefulSet"),
        Duration::from_secs(90),
        || async {
            let pod = pods.get_opt(&name).await.ok()??;
            (pod.metadata.uid.as_deref() != previous && pod.metadata.deletion_timestamp.is_none())
                .then_some(pod)
        },
    )
    .await
}
