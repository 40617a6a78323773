//! NAT for committed connections: choosing the translated tuple (an
//! address and port from the action's ranges that no other connection's
//! reply uses) and rewriting packets of either direction.
//!
//! Invariants: two live connections never share a reply key (the choice
//! skips every candidate whose reply key the table holds; when none is
//! left within the search bound, the connection is not made and the
//! exhaustion is counted); a packet rewritten forward and its reply
//! rewritten back see each other's original addresses and ports;
//! checksums stay right (the rewrites are [`kairo_wire::rewrite`]'s).

use kairo_odp::nat::{Nat, NatAddrs, NatKind};
use kairo_wire::rewrite as rw;
use kairo_wire::Layout;

use crate::tuple::Tuple;

/// Candidates tried for one connection at most (addresses times ports).
pub const MAX_ATTEMPTS: usize = 1 << 16;

/// A NAT a connection has: what it rewrites, and the forward tuple after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Applied {
    pub kind: NatKind,
    pub translated: Tuple,
}

/// A hash of some 64-bit words (stable across runs), every input bit
/// reaching every output bit (multiply, then fold the high half down: a
/// range is picked by the low bits, which a bare multiply leaves blind to
/// the high bits of the input, such as a port in bits 16-31).
fn hash(words: &[u64]) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for w in words {
        h = (h ^ *w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    h ^ (h >> 32)
}

/// The translated forward tuple for a new connection `fwd`, or `None` if
/// the ranges are exhausted (or do not fit the packet's family). `taken`
/// says whether a reply key is in use; `rand` is a random word (used with
/// `random`). Without an address range (`nat(src)`), nothing changes.
pub fn choose(fwd: &Tuple, nat: &Nat, taken: impl Fn(&Tuple) -> bool, rand: u64) -> Option<Option<Applied>> {
    let Some(kind) = nat.kind else { return Some(None) };
    let (lo, hi) = match nat.addrs {
        None => return Some(None),
        Some(NatAddrs::V4(a, b)) if !fwd.v6 => (u128::from(a), u128::from(b)),
        Some(NatAddrs::V6(a, b)) if fwd.v6 => (a, b),
        Some(_) => return None,
    };
    let src = kind == NatKind::Src;
    let orig_port = if src { fwd.sport } else { fwd.dport };
    // Ports: the range asked for; else the packet's own, then (source NAT
    // only) the unprivileged ones.
    let port_ranges: Vec<(u16, u16)> = match nat.ports {
        _ if !fwd.has_ports() => vec![(orig_port, orig_port)],
        Some(r) => vec![r],
        None if src => vec![(orig_port, orig_port), (1024, 65535)],
        None => vec![(orig_port, orig_port)],
    };
    let n_addrs = hi - lo + 1;
    let spread = if nat.random {
        rand
    } else if nat.persistent {
        hash(&[fwd.src as u64, (fwd.src >> 64) as u64, fwd.dst as u64, (fwd.dst >> 64) as u64])
    } else {
        hash(&[
            fwd.src as u64,
            (fwd.src >> 64) as u64,
            fwd.dst as u64,
            (fwd.dst >> 64) as u64,
            u64::from(fwd.sport) << 16 | u64::from(fwd.dport),
            u64::from(fwd.proto),
        ])
    };
    let first_addr = u128::from(spread) % n_addrs;
    let mut attempts = 0;
    let mut a = 0u128;
    while a < n_addrs {
        let addr = lo + (first_addr + a) % n_addrs;
        for &(plo, phi) in &port_ranges {
            let n_ports = u32::from(phi - plo) + 1;
            let first_port = if n_ports == 1 { 0 } else { ((spread >> 32) as u32) % n_ports };
            for p in 0..n_ports {
                attempts += 1;
                if attempts > MAX_ATTEMPTS {
                    return None;
                }
                let port = plo + ((first_port + p) % n_ports) as u16;
                let mut t = *fwd;
                if src {
                    t.src = addr;
                    t.sport = port;
                } else {
                    t.dst = addr;
                    t.dport = port;
                }
                if !taken(&t.reverse()) {
                    return Some(Some(Applied { kind, translated: t }));
                }
            }
        }
        a += 1;
    }
    None
}

fn set_addr(pkt: &mut [u8], lay: &Layout, v6: bool, src: bool, a: u128) {
    match (v6, src) {
        (false, true) => rw::set_ipv4_src(pkt, lay, a as u32),
        (false, false) => rw::set_ipv4_dst(pkt, lay, a as u32),
        (true, true) => rw::set_ipv6_src(pkt, lay, a),
        (true, false) => rw::set_ipv6_dst(pkt, lay, a),
    }
}

/// Rewrites a packet of the connection's original direction (`orig` its
/// key) to the translated tuple.
pub fn forward(pkt: &mut [u8], lay: &Layout, orig: &Tuple, nat: &Applied) {
    let t = &nat.translated;
    match nat.kind {
        NatKind::Src => {
            set_addr(pkt, lay, t.v6, true, t.src);
            if t.has_ports() && t.sport != orig.sport {
                rw::set_l4_src(pkt, lay, t.sport);
            }
        }
        NatKind::Dst => {
            set_addr(pkt, lay, t.v6, false, t.dst);
            if t.has_ports() && t.dport != orig.dport {
                rw::set_l4_dst(pkt, lay, t.dport);
            }
        }
    }
}

/// Rewrites a reply back: its destination (source NAT) or source
/// (destination NAT) becomes what the original packet had.
pub fn reverse(pkt: &mut [u8], lay: &Layout, orig: &Tuple, nat: &Applied) {
    match nat.kind {
        NatKind::Src => {
            set_addr(pkt, lay, orig.v6, false, orig.src);
            if orig.has_ports() {
                rw::set_l4_dst(pkt, lay, orig.sport);
            }
        }
        NatKind::Dst => {
            set_addr(pkt, lay, orig.v6, true, orig.dst);
            if orig.has_ports() {
                rw::set_l4_src(pkt, lay, orig.dport);
            }
        }
    }
}
