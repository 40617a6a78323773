//! ClassBench seed files (Taylor and Turner, 2004): reading them and drawing
//! 5-tuple filters that follow their statistics.
//!
//! What is followed: the protocol mix (`-prots`), the port-class mix per
//! protocol (the 25 columns after each protocol's weight, in the order of
//! the port-class sections), the joint source/destination prefix-length
//! distribution of each port class (`-wc_wc` ... `-em_em`: total length, then
//! source length given the total), and the arbitrary-range and exact port
//! lists (`-spar`, `-dpar`, `-spem`, `-dpem`). What is not: the prefix nesting
//! and skew trees (`-snest`, `-sskew`, ...): addresses are drawn uniformly
//! under their prefix length. Invariant: reading never panics; a malformed
//! line is an error naming its line number and text.

use std::collections::HashMap;

use rand::Rng;

/// A port class of ClassBench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortClass {
    /// 0-65535
    Wc,
    /// 1024-65535
    Hi,
    /// 0-1023
    Lo,
    /// an arbitrary range from the seed's list
    Ar,
    /// an exact port from the seed's list
    Em,
}

fn class_of(s: &str) -> Option<PortClass> {
    Some(match s {
        "wc" => PortClass::Wc,
        "hi" => PortClass::Hi,
        "lo" => PortClass::Lo,
        "ar" => PortClass::Ar,
        "em" => PortClass::Em,
        _ => return None,
    })
}

/// One row of a length distribution: total length, its weight, and the
/// source length's distribution given the total.
type LenRow = (u32, f64, Vec<(u32, f64)>);

/// Prefix-length distribution of one port-class pair.
#[derive(Clone, Debug, Default)]
struct LenDist {
    rows: Vec<LenRow>,
}

/// A parsed seed.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    /// (protocol, weight, weights of the port-class pairs in `pairs` order)
    prots: Vec<(u8, f64, Vec<f64>)>,
    /// Port-class pairs in file order, with their length distributions.
    pairs: Vec<((PortClass, PortClass), LenDist)>,
    spar: Vec<(f64, (u16, u16))>,
    dpar: Vec<(f64, (u16, u16))>,
    spem: Vec<(f64, u16)>,
    dpem: Vec<(f64, u16)>,
}

/// A seed-file error: line number (1-based), the line, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("classbench seed line {line}: `{text}`: expected {expected}")]
pub struct SeedError {
    pub line: usize,
    pub text: String,
    pub expected: String,
}

fn pick_weighted<T: Copy>(rng: &mut impl Rng, items: &[(f64, T)]) -> Option<T> {
    let total: f64 = items.iter().map(|(w, _)| *w).sum();
    if items.is_empty() || total.is_nan() || total <= 0.0 {
        return None;
    }
    let mut x = rng.gen::<f64>() * total;
    for (w, v) in items {
        if x < *w {
            return Some(*v);
        }
        x -= w;
    }
    items.last().map(|(_, v)| *v)
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once(':')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Reads a seed file.
pub fn parse_seed(text: &str) -> Result<Seed, SeedError> {
    let mut seed = Seed::default();
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |exp: &str| SeedError { line: i + 1, text: raw.to_string(), expected: exp.to_string() };
        if let Some(name) = line.strip_prefix('-') {
            section = name.trim().to_string();
            if let Some((a, b)) = section.split_once('_').and_then(|(a, b)| Some((class_of(a)?, class_of(b)?))) {
                seed.pairs.push(((a, b), LenDist::default()));
            }
            continue;
        }
        if line.is_empty() || line == "#" {
            continue;
        }
        if section == "openflow" {
            break; // ClassBench-ng's YAML tail: field histograms, not used here
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        match section.as_str() {
            "prots" => {
                let proto: u8 = cols.first().and_then(|c| c.parse().ok()).ok_or_else(|| err("a protocol number"))?;
                let w: f64 = cols.get(1).and_then(|c| c.parse().ok()).ok_or_else(|| err("a protocol weight"))?;
                let classes: Vec<f64> = cols[2..]
                    .iter()
                    .map(|c| c.parse().map_err(|_| err("port-class weights")))
                    .collect::<Result<_, _>>()?;
                seed.prots.push((proto, w, classes));
            }
            "spar" | "dpar" => {
                let w: f64 = cols.first().and_then(|c| c.parse().ok()).ok_or_else(|| err("a weight"))?;
                let r = cols.get(1).and_then(|c| parse_range(c)).ok_or_else(|| err("a port range lo:hi"))?;
                if section == "spar" { &mut seed.spar } else { &mut seed.dpar }.push((w, r));
            }
            "spem" | "dpem" => {
                let w: f64 = cols.first().and_then(|c| c.parse().ok()).ok_or_else(|| err("a weight"))?;
                // Exact ports are written as a one-port range (1521:1521) or a number.
                let p: u16 = cols
                    .get(1)
                    .and_then(|c| parse_range(c).map(|r| r.0).or_else(|| c.parse().ok()))
                    .ok_or_else(|| err("a port (or a one-port range p:p)"))?;
                if section == "spem" { &mut seed.spem } else { &mut seed.dpem }.push((w, p));
            }
            _ if section.len() == 5 && section.as_bytes()[2] == b'_' => {
                let Some((_, dist)) = seed.pairs.last_mut() else { continue };
                let mut it = cols.iter();
                let first = it.next().ok_or_else(|| err("total,weight"))?;
                let (t, w) = first.split_once(',').ok_or_else(|| err("total,weight"))?;
                let total: u32 = t.parse().map_err(|_| err("a total prefix length"))?;
                let w: f64 = w.parse().map_err(|_| err("a weight"))?;
                let mut srcs = Vec::new();
                for c in it {
                    let (s, p) = c.split_once(',').ok_or_else(|| err("source,weight"))?;
                    srcs.push((
                        s.parse().map_err(|_| err("a source prefix length"))?,
                        p.parse().map_err(|_| err("a weight"))?,
                    ));
                }
                if total > 64 || srcs.iter().any(|(s, _)| *s > total.min(32) || total - *s > 32) {
                    return Err(err("prefix lengths of at most 32 each"));
                }
                dist.rows.push((total, w, srcs));
            }
            _ => {} // nesting, skew, correlation, scale, flags, extra: not modelled
        }
    }
    if seed.prots.is_empty() {
        return Err(SeedError { line: 0, text: String::new(), expected: "a -prots section".into() });
    }
    Ok(seed)
}

/// A port constraint, as value/mask prefixes (OpenFlow has no ranges).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMatch {
    pub prefixes: Vec<(u16, u16)>,
}

/// Splits a port range into value/mask prefixes (the standard expansion).
pub fn range_to_prefixes(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let (mut lo, hi) = (lo as u32, hi as u32);
    let mut out = Vec::new();
    while lo <= hi {
        let mut size = if lo == 0 { 1 << 16 } else { 1u32 << lo.trailing_zeros() };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let mask = (!(size - 1)) & 0xffff;
        out.push((lo as u16, mask as u16));
        lo += size;
    }
    out
}

/// A 5-tuple filter drawn from a seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub proto: Option<u8>,
    pub src: (u32, u32),
    pub dst: (u32, u32),
    pub sport: Option<PortMatch>,
    pub dport: Option<PortMatch>,
}

fn port(rng: &mut impl Rng, class: PortClass, ar: &[(f64, (u16, u16))], em: &[(f64, u16)]) -> Option<PortMatch> {
    let prefixes = match class {
        PortClass::Wc => return None,
        PortClass::Hi => range_to_prefixes(1024, 65535),
        PortClass::Lo => range_to_prefixes(0, 1023),
        PortClass::Ar => {
            let (lo, hi) = pick_weighted(rng, ar).unwrap_or((1024, 2047));
            range_to_prefixes(lo.min(hi), hi.max(lo))
        }
        PortClass::Em => vec![(pick_weighted(rng, em).unwrap_or(80), 0xffff)],
    };
    Some(PortMatch { prefixes })
}

impl Seed {
    /// Draws one filter.
    pub fn sample(&self, rng: &mut impl Rng) -> Filter {
        let prots: Vec<(f64, usize)> = self.prots.iter().enumerate().map(|(i, p)| (p.1, i)).collect();
        let pi = pick_weighted(rng, &prots).unwrap_or(0);
        let (proto, _, class_w) = &self.prots[pi];
        let classes: Vec<(f64, usize)> =
            class_w.iter().enumerate().filter(|(i, _)| *i < self.pairs.len()).map(|(i, w)| (*w, i)).collect();
        let ci = pick_weighted(rng, &classes).unwrap_or(0);
        let ((sc, dc), dist) =
            self.pairs.get(ci).cloned().unwrap_or(((PortClass::Wc, PortClass::Wc), LenDist::default()));
        let rows: Vec<(f64, usize)> = dist.rows.iter().enumerate().map(|(i, r)| (r.1, i)).collect();
        let (slen, dlen) = match pick_weighted(rng, &rows) {
            Some(ri) => {
                let (total, _, srcs) = &dist.rows[ri];
                let s: Vec<(f64, u32)> = srcs.iter().map(|(l, w)| (*w, *l)).collect();
                let sl = pick_weighted(rng, &s).unwrap_or((*total).min(32));
                (sl, total - sl)
            }
            None => (rng.gen_range(0..=32), rng.gen_range(0..=32)),
        };
        let mask = |l: u32| if l == 0 { 0 } else { u32::MAX << (32 - l) };
        let (sm, dm) = (mask(slen), mask(dlen));
        let has_ports = matches!(*proto, 6 | 17);
        Filter {
            proto: (*proto != 0).then_some(*proto),
            src: (rng.gen::<u32>() & sm, sm),
            dst: (rng.gen::<u32>() & dm, dm),
            sport: if has_ports { port(rng, sc, &self.spar, &self.spem) } else { None },
            dport: if has_ports { port(rng, dc, &self.dpar, &self.dpem) } else { None },
        }
    }
}

/// The seeds shipped with the project (`data/classbench/`, compiled into the
/// binary: a build needs nothing outside the repository), by name.
const BUILTIN: &[(&str, &str)] = &[
    ("acl1", include_str!("../../../data/classbench/acl1_seed")),
    ("acl2", include_str!("../../../data/classbench/acl2_seed")),
    ("acl3", include_str!("../../../data/classbench/acl3_seed")),
    ("acl4", include_str!("../../../data/classbench/acl4_seed")),
    ("acl5", include_str!("../../../data/classbench/acl5_seed")),
    ("fw1", include_str!("../../../data/classbench/fw1_seed")),
    ("fw2", include_str!("../../../data/classbench/fw2_seed")),
    ("fw3", include_str!("../../../data/classbench/fw3_seed")),
    ("fw4", include_str!("../../../data/classbench/fw4_seed")),
    ("fw5", include_str!("../../../data/classbench/fw5_seed")),
    ("ipc1", include_str!("../../../data/classbench/ipc1_seed")),
    ("ipc2", include_str!("../../../data/classbench/ipc2_seed")),
    ("of1", include_str!("../../../data/classbench/of1_seed")),
    ("of2", include_str!("../../../data/classbench/of2_seed")),
];

/// The names of the seeds shipped with the project.
pub fn seed_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// A seed shipped with the project, by name (`of2`, `acl1`, ...).
pub fn builtin_seed(name: &str) -> Result<Seed, String> {
    let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = seed_names().collect();
        format!("no ClassBench seed named {name:?} (shipped: {})", names.join(", "))
    })?;
    parse_seed(text).map_err(|e| format!("seed {name}: {e}"))
}

/// Reads a seed file in ClassBench's parameter-file format.
pub fn load_seed_file(path: &std::path::Path) -> Result<Seed, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_seed(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Counts of what a sample contains (for tests and reports).
pub fn proto_histogram(filters: &[Filter]) -> HashMap<Option<u8>, usize> {
    let mut h = HashMap::new();
    for f in filters {
        *h.entry(f.proto).or_insert(0) += 1;
    }
    h
}
