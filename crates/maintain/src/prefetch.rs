//! Read-ahead: touching what an update is about to read, level by level
//! across many items, before the update reads it item by item.
//!
//! When it pays: on a cold cache (hundreds of thousands to millions of
//! entries, between updates), each item an update handles starts a chain of
//! dependent cold reads (entry, megaflow, traversal, its key versions; the
//! rules its visits matched). Read item by item, each miss waits on the one
//! before (200-300 ns each here). Read level by level across the items
//! first, the misses of one level are independent and overlap; the update
//! then finds its chains warm. At 1M-10M Antrea entries it took pod moves
//! from 105-110 to 91 us and policy adds' candidates from 108 to 84 us (see
//! `docs/performance.md`). When it does not: on warm data it is pure
//! overhead, so callers use it only where a pass is small (a few entries or
//! cells, read once) and cold; past a few dozen items the later ones are
//! warm anyway.
//!
//! Invariant: read-ahead changes nothing but the cache: every read goes into
//! a [`ReadAhead`] word that is handed to [`std::hint::black_box`] (so the
//! compiler keeps the loads) and is never used otherwise.

use kairo_ofproto::{Action, Rule};
use kairo_xlate::{Pipeline, Step};

/// A word the loads of a read-ahead are folded into, kept alive by
/// [`std::hint::black_box`] when dropped.
#[derive(Default)]
pub struct ReadAhead(u64);

impl ReadAhead {
    /// Folds a loaded value in.
    #[inline]
    pub fn take(&mut self, w: u64) {
        self.0 ^= w;
    }

    /// Reads one level of every item: `load` of each, folded in.
    #[inline]
    pub fn level<T>(&mut self, items: &[T], load: impl Fn(&T) -> u64) {
        for it in items {
            self.0 ^= load(it);
        }
    }

    /// Reads what translating through `steps` first reads of the pipeline at
    /// each (the table's read mask, the rule and its instructions), level by
    /// level across the steps: a re-translation of a suffix at 10M entries
    /// is mostly such misses.
    pub fn steps(&mut self, p: &Pipeline, steps: &[Step]) {
        let rules: Vec<&Rule> = steps
            .iter()
            .filter_map(|st| {
                if let Some(t) = p.table(st.table) {
                    self.take(t.cls.read_mask().w[0]);
                }
                st.outcome.rule().and_then(|id| p.rule(st.table, id).map(|r| &**r))
            })
            .collect();
        self.level(&rules, |r| r.inst.apply.len() as u64 ^ r.inst.write.len() as u64);
        self.level(&rules, |r| r.inst.apply.first().map_or(0, |a| matches!(a, Action::Output(_)) as u64));
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        std::hint::black_box(self.0);
    }
}
