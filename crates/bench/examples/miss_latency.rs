//! How long one dependent read from main memory takes on this machine: the
//! floor under any per-entry cost that must touch an entry the CPU caches do
//! not hold (a megaflow among millions, its traversal, its action list).
//!
//! A pointer chase through a random single-cycle permutation (Sattolo's
//! algorithm) of a buffer far larger than the last-level cache: each read's
//! address depends on the previous read, so no two overlap and the hardware
//! prefetcher cannot guess the next one. Then the same number of reads at
//! addresses known in advance, which the CPU overlaps. Run with
//! `cargo run --release -p kairo-bench --example miss_latency [MiB]`.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let mib: usize = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 512,
        Some(Ok(m)) if m > 0 => m,
        Some(_) => {
            eprintln!("usage: miss_latency [MiB > 0] (default 512)");
            std::process::exit(2);
        }
    };
    let n = mib * (1 << 20) / std::mem::size_of::<usize>();
    // Sattolo: a uniformly random permutation with a single cycle, so the
    // chase visits every slot before it repeats.
    let mut next: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(7);
    for i in (1..n).rev() {
        let j = rng.gen_range(0..i);
        next.swap(i, j);
    }
    let steps = 20_000_000usize.min(n);
    let t = Instant::now();
    let mut at = 0usize;
    for _ in 0..steps {
        at = next[at];
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / steps as f64;
    // Printing where the chase ended keeps it from being optimised away.
    println!("{ns:.1} ns per dependent random read ({mib} MiB buffer, {steps} reads, ended at {at})");
    // The same slots read independently (addresses known ahead, as a pass
    // over many entries could prefetch them): what overlapping misses
    // brings the cost per read down to.
    let order: Vec<usize> = (0..steps).map(|i| next[(i * 7919) % n]).collect();
    let t = Instant::now();
    let sum = order.iter().fold(0usize, |s, &i| s.wrapping_add(next[i]));
    let ns = t.elapsed().as_secs_f64() * 1e9 / steps as f64;
    println!("{ns:.1} ns per independent random read ({mib} MiB buffer, {steps} reads, sum {sum})");
}
