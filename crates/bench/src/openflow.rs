//! `kairo bench openflow`: the update stream sent over a real OpenFlow 1.3
//! connection (a Unix socket) to kairo's switch end, each update as its
//! FLOW_MOD or GROUP_MOD and a BARRIER, with the cache filled to E
//! megaflows: the round trip from sending to the barrier's reply, beside the
//! engine's own time-to-update for the same update (the baseline: what the
//! wire, the codec and the connection add to it).
//!
//! Invariant: a round trip is counted only for an update the switch
//! accepted (an error reply fails the run), and only once its barrier reply
//! is read, which kairo sends after the update's cache maintenance: every
//! packet after that reply is forwarded by the new rules, so there is no
//! stale window to report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kairo_maintain::flowmod::{parse_command, FlowMod};
use kairo_maintain::EngineKind;
use kairo_ofp::Version;
use kairo_switch::openflow::client::{to_messages, Client};
use kairo_switch::openflow::{serve, OfLimits, Target};
use kairo_switch::{lock, Switch};

use crate::ttu::{fill, workload, PipelineKind};
use crate::{quantile, Machine};

pub struct OfOpts {
    pub pipeline: PipelineKind,
    pub entries: Vec<usize>,
    pub updates: usize,
    pub engine: EngineKind,
    pub seed: u64,
    pub progress: bool,
    /// Also send the stream to a private Open vSwitch (when installed).
    pub ovs: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct OfRow {
    pub entries: usize,
    pub engine: &'static str,
    pub updates: usize,
    pub rtt_median_us: f64,
    pub rtt_p99_us: f64,
    pub ttu_median_us: f64,
    pub ttu_p99_us: f64,
    /// Median of (round trip - TTU) per update: the wire, codec and connection.
    pub overhead_median_us: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct OfReport {
    pub machine: Machine,
    pub pipeline: String,
    pub rows: Vec<OfRow>,
    /// The peer's row; `Err` says why there is none (not installed, not asked).
    pub ovs: Result<crate::openflow_ovs::OvsRow, String>,
}

pub fn run(opts: &OfOpts) -> Result<OfReport, String> {
    let max = opts.entries.iter().copied().max().unwrap_or(0);
    let wl = workload(opts.pipeline.clone(), max, opts.updates, opts.seed)?;
    let p = wl.pipeline()?;
    let mods: Vec<FlowMod> = wl
        .updates
        .iter()
        .map(|(_, c, a)| parse_command(c, a).map_err(|e| format!("{c} {a}: {e}")))
        .collect::<Result<_, _>>()?;
    let v = Version::V1_3;
    let msgs: Vec<_> = mods.iter().map(|m| to_messages(m, v).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for &n in &opts.entries {
        let (dp, sc) = fill(p.clone(), opts.engine, wl.keys(), wl.connections, n, opts.progress)?;
        let engine = sc.lock().engine.name();
        let sw = Arc::new(Switch::from_parts(sc, dp, Vec::new()));
        let dir =
            std::env::temp_dir().join(format!("kairo-bench-of-{}-{n}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("of.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let served = serve(sw.clone(), &Target::PassiveUnix(path.clone()), stop.clone(), OfLimits::default())
            .map_err(|e| e.to_string())?;
        let mut client = Client::connect(&Target::ActiveUnix(path.clone()), v).map_err(|e| e.to_string())?;
        let pb = crate::progress_bar(
            opts.progress,
            msgs.len() as u64,
            format!("{} updates over OpenFlow, {n} entries", msgs.len()),
        );
        let (mut rtts, mut ttus, mut over) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in msgs.iter().enumerate() {
            let before = lock(&sw.updates).total;
            let t0 = Instant::now();
            client.call(m).map_err(|e| format!("update {i} ({}): {e}", wl.updates[i].0))?;
            let rtt = t0.elapsed().as_secs_f64() * 1e6;
            let log = lock(&sw.updates);
            let k = (log.total - before) as usize;
            let ttu: f64 = log.recent.iter().rev().take(k).map(|r| r.ttu.as_secs_f64() * 1e6).sum();
            drop(log);
            rtts.push(rtt);
            ttus.push(ttu);
            over.push(rtt - ttu);
            pb.inc(1);
        }
        pb.finish_and_clear();
        stop.store(true, Ordering::Relaxed);
        drop(client);
        let _ = served.join();
        let _ = std::fs::remove_dir_all(&dir);
        rows.push(OfRow {
            entries: n,
            engine,
            updates: rtts.len(),
            rtt_median_us: quantile(&mut rtts.clone(), 0.5),
            rtt_p99_us: quantile(&mut rtts, 0.99),
            ttu_median_us: quantile(&mut ttus.clone(), 0.5),
            ttu_p99_us: quantile(&mut ttus, 0.99),
            overhead_median_us: quantile(&mut over, 0.5),
        });
    }
    let ovs = if opts.ovs {
        // The same traffic as the largest cache kairo was given (Open
        // vSwitch revalidates every megaflow it holds after each update).
        let n = max;
        let keys: Vec<_> = wl.keys().take(n).collect();
        crate::openflow_ovs::run(&wl, &p, &mods, &msgs, &keys, v, opts.progress)
    } else {
        Err("not asked for (--peers ovs)".into())
    };
    Ok(OfReport { machine: Machine::detect(), pipeline: wl.name.to_string(), rows, ovs })
}

impl OfReport {
    pub fn to_table(&self) -> String {
        let mut s = format!("machine: {}\npipeline: {}\n\n", self.machine, self.pipeline);
        s.push_str("entries       engine  updates  round trip median us   p99 us  TTU median us   p99 us  wire+codec median us\n");
        for r in &self.rows {
            s.push_str(&format!(
                "{:>7}  {:>11}  {:>7}  {:>20.1}  {:>7.1}  {:>13.1}  {:>7.1}  {:>20.1}\n",
                r.entries,
                r.engine,
                r.updates,
                r.rtt_median_us,
                r.rtt_p99_us,
                r.ttu_median_us,
                r.ttu_p99_us,
                r.overhead_median_us
            ));
        }
        s.push_str("\nkairo's barrier reply comes after the update's cache maintenance: no stale window.\n");
        match &self.ovs {
            Ok(o) => s.push_str(&format!(
                "\nThe same stream to {} (private, userspace, dummy datapath; {} packets of the traffic sent,\n\
                 {} megaflows cached, kairo {} for the same packets; {} rules after the stream): round trip median {:.1} us, p99 {:.1} us over\n\
                 {} updates. Its barrier reply does not wait for its revalidators: for the {} updates that\n\
                 re-route a cached packet, that packet left by its old port for a median {:.1} ms, p99 {:.1} ms\n\
                 after the flow-mod ({} still stale at {} s; probe resolution {:.1} ms).\n",
                o.version,
                o.packets,
                o.megaflows,
                o.kairo_megaflows,
                o.rules,
                o.rtt_median_us,
                o.rtt_p99_us,
                o.updates,
                o.probed,
                o.stale_median_ms,
                o.stale_p99_ms,
                o.timed_out,
                crate::openflow_ovs::STALE_LIMIT.as_secs(),
                o.probe_median_ms
            )),
            Err(why) => s.push_str(&format!("\nOpen vSwitch: no column ({why}).\n")),
        }
        s
    }
}
