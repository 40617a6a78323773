//! Shared action cells: megaflows that reach one table in the same state
//! read their actions from one [`Cell`], so that a rule change from that
//! table on is translated and published once for all of them instead of
//! once per megaflow. Per megaflow a pass costs about a microsecond (cold
//! reads of its traversal and key, the commits, the publish); per cell it
//! costs one translation of the part that changed and one store, and the
//! members only have to be found.
//!
//! Which tables anchor cells is chosen from the cache once it has
//! [`CALIBRATE_AT`] entries ([`Cells::calibrate`]): a table whose visits
//! fall into few states (at least [`SHARE_MIN`] visits per state among
//! those entries) is an anchor. A megaflow is anchored at its earliest
//! resumable visit (past table 0) to an anchor table from which the rest of
//! its translation can be shared ([`translate_suffix`], every lookup made
//! anew): it joins the cell of that state, or makes one.
//!
//! Invariant, for every cell and every *member* (a live megaflow that reads
//! its actions from the cell's [`Cell`]), with `s` the cell's suffix:
//! 1. its traversal ends with `s`'s visits (table and outcome) from a step
//!    `j` >= 1 below its `resumable()` ([`Suffix::start_in`]); the tables it
//!    visited before `j` are in `before`, and if it used a group before `j`,
//!    `groups` is set;
//! 2. `s` is what translation gave it from `j` ([`Suffix::gave`]: its flow
//!    there agrees with `s`'s on what `s` examined, and on in_port as far
//!    as `s`'s outputs compare it; its visits are `s`'s), and on `agree` it
//!    is `s`'s first flow; its nesting at `j` is at most `max_depth` and
//!    `j` at most `max_j`, its region contains `region`, and `region`
//!    contains `s.need()`;
//! 3. its actions are `s`'s for it ([`Suffix::actions_and_commits`]), whose
//!    commits made `commits` actions each.
//!
//! These are facts about the members' keys and actions, not about the
//! tables: `s` need not be what translation gives now (a change that a
//! cell could not take at its level leaves `s` as it was for the members
//! the change did not affect). That the cell's actions are right is the
//! engine's invariant for each member, as for any entry.
//!
//! Whatever gives a member other actions or another traversal than the
//! cell gives it takes it out of the cell first (it gets a cell of its own:
//! [`Ukey::set_shared`], [`Ukey::set_actions_first`],
//! [`Ukey::detach`]). A removed or evicted member stays in `members`
//! until the cell is next settled (ids are checked against the cell before
//! use).

use crate::prefetch::ReadAhead;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use crate::intern::Interner;
use crate::{Moved, Ukey};
use kairo_datapath::Cell;
use kairo_flow::FlowMask;
use kairo_xlate::{translate_suffix, Pipeline, Suffix, TableSet, Traversal};
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use crate::index::{EntryId, Index};
use crate::revalidate::Changed;

/// Entries the anchors are chosen from (the first this many in the cache).
pub const CALIBRATE_AT: usize = 4096;
/// Visits per state, among those entries, for a table to anchor cells.
pub const SHARE_MIN: usize = 2;
/// Visits to a table, among those entries, below which it is not judged.
const VISITS_MIN: usize = 64;
/// Cells made before a sweep is worth it (few in tests, so that their
/// small caches sweep too).
const SWEEP_MIN: usize = if cfg!(test) { 4 } else { 1024 };

/// One cell and what its members share (see the module's invariant).
struct CellInfo {
    cell: Arc<Cell>,
    suffix: Suffix,
    /// The suffix a pass published from, until housekeeping gives the
    /// members the traversals that go with it (then it is `suffix`).
    next: Option<Suffix>,
    commits: Vec<u32>,
    /// Bits on which every member's flow at the step is the suffix's
    /// first flow (`suffix.same` at least).
    agree: FlowMask,
    region: FlowMask,
    max_depth: u8,
    max_j: usize,
    before: TableSet,
    groups: bool,
    /// Every member's in_port, and perhaps those of former members
    /// (sorted; ports a suffix compares in_port with may change with an
    /// update only if the members compare alike).
    in_ports: Vec<u32>,
    /// Its members, each with its in_port. (An id may also be listed for
    /// an entry that left, with that entry's in_port, until the cell is
    /// settled: an id is checked against the cell before use, and a
    /// listed in_port may be one no member has.)
    members: Vec<(EntryId, u32)>,
    /// Under which key it is found for joining.
    key: u64,
}

/// The cells of one engine.
#[derive(Default)]
pub struct Cells {
    /// Tables that anchor cells; `None` until chosen.
    anchors: Option<TableSet>,
    cells: Vec<Option<CellInfo>>,
    free: Vec<u32>,
    live: usize,
    /// Entries that ever joined or made a cell.
    joined: usize,
    by_key: FxHashMap<u64, Vec<u32>>,
    /// Cells a pass published to whose members' traversals are to follow.
    follow: Vec<u32>,
    /// Cells made since the last [`Cells::sweep`], and cells left by it.
    made: usize,
    kept: usize,
    /// When traced ([`Cells::trace_phases`]): time spent in
    /// [`Cells::update`] by phase, since the engine last took it.
    pub phases: Option<CellPhases>,
}

/// Time [`Cells::update`] spent in each of its phases (a diagnostic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellPhases {
    /// Finding the representative member and its anchor step.
    pub anchor: std::time::Duration,
    /// Re-translating the suffix from the anchor.
    pub translate: std::time::Duration,
    /// Checking that the new suffix stands in for the old one.
    pub check: std::time::Duration,
    /// Making the actions (and any split's).
    pub actions: std::time::Duration,
    /// Publishing them to the cell.
    pub publish: std::time::Duration,
}

/// A phase of [`Cells::update`].
#[derive(Clone, Copy, Debug)]
enum Phase {
    Anchor,
    Translate,
    Check,
    Actions,
    Publish,
}

impl CellPhases {
    fn add(&mut self, phase: Phase, d: std::time::Duration) {
        let slot = match phase {
            Phase::Anchor => &mut self.anchor,
            Phase::Translate => &mut self.translate,
            Phase::Check => &mut self.check,
            Phase::Actions => &mut self.actions,
            Phase::Publish => &mut self.publish,
        };
        *slot += d;
    }

    /// The time of every phase together.
    pub fn total(&self) -> std::time::Duration {
        self.anchor + self.translate + self.check + self.actions + self.publish
    }

    fn merge(&mut self, other: &CellPhases) {
        self.anchor += other.anchor;
        self.translate += other.translate;
        self.check += other.check;
        self.actions += other.actions;
        self.publish += other.publish;
    }
}

/// What [`Cells::update`] did with a change at a cell's level.
pub struct Taken {
    /// Whether the cell's actions changed.
    pub differ: bool,
    /// Members that left the cell with actions of their own (to be
    /// revalidated one by one).
    pub leave: Vec<EntryId>,
    /// A cell made for members that left it together, and those members.
    pub split: Option<u32>,
    pub moved: Vec<EntryId>,
}

/// What a megaflow's anchor would be: the step, its key there, and the
/// suffix from it.
struct Anchor {
    j: usize,
    flow: kairo_flow::FlowKey,
    suffix: Suffix,
}

fn state_key(s: &Suffix, flow: &kairo_flow::FlowKey) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    s.table().hash(&mut h);
    flow.masked(s.same()).w.hash(&mut h);
    s.same().w.hash(&mut h);
    h.finish()
}

/// The tables visited before step `j`, and whether a group was used before it.
fn before(t: &Traversal, j: usize) -> (TableSet, bool) {
    let mut ts = TableSet::default();
    for st in &t.steps[..j] {
        ts.insert(st.table);
    }
    (ts, t.groups.iter().any(|g| (g.step as usize) <= j))
}

impl Cells {
    /// Cells anchored at `anchors` from the start (no calibration).
    pub fn with_anchors(anchors: TableSet) -> Cells {
        Cells { anchors: Some(anchors), ..Cells::new() }
    }

    /// No anchors yet (chosen by [`Cells::calibrate`]).
    pub fn new() -> Cells {
        Cells::default()
    }

    /// Whether [`Cells::update`] times its phases into [`Cells::phases`]
    /// (a diagnostic: five clock reads per cell updated).
    pub fn trace_phases(&mut self, on: bool) {
        if on != self.phases.is_some() {
            self.phases = on.then(CellPhases::default);
        }
    }

    /// Whether the anchors are chosen.
    pub fn calibrated(&self) -> bool {
        self.anchors.is_some()
    }

    /// Cells with members (or not yet swept).
    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn get(&self, tag: u32) -> Option<&CellInfo> {
        self.cells.get((tag as usize).checked_sub(1)?)?.as_ref()
    }
    fn get_mut(&mut self, tag: u32) -> Option<&mut CellInfo> {
        self.cells.get_mut((tag as usize).checked_sub(1)?)?.as_mut()
    }

    /// Whether megaflow `mf` reads its actions from cell `tag`.
    fn is_member(&self, tag: u32, mf: &Ukey) -> bool {
        self.get(tag).is_some_and(|c| mf.reads_from(&c.cell))
    }

    /// Chooses the anchor tables from the entries in `index` (the first
    /// [`CALIBRATE_AT`]), then anchors every entry. For each resumable
    /// visit past table 0 of each entry it translates the rest as a
    /// suffix and counts the distinct states (table, key on what the
    /// suffix examined) per table.
    pub fn calibrate(&mut self, p: &Pipeline, index: &mut Index, po: &FlowMask) {
        let mut per: FxHashMap<u8, (usize, FxHashSet<u64>)> = FxHashMap::default();
        for (_, mf) in index.iter().take(CALIBRATE_AT) {
            let t = mf.traversal();
            for j in 1..t.resumable() {
                let Some(s) = translate_suffix(p, &mf.rep, &t, j, &TableSet::all()) else { continue };
                let flow = t.key_at(&mf.rep, &t.steps[j]);
                let e = per.entry(s.table()).or_default();
                e.0 += 1;
                e.1.insert(state_key(&s, &flow));
            }
        }
        let mut anchors = TableSet::default();
        for (t, (visits, states)) in &per {
            if *visits >= VISITS_MIN && *visits >= SHARE_MIN * states.len() {
                anchors.insert(*t);
            }
        }
        self.anchors = Some(anchors);
        let all: Vec<(EntryId, Arc<Ukey>)> = index.iter().map(|(id, mf)| (id, mf.clone())).collect();
        for (id, mf) in all {
            if self.anchor(p, id, &mf, po) {
                index.set_cell(id, mf.cell_tag());
            }
        }
        if tracing::enabled!(target: "kairo::cells", tracing::Level::DEBUG) {
            let mut v: Vec<_> = per.iter().map(|(t, (n, s))| (*t, *n, s.len())).collect();
            v.sort_unstable();
            let tables: Vec<u8> = v.iter().map(|x| x.0).filter(|&t| anchors.contains(t)).collect();
            tracing::debug!(target: "kairo::cells", ?tables, visits_and_states = ?v, cells = self.live, "cells anchored");
        }
    }

    fn anchor_of(&self, p: &Pipeline, mf: &Ukey, t: &Traversal) -> Option<Anchor> {
        let anchors = self.anchors.as_ref()?;
        let j = (1..t.resumable()).find(|&j| anchors.contains(t.steps[j].table))?;
        let suffix = translate_suffix(p, &mf.rep, t, j, &TableSet::all())?;
        let flow = t.key_at(&mf.rep, &t.steps[j]);
        Some(Anchor { j, flow, suffix })
    }

    /// Anchors entry `id` (translated against `p`, in no cell): it joins
    /// the cell of its state at its anchor, or makes one. Returns whether
    /// it is in a cell (the caller notes it in the index).
    pub fn anchor(&mut self, p: &Pipeline, id: EntryId, mf: &Arc<Ukey>, po: &FlowMask) -> bool {
        if mf.cell_tag() != 0 {
            return false;
        }
        let t = mf.traversal();
        let Some(a) = self.anchor_of(p, mf, &t) else { return false };
        let mut region = *mf.mask;
        region.or(po);
        let (actions, commits) = a.suffix.actions_and_commits(&mf.rep, &a.flow);
        let at = t.steps[a.j];
        if !a.suffix.need().is_subset_of(&region) || a.suffix.start_in(&t) != Some(a.j) || actions != **mf.actions() {
            // Not what translation gave it (it cannot be, but a cell is
            // only ever made from facts checked).
            return false;
        }
        let (tables, groups) = before(&t, a.j);
        let key = state_key(&a.suffix, &a.flow);
        let in_port = mf.rep.get(kairo_flow::Field::InPort) as u32;
        let found = self.by_key.get(&key).and_then(|tags| {
            tags.iter().copied().find(|&tag| {
                self.get(tag).is_some_and(|c| {
                    c.suffix.gave(&at, a.j, &a.flow, &t)
                        && c.suffix.need().is_subset_of(&region)
                        && c.next.is_none()
                        && c.commits == commits
                        && *c.cell.actions() == actions
                })
            })
        });
        if let Some(tag) = found {
            let Some(c) = self.get_mut(tag) else { return false };
            for (r, m) in c.region.w.iter_mut().zip(region.w) {
                *r &= m;
            }
            let here = c.suffix.first_flow();
            for ((g, f), h) in c.agree.w.iter_mut().zip(a.flow.w).zip(here.w) {
                *g &= !(f ^ h);
            }
            c.max_depth = c.max_depth.max(at.depth);
            c.max_j = c.max_j.max(a.j);
            c.before.or(&tables);
            c.groups |= groups;
            if let Err(i) = c.in_ports.binary_search(&in_port) {
                c.in_ports.insert(i, in_port);
            }
            c.members.push((id, in_port));
            mf.join(c.cell.clone(), tag);
            self.joined += 1;
            return true;
        }
        // Cells that share little cost more than they save: no more than
        // one for every two entries.
        if self.live > 1024 && self.live * 2 > self.joined {
            return false;
        }
        let tag = self.make(mf.actions(), |cell| CellInfo {
            cell,
            suffix: a.suffix,
            next: None,
            commits,
            agree: FlowMask { w: [u64::MAX; kairo_flow::WORDS] },
            region,
            max_depth: at.depth,
            max_j: a.j,
            before: tables,
            groups,
            in_ports: vec![in_port],
            members: vec![(id, in_port)],
            key,
        });
        if let Some(c) = self.get(tag) {
            mf.join(c.cell.clone(), tag);
        }
        self.joined += 1;
        true
    }

    /// Takes a change at the level of cell `tag`, if it can: re-translates
    /// the cell's suffix for one member against `p` and, if the new suffix
    /// [`Suffix::stands_in_for`] the cell's, fits every member and needs
    /// nothing outside their regions, publishes the actions it gives (the
    /// same for every member) to the cell. Returns whether the actions
    /// changed, or `None` if the change must be taken member by member
    /// (the tables before the anchor changed for some member, or the new
    /// suffix does not stand in).
    ///
    /// Why that is full revalidation's verdict for every member, found by
    /// the index or not: the tables (and groups) it visited before its
    /// anchor did not change, so translation reaches the anchor as before
    /// and may resume there; the new suffix applies to it (it examined
    /// only bits of the old one's `same`, on which every member agrees
    /// with the old one, as on in_port where compared; the taken visits
    /// are none: every lookup was made anew), so from the anchor on it
    /// gets the new suffix's lookups, outcomes and actions, with its own
    /// commits ([`Suffix`]); those commits are the ones it had
    /// ([`Suffix::stands_in_for`]), the same for every member (same
    /// actions, same commit counts: invariant 3); so every member's actions
    /// are the ones made here for one of them. Its region contains what
    /// the new suffix examined, so it holds from the anchor on, and before
    /// it as it did: the mask holds, the entry is kept with these actions.
    pub fn update(
        &mut self,
        p: &Pipeline,
        tag: u32,
        changed: &Changed,
        index: &Index,
        interner: &mut Interner,
    ) -> Option<Taken> {
        let mut clock = self.phases.map(|_| (std::time::Instant::now(), CellPhases::default()));
        let mut lap = |phase: Phase| {
            if let Some((t, ph)) = clock.as_mut() {
                let now = std::time::Instant::now();
                ph.add(phase, now - *t);
                *t = now;
            }
        };
        let c = self.get(tag)?;
        if c.next.is_some() || changed.tables.meets(&c.before) || (changed.groups && c.groups) {
            return None;
        }
        let rep = c.members.iter().filter_map(|&(id, _)| index.get(id)).find(|mf| mf.reads_from(&c.cell))?;
        let old = rep.traversal();
        let j = c.suffix.start_in(&old)?;
        lap(Phase::Anchor);
        let s = translate_suffix(p, &rep.rep, &old, j, &changed.tables)?;
        lap(Phase::Translate);
        if !s.fits(c.max_depth, c.max_j) || !s.need().is_subset_of(&c.region) {
            return None;
        }
        // Members whose in_port is a port the new suffix outputs to and the
        // old one did not (a pod moved to the port of one of its peers):
        // they alone get other actions; they leave, to be revalidated one
        // by one, if few.
        let mut out = Vec::new();
        let mut in_ports = None;
        if !s.stands_in_for(&c.suffix, &c.agree, &c.in_ports) {
            let (Some(ps), Some(qs)) = (s.compared_ports(), c.suffix.compared_ports()) else { return None };
            // (Sorted, as compared ports are, and searched so: a flood
            // compares in_port with every port.)
            let new: Vec<u32> = kairo_xlate::sorted_minus(ps, qs).collect();
            // (Listed in_ports of former members only add to those that leave.)
            out = c.members.iter().filter(|(_, ip)| new.binary_search(ip).is_ok()).map(|&(id, _)| id).collect();
            if out.len() * 4 > c.members.len() {
                return None;
            }
            let mut left = c.in_ports.clone();
            left.retain(|ip| new.binary_search(ip).is_err());
            if !s.stands_in_for(&c.suffix, &c.agree, &left) {
                return None;
            }
            in_ports = Some(left);
        }
        let flow = old.key_at(&rep.rep, &old.steps[j]);
        let rep_port = rep.rep.get(kairo_flow::Field::InPort) as u32;
        if in_ports.as_ref().is_some_and(|left| left.binary_search(&rep_port).is_err()) {
            // The representative would be one that leaves.
            return None;
        }
        lap(Phase::Check);
        let (actions, commits) = s.actions_and_commits(&rep.rep, &flow);
        // Those that leave, if they are members still and share one
        // in_port: a cell of their own, from a suffix translated for one of
        // them (the same argument, with that one in_port).
        let leavers: Vec<(EntryId, Arc<Ukey>)> = out
            .iter()
            .filter_map(|&id| Some((id, index.get(id).filter(|mf| mf.reads_from(&c.cell))?.clone())))
            .collect();
        let split = self.split_off(p, tag, &leavers, changed, interner);
        for &id in &out {
            if let Some(mf) = index.get(id) {
                if split.as_ref().is_none_or(|(_, moved)| !moved.contains(&id)) {
                    mf.detach();
                }
            }
        }
        lap(Phase::Actions);
        let c = self.get(tag)?;
        let differ = actions != *c.cell.actions();
        if differ {
            c.cell.publish(interner.actions(actions));
        }
        let c = self.get_mut(tag)?;
        if let Some(left) = in_ports {
            // Those that left stay listed until the cell is settled (a
            // walk over every member, off the update).
            c.in_ports = left;
        }
        c.commits = commits;
        c.next = Some(s);
        self.follow.push(tag);
        lap(Phase::Publish);
        if let (Some(total), Some((_, ph))) = (self.phases.as_mut(), clock) {
            total.merge(&ph);
        }
        let (split, moved) = split.map_or((None, Vec::new()), |(t, m)| (Some(t), m));
        out.retain(|id| !moved.contains(id));
        Some(Taken { differ, leave: out, split, moved })
    }

    /// Makes a cell for `leavers`, members of cell `tag` that leave it in
    /// this pass (see [`Cells::update`]), if they share one in_port and a
    /// suffix translated for the first of them after the change stands in
    /// for the cell's for them; moves them to it, with the actions it
    /// gives them. Returns its tag and the entries moved.
    fn split_off(
        &mut self,
        p: &Pipeline,
        tag: u32,
        leavers: &[(EntryId, Arc<Ukey>)],
        changed: &Changed,
        interner: &mut Interner,
    ) -> Option<(u32, Vec<EntryId>)> {
        let c = self.get(tag)?;
        let port = |mf: &Ukey| mf.rep.get(kairo_flow::Field::InPort) as u32;
        let (_, first) = leavers.first()?;
        let q = port(first);
        if leavers.iter().any(|(_, mf)| port(mf) != q) {
            return None;
        }
        let old = first.traversal();
        let j = c.suffix.start_in(&old)?;
        let s = translate_suffix(p, &first.rep, &old, j, &changed.tables)?;
        if !s.fits(c.max_depth, c.max_j)
            || !s.need().is_subset_of(&c.region)
            || !s.stands_in_for(&c.suffix, &c.agree, &[q])
        {
            return None;
        }
        let flow = old.key_at(&first.rep, &old.steps[j]);
        let (actions, commits) = s.actions_and_commits(&first.rep, &flow);
        // What the new cell shares with this one (taken before the new
        // one is made: this one is borrowed from the table it goes in).
        let (suffix, agree, region, max_depth, max_j, before, groups, key) =
            (c.suffix.clone(), c.agree, c.region, c.max_depth, c.max_j, c.before, c.groups, c.key);
        let members = leavers.iter().map(|(id, _)| (*id, q)).collect();
        let tag2 = self.make(interner.actions(actions), |cell| CellInfo {
            cell,
            suffix,
            next: Some(s),
            commits,
            agree,
            region,
            max_depth,
            max_j,
            before,
            groups,
            in_ports: vec![q],
            members,
            key,
        });
        let c2 = self.get(tag2)?;
        for (_, mf) in leavers {
            mf.move_to(c2.cell.clone(), tag2);
        }
        self.follow.push(tag2);
        Some((tag2, leavers.iter().map(|(id, _)| *id).collect()))
    }

    /// Adds a cell holding `actions`, described by `info` given its `Cell`,
    /// under its key; returns its tag (never 0).
    fn make(&mut self, actions: kairo_datapath::Actions, info: impl FnOnce(Arc<Cell>) -> CellInfo) -> u32 {
        let tag = match self.free.pop() {
            Some(tag) => tag,
            None => {
                self.cells.push(None);
                self.cells.len() as u32
            }
        };
        let c = info(Arc::new(Cell::new(actions)));
        self.by_key.entry(c.key).or_default().push(tag);
        self.cells[tag as usize - 1] = Some(c);
        self.live += 1;
        self.made += 1;
        tag
    }

    /// Reads what [`Cells::update`] reads first of cell `tag` (its first
    /// listed member's megaflow, traversal and key version there, the
    /// suffix's visits and key) into `ra`: for a pass to touch every
    /// cell's before updating any, so that their cache misses overlap.
    pub fn touch(&self, p: &Pipeline, tag: u32, index: &Index, ra: &mut ReadAhead) {
        let Some(c) = self.get(tag) else { return };
        ra.take(c.suffix.first_flow().w[0] ^ c.agree.w[0] ^ c.suffix.steps().len() as u64);
        // And the rules its re-translation will visit.
        ra.steps(p, c.suffix.steps());
        if let Some(mf) = c.members.first().and_then(|&(id, _)| index.get(id)) {
            let t = mf.traversal();
            ra.take(mf.rep.w[0] ^ t.steps.last().map_or(0, |s| s.version as u64));
            let at = t.steps.get(t.steps.len().saturating_sub(c.suffix.visits())).map_or(0, |s| s.version);
            ra.take(t.version(at).first().map_or(0, |d| d.1));
        }
    }

    /// Whether a pass left members' traversals to follow.
    pub fn pending(&self) -> bool {
        !self.follow.is_empty()
    }

    /// Gives the members of every cell a pass published to the traversals
    /// that go with the new suffix (their own steps before the anchor, the
    /// suffix's after: [`Suffix::traversal_for`]), so the index moves them
    /// over; the counters they gathered so far go with their old ones to
    /// `moved`. Drops members that left. Returns the members handled.
    pub fn settle(
        &mut self,
        p: &Pipeline,
        index: &mut Index,
        interner: &mut Interner,
        moved: &mut Option<&mut Vec<Moved>>,
    ) -> usize {
        let mut n = 0;
        for tag in std::mem::take(&mut self.follow) {
            let Some(c) = self.cells.get_mut(tag as usize - 1).and_then(|c| c.as_mut()) else { continue };
            let Some(s) = c.next.take() else { continue };
            let mut members = std::mem::take(&mut c.members);
            members.sort_unstable();
            members.dedup();
            // An id listed twice: an entry that left, and the one that
            // took its id and joined; keep the one with the right in_port.
            members.retain(|&(id, ip)| {
                index
                    .get(id)
                    .is_some_and(|mf| mf.reads_from(&c.cell) && mf.rep.get(kairo_flow::Field::InPort) as u32 == ip)
            });
            for &(id, _) in &members {
                let Some(mf) = index.get(id).cloned() else { continue };
                let old = mf.traversal();
                let Some(j) = c.suffix.start_in(&old) else { continue };
                let flow = old.key_at(&mf.rep, &old.steps[j]);
                let t = s.traversal_for(&mf.rep, &old, j, &flow);
                if t != *old {
                    let m = mf.follow_cell(interner.traversal(t));
                    if let Some(v) = moved {
                        v.push(m);
                    }
                    index.replaced(p, id);
                }
                n += 1;
            }
            c.members = members;
            c.suffix = s;
            let key = state_key(&c.suffix, &c.suffix.first_flow());
            if key != c.key {
                let old_key = std::mem::replace(&mut c.key, key);
                if let Some(v) = self.by_key.get_mut(&old_key) {
                    v.retain(|&t| t != tag);
                    if v.is_empty() {
                        self.by_key.remove(&old_key);
                    }
                }
                self.by_key.entry(key).or_default().push(tag);
            }
        }
        n
    }

    /// Whether enough cells were made since the last sweep (as many as it
    /// left, and at least 1024) for the next to be worth its walk
    /// over every member.
    pub fn sweep_due(&self) -> bool {
        self.made >= self.kept.max(SWEEP_MIN)
    }

    /// Frees the cells no live megaflow reads from any more (their
    /// members were evicted, removed or given actions of their own), and
    /// drops the members that left the others. Returns the cells freed.
    pub fn sweep(&mut self, index: &Index) -> usize {
        let mut freed = 0;
        for i in 0..self.cells.len() {
            let Some(c) = self.cells[i].as_mut() else { continue };
            if c.next.is_some() {
                continue;
            }
            let cell = c.cell.clone();
            c.members.retain(|&(id, ip)| {
                index
                    .get(id)
                    .is_some_and(|mf| mf.reads_from(&cell) && mf.rep.get(kairo_flow::Field::InPort) as u32 == ip)
            });
            if !c.members.is_empty() {
                continue;
            }
            let key = c.key;
            if let Some(v) = self.by_key.get_mut(&key) {
                v.retain(|&t| t as usize != i + 1);
                if v.is_empty() {
                    self.by_key.remove(&key);
                }
            }
            self.cells[i] = None;
            self.free.push(i as u32 + 1);
            self.live -= 1;
            freed += 1;
        }
        self.made = 0;
        self.kept = self.live;
        freed
    }

    /// Checks the module's invariant for every cell (a test aid: walks
    /// every member). Cells with a publish pending are skipped.
    pub fn check(&self, index: &Index, po: &FlowMask) -> Result<(), String> {
        for (i, c) in self.cells.iter().enumerate() {
            let Some(c) = c else { continue };
            if c.next.is_some() {
                continue;
            }
            let tag = i as u32 + 1;
            if !c.suffix.need().is_subset_of(&c.region) {
                return Err(format!("cell {tag}: its region lacks what its suffix needs"));
            }
            for &(id, _) in &c.members {
                let Some(mf) = index.get(id) else { continue };
                if !mf.reads_from(&c.cell) {
                    continue;
                }
                let t = mf.traversal();
                let name = kairo_flow::format_megaflow(&mf.rep, &mf.mask);
                if mf.cell_tag() != tag {
                    return Err(format!(
                        "cell {tag}: member {name} reads from it, its record says cell {}",
                        mf.cell_tag()
                    ));
                }
                let Some(j) = c.suffix.start_in(&t).filter(|&j| j < t.resumable()) else {
                    return Err(format!("cell {tag}: member {name} does not end with the suffix"));
                };
                let (tables, groups) = before(&t, j);
                let mut both = tables;
                both.or(&c.before);
                if !(both == c.before) || (groups && !c.groups) {
                    return Err(format!(
                        "cell {tag}: member {name} visited a table or group before the anchor the cell does not list"
                    ));
                }
                let at = t.steps[j];
                let flow = t.key_at(&mf.rep, &at);
                let mut region = *mf.mask;
                region.or(po);
                let fails = [
                    ("the suffix is not what translation gave it", !c.suffix.gave(&at, j, &flow, &t)),
                    ("its flow disagrees on `agree`", !flow.eq_masked(&c.suffix.first_flow(), &c.agree)),
                    ("`agree` lacks the suffix's `same`", !c.suffix.same().is_subset_of(&c.agree)),
                    (
                        "its in_port is not listed",
                        c.in_ports.binary_search(&(mf.rep.get(kairo_flow::Field::InPort) as u32)).is_err()
                            || !c.members.contains(&(id, mf.rep.get(kairo_flow::Field::InPort) as u32)),
                    ),
                    ("it is deeper or later", at.depth > c.max_depth || j > c.max_j),
                    ("its region lacks the cell's", !c.region.is_subset_of(&region)),
                ];
                if let Some((why, _)) = fails.iter().find(|f| f.1) {
                    return Err(format!("cell {tag}: member {name}: {why}"));
                }
                let (actions, commits) = c.suffix.actions_and_commits(&mf.rep, &flow);
                if actions != **mf.actions() || commits != c.commits {
                    return Err(format!("cell {tag}: member {name} has other actions than the suffix gives it"));
                }
            }
        }
        Ok(())
    }

    /// Whether megaflow `mf` (entry `id`) reading from a cell tagged `tag`
    /// is a listed member of that cell (a test aid).
    pub fn lists(&self, tag: u32, id: EntryId, mf: &Ukey) -> bool {
        self.is_member(tag, mf)
            && self.get(tag).is_some_and(|c| {
                c.members.iter().any(|&(m, ip)| m == id && ip == mf.rep.get(kairo_flow::Field::InPort) as u32)
            })
    }

    /// Approximate bytes the cells take.
    pub fn approx_bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<Option<CellInfo>>()
            + self
                .cells
                .iter()
                .flatten()
                .map(|c| c.members.capacity() * 8 + c.in_ports.capacity() * 4 + 2048)
                .sum::<usize>()
    }
}
