//! Building frames from flow keys: the inverse of [`crate::parse`] for the
//! header fields a key carries (the `emit` half of smoltcp's `Repr`).
//!
//! Used to feed generated traffic through the whole fast path as packets and
//! to build test traffic. Invariant: for a key that describes a well-formed
//! packet (what `parse` produces from a real frame), `parse(&frame(k, p),
//! in_port)` gives `k` back on every in-packet field, and every checksum in
//! the frame (IPv4 header, TCP, UDP, ICMP) is correct. Fields a key cannot
//! express (IP id, TCP sequence numbers, window) are zero or fixed.

use kairo_flow::field::{Field, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, VLAN_CFI};
use kairo_flow::parse::{FRAG_ANY, FRAG_LATER};
use kairo_flow::FlowKey;

use crate::{checksum, fold, sum, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN};

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

fn ipv4(out: &mut Vec<u8>, k: &FlowKey, payload: &[u8]) {
    let proto = k.get(Field::IpProto);
    let frag = k.get(Field::IpFrag);
    let later = frag & FRAG_LATER != 0;
    // The L4 header, if the key has one (later fragments carry none).
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
            IPPROTO_ICMP => {
                l4.push(k.get(Field::IcmpType) as u8);
                l4.push(k.get(Field::IcmpCode) as u8);
                l4.extend_from_slice(&[0; 6]); // checksum, rest of header
            }
            _ => {}
        }
    }
    let l4_hdr = l4.len();
    l4.extend_from_slice(payload);
    let (s, d) = (k.get(Field::IpSrc) as u32, k.get(Field::IpDst) as u32);
    let total = (20 + l4.len()) as u16;
    // L4 checksums over the pseudo-header (TCP, UDP) or the message (ICMP).
    let pseudo = |len: usize| {
        let mut ph = [0u8; 12];
        ph[0..4].copy_from_slice(&s.to_be_bytes());
        ph[4..8].copy_from_slice(&d.to_be_bytes());
        ph[9] = proto as u8;
        ph[10..12].copy_from_slice(&(len as u16).to_be_bytes());
        sum(0, &ph)
    };
    match proto {
        IPPROTO_TCP if l4_hdr > 0 => {
            let c = !fold(sum(pseudo(l4.len()), &l4));
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        IPPROTO_UDP if l4_hdr > 0 => {
            let c = match !fold(sum(pseudo(l4.len()), &l4)) {
                0 => 0xffff,
                c => c,
            };
            l4[6..8].copy_from_slice(&c.to_be_bytes());
        }
        IPPROTO_ICMP if l4_hdr > 0 => {
            let c = checksum(&l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
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
