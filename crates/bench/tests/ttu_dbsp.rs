//! `kairo bench ttu --engines dbsp` (the `dbsp` feature): the DBSP view
//! takes the same cache and stream as kairo's engines and, verified after
//! every update, gives every megaflow the traversal kairo's cache holds.
#![cfg(feature = "dbsp")]

use kairo_bench::ttu::{run, PipelineKind, TtuOpts};
use kairo_maintain::EngineKind;

fn opts(pipeline: PipelineKind) -> TtuOpts {
    TtuOpts {
        pipeline,
        entries: vec![1500],
        engines: vec![EngineKind::Incremental],
        updates: 24,
        seed: 5,
        verify: true,
        progress: false,
        bundle: 1,
        kinds: Vec::new(),
        threads: 1,
        ovs: false,
        dbsp: true,
    }
}

#[test]
fn dbsp_takes_the_same_cache_and_stream_and_agrees_after_each_update() {
    for pipeline in [PipelineKind::Ofdpa, PipelineKind::Synthetic] {
        let report = run(&opts(pipeline.clone())).unwrap();
        let row = report
            .rows
            .iter()
            .find(|r| r.engine == "dbsp")
            .unwrap_or_else(|| panic!("{pipeline:?}: {:?}", report.notes));
        let d = row.dbsp.as_ref().unwrap();
        assert_eq!(row.mismatches, 0, "{pipeline:?}");
        // Every megaflow of the cache is an owner, checked after load and each update.
        assert!(d.owners >= 1500, "{pipeline:?}: {} owners", d.owners);
        assert!(d.checked >= d.owners * 20, "{pipeline:?}: {} checked", d.checked);
        assert!(row.ttu_median_us.is_finite() && row.ttu_median_us > 0.0);
        assert!(row.by_kind.iter().any(|k| k.affected_median > 0.0), "{pipeline:?}: no update changed a traversal");
        let table = report.to_table();
        assert!(table.contains("DBSP (the KAIRO poster's engine"), "{table}");
    }
}

#[test]
fn a_workload_the_view_cannot_model_gets_a_note_not_a_row() {
    let mut o = opts(PipelineKind::Antrea);
    o.updates = 4;
    o.verify = false;
    let report = run(&o).unwrap();
    assert!(report.rows.iter().all(|r| r.engine != "dbsp"));
    assert!(report.notes.iter().any(|n| n.contains("DBSP cannot run this workload")), "{:?}", report.notes);
}
