//! Zero-copy packet parsing into a [`FlowKey`], and in-place header rewrites.
//!
//! Views over a byte buffer read fields at fixed offsets; nothing is copied
//! and nothing is allocated. Parsed: Ethernet II, 802.1Q/802.1ad (one level of
//! QinQ), MPLS (up to three label stack entries; as Open vSwitch, nothing
//! past the labels), ARP, IPv4 (options, fragments), IPv6 (extension headers,
//! fragments; see [`ipv6`]), TCP, UDP, SCTP, ICMP, ICMPv6 with neighbour
//! discovery.
//!
//! # No-panic contract
//!
//! [`parse`] and every function here accept any byte slice. A truncated or
//! malformed packet yields the key of what did parse (as Open vSwitch's
//! `flow_extract`): a short Ethernet header gives a key with only `in_port`; a
//! bad IPv4 header keeps `dl_type=0x0800` with no L3 fields; a short L4 header
//! keeps the L3 fields with no L4 fields. Every read is bounds-checked through
//! `slice::get`; no arithmetic can overflow (lengths are at most `usize` of a
//! slice, header lengths at most 60).

pub mod emit;
pub mod ipv6;
pub mod offload;
pub mod rewrite;

use kairo_flow::field::{Field, VLAN_CFI};
use kairo_flow::parse::{FRAG_ANY, FRAG_LATER};
use kairo_flow::FlowKey;

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_MPLS: u16 = 0x8847;
pub const ETHERTYPE_MPLS_MCAST: u16 = 0x8848;
/// Open vSwitch's dl_type for 802.3 frames without SNAP.
pub const ETHERTYPE_NONE: u16 = 0x05ff;

#[inline]
pub(crate) fn be16(b: &[u8], ofs: usize) -> Option<u16> {
    let s = b.get(ofs..ofs.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
pub(crate) fn be32(b: &[u8], ofs: usize) -> Option<u32> {
    let s = b.get(ofs..ofs.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
pub(crate) fn mac(b: &[u8], ofs: usize) -> Option<u64> {
    let s = b.get(ofs..ofs.checked_add(6)?)?;
    Some(s.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
}

/// Where the headers of a parsed packet start (byte offsets into the buffer).
/// The ethertype after the VLAN tags is at `12 + 4 * vlans` (an MPLS label
/// stack starts 2 bytes later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the L3 header (after any VLAN tags), if the frame has one.
    pub l3: Option<usize>,
    /// Offset of the L4 header, if present and complete enough to parse.
    pub l4: Option<usize>,
    /// Number of VLAN tags (0-2).
    pub vlans: u8,
    /// The L4 protocol (IPv4's protocol, IPv6's last next-header) when `l4` is set.
    pub proto: u8,
    /// Is the L3 header IPv6?
    pub ipv6: bool,
    /// What the frame still owes the hardware (a checksum, segmentation):
    /// none for a parsed frame; set by the port it came from.
    pub offload: offload::Offload,
}

/// A view of an Ethernet frame (smoltcp-style: check once, then read).
#[derive(Clone, Copy, Debug)]
pub struct EthernetFrame<'a> {
    buf: &'a [u8],
}

impl<'a> EthernetFrame<'a> {
    /// A view if the buffer holds at least an Ethernet header.
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        (buf.len() >= ETH_HLEN).then_some(EthernetFrame { buf })
    }
    pub fn dst(&self) -> u64 {
        mac(self.buf, 0).unwrap_or(0)
    }
    pub fn src(&self) -> u64 {
        mac(self.buf, 6).unwrap_or(0)
    }
    pub fn ethertype(&self) -> u16 {
        be16(self.buf, 12).unwrap_or(0)
    }
}

/// A view of an IPv4 header whose length fields are consistent with the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Header<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv4Header<'a> {
    /// A view if `buf` starts with a valid IPv4 header: version 4, IHL >= 5,
    /// the header (with options) inside the buffer, total length >= header.
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        let vihl = *buf.first()?;
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if vihl >> 4 != 4 || ihl < 20 || buf.len() < ihl {
            return None;
        }
        let total = be16(buf, 2)? as usize;
        if total < ihl {
            return None;
        }
        Some(Ipv4Header { buf })
    }
    pub fn header_len(&self) -> usize {
        ((self.buf[0] & 0x0f) as usize) * 4
    }
    pub fn tos(&self) -> u8 {
        self.buf.get(1).copied().unwrap_or(0)
    }
    pub fn total_len(&self) -> u16 {
        be16(self.buf, 2).unwrap_or(0)
    }
    /// (more fragments, fragment offset)
    pub fn frag(&self) -> (bool, u16) {
        let v = be16(self.buf, 6).unwrap_or(0);
        (v & 0x2000 != 0, v & 0x1fff)
    }
    pub fn ttl(&self) -> u8 {
        self.buf.get(8).copied().unwrap_or(0)
    }
    pub fn protocol(&self) -> u8 {
        self.buf.get(9).copied().unwrap_or(0)
    }
    pub fn src(&self) -> u32 {
        be32(self.buf, 12).unwrap_or(0)
    }
    pub fn dst(&self) -> u32 {
        be32(self.buf, 16).unwrap_or(0)
    }
}

/// Parses a frame received on `in_port` into a flow key and its layout.
pub fn parse(buf: &[u8], in_port: u32) -> (FlowKey, Layout) {
    let mut k = FlowKey::ZERO;
    let mut lay = Layout::default();
    k.set(Field::InPort, in_port as u64);
    let Some(eth) = EthernetFrame::new_checked(buf) else { return (k, lay) };
    k.set(Field::EthDst, eth.dst());
    k.set(Field::EthSrc, eth.src());
    let mut ofs = 12;
    let mut ty = eth.ethertype();
    // Up to two VLAN tags (outer may be 802.1ad).
    while (ty == ETHERTYPE_VLAN || ty == ETHERTYPE_QINQ) && lay.vlans < 2 {
        let (Some(tci), Some(next)) = (be16(buf, ofs + 2), be16(buf, ofs + 4)) else {
            // Truncated tag: keep what parsed (Open vSwitch drops the partial tag).
            return (k, lay);
        };
        let f = if lay.vlans == 0 { Field::VlanTci } else { Field::VlanTciInner };
        k.set(f, tci as u64 | VLAN_CFI);
        lay.vlans += 1;
        ofs += 4;
        ty = next;
    }
    let l3 = ofs + 2;
    if ty < 0x0600 {
        // 802.3 length field: no ethertype.
        k.set(Field::EthType, ETHERTYPE_NONE as u64);
        return (k, lay);
    }
    k.set(Field::EthType, ty as u64);
    let Some(payload) = buf.get(l3..) else { return (k, lay) };
    match ty {
        ETHERTYPE_IPV4 => {
            let Some(ip) = Ipv4Header::new_checked(payload) else { return (k, lay) };
            lay.l3 = Some(l3);
            let tos = ip.tos();
            k.set(Field::IpSrc, ip.src() as u64);
            k.set(Field::IpDst, ip.dst() as u64);
            k.set(Field::IpProto, ip.protocol() as u64);
            k.set(Field::IpDscp, (tos >> 2) as u64);
            k.set(Field::IpEcn, (tos & 3) as u64);
            k.set(Field::IpTtl, ip.ttl() as u64);
            let (mf, off) = ip.frag();
            let mut frag = 0;
            if mf || off != 0 {
                frag |= FRAG_ANY;
            }
            if off != 0 {
                frag |= FRAG_LATER;
            }
            k.set(Field::IpFrag, frag);
            if frag & FRAG_LATER != 0 {
                return (k, lay);
            }
            let l4 = l3 + ip.header_len();
            parse_l4(buf, l4, ip.protocol(), &mut k, &mut lay);
        }
        ETHERTYPE_IPV6 => ipv6::parse(buf, l3, &mut k, &mut lay),
        ETHERTYPE_MPLS | ETHERTYPE_MPLS_MCAST => {
            // Up to three entries, to the bottom of the stack (a truncated
            // entry ends it, as Open vSwitch's parse_mpls).
            for i in 0..kairo_flow::field::MPLS_MAX_LABELS {
                let Some(lse) = be32(payload, 4 * i) else { break };
                k.set_mpls_lse(i, lse);
                if lse & kairo_flow::field::MPLS_BOS_MASK != 0 {
                    break;
                }
            }
        }
        // Ethernet/IPv4 ARP only.
        ETHERTYPE_ARP
            if payload.len() >= 28
                && be16(payload, 0) == Some(1)
                && be16(payload, 2) == Some(0x0800)
                && payload[4] == 6
                && payload[5] == 4 =>
        {
            lay.l3 = Some(l3);
            let op = be16(payload, 6).unwrap_or(0);
            if op <= 0xff {
                k.set(Field::ArpOp, op as u64);
            }
            k.set(Field::ArpSha, mac(payload, 8).unwrap_or(0));
            k.set(Field::ArpSpa, be32(payload, 14).unwrap_or(0) as u64);
            k.set(Field::ArpTha, mac(payload, 18).unwrap_or(0));
            k.set(Field::ArpTpa, be32(payload, 24).unwrap_or(0) as u64);
        }
        _ => {}
    }
    (k, lay)
}

/// Parses the L4 header at `l4` (protocol `proto`) into `k`; sets `lay.l4`
/// if it is complete enough to parse.
pub(crate) fn parse_l4(buf: &[u8], l4: usize, proto: u8, k: &mut FlowKey, lay: &mut Layout) {
    let Some(l4b) = buf.get(l4..) else { return };
    use kairo_flow::field::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
    let ok = match proto as u64 {
        IPPROTO_TCP if l4b.len() >= 20 => {
            k.set(Field::TpSrc, be16(l4b, 0).unwrap_or(0) as u64);
            k.set(Field::TpDst, be16(l4b, 2).unwrap_or(0) as u64);
            k.set(Field::TcpFlags, (be16(l4b, 12).unwrap_or(0) & 0x0fff) as u64);
            true
        }
        IPPROTO_UDP if l4b.len() >= 8 => {
            k.set(Field::TpSrc, be16(l4b, 0).unwrap_or(0) as u64);
            k.set(Field::TpDst, be16(l4b, 2).unwrap_or(0) as u64);
            true
        }
        IPPROTO_SCTP if l4b.len() >= 12 => {
            k.set(Field::TpSrc, be16(l4b, 0).unwrap_or(0) as u64);
            k.set(Field::TpDst, be16(l4b, 2).unwrap_or(0) as u64);
            true
        }
        IPPROTO_ICMP if !lay.ipv6 && l4b.len() >= 8 => {
            k.set(Field::IcmpType, l4b[0] as u64);
            k.set(Field::IcmpCode, l4b[1] as u64);
            true
        }
        IPPROTO_ICMPV6 if lay.ipv6 && l4b.len() >= 8 => {
            k.set(Field::Icmpv6Type, l4b[0] as u64);
            k.set(Field::Icmpv6Code, l4b[1] as u64);
            ipv6::parse_nd(l4b, k);
            true
        }
        _ => false,
    };
    if ok {
        lay.l4 = Some(l4);
        lay.proto = proto;
    }
}

/// The RFC 1071 Internet checksum of `data` (folded, complemented).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// One's-complement sum of 16-bit big-endian words (odd byte padded).
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        acc = acc.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [b] = it.remainder() {
        acc = acc.wrapping_add((*b as u32) << 8);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Folds a 32-bit one's-complement accumulator to 16 bits.
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests;
