//! `kubectl hostport free <class>`: the free ranges of a class's pools (a port held by any
//! HostPort, of whatever class, is not free: a node port is handed out once).

use serde::Serialize;

use hostport_api::ports::PortRange;

use crate::error::Error;
use crate::snapshot::Snapshot;

/// A class's free ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FreePorts {
    /// The class.
    pub class: String,
    /// Its pools, `start-end`.
    pub pools: Vec<String>,
    /// Ports in the pools.
    pub capacity: u32,
    /// Free ports in all.
    pub free: u32,
    /// The free ranges, lowest first.
    pub ranges: Vec<FreeRange>,
}

/// A run of free ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FreeRange {
    /// First free port.
    pub start: u16,
    /// Last free port.
    pub end: u16,
}

/// The free ports of `class`.
pub fn free_ports(snapshot: &Snapshot, class: &str) -> Result<FreePorts, Error> {
    let found = snapshot.classes.get(class).ok_or_else(|| Error::NotFound {
        kind: "HostPortClass",
        name: class.to_owned(),
        hint: format!(
            "; the classes are: {}",
            snapshot
                .classes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let pools = found.ranges();
    let held = snapshot.held();
    let mut ranges: Vec<FreeRange> = vec![];
    for pool in &pools {
        let mut run: Option<FreeRange> = None;
        for port in pool.start..=pool.end {
            if held.contains(port) {
                ranges.extend(run.take());
            } else {
                run = Some(match run {
                    Some(r) => FreeRange { end: port, ..r },
                    None => FreeRange {
                        start: port,
                        end: port,
                    },
                });
            }
        }
        ranges.extend(run);
    }
    // Pools of one class never overlap (a CEL rule), so the runs are distinct.
    let free = ranges.iter().map(|r| u32::from(r.end - r.start) + 1).sum();
    Ok(FreePorts {
        class: class.to_owned(),
        pools: pools.iter().map(PortRange::to_string).collect(),
        capacity: hostport_api::ports::distinct_port_count(&pools),
        free,
        ranges,
    })
}

/// `free` as a table: one row per free range.
pub fn table(free: &FreePorts) -> String {
    let rows: Vec<Vec<String>> = free
        .ranges
        .iter()
        .map(|r| {
            let range = if r.start == r.end {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end)
            };
            vec![range, (u32::from(r.end - r.start) + 1).to_string()]
        })
        .collect();
    format!(
        "{}{} of {} ports of HostPortClass {} are free (pools {}).\n",
        crate::table::render(&["free", "ports"], &rows),
        free.free,
        free.capacity,
        free.class,
        free.pools.join(", ")
    )
}
