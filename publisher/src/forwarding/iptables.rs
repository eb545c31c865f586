//! The iptables fallback, for hosts without nft: chains of our own (`HOSTPORT-PREROUTING`,
//! `HOSTPORT-POSTROUTING` in `nat`, `HOSTPORT-FORWARD` in `filter`), rewritten by one
//! `iptables-restore --noflush` per sync (each table commits atomically; other chains are
//! never touched), then one jump into each from the built-in chain, added once. IPv6
//! forwards get the same chains from `ip6tables` (the command's name with `ip6tables` for
//! `iptables`). Works with `iptables-nft` and `iptables-legacy` alike (`--iptables`).

use std::fmt::Write;

use hostport_api::IpFamily;

use crate::forwarding::nft::Rules;
use crate::forwarding::rules::ForwardSet;

/// Our chains: (table, chain, the built-in chain that jumps to it).
pub const CHAINS: [(&str, &str, &str); 3] = [
    ("nat", "HOSTPORT-PREROUTING", "PREROUTING"),
    ("nat", "HOSTPORT-POSTROUTING", "POSTROUTING"),
    ("filter", "HOSTPORT-FORWARD", "FORWARD"),
];

/// The `iptables-restore --noflush` (IPv4) or `ip6tables-restore --noflush` (IPv6) input
/// that makes our chains hold `set`'s forwards of `family`.
pub fn restore_input(rules: &Rules, set: &ForwardSet, family: IpFamily) -> String {
    let interface = rules
        .interface
        .as_ref()
        .map(|i| format!("-i {} ", sanitize(i)))
        .unwrap_or_default();
    let (host_bits, masquerade) = match family {
        IpFamily::Ipv4 => (32, rules.masquerade),
        IpFamily::Ipv6 => (128, rules.masquerade6),
    };
    let mut nat =
        String::from("*nat\n:HOSTPORT-PREROUTING - [0:0]\n:HOSTPORT-POSTROUTING - [0:0]\n");
    let mut filter = String::from("*filter\n:HOSTPORT-FORWARD - [0:0]\n");
    for forward in set.iter().filter(|f| f.family() == family) {
        let (protocol, target) = (forward.protocol, forward.target);
        let _ = writeln!(
            nat,
            "-A HOSTPORT-PREROUTING {interface}-m addrtype --dst-type LOCAL -p {protocol} -m {protocol} --dport {} -j DNAT --to-destination {target}",
            forward.port
        );
        let ours = format!(
            "-p {protocol} -m {protocol} -d {}/{host_bits} --dport {} -m conntrack --ctstate DNAT",
            target.address, target.port
        );
        if masquerade {
            let _ = writeln!(nat, "-A HOSTPORT-POSTROUTING {ours} -j MASQUERADE");
        }
        let _ = writeln!(filter, "-A HOSTPORT-FORWARD {ours} -j ACCEPT");
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// The IPv6 twin of an iptables command: `ip6tables`, `ip6tables-legacy`,
/// `/usr/sbin/ip6tables-nft`.
pub fn ip6tables(iptables: &str) -> String {
    match iptables.rfind("iptables") {
        Some(at) => format!("{}ip6tables{}", &iptables[..at], &iptables[at + 8..]),
        None => iptables.to_owned(),
    }
}

/// The shell script that applies `set` with `iptables` (the command's name: `iptables`,
/// `iptables-legacy`, `iptables-nft`) and its `ip6tables` twin: restore our chains, then
/// make sure each is jumped to exactly once. Without IPv6 forwards, the IPv6 chains are
/// emptied only where `ip6tables` works (a host without IPv6 still syncs IPv4).
pub fn script(iptables: &str, rules: &Rules, set: &ForwardSet) -> String {
    let mut out = String::from("set -e\n");
    for family in IpFamily::ALL {
        let command = match family {
            IpFamily::Ipv4 => sanitize(iptables),
            IpFamily::Ipv6 => sanitize(&ip6tables(iptables)),
        };
        let mut part = format!(
            "{command}-restore --noflush <<'HOSTPORT_RULES'\n{}HOSTPORT_RULES\n",
            restore_input(rules, set, family)
        );
        for (table, chain, from) in CHAINS {
            let _ = writeln!(
                part,
                "{command} -w -t {table} -C {from} -j {chain} 2>/dev/null || {command} -w -t {table} -I {from} -j {chain}"
            );
        }
        let needed = family == IpFamily::Ipv4 || set.iter().any(|f| f.family() == family);
        if needed {
            out.push_str(&part);
        } else {
            let _ = write!(
                out,
                "if {command} -w -t nat -S >/dev/null 2>&1; then\n{part}fi\n"
            );
        }
    }
    out
}

/// The shell script that removes our chains and the jumps to them, of both families (and
/// nothing else); safe when they are not there.
pub fn cleanup(iptables: &str) -> String {
    let mut out = String::new();
    for command in [sanitize(iptables), sanitize(&ip6tables(iptables))] {
        for (table, chain, from) in CHAINS {
            let _ = writeln!(
                out,
                "while {command} -w -t {table} -D {from} -j {chain} 2>/dev/null; do :; done\n{command} -w -t {table} -F {chain} 2>/dev/null || true\n{command} -w -t {table} -X {chain} 2>/dev/null || true"
            );
        }
    }
    out
}

/// Keeps only characters that cannot change the meaning of a shell line or rule.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claimed::Protocol;
    use crate::forwarding::rules::{Forward, Target};
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn our_chains_only_with_one_rule_set_per_forward() {
        let set: ForwardSet = [Forward {
            protocol: Protocol::Udp,
            port: 9000,
            target: Target {
                address: Ipv4Addr::new(198, 51, 100, 2).into(),
                port: 9001,
            },
        }]
        .into_iter()
        .collect();
        let rules = Rules {
            interface: Some("eth0".into()),
            masquerade: true,
            masquerade6: false,
        };
        let input = restore_input(&rules, &set, IpFamily::Ipv4);
        assert!(input.contains("-A HOSTPORT-PREROUTING -i eth0 -m addrtype --dst-type LOCAL -p udp -m udp --dport 9000 -j DNAT --to-destination 198.51.100.2:9001"));
        assert!(input.contains("-A HOSTPORT-POSTROUTING -p udp -m udp -d 198.51.100.2/32 --dport 9001 -m conntrack --ctstate DNAT -j MASQUERADE"));
        assert_eq!(input.matches("COMMIT").count(), 2);
        for line in input
            .lines()
            .filter(|l| l.starts_with("-A ") || l.starts_with(':'))
        {
            assert!(line.contains("HOSTPORT-"), "{line}");
        }
        let script = script("iptables-legacy; rm -rf /", &rules, &set);
        assert!(
            script.contains("iptables-legacyrm-rf/-restore --noflush"),
            "{script}"
        );
        assert!(cleanup("iptables").contains("-D PREROUTING -j HOSTPORT-PREROUTING"));
        assert!(cleanup("iptables").contains("ip6tables -w -t nat -D PREROUTING"));
        assert!(
            script.contains("if ip6tables-legacyrm-rf/ -w -t nat -S"),
            "without IPv6 forwards the IPv6 part runs only where ip6tables works: {script}"
        );
    }

    #[test]
    fn ipv6_forwards_go_to_ip6tables_with_bracketed_targets() {
        let set: ForwardSet = [Forward {
            protocol: Protocol::Tcp,
            port: 9000,
            target: Target {
                address: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
                port: 9000,
            },
        }]
        .into_iter()
        .collect();
        let rules = Rules::default();
        assert!(!restore_input(&rules, &set, IpFamily::Ipv4).contains("-A "));
        let input = restore_input(&rules, &set, IpFamily::Ipv6);
        assert!(input.contains("--dport 9000 -j DNAT --to-destination [2001:db8::2]:9000"));
        assert!(input.contains("-d 2001:db8::2/128 --dport 9000"));
        let script = script("iptables-nft", &rules, &set);
        assert!(
            script.contains("\nip6tables-nft-restore --noflush"),
            "{script}"
        );
        assert!(
            !script.contains("if ip6tables"),
            "required when IPv6 forwards exist"
        );
        assert_eq!(
            ip6tables("/usr/sbin/iptables-legacy"),
            "/usr/sbin/ip6tables-legacy"
        );
    }
}
