//! NAT as the `ct` action asks for it (`nat(src=10.0.0.1-10.0.0.9:100-200,
//! persistent,random)`): the one spec OpenFlow's `ct(nat(...))` and the
//! datapath's `ct(...,nat(...))` both carry, and their shared notation.
//!
//! Invariant: a [`Nat`] that parses has min <= max in its address and
//! port ranges, ports from 1, addresses of one family, at most one of
//! `hash` and `random`, and those flags only with `src` or `dst`; printing
//! gives text that parses back to the same spec.

use kairo_flow::parse::{format_ipv4, format_ipv6, parse_ipv4, parse_ipv6, parse_uint};

/// A NAT spec that does not parse: the text and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in `{text}`: expected {expected}")]
pub struct NatError {
    pub text: String,
    pub expected: String,
}

fn syntax(text: &str, expected: &str) -> NatError {
    NatError { text: text.to_string(), expected: expected.to_string() }
}

/// Which addresses a NAT rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    Src,
    Dst,
}

/// A NAT address range, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatAddrs {
    V4(u32, u32),
    V6(u128, u128),
}

/// `nat(...)` inside `ct`: with no kind, bare `nat` (apply the NAT the
/// packet's connection already has).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nat {
    pub kind: Option<NatKind>,
    pub addrs: Option<NatAddrs>,
    pub ports: Option<(u16, u16)>,
    pub persistent: bool,
    pub hash: bool,
    pub random: bool,
}

fn parse_port_range(s: &str, tok: &str) -> Result<(u16, u16), NatError> {
    let one = |p: &str| {
        parse_uint(p).filter(|p| (1..=0xffff).contains(p)).map(|p| p as u16).ok_or_else(|| syntax(tok, "ports 1-65535"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(s)?, one(s)?),
    };
    if a > b {
        return Err(syntax(tok, "a port range with min <= max"));
    }
    Ok((a, b))
}

/// Splits `ADDR[-ADDR][:PORT[-PORT]]`, IPv6 addresses in brackets.
fn parse_range(s: &str, tok: &str) -> Result<(NatAddrs, Option<(u16, u16)>), NatError> {
    let bad = || syntax(tok, "ADDR[-ADDR][:PORT[-PORT]] (IPv6 addresses in brackets)");
    if s.starts_with('[') {
        // [a]-[b]:p-q
        let mut addrs = Vec::new();
        let mut rest = s;
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            addrs.push(parse_ipv6(&r[..end]).ok_or_else(bad)?);
            rest = &r[end + 1..];
            if let Some(r2) = rest.strip_prefix('-') {
                rest = r2;
            } else {
                break;
            }
        }
        let (lo, hi) = match addrs[..] {
            [a] => (a, a),
            [a, b] => (a, b),
            _ => return Err(bad()),
        };
        if lo > hi {
            return Err(syntax(tok, "an address range with min <= max"));
        }
        let ports = match rest {
            "" => None,
            r => Some(parse_port_range(r.strip_prefix(':').ok_or_else(bad)?, tok)?),
        };
        return Ok((NatAddrs::V6(lo, hi), ports));
    }
    let (a, p) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let (lo, hi) = match a.split_once('-') {
        Some((x, y)) => (parse_ipv4(x).ok_or_else(bad)?, parse_ipv4(y).ok_or_else(bad)?),
        None => {
            let x = parse_ipv4(a).ok_or_else(bad)?;
            (x, x)
        }
    };
    if lo > hi {
        return Err(syntax(tok, &format!("a NAT range with min <= max (invalid nat range \"{a}\")")));
    }
    let ports = p.map(|p| parse_port_range(p, tok)).transpose()?;
    Ok((NatAddrs::V4(lo as u32, hi as u32), ports))
}

impl Nat {
    /// Parses the text inside `nat(...)` (empty for bare `nat`); `tok` is
    /// the whole `nat(...)`, quoted in errors.
    pub fn parse(inner: &str, tok: &str) -> Result<Nat, NatError> {
        let mut n = Nat::default();
        for t in inner.split(',').filter(|t| !t.is_empty()) {
            let (k, v) = match t.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (t, None),
            };
            match (k, v) {
                ("src" | "dst", _) if n.kind.is_some() => return Err(syntax(tok, "one of src or dst, not both")),
                ("src" | "dst", v) => {
                    n.kind = Some(if k == "src" { NatKind::Src } else { NatKind::Dst });
                    if let Some(v) = v {
                        let (a, p) = parse_range(v, tok)?;
                        n.addrs = Some(a);
                        n.ports = p;
                    }
                }
                ("persistent", None) => n.persistent = true,
                ("hash", None) => n.hash = true,
                ("random", None) => n.random = true,
                _ => return Err(syntax(t, "src[=RANGE], dst[=RANGE], persistent, hash or random inside nat(...)")),
            }
        }
        if n.hash && n.random {
            return Err(syntax(
                tok,
                "either hash or random (\"Both \\\"hash\\\" and \\\"random\\\" are not allowed.\")",
            ));
        }
        if n.kind.is_none() && (n.persistent || n.hash || n.random) {
            return Err(syntax(tok, "src or dst before persistent, hash or random"));
        }
        Ok(n)
    }
}

impl std::fmt::Display for Nat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(kind) = self.kind else {
            return f.write_str("nat");
        };
        f.write_str(if kind == NatKind::Src { "nat(src" } else { "nat(dst" })?;
        if let Some(a) = self.addrs {
            match a {
                NatAddrs::V4(x, y) if x == y => write!(f, "={}", format_ipv4(x.into()))?,
                NatAddrs::V4(x, y) => write!(f, "={}-{}", format_ipv4(x.into()), format_ipv4(y.into()))?,
                NatAddrs::V6(x, y) if x == y => write!(f, "=[{}]", format_ipv6(x))?,
                NatAddrs::V6(x, y) => write!(f, "=[{}]-[{}]", format_ipv6(x), format_ipv6(y))?,
            }
            match self.ports {
                Some((p, q)) if p == q => write!(f, ":{p}")?,
                Some((p, q)) => write!(f, ":{p}-{q}")?,
                None => {}
            }
        }
        for (on, w) in [(self.persistent, ",persistent"), (self.hash, ",hash"), (self.random, ",random")] {
            if on {
                f.write_str(w)?;
            }
        }
        f.write_str(")")
    }
}
