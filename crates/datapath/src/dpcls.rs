//! The megaflow classifier of one ingress port (OVS-DPDK's dpcls): tuple-space
//! search over megaflows, one hash table per mask, no priorities.
//!
//! Invariants: megaflows in one classifier never overlap (each packet matches at
//! most one live megaflow), so the first hit in any subtable order is the
//! answer; a subtable holds only megaflows of its mask; dead megaflows are
//! skipped by lookups and removed by the owner. Subtables are ranked by hits
//! (most hit first) and re-ranked every `rerank_interval` lookups, so popular
//! masks are probed first.

use std::sync::Arc;

use hashbrown::HashTable;
use kairo_flow::{FlowKey, FlowMask, WORDS};
use rustc_hash::FxHashMap;

use crate::megaflow::Megaflow;

/// Keys per batched lookup.
pub const BATCH: usize = 32;

struct Subtable {
    mask: Arc<FlowMask>,
    /// Indexes of the non-zero words of the mask (only these are hashed and compared).
    words: Box<[u8]>,
    table: HashTable<Arc<Megaflow>>,
    hits: u64,
}

#[inline]
fn hash_masked(k: &FlowKey, m: &FlowMask, words: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for &i in words {
        let i = i as usize;
        h = (h.rotate_left(5) ^ (k.w[i] & m.w[i])).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h ^ (h >> 29)
}

#[inline]
fn eq_masked(a: &FlowKey, b: &FlowKey, m: &FlowMask, words: &[u8]) -> bool {
    words.iter().all(|&i| {
        let i = i as usize;
        (a.w[i] ^ b.w[i]) & m.w[i] == 0
    })
}

impl Subtable {
    fn new(mask: Arc<FlowMask>) -> Subtable {
        let words: Vec<u8> = (0..WORDS).filter(|&i| mask.w[i] != 0).map(|i| i as u8).collect();
        Subtable { mask, words: words.into(), table: HashTable::new(), hits: 0 }
    }

    #[inline]
    fn find(&self, k: &FlowKey, h: u64) -> Option<&Arc<Megaflow>> {
        let (m, w) = (&*self.mask, &*self.words);
        self.table.find(h, |e| eq_masked(&e.rep, k, m, w))
    }
}

/// Lookup counters of one classifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpclsStats {
    pub lookups: u64,
    pub hits: u64,
    /// Subtables probed, summed over lookups.
    pub subtables_visited: u64,
}

/// The megaflow classifier of one ingress port.
pub struct Dpcls {
    subtables: Vec<Subtable>,
    by_mask: FxHashMap<FlowMask, usize>,
    len: usize,
    /// Re-rank subtables every this many lookups (0: never, the unranked baseline).
    pub rerank_interval: u64,
    since_rerank: u64,
    pub stats: DpclsStats,
}

impl Default for Dpcls {
    fn default() -> Self {
        Dpcls::new(100_000)
    }
}

impl Dpcls {
    pub fn new(rerank_interval: u64) -> Self {
        Dpcls {
            subtables: Vec::new(),
            by_mask: FxHashMap::default(),
            len: 0,
            rerank_interval,
            since_rerank: 0,
            stats: DpclsStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// The shared mask object for `mask` (so megaflows of one subtable share it).
    pub fn intern_mask(&self, mask: &FlowMask) -> Arc<FlowMask> {
        match self.by_mask.get(mask) {
            Some(&i) => self.subtables[i].mask.clone(),
            None => Arc::new(*mask),
        }
    }

    /// Inserts a megaflow. The caller guarantees it overlaps no live megaflow
    /// (it comes from a miss on this classifier). Returns false (and does not
    /// insert) if an identical key/mask is already present and alive.
    pub fn insert(&mut self, mf: Arc<Megaflow>) -> bool {
        let i = match self.by_mask.get(&*mf.mask) {
            Some(&i) => i,
            None => {
                self.subtables.push(Subtable::new(mf.mask.clone()));
                self.by_mask.insert(*mf.mask, self.subtables.len() - 1);
                self.subtables.len() - 1
            }
        };
        let st = &mut self.subtables[i];
        let h = hash_masked(&mf.rep, &st.mask, &st.words);
        let (m, w) = (st.mask.clone(), st.words.clone());
        match st.table.entry(h, |e| eq_masked(&e.rep, &mf.rep, &m, &w), |e| hash_masked(&e.rep, &m, &w)) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                if !o.get().is_dead() {
                    return false;
                }
                *o.get_mut() = mf;
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(mf);
                self.len += 1;
            }
        }
        true
    }

    /// Removes this megaflow (by identity). Returns whether it was present.
    pub fn remove(&mut self, mf: &Arc<Megaflow>) -> bool {
        let Some(&i) = self.by_mask.get(&*mf.mask) else { return false };
        let st = &mut self.subtables[i];
        let h = hash_masked(&mf.rep, &st.mask, &st.words);
        match st.table.find_entry(h, |e| Arc::ptr_eq(e, mf)) {
            Ok(o) => {
                o.remove();
                self.len -= 1;
            }
            Err(_) => return false,
        }
        if st.table.is_empty() {
            self.by_mask.remove(&*mf.mask);
            self.subtables.swap_remove(i);
            if i < self.subtables.len() {
                self.by_mask.insert(*self.subtables[i].mask, i);
            }
        }
        true
    }

    fn maybe_rerank(&mut self, n: u64) {
        if self.rerank_interval == 0 {
            return;
        }
        self.since_rerank += n;
        if self.since_rerank >= self.rerank_interval {
            self.since_rerank = 0;
            // Unstable: a stable sort of many subtables takes a buffer.
            self.subtables.sort_unstable_by_key(|s| std::cmp::Reverse(s.hits));
            for (i, s) in self.subtables.iter_mut().enumerate() {
                s.hits /= 2; // decay, so the ranking follows changing traffic
                             // Every subtable's mask is in the map: its index changes in
                             // place (an insert may grow the table, an allocation).
                if let Some(at) = self.by_mask.get_mut(&*s.mask) {
                    *at = i;
                }
            }
        }
    }

    /// Finds the live megaflow containing `k`. Dead megaflows found on the way
    /// are collected into `dead` for the owner to remove.
    pub fn lookup(&mut self, k: &FlowKey, dead: &mut Vec<Arc<Megaflow>>) -> Option<Arc<Megaflow>> {
        self.stats.lookups += 1;
        let mut found = None;
        for st in self.subtables.iter_mut() {
            self.stats.subtables_visited += 1;
            let h = hash_masked(k, &st.mask, &st.words);
            if let Some(e) = st.find(k, h).cloned() {
                if e.is_dead() {
                    dead.push(e);
                    continue;
                }
                st.hits += 1;
                found = Some(e);
                break;
            }
        }
        if found.is_some() {
            self.stats.hits += 1;
        }
        self.maybe_rerank(1);
        found
    }

    /// Batched lookup (up to [`BATCH`] keys): each subtable is probed for all
    /// keys still unresolved before moving to the next one.
    pub fn lookup_batch(&mut self, keys: &[FlowKey], out: &mut [Option<Arc<Megaflow>>], dead: &mut Vec<Arc<Megaflow>>) {
        debug_assert!(keys.len() <= BATCH && out.len() >= keys.len());
        let n = keys.len();
        let mut pending: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        for o in out.iter_mut().take(n) {
            *o = None;
        }
        self.stats.lookups += n as u64;
        for st in self.subtables.iter_mut() {
            if pending == 0 {
                break;
            }
            let mut bits = pending;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.stats.subtables_visited += 1;
                let h = hash_masked(&keys[i], &st.mask, &st.words);
                if let Some(e) = st.find(&keys[i], h).cloned() {
                    if e.is_dead() {
                        dead.push(e);
                        continue;
                    }
                    st.hits += 1;
                    out[i] = Some(e);
                    pending &= !(1u64 << i);
                }
            }
        }
        self.stats.hits += (n as u32 - pending.count_ones()) as u64;
        self.maybe_rerank(n as u64);
    }

    /// Every megaflow (live or dead) in the classifier.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Megaflow>> {
        self.subtables.iter().flat_map(|s| s.table.iter())
    }

    /// Subtable masks with their hit counts, in probe order.
    pub fn ranking(&self) -> Vec<(Arc<FlowMask>, u64)> {
        self.subtables.iter().map(|s| (s.mask.clone(), s.hits)).collect()
    }
}
