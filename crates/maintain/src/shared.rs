//! The slow path shared by forwarding threads and the maintenance thread.
//!
//! Forwarding threads own their EMC and megaflow classifiers and never wait
//! for maintenance on a lookup: maintenance changes a megaflow only by
//! swapping its actions atomically or marking it dead. Upcalls and updates
//! serialise on one lock (the slow path only). Invariant: a megaflow installed
//! from an upcall answered before an update is revalidated against the new
//! rules when it is registered, so no update can slip between translation and
//! indexing. What NORMAL learns from an upcall's packet is put in the MAC
//! table, and the flows its learn actions make in the rule tables, under
//! the same lock, as updates.

use std::sync::{Arc, Mutex, MutexGuard};

use kairo_datapath::{Megaflow, SlowPath, Upcall};
use kairo_flow::FlowKey;
use kairo_xlate::{Pipeline, Traversal};

use crate::{revalidate, Control, Ukey, Verdict};

/// A handle on the shared control state (cheap to clone, one per thread).
#[derive(Clone)]
pub struct SharedControl(pub Arc<Mutex<Control>>);

impl SharedControl {
    pub fn new(c: Control) -> SharedControl {
        SharedControl(Arc::new(Mutex::new(c)))
    }
    /// Locks the control state (a panic elsewhere never leaves it unusable:
    /// every update is applied whole or not at all).
    pub fn lock(&self) -> MutexGuard<'_, Control> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SlowPath for SharedControl {
    /// The traversal, for the megaflow's maintenance record.
    type Note = Traversal;

    /// A packet NORMAL saw teaches the MAC table (an update, when the table
    /// changes: the megaflow made before it is then revalidated as it is
    /// installed, as any made before an update is).
    fn upcall(&mut self, key: &FlowKey) -> Upcall<Traversal> {
        let mut c = self.lock();
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

    fn installed(&mut self, mf: &Arc<Megaflow>, traversal: Traversal, version: u64) {
        let mut c = self.lock();
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

    fn removed(&mut self, mf: &Arc<Megaflow>) {
        let mut c = self.lock();
        if let Some(uk) = c.engine.remove(mf) {
            if c.keep_moved {
                c.moved.push(uk.leaving());
            }
        }
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
