//! Hash-consing of megaflow actions (and, through [`Table`], of whatever
//! else many megaflows hold equal copies of: cache maintenance keeps its
//! traversals in one).
//!
//! Millions of megaflows go through the same few thousand rule combinations:
//! their action lists are equal value for value. The datapath keeps one
//! shared copy of each (a megaflow holds an `Arc` to it), which at 1M OF-DPA
//! megaflows is a few tens of thousands of copies instead of a million.
//!
//! Invariant: a value handed out is equal to the value asked for (sharing is
//! never visible to readers, who only ever see immutable `Arc`s). The table
//! holds values weakly: a value is freed as soon as the last megaflow lets go
//! of it (cache maintenance replacing a million traversals frees the old ones
//! as it goes, instead of holding both until the next purge). What is left of
//! dead values (a weak reference each) is swept by `Table::purge` when the
//! table has doubled since the last sweep, so it stays within a constant
//! factor of the live values.

use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Weak};

use hashbrown::HashTable;
use kairo_odp::DpAction;
use rustc_hash::FxBuildHasher;

/// One hash-consed table: (hash of the value, the value held weakly).
pub struct Table<T: Hash + Eq> {
    set: HashTable<(u64, Weak<T>)>,
    purge_at: usize,
}

impl<T: Hash + Eq> Default for Table<T> {
    fn default() -> Self {
        Table { set: HashTable::new(), purge_at: 1024 }
    }
}

impl<T: Hash + Eq> Table<T> {
    /// The shared copy of `v`; a new value is first passed to `keep` (to
    /// drop spare capacity: it may be held for long).
    pub fn get(&mut self, mut v: T, keep: impl FnOnce(&mut T)) -> Arc<T> {
        let h = FxBuildHasher.hash_one(&v);
        // Each candidate is upgraded once, and the copy found kept (an
        // upgrade is an atomic increment on a line that is often cold).
        let live = self.set.iter_hash(h).filter(|(hh, _)| *hh == h).find_map(|(_, w)| w.upgrade().filter(|a| **a == v));
        if let Some(a) = live {
            return a;
        }
        if self.set.len() >= self.purge_at {
            self.purge();
        }
        keep(&mut v);
        let a = Arc::new(v);
        self.set.insert_unique(h, (h, Arc::downgrade(&a)), |(hh, _)| *hh);
        a
    }

    fn purge(&mut self) {
        self.set.retain(|(_, w)| w.strong_count() > 0);
        self.purge_at = (self.set.len() * 2).max(1024);
    }

    /// Values some megaflow still holds.
    pub fn live(&self) -> usize {
        self.set.iter().filter(|(_, w)| w.strong_count() > 0).count()
    }
}

/// Shared action lists.
#[derive(Default)]
pub struct Interner {
    actions: Table<Vec<DpAction>>,
}

impl Interner {
    pub fn actions(&mut self, a: Vec<DpAction>) -> Arc<Vec<DpAction>> {
        self.actions.get(a, |a| a.shrink_to_fit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Table<Vec<u32>> {
        fn get_vec(&mut self, v: Vec<u32>) -> Arc<Vec<u32>> {
            self.get(v, |v| v.shrink_to_fit())
        }
    }

    #[test]
    fn equal_values_are_shared_and_freed_with_their_last_holder() {
        let mut t: Table<Vec<u32>> = Table::default();
        let a = t.get_vec(vec![1, 2, 3]);
        let b = t.get_vec(vec![1, 2, 3]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = t.get_vec(vec![4]);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(t.live(), 2);
        // The table does not keep a value alive: once its holders are gone it
        // is freed (the weak reference sees it), and asking again makes a new one.
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none());
        assert_eq!(t.live(), 1);
        let d = t.get_vec(vec![1, 2, 3]);
        assert_eq!(*d, vec![1, 2, 3]);
        // Sweeping drops the dead entries only.
        t.purge();
        assert_eq!((t.set.len(), t.live()), (2, 2));
        assert!(Arc::ptr_eq(&t.get_vec(vec![4]), &c));
    }
}
