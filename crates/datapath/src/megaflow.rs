//! A megaflow: a cached translation (masked key -> datapath actions) shared
//! by the classifier that finds it, the EMC entries that point at it, and the
//! cache maintenance that keeps it true. It holds what forwarding reads
//! (key, mask, actions or the cell they are read from, the dead flag) and
//! what forwarding counts (packets, bytes, last use); what maintenance keeps
//! about it (the traversal that produced it, its cell's number, the counts
//! already credited to rules) is maintenance's own record, as Open vSwitch
//! keeps the revalidator's `udpif_key` apart from the datapath flow.
//!
//! Invariants: the key and mask never change (a change of mask is an eviction
//! plus a new megaflow); the actions are swapped atomically as a whole (a
//! reader sees the old list or the new one, never a mix), by one writer at a
//! time (cache maintenance, under the control state; forwarding only reads);
//! once `dead` is set it is never cleared, and a dead megaflow is never used
//! to forward.
//!
//! A megaflow holds its own actions, or reads them from a [`Cell`] it
//! shares with other megaflows that cache maintenance has proven to be in
//! the same state from some table on (so that one rule change gives them
//! all the same new actions, published once). Giving a megaflow actions of
//! its own ([`Megaflow::set_actions`]) takes it out of its shared cell; the
//! others keep theirs.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use kairo_flow::{FlowKey, FlowMask};
use kairo_odp::DpAction;

/// The datapath actions of a megaflow (shared, immutable once published).
pub type Actions = Arc<Vec<DpAction>>;

/// Where megaflows read their actions: one megaflow's, or shared by several
/// (a publish here is seen by all of them, each reader seeing the old list
/// or the new one).
#[derive(Debug)]
pub struct Cell {
    actions: ArcSwap<Vec<DpAction>>,
}

impl Cell {
    pub fn new(actions: Actions) -> Cell {
        Cell { actions: ArcSwap::from(actions) }
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
    /// The TCP flags its packets carried, ORed (Open vSwitch's flow
    /// statistics keep them: `fin_timeout` reads FIN and RST there).
    tcp_flags: AtomicU32,
}

impl Megaflow {
    pub fn new(key: FlowKey, mask: Arc<FlowMask>, actions: Vec<DpAction>, now: u64) -> Megaflow {
        Megaflow::shared(key, mask, Arc::new(actions), now)
    }

    /// A megaflow over an action list that may be shared with other
    /// megaflows (see [`crate::intern`]).
    pub fn shared(key: FlowKey, mask: Arc<FlowMask>, actions: Arc<Vec<DpAction>>, now: u64) -> Megaflow {
        Megaflow {
            rep: key,
            mask,
            actions: ArcSwap::from(actions),
            cell: ArcSwapOption::empty(),
            dead: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_used: AtomicU64::new(now),
            tcp_flags: AtomicU32::new(0),
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
    pub fn set_actions(&self, actions: Actions) {
        self.actions.store(actions);
        // One writer at a time (see the module doc), so what this load sees
        // stays until it stores: a store costs a visit to every thread's read
        // slots, and most megaflows read from no cell.
        if self.cell.load().is_some() {
            self.cell.store(None);
        }
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
    pub fn used(&self, bytes: u64, now: u64, tcp_flags: u16) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.last_used.store(now, Ordering::Relaxed);
        if tcp_flags != 0 {
            self.tcp_flags.fetch_or(u32::from(tcp_flags), Ordering::Relaxed);
        }
    }

    /// The TCP flags its packets have carried so far.
    pub fn tcp_flags(&self) -> u16 {
        self.tcp_flags.load(Ordering::Relaxed) as u16
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
