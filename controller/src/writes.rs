//! Every API write to the objects the controller reconciles: claims, HostPorts, classes (the
//! only other writes are Events, in `events.rs`, and the leader Lease, in `leader.rs`). Each
//! is scoped to the fields it owns, safe to repeat, returns the object as the API server
//! stored it (so the next step never works on a stale copy), and records the version it
//! wrote over, so a reconcile handed that version later by the lagging watch cache waits
//! instead of repeating the write (`Context::is_stale`). Nothing else writes these objects:
//! a new write belongs here.

use std::time::Instant;

use hostport_api::pod_claims::{is_pod_claim, pod_claim_labels};
use hostport_api::{
    ClaimReference, HostPort, HostPortClaim, HostPortClass, HostPortClassStatus, HostPortSpec,
    HostPortStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, Result, status_code};

/// `namespace/name` of a claim, for messages.
pub fn claim_name(claim: &HostPortClaim) -> String {
    display_name(claim)
}

fn claims(ctx: &Context, claim: &HostPortClaim) -> Api<HostPortClaim> {
    Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default())
}

/// Creates the HostPort `port-<port>` for `claim`: the create is the lock on the port. The
/// raw client error is returned, as 409 is an answer here (the port is taken), not a failure.
/// The HostPort of a claim made for a pod carries the pod-claim label (it gets no status
/// write: `host_port::set_bound`), so `kubectl get hp -l hostport.rmb938.com/pod-claim` lists
/// them.
pub async fn create_host_port(
    ctx: &Context,
    claim: &HostPortClaim,
    uid: &str,
    port: u16,
) -> std::result::Result<HostPort, kube::Error> {
    let mut host_port = HostPort::new(
        &HostPort::name_for_port(port),
        HostPortSpec {
            claim_ref: Some(ClaimReference {
                api_version: Some(HostPortClaim::api_version(&()).into_owned()),
                kind: Some(HostPortClaim::kind(&()).into_owned()),
                name: Some(claim.name_any()),
                namespace: claim.namespace(),
                uid: Some(uid.to_owned()),
                ..ClaimReference::default()
            }),
            host_port_class_name: claim.spec.host_port_class_name.clone(),
            port: Some(i32::from(port)),
        },
    );
    if is_pod_claim(claim.labels()) {
        host_port.metadata.labels = Some(pod_claim_labels(None, None));
    }
    Api::<HostPort>::all(ctx.client.clone())
        .create(&PostParams::default(), &host_port)
        .await
}

/// Writes a HostPort's status.
pub async fn host_port_status(
    ctx: &Context,
    host_port: &HostPort,
    status: &HostPortStatus,
) -> Result<HostPort> {
    let api = Api::<HostPort>::all(ctx.client.clone());
    write_status(ctx, &api, host_port, status).await
}

/// Writes a class's status.
pub async fn class_status(
    ctx: &Context,
    class: &HostPortClass,
    status: &HostPortClassStatus,
) -> Result<HostPortClass> {
    let api = Api::<HostPortClass>::all(ctx.client.clone());
    write_status(ctx, &api, class, status).await
}

/// Writes a claim's status (`status` carries explicit nulls for what must be cleared).
pub async fn claim_status(
    ctx: &Context,
    claim: &HostPortClaim,
    status: &serde_json::Value,
) -> Result<HostPortClaim> {
    write_status(ctx, &claims(ctx, claim), claim, status).await
}

/// A merge patch of `status` on the object's `/status`.
async fn write_status<K, S>(ctx: &Context, api: &Api<K>, object: &K, status: &S) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let name = object.name_any();
    let written = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(Error::api(
            "writing the status of",
            kind_of(object),
            display_name(object),
        ))?;
    wrote_over(ctx, object);
    Ok(written)
}

/// `namespace/name` of a namespaced object, `name` of a cluster-scoped one.
fn display_name<K: Resource>(object: &K) -> String {
    match &object.meta().namespace {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// Sets `spec.hostPortName`, only if the claim is still the version we read (a stale copy
/// gets 409 and is reconciled again; the field is immutable once set).
pub async fn bind_claim(
    ctx: &Context,
    claim: &HostPortClaim,
    host_port: &str,
) -> Result<HostPortClaim> {
    let patch = json!({
        "metadata": { "resourceVersion": claim.resource_version() },
        "spec": { "hostPortName": host_port },
    });
    let written = claims(ctx, claim)
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(Error::api("binding", "HostPortClaim", claim_name(claim)))?;
    wrote_over(ctx, claim);
    Ok(written)
}

/// Edits a claim's ownerReferences on a fresh copy (the caches keep only some of them):
/// `edit` changes the list and says whether it did; written only then, guarded by the fresh
/// copy's resourceVersion (a concurrent change is a `Conflict`, retried).
pub async fn edit_claim_owners(
    ctx: &Context,
    claim: &HostPortClaim,
    edit: impl FnOnce(&mut Vec<OwnerReference>) -> bool,
) -> Result<()> {
    let Some(fresh) = fresh_claim(ctx, claim).await? else {
        return Ok(());
    };
    let (api, name) = (claims(ctx, claim), claim.name_any());
    let mut owners = fresh.metadata.owner_references.clone().unwrap_or_default();
    if !edit(&mut owners) {
        return Ok(());
    }
    let patch = json!({
        "metadata": { "resourceVersion": fresh.resource_version(), "ownerReferences": owners },
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::api(
            "setting the owners of",
            "HostPortClaim",
            claim_name(claim),
        ))?;
    wrote_over(ctx, claim);
    Ok(())
}

/// Deletes a claim, only the one we looked at (its UID; with `unchanged`, only that version
/// of it: a concurrent write is a `Conflict`, retried); gone already is success. Its
/// finalizer still keeps it (and its port) while pods use it.
pub async fn delete_claim(ctx: &Context, claim: &HostPortClaim, unchanged: bool) -> Result<()> {
    let preconditions = Preconditions {
        uid: claim.uid(),
        resource_version: claim.resource_version().filter(|_| unchanged),
    };
    let name = claim.name_any();
    delete_exact(&claims(ctx, claim), &name, preconditions, "HostPortClaim").await
}

/// The claim as the API server has it now (`None`: gone, or replaced by another of its
/// name).
pub async fn fresh_claim(ctx: &Context, claim: &HostPortClaim) -> Result<Option<HostPortClaim>> {
    let fresh = claims(ctx, claim)
        .get_opt(&claim.name_any())
        .await
        .map_err(Error::api("reading", "HostPortClaim", claim_name(claim)))?;
    Ok(fresh.filter(|f| f.uid() == claim.uid()))
}

/// Deletes a HostPort; `uid` (when known) makes sure it is the object we looked at. Gone
/// already is success.
pub async fn delete_host_port(ctx: &Context, name: &str, uid: Option<String>) -> Result<()> {
    let preconditions = Preconditions {
        uid,
        resource_version: None,
    };
    let api = Api::<HostPort>::all(ctx.client.clone());
    delete_exact(&api, name, preconditions, "HostPort").await
}

/// Deletes `name` if it still matches `preconditions` (none set: any); gone already is
/// success.
async fn delete_exact<K>(
    api: &Api<K>,
    name: &str,
    preconditions: Preconditions,
    kind: &'static str,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let any = preconditions.uid.is_none() && preconditions.resource_version.is_none();
    let params = DeleteParams {
        preconditions: (!any).then_some(preconditions),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(error) if status_code(&error) == Some(404) => Ok(()),
        Err(error) => Err(Error::api("deleting", kind, name)(error)),
    }
}

/// Adds our finalizer if missing; the updated object when it wrote.
pub async fn add_finalizer<K>(ctx: &Context, api: &Api<K>, object: &K) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match hostport_api::finalizer::add_patch(object.meta().finalizers.as_deref()) {
        Some(operations) => {
            guarded_patch(ctx, api, object, operations, "adding the finalizer to").await
        }
        None => Ok(None),
    }
}

/// Removes our finalizer if present; the updated object when it wrote (`None` also when
/// the object is gone).
pub async fn remove_finalizer<K>(ctx: &Context, api: &Api<K>, object: &K) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match hostport_api::finalizer::remove_patch(object.finalizers()) {
        Some(operations) => {
            guarded_patch(ctx, api, object, operations, "removing the finalizer from").await
        }
        None => Ok(None),
    }
}

/// A JSON patch whose `test` operations guard it: a failed test (422) means our copy was
/// outdated, a `StaleCopy`, retried on a fresh one.
async fn guarded_patch<K>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    operations: serde_json::Value,
    action: &'static str,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.name_any();
    let kind = kind_of(object);
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(|source| Error::Serialize {
            name: name.clone(),
            source,
        })?;
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(updated) => {
            wrote_over(ctx, object);
            Ok(Some(updated))
        }
        // Gone while we looked: nothing left to do.
        Err(error) if status_code(&error) == Some(404) => Ok(None),
        Err(error) if status_code(&error) == Some(422) => {
            Err(Error::StaleCopy { action, kind, name })
        }
        Err(error) => Err(Error::api(action, kind, name)(error)),
    }
}

/// The kind of a statically typed object, for messages (`'static`, like every other error
/// field; derived kinds are borrowed from the type).
fn kind_of<K: Resource<DynamicType = ()>>(_: &K) -> &'static str {
    static STATIC_TYPE: () = ();
    match K::kind(&STATIC_TYPE) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

fn wrote_over<K: Resource>(ctx: &Context, before: &K) {
    ctx.superseded.wrote_over(before, Instant::now());
}
