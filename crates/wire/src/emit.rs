//! Building frames from flow keys: the inverse of [`crate::parse`] for the
//! header fields a key carries (the `emit` half of smoltcp's `Repr`).
//!
//! Used to feed generated traffic through the whole fast path as packets and
//! to build test traffic. Invariant: for a key that describes a well-formed
//! packet (what `parse` produces from a real frame), `parse(&frame(k, p),
//! in_port)` gives `k` back on every in-packet field, and every checksum in
//! the frame (IPv4 header, TCP, UDP, ICMP, ICMPv6) is correct. IPv6
//! fragments carry a fragment header; neighbour discovery messages carry
//! their target and a link-layer address option when the key has one. Fields a key cannot
//! express (IP id, TCP sequence numbers, window) are zero or fixed.

use kairo_flow::field::{
    Field, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, MPLS_BOS_MASK, MPLS_MAX_LABELS,
    ND_ADVERT, ND_SOLICIT, VLAN_CFI,
};
use kairo_flow::parse::{FRAG_ANY, FRAG_LATER};
use kairo_flow::FlowKey;

use crate::{
    checksum, fold, sum, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_MPLS, ETHERTYPE_MPLS_MCAST,
    ETHERTYPE_QINQ, ETHERTYPE_VLAN,
};

fn put_mac(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes()[2..]);
}

/// The frame a packet with key `k` and L4 payload `payload` has on the wire.
pub fn frame(k: &FlowKey, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + payload.len());
    put_mac(&mut out, k.get(Field::EthDst));
    put_mac(&mut out, k.get(Field::EthSrc));
    let outer = k.get(Field::VlanTci);
    let inner = k.get(Field::VlanTciInner);
    if outer & VLAN_CFI != 0 {
        let tpid = if inner & VLAN_CFI != 0 { ETHERTYPE_QINQ } else { ETHERTYPE_VLAN };
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&((outer & !VLAN_CFI) as u16).to_be_bytes());
        if inner & VLAN_CFI != 0 {
            out.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            out.extend_from_slice(&((inner & !VLAN_CFI) as u16).to_be_bytes());
        }
    }
    let ty = k.get(Field::EthType) as u16;
    if ty < 0x0600 {
        // An 802.3 frame: a length field, then the payload.
        out.extend_from_slice(&(payload.len().min(1500) as u16).to_be_bytes());
        out.extend_from_slice(payload);
        return out;
    }
    out.extend_from_slice(&ty.to_be_bytes());
    match ty {
        ETHERTYPE_IPV4 => ipv4(&mut out, k, payload),
        ETHERTYPE_IPV6 => ipv6(&mut out, k, payload),
        ETHERTYPE_MPLS | ETHERTYPE_MPLS_MCAST => {
            // The entries to the bottom of the stack (or three), then an
            // IPv4 packet of the key's L3 fields (zero in a key parsed from
            // an MPLS frame: nothing under the labels is in a key).
            for i in 0..MPLS_MAX_LABELS {
                let lse = k.mpls_lse(i);
                out.extend_from_slice(&lse.to_be_bytes());
                if lse & MPLS_BOS_MASK != 0 {
                    break;
                }
            }
            ipv4(&mut out, k, payload)
        }
        ETHERTYPE_ARP => {
            out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
            out.extend_from_slice(&(k.get(Field::ArpOp) as u16).to_be_bytes());
            put_mac(&mut out, k.get(Field::ArpSha));
            out.extend_from_slice(&(k.get(Field::ArpSpa) as u32).to_be_bytes());
            put_mac(&mut out, k.get(Field::ArpTha));
            out.extend_from_slice(&(k.get(Field::ArpTpa) as u32).to_be_bytes());
        }
        _ => out.extend_from_slice(payload),
    }
    out
}

/// The L4 header and payload of a key (none for later fragments), the
/// checksum left zero; and the header's length.
fn l4_of(k: &FlowKey, payload: &[u8], v6: bool) -> (Vec<u8>, usize) {
    let proto = k.get(Field::IpProto);
    let later = k.get(Field::IpFrag) & FRAG_LATER != 0;
    let mut l4: Vec<u8> = Vec::with_capacity(20 + payload.len());
    let (src, dst) = (k.get(Field::TpSrc) as u16, k.get(Field::TpDst) as u16);
    if !later {
        match proto {
            IPPROTO_TCP => {
                l4.extend_from_slice(&src.to_be_bytes());
                l4.extend_from_slice(&dst.to_be_bytes());
                l4.extend_from_slice(&[0; 8]); // seq, ack
                let flags = (5u16 << 12) | (k.get(Field::TcpFlags) as u16 & 0x0fff);
                l4.extend_from_slice(&flags.to_be_bytes());
                l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
            }
            IPPROTO_UDP => {
                l4.extend_from_slice(&src.to_be_bytes());
                l4.extend_from_slice(&dst.to_be_bytes());
                l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            IPPROTO_SCTP => {
                l4.extend_from_slice(&src.to_be_bytes());
                l4.extend_from_slice(&dst.to_be_bytes());
                l4.extend_from_slice(&[0; 8]); // verification tag, CRC32c (not computed)
            }
            IPPROTO_ICMP if !v6 => {
                l4.push(k.get(Field::IcmpType) as u8);
                l4.push(k.get(Field::IcmpCode) as u8);
                l4.extend_from_slice(&[0; 6]); // checksum, rest of header
            }
            IPPROTO_ICMPV6 if v6 => {
                let (ty, code) = (k.get(Field::Icmpv6Type), k.get(Field::Icmpv6Code));
                l4.push(ty as u8);
                l4.push(code as u8);
                l4.extend_from_slice(&[0; 6]); // checksum, flags / reserved
                if code == 0 && (ty == ND_SOLICIT || ty == ND_ADVERT) {
                    l4.extend_from_slice(&k.get_wide(Field::NdTargetHi).to_be_bytes());
                    let (opt, lla) = if ty == ND_SOLICIT { (1, k.get(Field::NdSll)) } else { (2, k.get(Field::NdTll)) };
                    if lla != 0 {
                        l4.extend_from_slice(&[opt, 1]);
                        l4.extend_from_slice(&lla.to_be_bytes()[2..]);
                    }
                }
            }
            _ => {}
        }
    }
    let hdr = l4.len();
    l4.extend_from_slice(payload);
    (l4, hdr)
}

/// Writes the L4 checksum of `l4` (header length `hdr`, protocol `proto`)
/// given the one's-complement sum of its pseudo-header (ICMPv4 has none and
/// ignores it).
fn l4_checksum(l4: &mut [u8], hdr: usize, proto: u64, pseudo: u32) {
    if hdr == 0 {
        return;
    }
    match proto {
        IPPROTO_TCP => {
            let c = !fold(sum(pseudo, l4));
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        IPPROTO_UDP => {
            let c = match !fold(sum(pseudo, l4)) {
                0 => 0xffff,
                c => c,
            };
            l4[6..8].copy_from_slice(&c.to_be_bytes());
        }
        IPPROTO_ICMP => {
            let c = checksum(l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        IPPROTO_ICMPV6 => {
            let c = !fold(sum(pseudo, l4));
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

fn ipv6(out: &mut Vec<u8>, k: &FlowKey, payload: &[u8]) {
    let proto = k.get(Field::IpProto);
    let frag = k.get(Field::IpFrag);
    let (mut l4, hdr) = l4_of(k, payload, true);
    let (s, d) = (k.get_wide(Field::Ipv6SrcHi), k.get_wide(Field::Ipv6DstHi));
    // Pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next header.
    let mut ph = [0u8; 40];
    ph[0..16].copy_from_slice(&s.to_be_bytes());
    ph[16..32].copy_from_slice(&d.to_be_bytes());
    ph[32..36].copy_from_slice(&(l4.len() as u32).to_be_bytes());
    ph[39] = proto as u8;
    l4_checksum(&mut l4, hdr, proto, sum(0, &ph));
    let tc = ((k.get(Field::IpDscp) as u32) << 2) | (k.get(Field::IpEcn) as u32 & 3);
    let word0 = 6u32 << 28 | tc << 20 | (k.get(Field::Ipv6Label) as u32 & 0xf_ffff);
    let fragment = frag & FRAG_ANY != 0;
    let plen = l4.len() + if fragment { 8 } else { 0 };
    out.extend_from_slice(&word0.to_be_bytes());
    out.extend_from_slice(&(plen as u16).to_be_bytes());
    out.push(if fragment { 44 } else { proto as u8 });
    out.push(k.get(Field::IpTtl) as u8);
    out.extend_from_slice(&s.to_be_bytes());
    out.extend_from_slice(&d.to_be_bytes());
    if fragment {
        // Offset 1 (8 bytes) for a later fragment; offset 0 with M set for the first.
        let off: u16 = if frag & FRAG_LATER != 0 { 1 << 3 } else { 1 };
        out.extend_from_slice(&[proto as u8, 0]);
        out.extend_from_slice(&off.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 1]); // identification
    }
    out.extend_from_slice(&l4);
}

fn ipv4(out: &mut Vec<u8>, k: &FlowKey, payload: &[u8]) {
    let proto = k.get(Field::IpProto);
    let frag = k.get(Field::IpFrag);
    let later = frag & FRAG_LATER != 0;
    let (mut l4, hdr) = l4_of(k, payload, false);
    let (s, d) = (k.get(Field::IpSrc) as u32, k.get(Field::IpDst) as u32);
    let total = (20 + l4.len()) as u16;
    let mut ph = [0u8; 12];
    ph[0..4].copy_from_slice(&s.to_be_bytes());
    ph[4..8].copy_from_slice(&d.to_be_bytes());
    ph[9] = proto as u8;
    ph[10..12].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    l4_checksum(&mut l4, hdr, proto, sum(0, &ph));
    let tos = ((k.get(Field::IpDscp) as u8) << 2) | (k.get(Field::IpEcn) as u8 & 3);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let frag_field: u16 = match (frag & FRAG_ANY != 0, later) {
        (_, true) => 1,          // offset 8 bytes: a later fragment
        (true, false) => 0x2000, // MF set, offset 0: the first fragment
        _ => 0x4000,             // DF
    };
    ip[6..8].copy_from_slice(&frag_field.to_be_bytes());
    ip[8] = k.get(Field::IpTtl) as u8;
    ip[9] = proto as u8;
    ip[12..16].copy_from_slice(&s.to_be_bytes());
    ip[16..20].copy_from_slice(&d.to_be_bytes());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&l4);
}
