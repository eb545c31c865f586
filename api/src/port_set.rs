//! A 65,536-bit set of used ports and the searches over class pools: the allocator's core
//! (`controller::port_book`), also read by the webhook to tell a dry-run which port it would get.
//! Pure data, no I/O.

use crate::ports::PortRange;

const WORDS: usize = 65_536 / 64;

/// One bit per port number (0–65535); bit set = port in use.
#[derive(Clone)]
pub struct PortSet {
    words: Box<[u64; WORDS]>,
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortSet({} used)", self.count_all())
    }
}

impl Default for PortSet {
    fn default() -> Self {
        Self {
            words: Box::new([0; WORDS]),
        }
    }
}

fn split(port: u16) -> (usize, u64) {
    (usize::from(port) / 64, 1u64 << (port % 64))
}

/// Mask of the bits `from..=to` (both within one word, 0..=63).
fn mask(from: u32, to: u32) -> u64 {
    let high = if to == 63 {
        u64::MAX
    } else {
        (1u64 << (to + 1)) - 1
    };
    high & !((1u64 << from) - 1)
}

impl PortSet {
    /// Marks `port` used.
    pub fn insert(&mut self, port: u16) {
        let (word, bit) = split(port);
        self.words[word] |= bit;
    }

    /// Marks `port` free.
    pub fn remove(&mut self, port: u16) {
        let (word, bit) = split(port);
        self.words[word] &= !bit;
    }

    /// Whether `port` is used.
    pub fn contains(&self, port: u16) -> bool {
        let (word, bit) = split(port);
        self.words[word] & bit != 0
    }

    /// The lowest free port in `range`, scanning a 64-bit word at a time.
    pub fn lowest_free_in(&self, range: PortRange) -> Option<u16> {
        let (start, end) = (u32::from(range.start), u32::from(range.end));
        let mut word = start / 64;
        while word <= end / 64 {
            let from = if word == start / 64 { start % 64 } else { 0 };
            let to = if word == end / 64 { end % 64 } else { 63 };
            let free = !self.words[word as usize] & mask(from, to);
            if free != 0 {
                let port = word * 64 + free.trailing_zeros();
                return u16::try_from(port).ok();
            }
            word += 1;
        }
        None
    }

    /// The first used port in `from..=to` (`to` at most 65535), scanning a word at a time.
    fn first_used(&self, from: u32, to: u32) -> Option<u32> {
        let mut word = from / 64;
        while word <= to / 64 {
            let low = if word == from / 64 { from % 64 } else { 0 };
            let high = if word == to / 64 { to % 64 } else { 63 };
            let used = self.words[word as usize] & mask(low, high);
            if used != 0 {
                return Some(word * 64 + used.trailing_zeros());
            }
            word += 1;
        }
        None
    }

    /// The lowest base of `count` consecutive free ports inside `range` whose base is a
    /// multiple of `alignment` (a block of RTP ports from an even base: `alignment` 2). Jumps
    /// from free port to the first used one and past it, so the work grows with the number of
    /// free stretches, not of ports.
    pub fn lowest_free_run_in(&self, range: PortRange, count: u16, alignment: u16) -> Option<u16> {
        let (count, alignment) = (u32::from(count.max(1)), u32::from(alignment.max(1)));
        let end = u32::from(range.end);
        let mut from = range.start;
        loop {
            let free = u32::from(self.lowest_free_in(PortRange::new(from, range.end)?)?);
            let base = free.div_ceil(alignment) * alignment;
            let last = base + count - 1;
            if last > end {
                return None;
            }
            match self.first_used(base, last) {
                None => return u16::try_from(base).ok(),
                Some(used) if used < end => from = u16::try_from(used + 1).ok()?,
                Some(_) => return None,
            }
        }
    }

    /// The lowest such base in any one of `ranges` (a block never spans two pools).
    pub fn lowest_free_run(&self, ranges: &[PortRange], count: u16, alignment: u16) -> Option<u16> {
        ranges
            .iter()
            .filter_map(|r| self.lowest_free_run_in(*r, count, alignment))
            .min()
    }

    /// Whether every port of `base..base + count` is free.
    pub fn run_is_free(&self, base: u16, count: u16) -> bool {
        let last = u32::from(base) + u32::from(count.max(1)) - 1;
        last <= u32::from(u16::MAX) && self.first_used(u32::from(base), last).is_none()
    }

    /// The lowest free port in any of `ranges`.
    pub fn lowest_free(&self, ranges: &[PortRange]) -> Option<u16> {
        ranges.iter().filter_map(|r| self.lowest_free_in(*r)).min()
    }

    /// Number of used ports in `range`.
    pub fn count_in(&self, range: PortRange) -> u32 {
        let (start, end) = (u32::from(range.start), u32::from(range.end));
        (start / 64..=end / 64)
            .map(|word| {
                let from = if word == start / 64 { start % 64 } else { 0 };
                let to = if word == end / 64 { end % 64 } else { 63 };
                (self.words[word as usize] & mask(from, to)).count_ones()
            })
            .sum()
    }

    /// Number of used ports in the union of `ranges` (overlaps counted once).
    pub fn count_in_all(&self, ranges: &[PortRange]) -> u32 {
        let mut union = PortSet::default();
        for range in ranges {
            union.fill(*range);
        }
        self.words
            .iter()
            .zip(union.words.iter())
            .map(|(a, b)| (a & b).count_ones())
            .sum()
    }

    /// Marks every port of `range` used.
    pub fn fill(&mut self, range: PortRange) {
        let (start, end) = (u32::from(range.start), u32::from(range.end));
        for word in start / 64..=end / 64 {
            let from = if word == start / 64 { start % 64 } else { 0 };
            let to = if word == end / 64 { end % 64 } else { 63 };
            self.words[word as usize] |= mask(from, to);
        }
    }

    /// Number of used ports overall.
    pub fn count_all(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn range(start: u16, end: u16) -> PortRange {
        PortRange::new(start, end).expect("range")
    }

    #[test]
    fn a_run_is_free_aligned_inside_one_range() {
        let mut set = PortSet::default();
        let pool = range(9000, 9019);
        assert_eq!(set.lowest_free_run_in(pool, 10, 1), Some(9000));
        set.insert(9003);
        assert_eq!(set.lowest_free_run_in(pool, 10, 1), Some(9004));
        assert_eq!(set.lowest_free_run_in(pool, 10, 4), Some(9004));
        assert_eq!(set.lowest_free_run_in(pool, 10, 8), Some(9008));
        assert_eq!(set.lowest_free_run_in(pool, 10, 3), Some(9006));
        assert_eq!(set.lowest_free_run_in(pool, 17, 1), None, "no room left");
        set.insert(9013);
        assert_eq!(set.lowest_free_run_in(pool, 10, 1), None);
        assert_eq!(set.lowest_free_run_in(pool, 6, 2), Some(9004));
        assert_eq!(
            set.lowest_free_run_in(pool, 6, 8),
            None,
            "9008 reaches 9013"
        );
        // Two adjacent pools: no block across the boundary.
        let (low, high) = (range(9100, 9104), range(9105, 9109));
        assert_eq!(PortSet::default().lowest_free_run(&[low, high], 6, 1), None);
        assert_eq!(
            PortSet::default().lowest_free_run(&[low, high], 5, 1),
            Some(9100)
        );
        // Up to the last port of the space.
        let top = range(65530, 65535);
        assert_eq!(
            PortSet::default().lowest_free_run_in(top, 6, 1),
            Some(65530)
        );
        assert!(PortSet::default().run_is_free(65530, 6));
        assert!(!PortSet::default().run_is_free(65531, 6), "past 65535");
        assert!(!set.run_is_free(9010, 4));
    }

    #[test]
    fn lowest_free_skips_used_ports_and_stays_in_the_range() {
        let mut set = PortSet::default();
        let pool = range(9000, 9002);
        assert_eq!(set.lowest_free_in(pool), Some(9000));
        set.insert(9000);
        set.insert(9001);
        assert_eq!(set.lowest_free_in(pool), Some(9002));
        set.insert(9002);
        assert_eq!(set.lowest_free_in(pool), None, "exhausted");
        set.remove(9001);
        assert_eq!(set.lowest_free_in(pool), Some(9001));
    }

    #[test]
    fn edges_of_the_port_space() {
        let mut set = PortSet::default();
        assert_eq!(set.lowest_free_in(range(65535, 65535)), Some(65535));
        set.insert(65535);
        assert_eq!(set.lowest_free_in(range(65535, 65535)), None);
        assert_eq!(set.lowest_free_in(range(1, 1)), Some(1));
        set.fill(range(1, 65534));
        assert_eq!(set.count_all(), 65535);
        assert_eq!(set.lowest_free(&[range(1, 65535)]), None);
        assert_eq!(set.count_in(range(63, 129)), 67);
    }

    #[test]
    fn lowest_over_several_pools() {
        let mut set = PortSet::default();
        set.fill(range(9000, 9100));
        assert_eq!(
            set.lowest_free(&[range(9000, 9100), range(30000, 30010)]),
            Some(30000)
        );
        assert_eq!(
            set.lowest_free(&[range(30000, 30010), range(9050, 9200)]),
            Some(9101)
        );
        assert_eq!(
            set.count_in_all(&[range(9000, 9050), range(9040, 9060)]),
            61
        );
    }

    /// A random pool layout: 1–4 ranges anywhere in the port space.
    fn pools() -> impl Strategy<Value = Vec<PortRange>> {
        proptest::collection::vec((1u16..=65535, 0u16..2000), 1..4).prop_map(|raw| {
            raw.into_iter()
                .map(|(start, len)| range(start, start.saturating_add(len)))
                .collect()
        })
    }

    #[derive(Debug, Clone)]
    enum Step {
        Allocate,
        Free(usize),
        TakeOutside(u16),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                4 => Just(Step::Allocate),
                2 => any::<usize>().prop_map(Step::Free),
                1 => any::<u16>().prop_map(Step::TakeOutside),
            ],
            1..400,
        )
    }

    proptest! {
        /// Random allocate/free sequences against a model: never a used port, never a port
        /// outside the pools, always the lowest free one, and a port whenever one is free.
        #[test]
        fn allocation_matches_the_model(pools in pools(), steps in steps()) {
            let mut set = PortSet::default();
            let mut model: BTreeSet<u16> = BTreeSet::new();
            let in_pools = |p: u16| pools.iter().any(|r| r.contains(p));
            for step in steps {
                match step {
                    Step::Allocate => {
                        let expected = pools
                            .iter()
                            .flat_map(|r| r.start..=r.end)
                            .filter(|p| !model.contains(p))
                            .min();
                        let got = set.lowest_free(&pools);
                        prop_assert_eq!(got, expected);
                        if let Some(port) = got {
                            prop_assert!(in_pools(port));
                            prop_assert!(!model.contains(&port));
                            set.insert(port);
                            model.insert(port);
                        }
                    }
                    Step::Free(i) => {
                        if !model.is_empty() {
                            let port = *model.iter().nth(i % model.len()).expect("index in range");
                            set.remove(port);
                            model.remove(&port);
                        }
                    }
                    Step::TakeOutside(port) => {
                        // A port held by another class or a Go-era HostPort.
                        set.insert(port);
                        model.insert(port);
                    }
                }
                for range in &pools {
                    let used = (range.start..=range.end).filter(|p| model.contains(p)).count() as u32;
                    prop_assert_eq!(set.count_in(*range), used);
                }
            }
            prop_assert_eq!(set.count_all(), model.len() as u32);
        }

        /// The block search against a brute-force model: the lowest aligned base whose whole
        /// block is free and inside one pool.
        #[test]
        fn runs_match_the_model(
            pools in pools(),
            used in proptest::collection::btree_set(any::<u16>(), 0..3000),
            count in 1u16..40,
            alignment in 1u16..9,
        ) {
            let mut set = PortSet::default();
            for port in &used {
                set.insert(*port);
            }
            let expected = pools
                .iter()
                .filter_map(|r| {
                    (r.start..=r.end)
                        .filter(|base| base.is_multiple_of(alignment))
                        .find(|base| {
                            let last = u32::from(*base) + u32::from(count) - 1;
                            last <= u32::from(r.end)
                                && (u32::from(*base)..=last)
                                    .all(|p| !used.contains(&u16::try_from(p).unwrap_or(0)))
                        })
                })
                .min();
            prop_assert_eq!(set.lowest_free_run(&pools, count, alignment), expected);
        }
    }
}
