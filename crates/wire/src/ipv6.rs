//! IPv6: a view of the fixed header, the walk over extension headers to the
//! upper-layer protocol, and ICMPv6 neighbour discovery (target address and
//! link-layer address options), as Open vSwitch's `flow_extract` reads them.
//!
//! Invariant (the crate's no-panic contract): every read is bounds-checked;
//! a truncated or malformed packet keeps what parsed before the fault. As in
//! OVS: a header that ends early keeps the L3 fields with no L4; a later
//! fragment (offset != 0) has `nw_frag=later` and no L4; a malformed
//! neighbour discovery message keeps its ICMPv6 type and code with
//! `nd_target`, `nd_sll` and `nd_tll` zero.

use kairo_flow::field::{Field, ND_ADVERT, ND_SOLICIT};
use kairo_flow::parse::{FRAG_ANY, FRAG_LATER};
use kairo_flow::FlowKey;

use crate::{be16, be32, mac, parse_l4, Layout};

/// Length of the fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;

/// Extension header numbers the walk steps over (RFC 8200).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;

/// A view of a fixed IPv6 header (version 6, 40 bytes in the buffer).
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Header<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv6Header<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        (buf.len() >= IPV6_HLEN && buf[0] >> 4 == 6).then_some(Ipv6Header { buf })
    }
    /// Traffic class (DSCP << 2 | ECN).
    pub fn tclass(&self) -> u8 {
        (be16(self.buf, 0).unwrap_or(0) >> 4) as u8
    }
    pub fn flow_label(&self) -> u32 {
        be32(self.buf, 0).unwrap_or(0) & 0x000f_ffff
    }
    pub fn next_header(&self) -> u8 {
        self.buf.get(6).copied().unwrap_or(0)
    }
    pub fn hop_limit(&self) -> u8 {
        self.buf.get(7).copied().unwrap_or(0)
    }
    pub fn src(&self) -> u128 {
        addr(self.buf, 8).unwrap_or(0)
    }
    pub fn dst(&self) -> u128 {
        addr(self.buf, 24).unwrap_or(0)
    }
}

/// A 128-bit address at `ofs`.
pub(crate) fn addr(b: &[u8], ofs: usize) -> Option<u128> {
    let s = b.get(ofs..ofs.checked_add(16)?)?;
    Some(s.iter().fold(0u128, |a, &x| (a << 8) | u128::from(x)))
}

/// Parses the IPv6 packet at `l3` of `buf` into `k` and `lay`.
pub(crate) fn parse(buf: &[u8], l3: usize, k: &mut FlowKey, lay: &mut Layout) {
    let Some(ip) = buf.get(l3..).and_then(Ipv6Header::new_checked) else { return };
    lay.l3 = Some(l3);
    lay.ipv6 = true;
    k.set_wide(Field::Ipv6SrcHi, ip.src());
    k.set_wide(Field::Ipv6DstHi, ip.dst());
    k.set(Field::Ipv6Label, u64::from(ip.flow_label()));
    let tc = ip.tclass();
    k.set(Field::IpDscp, u64::from(tc >> 2));
    k.set(Field::IpEcn, u64::from(tc & 3));
    k.set(Field::IpTtl, u64::from(ip.hop_limit()));
    // Walk the extension headers to the upper-layer protocol.
    let mut next = ip.next_header();
    let mut ofs = l3 + IPV6_HLEN;
    let mut frag = 0;
    loop {
        let len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => buf.get(ofs + 1).map(|&l| (usize::from(l) + 1) * 8),
            AUTH => buf.get(ofs + 1).map(|&l| (usize::from(l) + 2) * 4),
            FRAGMENT => {
                let Some(v) = be16(buf, ofs + 2) else { break };
                let (offset, more) = (v >> 3, v & 1 != 0);
                if offset != 0 || more {
                    frag |= FRAG_ANY;
                }
                if offset != 0 {
                    frag |= FRAG_LATER;
                }
                Some(8)
            }
            _ => break,
        };
        // A header cut short: what parsed so far stands, with no L4.
        let (Some(len), Some(&n)) = (len, buf.get(ofs)) else {
            k.set(Field::IpProto, u64::from(next));
            k.set(Field::IpFrag, frag);
            return;
        };
        if buf.len() < ofs + len {
            k.set(Field::IpProto, u64::from(next));
            k.set(Field::IpFrag, frag);
            return;
        }
        next = n;
        ofs += len;
        if frag & FRAG_LATER != 0 {
            break;
        }
    }
    k.set(Field::IpProto, u64::from(next));
    k.set(Field::IpFrag, frag);
    if frag & FRAG_LATER == 0 {
        parse_l4(buf, ofs, next, k, lay);
    }
}

/// Neighbour discovery in an ICMPv6 message `l4b` (type and code already
/// read): the target and the source/target link-layer address options.
/// Anything malformed leaves all three zero (as OVS's `parse_icmpv6`).
pub(crate) fn parse_nd(l4b: &[u8], k: &mut FlowKey) {
    let ty = u64::from(l4b.first().copied().unwrap_or(0));
    if l4b.get(1) != Some(&0) || !(ty == ND_SOLICIT || ty == ND_ADVERT) {
        return;
    }
    let Some(target) = addr(l4b, 8) else { return };
    let (mut sll, mut tll) = (0u64, 0u64);
    let mut ofs = 24;
    while ofs + 8 <= l4b.len() {
        let (opt, units) = (l4b[ofs], usize::from(l4b[ofs + 1]));
        let len = units * 8;
        if len == 0 || ofs + len > l4b.len() {
            return;
        }
        // Only one-unit options carry an Ethernet address.
        if units == 1 {
            let a = mac(l4b, ofs + 2).unwrap_or(0);
            match (opt, ty) {
                (1, ND_SOLICIT) if sll == 0 => sll = a,
                (2, ND_ADVERT) if tll == 0 => tll = a,
                (1, ND_SOLICIT) | (2, ND_ADVERT) => return,
                _ => {}
            }
        }
        ofs += len;
    }
    k.set_wide(Field::NdTargetHi, target);
    k.set(Field::NdSll, sll);
    k.set(Field::NdTll, tll);
}
