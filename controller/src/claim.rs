//! The claim reconciler: binds each HostPortClaim to a HostPort holding a free port, and
//! releases the port when the claim is deleted and no running pod uses it any more.
//!
//! Binding is four writes (a block of N ports, `block`: 2N + 2), in an order that is safe to
//! interrupt anywhere: create the HostPort `port-<n>` (the lock on the port), its status, the
//! claim's `spec.hostPortName`, the claim's status. A claim the webhook made for a pod skips
//! the HostPort's status and `spec.hostPortName` (two writes; a block N + 1): see
//! `host_port::set_bound` and [`writes_host_port_name`]. A claim is never Bound before its
//! HostPort exists with a port; a HostPort whose `claimRef.uid` matches is adopted, never
//! duplicated.
//!
//! Over ~500 lines on purpose: binding and release are one state machine over the same claim;
//! split, each half would have to re-derive where the other left the claim.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::queue::Action;
use hostport_api::conditions::{self, Condition, reasons, status, types};
use hostport_api::pod_claims::is_pod_claim;
use hostport_api::{ClaimPhase, HostPort, HostPortClaim};
use hostport_process::events::EventType;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::clock::{self, now};
use crate::context::{Context, key_of};
use crate::error::{Error, Result, status_code};
use crate::pick::{NamespaceAccess, Pick, pick_port};
use crate::pods;
use crate::writes::{self, claim_name};

/// Name of this reconciler in metrics and logs.
pub const CONTROLLER: &str = "claim";

/// Picks of a port in one reconcile before giving up (each lost pick is a 409).
pub(crate) const MAX_PICKS: usize = 64;

/// Safety net for claims waiting on something a watch should announce.
const RECHECK: Duration = Duration::from_secs(60);

/// Safety net for a claim whose cached copy predates our own write (the watch event of the
/// write triggers the next reconcile well before this).
const STALE_RECHECK: Duration = Duration::from_secs(5);

/// Reconciles one claim.
pub async fn reconcile(claim: Arc<HostPortClaim>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_claim(&claim, &ctx).await
}

async fn reconcile_claim(claim: &HostPortClaim, ctx: &Context) -> Result<Action> {
    let uid = claim.uid().ok_or_else(|| Error::MissingField {
        kind: "HostPortClaim",
        name: claim_name(claim),
        field: "metadata.uid",
    })?;
    if ctx.is_stale(claim) {
        // Our own write is on its way through the watch; it will trigger the next reconcile.
        return Ok(Action::requeue(STALE_RECHECK));
    }
    if claim.metadata.deletion_timestamp.is_some() {
        return release(claim, &uid, ctx).await;
    }
    let claims: Api<HostPortClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let mut claim = claim.clone();
    if let Some(updated) = writes::add_finalizer(ctx, &claims, &claim).await? {
        claim = updated;
    }
    if claim.spec.count() > 1 {
        return crate::block::reconcile(&claim, &uid, ctx).await;
    }

    let (host_port, port) = match find_host_port(&claim, &uid, ctx).await? {
        Some(found) => found,
        None => match allocate(&claim, &uid, ctx).await? {
            Allocation::Got(host_port) => {
                let port = host_port.port().ok_or_else(|| Error::MissingField {
                    kind: "HostPort",
                    name: host_port.name_any(),
                    field: "spec.port",
                })?;
                (*host_port, port)
            }
            Allocation::Pending { reason, message } => {
                return pending(&claim, reason, message, ctx).await;
            }
        },
    };
    let name = host_port.name_any();
    crate::host_port::set_bound(
        &host_port,
        &claim,
        format!(
            "port {port} allocated to HostPortClaim {}",
            claim_name(&claim)
        ),
        ctx,
    )
    .await?;
    if writes_host_port_name(&claim, &name, port) {
        claim = writes::bind_claim(ctx, &claim, &name).await?;
    }
    let bound = Condition::new(
        types::BOUND,
        status::TRUE,
        reasons::BOUND,
        bound_message(&name, port),
        claim.metadata.generation,
        now(),
    );
    if set_claim_status(&claim, ClaimPhase::Bound, Some(port), bound, ctx).await? {
        if let Some(created) = claim.creation_timestamp() {
            ctx.metrics
                .allocation_seconds
                .observe(clock::age(&created).as_secs_f64());
        }
        tracing::info!(claim = %claim_name(&claim), host_port = %name, port, "bound");
        ctx.event(
            &claim,
            EventType::Normal,
            "Bound",
            "Binding",
            format!("Bound to HostPort {name}, port {port}"),
        )
        .await;
    }
    delete_extra_host_ports(&claim, &uid, &name, ctx).await?;
    Ok(Action::await_change())
}

/// Whether binding `claim` to HostPort `name` (port `port`, of a block its first) writes
/// `spec.hostPortName`: a claim that names another HostPort gets the right one; a claim the
/// webhook made for a pod that names none keeps it empty, since its status port names
/// `port-<port>` (`HostPortClaim::bound_host_port_name`): one API write less per pod port.
/// Hand-made claims get it as in the Go project.
pub(crate) fn writes_host_port_name(claim: &HostPortClaim, name: &str, port: u16) -> bool {
    match claim.spec.host_port_name.as_deref() {
        Some(named) => named != name,
        None => !is_pod_claim(claim.labels()) || name != HostPort::name_for_port(port),
    }
}

/// The `Bound` condition's message of a claim bound to one port through HostPort `name`
/// (also what `cached::CachedClaim` recognises to keep a bound status short).
pub(crate) fn bound_message(name: &str, port: u16) -> String {
    format!("bound to HostPort {name} (port {port})")
}

/// The HostPort this claim already has, with its port, if any: the one it is bound to, else
/// one whose `claimRef.uid` matches (an interrupted earlier attempt), else the one this
/// process just created and the watch has not delivered yet. Only a HostPort whose
/// `claimRef.uid` is the claim's counts: `spec.hostPortName` is a hint, never trusted (a
/// Go-era HostPort that never got a port does not count either; the claim gets a new one).
async fn find_host_port(
    claim: &HostPortClaim,
    uid: &str,
    ctx: &Context,
) -> Result<Option<(HostPort, u16)>> {
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    let owned = |hp: &HostPort| hp.claim_uid() == Some(uid);
    let (cached, reserved) = ctx.book().of_claim(uid);
    let mut names: Vec<String> = claim
        .bound_host_port_name()
        .map(String::from)
        .into_iter()
        .collect();
    let mut by_port = cached;
    by_port.sort_by_key(|c| c.port.unwrap_or(u16::MAX));
    names.extend(
        by_port
            .into_iter()
            .filter(|c| c.port.is_some())
            .map(|c| c.name),
    );
    names.extend(reserved.map(HostPort::name_for_port));
    names.dedup();
    for name in names {
        let found = match ctx.cached_host_port(&name) {
            Some(cached) if owned(&cached) => Some(cached),
            // Not (yet) in the cache, or not ours there: ask the API server before
            // allocating anew.
            _ => {
                let fresh = api
                    .get_opt(&name)
                    .await
                    .map_err(Error::api("reading", "HostPort", &name))?;
                let fresh = fresh.filter(owned);
                if let Some(host_port) = &fresh {
                    ctx.book().apply(host_port);
                }
                fresh
            }
        };
        if let Some(host_port) = found
            && let Some(port) = host_port.port()
        {
            return Ok(Some((host_port, port)));
        }
    }
    if let Some(named) = &claim.spec.host_port_name {
        let message = format!(
            "spec.hostPortName names HostPort {named:?}, which does not exist, holds no port or is not bound to this claim (by UID): binding a port from the pools of HostPortClass {:?} instead",
            claim.spec.host_port_class_name
        );
        tracing::warn!(claim = %claim_name(claim), host_port = %named, "claim names a HostPort that is not its own");
        ctx.event(
            claim,
            EventType::Warning,
            reasons::HOST_PORT_NOT_OWNED,
            "Binding",
            message,
        )
        .await;
    }
    Ok(None)
}

enum Allocation {
    Got(Box<HostPort>),
    Pending {
        reason: &'static str,
        message: String,
    },
}

/// Picks ports until a create of `port-<n>` succeeds (the lock) or the pick says to wait;
/// a 409 means the port was taken behind the book's back, so the next pick goes on.
async fn allocate(claim: &HostPortClaim, uid: &str, ctx: &Context) -> Result<Allocation> {
    let Prepared {
        class,
        access,
        _turn,
    } = prepare(claim, uid, ctx).await?;
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    for _ in 0..MAX_PICKS {
        let pick = pick_port(
            claim,
            uid,
            class.as_deref(),
            &access,
            &mut ctx.book(),
            Instant::now(),
        );
        let port = match pick {
            Pick::Port(port) => port,
            Pick::Wait { reason, message } => {
                return Ok(Allocation::Pending { reason, message });
            }
        };
        let name = HostPort::name_for_port(port);
        match writes::create_host_port(ctx, claim, uid, port).await {
            Ok(host_port) => {
                tracing::debug!(claim = %claim_name(claim), %name, "created HostPort");
                return Ok(Allocation::Got(Box::new(host_port)));
            }
            Err(error) if status_code(&error) == Some(409) => {
                ctx.metrics.allocation_conflicts.inc();
                let holder = api
                    .get_opt(&name)
                    .await
                    .map_err(Error::api("reading", "HostPort", &name))?;
                match holder {
                    // Ours, from an attempt that was interrupted before it was recorded.
                    Some(host_port) if host_port.claim_uid() == Some(uid) => {
                        return Ok(Allocation::Got(Box::new(host_port)));
                    }
                    Some(host_port) => {
                        // The holder is in the book now: its delete (seen by the watch) frees
                        // the port at once, so a static claim waiting for it binds then.
                        tracing::debug!(claim = %claim_name(claim), %name, "port taken by another HostPort; picking again");
                        let mut book = ctx.book();
                        book.release(port);
                        book.apply(&host_port);
                    }
                    None => ctx.book().release(port),
                }
            }
            Err(source) => {
                ctx.book().release(port);
                return Err(Error::api("creating", "HostPort", name)(source));
            }
        }
    }
    Err(Error::AllocationContended {
        name: claim_name(claim),
        attempts: MAX_PICKS,
    })
}

/// What an allocation reads before its picks: the cached class, what its access rules need to
/// know of the namespace, and (for a class with a per-namespace limit) the turn of this
/// namespace's claims of the class, held while this lives: they are given ports one at a
/// time, so two reconciles in flight cannot both take the last place.
pub(crate) struct Prepared {
    pub class: Option<Arc<hostport_api::HostPortClass>>,
    pub access: NamespaceAccess,
    pub _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

pub(crate) async fn prepare(claim: &HostPortClaim, uid: &str, ctx: &Context) -> Result<Prepared> {
    let class_name = &claim.spec.host_port_class_name;
    let class = ctx.caches.classes.get(&ObjectRef::new(class_name));
    let limited = class
        .as_ref()
        .is_some_and(|c| c.spec.max_claims_per_namespace.is_some());
    let turn = if limited {
        let namespace = claim.namespace().unwrap_or_default();
        Some(ctx.quota_lock(&namespace, class_name).lock_owned().await)
    } else {
        None
    };
    let access = namespace_access(claim, uid, class.as_deref(), ctx).await?;
    Ok(Prepared {
        class,
        access,
        _turn: turn,
    })
}

/// What the class's access rules need to know of the claim's namespace: its labels (read from
/// the API server, only when the class selects namespaces) and how many other claims of the
/// class there hold a port or are being given one (from the caches and the book).
async fn namespace_access(
    claim: &HostPortClaim,
    uid: &str,
    class: Option<&hostport_api::HostPortClass>,
    ctx: &Context,
) -> Result<NamespaceAccess> {
    let Some(class) = class else {
        return Ok(NamespaceAccess::default());
    };
    let namespace = claim.namespace().unwrap_or_default();
    let mut access = NamespaceAccess::default();
    if class.spec.namespace_selector.is_some() {
        let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
        let found = namespaces.get_opt(&namespace).await.map_err(Error::api(
            "reading",
            "Namespace",
            &namespace,
        ))?;
        access.labels = found.map(|ns| ns.labels().clone()).unwrap_or_default();
    }
    if class.spec.max_claims_per_namespace.is_some() {
        let book = ctx.book();
        access.holding = ctx
            .caches
            .claims
            .fold_namespace(&namespace, 0, |holding, _, other| {
                let holds = other.class() == claim.spec.host_port_class_name
                    && other.uid().is_some_and(|other_uid| {
                        let (held, reserved) = book.of_claim_uid(other_uid);
                        !other_uid.is(uid) && (!held.is_empty() || reserved.is_some())
                    });
                holding + usize::from(holds)
            });
    }
    Ok(access)
}

/// Leaves the claim Pending with `reason`, announcing a new reason with an Event.
pub(crate) async fn pending(
    claim: &HostPortClaim,
    reason: &'static str,
    message: String,
    ctx: &Context,
) -> Result<Action> {
    let condition = Condition::new(
        types::BOUND,
        status::FALSE,
        reason,
        message.clone(),
        claim.metadata.generation,
        now(),
    );
    if set_claim_status(claim, ClaimPhase::Pending, None, condition, ctx).await? {
        tracing::info!(claim = %claim_name(claim), reason, %message, "pending");
        ctx.event(claim, EventType::Warning, reason, "Binding", message)
            .await;
    }
    if matches!(
        reason,
        reasons::POOL_EXHAUSTED
            | reasons::PORT_UNAVAILABLE
            | reasons::PORT_IN_USE
            | reasons::NAMESPACE_LIMIT_REACHED
    ) {
        ctx.wait_for_port(key_of(claim));
    }
    Ok(Action::requeue(RECHECK))
}

/// Writes the claim's status if it differs; returns whether the `Bound` condition's reason
/// changed (what Events announce).
pub(crate) async fn set_claim_status(
    claim: &HostPortClaim,
    phase: ClaimPhase,
    port: Option<u16>,
    condition: Condition,
    ctx: &Context,
) -> Result<bool> {
    let current = claim.status.clone().unwrap_or_default();
    let previous_reason =
        conditions::find(&current.conditions, types::BOUND).map(|c| c.reason.clone());
    let reason_changed = previous_reason.as_deref() != Some(condition.reason.as_str());
    let mut desired = current.clone();
    desired.phase = Some(phase);
    desired.port = port.map(i32::from);
    desired.ports = port.map(|p| hostport_api::ports::describe_block(p, claim.spec.count()));
    desired.observed_generation = claim.metadata.generation;
    conditions::set(&mut desired.conditions, condition);
    let publishes = ctx
        .caches
        .classes
        .get(&ObjectRef::new(&claim.spec.host_port_class_name))
        .is_some_and(|class| class.publishes_on_router());
    desired.set_ready(publishes, claim.metadata.generation, now());
    if desired != current {
        // Explicit nulls so a merge patch also clears what is gone.
        let status = json!({"phase": desired.phase, "port": desired.port,
            "ports": desired.ports, "observedGeneration": desired.observed_generation,
            "conditions": desired.conditions});
        writes::claim_status(ctx, claim, &status).await?;
    }
    Ok(reason_changed)
}

/// HostPorts left over for this claim besides the one it is bound to (from races between
/// controllers with stale caches) are deleted.
async fn delete_extra_host_ports(
    claim: &HostPortClaim,
    uid: &str,
    keep: &str,
    ctx: &Context,
) -> Result<()> {
    let (cached, _) = ctx.book().of_claim(uid);
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    for extra in cached.into_iter().filter(|c| c.name != keep) {
        // The book may be stale: the name may since belong to another claim's HostPort.
        // Delete only what the API server says is this claim's, by that object's UID.
        let current = api.get_opt(&extra.name).await.map_err(Error::api(
            "reading",
            "HostPort",
            &extra.name,
        ))?;
        let Some(current) = current.filter(|hp| hp.claim_uid() == Some(uid)) else {
            continue;
        };
        tracing::info!(claim = %claim_name(claim), host_port = %extra.name, "deleting a duplicate HostPort of the claim");
        writes::delete_host_port(ctx, &extra.name, current.uid()).await?;
    }
    Ok(())
}

/// How much longer a claim deleted at its deletion timestamp keeps its port for pod
/// admissions in flight (`grace` after the timestamp); `None` once that is over.
fn admissions_in_flight(claim: &HostPortClaim, grace: Duration) -> Option<Duration> {
    let deleted = claim.metadata.deletion_timestamp.as_ref()?;
    admission_wait(clock::age(deleted), grace)
}

/// The rule behind [`admissions_in_flight`]: a claim deleted `since_deleted` ago keeps its
/// port for `grace - since_deleted` more. An admission that read the port before the
/// deletion answers within the webhook's timeout and its pod is stored right after, so with
/// `grace` at least that long the final check for pods sees the pod.
pub fn admission_wait(since_deleted: Duration, grace: Duration) -> Option<Duration> {
    (since_deleted < grace).then(|| grace - since_deleted)
}

/// A deleting claim: wait out admissions in flight and its pods, delete its HostPorts, drop
/// the finalizer.
async fn release(claim: &HostPortClaim, uid: &str, ctx: &Context) -> Result<Action> {
    if !claim.has_finalizer() {
        return Ok(Action::await_change());
    }
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let (held_here, reserved) = ctx.book().of_claim(uid);
    let port = claim
        .status
        .as_ref()
        .and_then(|s| s.port)
        .and_then(hostport_api::ports::port_from_wire)
        .or_else(|| held_here.iter().find_map(|h| h.port))
        .or(reserved);
    let holds_a_port = port.is_some() || !held_here.is_empty();
    if holds_a_port && let Some(wait) = admissions_in_flight(claim, ctx.settings.admission_grace) {
        // A pod admission that read this claim before it was deleted may still be on its way
        // to the API server with the port: its pod is checked for once it is stored.
        // A message that does not change while waiting: one status write, not one per pass.
        let message = format!(
            "the port is kept {:?} after the deletion for pod admissions that may have read it before (--admission-grace-seconds)",
            ctx.settings.admission_grace
        );
        let held = Condition::new(
            types::BOUND,
            status::TRUE,
            reasons::ADMISSIONS_IN_FLIGHT,
            message,
            claim.metadata.generation,
            now(),
        );
        set_claim_status(claim, ClaimPhase::Deleting, port, held, ctx).await?;
        return Ok(Action::requeue(wait));
    }
    let of = pods::ClaimUse {
        namespace: &namespace,
        claim: &name,
        port,
    };
    let mut using = pods::using(of, &ctx.caches.pods);
    if using.is_empty() {
        // About to free the port: the API server has the last word on which pods exist.
        using = pods::using_now(&ctx.client, of).await?;
    }
    if !using.is_empty() {
        let message = format!(
            "deletion waits for {} using this claim to terminate",
            pods::describe(&using)
        );
        let held = Condition::new(
            types::BOUND,
            status::TRUE,
            reasons::IN_USE_BY_PODS,
            message.clone(),
            claim.metadata.generation,
            now(),
        );
        if set_claim_status(claim, ClaimPhase::Deleting, port, held, ctx).await? {
            ctx.event(
                claim,
                EventType::Normal,
                reasons::IN_USE_BY_PODS,
                "Releasing",
                message,
            )
            .await;
        }
        return Ok(Action::requeue(RECHECK));
    }
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    let mut names: Vec<String> = held_here.into_iter().map(|c| c.name).collect();
    names.extend(claim.bound_host_port_name().map(String::from));
    names.extend(reserved.map(HostPort::name_for_port));
    names.sort();
    names.dedup();
    let mut released = vec![];
    for name in names {
        let host_port = match ctx.cached_host_port(&name) {
            Some(cached) => Some(cached),
            None => api
                .get_opt(&name)
                .await
                .map_err(Error::api("reading", "HostPort", &name))?,
        };
        let Some(host_port) = host_port.filter(|hp| hp.claim_uid() == Some(uid)) else {
            continue;
        };
        writes::delete_host_port(ctx, &name, host_port.uid()).await?;
        released.extend(host_port.port());
    }
    let claims: Api<HostPortClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    writes::remove_finalizer(ctx, &claims, claim).await?;
    let ports: Vec<String> = released.iter().map(ToString::to_string).collect();
    tracing::info!(claim = %claim_name(claim), ports = %ports.join(","), "released");
    if !ports.is_empty() {
        ctx.event(
            claim,
            EventType::Normal,
            "Released",
            "Releasing",
            format!("Released port {}", ports.join(", ")),
        )
        .await;
    }
    Ok(Action::await_change())
}
