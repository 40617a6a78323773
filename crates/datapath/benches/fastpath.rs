//! Criterion benchmarks of the fast path's hot loops: EMC hits, megaflow
//! classifier hits with 1, 8 and 32 subtables (ranked and unranked), batched
//! lookups, the EMC hashes, and packet parsing. Sizes are modest (10K
//! megaflows); `kairo bench lookup` runs the large scenarios.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kairo_datapath::synth::{self, Popularity};
use kairo_datapath::{hash, Datapath, DpConfig, BATCH};

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("megaflow_lookup_10k");
    for subtables in [1usize, 8, 32] {
        for (name, rerank) in [("ranked", 10_000u64), ("unranked", 0)] {
            let mut dp =
                Datapath::new(DpConfig { emc_insert_inv_prob: 0, rerank_interval: rerank, ..DpConfig::default() });
            let flows = synth::fill(&mut dp, 10_000, subtables, 1, |_| {});
            let keys = synth::keys(&flows, 4096, Popularity::Zipf(0.99), 2);
            // warm the ranking
            for k in &keys {
                dp.lookup(k, 0);
            }
            g.throughput(Throughput::Elements(keys.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, subtables), &keys, |b, keys| {
                b.iter(|| {
                    for k in keys {
                        black_box(dp.lookup(k, 0));
                    }
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("emc_hit");
    let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 1, ..DpConfig::default() });
    let flows = synth::fill(&mut dp, 1000, 8, 1, |_| {});
    let keys = synth::keys(&flows, 1000, Popularity::Uniform, 3);
    let hashes: Vec<u32> = keys.iter().map(|k| dp.emc_hash(k, None)).collect();
    for (k, h) in keys.iter().zip(&hashes) {
        dp.lookup(k, *h);
    }
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("1k_flows", |b| {
        b.iter(|| {
            for (k, h) in keys.iter().zip(&hashes) {
                black_box(dp.lookup(k, *h));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("batched_lookup_10k_32subtables");
    let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 0, ..DpConfig::default() });
    let flows = synth::fill(&mut dp, 10_000, 32, 1, |_| {});
    let keys = synth::keys(&flows, 4096, Popularity::Uniform, 4);
    let mut cls = kairo_datapath::Dpcls::new(10_000);
    for f in &flows {
        cls.insert(f.clone());
    }
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("batch32", |b| {
        let mut out: [Option<std::sync::Arc<kairo_datapath::Megaflow>>; BATCH] = Default::default();
        let mut dead = Vec::new();
        b.iter(|| {
            for chunk in keys.chunks(BATCH) {
                cls.lookup_batch(chunk, &mut out, &mut dead);
                black_box(&out);
            }
        })
    });
    g.bench_function("single", |b| {
        let mut dead = Vec::new();
        b.iter(|| {
            for k in &keys {
                black_box(cls.lookup(k, &mut dead));
            }
        })
    });
    g.finish();
}

fn hashes(c: &mut Criterion) {
    let mut g = c.benchmark_group("emc_hash");
    let mut dp = Datapath::new(DpConfig::default());
    let flows = synth::fill(&mut dp, 1000, 1, 1, |_| {});
    let keys = synth::keys(&flows, 1000, Popularity::Uniform, 5);
    let t = hash::Toeplitz::default();
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("toeplitz_5tuple", |b| b.iter(|| keys.iter().fold(0u32, |a, k| a ^ t.hash_ipv4(black_box(k)))));
    g.bench_function("fast_key_hash", |b| b.iter(|| keys.iter().fold(0u32, |a, k| a ^ hash::key_hash(black_box(k)))));
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut pkt = vec![0u8; 64];
    pkt[12] = 0x08;
    pkt[14] = 0x45;
    pkt[16] = 0;
    pkt[17] = 50;
    pkt[22] = 64;
    pkt[23] = 6;
    c.bench_function("parse_tcp_64B", |b| b.iter(|| kairo_wire::parse(black_box(&pkt), 1)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = lookups, hashes, parse
}
criterion_main!(benches);
