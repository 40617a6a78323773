//! `kairo bench threads`: how forwarding scales with threads, on ports in
//! memory (no kernel in the way: packets from memory through the whole
//! forwarding loop, EMC, megaflows, actions and out through a port). For
//! each thread count n there are n source ports and n sink ports; source k
//! and sink k are read by the same thread (port i by thread i mod n), a
//! flow sends source k's packets to sink k, and every source offers as
//! fast as its thread takes packets. Reported: packets per second through
//! the sinks, and the speed-up over one thread.
//!
//! Invariant: every count runs the same flows over the same packets for
//! the same time; a packet counts only once a sink took it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairo_datapath::{DpConfig, Packet};
use kairo_maintain::EngineKind;
use kairo_switch::{Attached, Port, PortCounters, Switch};
use kairo_wire::offload::VnetHdr;

use crate::{table, Machine};

#[derive(Clone, Debug)]
pub struct ThreadsOpts {
    pub threads: Vec<usize>,
    pub secs: f64,
    /// Distinct flows per source.
    pub flows: usize,
    pub progress: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ThreadsRow {
    pub threads: usize,
    pub mpps: f64,
    pub speedup: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ThreadsReport {
    pub machine: Machine,
    pub secs: f64,
    pub flows: usize,
    pub rows: Vec<ThreadsRow>,
}

/// A port that offers frames from templates (in the loop's pooled
/// buffers) as fast as it is read, until `stop`.
struct Source {
    templates: Arc<Vec<Vec<u8>>>,
    next: usize,
    stop: Arc<AtomicBool>,
}

impl Port for Source {
    fn kind(&self) -> &'static str {
        "mem-source"
    }
    fn fd(&self) -> Option<RawFd> {
        None
    }
    fn recv(&mut self, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, max: usize, _c: &PortCounters) -> usize {
        if self.stop.load(Ordering::Relaxed) {
            return 0;
        }
        let n = max.min(kairo_datapath::BATCH);
        for _ in 0..n {
            let mut b = pool.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(&self.templates[self.next % self.templates.len()]);
            self.next += 1;
            out.push(Packet::new(b, 0));
        }
        n
    }
    fn send(&mut self, _frame: &[u8], _vnet: Option<&VnetHdr>, _c: &PortCounters) {}
    fn tx_clone(&self) -> Option<Box<dyn Port>> {
        // Nothing is sent to a source: a sink that counts apart.
        Some(Box::new(Sink(Arc::new(AtomicU64::new(0)))))
    }
}

/// A port that counts what is sent out of it.
struct Sink(Arc<AtomicU64>);

impl Port for Sink {
    fn kind(&self) -> &'static str {
        "mem-sink"
    }
    fn fd(&self) -> Option<RawFd> {
        None
    }
    fn recv(&mut self, _out: &mut Vec<Packet>, _pool: &mut Vec<Vec<u8>>, _max: usize, _c: &PortCounters) -> usize {
        0
    }
    fn send(&mut self, _frame: &[u8], _vnet: Option<&VnetHdr>, _c: &PortCounters) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn tx_clone(&self) -> Option<Box<dyn Port>> {
        Some(Box::new(Sink(self.0.clone())))
    }
}

/// One count: packets per second through the sinks.
fn measure(n: usize, opts: &ThreadsOpts) -> Result<f64, String> {
    // Ports 1..=n are sources, n+1..=2n sinks: source k (port k) and sink
    // k (port n+k) are both read by thread (k-1) mod n.
    let flows: String =
        (1..=n).map(|k| format!("priority=10,in_port={k},udp,actions=dec_ttl,output:{}\n", n + k)).collect();
    let ff = kairo_ofproto::parse_flow_file(&flows).map_err(|e| e.to_string())?;
    let pipeline = kairo_xlate::Pipeline::from_parts(ff, Vec::new()).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut ports = Vec::new();
    for k in 1..=n as u32 {
        let templates: Vec<Vec<u8>> = (0..opts.flows.max(1) as u32)
            .map(|i| {
                let key =
                    kairo_flow::FlowKey::ipv4(k, 0x0200_0000_0001, 0x0200_0000_0002, 0x0a00_0000 | i, 0x0a01_0001, 17)
                        .with(kairo_flow::Field::TpSrc, 1000 + u64::from(i % 50_000))
                        .with(kairo_flow::Field::TpDst, 53)
                        .with(kairo_flow::Field::IpTtl, 64);
                kairo_wire::emit::frame(&key, &[0; 18])
            })
            .collect();
        let io = Source { templates: Arc::new(templates), next: 0, stop: stop.clone() };
        ports.push(Attached { ofport: k, name: format!("src{k}"), io: Box::new(io), counters: Default::default() });
    }
    for k in 1..=n as u32 {
        let io = Sink(count.clone());
        ports.push(Attached {
            ofport: n as u32 + k,
            name: format!("sink{k}"),
            io: Box::new(io),
            counters: Default::default(),
        });
    }
    let info = ports.iter().map(Attached::info).collect();
    let sw = Arc::new(Switch::new(pipeline, EngineKind::Incremental, DpConfig::default(), info));
    sw.pmd_threads.store(n, Ordering::Relaxed);
    let fwd = {
        let (sw, stop) = (sw.clone(), stop.clone());
        std::thread::spawn(move || sw.forward(ports, &stop))
    };
    // Warm up (megaflows installed), then count for `secs`.
    std::thread::sleep(Duration::from_millis(300));
    let (c0, t0) = (count.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(opts.secs));
    let (c1, dt) = (count.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    stop.store(true, Ordering::SeqCst);
    fwd.join().map_err(|_| "a forwarding thread panicked".to_string())?;
    let misses = sw.dp_totals().0.misses;
    if misses > (n * opts.flows) as u64 {
        return Err(format!("{misses} upcalls for {} flows: the cache did not hold", n * opts.flows));
    }
    Ok((c1 - c0) as f64 / dt)
}

pub fn run(opts: &ThreadsOpts) -> Result<ThreadsReport, String> {
    let pb = crate::progress_bar(opts.progress, opts.threads.len() as u64, "forwarding threads".into());
    let mut rows = Vec::new();
    let mut one = None;
    for &n in &opts.threads {
        let pps = measure(n, opts)?;
        if n == 1 {
            one = Some(pps);
        }
        let speedup = one.map_or(f64::NAN, |b| pps / b);
        rows.push(ThreadsRow { threads: n, mpps: pps / 1e6, speedup });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(ThreadsReport { machine: Machine::detect(), secs: opts.secs, flows: opts.flows, rows })
}

impl ThreadsReport {
    pub fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let s = if r.speedup.is_nan() { "-".to_string() } else { format!("{:.2}x", r.speedup) };
                vec![r.threads.to_string(), format!("{:.2}", r.mpps), s]
            })
            .collect();
        let mut t = format!(
            "Forwarding threads on in-memory ports ({} flows per source, {:.1} s each); {} ({} cores)\n",
            self.flows, self.secs, self.machine.cpu, self.machine.cores
        );
        t += &table(&["threads", "Mpps", "over 1 thread"], &rows);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each count forwards through every thread's sinks (no speed asked:
    /// figures belong to the benchmark).
    #[test]
    fn every_thread_count_forwards() {
        let opts = ThreadsOpts { threads: vec![1, 2], secs: 0.2, flows: 50, progress: false };
        let r = run(&opts).unwrap();
        assert_eq!(r.rows.len(), 2);
        assert!(r.rows.iter().all(|x| x.mpps > 0.0), "{}", r.to_table());
        assert!((r.rows[0].speedup - 1.0).abs() < 1e-9);
    }
}
