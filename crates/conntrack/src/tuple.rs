//! Connection keys: the 5-tuple (and zone) a packet belongs to, read from
//! its bytes, and the ICMP error that carries another connection's packet.
//!
//! Invariant: [`Tuple::reverse`] of the key of a packet is the key of a
//! reply to it (addresses and ports swapped; an ICMP echo request's type
//! turned into the reply's), so one connection answers to both keys; and
//! reading a packet never panics: a packet too short or malformed to have
//! a key gives `None` (the tracker marks it invalid).

use kairo_flow::field::{Field, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
use kairo_flow::parse::FRAG_ANY;
use kairo_flow::FlowKey;
use kairo_wire::Layout;

/// One direction of a connection. IPv4 addresses are in the low 32 bits.
/// For ICMP, `sport` is the type and code (`type << 8 | code`), `dport`
/// the type and code of the answer, and `ident` the echo identifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    pub ident: u16,
    pub proto: u8,
    pub v6: bool,
    pub zone: u16,
}

impl Tuple {
    /// The key a reply has.
    pub fn reverse(&self) -> Tuple {
        Tuple { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }

    /// Is this an ICMP or ICMPv6 tuple?
    pub fn is_icmp(&self) -> bool {
        u64::from(self.proto) == if self.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP }
    }

    /// Does the protocol have ports (TCP, UDP, SCTP)?
    pub fn has_ports(&self) -> bool {
        matches!(u64::from(self.proto), IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
    }
}

/// The answer to an ICMP query type (echo, timestamp, information), if it
/// is one that opens a connection.
fn icmp_answer(v6: bool, ty: u8) -> Option<u8> {
    match (v6, ty) {
        (false, 8) => Some(0),
        (false, 13) => Some(14),
        (false, 15) => Some(16),
        (false, 0) => Some(8),
        (false, 14) => Some(13),
        (false, 16) => Some(15),
        (true, 128) => Some(129),
        (true, 129) => Some(128),
        _ => None,
    }
}

/// Is this ICMP type an error that quotes a packet of some connection?
fn icmp_error(v6: bool, ty: u8) -> bool {
    if v6 {
        (1..=4).contains(&ty)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

/// What a packet is to the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// The connection key, in the packet's own direction; for an ICMP
    /// error, the key of the quoted packet reversed (the error travels
    /// the other way).
    pub key: Tuple,
    /// An ICMP error about the connection `key` names.
    pub related: bool,
    /// An ICMP query that may open a connection (echo, timestamp,
    /// information request), or a packet of another protocol.
    pub may_open: bool,
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn addr128(b: &[u8], o: usize) -> Option<u128> {
    Some(u128::from_be_bytes(b.get(o..o + 16)?.try_into().ok()?))
}

/// The key of the packet quoted inside an ICMP error (its IP header and at
/// least 8 bytes of what followed), starting at `ofs`.
fn quoted(b: &[u8], ofs: usize, v6: bool, zone: u16) -> Option<Tuple> {
    let (src, dst, proto, l4) = if v6 {
        // The quoted header's own extension headers are not followed.
        (addr128(b, ofs + 8)?, addr128(b, ofs + 24)?, *b.get(ofs + 6)?, ofs + 40)
    } else {
        let ihl = usize::from(b.get(ofs)? & 0x0f) * 4;
        if ihl < 20 || b.get(ofs)? >> 4 != 4 {
            return None;
        }
        (u128::from(be32(b, ofs + 12)?), u128::from(be32(b, ofs + 16)?), *b.get(ofs + 9)?, ofs + ihl)
    };
    let mut t = Tuple { src, dst, sport: 0, dport: 0, ident: 0, proto, v6, zone };
    match u64::from(proto) {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            t.sport = be16(b, l4)?;
            t.dport = be16(b, l4 + 2)?;
        }
        p if p == IPPROTO_ICMP && !v6 || p == IPPROTO_ICMPV6 && v6 => {
            let (ty, code) = (*b.get(l4)?, *b.get(l4 + 1)?);
            let answer = icmp_answer(v6, ty)?;
            t.sport = u16::from(ty) << 8 | u16::from(code);
            t.dport = u16::from(answer) << 8 | u16::from(code);
            t.ident = be16(b, l4 + 4)?;
        }
        _ => {}
    }
    Some(t)
}

/// Reads a packet's connection key in `zone` from its bytes and their
/// parse. `None`: no key (not IP, a fragment, a truncated header, an ICMP
/// type that belongs to no connection).
pub fn extract(pkt: &[u8], k: &FlowKey, lay: &Layout, zone: u16) -> Option<Extracted> {
    if !k.is_ip() || lay.l3.is_none() || k.get(Field::IpFrag) & FRAG_ANY != 0 {
        return None;
    }
    let v6 = k.is_ipv6();
    let (src, dst) = if v6 {
        (k.get_wide(Field::Ipv6SrcHi), k.get_wide(Field::Ipv6DstHi))
    } else {
        (u128::from(k.get(Field::IpSrc)), u128::from(k.get(Field::IpDst)))
    };
    let proto = k.get(Field::IpProto) as u8;
    let mut t = Tuple { src, dst, sport: 0, dport: 0, ident: 0, proto, v6, zone };
    let plain = |t: Tuple| Some(Extracted { key: t, related: false, may_open: true });
    match u64::from(proto) {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            lay.l4?;
            t.sport = k.get(Field::TpSrc) as u16;
            t.dport = k.get(Field::TpDst) as u16;
            plain(t)
        }
        p if p == IPPROTO_ICMP && !v6 || p == IPPROTO_ICMPV6 && v6 => {
            let l4 = lay.l4?;
            let (ty, code) = (*pkt.get(l4)?, *pkt.get(l4 + 1)?);
            if icmp_error(v6, ty) {
                // The quoted packet went the other way.
                let inner = quoted(pkt, l4 + 8, v6, zone)?;
                return Some(Extracted { key: inner.reverse(), related: true, may_open: false });
            }
            let answer = icmp_answer(v6, ty)?;
            t.sport = u16::from(ty) << 8 | u16::from(code);
            t.dport = u16::from(answer) << 8 | u16::from(code);
            t.ident = be16(pkt, l4 + 4)?;
            // Only a request opens a connection; a reply alone does not.
            let request = matches!((v6, ty), (false, 8 | 13 | 15) | (true, 128));
            Some(Extracted { key: t, related: false, may_open: request })
        }
        // Other protocols: tracked by addresses alone.
        _ => plain(t),
    }
}

/// What a TCP segment says, for the window tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub flags: u16,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    /// Payload bytes.
    pub len: u32,
    /// The window scale option, if the segment has one (SYNs).
    pub wscale: Option<u8>,
}

/// Reads the TCP segment at the packet's L4 offset.
pub fn segment(pkt: &[u8], lay: &Layout) -> Option<Segment> {
    let l3 = lay.l3?;
    let l4 = lay.l4?;
    let off = usize::from(*pkt.get(l4 + 12)? >> 4) * 4;
    if off < 20 {
        return None;
    }
    let ip_end =
        if lay.ipv6 { l3 + 40 + usize::from(be16(pkt, l3 + 4)?) } else { l3 + usize::from(be16(pkt, l3 + 2)?) };
    let ip_end = ip_end.min(pkt.len());
    let len = ip_end.saturating_sub(l4 + off) as u32;
    let flags = be16(pkt, l4 + 12)? & 0x0fff;
    let mut wscale = None;
    let mut o = l4 + 20;
    let end = (l4 + off).min(pkt.len());
    while o < end {
        match pkt[o] {
            0 => break,
            1 => o += 1,
            kind => {
                let n = usize::from(*pkt.get(o + 1)?).max(2);
                if kind == 3 && n >= 3 {
                    wscale = Some((*pkt.get(o + 2)?).min(14));
                }
                o += n;
            }
        }
    }
    Some(Segment { flags, seq: be32(pkt, l4 + 4)?, ack: be32(pkt, l4 + 8)?, win: be16(pkt, l4 + 14)?, len, wscale })
}
