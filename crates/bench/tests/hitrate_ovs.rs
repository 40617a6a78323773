//! `kairo bench hitrate --ovs` at a small size: Open vSwitch given the same
//! Zipf stream and updates as kairo's engines at each cache limit (CI
//! installs Open vSwitch; elsewhere the test says SKIPPED, and fails if
//! KAIRO_REQUIRE_OVS=1).

mod common;

use kairo_bench::hitrate::{run, Feed, HitrateOpts};

#[test]
fn open_vswitch_takes_the_stream_at_each_limit_and_its_counters_add_up() {
    if common::skip_without_ovs("open_vswitch_takes_the_stream_at_each_limit_and_its_counters_add_up") {
        return;
    }
    let opts = HitrateOpts {
        feed: Feed::Keys,
        limits: vec![150, 3000],
        flows: 2000,
        packets: 6000,
        zipf: 0.99,
        updates: 4,
        seed: 3,
        progress: false,
        ovs: true,
    };
    let r = run(&opts).unwrap_or_else(|e| panic!("{e}"));
    let table = r.to_table();
    eprintln!("{table}");
    assert!(r.ovs_note.is_none(), "{table}");
    let points: Vec<_> = r.rows.iter().map(|row| row.ovs.clone().expect("Open vSwitch at every limit")).collect();
    for o in &points {
        // Every packet was looked up (recirculated passes too).
        let hits = (o.hit_rate_pct / 100.0 * (o.misses as f64) / (1.0 - o.hit_rate_pct / 100.0)).round() as u64;
        assert!(hits + o.misses >= opts.packets as u64, "{table}");
        assert!(o.entries > 0 && o.ttu_median_us.is_finite() && o.ttu_median_us > 0.0, "{table}");
    }
    // The small limit is reached (Open vSwitch's own limit is approximate:
    // it may hold more), and it misses what the large one holds.
    assert!(points[0].entries >= 150 && points[0].not_installed > 0, "{table}");
    assert_eq!(points[1].not_installed, 0, "{table}");
    assert!(points[1].hit_rate_pct > points[0].hit_rate_pct, "{table}");
    assert!(points[1].misses < points[0].misses, "{table}");
    assert!(r.rows.iter().all(|row| row.hit_rate_pct <= 100.0), "{table}");
    assert!(table.contains("OVS hit %"), "{table}");
    common::assert_no_instance_left();
}
