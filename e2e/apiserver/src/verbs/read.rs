//! get and list (watch lives in `crate::watch`).

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, json_response};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::table;

impl Ctx<'_> {
    pub(super) fn get(&self) -> ApiResult<Response> {
        let object = self.current()?;
        if self.as_table {
            let version = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            return Ok(json_response(
                StatusCode::OK,
                &table::table(self.rt, &[&object], &version),
            ));
        }
        Ok(json_response(StatusCode::OK, &object))
    }

    pub(super) fn list(&self) -> ApiResult<Response> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())?;
        let limit: usize = self
            .query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let (objects, revision) = {
            let state = self.handles.db.state();
            (
                state
                    .store
                    .list(&self.rt.key(), self.path.namespace.as_deref()),
                state.store.revision(),
            )
        };
        // `continue` is "<revision>:<last namespace/name returned>".
        let (list_revision, after) = match self.query.get("continue") {
            Some(token) => {
                let (rev, last) = token.split_once(':').ok_or_else(|| {
                    ApiError::bad_request(format!("invalid continue token {token:?}"))
                })?;
                (rev.parse().unwrap_or(revision), Some(last.to_owned()))
            }
            None => (revision, None),
        };
        let mut items = vec![];
        let mut next = None;
        for object in objects {
            let id = format!(
                "{}/{}",
                object["metadata"]["namespace"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default()
            );
            if after.as_ref().is_some_and(|a| id.as_str() <= a.as_str()) {
                continue;
            }
            if !labels.matches_object(&object) || !fields.matches(&object) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                next = items.last().map(|last: &Arc<Value>| {
                    format!(
                        "{list_revision}:{}/{}",
                        last["metadata"]["namespace"].as_str().unwrap_or_default(),
                        last["metadata"]["name"].as_str().unwrap_or_default()
                    )
                });
                break;
            }
            items.push(object);
        }
        if self.as_table {
            let objects: Vec<&Value> = items.iter().map(|o| o.as_ref()).collect();
            return Ok(json_response(
                StatusCode::OK,
                &table::table(self.rt, &objects, &list_revision.to_string()),
            ));
        }
        let mut metadata = json!({"resourceVersion": list_revision.to_string()});
        if let Some(token) = next {
            metadata["continue"] = Value::String(token);
        }
        if self.as_metadata {
            let objects: Vec<&Value> = items.iter().map(|o| o.as_ref()).collect();
            return Ok(json_response(
                StatusCode::OK,
                &table::metadata_list(&objects, metadata),
            ));
        }
        let list = json!({
            "apiVersion": self.rt.api_version(),
            "kind": format!("{}List", self.rt.kind),
            "metadata": metadata,
            "items": items.iter().map(|o| o.as_ref()).collect::<Vec<_>>(),
        });
        Ok(json_response(StatusCode::OK, &list))
    }
}
