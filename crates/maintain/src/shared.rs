//! The slow path shared by forwarding threads and the maintenance thread.
//!
//! Forwarding threads own their EMC and megaflow classifiers and never wait
//! for maintenance on a lookup: maintenance changes a megaflow only by
//! swapping its actions atomically or marking it dead. Updates hold the
//! control state throughout; a forwarding pass's upcall takes it only if it
//! is free ([`SlowPath::try_upcall`]), else translates against the published
//! pipeline ([`crate::published`]) and leaves the megaflow's registration
//! and what the packet taught for whoever takes the control state next
//! (every update drains them before it returns). Only while the tables
//! themselves change is a missed packet parked. Invariant: a megaflow
//! installed from an upcall answered before an update is revalidated against
//! the new rules when it is registered, or refused, so no update can slip
//! between translation and indexing. What NORMAL learns from an upcall's
//! packet is put in the MAC table, and the flows its learn actions make in
//! the rule tables, with the control state held, as updates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kairo_datapath::{Megaflow, SlowPath, Upcall};
use kairo_flow::FlowKey;
use kairo_xlate::{Pipeline, Traversal};

use crate::published::{Lessons, Published, Waiting};
use crate::Control;

/// A handle on the shared control state (cheap to clone, one per thread).
pub struct SharedControl {
    control: Arc<Mutex<Control>>,
    /// The control state's published pipeline (read without its lock).
    published: Arc<Published>,
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
            published: self.published.clone(),
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
            published: c.published().clone(),
            control: Arc::new(Mutex::new(c)),
            credits: Arc::default(),
            parked: Arc::default(),
            counted: false,
        }
    }
    /// Locks the control state (a panic elsewhere never leaves it unusable:
    /// every update is applied whole or not at all), first settling what
    /// forwarding threads left while it was held ([`Control::settle`]).
    pub fn lock(&self) -> MutexGuard<'_, Control> {
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        self.take_credits(&mut c);
        c.settle();
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
    /// The published pipeline (its counters of upcalls served while the
    /// control state was held), without the control state's lock.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
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
        c.settle();
        Some(c)
    }
}

/// What an upcall does under the lock: translate, and teach the MAC
/// table, the learned flows and the fin timeouts what the packet says.
fn upcall_locked(c: &mut Control, key: &FlowKey, now: u64) -> Upcall<Traversal> {
    let (r, version) = {
        let p = c.pipeline();
        (kairo_xlate::translate(&p, key), c.version())
    };
    c.teach(lessons(key, &r, now));
    Upcall { actions: r.actions, mask: r.mask, note: r.traversal, version, install: !r.slow }
}

/// What a translated packet teaches: the MACs NORMAL saw, the flows its
/// learn actions made, the timeouts its FIN or RST cut.
fn lessons(key: &FlowKey, r: &kairo_xlate::XlateResult, now: u64) -> Lessons {
    let flows = r.traversal.learned.iter().flatten().map(|l| (l.clone(), now)).collect();
    let fin = crate::fin_or_rst(key.get(kairo_flow::Field::TcpFlags) as u16);
    let cuts = if fin { r.traversal.fin.as_deref().unwrap_or(&[]).to_vec() } else { Vec::new() };
    Lessons { macs: r.learn.iter().map(|&l| (l, now)).collect(), flows, cuts }
}

impl SharedControl {
    /// Translates against the published pipeline, outside the control
    /// state: what the packet taught waits for whoever takes it next.
    fn translate_published(&self, read: crate::published::Read<'_>, key: &FlowKey, now: u64) -> Upcall<Traversal> {
        let r = kairo_xlate::translate(&read.pipeline, key);
        let version = read.version;
        drop(read);
        self.published.translated(lessons(key, &r, now));
        Upcall { actions: r.actions, mask: r.mask, note: r.traversal, version, install: !r.slow }
    }
}

impl SlowPath for SharedControl {
    /// The traversal, for the megaflow's maintenance record.
    type Note = Traversal;

    /// A packet NORMAL saw teaches the MAC table (an update, when the table
    /// changes: the megaflow made before it is then revalidated as it is
    /// installed, as any made before an update is).
    /// As [`SlowPath::try_upcall`], waiting only for a change of the
    /// tables under way (never for an update's maintenance).
    fn upcall(&mut self, key: &FlowKey, now: u64) -> Upcall<Traversal> {
        if let Some(up) = self.try_upcall(key, now) {
            return up;
        }
        self.translate_published(self.published.read_versioned(), key, now)
    }

    fn installed(&mut self, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) {
        self.lock().installed(mf, traversal, version)
    }

    /// Under the control state if it is free; while an update (or another
    /// upcall) holds it, against the published pipeline, what the packet
    /// taught kept for later. None only while the tables are being changed.
    fn try_upcall(&mut self, key: &FlowKey, now: u64) -> Option<Upcall<Traversal>> {
        if let Some(mut c) = self.try_lock() {
            return Some(upcall_locked(&mut c, key, now));
        }
        let read = self.published.try_read()?;
        Some(self.translate_published(read, key, now))
    }

    /// Registered now if the control state is free, else offered for when
    /// it is next taken (refused, so not kept, if the rules changed since
    /// the translation or too many wait).
    fn try_installed(&mut self, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) -> Result<(), Traversal> {
        if let Some(mut c) = self.try_lock() {
            c.installed(mf, traversal, version);
            return Ok(());
        }
        self.published.offer(Waiting { mf: mf.clone(), traversal, version }).map_err(|w| w.traversal)
    }

    /// Credited when the lock is next taken (by anyone).
    fn uncached(&mut self, traversal: Traversal, bytes: u64) {
        let m = crate::Moved { traversal: Arc::new(traversal), packets: 1, bytes, left: None };
        self.credits.lock().unwrap_or_else(|e| e.into_inner()).push(m);
    }

    fn removed(&mut self, mf: &Arc<Megaflow>) {
        removed_locked(&mut self.lock(), mf)
    }

    /// While the tables are being changed (not while an update's
    /// maintenance runs: upcalls translate against the published tables).
    fn busy(&self) -> bool {
        self.published.try_read().is_none()
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
    fn upcall(&mut self, key: &FlowKey, now: u64) -> Upcall<Traversal> {
        upcall_locked(self.0, key, now)
    }
    fn installed(&mut self, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) {
        self.0.installed(mf, traversal, version)
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
    fn upcall(&mut self, key: &FlowKey, _now: u64) -> Upcall<()> {
        let r = kairo_xlate::translate(self.0, key);
        Upcall { actions: r.actions, mask: r.mask, note: (), version: 0, install: !r.slow }
    }
}
