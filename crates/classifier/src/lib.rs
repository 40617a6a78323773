//! The per-table classifier: priority lookup over wildcarded rules by
//! tuple-space search, with un-wildcarding.
//!
//! # The megaflow contract (as in Open vSwitch's `lib/classifier.h`)
//!
//! [`Classifier::lookup`] returns the highest-priority rule matching a key and
//! ORs into the caller's [`FlowMask`] the bits it examined to decide. Invariant:
//! every key that agrees with the looked-up key on the bits ORed in gets the
//! same result from this classifier. Bits it did not need stay wildcarded, so
//! megaflows stay wide:
//!
//! - **Tuple-space search**: one [`Subtable`] per distinct rule mask, holding a
//!   hash map from masked key to rules. Subtables are visited in order of their
//!   highest priority; once a match is found, subtables whose highest priority
//!   is below it are skipped without un-wildcarding anything.
//! - **Staged lookup**: a subtable's mask is split into the metadata, L2, L3 and
//!   L4 stages of the field table; a hash index per stage prefix tells early that
//!   no rule can match, and only the stages examined so far are un-wildcarded.
//! - **Prefix tracking** on `nw_src`, `nw_dst`, `ipv6_src` and `ipv6_dst` (as
//!   Open vSwitch 3.5's default; 3.1's is the IPv4 pair): a binary trie of all
//!   rules' prefixes tells that no rule of a subtable's prefix length can
//!   match, from only as many leading address bits as the trie walk needed;
//!   the first trie that tells it is taken, destination before source.
//! - **Ports trie**: per subtable whose L4 mask is a prefix of (tp_dst, tp_src),
//!   a trie of its rules' ports explains a miss by the port bits alone.
//!
//! **Ties**: among matching rules of equal priority, the one inserted first
//! (lowest [`RuleId`]) wins. Translation and cache maintenance both rely on it.

mod conj;
mod rules;
mod trie;

pub use conj::{Clause, ConjLookup};
use kairo_flow::field::{Field, Stage, ETH_TYPE_IP, ETH_TYPE_IPV6, N_STAGES, STAGE_WORDS};
use kairo_flow::parse::{prefix_len, prefix_len128, prefix_mask, prefix_mask128};
use kairo_flow::{FlowKey, FlowMask, HasMatch, Match};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
pub use trie::{PrefixTrie, TrieLookup};

/// Identifies a rule; also its insertion order (ties go to the lower id).
pub type RuleId = u64;

/// A rule as the classifier sees it: its match is its payload's
/// ([`HasMatch`]; a pipeline's rule holds it once, for both).
#[derive(Clone, Debug)]
pub struct ClsRule<R> {
    pub id: RuleId,
    pub priority: u16,
    pub payload: R,
}

impl<R> ClsRule<R> {
    /// Does `self` win over `other` when both match? (higher priority, then lower id)
    #[inline]
    pub fn beats(&self, other: &ClsRule<R>) -> bool {
        (self.priority, std::cmp::Reverse(self.id)) > (other.priority, std::cmp::Reverse(other.id))
    }
}

impl<R: HasMatch> ClsRule<R> {
    /// The rule's match.
    #[inline]
    pub fn m(&self) -> &Match {
        self.payload.matched()
    }
}

/// The fields with prefix tries (a 128-bit field by its high half), in the
/// order a lookup asks them: destination before source, as Open vSwitch's
/// default prefix fields are.
pub const TRIE_FIELDS: [Field; 4] = [Field::IpDst, Field::IpSrc, Field::Ipv6DstHi, Field::Ipv6SrcHi];

/// The left-aligned 128-bit value of trie field `f` in `words` of a key or mask.
#[inline]
fn trie_value(f: Field, k: &FlowKey) -> u128 {
    if f.wide().is_some() {
        k.get_wide(f)
    } else {
        u128::from(k.get(f)) << (128 - f.bits())
    }
}

/// The prefix length of a mask on trie field `f`, if it is a CIDR prefix.
#[inline]
fn trie_plen_of(f: Field, mask: &FlowMask) -> Option<u32> {
    if f.wide().is_some() {
        prefix_len128(mask.get_wide(f))
    } else {
        prefix_len(mask.get(f), f.bits())
    }
}

/// Un-wildcards the first `n` bits of trie field `f`.
#[inline]
fn or_prefix(wc: &mut FlowMask, f: Field, n: u32) {
    if f.wide().is_some() {
        wc.or_wide(f, prefix_mask128(n));
    } else {
        wc.or_bits(f, prefix_mask(n, f.bits()));
    }
}

/// The eth_type under which trie field `f` is meaningful.
#[inline]
fn trie_eth_type(f: Field) -> u64 {
    if f.wide().is_some() {
        ETH_TYPE_IPV6
    } else {
        ETH_TYPE_IP
    }
}

#[inline]
fn mix(h: u64, x: u64) -> u64 {
    (h.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95)
}

#[inline]
fn hash_words(mut h: u64, key: &FlowKey, mask: &FlowMask, words: std::ops::Range<usize>) -> u64 {
    for i in words {
        h = mix(h, key.w[i] & mask.w[i]);
    }
    h
}

/// One subtable: all rules with one mask.
#[derive(Clone, Debug)]
pub struct Subtable<R> {
    mask: FlowMask,
    /// Word ranges of the stages this mask uses, in order. All but the last have an index.
    stages: Vec<(Stage, std::ops::Range<usize>)>,
    /// For stage i (except the last): count of rules per hash of words `0..stages[i].end`.
    stage_index: Vec<FxHashMap<u64, u32>>,
    /// Masked key -> rules, best first.
    rules: rules::Rules<R>,
    priorities: BTreeMap<u16, u32>,
    max_priority: u16,
    /// Prefix length on each trie field, if the mask there is a non-empty CIDR prefix.
    trie_plen: [Option<u32>; TRIE_FIELDS.len()],
    /// Ports trie (as Open vSwitch's): when this subtable's L4 mask is only a
    /// prefix of (tp_dst, tp_src), the rules' port prefixes, so a miss can be
    /// explained by as few port bits as the trie needs.
    ports_plen: Option<u32>,
    ports_trie: PrefixTrie,
    n_rules: usize,
}

/// The 32-bit (tp_dst, tp_src) value the ports trie indexes, left-aligned.
#[inline]
fn ports_value(k: &FlowKey) -> u128 {
    u128::from(((k.get(Field::TpDst) << 16) | k.get(Field::TpSrc)) as u32) << 96
}

/// The ports-trie prefix length of a mask, if its L4 stage holds only a
/// non-empty prefix of (tp_dst, tp_src).
fn ports_plen(mask: &FlowMask) -> Option<u32> {
    let l4 = STAGE_WORDS[Stage::L4 as usize]..STAGE_WORDS[Stage::L4 as usize + 1];
    let mut rest = *mask;
    rest.set(Field::TpSrc, 0);
    rest.set(Field::TpDst, 0);
    if rest.w[l4].iter().any(|&w| w != 0) {
        return None;
    }
    let m = (mask.get(Field::TpDst) << 16) | mask.get(Field::TpSrc);
    prefix_len(m, 32).filter(|&l| l > 0)
}

impl<R> Subtable<R> {
    fn new(mask: FlowMask) -> Self {
        let mut stages = Vec::new();
        for s in 0..N_STAGES {
            let r = STAGE_WORDS[s]..STAGE_WORDS[s + 1];
            if mask.w[r.clone()].iter().any(|&w| w != 0) {
                let st = [Stage::Meta, Stage::L2, Stage::L3, Stage::L4][s];
                stages.push((st, r));
            }
        }
        let n_idx = stages.len().saturating_sub(1);
        let mut trie_plen = [None; TRIE_FIELDS.len()];
        for (i, f) in TRIE_FIELDS.iter().enumerate() {
            trie_plen[i] = trie_plen_of(*f, &mask).filter(|&l| l > 0);
        }
        Subtable {
            mask,
            stages,
            stage_index: vec![FxHashMap::default(); n_idx],
            rules: rules::Rules::new(&mask),
            priorities: BTreeMap::new(),
            max_priority: 0,
            trie_plen,
            ports_plen: ports_plen(&mask),
            ports_trie: PrefixTrie::default(),
            n_rules: 0,
        }
    }

    fn stage_hashes(&self, key: &FlowKey) -> Vec<u64> {
        let mut h = 0;
        let mut out = Vec::with_capacity(self.stage_index.len());
        for (i, (_, r)) in self.stages.iter().enumerate() {
            if i == self.stage_index.len() {
                break;
            }
            h = hash_words(h, key, &self.mask, r.clone());
            out.push(h);
        }
        out
    }

    pub fn mask(&self) -> &FlowMask {
        &self.mask
    }
    pub fn max_priority(&self) -> u16 {
        self.max_priority
    }
    pub fn len(&self) -> usize {
        self.n_rules
    }
    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }
}

/// Per-lookup statistics (for tests and benchmarks).
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupStats {
    pub subtables_visited: u32,
    pub stage_skips: u32,
    pub trie_skips: u32,
}

/// A priority classifier over wildcarded rules (one OpenFlow table).
#[derive(Clone, Debug)]
pub struct Classifier<R> {
    slots: Vec<Option<Subtable<R>>>,
    free: Vec<usize>,
    by_mask: FxHashMap<FlowMask, usize>,
    /// Slot indexes ordered by max_priority, highest first.
    order: Vec<usize>,
    by_id: FxHashMap<RuleId, (usize, FlowKey)>,
    tries: [PrefixTrie; TRIE_FIELDS.len()],
    /// The union of the subtables' masks: the only bits of a key that can
    /// change which rule it gets.
    read: FlowMask,
}

impl<R> Default for Classifier<R> {
    fn default() -> Self {
        Classifier {
            slots: Vec::new(),
            free: Vec::new(),
            by_mask: FxHashMap::default(),
            order: Vec::new(),
            by_id: FxHashMap::default(),
            tries: Default::default(),
            read: FlowMask::ZERO,
        }
    }
}

impl<R: HasMatch> Classifier<R> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
    pub fn n_subtables(&self) -> usize {
        self.order.len()
    }

    /// The bits of a key some rule reads (the union of the rules' masks): two
    /// keys equal on them get the same rule from [`Classifier::lookup`].
    pub fn read_mask(&self) -> &FlowMask {
        &self.read
    }

    fn resort(&mut self) {
        let slots = &self.slots;
        self.order.sort_by_key(|&i| std::cmp::Reverse(slots[i].as_ref().map_or(0, |s| s.max_priority)));
    }

    /// Inserts a rule. Ids must be unique; the caller (the table) decides what
    /// replaces what.
    pub fn insert(&mut self, rule: ClsRule<R>) {
        let mask = *rule.m().mask();
        let slot = match self.by_mask.get(&mask) {
            Some(&s) => s,
            None => {
                let st = Subtable::new(mask);
                let s = match self.free.pop() {
                    Some(s) => {
                        self.slots[s] = Some(st);
                        s
                    }
                    None => {
                        self.slots.push(Some(st));
                        self.slots.len() - 1
                    }
                };
                self.by_mask.insert(mask, s);
                self.order.push(s);
                self.read.or(&mask);
                s
            }
        };
        for (i, f) in TRIE_FIELDS.iter().enumerate() {
            if let Some(l) = trie_plen_of(*f, rule.m().mask()).filter(|&l| l > 0) {
                self.tries[i].insert(trie_value(*f, rule.m().key()), l);
            }
        }
        let Some(st) = self.slots[slot].as_mut() else { unreachable!("slot in by_mask is live") };
        let key = *rule.m().key();
        if let Some(l) = st.ports_plen {
            st.ports_trie.insert(ports_value(&key), l);
        }
        for (i, h) in st.stage_hashes(&key).into_iter().enumerate() {
            *st.stage_index[i].entry(h).or_insert(0) += 1;
        }
        *st.priorities.entry(rule.priority).or_insert(0) += 1;
        let old_max = st.max_priority;
        st.max_priority = *st.priorities.keys().next_back().unwrap_or(&0);
        st.n_rules += 1;
        self.by_id.insert(rule.id, (slot, key));
        let bucket = st.rules.entry(&key);
        let pos = bucket.iter().position(|r| rule.beats(r)).unwrap_or(bucket.len());
        bucket.insert(pos, rule);
        if st.max_priority != old_max || st.n_rules == 1 {
            self.resort();
        }
    }

    /// Removes a rule by id.
    pub fn remove(&mut self, id: RuleId) -> Option<ClsRule<R>> {
        let (slot, key) = self.by_id.remove(&id)?;
        let st = self.slots[slot].as_mut()?;
        let bucket = st.rules.get_mut(&key)?;
        let pos = bucket.iter().position(|r| r.id == id)?;
        let rule = bucket.remove(pos);
        if bucket.is_empty() {
            st.rules.remove(&key);
        }
        for (i, h) in st.stage_hashes(&key).into_iter().enumerate() {
            if let Some(c) = st.stage_index[i].get_mut(&h) {
                *c -= 1;
                if *c == 0 {
                    st.stage_index[i].remove(&h);
                }
            }
        }
        if let Some(c) = st.priorities.get_mut(&rule.priority) {
            *c -= 1;
            if *c == 0 {
                st.priorities.remove(&rule.priority);
            }
        }
        st.n_rules -= 1;
        if let Some(l) = st.ports_plen {
            st.ports_trie.remove(ports_value(&key), l);
        }
        let old_max = st.max_priority;
        st.max_priority = *st.priorities.keys().next_back().unwrap_or(&0);
        for (i, f) in TRIE_FIELDS.iter().enumerate() {
            if let Some(l) = trie_plen_of(*f, rule.m().mask()).filter(|&l| l > 0) {
                self.tries[i].remove(trie_value(*f, rule.m().key()), l);
            }
        }
        if st.n_rules == 0 {
            self.by_mask.remove(&st.mask);
            self.slots[slot] = None;
            self.free.push(slot);
            self.order.retain(|&s| s != slot);
            self.read = FlowMask::ZERO;
            for st in self.slots.iter().flatten() {
                self.read.or(&st.mask);
            }
        } else if st.max_priority != old_max {
            self.resort();
        }
        Some(rule)
    }

    /// Gives rule `id` a new payload in place when its match and priority
    /// are `m` and `priority`: nothing a lookup or an index reads changes,
    /// so a rule's new instructions cost one hash lookup instead of a
    /// removal and an insertion (tries, stage indexes, priorities, and the
    /// subtable itself when the rule was alone in it). Returns the old
    /// payload, or `None` (and nothing changed) when there is no such rule.
    /// (Found by its match, as [`Classifier::find_exact`] finds it, which
    /// its caller has usually just done: the same memory, warm.)
    pub fn replace_payload(&mut self, id: RuleId, priority: u16, m: &Match, payload: R) -> Option<R> {
        debug_assert!(payload.matched() == m, "a payload's match is the rule's");
        let slot = *self.by_mask.get(m.mask())?;
        let st = self.slots[slot].as_mut()?;
        let rule = st.rules.get_mut(m.key())?.iter_mut().find(|r| r.id == id && r.priority == priority)?;
        Some(std::mem::replace(&mut rule.payload, payload))
    }

    /// The rule with this id.
    pub fn get(&self, id: RuleId) -> Option<&ClsRule<R>> {
        let (slot, key) = self.by_id.get(&id)?;
        self.slots[*slot].as_ref()?.rules.get(key)?.iter().find(|r| r.id == id)
    }

    /// The rules with exactly this match, best first.
    pub fn same_match(&self, m: &Match) -> &[ClsRule<R>] {
        let Some(&slot) = self.by_mask.get(m.mask()) else { return &[] };
        self.slots[slot].as_ref().and_then(|st| st.rules.get(m.key())).map_or(&[], |b| b.as_slice())
    }

    /// The rule with exactly this match and priority (OpenFlow's rule identity).
    pub fn find_exact(&self, m: &Match, priority: u16) -> Option<&ClsRule<R>> {
        let slot = *self.by_mask.get(m.mask())?;
        self.slots[slot].as_ref()?.rules.get(m.key())?.iter().find(|r| r.priority == priority)
    }

    /// Every rule, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ClsRule<R>> {
        self.slots.iter().flatten().flat_map(|st| st.rules.values().flatten())
    }

    /// The subtables, highest priority first.
    pub fn subtables(&self) -> impl Iterator<Item = &Subtable<R>> {
        self.order.iter().filter_map(|&i| self.slots[i].as_ref())
    }

    /// Finds the best rule matching `key`, ORing into `wc` the bits examined.
    pub fn lookup(&self, key: &FlowKey, wc: &mut FlowMask) -> Option<&ClsRule<R>> {
        self.lookup_stats(key, wc, &mut LookupStats::default())
    }

    /// As [`Classifier::lookup`], counting what it did.
    pub fn lookup_stats(&self, key: &FlowKey, wc: &mut FlowMask, stats: &mut LookupStats) -> Option<&ClsRule<R>> {
        let mut best: Option<&ClsRule<R>> = None;
        self.scan(key, wc, stats, |bucket| {
            let cand = &bucket[0];
            if best.is_none_or(|b| cand.beats(b)) {
                best = Some(cand);
            }
            best.map(|b| b.priority)
        });
        best
    }

    /// Visits, in order of their highest priority, the subtables a lookup
    /// of `key` must visit, ORing into `wc` what each visit examined, and
    /// hands `visit` the rules of each that match (best first). `visit`
    /// returns the priority below which no subtable can matter any more
    /// (the best match so far), or `None`.
    pub(crate) fn scan<'a>(
        &'a self,
        key: &FlowKey,
        wc: &mut FlowMask,
        stats: &mut LookupStats,
        mut visit: impl FnMut(&'a [ClsRule<R>]) -> Option<u16>,
    ) {
        let mut floor: Option<u16> = None;
        let mut tries: [Option<TrieLookup>; TRIE_FIELDS.len()] = [None; TRIE_FIELDS.len()];
        let eth_type = key.get(Field::EthType);
        'subtables: for &slot in &self.order {
            let Some(st) = self.slots[slot].as_ref() else {
                continue;
            };
            if floor.is_some_and(|f| st.max_priority < f) {
                break;
            }
            stats.subtables_visited += 1;
            let mut h = 0u64;
            let n_idx = st.stage_index.len();
            for (i, (stage, range)) in st.stages.iter().enumerate() {
                if *stage == Stage::L3 {
                    // The first trie (destination first) showing that no rule of
                    // this subtable's prefix length can match skips it, as in Open
                    // vSwitch. Choosing instead by the bits each adds to this
                    // lookup's mask took the source where the route lookup had
                    // made the destination exact already, which this lookup
                    // cannot see (it starts from an empty mask).
                    let mut skip: Option<(Field, u32)> = None;
                    for (t, f) in TRIE_FIELDS.iter().enumerate() {
                        let Some(plen) = st.trie_plen[t] else {
                            continue;
                        };
                        // A trie is consulted only where its field is meaningful (as OVS
                        // checks the field's prerequisites); eth_type is in an earlier stage.
                        if eth_type != trie_eth_type(*f) {
                            continue;
                        }
                        let res = *tries[t].get_or_insert_with(|| self.tries[t].lookup(trie_value(*f, key)));
                        if !res.has_plen(plen) {
                            skip = Some((*f, res.bits_needed(plen)));
                            break;
                        }
                    }
                    if let Some((f, bits)) = skip {
                        // No rule of this prefix length matches: skip the subtable,
                        // un-wildcarding the earlier stages and the address bits used.
                        wc.or_words(&st.mask, 0..range.start);
                        or_prefix(wc, f, bits);
                        stats.trie_skips += 1;
                        continue 'subtables;
                    }
                }
                if i < n_idx {
                    h = hash_words(h, key, &st.mask, range.clone());
                    if !st.stage_index[i].contains_key(&h) {
                        wc.or_words(&st.mask, 0..range.end);
                        stats.stage_skips += 1;
                        continue 'subtables;
                    }
                }
            }
            let bucket = st.rules.get(key);
            if bucket.is_none() {
                if let Some(pl) = st.ports_plen {
                    let r = st.ports_trie.lookup(ports_value(key));
                    if !r.has_plen(pl) {
                        // No rule of this subtable has these ports: the port bits the
                        // trie walk needed explain the miss on their own.
                        let m = kairo_flow::parse::prefix_mask(r.bits_needed(pl), 32);
                        wc.or_bits(Field::TpDst, m >> 16);
                        wc.or_bits(Field::TpSrc, m & 0xffff);
                        stats.trie_skips += 1;
                        continue 'subtables;
                    }
                }
            }
            wc.or(&st.mask);
            if let Some(bucket) = bucket {
                floor = visit(bucket);
            }
        }
    }

    /// Is there a rule with priority at least `min_priority` for which `pred`
    /// holds, whose match overlaps the region `key`/`mask` (some packet is in
    /// both)? Subtables whose mask the region fully constrains are probed by
    /// hash; the others are scanned.
    pub fn any_overlapping(
        &self,
        key: &FlowKey,
        mask: &FlowMask,
        min_priority: u16,
        pred: impl Fn(&ClsRule<R>) -> bool,
    ) -> bool {
        for &slot in &self.order {
            let Some(st) = self.slots[slot].as_ref() else { continue };
            if st.max_priority < min_priority {
                break;
            }
            if st.mask.is_subset_of(mask) {
                if let Some(bucket) = st.rules.get(key) {
                    if bucket.iter().any(|r| r.priority >= min_priority && pred(r)) {
                        return true;
                    }
                }
            } else {
                let mut common = st.mask;
                for i in 0..common.w.len() {
                    common.w[i] &= mask.w[i];
                }
                for bucket in st.rules.values() {
                    if bucket[0].m().key().eq_masked(key, &common)
                        && bucket.iter().any(|r| r.priority >= min_priority && pred(r))
                    {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Reference lookup by linear scan (for tests): the best matching rule.
    pub fn lookup_linear(&self, key: &FlowKey) -> Option<&ClsRule<R>> {
        let mut best: Option<&ClsRule<R>> = None;
        for r in self.iter() {
            if r.m().matches(key) && best.is_none_or(|b| r.beats(b)) {
                best = Some(r);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests;
