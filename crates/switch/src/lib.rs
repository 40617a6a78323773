//! The running switch: ports, the forwarding loop, rule counters, and the
//! state the control socket reads and changes.
//!
//! Layout: [`port`] (the port abstraction and in-memory ports),
//! [`afpacket`], [`afxdp`] (with [`xdp`], its kernel program) and [`tap`]
//! (Linux attachments), this file (the switch state
//! and the forwarding loop), [`ctl`] (the control socket, its commands and
//! client), [`replay`] (offline pcap in, pcap per port out).
//!
//! Threads: `pmd_threads` forwarding threads (one by default; `kairo
//! switch` asks one per core), each reading its share of the ports (port i
//! by thread i mod n) with its own datapath (EMC, megaflow classifiers,
//! parked misses; the connection tracker and meters shared) under its own
//! lock, taken once per batch, and sending to every port through its own
//! handle (a TX-only socket per port and thread);
//! control connections apply updates on their own threads through the shared
//! slow path, which changes megaflows only by atomic action swaps and kill
//! flags; a miss while an update holds the slow path is translated against
//! the published rule tables (parked only while they change), so forwarding
//! never waits for maintenance. A revalidator thread does what walks the
//! cache or needs the slow path: idle expiry, rule timeouts, retiring frozen
//! states, refreshing NORMAL's MACs and learned flows ([`Switch::tick`]).
//!
//! Invariants: once an update's reply has been sent, every packet the
//! switch receives afterwards is forwarded by the new rules (maintenance
//! finished before the reply; an upcall translated before the update is
//! revalidated when its megaflow is installed). Lock order is datapath, then
//! control, then counters; nothing takes them in another order, and the
//! forwarding thread, which holds the datapath lock per batch, takes the
//! control lock on its per-packet path only if it is free (parking misses
//! otherwise), so an update never holds up forwarding.

pub mod afpacket;
pub mod afxdp;
pub mod attach;
pub mod ctl;
pub mod lives;
mod mapping;
pub mod netns;
pub mod openflow;
pub mod port;
pub mod replay;
pub mod request;
pub mod server;
pub mod tap;
pub mod xdp;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use kairo_classifier::RuleId;
use kairo_datapath::execute::{Sent, ToController};
use kairo_datapath::{Datapath, DpConfig, Megaflow};
use kairo_maintain::shared::SharedControl;
use kairo_maintain::{Control, EngineKind, Moved, Report, Ukey};
use kairo_ofp::message::ofppc;
use kairo_xlate::{Pipeline, Traversal};
use rustc_hash::FxHashMap;

pub use kairo_datapath::Packet;
pub use port::{Attached, MemPeer, MemPort, Port, PortCounters, PortError};

/// Frames taken from one port per round (a TPACKET_V3 block may give more).
const RX_BATCH: usize = 256;
/// How long the loop sleeps in poll() when no port has anything.
const IDLE_POLL_MS: i32 = 5;
/// Most packet buffers kept for reuse.
const POOL_MAX: usize = 4096;
/// How many recent updates `stats` summarises.
const UPDATE_LOG: usize = 4096;
/// Connections the forwarding thread expires per 100 ms round at most
/// (100K a second: the timeouts of a busy table are met, and a round
/// never stalls forwarding for long).
const CT_EXPIRE_PER_ROUND: usize = 10_000;

/// Locks a mutex, recovering from a poisoned lock (every holder leaves the
/// data consistent before anything that can panic).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port as `show` describes it.
#[derive(Clone)]
pub struct PortInfo {
    pub ofport: u32,
    pub name: String,
    pub kind: &'static str,
    /// How the port runs, where there is more to say than its kind.
    pub mode: Option<String>,
    pub counters: Arc<PortCounters>,
}

impl Attached {
    /// What `show` says about this port.
    pub fn info(&self) -> PortInfo {
        PortInfo {
            ofport: self.ofport,
            name: self.name.clone(),
            kind: self.io.kind(),
            mode: self.io.mode(),
            counters: self.counters.clone(),
        }
    }
}

/// Time-to-update of recent updates.
#[derive(Default)]
pub struct UpdateLog {
    pub total: u64,
    pub recent: VecDeque<Report>,
}

impl UpdateLog {
    fn push(&mut self, r: Report) {
        self.total += 1;
        if self.recent.len() == UPDATE_LOG {
            self.recent.pop_front();
        }
        self.recent.push_back(r);
    }
}

/// Packet and byte counts credited to rules by megaflows that have left the
/// cache (live megaflows are added when counters are read).
pub type RuleCounts = FxHashMap<(u8, RuleId), (u64, u64)>;

/// The switch state shared by the forwarding thread and control connections.
pub struct Switch {
    pub ctl: SharedControl,
    pub dp: Mutex<Datapath>,
    /// The switch's ports (read with [`Switch::ports`]; changed only by
    /// [`Switch::add_port`] and [`Switch::del_port`]).
    ports: RwLock<Vec<PortInfo>>,
    /// Ports added or removed, for the forwarding thread, which owns them.
    /// Where each forwarding thread takes its port changes (registered
    /// when forwarding starts, thread 0 first).
    port_changes: Mutex<Vec<std::sync::mpsc::Sender<attach::PortChange>>>,
    pub updates: Mutex<UpdateLog>,
    pub retired: Mutex<RuleCounts>,
    /// Counters of megaflows that left the cache but that the datapath
    /// still holds (a packet in flight may count on them): credited when
    /// read, settled into `retired` once the datapath lets go.
    leaving: Mutex<Vec<Moved>>,
    /// Packets sent to a port number the switch does not have, or to the controller.
    pub unroutable: AtomicU64,
    pub controller: AtomicU64,
    /// Packets for the controller dropped because its queue was full (a
    /// slow controller never grows the switch's memory, as in Open vSwitch).
    pub controller_dropped: AtomicU64,
    /// Where packets for the controller go, once an OpenFlow end listens.
    pub to_controller: OnceLock<SyncSender<(ToController, Vec<u8>)>>,
    /// Packets from the controller (PACKET_OUT) for the forwarding thread,
    /// which owns the ports; bounded (a sender waits when it is full).
    packet_out: (SyncSender<PacketOut>, Mutex<Receiver<PacketOut>>),
    pub start: Instant,
    /// The OpenFlow datapath id (`--dpid`, or derived from the ports' addresses).
    pub dpid: u64,
    /// What the OpenFlow connections share, made by the first listener.
    pub openflow: OnceLock<Arc<openflow::conn::Shared>>,
    /// Rules' install times, timeouts and last uses (taken under the control lock).
    pub lives: Mutex<lives::Lives>,
    /// The OpenFlow meters (the datapath's table, shared).
    pub meters: Arc<kairo_datapath::meter::Meters>,
    /// The connection tracker (the datapaths', shared).
    conntrack: Arc<Mutex<kairo_conntrack::Conntrack>>,
    /// Megaflows killed off the forwarding thread (idle expiry: true;
    /// maintenance evictions: false) for it to let go of, one unlink each.
    let_go: Mutex<Vec<std::sync::mpsc::Sender<LetGo>>>,
    /// The datapaths of the forwarding threads after the first (whose is
    /// `dp`), for statistics; each thread owns its own.
    pmds: Mutex<Vec<Arc<Mutex<Datapath>>>>,
    /// Forwarding threads `forward` runs (at least 1).
    pub pmd_threads: std::sync::atomic::AtomicUsize,
    /// Ports added before forwarding started (it takes them first).
    early_ports: Mutex<Vec<Attached>>,
    /// Where the idle walk over the cache resumes.
    idle_cursor: Mutex<usize>,
}

/// A megaflow for the forwarding thread to let go of, and whether it
/// expired idle.
type LetGo = (Arc<Megaflow>, bool);

/// Megaflows the forwarding thread lets go of per round at most.
const RETIRE_PER_ROUND: usize = 100_000;

/// A packet the controller sends out: its ingress port (kairo numbering),
/// the actions to run on it, and its bytes.
pub struct PacketOut {
    pub in_port: u32,
    pub actions: Vec<kairo_ofproto::Action>,
    pub data: Vec<u8>,
}

/// How often rules' timeouts are checked (OpenFlow timeouts are in seconds).
pub const EXPIRY_EVERY: Duration = Duration::from_secs(1);

/// Packets for the controller waiting for the OpenFlow end (beyond it, dropped and counted).
pub const CONTROLLER_QUEUE: usize = 1024;
/// Packet-outs waiting for the forwarding thread.
pub const PACKET_OUT_QUEUE: usize = 256;

/// Adds a megaflow's counters (those gathered under its current traversal)
/// to the rules of that traversal.
pub fn credit(counts: &mut RuleCounts, uk: &Ukey) {
    let (p, b) = uk.unaccounted();
    credit_traversal(counts, &uk.traversal(), p, b);
}

/// Adds what a megaflow gathered under a traversal it no longer has.
fn credit_moved(counts: &mut RuleCounts, m: &Moved) {
    let (p, b) = m.counts();
    credit_traversal(counts, &m.traversal, p, b);
}

/// Adds `p` packets and `b` bytes to every rule `t` went through.
pub fn credit_traversal(counts: &mut RuleCounts, t: &Traversal, p: u64, b: u64) {
    if p == 0 && b == 0 {
        return;
    }
    // A conjunctive match credits its conj_id rule, never the clauses (as
    // Open vSwitch: they have no useful statistics).
    for s in &t.steps {
        if let Some(id) = s.outcome.rule() {
            let e = counts.entry((s.table, id)).or_default();
            e.0 += p;
            e.1 += b;
        }
    }
}

impl Switch {
    /// The names of the switch's ports, for flows that give ports by name
    /// (an interface name that cannot be a port name is left out: such a
    /// port is given by number).
    pub fn port_names(&self) -> kairo_ofproto::PortNames {
        let mut names = kairo_ofproto::PortNames::default();
        for p in self.ports.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = names.insert(&p.name, p.ofport);
        }
        names
    }

    pub fn new(pipeline: Pipeline, engine: EngineKind, cfg: DpConfig, ports: Vec<PortInfo>) -> Switch {
        let control = SharedControl::new(Control::new(pipeline, engine));
        Switch::from_parts(control, Datapath::new(cfg), ports)
    }

    /// A switch over a control and datapath made elsewhere (a benchmark's
    /// filled cache).
    pub fn from_parts(ctl: SharedControl, mut dp: Datapath, ports: Vec<PortInfo>) -> Switch {
        // Megaflows are expired off the forwarding threads (`expire_idle`),
        // which make room when the cache is full.
        dp.cfg.sweep_when_full = false;
        {
            let mut c = ctl.lock();
            // The switch's ports are what FLOOD reaches (a switch without
            // ports keeps the pipeline's own list, with which its cache was made).
            if !ports.is_empty() {
                c.pipeline_mut().set_ports(ports.iter().map(|p| p.ofport));
            }
            c.keep_moved = true;
            c.keep_deltas = true;
        }
        let dpid = openflow::default_dpid(&ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>());
        let meters = dp.meters.clone();
        let conntrack = dp.conntrack.clone();
        Switch {
            ctl,
            meters,
            conntrack,
            dp: Mutex::new(dp),
            ports: RwLock::new(ports),
            port_changes: Mutex::new(Vec::new()),
            updates: Mutex::new(UpdateLog::default()),
            retired: Mutex::new(RuleCounts::default()),
            leaving: Mutex::new(Vec::new()),
            unroutable: AtomicU64::new(0),
            controller: AtomicU64::new(0),
            controller_dropped: AtomicU64::new(0),
            to_controller: OnceLock::new(),
            packet_out: {
                let (tx, rx) = std::sync::mpsc::sync_channel(PACKET_OUT_QUEUE);
                (tx, Mutex::new(rx))
            },
            openflow: OnceLock::new(),
            let_go: Mutex::new(Vec::new()),
            pmds: Mutex::new(Vec::new()),
            pmd_threads: std::sync::atomic::AtomicUsize::new(1),
            early_ports: Mutex::new(Vec::new()),
            idle_cursor: Mutex::new(0),
            lives: Mutex::new(lives::Lives::default()),
            start: Instant::now(),
            dpid,
        }
    }

    /// The connection tracker every forwarding thread's datapath shares.
    pub fn ct(&self) -> std::sync::MutexGuard<'_, kairo_conntrack::Conntrack> {
        lock(&self.conntrack)
    }

    /// The datapath counters summed over the forwarding threads, the
    /// megaflows they hold, and the flow limit (theirs summed: each thread
    /// holds its share of the switch's).
    pub fn dp_totals(&self) -> (kairo_datapath::DpStats, usize, usize) {
        let (mut st, mut n, mut limit) = {
            let dp = lock(&self.dp);
            (dp.stats, dp.n_flows(), dp.cfg.flow_limit)
        };
        for d in lock(&self.pmds).iter() {
            let d = lock(d);
            st.add(&d.stats);
            n += d.n_flows();
            limit += d.cfg.flow_limit;
        }
        (st, n, limit)
    }

    /// Every forwarding thread's datapath, in turn (thread 0 first).
    pub fn each_datapath(&self, mut f: impl FnMut(&Datapath)) {
        f(&lock(&self.dp));
        for d in lock(&self.pmds).iter() {
            f(&lock(d));
        }
    }

    /// Hands a megaflow killed off the forwarding threads to each of them
    /// to let go of (the one that holds it unlinks it).
    fn let_go(&self, mf: &Arc<Megaflow>, idle: bool) {
        for tx in lock(&self.let_go).iter() {
            let _ = tx.send((mf.clone(), idle));
        }
    }

    /// Milliseconds since the switch started (the datapath's clock).
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Per-rule counters now: retired megaflows plus the ones in the cache.
    /// Takes the control lock (maintenance moves no counts meanwhile), then
    /// the counters; never the datapath lock, so that reading counters
    /// during a long update does not hold up forwarding (a batch counting
    /// meanwhile adds to live megaflows, read or not yet: never twice).
    pub fn rule_counts(&self) -> RuleCounts {
        let mut counts = self.counted();
        let lives = lock(&self.lives);
        for ((t, id), c) in counts.iter_mut() {
            *c = lives.since_reset(*t, *id, *c);
        }
        counts
    }

    /// Every rule's counts since it was installed (resets not applied).
    fn counted(&self) -> RuleCounts {
        let (moved, live) = {
            let mut c = self.ctl.lock();
            (std::mem::take(&mut c.moved), c.engine.entries())
        };
        self.take_moved(moved);
        let mut counts = lock(&self.retired).clone();
        for m in lock(&self.leaving).iter() {
            credit_moved(&mut counts, m);
        }
        for uk in &live {
            credit(&mut counts, uk);
        }
        counts
    }

    /// Files what re-translated and departed megaflows gathered: settled
    /// counts to their rules, departed megaflows the datapath still holds
    /// to `leaving`.
    fn take_moved(&self, moved: Vec<Moved>) {
        if moved.is_empty() {
            return;
        }
        // Evicted megaflows: the forwarding thread lets go of them (a
        // lookup that meets one does too).
        for m in &moved {
            if let Some(mf) = m.left.as_ref().filter(|mf| mf.is_dead()) {
                self.let_go(mf, false);
            }
        }
        lock(&self.leaving).extend(moved);
        self.settle_leaving();
    }

    /// Settles the counters of departed megaflows the datapath has let go of.
    fn settle_leaving(&self) {
        let mut leaving = lock(&self.leaving);
        if leaving.is_empty() {
            return;
        }
        let mut r = lock(&self.retired);
        leaving.retain(|m| {
            let done = m.settled();
            if done {
                credit_moved(&mut r, m);
            }
            !done
        });
    }

    /// The revalidator's round of slow-path housekeeping, off the
    /// forwarding threads (it walks the cache): frozen states no megaflow
    /// uses any more are retired (cheap unless due), MACs NORMAL learned
    /// are refreshed from the megaflows that carried them and those that
    /// aged out go, learned flows are refreshed from the megaflows that
    /// learn them (each an update when something changed), and the
    /// counters of megaflows that left are filed.
    pub fn tick(&self, now: u64) {
        let moved = {
            let mut c = self.ctl.lock();
            c.retire_frozen();
            let _ = c.tick(now);
            std::mem::take(&mut c.moved)
        };
        self.take_moved(moved);
    }

    /// Expires megaflows idle for longer than `max_idle` ms (100 ms while a
    /// thread's cache is at its flow limit), walking the cache a slice at a
    /// time (a tenth of it, 10K to 200K entries, per
    /// call) under the control lock, off the forwarding thread: each is
    /// killed, leaves the engine, and is handed to the forwarding thread to
    /// let go of.
    pub fn expire_idle(&self, now: u64, max_idle: u64) {
        // A thread's cache at its flow limit: idle is 100 ms (as Open
        // vSwitch's revalidators when over the limit), to make room.
        let mut full = false;
        self.each_datapath(|dp| full |= dp.n_flows() >= dp.cfg.flow_limit);
        let max_idle = if full { max_idle.min(100) } else { max_idle };
        let mut slice = Vec::new();
        let mut cursor = lock(&self.idle_cursor);
        let mut c = self.ctl.lock();
        let n = (c.engine.len() / 10).clamp(10_000, 200_000);
        *cursor = c.engine.entries_from(*cursor, n, &mut slice);
        for uk in slice {
            if uk.is_dead() || now.saturating_sub(uk.last_used()) <= max_idle {
                continue;
            }
            uk.kill();
            if let Some(gone) = c.engine.remove(uk.megaflow()) {
                if c.keep_moved {
                    c.moved.push(gone.leaving());
                }
            }
            self.let_go(uk.megaflow(), true);
        }
    }

    /// Runs the forwarding loop over `ports` until `stop` is set, with rule
    /// expiry (idle and hard timeouts) and megaflow idle expiry beside it
    /// on a thread of its own.
    pub fn forward(&self, mut ports: Vec<Attached>, stop: &AtomicBool) {
        let max_idle = lock(&self.dp).cfg.max_idle_ms;
        ports.append(&mut lock(&self.early_ports));
        // Forwarding threads: as many as asked, at most one per port; port
        // i is read by thread i mod n, which owns its datapath (EMC and
        // megaflow classifiers); every thread has a handle to send to
        // every port (a port without one is read and sent to by one thread).
        let n = self.pmd_threads.load(Ordering::Relaxed).clamp(1, ports.len().max(1));
        let mut shares: Vec<(Vec<Attached>, Vec<Attached>)> = (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        let mut handles_for_all = true;
        for (i, p) in ports.into_iter().enumerate() {
            for (t, share) in shares.iter_mut().enumerate() {
                if t != i % n {
                    match p.send_handle() {
                        Some(h) => share.1.push(h),
                        None => handles_for_all = false,
                    }
                }
            }
            shares[i % n].0.push(p);
        }
        if !handles_for_all {
            // A port only one thread can send to: one thread for all.
            let all = shares.into_iter().flat_map(|(read, _)| read).collect();
            shares = vec![(all, Vec::new())];
        }
        let mut pmds = Vec::new();
        let mut queues = Vec::new();
        {
            let (mut changes, mut let_go) = (lock(&self.port_changes), lock(&self.let_go));
            changes.clear();
            let_go.clear();
            let mut extra = lock(&self.pmds);
            extra.clear();
            // The flow limit is the switch's: each thread holds its share.
            if shares.len() > 1 {
                let mut dp = lock(&self.dp);
                dp.cfg.flow_limit = dp.cfg.flow_limit.div_ceil(shares.len()).max(1);
            }
            for t in 0..shares.len() {
                let (ctx, crx) = std::sync::mpsc::channel();
                let (ltx, lrx) = std::sync::mpsc::channel();
                changes.push(ctx);
                let_go.push(ltx);
                queues.push((crx, lrx));
                if t > 0 {
                    let d = Arc::new(Mutex::new(lock(&self.dp).sibling()));
                    extra.push(d.clone());
                    pmds.push(d);
                }
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    self.expire_idle(self.now_ms(), max_idle);
                    self.tick(self.now_ms());
                    if last.elapsed() >= EXPIRY_EVERY {
                        last = Instant::now();
                        self.expire();
                        openflow::ports::watch(self);
                    }
                }
            });
            let mut queues = queues.into_iter();
            let first = queues.next();
            for ((share, dp), q) in shares.drain(1..).zip(&pmds).zip(queues) {
                s.spawn(move || self.forward_loop(dp, share, q, stop));
            }
            if let (Some(share), Some(q)) = (shares.pop(), first) {
                self.forward_loop(&self.dp, share, q, stop);
            }
        });
        // The threads' datapaths stay for the statistics.
        lock(&self.port_changes).clear();
        lock(&self.let_go).clear();
    }

    /// Removes the rules whose idle or hard timeout has come (as a strict
    /// delete each, with its maintenance), sending their removal notices.
    pub fn expire(&self) {
        self.follow_learned();
        let timed = lock(&self.lives).timed();
        if timed.is_empty() {
            return;
        }
        let now = self.now_ms();
        let mut due = Vec::new();
        {
            let c = self.ctl.lock();
            let p = c.pipeline();
            let mut lives = lock(&self.lives);
            for (t, id) in timed {
                let Some(rule) = p.rule(t, id) else { continue };
                let used = lives.used(t, id, c.engine.last_used_by(id));
                if let Some(why) = lives::due(rule, lives.installed(t, id), used, now) {
                    due.push((rule.clone(), why));
                }
            }
        }
        for (rule, why) in due {
            let spec = kairo_ofproto::FlowSpec::exact(rule.table, rule.priority, rule.m);
            // Gone already (deleted meanwhile) is not an error: nothing is selected.
            let _ = self.apply_as(&kairo_maintain::flowmod::FlowMod::Delete { strict: true, spec }, why);
            self.housekeep();
        }
    }

    /// Follows what upcalls and the megaflows' refresh learned since the
    /// last call (flows `learn` actions added, changed or found already
    /// there): install times and uses for the timeouts. A flow learned
    /// between two calls counts from the second (at most a second late).
    fn follow_learned(&self) {
        let now = self.now_ms();
        let (deltas, touched, removed) = {
            let mut c = self.ctl.lock();
            let deltas = std::mem::take(&mut c.deltas);
            let touched = std::mem::take(&mut c.touched);
            let timed = |t, id| c.pipeline().rule(t, id).is_some_and(|r| r.idle_timeout != 0 || r.hard_timeout != 0);
            let removed = lock(&self.lives).follow(&deltas, now, lives::RemovedBy::Delete, timed);
            (deltas, touched, removed)
        };
        drop(deltas);
        let mut lives = lock(&self.lives);
        for ((t, id), used) in touched {
            lives.used(t, id, used);
        }
        drop(lives);
        self.notify_removed(&removed);
    }

    /// One forwarding thread: reads `share.0` (sends to those and to
    /// `share.1`), through its datapath `dpm`, taking its port changes and
    /// the megaflows to let go of from `queues`. The first thread (whose
    /// datapath is `self.dp`) also runs packet-outs.
    fn forward_loop(
        &self,
        dpm: &Mutex<Datapath>,
        share: (Vec<Attached>, Vec<Attached>),
        queues: (Receiver<attach::PortChange>, Receiver<LetGo>),
        stop: &AtomicBool,
    ) {
        let first = std::ptr::eq(dpm, &self.dp);
        let (changes, let_go) = queues;
        let mut slow = self.ctl.clone();
        let mut set = attach::PortSet::new(share.0, share.1);
        let mut frames: Vec<Packet> = Vec::new();
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let mut batch: Vec<Packet> = Vec::new();
        let mut scratch = port::Scratch::default();
        let mut last_sweep = 0u64;
        while !stop.load(Ordering::Relaxed) {
            set.take_changes(&changes);
            let attach::PortSet { ports, reads, by_ofport, pfds } = &mut set;
            for (p, _) in ports.iter_mut().zip(reads.iter()).filter(|(_, r)| **r) {
                p.io.recv(&mut frames, &mut pool, RX_BATCH, &p.counters);
                if p.counters.config.load(Ordering::Relaxed) & (ofppc::NO_RECV | ofppc::PORT_DOWN) != 0 {
                    // OpenFlow's no_recv: what the port receives is dropped.
                    PortCounters::add(&p.counters.rx_dropped, frames.len() as u64);
                    let room = POOL_MAX.saturating_sub(pool.len());
                    pool.extend(frames.drain(..).map(|f| f.bytes).take(room));
                    continue;
                }
                batch.extend(frames.drain(..).map(|f| Packet { in_port: p.ofport, ..f }));
            }
            let now = self.now_ms();
            // Idle expiry, busy or not (the datapath itself runs a full sweep
            // at most once per tenth of max-idle).
            if now.saturating_sub(last_sweep) >= 100 {
                last_sweep = now;
                // Frames the kernel dropped before the switch read them
                // count as the port's receive drops (as in Open vSwitch).
                for p in ports.iter_mut() {
                    PortCounters::add(&p.counters.rx_dropped, p.io.kernel_drops());
                }
                let mut dp = lock(dpm);
                // Connections past their time, a bounded number per round
                // (the tracker is shared: the first thread does it).
                if first {
                    dp.ct().expire(now, CT_EXPIRE_PER_ROUND);
                }
                // Megaflows killed elsewhere (idle expiry, evictions): one
                // unlink each, a bounded number per round.
                for (mf, idle) in let_go.try_iter().take(RETIRE_PER_ROUND) {
                    dp.retire(&mf, idle);
                }
                // (What needs the slow path, idle megaflows, frozen states
                // no megaflow uses, MACs that aged out and the refreshes
                // of learned flows, runs off this thread: `tick`.)
                drop(dp);
                self.settle_leaving();
            }
            if first {
                self.packet_outs(ports, by_ofport, &mut scratch, &mut slow, now);
            }
            if batch.is_empty() {
                // Packets parked while an update held the slow path are
                // tried again every round (short waits meanwhile).
                if lock(dpm).n_parked() == 0 {
                    wait(pfds);
                    continue;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            {
                let mut dp = lock(dpm);
                dp.process_packets(&mut batch, now, &mut slow, &mut |to, bytes, lay| {
                    self.deliver(ports, by_ofport, &mut scratch, to, bytes, lay)
                });
            }
            for p in ports.iter_mut() {
                p.io.flush();
            }
            // Buffers go back to the pool for the next receive, up to a bound
            // (ports that hand over their own buffers never take from it).
            let room = POOL_MAX.saturating_sub(pool.len());
            pool.extend(batch.drain(..).map(|p| p.bytes).take(room));
            batch.clear();
        }
        for p in set.ports.iter_mut() {
            p.io.flush();
        }
    }

    /// Sends a packet where the datapath said: a port (finishing what it
    /// owes the hardware if the port does not take it), or the
    /// controller's queue (finished: a PACKET_IN carries whole checksums).
    fn deliver(
        &self,
        ports: &mut [Attached],
        by_ofport: &FxHashMap<u32, usize>,
        scratch: &mut port::Scratch,
        to: Sent,
        bytes: &[u8],
        lay: &kairo_wire::Layout,
    ) {
        match to {
            Sent::Port(port) => match by_ofport.get(&port) {
                Some(&i) => {
                    let p = &mut ports[i];
                    if p.counters.config.load(Ordering::Relaxed) & (ofppc::NO_FWD | ofppc::PORT_DOWN) != 0 {
                        PortCounters::add(&p.counters.tx_dropped, 1);
                    } else {
                        port::transmit(p.io.as_mut(), bytes, lay, scratch, &p.counters);
                    }
                }
                None => {
                    self.unroutable.fetch_add(1, Ordering::Relaxed);
                }
            },
            Sent::Controller(c)
                if by_ofport
                    .get(&c.in_port)
                    .is_some_and(|&i| ports[i].counters.config.load(Ordering::Relaxed) & ofppc::NO_PACKET_IN != 0) => {}
            // (For the connections with the action's controller id: the
            // dispatcher picks them.)
            Sent::Controller(c) => {
                self.controller.fetch_add(1, Ordering::Relaxed);
                let mut data = bytes.to_vec();
                kairo_wire::offload::finish_csum(&mut data, &mut { *lay });
                let queued = self.to_controller.get().is_some_and(|tx| tx.try_send((c, data)).is_ok());
                if !queued {
                    self.controller_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The datapath takes recirculations before anything is delivered.
            Sent::Recirc { .. } => {
                self.unroutable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a packet-out for the forwarding thread (waits while the queue is full).
    pub fn packet_out(&self, p: PacketOut) {
        let _ = self.packet_out.0.send(p);
    }

    /// Runs the packet-outs waiting (at most a queue's worth per round): each
    /// packet's actions translated against the pipeline, then executed.
    fn packet_outs<S: kairo_datapath::SlowPath>(
        &self,
        ports: &mut [Attached],
        by_ofport: &FxHashMap<u32, usize>,
        scratch: &mut port::Scratch,
        slow: &mut S,
        now: u64,
    ) {
        let waiting: Vec<PacketOut> = {
            let rx = lock(&self.packet_out.1);
            std::iter::from_fn(|| rx.try_recv().ok()).take(PACKET_OUT_QUEUE).collect()
        };
        if waiting.is_empty() {
            return;
        }
        // What the actions recirculate goes through the datapath (as Open
        // vSwitch executes a packet-out's actions in its datapath).
        let mut again = Vec::new();
        for mut p in waiting {
            let (key, mut lay) = kairo_wire::parse(&p.data, p.in_port);
            let r = kairo_xlate::translate_actions(&self.ctl.lock().pipeline(), &key, &p.actions);
            let mut deliver = |to, bytes: &[u8], lay: &kairo_wire::Layout| {
                self.deliver(ports, by_ofport, &mut *scratch, to, bytes, lay)
            };
            let mut send = kairo_datapath::execute::recirculating(&mut again, &mut deliver);
            // The datapath's connection tracker serves packet-outs too.
            let dp = lock(&self.dp);
            let mut cx = kairo_datapath::execute::Context { meters: &self.meters, ct: &dp.conntrack, now };
            let meta = kairo_datapath::execute::PacketMeta::default();
            kairo_datapath::execute::execute(&mut p.data, &mut lay, p.in_port, meta, &r.actions, &mut cx, &mut send);
        }
        if !again.is_empty() {
            lock(&self.dp).recirculate(again, now, slow, &mut |to, bytes, lay| {
                self.deliver(ports, by_ofport, scratch, to, bytes, lay)
            });
        }
        for p in ports.iter_mut() {
            p.io.flush();
        }
    }

    /// Applies one update (a flow-mod, group-mod or bundle) and records its
    /// time-to-update. On error nothing changed.
    pub fn apply(&self, fm: &kairo_maintain::flowmod::FlowMod) -> Result<Report, kairo_maintain::flowmod::ModError> {
        let why = match fm {
            kairo_maintain::flowmod::FlowMod::DelGroup(_) => lives::RemovedBy::GroupDelete,
            _ => lives::RemovedBy::Delete,
        };
        self.apply_as(fm, why)
    }

    /// The engine's bookkeeping that updates defer (it fixes nothing in the
    /// cache; see `Engine::housekeep`): for a control connection to run
    /// after it has answered, so that no acknowledgement waits for it. The
    /// next update does whatever is left first.
    pub fn housekeep(&self) {
        let moved = {
            let mut c = self.ctl.lock();
            c.housekeep();
            std::mem::take(&mut c.moved)
        };
        self.take_moved(moved);
    }

    /// [`Switch::apply`], the rules it removes removed for `why`.
    fn apply_as(
        &self,
        fm: &kairo_maintain::flowmod::FlowMod,
        why: lives::RemovedBy,
    ) -> Result<Report, kairo_maintain::flowmod::ModError> {
        let now = self.now_ms();
        let mut reset = Vec::new();
        let (rep, moved, removed) = {
            let mut c = self.ctl.lock_for_update();
            let rep = c.apply(fm)?;
            // The cache is true to the rules now (the TTU ends here); the
            // engine's deferred bookkeeping waits for `housekeep`, after
            // the reply.
            let deltas = std::mem::take(&mut c.deltas);
            let timed = |t, id| c.pipeline().rule(t, id).is_some_and(|r| r.idle_timeout != 0 || r.hard_timeout != 0);
            let removed = lock(&self.lives).follow(&deltas, now, why, timed);
            if resets_counts(fm) {
                reset.extend(deltas.iter().filter_map(|d| match d {
                    kairo_maintain::flowmod::Delta::RuleModified { table, id, .. } => Some((*table, *id)),
                    _ => None,
                }));
            }
            (rep, std::mem::take(&mut c.moved), removed)
        };
        lock(&self.updates).push(rep);
        self.take_moved(moved);
        if !reset.is_empty() {
            let counts = self.counted();
            let mut lives = lock(&self.lives);
            for (t, id) in reset {
                lives.reset_counts(t, id, counts.get(&(t, id)).copied().unwrap_or_default());
            }
        }
        self.notify_removed(&removed);
        Ok(rep)
    }

    /// Sends the removal notices owed for rules that left.
    fn notify_removed(&self, removed: &[lives::Removed]) {
        if removed.is_empty() {
            return;
        }
        if let Some(of) = self.openflow.get() {
            let counts = self.rule_counts();
            for r in removed {
                of.outboxes.flow_removed(r, counts.get(&(r.table, r.id)).copied().unwrap_or_default());
            }
        }
    }
}

/// Does this change reset the counters of the rules it modifies (a modify
/// with `reset_counts`, in a bundle or not)?
fn resets_counts(fm: &kairo_maintain::flowmod::FlowMod) -> bool {
    use kairo_maintain::flowmod::FlowMod as F;
    match fm {
        F::Modify { spec, .. } => spec.flags & kairo_ofproto::flags::RESET_COUNTS != 0,
        F::Bundle(v) => v.iter().any(resets_counts),
        _ => false,
    }
}

/// Waits until a port fd is readable or a few milliseconds pass (ports
/// without descriptors, like in-memory ones, are polled on the next round).
fn wait(pfds: &mut [libc::pollfd]) {
    if pfds.is_empty() {
        std::thread::sleep(Duration::from_micros(50));
        return;
    }
    // SAFETY: `pfds` is a valid, exclusively borrowed array of pollfd of the length passed.
    unsafe {
        libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, IDLE_POLL_MS);
    }
}
