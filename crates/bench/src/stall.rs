//! `kairo bench stall`: does forwarding wait while an update runs? A
//! forwarding thread offers packets at a fixed rate (open loop: a packet's
//! latency counts from when it was due, so a stalled thread shows as late
//! packets) to a datapath over a filled OF-DPA cache, while the control
//! thread applies updates that re-translate the whole cache (the full
//! engine: hundreds of milliseconds each at 100K megaflows). Nine packets
//! in ten are of flows in the cache (hits), one in ten of new flows
//! (misses, upcalls). Three runs on identical caches, in the same process:
//! kairo as it is (a miss while an update holds the control state is
//! translated against the published tables and forwarded; parked only
//! while the tables themselves change), a miss parked while an update holds
//! the control state (forwarding goes on; kairo before this), and upcalls
//! that wait for the lock (before that).
//!
//! Reported per run, for the packets due while an update ran: how many, the
//! latency of hits and of new flows' packets (median, p99, max), and how
//! many never went out (parking is bounded).
//!
//! Invariant: both runs see the same cache, the same packets at the same
//! offered rate and the same updates; a packet's latency is measured from
//! the time it was due to the time its actions ran.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairo_datapath::{Datapath, Megaflow, Packet, SlowPath, Upcall};
use kairo_flow::FlowKey;
use kairo_maintain::shared::{Held, SharedControl};
use kairo_maintain::EngineKind;
use kairo_xlate::Traversal;

use crate::ttu::{fill, workload, PipelineKind};
use crate::{quantile, table, Machine};

#[derive(Clone, Debug)]
pub struct StallOpts {
    pub entries: usize,
    pub updates: usize,
    /// Packets offered per second.
    pub pps: u64,
    pub seed: u64,
    pub progress: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StallRow {
    pub mode: String,
    pub packets: usize,
    pub hits: usize,
    pub misses: usize,
    /// Packets due during the updates that never went out (parking full,
    /// or an update made their flow drop).
    pub dropped: usize,
    /// Milliseconds: hits' median, p99 and max latency; the same for misses.
    pub hit_ms: [f64; 3],
    pub miss_ms: [f64; 3],
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StallReport {
    pub machine: Machine,
    pub entries: usize,
    pub pps: u64,
    /// Each update's duration, milliseconds (the first run's).
    pub update_ms: Vec<f64>,
    pub rows: Vec<StallRow>,
}

/// kairo's slow path with upcalls that wait for the lock (as before
/// parking): every call goes to the shared slow path's blocking methods.
struct Waiting(SharedControl);

impl SlowPath for Waiting {
    type Note = Traversal;
    fn upcall(&mut self, key: &FlowKey, now: u64) -> Upcall<Traversal> {
        Held(&mut self.0.lock()).upcall(key, now)
    }
    fn installed(&mut self, mf: &Arc<Megaflow>, note: Traversal, version: u64) {
        self.0.installed(mf, note, version)
    }
    fn removed(&mut self, mf: &Arc<Megaflow>) {
        self.0.removed(mf)
    }
}

/// kairo's slow path as it was before misses were translated during
/// updates: a miss while anyone holds the control state is parked, and a
/// megaflow whose registration would wait is not kept.
struct Parking(Waiting);

impl SlowPath for Parking {
    type Note = Traversal;
    /// A recirculated pass's miss waited (it could not be parked).
    fn upcall(&mut self, key: &FlowKey, now: u64) -> Upcall<Traversal> {
        self.0.upcall(key, now)
    }
    fn installed(&mut self, mf: &Arc<Megaflow>, note: Traversal, version: u64) {
        self.0.installed(mf, note, version)
    }
    fn removed(&mut self, mf: &Arc<Megaflow>) {
        self.0.removed(mf)
    }
    fn try_upcall(&mut self, key: &FlowKey, now: u64) -> Option<Upcall<Traversal>> {
        let mut c = self.0 .0.try_lock()?;
        Some(Held(&mut c).upcall(key, now))
    }
    fn try_installed(&mut self, mf: &Arc<Megaflow>, note: Traversal, version: u64) -> Result<(), Traversal> {
        let Some(mut c) = self.0 .0.try_lock() else { return Err(note) };
        c.installed(mf, note, version);
        Ok(())
    }
    fn uncached(&mut self, note: Traversal, bytes: u64) {
        self.0 .0.uncached(note, bytes)
    }
    fn busy(&self) -> bool {
        self.0 .0.try_lock().is_none()
    }
    fn parked(&mut self, n: usize) {
        self.0 .0.parked(n)
    }
}

/// How the forwarding thread's misses reach the slow path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// kairo: translated against the published tables during an update.
    Published,
    /// Parked while an update holds the control state.
    Parked,
    /// Waiting for the control state's lock.
    Waiting,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Published => "kairo (misses translated during updates)",
            Mode::Parked => "misses parked during updates (before)",
            Mode::Waiting => "upcalls wait for the lock (before that)",
        }
    }
}

/// A packet's index, carried in its payload's last four bytes.
fn index_of(frame: &[u8]) -> Option<usize> {
    let t = frame.get(frame.len().checked_sub(4)?..)?;
    Some(u32::from_be_bytes([t[0], t[1], t[2], t[3]]) as usize)
}

/// What one run measured: each update's duration (ms) and, for every
/// packet due while one ran, its index and latency.
type Measured = (Vec<f64>, Vec<(usize, Duration)>);

/// One run: the forwarding thread over `dp`, updates from this thread.
fn run_one(
    mut dp: Datapath,
    sc: &SharedControl,
    frames: &[(Vec<u8>, u32)],
    updates: &[kairo_maintain::flowmod::FlowMod],
    pps: u64,
    mode: Mode,
) -> Result<Measured, String> {
    let start = Instant::now();
    // When each packet is due (open loop).
    let due: Vec<Duration> = (0..frames.len()).map(|i| Duration::from_secs_f64(i as f64 / pps as f64)).collect();
    let done = Mutex::new(vec![None::<Duration>; frames.len()]);
    let mut spans = Vec::new();
    std::thread::scope(|s| -> Result<(), String> {
        let fwd = s.spawn(|| {
            let mut slow: Box<dyn SlowPath<Note = Traversal>> = match mode {
                Mode::Published => Box::new(sc.clone()),
                Mode::Parked => Box::new(Parking(Waiting(sc.clone()))),
                Mode::Waiting => Box::new(Waiting(sc.clone())),
            };
            let mut batch: Vec<Packet> = Vec::with_capacity(kairo_datapath::BATCH);
            let mut finished = Vec::with_capacity(frames.len());
            let mut next = 0usize;
            let mut out = |_: kairo_datapath::execute::Sent, b: &[u8], _: &kairo_wire::Layout| {
                if let Some(i) = index_of(b) {
                    finished.push((i, start.elapsed()));
                }
            };
            let deadline = Instant::now() + due.last().copied().unwrap_or_default() + Duration::from_secs(30);
            // Offer the stream; then try the parked ones until none is left.
            while (next < frames.len() || dp.n_parked() > 0) && Instant::now() < deadline {
                let now = start.elapsed();
                batch.clear();
                while next < frames.len() && due[next] <= now && batch.len() < kairo_datapath::BATCH {
                    batch.push(Packet::new(frames[next].0.clone(), frames[next].1));
                    next += 1;
                }
                if batch.is_empty() && dp.n_parked() == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                dp.process_packets(&mut batch, 1, &mut *slow, &mut out);
            }
            let mut d = done.lock().unwrap_or_else(|e| e.into_inner());
            for (i, t) in finished {
                if let Some(slot) = d.get_mut(i) {
                    slot.get_or_insert(t);
                }
            }
        });
        // Updates after a quarter of the stream, one after the other.
        let begin = due[frames.len() / 4];
        while start.elapsed() < begin {
            std::thread::sleep(Duration::from_millis(1));
        }
        for fm in updates {
            let t0 = start.elapsed();
            let r = sc.lock_for_update().apply(fm).map(|_| ());
            spans.push((t0, start.elapsed()));
            r.map_err(|e| e.to_string())?;
        }
        fwd.join().map_err(|_| "the forwarding thread panicked".to_string())
    })?;
    let done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    let during = (0..frames.len())
        .filter(|&i| spans.iter().any(|(a, b)| due[i] >= *a && due[i] < *b))
        .map(|i| (i, done[i].map_or(Duration::MAX, |t| t.saturating_sub(due[i]))))
        .collect();
    let update_ms = spans.iter().map(|(a, b)| (*b - *a).as_secs_f64() * 1e3).collect();
    Ok((update_ms, during))
}

pub fn run(opts: &StallOpts) -> Result<StallReport, String> {
    let w = workload(PipelineKind::Ofdpa, opts.entries, opts.updates.max(1), opts.seed)?;
    let p = w.pipeline()?;
    let keys: Vec<FlowKey> = w.keys().collect();
    let updates: Vec<kairo_maintain::flowmod::FlowMod> = w
        .updates
        .iter()
        .take(opts.updates.max(1))
        .map(|(_, cmd, arg)| kairo_maintain::flowmod::parse_command(cmd, arg).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    let mut update_ms = Vec::new();
    for mode in [Mode::Published, Mode::Parked, Mode::Waiting] {
        let (mut dp, sc) = fill(p.clone(), EngineKind::Full, keys.iter().copied(), false, opts.entries, opts.progress)?;
        // Flows the cache holds (hits) and flows it does not (misses),
        // among those the pipeline sends somewhere (a packet's latency is
        // read when it goes out).
        let (mut hit, mut miss) = (Vec::new(), Vec::new());
        let sends = |k: &FlowKey| {
            kairo_xlate::translate(&p, k).actions.iter().any(|a| matches!(a, kairo_xlate::DpAction::Output(_)))
        };
        for k in keys.iter().filter(|k| sends(k)) {
            let h = dp.emc_hash(k, None);
            if dp.lookup(k, h).is_some() {
                hit.push(*k);
            } else {
                miss.push(*k);
            }
        }
        if hit.is_empty() || miss.is_empty() {
            return Err(format!(
                "the traffic has {} flows in the cache and {} not: nothing to compare",
                hit.len(),
                miss.len()
            ));
        }
        let n = (opts.pps as usize * 3).max(1000);
        let is_miss: Vec<bool> = (0..n).map(|i| i % 10 == 9).collect();
        let frames: Vec<(Vec<u8>, u32)> = (0..n)
            .map(|i| {
                let k = if is_miss[i] { miss[(i / 10) % miss.len()] } else { hit[(i * 7919) % hit.len()] };
                // The index last, after enough payload that no frame is padded.
                let mut payload = [0u8; 64];
                payload[60..].copy_from_slice(&(i as u32).to_be_bytes());
                (kairo_wire::emit::frame(&k, &payload), k.get(kairo_flow::Field::InPort) as u32)
            })
            .collect();
        let (ms, during) = run_one(dp, &sc, &frames, &updates, opts.pps, mode)?;
        if mode == Mode::Published {
            update_ms = ms;
        }
        let dropped = during.iter().filter(|(_, d)| *d == Duration::MAX).count();
        let lat = |want_miss: bool| -> (usize, [f64; 3]) {
            let mut v: Vec<f64> = during
                .iter()
                .filter(|(i, d)| is_miss[*i] == want_miss && *d != Duration::MAX)
                .map(|(_, d)| d.as_secs_f64() * 1e3)
                .collect();
            let max = v.iter().copied().fold(0.0, f64::max);
            (v.len(), [quantile(&mut v, 0.5), quantile(&mut v, 0.99), max])
        };
        let (hits, hit_ms) = lat(false);
        let (misses, miss_ms) = lat(true);
        rows.push(StallRow {
            mode: mode.label().into(),
            packets: hits + misses + dropped,
            hits,
            misses,
            dropped,
            hit_ms,
            miss_ms,
        });
    }
    Ok(StallReport { machine: Machine::detect(), entries: opts.entries, pps: opts.pps, update_ms, rows })
}

impl StallReport {
    pub fn to_table(&self) -> String {
        let ms = |v: &[f64; 3]| format!("{:.2} / {:.2} / {:.1}", v[0], v[1], v[2]);
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.mode.clone(),
                    r.hits.to_string(),
                    ms(&r.hit_ms),
                    r.misses.to_string(),
                    ms(&r.miss_ms),
                    r.dropped.to_string(),
                ]
            })
            .collect();
        let ups: Vec<String> = self.update_ms.iter().map(|m| format!("{m:.0}")).collect();
        let mut t = format!(
            "Forwarding while updates re-translate a {}-megaflow OF-DPA cache (full engine; updates took {} ms), {} packets/s offered, 1 in 10 a new flow; {} ({} cores)\n",
            self.entries,
            ups.join(", "),
            self.pps,
            self.machine.cpu,
            self.machine.cores
        );
        t += &table(
            &[
                "mode",
                "hits during updates",
                "hit latency ms (p50 / p99 / max)",
                "new flows",
                "their latency ms (p50 / p99 / max)",
                "dropped",
            ],
            &rows,
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run: every mode measured, packets due during the updates
    /// accounted for (forwarded or dropped).
    #[test]
    fn every_mode_forwards_during_updates() {
        let opts = StallOpts { entries: 2000, updates: 2, pps: 2000, seed: 2, progress: false };
        let r = run(&opts).unwrap();
        assert_eq!(r.rows.len(), 3);
        assert_eq!(r.update_ms.len(), 2);
        for row in &r.rows {
            assert_eq!(row.packets, row.hits + row.misses + row.dropped);
        }
        assert!(r.to_table().contains("misses translated during updates"));
    }
}
