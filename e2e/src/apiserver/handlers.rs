//! The verbs: get, list, watch, create, update, patch, delete, deletecollection, on objects
//! and their `status` subresource, with the semantics kube-apiserver gives them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use super::admission::{Admission, Operation};
use super::faults::Verb;
use super::identity::UserInfo;
use super::patch::{PatchKind, apply_patch};
use super::registry::ResourceType;
use super::request::{Query, ResourcePath};
use super::schema;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::status::{ApiError, ApiResult, FieldError};
use super::store::{EventKind, ObjectKey};
use super::table;
use super::watch;

/// Times a PATCH is retried internally when the object changed underneath it (as
/// kube-apiserver's GuaranteedUpdate does).
const PATCH_RETRIES: usize = 16;

/// Serves one request on a resource path.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    method: Method,
    headers: HeaderMap,
    path: ResourcePath,
    query: Query,
    body: Bytes,
    user: UserInfo,
) -> Response {
    let rt = {
        let state = shared.state();
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
    let injected = shared
        .state()
        .faults
        .on_request(verb, &counted, &user.username);
    if !injected.delay.is_zero() {
        tokio::time::sleep(injected.delay).await;
    }
    if let Some(code) = injected.fail_with {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        return ApiError::with_code(
            code,
            reason,
            format!("injected fault: {} {counted}", verb.as_str()),
        )
        .into_response();
    }
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let request = Ctx {
        as_table: table::wants_table(accept),
        shared: &shared,
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
                shared.clone(),
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

/// Stores an object at start-up (namespaces, CRDs), bypassing admission.
pub(crate) fn seed(
    shared: &Arc<Shared>,
    group: &str,
    plural: &str,
    object: Value,
) -> ApiResult<()> {
    let rt = shared
        .state()
        .registry
        .by_key(&(group.to_owned(), plural.to_owned()))
        .cloned()
        .ok_or_else(|| ApiError::no_such_resource(plural))?;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = ResourcePath {
        group: rt.group.clone(),
        version: rt.version.clone(),
        plural: rt.plural.clone(),
        namespace: None,
        name: Some(name),
        subresource: None,
    };
    let user = UserInfo::admin();
    let query = Query::default();
    let ctx = Ctx {
        as_table: false,
        shared,
        rt: &rt,
        path: &path,
        query: &query,
        user: &user,
    };
    let object = ctx.prepare_create(object)?;
    ctx.store_created(object).map(|_| ())
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, axum::Json(value)).into_response()
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn resource_version(object: &Value) -> Option<u64> {
    object["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Everything but `metadata` and `status`: what `generation` tracks.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    copy
}

/// The object without its `resourceVersion`, to tell a no-op write.
fn without_version(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    copy
}

struct Ctx<'a> {
    /// kubectl asked for server-side printing.
    as_table: bool,
    shared: &'a Arc<Shared>,
    rt: &'a ResourceType,
    path: &'a ResourcePath,
    query: &'a Query,
    user: &'a UserInfo,
}

impl Ctx<'_> {
    fn admission<'a>(
        &'a self,
        operation: Operation,
        subresource: Option<&'a str>,
        old: Option<&'a Value>,
    ) -> Admission<'a> {
        Admission {
            shared: self.shared,
            rt: self.rt,
            operation,
            subresource,
            old,
            user: self.user,
            namespace: self.path.namespace.as_deref(),
            dry_run: self.query.dry_run(),
        }
    }

    fn key(&self, name: &str) -> ObjectKey {
        (
            self.path.namespace.clone().unwrap_or_default(),
            name.to_owned(),
        )
    }

    fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or_default()
    }

    fn current(&self) -> ApiResult<Arc<Value>> {
        self.shared
            .state()
            .store
            .get(&self.rt.key(), &self.key(self.name()))
            .ok_or_else(|| ApiError::not_found(self.rt, self.name()))
    }

    fn get(&self) -> ApiResult<Response> {
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

    fn list(&self) -> ApiResult<Response> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())?;
        let limit: usize = self
            .query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let (objects, revision) = {
            let state = self.shared.state();
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
        let list = json!({
            "apiVersion": self.rt.api_version(),
            "kind": format!("{}List", self.rt.kind),
            "metadata": metadata,
            "items": items.iter().map(|o| o.as_ref()).collect::<Vec<_>>(),
        });
        Ok(json_response(StatusCode::OK, &list))
    }

    /// Body checks and defaults of a create, up to (not including) mutating admission.
    fn prepare_create(&self, mut object: Value) -> ApiResult<Value> {
        let api_version = self.rt.api_version();
        match object["apiVersion"].as_str() {
            None => object["apiVersion"] = Value::String(api_version),
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
        }
        match object["kind"].as_str() {
            None => object["kind"] = Value::String(self.rt.kind.clone()),
            Some(k) if k == self.rt.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.rt.kind
                )));
            }
        }
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        if self.rt.namespaced {
            let from_path = self.path.namespace.clone().unwrap_or_default();
            match object["metadata"]["namespace"].as_str() {
                Some(ns) if !ns.is_empty() && ns != from_path => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => object["metadata"]["namespace"] = Value::String(from_path),
            }
        } else if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        if let Some(meta) = object["metadata"].as_object_mut() {
            for server_owned in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "managedFields",
            ] {
                meta.remove(server_owned);
            }
        }
        if self.rt.status_subresource && !self.rt.is_crd() {
            // The status of a new object is the server's to set.
            match self.rt.plural.as_str() {
                "pods" => object["status"] = json!({"phase": "Pending"}),
                "namespaces" => object["status"] = json!({"phase": "Active"}),
                _ => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        if self.rt.custom.is_some() {
            self.prune_and_default(&mut object)?;
        }
        Ok(object)
    }

    fn prune_and_default(&self, object: &mut Value) -> ApiResult<()> {
        let Some(custom) = &self.rt.custom else {
            return Ok(());
        };
        let unknown = schema::prune(&custom.schema, object);
        if !unknown.is_empty() && self.query.get("fieldValidation") == Some("Strict") {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            return Err(ApiError::bad_request(format!(
                "{}.{} \"{name}\": strict decoding error: {}",
                self.rt.kind,
                self.rt.group,
                unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        *object = schema::default(&custom.schema, object);
        Ok(())
    }

    fn validate_object(&self, object: &Value, old: Option<&Value>) -> ApiResult<()> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let mut errors = vec![];
        let name_check = if self.rt.is_namespace() {
            hostport_api::names::validate_dns1123_label(name)
        } else {
            hostport_api::names::validate_dns1123_subdomain(name)
        };
        if let Err(reason) = name_check {
            errors.push(FieldError::invalid(
                "metadata.name",
                &Value::String(name.to_owned()),
                format!("a lowercase RFC 1123 name is required: {reason}"),
            ));
        }
        if let Some(custom) = &self.rt.custom {
            errors.extend(schema::validate(custom, object, old));
        }
        if self.rt.is_crd()
            && let Err(e) = super::registry::resource_type_from_crd(object)
        {
            errors.push(FieldError::invalid("spec", &json!("object"), e));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.rt, name, errors))
        }
    }

    async fn create(&self, body: &[u8]) -> ApiResult<Response> {
        let object = self.prepare_create(parse_body(body)?)?;
        let created = self.admit_and_store_create(object).await?;
        Ok(json_response(StatusCode::CREATED, &created))
    }

    async fn admit_and_store_create(&self, mut object: Value) -> ApiResult<Value> {
        if object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
            && object["metadata"]["generateName"]
                .as_str()
                .is_none_or(str::is_empty)
        {
            return Err(ApiError::invalid(
                self.rt,
                "",
                vec![FieldError {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
        self.admission(Operation::Create, None, None)
            .mutate(&mut object)
            .await?;
        // Like rest.BeforeCreate: name generation and server fields after mutating admission.
        if object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            let prefix = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            object["metadata"]["name"] =
                Value::String(format!("{prefix}{}", self.shared.name_suffix()));
        }
        object["metadata"]["uid"] = Value::String(self.shared.new_uid());
        object["metadata"]["creationTimestamp"] = Value::String(now());
        object["metadata"]["generation"] = json!(1);
        self.prune_and_default(&mut object)?;
        self.validate_object(&object, None)?;
        self.admission(Operation::Create, None, None)
            .validate(&object)
            .await?;
        if self.query.dry_run() {
            return Ok(object);
        }
        self.store_created(object)
    }

    fn store_created(&self, mut object: Value) -> ApiResult<Value> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = Value::String(self.shared.new_uid());
            object["metadata"]["creationTimestamp"] = Value::String(now());
            object["metadata"]["generation"] = json!(1);
        }
        let mut state = self.shared.state();
        if let Some(ns) = &self.path.namespace {
            match state.store.get(
                &(String::new(), "namespaces".into()),
                &(String::new(), ns.clone()),
            ) {
                None => return Err(ApiError::not_found_namespace(ns)),
                Some(namespace) if is_deleting(&namespace) => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        self.rt.qualified_plural()
                    )));
                }
                Some(_) => {}
            }
        }
        let key = self.key(&name);
        if state.store.get(&self.rt.key(), &key).is_some() {
            return Err(ApiError::already_exists(self.rt, &name));
        }
        if self.rt.is_crd() {
            let served = state.registry.register_crd(&object).map_err(|e| {
                ApiError::invalid(
                    self.rt,
                    &name,
                    vec![FieldError::invalid("spec", &json!("object"), e)],
                )
            })?;
            object["status"] = crd_status(&served);
        }
        object["metadata"]["resourceVersion"] =
            Value::String(state.store.next_revision().to_string());
        let stored = state
            .store
            .put(&self.rt.key(), key, object, EventKind::Added);
        Ok((*stored).clone())
    }

    async fn update(&self, body: &[u8]) -> ApiResult<Response> {
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

    async fn patch(&self, content_type: &str, body: &[u8]) -> ApiResult<Response> {
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
    async fn write_update(&self, old: &Arc<Value>, mut new: Value) -> ApiResult<Value> {
        let status_only = self.path.subresource.as_deref() == Some("status");
        if status_only {
            let status = new.get("status").cloned();
            new = (**old).clone();
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
        if without_version(&new) == without_version(old) {
            return Ok((**old).clone());
        }
        if self.query.dry_run() {
            return Ok(new);
        }
        let mut state = self.shared.state();
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
            finish_removal(&mut state, self.rt, &removed);
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
            new["status"] = crd_status(&served);
        }
        new["metadata"]["resourceVersion"] = Value::String(state.store.next_revision().to_string());
        let stored = state
            .store
            .put(&self.rt.key(), key, new, EventKind::Modified);
        Ok((*stored).clone())
    }

    async fn delete(&self, body: &[u8]) -> ApiResult<Response> {
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
        let mut state = self.shared.state();
        let result = delete_object(&mut state, self.rt, &self.key(self.name()))
            .ok_or_else(|| ApiError::not_found(self.rt, self.name()))?;
        Ok(json_response(StatusCode::OK, &result))
    }

    async fn delete_collection(&self) -> ApiResult<Response> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())?;
        let mut state = self.shared.state();
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

fn object_key(object: &Value) -> ObjectKey {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn crd_status(rt: &ResourceType) -> Value {
    let time = now();
    json!({
        "acceptedNames": {"kind": rt.kind, "plural": rt.plural, "singular": rt.singular,
                          "shortNames": rt.short_names, "categories": rt.categories},
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": time},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": time},
        ],
        "storedVersions": [rt.version],
    })
}

/// Deletes one object: with finalizers it gets a `deletionTimestamp`, without it is removed.
/// Returns the object as the response shows it.
fn delete_object(
    state: &mut super::server::State,
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
            empty_namespace(state, &key.1);
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
fn finish_removal(state: &mut super::server::State, rt: &ResourceType, removed: &Value) {
    if rt.is_crd()
        && let Some(key) = state.registry.unregister_crd(removed)
    {
        state.store.drop_resource(&key);
    }
    let namespace = removed["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    if !namespace.is_empty() {
        remove_namespace_if_done(state, namespace);
    }
}

/// The namespace controller's job: delete everything in a terminating namespace.
fn empty_namespace(state: &mut super::server::State, namespace: &str) {
    let namespaced: Vec<ResourceType> = state
        .registry
        .all()
        .filter(|t| t.namespaced)
        .cloned()
        .collect();
    for rt in namespaced {
        let keys: Vec<ObjectKey> = state
            .store
            .list(&rt.key(), Some(namespace))
            .iter()
            .map(|o| object_key(o))
            .collect();
        for key in keys {
            delete_object(state, &rt, &key);
        }
    }
    remove_namespace_if_done(state, namespace);
}

fn remove_namespace_if_done(state: &mut super::server::State, namespace: &str) {
    let ns_key = (String::new(), "namespaces".to_owned());
    let object_key = (String::new(), namespace.to_owned());
    let terminating = state
        .store
        .get(&ns_key, &object_key)
        .is_some_and(|ns| is_deleting(&ns));
    if terminating && state.store.count_in_namespace(namespace) == 0 {
        state.store.remove(&ns_key, &object_key);
    }
}
