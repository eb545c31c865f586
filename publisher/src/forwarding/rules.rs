//! A set of forwards (address family, external port and protocol → address and port), what
//! changes between two sets, and which of them the deny-list leaves out: the value every
//! backend renders. IPv4 and IPv6 forwards of one port are two forwards: traffic that
//! arrives over IPv6 goes to the target's IPv6 address.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use hostport_api::IpFamily;

use crate::claimed::Protocol;
use crate::deny::DenyList;

/// Where an external port goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Address traffic is sent to (a node, or a pod in node mode).
    pub address: IpAddr,
    /// Port there.
    pub port: u16,
}

impl Target {
    /// The family of its address (and of the forward to it).
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.address)
    }
}

impl fmt::Display for Target {
    /// `198.51.100.2:9000`, `[2001:db8::2]:9000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::net::SocketAddr::new(self.address, self.port).fmt(f)
    }
}

/// A forward's key: one target per family, protocol and external port.
type ForwardKey = (IpFamily, Protocol, u16);

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
    /// The family of its target (traffic of that family is forwarded).
    pub fn family(&self) -> IpFamily {
        self.target.family()
    }

    /// Whether `deny` denies its external or target port.
    pub fn is_denied(&self, deny: &DenyList) -> bool {
        deny.denies(self.port) || deny.denies(self.target.port)
    }
}

/// Two wanted forwards for one external port, protocol and family.
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

/// At most one target per external port, protocol and family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardSet {
    forwards: BTreeMap<ForwardKey, Target>,
}

impl ForwardSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a forward; a second target for the same external port is a [`Conflict`] (the
    /// lower target stays, so the result does not depend on the order of insertion).
    pub fn insert(&mut self, forward: Forward) -> Result<(), Conflict> {
        let key = (forward.family(), forward.protocol, forward.port);
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

    /// Every forward, by family, protocol, then port.
    pub fn iter(&self) -> impl Iterator<Item = Forward> + '_ {
        self.forwards
            .iter()
            .map(|(&key, &target)| forward(key, target))
    }

    /// The forwards of one family and protocol, by port.
    pub fn of(&self, family: IpFamily, protocol: Protocol) -> impl Iterator<Item = Forward> + '_ {
        self.forwards
            .range((family, protocol, 0)..=(family, protocol, u16::MAX))
            .map(|(&key, &target)| forward(key, target))
    }

    /// Number of forwards.
    pub fn len(&self) -> usize {
        self.forwards.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty()
    }

    /// Where `port`/`protocol` over `family` goes, if anywhere.
    pub fn get(&self, family: IpFamily, protocol: Protocol, port: u16) -> Option<Target> {
        self.forwards.get(&(family, protocol, port)).copied()
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

fn forward((_, protocol, port): ForwardKey, target: Target) -> Forward {
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
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn fwd(protocol: Protocol, port: u16, last: u8, to_port: u16) -> Forward {
        Forward {
            protocol,
            port,
            target: Target {
                address: Ipv4Addr::new(198, 51, 100, last).into(),
                port: to_port,
            },
        }
    }

    fn fwd6(protocol: Protocol, port: u16, last: u16, to_port: u16) -> Forward {
        Forward {
            protocol,
            port,
            target: Target {
                address: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last).into(),
                port: to_port,
            },
        }
    }

    #[test]
    fn the_families_of_one_port_are_two_forwards() {
        let set: ForwardSet = [
            fwd(Protocol::Tcp, 9000, 2, 9000),
            fwd6(Protocol::Tcp, 9000, 2, 9000),
            fwd6(Protocol::Udp, 9000, 2, 9000),
        ]
        .into_iter()
        .collect();
        assert_eq!(set.len(), 3);
        assert_eq!(
            set.get(IpFamily::Ipv6, Protocol::Tcp, 9000)
                .map(|t| t.to_string()),
            Some("[2001:db8::2]:9000".to_owned())
        );
        assert_eq!(set.of(IpFamily::Ipv6, Protocol::Tcp).count(), 1);
        assert_eq!(set.of(IpFamily::Ipv4, Protocol::Udp).count(), 0);
        let mut conflict = set.clone();
        assert!(
            conflict.insert(fwd6(Protocol::Tcp, 9000, 3, 9000)).is_err(),
            "two IPv6 targets for one port conflict"
        );
        let only_v4: ForwardSet = [fwd(Protocol::Tcp, 9000, 2, 9000)].into_iter().collect();
        let delta = only_v4.delta(&set);
        assert!(delta.removed.is_empty());
        assert_eq!(delta.added.len(), 2, "the IPv6 forwards come, IPv4 stays");
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
            address: Ipv4Addr::new(198, 51, 100, 2).into(),
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
