//! update and patch, including the `status` subresource.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, json_response, parse_body};
use crate::admission::Operation;
use crate::faults::Verb;
use crate::object::{finalizers, is_deleting, resource_version, spec_part, without_version};
use crate::patch::{PatchKind, apply_patch};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::store::EventKind;

/// Times a PATCH is retried internally when the object changed underneath it (as
/// kube-apiserver's GuaranteedUpdate does).
const PATCH_RETRIES: usize = 16;

impl Ctx<'_> {
    pub(super) async fn update(&self, body: &[u8]) -> ApiResult<Response> {
        let new = parse_body(body)?;
        if new["metadata"]["name"].as_str() != Some(self.name()) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let old = self.current()?;
        let Some(requested) = resource_version(&new) else {
            return Err(ApiError::invalid(
                self.rt,
                self.name(),
                vec![FieldError::invalid(
                    "metadata.resourceVersion",
                    &json!(0),
                    "must be specified for an update",
                )],
            ));
        };
        if Some(requested) != resource_version(&old) {
            return Err(ApiError::stale(self.rt, self.name()));
        }
        let written = self.write_update(&old, new).await?;
        Ok(json_response(StatusCode::OK, &written))
    }

    pub(super) async fn patch(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
        let kind = PatchKind::from_content_type(content_type)?;
        for _ in 0..PATCH_RETRIES {
            let old = match self.current() {
                Ok(old) => old,
                Err(e)
                    if e.code == 404
                        && kind == PatchKind::Apply
                        && self.path.subresource.is_none() =>
                {
                    let mut object = parse_body(body).or_else(|_| {
                        apply_patch(kind, &json!({}), body, self.rt.custom.is_some())
                    })?;
                    object["metadata"]["name"] = Value::String(self.name().to_owned());
                    // Authorized as a create as well, as kube-apiserver does.
                    self.handles.db.state().faults.also_authorized_as(
                        Verb::Create,
                        &self.rt.plural,
                        &self.user.username,
                    );
                    let object = self.prepare_create(object)?;
                    let created = self.admit_and_store_create(object).await?;
                    return Ok(json_response(StatusCode::CREATED, &created));
                }
                Err(e) => return Err(e),
            };
            let patched = apply_patch(kind, &old, body, self.rt.custom.is_some())?;
            if let Some(requested) = resource_version(&patched)
                && Some(requested) != resource_version(&old)
            {
                return Err(ApiError::stale(self.rt, self.name()));
            }
            match self.write_update(&old, patched).await {
                Err(e) if e.code == 409 && e.message.contains("the object has been modified") => {
                    continue;
                }
                Err(e) => return Err(e),
                Ok(written) => return Ok(json_response(StatusCode::OK, &written)),
            }
        }
        Err(ApiError::stale(self.rt, self.name()))
    }

    /// Admission, validation and the write of an update based on `old`; 409 if `old` is no
    /// longer current by the time it is written.
    pub(super) async fn write_update(&self, old: &Arc<Value>, mut new: Value) -> ApiResult<Value> {
        let status_only = self.path.subresource.as_deref() == Some("status");
        if status_only {
            let status = new.get("status").cloned();
            // A pod's status write may change its labels and annotations too, as
            // kube-apiserver's pod status strategy allows (what the kubelet relied on).
            let pod_metadata = (self.rt.plural == "pods" && self.rt.group.is_empty()).then(|| {
                (
                    new["metadata"].get("labels").cloned(),
                    new["metadata"].get("annotations").cloned(),
                )
            });
            new = (**old).clone();
            if let Some((labels, annotations)) = pod_metadata {
                for (field, value) in [("labels", labels), ("annotations", annotations)] {
                    match value {
                        Some(value) => new["metadata"][field] = value,
                        None => {
                            if let Some(meta) = new["metadata"].as_object_mut() {
                                meta.remove(field);
                            }
                        }
                    }
                }
            }
            match status {
                Some(status) => new["status"] = status,
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        } else {
            if !new["metadata"].is_object() {
                new["metadata"] = json!({});
            }
            // A different UID names another object: refused, as kube-apiserver does.
            if let Some(uid) = new["metadata"]["uid"].as_str()
                && Some(uid) != old["metadata"]["uid"].as_str()
            {
                return Err(ApiError::invalid(
                    self.rt,
                    self.name(),
                    vec![FieldError::invalid(
                        "metadata.uid",
                        &json!(uid),
                        "field is immutable",
                    )],
                ));
            }
            // Server-owned and immutable metadata comes from the stored object.
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "name",
                "namespace",
            ] {
                match old["metadata"].get(field) {
                    Some(value) => new["metadata"][field] = value.clone(),
                    None => {
                        if let Some(meta) = new["metadata"].as_object_mut() {
                            meta.remove(field);
                        }
                    }
                }
            }
            new["apiVersion"] = old["apiVersion"].clone();
            new["kind"] = old["kind"].clone();
            if self.rt.status_subresource {
                match old.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            if is_deleting(old) {
                let before = finalizers(old);
                if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                    return Err(ApiError::invalid(
                        self.rt,
                        self.name(),
                        vec![FieldError::forbidden(
                            "metadata.finalizers",
                            format!(
                                "no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                            ),
                        )],
                    ));
                }
            }
        }
        if self.rt.custom.is_some() {
            self.prune_and_default(&mut new)?;
        }
        let sub = self.path.subresource.as_deref();
        self.admission(Operation::Update, sub, Some(old))
            .mutate(&mut new)
            .await?;
        self.prune_and_default(&mut new)?;
        self.validate_object(&new, Some(old))?;
        self.admission(Operation::Update, sub, Some(old))
            .validate(&new)
            .await?;
        if spec_part(&new) != spec_part(old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if self.rt.is_namespace() {
            crate::namespace_lifecycle::label_with_name(&mut new);
        }
        if without_version(&new) == without_version(old) {
            return Ok((**old).clone());
        }
        if self.query.dry_run() {
            return Ok(new);
        }
        let mut state = self.handles.db.state();
        let key = self.key(self.name());
        let current = state.store.get(&self.rt.key(), &key);
        if current.as_ref().and_then(|c| resource_version(c)) != resource_version(old) {
            return Err(ApiError::stale(self.rt, self.name()));
        }
        if is_deleting(&new) && finalizers(&new).is_empty() {
            let removed = state
                .store
                .remove(&self.rt.key(), &key)
                .map(|v| (*v).clone())
                .unwrap_or(new);
            super::delete::finish_removal(&mut state, self.rt, &removed);
            return Ok(removed);
        }
        if self.rt.is_crd() {
            let served = state.registry.register_crd(&new).map_err(|e| {
                ApiError::invalid(
                    self.rt,
                    self.name(),
                    vec![FieldError::invalid("spec", &json!("object"), e)],
                )
            })?;
            new["status"] = crate::registry::crd_status(&served);
        }
        new["metadata"]["resourceVersion"] = Value::String(state.store.next_revision().to_string());
        let stored = state
            .store
            .put(&self.rt.key(), key, new, EventKind::Modified);
        Ok((*stored).clone())
    }
}
