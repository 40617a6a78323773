//! Workloads for benchmarks: ClassBench seeds and the rule sets drawn from
//! them ([`classbench`]), and generated pipelines with their traffic and
//! update streams ([`ofdpa`]).
//!
//! Invariant: every generator is deterministic in its seed, and what it
//! generates is ovs-ofctl text that loads.

pub mod antrea;
pub mod classbench;
pub mod ofdpa;

/// Where the shared ClassBench seeds are: `$KAIRO_SHARED/data/classbench`, or
/// `../shared/data/classbench` beside the workspace.
pub fn classbench_dir() -> std::path::PathBuf {
    match std::env::var_os("KAIRO_SHARED") {
        Some(p) => std::path::PathBuf::from(p).join("data/classbench"),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/classbench"),
    }
}

#[cfg(test)]
mod tests;
