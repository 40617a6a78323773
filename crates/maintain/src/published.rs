//! The pipeline as the control path publishes it to forwarding threads, and
//! what they hand back while the control state is held by someone else.
//!
//! The control state ([`crate::Control`]) is locked for a whole update: the
//! change to the tables, then maintenance and housekeeping, which only read
//! the pipeline. The pipeline itself sits behind a reader-writer lock that a
//! writer holds only while it changes the tables (and bumps the version), so
//! a forwarding thread that misses during maintenance translates against the
//! published pipeline without waiting ([`Published::try_read`]). What such a
//! translation cannot do without the control state waits here, bounded:
//! the megaflow's registration with maintenance ([`Published::offer`]) and
//! what the packet taught (MAC addresses, learned flows, cut timeouts).
//!
//! Invariant: a registration is accepted only at the version it was
//! translated at, checked under the same lock the control path takes to
//! drain them; every update bumps the version as it changes the tables and
//! then drains, revalidating what was translated before it. So no megaflow
//! translated against old rules outlives an acknowledged update: it is
//! either refused (the datapath does not keep it) or brought up to date
//! before the acknowledgement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use kairo_datapath::Megaflow;
use kairo_xlate::{FinTimeout, Learn, Learned, Pipeline, Traversal};

/// Registrations (and lessons) waiting at most for the control state: past
/// it a megaflow is not kept (its packet is forwarded all the same) and a
/// lesson is dropped (NORMAL's periodic refresh and the next miss teach it
/// again).
pub const WAITING_MAX: usize = 16_384;

/// A megaflow installed from a translation made while the control state
/// was held: the version it was translated at, and its traversal.
pub struct Waiting {
    pub mf: Arc<Megaflow>,
    pub traversal: Traversal,
    pub version: u64,
}

/// What packets translated outside the control state taught the switch.
#[derive(Default)]
pub struct Lessons {
    /// MACs NORMAL saw, each with its packet's time (milliseconds, the
    /// datapath's clock).
    pub macs: Vec<(Learn, u64)>,
    /// Learned flows, each with its packet's time.
    pub flows: Vec<(Learned, u64)>,
    pub cuts: Vec<FinTimeout>,
}

impl Lessons {
    fn len(&self) -> usize {
        self.macs.len() + self.flows.len() + self.cuts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    lessons: Lessons,
    counts: Late,
}

/// Counters of upcalls served while the control state was held, since the
/// start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Late {
    /// Translated against the published pipeline.
    pub translated: u64,
    /// Their megaflows offered and taken for later registration.
    pub offered: u64,
    /// Not kept: the rules changed since the translation, or too many waited.
    pub refused: u64,
    /// Lessons (MACs, learned flows, cut timeouts) dropped: too many waited.
    pub lessons_dropped: u64,
}

/// The published pipeline and its version (shared by the control state and
/// every forwarding thread's handle).
pub struct Published {
    pipeline: RwLock<Pipeline>,
    /// Bumped (under the write lock) by every update that changes the rules.
    version: AtomicU64,
    queue: Mutex<Queue>,
}

/// The pipeline read by the control path, or by a forwarding thread that
/// got it without waiting, with the version it is at.
pub struct Read<'a> {
    pub pipeline: RwLockReadGuard<'a, Pipeline>,
    pub version: u64,
}

impl Published {
    pub fn new(p: Pipeline) -> Arc<Published> {
        Arc::new(Published { pipeline: RwLock::new(p), version: AtomicU64::new(0), queue: Mutex::default() })
    }

    /// The pipeline, for the control path (which alone writes it, so this
    /// never waits for a writer while it holds the control state).
    pub fn read(&self) -> RwLockReadGuard<'_, Pipeline> {
        self.pipeline.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The pipeline to change, for the control path only.
    pub fn write(&self) -> RwLockWriteGuard<'_, Pipeline> {
        self.pipeline.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The pipeline and its version, unless a writer holds or waits for it
    /// (a change to the tables is under way): None rather than wait.
    pub fn try_read(&self) -> Option<Read<'_>> {
        let pipeline = match self.pipeline.try_read() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        // Bumped only under the write lock: stable while this guard lives.
        let version = self.version.load(Ordering::SeqCst);
        Some(Read { pipeline, version })
    }

    /// The pipeline and its version, waiting only for a change of the
    /// tables under way (never for an update's maintenance).
    pub fn read_versioned(&self) -> Read<'_> {
        let pipeline = self.read();
        let version = self.version.load(Ordering::SeqCst);
        Read { pipeline, version }
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Bumps the version; the caller holds the write lock (`_w` proves it).
    pub fn bump(&self, _w: &RwLockWriteGuard<'_, Pipeline>) -> u64 {
        self.version.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a megaflow translated at `w.version` for registration when the
    /// control state is next taken. Refused (handed back) when the rules
    /// changed since: an update that has bumped the version may already
    /// have drained, and would never see it. Also refused when full.
    pub fn offer(&self, w: Waiting) -> Result<(), Box<Waiting>> {
        let mut q = self.queue();
        // Under the queue's lock: an update that bumps after this check
        // drains after it, so sees this registration.
        if self.version() != w.version || q.waiting.len() >= WAITING_MAX {
            q.counts.refused += 1;
            return Err(Box::new(w));
        }
        q.counts.offered += 1;
        q.waiting.push(w);
        Ok(())
    }

    /// Counts a translation made against the published pipeline, and keeps
    /// what its packet taught for when the control state is next taken.
    pub fn translated(&self, l: Lessons) {
        let mut q = self.queue();
        q.counts.translated += 1;
        q.keep(l);
    }

    /// Takes every waiting registration (the control path, which holds the
    /// control state).
    pub fn take_waiting(&self) -> Vec<Waiting> {
        std::mem::take(&mut self.queue().waiting)
    }

    /// Takes every waiting lesson (the control path, which holds the
    /// control state).
    pub fn take_lessons(&self) -> Lessons {
        std::mem::take(&mut self.queue().lessons)
    }

    /// The counters since the start.
    pub fn late(&self) -> Late {
        self.queue().counts
    }
}

impl Queue {
    fn keep(&mut self, l: Lessons) {
        if self.lessons.len() + l.len() > WAITING_MAX {
            self.counts.lessons_dropped += l.len() as u64;
            return;
        }
        self.lessons.macs.extend(l.macs);
        self.lessons.flows.extend(l.flows);
        self.lessons.cuts.extend(l.cuts);
    }
}
