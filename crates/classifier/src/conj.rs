//! Conjunctive matches: the lookup of a table some of whose rules are
//! clauses of conjunctive flows (`conjunction(id,k/n)`), as Open vSwitch's
//! `classifier_lookup__` does it (ovs-fields(7), "Conjunctive Match
//! Fields").
//!
//! A rule that is a clause ("soft" match) says nothing on its own. The
//! lookup finds the best ordinary ("hard") rule as usual, and the clauses
//! that match above it. Then, highest priority first, it looks at the
//! clauses of one priority: a conjunction whose every clause 1..n is among
//! them is complete, and the table is looked up again with `conj_id` set to
//! its id, ignoring clauses (and, as Open vSwitch does, any rule a clause
//! with the same match outranks); the first such second lookup that finds a
//! rule gives the outcome. When none does, each clause of that priority is
//! replaced by the next rule with the same match (lower priority: a clause,
//! or an ordinary rule that may become the hard match) and the next
//! priority is tried. What is left at the end is the hard match.
//!
//! Where Open vSwitch leaves the choice to the order of its data structures
//! (several conjunctions complete at one priority, which its documentation
//! calls unpredictable), kairo tries the complete ones in order of id, so
//! the outcome is a function of the rules alone. A conjunction is
//! identified by (id, n): two clauses agreeing on the id but not on the
//! number of clauses belong to different ones. A clause counts only when
//! at most as many clauses of that priority matched as it needs (so one
//! rule that is two clauses of the same conjunction does not complete it
//! alone), as in Open vSwitch.
//!
//! Invariant (the megaflow contract, extended): every key that agrees with
//! the looked-up key on the bits ORed into the mask, and has `conj_id`
//! zero, gets the same [`ConjLookup`] (rule, floor, conjunction, and the
//! clause flows that completed it), since every subtable visit and second
//! lookup examined what decided it.

use kairo_flow::{Field, FlowKey, FlowMask};

use crate::{Classifier, ClsRule, LookupStats};

/// One `conjunction(id,k/n)` action of a rule: clause `k` (1-based) of the
/// `n` of conjunctive flow `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Clause {
    pub id: u32,
    pub k: u8,
    pub n: u8,
}

/// What a lookup in a table with conjunctive flows found.
#[derive(Debug)]
pub struct ConjLookup<'a, R> {
    /// The rule whose actions run (none: the table missed).
    pub rule: Option<&'a ClsRule<R>>,
    /// The best ordinary rule of the first lookup, after the clauses of
    /// every priority above it were tried (the "hard" match).
    pub hard: Option<&'a ClsRule<R>>,
    /// The conjunction whose `conj_id` lookup gave `rule`, if one did, and
    /// the priority of the clauses that completed it.
    pub conj: Option<(u32, u16)>,
    /// Every conjunction completed, in the order their `conj_id` lookups
    /// were made.
    pub tried: Vec<u32>,
    /// Some completed conjunction's `conj_id` lookup found nothing.
    pub unanswered: bool,
    /// The clause flows of the conjunctions in `tried` (those of its
    /// priority that are clauses of it), in the order tried: the only
    /// clause flows whose removal can change this lookup, where no flow is
    /// two clauses of one conjunction and none outranks an ordinary rule
    /// with its match.
    pub completed: Vec<&'a ClsRule<R>>,
}

/// A matching clause rule: its identical-match list and its place there.
type Soft<'a, R> = (&'a [ClsRule<R>], usize);

impl<R: kairo_flow::HasMatch> Classifier<R> {
    /// The lookup of `key` (whose `conj_id` is zero) in a table with
    /// conjunctive flows; `clauses(payload)` gives a rule's conjunction
    /// actions (empty for an ordinary rule). ORs into `wc` the bits it
    /// examined, the second lookups' included (conj_id among them: the
    /// caller leaves pipeline state out of megaflows).
    pub fn lookup_conjunctive<'a>(
        &'a self,
        key: &FlowKey,
        wc: &mut FlowMask,
        clauses: impl Fn(&R, &mut dyn FnMut(Clause)),
    ) -> ConjLookup<'a, R> {
        let mut stats = LookupStats::default();
        let is_clause = |r: &ClsRule<R>| {
            let mut any = false;
            clauses(&r.payload, &mut |_| any = true);
            any
        };
        let mut hard: Option<&'a ClsRule<R>> = None;
        let mut soft: Vec<Soft<'a, R>> = Vec::new();
        let (mut tried, mut unanswered, mut completed) = (Vec::new(), false, Vec::new());
        self.scan(key, wc, &mut stats, |bucket| {
            let head = &bucket[0];
            if is_clause(head) {
                soft.push((bucket, 0));
            } else if hard.is_none_or(|h| head.beats(h)) {
                hard = Some(head);
            }
            hard.map(|h| h.priority)
        });
        loop {
            // Clauses at or below the hard match's priority cannot matter.
            soft.retain(|(b, i)| hard.is_none_or(|h| b[*i].priority > h.priority));
            let Some(top) = soft.iter().map(|(b, i)| b[*i].priority).max() else { break };
            let at_top: Vec<&ClsRule<R>> = soft.iter().map(|(b, i)| &b[*i]).filter(|r| r.priority == top).collect();
            let done = complete(&at_top, &clauses);
            let mut ids: Vec<u32> = done.iter().map(|&(id, _)| id).collect();
            ids.dedup();
            for id in ids {
                let mut k2 = *key;
                k2.set(Field::ConjId, u64::from(id));
                tried.push(id);
                for r in &at_top {
                    let mut of_it = false;
                    clauses(&r.payload, &mut |c| of_it |= c.id == id && done.contains(&(id, c.n)));
                    if of_it {
                        completed.push(*r);
                    }
                }
                if let Some(r) = self.second_lookup(&k2, wc, &mut stats, &is_clause) {
                    return ConjLookup { rule: Some(r), hard, conj: Some((id, top)), tried, unanswered, completed };
                }
                unanswered = true;
            }
            // None of them: each clause of this priority gives way to the
            // next rule with the same match.
            let mut next: Vec<Soft<'a, R>> = Vec::with_capacity(soft.len());
            for (b, i) in soft.drain(..) {
                if b[i].priority != top {
                    next.push((b, i));
                    continue;
                }
                let Some(r) = b.get(i + 1) else { continue };
                if is_clause(r) {
                    next.push((b, i + 1));
                } else if hard.is_none_or(|h| r.beats(h)) {
                    hard = Some(r);
                }
            }
            soft = next;
        }
        ConjLookup { rule: hard, hard, conj: None, tried, unanswered, completed }
    }

    /// The lookup made for a complete conjunction (`key` has its conj_id):
    /// clauses are ignored, and so is every rule a clause with the same
    /// match outranks (Open vSwitch looks only at the best rule of each
    /// match there).
    fn second_lookup<'a>(
        &'a self,
        key: &FlowKey,
        wc: &mut FlowMask,
        stats: &mut LookupStats,
        is_clause: &impl Fn(&ClsRule<R>) -> bool,
    ) -> Option<&'a ClsRule<R>> {
        let mut best: Option<&'a ClsRule<R>> = None;
        self.scan(key, wc, stats, |bucket| {
            let head = &bucket[0];
            if !is_clause(head) && best.is_none_or(|b| head.beats(b)) {
                best = Some(head);
            }
            best.map(|b| b.priority)
        });
        best
    }
}

/// The conjunctions (id, number of clauses) the clauses `at` (all of one
/// priority) complete, by increasing id.
fn complete<R>(at: &[&ClsRule<R>], clauses: &impl Fn(&R, &mut dyn FnMut(Clause))) -> Vec<(u32, u8)> {
    // (id, n) -> the clauses seen, one bit per clause.
    let mut seen: Vec<((u32, u8), u64)> = Vec::new();
    for r in at {
        clauses(&r.payload, &mut |c| {
            if usize::from(c.n) > at.len() || c.k == 0 || c.k > c.n {
                return;
            }
            let bit = 1u64 << (c.k - 1);
            match seen.iter_mut().find(|(k, _)| *k == (c.id, c.n)) {
                Some((_, bits)) => *bits |= bit,
                None => seen.push(((c.id, c.n), bit)),
            }
        });
    }
    let mut done: Vec<(u32, u8)> = seen
        .into_iter()
        .filter(|((_, n), bits)| *bits == if *n >= 64 { u64::MAX } else { (1u64 << n) - 1 })
        .map(|(k, _)| k)
        .collect();
    done.sort_unstable();
    done
}
