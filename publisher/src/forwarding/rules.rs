//! A set of forwards (external port and protocol → address and port), what changes between
//! two sets, and which of them the deny-list leaves out: the value every backend renders.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::claimed::{ExternalPort, Protocol};
use crate::deny::DenyList;

/// Where an external port goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Address traffic is sent to (a node, or a pod in node mode).
    pub address: Ipv4Addr,
    /// Port there.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.address, self.port)
    }
}

/// One external port of one protocol and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Forward {
    /// Protocol.
    pub protocol: Protocol,
    /// External port (on the router, or the node's host port).
    pub port: u16,
    /// Destination.
    pub target: Target,
}

impl Forward {
    /// Whether `deny` denies its external or target port.
    pub fn is_denied(&self, deny: &DenyList) -> bool {
        deny.denies(self.port) || deny.denies(self.target.port)
    }
}

/// Two wanted forwards for one external port and protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{protocol} port {port} is wanted for {kept} and for {dropped}; {kept} is kept")]
pub struct Conflict {
    /// Protocol.
    pub protocol: Protocol,
    /// External port.
    pub port: u16,
    /// The target kept (the lower one: deterministic, whatever the order of discovery).
    pub kept: Target,
    /// The target left out.
    pub dropped: Target,
}

/// At most one target per external port and protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardSet {
    forwards: BTreeMap<ExternalPort, Target>,
}

impl ForwardSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a forward; a second target for the same external port is a [`Conflict`] (the
    /// lower target stays, so the result does not depend on the order of insertion).
    pub fn insert(&mut self, forward: Forward) -> Result<(), Conflict> {
        let key = (forward.protocol, forward.port);
        match self.forwards.get_mut(&key) {
            None => {
                self.forwards.insert(key, forward.target);
                Ok(())
            }
            Some(existing) if *existing == forward.target => Ok(()),
            Some(existing) => {
                let (kept, dropped) = if forward.target < *existing {
                    (forward.target, *existing)
                } else {
                    (*existing, forward.target)
                };
                *existing = kept;
                Err(Conflict {
                    protocol: forward.protocol,
                    port: forward.port,
                    kept,
                    dropped,
                })
            }
        }
    }

    /// Every forward, by protocol then port.
    pub fn iter(&self) -> impl Iterator<Item = Forward> + '_ {
        self.forwards
            .iter()
            .map(|(&(protocol, port), &target)| Forward {
                protocol,
                port,
                target,
            })
    }

    /// Number of forwards.
    pub fn len(&self) -> usize {
        self.forwards.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty()
    }

    /// Where `protocol`/`port` goes, if anywhere.
    pub fn get(&self, protocol: Protocol, port: u16) -> Option<Target> {
        self.forwards.get(&(protocol, port)).copied()
    }

    /// `self` without forwards `deny` denies, and the forwards left out.
    pub fn split_denied(&self, deny: &DenyList) -> (ForwardSet, Vec<Forward>) {
        let (denied, kept): (Vec<Forward>, Vec<Forward>) =
            self.iter().partition(|f| f.is_denied(deny));
        (kept.into_iter().collect(), denied)
    }

    /// What turns `self` into `next`.
    pub fn delta(&self, next: &ForwardSet) -> Delta {
        let mut delta = Delta::default();
        for (key, target) in &self.forwards {
            match next.forwards.get(key) {
                None => delta.removed.push(forward(*key, *target)),
                Some(new) if new != target => {
                    delta.removed.push(forward(*key, *target));
                    delta.added.push(forward(*key, *new));
                }
                Some(_) => {}
            }
        }
        for (key, target) in &next.forwards {
            if !self.forwards.contains_key(key) {
                delta.added.push(forward(*key, *target));
            }
        }
        delta
    }
}

fn forward((protocol, port): ExternalPort, target: Target) -> Forward {
    Forward {
        protocol,
        port,
        target,
    }
}

impl FromIterator<Forward> for ForwardSet {
    /// Collects forwards; conflicts keep the lower target (use [`ForwardSet::insert`] to see
    /// them).
    fn from_iter<I: IntoIterator<Item = Forward>>(iter: I) -> Self {
        let mut set = Self::new();
        for forward in iter {
            let _ = set.insert(forward);
        }
        set
    }
}

/// The change between two sets: forwards to remove, then to add (a changed target is both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Forwards that go (their old target).
    pub removed: Vec<Forward>,
    /// Forwards that come (their new target).
    pub added: Vec<Forward>,
}

impl Delta {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(protocol: Protocol, port: u16, last: u8, to_port: u16) -> Forward {
        Forward {
            protocol,
            port,
            target: Target {
                address: Ipv4Addr::new(198, 51, 100, last),
                port: to_port,
            },
        }
    }

    #[test]
    fn one_target_per_port_and_the_lower_wins_in_any_order() {
        let a = fwd(Protocol::Tcp, 9000, 2, 9000);
        let b = fwd(Protocol::Tcp, 9000, 3, 9000);
        let mut first = ForwardSet::new();
        first.insert(a).expect("new");
        let conflict = first.insert(b).expect_err("conflict");
        assert_eq!(conflict.kept, a.target);
        let mut second = ForwardSet::new();
        second.insert(b).expect("new");
        assert!(second.insert(a).is_err());
        assert_eq!(first, second);
        // TCP and UDP of one port are two forwards.
        first
            .insert(fwd(Protocol::Udp, 9000, 3, 9000))
            .expect("udp");
        assert_eq!(first.len(), 2);
        assert!(
            first.insert(a).is_ok(),
            "the same forward twice is no conflict"
        );
    }

    #[test]
    fn delta_removes_adds_and_retargets() {
        let old: ForwardSet = [
            fwd(Protocol::Tcp, 9000, 2, 9000),
            fwd(Protocol::Tcp, 9001, 2, 9001),
            fwd(Protocol::Udp, 9002, 2, 9002),
        ]
        .into_iter()
        .collect();
        let new: ForwardSet = [
            fwd(Protocol::Tcp, 9000, 2, 9000),
            fwd(Protocol::Tcp, 9001, 3, 9001),
            fwd(Protocol::Udp, 9003, 2, 9003),
        ]
        .into_iter()
        .collect();
        let delta = old.delta(&new);
        assert_eq!(
            delta.removed,
            vec![
                fwd(Protocol::Tcp, 9001, 2, 9001),
                fwd(Protocol::Udp, 9002, 2, 9002)
            ]
        );
        assert_eq!(
            delta.added,
            vec![
                fwd(Protocol::Tcp, 9001, 3, 9001),
                fwd(Protocol::Udp, 9003, 2, 9003)
            ]
        );
        assert!(new.delta(&new).is_empty());
    }

    #[test]
    fn denied_ports_are_left_out_on_either_side() {
        let target = |port| Target {
            address: Ipv4Addr::new(198, 51, 100, 2),
            port,
        };
        let set: ForwardSet = [
            Forward {
                protocol: Protocol::Tcp,
                port: 22,
                target: target(2222),
            },
            Forward {
                protocol: Protocol::Tcp,
                port: 2222,
                target: target(22),
            },
            Forward {
                protocol: Protocol::Tcp,
                port: 9000,
                target: target(9000),
            },
        ]
        .into_iter()
        .collect();
        let (kept, denied) = set.split_denied(&DenyList::default());
        assert_eq!(kept.len(), 1);
        assert_eq!(denied.len(), 2);
    }
}
