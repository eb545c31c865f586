//! The default route's gateway, the router a class without `gateway` is mapped on: read from
//! `/proc/net/route` (the node's table: the DaemonSet runs on the host network).

use std::net::Ipv4Addr;

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

/// This host's default gateway, if it has one.
pub fn system_default_gateway() -> Option<Ipv4Addr> {
    std::fs::read_to_string("/proc/net/route")
        .ok()
        .as_deref()
        .and_then(default_gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

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
