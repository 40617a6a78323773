//! Warm translation cost on the Antrea pipeline: translate and re-translate
//! the passes of the same few thousand keys (every pass a new connection's
//! packet takes) many times over (everything in cache), per call and per
//! table visit; then the same for the passes that start in a group bucket
//! (after a select group's datapath hash) alone. A diagnostic for where re-translation's time
//! goes when memory is not what stops it. Run with
//! `cargo run --release -p kairo-bench --example xlate_probe [KEYS] [ROUNDS]`.

use kairo_bench::count_arg;
use std::time::Instant;

use kairo_bench::ttu::{workload, PipelineKind};
use kairo_flow::FlowMask;
use kairo_xlate::{retranslate, translate, Pipeline, Replay, TableSet};

fn main() -> Result<(), String> {
    let n = count_arg(1, 2000)?;
    let rounds = count_arg(2, 200)?;
    let wl = workload(PipelineKind::Antrea, n, 1, 1)?;
    let p = Pipeline::from_parts(
        kairo_ofproto::parse_flow_file(&wl.flows).map_err(|e| e.to_string())?,
        kairo_ofproto::parse_group_file(&wl.groups).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let passes: Vec<_> =
        wl.keys().take(n).flat_map(|k| kairo_xlate::recirc::follow(&p, &k)).map(|pass| pass.key).collect();
    run(&p, "every pass", &passes, rounds);
    let hashed: Vec<_> = passes.iter().filter(|k| k.get(kairo_flow::Field::DpHash) != 0).copied().collect();
    run(&p, "passes after a hash", &hashed, rounds);
    Ok(())
}

fn run(p: &Pipeline, what: &str, keys: &[kairo_flow::FlowKey], rounds: usize) {
    let n = keys.len();
    let p = p.clone();
    let olds: Vec<_> = keys.iter().map(|k| translate(&p, k).traversal).collect();
    let steps: usize = olds.iter().map(|t| t.steps.len()).sum();
    let region = FlowMask::ZERO;
    let mut l2 = TableSet::default();
    l2.insert(80);
    let none = TableSet::default();
    let cases: [(&str, &TableSet, bool); 3] = [
        ("re-translate, table 80 changed", &l2, false),
        ("re-translate, a group changed", &none, true),
        ("re-translate, nothing changed", &none, false),
    ];
    let t = Instant::now();
    let mut sink = 0usize;
    for _ in 0..rounds {
        for k in keys {
            sink += translate(&p, k).actions.len();
        }
    }
    let per = t.elapsed().as_secs_f64() * 1e9 / (rounds * n) as f64;
    println!("{what}: {n} keys, {:.1} visits each", steps as f64 / n as f64);
    println!("{:>34}: {per:7.0} ns per key, {:5.0} ns per visit", "translate", per * n as f64 / steps as f64);
    for (name, changed, groups_changed) in cases {
        let mut resumed = 0usize;
        let t = Instant::now();
        for _ in 0..rounds {
            for (k, old) in keys.iter().zip(&olds) {
                let r = retranslate(&p, k, Replay { old, changed, region: &region, groups_changed });
                sink += r.result.actions.len();
                resumed += r.result.traversal.steps.len() - r.resumed_at;
            }
        }
        let per = t.elapsed().as_secs_f64() * 1e9 / (rounds * n) as f64;
        let visits = resumed as f64 / (rounds * n) as f64;
        println!("{name:>34}: {per:7.0} ns per key, {:5.0} ns per visit run ({visits:.1} of them)", per / visits);
    }
    std::hint::black_box(sink);
}
