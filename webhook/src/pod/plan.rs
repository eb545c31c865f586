//! Which claims the webhook makes for a pod's `class.hostport.rmb938.com/<portName>:
//! <className>` annotations, pure: ports with the same `containerPort` and class share one
//! claim (TCP and UDP of a game server get one number), named after the first of them in spec
//! order; StatefulSet pods' claims carry their StatefulSet as owner when its retention policy
//! deletes them with it. Making them and waiting for them is `pod_claims`.

use std::collections::BTreeMap;

use hostport_api::annotations::{ClaimAnnotation, class_annotation_key};
use hostport_api::pod_claims::{
    ADMITTED_LABEL, Retention, RetentionPolicy, claim_generate_name, claim_name, pod_claim_labels,
    statefulset_owner,
};
use hostport_api::{HostPortClaim, HostPortClaimSpec, PortPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::check::{NewPod, check_pod, single_slot};
use crate::verdict::{Verdict, deny, reasons};

/// How the claim of a pod's port is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimNaming {
    /// `<podName>-<portName>`: the pod has its name at admission (StatefulSet pods, pods
    /// created by name). Retries of the admission find the same claim.
    Fixed(String),
    /// `generateName: <pod generateName><portName>-`: the pod's name is made after
    /// admission (ReplicaSets, Jobs).
    Generated(String),
}

/// One claim the webhook makes (or finds) for a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodClaim {
    /// Its name.
    pub naming: ClaimNaming,
    /// Its class.
    pub class: String,
    /// The container ports that get its port (first one names it).
    pub port_names: Vec<String>,
    /// The annotation that asked for it (the first port's), for messages.
    pub key: String,
    /// Its labels (`hostport.rmb938.com/pod-claim` and friends).
    pub labels: BTreeMap<String, String>,
    /// The StatefulSet it goes with, when its policy deletes claims with the StatefulSet.
    pub owner: Option<OwnerReference>,
    /// Its `spec.portPolicy` (the port policy annotation of its first port).
    pub policy: PortPolicy,
    /// Its `spec.count` (the count annotation of its first port; 1: one port).
    pub count: u16,
    /// Its `spec.alignment` (1: any).
    pub alignment: u16,
}

impl PodClaim {
    /// The claim to create in `namespace`, made by an admission at `now` (Unix seconds).
    pub fn object(&self, namespace: &str, now: i64) -> HostPortClaim {
        let (name, generate_name) = match &self.naming {
            ClaimNaming::Fixed(name) => (Some(name.clone()), None),
            ClaimNaming::Generated(prefix) => (None, Some(prefix.clone())),
        };
        HostPortClaim {
            metadata: ObjectMeta {
                name,
                generate_name,
                namespace: Some(namespace.to_owned()),
                labels: Some(
                    self.labels
                        .clone()
                        .into_iter()
                        .chain([(ADMITTED_LABEL.to_owned(), now.to_string())])
                        .collect(),
                ),
                owner_references: self.owner.clone().map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            spec: HostPortClaimSpec {
                // Left out when Mapped, as a claim written by hand would be.
                port_policy: (self.policy != PortPolicy::Mapped).then_some(self.policy),
                count: (self.count > 1).then_some(i32::from(self.count)),
                alignment: (self.alignment > 1).then_some(i32::from(self.alignment)),
                ..HostPortClaimSpec::of_class(&self.class)
            },
            status: None,
        }
    }

    /// The claim annotations that give its ports the claim `claim_name`.
    pub fn annotations(&self, claim_name: &str) -> impl Iterator<Item = ClaimAnnotation> + '_ {
        let claim_name = claim_name.to_owned();
        self.port_names
            .iter()
            .map(move |port_name| ClaimAnnotation {
                port_name: port_name.clone(),
                claim_name: claim_name.clone(),
            })
    }
}

/// The claims to make for the pod's class annotations (ports that also carry a claim
/// annotation use that claim), after every check that needs no claim, so a pod that would be
/// denied anyway makes nothing.
pub fn plan(pod: &NewPod, host_network_allowed: bool) -> Result<Vec<PodClaim>, Verdict> {
    let (claims, classes) = check_pod(pod, host_network_allowed)?;
    let mut groups: Vec<(usize, i32, PodClaim)> = vec![];
    let mut wanted: Vec<_> = vec![];
    for class in &classes {
        if claims.iter().any(|c| c.port_name == class.port_name) {
            continue;
        }
        let key = class_annotation_key(&class.port_name);
        let slot = single_slot(pod, &key, &class.port_name)?;
        wanted.push((slot.order, slot.container_port, class, key));
    }
    if wanted.is_empty() {
        return Ok(vec![]);
    }
    wanted.sort_by_key(|(order, ..)| *order);
    let meta = &pod.pod.metadata;
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let statefulset = statefulset_owner(owners);
    let (policy, errors) = RetentionPolicy::resolve(&[&pod.annotations]);
    if let Some(error) = errors.first() {
        return Err(deny(reasons::INVALID_ANNOTATION, error.clone()));
    }
    let pod_name = meta.name.as_deref().filter(|n| !n.is_empty());
    let labels = pod_claim_labels(pod_name, statefulset.map(|s| s.name.as_str()));
    let owner = statefulset
        .filter(|_| policy.when_deleted == Retention::Delete)
        .map(|set| OwnerReference {
            api_version: set.api_version.clone(),
            kind: set.kind.clone(),
            name: set.name.clone(),
            uid: set.uid.clone(),
            controller: None,
            block_owner_deletion: None,
        });
    for (order, container_port, class, key) in wanted {
        let policy = pod.port_policy(&class.port_name);
        let (count, alignment) = super::block::requested_block(pod, &class.port_name);
        if let Some((_, _, group)) = groups.iter_mut().find(|(_, port, group)| {
            *port == container_port
                && group.class == class.class_name
                && (group.policy, group.count, group.alignment) == (policy, count, alignment)
        }) {
            group.port_names.push(class.port_name.clone());
            continue;
        }
        let naming = match pod_name {
            Some(pod_name) => ClaimNaming::Fixed(
                claim_name(pod_name, &class.port_name).map_err(|why| {
                    deny(
                        reasons::INVALID_ANNOTATION,
                        format!(
                            "annotation {key:?} asks for a claim named after the pod and the port, but {why}: shorten the pod name or the port name"
                        ),
                    )
                })?,
            ),
            None => match meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
                Some(prefix) => ClaimNaming::Generated(claim_generate_name(prefix, &class.port_name)),
                None => {
                    return Err(deny(
                        reasons::INVALID_ANNOTATION,
                        format!(
                            "annotation {key:?} asks for a claim made for the pod, but the pod has neither metadata.name nor metadata.generateName"
                        ),
                    ));
                }
            },
        };
        groups.push((
            order,
            container_port,
            PodClaim {
                naming,
                class: class.class_name.clone(),
                port_names: vec![class.port_name.clone()],
                key,
                labels: labels.clone(),
                owner: owner.clone(),
                policy,
                count,
                alignment,
            },
        ));
    }
    Ok(groups.into_iter().map(|(_, _, group)| group).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use serde_json::json;

    fn pod(metadata: serde_json::Value, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": metadata,
            "spec": {"containers": [{"name": "game", "image": "game", "ports": ports}]}
        }))
        .expect("pod")
    }

    fn game_ports() -> serde_json::Value {
        json!([
            {"name": "game-tcp", "containerPort": 7777, "protocol": "TCP"},
            {"name": "game-udp", "containerPort": 7777, "protocol": "UDP"},
            {"name": "query", "containerPort": 27015, "protocol": "UDP"}
        ])
    }

    fn both_classes() -> serde_json::Value {
        json!({
            "class.hostport.rmb938.com/game-udp": "games",
            "class.hostport.rmb938.com/game-tcp": "games",
            "class.hostport.rmb938.com/query": "games"
        })
    }

    #[test]
    fn ports_with_one_number_and_class_share_a_claim_named_after_the_first() {
        let pod = pod(
            json!({
                "name": "arena-0",
                "annotations": both_classes(),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "arena", "uid": "set-uid", "controller": true}]
            }),
            game_ports(),
        );
        let plans = plan(&NewPod::new(&pod), false).expect("plan");
        assert_eq!(plans.len(), 2, "{plans:?}");
        assert_eq!(
            plans[0].naming,
            ClaimNaming::Fixed("arena-0-game-tcp".into())
        );
        assert_eq!(plans[0].port_names, vec!["game-tcp", "game-udp"]);
        assert_eq!(plans[1].naming, ClaimNaming::Fixed("arena-0-query".into()));
        let owner = plans[0].owner.as_ref().expect("owned by the StatefulSet");
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StatefulSet", "set-uid")
        );
        assert_eq!(
            plans[0]
                .labels
                .get("hostport.rmb938.com/statefulset")
                .map(String::as_str),
            Some("arena")
        );
        let object = plans[0].object("games", 1_764_668_400);
        assert_eq!(
            object.labels().get(ADMITTED_LABEL).map(String::as_str),
            Some("1764668400")
        );
        assert_eq!(object.metadata.name.as_deref(), Some("arena-0-game-tcp"));
        assert_eq!(object.spec.host_port_class_name, "games");
    }

    #[test]
    fn retain_on_delete_means_no_owner_and_bad_values_are_denied() {
        let mut annotations = both_classes();
        annotations["hostport.rmb938.com/when-deleted"] = json!("Retain");
        let owned = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet",
            "name": "arena", "uid": "set-uid", "controller": true}]);
        let pod_with = |annotations| {
            pod(
                json!({"name": "arena-0", "annotations": annotations, "ownerReferences": owned}),
                game_ports(),
            )
        };
        let retained = pod_with(annotations.clone());
        let plans = plan(&NewPod::new(&retained), false).expect("plan");
        assert!(plans.iter().all(|p| p.owner.is_none()));
        annotations["hostport.rmb938.com/when-deleted"] = json!("Keep");
        let bad = pod_with(annotations);
        let verdict = plan(&NewPod::new(&bad), false).expect_err("denied");
        assert!(
            matches!(&verdict, Verdict::Deny { message, .. } if message.contains("use \"Retain\" or \"Delete\"")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_port_policy_annotation_goes_into_the_claim_and_splits_a_group() {
        let pod = pod(
            json!({"name": "arena-0", "annotations": {
                "class.hostport.rmb938.com/game-tcp": "games",
                "class.hostport.rmb938.com/game-udp": "games",
                "port-policy.hostport.rmb938.com/game-udp": "Passthrough"}}),
            json!([
                {"name": "game-tcp", "containerPort": 7777, "protocol": "TCP"},
                {"name": "game-udp", "containerPort": 7777, "protocol": "UDP"}
            ]),
        );
        let plans = plan(&NewPod::new(&pod), false).expect("plan");
        assert_eq!(plans.len(), 2, "one policy per claim: {plans:?}");
        assert_eq!(plans[0].policy, PortPolicy::Mapped);
        assert_eq!(plans[0].object("games", 0).spec.port_policy, None);
        assert_eq!(plans[1].policy, PortPolicy::Passthrough);
        assert_eq!(
            plans[1].object("games", 0).spec.port_policy,
            Some(PortPolicy::Passthrough)
        );
    }

    #[test]
    fn count_and_alignment_annotations_make_a_block_claim() {
        let pod = pod(
            json!({"name": "media-0", "annotations": {
                "class.hostport.rmb938.com/rtp": "media",
                "class.hostport.rmb938.com/rtp-tcp": "media",
                "count.hostport.rmb938.com/rtp": "10",
                "alignment.hostport.rmb938.com/rtp": "2"}}),
            json!([
                {"name": "rtp", "containerPort": 10000, "protocol": "UDP"},
                {"name": "rtp-tcp", "containerPort": 10000, "protocol": "TCP"}
            ]),
        );
        let plans = plan(&NewPod::new(&pod), false).expect("plan");
        assert_eq!(plans.len(), 2, "a block and a single port share no claim");
        let spec = plans[0].object("media", 0).spec;
        assert_eq!((spec.count, spec.alignment), (Some(10), Some(2)));
        let single = plans[1].object("media", 0).spec;
        assert_eq!((single.count, single.alignment), (None, None));
    }

    #[test]
    fn generate_name_pods_get_generated_claims() {
        let pod = pod(
            json!({"generateName": "web-7d9f-", "annotations": {"class.hostport.rmb938.com/http": "web"}}),
            json!([{"name": "http", "containerPort": 8080}]),
        );
        let plans = plan(&NewPod::new(&pod), false).expect("plan");
        assert_eq!(
            plans[0].naming,
            ClaimNaming::Generated("web-7d9f-http-".into())
        );
        assert!(plans[0].owner.is_none());
        assert_eq!(plans[0].labels.len(), 1);
    }

    #[test]
    fn a_hand_made_claim_wins_and_bad_pods_make_nothing() {
        let pod_named = pod(
            json!({"name": "web", "annotations": {
                "class.hostport.rmb938.com/http": "web",
                "claim.hostport.rmb938.com/http": "mine"}}),
            json!([{"name": "http", "containerPort": 8080}]),
        );
        assert_eq!(plan(&NewPod::new(&pod_named), false), Ok(vec![]));
        for (annotations, ports, reason) in [
            (
                json!({"class.hostport.rmb938.com/nope": "web"}),
                json!([{"name": "http", "containerPort": 8080}]),
                reasons::UNKNOWN_PORT_NAME,
            ),
            (
                json!({"class.hostport.rmb938.com/http": "Bad_Class"}),
                json!([{"name": "http", "containerPort": 8080}]),
                reasons::INVALID_ANNOTATION,
            ),
            (
                json!({"class.hostport.rmb938.com/http": "web"}),
                json!([{"name": "http", "containerPort": 8080},
                       {"name": "other", "containerPort": 9090, "hostPort": 9090}]),
                reasons::HOST_PORT_WITHOUT_CLAIM,
            ),
        ] {
            let pod = pod(json!({"name": "web", "annotations": annotations}), ports);
            let verdict = plan(&NewPod::new(&pod), false);
            assert!(
                matches!(&verdict, Err(Verdict::Deny { reason: r, .. }) if *r == reason),
                "{verdict:?}"
            );
        }
    }
}
