//! Whole-scenario benchmarks behind `kairo bench`: each figure is measured
//! beside a naive baseline in the same process, on the same data, and the
//! machine is recorded with the results.
//!
//! Invariant: a benchmark never reports a figure it did not measure in this
//! run; every row carries its baseline and the ratio.

pub mod connections;
pub mod conntrack;
pub mod emc;
pub mod fwd;
pub mod hitrate;
pub mod hitrate_ovs;
pub mod lookup;
pub mod openflow;
pub mod openflow_ovs;
pub mod ovs;
pub mod stall;
pub mod threads;
pub mod ttu;
pub mod ttu_dbsp;
pub mod ttu_ovs;

/// The `i`th command-line argument of an example as a count, or `default`
/// when it is absent; an error quoting it when it is not a count.
pub fn count_arg(i: usize, default: usize) -> Result<usize, String> {
    std::env::args()
        .nth(i)
        .map_or(Ok(default), |a| a.parse().map_err(|_| format!("argument {i}: `{a}` is not a count")))
}

use std::time::Instant;

/// What machine the figures come from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gib: kb / 1024.0 / 1024.0,
            os: std::env::consts::OS.to_string(),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} cores, {:.0} GiB, {})", self.cpu, self.cores, self.memory_gib, self.os)
    }
}

/// A progress bar for a long phase (hidden when `show` is false).
pub fn progress_bar(show: bool, len: u64, msg: String) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg:42} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

/// An axis label for a cache size: `10K`, `2M`.
pub fn size_label(x: &f64) -> String {
    if *x >= 1e6 {
        format!("{:.0}M", x / 1e6)
    } else {
        format!("{:.0}K", x / 1e3)
    }
}

/// The (smallest, largest) of positive sizes, for a log-scale axis (at least 1).
pub fn log_span(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    (xs.clone().fold(f64::MAX, f64::min).max(1.0), xs.fold(1.0, f64::max))
}

/// The `q` quantile (0..=1) of `v`, by nearest rank; 0 for an empty slice.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Resident memory of this process in bytes (Linux), for bytes-per-entry figures.
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Peak resident memory of this process in bytes (Linux VmHWM).
pub fn peak_resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `f` (which performs `ops` operations) repeatedly for about
/// `min_secs`, returning operations per second.
pub fn rate(ops: u64, min_secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    loop {
        f();
        done += ops;
        let el = start.elapsed().as_secs_f64();
        if el >= min_secs {
            return done as f64 / el;
        }
    }
}

/// Parses a size like `10k`, `1m`, `200000`, `1.5m`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        _ => (t.as_str(), 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad size `{s}`: expected a number with an optional k or m suffix (10k, 1m)"))?;
    if v.is_nan() || v <= 0.0 || v * mul > 1e9 {
        return Err(format!("bad size `{s}`: expected between 1 and 1000m"));
    }
    Ok((v * mul).round() as usize)
}

/// Renders rows of cells as an aligned text table (cells beyond the header's
/// columns are dropped, missing ones left empty).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let rows: Vec<Vec<String>> =
        rows.iter().map(|r| (0..n).map(|i| r.get(i).cloned().unwrap_or_default()).collect()).collect();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells.iter().enumerate().map(|(i, c)| format!("{:>width$}", c, width = w[i])).collect::<Vec<_>>().join("  ")
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    out.push_str(&w.iter().map(|x| "-".repeat(*x)).collect::<Vec<_>>().join("  "));
    for r in &rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(|s| s.as_str()).collect()));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10k"), Ok(10_000));
        assert_eq!(parse_size("1m"), Ok(1_000_000));
        assert_eq!(parse_size("1.5M"), Ok(1_500_000));
        assert_eq!(parse_size("200000"), Ok(200_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-5k").is_err());
    }

    #[test]
    fn quantiles_and_labels() {
        assert_eq!(quantile(&mut [], 0.5), 0.0);
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(quantile(&mut [4.0, 1.0, 3.0, 2.0], 0.5), 3.0);
        assert_eq!(quantile(&mut [4.0, 1.0, 3.0, 2.0], 1.0), 4.0);
        assert_eq!(size_label(&200_000.0), "200K");
        assert_eq!(size_label(&10_000_000.0), "10M");
        assert_eq!(log_span([10.0, 1e6, 300.0].into_iter()), (10.0, 1e6));
    }

    #[test]
    fn table_tolerates_ragged_rows() {
        let t = table(&["a", "b"], &[vec!["1".into(), "2".into(), "3".into()], vec!["4".into()]]);
        assert_eq!(t, "a  b\n-  -\n1  2\n4   \n");
    }

    #[test]
    fn table_aligns() {
        let t = table(&["a", "bbb"], &[vec!["10".into(), "2".into()]]);
        assert_eq!(t, " a  bbb\n--  ---\n10    2\n");
    }
}
