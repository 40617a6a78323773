//! Which flows the EMC takes in: NetCache's heavy-hitter detector (seed
//! 003) as an admission filter. A Count-Min sketch counts the packets that
//! missed the EMC per flow (by its EMC hash); a flow is admitted once its
//! count reaches a threshold, and a Bloom filter of the flows admitted in
//! this epoch keeps one from being admitted again and again (hot flows
//! that collide in the EMC then do not evict each other on every packet).
//! Every `epoch` observations the counters are halved and the filter
//! cleared, so popularity follows the traffic.
//!
//! Open vSwitch instead inserts a missed flow with probability 1/100
//! (`emc-insert-inv-prob`): cheap, but a hot flow waits about a hundred
//! packets to get in, and a storm of short flows still churns the table.
//! kairo's EMC takes both (the filter's hot flows, and the rest at random:
//! [`crate::Admission::Hot`]); `kairo bench emc` compares that with Open
//! vSwitch's rule and always-insert.
//!
//! Invariant: the sketch never undercounts a flow's misses since the last
//! halving (Count-Min with conservative update only overcounts), so a flow
//! with at least `threshold` misses in an epoch is admitted at least once
//! in it; memory is fixed at construction (nothing grows with traffic).
//!
//! Hand-written: a few dozen lines over fixed arrays on the per-packet path
//! (the sketch crates on crates.io hash with SipHash and allocate per
//! update or per row, which this path cannot afford).

/// Sketch rows (independent hash functions).
const ROWS: usize = 4;

/// The hot-flow filter: counters, the admitted set, the epoch.
pub struct HotFilter {
    /// `ROWS` rows of `width` saturating 8-bit counters.
    counts: Box<[u8]>,
    /// log2 of the row width.
    bits: u32,
    /// Bloom filter of flows admitted this epoch (two probes per flow).
    admitted: Box<[u64]>,
    threshold: u8,
    seen: u32,
    epoch: u32,
}

/// Odd multipliers: one hash function per row (and two for the filter)
/// from the EMC's 32-bit hash (Fibonacci hashing).
const MUL: [u32; ROWS + 2] = [0x9e37_79b1, 0x85eb_ca77, 0xc2b2_ae3d, 0x27d4_eb2f, 0x1656_67b1, 0xd3a2_646d];

impl HotFilter {
    /// A filter sized for an EMC of `entries` (rows of `4 * entries`
    /// counters, a filter of `16 * entries` bits), admitting at `threshold`
    /// misses, its epoch `8 * entries` observations.
    pub fn new(entries: usize, threshold: u8) -> HotFilter {
        let width = (entries.max(64) * 4).next_power_of_two();
        let bits = width.trailing_zeros();
        HotFilter {
            counts: vec![0; ROWS * width].into_boxed_slice(),
            bits,
            admitted: vec![0; (width * 4).div_ceil(64)].into_boxed_slice(),
            threshold: threshold.max(1),
            seen: 0,
            epoch: (entries.max(64) * 8) as u32,
        }
    }

    #[inline]
    fn slot(&self, row: usize, hash: u32) -> usize {
        (hash.wrapping_mul(MUL[row]) >> (32 - self.bits)) as usize
    }

    /// A flow (by its EMC hash) missed the EMC: counts it, and says whether
    /// it is to be admitted now.
    #[inline]
    pub fn observe(&mut self, hash: u32) -> bool {
        self.seen += 1;
        if self.seen >= self.epoch {
            self.age();
        }
        let width = 1usize << self.bits;
        let at: [usize; ROWS] = std::array::from_fn(|r| r * width + self.slot(r, hash));
        let min = at.iter().map(|&i| self.counts[i]).min().unwrap_or(0);
        // Conservative update: only the counters at the minimum grow.
        let next = min.saturating_add(1);
        for &i in &at {
            if self.counts[i] < next {
                self.counts[i] = next;
            }
        }
        if next < self.threshold {
            return false;
        }
        let bits = (self.admitted.len() * 64) as u32;
        let [b0, b1] = [ROWS, ROWS + 1].map(|r| hash.wrapping_mul(MUL[r]) % bits);
        let has = |b: u32| self.admitted[(b / 64) as usize] & (1 << (b % 64)) != 0;
        if has(b0) && has(b1) {
            return false;
        }
        for b in [b0, b1] {
            self.admitted[(b / 64) as usize] |= 1 << (b % 64);
        }
        true
    }

    /// A new epoch: counts halved, the admitted set forgotten.
    fn age(&mut self) {
        self.seen = 0;
        for c in self.counts.iter_mut() {
            *c >>= 1;
        }
        self.admitted.iter_mut().for_each(|w| *w = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_admitted_once_at_the_threshold_per_epoch() {
        let mut f = HotFilter::new(1024, 4);
        let h = 0xdead_beef;
        let got: Vec<bool> = (0..6).map(|_| f.observe(h)).collect();
        assert_eq!(got, vec![false, false, false, true, false, false]);
        // A new epoch: counts halved (6 -> 3), admitted again at the next miss.
        f.age();
        assert!(f.observe(h));
    }

    #[test]
    fn the_hottest_of_skewed_traffic_get_in_first() {
        // Flow k seen about 2000/k times, interleaved: the top ones are
        // admitted, the long tail is not.
        let mut f = HotFilter::new(1024, 4);
        let mut admitted = std::collections::BTreeSet::new();
        for round in 0..2000u32 {
            for k in 1..=3000u32 {
                if round % k == 0 && f.observe(k.wrapping_mul(0x85eb_ca6b)) {
                    admitted.insert(k);
                }
            }
        }
        assert!((1..=50).all(|k| admitted.contains(&k)), "{admitted:?}");
        assert!(admitted.iter().filter(|&&k| k > 1000).count() < 100, "{}", admitted.len());
    }

    #[test]
    fn one_off_flows_are_not_admitted_and_memory_stays_fixed() {
        // Twelve times more distinct flows than the filter's epoch: at a
        // threshold of 3 about a fifth are admitted by collisions, at 4 none
        // (measured when the default was chosen).
        let mut f = HotFilter::new(1024, 4);
        let before = (f.counts.len(), f.admitted.len());
        let admitted = (0..100_000u32).filter(|&i| f.observe(i.wrapping_mul(0x9e37_79b9))).count();
        // Distinct flows each seen once: only sketch collisions admit any.
        assert!(admitted < 1000, "{admitted}");
        assert_eq!((f.counts.len(), f.admitted.len()), before);
    }
}
