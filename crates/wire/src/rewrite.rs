//! In-place header rewrites on a packet buffer, keeping checksums right.
//!
//! Invariant: after any rewrite here, the IPv4 header checksum and the TCP,
//! UDP (unless zero, meaning "none"), ICMP and ICMPv6 checksums of the packet
//! are exactly what a full recomputation gives (RFC 1624 incremental updates;
//! IPv6 addresses reach the L4 checksum through the pseudo-header); for a
//! frame whose TCP or UDP checksum the sender left partial
//! (`lay.offload.partial`), the field is what finishing it needs (the
//! pseudo-header sum of the rewritten frame), so that finishing it then
//! gives what a full recomputation gives. Rewrites of fields the packet does not have are no-ops; nothing panics.

use crate::{Layout, ETHERTYPE_VLAN};

fn get16(b: &[u8], ofs: usize) -> Option<u16> {
    b.get(ofs..ofs + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn put16(b: &mut [u8], ofs: usize, v: u16) -> bool {
    match b.get_mut(ofs..ofs + 2) {
        Some(s) => {
            s.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn adjust(csum: u16, old: u16, new: u16) -> u16 {
    let mut acc = (!csum as u32) + (!old as u32 & 0xffff) + new as u32;
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Updates the checksum at `ofs` for a 16-bit word changing from `old` to `new`.
/// `udp`: a zero checksum means none and stays zero; a computed zero becomes 0xffff.
fn fix(b: &mut [u8], ofs: usize, old: u16, new: u16, udp: bool) {
    if let Some(c) = get16(b, ofs) {
        if udp && c == 0 {
            return;
        }
        let mut n = adjust(c, old, new);
        if udp && n == 0 {
            n = 0xffff;
        }
        put16(b, ofs, n);
    }
}

/// Fixes the transport checksum for a 16-bit word changing from `old` to
/// `new`: one the checksum covers through the pseudo-header (`pseudo`) or
/// in the transport header itself. A checksum left partial by the sender
/// ([`crate::offload`]) holds the pseudo-header sum only, not complemented:
/// a pseudo-header word is added to it as it is, anything else is summed
/// when the checksum is finished.
fn fix_l4(b: &mut [u8], lay: &Layout, old: u16, new: u16, pseudo: bool) {
    let Some((c, udp, covers_pseudo)) = l4_csum(b, lay) else { return };
    if lay.offload.partial {
        if pseudo {
            if let Some(p) = get16(b, c) {
                put16(b, c, !adjust(!p, old, new));
            }
        }
        return;
    }
    if pseudo && !covers_pseudo {
        return;
    }
    fix(b, c, old, new, udp);
}

/// Where the L4 checksum of the packet is, and whether it is UDP-style.
/// The third value: does the checksum cover the IP pseudo-header?
fn l4_csum(_b: &[u8], lay: &Layout) -> Option<(usize, bool, bool)> {
    lay.l3?;
    let l4 = lay.l4?;
    match (lay.proto, lay.ipv6) {
        (6, _) => Some((l4 + 16, false, true)),
        (17, _) => Some((l4 + 6, true, true)),
        (1, false) => Some((l4 + 2, false, false)),
        (58, true) => Some((l4 + 2, false, true)),
        _ => None,
    }
}

/// Writes a 16-bit word of the IPv4 header, fixing its checksum, and (if
/// `pseudo`) the L4 checksum that covers it through the pseudo-header.
fn ip_word(b: &mut [u8], lay: &Layout, ofs_in_ip: usize, new: u16, pseudo: bool) {
    let Some(l3) = lay.l3.filter(|_| !lay.ipv6) else { return };
    let Some(old) = get16(b, l3 + ofs_in_ip) else { return };
    if old == new {
        return;
    }
    put16(b, l3 + ofs_in_ip, new);
    fix(b, l3 + 10, old, new, false);
    if pseudo {
        fix_l4(b, lay, old, new, true);
    }
}

pub fn set_eth_src(b: &mut [u8], mac: u64) {
    if let Some(s) = b.get_mut(6..12) {
        s.copy_from_slice(&mac.to_be_bytes()[2..]);
    }
}

pub fn set_eth_dst(b: &mut [u8], mac: u64) {
    if let Some(s) = b.get_mut(0..6) {
        s.copy_from_slice(&mac.to_be_bytes()[2..]);
    }
}

/// Pushes an 802.1Q tag (TPID 0x8100) with `tci` after the MAC addresses.
pub fn push_vlan(b: &mut Vec<u8>, lay: &mut Layout, tci: u16) {
    if b.len() < 12 {
        return;
    }
    let mut tag = [0u8; 4];
    tag[..2].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    tag[2..].copy_from_slice(&tci.to_be_bytes());
    b.splice(12..12, tag);
    lay.vlans += 1;
    lay.l3 = lay.l3.map(|x| x + 4);
    lay.l4 = lay.l4.map(|x| x + 4);
}

/// Removes the outer VLAN tag, if any.
pub fn pop_vlan(b: &mut Vec<u8>, lay: &mut Layout) {
    if lay.vlans == 0 || b.len() < 18 {
        return;
    }
    b.drain(12..16);
    lay.vlans -= 1;
    lay.l3 = lay.l3.map(|x| x - 4);
    lay.l4 = lay.l4.map(|x| x - 4);
}

/// The offset of the ethertype after the VLAN tags, if the frame has one.
fn ethertype_at(b: &[u8], lay: &Layout) -> Option<usize> {
    let at = 12 + 4 * usize::from(lay.vlans);
    (b.len() >= at + 2).then_some(at)
}

/// Pushes an MPLS label stack entry `lse` after the VLAN tags and sets the
/// ethertype to `ethertype`; the layout is that of the new frame (no L3
/// header is visible under labels).
pub fn push_mpls(b: &mut Vec<u8>, lay: &mut Layout, lse: u32, ethertype: u16) {
    let Some(at) = ethertype_at(b, lay) else { return };
    // Under labels the transport header is out of sight: a partial
    // checksum is finished while it is not (a super-frame stays one: it
    // goes out whole to a port that takes it, or not at all).
    crate::offload::finish_csum(b, lay);
    put16(b, at, ethertype);
    b.splice(at + 2..at + 2, lse.to_be_bytes());
    *lay = crate::Layout { offload: lay.offload, ..crate::parse(b, 0).1 };
}

/// Pops the top MPLS label stack entry, if the frame has one, and sets the
/// ethertype to `ethertype`; the layout is that of the new frame.
pub fn pop_mpls(b: &mut Vec<u8>, lay: &mut Layout, ethertype: u16) {
    let Some(at) = ethertype_at(b, lay) else { return };
    let ty = get16(b, at).unwrap_or(0);
    if !kairo_flow::field::is_mpls_type(u64::from(ty)) || b.len() < at + 6 {
        return;
    }
    put16(b, at, ethertype);
    b.drain(at + 2..at + 6);
    *lay = crate::Layout { offload: lay.offload, ..crate::parse(b, 0).1 };
}

/// Overwrites the top MPLS label stack entry, if the frame has one.
pub fn set_mpls(b: &mut [u8], lay: &Layout, lse: u32) {
    let Some(at) = ethertype_at(b, lay) else { return };
    let ty = get16(b, at).unwrap_or(0);
    if kairo_flow::field::is_mpls_type(u64::from(ty)) {
        if let Some(s) = b.get_mut(at + 2..at + 6) {
            s.copy_from_slice(&lse.to_be_bytes());
        }
    }
}

pub fn set_ipv4_src(b: &mut [u8], lay: &Layout, v: u32) {
    ip_word(b, lay, 12, (v >> 16) as u16, true);
    ip_word(b, lay, 14, v as u16, true);
}

pub fn set_ipv4_dst(b: &mut [u8], lay: &Layout, v: u32) {
    ip_word(b, lay, 16, (v >> 16) as u16, true);
    ip_word(b, lay, 18, v as u16, true);
}

pub fn set_ipv4_ttl(b: &mut [u8], lay: &Layout, ttl: u8) {
    let Some(l3) = lay.l3 else { return };
    let Some(w) = get16(b, l3 + 8) else { return };
    ip_word(b, lay, 8, (ttl as u16) << 8 | (w & 0xff), false);
}

/// Sets the TOS byte bits under `mask` to `value`.
pub fn set_ipv4_tos(b: &mut [u8], lay: &Layout, value: u8, mask: u8) {
    let Some(l3) = lay.l3 else { return };
    let Some(w) = get16(b, l3) else { return };
    let tos = ((w & 0xff) as u8 & !mask) | (value & mask);
    ip_word(b, lay, 0, (w & 0xff00) | tos as u16, false);
}

/// Rewrites a TCP/UDP/SCTP port. (SCTP's CRC32c is not updated: kairo does not
/// verify or fix SCTP checksums.)
fn l4_port(b: &mut [u8], lay: &Layout, ofs: usize, port: u16) {
    let Some(l4) = lay.l4 else { return };
    if !matches!(lay.proto, 6 | 17 | 132) {
        return;
    }
    let Some(old) = get16(b, l4 + ofs) else { return };
    if old == port {
        return;
    }
    put16(b, l4 + ofs, port);
    fix_l4(b, lay, old, port, false);
}

pub fn set_l4_src(b: &mut [u8], lay: &Layout, port: u16) {
    l4_port(b, lay, 0, port);
}

pub fn set_l4_dst(b: &mut [u8], lay: &Layout, port: u16) {
    l4_port(b, lay, 2, port);
}

/// Sets a TCP segment's sequence and acknowledgement numbers and window
/// (what a flow key does not carry: for building test and benchmark
/// traffic), fixing the TCP checksum. No-op on anything but TCP.
pub fn set_tcp_seq(b: &mut [u8], lay: &Layout, seq: u32, ack: u32, win: u16) {
    let Some(l4) = lay.l4.filter(|_| lay.proto == 6) else { return };
    let words = [(4, (seq >> 16) as u16), (6, seq as u16), (8, (ack >> 16) as u16), (10, ack as u16), (14, win)];
    for (ofs, new) in words {
        let Some(old) = get16(b, l4 + ofs) else { return };
        put16(b, l4 + ofs, new);
        fix_l4(b, lay, old, new, false);
    }
}

/// Sets ICMP type and/or code, fixing the ICMP checksum.
pub fn set_icmp(b: &mut [u8], lay: &Layout, ty: Option<u8>, code: Option<u8>) {
    let Some(l4) = lay.l4 else { return };
    if lay.ipv6 || lay.proto != 1 {
        return;
    }
    let Some(old) = get16(b, l4) else { return };
    let new = ((ty.unwrap_or((old >> 8) as u8) as u16) << 8) | code.unwrap_or(old as u8) as u16;
    if new != old {
        put16(b, l4, new);
        fix(b, l4 + 2, old, new, false);
    }
}

/// Writes a 16-bit word of the IPv6 packet at `ofs` (from the buffer's
/// start), fixing the L4 checksum if the word is in it (in the
/// pseudo-header, or in the ICMPv6 message).
fn v6_word(b: &mut [u8], lay: &Layout, ofs: usize, new: u16, in_checksum: bool) {
    let Some(old) = get16(b, ofs) else { return };
    if old == new {
        return;
    }
    put16(b, ofs, new);
    if in_checksum {
        fix_l4(b, lay, old, new, true);
    }
}

/// Writes a 128-bit address at `ofs`, word by word, fixing the L4 checksum.
fn v6_addr(b: &mut [u8], lay: &Layout, ofs: usize, a: u128) {
    for (i, w) in a.to_be_bytes().chunks_exact(2).enumerate() {
        v6_word(b, lay, ofs + 2 * i, u16::from_be_bytes([w[0], w[1]]), true);
    }
}

fn ipv6_l3(lay: &Layout) -> Option<usize> {
    lay.l3.filter(|_| lay.ipv6)
}

pub fn set_ipv6_src(b: &mut [u8], lay: &Layout, a: u128) {
    if let Some(l3) = ipv6_l3(lay) {
        v6_addr(b, lay, l3 + 8, a);
    }
}

pub fn set_ipv6_dst(b: &mut [u8], lay: &Layout, a: u128) {
    if let Some(l3) = ipv6_l3(lay) {
        v6_addr(b, lay, l3 + 24, a);
    }
}

/// Sets the traffic class bits under `mask` to `value` (no checksum covers them).
pub fn set_ipv6_tclass(b: &mut [u8], lay: &Layout, value: u8, mask: u8) {
    let Some(l3) = ipv6_l3(lay) else { return };
    let Some(w) = get16(b, l3) else { return };
    let tc = ((w >> 4) as u8 & !mask) | (value & mask);
    put16(b, l3, (w & 0xf00f) | (tc as u16) << 4);
}

pub fn set_ipv6_label(b: &mut [u8], lay: &Layout, label: u32) {
    let Some(l3) = ipv6_l3(lay) else { return };
    let Some(w) = get16(b, l3) else { return };
    if put16(b, l3, (w & 0xfff0) | ((label >> 16) & 0xf) as u16) {
        put16(b, l3 + 2, label as u16);
    }
}

pub fn set_ipv6_hlimit(b: &mut [u8], lay: &Layout, hlimit: u8) {
    if let Some(h) = ipv6_l3(lay).and_then(|l3| b.get_mut(l3 + 7)) {
        *h = hlimit;
    }
}

/// Sets ICMPv6 type and/or code, fixing the checksum.
pub fn set_icmpv6(b: &mut [u8], lay: &Layout, ty: Option<u8>, code: Option<u8>) {
    let Some(l4) = lay.l4.filter(|_| lay.ipv6 && lay.proto == 58) else { return };
    let Some(old) = get16(b, l4) else { return };
    let new = ((ty.unwrap_or((old >> 8) as u8) as u16) << 8) | code.unwrap_or(old as u8) as u16;
    v6_word(b, lay, l4, new, true);
}

/// Neighbour discovery: the target, and the link-layer address options the
/// message already has (none is added, as Open vSwitch's `packet_set_nd`).
pub fn set_nd(b: &mut [u8], lay: &Layout, target: Option<u128>, sll: Option<u64>, tll: Option<u64>) {
    let Some(l4) = lay.l4.filter(|_| lay.ipv6 && lay.proto == 58) else { return };
    let ty = match b.get(l4) {
        Some(&t) if t == 135 || t == 136 => t,
        _ => return,
    };
    if b.len() < l4 + 24 {
        return;
    }
    if let Some(t) = target {
        v6_addr(b, lay, l4 + 8, t);
    }
    let mut ofs = l4 + 24;
    while ofs + 8 <= b.len() {
        let (opt, units) = (b[ofs], usize::from(b[ofs + 1]));
        if units == 0 {
            return;
        }
        let lla = match (opt, ty) {
            (1, 135) => sll,
            (2, 136) => tll,
            _ => None,
        };
        if let (Some(m), 1) = (lla, units) {
            let bytes = m.to_be_bytes();
            for i in 0..3 {
                v6_word(b, lay, ofs + 2 + 2 * i, u16::from_be_bytes([bytes[2 + 2 * i], bytes[3 + 2 * i]]), true);
            }
        }
        ofs += units * 8;
    }
}

/// ARP fields (Ethernet/IPv4 ARP): op, sha, spa, tha, tpa.
pub fn set_arp(
    b: &mut [u8],
    lay: &Layout,
    op: Option<u8>,
    sha: Option<u64>,
    spa: Option<u32>,
    tha: Option<u64>,
    tpa: Option<u32>,
) {
    let Some(l3) = lay.l3 else { return };
    if let Some(op) = op {
        put16(b, l3 + 6, op as u16);
    }
    let mut put = |ofs: usize, bytes: &[u8]| {
        if let Some(s) = b.get_mut(l3 + ofs..l3 + ofs + bytes.len()) {
            s.copy_from_slice(bytes);
        }
    };
    if let Some(m) = sha {
        put(8, &m.to_be_bytes()[2..]);
    }
    if let Some(a) = spa {
        put(14, &a.to_be_bytes());
    }
    if let Some(m) = tha {
        put(18, &m.to_be_bytes()[2..]);
    }
    if let Some(a) = tpa {
        put(24, &a.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjust_matches_recompute() {
        // RFC 1624 example style: a header, change a word, compare.
        let mut h = [0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let c = crate::checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = 63;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let adj = adjust(c, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(adj, crate::checksum(&h));
    }
}
