//! The maintenance record of one cached megaflow (Open vSwitch's
//! `udpif_key`): the datapath entry it is about, the traversal that produced
//! its current actions, the number of the shared action cell it reads them
//! from, and the counts already credited to rules.
//!
//! The datapath's [`Megaflow`] holds only what forwarding reads and counts;
//! everything maintenance needs beyond that lives here, and maintenance
//! changes a megaflow's actions only through this record, so its traversal
//! and cell number always go with the actions it gave. Invariants: the
//! traversal is the one the megaflow's current actions came from, or the
//! one before it while a follow-up is pending ([`Ukey::set_actions_first`],
//! a cell's publish); `cell_tag` is the number of the cell the megaflow reads
//! from (0: its own actions); packets and bytes above `accounted` were
//! gathered under the current traversal.
//!
//! A record dereferences to its megaflow (key, mask, actions, counters).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kairo_datapath::{Actions, Cell, Megaflow};
use kairo_odp::DpAction;
use kairo_xlate::Traversal;

/// The maintenance record of one megaflow.
#[derive(Debug)]
pub struct Ukey {
    mf: Arc<Megaflow>,
    /// What translation went through; replaced with the actions. Only
    /// cache maintenance reads and writes it (forwarding reads the
    /// megaflow), its revalidation threads at most reading it at once for a
    /// moment: an uncontended lock, cheaper to replace than an `ArcSwap`,
    /// whose every store visits each thread's read slots.
    traversal: Mutex<Arc<Traversal>>,
    /// The cell the megaflow reads its actions from (0: none).
    cell_tag: AtomicU32,
    /// Packets and bytes already credited to earlier traversals (per-rule
    /// counters: what is above these belongs to the current traversal).
    accounted: [AtomicU64; 2],
}

/// The counters a megaflow gathered under a traversal it no longer has.
#[derive(Debug, Clone)]
pub struct Moved {
    pub traversal: Arc<Traversal>,
    pub packets: u64,
    pub bytes: u64,
    /// When the megaflow left the cache (evicted or expired): the megaflow,
    /// whose packets and bytes *above* `packets` and `bytes` (what earlier
    /// traversals were credited) belong to `traversal`, until the datapath
    /// lets go of it (a packet in flight may still count on it).
    pub left: Option<Arc<Megaflow>>,
}

impl Moved {
    /// Packets and bytes this credits to its traversal now.
    pub fn counts(&self) -> (u64, u64) {
        match &self.left {
            Some(mf) => (mf.packets().saturating_sub(self.packets), mf.bytes().saturating_sub(self.bytes)),
            None => (self.packets, self.bytes),
        }
    }

    /// Whether its counts are final: nothing but this holds a megaflow that left.
    pub fn settled(&self) -> bool {
        self.left.as_ref().is_none_or(|mf| mf.is_dead() && Arc::strong_count(mf) == 1)
    }
}

/// The address a megaflow's record is filed under (the datapath names a
/// megaflow leaving the cache by reference).
pub(crate) fn addr(mf: &Megaflow) -> usize {
    mf as *const Megaflow as usize
}

impl std::ops::Deref for Ukey {
    type Target = Megaflow;
    fn deref(&self) -> &Megaflow {
        &self.mf
    }
}

impl Ukey {
    /// The record of a megaflow just installed from a translation that went
    /// through `traversal`.
    pub fn new(mf: Arc<Megaflow>, traversal: Arc<Traversal>) -> Ukey {
        Ukey {
            mf,
            traversal: Mutex::new(traversal),
            cell_tag: AtomicU32::new(0),
            accounted: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The datapath entry.
    pub fn megaflow(&self) -> &Arc<Megaflow> {
        &self.mf
    }

    pub fn traversal(&self) -> Arc<Traversal> {
        self.slot().clone()
    }

    /// The traversal's slot (a poisoned lock still holds a whole `Arc`:
    /// nothing is left half-written by a panic elsewhere).
    fn slot(&self) -> MutexGuard<'_, Arc<Traversal>> {
        self.traversal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tag of the cell the actions are read from (0: its own).
    #[inline]
    pub fn cell_tag(&self) -> u32 {
        self.cell_tag.load(Ordering::Relaxed)
    }

    /// Packets and bytes gathered under the current traversal.
    pub fn unaccounted(&self) -> (u64, u64) {
        (
            self.mf.packets().saturating_sub(self.accounted[0].load(Ordering::Relaxed)),
            self.mf.bytes().saturating_sub(self.accounted[1].load(Ordering::Relaxed)),
        )
    }

    /// Closes the current traversal's account: what was gathered so far is
    /// its (returned), what comes after belongs to the next.
    fn close_account(&self) -> (u64, u64) {
        let (packets, bytes) = self.unaccounted();
        self.accounted[0].fetch_add(packets, Ordering::Relaxed);
        self.accounted[1].fetch_add(bytes, Ordering::Relaxed);
        (packets, bytes)
    }

    /// Replaces the actions (and the traversal that produced them); the
    /// megaflow leaves any cell. Returns the old traversal with the counters
    /// gathered under it.
    pub fn set_actions(&self, mut actions: Vec<DpAction>, mut traversal: Traversal) -> Moved {
        actions.shrink_to_fit();
        traversal.shrink_to_fit();
        self.set_shared(Arc::new(actions), Arc::new(traversal))
    }

    /// [`Ukey::set_actions`] with values that may be shared with other
    /// megaflows (hash-consed).
    pub fn set_shared(&self, actions: Actions, traversal: Arc<Traversal>) -> Moved {
        let (packets, bytes) = self.close_account();
        let old = std::mem::replace(&mut *self.slot(), traversal);
        self.own(actions);
        Moved { traversal: old, packets, bytes, left: None }
    }

    /// The record of a megaflow that leaves the cache: its current
    /// traversal gets what the megaflow counted, and counts until the
    /// datapath lets go of it ([`Moved::left`]).
    pub fn leaving(&self) -> Moved {
        let accounted = |i: usize| self.accounted[i].load(Ordering::Relaxed);
        Moved { traversal: self.traversal(), packets: accounted(0), bytes: accounted(1), left: Some(self.mf.clone()) }
    }

    /// Replaces the actions alone, its traversal to follow
    /// ([`Ukey::follow_with`]): what was gathered so far is the current
    /// traversal's (returned), what comes after belongs to the one that
    /// follows.
    pub fn set_actions_first(&self, actions: Actions) -> Moved {
        let (packets, bytes) = self.close_account();
        self.own(actions);
        Moved { traversal: self.traversal(), packets, bytes, left: None }
    }

    /// Gives the megaflow the traversal that produced the actions its
    /// shared cell was given ([`Cell::publish`]): what was gathered so far
    /// is the current traversal's (returned; packets since the publish
    /// included), what comes after belongs to the new one.
    pub fn follow_cell(&self, traversal: Arc<Traversal>) -> Moved {
        let (packets, bytes) = self.close_account();
        let old = std::mem::replace(&mut *self.slot(), traversal);
        Moved { traversal: old, packets, bytes, left: None }
    }

    /// Gives the megaflow the traversal that produced the actions
    /// [`Ukey::set_actions_first`] set (the counters since stay with it).
    pub fn follow_with(&self, traversal: Arc<Traversal>) {
        *self.slot() = traversal;
    }

    /// Actions of its own, out of any cell.
    fn own(&self, actions: Actions) {
        self.mf.set_actions(actions);
        self.cell_tag.store(0, Ordering::Relaxed);
    }

    /// Reads the actions from cell `tag` from now on, whatever they are.
    pub fn move_to(&self, cell: Arc<Cell>, tag: u32) {
        self.mf.move_to(cell);
        self.cell_tag.store(tag, Ordering::Relaxed);
    }

    /// Reads the actions from cell `tag`, which holds the same actions as
    /// the megaflow has (readers see no change).
    pub fn join(&self, cell: Arc<Cell>, tag: u32) {
        self.mf.join(cell);
        self.cell_tag.store(tag, Ordering::Relaxed);
    }

    /// Holds its actions itself again (the same actions), out of its cell.
    pub fn detach(&self) {
        self.mf.detach();
        self.cell_tag.store(0, Ordering::Relaxed);
    }
}
