//! Which port a claim should try next, decided from its class and the port book alone: the
//! requested port, else its previous port while free, else the lowest free port of the
//! class's pools — or why it has to wait. Pure (no I/O); `claim::allocate` turns the pick
//! into the create that locks it.

use std::collections::BTreeMap;
use std::time::Instant;

use hostport_api::conditions::reasons;
use hostport_api::ports::{describe_ranges, distinct_port_count};
use hostport_api::{HostPort, HostPortClaim, HostPortClass};

use crate::declared::PodPorts;
use crate::port_book::PortBook;

/// The outcome of a pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Try this port (reserved in the book for the claim).
    Port(u16),
    /// No port now: the `Bound=False` reason and message.
    Wait {
        /// A reason of `hostport_api::conditions::reasons`.
        reason: &'static str,
        /// What is wrong and what fixes it.
        message: String,
    },
}

fn wait(reason: &'static str, message: String) -> Pick {
    Pick::Wait { reason, message }
}

/// What the allocator knows of a claim's namespace for its class's access rules.
#[derive(Clone, Debug, Default)]
pub struct NamespaceAccess {
    /// The Namespace's labels (read only when the class has a `namespaceSelector`).
    pub labels: BTreeMap<String, String>,
    /// Other claims of the class in the namespace that hold or are being given a port.
    pub holding: usize,
}

/// The class a claim may take ports from, or why it waits: the class exists, admits the
/// namespace and grants what the claim asks beyond a port. The checks of every pick.
fn usable_class<'c>(
    claim: &HostPortClaim,
    class: Option<&'c HostPortClass>,
    access: &NamespaceAccess,
) -> Result<&'c HostPortClass, Pick> {
    let class_name = &claim.spec.host_port_class_name;
    let Some(class) = class.filter(|c| c.metadata.deletion_timestamp.is_none()) else {
        return Err(wait(
            reasons::CLASS_NOT_FOUND,
            format!(
                "HostPortClass {class_name:?} does not exist (or is being deleted): create it, or recreate the claim with an existing spec.hostPortClassName"
            ),
        ));
    };
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    if let Some((reason, message)) =
        class.refuses_namespace(namespace, &access.labels, access.holding)
    {
        return Err(wait(reason, message));
    }
    if let Some((reason, rule)) = class.refuses_claim_spec(&claim.spec) {
        return Err(wait(
            reason,
            format!("{rule}: recreate the claim with a class that allows it, or without it"),
        ));
    }
    Ok(class)
}

/// Picks the port `claim` (UID `uid`) should try next from `class` (as cached; `None` when
/// missing), reserving it in `book`.
pub fn pick_port(
    claim: &HostPortClaim,
    uid: &str,
    class: Option<&HostPortClass>,
    access: &NamespaceAccess,
    book: &mut PortBook,
    now: Instant,
) -> Pick {
    let class = match usable_class(claim, class, access) {
        Ok(class) => class,
        Err(wait) => return wait,
    };
    let class_name = &claim.spec.host_port_class_name;
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    let requested = claim.requested_port();
    if let Some(outside) = requested.and_then(|port| class.port_outside_pools(port)) {
        return wait(
            reasons::PORT_OUTSIDE_POOLS,
            format!("{outside}: recreate the claim with a port inside them, or without spec.port"),
        );
    }
    let ranges = class.ranges();
    // A claim whose `port-<n>` HostPort vanished gets port n back when it is still free and
    // in its class pools (its pods may still use it); a taken one is not waited for (the
    // lowest free port is), unlike a requested one.
    let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
    let free_for_claim = |port: u16| book.is_free_for(port, namespace, claim_name);
    let previous = claim
        .spec
        .host_port_name
        .as_deref()
        .and_then(HostPort::port_from_name)
        .filter(|port| ranges.iter().any(|r| r.contains(*port)) && free_for_claim(*port));
    match requested.or(previous) {
        Some(port) if !free_for_claim(port) && !book.is_held(port) && book.is_declared(port) => {
            wait(
                reasons::PORT_IN_USE,
                format!(
                    "port {port} is declared by {} outside the allocator (a hostPort not given through a claim): the claim binds when that is gone",
                    describe_pods(&book.outside_users(port))
                ),
            )
        }
        Some(port) if !free_for_claim(port) => wait(
            reasons::PORT_UNAVAILABLE,
            format!("port {port} is held by another HostPort; the claim binds when it is released"),
        ),
        Some(port) => {
            book.reserve(port, Some(uid), now);
            Pick::Port(port)
        }
        None => match book.reserve_lowest(&ranges, uid, now) {
            Some(port) => Pick::Port(port),
            None => {
                let outside = book.outside_in(&ranges);
                let outside = match outside.first() {
                    Some((port, pod)) => format!(
                        " ({} of them declared by pods outside the allocator, e.g. port {port} by {})",
                        outside.len(),
                        describe_pods(&[pod])
                    ),
                    None => String::new(),
                };
                wait(
                    reasons::POOL_EXHAUSTED,
                    format!(
                        "all {} ports of HostPortClass {class_name:?} ({}) are in use{outside}; the claim binds when one is released",
                        distinct_port_count(&ranges),
                        describe_ranges(&ranges)
                    ),
                )
            }
        },
    }
}

/// Picks the first port of the block of `claim.spec.count` consecutive ports `claim` (UID
/// `uid`) should try next from `class`, reserving every port of it in `book`: the requested
/// block (`spec.port` onwards) when all of it is free, else the lowest aligned free block
/// inside one pool.
pub fn pick_block(
    claim: &HostPortClaim,
    uid: &str,
    class: Option<&HostPortClass>,
    access: &NamespaceAccess,
    book: &mut PortBook,
    now: Instant,
) -> Pick {
    let class = match usable_class(claim, class, access) {
        Ok(class) => class,
        Err(wait) => return wait,
    };
    let (count, alignment) = (claim.spec.count(), claim.spec.alignment());
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
    let ranges = class.ranges();
    let Some(base) = claim.requested_port() else {
        return match book.reserve_lowest_run(&ranges, count, alignment, uid, now) {
            Some(base) => Pick::Port(base),
            None => wait(
                reasons::POOL_EXHAUSTED,
                format!(
                    "HostPortClass {:?} ({}) has no {count} consecutive free ports{} inside one pool; the claim binds when enough are released",
                    claim.spec.host_port_class_name,
                    describe_ranges(&ranges),
                    if alignment > 1 {
                        format!(" starting at a multiple of {alignment}")
                    } else {
                        String::new()
                    }
                ),
            ),
        };
    };
    if let Some(outside) = class.block_outside_pools(base, count) {
        return wait(
            reasons::PORT_OUTSIDE_POOLS,
            format!("{outside}: recreate the claim with a block inside one pool"),
        );
    }
    if !base.is_multiple_of(alignment) {
        return wait(
            reasons::INVALID_BLOCK,
            format!(
                "spec.port {base} is not a multiple of spec.alignment {alignment}: recreate the claim with an aligned port, or without spec.alignment"
            ),
        );
    }
    let block = || (0..count).filter_map(|i| base.checked_add(i));
    if let Some(taken) = block().find(|port| !book.is_free_for(*port, namespace, claim_name)) {
        let (reason, by) = if !book.is_held(taken) && book.is_declared(taken) {
            (
                reasons::PORT_IN_USE,
                format!(
                    "is declared by {} outside the allocator",
                    describe_pods(&book.outside_users(taken))
                ),
            )
        } else {
            (
                reasons::PORT_UNAVAILABLE,
                "is held by another HostPort".to_owned(),
            )
        };
        return wait(
            reason,
            format!(
                "port {taken} of the block {base}-{} {by}; the claim binds when the whole block is free",
                u32::from(base) + u32::from(count) - 1
            ),
        );
    }
    for port in block() {
        book.reserve(port, Some(uid), now);
    }
    Pick::Port(base)
}

/// "pod team/a (node n1), pod team/b" for at most three pods.
pub fn describe_pods(pods: &[&PodPorts]) -> String {
    let mut shown: Vec<String> = pods
        .iter()
        .take(3)
        .map(|p| match &p.node {
            Some(node) => format!("pod {} (node {node})", p.key()),
            None => format!("pod {}", p.key()),
        })
        .collect();
    if pods.len() > shown.len() {
        shown.push(format!("{} more", pods.len() - shown.len()));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostport_api::{ClaimReference, HostPortClaimSpec, HostPortClassSpec, HostPortSpec};

    fn class(pools: &[(i32, i32)]) -> HostPortClass {
        HostPortClass::new("games", HostPortClassSpec::with_pools(pools))
    }

    fn claim(port: Option<i32>, host_port_name: Option<&str>) -> HostPortClaim {
        HostPortClaim::new(
            "web",
            HostPortClaimSpec {
                host_port_class_name: "games".into(),
                host_port_name: host_port_name.map(str::to_owned),
                port,
                port_policy: None,
                count: None,
                alignment: None,
            },
        )
    }

    /// A book in which `ports` are held by other claims' HostPorts.
    fn book(ports: &[u16]) -> PortBook {
        let mut book = PortBook::default();
        book.relist_start();
        for &port in ports {
            book.relist_apply(&HostPort::new(
                &HostPort::name_for_port(port),
                HostPortSpec {
                    claim_ref: Some(ClaimReference {
                        uid: Some(format!("other-{port}")),
                        ..ClaimReference::default()
                    }),
                    host_port_class_name: "games".into(),
                    port: Some(i32::from(port)),
                },
            ));
        }
        book.relist_done();
        book
    }

    /// A namespace every class lets in.
    fn open() -> NamespaceAccess {
        NamespaceAccess::default()
    }

    fn reason(pick: &Pick) -> &'static str {
        match pick {
            Pick::Wait { reason, .. } => reason,
            Pick::Port(port) => panic!("expected a wait, got port {port}"),
        }
    }

    #[test]
    fn the_lowest_free_port_of_the_pools_and_reserves_it() {
        let class = class(&[(9000, 9002), (30000, 30000)]);
        let mut book = book(&[9000]);
        let now = Instant::now();
        let claim = claim(None, None);
        assert_eq!(
            pick_port(&claim, "a", Some(&class), &open(), &mut book, now),
            Pick::Port(9001)
        );
        assert_eq!(
            pick_port(&claim, "b", Some(&class), &open(), &mut book, now),
            Pick::Port(9002)
        );
        assert_eq!(
            pick_port(&claim, "c", Some(&class), &open(), &mut book, now),
            Pick::Port(30000)
        );
        let exhausted = pick_port(&claim, "d", Some(&class), &open(), &mut book, now);
        assert_eq!(reason(&exhausted), reasons::POOL_EXHAUSTED);
        let Pick::Wait { message, .. } = exhausted else {
            unreachable!()
        };
        assert!(
            message.contains("all 4 ports") && message.contains("9000-9002, 30000-30000"),
            "{message}"
        );
    }

    #[test]
    fn passthrough_waits_for_a_class_that_allows_it() {
        let mut passthrough = claim(None, None);
        passthrough.spec.port_policy = Some(hostport_api::PortPolicy::Passthrough);
        let mut games = class(&[(9000, 9010)]);
        let now = Instant::now();
        let mut book = book(&[]);
        let refused = pick_port(&passthrough, "a", Some(&games), &open(), &mut book, now);
        assert_eq!(reason(&refused), reasons::PASSTHROUGH_NOT_ALLOWED);
        assert!(
            matches!(&refused, Pick::Wait { message, .. } if message.contains("spec.allowPassthrough is false")),
            "{refused:?}"
        );
        assert!(book.is_free_for(9000, "", "web"), "nothing reserved");
        games.spec.allow_passthrough = true;
        assert_eq!(
            pick_port(&passthrough, "a", Some(&games), &open(), &mut book, now),
            Pick::Port(9000)
        );
    }

    fn block_claim(port: Option<i32>, count: i32, alignment: Option<i32>) -> HostPortClaim {
        let mut claim = claim(port, None);
        claim.spec.count = Some(count);
        claim.spec.alignment = alignment;
        claim
    }

    #[test]
    fn a_block_is_the_lowest_aligned_free_run_inside_one_pool_and_reserved_whole() {
        let mut games = class(&[(9000, 9009), (9010, 9039)]);
        games.spec.max_block_size = Some(10);
        let now = Instant::now();
        let mut book = book(&[9001]);
        let pick = |claim: &HostPortClaim, uid: &str, book: &mut PortBook| {
            pick_block(claim, uid, Some(&games), &open(), book, now)
        };
        // 9000-9009 has 9001 taken; a block never spans 9009/9010.
        assert_eq!(
            pick(&block_claim(None, 10, None), "a", &mut book),
            Pick::Port(9010)
        );
        assert!(
            (9010..=9019).all(|p| !book.is_free_for(p, "", "other")),
            "reserved whole"
        );
        assert_eq!(
            pick(&block_claim(None, 4, Some(4)), "b", &mut book),
            Pick::Port(9004)
        );
        // Left in the first pool: 9000, 9002-9003, 9008-9009.
        assert_eq!(
            pick(&block_claim(None, 3, None), "c", &mut book),
            Pick::Port(9020)
        );
        assert_eq!(
            pick(&block_claim(None, 2, Some(2)), "d", &mut book),
            Pick::Port(9002)
        );
        assert_eq!(
            pick(&block_claim(None, 10, Some(2)), "e", &mut book),
            Pick::Port(9024)
        );
        let exhausted = pick(&block_claim(None, 7, Some(2)), "f", &mut book);
        assert_eq!(reason(&exhausted), reasons::POOL_EXHAUSTED);
        assert!(
            matches!(&exhausted, Pick::Wait { message, .. } if message.contains("no 7 consecutive free ports starting at a multiple of 2")),
            "{exhausted:?}"
        );
        let too_large = pick(&block_claim(None, 11, None), "e", &mut book);
        assert_eq!(reason(&too_large), reasons::BLOCK_TOO_LARGE);
    }

    #[test]
    fn a_requested_block_is_inside_one_pool_aligned_and_free_or_waited_for() {
        let mut games = class(&[(9000, 9009), (9010, 9019)]);
        games.spec.max_block_size = Some(8);
        let now = Instant::now();
        let mut book = book(&[9016]);
        let pick = |claim: &HostPortClaim, book: &mut PortBook| {
            pick_block(claim, "a", Some(&games), &open(), book, now)
        };
        assert_eq!(
            reason(&pick(&block_claim(Some(9006), 8, None), &mut book)),
            reasons::PORT_OUTSIDE_POOLS,
            "9006-9013 crosses the pools' boundary"
        );
        assert_eq!(
            reason(&pick(&block_claim(Some(9001), 2, Some(2)), &mut book)),
            reasons::INVALID_BLOCK
        );
        let taken = pick(&block_claim(Some(9012), 6, None), &mut book);
        assert_eq!(reason(&taken), reasons::PORT_UNAVAILABLE);
        assert!(
            matches!(&taken, Pick::Wait { message, .. } if message.contains("port 9016 of the block 9012-9017")),
            "{taken:?}"
        );
        assert!(
            book.is_free_for(9012, "", "other"),
            "nothing reserved on a wait"
        );
        assert_eq!(
            pick(&block_claim(Some(9000), 8, Some(4)), &mut book),
            Pick::Port(9000)
        );
    }

    #[test]
    fn a_requested_port_is_taken_or_waited_for() {
        let class = class(&[(9000, 9010)]);
        let now = Instant::now();
        let mut book = book(&[9005]);
        assert_eq!(
            pick_port(
                &claim(Some(9007), None),
                "a",
                Some(&class),
                &open(),
                &mut book,
                now
            ),
            Pick::Port(9007)
        );
        let taken = pick_port(
            &claim(Some(9005), None),
            "b",
            Some(&class),
            &open(),
            &mut book,
            now,
        );
        assert_eq!(reason(&taken), reasons::PORT_UNAVAILABLE);
        let outside = pick_port(
            &claim(Some(80), None),
            "c",
            Some(&class),
            &open(),
            &mut book,
            now,
        );
        assert_eq!(reason(&outside), reasons::PORT_OUTSIDE_POOLS);
        let Pick::Wait { message, .. } = outside else {
            unreachable!()
        };
        assert!(
            message.contains("spec.port 80") && message.contains("9000-9010"),
            "{message}"
        );
    }

    #[test]
    fn a_previous_port_comes_back_when_free_and_in_the_pools_only() {
        let class = class(&[(9000, 9010)]);
        let now = Instant::now();
        let mut book = book(&[9003]);
        let back = claim(None, Some("port-9008"));
        assert_eq!(
            pick_port(&back, "a", Some(&class), &open(), &mut book, now),
            Pick::Port(9008)
        );
        // Taken since: the lowest free port instead, not a wait.
        let taken = claim(None, Some("port-9003"));
        assert_eq!(
            pick_port(&taken, "b", Some(&class), &open(), &mut book, now),
            Pick::Port(9000)
        );
        // Outside the pools now, or a Go-era name: the lowest free port.
        for (name, lowest) in [("port-20000", 9001), ("hpc-1234", 9002)] {
            let other = claim(None, Some(name));
            assert_eq!(
                pick_port(&other, "c", Some(&class), &open(), &mut book, now),
                Pick::Port(lowest),
                "{name}"
            );
        }
    }

    #[test]
    fn ports_pods_declare_outside_the_books_are_skipped_and_named() {
        let class = class(&[(9000, 9001)]);
        let now = Instant::now();
        let mut book = book(&[]);
        book.pods_relist_start();
        book.pods_relist_done();
        let squatter = |name: &str, port: u16, claims: &[&str]| PodPorts {
            namespace: "other".into(),
            name: name.into(),
            node: Some("n1".into()),
            ports: vec![port],
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
        };
        book.set_pod("other/squat", Some(squatter("squat", 9000, &[])));
        let mut web = claim(Some(9000), None);
        web.metadata.namespace = Some("team".into());
        let refused = pick_port(&web, "a", Some(&class), &open(), &mut book, now);
        assert_eq!(reason(&refused), reasons::PORT_IN_USE);
        let Pick::Wait { message, .. } = refused else {
            unreachable!()
        };
        assert!(
            message.contains("port 9000") && message.contains("pod other/squat (node n1)"),
            "{message}"
        );
        let mut any = claim(None, None);
        any.metadata.namespace = Some("team".into());
        assert_eq!(
            pick_port(&any, "b", Some(&class), &open(), &mut book, now),
            Pick::Port(9001)
        );
        let exhausted = pick_port(&any, "c", Some(&class), &open(), &mut book, now);
        let Pick::Wait { reason, message } = exhausted else {
            panic!("{exhausted:?}")
        };
        assert_eq!(reason, reasons::POOL_EXHAUSTED);
        assert!(
            message.contains("1 of them declared by pods outside the allocator, e.g. port 9000 by pod other/squat"),
            "{message}"
        );
        // A claim whose HostPort vanished gets back the port its own pods declare.
        book.release(9001);
        book.set_pod("other/squat", None);
        book.set_pod(
            "team/user",
            Some(PodPorts {
                namespace: "team".into(),
                ..squatter("user", 9001, &["web"])
            }),
        );
        let mut back = claim(None, Some("port-9001"));
        back.metadata.namespace = Some("team".into());
        back.metadata.name = Some("web".into());
        assert_eq!(
            pick_port(&back, "d", Some(&class), &open(), &mut book, now),
            Pick::Port(9001)
        );
    }

    #[test]
    fn a_missing_or_deleting_class_is_waited_for() {
        let now = Instant::now();
        let mut book = book(&[]);
        let missing = pick_port(&claim(None, None), "a", None, &open(), &mut book, now);
        assert_eq!(reason(&missing), reasons::CLASS_NOT_FOUND);
        let mut deleting = class(&[(9000, 9010)]);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let gone = pick_port(
            &claim(None, None),
            "a",
            Some(&deleting),
            &open(),
            &mut book,
            now,
        );
        assert_eq!(reason(&gone), reasons::CLASS_NOT_FOUND);
        assert!(
            !book.is_used(9000),
            "nothing reserved for a claim that waits"
        );
    }

    #[test]
    fn namespace_selector_and_limit_are_enforced_before_a_port_is_taken() {
        let now = Instant::now();
        let mut book = book(&[]);
        let mut class = class(&[(9000, 9010)]);
        class.spec.namespace_selector = Some(hostport_api::selector::LabelSelector {
            match_labels: [("team".to_owned(), "a".to_owned())].into(),
            ..Default::default()
        });
        class.spec.max_claims_per_namespace = Some(2);
        let mut claim = claim(None, None);
        claim.metadata.namespace = Some("team-b".into());
        let outsider = NamespaceAccess {
            labels: [("team".to_owned(), "b".to_owned())].into(),
            holding: 0,
        };
        let refused = pick_port(&claim, "a", Some(&class), &outsider, &mut book, now);
        assert_eq!(reason(&refused), reasons::NAMESPACE_NOT_ALLOWED);
        let Pick::Wait { message, .. } = refused else {
            unreachable!()
        };
        assert!(
            message.contains("\"team-b\"") && message.contains("team=a"),
            "{message}"
        );
        let member = |holding| NamespaceAccess {
            labels: [("team".to_owned(), "a".to_owned())].into(),
            holding,
        };
        assert_eq!(
            pick_port(&claim, "a", Some(&class), &member(1), &mut book, now),
            Pick::Port(9000)
        );
        let full = pick_port(&claim, "b", Some(&class), &member(2), &mut book, now);
        assert_eq!(reason(&full), reasons::NAMESPACE_LIMIT_REACHED);
        assert!(!book.is_used(9001), "nothing reserved for a refused claim");
    }
}
