//! The verbs — get, list, watch, create, update, patch, delete, deletecollection — on objects
//! and their `status` subresource, with the semantics kube-apiserver gives them; one module
//! per verb family, this one routes a request to its verb.

mod create;
mod delete;
mod read;
mod update;

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::admission::{Admission, Operation, WebhookCaller};
use crate::db::Db;
use crate::faults::{Injected, Verb};
use crate::identity::UserInfo;
use crate::registry::ResourceType;
use crate::request::{Query, ResourcePath};
use crate::status::{ApiError, ApiResult};
use crate::store::ObjectKey;
use crate::table;
use crate::watch::{self, WatchHub};

pub(crate) use create::seed;
pub(crate) use delete::delete_object;

/// What a verb may use: the stored state, the admission caller, the watch hub.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handles<'a> {
    pub db: &'a Arc<Db>,
    pub webhooks: &'a WebhookCaller,
    pub watches: &'a WatchHub,
}

/// Serves one request on a resource path.
pub(crate) async fn serve(
    handles: Handles<'_>,
    method: Method,
    headers: HeaderMap,
    path: ResourcePath,
    query: Query,
    body: Bytes,
    user: UserInfo,
) -> Response {
    let rt = {
        let state = handles.db.state();
        state
            .registry
            .get(&path.group, &path.version, &path.plural)
            .cloned()
    };
    let Some(rt) = rt else {
        return ApiError::no_such_resource(&format!(
            "{}/{}/{}",
            path.group, path.version, path.plural
        ))
        .into_response();
    };
    if path.namespace.is_some() && !rt.namespaced {
        return ApiError::no_such_resource(&format!("{} is not namespaced", rt.plural))
            .into_response();
    }
    if let Some(sub) = &path.subresource
        && !(sub == "status" && rt.status_subresource)
    {
        return ApiError::no_such_resource(&format!("{}/{sub}", rt.plural)).into_response();
    }
    let verb = match (&method, path.name.is_some()) {
        (&Method::GET, _) if query.flag("watch") => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => {
            return ApiError::method_not_allowed(format!("{method} is not supported on this path"))
                .into_response();
        }
    };
    let counted = match &path.subresource {
        Some(sub) => format!("{}/{sub}", rt.plural),
        None => rt.plural.clone(),
    };
    let injected = handles
        .db
        .state()
        .faults
        .on_request(verb, &counted, &user.username);
    if !injected.delay.is_zero() {
        tokio::time::sleep(injected.delay).await;
    }
    if let Some(code) = injected.fail_with {
        return Injected::error(code, verb, &counted).into_response();
    }
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let request = Ctx {
        as_table: table::wants_table(accept),
        as_metadata: table::wants_metadata(accept),
        handles,
        rt: &rt,
        path: &path,
        query: &query,
        user: &user,
    };
    let result = match verb {
        Verb::Get => request.get(),
        Verb::List => request.list(),
        Verb::Watch => {
            return watch::serve(
                handles.db.clone(),
                handles.watches,
                rt.clone(),
                path.namespace.clone(),
                query,
                user,
            );
        }
        Verb::Create => request.create(&body).await,
        Verb::Update => request.update(&body).await,
        Verb::Patch => {
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            request.patch(content_type, &body).await
        }
        Verb::Delete => request.delete(&body).await,
        Verb::DeleteCollection => request.delete_collection().await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

pub(super) fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, axum::Json(value)).into_response()
}

pub(super) fn parse_body(body: &[u8]) -> ApiResult<Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

pub(super) struct Ctx<'a> {
    /// kubectl asked for server-side printing.
    pub as_table: bool,
    /// A metadata-only list (`as=PartialObjectMetadataList`).
    pub as_metadata: bool,
    pub handles: Handles<'a>,
    pub rt: &'a ResourceType,
    pub path: &'a ResourcePath,
    pub query: &'a Query,
    pub user: &'a UserInfo,
}

impl Ctx<'_> {
    pub(super) fn admission<'a>(
        &'a self,
        operation: Operation,
        subresource: Option<&'a str>,
        old: Option<&'a Value>,
    ) -> Admission<'a> {
        Admission {
            db: self.handles.db,
            webhooks: self.handles.webhooks,
            rt: self.rt,
            operation,
            subresource,
            old,
            user: self.user,
            namespace: self.path.namespace.as_deref(),
            dry_run: self.query.dry_run(),
        }
    }

    pub(super) fn key(&self, name: &str) -> ObjectKey {
        (
            self.path.namespace.clone().unwrap_or_default(),
            name.to_owned(),
        )
    }

    pub(super) fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or_default()
    }

    pub(super) fn current(&self) -> ApiResult<Arc<Value>> {
        self.handles
            .db
            .state()
            .store
            .get(&self.rt.key(), &self.key(self.name()))
            .ok_or_else(|| ApiError::not_found(self.rt, self.name()))
    }
}
