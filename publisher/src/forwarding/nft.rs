//! The nftables backend: one table, `inet hostport`, that only we write. A full sync replaces
//! it in one `nft -f` transaction (`table …; delete table …; table … { … }`: atomic, and
//! valid whether it existed or not), so a crash never leaves half a ruleset and other tables
//! are never touched. A small change is the element additions and deletions, also one
//! transaction, so one port among 10,000 costs a handful of elements, not 10,000.
//!
//! The forwards live in maps (`tcp_forwards`, `udp_forwards`: port → address . port), read
//! by one rule per protocol; `targets` holds the destinations (address . protocol . port),
//! so the forward-accept and masquerade rules touch our own connections only.

use std::collections::BTreeSet;
use std::fmt::Write;

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
    /// Rewrite the source of forwarded connections to the outgoing address, so replies come
    /// back through this host (needed unless the targets route back through it).
    pub masquerade: bool,
}

fn map_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp_forwards",
        Protocol::Udp => "udp_forwards",
    }
}

fn map_element(forward: &Forward) -> String {
    format!(
        "{} : {} . {}",
        forward.port, forward.target.address, forward.target.port
    )
}

type TargetElement = (std::net::Ipv4Addr, Protocol, u16);

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
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let _ = writeln!(
            out,
            "\tmap {} {{\n\t\ttype inet_service : ipv4_addr . inet_service",
            map_name(protocol)
        );
        elements(
            &mut out,
            set.iter()
                .filter(|f| f.protocol == protocol)
                .map(|f| map_element(&f)),
        );
        out.push_str("\t}\n");
    }
    out.push_str("\tset targets {\n\t\ttype ipv4_addr . inet_proto . inet_service\n");
    elements(&mut out, targets(set.iter()).iter().map(target_element));
    out.push_str("\t}\n");
    let interface = rules
        .interface
        .as_ref()
        .map(|i| format!("iifname {} ", quote(i)))
        .unwrap_or_default();
    out.push_str(
        "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n",
    );
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let _ = writeln!(
            out,
            "\t\t{interface}fib daddr type local meta nfproto ipv4 meta l4proto {protocol} dnat ip to {protocol} dport map @{}",
            map_name(protocol)
        );
    }
    out.push_str("\t}\n");
    let ours = "ct status dnat ip daddr . meta l4proto . th dport @targets";
    let _ = writeln!(
        out,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\t{ours} accept\n\t}}"
    );
    if rules.masquerade {
        let _ = writeln!(
            out,
            "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\t{ours} masquerade\n\t}}"
        );
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
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let ports = removed.iter().filter(|f| f.protocol == protocol);
        element_line(
            &mut out,
            "delete",
            map_name(protocol),
            ports.map(|f| f.port.to_string()),
        );
    }
    let gone = before.difference(&after).map(target_element);
    element_line(&mut out, "delete", "targets", gone);
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let items = added.iter().filter(|f| f.protocol == protocol);
        element_line(&mut out, "add", map_name(protocol), items.map(map_element));
    }
    let came = after.difference(&before).map(target_element);
    element_line(&mut out, "add", "targets", came);
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
    use std::net::Ipv4Addr;

    fn fwd(protocol: Protocol, port: u16, last: u8) -> Forward {
        Forward {
            protocol,
            port,
            target: Target {
                address: Ipv4Addr::new(198, 51, 100, last),
                port,
            },
        }
    }

    #[test]
    fn a_full_sync_replaces_our_table_only() {
        let set: ForwardSet = [fwd(Protocol::Tcp, 9000, 2), fwd(Protocol::Udp, 9000, 2)]
            .into_iter()
            .collect();
        let rules = Rules {
            interface: Some("eth0".into()),
            masquerade: true,
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
            masquerade: false,
        };
        assert!(full(&rules, &ForwardSet::new()).contains("iifname \"eth0; flush ruleset; \""));
    }
}
