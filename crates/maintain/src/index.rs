//! The dependency index of the incremental engine: from rules, table misses
//! and groups to the cache entries whose traversal used them, and, per table,
//! a prefix index of the entries that reached it, to find the entries a new
//! rule overlaps without scanning the others.
//!
//! Invariants: every live entry is registered under exactly the rules,
//! misses, groups and table regions of its current traversal (re-registered
//! whenever its traversal is replaced); the region an entry is indexed under
//! at a table is a superset of its true region there, so a query never misses
//! an overlapping entry.

use std::collections::BTreeSet;
use std::sync::Arc;

use kairo_classifier::RuleId;
use kairo_flow::parse::prefix_mask;
use kairo_flow::{Field, FlowMask, Match};
use kairo_xlate::{Outcome, Pipeline, Traversal};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::Megaflow;

pub type EntryId = u32;

/// The (value aligned to len, prefix length) under which an entry is indexed
/// at the table of one step of its traversal.
type Slot = (u64, u8);

/// One entry: the megaflow, the traversal it is registered under (shared
/// with the megaflow, so the table, outcome and key version of each visit
/// are read from it rather than copied), and its index slot per step.
struct Entry {
    mf: Arc<Megaflow>,
    trav: Arc<Traversal>,
    slots: Box<[Slot]>,
}

/// Per-table prefix index over one field chosen for the table.
struct TableIndex {
    field: Field,
    /// (value aligned to len, len, entry).
    set: BTreeSet<(u64, u8, EntryId)>,
    /// Entries per prefix length (queries skip lengths nobody uses).
    lens: [u32; 65],
}

/// Leading ones of `m` in a field of `bits` bits.
fn leading_ones(m: u64, bits: u32) -> u8 {
    let shifted = if bits == 64 { m } else { m << (64 - bits) };
    shifted.leading_ones().min(bits) as u8
}

/// The field to index a table on: the one its rules constrain with the most bits.
fn choose_field(p: &Pipeline, t: u8) -> Field {
    let mut score: FxHashMap<Field, u64> = FxHashMap::default();
    if let Some(tb) = p.table(t) {
        for r in tb.cls.iter() {
            for f in Field::all().filter(|f| f.def().storage.is_none() && *f != Field::EthType && *f != Field::RecircId)
            {
                let n = r.m.mask().get(f).count_ones() as u64;
                if n > 0 {
                    *score.entry(f).or_insert(0) += n;
                }
            }
        }
    }
    score.into_iter().max_by_key(|(f, n)| (*n, std::cmp::Reverse(*f as u8))).map(|(f, _)| f).unwrap_or(Field::IpDst)
}

/// The dependency index.
#[derive(Default)]
pub struct Index {
    entries: Vec<Option<Entry>>,
    free: Vec<EntryId>,
    by_ptr: FxHashMap<usize, EntryId>,
    by_rule: FxHashMap<RuleId, FxHashSet<EntryId>>,
    by_miss: FxHashMap<u8, FxHashSet<EntryId>>,
    by_group: FxHashMap<u32, FxHashSet<EntryId>>,
    tables: FxHashMap<u8, TableIndex>,
    po: FlowMask,
}

impl Index {
    pub fn new() -> Index {
        Index { po: crate::revalidate::pipeline_only_mask(), ..Index::default() }
    }

    pub fn len(&self) -> usize {
        self.by_ptr.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_ptr.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Arc<Megaflow>> {
        self.entries.iter().flatten().map(|e| &e.mf)
    }

    pub fn get(&self, id: EntryId) -> Option<&Arc<Megaflow>> {
        self.entries.get(id as usize)?.as_ref().map(|e| &e.mf)
    }

    fn region(&self, mf: &Megaflow) -> FlowMask {
        let mut m = *mf.mask;
        m.or(&self.po);
        m
    }

    /// The index slot of each step of a traversal.
    fn slots_of(&mut self, p: &Pipeline, mf: &Megaflow, trav: &Traversal) -> Box<[Slot]> {
        let region = self.region(mf);
        let mut slots = Vec::with_capacity(trav.steps.len());
        for st in &trav.steps {
            let kt = trav.key_at(&mf.rep, st);
            let ti = self.tables.entry(st.table).or_insert_with(|| TableIndex {
                field: choose_field(p, st.table),
                set: BTreeSet::new(),
                lens: [0; 65],
            });
            let f = ti.field;
            let len = leading_ones(region.get(f), f.bits());
            slots.push((kt.get(f) & prefix_mask(len as u32, f.bits()), len));
        }
        slots.into_boxed_slice()
    }

    fn add_outcome(&mut self, id: EntryId, table: u8, outcome: Outcome) {
        match outcome {
            Outcome::Rule(r) => self.by_rule.entry(r).or_default().insert(id),
            Outcome::Miss => self.by_miss.entry(table).or_default().insert(id),
        };
    }

    fn add_slot(&mut self, id: EntryId, table: u8, slot: Slot) {
        if let Some(ti) = self.tables.get_mut(&table) {
            if ti.set.insert((slot.0, slot.1, id)) {
                ti.lens[slot.1 as usize] += 1;
            }
        }
    }

    fn del_outcome(&mut self, id: EntryId, table: u8, outcome: Outcome) {
        let set = match outcome {
            Outcome::Rule(r) => self.by_rule.get_mut(&r),
            Outcome::Miss => self.by_miss.get_mut(&table),
        };
        if let Some(s) = set {
            s.remove(&id);
            if s.is_empty() {
                match outcome {
                    Outcome::Rule(r) => self.by_rule.remove(&r),
                    Outcome::Miss => self.by_miss.remove(&table),
                };
            }
        }
    }

    fn del_slot(&mut self, id: EntryId, table: u8, slot: Slot) {
        if let Some(ti) = self.tables.get_mut(&table) {
            if ti.set.remove(&(slot.0, slot.1, id)) {
                ti.lens[slot.1 as usize] -= 1;
            }
        }
    }

    fn groups_of(trav: &Traversal) -> Vec<u32> {
        let mut groups: Vec<u32> = trav.groups.iter().map(|g| g.group).collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    fn add_groups(&mut self, id: EntryId, groups: &[u32]) {
        for &g in groups {
            self.by_group.entry(g).or_default().insert(id);
        }
    }

    fn del_groups(&mut self, id: EntryId, groups: &[u32]) {
        for g in groups {
            if let Some(s) = self.by_group.get_mut(g) {
                s.remove(&id);
                if s.is_empty() {
                    self.by_group.remove(g);
                }
            }
        }
    }

    fn register(&mut self, p: &Pipeline, id: EntryId, mf: &Arc<Megaflow>, trav: Arc<Traversal>) {
        let slots = self.slots_of(p, mf, &trav);
        for (st, &slot) in trav.steps.iter().zip(slots.iter()) {
            self.add_outcome(id, st.table, st.outcome);
            self.add_slot(id, st.table, slot);
        }
        self.add_groups(id, &Self::groups_of(&trav));
        self.entries[id as usize] = Some(Entry { mf: mf.clone(), trav, slots });
    }

    fn unregister(&mut self, id: EntryId) -> Option<Entry> {
        let e = self.entries.get_mut(id as usize)?.take()?;
        for (st, &slot) in e.trav.steps.iter().zip(e.slots.iter()) {
            self.del_outcome(id, st.table, st.outcome);
            self.del_slot(id, st.table, slot);
        }
        self.del_groups(id, &Self::groups_of(&e.trav));
        Some(e)
    }

    /// Adds an entry under its current traversal.
    pub fn insert(&mut self, p: &Pipeline, mf: Arc<Megaflow>) -> EntryId {
        let key = Arc::as_ptr(&mf) as usize;
        if let Some(&id) = self.by_ptr.get(&key) {
            return id;
        }
        let id = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(None);
                (self.entries.len() - 1) as EntryId
            }
        };
        self.by_ptr.insert(key, id);
        let trav = mf.traversal();
        self.register(p, id, &mf, trav);
        id
    }

    /// Re-registers an entry whose traversal was replaced by `new`: removes
    /// only the registrations that changed (usually from the table whose rule
    /// changed onwards), then asserts the new ones.
    pub fn reindex_if_needed(&mut self, p: &Pipeline, id: EntryId, new: &Arc<Traversal>) {
        let Some(e) = self.entries.get_mut(id as usize).and_then(|e| e.take()) else { return };
        let slots = self.slots_of(p, &e.mf, new);
        // Two registrations per visit, each a set shared by the visits to the
        // same table: its outcome and its slot. Remove the ones that changed,
        // add the new ones, and re-assert unchanged ones that shared a
        // registration with a removed one.
        type V = (u8, Outcome, Slot);
        let old: Vec<V> = e.trav.steps.iter().zip(e.slots.iter()).map(|(s, &sl)| (s.table, s.outcome, sl)).collect();
        let now: Vec<V> = new.steps.iter().zip(slots.iter()).map(|(s, &sl)| (s.table, s.outcome, sl)).collect();
        let same_o = |a: &V, b: &V| a.0 == b.0 && a.1 == b.1;
        let same_s = |a: &V, b: &V| a.0 == b.0 && a.2 == b.2;
        let (mut gone_o, mut gone_s): (Vec<&V>, Vec<&V>) = (Vec::new(), Vec::new());
        for (i, v) in old.iter().enumerate() {
            let n = now.get(i);
            if n.is_none_or(|n| !same_o(v, n)) {
                self.del_outcome(id, v.0, v.1);
                gone_o.push(v);
            }
            if n.is_none_or(|n| !same_s(v, n)) {
                self.del_slot(id, v.0, v.2);
                gone_s.push(v);
            }
        }
        for (i, v) in now.iter().enumerate() {
            let o = old.get(i);
            if o.is_none_or(|o| !same_o(o, v)) || gone_o.iter().any(|d| same_o(d, v)) {
                self.add_outcome(id, v.0, v.1);
            }
            if o.is_none_or(|o| !same_s(o, v)) || gone_s.iter().any(|d| same_s(d, v)) {
                self.add_slot(id, v.0, v.2);
            }
        }
        let (was, groups) = (Self::groups_of(&e.trav), Self::groups_of(new));
        if groups != was {
            self.del_groups(id, &was);
            self.add_groups(id, &groups);
        }
        self.entries[id as usize] = Some(Entry { mf: e.mf, trav: new.clone(), slots });
    }

    /// Removes an entry.
    pub fn remove(&mut self, id: EntryId) -> Option<Arc<Megaflow>> {
        let e = self.unregister(id)?;
        self.by_ptr.remove(&(Arc::as_ptr(&e.mf) as usize));
        self.free.push(id);
        Some(e.mf)
    }

    pub fn id_of(&self, mf: &Arc<Megaflow>) -> Option<EntryId> {
        self.by_ptr.get(&(Arc::as_ptr(mf) as usize)).copied()
    }

    /// Entries whose traversal matched rule `r`.
    pub fn users_of_rule(&self, r: RuleId) -> impl Iterator<Item = EntryId> + '_ {
        self.by_rule.get(&r).into_iter().flatten().copied()
    }
    /// Entries that missed in table `t`.
    pub fn users_of_miss(&self, t: u8) -> impl Iterator<Item = EntryId> + '_ {
        self.by_miss.get(&t).into_iter().flatten().copied()
    }
    /// Entries that used group `g`.
    pub fn users_of_group(&self, g: u32) -> impl Iterator<Item = EntryId> + '_ {
        self.by_group.get(&g).into_iter().flatten().copied()
    }

    /// Entries that reached table `t` whose region there overlaps `m` and whose
    /// outcome there loses to a new rule of `priority` (new rules lose ties).
    /// Returns them, and how many index slots were looked at.
    pub fn overlapping(&self, p: &Pipeline, t: u8, m: &Match, priority: u16, out: &mut Vec<EntryId>) -> usize {
        let Some(ti) = self.tables.get(&t) else { return 0 };
        let f = ti.field;
        let bits = f.bits();
        let (v, w) = m.field(f);
        let l = leading_ones(w, bits);
        let mut looked = 0usize;
        let mut cands: Vec<EntryId> = Vec::new();
        // Entries indexed under a prefix containing the rule's prefix on f.
        for len in (0..=l).filter(|&len| ti.lens[len as usize] > 0) {
            let val = v & prefix_mask(len as u32, bits);
            for &(_, _, id) in ti.set.range((val, len, 0)..=(val, len, EntryId::MAX)) {
                cands.push(id);
                looked += 1;
            }
        }
        // Entries indexed under longer prefixes inside the rule's prefix.
        let lo = v & prefix_mask(l as u32, bits);
        let hi = lo | (f.ones() & !prefix_mask(l as u32, bits));
        for &(_, len, id) in ti.set.range((lo, 0, 0)..=(hi, u8::MAX, EntryId::MAX)) {
            looked += 1;
            if len > l {
                cands.push(id);
            }
        }
        cands.sort_unstable();
        cands.dedup();
        for id in cands {
            let Some(e) = self.entries[id as usize].as_ref() else { continue };
            let region = self.region(&e.mf);
            let trav = &e.trav;
            let hit = trav.steps.iter().filter(|st| st.table == t).any(|st| {
                let loses = match st.outcome {
                    Outcome::Miss => true,
                    Outcome::Rule(r) => {
                        p.table(t).and_then(|tb| tb.cls.get(r)).is_none_or(|old| old.priority < priority)
                    }
                };
                loses && {
                    let mut common = region;
                    for i in 0..common.w.len() {
                        common.w[i] &= m.mask().w[i];
                    }
                    trav.key_at(&e.mf.rep, st).eq_masked(m.key(), &common)
                }
            });
            if hit {
                out.push(id);
            }
        }
        looked
    }

    /// Approximate bytes held by the index (for the memory figure).
    pub fn approx_bytes(&self) -> usize {
        let visits: usize = self.entries.iter().flatten().map(|e| e.slots.len()).sum();
        let per_visit = std::mem::size_of::<Slot>() + 24 /* BTreeSet slot */ + 16 /* rule set slot */;
        self.entries.len() * (std::mem::size_of::<Option<Entry>>() + 16) + visits * per_visit
    }
}
