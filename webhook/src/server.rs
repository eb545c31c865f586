//! The admission HTTP handlers: AdmissionReview v1 in, AdmissionReview v1 out, on the Go
//! project's paths. Undecodable input gets HTTP 400 with an error review; a decodable
//! request always gets HTTP 200 with the verdict in the body.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hostport_api::webhook_paths as paths;
use hostport_api::{HostPort, HostPortClaim, HostPortClass};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::metrics::{DenialLabels, RequestLabels};
use crate::pod;
use crate::resources::{self, Requester};
use crate::verdict::{Verdict, reasons};

/// Largest AdmissionReview accepted for a pod (kube-apiserver's own request limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Largest AdmissionReview accepted for our own kinds: a claim, class or HostPort is a few
/// hundred bytes plus metadata (annotations are capped at 256 KiB by kube-apiserver), twice
/// for an update's old and new object.
pub const MAX_RESOURCE_BODY: usize = 768 * 1024;

/// Admission requests served at once, per group of paths (pods; our own kinds); more wait
/// for a place before their body is read, so memory stays bounded whatever arrives
/// (kube-apiserver's timeout bounds the wait). Separate groups, because a pod admission may
/// wait for a claim whose own admission must not queue behind it.
pub const MAX_IN_FLIGHT: usize = 64;

/// Every webhook path of the compatibility contract.
pub fn router(state: Arc<Context>) -> Router {
    let small = || DefaultBodyLimit::max(MAX_RESOURCE_BODY);
    let in_flight_limit = || {
        let places = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        axum::middleware::from_fn_with_state(places, one_of_in_flight)
    };
    let pods = Router::new()
        .route(paths::MUTATE_POD, post(mutate_pod))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(in_flight_limit());
    let resources = Router::new()
        .route(paths::MUTATE_CLAIM, post(mutate_claim))
        .route(paths::MUTATE_CLASS, post(allow))
        .route(paths::MUTATE_HOST_PORT, post(allow))
        .route(paths::VALIDATE_CLAIM, post(validate_claim))
        .route(paths::VALIDATE_CLASS, post(validate_class))
        .route(paths::VALIDATE_HOST_PORT, post(validate_host_port))
        .layer(small())
        .layer(in_flight_limit());
    pods.merge(resources).with_state(state)
}

/// Waits for a place among [`MAX_IN_FLIGHT`] before the request's body is read.
async fn one_of_in_flight(
    AxumState(places): AxumState<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Never closed: the semaphore lives as long as the routes.
    let _place = places.acquire_owned().await;
    next.run(request).await
}

type Request<K> = AdmissionRequest<K>;

fn error_review(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(AdmissionResponse::invalid(message).into_review()),
    )
        .into_response()
}

/// Decodes (straight into `K`: one copy of a big object, not two), decides, answers and
/// counts one admission request.
async fn admit<K, F, Fut>(state: &Context, path: &'static str, body: &[u8], decide: F) -> Response
where
    K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    F: FnOnce(Request<K>) -> Fut,
    Fut: Future<Output = (Request<K>, Verdict)>,
{
    let started = Instant::now();
    let outcome = |outcome: &str| count(state, path, outcome, started);
    let review: AdmissionReview<K> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => {
            outcome("error");
            return undecodable::<K>(body, error);
        }
    };
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        outcome("error");
        return error_review(
            StatusCode::BAD_REQUEST,
            format!(
                "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got {:?} {:?}",
                review.types.api_version, review.types.kind
            ),
        );
    }
    let request: Request<K> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            outcome("error");
            return error_review(
                StatusCode::BAD_REQUEST,
                "the AdmissionReview has no request".into(),
            );
        }
    };
    let (request, verdict) = match wrong_kind(&request) {
        Some(verdict) => (request, verdict),
        None => decide(request).await,
    };
    let mut response = AdmissionResponse::from(&request);
    match verdict {
        Verdict::Allow => outcome("allowed"),
        Verdict::Patch(patch) => match response.clone().with_patch(patch) {
            Ok(patched) => {
                response = patched;
                outcome("patched");
            }
            Err(error) => {
                outcome("error");
                response = response.deny(format!("building the patch failed: {error}"));
            }
        },
        Verdict::Deny { reason, message } => {
            outcome("denied");
            state
                .metrics
                .denials
                .get_or_create(&DenialLabels {
                    reason: reason.into(),
                })
                .inc();
            tracing::info!(
                path,
                namespace = request.namespace.as_deref().unwrap_or_default(),
                name = %request.name,
                user = %request.user_info.username.as_deref().unwrap_or_default(),
                reason,
                %message,
                "denied"
            );
            response = response.deny(message);
            response.result.code = 403;
            response.result.reason = reason.into();
        }
    }
    axum::Json(response.into_review()).into_response()
}

/// The answer to a body that does not decode as an AdmissionReview of `K`: a request for an
/// object of another kind is an AdmissionReview all the same, answered (HTTP 200) with a
/// denial naming the kind; anything else is HTTP 400.
fn undecodable<K: kube::Resource<DynamicType = ()>>(
    body: &[u8],
    error: serde_json::Error,
) -> Response {
    // Only on this error path is the body decoded a second time, without the object.
    #[derive(serde::Deserialize)]
    struct Envelope {
        request: Option<Kinds>,
    }
    #[derive(serde::Deserialize)]
    struct Kinds {
        uid: String,
        kind: kube::core::GroupVersionKind,
    }
    if let Ok(Envelope {
        request: Some(request),
    }) = serde_json::from_slice::<Envelope>(body)
    {
        let (reason, message) = if request.kind.kind != K::kind(&()) {
            (
                reasons::WRONG_KIND,
                format!(
                    "this webhook admits {} objects, not {}",
                    K::kind(&()),
                    request.kind.kind
                ),
            )
        } else {
            (
                reasons::UNDECODABLE,
                format!(
                    "the {} in the request cannot be decoded: {error}",
                    K::kind(&())
                ),
            )
        };
        let mut response = AdmissionResponse::invalid(message);
        response.uid = request.uid;
        response.result.code = 403;
        response.result.reason = reason.into();
        return axum::Json(response.into_review()).into_response();
    }
    error_review(
        StatusCode::BAD_REQUEST,
        format!("the body is not an AdmissionReview: {error}"),
    )
}

/// A denial when the request's kind is not `K` (a webhook registered for the wrong
/// resources must refuse, never allow).
fn wrong_kind<K: kube::Resource<DynamicType = ()>>(request: &Request<K>) -> Option<Verdict> {
    (request.kind.kind != K::kind(&()) || request.kind.group != K::group(&())).then(|| {
        Verdict::Deny {
            reason: reasons::WRONG_KIND,
            message: format!(
                "this webhook admits {} objects, not {}",
                K::kind(&()),
                request.kind.kind
            ),
        }
    })
}

/// The paths that admit everything (defaulting of classes and HostPorts has nothing to add):
/// any AdmissionReview is allowed, whatever object it carries.
async fn allow(AxumState(state): AxumState<Arc<Context>>, body: Bytes) -> Response {
    let started = Instant::now();
    let review: Result<AdmissionReview<DynamicObject>, _> = serde_json::from_slice(&body);
    let request = review
        .map_err(|e| format!("the body is not an AdmissionReview: {e}"))
        .and_then(|review| {
            let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
            request.map_err(|_| "the AdmissionReview has no request".to_owned())
        });
    match request {
        Ok(request) => {
            count(&state, "allow", "allowed", started);
            axum::Json(AdmissionResponse::from(&request).into_review()).into_response()
        }
        Err(message) => {
            count(&state, "allow", "error", started);
            error_review(StatusCode::BAD_REQUEST, message)
        }
    }
}

/// Counts one answered request and its latency.
fn count(state: &Context, path: &'static str, outcome: &str, started: Instant) {
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            path: path.into(),
            outcome: outcome.into(),
        })
        .inc();
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
}

async fn mutate_pod(AxumState(state): AxumState<Arc<Context>>, body: Bytes) -> Response {
    let shared = state.clone();
    admit::<Pod, _, _>(&state, paths::MUTATE_POD, &body, |mut request| async move {
        let (object, old) = (request.object.take(), request.old_object.take());
        let verdict = pod::admit(&shared, &request, object, old).await;
        (request, verdict)
    })
    .await
}

async fn mutate_claim(AxumState(state): AxumState<Arc<Context>>, body: Bytes) -> Response {
    admit::<HostPortClaim, _, _>(
        &state,
        paths::MUTATE_CLAIM,
        &body,
        |mut request| async move {
            if request.operation != Operation::Create {
                return (request, Verdict::Allow);
            }
            let claim: Option<HostPortClaim> = request.object.take();
            let verdict = claim.map_or(Verdict::Allow, |c| resources::default_claim(&c));
            (request, verdict)
        },
    )
    .await
}

fn requester<'a, K: kube::Resource>(state: &Context, request: &'a Request<K>) -> Requester<'a> {
    let user = request.user_info.username.as_deref().unwrap_or_default();
    Requester {
        user,
        is_allocator: state.is_allocator(user),
        is_publisher: state.is_publisher(user),
    }
}

async fn validate_claim(AxumState(state): AxumState<Arc<Context>>, body: Bytes) -> Response {
    let shared = state.clone();
    admit::<HostPortClaim, _, _>(
        &state,
        paths::VALIDATE_CLAIM,
        &body,
        |mut request| async move {
            if !matches!(request.operation, Operation::Create | Operation::Update) {
                return (request, Verdict::Allow);
            }
            let claim: Option<HostPortClaim> = request.object.take();
            let old: Option<HostPortClaim> = request.old_object.take();
            let Some(claim) = claim else {
                return (request, Verdict::Allow);
            };
            let class = shared.class(&claim.spec.host_port_class_name).await;
            let verdict = resources::validate_claim(
                &claim,
                old.as_ref(),
                class.as_ref(),
                requester(&shared, &request),
                request.sub_resource.as_deref(),
            );
            let verdict = match (verdict, class, &request.operation) {
                (Verdict::Allow, Some(class), Operation::Create) => {
                    shared.class_access(&claim, &class, 0).await
                }
                (verdict, ..) => verdict,
            };
            (request, verdict)
        },
    )
    .await
}

async fn validate_class(AxumState(state): AxumState<Arc<Context>>, body: Bytes) -> Response {
    let shared = state.clone();
    admit::<HostPortClass, _, _>(
        &state,
        paths::VALIDATE_CLASS,
        &body,
        |mut request| async move {
            if !matches!(request.operation, Operation::Create | Operation::Update) {
                return (request, Verdict::Allow);
            }
            let class: Option<HostPortClass> = request.object.take();
            let verdict = match (class, request.sub_resource.as_deref()) {
                (None, _) => Verdict::Allow,
                (Some(class), Some(_)) => {
                    resources::validate_class_status(&class, requester(&shared, &request))
                }
                (Some(class), None) => resources::validate_class(&class),
            };
            (request, verdict)
        },
    )
    .await
}

async fn validate_host_port(AxumState(state): AxumState<Arc<Context>>, body: Bytes) -> Response {
    let shared = state.clone();
    admit::<HostPort, _, _>(
        &state,
        paths::VALIDATE_HOST_PORT,
        &body,
        |mut request| async move {
            if !matches!(request.operation, Operation::Create | Operation::Update) {
                return (request, Verdict::Allow);
            }
            let host_port: Option<HostPort> = request.object.take();
            let old: Option<HostPort> = request.old_object.take();
            let verdict = host_port.map_or(Verdict::Allow, |hp| {
                resources::validate_host_port(
                    &hp,
                    old.as_ref(),
                    requester(&shared, &request),
                    request.sub_resource.as_deref(),
                )
            });
            (request, verdict)
        },
    )
    .await
}
