//! Re-translation after a rule change ([`retranslate`]): the same translation
//! as [`crate::translate`], taking from the traversal an earlier translation
//! of the key recorded the outcomes the change cannot have altered (a lookup
//! is a function of the table and the bits its rules read), and starting at
//! the last visit before the change where nothing but the key, the nesting
//! and the tables decides what follows.
//!
//! Invariant: its result equals [`crate::translate`]'s in actions, traversal
//! and error; its masks hold what it examined itself (the argument is in
//! `docs/design.md` section 4.3; the xlate proptests check it).

use crate::translate::Hit;
use kairo_flow::{FlowKey, FlowMask};

use crate::pipeline::Pipeline;
use crate::translate::{run, Mode, Run, Visit, XlateResult};
use crate::traversal::{Outcome, Traversal};

/// A set of table numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSet([u64; 4]);

impl TableSet {
    pub fn insert(&mut self, t: u8) {
        self.0[t as usize / 64] |= 1 << (t % 64);
    }
    pub fn contains(&self, t: u8) -> bool {
        self.0[t as usize / 64] & (1 << (t % 64)) != 0
    }
    /// Every table.
    pub fn all() -> TableSet {
        TableSet([u64::MAX; 4])
    }
    /// Whether the two have a table in common.
    pub fn meets(&self, other: &TableSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }
    /// Adds every table of `other`.
    pub fn or(&mut self, other: &TableSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
}

/// What a re-translation may take from the traversal an earlier translation
/// of the same key recorded, once some tables have changed.
#[derive(Clone, Copy, Debug)]
pub struct Replay<'a> {
    /// The earlier traversal (of the same start key).
    pub old: &'a Traversal,
    /// Tables whose rules or miss behaviour changed since `old` was recorded;
    /// every other table is as it was then.
    pub changed: &'a TableSet,
    /// The region the result is for: lookups made anew that examine only
    /// bits of it are not reported.
    pub region: &'a FlowMask,
    /// Whether any group changed since `old` was recorded.
    pub groups_changed: bool,
}

impl Replay<'_> {
    /// The step of `old` a re-translation can start at: the latest one
    /// looked up in a resumable state at or before the first visit to a
    /// changed table and, if a group changed, before the first group use.
    /// Everything before it happens as it did (unchanged tables see the same
    /// keys, unchanged groups choose the same buckets), and from a resumable
    /// state on, translation depends only on the key, the nesting and the
    /// tables. 0 when the translation has to start over.
    pub fn resume_at(&self) -> usize {
        let old = self.old;
        let Some(mut j) = old.resumable().checked_sub(1) else { return 0 };
        if let Some(k) = old.steps[..j].iter().position(|s| self.changed.contains(s.table)) {
            j = k;
        }
        if self.groups_changed {
            if let Some(g) = old.groups.first() {
                // Used once `g.step` visits were made: from the last of them on.
                j = j.min((g.step as usize).saturating_sub(1));
            }
        }
        j
    }
}

/// A judgement of one visit of a re-translation: its table, outcome and
/// the flow there ([`retranslate_checked`]).
pub type VisitCheck<'a> = dyn Fn(u8, Outcome, &FlowKey) -> bool + 'a;

pub(crate) struct ReplayState<'a> {
    pub r: Replay<'a>,
    /// The next step of `old` to align a visit with.
    pub cursor: usize,
    /// Indexes of the new traversal's steps looked up anew whose lookup
    /// examined bits outside the region.
    pub unproven: Vec<usize>,
    /// When given ([`retranslate_checked`]): judges each visit that would
    /// be unproven (table, outcome, flow there); the first it rejects
    /// stops the translation.
    pub holds: Option<&'a VisitCheck<'a>>,
    /// A visit was rejected: the translation stopped there.
    pub rejected: bool,
}
impl<'a> ReplayState<'a> {
    pub fn new(r: Replay<'a>, cursor: usize, holds: Option<&'a VisitCheck<'a>>) -> Self {
        ReplayState { r, cursor, unproven: Vec::new(), holds, rejected: false }
    }

    /// The outcome the earlier traversal recorded for this visit, if it
    /// still holds, and the index of that earlier visit. Aligns the visit
    /// with the next earlier visit to its table from the cursor
    /// (translation is deterministic, so until an outcome differs the two
    /// traversals visit the same tables in the same order).
    pub fn answer(&mut self, v: &Visit<'_, 'a>) -> Option<(usize, Hit<'a>)> {
        let (p, t, old) = (v.p, v.table, self.r.old);
        let k = self.cursor + old.steps[self.cursor.min(old.steps.len())..].iter().position(|s| s.table == t)?;
        self.cursor = k + 1;
        if self.r.changed.contains(t) {
            return None;
        }
        let was = old.steps[k];
        let same_key = old.version(was.version) == v.trav.version(v.version);
        if !same_key && !v.flow.eq_masked(&old.key_at(v.start, &was), p.table(t)?.cls.read_mask()) {
            return None;
        }
        let rule = match was.outcome.rule() {
            Some(id) => Some(&**p.rule(t, id)?),
            None => None,
        };
        Some((k, (was.outcome, rule, old.clauses_at(k))))
    }

    /// A lookup made anew at visit `n`: unproven if it examined bits outside
    /// the region, and then judged by `holds` when given.
    pub fn judge(&mut self, n: usize, t: u8, outcome: Outcome, wc: &FlowMask, flow: &FlowKey) -> bool {
        if wc.is_subset_of(self.r.region) {
            return true;
        }
        self.unproven.push(n);
        if self.holds.is_some_and(|holds| !holds(t, outcome, flow)) {
            self.rejected = true;
            return false;
        }
        true
    }
}

impl<'a> Mode<'a> for ReplayState<'a> {
    fn like(&self) -> Option<&'a Traversal> {
        Some(self.r.old)
    }

    #[inline]
    fn replayed(&mut self, v: &Visit<'_, 'a>) -> Option<Hit<'a>> {
        self.answer(v).map(|(_, hit)| hit)
    }

    #[inline]
    fn looked_up(&mut self, n: usize, t: u8, outcome: Outcome, wc: &FlowMask, flow: &FlowKey) -> bool {
        self.judge(n, t, outcome, wc, flow)
    }
}

/// The result of [`retranslate`]: a translation, and which of its steps were
/// looked up anew with a lookup that examined bits outside the region (every
/// other step either took the outcome the earlier traversal recorded or was
/// decided by bits of the region alone).
#[derive(Debug)]
pub struct Retranslation {
    pub result: XlateResult,
    pub unproven: Vec<usize>,
    /// The step it resumed at ([`Replay::resume_at`]; 0: from table 0).
    pub resumed_at: usize,
    /// [`retranslate_checked`] only: a visit that would be unproven was
    /// rejected, and the translation stopped there (`result` is then
    /// unfinished and means nothing).
    pub rejected: bool,
}

/// Translates `key` again after the tables in `replay.changed` changed,
/// producing the same actions, traversal and action mask as [`crate::translate()`]
/// but without a classifier lookup where the earlier traversal already
/// answers it: a visit to an unchanged table `t` whose key agrees, on every
/// bit some rule of `t` reads, with the key the aligned earlier visit to `t`
/// saw gets that visit's outcome (a lookup is a function of those bits and
/// the table). It does not start at table 0 but at [`Replay::resume_at`],
/// from the state translation had there (everything before it is as it
/// was: the steps, groups and key versions are copied; if it ends there
/// with an action set to run inside a bucket or in_port-restoring resubmit,
/// whose put-back flow it would have run on, it starts over; when it
/// resumed inside one, `final_flow` is the flow before they put it back).
/// Its `mask` holds
/// only the lookups made anew, and its `action_mask` (and the fixed bits)
/// only what the actions from the resumed step on read or wrote: what came
/// before is what the earlier translation gathered. The caller decides from
/// [`Retranslation::unproven`] what still needs checking.
pub fn retranslate(p: &Pipeline, key: &FlowKey, replay: Replay<'_>) -> Retranslation {
    retranslate_with(p, key, replay, None)
}

/// [`retranslate`], judging each visit that would be unproven as it is
/// made, with `holds` (given the table, the outcome and the flow there):
/// at the first one it rejects, translation stops, with
/// [`Retranslation::rejected`] set. Every visit `holds` sees is one the
/// whole re-translation makes, at that flow, so a caller whose verdict
/// fails when any unproven visit fails has its verdict there without the
/// visits after it (an entry evicted by a new rule at the table it
/// resumes at is then not translated through the rest of the pipeline).
/// Not rejected: the same result as [`retranslate`], every unproven visit
/// accepted by `holds`.
pub fn retranslate_checked(p: &Pipeline, key: &FlowKey, replay: Replay<'_>, holds: &VisitCheck) -> Retranslation {
    retranslate_with(p, key, replay, Some(holds))
}

fn retranslate_with<'a>(
    p: &'a Pipeline,
    key: &FlowKey,
    replay: Replay<'a>,
    holds: Option<&'a VisitCheck<'a>>,
) -> Retranslation {
    let mut resumed_at = replay.resume_at();
    let from = (resumed_at > 0).then_some((replay.old, resumed_at));
    let state = |cursor| ReplayState::new(replay, cursor, holds);
    let mut out = run(p, key, state(resumed_at), from);
    // (A rejected visit was made before the end, where spoiling happens:
    // the lookups of a spoilt run are a whole translation's.)
    let rejected = |out: &Run<ReplayState<'_>>| out.mode.rejected;
    if out.spoilt && !rejected(&out) {
        resumed_at = 0;
        out = run(p, key, state(0), None);
    }
    let rejected = rejected(&out);
    Retranslation { result: out.result, unproven: out.mode.unproven, resumed_at, rejected }
}
