//! create (and the create half of a server-side apply), and seeding objects at start-up.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, Handles, json_response, parse_body};
use crate::admission::Operation;
use crate::identity::UserInfo;
use crate::object::{check_name, is_deleting, now};
use crate::request::{Query, ResourcePath};
use crate::schema;
use crate::status::{ApiError, ApiResult, FieldError};
use crate::store::EventKind;

/// Stores an object at start-up (namespaces, CRDs), bypassing admission.
pub(crate) fn seed(
    handles: Handles<'_>,
    group: &str,
    plural: &str,
    object: Value,
) -> ApiResult<()> {
    let rt = handles
        .db
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
        as_metadata: false,
        handles,
        rt: &rt,
        path: &path,
        query: &query,
        user: &user,
    };
    let object = ctx.prepare_create(object)?;
    ctx.store_created(object).map(|_| ())
}

impl Ctx<'_> {
    /// Body checks and defaults of a create, up to (not including) mutating admission.
    pub(super) fn prepare_create(&self, mut object: Value) -> ApiResult<Value> {
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

    pub(super) fn prune_and_default(&self, object: &mut Value) -> ApiResult<()> {
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

    pub(super) fn validate_object(&self, object: &Value, old: Option<&Value>) -> ApiResult<()> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let mut errors = vec![];
        let name_check = check_name(name, self.rt.is_namespace());
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
            && let Err(e) = crate::registry::resource_type_from_crd(object)
        {
            errors.push(FieldError::invalid("spec", &json!("object"), e));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.rt, name, errors))
        }
    }

    pub(super) async fn create(&self, body: &[u8]) -> ApiResult<Response> {
        let object = self.prepare_create(parse_body(body)?)?;
        let created = self.admit_and_store_create(object).await?;
        Ok(json_response(StatusCode::CREATED, &created))
    }

    pub(super) async fn admit_and_store_create(&self, mut object: Value) -> ApiResult<Value> {
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
                Value::String(format!("{prefix}{}", self.handles.db.name_suffix()));
        }
        object["metadata"]["uid"] = Value::String(self.handles.db.new_uid());
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

    pub(super) fn store_created(&self, mut object: Value) -> ApiResult<Value> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self.rt.is_namespace() {
            crate::namespace_lifecycle::label_with_name(&mut object);
        }
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = Value::String(self.handles.db.new_uid());
            object["metadata"]["creationTimestamp"] = Value::String(now());
            object["metadata"]["generation"] = json!(1);
        }
        let mut state = self.handles.db.state();
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
            object["status"] = crate::registry::crd_status(&served);
        }
        object["metadata"]["resourceVersion"] =
            Value::String(state.store.next_revision().to_string());
        let stored = state
            .store
            .put(&self.rt.key(), key, object, EventKind::Added);
        Ok((*stored).clone())
    }
}
