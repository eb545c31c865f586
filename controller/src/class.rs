//! The class reconciler: keeps a finalizer on each HostPortClass while claims or HostPorts use
//! it, and keeps its status (capacity, allocated, available, conditions) current, writing it
//! at most once per class per interval so bursts of bindings cost one status write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::queue::Action;
use hostport_api::class::{PORTS_IN_USE_OUTSIDE_LISTED, TOP_NAMESPACES};
use hostport_api::conditions::{self, Condition, reasons, status, types};
use hostport_api::ports::{PortRange, distinct_port_count};
use hostport_api::{HostPortClass, HostPortClassStatus, NamespaceAllocation, PortInUseOutside};
use hostport_process::events::EventType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

use crate::context::Context;
use crate::error::Result;
use crate::metrics::ClassLabels;
use crate::writes;

/// Name of this reconciler in metrics and logs.
pub const CONTROLLER: &str = "class";

/// Safety net while a deleted class waits for its users (their watch events wake it sooner).
const USERS_RECHECK: Duration = Duration::from_secs(30);

/// Safety net for a class whose cached copy predates our own write (the watch event of the
/// write triggers the next reconcile well before this).
const STALE_RECHECK: Duration = Duration::from_secs(5);

/// Reconciles one class.
pub async fn reconcile(class: Arc<HostPortClass>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_class(&class, &ctx).await
}

/// How many claims and HostPorts use a class. Counted, not listed: a deleted class is woken
/// by every release of its claims, and listing (formatting and sorting) tens of thousands of
/// names each time, under the book's lock, made a mass release quadratic.
fn user_count(class: &str, ctx: &Context) -> usize {
    let claims = ctx.caches.claims.fold(0, |count, _, _, claim| {
        count + usize::from(claim.class() == class)
    });
    let host_ports = ctx
        .book()
        .host_ports()
        .filter(|(_, host_port)| host_port.class() == class)
        .count();
    claims + host_ports
}

async fn reconcile_class(class: &HostPortClass, ctx: &Context) -> Result<Action> {
    let api: Api<HostPortClass> = Api::all(ctx.client.clone());
    let name = class.name_any();
    if class.metadata.deletion_timestamp.is_some() {
        let users = user_count(&name, ctx);
        if users == 0 {
            writes::remove_finalizer(ctx, &api, class).await?;
            for labels in [
                &ctx.metrics.class_capacity,
                &ctx.metrics.class_allocated,
                &ctx.metrics.class_available,
                &ctx.metrics.class_in_use_outside,
            ] {
                labels.remove(&ClassLabels {
                    class: name.clone(),
                });
            }
            return Ok(Action::await_change());
        }
        tracing::info!(class = %name, users, "deletion waits for the claims and HostPorts using the class");
        return Ok(Action::requeue(USERS_RECHECK));
    }
    if ctx.is_stale(class) {
        return Ok(Action::requeue(STALE_RECHECK));
    }
    let mut class = class.clone();
    if let Some(updated) = writes::add_finalizer(ctx, &api, &class).await? {
        class = updated;
    }
    if let Some(wait) = ctx.class_status_slot(&name) {
        // Coalesce: every HostPort and pod change wakes its class, and a pass reads every
        // HostPort; a burst of bindings gets one pass (and at most one status write) per
        // interval, not one per change (at a full class, a core's worth of passes).
        return Ok(Action::requeue(wait));
    }

    let ranges = class.ranges();
    let capacity = distinct_port_count(&ranges);
    let (allocated, used) = {
        let book = ctx.book();
        let allocated = book
            .host_ports()
            .filter(|(_, host_port)| host_port.class() == name && host_port.port().is_some())
            .count();
        (allocated, book.used_in(&ranges))
    };
    let available = capacity.saturating_sub(used);
    let labels = ClassLabels {
        class: name.clone(),
    };
    ctx.metrics
        .class_capacity
        .get_or_create(&labels)
        .set(i64::from(capacity));
    ctx.metrics
        .class_allocated
        .get_or_create(&labels)
        .set(allocated as i64);
    ctx.metrics
        .class_available
        .get_or_create(&labels)
        .set(i64::from(available));

    let outside: Vec<PortInUseOutside> = ctx
        .book()
        .outside_in(&ranges)
        .into_iter()
        .map(|(port, pod)| PortInUseOutside {
            port: i32::from(port),
            pod: pod.key(),
            node: pod.node.clone(),
        })
        .collect();
    ctx.metrics
        .class_in_use_outside
        .get_or_create(&labels)
        .set(outside.len() as i64);
    let top_namespaces = top_namespaces(&name, ctx);
    let now = crate::clock::now();
    let generation = class.metadata.generation;
    let current = class.status.clone().unwrap_or_default();
    let mut desired = HostPortClassStatus {
        pools: Some(hostport_api::ports::describe_ranges(&ranges)),
        capacity: Some(capacity as i32),
        allocated: Some(allocated as i32),
        available: Some(available as i32),
        // An empty list, not none, so the merge patch clears a list that was there.
        top_namespaces: Some(top_namespaces),
        ports_in_use_outside: Some(
            outside
                .iter()
                .take(PORTS_IN_USE_OUTSIDE_LISTED)
                .cloned()
                .collect(),
        ),
        observed_generation: generation,
        conditions: current.conditions.clone(),
    };
    let (exhausted, ready, reason, message) = if available == 0 {
        (
            status::TRUE,
            status::FALSE,
            reasons::NO_PORTS_AVAILABLE,
            format!("all {capacity} ports are in use"),
        )
    } else {
        (
            status::FALSE,
            status::TRUE,
            reasons::PORTS_AVAILABLE,
            format!("{available} of {capacity} ports are free"),
        )
    };
    for (type_, state) in [(types::EXHAUSTED, exhausted), (types::READY, ready)] {
        conditions::set(
            &mut desired.conditions,
            Condition::new(type_, state, reason, &message, generation, now.clone()),
        );
    }
    conditions::set(
        &mut desired.conditions,
        overlap_condition(&name, &ranges, ctx, generation, now.clone()),
    );
    conditions::set(
        &mut desired.conditions,
        outside_condition(&outside, generation, now.clone()),
    );
    conditions::set(
        &mut desired.conditions,
        node_port_range_condition(&ranges, ctx.settings.node_port_range, generation, now),
    );
    if desired == current {
        return Ok(Action::await_change());
    }
    writes::class_status(ctx, &class, &desired).await?;
    let listed_before: Vec<i32> = current
        .ports_in_use_outside
        .iter()
        .flatten()
        .map(|p| p.port)
        .collect();
    let newly: Vec<&PortInUseOutside> = outside
        .iter()
        .filter(|p| !listed_before.contains(&p.port))
        .collect();
    if !newly.is_empty() {
        let shown: Vec<String> = newly.iter().take(5).map(|p| describe_outside(p)).collect();
        let message = format!(
            "{} of the pools {} declared by pods outside the allocator (a hostPort not given through a claim): {}{}; the allocator skips them while those pods live",
            if newly.len() == 1 { "a port" } else { "ports" },
            if newly.len() == 1 { "is" } else { "are" },
            shown.join(", "),
            if newly.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
        tracing::warn!(class = %name, ports = newly.len(), "{message}");
        ctx.event(
            &class,
            EventType::Warning,
            reasons::PORTS_IN_USE_OUTSIDE,
            "Allocating",
            message,
        )
        .await;
    }
    if available > 0 && current.available == Some(0) {
        ctx.wake_waiting();
    }
    Ok(Action::await_change())
}

/// The namespaces whose claims hold the most ports of `class` (from the HostPort cache).
fn top_namespaces(class: &str, ctx: &Context) -> Vec<NamespaceAllocation> {
    let mut by_namespace: BTreeMap<String, i32> = BTreeMap::new();
    for (_, host_port) in ctx.book().host_ports() {
        if host_port.class() != class || host_port.port().is_none() {
            continue;
        }
        if let Some((namespace, _)) = host_port.claim_key() {
            // A String per namespace, not per HostPort.
            match by_namespace.get_mut(namespace) {
                Some(allocated) => *allocated += 1,
                None => {
                    by_namespace.insert(namespace.to_owned(), 1);
                }
            }
        }
    }
    let mut top: Vec<NamespaceAllocation> = by_namespace
        .into_iter()
        .map(|(namespace, allocated)| NamespaceAllocation {
            namespace,
            allocated,
        })
        .collect();
    // Most first; the BTreeMap already ordered ties by name and the sort is stable.
    top.sort_by_key(|entry| std::cmp::Reverse(entry.allocated));
    top.truncate(TOP_NAMESPACES);
    top
}

fn describe_outside(port: &PortInUseOutside) -> String {
    match &port.node {
        Some(node) => format!("port {} by pod {} on node {node}", port.port, port.pod),
        None => format!("port {} by pod {}", port.port, port.pod),
    }
}

/// `PortsInUseOutside`: whether pods declare ports of the pools outside the books.
fn outside_condition(
    outside: &[PortInUseOutside],
    generation: Option<i64>,
    now: Time,
) -> Condition {
    match outside.first() {
        None => Condition::new(
            types::PORTS_IN_USE_OUTSIDE,
            status::FALSE,
            reasons::NO_PORTS_IN_USE_OUTSIDE,
            "every port of the pools that a pod declares is held through its claim",
            generation,
            now,
        ),
        Some(first) => Condition::new(
            types::PORTS_IN_USE_OUTSIDE,
            status::TRUE,
            reasons::PORTS_IN_USE_OUTSIDE,
            format!(
                "{} port(s) of the pools are declared by pods without a claim holding them (e.g. {}; status.portsInUseOutside lists them): the allocator skips them while those pods live; give those pods claims, or move them off the pools",
                outside.len(),
                describe_outside(first)
            ),
            generation,
            now,
        ),
    }
}

/// `OverlapsNodePortRange`: whether a pool shares ports with the cluster's NodePort Service
/// range, where kube-proxy may give a Service a port a claim holds (or the other way round).
fn node_port_range_condition(
    ranges: &[PortRange],
    node_ports: Option<PortRange>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let overlap = node_ports.filter(|n| ranges.iter().any(|r| r.overlaps(n)));
    match (overlap, node_ports) {
        (Some(node_ports), _) => Condition::new(
            types::OVERLAPS_NODE_PORT_RANGE,
            status::TRUE,
            reasons::NODE_PORT_RANGE,
            format!(
                "pools share ports with the NodePort Service range {}-{} (controller flag --service-node-port-range): a NodePort Service can take a port a claim holds on every node; move the pools out of that range",
                node_ports.start, node_ports.end
            ),
            generation,
            now,
        ),
        (None, Some(node_ports)) => Condition::new(
            types::OVERLAPS_NODE_PORT_RANGE,
            status::FALSE,
            reasons::OUTSIDE_NODE_PORT_RANGE,
            format!(
                "no pool shares ports with the NodePort Service range {}-{}",
                node_ports.start, node_ports.end
            ),
            generation,
            now,
        ),
        (None, None) => Condition::new(
            types::OVERLAPS_NODE_PORT_RANGE,
            status::UNKNOWN,
            reasons::OUTSIDE_NODE_PORT_RANGE,
            "not checked (--service-node-port-range none)",
            generation,
            now,
        ),
    }
}

fn overlap_condition(
    name: &str,
    ranges: &[PortRange],
    ctx: &Context,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let mut overlapping: Vec<String> = ctx
        .caches
        .classes
        .state()
        .iter()
        .filter(|other| other.name_any() != name)
        .filter(|other| {
            other
                .ranges()
                .iter()
                .any(|o| ranges.iter().any(|r| r.overlaps(o)))
        })
        .map(|other| other.name_any())
        .collect();
    overlapping.sort();
    if overlapping.is_empty() {
        Condition::new(
            types::POOLS_OVERLAP_OTHER_CLASS,
            status::FALSE,
            reasons::NO_OVERLAP,
            "no pool shares ports with another class",
            generation,
            now,
        )
    } else {
        Condition::new(
            types::POOLS_OVERLAP_OTHER_CLASS,
            status::TRUE,
            reasons::OVERLAP,
            format!(
                "pools share ports with HostPortClass {}: each port is still allocated once, to whichever claim asks first",
                overlapping.join(", ")
            ),
            generation,
            now,
        )
    }
}
