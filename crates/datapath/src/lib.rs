//! The fast path: packet -> flow key -> exact-match cache -> megaflow
//! classifier (one per ingress port) -> upcall to the slow path, with the
//! flow limit, idle expiry, actions on packet buffers and statistics.
//!
//! One file per cache layer, as in Open vSwitch's dpif-netdev: [`emc`],
//! [`dpcls`], [`megaflow`]; [`execute`] applies actions to packets; [`hash`]
//! computes EMC hashes.
//!
//! Invariant: a packet forwarded through the EMC, a megaflow or an upcall gets
//! the actions the slow path gives its key (at the time the megaflow was last
//! made true by maintenance); a dead megaflow is never used; the number of
//! live megaflows never exceeds the flow limit.

pub mod admit;
pub mod dpcls;
pub mod emc;
pub mod execute;
pub mod hash;
pub mod intern;
pub mod megaflow;
pub mod meter;
pub mod synth;

use std::sync::{Arc, Mutex, MutexGuard};

use kairo_flow::{Field, FlowKey, FlowMask};
use kairo_odp::DpAction;
use rustc_hash::FxHashMap;

pub use dpcls::{Dpcls, BATCH};
pub use emc::{Admission, Emc};
pub use megaflow::{Actions, Cell, Megaflow};

/// Where the EMC hash comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashMode {
    /// A hash of the whole key, computed in software.
    Computed,
    /// The Toeplitz RSS hash of the IPv4 5-tuple: a NIC supplies it for free,
    /// and computed here (table-driven, 12 bytes) when a packet arrives without
    /// one. Non-IPv4 keys use the computed hash. The default: `kairo bench
    /// lookup` measured it 4x faster than hashing the whole key.
    Rss,
}

/// The EMC's default admission: flows a hot-flow filter finds missed 8
/// times in an epoch, and the rest at random as Open vSwitch (1 in 100).
/// `kairo bench emc` (docs/performance.md), Zipf 0.9 / 0.95 / 0.99: over
/// 100K flows 57 / 64 / 70% EMC hits where Open vSwitch's rule alone gave
/// 49 / 57 / 63%, over 10K flows 81 / 84 / 86% against 77 / 80 / 82%;
/// uniform traffic the same (7% and 56%); packet rates within this VM's
/// noise of each other (-6% to +1% at 100K flows).
pub const DEFAULT_ADMISSION: Admission = Admission::Hot { threshold: 8 };

/// Datapath settings (Open vSwitch names in brackets).
#[derive(Clone, Debug)]
pub struct DpConfig {
    /// Maximum number of megaflows [flow-limit].
    pub flow_limit: usize,
    /// Megaflows unused for this long (ms) expire [max-idle].
    pub max_idle_ms: u64,
    /// EMC insertion probability 1/N; 0 disables the EMC [emc-insert-inv-prob].
    pub emc_insert_inv_prob: u32,
    /// What the EMC takes in (see [`Admission`]).
    pub emc_admission: Admission,
    pub emc_entries: usize,
    pub hash: HashMode,
    /// Subtable re-ranking interval in lookups; 0 keeps insertion order.
    pub rerank_interval: u64,
    /// An upcall that finds the cache at its flow limit sweeps it for idle
    /// megaflows first (a walk of the whole cache, at most once per tenth
    /// of max-idle). Off where another thread expires megaflows (the
    /// switch: the upcall then forwards without installing, as Open
    /// vSwitch's handlers do, and the expiry thread makes room).
    pub sweep_when_full: bool,
}

impl Default for DpConfig {
    fn default() -> Self {
        DpConfig {
            flow_limit: 200_000,
            max_idle_ms: 10_000,
            emc_insert_inv_prob: 100,
            emc_admission: DEFAULT_ADMISSION,
            emc_entries: 8192,
            hash: HashMode::Computed,
            rerank_interval: 100_000,
            sweep_when_full: true,
        }
    }
}

/// Per-layer counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DpStats {
    pub packets: u64,
    pub emc_hits: u64,
    pub megaflow_hits: u64,
    pub misses: u64,
    /// Upcalls whose megaflow was installed.
    pub installed: u64,
    /// Upcalls handled without installing (flow limit reached, nothing idle).
    pub not_installed: u64,
    pub evicted_idle: u64,
    /// Idle sweeps run (each reads every megaflow).
    pub sweeps: u64,
    /// Subtables probed by megaflow lookups, summed.
    pub subtables_visited: u64,
    pub megaflow_lookups: u64,
    /// Passes after the first that packets took (each also counted in `packets`).
    pub recirculated: u64,
    /// Packets dropped for recirculating more than [`MAX_RECIRC_DEPTH`] passes.
    pub recirc_too_deep: u64,
    /// Packets dropped because their virtio header contradicted them.
    pub bad_offload: u64,
    /// Misses parked while the slow path was busy (each counted once per
    /// time it was parked), and those dropped because the parking was full.
    pub parked: u64,
    pub parked_dropped: u64,
}

impl DpStats {
    /// Adds another datapath's counters (threads' totals).
    pub fn add(&mut self, o: &DpStats) {
        let DpStats {
            packets,
            emc_hits,
            megaflow_hits,
            misses,
            installed,
            not_installed,
            evicted_idle,
            sweeps,
            subtables_visited,
            megaflow_lookups,
            recirculated,
            recirc_too_deep,
            bad_offload,
            parked,
            parked_dropped,
        } = *o;
        self.packets += packets;
        self.emc_hits += emc_hits;
        self.megaflow_hits += megaflow_hits;
        self.misses += misses;
        self.installed += installed;
        self.not_installed += not_installed;
        self.evicted_idle += evicted_idle;
        self.sweeps += sweeps;
        self.subtables_visited += subtables_visited;
        self.megaflow_lookups += megaflow_lookups;
        self.recirculated += recirculated;
        self.recirc_too_deep += recirc_too_deep;
        self.bad_offload += bad_offload;
        self.parked += parked;
        self.parked_dropped += parked_dropped;
    }

    pub fn avg_subtables_per_lookup(&self) -> f64 {
        if self.megaflow_lookups == 0 {
            0.0
        } else {
            self.subtables_visited as f64 / self.megaflow_lookups as f64
        }
    }
}

/// Passes a packet may take through the datapath, the first included
/// (Open vSwitch's MAX_RECIRC_DEPTH in dpif-netdev).
pub const MAX_RECIRC_DEPTH: usize = 6;

/// A packet sent back into the datapath by a `recirc` action.
#[derive(Clone, Debug)]
pub struct Recirculated {
    pub bytes: Vec<u8>,
    pub in_port: u32,
    pub recirc_id: u32,
    pub meta: execute::PacketMeta,
    /// What it still owes the hardware (kept across the pass).
    pub offload: kairo_wire::offload::Offload,
}

/// A frame for the datapath: its bytes, the port it came in on, the hash
/// the NIC computed (if any), and the virtio header its port read with it
/// (the offloads its sender left: none from a port without them).
#[derive(Clone, Debug, Default)]
pub struct Packet {
    pub bytes: Vec<u8>,
    pub in_port: u32,
    pub rss: Option<u32>,
    pub vnet: Option<kairo_wire::offload::VnetHdr>,
}

impl Packet {
    /// A frame with no NIC hash and no offloads.
    pub fn new(bytes: Vec<u8>, in_port: u32) -> Packet {
        Packet { bytes, in_port, rss: None, vnet: None }
    }
}

/// What the slow path answers for a key.
pub struct Upcall<N> {
    pub actions: Vec<DpAction>,
    pub mask: FlowMask,
    /// What the slow path wants back if the megaflow is installed (cache
    /// maintenance: the traversal that produced it); the datapath only
    /// carries it.
    pub note: N,
    /// The rule-table version the translation used (see `installed`).
    pub version: u64,
    /// Whether a megaflow may be installed for these actions (false: the
    /// datapath cannot hold them; every such packet comes up again, as in
    /// Open vSwitch's slow path).
    pub install: bool,
}

/// The slow path behind the caches.
pub trait SlowPath {
    /// What an upcall hands back with an installed megaflow.
    type Note;
    /// Translates a missed key; `now` is the packet's time (the datapath's
    /// clock, milliseconds, as megaflows count their last use): what the
    /// packet teaches (learned MACs and flows) is dated by it.
    fn upcall(&mut self, key: &FlowKey, now: u64) -> Upcall<Self::Note>;
    /// A megaflow was installed from an upcall answered at `version`, with
    /// the upcall's `note` (maintenance records and indexes it here, and
    /// revalidates it if the rules changed in between).
    fn installed(&mut self, _mf: &Arc<Megaflow>, _note: Self::Note, _version: u64) {}
    /// A megaflow left the cache (idle expiry or eviction by the datapath).
    fn removed(&mut self, _mf: &Arc<Megaflow>) {}
    /// As [`SlowPath::upcall`], unless that would wait (kairo's slow path:
    /// while an update changes the rule tables; its maintenance does not
    /// stop upcalls): then None, and the datapath parks the packet instead
    /// of waiting (see [`Datapath::process_packets`]).
    fn try_upcall(&mut self, key: &FlowKey, now: u64) -> Option<Upcall<Self::Note>> {
        Some(self.upcall(key, now))
    }
    /// As [`SlowPath::installed`] without waiting (registration may be
    /// left for later), unless the megaflow cannot be kept (the rules
    /// changed since the upcall, say): then the note comes back, and the
    /// datapath does not keep the megaflow (the packet is forwarded by the
    /// upcall's actions all the same).
    fn try_installed(&mut self, mf: &Arc<Megaflow>, note: Self::Note, version: u64) -> Result<(), Self::Note> {
        self.installed(mf, note, version);
        Ok(())
    }
    /// A packet of `bytes` was forwarded by an upcall's actions without a
    /// megaflow counting it (none installed, or one already there): what
    /// the upcall's note says it went through is credited with it.
    fn uncached(&mut self, _note: Self::Note, _bytes: u64) {}
    /// Would an upcall now wait ([`SlowPath::try_upcall`] give None)?
    /// Parked packets are not tried again while it would.
    fn busy(&self) -> bool {
        false
    }
    /// How many packets the datapath has parked for the slow path now
    /// (after each forwarding pass): an update may let them go first.
    fn parked(&mut self, _n: usize) {}
}

/// Packets a forwarding pass parks at most while the slow path is busy
/// (beyond, a miss is dropped and counted, as Open vSwitch drops upcalls
/// its handlers' queues have no room for).
pub const PARKED_MAX: usize = 4096;

/// The datapath: EMC and per-port megaflow classifiers.
pub struct Datapath {
    pub cfg: DpConfig,
    emc: Emc,
    cls: FxHashMap<u32, Dpcls>,
    n_flows: usize,
    pub stats: DpStats,
    toeplitz: hash::Toeplitz,
    dead: Vec<Arc<Megaflow>>,
    last_sweep: u64,
    last_hit: Option<Arc<Megaflow>>,
    /// Shared copies of the action lists megaflows hold.
    interner: intern::Interner,
    /// The OpenFlow meters packets run through (shared with the control path).
    pub meters: Arc<meter::Meters>,
    /// The connection tracker `ct` actions use (shared by the datapaths of
    /// every forwarding thread; locked per `ct` action).
    pub conntrack: Arc<Mutex<kairo_conntrack::Conntrack>>,
    /// Missed packets waiting for the slow path, in arrival order (see
    /// [`Datapath::process_packets`]).
    parked: Vec<Packet>,
}

impl Datapath {
    pub fn new(cfg: DpConfig) -> Datapath {
        Datapath {
            emc: Emc::with_admission(cfg.emc_entries, cfg.emc_insert_inv_prob, cfg.emc_admission),
            cls: FxHashMap::default(),
            n_flows: 0,
            stats: DpStats::default(),
            toeplitz: hash::Toeplitz::default(),
            dead: Vec::new(),
            last_sweep: 0,
            last_hit: None,
            interner: intern::Interner::default(),
            meters: Arc::default(),
            conntrack: Arc::new(Mutex::new(kairo_conntrack::Conntrack::new())),
            parked: Vec::new(),
            cfg,
        }
    }

    /// Another forwarding thread's datapath: its own caches, the same
    /// meters and connection tracker as `self`.
    pub fn sibling(&self) -> Datapath {
        let mut d = Datapath::new(self.cfg.clone());
        d.meters = self.meters.clone();
        d.conntrack = self.conntrack.clone();
        d
    }

    /// The connection tracker, locked.
    pub fn ct(&self) -> MutexGuard<'_, kairo_conntrack::Conntrack> {
        self.conntrack.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Packets parked for the slow path (see [`Datapath::process_packets`]).
    pub fn n_parked(&self) -> usize {
        self.parked.len()
    }

    /// Number of megaflows held (live, plus dead ones not yet reclaimed).
    pub fn n_flows(&self) -> usize {
        self.n_flows
    }

    /// Number of subtables of the classifier of `in_port`.
    pub fn n_subtables(&self, in_port: u32) -> usize {
        self.cls.get(&in_port).map_or(0, |c| c.n_subtables())
    }

    /// The EMC hash of a key (from the NIC if given and in RSS mode).
    #[inline]
    pub fn emc_hash(&self, key: &FlowKey, rss: Option<u32>) -> u32 {
        match (self.cfg.hash, rss) {
            (HashMode::Rss, Some(h)) => h,
            (HashMode::Rss, None) if key.is_ipv4() => self.toeplitz.hash_ipv4(key),
            _ => hash::key_hash(key),
        }
    }

    /// Takes `mf` out of its port's classifier; true if it was there.
    fn unlink(&mut self, mf: &Arc<Megaflow>) -> bool {
        let Some(c) = self.cls.get_mut(&(mf.rep.get(Field::InPort) as u32)) else { return false };
        if !c.remove(mf) {
            return false;
        }
        self.n_flows -= 1;
        true
    }

    fn reclaim_dead(&mut self) {
        while let Some(d) = self.dead.pop() {
            self.unlink(&d);
        }
    }

    /// Looks a key up in the EMC, then the megaflow classifier of its port.
    pub fn lookup(&mut self, key: &FlowKey, hash: u32) -> Option<Arc<Megaflow>> {
        self.lookup_ref(key, hash).cloned()
    }

    /// As [`Datapath::lookup`], without taking a reference count on a hit.
    pub fn lookup_ref(&mut self, key: &FlowKey, hash: u32) -> Option<&Arc<Megaflow>> {
        if self.emc.lookup(key, hash).is_some() {
            self.stats.emc_hits += 1;
            return self.emc.lookup(key, hash);
        }
        // (Two EMC probes on a hit: returning a borrow from a conditional
        // branch and falling through otherwise needs it with today's borrow checker.)
        self.lookup_megaflow(key, hash)?;
        self.last_hit.as_ref()
    }

    fn lookup_megaflow(&mut self, key: &FlowKey, hash: u32) -> Option<()> {
        let in_port = key.get(Field::InPort) as u32;
        let found = match self.cls.get_mut(&in_port) {
            Some(c) => {
                let before = c.stats.subtables_visited;
                let r = c.lookup(key, &mut self.dead);
                self.stats.subtables_visited += c.stats.subtables_visited - before;
                self.stats.megaflow_lookups += 1;
                r
            }
            None => None,
        };
        if !self.dead.is_empty() {
            self.reclaim_dead();
        }
        let f = found?;
        self.stats.megaflow_hits += 1;
        self.emc.insert(key, hash, &f);
        self.last_hit = Some(f);
        Some(())
    }

    /// Installs a megaflow for `key` from an upcall, if under the flow limit
    /// (evicting idle megaflows first when at it, where the datapath sweeps
    /// itself). Returns it if installed. Registering the megaflow with the
    /// slow path does not wait ([`SlowPath::try_installed`]: if it cannot
    /// be kept, it is not); a packet of `bytes` forwarded without a
    /// megaflow to count it is credited through [`SlowPath::uncached`].
    fn install<S: SlowPath + ?Sized>(
        &mut self,
        key: &FlowKey,
        up: Upcall<S::Note>,
        now: u64,
        slow: &mut S,
        bytes: u64,
    ) -> (Actions, Option<Arc<Megaflow>>) {
        if !up.install {
            self.stats.not_installed += 1;
            slow.uncached(up.note, bytes);
            return (self.interner.actions(up.actions), None);
        }
        if self.n_flows >= self.cfg.flow_limit && self.cfg.sweep_when_full {
            self.sweep(now, slow);
        }
        let in_port = key.get(Field::InPort) as u32;
        let cls = self.cls.entry(in_port).or_insert_with(|| Dpcls::new(self.cfg.rerank_interval));
        let mask = cls.intern_mask(&up.mask);
        let version = up.version;
        let mf = Arc::new(Megaflow::shared(*key, mask, self.interner.actions(up.actions), now));
        let actions = mf.actions();
        if self.n_flows >= self.cfg.flow_limit {
            self.stats.not_installed += 1;
            slow.uncached(up.note, bytes);
            return (actions, None);
        }
        if cls.insert(mf.clone()) {
            self.n_flows += 1;
            if let Err(note) = slow.try_installed(&mf, up.note, version) {
                // The rules changed since the upcall: not kept (no
                // maintenance would bring it up to date).
                mf.kill();
                self.unlink(&mf);
                self.stats.not_installed += 1;
                slow.uncached(note, bytes);
                return (actions, None);
            }
            self.stats.installed += 1;
            (actions, Some(mf))
        } else {
            // An identical live megaflow exists: forward with the fresh actions once.
            slow.uncached(up.note, bytes);
            (actions, None)
        }
    }

    /// Forwards one key: EMC, megaflow, or upcall (installing the result).
    /// Returns the actions to execute.
    pub fn process_key<S: SlowPath + ?Sized>(
        &mut self,
        key: &FlowKey,
        bytes: u64,
        rss: Option<u32>,
        now: u64,
        slow: &mut S,
    ) -> Actions {
        self.stats.packets += 1;
        let h = self.emc_hash(key, rss);
        let flags = key.get(kairo_flow::Field::TcpFlags) as u16;
        if let Some(f) = self.lookup_ref(key, h) {
            f.used(bytes, now, flags);
            return f.actions();
        }
        self.stats.misses += 1;
        let up = slow.upcall(key, now);
        let (actions, mf) = self.install(key, up, now, slow, bytes);
        if let Some(m) = mf {
            m.used(bytes, now, flags);
            self.emc.insert(key, h, &m);
        }
        actions
    }

    /// Forwards one key as [`Datapath::process_key`], then the keys its
    /// recirculations make ([`kairo_odp::apply`]: what `process_packets`
    /// does with frames, at the level of keys), up to [`MAX_RECIRC_DEPTH`]
    /// passes.
    pub fn process_key_passes<S: SlowPath + ?Sized>(&mut self, key: &FlowKey, bytes: u64, now: u64, slow: &mut S) {
        let mut todo = vec![(*key, 1)];
        while let Some((k, depth)) = todo.pop() {
            if depth > 1 {
                self.stats.recirculated += 1;
            }
            let actions = self.process_key(&k, bytes, None, now, slow);
            if DpAction::recirc_ids(&actions).is_empty() {
                continue;
            }
            for (port, next) in kairo_odp::apply(&actions, &k) {
                if port != kairo_odp::RECIRC_PORT {
                    continue;
                }
                if depth < MAX_RECIRC_DEPTH {
                    todo.push((next, depth + 1));
                } else {
                    self.stats.recirc_too_deep += 1;
                }
            }
        }
    }

    /// Forwards a batch of packets: parses (settling what each owes the
    /// hardware, [`kairo_wire::offload`]), looks up (EMC, then batched
    /// megaflow lookups per port), upcalls misses, executes actions and calls
    /// `out(where, bytes, layout)` for every packet sent (the layout says
    /// where its headers are and what it still owes).
    ///
    /// A miss never waits for the slow path: while an update holds it, the
    /// packet is parked (taken out of `pkts`, up to [`PARKED_MAX`]) and
    /// forwarding goes on; parked packets go first, in order, in the next
    /// call (a call with no packets just tries them again). Hits are never
    /// parked, and a flow's later packets miss too until its parked one is
    /// answered, so no flow is reordered.
    pub fn process_packets<S: SlowPath + ?Sized>(
        &mut self,
        pkts: &mut [Packet],
        now: u64,
        slow: &mut S,
        out: &mut impl FnMut(execute::Sent, &[u8], &kairo_wire::Layout),
    ) {
        if !self.parked.is_empty() && !slow.busy() {
            let mut waiting = std::mem::take(&mut self.parked);
            self.process_batch(&mut waiting, now, slow, out);
        }
        self.process_batch(pkts, now, slow, out);
        slow.parked(self.parked.len());
    }

    /// Parks a missed packet (laid out as `lay`) for the slow path; its
    /// virtio header then says what it owes as settled (so that settling
    /// it again gives the same).
    fn park(&mut self, p: &mut Packet, lay: &kairo_wire::Layout) {
        if self.parked.len() >= PARKED_MAX {
            self.stats.parked_dropped += 1;
            return;
        }
        self.stats.parked += 1;
        // Counted when it is taken up again, not now.
        self.stats.packets = self.stats.packets.saturating_sub(1);
        let vnet = (!lay.offload.is_none()).then(|| kairo_wire::offload::VnetHdr::for_frame(&p.bytes, lay));
        self.parked.push(Packet { bytes: std::mem::take(&mut p.bytes), in_port: p.in_port, rss: p.rss, vnet });
    }

    fn process_batch<S: SlowPath + ?Sized>(
        &mut self,
        pkts: &mut [Packet],
        now: u64,
        slow: &mut S,
        out: &mut impl FnMut(execute::Sent, &[u8], &kairo_wire::Layout),
    ) {
        for chunk in pkts.chunks_mut(BATCH) {
            let mut keys = [FlowKey::ZERO; BATCH];
            let mut lays = [kairo_wire::Layout::default(); BATCH];
            let mut hashes = [0u32; BATCH];
            let mut flows: [Option<Arc<Megaflow>>; BATCH] = Default::default();
            let mut bad = [false; BATCH];
            for (i, p) in chunk.iter_mut().enumerate() {
                let (k, l) = kairo_wire::parse(&p.bytes, p.in_port);
                keys[i] = k;
                lays[i] = l;
                if let Some(h) = p.vnet {
                    match h.settle(&mut p.bytes, &l) {
                        Ok(o) => lays[i].offload = o,
                        Err(_) => {
                            bad[i] = true;
                            continue;
                        }
                    }
                }
                hashes[i] = self.emc_hash(&k, p.rss);
                if let Some(f) = self.emc.lookup(&k, hashes[i]) {
                    flows[i] = Some(f.clone());
                }
            }
            let n = chunk.len();
            self.stats.packets += n as u64;
            self.stats.bad_offload += bad[..n].iter().filter(|&&b| b).count() as u64;
            self.stats.emc_hits += flows[..n].iter().filter(|f| f.is_some()).count() as u64;
            // Batched megaflow lookups, grouped by ingress port (on the
            // stack: nothing here allocates per packet).
            let (mut todo, mut nt) = ([0usize; BATCH], 0);
            for i in (0..n).filter(|&i| flows[i].is_none() && !bad[i]) {
                todo[nt] = i;
                nt += 1;
            }
            while nt > 0 {
                let port = keys[todo[0]].get(Field::InPort) as u32;
                let (mut same, mut ns, mut rest) = ([0usize; BATCH], 0, 0);
                for j in 0..nt {
                    let i = todo[j];
                    if keys[i].get(Field::InPort) as u32 == port {
                        same[ns] = i;
                        ns += 1;
                    } else {
                        todo[rest] = i;
                        rest += 1;
                    }
                }
                nt = rest;
                let same = &same[..ns];
                if let Some(c) = self.cls.get_mut(&port) {
                    let mut ks = [FlowKey::ZERO; BATCH];
                    for (k, &i) in ks.iter_mut().zip(same) {
                        *k = keys[i];
                    }
                    let mut res: [Option<Arc<Megaflow>>; BATCH] = Default::default();
                    let before = c.stats.subtables_visited;
                    c.lookup_batch(&ks[..ns], &mut res, &mut self.dead);
                    self.stats.subtables_visited += c.stats.subtables_visited - before;
                    self.stats.megaflow_lookups += ns as u64;
                    for (j, &i) in same.iter().enumerate() {
                        if let Some(f) = res[j].take() {
                            self.stats.megaflow_hits += 1;
                            self.emc.insert(&keys[i], hashes[i], &f);
                            flows[i] = Some(f);
                        }
                    }
                }
            }
            if !self.dead.is_empty() {
                self.reclaim_dead();
            }
            for (i, p) in chunk.iter_mut().enumerate() {
                if bad[i] {
                    continue;
                }
                let (len, in_port) = (p.bytes.len() as u64, p.in_port);
                let flags = keys[i].get(kairo_flow::Field::TcpFlags) as u16;
                let actions = match &flows[i] {
                    Some(f) => {
                        f.used(len, now, flags);
                        f.actions()
                    }
                    None => {
                        // Another packet of this batch may have installed it already.
                        let h = hashes[i];
                        match self.lookup(&keys[i], h) {
                            Some(f) => {
                                f.used(len, now, flags);
                                f.actions()
                            }
                            None => {
                                let Some(up) = slow.try_upcall(&keys[i], now) else {
                                    let lay = lays[i];
                                    self.park(p, &lay);
                                    continue;
                                };
                                self.stats.misses += 1;
                                let (a, mf) = self.install(&keys[i], up, now, slow, len);
                                if let Some(m) = mf {
                                    m.used(len, now, flags);
                                    self.emc.insert(&keys[i], h, &m);
                                }
                                a
                            }
                        }
                    }
                };
                let mut again = Vec::new();
                let mut send = execute::recirculating(&mut again, &mut *out);
                let mut cx = execute::Context { meters: &self.meters, ct: &self.conntrack, now };
                let meta = execute::PacketMeta::default();
                execute::execute(&mut p.bytes, &mut lays[i], in_port, meta, &actions, &mut cx, &mut send);
                drop(send);
                // Its recirculations before the next packet (as the key path).
                if !again.is_empty() {
                    self.recirculate(again, now, slow, out);
                }
            }
        }
    }

    /// Runs recirculated packets through the caches again (each looked up
    /// with its `recirc_id` and `dp_hash`), and the packets they recirculate
    /// in turn, up to [`MAX_RECIRC_DEPTH`] passes; deeper ones are dropped
    /// and counted.
    pub fn recirculate<S: SlowPath + ?Sized>(
        &mut self,
        mut pkts: Vec<Recirculated>,
        now: u64,
        slow: &mut S,
        out: &mut impl FnMut(execute::Sent, &[u8], &kairo_wire::Layout),
    ) {
        for _ in 1..MAX_RECIRC_DEPTH {
            if pkts.is_empty() {
                return;
            }
            let mut again = Vec::new();
            for mut p in pkts {
                self.stats.recirculated += 1;
                let (mut key, mut lay) = kairo_wire::parse(&p.bytes, p.in_port);
                lay.offload = p.offload;
                key.set(Field::RecircId, u64::from(p.recirc_id));
                key.set(Field::DpHash, u64::from(p.meta.dp_hash));
                p.meta.ct.write_key(&mut key);
                let actions = self.process_key(&key, p.bytes.len() as u64, None, now, slow);
                let mut send = execute::recirculating(&mut again, &mut *out);
                let mut cx = execute::Context { meters: &self.meters, ct: &self.conntrack, now };
                execute::execute(&mut p.bytes, &mut lay, p.in_port, p.meta, &actions, &mut cx, &mut send);
            }
            pkts = again;
        }
        self.stats.recirc_too_deep += pkts.len() as u64;
    }

    /// Removes megaflows idle for longer than `max_idle_ms` (and dead ones).
    /// A sweep reads every megaflow, so it runs at most once per tenth of
    /// max-idle (a full cache with nothing idle then skips installs cheaply
    /// instead of scanning on every miss).
    pub fn sweep<S: SlowPath + ?Sized>(&mut self, now: u64, slow: &mut S) -> usize {
        if self.last_sweep != 0 && now.saturating_sub(self.last_sweep) < (self.cfg.max_idle_ms / 10).max(1) {
            return 0;
        }
        self.last_sweep = now.max(1);
        self.stats.sweeps += 1;
        let limit = self.cfg.max_idle_ms;
        let mut victims = Vec::new();
        for c in self.cls.values() {
            victims.extend(c.iter().filter(|m| m.is_dead() || now.saturating_sub(m.last_used()) > limit).cloned());
        }
        let n = victims.len();
        for v in &victims {
            self.unlink(v);
            if !v.is_dead() {
                v.kill();
                self.stats.evicted_idle += 1;
                slow.removed(v);
            }
        }
        n
    }

    /// Lets go of a megaflow maintenance or idle expiry killed elsewhere
    /// (one unlink: no walk of the cache); `idle` counts it as expired.
    /// Whether it was held.
    pub fn retire(&mut self, mf: &Arc<Megaflow>, idle: bool) -> bool {
        mf.kill();
        let held = self.unlink(mf);
        if held && idle {
            self.stats.evicted_idle += 1;
        }
        held
    }

    /// Every megaflow held, per port.
    pub fn megaflows(&self) -> impl Iterator<Item = &Arc<Megaflow>> {
        self.cls.values().flat_map(|c| c.iter())
    }

    /// Removes one megaflow (maintenance eviction); it is killed first so
    /// nothing forwards by it even through an EMC entry.
    pub fn remove(&mut self, mf: &Arc<Megaflow>) -> bool {
        mf.kill();
        self.unlink(mf)
    }

    /// Drops every megaflow and EMC entry.
    pub fn flush(&mut self) {
        for m in self.megaflows() {
            m.kill();
        }
        self.cls.clear();
        self.emc.clear();
        self.n_flows = 0;
    }

    /// Subtable ranking of a port's classifier (mask, hits), in probe order.
    pub fn ranking(&self, in_port: u32) -> Vec<(Arc<FlowMask>, u64)> {
        self.cls.get(&in_port).map(|c| c.ranking()).unwrap_or_default()
    }

    /// Installs a megaflow directly (benchmarks and tests build caches of a
    /// given size and shape without a slow path).
    pub fn insert_megaflow(
        &mut self,
        key: &FlowKey,
        mask: &FlowMask,
        actions: Vec<DpAction>,
        now: u64,
    ) -> Option<Arc<Megaflow>> {
        let in_port = key.get(Field::InPort) as u32;
        let cls = self.cls.entry(in_port).or_insert_with(|| Dpcls::new(self.cfg.rerank_interval));
        let m = cls.intern_mask(mask);
        let mf = Arc::new(Megaflow::new(*key, m, actions, now));
        if cls.insert(mf.clone()) {
            self.n_flows += 1;
            Some(mf)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
