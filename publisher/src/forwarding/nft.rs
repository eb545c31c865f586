//! The nftables backend: one table, `inet hostport`, that only we write. A full sync replaces
//! it in one `nft -f` transaction (`table …; delete table …; table … { … }`: atomic, and
//! valid whether it existed or not), so a crash never leaves half a ruleset and other tables
//! are never touched. A small change is the element additions and deletions, also one
//! transaction, so one port among 10,000 costs a handful of elements, not 10,000.
//!
//! The forwards live in maps, one per protocol and family (`tcp_forwards`, `udp_forwards`:
//! port → IPv4 address . port; `tcp_forwards6`, `udp_forwards6`: port → IPv6 address .
//! port), read by one rule each; `targets` and `targets6` hold the destinations (address .
//! protocol . port), so the forward-accept and masquerade rules touch our own connections
//! only. Both families live in one `inet` table: one transaction updates both.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use hostport_api::IpFamily;

use crate::claimed::Protocol;
use crate::forwarding::rules::{Delta, Forward, ForwardSet};

/// Family and name of our table.
pub const TABLE: &str = "inet hostport";

/// How the rules match and rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Forward only what arrives on this interface (edge mode: the external one); `None`:
    /// any interface (node mode).
    pub interface: Option<String>,
    /// Rewrite the source of forwarded IPv4 connections to the outgoing address, so replies
    /// come back through this host (needed unless the targets route back through it).
    pub masquerade: bool,
    /// The same for IPv6 (off by default: IPv6 nodes usually route back through the edge,
    /// and the client's address is worth keeping).
    pub masquerade6: bool,
}

impl Rules {
    fn masquerades(&self, family: IpFamily) -> bool {
        match family {
            IpFamily::Ipv4 => self.masquerade,
            IpFamily::Ipv6 => self.masquerade6,
        }
    }
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

fn map_name(family: IpFamily, protocol: Protocol) -> String {
    format!("{protocol}_forwards{}", suffix(family))
}

fn targets_name(family: IpFamily) -> String {
    format!("targets{}", suffix(family))
}

/// `""` for IPv4 (the names every release before used), `"6"` for IPv6.
fn suffix(family: IpFamily) -> &'static str {
    match family {
        IpFamily::Ipv4 => "",
        IpFamily::Ipv6 => "6",
    }
}

/// nft's words for a family: the address type, the `nfproto` and the header (`ip`, `ip6`).
fn words(family: IpFamily) -> (&'static str, &'static str, &'static str) {
    match family {
        IpFamily::Ipv4 => ("ipv4_addr", "ipv4", "ip"),
        IpFamily::Ipv6 => ("ipv6_addr", "ipv6", "ip6"),
    }
}

fn map_element(forward: &Forward) -> String {
    format!(
        "{} : {} . {}",
        forward.port, forward.target.address, forward.target.port
    )
}

type TargetElement = (IpAddr, Protocol, u16);

fn targets(set: impl IntoIterator<Item = Forward>) -> BTreeSet<TargetElement> {
    set.into_iter()
        .map(|f| (f.target.address, f.protocol, f.target.port))
        .collect()
}

fn target_element((address, protocol, port): &TargetElement) -> String {
    format!("{address} . {protocol} . {port}")
}

fn elements(out: &mut String, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if !items.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
    }
}

/// The whole table for `set`, replacing whatever was there, as one `nft -f` script.
pub fn full(rules: &Rules, set: &ForwardSet) -> String {
    let mut out = format!("table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n");
    let all_targets = targets(set.iter());
    for family in IpFamily::ALL {
        let (address_type, _, _) = words(family);
        for protocol in PROTOCOLS {
            let _ = writeln!(
                out,
                "\tmap {} {{\n\t\ttype inet_service : {address_type} . inet_service",
                map_name(family, protocol)
            );
            elements(&mut out, set.of(family, protocol).map(|f| map_element(&f)));
            out.push_str("\t}\n");
        }
        let _ = writeln!(
            out,
            "\tset {} {{\n\t\ttype {address_type} . inet_proto . inet_service",
            targets_name(family)
        );
        elements(
            &mut out,
            all_targets
                .iter()
                .filter(|(address, ..)| IpFamily::of(*address) == family)
                .map(target_element),
        );
        out.push_str("\t}\n");
    }
    let interface = rules
        .interface
        .as_ref()
        .map(|i| format!("iifname {} ", quote(i)))
        .unwrap_or_default();
    out.push_str(
        "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n",
    );
    for family in IpFamily::ALL {
        let (_, nfproto, header) = words(family);
        for protocol in PROTOCOLS {
            let _ = writeln!(
                out,
                "\t\t{interface}fib daddr type local meta nfproto {nfproto} meta l4proto {protocol} dnat {header} to {protocol} dport map @{}",
                map_name(family, protocol)
            );
        }
    }
    out.push_str("\t}\n");
    let ours = |family: IpFamily| {
        let (_, _, header) = words(family);
        format!(
            "ct status dnat {header} daddr . meta l4proto . th dport @{}",
            targets_name(family)
        )
    };
    out.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n",
    );
    for family in IpFamily::ALL {
        let _ = writeln!(out, "\t\t{} accept", ours(family));
    }
    out.push_str("\t}\n");
    let masqueraded: Vec<IpFamily> = IpFamily::ALL
        .into_iter()
        .filter(|f| rules.masquerades(*f))
        .collect();
    if !masqueraded.is_empty() {
        out.push_str(
            "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
        );
        for family in masqueraded {
            let _ = writeln!(out, "\t\t{} masquerade", ours(family));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// The element changes that turn the table for `old` into the table for `new`, as one `nft -f`
/// transaction (empty when nothing changes). It assumes the table holds `old`: if not, it
/// fails as a whole and a [`full`] sync repairs it.
pub fn delta(old: &ForwardSet, new: &ForwardSet) -> String {
    let Delta { removed, added } = old.delta(new);
    let (before, after) = (targets(old.iter()), targets(new.iter()));
    let mut out = String::new();
    for family in IpFamily::ALL {
        for protocol in PROTOCOLS {
            let ports = removed
                .iter()
                .filter(|f| f.family() == family && f.protocol == protocol);
            element_line(
                &mut out,
                "delete",
                &map_name(family, protocol),
                ports.map(|f| f.port.to_string()),
            );
        }
        let gone = before
            .difference(&after)
            .filter(|(address, ..)| IpFamily::of(*address) == family)
            .map(target_element);
        element_line(&mut out, "delete", &targets_name(family), gone);
    }
    for family in IpFamily::ALL {
        for protocol in PROTOCOLS {
            let items = added
                .iter()
                .filter(|f| f.family() == family && f.protocol == protocol);
            element_line(
                &mut out,
                "add",
                &map_name(family, protocol),
                items.map(map_element),
            );
        }
        let came = after
            .difference(&before)
            .filter(|(address, ..)| IpFamily::of(*address) == family)
            .map(target_element);
        element_line(&mut out, "add", &targets_name(family), came);
    }
    out
}

/// `<verb> element inet hostport <set> { … }`, when there are items.
fn element_line(out: &mut String, verb: &str, set: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if !items.is_empty() {
        let _ = writeln!(
            out,
            "{verb} element {TABLE} {set} {{ {} }}",
            items.join(", ")
        );
    }
}

/// Removes our table (and nothing else); valid whether it exists or not.
pub fn cleanup() -> String {
    format!("table {TABLE}\ndelete table {TABLE}\n")
}

/// An nft string literal (interface names are at most 15 bytes, no quotes allowed).
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace(['"', '\\'], ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarding::rules::Target;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn fwd(protocol: Protocol, port: u16, last: u8) -> Forward {
        Forward {
            protocol,
            port,
            target: Target {
                address: Ipv4Addr::new(198, 51, 100, last).into(),
                port,
            },
        }
    }

    fn fwd6(protocol: Protocol, port: u16, last: u16) -> Forward {
        Forward {
            protocol,
            port,
            target: Target {
                address: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last).into(),
                port,
            },
        }
    }

    #[test]
    fn both_families_live_in_one_table_with_their_own_maps() {
        let set: ForwardSet = [fwd(Protocol::Tcp, 9000, 2), fwd6(Protocol::Tcp, 9000, 2)]
            .into_iter()
            .collect();
        let rules = Rules {
            interface: None,
            masquerade: true,
            masquerade6: false,
        };
        let script = full(&rules, &set);
        assert!(script.contains(
            "map tcp_forwards6 {\n\t\ttype inet_service : ipv6_addr . inet_service\n\t\telements = { 9000 : 2001:db8::2 . 9000 }"
        ));
        assert!(script.contains("elements = { 2001:db8::2 . tcp . 9000 }"));
        assert!(script.contains(
            "meta nfproto ipv6 meta l4proto tcp dnat ip6 to tcp dport map @tcp_forwards6"
        ));
        assert!(
            script.contains("ct status dnat ip6 daddr . meta l4proto . th dport @targets6 accept")
        );
        assert!(
            script.contains("@targets masquerade") && !script.contains("@targets6 masquerade"),
            "IPv6 is not masqueraded unless asked: {script}"
        );
        let masquerading = Rules {
            masquerade6: true,
            ..rules
        };
        assert!(full(&masquerading, &set).contains("@targets6 masquerade"));
        let change = delta(&set, &[fwd(Protocol::Tcp, 9000, 2)].into_iter().collect());
        assert_eq!(
            change,
            "delete element inet hostport tcp_forwards6 { 9000 }\n\
             delete element inet hostport targets6 { 2001:db8::2 . tcp . 9000 }\n"
        );
    }

    #[test]
    fn a_full_sync_replaces_our_table_only() {
        let set: ForwardSet = [fwd(Protocol::Tcp, 9000, 2), fwd(Protocol::Udp, 9000, 2)]
            .into_iter()
            .collect();
        let rules = Rules {
            interface: Some("eth0".into()),
            masquerade: true,
            masquerade6: false,
        };
        let script = full(&rules, &set);
        assert!(script.starts_with("table inet hostport\ndelete table inet hostport\n"));
        assert!(script.contains("elements = { 9000 : 198.51.100.2 . 9000 }"));
        assert!(
            script.contains("elements = { 198.51.100.2 . tcp . 9000, 198.51.100.2 . udp . 9000 }")
        );
        assert!(script.contains("iifname \"eth0\" fib daddr type local"));
        assert!(script.contains("masquerade"));
        assert!(!script.contains("table ip "), "no other table is named");
        let plain = full(&Rules::default(), &ForwardSet::new());
        assert!(
            !plain.contains("elements")
                && !plain.contains("masquerade")
                && !plain.contains("iifname")
        );
    }

    #[test]
    fn a_delta_touches_only_the_changed_elements() {
        let old: ForwardSet = [fwd(Protocol::Tcp, 9000, 2), fwd(Protocol::Tcp, 9001, 2)]
            .into_iter()
            .collect();
        let mut new = old.clone();
        new = new
            .iter()
            .filter(|f| f.port != 9001)
            .chain([fwd(Protocol::Udp, 9002, 3)])
            .collect();
        let script = delta(&old, &new);
        assert_eq!(
            script,
            "delete element inet hostport tcp_forwards { 9001 }\n\
             delete element inet hostport targets { 198.51.100.2 . tcp . 9001 }\n\
             add element inet hostport udp_forwards { 9002 : 198.51.100.3 . 9002 }\n\
             add element inet hostport targets { 198.51.100.3 . udp . 9002 }\n"
        );
        assert_eq!(delta(&new, &new), "");
    }

    #[test]
    fn interface_names_cannot_break_out_of_the_literal() {
        let rules = Rules {
            interface: Some("eth0\"; flush ruleset; \"".into()),
            ..Rules::default()
        };
        assert!(full(&rules, &ForwardSet::new()).contains("iifname \"eth0; flush ruleset; \""));
    }
}
