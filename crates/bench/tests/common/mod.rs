//! What the bench's tests with a private Open vSwitch share: skipping where
//! it is not installed (SKIPPED, or a failure with KAIRO_REQUIRE_OVS=1), and
//! checking that no instance of this process is left behind.

/// Should test `test` be skipped (Open vSwitch not installed here)?
pub fn skip_without_ovs(test: &str) -> bool {
    if kairo_bench::ovs::available() {
        return false;
    }
    if std::env::var("KAIRO_REQUIRE_OVS").as_deref() == Ok("1") {
        panic!("KAIRO_REQUIRE_OVS=1 but Open vSwitch is not installed (run scripts/ovs/install-ovs.sh)");
    }
    eprintln!("SKIPPED {test}: Open vSwitch is not installed here");
    true
}

/// Fails if a run directory of a private Open vSwitch of this process is
/// still there (its daemons are stopped with it).
pub fn assert_no_instance_left() {
    let ours = format!("kairo-ovs-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&ours))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
