//! `kairo bench emc`: what the EMC should take in. The end-to-end L3
//! router scenario (`kairo bench lookup`'s: frames through parse, EMC,
//! megaflows and actions) under uniform and Zipf 0.9 / 0.95 / 0.99
//! popularity, with three admission rules on identical datapaths: Open
//! vSwitch's (a missed flow in at random, 1 in 100), always (every missed
//! flow in), and the hot-flow filter (NetCache's Count-Min sketch and Bloom
//! filter, [`kairo_datapath::admit`]). Per row: the EMC hit rate over the
//! measured passes and packets per second on one core.
//!
//! Invariant: every rule sees the same packets in the same order from the
//! same warmed cache of megaflows (two passes before measuring: one that
//! installs, one that warms); batches are refilled in place (no allocation
//! in the measured loop, for any rule).

use kairo_datapath::synth::Popularity;
use kairo_datapath::{Admission, Datapath, DpConfig, Packet, BATCH};
use kairo_xlate::Pipeline;

use crate::lookup::{router_packets, ROUTER_FLOWS, ROUTER_GROUPS};
use crate::{rate, table, Machine};

#[derive(Clone, Debug)]
pub struct EmcOpts {
    /// Distinct flows in the traffic.
    pub flows: usize,
    /// Packets in the replayed stream.
    pub packets: usize,
    /// Seconds per measurement.
    pub secs: f64,
    pub seed: u64,
    pub progress: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EmcRow {
    pub traffic: String,
    pub admission: String,
    pub emc_hit_pct: f64,
    pub mpps: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EmcReport {
    pub machine: Machine,
    pub flows: usize,
    pub packets: usize,
    pub rows: Vec<EmcRow>,
}

/// The admission rules compared: name, insertion probability 1/N, rule.
pub fn rules() -> [(&'static str, u32, Admission); 3] {
    [
        ("Open vSwitch (1/100 at random)", 100, Admission::Random),
        ("always", 1, Admission::Random),
        ("hot-flow filter (kairo's default)", 100, kairo_datapath::DEFAULT_ADMISSION),
    ]
}

/// One measurement: EMC hit percentage and Mpps.
fn measure(p: &Pipeline, pkts: &[Vec<u8>], cfg: DpConfig, secs: f64) -> (f64, f64) {
    let mut dp = Datapath::new(cfg);
    let mut slow = kairo_maintain::shared::Translate(p);
    let mut batch: Vec<Packet> = vec![Packet::default(); BATCH];
    let mut sink = 0u64;
    let mut pass = |dp: &mut Datapath| {
        for chunk in pkts.chunks(BATCH) {
            batch.truncate(chunk.len());
            for (b, f) in batch.iter_mut().zip(chunk) {
                b.bytes.clear();
                b.bytes.extend_from_slice(f);
                b.in_port = 1;
            }
            dp.process_packets(&mut batch, 1, &mut slow, &mut |_, b, _| sink += b.len() as u64);
            batch.resize_with(BATCH, Packet::default);
        }
    };
    pass(&mut dp);
    pass(&mut dp);
    let before = dp.stats;
    let r = rate(pkts.len() as u64, secs, || pass(&mut dp));
    std::hint::black_box(sink);
    let (hits, n) = (dp.stats.emc_hits - before.emc_hits, dp.stats.packets - before.packets);
    (100.0 * hits as f64 / n.max(1) as f64, r / 1e6)
}

pub fn run(opts: &EmcOpts) -> Result<EmcReport, String> {
    let ff = kairo_ofproto::parse_flow_file(ROUTER_FLOWS).map_err(|e| e.to_string())?;
    let gs = kairo_ofproto::parse_group_file(ROUTER_GROUPS).map_err(|e| e.to_string())?;
    let p = Pipeline::from_parts(ff, gs).map_err(|e| e.to_string())?;
    let pops = [Popularity::Uniform, Popularity::Zipf(0.9), Popularity::Zipf(0.95), Popularity::Zipf(0.99)];
    let pb = crate::progress_bar(opts.progress, (pops.len() * rules().len()) as u64, "EMC admission".into());
    let mut rows = Vec::new();
    for pop in pops {
        let pkts = router_packets(opts.flows, opts.packets, pop, opts.seed);
        for (name, inv, admission) in rules() {
            let cfg = DpConfig { emc_insert_inv_prob: inv, emc_admission: admission, ..DpConfig::default() };
            let (emc_hit_pct, mpps) = measure(&p, &pkts, cfg, opts.secs);
            rows.push(EmcRow { traffic: pop.to_string(), admission: name.into(), emc_hit_pct, mpps });
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(EmcReport { machine: Machine::detect(), flows: opts.flows, packets: opts.packets, rows })
}

impl EmcReport {
    pub fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![r.traffic.clone(), r.admission.clone(), format!("{:.1}%", r.emc_hit_pct), format!("{:.2}", r.mpps)]
            })
            .collect();
        let mut t = format!(
            "EMC admission, end to end (l3-router, {} flows, a stream of {} packets replayed); {} ({} cores)\n",
            self.flows, self.packets, self.machine.cpu, self.machine.cores
        );
        t += &table(&["traffic", "admission", "EMC hits", "Mpps"], &rows);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run: every traffic with every rule; under Zipf 0.99 the
    /// hot-flow filter holds more of the traffic than random insertion.
    #[test]
    fn the_hot_filter_keeps_more_of_skewed_traffic() {
        let opts = EmcOpts { flows: 20_000, packets: 60_000, secs: 0.01, seed: 3, progress: false };
        let r = run(&opts).unwrap();
        assert_eq!(r.rows.len(), 4 * rules().len());
        let hit = |traffic: &str, rule: usize| {
            r.rows.iter().filter(|x| x.traffic == traffic).nth(rule).map(|x| x.emc_hit_pct).unwrap()
        };
        assert!(hit("zipf-0.99", 2) > hit("zipf-0.99", 0), "{}", r.to_table());
        assert!(r.rows.iter().all(|x| x.mpps > 0.0));
    }
}
