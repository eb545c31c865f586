//! Port numbers and pools: conversion from the wire's integers and pool validation shared by
//! the controller (capacity, allocation) and the webhook (admission).

use std::fmt;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Lowest port a pool or claim may name.
pub const MIN_PORT: u16 = 1;
/// Highest port a pool or claim may name.
pub const MAX_PORT: u16 = u16::MAX;

/// A port number from the wire, if it is one (`1..=65535`). The Go project stored `0` for
/// "not allocated yet", so `0` is `None` too.
pub fn port_from_wire(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p >= MIN_PORT)
}

/// A validated inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port, inclusive.
    pub start: u16,
    /// Last port, inclusive; `start <= end`.
    pub end: u16,
}

impl PortRange {
    /// A range; `None` unless `start <= end`.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// A port or range that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a port (1-65535) or a range like 30000-32767")]
pub struct PortRangeError(pub String);

impl std::str::FromStr for PortRange {
    type Err = PortRangeError;

    /// `9000` or `30000-32767` (inclusive).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || PortRangeError(text.to_owned());
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p >= MIN_PORT)
                .ok_or_else(error)
        };
        let (start, end) = match text.split_once('-') {
            Some((start, end)) => (port(start)?, port(end)?),
            None => (port(text)?, port(text)?),
        };
        PortRange::new(start, end).ok_or_else(error)
    }
}

/// An inclusive range of node ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.start <= self.end").message("pool start must be less than or equal to pool end"))]
pub struct PortPool {
    /// First port of the pool (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    /// Last port of the pool, inclusive (1-65535, not below start).
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
}

/// `9000`, or a block's `9000-9009`: bound ports as `kubectl get` shows them.
pub fn describe_block(base: u16, count: u16) -> String {
    if count <= 1 {
        base.to_string()
    } else {
        format!("{base}-{}", u32::from(base) + u32::from(count) - 1)
    }
}

/// `9000-9099, 30000-30010`: ranges as messages show them.
pub fn describe_ranges(ranges: &[PortRange]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Why a class's pools are not usable. Messages name the field and say how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `spec.pools` is empty.
    #[error("spec.pools is empty: add at least one pool, e.g. {{start: 9000, end: 9500}}")]
    NoPools,
    /// A bound is outside `1..=65535`.
    #[error("spec.pools[{index}].{field} is {value}: a port must be between 1 and 65535")]
    OutOfRange {
        /// Index of the pool.
        index: usize,
        /// `start` or `end`.
        field: &'static str,
        /// The value given.
        value: i32,
    },
    /// `start > end`.
    #[error(
        "spec.pools[{index}] starts at {start} after its end {end}: start must be less than or equal to end"
    )]
    StartAfterEnd {
        /// Index of the pool.
        index: usize,
        /// The start given.
        start: u16,
        /// The end given.
        end: u16,
    },
    /// Two pools of the same class share ports.
    #[error(
        "spec.pools[{first}] ({first_range}) overlaps spec.pools[{second}] ({second_range}): merge them or make them disjoint"
    )]
    Overlap {
        /// Index of the earlier pool.
        first: usize,
        /// Its range.
        first_range: PortRange,
        /// Index of the later pool.
        second: usize,
        /// Its range.
        second_range: PortRange,
    },
}

/// The range of one pool, checked; `index` only names the pool in errors.
pub fn pool_range(index: usize, pool: &PortPool) -> Result<PortRange, PoolError> {
    let bound = |field: &'static str, value: i32| {
        port_from_wire(value).ok_or(PoolError::OutOfRange {
            index,
            field,
            value,
        })
    };
    let start = bound("start", pool.start)?;
    let end = bound("end", pool.end)?;
    PortRange::new(start, end).ok_or(PoolError::StartAfterEnd { index, start, end })
}

/// Every pool's range, checked for bounds, order and overlap between pools, in spec order.
pub fn validate_pools(pools: &[PortPool]) -> Result<Vec<PortRange>, PoolError> {
    if pools.is_empty() {
        return Err(PoolError::NoPools);
    }
    let ranges = pools
        .iter()
        .enumerate()
        .map(|(index, pool)| pool_range(index, pool))
        .collect::<Result<Vec<_>, _>>()?;
    for (second, second_range) in ranges.iter().enumerate() {
        if let Some((first, first_range)) = ranges[..second]
            .iter()
            .enumerate()
            .find(|(_, r)| r.overlaps(second_range))
        {
            return Err(PoolError::Overlap {
                first,
                first_range: *first_range,
                second,
                second_range: *second_range,
            });
        }
    }
    Ok(ranges)
}

/// The usable ranges of a class as the allocator sees them: every well-formed pool, with
/// malformed ones skipped (admission rejects them; a stored one must not stop the others).
pub fn usable_ranges(pools: &[PortPool]) -> Vec<PortRange> {
    pools
        .iter()
        .enumerate()
        .filter_map(|(index, pool)| pool_range(index, pool).ok())
        .collect()
}

/// Number of distinct ports in `ranges` (overlaps counted once).
pub fn distinct_port_count(ranges: &[PortRange]) -> u32 {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut total = 0;
    let mut covered_up_to: Option<u16> = None;
    for range in sorted {
        let start = match covered_up_to {
            Some(last) if last >= range.end => continue,
            Some(last) if last >= range.start => last + 1,
            _ => range.start,
        };
        total += u32::from(range.end) - u32::from(start) + 1;
        covered_up_to = Some(range.end);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_from_text() {
        assert_eq!(
            "30000-32767".parse(),
            Ok(PortRange {
                start: 30000,
                end: 32767
            })
        );
        assert_eq!(" 22 ".parse(), Ok(PortRange { start: 22, end: 22 }));
        for bad in ["", "0", "70000", "9-1", "a-b", "1-2-3"] {
            let error = bad.parse::<PortRange>().expect_err(bad);
            assert!(error.to_string().contains("is not a port"), "{error}");
        }
    }
    use proptest::prelude::*;

    fn pool(start: i32, end: i32) -> PortPool {
        PortPool { start, end }
    }

    #[test]
    fn wire_ports() {
        assert_eq!(port_from_wire(0), None);
        assert_eq!(port_from_wire(-1), None);
        assert_eq!(port_from_wire(1), Some(1));
        assert_eq!(port_from_wire(65535), Some(65535));
        assert_eq!(port_from_wire(65536), None);
    }

    #[test]
    fn go_readme_pool_is_valid() {
        let ranges = validate_pools(&[pool(9000, 9500)]).expect("valid");
        assert_eq!(
            ranges,
            vec![PortRange {
                start: 9000,
                end: 9500
            }]
        );
        assert_eq!(distinct_port_count(&ranges), 501);
    }

    #[test]
    fn pool_errors_name_the_field_and_the_fix() {
        let cases: &[(&[PortPool], &str)] = &[
            (&[], "spec.pools is empty: add at least one pool"),
            (
                &[pool(0, 10)],
                "spec.pools[0].start is 0: a port must be between 1 and 65535",
            ),
            (
                &[pool(1, 10), pool(20, 70000)],
                "spec.pools[1].end is 70000: a port must be between 1 and 65535",
            ),
            (
                &[pool(500, 100)],
                "spec.pools[0] starts at 500 after its end 100: start must be less than or equal to end",
            ),
            (
                &[pool(1, 10), pool(20, 30), pool(30, 40)],
                "spec.pools[1] (20-30) overlaps spec.pools[2] (30-40): merge them or make them disjoint",
            ),
        ];
        for (pools, expected) in cases {
            let err = validate_pools(pools).expect_err("invalid").to_string();
            assert!(
                err.starts_with(expected),
                "{err:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn usable_ranges_skip_malformed_pools() {
        let ranges = usable_ranges(&[pool(10, 5), pool(100, 101), pool(0, 3)]);
        assert_eq!(
            ranges,
            vec![PortRange {
                start: 100,
                end: 101
            }]
        );
    }

    proptest! {
        #[test]
        fn distinct_count_matches_a_set(raw in proptest::collection::vec((1u16..=2000, 0u16..300), 0..8)) {
            let ranges: Vec<PortRange> = raw
                .iter()
                .map(|(s, l)| PortRange { start: *s, end: s.saturating_add(*l) })
                .collect();
            let set: std::collections::BTreeSet<u16> =
                ranges.iter().flat_map(|r| r.start..=r.end).collect();
            prop_assert_eq!(distinct_port_count(&ranges), set.len() as u32);
        }
    }
}
