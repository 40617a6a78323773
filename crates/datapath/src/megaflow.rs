//! A megaflow: a cached translation (masked key -> datapath actions) shared
//! by the classifier that finds it, the EMC entries that point at it, and the
//! cache maintenance that keeps it true.
//!
//! Invariants: the key and mask never change (a change of mask is an eviction
//! plus a new megaflow); the actions are swapped atomically as a whole (a
//! reader sees the old list or the new one, never a mix); once `dead` is set it
//! is never cleared, and a dead megaflow is never used to forward.
//!
//! A megaflow holds its own actions, or reads them from a [`Cell`] it
//! shares with other megaflows that cache maintenance has proven to be in
//! the same state from some table on (so that one rule change gives them
//! all the same new actions, published once). Giving a megaflow actions of
//! its own ([`Megaflow::set_shared`], [`Megaflow::set_actions_first`])
//! takes it out of its shared cell; the others keep theirs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use kairo_flow::{FlowKey, FlowMask};
use kairo_xlate::{DpAction, Traversal};

/// The datapath actions of a megaflow (shared, immutable once published).
pub type Actions = Arc<Vec<DpAction>>;

/// Where megaflows read their actions: one megaflow's, or shared by several
/// (a publish here is seen by all of them, each reader seeing the old list
/// or the new one).
#[derive(Debug)]
pub struct Cell {
    actions: ArcSwap<Vec<DpAction>>,
    /// The number its maker gave it (cache maintenance: which of its
    /// cells; never 0, which stands for no cell).
    pub tag: u32,
}

impl Cell {
    pub fn new(actions: Actions, tag: u32) -> Cell {
        Cell { actions: ArcSwap::from(actions), tag }
    }
    /// The current actions (one atomic load).
    #[inline]
    pub fn actions(&self) -> Actions {
        self.actions.load_full()
    }
    /// Replaces the actions of every megaflow that reads them here.
    pub fn publish(&self, actions: Actions) {
        self.actions.store(actions);
    }
}

#[derive(Debug)]
pub struct Megaflow {
    /// The key of the packet that created it: what revalidation re-translates
    /// (as Open vSwitch keeps the flow key of each ukey; translating another
    /// key of the region would give the same actions but may need other
    /// bits). The classifier matches it under `mask`; the masked key is
    /// derived ([`Megaflow::key`]), not stored.
    pub rep: FlowKey,
    pub mask: Arc<FlowMask>,
    /// Its own actions, read while it shares no cell.
    actions: ArcSwap<Vec<DpAction>>,
    /// The shared cell it reads its actions from instead, if any.
    cell: ArcSwapOption<Cell>,
    dead: AtomicBool,
    packets: AtomicU64,
    bytes: AtomicU64,
    last_used: AtomicU64,
    /// What translation went through (for maintenance); replaced with the actions.
    traversal: ArcSwap<Traversal>,
    /// Packets and bytes already credited to earlier translations (per-rule
    /// counters: what is above these belongs to the current traversal).
    accounted: [AtomicU64; 2],
}

/// The counters a megaflow gathered under a traversal it no longer has.
#[derive(Debug, Clone)]
pub struct Moved {
    pub traversal: Arc<Traversal>,
    pub packets: u64,
    pub bytes: u64,
}

impl Megaflow {
    pub fn new(key: FlowKey, mask: Arc<FlowMask>, actions: Vec<DpAction>, traversal: Traversal, now: u64) -> Megaflow {
        Megaflow::shared(key, mask, Arc::new(actions), Arc::new(traversal), now)
    }

    /// A megaflow over action and traversal values that may be shared with
    /// other megaflows (see [`crate::intern`]).
    pub fn shared(
        key: FlowKey,
        mask: Arc<FlowMask>,
        actions: Arc<Vec<DpAction>>,
        traversal: Arc<Traversal>,
        now: u64,
    ) -> Megaflow {
        Megaflow {
            rep: key,
            mask,
            actions: ArcSwap::from(actions),
            cell: ArcSwapOption::empty(),
            dead: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_used: AtomicU64::new(now),
            traversal: ArcSwap::from(traversal),
            accounted: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The current actions (two atomic loads: the cell, if any, and the
    /// actions).
    #[inline]
    pub fn actions(&self) -> Actions {
        match self.cell.load().as_ref() {
            Some(c) => c.actions(),
            None => self.actions.load_full(),
        }
    }

    /// Whether the actions are read from `cell` (no reference taken).
    #[inline]
    pub fn reads_from(&self, cell: &Arc<Cell>) -> bool {
        self.cell.load().as_ref().is_some_and(|c| Arc::ptr_eq(c, cell))
    }

    /// The tag of the cell the actions are read from (0: its own).
    #[inline]
    pub fn cell_tag(&self) -> u32 {
        self.cell.load().as_ref().map_or(0, |c| c.tag)
    }

    /// Holds its actions itself again (the same actions: readers see no
    /// change), if it read them from a cell: they are copied in first,
    /// then the cell let go.
    pub fn detach(&self) {
        if let Some(c) = self.cell.load_full() {
            self.actions.store(c.actions());
            self.cell.store(None);
        }
    }

    /// Gives it `actions` of its own, out of any cell (a reader sees the
    /// old actions or these).
    fn own(&self, actions: Actions) {
        self.actions.store(actions);
        self.cell.store(None);
    }

    /// Reads the actions from `cell` from now on, whatever they are (a
    /// reader sees the old actions or the cell's).
    pub fn move_to(&self, cell: Arc<Cell>) {
        self.cell.store(Some(cell));
    }

    /// Reads the actions from `cell` from now on (which holds the same
    /// actions as the megaflow has: readers see no change).
    pub fn join(&self, cell: Arc<Cell>) {
        debug_assert!(*cell.actions() == *self.actions());
        self.cell.store(Some(cell));
    }

    /// Replaces the actions (and the traversal that produced them) atomically.
    /// Returns the old traversal with the counters gathered under it.
    pub fn set_actions(&self, mut actions: Vec<DpAction>, mut traversal: Traversal) -> Moved {
        actions.shrink_to_fit();
        traversal.shrink_to_fit();
        self.set_shared(Arc::new(actions), Arc::new(traversal))
    }

    /// [`Megaflow::set_actions`] with values that may be shared with other
    /// megaflows (see [`crate::intern`]).
    pub fn set_shared(&self, actions: Actions, traversal: Arc<Traversal>) -> Moved {
        let (packets, bytes) = self.unaccounted();
        self.accounted[0].fetch_add(packets, Ordering::Relaxed);
        self.accounted[1].fetch_add(bytes, Ordering::Relaxed);
        let old = self.traversal.swap(traversal);
        self.own(actions);
        Moved { traversal: old, packets, bytes }
    }

    /// Replaces the actions alone, its traversal to follow
    /// ([`Megaflow::follow_with`]): what was gathered so far is the current
    /// traversal's (returned), what comes after belongs to the one that
    /// follows.
    pub fn set_actions_first(&self, actions: Actions) -> Moved {
        let (packets, bytes) = self.unaccounted();
        self.accounted[0].fetch_add(packets, Ordering::Relaxed);
        self.accounted[1].fetch_add(bytes, Ordering::Relaxed);
        self.own(actions);
        Moved { traversal: self.traversal(), packets, bytes }
    }

    /// Gives the megaflow the traversal that produced the actions its
    /// shared cell was given ([`Cell::publish`]): what was gathered so far
    /// is the current traversal's (returned; packets since the publish
    /// included), what comes after belongs to the new one.
    pub fn follow_cell(&self, traversal: Arc<Traversal>) -> Moved {
        let (packets, bytes) = self.unaccounted();
        self.accounted[0].fetch_add(packets, Ordering::Relaxed);
        self.accounted[1].fetch_add(bytes, Ordering::Relaxed);
        let old = self.traversal.swap(traversal);
        Moved { traversal: old, packets, bytes }
    }

    /// Gives the megaflow the traversal that produced the actions
    /// [`Megaflow::set_actions_first`] set (the counters since stay with it).
    pub fn follow_with(&self, traversal: Arc<Traversal>) {
        self.traversal.store(traversal);
    }

    /// Packets and bytes gathered under the current traversal.
    pub fn unaccounted(&self) -> (u64, u64) {
        (
            self.packets().saturating_sub(self.accounted[0].load(Ordering::Relaxed)),
            self.bytes().saturating_sub(self.accounted[1].load(Ordering::Relaxed)),
        )
    }

    pub fn traversal(&self) -> Arc<Traversal> {
        self.traversal.load_full()
    }

    #[inline]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks the megaflow evicted: no packet is forwarded by it from now on.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
    }

    /// The masked key: what the megaflow matches.
    pub fn key(&self) -> FlowKey {
        self.rep.masked(&self.mask)
    }

    /// Does packet `k` fall in this megaflow?
    #[inline]
    pub fn matches(&self, k: &FlowKey) -> bool {
        k.eq_masked(&self.rep, &self.mask)
    }

    #[inline]
    pub fn used(&self, bytes: u64, now: u64) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.last_used.store(now, Ordering::Relaxed);
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }
}
