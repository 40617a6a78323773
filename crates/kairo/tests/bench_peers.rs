//! `kairo bench` with a private Open vSwitch beside it: a bench killed by a
//! signal (it never unwinds to stop its daemons) leaves none running.
//!
//! Needs Open vSwitch installed. Without it the test says SKIPPED and
//! returns, unless KAIRO_REQUIRE_OVS=1 (as `.ci/run` sets), when it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::skip;

/// The run directory of the private Open vSwitch of process `pid`, once its
/// ovs-vswitchd is up.
fn instance_of(pid: u32) -> Option<PathBuf> {
    let prefix = format!("kairo-ovs-{pid}-");
    std::fs::read_dir(std::env::temp_dir()).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)) && p.join("ovs-vswitchd.ctl").exists()
    })
}

/// Processes whose command line names `dir`.
fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

#[test]
fn a_bench_killed_by_a_signal_leaves_no_open_vswitch_running() {
    if skip("a_bench_killed_by_a_signal_leaves_no_open_vswitch_running") {
        return;
    }
    let mut bench = Command::new(env!("CARGO_BIN_EXE_kairo"))
        .args(["bench", "ttu", "--pipeline", "ofdpa", "--entries", "20k", "--engines", "ovs", "--updates", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kairo bench");
    let start = Instant::now();
    let dir = loop {
        if let Some(d) = instance_of(bench.id()) {
            break d;
        }
        assert!(bench.try_wait().expect("wait").is_none(), "the bench ended before its Open vSwitch started");
        assert!(start.elapsed() < Duration::from_secs(120), "no private Open vSwitch after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let daemons = processes_of(&dir);
    assert!(daemons.len() >= 2, "ovsdb-server and ovs-vswitchd expected, found {daemons:?}");
    bench.kill().expect("SIGKILL the bench");
    bench.wait().expect("reap the bench");
    let gone = Instant::now();
    let mut left = processes_of(&dir);
    while !left.is_empty() && gone.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_of(&dir);
    }
    // Whatever the outcome, nothing of this test stays behind.
    for pid in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(left.is_empty(), "the bench's Open vSwitch daemons outlived it: {left:?}");
}
