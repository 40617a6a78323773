//! The traffic the view is given, taken from a filled megaflow cache (one
//! owner per cached megaflow: the first pass's representative packet, or
//! the group and datapath hash of a second pass), and the check of the view
//! against that cache's traversals after an update.
//!
//! Invariant: owner `i` of the first pass is `first[i]`, owner
//! [`SECOND_PASS`] + `i` is `second[i]`; each remembers the representative
//! key of its megaflow, which is how the cache's entry is found again (an
//! entry keeps its representative key across re-translations).

use std::sync::Arc;

use kairo_flow::{Field, FlowKey};
use kairo_maintain::Ukey;
use rustc_hash::FxHashMap;

use crate::circuit::SECOND_PASS;
use crate::DbspView;

/// A cache's megaflows as the view's owners.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// First-pass packets.
    pub first: Vec<FlowKey>,
    /// Second passes: the group recirculated for, the datapath hash, and the
    /// megaflow's representative key.
    pub second: Vec<(u32, u64, FlowKey)>,
    /// Megaflows left out: second passes that are not a group's (none in a
    /// pipeline the view accepts).
    pub left_out: usize,
}

impl Traffic {
    /// The live megaflows of a cache, in its order.
    pub fn of(entries: &[Arc<Ukey>]) -> Traffic {
        let mut t = Traffic::default();
        for uk in entries.iter().filter(|uk| !uk.is_dead()) {
            if uk.rep.get(Field::RecircId) == 0 {
                t.first.push(uk.rep);
            } else {
                match uk.traversal().groups.first() {
                    Some(g) => t.second.push((g.group, uk.rep.get(Field::DpHash), uk.rep)),
                    None => t.left_out += 1,
                }
            }
        }
        t
    }

    pub fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a check of the view against a cache found.
#[derive(Clone, Debug, Default)]
pub struct Check {
    /// Owners compared.
    pub checked: usize,
    /// Owners whose megaflow the cache no longer holds (not compared).
    pub gone: usize,
    /// What differed, one line per owner (at most the first 20 kept).
    pub mismatches: Vec<String>,
    pub n_mismatches: usize,
}

impl DbspView {
    /// Compares the view with the traversals a cache holds now for the
    /// megaflows `traffic` was taken from.
    pub fn check_cache(&self, traffic: &Traffic, entries: &[Arc<Ukey>]) -> Check {
        let by_rep: FxHashMap<FlowKey, &Arc<Ukey>> =
            entries.iter().filter(|uk| !uk.is_dead()).map(|uk| (uk.rep, uk)).collect();
        let mut c = Check::default();
        let owners = traffic
            .first
            .iter()
            .enumerate()
            .map(|(i, k)| (i as u64, k))
            .chain(traffic.second.iter().enumerate().map(|(i, (_, _, k))| (SECOND_PASS + i as u64, k)));
        for (owner, rep) in owners {
            let Some(uk) = by_rep.get(rep) else {
                c.gone += 1;
                continue;
            };
            c.checked += 1;
            if let Some(why) = self.check(owner, &uk.traversal()) {
                c.n_mismatches += 1;
                if c.mismatches.len() < 20 {
                    c.mismatches.push(format!("owner {owner}: {why}"));
                }
            }
        }
        c
    }
}
