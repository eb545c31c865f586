//! delete and deletecollection: finalizers hold an object with a `deletionTimestamp`, the
//! last one lets it go.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, json_response, parse_body};
use crate::admission::Operation;
use crate::db::State;
use crate::namespace_lifecycle;
use crate::object::{finalizers, is_deleting, now, object_key};
use crate::registry::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::store::{EventKind, ObjectKey};

impl Ctx<'_> {
    pub(super) async fn delete(&self, body: &[u8]) -> ApiResult<Response> {
        let options: Value = if body.is_empty() {
            json!({})
        } else {
            parse_body(body)?
        };
        let old = self.current()?;
        let preconditions = &options["preconditions"];
        if let Some(uid) = preconditions["uid"].as_str()
            && Some(uid) != old["metadata"]["uid"].as_str()
        {
            return Err(ApiError::conflict(
                self.rt,
                self.name(),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(
                self.rt,
                self.name(),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                ),
            ));
        }
        self.admission(Operation::Delete, None, Some(&old))
            .validate(&Value::Null)
            .await?;
        if self.query.dry_run() {
            return Ok(json_response(StatusCode::OK, &old));
        }
        let mut state = self.handles.db.state();
        let result = delete_object(&mut state, self.rt, &self.key(self.name()))
            .ok_or_else(|| ApiError::not_found(self.rt, self.name()))?;
        Ok(json_response(StatusCode::OK, &result))
    }

    pub(super) async fn delete_collection(&self) -> ApiResult<Response> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())?;
        let mut state = self.handles.db.state();
        let targets: Vec<ObjectKey> = state
            .store
            .list(&self.rt.key(), self.path.namespace.as_deref())
            .into_iter()
            .filter(|o| labels.matches_object(o) && fields.matches(o))
            .map(|o| object_key(&o))
            .collect();
        let mut items = vec![];
        for key in targets {
            if let Some(result) = delete_object(&mut state, self.rt, &key) {
                items.push(result);
            }
        }
        let list = json!({
            "apiVersion": self.rt.api_version(),
            "kind": format!("{}List", self.rt.kind),
            "metadata": {"resourceVersion": state.store.revision().to_string()},
            "items": items,
        });
        Ok(json_response(StatusCode::OK, &list))
    }
}

/// Deletes one object: with finalizers it gets a `deletionTimestamp`, without it is removed.
/// Returns the object as the response shows it.
pub(crate) fn delete_object(
    state: &mut State,
    rt: &ResourceType,
    key: &ObjectKey,
) -> Option<Value> {
    let current = state.store.get(&rt.key(), key)?;
    if !finalizers(&current).is_empty() || rt.is_namespace() {
        if is_deleting(&current) && !rt.is_namespace() {
            return Some((*current).clone());
        }
        let mut marked = (*current).clone();
        if !is_deleting(&marked) {
            marked["metadata"]["deletionTimestamp"] = Value::String(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if rt.is_namespace() {
                marked["status"]["phase"] = json!("Terminating");
            }
            marked["metadata"]["resourceVersion"] =
                Value::String(state.store.next_revision().to_string());
            state
                .store
                .put(&rt.key(), key.clone(), marked.clone(), EventKind::Modified);
        }
        if rt.is_namespace() {
            namespace_lifecycle::empty_namespace(state, &key.1);
            return state
                .store
                .get(&rt.key(), key)
                .map(|v| (*v).clone())
                .or(Some(marked));
        }
        return Some(marked);
    }
    let removed = state.store.remove(&rt.key(), key)?;
    finish_removal(state, rt, &removed);
    Some((*removed).clone())
}

/// What follows an object's removal: a CRD stops being served; the last object of a
/// terminating namespace lets the namespace go.
pub(super) fn finish_removal(state: &mut State, rt: &ResourceType, removed: &Value) {
    if rt.is_crd()
        && let Some(key) = state.registry.unregister_crd(removed)
    {
        state.store.drop_resource(&key);
    }
    let namespace = removed["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    if !namespace.is_empty() {
        namespace_lifecycle::remove_namespace_if_done(state, namespace);
    }
}
