//! The iptables fallback, for hosts without nft: chains of our own (`HOSTPORT-PREROUTING`,
//! `HOSTPORT-POSTROUTING` in `nat`, `HOSTPORT-FORWARD` in `filter`), rewritten by one
//! `iptables-restore --noflush` per sync (each table commits atomically; other chains are
//! never touched), then one jump into each from the built-in chain, added once. Works with
//! `iptables-nft` and `iptables-legacy` alike (`--iptables`).

use std::fmt::Write;

use crate::forwarding::nft::Rules;
use crate::forwarding::rules::ForwardSet;

/// Our chains: (table, chain, the built-in chain that jumps to it).
pub const CHAINS: [(&str, &str, &str); 3] = [
    ("nat", "HOSTPORT-PREROUTING", "PREROUTING"),
    ("nat", "HOSTPORT-POSTROUTING", "POSTROUTING"),
    ("filter", "HOSTPORT-FORWARD", "FORWARD"),
];

/// The `iptables-restore --noflush` input that makes our chains hold `set`.
pub fn restore_input(rules: &Rules, set: &ForwardSet) -> String {
    let interface = rules
        .interface
        .as_ref()
        .map(|i| format!("-i {} ", sanitize(i)))
        .unwrap_or_default();
    let mut nat =
        String::from("*nat\n:HOSTPORT-PREROUTING - [0:0]\n:HOSTPORT-POSTROUTING - [0:0]\n");
    let mut filter = String::from("*filter\n:HOSTPORT-FORWARD - [0:0]\n");
    for forward in set.iter() {
        let (protocol, target) = (forward.protocol, forward.target);
        let _ = writeln!(
            nat,
            "-A HOSTPORT-PREROUTING {interface}-m addrtype --dst-type LOCAL -p {protocol} -m {protocol} --dport {} -j DNAT --to-destination {target}",
            forward.port
        );
        let ours = format!(
            "-p {protocol} -m {protocol} -d {}/32 --dport {} -m conntrack --ctstate DNAT",
            target.address, target.port
        );
        if rules.masquerade {
            let _ = writeln!(nat, "-A HOSTPORT-POSTROUTING {ours} -j MASQUERADE");
        }
        let _ = writeln!(filter, "-A HOSTPORT-FORWARD {ours} -j ACCEPT");
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// The shell script that applies `set` with `iptables` (the command's name: `iptables`,
/// `iptables-legacy`, `iptables-nft`): restore our chains, then make sure each is jumped to
/// exactly once.
pub fn script(iptables: &str, rules: &Rules, set: &ForwardSet) -> String {
    let iptables = sanitize(iptables);
    let mut out = format!(
        "set -e\n{iptables}-restore --noflush <<'HOSTPORT_RULES'\n{}HOSTPORT_RULES\n",
        restore_input(rules, set)
    );
    for (table, chain, from) in CHAINS {
        let _ = writeln!(
            out,
            "{iptables} -w -t {table} -C {from} -j {chain} 2>/dev/null || {iptables} -w -t {table} -I {from} -j {chain}"
        );
    }
    out
}

/// The shell script that removes our chains and the jumps to them (and nothing else); safe
/// when they are not there.
pub fn cleanup(iptables: &str) -> String {
    let iptables = sanitize(iptables);
    let mut out = String::new();
    for (table, chain, from) in CHAINS {
        let _ = writeln!(
            out,
            "while {iptables} -w -t {table} -D {from} -j {chain} 2>/dev/null; do :; done\n{iptables} -w -t {table} -F {chain} 2>/dev/null || true\n{iptables} -w -t {table} -X {chain} 2>/dev/null || true"
        );
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
    use std::net::Ipv4Addr;

    #[test]
    fn our_chains_only_with_one_rule_set_per_forward() {
        let set: ForwardSet = [Forward {
            protocol: Protocol::Udp,
            port: 9000,
            target: Target {
                address: Ipv4Addr::new(198, 51, 100, 2),
                port: 9001,
            },
        }]
        .into_iter()
        .collect();
        let rules = Rules {
            interface: Some("eth0".into()),
            masquerade: true,
        };
        let input = restore_input(&rules, &set);
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
    }
}
