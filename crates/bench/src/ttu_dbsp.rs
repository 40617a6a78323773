//! DBSP as an engine of `kairo bench ttu` (`--engines dbsp`, with the
//! `dbsp` cargo feature): the KAIRO poster's approach (the `kairo-dbsp` crate) fed
//! the same workload, cache and update stream as kairo's engines.
//!
//! kairo's incremental engine fills a cache to the row's size first; the
//! view's traffic is that cache's megaflows (one owner each: the first
//! pass's packet, or a second pass's group and hash), so both hold the same
//! cache. Then each update of the stream goes to the view; its TTU is from
//! the flow-mod to the view's changed rows folded in (DBSP's step is most
//! of it, and is reported apart), "affected" the megaflows whose traversal
//! changed. The view's memory is what the process's RSS grew by building
//! and loading it, per megaflow in the index column (a lower bound after
//! other rows of the same run freed memory: alone, in a fresh process, it
//! is the view's).
//!
//! With `--verify` the incremental engine takes every update too, and after
//! each the view must give every megaflow the traversal kairo's cache holds
//! (`kairo_dbsp::DbspView::check_cache`); what differs is a mismatch.
//!
//! Invariant: the row's figures are the view's alone (kairo's engine runs
//! only to make the traffic and, under `--verify`, to be compared with).

#[cfg(feature = "dbsp")]
use kairo_dbsp::{DbspView, Traffic};
#[cfg(feature = "dbsp")]
use kairo_maintain::{EngineKind, FlowMod};
#[cfg(feature = "dbsp")]
use kairo_xlate::Pipeline;

#[cfg(feature = "dbsp")]
use crate::ttu::{by_kind, fill, TtuRow, Workload};

/// DBSP's own figures beside a row ([`crate::ttu::TtuRow::dbsp`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DbspDetail {
    /// The dbsp crate's version.
    pub version: &'static str,
    /// Building the circuit and loading rules, groups and traffic (s).
    pub load_s: f64,
    /// What the process's resident memory grew by while the view was built
    /// and loaded (MiB): a lower bound when earlier rows of the same run
    /// freed memory the view then reused.
    pub view_mib: f64,
    /// Owners (megaflows: first passes and second passes) and view rows.
    pub owners: usize,
    pub rows: usize,
    /// Words of the flow key each lookup state carries.
    pub key_words: usize,
    /// DBSP's step alone, median over the updates (us).
    pub step_median_us: f64,
    /// Owners compared with kairo's cache under `--verify`.
    pub checked: usize,
}

/// The dbsp crate this engine is built on (pinned in `crates/dbsp`).
pub const VERSION: &str = "0.349.0";

/// Why the view refuses this pipeline or stream, if it does.
#[cfg(feature = "dbsp")]
pub fn refusal(p: &Pipeline, mods: &[FlowMod]) -> Option<String> {
    DbspView::new(p, mods).err().map(|e| format!("DBSP cannot run this workload: {e}"))
}

/// The DBSP row at `n` megaflows.
#[cfg(feature = "dbsp")]
pub fn row(
    wl: &Workload,
    p: &Pipeline,
    mods: &[FlowMod],
    kinds: &[&'static str],
    n: usize,
    verify: bool,
    progress: bool,
) -> Result<TtuRow, String> {
    let (_dp, sc) = fill(p.clone(), EngineKind::Incremental, wl.keys(), wl.connections, n, progress)?;
    let traffic = Traffic::of(&sc.lock().engine.entries());
    let mib = |b: Option<u64>| b.unwrap_or(0) as f64 / (1024.0 * 1024.0);
    // kairo's cache stays while the view is built (freed first, its memory
    // would be reused by the view and hide it), and after only to verify.
    let before = mib(crate::resident_bytes());
    let mut view = DbspView::new(p, mods).map_err(|e| format!("DBSP: {e}"))?;
    let load = view.load(&traffic).map_err(|e| format!("DBSP: {e}"))?;
    let view_mib = mib(crate::resident_bytes()) - before;
    let sc = verify.then_some(sc);
    let mut checked = 0;
    let mut mismatches = 0;
    let mut check = |view: &DbspView, label: &str| {
        if let Some(sc) = &sc {
            let c = view.check_cache(&traffic, &sc.lock().engine.entries());
            checked += c.checked;
            mismatches += c.n_mismatches;
            for m in &c.mismatches {
                tracing::warn!(target: "kairo::ttu", "dbsp {label}: {m}");
            }
        }
    };
    check(&view, "after load");
    let pb = crate::progress_bar(progress, mods.len() as u64, format!("{} updates, {n} entries (dbsp)", mods.len()));
    let (mut ttus, mut steps, mut affected) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_entry: Vec<Option<(f64, f64)>> = Vec::new();
    for (i, fm) in mods.iter().enumerate() {
        if let Some(sc) = &sc {
            sc.lock().apply(fm).map_err(|e| e.to_string())?;
        }
        let rep = view.apply(fm).map_err(|e| format!("DBSP, update {i}: {e}"))?;
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        ttus.push(us(rep.ttu));
        steps.push(us(rep.step));
        affected.push(rep.affected as f64);
        per_entry.push((rep.affected > 0).then(|| (us(rep.step) / rep.affected as f64, 0.0)));
        check(&view, &format!("update {i}"));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let q = |v: &mut Vec<f64>, x| if v.is_empty() { f64::NAN } else { crate::quantile(v, x) };
    let mut per: Vec<f64> = ttus.iter().zip(&affected).filter(|(_, a)| **a > 0.0).map(|(t, a)| t / a).collect();
    Ok(TtuRow {
        pipeline: wl.name.into(),
        engine: "dbsp".into(),
        entries: n,
        updates: mods.len(),
        ttu_median_us: q(&mut ttus.clone(), 0.5),
        ttu_p99_us: q(&mut ttus.clone(), 0.99),
        ttu_max_us: q(&mut ttus.clone(), 1.0),
        affected_median: q(&mut affected.clone(), 0.5),
        ttu_per_affected_us: q(&mut per, 0.5),
        housekeeping_median_us: 0.0,
        housekeeping_max_us: 0.0,
        mismatches,
        index_bytes_per_entry: view_mib * 1024.0 * 1024.0 / n as f64,
        rss_mib: mib(crate::resident_bytes()),
        peak_rss_mib: mib(crate::peak_resident_bytes()),
        distinct_traversals: 0,
        by_kind: by_kind(kinds, &ttus, &affected, &per_entry),
        ovs: None,
        dbsp: Some(DbspDetail {
            version: VERSION,
            load_s: load.took.as_secs_f64(),
            view_mib,
            owners: load.owners,
            rows: view.rows(),
            key_words: view.key_words(),
            step_median_us: q(&mut steps, 0.5),
            checked,
        }),
    })
}
