//! The reference's table lookup: the first matching rule of a table sorted
//! best first, completing conjunctive matches as ovs-fields(7) describes
//! them ("Conjunctive Match Fields"), by a plain scan of the rules.
//!
//! The rule: the best ordinary matching rule is the hard match. Above its
//! priority, from the highest priority down, the clauses of one priority
//! that match complete each conjunction (id, n) of which they hold every
//! clause 1..n (a clause counts when no more than that many clauses of the
//! priority match); the completed ones, by id, are each answered by the
//! best ordinary rule matching with `conj_id` set to the id whose match no
//! clause with the same match outranks. The first answer is the outcome;
//! with none, the hard match.

use std::sync::Arc;

use kairo_flow::{Field, FlowKey};
use kairo_ofproto::Rule;

fn is_clause(r: &Rule) -> bool {
    r.inst.conjunctions().next().is_some()
}

/// The rule a lookup of `flow` in `rules` (sorted best first) gives.
pub(crate) fn lookup<'a>(rules: &'a [Arc<Rule>], flow: &FlowKey) -> Option<&'a Arc<Rule>> {
    let hard = rules.iter().find(|r| !is_clause(r) && r.m.matches(flow));
    let floor = hard.map_or(-1, |h| i32::from(h.priority));
    let mut levels: Vec<u16> = rules
        .iter()
        .filter(|r| is_clause(r) && i32::from(r.priority) > floor && r.m.matches(flow))
        .map(|r| r.priority)
        .collect();
    levels.dedup();
    for level in levels {
        let at: Vec<&Arc<Rule>> =
            rules.iter().filter(|r| r.priority == level && is_clause(r) && r.m.matches(flow)).collect();
        let clauses: Vec<(u32, u8, u8)> = at.iter().flat_map(|r| r.inst.conjunctions()).collect();
        let mut ids: Vec<u32> = clauses
            .iter()
            .filter(|(id, _, n)| usize::from(*n) <= at.len() && (1..=*n).all(|k| clauses.contains(&(*id, k, *n))))
            .map(|(id, _, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let mut asked = *flow;
            asked.set(Field::ConjId, u64::from(id));
            let answer = rules.iter().enumerate().find(|(i, r)| {
                !is_clause(r) && r.m.matches(&asked) && !rules[..*i].iter().any(|c| is_clause(c) && c.m == r.m)
            });
            if let Some((_, r)) = answer {
                return Some(r);
            }
        }
    }
    hard
}
