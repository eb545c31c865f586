//! Claims of a block of consecutive ports (`spec.count` > 1): one HostPort `port-<n>` per
//! port, each created under the same lock as a single port (the name), and the claim is
//! Bound only once every one of them exists, so no pod ever sees half a block. A block whose
//! creation meets a port taken behind the book's back gives back what it created and picks
//! again; one left half-made by a crash is completed when it still can be, else given back.
//! Writes per block: N creates, N HostPort statuses, the claim's `hostPortName`, its status.

use std::time::{Duration, Instant};

use crate::queue::Action;
use hostport_api::conditions::{reasons, status, types};
use hostport_api::ports::describe_block;
use hostport_api::{Condition, HostPort, HostPortClaim};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use crate::claim::{MAX_PICKS, Prepared, pending, prepare, set_claim_status};
use crate::clock::now;
use crate::context::Context;
use crate::error::{Error, Result, status_code};
use crate::pick::{Pick, pick_block};
use crate::writes::{self, claim_name};
use hostport_api::ClaimPhase;
use hostport_process::events::EventType;

/// How soon a claim whose half-made block was given back tries again (the deletes' watch
/// events usually come first).
const RETRY: Duration = Duration::from_secs(1);

/// Reconciles a claim of `spec.count` > 1 that is not being deleted.
pub(crate) async fn reconcile(claim: &HostPortClaim, uid: &str, ctx: &Context) -> Result<Action> {
    let count = claim.spec.count();
    let owned = owned_host_ports(claim, uid, ctx);
    // The block the claim is bound to, else the lowest port it holds (a block being made).
    let bound_base = claim
        .bound_host_port_name()
        .as_deref()
        .and_then(HostPort::port_from_name)
        .filter(|base| owned.iter().any(|hp| hp.port() == Some(*base)));
    let start = bound_base.or_else(|| owned.iter().filter_map(HostPort::port).min());
    let block = match start {
        Some(base) if bound_base.is_some() || fits(claim, ctx, base, &owned) => {
            match complete(claim, uid, ctx, base, &owned).await? {
                Some(block) => block,
                None => return Ok(Action::requeue(RETRY)),
            }
        }
        Some(_) => {
            tracing::info!(claim = %claim_name(claim), "giving back a block that no longer fits its claim");
            give_back(ctx, uid, owned.iter().map(ResourceExt::name_any)).await?;
            return Ok(Action::requeue(RETRY));
        }
        None => match allocate(claim, uid, ctx).await? {
            Allocated::Block(block) => block,
            Allocated::Pending { reason, message } => {
                return pending(claim, reason, message, ctx).await;
            }
            Allocated::Concurrent => return Ok(Action::requeue(RETRY)),
        },
    };
    let base = block
        .iter()
        .filter_map(HostPort::port)
        .min()
        .unwrap_or_default();
    let ports = describe_block(base, count);
    for host_port in &block {
        crate::host_port::set_bound(
            host_port,
            claim,
            format!(
                "port {} allocated to HostPortClaim {} (block {ports})",
                host_port.port().unwrap_or_default(),
                claim_name(claim)
            ),
            ctx,
        )
        .await?;
    }
    let first = HostPort::name_for_port(base);
    let mut claim = claim.clone();
    if crate::claim::writes_host_port_name(&claim, &first, base) {
        claim = writes::bind_claim(ctx, &claim, &first).await?;
    }
    let bound = Condition::new(
        types::BOUND,
        status::TRUE,
        reasons::BOUND,
        format!("bound to {count} HostPorts from {first} (ports {ports})"),
        claim.metadata.generation,
        now(),
    );
    if set_claim_status(&claim, ClaimPhase::Bound, Some(base), bound, ctx).await? {
        tracing::info!(claim = %claim_name(&claim), %ports, "bound");
        ctx.event(
            &claim,
            EventType::Normal,
            "Bound",
            "Binding",
            format!("Bound to {count} HostPorts, ports {ports}"),
        )
        .await;
    }
    // HostPorts of the claim outside its block (races of controllers with stale caches).
    let last = u32::from(base) + u32::from(count) - 1;
    let outside = owned_host_ports(&claim, uid, ctx)
        .into_iter()
        .filter(|hp| {
            !hp.port()
                .is_some_and(|p| (base..).contains(&p) && u32::from(p) <= last)
        })
        .map(|hp| hp.name_any());
    give_back(ctx, uid, outside).await?;
    Ok(Action::await_change())
}

/// The cached HostPorts whose `claimRef.uid` is the claim's (names from the book and the
/// claim's `hostPortName`); the API server corrects a stale guess with a 409 on create.
fn owned_host_ports(claim: &HostPortClaim, uid: &str, ctx: &Context) -> Vec<HostPort> {
    let (cached, _) = ctx.book().of_claim(uid);
    let mut names: Vec<String> = cached.into_iter().map(|c| c.name).collect();
    names.extend(claim.bound_host_port_name().map(String::from));
    names.sort();
    names.dedup();
    names
        .iter()
        .filter_map(|name| ctx.cached_host_port(name))
        .filter(|hp| hp.claim_uid() == Some(uid))
        .collect()
}

/// Whether the block from `base`, which the claim is not bound to yet, is one it may have:
/// the class's pools hold it whole, it is aligned, it starts at the requested port (if any),
/// and every HostPort the claim owns lies in it. (A bound block is kept as it is, like a
/// bound port when a class's pools change.)
fn fits(claim: &HostPortClaim, ctx: &Context, base: u16, owned: &[HostPort]) -> bool {
    let count = claim.spec.count();
    let class = ctx
        .caches
        .classes
        .get(&ObjectRef::new(&claim.spec.host_port_class_name));
    let last = u32::from(base) + u32::from(count) - 1;
    class.is_some_and(|c| c.block_outside_pools(base, count).is_none())
        && base.is_multiple_of(claim.spec.alignment())
        && claim.requested_port().is_none_or(|p| p == base)
        && owned
            .iter()
            .filter_map(HostPort::port)
            .all(|p| p >= base && u32::from(p) <= last)
}

/// Creates the HostPorts missing from the block at `base` the claim already partly owns;
/// the whole block, or `None` when a port was taken meanwhile (what the claim owned is then
/// given back, and it picks a block anew).
async fn complete(
    claim: &HostPortClaim,
    uid: &str,
    ctx: &Context,
    base: u16,
    owned: &[HostPort],
) -> Result<Option<Vec<HostPort>>> {
    let ports: Vec<u16> = (0..claim.spec.count())
        .filter_map(|i| base.checked_add(i))
        .collect();
    // Only the block's own ports: one the claim holds outside it (another controller's
    // attempt) is given back once the block is bound, and must not move its first port.
    let mut block: Vec<HostPort> = owned
        .iter()
        .filter(|hp| hp.port().is_some_and(|p| ports.contains(&p)))
        .cloned()
        .collect();
    let missing: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|port| !block.iter().any(|hp| hp.port() == Some(*port)))
        .collect();
    for port in missing {
        match create_or_find_own(ctx, claim, uid, port).await? {
            Created::Made(host_port) | Created::Found(host_port) => block.push(host_port),
            Created::Taken(holder) => {
                tracing::info!(claim = %claim_name(claim), port, "a port of the block was taken; giving the block back");
                if let Some(holder) = holder {
                    ctx.book().apply(&holder);
                }
                give_back(ctx, uid, block.iter().map(ResourceExt::name_any)).await?;
                return Ok(None);
            }
        }
    }
    block.sort_by_key(HostPort::port);
    Ok(Some(block))
}

enum Allocated {
    Block(Vec<HostPort>),
    Pending {
        reason: &'static str,
        message: String,
    },
    /// Another attempt on the same claim is under way (a HostPort of the claim turned up
    /// where this one picked): this attempt gave back what it made; look again shortly.
    Concurrent,
}

/// Picks blocks until every HostPort of one is created (or the pick says to wait); a port
/// taken behind the book's back undoes the block's creates and the next pick goes on.
async fn allocate(claim: &HostPortClaim, uid: &str, ctx: &Context) -> Result<Allocated> {
    let Prepared {
        class,
        access,
        _turn,
    } = prepare(claim, uid, ctx).await?;
    let count = claim.spec.count();
    for _ in 0..MAX_PICKS {
        let pick = pick_block(
            claim,
            uid,
            class.as_deref(),
            &access,
            &mut ctx.book(),
            Instant::now(),
        );
        let base = match pick {
            Pick::Port(base) => base,
            Pick::Wait { reason, message } => return Ok(Allocated::Pending { reason, message }),
        };
        let ports: Vec<u16> = (0..count).filter_map(|i| base.checked_add(i)).collect();
        let mut created: Vec<HostPort> = vec![];
        let mut conflict = None;
        for port in &ports {
            match create_or_find_own(ctx, claim, uid, *port).await {
                Ok(Created::Made(host_port)) => created.push(host_port),
                // Only what this attempt made is ever given back by it: the other attempt's
                // HostPorts may already be a bound block.
                Ok(Created::Found(_)) => {
                    undo(ctx, uid, &ports, &created).await;
                    return Ok(Allocated::Concurrent);
                }
                Ok(Created::Taken(holder)) => {
                    conflict = Some(holder);
                    break;
                }
                Err(error) => {
                    undo(ctx, uid, &ports, &created).await;
                    return Err(error);
                }
            }
        }
        match conflict {
            None => {
                tracing::debug!(claim = %claim_name(claim), base, count, "created the block's HostPorts");
                return Ok(Allocated::Block(created));
            }
            Some(holder) => {
                ctx.metrics.allocation_conflicts.inc();
                tracing::debug!(claim = %claim_name(claim), base, "a port of the block was taken; picking again");
                undo(ctx, uid, &ports, &created).await;
                if let Some(holder) = holder {
                    ctx.book().apply(&holder);
                }
            }
        }
    }
    Err(Error::AllocationContended {
        name: claim_name(claim),
        attempts: MAX_PICKS,
    })
}

/// Gives back an attempt: deletes the HostPorts it created and drops its reservations. A
/// delete that fails is left to the next reconcile (the HostPort is the claim's, found by
/// its `claimRef.uid`, and given back or completed then).
async fn undo(ctx: &Context, uid: &str, ports: &[u16], created: &[HostPort]) {
    if let Err(error) = give_back(ctx, uid, created.iter().map(ResourceExt::name_any)).await {
        tracing::warn!(%error, "giving back part of a block failed; the next reconcile does");
    }
    let mut book = ctx.book();
    for port in ports {
        book.release(*port);
    }
}

/// What creating one HostPort of a block found.
enum Created {
    /// Made by this create.
    Made(HostPort),
    /// The claim's already: made by an interrupted attempt, or by another controller
    /// binding the same claim right now.
    Found(HostPort),
    /// Another HostPort holds the port (`None`: it was gone again when read).
    Taken(Option<HostPort>),
}

/// Creates `port-<port>` for the claim.
async fn create_or_find_own(
    ctx: &Context,
    claim: &HostPortClaim,
    uid: &str,
    port: u16,
) -> Result<Created> {
    let name = HostPort::name_for_port(port);
    match writes::create_host_port(ctx, claim, uid, port).await {
        Ok(host_port) => {
            ctx.book().apply(&host_port);
            Ok(Created::Made(host_port))
        }
        Err(error) if status_code(&error) == Some(409) => {
            let holder = Api::<HostPort>::all(ctx.client.clone())
                .get_opt(&name)
                .await
                .map_err(Error::api("reading", "HostPort", &name))?;
            Ok(match holder {
                Some(holder) if holder.claim_uid() == Some(uid) => Created::Found(holder),
                other => Created::Taken(other),
            })
        }
        Err(source) => Err(Error::api("creating", "HostPort", name)(source)),
    }
}

/// Deletes the claim's HostPorts of `names`, each only if the API server says it is still
/// the claim's (by that object's UID).
async fn give_back(ctx: &Context, uid: &str, names: impl Iterator<Item = String>) -> Result<()> {
    let api: Api<HostPort> = Api::all(ctx.client.clone());
    for name in names {
        let current = api
            .get_opt(&name)
            .await
            .map_err(Error::api("reading", "HostPort", &name))?;
        if let Some(current) = current.filter(|hp| hp.claim_uid() == Some(uid)) {
            writes::delete_host_port(ctx, &name, current.uid()).await?;
        }
    }
    Ok(())
}
