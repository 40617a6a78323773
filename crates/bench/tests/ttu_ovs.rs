//! `kairo bench ttu --engines ovs` at a small size: Open vSwitch given the
//! same packets and update stream as kairo's engines, its cache checked
//! after every update against kairo's translation of the updated tables
//! (CI installs Open vSwitch; elsewhere the test says SKIPPED, and fails
//! if KAIRO_REQUIRE_OVS=1).

mod common;

use kairo_bench::ttu::{run, PipelineKind, TtuOpts};
use kairo_maintain::EngineKind;

fn opts(pipeline: PipelineKind) -> TtuOpts {
    TtuOpts {
        pipeline,
        entries: vec![1500],
        engines: vec![EngineKind::Incremental],
        updates: 16,
        seed: 5,
        verify: true,
        progress: false,
        bundle: 1,
        kinds: Vec::new(),
        threads: 1,
        ovs: true,
        dbsp: false,
    }
}

#[test]
fn open_vswitch_takes_the_same_stream_and_forwards_as_kairo_after_each_update() {
    if common::skip_without_ovs("open_vswitch_takes_the_same_stream_and_forwards_as_kairo_after_each_update") {
        return;
    }
    for pipeline in [PipelineKind::Ofdpa, PipelineKind::Synthetic] {
        let r = run(&opts(pipeline.clone())).unwrap_or_else(|e| panic!("{pipeline:?}: {e}"));
        assert_eq!(r.rows.len(), 2, "{}", r.to_table());
        let (kairo, ovs) = (&r.rows[0], &r.rows[1]);
        assert_eq!((kairo.engine.as_str(), ovs.engine.as_str()), ("incremental", "ovs"));
        let o = ovs.ovs.as_ref().expect("Open vSwitch's figures");
        assert!(o.version.contains("Open vSwitch"), "{o:?}");
        assert_eq!(ovs.updates, 16, "{}", r.to_table());
        assert!(o.megaflows > 0 && o.packets > 0, "the traffic filled its cache: {o:?}");
        // Each update's stale window ended with a round that re-translated
        // what it held; its TTU is no shorter than the barrier round trip.
        assert!(ovs.ttu_median_us >= o.rtt_median_us && ovs.affected_median > 0.0, "{}", r.to_table());
        // Packets were checked after the updates, and went where kairo's
        // tables send them.
        assert_eq!(ovs.mismatches, 0, "{}", r.to_table());
        assert!(o.checked >= 16, "{o:?}");
        assert_eq!(kairo.mismatches, 0, "{}", r.to_table());
        let table = r.to_table();
        assert!(table.contains("Open vSwitch") && table.contains("round median ms"), "{table}");
    }
    // A workload of connections: opened through its tracker as through kairo's.
    let mut o = opts(PipelineKind::Antrea);
    o.updates = 8;
    let r = run(&o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.rows.len(), 2, "{}", r.to_table());
    let ovs = &r.rows[1];
    let o = ovs.ovs.as_ref().expect("Open vSwitch's figures");
    // Most first packets made a connection in its tracker (those the
    // policy drops make none).
    assert!(o.connections as usize * 2 > o.packets && o.megaflows > 0, "{o:?}");
    assert_eq!(ovs.updates, 8, "{}", r.to_table());
    assert!(ovs.ttu_median_us >= o.rtt_median_us, "{}", r.to_table());
    // The private instances are gone (one test: instances of tests run
    // alongside would be seen).
    common::assert_no_instance_left();
}
