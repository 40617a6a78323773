//! The floor under any per-entry maintenance: what it costs just to publish
//! new actions (and traversal) to a few hundred megaflows picked at random
//! among many, as a pass must for each entry whose actions change, with no
//! translation at all. Run with
//! `cargo run --release -p kairo-bench --example publish_probe [ENTRIES] [PICKED]`.

use kairo_bench::count_arg;
use std::sync::Arc;
use std::time::Instant;

use kairo_datapath::Megaflow;
use kairo_flow::{FlowKey, FlowMask};
use kairo_maintain::Ukey;
use kairo_xlate::{DpAction, Traversal};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn main() -> Result<(), String> {
    let n = count_arg(1, 200_000)?;
    let picked = count_arg(2, 300)?;
    let mask = Arc::new(FlowMask::ZERO);
    let mut rng = StdRng::seed_from_u64(7);
    // Each megaflow with its own actions and traversal, as after real upcalls.
    let mfs: Vec<Ukey> = (0..n)
        .map(|i| {
            let mut k = FlowKey::ZERO;
            k.w[0] = i as u64;
            let mf = Arc::new(Megaflow::new(k, mask.clone(), vec![DpAction::Output(i as u32)], 0));
            Ukey::new(mf, Arc::new(Traversal::default()))
        })
        .collect();
    let new_actions = Arc::new(vec![DpAction::Output(7)]);
    let new_trav = Arc::new(Traversal::default());
    for touch_first in [false, true] {
        let mut per = Vec::new();
        for _ in 0..50 {
            let ids: Vec<usize> = (0..picked).map(|_| rng.gen_range(0..n)).collect();
            // Evict the picked entries from cache the way unrelated work would.
            let junk: Vec<u64> = (0..(8 << 20)).map(|i| i as u64).collect();
            std::hint::black_box(junk.iter().sum::<u64>());
            let t = Instant::now();
            if touch_first {
                // Every picked megaflow's lines first (independent reads overlap).
                let s: u64 = ids.iter().map(|&i| mfs[i].packets() ^ mfs[i].actions().len() as u64).sum();
                std::hint::black_box(s);
            }
            let mut moved = Vec::with_capacity(picked);
            for &i in &ids {
                moved.push(mfs[i].set_shared(new_actions.clone(), new_trav.clone()));
            }
            per.push(t.elapsed().as_secs_f64() * 1e9 / picked as f64);
            drop(moved);
        }
        per.sort_by(f64::total_cmp);
        let how = if touch_first { "after reading them all first" } else { "one by one" };
        println!("{picked} of {n} megaflows, {how}: publishing new actions and traversal costs {:.0} ns per entry (median of 50; p10 {:.0}, p90 {:.0})", per[25], per[5], per[45]);
    }
    Ok(())
}
