//! `kairo bench lookup`: fast-path lookup rates, each beside a naive baseline
//! run in the same process on the same megaflows and keys.
//!
//! - EMC hits vs the same keys without an EMC (megaflow lookups, unranked);
//! - megaflow hits with 1, 8 and 32 subtables at each cache size, ranked
//!   subtables with batched lookups vs insertion order with one-at-a-time
//!   lookups, under uniform and Zipf traffic;
//! - end to end from pre-built packet buffers through the shipped L3 router
//!   pipeline (parse, EMC, megaflows, upcalls, actions), uniform and Zipf;
//! - bytes of memory per megaflow; the EMC hash choice (Toeplitz vs computed).

use std::sync::Arc;

use kairo_datapath::synth::{self, Popularity};
use kairo_datapath::{hash, Datapath, DpConfig, Dpcls, Megaflow, BATCH};
use kairo_flow::FlowKey;
use kairo_xlate::Pipeline;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

use crate::{rate, resident_bytes, table, Machine};

/// Options of `kairo bench lookup`.
#[derive(Clone, Debug)]
pub struct LookupOpts {
    pub sizes: Vec<usize>,
    pub subtables: Vec<usize>,
    /// Seconds per measurement.
    pub secs: f64,
    /// Unique flows of the end-to-end scenario.
    pub e2e_flows: usize,
    pub seed: u64,
    pub progress: bool,
}

impl Default for LookupOpts {
    fn default() -> Self {
        LookupOpts {
            sizes: vec![10_000, 1_000_000],
            subtables: vec![1, 8, 32],
            secs: 0.4,
            e2e_flows: 100_000,
            seed: 1,
            progress: true,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub scenario: String,
    pub entries: usize,
    pub subtables: usize,
    pub traffic: String,
    /// Million lookups (or packets) per second on one core.
    pub kairo_mops: f64,
    pub baseline_mops: f64,
    pub ratio: f64,
    pub kairo_subtables_per_lookup: f64,
    pub baseline_subtables_per_lookup: f64,
    pub baseline: String,
}

impl Row {
    /// A measured row: kairo's and the baseline's (rate in M/s, subtables per
    /// lookup), on `entries` megaflows in `subtables` subtables (0: any).
    fn measured(
        scenario: &str,
        (entries, subtables): (usize, usize),
        traffic: String,
        (kairo_mops, kairo_subtables_per_lookup): (f64, f64),
        (baseline_mops, baseline_subtables_per_lookup): (f64, f64),
        baseline: &str,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            entries,
            subtables,
            traffic,
            kairo_mops,
            baseline_mops,
            ratio: kairo_mops / baseline_mops,
            kairo_subtables_per_lookup,
            baseline_subtables_per_lookup,
            baseline: baseline.into(),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LookupReport {
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// Resident bytes per megaflow (megaflow, key, mask share, actions, classifier slot).
    pub bytes_per_megaflow: f64,
    pub bytes_per_megaflow_at: usize,
    pub toeplitz_mhash: f64,
    pub computed_mhash: f64,
    pub default_hash: String,
}

/// Lookup keys whose popularity follows `pop`; under Zipf the hottest flows
/// are those of the last-created subtables (so ranking has work to do).
fn traffic(flows: &[Arc<Megaflow>], n: usize, pop: Popularity, seed: u64) -> Vec<FlowKey> {
    match pop {
        Popularity::Uniform => synth::keys(flows, n, pop, seed),
        Popularity::Zipf(_) => {
            let mut order: Vec<Arc<Megaflow>> = flows.to_vec();
            // synth gives subtable i nw_proto i + 1: hottest = highest subtable.
            order.sort_by_key(|m| m.rep.get(kairo_flow::Field::IpProto));
            synth::keys(&order, n, pop, seed)
        }
    }
}

fn measure_cls(cls: &mut Dpcls, keys: &[FlowKey], batched: bool, secs: f64) -> (f64, f64) {
    let mut dead = Vec::new();
    let mut out: [Option<Arc<Megaflow>>; BATCH] = Default::default();
    let mut run = |cls: &mut Dpcls| {
        if batched {
            for c in keys.chunks(BATCH) {
                cls.lookup_batch(c, &mut out, &mut dead);
                std::hint::black_box(&out);
            }
        } else {
            for k in keys {
                std::hint::black_box(cls.lookup(k, &mut dead));
            }
        }
    };
    run(cls); // warm-up (and ranking)
    let before = cls.stats;
    let r = rate(keys.len() as u64, secs, || run(cls));
    let d_l = cls.stats.lookups - before.lookups;
    let d_v = cls.stats.subtables_visited - before.subtables_visited;
    (r / 1e6, d_v as f64 / d_l.max(1) as f64)
}

/// The built-in pipeline of the end-to-end scenario.
pub const ROUTER_FLOWS: &str = include_str!("../../../examples/l3-router.flows");
pub const ROUTER_GROUPS: &str = include_str!("../../../examples/l3-router.groups");

pub(crate) fn router_packets(n_flows: usize, count: usize, pop: Popularity, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dsts: [[u8; 4]; 5] = [[10, 1, 2, 3], [10, 1, 7, 0], [10, 2, 0, 0], [10, 9, 0, 0], [8, 8, 0, 0]];
    let flows: Vec<Vec<u8>> = (0..n_flows)
        .map(|_| {
            let mut d = dsts[rng.gen_range(0..dsts.len())];
            if d[3] == 0 {
                d[3] = rng.gen();
            }
            let mut p = vec![0u8; 64];
            p[0..6].copy_from_slice(&[0, 0, 0, 0, 0xaa, 0x01]);
            p[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            p[14] = 0x45;
            p[16..18].copy_from_slice(&50u16.to_be_bytes());
            p[22] = 64;
            p[23] = 6;
            p[26..30].copy_from_slice(&rng.gen::<u32>().to_be_bytes());
            p[30..34].copy_from_slice(&d);
            let c = kairo_wire::checksum(&p[14..34]);
            p[24..26].copy_from_slice(&c.to_be_bytes());
            p[34..36].copy_from_slice(&rng.gen::<u16>().to_be_bytes());
            p[36..38].copy_from_slice(&443u16.to_be_bytes());
            p[46] = 0x50;
            p
        })
        .collect();
    let zipf = match pop {
        Popularity::Zipf(a) => rand_distr::Zipf::new(n_flows as u64, a).ok(),
        Popularity::Uniform => None,
    };
    (0..count)
        .map(|_| {
            let i = match &zipf {
                Some(z) => z.sample(&mut rng) as usize - 1,
                None => rng.gen_range(0..n_flows),
            };
            flows[i.min(n_flows - 1)].clone()
        })
        .collect()
}

fn e2e(opts: &LookupOpts, pop: Popularity) -> Result<Row, String> {
    let ff = kairo_ofproto::parse_flow_file(ROUTER_FLOWS).map_err(|e| e.to_string())?;
    let gs = kairo_ofproto::parse_group_file(ROUTER_GROUPS).map_err(|e| e.to_string())?;
    let p = Pipeline::from_parts(ff, gs).map_err(|e| e.to_string())?;
    let pkts = router_packets(opts.e2e_flows, 1 << 17, pop, opts.seed);
    let run_dp = |cfg: DpConfig| -> (f64, f64, usize) {
        let mut dp = Datapath::new(cfg);
        let mut slow = kairo_maintain::shared::Translate(&p);
        let mut sink = 0u64;
        let mut pass = |dp: &mut Datapath, now: u64| {
            for chunk in pkts.chunks(BATCH) {
                let mut batch: Vec<kairo_datapath::Packet> =
                    chunk.iter().map(|b| kairo_datapath::Packet::new(b.clone(), 1)).collect();
                dp.process_packets(&mut batch, now, &mut slow, &mut |to, b, _| {
                    let port = match to {
                        kairo_datapath::execute::Sent::Port(p) => p,
                        kairo_datapath::execute::Sent::Controller(_) | kairo_datapath::execute::Sent::Recirc { .. } => {
                            u32::MAX
                        }
                    };
                    sink += port as u64 + b.len() as u64
                });
            }
        };
        pass(&mut dp, 0); // installs the megaflows
        pass(&mut dp, 1); // warms the EMC and the ranking
        let before = dp.stats;
        let r = rate(pkts.len() as u64, opts.secs, || pass(&mut dp, 2));
        std::hint::black_box(sink);
        let v = dp.stats.subtables_visited - before.subtables_visited;
        let l = dp.stats.megaflow_lookups - before.megaflow_lookups;
        (r / 1e6, v as f64 / l.max(1) as f64, dp.n_flows())
    };
    let (k, kv, n) = run_dp(DpConfig::default());
    let (b, bv, _) = run_dp(DpConfig { emc_insert_inv_prob: 0, rerank_interval: 0, ..DpConfig::default() });
    Ok(Row::measured("end-to-end (l3-router)", (n, 0), pop.to_string(), (k, kv), (b, bv), "no EMC, unranked"))
}

/// Runs the lookup benchmarks.
pub fn run(opts: &LookupOpts) -> Result<LookupReport, String> {
    let mut rows = Vec::new();
    let total = 1 + opts.sizes.len() * opts.subtables.len() + 2;
    let pb = crate::progress_bar(opts.progress, total as u64, "lookup benchmarks".into());

    // EMC hits.
    {
        let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 1, ..DpConfig::default() });
        let flows = synth::fill(&mut dp, 4096, 8, opts.seed, |_| {});
        // 4096 exact keys (they fit the 8192-entry EMC), each looked up 16 times a pass.
        let one: Vec<FlowKey> = synth::keys(&flows, 4096, Popularity::Uniform, opts.seed);
        let keys: Vec<FlowKey> = (0..16).flat_map(|_| one.iter().copied()).collect();
        let hashes: Vec<u32> = keys.iter().map(|k| dp.emc_hash(k, None)).collect();
        for (k, h) in keys.iter().zip(&hashes) {
            dp.lookup(k, *h);
        }
        let r = rate(keys.len() as u64, opts.secs, || {
            for (k, h) in keys.iter().zip(&hashes) {
                std::hint::black_box(dp.lookup_ref(k, *h));
            }
        });
        let mut base = Dpcls::new(0);
        for f in &flows {
            base.insert(f.clone());
        }
        let (b, bv) = measure_cls(&mut base, &keys, false, opts.secs);
        rows.push(Row::measured("EMC hit", (4096, 8), "uniform".into(), (r / 1e6, 0.0), (b, bv), "no EMC, unranked"));
        pb.inc(1);
    }

    // Memory per megaflow: the first large allocation of the process, so the
    // resident-size delta is not hidden by memory freed earlier.
    let bytes_at = opts.sizes.iter().copied().max().unwrap_or(0);
    let bytes_per = {
        pb.set_message(format!("memory per megaflow at {bytes_at}"));
        let rss0 = resident_bytes().unwrap_or(0);
        let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 0, ..DpConfig::default() });
        let flows = synth::fill(&mut dp, bytes_at, 8, opts.seed, |_| {});
        let rss1 = resident_bytes().unwrap_or(0);
        let per = rss1.saturating_sub(rss0) as f64 / flows.len().max(1) as f64;
        drop(flows);
        drop(dp);
        per
    };
    // Megaflow hits at each size and subtable count.
    for &n in &opts.sizes {
        for &s in &opts.subtables {
            pb.set_message(format!("megaflow hits: {n} entries, {s} subtables"));
            let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 0, ..DpConfig::default() });
            let flows = synth::fill(&mut dp, n, s, opts.seed, |_| {});
            // The classifiers below share these megaflows; free the datapath's copy.
            drop(dp);
            for pop in [Popularity::Uniform, Popularity::Zipf(0.99)] {
                let keys = traffic(&flows, 1 << 16, pop, opts.seed + 7);
                let mut ranked = Dpcls::new(1 << 16);
                let mut unranked = Dpcls::new(0);
                for f in &flows {
                    ranked.insert(f.clone());
                    unranked.insert(f.clone());
                }
                let (k, kv) = measure_cls(&mut ranked, &keys, true, opts.secs);
                let (b, bv) = measure_cls(&mut unranked, &keys, false, opts.secs);
                rows.push(Row::measured(
                    "megaflow hit",
                    (n, s),
                    pop.to_string(),
                    (k, kv),
                    (b, bv),
                    "unranked, one at a time",
                ));
            }
            pb.inc(1);
        }
    }

    for pop in [Popularity::Uniform, Popularity::Zipf(0.99)] {
        pb.set_message(format!("end to end, {pop}"));
        rows.push(e2e(opts, pop)?);
        pb.inc(1);
    }
    pb.finish_and_clear();

    // EMC hash: Toeplitz (what a NIC gives for free) vs computed in software.
    let mut dp = Datapath::new(DpConfig::default());
    let flows = synth::fill(&mut dp, 1024, 1, opts.seed, |_| {});
    let keys = synth::keys(&flows, 1 << 14, Popularity::Uniform, 9);
    let t = hash::Toeplitz::default();
    let th = rate(keys.len() as u64, opts.secs, || {
        std::hint::black_box(keys.iter().fold(0u32, |a, k| a ^ t.hash_ipv4(k)));
    }) / 1e6;
    let ch = rate(keys.len() as u64, opts.secs, || {
        std::hint::black_box(keys.iter().fold(0u32, |a, k| a ^ hash::key_hash(k)));
    }) / 1e6;
    let default_hash = if ch >= th { "computed" } else { "toeplitz" };
    Ok(LookupReport {
        machine: Machine::detect(),
        rows,
        bytes_per_megaflow: bytes_per,
        bytes_per_megaflow_at: bytes_at,
        toeplitz_mhash: th,
        computed_mhash: ch,
        default_hash: default_hash.into(),
    })
}

impl LookupReport {
    pub fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.scenario.clone(),
                    r.entries.to_string(),
                    if r.subtables == 0 { "-".into() } else { r.subtables.to_string() },
                    r.traffic.clone(),
                    format!("{:.2}", r.kairo_mops),
                    format!("{:.2}", r.baseline_mops),
                    format!("{:.2}x", r.ratio),
                    format!("{:.2} / {:.2}", r.kairo_subtables_per_lookup, r.baseline_subtables_per_lookup),
                    r.baseline.clone(),
                ]
            })
            .collect();
        let mut s = format!("machine: {}\n\n", self.machine);
        s.push_str(&table(
            &[
                "scenario",
                "entries",
                "subtables",
                "traffic",
                "kairo M/s",
                "baseline M/s",
                "ratio",
                "subtables/lookup k/b",
                "baseline",
            ],
            &rows,
        ));
        s.push_str(&format!(
            "\nmemory: {:.0} bytes per megaflow (resident, at {} entries)\nEMC hash: Toeplitz {:.1} M/s, computed {:.1} M/s -> default {}\n",
            self.bytes_per_megaflow, self.bytes_per_megaflow_at, self.toeplitz_mhash, self.computed_mhash, self.default_hash
        ));
        s
    }
}
