//! Criterion: time-to-update of one route add plus its withdrawal (state is
//! restored, so every iteration sees the same cache), for both engines on
//! identical caches built by upcalls through the synthetic 10-table pipeline.
//! Sizes 10K and 100K; set KAIRO_BENCH_LARGE=1 to add 1M.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kairo_bench::ttu::{fill, flows, synthetic_pipeline};
use kairo_maintain::{parse_command, EngineKind};
use kairo_xlate::Pipeline;

fn ttu(c: &mut Criterion) {
    let (f, g) = synthetic_pipeline(1);
    let p =
        Pipeline::from_parts(kairo_ofproto::parse_flow_file(&f).unwrap(), kairo_ofproto::parse_group_file(&g).unwrap())
            .unwrap();
    let mut sizes = vec![10_000usize, 100_000];
    if std::env::var("KAIRO_BENCH_LARGE").as_deref() == Ok("1") {
        sizes.push(1_000_000);
    }
    let keys = flows(sizes.iter().copied().max().unwrap_or(0) * 5 / 4 + 1000, 1);
    let add = parse_command(
        "add-flow",
        "table=30,priority=32,ip,nw_dst=10.3.7.9,actions=write_actions(group:5),goto_table:40",
    )
    .unwrap();
    let del = parse_command("--strict del-flows", "table=30,priority=32,ip,nw_dst=10.3.7.9").unwrap();
    let mut grp = c.benchmark_group("ttu_route_add_withdraw");
    grp.sample_size(10);
    for &n in &sizes {
        for kind in [EngineKind::Incremental, EngineKind::Full] {
            let (_dp, sc) = fill(p.clone(), kind, keys.iter().copied(), false, n, false).unwrap();
            grp.bench_with_input(BenchmarkId::new(format!("{kind:?}"), n), &n, |b, _| {
                b.iter(|| {
                    let mut ctl = sc.lock();
                    ctl.apply(&add).unwrap();
                    ctl.apply(&del).unwrap();
                })
            });
        }
    }
    grp.finish();
}

criterion_group!(benches, ttu);
criterion_main!(benches);
