//! The per-entry revalidation step both engines share, and the oracle.
//!
//! Revalidating a megaflow re-translates its key. Its mask *still holds* when
//! every packet of its region would still get the same translation: either
//! the new translation needs no bit the mask lacks, or (exactly, when it
//! does) at every table the entry visited the rule it matched still contains
//! the whole region, no rule that beats it overlaps the region, and every bit
//! the actions read is in the mask. An entry whose mask holds is kept (its
//! actions and traversal replaced if they changed); otherwise it is evicted.
//!
//! The exact test matters: it makes the verdict depend only on rules that can
//! affect the entry's packets, so revalidating an entry no update could
//! affect always keeps it unchanged. That is what lets the incremental engine
//! touch only the affected entries and still equal full revalidation.

use crate::prefetch::ReadAhead;
use kairo_classifier::ClsRule;
use kairo_classifier::RuleId;
use kairo_flow::{Field, FlowKey, FlowMask};
use kairo_ofproto::Rule;
use kairo_xlate::{
    answers, conj_floor, retranslate_checked, translate, translate_suffix, DpAction, Floor, Outcome, Pipeline, Replay,
    Step, Suffix, Table, TableSet, Traversal, XlateResult,
};
use std::sync::Arc;

use crate::Ukey;

/// Mask of the pipeline-only fields (registers, metadata). Within a megaflow's
/// region they are exactly determined at every table (zero on entry, then
/// written from constants or from exactly-matched fields), so a region is
/// exact on them.
pub fn pipeline_only_mask() -> FlowMask {
    let mut m = FlowMask::ZERO;
    for f in Field::all().filter(|f| f.pipeline_only()) {
        m.exact(f);
    }
    m
}

/// The outcome of revalidating one megaflow.
#[derive(Debug)]
pub enum Verdict {
    /// Mask, actions and traversal all still right.
    Keep,
    /// Mask holds; actions or traversal changed (carried in the result).
    Update(Box<XlateResult>),
    /// The mask no longer holds.
    Evict,
    /// Mask holds; these are the actions, computed from the pass's suffix
    /// number `suffix` ([`Memo`]), translated for an entry in the same
    /// state. The traversal that goes with them is made later, off the
    /// time-to-update ([`Memo::traversal`], or a re-translation).
    Shared { actions: Vec<DpAction>, suffix: usize },
}

/// Does rule `id` at table `t` still contain the region, and does no rule
/// that beats it overlap the region?
fn step_holds(p: &Pipeline, t: u8, outcome: Outcome, kt: &FlowKey, region: &FlowMask) -> bool {
    let Some(table) = p.table(t) else { return true }; // no table: a miss, nothing can beat it
    if table.conjunctive() {
        return conj_step_holds(table, outcome, kt, region);
    }
    match outcome {
        Outcome::Rule(id) => {
            let Some(w) = table.cls.get(id) else { return false };
            if !w.m().mask().is_subset_of(region) || !w.m().matches(kt) {
                return false;
            }
            let (wp, wid): (u16, RuleId) = (w.priority, w.id);
            !table.cls.any_overlapping(kt, region, wp, |q| q.priority > wp || q.id < wid)
        }
        Outcome::Miss => !table.cls.any_overlapping(kt, region, 0, |_| true),
        // Made only by a table with conjunctive matches, which this is not
        // any more.
        Outcome::Conj { .. } => false,
    }
}

/// [`step_holds`] in a table with conjunctive matches: the lookup at the
/// region's key gives `outcome`; the rules that decided it (the hard match,
/// the answer) contain the region; and every rule that could decide
/// otherwise (above the lookup's floor, and, if it matches conj_id, for a
/// conjunction the lookup completed) and overlaps the region contains it.
/// Then every packet of the region matches the same such rules, so its
/// lookup completes the same conjunctions and gets the same answers.
/// Every rule this reads is one whose addition, removal or change the
/// incremental engine takes for the entry (`Floor`), and a region whose
/// lookups examined only its own bits passes (those rules' subtables were
/// all visited), so the test is a function of what can affect the entry,
/// as the plain one is.
fn conj_step_holds(table: &Table, outcome: Outcome, kt: &FlowKey, region: &FlowMask) -> bool {
    let mut scratch = FlowMask::ZERO;
    let l = table.lookup_conj(kt, &mut scratch);
    if l.rule.map(|r| r.id) != outcome.rule() {
        return false;
    }
    let mut open = *region;
    open.set(Field::ConjId, 0);
    let inside = |q: &ClsRule<Arc<Rule>>| {
        let mut m = *q.m().mask();
        m.set(Field::ConjId, 0);
        m.is_subset_of(region) && q.m().key().eq_masked(kt, &m)
    };
    // What decided: the answer (with the clauses of its priority, which
    // are among the admitted below), or the hard match.
    let answered = match (l.unanswered, l.rule, l.conj) {
        (false, Some(w), Some((id, level))) => Some((w, level, id)),
        _ => None,
    };
    let decided = if l.unanswered { None } else { answered.map(|(w, _, _)| w).or(l.hard) };
    if !decided.into_iter().all(inside) {
        return false;
    }
    // What could decide otherwise (the floor, to the id).
    // (A clause counts only above the hard match's priority, as Open
    // vSwitch drops clauses at or below it, and below the answered
    // conjunction's priority not at all: it is not tried. Another answer
    // to the conjunction that was answered counts only if it beats the
    // answer: it takes part in that second lookup alone.)
    let admitted = |q: &ClsRule<Arc<Rule>>| {
        let clause = q.payload.inst.is_clause();
        match (answered, decided) {
            (Some((_, level, _)), _) if clause => q.priority >= level,
            (Some((w, _, id)), _) if answers(&q.payload) == Some(id) => q.beats(w),
            (Some((w, level, _)), _) => q.priority >= level || q.beats(w),
            (None, Some(h)) if clause => q.priority > h.priority,
            (None, Some(h)) => q.beats(h),
            (None, None) => true,
        }
    };
    let floor = conj_floor(&l);
    let asked = |q: &ClsRule<Arc<Rule>>| answers(&q.payload).is_none_or(|id| l.tried.contains(&id));
    // A clause counts only where one of its conjunctions could complete in
    // the region: every other clause of it has a flow overlapping the
    // region (what a new clause must meet to take an entry, too), found by
    // the classifier (a dimension may have thousands of flows; the region
    // usually fixes the fields they match, and then each subtable is one
    // probe).
    let completable = |q: &ClsRule<Arc<Rule>>| {
        !q.payload.inst.is_clause()
            || q.payload.inst.conjunctions().any(|(cid, k, n)| {
                if table.clause_members(q.priority, cid, n).is_none() {
                    return true;
                }
                (1..=n).filter(|&kk| kk != k).all(|kk| table.clause_overlaps((q.priority, cid, n), kk, kt, &open))
            })
    };
    let min = match floor {
        Floor::None => 0,
        Floor::Above { priority, .. } => priority,
    };
    !table.cls.any_overlapping(kt, &open, min, |q| admitted(q) && asked(q) && !inside(q) && completable(q))
}

/// Exact test that every packet of the megaflow's region translates like its key.
pub fn region_holds(p: &Pipeline, key: &FlowKey, mask: &FlowMask, r: &XlateResult, po: &FlowMask) -> bool {
    let mut region = *mask;
    region.or(po);
    if !r.action_mask.is_subset_of(&region) {
        return false;
    }
    r.traversal.steps.iter().all(|st| visit_holds(p, &r.traversal, key, st, &region))
}

/// [`step_holds`] for one step of a traversal of `key`, at the key it saw.
fn visit_holds(p: &Pipeline, trav: &Traversal, key: &FlowKey, st: &Step, region: &FlowMask) -> bool {
    let kt = trav.key_at(key, st).masked(region);
    step_holds(p, st.table, st.outcome, &kt, region)
}

/// Revalidates one megaflow against the pipeline.
pub fn revalidate(p: &Pipeline, mf: &Ukey, po: &FlowMask) -> Verdict {
    let r = translate(p, &mf.rep);
    let holds = r.mask.is_subset_of(&mf.mask) || region_holds(p, &mf.rep, &mf.mask, &r, po);
    settle(mf, &mf.traversal(), holds, r)
}

/// The verdict once it is known whether the mask holds, from the new
/// translation and the traversal the entry has now.
fn settle(mf: &Ukey, old: &Traversal, holds: bool, r: XlateResult) -> Verdict {
    // Actions the datapath cannot hold (over 64 kB): no megaflow for them.
    if !holds || r.slow {
        Verdict::Evict
    } else if *mf.actions() != r.actions || *old != r.traversal {
        Verdict::Update(Box::new(r))
    } else {
        Verdict::Keep
    }
}

/// What an update changed: tables (rules or miss behaviour) and whether any group.
#[derive(Clone, Copy, Debug, Default)]
pub struct Changed {
    pub tables: TableSet,
    pub groups: bool,
}

impl Changed {
    /// Both changes (what changed since either began).
    pub fn or(&mut self, other: &Changed) {
        self.tables.or(&other.tables);
        self.groups |= other.groups;
    }
}

/// Suffixes a pass keeps at most (each is tried on every entry that has not
/// matched an earlier one).
const MEMO_SUFFIXES: usize = 8;
/// Suffixes a pass may try to make that cannot be shared (they use a group
/// or a resubmit that puts in_port back) before it stops trying.
const MEMO_FAILURES: usize = 8;

/// The suffixes one pass has translated (against the pipeline after the
/// update), for the entries after the first in each state: an entry that
/// resumes at a step one applies to ([`Suffix::applies`]) and whose region
/// contains what it examined gets its actions from it, with no
/// re-translation. Why the verdict is then full revalidation's, keep or
/// update with these actions: everything before the step is as it was (the
/// resume point's guarantee), the suffix gives this entry's key the
/// translation it would get ([`Suffix`]), and since the region contains
/// every bit the suffix examined, every packet of it gets the same outcome
/// at every visit from there on (the classifier's contract on each lookup
/// made) and the same actions; before the step it did already (the entry's
/// region held, and those tables did not change). So the region holds.
#[derive(Default)]
pub struct Memo {
    /// Off for a pass too small to share: a suffix is one more translation
    /// of the entry it is made from, wasted when nothing else uses it.
    off: bool,
    suffixes: Vec<Suffix>,
    failures: usize,
    /// Entries no suffix served once no more could be made.
    misses: usize,
    /// Entries given actions from a suffix.
    pub shared: usize,
}

/// Entries a pass needs at least for its memo to try sharing: with fewer,
/// the first entry's suffix would serve one other entry at most, at the
/// price of a translation for each entry it cannot serve (one whose
/// region the suffix's lookups leave, evicted or not, is then re-translated
/// on its own as well).
pub const MEMO_MIN: usize = 3;

impl Memo {
    /// A memo for a pass over `entries` entries.
    pub fn for_pass(entries: usize) -> Memo {
        Memo { off: entries < MEMO_MIN, ..Memo::default() }
    }

    /// The verdict from a shared suffix, if one serves this entry.
    pub fn verdict(
        &mut self,
        p: &Pipeline,
        mf: &Ukey,
        old: &Traversal,
        po: &FlowMask,
        changed: &Changed,
    ) -> Option<Verdict> {
        // Entries that share little (their states differ in what the
        // suffixes examine, as source addresses under an ACL's prefixes):
        // stop paying for the comparisons.
        if self.off || self.misses > 16 + 2 * self.shared {
            return None;
        }
        let (region, j, at, flow) = resume_point(mf, old, po, changed)?;
        let i = match self.suffixes.iter().position(|s| s.applies(&at, j, &flow, old, &mf.rep)) {
            Some(i) => i,
            None if self.suffixes.len() < MEMO_SUFFIXES && self.failures < MEMO_FAILURES => {
                match translate_suffix(p, &mf.rep, old, j, &changed.tables) {
                    Some(s) => self.suffixes.push(s),
                    None => {
                        self.failures += 1;
                        return None;
                    }
                }
                self.suffixes.len() - 1
            }
            None => {
                self.misses += 1;
                return None;
            }
        };
        let s = &self.suffixes[i];
        if !s.need().is_subset_of(&region) {
            return None;
        }
        self.shared += 1;
        Some(Verdict::Shared { actions: s.actions_for(&mf.rep, &flow), suffix: i })
    }

    /// The traversal that goes with the actions suffix number `suffix` gave
    /// an entry (with the pipeline and `changed` of the same pass, and the
    /// entry's traversal from before it); `None` if it cannot be made so.
    pub fn traversal(
        &self,
        suffix: usize,
        mf: &Ukey,
        old: &Traversal,
        po: &FlowMask,
        changed: &Changed,
    ) -> Option<Traversal> {
        let s = self.suffixes.get(suffix)?;
        let (_, j, _, flow) = resume_point(mf, old, po, changed)?;
        Some(s.traversal_for(&mf.rep, old, j, &flow))
    }
}

/// Where re-translating a megaflow after `changed` would resume (past
/// table 0): its region, the step's index, the step, and its key there.
fn resume_point(
    mf: &Ukey,
    old: &Traversal,
    po: &FlowMask,
    changed: &Changed,
) -> Option<(FlowMask, usize, Step, kairo_flow::FlowKey)> {
    let mut region = *mf.mask;
    region.or(po);
    let j = Replay { old, changed: &changed.tables, region: &region, groups_changed: changed.groups }.resume_at();
    let at = *old.steps.get(j).filter(|_| j > 0)?;
    let flow = old.key_at(&mf.rep, &at);
    Some((region, j, at, flow))
}

/// Revalidates one megaflow after what `changed` names changed, giving the
/// verdict [`revalidate`] gives, with less work: re-translation resumes
/// where the change can first make a difference, the entry's recorded
/// traversal answers the lookups the change cannot have altered, and only
/// the steps looked up anew are checked.
///
/// Why that is the same verdict: `docs/design.md` section 4.3.
pub fn revalidate_since(p: &Pipeline, mf: &Ukey, po: &FlowMask, changed: &Changed) -> Verdict {
    revalidate_from(p, mf, mf.traversal(), po, changed)
}

/// [`revalidate_since`] given the megaflow's traversal.
fn revalidate_from(
    p: &Pipeline,
    mf: &Ukey,
    old: std::sync::Arc<Traversal>,
    po: &FlowMask,
    changed: &Changed,
) -> Verdict {
    let mut region = *mf.mask;
    region.or(po);
    let replay = Replay { old: &old, changed: &changed.tables, region: &region, groups_changed: changed.groups };
    // Each unproven visit is judged as it is made ([`visit_holds`], on the
    // flow there): the first that fails decides the eviction, with no
    // translation of the visits after it.
    let holds_at = |t: u8, outcome: Outcome, flow: &FlowKey| step_holds(p, t, outcome, &flow.masked(&region), &region);
    let again = retranslate_checked(p, &mf.rep, replay, &holds_at);
    if again.rejected {
        return Verdict::Evict;
    }
    let r = again.result;
    settle(mf, &old, r.action_mask.is_subset_of(&region), r)
}

/// One entry of the cache that is not what full revalidation gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub megaflow: String,
    pub expected: String,
    pub found: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: expected {}, found {}", self.megaflow, self.expected, self.found)
    }
}

/// The oracle: every live entry checked against a fresh translation. Lists
/// entries that should have been evicted and entries with stale actions.
pub fn verify<'a>(p: &Pipeline, entries: impl IntoIterator<Item = &'a std::sync::Arc<Ukey>>) -> Vec<Mismatch> {
    let po = pipeline_only_mask();
    let mut out = Vec::new();
    for mf in entries {
        if mf.is_dead() {
            continue;
        }
        let name = kairo_flow::format_megaflow(&mf.rep, &mf.mask);
        let found = kairo_xlate::format_actions(&mf.actions());
        match revalidate(p, mf, &po) {
            Verdict::Keep => {}
            Verdict::Evict => {
                out.push(Mismatch { megaflow: name, expected: "eviction (mask no longer holds)".into(), found })
            }
            Verdict::Update(r) => {
                if r.actions != *mf.actions() {
                    out.push(Mismatch { megaflow: name, expected: kairo_xlate::format_actions(&r.actions), found });
                }
            }
            // Only a pass's memo shares; `revalidate` translates whole.
            Verdict::Shared { .. } => {}
        }
    }
    out
}

/// Below this many entries a pass revalidates on the calling thread (a
/// thread costs more than it saves).
pub const PARALLEL_MIN: usize = 256;

/// Revalidates `mfs` on up to `threads` threads (scoped: they end with the
/// call), verdicts in the order of `mfs`. Translation only reads the
/// pipeline and the megaflows, so entries are independent; applying the
/// verdicts (and re-indexing) stays with the caller, serially.
pub fn revalidate_all(p: &Pipeline, mfs: &[std::sync::Arc<Ukey>], po: &FlowMask, threads: usize) -> Vec<Verdict> {
    revalidate_each(mfs, threads, |mf| revalidate(p, mf, po))
}

/// Passes of at most this many entries read their entries' rules ahead
/// ([`ReadAhead::steps`]); in larger ones the rules are warm after
/// the first few.
const TOUCH_MAX: usize = 16;

/// As [`revalidate_all`], with [`revalidate_since`].
pub fn revalidate_all_since(
    p: &Pipeline,
    mfs: &[std::sync::Arc<Ukey>],
    po: &FlowMask,
    changed: &Changed,
    threads: usize,
    memo: &mut Memo,
) -> Vec<Verdict> {
    if threads <= 1 {
        // Level by level, so that the cold reads of many entries overlap
        // instead of each entry's chain of them (megaflow, traversal, its
        // steps and key versions) waiting on the one before: first every
        // entry's traversal, then a word of each of those and of each key.
        let olds: Vec<_> = mfs.iter().map(|mf| mf.traversal()).collect();
        let mut ra = ReadAhead::default();
        for (mf, old) in mfs.iter().zip(&olds) {
            let first = old.steps.first().map_or(0, |s| s.table as u64);
            let last = old.steps.last().map_or(0, |s| s.table as u64);
            let diff = old.version(1).first().map_or(0, |d| d.1);
            ra.take(first ^ last ^ diff ^ mf.rep.w[0] ^ mf.rep.w[mf.rep.w.len() - 1]);
        }
        // A few entries (an update's usual lot) each start a chain of cold
        // reads through the pipeline: the rules they visited, read first.
        if mfs.len() <= TOUCH_MAX {
            for old in &olds {
                ra.steps(p, &old.steps);
            }
        }
        drop(ra);
        return mfs
            .iter()
            .zip(olds)
            .map(|(mf, old)| {
                memo.verdict(p, mf, &old, po, changed).unwrap_or_else(|| revalidate_from(p, mf, old, po, changed))
            })
            .collect();
    }
    revalidate_each(mfs, threads, |mf| revalidate_since(p, mf, po, changed))
}

fn revalidate_each(
    mfs: &[std::sync::Arc<Ukey>],
    threads: usize,
    revalidate: impl Fn(&Ukey) -> Verdict + Sync,
) -> Vec<Verdict> {
    let threads = threads.clamp(1, mfs.len().div_ceil(PARALLEL_MIN).max(1));
    if threads == 1 {
        return mfs.iter().map(|mf| revalidate(mf)).collect();
    }
    let revalidate = &revalidate;
    let per = mfs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = mfs
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|mf| revalidate(mf)).collect::<Vec<_>>()))
            .collect();
        // A panic in a worker is a bug in translation: re-raise it here,
        // where it would have happened serially.
        parts.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}
