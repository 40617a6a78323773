//! `kairo bench openflow` at a small size: kairo's round trips, and the same
//! stream to a private Open vSwitch where it is installed (CI installs it;
//! elsewhere that part says SKIPPED, and fails if KAIRO_REQUIRE_OVS=1).

mod common;

use kairo_bench::openflow::{run, OfOpts};
use kairo_bench::ttu::PipelineKind;
use kairo_maintain::EngineKind;

fn opts(ovs: bool) -> OfOpts {
    OfOpts {
        pipeline: PipelineKind::Ofdpa,
        entries: vec![2000],
        updates: 30,
        engine: EngineKind::Incremental,
        seed: 3,
        progress: false,
        ovs,
    }
}

#[test]
fn the_stream_goes_over_openflow_to_kairo() {
    let r = run(&opts(false)).unwrap();
    assert_eq!(r.rows.len(), 1);
    let row = &r.rows[0];
    assert_eq!(row.updates, 30);
    assert!(row.rtt_median_us > 0.0 && row.rtt_median_us >= row.ttu_median_us, "{row:?}");
    assert!(r.ovs.is_err());
    assert!(r.to_table().contains("no column"), "{}", r.to_table());
}

#[test]
fn the_same_stream_goes_to_a_private_open_vswitch() {
    if common::skip_without_ovs("the_same_stream_goes_to_a_private_open_vswitch") {
        return;
    }
    let r = run(&opts(true)).unwrap();
    let o = r.ovs.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.updates, 30);
    assert!(o.rules > 100, "{o:?}");
    assert!(o.rtt_median_us > 0.0 && o.rtt_p99_us >= o.rtt_median_us, "{o:?}");
    assert!(o.version.contains("Open vSwitch"), "{o:?}");
    assert!(o.megaflows > 0 && o.packets == 2000, "the traffic filled its cache: {o:?}");
    // Probed updates were seen leaving by their new port (or timed out).
    assert!(o.probed == 0 || (o.stale_median_ms > 0.0 && o.probe_median_ms > 0.0), "{o:?}");
    // The private instance is gone: no run directory of this process is left.
    common::assert_no_instance_left();
}
