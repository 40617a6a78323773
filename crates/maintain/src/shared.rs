//! The slow path shared by forwarding threads and the maintenance thread.
//!
//! Forwarding threads own their EMC and megaflow classifiers and never wait
//! for maintenance on a lookup: maintenance changes a megaflow only by
//! swapping its actions atomically or marking it dead. Upcalls and updates
//! serialise on one lock (the slow path only); a forwarding pass takes it
//! only if it is free ([`SlowPath::try_upcall`]), parking the packet
//! otherwise, so that an update never stalls forwarding. Invariant: a megaflow installed
//! from an upcall answered before an update is revalidated against the new
//! rules when it is registered, so no update can slip between translation and
//! indexing. What NORMAL learns from an upcall's packet is put in the MAC
//! table, and the flows its learn actions make in the rule tables, under
//! the same lock, as updates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kairo_datapath::{Megaflow, SlowPath, Upcall};
use kairo_flow::FlowKey;
use kairo_xlate::{Pipeline, Traversal};

use crate::{revalidate, Control, Ukey, Verdict};

/// A handle on the shared control state (cheap to clone, one per thread).
pub struct SharedControl {
    control: Arc<Mutex<Control>>,
    /// Packets forwarded by upcalls without a megaflow to count them,
    /// credited to their traversals when the control state is next locked
    /// (a forwarding thread never waits to credit them).
    credits: Arc<Mutex<Vec<crate::Moved>>>,
    /// How many forwarding threads have packets parked for the slow path.
    parked: Arc<AtomicUsize>,
    /// Whether this handle's thread is counted in `parked`.
    counted: bool,
}

impl Clone for SharedControl {
    /// Another thread's handle (not counted as having parked packets).
    fn clone(&self) -> SharedControl {
        SharedControl {
            control: self.control.clone(),
            credits: self.credits.clone(),
            parked: self.parked.clone(),
            counted: false,
        }
    }
}

impl Drop for SharedControl {
    fn drop(&mut self) {
        if self.counted {
            self.parked.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Longest an update lets forwarding threads with parked packets take the
/// slow path first ([`SharedControl::lock_for_update`]).
pub const YIELD_TO_PARKED: std::time::Duration = std::time::Duration::from_millis(2);

impl SharedControl {
    pub fn new(c: Control) -> SharedControl {
        SharedControl {
            control: Arc::new(Mutex::new(c)),
            credits: Arc::default(),
            parked: Arc::default(),
            counted: false,
        }
    }
    /// Locks the control state (a panic elsewhere never leaves it unusable:
    /// every update is applied whole or not at all).
    pub fn lock(&self) -> MutexGuard<'_, Control> {
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        self.take_credits(&mut c);
        c
    }

    /// Files the credits of packets forwarded without a megaflow with the
    /// counters of departed traversals (when they are kept).
    fn take_credits(&self, c: &mut Control) {
        let mut credits = self.credits.lock().unwrap_or_else(|e| e.into_inner());
        if credits.is_empty() {
            return;
        }
        if c.keep_moved {
            c.moved.append(&mut credits);
        } else {
            credits.clear();
        }
    }
    /// Locks the control state for an update, first letting forwarding
    /// threads with packets parked for the slow path take it (at most
    /// [`YIELD_TO_PARKED`]): back-to-back updates do not starve misses.
    pub fn lock_for_update(&self) -> MutexGuard<'_, Control> {
        let until = std::time::Instant::now() + YIELD_TO_PARKED;
        while self.parked.load(Ordering::Acquire) > 0 && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        self.lock()
    }
    /// How many forwarding threads have packets parked for the slow path.
    pub fn threads_with_parked(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }
    /// Locks the control state if no one holds it (an update, say): None
    /// rather than wait.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Control>> {
        let mut c = match self.control.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        self.take_credits(&mut c);
        Some(c)
    }
}

/// What an upcall does under the lock: translate, and teach the MAC
/// table, the learned flows and the fin timeouts what the packet says.
fn upcall_locked(c: &mut Control, key: &FlowKey) -> Upcall<Traversal> {
    let r = kairo_xlate::translate(&c.pipeline, key);
    let version = c.version;
    if !r.learn.is_empty() {
        c.learn(&r.learn);
    }
    if let Some(learned) = r.traversal.learned.as_deref() {
        let now = c.now_ms;
        c.learn_flows(learned.iter().map(|l| (l.clone(), now)));
    }
    if let Some(fin) = r.traversal.fin.as_deref() {
        if crate::fin_or_rst(key.get(kairo_flow::Field::TcpFlags) as u16) {
            c.cut_timeouts(fin.to_vec());
        }
    }
    Upcall { actions: r.actions, mask: r.mask, note: r.traversal, version, install: !r.slow }
}

/// Registers a megaflow installed from an upcall answered at `version`,
/// bringing it up to date first if the rules changed since.
fn installed_locked(c: &mut Control, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) {
    let mf = Arc::new(Ukey::new(mf.clone(), c.interner.traversal(traversal)));
    if c.version != version {
        // The rules changed since this translation: bring it up to date first.
        match revalidate::revalidate(&c.pipeline, &mf, &revalidate::pipeline_only_mask()) {
            // Only a pass's memo shares; `revalidate` translates whole.
            Verdict::Keep | Verdict::Shared { .. } => {}
            Verdict::Update(r) => {
                let m = mf.set_actions(r.actions, r.traversal);
                if c.keep_moved {
                    c.moved.push(m);
                }
            }
            Verdict::Evict => {
                mf.kill();
                if c.keep_moved {
                    c.moved.push(mf.leaving());
                }
                return;
            }
        }
    }
    c.add(mf);
}

impl SlowPath for SharedControl {
    /// The traversal, for the megaflow's maintenance record.
    type Note = Traversal;

    /// A packet NORMAL saw teaches the MAC table (an update, when the table
    /// changes: the megaflow made before it is then revalidated as it is
    /// installed, as any made before an update is).
    fn upcall(&mut self, key: &FlowKey) -> Upcall<Traversal> {
        upcall_locked(&mut self.lock(), key)
    }

    fn installed(&mut self, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) {
        installed_locked(&mut self.lock(), mf, traversal, version)
    }

    /// None while an update (or another upcall) holds the lock.
    fn try_upcall(&mut self, key: &FlowKey) -> Option<Upcall<Traversal>> {
        let mut c = self.try_lock()?;
        Some(upcall_locked(&mut c, key))
    }

    fn try_installed(&mut self, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) -> Result<(), Traversal> {
        let Some(mut c) = self.try_lock() else { return Err(traversal) };
        installed_locked(&mut c, mf, traversal, version);
        Ok(())
    }

    /// Credited when the lock is next taken (by anyone).
    fn uncached(&mut self, traversal: Traversal, bytes: u64) {
        let m = crate::Moved { traversal: Arc::new(traversal), packets: 1, bytes, left: None };
        self.credits.lock().unwrap_or_else(|e| e.into_inner()).push(m);
    }

    fn removed(&mut self, mf: &Arc<Megaflow>) {
        removed_locked(&mut self.lock(), mf)
    }

    fn busy(&self) -> bool {
        self.try_lock().is_none()
    }

    fn parked(&mut self, n: usize) {
        if (n > 0) != self.counted {
            self.counted = n > 0;
            if self.counted {
                self.parked.fetch_add(1, Ordering::Release);
            } else {
                self.parked.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

/// A megaflow the datapath let go of leaves the engine.
fn removed_locked(c: &mut Control, mf: &Arc<Megaflow>) {
    if let Some(uk) = c.engine.remove(mf) {
        if c.keep_moved {
            c.moved.push(uk.leaving());
        }
    }
}

/// The slow path through a lock already held (a forwarding pass that took
/// it with [`SharedControl::try_lock`] for its housekeeping).
pub struct Held<'a>(pub &'a mut Control);

impl SlowPath for Held<'_> {
    type Note = Traversal;
    fn upcall(&mut self, key: &FlowKey) -> Upcall<Traversal> {
        upcall_locked(self.0, key)
    }
    fn installed(&mut self, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) {
        installed_locked(self.0, mf, traversal, version)
    }
    fn removed(&mut self, mf: &Arc<Megaflow>) {
        removed_locked(self.0, mf)
    }
}

/// A slow path that translates and keeps no maintenance record: for
/// offline replay and lookup benchmarks, whose rules never change.
pub struct Translate<'a>(pub &'a Pipeline);

impl SlowPath for Translate<'_> {
    type Note = ();
    fn upcall(&mut self, key: &FlowKey) -> Upcall<()> {
        let r = kairo_xlate::translate(self.0, key);
        Upcall { actions: r.actions, mask: r.mask, note: (), version: 0, install: !r.slow }
    }
}
