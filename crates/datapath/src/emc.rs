//! The exact-match cache: a small, fixed-size, 2-way set-associative table
//! from a full flow key to its megaflow, in front of the megaflow classifier.
//!
//! Invariants: an entry is used only if its full key equals the packet's key
//! and its megaflow is alive, so the EMC never serves an evicted megaflow;
//! it holds no actions of its own (it reads the megaflow's current actions),
//! so it never serves stale ones. What it takes in is decided by its
//! [`Admission`]: Open vSwitch's random insertion (1 in `insert_inv_prob`,
//! its `emc-insert-inv-prob`, default 100), or only flows a hot-flow filter
//! ([`crate::admit`]) finds hot; either way short flows do not thrash it.

use std::sync::Arc;

use kairo_flow::FlowKey;

use crate::admit::HotFilter;
use crate::megaflow::Megaflow;

/// How the EMC decides what to take in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// One missed flow in `insert_inv_prob`, at random (Open vSwitch's).
    Random,
    /// Flows that missed the EMC `threshold` times in an epoch (NetCache's
    /// Count-Min sketch and Bloom filter, [`crate::admit`]) and, for the
    /// rest, one in `insert_inv_prob` at random as [`Admission::Random`]
    /// (on its own the filter kept fewer hits than random insertion when
    /// the flows barely outnumber the EMC's entries).
    Hot { threshold: u8 },
}

struct Entry {
    hash: u32,
    key: FlowKey,
    flow: Arc<Megaflow>,
}

pub struct Emc {
    slots: Box<[Option<Entry>]>,
    mask: usize,
    /// Insert one miss in this many at random (0 disables the EMC, 1
    /// always inserts, whatever the admission).
    pub insert_inv_prob: u32,
    rng: u64,
    hot: Option<HotFilter>,
}

impl Emc {
    /// `entries` is rounded up to a power of two (Open vSwitch uses 8192).
    pub fn new(entries: usize, insert_inv_prob: u32) -> Emc {
        Emc::with_admission(entries, insert_inv_prob, Admission::Random)
    }

    /// An EMC that takes flows in as `admission` says.
    pub fn with_admission(entries: usize, insert_inv_prob: u32, admission: Admission) -> Emc {
        let n = entries.max(2).next_power_of_two();
        let hot = match admission {
            Admission::Random => None,
            Admission::Hot { threshold } => Some(HotFilter::new(n, threshold)),
        };
        Emc { slots: (0..n).map(|_| None).collect(), mask: n - 1, insert_inv_prob, rng: 0x2545_f491_4f6c_dd1d, hot }
    }

    #[inline]
    fn idx(&self, hash: u32) -> [usize; 2] {
        [hash as usize & self.mask, (hash >> 16) as usize & self.mask ^ 1]
    }

    /// The live megaflow cached for exactly this key.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u32) -> Option<&Arc<Megaflow>> {
        if self.insert_inv_prob == 0 {
            return None;
        }
        for i in self.idx(hash) {
            if let Some(e) = &self.slots[i] {
                if e.hash == hash && e.key == *key && !e.flow.is_dead() {
                    return Some(&e.flow);
                }
            }
        }
        None
    }

    /// Maybe caches `key -> flow` (a flow that missed the EMC), as the
    /// admission says.
    pub fn insert(&mut self, key: &FlowKey, hash: u32, flow: &Arc<Megaflow>) {
        if self.insert_inv_prob == 0 {
            return;
        }
        if self.insert_inv_prob == 1 {
            // Always, whatever the admission rule.
        } else if self.hot.as_mut().is_some_and(|hot| hot.observe(hash)) {
            // Hot: in. (Otherwise, as Open vSwitch, maybe at random.)
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            if !self.rng.is_multiple_of(self.insert_inv_prob as u64) {
                return;
            }
        }
        let [a, b] = self.idx(hash);
        // Prefer an empty or dead slot, then the same key, else replace the first way.
        let pick = [a, b]
            .into_iter()
            .find(|&i| self.slots[i].as_ref().is_none_or(|e| e.flow.is_dead() || e.key == *key))
            .unwrap_or(if hash & 1 == 0 { a } else { b });
        self.slots[pick] = Some(Entry { hash, key: *key, flow: flow.clone() });
    }

    /// Drops every entry (and so every reference it holds).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
