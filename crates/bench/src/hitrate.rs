//! `kairo bench hitrate`: the KAIRO poster's Figure 2 -- megaflow cache hit
//! rate, misses and time-to-update of both engines against the cache limit,
//! for a Zipf workload of unique flows through the OF-DPA pipeline.
//!
//! For each limit, the same packet stream (flows drawn with Zipf popularity)
//! runs through a datapath whose flow limit is that limit (no EMC, so the
//! figure is the megaflow cache's); misses upcall and install while there is
//! room. Then the same update stream is applied to each engine's cache and
//! the median time-to-update reported. With `ovs`, a private Open vSwitch
//! gets the same stream and updates at each limit ([`crate::hitrate_ovs`]).

use kairo_datapath::{Datapath, DpConfig};
use kairo_maintain::shared::SharedControl;
use kairo_maintain::{parse_command, Control, EngineKind, FlowMod};
use kairo_xlate::Pipeline;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

use crate::ttu::{workload, PipelineKind};
use crate::{table, Machine};

/// How traffic enters the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Feed {
    /// Flow keys straight into the caches (the figure of the caches alone).
    Keys,
    /// Ethernet frames (built from the keys), parsed and looked up in batches
    /// as a switch does, actions executed on the buffers.
    Packets,
}

impl std::str::FromStr for Feed {
    type Err = String;
    fn from_str(s: &str) -> Result<Feed, String> {
        match s {
            "keys" => Ok(Feed::Keys),
            "packets" => Ok(Feed::Packets),
            _ => Err(format!("unknown feed `{s}`: expected keys or packets")),
        }
    }
}

/// Runs `stream` through `dp`: keys one by one, or as frames in batches.
pub fn feed(dp: &mut Datapath, slow: &mut SharedControl, stream: &[kairo_flow::FlowKey], how: Feed) {
    match how {
        Feed::Keys => {
            for k in stream {
                dp.process_key_passes(k, 64, 0, slow);
            }
        }
        Feed::Packets => {
            let mut batch: Vec<kairo_datapath::Packet> = Vec::with_capacity(kairo_datapath::BATCH);
            for chunk in stream.chunks(kairo_datapath::BATCH) {
                batch.clear();
                batch.extend(chunk.iter().map(|k| {
                    let port = k.get(kairo_flow::Field::InPort) as u32;
                    kairo_datapath::Packet::new(kairo_wire::emit::frame(k, &[0u8; 18]), port)
                }));
                dp.process_packets(&mut batch, 0, slow, &mut |_, _, _| {});
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct HitrateOpts {
    pub feed: Feed,
    pub limits: Vec<usize>,
    pub flows: usize,
    pub packets: usize,
    pub zipf: f64,
    pub updates: usize,
    pub seed: u64,
    pub progress: bool,
    /// Measure Open vSwitch too (a private instance per limit).
    pub ovs: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct HitrateRow {
    pub limit: usize,
    pub entries: usize,
    /// Of the lookups (every pass of every packet: a packet whose ECMP
    /// group is hashed in the datapath takes two), those that hit.
    pub hit_rate_pct: f64,
    pub misses: u64,
    pub full_ttu_median_us: f64,
    pub incremental_ttu_median_us: f64,
    /// Open vSwitch at this limit, when asked.
    pub ovs: Option<crate::hitrate_ovs::OvsPoint>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct HitrateReport {
    pub machine: Machine,
    pub pipeline: String,
    pub flows: usize,
    pub packets: usize,
    pub zipf: f64,
    pub feed: Feed,
    pub rows: Vec<HitrateRow>,
    /// Why Open vSwitch is not in the table, when it was asked for and is not.
    pub ovs_note: Option<String>,
}

/// Runs the stream through a cache of `limit`, then the updates; returns
/// (entries, hits, misses, median TTU).
fn one(
    p: &Pipeline,
    kind: EngineKind,
    stream: &[kairo_flow::FlowKey],
    limit: usize,
    mods: &[FlowMod],
    how: Feed,
) -> Result<(usize, u64, u64, f64), String> {
    let mut dp = Datapath::new(DpConfig {
        flow_limit: limit,
        emc_insert_inv_prob: 0,
        max_idle_ms: u64::MAX / 4,
        ..DpConfig::default()
    });
    let mut sc = SharedControl::new(Control::new(p.clone(), kind));
    feed(&mut dp, &mut sc, stream, how);
    let (hits, misses) = (dp.stats.megaflow_hits, dp.stats.misses);
    let mut c = sc.lock();
    let mut t = Vec::with_capacity(mods.len());
    for fm in mods {
        t.push(c.apply(fm).map_err(|e| e.to_string())?.ttu.as_secs_f64() * 1e6);
        c.housekeep();
    }
    Ok((dp.n_flows(), hits, misses, crate::quantile(&mut t, 0.5)))
}

pub fn run(opts: &HitrateOpts) -> Result<HitrateReport, String> {
    let wl = workload(PipelineKind::Ofdpa, opts.flows, opts.updates, opts.seed)?;
    let p = wl.pipeline()?;
    let flows: Vec<_> = wl.keys().take(opts.flows).collect();
    if flows.is_empty() {
        return Err("no flows".into());
    }
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x21bf);
    // Zipf popularity with exponent `zipf`, or uniform when it is 0.
    let stream: Vec<_> = if opts.zipf == 0.0 {
        (0..opts.packets).map(|_| flows[rng.gen_range(0..flows.len())]).collect()
    } else {
        let zipf =
            rand_distr::Zipf::new(flows.len() as u64, opts.zipf).map_err(|e| format!("--zipf {}: {e}", opts.zipf))?;
        (0..opts.packets).map(|_| flows[(zipf.sample(&mut rng) as usize - 1).min(flows.len() - 1)]).collect()
    };
    let mods: Vec<FlowMod> = wl
        .updates
        .iter()
        .map(|(_, c, a)| parse_command(c, a).map_err(|e| format!("{c} {a}: {e}")))
        .collect::<Result<_, _>>()?;
    let ovs_note = (opts.ovs && !crate::ovs::available()).then(|| {
        "Open vSwitch is not installed here: its columns are left out (scripts/ovs/install-ovs.sh)".to_string()
    });
    let with_ovs = opts.ovs && ovs_note.is_none();
    let engines = 2 + usize::from(with_ovs);
    let pb = crate::progress_bar(opts.progress, (opts.limits.len() * engines) as u64, "cache limits x engines".into());
    let mut rows = Vec::new();
    for &limit in &opts.limits {
        pb.set_message(format!("limit {limit}"));
        let (n, hits, misses, ti) = one(&p, EngineKind::Incremental, &stream, limit, &mods, opts.feed)?;
        pb.inc(1);
        let (_, _, _, tf) = one(&p, EngineKind::Full, &stream, limit, &mods, opts.feed)?;
        pb.inc(1);
        let ovs = if with_ovs {
            pb.suspend(|| crate::hitrate_ovs::point(&wl, &p, &stream, limit, &mods, opts.progress)).map(Some)?
        } else {
            None
        };
        pb.inc(u64::from(with_ovs));
        rows.push(HitrateRow {
            limit,
            entries: n,
            hit_rate_pct: 100.0 * hits as f64 / (hits + misses).max(1) as f64,
            misses,
            full_ttu_median_us: tf,
            incremental_ttu_median_us: ti,
            ovs,
        });
    }
    pb.finish_and_clear();
    Ok(HitrateReport {
        machine: Machine::detect(),
        pipeline: wl.name.into(),
        flows: flows.len(),
        packets: opts.packets,
        zipf: opts.zipf,
        feed: opts.feed,
        rows,
        ovs_note,
    })
}

impl HitrateReport {
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "machine: {}\npipeline {}, {} unique flows, {} packets ({}), popularity {}; hit % of lookups (a \
             packet hashed over an ECMP group in the datapath is looked up twice)\n\n",
            self.machine,
            self.pipeline,
            self.flows,
            self.packets,
            match self.feed {
                Feed::Keys => "fed as keys",
                Feed::Packets => "fed as Ethernet frames",
            },
            if self.zipf == 0.0 { "uniform".to_string() } else { format!("Zipf {}", self.zipf) }
        );
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.limit.to_string(),
                    r.entries.to_string(),
                    format!("{:.1}", r.hit_rate_pct),
                    r.misses.to_string(),
                    format!("{:.1}", r.full_ttu_median_us),
                    format!("{:.1}", r.incremental_ttu_median_us),
                    format!("{:.0}x", r.full_ttu_median_us / r.incremental_ttu_median_us.max(1e-3)),
                ]
            })
            .collect();
        let mut head =
            vec!["cache limit", "entries", "hit %", "misses", "full TTU us", "incremental TTU us", "full/incr"];
        let mut rows = rows;
        if self.rows.iter().any(|r| r.ovs.is_some()) {
            head.extend(["OVS entries", "OVS hit %", "OVS misses", "OVS TTU us", "OVS/incr"]);
            for (row, r) in rows.iter_mut().zip(&self.rows) {
                match &r.ovs {
                    Some(o) => row.extend([
                        o.entries.to_string(),
                        format!("{:.1}", o.hit_rate_pct),
                        o.misses.to_string(),
                        format!("{:.0}", o.ttu_median_us),
                        format!("{:.0}x", o.ttu_median_us / r.incremental_ttu_median_us.max(1e-3)),
                    ]),
                    None => row.extend(std::iter::repeat_n("-".to_string(), 5)),
                }
            }
        }
        s.push_str(&table(&head, &rows));
        let no_round: usize = self.rows.iter().filter_map(|r| r.ovs.as_ref()).map(|o| o.no_round).sum();
        if self.rows.iter().any(|r| r.ovs.is_some()) {
            s.push_str(&format!(
                "\nOpen vSwitch {}: EMC off, flow limit = cache limit (approximate in Open vSwitch: it reads its \
                 flow count at most every 100 ms, so a fast stream overshoots), revalidation only on updates; the \
                 stream sent in order within windows of {} frames; OVS TTU = stale window (flow-mod to the end of \
                 the revalidation round); updates that started no round: {no_round}.\n",
                crate::ovs::version().unwrap_or_default(),
                crate::hitrate_ovs::WINDOW
            ));
        }
        if let Some(n) = &self.ovs_note {
            s.push_str(&format!("\nnote: {n}\n"));
        }
        s
    }

    /// Writes the figure as SVG: hit rate and misses on top, TTU (log) below.
    #[cfg(feature = "plot")]
    pub fn plot(&self, path: &std::path::Path) -> Result<(), String> {
        use plotters::prelude::*;
        let e = |x: &dyn std::fmt::Display| x.to_string();
        let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let (top, bottom) = root.split_vertically(350);
        let xs: Vec<f64> = self.rows.iter().map(|r| r.limit as f64).collect();
        let (xlo, xhi) = crate::log_span(xs.iter().copied());
        let mut c1 = ChartBuilder::on(&top)
            .caption(
                format!(
                    "Megaflow cache hits vs cache limit ({}, {} flows, Zipf {})",
                    self.pipeline, self.flows, self.zipf
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((xlo * 0.8..xhi * 1.25).log_scale(), 0f64..100f64)
            .map_err(|x| e(&x))?;
        c1.configure_mesh()
            .x_desc("cache limit (megaflows)")
            .y_desc("hit rate %")
            .x_labels(5)
            .x_label_formatter(&crate::size_label)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|x| e(&x))?;
        c1.draw_series(LineSeries::new(self.rows.iter().map(|r| (r.limit as f64, r.hit_rate_pct)), &BLUE))
            .map_err(|x| e(&x))?
            .label("hit rate %")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        let max_miss = self.rows.iter().map(|r| r.misses).max().unwrap_or(1).max(1) as f64;
        c1.draw_series(LineSeries::new(
            self.rows.iter().map(|r| (r.limit as f64, 100.0 * r.misses as f64 / max_miss)),
            &RED,
        ))
        .map_err(|x| e(&x))?
        .label(format!("misses (% of {max_miss:.0})"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        let ovs: Vec<(f64, &crate::hitrate_ovs::OvsPoint)> =
            self.rows.iter().filter_map(|r| r.ovs.as_ref().map(|o| (r.limit as f64, o))).collect();
        if !ovs.is_empty() {
            c1.draw_series(LineSeries::new(ovs.iter().map(|(x, o)| (*x, o.hit_rate_pct)), &MAGENTA))
                .map_err(|x| e(&x))?
                .label("Open vSwitch hit rate %")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        }
        c1.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|x| e(&x))?;
        let tmax = self
            .rows
            .iter()
            .map(|r| r.full_ttu_median_us.max(r.incremental_ttu_median_us))
            .chain(ovs.iter().map(|(_, o)| o.ttu_median_us).filter(|t| t.is_finite()))
            .fold(10.0, f64::max);
        let tmin = self
            .rows
            .iter()
            .map(|r| r.incremental_ttu_median_us.min(r.full_ttu_median_us))
            .fold(f64::MAX, f64::min)
            .max(0.1);
        let mut c2 = ChartBuilder::on(&bottom)
            .caption("Time-to-update (median)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((xlo * 0.8..xhi * 1.25).log_scale(), (tmin / 2.0..tmax * 2.0).log_scale())
            .map_err(|x| e(&x))?;
        c2.configure_mesh()
            .x_desc("cache limit (megaflows)")
            .y_desc("TTU us (log)")
            .x_labels(5)
            .x_label_formatter(&crate::size_label)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|x| e(&x))?;
        c2.draw_series(LineSeries::new(self.rows.iter().map(|r| (r.limit as f64, r.full_ttu_median_us)), &RED))
            .map_err(|x| e(&x))?
            .label("full revalidation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        c2.draw_series(LineSeries::new(
            self.rows.iter().map(|r| (r.limit as f64, r.incremental_ttu_median_us)),
            &GREEN,
        ))
        .map_err(|x| e(&x))?
        .label("incremental")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        if !ovs.is_empty() {
            c2.draw_series(LineSeries::new(
                ovs.iter().filter(|(_, o)| o.ttu_median_us.is_finite()).map(|(x, o)| (*x, o.ttu_median_us)),
                &MAGENTA,
            ))
            .map_err(|x| e(&x))?
            .label("Open vSwitch (stale window)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        }
        c2.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
        Ok(())
    }

    /// Built without the `plot` feature: says so.
    #[cfg(not(feature = "plot"))]
    pub fn plot(&self, path: &std::path::Path) -> Result<(), String> {
        Err(format!("{}: kairo was built without the `plot` feature", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larger_caches_hit_more_and_the_plot_is_written() {
        let opts = HitrateOpts {
            feed: Feed::Keys,
            limits: vec![200, 2000],
            flows: 3000,
            packets: 8000,
            zipf: 0.99,
            updates: 6,
            seed: 2,
            progress: false,
            ovs: false,
        };
        let r = run(&opts).unwrap();
        assert_eq!(r.rows.len(), 2);
        assert!(r.rows[0].entries <= 200 && r.rows[1].entries <= 2000);
        assert!(r.rows[1].hit_rate_pct > r.rows[0].hit_rate_pct, "{:?}", r.rows);
        assert!(r.rows[1].misses < r.rows[0].misses);
        let path = std::env::temp_dir().join(format!("kairo-hitrate-{}.svg", std::process::id()));
        r.plot(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "not an SVG with lines");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn packets_and_keys_meet_the_same_caches() {
        // The same stream fed as frames (parsed, batched) and as keys: the
        // caches see the same flows, so hits, misses and sizes agree.
        let mut opts = HitrateOpts {
            feed: Feed::Keys,
            limits: vec![300],
            flows: 2000,
            packets: 5000,
            zipf: 0.95,
            updates: 2,
            seed: 4,
            progress: false,
            ovs: false,
        };
        let keys = run(&opts).unwrap();
        opts.feed = Feed::Packets;
        let packets = run(&opts).unwrap();
        let (k, p) = (&keys.rows[0], &packets.rows[0]);
        assert_eq!((k.entries, k.misses), (p.entries, p.misses));
        assert!((k.hit_rate_pct - p.hit_rate_pct).abs() < 1e-9);
    }
}
