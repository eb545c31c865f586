//! get and list (watch lives in `crate::watch`).

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
        // `continue` is "<revision>:<namespace>/<name> of the last object returned".
        let (list_revision, after) = match self.query.get("continue") {
            Some(token) => {
                let invalid = || ApiError::bad_request(format!("invalid continue token {token:?}"));
                let (rev, last) = token.split_once(':').ok_or_else(invalid)?;
                let (namespace, name) = last.split_once('/').ok_or_else(invalid)?;
                (
                    rev.parse().ok(),
                    Some((namespace.to_owned(), name.to_owned())),
                )
            }
            None => (None, None),
        };
        let (items, next, revision) = {
            let state = self.handles.db.state();
            let (items, next) = state.store.page(
                &self.rt.key(),
                self.path.namespace.as_deref(),
                after.as_ref(),
                limit,
                |object| labels.matches_object(object) && fields.matches(object),
            );
            (items, next, state.store.revision())
        };
        let list_revision = list_revision.unwrap_or(revision);
        let next = next.map(|(namespace, name)| format!("{list_revision}:{namespace}/{name}"));
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
