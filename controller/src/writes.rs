//! The API writes of the controller, each scoped to the fields it owns, safe to repeat, and
//! returning the object as the API server stored it (so the next step never works on a
//! stale copy).

use hostport_api::{ClaimReference, HostPort, HostPortClaim, HostPortSpec, HostPortStatus};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::error::{Error, Result};

/// `namespace/name` of a claim, for messages.
pub fn claim_name(claim: &HostPortClaim) -> String {
    format!(
        "{}/{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    )
}

/// Creates the HostPort `port-<port>` for `claim`: the create is the lock on the port.
pub async fn create_host_port(
    api: &Api<HostPort>,
    claim: &HostPortClaim,
    uid: &str,
    class: &str,
    port: u16,
) -> std::result::Result<HostPort, kube::Error> {
    let host_port = HostPort::new(
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
            host_port_class_name: class.to_owned(),
            port: Some(i32::from(port)),
        },
    );
    api.create(&PostParams::default(), &host_port).await
}

/// Writes a HostPort's status (merge patch on `/status`).
pub async fn host_port_status(
    api: &Api<HostPort>,
    name: &str,
    status: &HostPortStatus,
) -> Result<HostPort> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(Error::api("writing the status of", "HostPort", name))
}

/// Writes a claim's status (merge patch on `/status`; `status` carries explicit nulls for
/// what must be cleared).
pub async fn claim_status(
    api: &Api<HostPortClaim>,
    claim: &HostPortClaim,
    status: serde_json::Value,
) -> Result<HostPortClaim> {
    api.patch_status(
        &claim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(Error::api(
        "writing the status of",
        "HostPortClaim",
        claim_name(claim),
    ))
}

/// Sets `spec.hostPortName`, only if the claim is still the version we read (a stale copy
/// gets 409 and is reconciled again; the field is immutable once set).
pub async fn bind_claim(
    api: &Api<HostPortClaim>,
    claim: &HostPortClaim,
    host_port: &str,
) -> Result<HostPortClaim> {
    let patch = json!({
        "metadata": { "resourceVersion": claim.resource_version() },
        "spec": { "hostPortName": host_port },
    });
    api.patch(
        &claim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(Error::api("binding", "HostPortClaim", claim_name(claim)))
}

/// Deletes a HostPort; `uid` (when known) makes sure it is the object we looked at. Gone
/// already is success.
pub async fn delete_host_port(api: &Api<HostPort>, name: &str, uid: Option<String>) -> Result<()> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Api {
            action: "deleting",
            kind: "HostPort",
            name: name.to_owned(),
            source,
        }),
    }
}

/// Adds `finalizer` if missing (JSON patch guarded by a test of the current list); the
/// updated object when it wrote.
pub async fn add_finalizer<K>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
    kind: &'static str,
) -> Result<Option<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers = object.finalizers();
    if finalizers.iter().any(|f| f == finalizer) {
        return Ok(None);
    }
    let operations = if finalizers.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ])
    };
    json_patch_object(api, object, operations, "adding the finalizer to", kind).await
}

/// Removes `finalizer` if present (JSON patch guarded by a test of its position); the
/// updated object when it wrote (`None` also when the object is gone).
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
    kind: &'static str,
) -> Result<Option<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = object.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(None);
    };
    let path = format!("/metadata/finalizers/{index}");
    let operations = json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]);
    json_patch_object(api, object, operations, "removing the finalizer from", kind).await
}

async fn json_patch_object<K>(
    api: &Api<K>,
    object: &K,
    operations: serde_json::Value,
    action: &'static str,
    kind: &'static str,
) -> Result<Option<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.name_any();
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(|source| Error::Serialize {
            name: name.clone(),
            source,
        })?;
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        // Gone while we looked: nothing left to do.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        // The guarding test failed: our copy was stale. Retried like a conflict.
        Err(kube::Error::Api(mut status)) if status.code == 422 => {
            status.code = 409;
            Err(Error::Api {
                action,
                kind,
                name,
                source: kube::Error::Api(status),
            })
        }
        Err(source) => Err(Error::Api {
            action,
            kind,
            name,
            source,
        }),
    }
}
