//! The default route's gateway, the router a class without `gateway` is mapped on: read from
//! `/proc/net/route` and `/proc/net/ipv6_route` (the node's tables: the DaemonSet runs on the
//! host network).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The gateway of the IPv4 default route with the lowest metric in a `/proc/net/route` text.
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    route_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, gateway, flags, metric) = (
                fields.get(1)?,
                fields.get(2)?,
                fields.get(3)?,
                fields.get(6)?,
            );
            let up_and_gateway = u16::from_str_radix(flags, 16).ok()? & 0x3 == 0x3;
            if *destination != "00000000" || !up_and_gateway {
                return None;
            }
            // The kernel prints the address in host byte order (little-endian here).
            let address = Ipv4Addr::from(u32::from_str_radix(gateway, 16).ok()?.swap_bytes());
            Some((metric.parse::<u32>().ok()?, address))
        })
        .min()
        .map(|(_, address)| address)
}

/// The gateway of the IPv6 default route with the lowest metric in a `/proc/net/ipv6_route`
/// text, if it is a global address: a link-local next hop (`fe80::…`, what most routers
/// advertise) cannot be asked without its interface, so such a router is named with
/// `gateway6` or `--gateway6` instead.
pub fn default_gateway6(route_table: &str) -> Option<Ipv6Addr> {
    route_table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, prefix, next_hop, metric) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(4)?,
                fields.get(5)?,
            );
            if destination.chars().any(|c| c != '0') || *prefix != "00" {
                return None;
            }
            let address = Ipv6Addr::from(u128::from_str_radix(next_hop, 16).ok()?);
            let global = !address.is_unspecified()
                && !address.is_loopback()
                && (address.segments()[0] & 0xffc0) != 0xfe80;
            global.then_some((u32::from_str_radix(metric, 16).ok()?, address))
        })
        .min()
        .map(|(_, address)| address)
}

/// This host's default gateways, at most one per family.
pub fn system_default_gateways() -> Vec<IpAddr> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let v4 = read("/proc/net/route")
        .as_deref()
        .and_then(default_gateway)
        .map(IpAddr::V4);
    let v6 = read("/proc/net/ipv6_route")
        .as_deref()
        .and_then(default_gateway6)
        .map(IpAddr::V6);
    v4.into_iter().chain(v6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv6_default_route_is_used_when_its_next_hop_is_global() {
        let table = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000a00000000000000000001 00000100 00000001 00000000 00000003 eth1
20010db8000a00000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1
";
        assert_eq!(
            default_gateway6(table),
            Some("2001:db8:a::1".parse().expect("ip")),
            "the link-local next hop is skipped, the global one kept"
        );
        assert_eq!(default_gateway6(""), None);
    }

    const TABLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
wlan0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        assert_eq!(default_gateway(TABLE), Some(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn no_default_route_no_gateway() {
        let table = TABLE
            .lines()
            .filter(|l| !l.contains("\t00000000\t0"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(default_gateway(&table), None);
        assert_eq!(default_gateway(""), None);
        assert_eq!(default_gateway("header\ngarbage line"), None);
    }
}
