//! Claims the webhook makes for pods that ask for a port of a class
//! (`class.hostport.rmb938.com/<portName>: <className>`): their names, the labels that mark
//! them, and how long they live.
//!
//! - A StatefulSet pod's claim is `<podName>-<portName>` and outlives the pod, like a PVC of
//!   a `volumeClaimTemplate`: ordinal N keeps its port across restarts. When it goes follows
//!   [`RetentionPolicy`] (defaults: deleted with the StatefulSet, kept on scale-down).
//! - Any other named pod's claim is `<podName>-<portName>`, a `generateName` pod's is
//!   generated from `<generateName><portName>-`; either lives while a pod names it and is
//!   deleted by the controller when its pod leaves (deleted or terminated), or, if its pod
//!   never appeared (admission denied later in the chain), after a grace period. No
//!   ownerReference is written for it: that would be one more API write per pod.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::names::validate_dns1123_subdomain;

/// Label (value `"true"`) on every claim the webhook made for a pod.
pub const POD_CLAIM_LABEL: &str = "hostport.rmb938.com/pod-claim";
/// Label with the name of the pod a claim was made for (when the pod had a name that fits).
pub const POD_LABEL: &str = "hostport.rmb938.com/pod";
/// Label with the name of the StatefulSet whose pod a claim was made for.
pub const STATEFULSET_LABEL: &str = "hostport.rmb938.com/statefulset";
/// Label with the last time (Unix seconds) an admission made or reused the claim: the grace
/// period for its pod to appear counts from it, so a retried admission is not cut short.
pub const ADMITTED_LABEL: &str = "hostport.rmb938.com/admitted";
/// The labels a pod claim's lifetime is decided on: what every cache keeps of a claim's
/// labels.
pub const POD_CLAIM_LABELS: [&str; 4] = [
    POD_CLAIM_LABEL,
    POD_LABEL,
    STATEFULSET_LABEL,
    ADMITTED_LABEL,
];
/// Annotation on a StatefulSet or its pod template: `Delete` (default) or `Retain` the
/// claims of its pods when the StatefulSet is deleted.
pub const WHEN_DELETED_ANNOTATION: &str = "hostport.rmb938.com/when-deleted";
/// Annotation on a StatefulSet or its pod template: `Retain` (default) or `Delete` the claims
/// of ordinals removed by a scale-down.
pub const WHEN_SCALED_ANNOTATION: &str = "hostport.rmb938.com/when-scaled";

/// Longest label value.
const MAX_LABEL_VALUE: usize = 63;

/// The time (Unix seconds) in a claim's [`ADMITTED_LABEL`], if it is one.
pub fn admitted_at(labels: &BTreeMap<String, String>) -> Option<i64> {
    labels.get(ADMITTED_LABEL)?.parse().ok()
}

/// Whether a claim's labels mark it as made for a pod.
pub fn is_pod_claim(labels: &BTreeMap<String, String>) -> bool {
    labels.get(POD_CLAIM_LABEL).is_some_and(|v| v == "true")
}

/// The labels of a claim made for a pod: the marker, the pod's name and its StatefulSet's
/// (each only when it fits in a label value).
pub fn pod_claim_labels(
    pod_name: Option<&str>,
    statefulset: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(POD_CLAIM_LABEL.to_owned(), "true".to_owned())]);
    let fits = |v: &&str| v.len() <= MAX_LABEL_VALUE;
    if let Some(pod) = pod_name.filter(fits) {
        labels.insert(POD_LABEL.into(), pod.into());
    }
    if let Some(set) = statefulset.filter(fits) {
        labels.insert(STATEFULSET_LABEL.into(), set.into());
    }
    labels
}

/// Name of the claim for port `port_name` of the pod named `pod_name`, or why it cannot be.
pub fn claim_name(pod_name: &str, port_name: &str) -> Result<String, String> {
    let name = format!("{pod_name}-{port_name}");
    validate_dns1123_subdomain(&name)
        .map(|()| name.clone())
        .map_err(|reason| format!("the claim name {name:?} is not a valid name: {reason}"))
}

/// `generateName` of the claim for port `port_name` of a pod with `generateName`
/// `pod_generate_name`.
pub fn claim_generate_name(pod_generate_name: &str, port_name: &str) -> String {
    format!("{pod_generate_name}{port_name}-")
}

/// The StatefulSet that controls a pod, from its ownerReferences.
pub fn statefulset_owner(owners: &[OwnerReference]) -> Option<&OwnerReference> {
    owners.iter().find(|o| {
        o.controller == Some(true) && o.kind == "StatefulSet" && o.api_version == "apps/v1"
    })
}

/// The ordinal of pod `pod_name` of StatefulSet `statefulset` (`web-3` of `web` → 3).
pub fn ordinal(pod_name: &str, statefulset: &str) -> Option<u32> {
    let suffix = pod_name.strip_prefix(statefulset)?.strip_prefix('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix.parse().ok()
}

/// Keep or delete a StatefulSet's claims, as `persistentVolumeClaimRetentionPolicy` says it
/// for PVCs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// The claims stay (with their ports).
    Retain,
    /// The claims are deleted (their ports released once no pod uses them).
    Delete,
}

impl Retention {
    fn parse(key: &str, value: &str) -> Result<Self, String> {
        match value {
            "Retain" => Ok(Self::Retain),
            "Delete" => Ok(Self::Delete),
            other => Err(format!(
                "annotation {key:?} is {other:?}: use \"Retain\" or \"Delete\""
            )),
        }
    }
}

/// What happens to a StatefulSet's claims, like `persistentVolumeClaimRetentionPolicy`. A
/// port holds no data, so the defaults differ from storage: deleting the StatefulSet frees
/// its ports, scaling down keeps them for the ordinals that come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// When the StatefulSet is deleted.
    pub when_deleted: Retention,
    /// When a scale-down removes an ordinal.
    pub when_scaled: Retention,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            when_deleted: Retention::Delete,
            when_scaled: Retention::Retain,
        }
    }
}

impl RetentionPolicy {
    /// The policy from annotation maps, later ones winning (pod template, then the
    /// StatefulSet itself). A bad value is an error naming the annotation; the others still
    /// apply.
    pub fn resolve(layers: &[&BTreeMap<String, String>]) -> (Self, Vec<String>) {
        let mut policy = Self::default();
        let mut errors = vec![];
        for layer in layers {
            for (key, slot) in [
                (WHEN_DELETED_ANNOTATION, &mut policy.when_deleted),
                (WHEN_SCALED_ANNOTATION, &mut policy.when_scaled),
            ] {
                if let Some(value) = layer.get(key) {
                    match Retention::parse(key, value) {
                        Ok(retention) => *slot = retention,
                        Err(error) => errors.push(error),
                    }
                }
            }
        }
        (policy, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: if kind == "StatefulSet" {
                "apps/v1"
            } else {
                "v1"
            }
            .into(),
            kind: kind.into(),
            name: "web".into(),
            uid: "u".into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    #[test]
    fn names_and_ordinals() {
        assert_eq!(claim_name("web-0", "game").as_deref(), Ok("web-0-game"));
        assert!(
            claim_name(&"a".repeat(250), "game").is_err_and(|e| e.contains("not a valid name"))
        );
        assert_eq!(claim_generate_name("web-7d9f-", "game"), "web-7d9f-game-");
        assert_eq!(ordinal("web-3", "web"), Some(3));
        assert_eq!(ordinal("web-12", "web"), Some(12));
        assert_eq!(ordinal("web-x", "web"), None);
        assert_eq!(ordinal("webby-1", "web"), None);
        assert_eq!(ordinal("web-", "web"), None);
    }

    #[test]
    fn only_a_controlling_statefulset_counts() {
        assert!(statefulset_owner(&[owner("StatefulSet", true)]).is_some());
        assert!(statefulset_owner(&[owner("StatefulSet", false)]).is_none());
        assert!(statefulset_owner(&[owner("ReplicaSet", true)]).is_none());
    }

    #[test]
    fn labels_fit_or_are_left_out() {
        let labels = pod_claim_labels(Some("web-0"), Some("web"));
        assert!(is_pod_claim(&labels));
        assert_eq!(labels.get(POD_LABEL).map(String::as_str), Some("web-0"));
        let long = "a".repeat(64);
        let labels = pod_claim_labels(Some(&long), None);
        assert_eq!(labels.len(), 1);
        assert!(!is_pod_claim(&BTreeMap::new()));
        let stamped = BTreeMap::from([(ADMITTED_LABEL.to_owned(), "1764668400".to_owned())]);
        assert_eq!(admitted_at(&stamped), Some(1_764_668_400));
        let forged = BTreeMap::from([(ADMITTED_LABEL.to_owned(), "soon".to_owned())]);
        assert_eq!(admitted_at(&forged), None);
    }

    #[test]
    fn policy_layers_and_bad_values() {
        let (policy, errors) = RetentionPolicy::resolve(&[]);
        assert_eq!(policy, RetentionPolicy::default());
        assert_eq!(policy.when_deleted, Retention::Delete);
        assert_eq!(policy.when_scaled, Retention::Retain);
        assert!(errors.is_empty());
        let template = BTreeMap::from([
            (WHEN_SCALED_ANNOTATION.to_owned(), "Delete".to_owned()),
            (WHEN_DELETED_ANNOTATION.to_owned(), "Retain".to_owned()),
        ]);
        let set = BTreeMap::from([(WHEN_DELETED_ANNOTATION.to_owned(), "Delete".to_owned())]);
        let (policy, _) = RetentionPolicy::resolve(&[&template, &set]);
        assert_eq!(policy.when_scaled, Retention::Delete);
        assert_eq!(policy.when_deleted, Retention::Delete);
        let bad = BTreeMap::from([(WHEN_SCALED_ANNOTATION.to_owned(), "delete".to_owned())]);
        let (policy, errors) = RetentionPolicy::resolve(&[&bad]);
        assert_eq!(policy.when_scaled, Retention::Retain);
        assert!(
            errors[0].contains("use \"Retain\" or \"Delete\""),
            "{errors:?}"
        );
    }
}
