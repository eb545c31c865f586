//! Making the claims a pod's class annotations ask for, inside its admission: the webhook
//! creates each claim (or finds the one an earlier admission of the same pod made) and the
//! pod's admission then waits for the allocator to bind it, exactly as for a claim applied
//! together with its pod. Allocation stays in one place, the controller, with its one rule
//! (the HostPort named after the port is the lock), so webhook replicas never pick ports.
//!
//! Before anything is created the class must exist, admit the namespace and have a free port
//! (as the caches see it): a pod that cannot get a port makes nothing. On a dry-run nothing
//! is created; the answer carries the port the claim would get now.

use std::collections::BTreeSet;

use hostport_api::annotations::{
    ClaimAnnotation, count_annotation_key, port_policy_annotation_key,
};
use hostport_api::pod_claims::{ADMITTED_LABEL, STATEFULSET_LABEL, admitted_at, is_pod_claim};
use hostport_api::port_set::PortSet;
use hostport_api::ports::{describe_ranges, distinct_port_count};
use hostport_api::{HostPortClaim, HostPortClass};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::plan::{ClaimNaming, PodClaim};
use super::{Binding, ClaimState, ClaimStates};
use crate::cached::CachedClaim;
use crate::context::Context;
use crate::verdict::{Verdict, deny, reasons};

/// The claims made (or found) for a pod.
#[derive(Debug, Default)]
pub struct Made {
    /// The claim annotations the pod gets, one per port.
    pub annotations: Vec<ClaimAnnotation>,
    /// Names of the claims that exist (created now or earlier): their state is waited for.
    pub existing: BTreeSet<String>,
    /// On a dry-run, the state of claims that were not created: the port each would get.
    pub predicted: ClaimStates,
}

/// Makes (or finds) the claims of `plans` for a pod in `namespace`; nothing is created when
/// `dry_run`.
pub async fn make(
    ctx: &Context,
    namespace: &str,
    plans: &[PodClaim],
    host_network: bool,
    dry_run: bool,
) -> Result<Made, Verdict> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    // Every check first, so a pod denied for its second claim does not leave its first.
    let mut reused = vec![];
    let mut new: Vec<(&PodClaim, HostPortClaim, u16, bool)> = vec![];
    for plan in plans {
        let Some(class) = ctx.class(&plan.class).await else {
            return Err(deny(
                reasons::CLASS_NOT_FOUND,
                format!(
                    "annotation {:?} names HostPortClass {:?}, which does not exist: create the class, or fix the annotation",
                    plan.key, plan.class
                ),
            ));
        };
        if host_network && !class.spec.allow_host_network {
            return Err(deny(
                reasons::HOST_NETWORK_NOT_ALLOWED,
                format!(
                    "spec.hostNetwork is true, but annotation {:?} names HostPortClass {:?}, which does not allow hostNetwork pods (its spec.allowHostNetwork is false; a cluster admin decides): name a class that allows them, or remove hostNetwork",
                    plan.key, plan.class
                ),
            ));
        }
        if let ClaimNaming::Fixed(name) = &plan.naming
            && let Some(existing) = ctx.claim_for_pod(namespace, name).await?
        {
            reusable(&existing, name, plan)?;
            reused.push((plan, name, existing));
            continue;
        }
        let object = plan.object(namespace, now);
        if let Some((reason, rule)) = class.refuses_claim_spec(&object.spec) {
            let port_name = plan.port_names.first().map_or("", String::as_str);
            let asking = if reason == reasons::BLOCK_TOO_LARGE {
                count_annotation_key(port_name)
            } else {
                port_policy_annotation_key(port_name)
            };
            return Err(deny(
                reason,
                format!(
                    "annotation {asking:?}: {rule}: remove the annotation, or name a class that allows it in {:?}",
                    plan.key
                ),
            ));
        }
        let same_class = new.iter().filter(|(p, ..)| p.class == plan.class).count();
        if let Verdict::Deny { reason, message } =
            ctx.class_access(&object, &class, same_class).await
        {
            return Err(deny(
                reason,
                format!("annotation {:?}: {message}", plan.key),
            ));
        }
        // Ports predicted for this admission's earlier new claims are not offered twice.
        let taken: Vec<u16> = new
            .iter()
            .flat_map(|(plan, _, base, _)| (0..plan.count).filter_map(|i| base.checked_add(i)))
            .collect();
        let port = free_block(ctx, &class, plan, &taken).ok_or_else(|| exhausted(plan, &class))?;
        new.push((plan, object, port, class.spec.allow_host_network));
    }
    let mut made = Made::default();
    for (plan, name, existing) in reused {
        if !dry_run {
            restart_grace(ctx, namespace, name, &existing, plan, now).await?;
        }
        made.annotations.extend(plan.annotations(name));
        made.existing.insert(name.clone());
    }
    for (plan, object, port, host_network) in new {
        if dry_run {
            let name = match &plan.naming {
                ClaimNaming::Fixed(name) | ClaimNaming::Generated(name) => name.clone(),
            };
            made.annotations.extend(plan.annotations(&name));
            // Not made, so nothing to verify: the port it would get now.
            let binding = Binding {
                port,
                claim_uid: String::new(),
                host_port: hostport_api::HostPort::name_for_port(port),
                policy: plan.policy,
                count: plan.count,
                host_network,
            };
            made.predicted.insert(name, ClaimState::Bound(binding));
            continue;
        }
        let name = create(ctx, namespace, plan, &object).await?;
        made.annotations.extend(plan.annotations(&name));
        made.existing.insert(name);
    }
    Ok(made)
}

/// Creates the claim; a claim of the same name made meanwhile (a retry of this admission)
/// is used when it was made for this pod.
async fn create(
    ctx: &Context,
    namespace: &str,
    plan: &PodClaim,
    object: &HostPortClaim,
) -> Result<String, Verdict> {
    let api: Api<HostPortClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams::default();
    let created = tokio::time::timeout(ctx.api_timeout, api.create(&params, object));
    let failed = |why: String| {
        deny(
            reasons::POD_CLAIM_FAILED,
            format!(
                "annotation {:?}: the webhook could not create a HostPortClaim of class {:?} for the pod ({why}); try again",
                plan.key, plan.class
            ),
        )
    };
    match created.await {
        Ok(Ok(claim)) => {
            ctx.metrics.pod_claims_created.inc();
            tracing::info!(namespace, claim = %claim.name_any(), class = %plan.class, "claim made for a pod");
            Ok(claim.name_any())
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
            let ClaimNaming::Fixed(name) = &plan.naming else {
                return Err(failed(status.message));
            };
            match ctx.claim_for_pod(namespace, name).await? {
                Some(existing) => {
                    reusable(&existing, name, plan)?;
                    let now = admitted_at(object.labels()).unwrap_or_default();
                    restart_grace(ctx, namespace, name, &existing, plan, now).await?;
                    Ok(name.clone())
                }
                None => Err(failed(status.message)),
            }
        }
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(failed(format!("no answer within {:?}", ctx.api_timeout))),
    }
}

/// A claim reused by a retried admission of a pod that does not exist yet gets a new grace
/// period (its admitted time), so the controller does not delete it as never used while this
/// admission is under way. StatefulSet claims have no grace period.
async fn restart_grace(
    ctx: &Context,
    namespace: &str,
    name: &str,
    existing: &CachedClaim,
    plan: &PodClaim,
    now: i64,
) -> Result<(), Verdict> {
    if existing.pod_claim_labels.contains_key(STATEFULSET_LABEL) {
        return Ok(());
    }
    let api: Api<HostPortClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({"metadata": {"labels": {ADMITTED_LABEL: now.to_string()}}});
    let (params, patch) = (PatchParams::default(), Patch::Merge(patch));
    let written = api.patch(name, &params, &patch);
    match tokio::time::timeout(ctx.api_timeout, written).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(refresh_failed(plan, error.to_string())),
        Err(_) => Err(refresh_failed(
            plan,
            format!("no answer within {:?}", ctx.api_timeout),
        )),
    }
}

fn refresh_failed(plan: &PodClaim, why: String) -> Verdict {
    deny(
        reasons::POD_CLAIM_FAILED,
        format!(
            "annotation {:?}: the webhook could not renew the claim an earlier admission of this pod made ({why}); try again",
            plan.key
        ),
    )
}

/// Whether an existing claim of the pod's claim name may be the pod's: made for a pod, of
/// the class asked for, not being deleted, and not belonging to another (earlier) pod.
fn reusable(existing: &CachedClaim, name: &str, plan: &PodClaim) -> Result<(), Verdict> {
    let key = &plan.key;
    if existing.deleting {
        return Err(deny(
            reasons::CLAIM_DELETING,
            format!(
                "annotation {key:?} needs HostPortClaim {name:?}, which is being deleted (it was made for an earlier pod of this name): create the pod again once it is gone"
            ),
        ));
    }
    if !is_pod_claim(&existing.pod_claim_labels) {
        return Err(deny(
            reasons::POD_CLAIM_CONFLICT,
            format!(
                "annotation {key:?} needs HostPortClaim {name:?} for the pod, but a claim of that name exists that was not made for a pod: delete or rename it, or name the pod or the port differently"
            ),
        ));
    }
    if existing.spec.host_port_class_name != plan.class {
        return Err(deny(
            reasons::POD_CLAIM_CONFLICT,
            format!(
                "annotation {key:?} asks for class {:?}, but HostPortClaim {name:?}, made for an earlier pod of this name, is of class {:?}: delete the claim to change the class",
                plan.class, existing.spec.host_port_class_name
            ),
        ));
    }
    if existing.spec.port_policy() != plan.policy {
        return Err(deny(
            reasons::POD_CLAIM_CONFLICT,
            format!(
                "annotation {key:?} asks for port policy {}, but HostPortClaim {name:?}, made for an earlier pod of this name, has portPolicy {}: delete the claim to change the policy",
                plan.policy.as_str(),
                existing.spec.port_policy().as_str()
            ),
        ));
    }
    if (existing.spec.count(), existing.spec.alignment()) != (plan.count, plan.alignment) {
        return Err(deny(
            reasons::POD_CLAIM_CONFLICT,
            format!(
                "annotation {key:?} asks for a block of {} (alignment {}), but HostPortClaim {name:?}, made for an earlier pod of this name, is a block of {} (alignment {}): delete the claim to change the block",
                plan.count,
                plan.alignment,
                existing.spec.count(),
                existing.spec.alignment()
            ),
        ));
    }
    if let Some((owner, owner_uid)) = &existing.pod_owner {
        return Err(deny(
            reasons::POD_CLAIM_CONFLICT,
            format!(
                "annotation {key:?} needs HostPortClaim {name:?}, which belongs to an earlier pod {owner:?} (uid {owner_uid}) and goes with it: create the pod again once that pod and its claim are gone"
            ),
        ));
    }
    Ok(())
}

/// The first port of the lowest free block `plan` asks for in `class` (a single port: the
/// lowest free port) that no cached HostPort holds and `also_taken` does not list.
fn free_block(
    ctx: &Context,
    class: &HostPortClass,
    plan: &PodClaim,
    also_taken: &[u16],
) -> Option<u16> {
    let mut used =
        ctx.host_ports
            .fold_namespace("", PortSet::default(), |mut used, _, host_port| {
                if let Some(port) = host_port.port {
                    used.insert(port);
                }
                used
            });
    for port in also_taken {
        used.insert(*port);
    }
    used.lowest_free_run(&class.ranges(), plan.count, plan.alignment)
}

fn exhausted(plan: &PodClaim, class: &HostPortClass) -> Verdict {
    let ranges = class.ranges();
    let message = if plan.count > 1 {
        format!(
            "annotation {:?} names HostPortClass {:?}, whose pools ({}) have no {} consecutive free ports{} left: free a block (delete a claim) or add a pool to the class, then create the pod again",
            plan.key,
            plan.class,
            describe_ranges(&ranges),
            plan.count,
            if plan.alignment > 1 {
                format!(" starting at a multiple of {}", plan.alignment)
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "annotation {:?} names HostPortClass {:?}, whose {} ports ({}) are all in use: free a port (delete a claim) or add a pool to the class, then create the pod again",
            plan.key,
            plan.class,
            distinct_port_count(&ranges),
            describe_ranges(&ranges)
        )
    };
    deny(reasons::POOL_EXHAUSTED, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::HostPortClaimSpec;
    use hostport_api::pod_claims::POD_CLAIM_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn plan() -> PodClaim {
        PodClaim {
            naming: ClaimNaming::Fixed("web-0-http".into()),
            class: "games".into(),
            port_names: vec!["http".into()],
            key: "class.hostport.rmb938.com/http".into(),
            labels: Default::default(),
            owner: None,
            policy: hostport_api::PortPolicy::Mapped,
            count: 1,
            alignment: 1,
        }
    }

    fn existing(edit: impl FnOnce(&mut HostPortClaim)) -> HostPortClaim {
        let mut claim = HostPortClaim::new("web-0-http", HostPortClaimSpec::of_class("games"));
        claim.metadata.labels = Some([(POD_CLAIM_LABEL.to_owned(), "true".to_owned())].into());
        edit(&mut claim);
        claim
    }

    fn reusable(existing: &HostPortClaim, plan: &PodClaim) -> Result<(), Verdict> {
        super::reusable(&existing.into(), "web-0-http", plan)
    }

    fn denied_with(verdict: Result<(), Verdict>, text: &str) -> bool {
        matches!(verdict, Err(Verdict::Deny { message, .. }) if message.contains(text))
    }

    #[test]
    fn only_a_claim_made_for_this_pod_is_reused() {
        assert_eq!(reusable(&existing(|_| {}), &plan()), Ok(()));
        let hand_made = existing(|c| c.metadata.labels = None);
        assert!(denied_with(
            reusable(&hand_made, &plan()),
            "was not made for a pod"
        ));
        let other_class = existing(|c| c.spec.host_port_class_name = "web".into());
        assert!(denied_with(
            reusable(&other_class, &plan()),
            "is of class \"web\""
        ));
        let deleting = existing(|c| {
            c.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        });
        assert!(denied_with(
            reusable(&deleting, &plan()),
            "is being deleted"
        ));
        let owned = existing(|c| {
            c.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "web-0".into(),
                uid: "old".into(),
                ..OwnerReference::default()
            }]);
        });
        assert!(denied_with(
            reusable(&owned, &plan()),
            "belongs to an earlier pod"
        ));
    }
}
