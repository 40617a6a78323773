//! Cache maintenance: keeping the megaflow cache equal to what the rule
//! tables say after every update (`docs/design.md` section 4).
//!
//! - [`flowmod`]: updates as ovs-ofctl knows them, and the [`Delta`]s they cause.
//! - [`revalidate`]: the per-entry step both engines share, and the oracle [`verify`].
//! - [`index`]: the incremental engine's dependency index.
//! - [`prefetch`]: read-ahead of cold data an update is about to read.
//! - [`cells`]: shared action cells, megaflows in one state from an anchor
//!   table on, which the incremental engine updates once per cell.
//! - Two engines behind one trait: [`FullRevalidator`] (Open vSwitch's way:
//!   every entry, O(cache)) and [`Incremental`] (only the entries an update can
//!   affect, found through the index; entries that reach the change in the
//!   same state share one translation of what follows, [`revalidate::Memo`],
//!   and their own re-translation, which gives them their traversals, waits
//!   for [`Engine::housekeep`]).
//!
//! Invariant (the oracle): after any sequence of updates, the incrementally
//! maintained cache equals what full revalidation of the same entries gives —
//! same entries, same masks, same actions.

pub mod cells;
pub mod flowmod;
pub mod index;
mod intern;
pub mod prefetch;
pub mod published;
pub mod revalidate;
pub mod shared;
pub mod ukey;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use flowmod::{apply as apply_flow_mod, parse_command, Delta, FlowMod, ModError};
use intern::Interner;
pub use published::Published;
pub use revalidate::{verify, Mismatch, Verdict};
pub use ukey::{Moved, Ukey};

use kairo_classifier::RuleId;
use kairo_datapath::Megaflow;
use kairo_flow::FlowMask;
use kairo_xlate::{Outcome, Pipeline};
use rustc_hash::FxHashMap;

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Entries re-translated.
    pub examined: usize,
    /// Index slots looked at to find them (incremental engine; the work
    /// beyond the affected entries themselves).
    pub probed: usize,
    pub kept: usize,
    pub updated: usize,
    pub evicted: usize,
    /// Time-to-update: from the change being accepted to the last affected
    /// entry fixed (pipeline change plus maintenance).
    #[serde(serialize_with = "ser_us")]
    pub ttu: Duration,
    /// Of the time-to-update: the change made to the pipeline's tables,
    /// before any maintenance.
    #[serde(serialize_with = "ser_us")]
    pub pipeline: Duration,
    /// Of the maintenance: finding the entries to revalidate (the index's
    /// probes; nothing for full revalidation, which takes them all).
    #[serde(serialize_with = "ser_us")]
    pub find: Duration,
    /// Of the maintenance: re-translating them and judging each (the verdicts).
    #[serde(serialize_with = "ser_us")]
    pub translate: Duration,
    /// Of the maintenance: applying the verdicts (new actions and traversal
    /// written into each megaflow, evictions, re-indexing): the part no
    /// faster translation removes.
    #[serde(serialize_with = "ser_us")]
    pub apply: Duration,
    /// Of the examined entries: those whose actions came from a suffix
    /// translated once for several of them (their traversals follow at
    /// housekeeping).
    pub shared: usize,
    /// Shared action cells the pass took the change for at their level
    /// ([`cells::Cells::update`]): one translation and one publish each
    /// for all their members (the examined entries among them count in
    /// `shared`).
    pub cells: usize,
}

fn ser_us<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "examined {}, kept {}, updated {}, evicted {}, time-to-update {:.1} us",
            self.examined,
            self.kept,
            self.updated,
            self.evicted,
            self.ttu.as_secs_f64() * 1e6
        )
    }
}

/// A cache maintenance engine.
pub trait Engine: Send {
    fn name(&self) -> &'static str;
    /// A megaflow entered the cache (translated against `p`).
    fn add(&mut self, p: &Pipeline, mf: Arc<Ukey>);
    /// A megaflow left the cache for another reason (idle expiry): its
    /// record, if the engine had one.
    fn remove(&mut self, mf: &Megaflow) -> Option<Arc<Ukey>>;
    /// Brings the cache up to date with `p` after `deltas`; evicted entries
    /// are killed; re-translated ones leave their old traversal and its
    /// counters in `moved` when it is given (else they are dropped at once,
    /// so an update over most of the cache never holds two traversals per entry).
    fn maintain(&mut self, p: &Pipeline, deltas: &[Delta], moved: Option<&mut Vec<Moved>>) -> Report;
    /// The live entries.
    fn entries(&self) -> Vec<Arc<Ukey>>;
    /// Appends to `out` the live entries at positions `from..from + n` of
    /// the engine's own order and returns the position after them (0 once
    /// past the end): a walk in bounded slices (idle expiry off the
    /// forwarding thread). Entries that leave meanwhile may make a walk
    /// skip or repeat a few. This default copies every entry.
    fn entries_from(&self, from: usize, n: usize, out: &mut Vec<Arc<Ukey>>) -> usize {
        let all = self.entries();
        out.extend(all.iter().skip(from).take(n).cloned());
        if from + n >= all.len() {
            0
        } else {
            from + n
        }
    }
    /// The entries whose translation learned flows or ran a `fin_timeout`
    /// (what the one-second refresh reads). This default reads every
    /// entry; an engine with an index reads only those.
    fn refreshing(&self) -> Vec<Arc<Ukey>> {
        self.entries()
            .into_iter()
            .filter(|uk| {
                let t = uk.traversal();
                t.learned.is_some() || t.fin.is_some()
            })
            .collect()
    }
    /// When a packet last used a cached traversal through `rule` (the
    /// datapath's clock; 0 if none is cached). This default reads every
    /// entry; an engine with an index of its entries by rule reads only the
    /// rule's users.
    fn last_used_by(&self, rule: RuleId) -> u64 {
        self.entries()
            .iter()
            .filter(|uk| uk.traversal().steps.iter().any(|s| s.outcome == Outcome::Rule(rule)))
            .map(|uk| uk.last_used())
            .max()
            .unwrap_or(0)
    }
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Approximate bytes of bookkeeping beyond the megaflows themselves.
    fn index_bytes(&self) -> usize;
    /// Finishes bookkeeping that earlier passes deferred past their
    /// time-to-update (it fixes nothing in the cache: the incremental
    /// engine takes the registrations of evicted entries out of its index
    /// and moves updated entries over to their new traversals here). Returns how
    /// many entries it handled. Whatever a caller leaves undone, the next
    /// pass does first, inside its own time-to-update. The incremental
    /// engine also gives entries whose actions came from a shared suffix
    /// the traversal that goes with them (re-translating them: the
    /// counters they gather from then on belong to it; anything else it
    /// finds to change goes to `moved` as a pass's changes do).
    fn housekeep(&mut self, _p: &Pipeline, _moved: Option<&mut Vec<Moved>>) -> usize {
        0
    }
    /// Revalidates large affected sets on `n` threads (at least one;
    /// [`DEFAULT_THREADS`] unless set).
    fn set_threads(&mut self, _n: usize) {}
    /// Checks the engine's internal invariants (a test aid: walks everything).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Adds the time since `since` to `phase`; returns now (the next phase's start).
fn lap(phase: &mut Duration, since: Instant) -> Instant {
    let now = Instant::now();
    *phase += now - since;
    now
}

/// What applying a verdict did to an entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Done {
    Kept,
    Updated,
    Evicted,
    /// Actions set (or kept) from the pass's shared suffix of this number;
    /// the traversal is to follow.
    Shared(usize),
}

/// Applies a verdict to a megaflow and counts it (examined, and what was
/// done) in `rep`. Re-translated actions and traversals are hash-consed like
/// those of upcalls (an update that sends a million entries to the same few
/// rules makes a few new traversals, not a million).
fn act(mf: &Ukey, v: Verdict, interner: &mut Interner, moved: &mut Option<&mut Vec<Moved>>, rep: &mut Report) -> Done {
    rep.examined += 1;
    match v {
        Verdict::Keep => {
            rep.kept += 1;
            Done::Kept
        }
        Verdict::Update(r) => {
            let r = *r;
            let old = mf.set_shared(interner.actions(r.actions), interner.traversal(r.traversal));
            if let Some(m) = moved {
                m.push(old);
            }
            rep.updated += 1;
            Done::Updated
        }
        Verdict::Evict => {
            mf.kill();
            if let Some(m) = moved {
                m.push(mf.leaving());
            }
            rep.evicted += 1;
            Done::Evicted
        }
        Verdict::Shared { actions, suffix } => {
            let actions = interner.actions(actions);
            if *actions == *mf.actions() {
                // Its traversal is to follow: out of any shared cell first.
                mf.detach();
                rep.kept += 1;
            } else {
                let old = mf.set_actions_first(actions);
                if let Some(m) = moved {
                    m.push(old);
                }
                rep.updated += 1;
            }
            Done::Shared(suffix)
        }
    }
}

/// Full revalidation, as Open vSwitch does it: after any change, every entry.
pub struct FullRevalidator {
    /// The records, in the order they came (a pass walks them in it, as
    /// the cache filled: the baseline's memory access stays sequential).
    entries: Vec<Arc<Ukey>>,
    /// Where each record is in `entries`, by its megaflow's address (a
    /// removal by the datapath finds its record in O(1)).
    at: FxHashMap<usize, usize>,
    po: FlowMask,
    /// Threads a pass may revalidate on (as Open vSwitch's revalidator threads).
    pub threads: usize,
    interner: Interner,
}

impl Default for FullRevalidator {
    fn default() -> Self {
        FullRevalidator {
            entries: Vec::new(),
            at: FxHashMap::default(),
            po: revalidate::pipeline_only_mask(),
            threads: DEFAULT_THREADS,
            interner: Interner::default(),
        }
    }
}

/// Entries revalidated together (their verdicts are held until applied):
/// many when threads share the work, few on one thread, where the verdicts
/// of a small chunk are still in cache when applied.
fn chunk_for(threads: usize) -> usize {
    if threads > 1 {
        4096
    } else {
        32
    }
}

/// Threads a maintenance pass may use unless told otherwise
/// ([`Engine::set_threads`]): one. More threads re-translate a large
/// affected set faster (a 75K-entry Antrea update: 1.04 s on one thread,
/// 0.82 s on two, on 2 cores), but what they allocate and the maintenance
/// thread frees stays with the allocator (about 0.5 KB more per
/// re-translated entry, measured), which at 10M entries costs more than it
/// saves.
pub const DEFAULT_THREADS: usize = 1;

impl Engine for FullRevalidator {
    fn name(&self) -> &'static str {
        "full"
    }
    fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }
    fn add(&mut self, _p: &Pipeline, mf: Arc<Ukey>) {
        self.at.insert(ukey::addr(&mf), self.entries.len());
        self.entries.push(mf);
    }
    fn remove(&mut self, mf: &Megaflow) -> Option<Arc<Ukey>> {
        let i = self.at.remove(&ukey::addr(mf))?;
        let uk = self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.at.insert(ukey::addr(moved), i);
        }
        Some(uk)
    }
    fn maintain(&mut self, p: &Pipeline, _deltas: &[Delta], mut moved: Option<&mut Vec<Moved>>) -> Report {
        let start = Instant::now();
        let mut rep = Report::default();
        for chunk in self.entries.chunks(chunk_for(self.threads)) {
            let t = Instant::now();
            let verdicts = revalidate::revalidate_all(p, chunk, &self.po, self.threads);
            let t = lap(&mut rep.translate, t);
            for (mf, v) in chunk.iter().zip(verdicts) {
                act(mf, v, &mut self.interner, &mut moved, &mut rep);
            }
            lap(&mut rep.apply, t);
        }
        if rep.evicted > 0 {
            self.entries.retain(|m| !m.is_dead());
            self.at = self.entries.iter().enumerate().map(|(i, m)| (ukey::addr(m), i)).collect();
        }
        rep.ttu = start.elapsed();
        rep
    }
    fn entries(&self) -> Vec<Arc<Ukey>> {
        self.entries.clone()
    }
    fn entries_from(&self, from: usize, n: usize, out: &mut Vec<Arc<Ukey>>) -> usize {
        let end = from.saturating_add(n).min(self.entries.len());
        out.extend(self.entries.get(from..end).unwrap_or_default().iter().cloned());
        if end >= self.entries.len() {
            0
        } else {
            end
        }
    }
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn index_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Arc<Ukey>>()
            + self.at.capacity() * (std::mem::size_of::<(usize, usize)>() + 1)
    }
}

/// Deferred index bookkeeping a pass may leave for [`Engine::housekeep`]
/// (entries): 64K, or an eighth of the cache if more. Beyond it the pass
/// does it itself, so that what is deferred (each entry's old traversal,
/// held alive) never adds more than an eighth to the cache's memory: an
/// update over millions of entries does not hold all their old traversals
/// until it ends.
fn pending_max(entries: usize) -> usize {
    (entries / 8).max(1 << 16)
}

/// A cell's affected members in a pass: listed, or left in the index as
/// the users of one rule filed under the cell (stable while the pass runs:
/// the index refiles entries only when it collects).
enum Members {
    Listed(Vec<index::EntryId>),
    OfRule(kairo_classifier::RuleId),
}

impl Members {
    fn len(&self, index: &index::Index, tag: u32) -> usize {
        match self {
            Members::Listed(v) => v.len(),
            Members::OfRule(r) => index.users_of_rule_in_cell(*r, tag).map_or(0, |s| s.len()),
        }
    }
    fn contains(&self, index: &index::Index, tag: u32, id: index::EntryId) -> bool {
        match self {
            Members::Listed(v) => v.contains(&id),
            Members::OfRule(r) => index.users_of_rule_in_cell(*r, tag).is_some_and(|s| s.contains(&id)),
        }
    }
    fn extend_into(&self, index: &index::Index, tag: u32, out: &mut Vec<index::EntryId>) {
        match self {
            Members::Listed(v) => out.extend(v),
            Members::OfRule(r) => out.extend(index.users_of_rule_in_cell(*r, tag).into_iter().flatten()),
        }
    }
}

/// Incremental maintenance: the cache as a materialised view of the rules.
pub struct Incremental {
    index: index::Index,
    po: FlowMask,
    /// Threads a pass may revalidate on (affected sets of [`revalidate::PARALLEL_MIN`] or more).
    pub threads: usize,
    interner: Interner,
    /// Entries whose actions a pass took from a shared suffix (and its
    /// number), whose megaflows (and registrations) still have the
    /// traversal from before it; what changed since that was recorded; and
    /// that pass's suffixes.
    follow: Vec<(index::EntryId, usize)>,
    follow_since: revalidate::Changed,
    memo: Option<revalidate::Memo>,
    cells: cells::Cells,
    /// Entries a pass gave actions or a traversal of their own (out of
    /// their cells, if any), to anchor again at housekeeping.
    reanchor: Vec<index::EntryId>,
    /// When `kairo::cells` is traced at debug level: the last pass's time
    /// grouping its entries by cell and in each phase of the cells'
    /// updates, and the entries it took one by one; emitted at
    /// housekeeping, off the time-to-update.
    cells_trace: Option<(Duration, cells::CellPhases, usize)>,
}

impl Default for Incremental {
    fn default() -> Self {
        Incremental {
            index: index::Index::new(),
            po: revalidate::pipeline_only_mask(),
            threads: DEFAULT_THREADS,
            interner: Interner::default(),
            follow: Vec::new(),
            follow_since: revalidate::Changed::default(),
            memo: None,
            cells: cells::Cells::new(),
            reanchor: Vec::new(),
            cells_trace: None,
        }
    }
}

impl Incremental {
    /// An engine whose shared action cells are anchored at `anchors` from
    /// the start (instead of at tables chosen from the cache once it has
    /// [`cells::CALIBRATE_AT`] entries).
    pub fn with_anchors(anchors: kairo_xlate::TableSet) -> Incremental {
        Incremental { cells: cells::Cells::with_anchors(anchors), ..Incremental::default() }
    }

    /// The entries an update can affect (`docs/design.md` section 4.2), and how many
    /// index slots were looked at to find them (the cost beyond them).
    pub fn affected(&self, p: &Pipeline, deltas: &[Delta]) -> (Vec<index::EntryId>, usize) {
        let mut out = Vec::new();
        let mut probed = 0;
        let joint = joint_conjunctions(p, deltas);
        for d in deltas {
            if let Some((t, id, m, priority)) = conj_change(p, d) {
                // In a table with conjunctive matches a removed or changed
                // rule may have decided without answering (a hard match or
                // a clause): the entries whose region it overlaps above
                // their floor are taken too, unless the conjunction's
                // structure says which (a clause or an answer removed).
                out.extend(self.index.users_of_rule(id));
                if let Delta::RuleRemoved { rule, .. } = d {
                    match removed_conj(p, t, rule) {
                        Some(Removed::Answer) => continue,
                        Some(Removed::Clause) => {
                            out.extend(self.index.users_of_clause(id));
                            continue;
                        }
                        None => {}
                    }
                }
                probed += self.index.overlapping(p, t, &m, priority, true, &mut out);
                continue;
            }
            match d {
                Delta::RuleRemoved { id, .. } | Delta::RuleModified { id, .. } => {
                    out.extend(self.index.users_of_rule(*id))
                }
                // A fast-failover group watching a changed group or port
                // may choose another bucket: its users are taken too.
                Delta::GroupChanged { group, hashed_alike } => {
                    for g in p.liveness_dependents(&[*group], &[]) {
                        if g == *group && *hashed_alike {
                            // Its buckets changed, not how it is hashed: the
                            // passes that froze at it for the hash stand.
                            out.extend(self.index.users_choosing(g));
                        } else {
                            out.extend(self.index.users_of_group(g));
                        }
                    }
                }
                Delta::PortsChanged { rules, groups } => {
                    for (_, id) in rules {
                        out.extend(self.index.users_of_rule(*id));
                    }
                    for g in groups {
                        out.extend(self.index.users_of_group(*g));
                    }
                }
                Delta::PortChanged { port } => {
                    for g in p.liveness_dependents(&[], &[*port]) {
                        out.extend(self.index.users_of_group(g));
                    }
                }
                // NORMAL's lookups of the MACs (in any VLAN: a superset).
                Delta::MacsChanged { macs } => {
                    for (_, mac) in macs {
                        out.extend(self.index.users_of_mac(*mac));
                    }
                }
                Delta::MissChanged { table } => out.extend(self.index.users_of_miss(*table)),
                Delta::RuleAdded { table, id } => {
                    if let Some(r) = p.rule(*table, *id) {
                        match self.conj_affected(p, *table, r, &joint, &mut out) {
                            Some(n) => probed += n,
                            None => probed += self.index.overlapping(p, *table, &r.m, r.priority, false, &mut out),
                        }
                    }
                }
            }
        }
        for ((t, key), (priority, rules)) in &joint {
            match self.conj_entries(p, *t, *priority, *key, None, &kairo_flow::Match::default(), &mut out) {
                Some(n) => probed += n,
                None => {
                    for r in rules {
                        probed += self.index.overlapping(p, *t, &r.m, r.priority, false, &mut out);
                    }
                }
            }
        }
        // A learn that wrote whether its limit let its flow in read how many
        // flows of its table have its cookie, and whether its flow is there.
        let limits = self.index.has_limits();
        if limits {
            for d in deltas {
                match d {
                    // Any cookie: whether the learn's flow is there is its
                    // match and priority (and a modify's old cookie is not
                    // known here).
                    Delta::RuleAdded { table, .. }
                    | Delta::RuleRemoved { table, .. }
                    | Delta::RuleModified { table, .. } => self.index.users_of_limit(*table, &mut out),
                    _ => {}
                }
            }
        }
        // One rule, group or miss: its users are a set already. Otherwise
        // (several deltas, or an entry found twice where it reached the
        // table twice) they may repeat.
        let unique = !limits
            && matches!(deltas, [Delta::RuleRemoved { .. } | Delta::RuleModified { .. } | Delta::MissChanged { .. }])
            && conj_change(p, &deltas[0]).is_none();
        if !unique {
            out.sort_unstable();
            out.dedup();
        }
        (out, probed)
    }

    /// The entries a conjunctive flow added to table `t` can change, found
    /// from the conjunction's structure (`docs/design.md` 4.8), or `None`
    /// where that does not apply (then every entry the rule overlaps is
    /// taken):
    ///
    /// - a clause flow changes an entry only where one of its conjunctions
    ///   completes inside the entry's region with it, so the region
    ///   overlaps it and a clause flow of every other dimension; and it
    ///   hides from conj_id lookups an ordinary rule with its match that it
    ///   outranks (that rule's users are taken);
    /// - a rule matching conj_id=X changes only entries where X completes
    ///   (overlapping a clause flow of each dimension).
    ///
    /// Not for a table where a flow holds two clauses of one conjunction.
    /// Conjunctions in `joint` are left to one query for all of the
    /// update's flows ([`joint_conjunctions`]). (Removals: [`removed_conj`].)
    fn conj_affected(
        &self,
        p: &Pipeline,
        t: u8,
        r: &kairo_ofproto::Rule,
        joint: &Joint<'_>,
        out: &mut Vec<index::EntryId>,
    ) -> Option<usize> {
        let table = p.table(t)?;
        let answer = kairo_xlate::answers(r);
        let clause = r.inst.is_clause();
        if answer.is_some() == clause {
            return None;
        }
        if !table.single_clauses() {
            return None;
        }
        let mut found: Vec<index::EntryId> = Vec::new();
        let mut probed = 0;
        let alone = |key: &ConjKey| !joint.contains_key(&(t, *key));
        if let Some(id) = answer {
            for key in table.conjunctions_with_id(id).into_iter().filter(alone) {
                probed += self.conj_entries(p, t, r.priority, key, None, &r.m, &mut found)?;
            }
        } else {
            for (cid, k, n) in r.inst.conjunctions() {
                let key = (r.priority, cid, n);
                if alone(&key) {
                    probed += self.conj_entries(p, t, r.priority, key, Some((k, r)), &r.m, &mut found)?;
                }
            }
            for o in outranked(table, r) {
                found.extend(self.index.users_of_rule(o));
            }
        }
        out.extend(found);
        Some(probed)
    }

    /// The entries that reach table `t` at a visit whose floor a rule of
    /// `priority` added passes with a region overlapping `also` and a
    /// clause flow of every dimension of conjunction `key` (`own`: this
    /// flow stands for its dimension).
    #[allow(clippy::too_many_arguments)]
    fn conj_entries(
        &self,
        p: &Pipeline,
        t: u8,
        priority: u16,
        key: ConjKey,
        own: Option<(u8, &kairo_ofproto::Rule)>,
        also: &kairo_flow::Match,
        out: &mut Vec<index::EntryId>,
    ) -> Option<usize> {
        let table = p.table(t)?;
        let mut dims: Vec<Vec<&kairo_ofproto::Rule>> = vec![Vec::new(); usize::from(key.2)];
        for (rid, k) in table.clause_members(key.0, key.1, key.2)? {
            if own.is_none_or(|(ok, _)| ok != k) {
                dims[usize::from(k - 1)].extend(p.rule(t, rid).map(|a| &**a));
            }
        }
        // Whether a dimension's flows are those of the table (not its own
        // flow in place of them).
        let mut in_table = vec![true; usize::from(key.2)];
        if let Some((k, r)) = own {
            dims[usize::from(k - 1)] = vec![r];
            in_table[usize::from(k - 1)] = false;
        }
        if dims.iter().any(|d| d.is_empty()) {
            return Some(0); // a dimension without a clause flow: it cannot complete
        }
        let prio = |id: RuleId| p.rule(t, id).map(|o| o.priority);
        let at = |st: &kairo_xlate::Step| st.outcome.floor(prio).admits_new(priority);
        // The first plan (in order) that finds at most START_FROM[0], else
        // the first that finds at most START_FROM[1], gives the candidates
        // (the first plan, whatever it finds, if none does: where a
        // policy's addresses take in most of the table, its ports may not;
        // and where they take in few, its ports may take in none); where
        // they are many, each later plan that comes in under a few times
        // as many narrows them (every plan's candidates hold every entry
        // sought): walking the index costs far less per entry than
        // checking one, even the entry's floor and port noted per id.
        // The third field's probes go first of all, before the other
        // plans are made: its index is small (ports), and a policy's
        // ports often take in no entry at all.
        let fields = self.index.fields(t)?;
        let rule = (priority, false);
        let mut probed = 0;
        let mut start = None;
        let thirds = third_probes(&dims, fields.2);
        for probe in &thirds {
            let (found, n) = self.index.candidates_within(t, probe, rule, START_FROM[0]);
            probed += n;
            if let Some(c) = found {
                start = Some((usize::MAX, c));
                break;
            }
        }
        let plans = if start.is_none() { conj_plans(&dims, (fields.0, fields.1), thirds) } else { Vec::new() };
        'start: for limit in START_FROM.into_iter().filter(|_| start.is_none()) {
            for (i, plan) in plans.iter().enumerate() {
                if limit == START_FROM[0] && matches!(plan, index::Probe::Third(_)) {
                    continue; // asked at this limit just above: each found more
                }
                let (found, n) = self.index.candidates_within(t, plan, rule, limit);
                probed += n;
                if let Some(c) = found {
                    start = Some((i, c));
                    break 'start;
                }
            }
        }
        let (first, mut cands) = match start {
            Some(s) => s,
            None => {
                let (found, n) = self.index.candidates_within(t, &plans[0], rule, usize::MAX);
                probed += n;
                (0, found.unwrap_or_default())
            }
        };
        for plan in plans.iter().skip(first.saturating_add(1)) {
            if cands.len() < NARROW_FROM {
                break;
            }
            let (found, n) = self.index.candidates_within(t, plan, rule, cands.len() * 4);
            probed += n;
            if let Some(c) = found {
                cands = sorted_intersection(&cands, &c);
            }
        }
        self.index.may_admit(t, &mut cands, priority, false);
        // (And those whose one slot on the third field is outside every
        // flow of a dimension that names it: a port, in Antrea.)
        if let (_, _, Some(f)) = fields {
            let on_third = |ms: &&Vec<&kairo_ofproto::Rule>| ms.len() <= THIRD_FLOWS && all_constrain(ms, f);
            for ms in dims.iter().filter(on_third) {
                let matches: Vec<&kairo_flow::Match> = ms.iter().map(|r| &r.m).collect();
                self.index.may_meet_third(t, &mut cands, &matches);
            }
        }
        self.index.touch_at(p, t, &cands);
        // A dimension of many flows in the table is met through the
        // classifier (the region usually fixes the fields they match: a
        // probe per subtable), not flow by flow.
        let met = |id: index::EntryId, d: usize, ms: &[&kairo_ofproto::Rule]| {
            if in_table[d] && ms.len() > DIM_FLOWS {
                self.index.meets_with(id, t, at, |kt, region| table.clause_overlaps(key, d as u8 + 1, kt, region))
            } else {
                ms.iter().any(|m| self.index.meets(id, t, &m.m, at))
            }
        };
        for id in cands {
            let meets_all = self.index.meets(id, t, also, at) && dims.iter().enumerate().all(|(d, ms)| met(id, d, ms));
            if meets_all {
                out.push(id);
            }
        }
        Some(probed)
    }

    /// The entries an update can affect ([`Incremental::affected`]), by
    /// the shared action cell each is in (tag 0: none); and how many index
    /// slots were looked at. The users of one removed or modified rule
    /// come grouped from the index, and are left there ([`Members::OfRule`]:
    /// a cell that takes the change needs only their number); others are
    /// grouped here, from each entry's tag.
    fn affected_by_cell(&self, p: &Pipeline, deltas: &[Delta]) -> (Vec<(u32, Members)>, usize) {
        if let [d @ (Delta::RuleRemoved { id, .. } | Delta::RuleModified { id, .. })] = deltas {
            // A learn's limit reads more than the rule's users
            // ([`Incremental::affected`] takes them too).
            if conj_change(p, d).is_some() || self.index.has_limits() {
                return self.listed_by_cell(p, deltas);
            }
            let groups = self.index.users_of_rule_by_cell(*id).map(|(tag, _)| (tag, Members::OfRule(*id)));
            return (groups.collect(), 0);
        }
        self.listed_by_cell(p, deltas)
    }

    /// [`Incremental::affected`], grouped by cell here.
    fn listed_by_cell(&self, p: &Pipeline, deltas: &[Delta]) -> (Vec<(u32, Members)>, usize) {
        let (affected, probed) = self.affected(p, deltas);
        if self.cells.is_empty() {
            return (vec![(0, Members::Listed(affected))], probed);
        }
        // The cells' tags first, in a loop of independent reads (an
        // update's entries are scattered over the index: their cache
        // misses overlap), then grouped.
        let tags: Vec<u32> = affected.iter().map(|&id| self.index.cell_of(id)).collect();
        let mut groups: Vec<(u32, Vec<index::EntryId>)> = Vec::new();
        let mut group_of: rustc_hash::FxHashMap<u32, usize> = Default::default();
        for (id, tag) in affected.into_iter().zip(tags) {
            let g = *group_of.entry(tag).or_insert_with(|| {
                groups.push((tag, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(id);
        }
        (groups.into_iter().map(|(tag, ids)| (tag, Members::Listed(ids))).collect(), probed)
    }

    /// Takes the change for the cells of the affected entries (grouped by
    /// cell, [`Incremental::affected_by_cell`]) at the cells' level where
    /// it can ([`cells::Cells::update`]), counting those entries in `rep`;
    /// returns the others, in order. The ids of a cell's affected members
    /// are read out of the index only if they are to be taken one by one.
    fn by_cells(
        &mut self,
        p: &Pipeline,
        groups: Vec<(u32, Members)>,
        changed: &revalidate::Changed,
        rep: &mut Report,
    ) -> Vec<index::EntryId> {
        let index = &self.index;
        let mut rest = Vec::new();
        let groups: Vec<(u32, Members)> = groups
            .into_iter()
            .filter(|(tag, ids)| {
                // One affected member: taking the change at the cell's
                // level costs what revalidating it does, and when the cell
                // cannot take it (an evicted entry's cell cannot), both.
                let apart = *tag == 0 || ids.len(index, *tag) == 1;
                if apart {
                    ids.extend_into(index, *tag, &mut rest);
                }
                !apart
            })
            .collect();
        // Each cell's update starts with a chain of cold reads (its
        // representative's entry, megaflow, traversal; the cell's suffix):
        // read them for every cell first, so that the chains overlap.
        let mut ra = prefetch::ReadAhead::default();
        for (tag, _) in &groups {
            self.cells.touch(p, *tag, index, &mut ra);
        }
        drop(ra);
        // Cells entries move to, applied once the groups (read from the
        // index) are done with.
        let mut retag: Vec<(index::EntryId, u32)> = Vec::new();
        for (tag, ids) in groups {
            match self.cells.update(p, tag, changed, index, &mut self.interner) {
                Some(cells::Taken { differ, leave, split, moved }) => {
                    // Members that left the cell with actions of their own:
                    // one by one, found or not; those that left together for
                    // a cell of their own are taken with it.
                    let n = ids.len(index, tag) - leave.iter().filter(|&&id| ids.contains(index, tag, id)).count();
                    retag.extend(leave.iter().map(|&id| (id, 0)));
                    if let Some(t) = split {
                        retag.extend(moved.iter().map(|&id| (id, t)));
                        rep.cells += 1;
                    }
                    self.reanchor.extend(&leave);
                    rest.extend(leave);
                    rep.examined += n;
                    rep.shared += n;
                    if differ {
                        rep.updated += n;
                    } else {
                        rep.kept += n;
                    }
                    rep.cells += 1;
                }
                None => ids.extend_into(index, tag, &mut rest),
            }
        }
        for (id, t) in retag {
            self.index.set_cell(id, t);
        }
        rest.sort_unstable();
        rest.dedup();
        rest
    }

    /// Everything earlier passes left for housekeeping: gives the entries
    /// whose actions came from a shared suffix their traversals, then
    /// brings the index up to date. Returns how many entries that was.
    ///
    /// Right after the pass (`now` is `None`: the pipeline is the pass's)
    /// the suffix builds each traversal ([`xlate::Suffix::traversal_for`]:
    /// the entry's own steps before the change, the suffix's visits after
    /// it, on its own keys). At the start of a later pass, whose change is
    /// already in the pipeline (`now`), they are re-translated from their
    /// old traversals with everything that changed since, and whatever
    /// that finds is applied.
    fn settle(
        &mut self,
        p: &Pipeline,
        moved: &mut Option<&mut Vec<Moved>>,
        now: Option<&revalidate::Changed>,
    ) -> usize {
        let mut done = self.cells.settle(p, &mut self.index, &mut self.interner, moved);
        let mut since = self.follow_since;
        if let Some(c) = now {
            since.or(c);
        }
        let follow = std::mem::take(&mut self.follow);
        let memo = self.memo.take().filter(|_| now.is_none());
        let mut rep = Report::default();
        for &(id, suffix) in &follow {
            let Some(mf) = self.index.get(id).cloned() else { continue };
            let old = mf.traversal();
            if let Some(t) = memo.as_ref().and_then(|m| m.traversal(suffix, &mf, &old, &self.po, &since)) {
                mf.follow_with(self.interner.traversal(t));
                self.index.replaced(p, id);
                continue;
            }
            match revalidate::revalidate_since(p, &mf, &self.po, &since) {
                // The actions it already has: the traversal follows them,
                // with the counters gathered since.
                Verdict::Update(r) if r.actions == **mf.actions() => {
                    mf.follow_with(self.interner.traversal(r.traversal));
                    self.index.replaced(p, id);
                }
                v => match act(&mf, v, &mut self.interner, moved, &mut rep) {
                    Done::Evicted => {
                        self.index.remove(id);
                    }
                    Done::Updated => {
                        self.index.set_cell(id, mf.cell_tag());
                        self.index.replaced(p, id)
                    }
                    Done::Kept | Done::Shared(_) => self.index.set_cell(id, mf.cell_tag()),
                },
            }
        }
        self.follow_since = revalidate::Changed::default();
        done += follow.len() + self.index.collect();
        // With nothing left to follow: every entry's traversal is its
        // megaflow's. Entries that left their cells join one again (after
        // an update over much of the cache, only so many: the rest keep
        // their own actions).
        let reanchor = std::mem::take(&mut self.reanchor);
        if now.is_none() && self.cells.calibrated() && reanchor.len() <= pending_max(self.index.len()) {
            for id in reanchor {
                let Some(mf) = self.index.get(id).cloned() else { continue };
                if self.cells.anchor(p, id, &mf, &self.po) {
                    self.index.set_cell(id, mf.cell_tag());
                }
            }
        }
        if now.is_none() && self.cells.sweep_due() {
            self.cells.sweep(&self.index);
        }
        if now.is_none() && !self.cells.calibrated() && self.index.len() >= cells::CALIBRATE_AT {
            self.cells.calibrate(p, &mut self.index, &self.po);
        }
        if now.is_none() {
            // Entries that joined or left cells above: their registrations
            // filed by their new cells here, not in the next update.
            done += self.index.collect();
        }
        done
    }
}

impl Engine for Incremental {
    fn name(&self) -> &'static str {
        "incremental"
    }
    fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }
    fn add(&mut self, p: &Pipeline, mf: Arc<Ukey>) {
        // Anchored before it is registered: its registrations are filed
        // by its cell at once.
        let (cells, po) = (&mut self.cells, &self.po);
        self.index.insert_with(p, mf.clone(), |id| {
            if cells.calibrated() {
                cells.anchor(p, id, &mf, po);
            }
        });
    }
    fn remove(&mut self, mf: &Megaflow) -> Option<Arc<Ukey>> {
        // Off the update path (idle expiry): unregistered at once, since no
        // update may follow to do it.
        let id = self.index.id_of(mf)?;
        self.index.remove_now(id)
    }
    fn maintain(&mut self, p: &Pipeline, deltas: &[Delta], mut moved: Option<&mut Vec<Moved>>) -> Report {
        self.cells.trace_phases(tracing::enabled!(target: "kairo::cells", tracing::Level::DEBUG));
        let start = Instant::now();
        let mut rep = Report::default();
        // What an earlier pass left for housekeeping and none did since
        // (traversals to follow shared suffixes, registrations of evicted
        // and updated entries): first, counted as applying, inside this TTU,
        // with this update's change (already in the pipeline) counted in.
        let mut t = start;
        let changed = changed_by(deltas);
        if self.index.pending() > 0 || !self.follow.is_empty() || self.cells.pending() {
            self.settle(p, &mut moved, Some(&changed));
            t = lap(&mut rep.apply, t);
        }
        let (groups, probed) = self.affected_by_cell(p, deltas);
        rep.probed = probed;
        t = lap(&mut rep.find, t);
        // Members of shared action cells: the change is taken once per
        // cell where it can be; the rest one by one.
        let affected = self.by_cells(p, groups, &changed, &mut rep);
        if let Some(ph) = self.cells.phases.take() {
            if rep.cells > 0 {
                let grouping = t.elapsed().saturating_sub(ph.total());
                self.cells_trace = Some((grouping, ph, affected.len()));
            }
        }
        t = lap(&mut rep.translate, t);
        let mut memo = revalidate::Memo::for_pass(affected.len());
        for chunk in affected.chunks(chunk_for(self.threads)) {
            let (ids, mfs): (Vec<index::EntryId>, Vec<Arc<Ukey>>) =
                chunk.iter().filter_map(|&id| Some((id, self.index.get(id)?.clone()))).unzip();
            let verdicts = revalidate::revalidate_all_since(p, &mfs, &self.po, &changed, self.threads, &mut memo);
            t = lap(&mut rep.translate, t);
            for ((id, mf), v) in ids.iter().zip(&mfs).zip(verdicts) {
                let done = act(mf, v, &mut self.interner, &mut moved, &mut rep);
                if done != Done::Kept && done != Done::Evicted {
                    // Out of any shared cell now (its own actions, or a traversal to follow).
                    self.index.set_cell(*id, 0);
                    self.reanchor.push(*id);
                }
                match done {
                    Done::Evicted => {
                        self.index.remove(*id);
                    }
                    Done::Updated => self.index.replaced(p, *id),
                    Done::Shared(suffix) => self.follow.push((*id, suffix)),
                    Done::Kept => {}
                }
            }
            // What is deferred holds megaflows and old traversals alive: past
            // a bound (an update over much of the cache) it is done here.
            if self.index.pending() > pending_max(self.index.len()) {
                self.index.collect();
            }
            t = lap(&mut rep.apply, t);
        }
        if !self.follow.is_empty() {
            self.follow_since = changed;
        }
        rep.shared += memo.shared;
        // Kept for housekeeping to build the traversals that follow.
        self.memo = (!self.follow.is_empty()).then_some(memo);
        rep.ttu = start.elapsed();
        rep
    }
    fn entries(&self) -> Vec<Arc<Ukey>> {
        self.index.entries().cloned().collect()
    }
    fn entries_from(&self, from: usize, n: usize, out: &mut Vec<Arc<Ukey>>) -> usize {
        self.index.entries_from(from, n, out)
    }
    fn refreshing(&self) -> Vec<Arc<Ukey>> {
        self.index.refreshing().filter_map(|e| self.index.get(e)).cloned().collect()
    }
    fn last_used_by(&self, rule: RuleId) -> u64 {
        self.index.users_of_rule(rule).filter_map(|e| self.index.get(e)).map(|uk| uk.last_used()).max().unwrap_or(0)
    }
    fn len(&self) -> usize {
        self.index.len()
    }
    fn index_bytes(&self) -> usize {
        self.index.approx_bytes() + self.cells.approx_bytes()
    }
    fn housekeep(&mut self, p: &Pipeline, mut moved: Option<&mut Vec<Moved>>) -> usize {
        if let Some((grouping, ph, apart)) = self.cells_trace.take() {
            tracing::debug!(
                target: "kairo::cells",
                ?grouping,
                anchor = ?ph.anchor,
                translate = ?ph.translate,
                check = ?ph.check,
                actions = ?ph.actions,
                publish = ?ph.publish,
                one_by_one = apart,
                "last update's cells by phase"
            );
        }
        let n = self.settle(p, &mut moved, None);
        warm_allocator();
        n
    }
    fn check(&self) -> Result<(), String> {
        self.index.check()?;
        for (id, mf) in self.index.iter() {
            let tag = mf.cell_tag();
            if tag != 0 && !self.cells.lists(tag, id, mf) {
                return Err(format!("entry {id} reads from cell {tag}, which does not list it"));
            }
        }
        self.cells.check(&self.index, &self.po)
    }
}

/// Do TCP flags have FIN or RST (what `fin_timeout` waits for)?
pub fn fin_or_rst(tcp_flags: u16) -> bool {
    const FIN: u16 = 0x001;
    const RST: u16 = 0x004;
    tcp_flags & (FIN | RST) != 0
}

/// Leaves free room in the allocator for the small objects an update
/// allocates (suffixes, action lists, the lists of affected entries), so
/// that the next update takes it instead of a fresh page. Housekeeping
/// allocates much that it keeps (entries' traversals): it fills the
/// allocator's pages of those sizes, and the next update's first
/// allocation of each size then needed a page never touched, whose fault
/// zeroes 2 MiB where the heap is on transparent huge pages (0.1-0.2 ms,
/// in about half the pod moves of a 1M-entry Antrea run). Allocating and
/// freeing a few of each size here takes that fault off the update path.
fn warm_allocator() {
    const SIZES: [usize; 16] = [16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096];
    let held: Vec<Vec<u8>> = SIZES.iter().flat_map(|&n| (0..32).map(move |_| Vec::with_capacity(n))).collect();
    std::hint::black_box(&held);
}

/// The tables whose rules or miss behaviour the deltas changed, and whether a group did.
fn changed_by(deltas: &[Delta]) -> revalidate::Changed {
    let mut c = revalidate::Changed::default();
    for d in deltas {
        match d {
            Delta::RuleAdded { table, .. }
            | Delta::RuleRemoved { table, .. }
            | Delta::RuleModified { table, .. }
            | Delta::MissChanged { table } => c.tables.insert(*table),
            Delta::GroupChanged { .. } | Delta::PortChanged { .. } => c.groups = true,
            Delta::PortsChanged { rules, groups } => {
                for (t, _) in rules {
                    c.tables.insert(*t);
                }
                c.groups |= !groups.is_empty();
            }
            // No table changed: a re-translation replays every lookup and
            // runs NORMAL again (no step after it is resumable), reading
            // the new MAC table.
            Delta::MacsChanged { .. } => {}
        }
    }
    c
}

/// Which engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Full,
    Incremental,
}

impl EngineKind {
    pub fn build(self) -> Box<dyn Engine> {
        match self {
            EngineKind::Full => Box::new(FullRevalidator::default()),
            EngineKind::Incremental => Box::new(Incremental::default()),
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(EngineKind::Full),
            "incremental" | "incr" => Ok(EngineKind::Incremental),
            _ => Err(format!("unknown engine `{s}`: expected full or incremental")),
        }
    }
}

/// The rule tables and the engine that keeps the cache true to them.
pub struct Control {
    /// The rule tables, published to forwarding threads (which translate
    /// against them while this state is held: see [`published`]); the
    /// version is bumped by every accepted update.
    published: Arc<Published>,
    pub engine: Box<dyn Engine>,
    /// Re-translated megaflows' old traversals and the counters gathered
    /// under them, for per-rule counters; kept only when `keep_moved` is set
    /// (whoever sets it drains this).
    pub moved: Vec<Moved>,
    pub keep_moved: bool,
    /// Every accepted update's deltas, in order, kept only when
    /// `keep_deltas` is set (whoever sets it drains this): how a switch
    /// follows rules' lives (install times, timeouts, removal notices).
    pub deltas: Vec<Delta>,
    pub keep_deltas: bool,
    /// Frozen states in use at the last retirement ([`Control::retire_frozen`]).
    frozen_in_use: usize,
    /// The switch's clock, in seconds, for the MAC table's ages ([`Control::tick`]).
    pub clock: u64,
    /// When (on that clock) megaflows last refreshed the MACs they carry.
    refreshed: u64,
    /// The switch's clock in milliseconds (the datapath's, as megaflows
    /// count their last use), as of the last [`Control::tick`].
    pub now_ms: u64,
    /// When (on that clock) megaflows last refreshed the flows they learn.
    learn_refreshed_ms: u64,
    /// Learned flows learning them again found already there, each with
    /// the latest use that did (milliseconds), kept only when
    /// `keep_deltas` is set (whoever sets it drains this): a learned
    /// flow's idle timeout counts from it. One entry per rule at most.
    pub touched: rustc_hash::FxHashMap<(u8, kairo_classifier::RuleId), u64>,
    /// When (milliseconds, the datapath's clock) the packet was seen whose
    /// lesson each learned MAC's port, and each learned flow's content,
    /// is: a lesson from an older packet (a megaflow's refresh from
    /// traffic sent before a host moved) does not undo it. Entries whose
    /// MAC or rule is gone are pruned as the maps grow ([`prune_taught`]).
    taught_macs: rustc_hash::FxHashMap<(u16, u64), u64>,
    taught_macs_kept: usize,
    taught_flows: rustc_hash::FxHashMap<(u8, kairo_classifier::RuleId), u64>,
    taught_flows_kept: usize,
    /// Shared copies of installed megaflows' traversals.
    interner: Interner,
}

impl Control {
    pub fn new(pipeline: Pipeline, kind: EngineKind) -> Control {
        Control {
            published: Published::new(pipeline),
            engine: kind.build(),
            moved: Vec::new(),
            keep_moved: false,
            deltas: Vec::new(),
            keep_deltas: false,
            frozen_in_use: 0,
            clock: 0,
            refreshed: 0,
            now_ms: 0,
            learn_refreshed_ms: 0,
            touched: rustc_hash::FxHashMap::default(),
            taught_macs: rustc_hash::FxHashMap::default(),
            taught_macs_kept: 0,
            taught_flows: rustc_hash::FxHashMap::default(),
            taught_flows_kept: 0,
            interner: Interner::default(),
        }
    }

    /// The rule tables (a read lock on the published pipeline; the holder
    /// of the control state is its only writer, so this never waits then).
    pub fn pipeline(&self) -> std::sync::RwLockReadGuard<'_, Pipeline> {
        self.published.read()
    }

    /// The rule tables to change outside [`Control::apply`] (ports, say):
    /// the version is bumped, so that what forwarding threads translated
    /// before is refused or revalidated as it is registered. Do not hold a
    /// [`Control::pipeline`] guard meanwhile.
    pub fn pipeline_mut(&mut self) -> std::sync::RwLockWriteGuard<'_, Pipeline> {
        let w = self.published.write();
        self.published.bump(&w);
        w
    }

    /// Bumped by every accepted update (upcalls compare it, see [`shared`]).
    pub fn version(&self) -> u64 {
        self.published.version()
    }

    /// The published pipeline, for forwarding threads' handles.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// Registers a megaflow installed from an upcall answered at `version`,
    /// bringing it up to date first if the rules changed since (or dropping
    /// it, if they no longer cache it).
    pub fn installed(&mut self, mf: &Arc<Megaflow>, traversal: kairo_xlate::Traversal, version: u64) {
        if mf.is_dead() {
            return;
        }
        let mf = Arc::new(Ukey::new(mf.clone(), self.interner.traversal(traversal)));
        if self.version() != version {
            // The rules changed since this translation: bring it up to date first.
            let v = revalidate::revalidate(&self.published.read(), &mf, &revalidate::pipeline_only_mask());
            match v {
                // Only a pass's memo shares; `revalidate` translates whole.
                Verdict::Keep | Verdict::Shared { .. } => {}
                Verdict::Update(r) => {
                    let m = mf.set_actions(r.actions, r.traversal);
                    if self.keep_moved {
                        self.moved.push(m);
                    }
                }
                Verdict::Evict => {
                    mf.kill();
                    if self.keep_moved {
                        self.moved.push(mf.leaving());
                    }
                    return;
                }
            }
        }
        self.add(mf);
    }

    /// Registers the megaflows forwarding threads installed while this
    /// state was held ([`Published::offer`]), revalidating those translated
    /// before an update. Every update does this once it has bumped the
    /// version, before its maintenance.
    pub fn register_waiting(&mut self) {
        for w in self.published.take_waiting() {
            self.installed(&w.mf, w.traversal, w.version);
        }
    }

    /// Everything forwarding threads left while this state was held: the
    /// megaflows they installed, then what their packets taught (MACs,
    /// learned flows, cut timeouts: updates of their own).
    pub fn settle(&mut self) {
        self.register_waiting();
        let lessons = self.published.take_lessons();
        self.teach(lessons);
    }

    /// What one upcall's packet taught: MACs NORMAL saw, flows its learn
    /// actions made, timeouts its FIN or RST cut.
    pub fn teach(&mut self, l: published::Lessons) {
        if !l.macs.is_empty() {
            self.learn_at(l.macs);
        }
        if !l.flows.is_empty() {
            self.learn_flows(l.flows);
        }
        if !l.cuts.is_empty() {
            self.cut_timeouts(l.cuts);
        }
    }

    /// Puts what NORMAL saw on packets in the MAC table at the current
    /// [`Control::clock`]: an update when a MAC is new or moved (the
    /// entries that sent to it are maintained), else only a refresh of its
    /// age. Returns the update's report, if it was one.
    pub fn learn(&mut self, learned: &[kairo_xlate::Learn]) -> Option<Report> {
        let now = self.now_ms;
        self.learn_at(learned.iter().map(|&l| (l, now)).collect())
    }

    /// [`Control::learn`], each MAC with the time (milliseconds, the
    /// datapath's clock) of the packet that showed it. Of several lessons
    /// for one MAC the latest wins, and one older than the packet that put
    /// the MAC where it is now changes nothing: a megaflow's refresh from
    /// traffic a host sent before it moved does not send it back.
    pub fn learn_at(&mut self, mut learned: Vec<(kairo_xlate::Learn, u64)>) -> Option<Report> {
        learned.sort_unstable_by_key(|&(l, at)| (std::cmp::Reverse(at), l.vlan, l.mac));
        let mut seen = rustc_hash::FxHashSet::default();
        learned.retain(|&(l, at)| {
            seen.insert((l.vlan, l.mac)) && self.taught_macs.get(&(l.vlan, l.mac)).is_none_or(|&t| t <= at)
        });
        for &(l, at) in &learned {
            let t = self.taught_macs.entry((l.vlan, l.mac)).or_default();
            *t = (*t).max(at);
        }
        let learned: Vec<kairo_xlate::Learn> = learned.into_iter().map(|(l, _)| l).collect();
        let rep = self.learn_now(&learned);
        let p = self.published.read();
        prune_taught(&mut self.taught_macs, &mut self.taught_macs_kept, |&(vlan, mac)| {
            p.macs().lookup(vlan, mac).is_some()
        });
        rep
    }

    /// Puts MACs in the table at the current [`Control::clock`].
    fn learn_now(&mut self, learned: &[kairo_xlate::Learn]) -> Option<Report> {
        if learned.is_empty() {
            return None;
        }
        let news = {
            let p = self.published.read();
            let macs = p.macs();
            learned.iter().any(|l| !kairo_xlate::mac::is_multicast(l.mac) && macs.lookup(l.vlan, l.mac) != Some(l.port))
        };
        if !news {
            let now = self.clock;
            // Only ages change, never what a lookup finds: no new version.
            let mut p = self.published.write();
            for l in learned {
                p.macs_mut().learn(l.vlan, l.mac, l.port, now);
            }
            return None;
        }
        self.apply(&FlowMod::Learn { learned: learned.to_vec(), now: self.clock }).ok()
    }

    /// Puts the flows `learn` actions made in the tables, each with the
    /// time (milliseconds) of the packet that made it: an update for the
    /// flows that are new or changed (a learn's limit may refuse a new
    /// one), a refresh of the idle timeout for the ones already there as
    /// they are ([`Control::touched`]). Returns the update's report, if
    /// there was one.
    ///
    /// Of several lessons for one flow the latest wins, and one older than
    /// the packet whose lesson the flow holds now changes nothing (as
    /// [`Control::learn_at`] for MACs).
    pub fn learn_flows(&mut self, learned: impl IntoIterator<Item = (kairo_xlate::Learned, u64)>) -> Option<Report> {
        let mut learned: Vec<(kairo_xlate::Learned, u64)> = learned.into_iter().collect();
        learned.sort_by_key(|&(_, used)| std::cmp::Reverse(used));
        let mut news = Vec::new();
        {
            let p = self.published.read();
            let mut seen = rustc_hash::FxHashSet::default();
            for (l, used) in learned {
                let r = &l.rule;
                let Some(c) = p.table(r.table).and_then(|t| t.cls.find_exact(&r.m, r.priority)) else {
                    // (Not there yet: put in oldest first below, so the latest stays.)
                    news.push((l, used, None));
                    continue;
                };
                let key = (r.table, c.id);
                if !seen.insert(key) || self.taught_flows.get(&key).is_some_and(|&t| t > used) {
                    continue;
                }
                if *c.payload != *r {
                    // (Replaced in place: the rule keeps its id.)
                    news.push((l, used, Some(key)));
                    continue;
                }
                let t = self.taught_flows.entry(key).or_default();
                *t = (*t).max(used);
                if self.keep_deltas {
                    let at = self.touched.entry(key).or_default();
                    *at = (*at).max(used);
                }
            }
        }
        if news.is_empty() {
            return None;
        }
        news.reverse();
        let rep = self.apply(&FlowMod::LearnFlows(news.iter().map(|(l, _, _)| l.clone()).collect())).ok();
        let p = self.published.read();
        for (l, used, key) in &news {
            let r = &l.rule;
            let key = key.or_else(|| p.table(r.table)?.cls.find_exact(&r.m, r.priority).map(|c| (r.table, c.id)));
            if let Some(key) = key {
                let t = self.taught_flows.entry(key).or_default();
                *t = (*t).max(*used);
            }
        }
        prune_taught(&mut self.taught_flows, &mut self.taught_flows_kept, |&(t, id)| p.rule(t, id).is_some());
        rep
    }

    /// Advances the clock to `now_ms` (milliseconds on the clock megaflows
    /// count their last use by) and forgets the MACs that aged out by then
    /// (an update, if any did). A MAC whose traffic runs on megaflows alone
    /// would age out, and its senders' megaflows would flood it for good
    /// (no upcall learns it again), so every quarter of the aging time the
    /// megaflows NORMAL made that were used since refresh their source MACs
    /// first, as Open vSwitch's revalidators do. Every second, too, the
    /// megaflows that learn flows or cut timeouts refresh them
    /// (`refresh_learned`). Returns the report of the MAC
    /// update, if there was one.
    pub fn tick(&mut self, now_ms: u64) -> Option<Report> {
        let now = now_ms / 1000;
        self.clock = self.clock.max(now);
        self.now_ms = self.now_ms.max(now_ms);
        self.refresh_learned();
        let aging = {
            let p = self.published.read();
            if p.macs().is_empty() {
                return None;
            }
            p.macs().aging()
        };
        let period = (aging / 4).max(1);
        if now >= self.refreshed + period {
            let since_ms = self.refreshed * 1000;
            self.refreshed = now;
            let p = self.published.read();
            let learned: Vec<(kairo_xlate::Learn, u64)> = self
                .engine
                .entries()
                .iter()
                .filter(|uk| !uk.is_dead() && uk.last_used() > since_ms && uk.traversal().normal.is_some())
                .filter_map(|uk| kairo_xlate::learned_from(&p, &uk.rep).map(|l| (l, uk.last_used())))
                .collect();
            drop(p);
            self.learn_at(learned);
        }
        let oldest = self.published.read().macs().oldest_use()?;
        (oldest.saturating_add(aging) <= self.clock).then(|| self.apply(&FlowMod::ExpireMacs(self.clock)).ok())?
    }

    /// Every second, the megaflows used since that learn flows learn them
    /// again (Open vSwitch's revalidators re-run a megaflow's learn actions
    /// on its statistics): the flows' idle timeouts count from the
    /// megaflows' last use, and a learned flow that timed out while its
    /// megaflow was still hit comes back; and those that run a
    /// `fin_timeout` and saw FIN or RST cut their rules' timeouts. Reads
    /// only the entries that learn or cut (the whole cache, for an engine
    /// without an index), and only while some rule has such an action.
    fn refresh_learned(&mut self) {
        const PERIOD_MS: u64 = 1000;
        if !self.published.read().has_learners() || self.now_ms < self.learn_refreshed_ms + PERIOD_MS {
            return;
        }
        let since = std::mem::replace(&mut self.learn_refreshed_ms, self.now_ms);
        // (Megaflows read their learned flows from their traversals, which
        // housekeeping brings up to date after an update.)
        self.housekeep();
        let mut learned: Vec<(kairo_xlate::Learned, u64)> = Vec::new();
        let mut cuts = Vec::new();
        for uk in self.engine.refreshing().iter().filter(|uk| !uk.is_dead() && uk.last_used() > since) {
            let (used, t) = (uk.last_used(), uk.traversal());
            learned.extend(t.learned.iter().flatten().map(|l| (l.clone(), used)));
            if fin_or_rst(uk.tcp_flags()) {
                cuts.extend(t.fin.iter().flatten().copied());
            }
        }
        self.learn_flows(learned);
        self.cut_timeouts(cuts);
    }

    /// `fin_timeout`s whose packets carried FIN or RST cut their rules'
    /// timeouts (an update, for the rules whose timeouts change).
    pub fn cut_timeouts(&mut self, mut cuts: Vec<kairo_xlate::FinTimeout>) -> Option<Report> {
        let p = self.published.read();
        cuts.retain(|c| {
            p.rule(c.table, c.rule).is_some_and(|r| {
                let cuts = |max: u16, t: u16| max != 0 && (t == 0 || t > max);
                cuts(c.idle, r.idle_timeout) || cuts(c.hard, r.hard_timeout)
            })
        });
        drop(p);
        if cuts.is_empty() {
            return None;
        }
        cuts.sort_unstable_by_key(|c| (c.table, c.rule, c.idle, c.hard));
        cuts.dedup();
        self.apply(&FlowMod::CutTimeouts(cuts)).ok()
    }

    /// Applies an update and maintains the cache; the report's TTU covers both.
    /// On error nothing changed.
    pub fn apply(&mut self, fm: &FlowMod) -> Result<Report, ModError> {
        let start = Instant::now();
        let deltas = {
            let mut w = self.published.write();
            let deltas = flowmod::apply(&mut w, fm)?;
            self.published.bump(&w);
            deltas
        };
        let pipeline = start.elapsed();
        // What forwarding threads installed before the new version (offered
        // since are refused) is brought up to date here; what they install
        // from now on is translated by the new rules.
        self.register_waiting();
        let moved = self.keep_moved.then_some(&mut self.moved);
        let mut rep = self.engine.maintain(&self.published.read(), &deltas, moved);
        rep.ttu = start.elapsed();
        rep.pipeline = pipeline;
        if self.keep_deltas {
            self.deltas.extend(deltas);
        }
        Ok(rep)
    }

    /// The engine's deferred bookkeeping ([`Engine::housekeep`]), timed: for
    /// callers to run after an update is acknowledged, between updates.
    pub fn housekeep(&mut self) -> (usize, Duration) {
        let start = Instant::now();
        let moved = self.keep_moved.then_some(&mut self.moved);
        let n = self.engine.housekeep(&self.published.read(), moved);
        self.retire_frozen();
        (n, start.elapsed())
    }

    /// Retires the frozen states no cached megaflow uses (resumes from or
    /// recirculates to), once the table holds twice as many as were in use
    /// at the last retirement, plus 1024: each walk of the cache is paid
    /// for by as many new states as the cache uses, and the table stays
    /// within twice what is in use. A retired id is not given again until
    /// the ids wrap (4G states later), and a packet still carrying one is
    /// dropped without a megaflow. Returns how many were retired.
    pub fn retire_frozen(&mut self) -> usize {
        let recircs = self.published.read().recircs().clone();
        let held = recircs.len();
        if held < 2 * self.frozen_in_use + 1024 {
            return 0;
        }
        let mut used = rustc_hash::FxHashSet::default();
        for uk in self.engine.entries().iter().filter(|uk| !uk.is_dead()) {
            used.insert(uk.rep.get(kairo_flow::Field::RecircId) as u32);
            // (Those inside check_pkt_len lists too.)
            used.extend(kairo_xlate::DpAction::recirc_ids(&uk.actions()));
        }
        // The states of megaflows forwarding threads installed meanwhile are
        // in use too. Under the write lock no translation runs, and the new
        // version refuses the megaflows of those that ran before (they may
        // name a state retired here).
        let w = self.published.write();
        self.published.bump(&w);
        let waiting = self.published.take_waiting();
        for m in &waiting {
            used.insert(m.mf.rep.get(kairo_flow::Field::RecircId) as u32);
            used.extend(kairo_xlate::DpAction::recirc_ids(&m.mf.actions()));
        }
        recircs.retain(|id| used.contains(&id));
        drop(w);
        self.frozen_in_use = recircs.len();
        for m in waiting {
            self.installed(&m.mf, m.traversal, m.version);
        }
        held - self.frozen_in_use
    }

    /// Distinct traversals installed megaflows share (a report).
    pub fn installed_traversals(&self) -> usize {
        self.interner.traversals()
    }

    /// Registers a megaflow translated against the current pipeline.
    pub fn add(&mut self, mf: Arc<Ukey>) {
        self.engine.add(&self.published.read(), mf);
    }

    /// The oracle over this engine's cache.
    pub fn verify(&self) -> Vec<Mismatch> {
        verify(&self.published.read(), self.engine.entries().iter())
    }
}

#[cfg(test)]
mod tests;

/// Candidates fewer than this are checked as they are, not narrowed by
/// another plan ([`Incremental::conj_entries`]). (In this crate's tests,
/// whose caches are small, every plan narrows, so that the engine
/// proptest checks each.)
const NARROW_FROM: usize = if cfg!(test) { 1 } else { 2048 };

/// A plan that finds more candidates than the first of these does not
/// give a conjunction's candidates while a later one finds at most that,
/// nor, more than the second, while any plan finds at most that
/// ([`Incremental::conj_entries`]). (In this crate's tests, small, so
/// that the engine proptest takes each way.)
const START_FROM: [usize; 2] = if cfg!(test) { [0, 2] } else { [64, 4 * NARROW_FROM] };

/// The ids in both sorted lists.
fn sorted_intersection(a: &[index::EntryId], b: &[index::EntryId]) -> Vec<index::EntryId> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// A dimension of more clause flows than this is checked against an entry
/// through the classifier ([`Incremental::conj_entries`]).
const DIM_FLOWS: usize = if cfg!(test) { 1 } else { 16 };

/// A dimension of at most this many flows on the third field prefilters a
/// conjunction's candidates by their slot there ([`Incremental::conj_entries`]).
const THIRD_FLOWS: usize = 64;

/// At most this many queries of pairs of clause flows ([`conj_plans`]).
const PAIR_QUERIES: usize = 256;

/// The ways to find every entry where a conjunction with clause flows
/// `dims` (by dimension) can complete (with more), best first, for a
/// table indexed on (outer, inner) fields and a third whose probes
/// ([`third_probes`]) are `thirds`; the first is always a walk. An entry where it completes has packets that match a flow of
/// every dimension at once, so where two dimensions' flows narrow the
/// outer and inner fields and their pairs are few, the pairs that share a
/// packet, each narrowed on both fields; then each dimension the walk
/// narrows (on its outer field first), its flows, fewest first (a
/// dimension of fewest flows if nothing narrows). Second, the entries by
/// floor, and each dimension whose flows all narrow the third field. (A
/// clause flow naming a /16 alone walks every entry of the /16 that
/// reached the table; where they all do, what tells the entries apart is
/// often the floor, most decided above the flow's priority, and the
/// ports.)
fn conj_plans(
    dims: &[Vec<&kairo_ofproto::Rule>],
    (outer, inner): (kairo_flow::Field, Option<kairo_flow::Field>),
    thirds: Vec<index::Probe>,
) -> Vec<index::Probe> {
    let narrows = all_constrain;
    let matches = |ms: &[&kairo_ofproto::Rule]| ms.iter().map(|r| r.m).collect::<Vec<_>>();
    let mut plans = Vec::new();
    if let Some(inner) = inner {
        let mut pair: Option<(usize, usize)> = None;
        let mut size = PAIR_QUERIES + 1;
        for (a, da) in dims.iter().enumerate() {
            for (b, db) in dims.iter().enumerate() {
                let n = da.len().saturating_mul(db.len());
                if a != b && n < size && narrows(da, outer) && narrows(db, inner) {
                    (pair, size) = (Some((a, b)), n);
                }
            }
        }
        if let Some((a, b)) = pair {
            let queries = dims[a].iter().flat_map(|x| dims[b].iter().filter_map(|y| x.m.intersect(&y.m))).collect();
            plans.push(index::Probe::Walk(queries));
        }
    }
    let rank = |ms: &[&kairo_ofproto::Rule]| match (narrows(ms, outer), inner.is_some_and(|f| narrows(ms, f))) {
        (true, _) => 0,
        (false, true) => 1,
        (false, false) => 2,
    };
    let mut walked: Vec<&Vec<&kairo_ofproto::Rule>> = dims.iter().collect();
    walked.sort_by_key(|ms| (rank(ms), ms.len()));
    let narrowed = walked.iter().filter(|ms| rank(ms) < 2).count().max(1);
    plans.extend(walked.into_iter().take(narrowed).map(|ms| index::Probe::Walk(matches(ms))));
    let mut second = thirds;
    second.insert(0, index::Probe::Floor);
    plans.splice(1..1, second);
    plans
}

/// Whether every flow of a conjunction's dimension matches some bits of
/// field `f` (so an entry's slot on `f` can rule the dimension out).
fn all_constrain(ms: &[&kairo_ofproto::Rule], f: kairo_flow::Field) -> bool {
    ms.iter().all(|m| m.m.mask().get(f) != 0)
}

/// The probes of a conjunction's candidates on the table index's third
/// field (`third`): one per dimension all of whose flows constrain it.
fn third_probes(dims: &[Vec<&kairo_ofproto::Rule>], third: Option<kairo_flow::Field>) -> Vec<index::Probe> {
    let Some(f) = third else { return Vec::new() };
    dims.iter()
        .filter(|ms| all_constrain(ms, f))
        .map(|ms| index::Probe::Third(ms.iter().map(|r| r.m).collect()))
        .collect()
}

/// What a conjunctive flow removed from table `t` was, where that says
/// which entries it can change (`docs/design.md` 4.8): an answer (a rule
/// matching conj_id=X, never a hard match) changes only those it answered,
/// its users; a clause flow, only those at one of whose visits it completed
/// a conjunction ([`index::Index::users_of_clause`]: removing it cannot
/// complete one). `None` otherwise, and in a table where a flow holds two
/// clauses of one conjunction, or where the clause outranked an ordinary
/// rule with its match (which its removal shows to conj_id lookups).
fn removed_conj(p: &Pipeline, t: u8, r: &kairo_ofproto::Rule) -> Option<Removed> {
    let table = p.table(t).filter(|tb| tb.single_clauses())?;
    match (kairo_xlate::answers(r).is_some(), r.inst.is_clause()) {
        (true, false) => Some(Removed::Answer),
        (false, true) if outranked(table, r).next().is_none() => Some(Removed::Clause),
        _ => None,
    }
}

/// A conjunction of a table: the priority of its clause flows, its id
/// and number of clauses.
type ConjKey = (u16, u32, u8);

/// Conjunctions (by table) whose entries an update's added flows can
/// change, to be found by one query each: the priority it is made at and
/// the flows it stands for.
type Joint<'a> = std::collections::BTreeMap<(u8, ConjKey), (u16, Vec<&'a kairo_ofproto::Rule>)>;

/// The conjunctions to which an update added clause flows that one query
/// finds every changed entry of (the entries where the conjunction
/// completes, found as for an added answer, at the highest priority any
/// of them asks): those whose answer it also added (that query is made
/// anyway), and those whose every clause flow it added (a new policy),
/// two at least. (Each entry where a flow added completes the
/// conjunction is one where the conjunction completes, with all the
/// table's flows; asked at a higher priority, a floor lets in more.)
fn joint_conjunctions<'a>(p: &'a Pipeline, deltas: &[Delta]) -> Joint<'a> {
    let mut added: Joint<'a> = Joint::new();
    let mut answered: Joint<'a> = Joint::new();
    for d in deltas {
        let Delta::RuleAdded { table: t, id } = d else { continue };
        let (Some(table), Some(r)) = (p.table(*t).filter(|tb| tb.single_clauses()), p.rule(*t, *id)) else {
            continue;
        };
        match (kairo_xlate::answers(r), r.inst.is_clause()) {
            (Some(cid), false) => {
                for key in table.conjunctions_with_id(cid) {
                    let e = answered.entry((*t, key)).or_insert((r.priority, Vec::new()));
                    e.0 = e.0.max(r.priority);
                    e.1.push(r);
                }
            }
            (None, true) => {
                for (cid, _, n) in r.inst.conjunctions() {
                    let e = added.entry((*t, (r.priority, cid, n))).or_insert((r.priority, Vec::new()));
                    e.1.push(r);
                }
            }
            _ => {}
        }
    }
    added.retain(|(t, key), (priority, rules)| {
        if let Some((q, answers)) = answered.get(&(*t, *key)) {
            *priority = (*priority).max(*q);
            rules.extend(answers);
            return true;
        }
        let members = p.table(*t).and_then(|tb| tb.clause_members(key.0, key.1, key.2)).map_or(0, |m| m.count());
        rules.len() >= 2 && members == rules.len()
    });
    added
}

/// See [`removed_conj`].
enum Removed {
    Answer,
    Clause,
}

/// The ordinary rules of `table` with `r`'s match that `r` outranks.
fn outranked<'a>(table: &'a kairo_xlate::Table, r: &'a kairo_ofproto::Rule) -> impl Iterator<Item = RuleId> + 'a {
    table.cls.same_match(&r.m).iter().filter(|o| o.priority < r.priority && !o.payload.inst.is_clause()).map(|o| o.id)
}

/// A removal or change of a rule in a table with conjunctive matches (or
/// of a rule that took part in them): its table, id, match and priority.
fn conj_change(p: &Pipeline, d: &Delta) -> Option<(u8, RuleId, kairo_flow::Match, u16)> {
    let conjunctive = |t: &u8| p.table(*t).is_some_and(|tb| tb.conjunctive());
    match d {
        Delta::RuleRemoved { table, id, rule } if conjunctive(table) || kairo_xlate::conj_related(rule) => {
            Some((*table, *id, rule.m, rule.priority))
        }
        Delta::RuleModified { table, id, conj } if *conj || conjunctive(table) => {
            p.rule(*table, *id).map(|r| (*table, *id, r.m, r.priority))
        }
        _ => None,
    }
}

/// Forgets the lessons' times of MACs or rules no longer there, once the
/// map has doubled since it was last pruned (amortised: a switch that
/// learns and forgets for ever keeps it bounded by twice what is live).
fn prune_taught<K: std::hash::Hash + Eq>(
    map: &mut rustc_hash::FxHashMap<K, u64>,
    kept: &mut usize,
    live: impl Fn(&K) -> bool,
) {
    if map.len() > 2 * *kept + 1024 {
        map.retain(|k, _| live(k));
        *kept = map.len();
    }
}
