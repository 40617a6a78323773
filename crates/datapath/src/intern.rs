//! Hash-consing of megaflow actions and traversals.
//!
//! Millions of megaflows go through the same few thousand rule combinations:
//! their action lists and traversals are equal value for value. The datapath
//! keeps one shared copy of each (a megaflow holds an `Arc` to it), which at
//! 1M OF-DPA megaflows is a few tens of thousands of copies instead of a
//! million of each.
//!
//! Invariant: a value handed out is equal to the value asked for (sharing is
//! never visible to readers, who only ever see immutable `Arc`s); values no
//! megaflow holds any more are dropped by [`Interner::purge`], which runs when
//! the table has doubled since the last purge, so the table stays within a
//! constant factor of the live values.

use std::hash::Hash;
use std::sync::Arc;

use kairo_xlate::{DpAction, Traversal};
use rustc_hash::FxHashSet;

/// One hash-consed table.
struct Table<T: Hash + Eq> {
    set: FxHashSet<Arc<T>>,
    purge_at: usize,
}

impl<T: Hash + Eq> Default for Table<T> {
    fn default() -> Self {
        Table { set: FxHashSet::default(), purge_at: 1024 }
    }
}

impl<T: Hash + Eq> Table<T> {
    fn get(&mut self, v: T) -> Arc<T> {
        if let Some(a) = self.set.get(&v) {
            return a.clone();
        }
        if self.set.len() >= self.purge_at {
            self.purge();
        }
        let a = Arc::new(v);
        self.set.insert(a.clone());
        a
    }
    fn purge(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
        self.purge_at = (self.set.len() * 2).max(1024);
    }
}

/// Shared action lists and traversals.
#[derive(Default)]
pub struct Interner {
    actions: Table<Vec<DpAction>>,
    traversals: Table<Traversal>,
}

impl Interner {
    pub fn actions(&mut self, a: Vec<DpAction>) -> Arc<Vec<DpAction>> {
        self.actions.get(a)
    }
    pub fn traversal(&mut self, t: Traversal) -> Arc<Traversal> {
        self.traversals.get(t)
    }
    /// Distinct (action lists, traversals) held.
    pub fn len(&self) -> (usize, usize) {
        (self.actions.set.len(), self.traversals.set.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}
