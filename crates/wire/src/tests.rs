//! Golden-byte tests per protocol (packets built by etherparse, an independent
//! implementation), truncation and fuzz-style no-panic tests, and checksum
//! checks of every rewrite against a from-scratch recomputation.

use super::rewrite::*;
use super::*;
use etherparse::PacketBuilder;
use kairo_flow::Field;

const SRC: [u8; 6] = [0, 0, 0, 0, 0, 1];
const DST: [u8; 6] = [0, 0, 0, 0, 0, 2];

fn tcp_packet() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC, DST).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1234, 80, 1, 4096).syn();
    let payload = [1u8, 2, 3, 4, 5, 6, 7];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

fn udp_packet() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC, DST).ipv4([192, 168, 1, 1], [192, 168, 1, 2], 5).udp(5353, 53);
    let payload = [9u8; 11];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

fn icmp_packet() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC, DST).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9).icmpv4_echo_request(7, 1);
    let payload = [0u8; 8];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}

fn arp_packet() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&[0xff; 6]);
    v.extend_from_slice(&SRC);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&SRC);
    v.extend_from_slice(&[10, 0, 0, 1]);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&[10, 0, 0, 9]);
    v
}

fn with_tag(mut p: Vec<u8>, tpid: u16, tci: u16) -> Vec<u8> {
    let mut tag = tpid.to_be_bytes().to_vec();
    tag.extend_from_slice(&tci.to_be_bytes());
    p.splice(12..12, tag);
    p
}

#[test]
fn tcp_golden() {
    let (k, lay) = parse(&tcp_packet(), 3);
    assert_eq!(k.get(Field::InPort), 3);
    assert_eq!(k.get(Field::EthSrc), 1);
    assert_eq!(k.get(Field::EthDst), 2);
    assert_eq!(k.get(Field::EthType), 0x0800);
    assert_eq!(k.get(Field::IpSrc), 0x0a000001);
    assert_eq!(k.get(Field::IpDst), 0x0a000002);
    assert_eq!(k.get(Field::IpProto), 6);
    assert_eq!(k.get(Field::IpTtl), 64);
    assert_eq!(k.get(Field::IpFrag), 0);
    assert_eq!(k.get(Field::TpSrc), 1234);
    assert_eq!(k.get(Field::TpDst), 80);
    assert_eq!(k.get(Field::TcpFlags), 0x002);
    assert_eq!(lay, Layout { l3: Some(14), l4: Some(34), vlans: 0, proto: 6, ipv6: false, ..Layout::default() });
}

#[test]
fn udp_icmp_arp_golden() {
    let (k, _) = parse(&udp_packet(), 1);
    assert_eq!(
        (k.get(Field::IpProto), k.get(Field::TpSrc), k.get(Field::TpDst), k.get(Field::IpTtl)),
        (17, 5353, 53, 5)
    );
    let (k, _) = parse(&icmp_packet(), 1);
    assert_eq!((k.get(Field::IpProto), k.get(Field::IcmpType), k.get(Field::IcmpCode)), (1, 8, 0));
    let (k, lay) = parse(&arp_packet(), 2);
    assert_eq!(k.get(Field::EthType), 0x0806);
    assert_eq!(k.get(Field::ArpOp), 1);
    assert_eq!(k.get(Field::ArpSpa), 0x0a000001);
    assert_eq!(k.get(Field::ArpTpa), 0x0a000009);
    assert_eq!(k.get(Field::ArpSha), 1);
    assert_eq!(lay.l3, Some(14));
}

#[test]
fn vlan_and_qinq_golden() {
    let p = with_tag(tcp_packet(), 0x8100, 0x2005); // pcp 1, vid 5
    let (k, lay) = parse(&p, 1);
    assert_eq!(k.get(Field::VlanTci), 0x3005);
    assert_eq!(k.get(Field::EthType), 0x0800);
    assert_eq!(k.get(Field::TpDst), 80);
    assert_eq!(lay, Layout { l3: Some(18), l4: Some(38), vlans: 1, proto: 6, ipv6: false, ..Layout::default() });
    let q = with_tag(p, 0x88a8, 0x0064);
    let (k, lay) = parse(&q, 1);
    assert_eq!(k.get(Field::VlanTci), 0x1064);
    assert_eq!(k.get(Field::VlanTciInner), 0x3005);
    assert_eq!(k.get(Field::TpDst), 80);
    assert_eq!(lay.vlans, 2);
}

#[test]
fn ipv4_options_and_fragments() {
    // Insert 4 bytes of options (NOP x4) and bump IHL to 6.
    let mut p = tcp_packet();
    p.splice(34..34, [1u8, 1, 1, 1]);
    p[14] = 0x46;
    let tl = u16::from_be_bytes([p[16], p[17]]) + 4;
    p[16..18].copy_from_slice(&tl.to_be_bytes());
    let (k, lay) = parse(&p, 1);
    assert_eq!(k.get(Field::TpDst), 80);
    assert_eq!(lay.l4, Some(38));
    // First fragment (MF set): L4 parsed, frag=first.
    let mut f = tcp_packet();
    f[20] = 0x20;
    let (k, _) = parse(&f, 1);
    assert_eq!(k.get(Field::IpFrag), 1);
    assert_eq!(k.get(Field::TpDst), 80);
    // Later fragment: no L4.
    f[21] = 0x10;
    let (k, lay) = parse(&f, 1);
    assert_eq!(k.get(Field::IpFrag), 3);
    assert_eq!(k.get(Field::TpDst), 0);
    assert_eq!(lay.l4, None);
}

#[test]
fn malformed_yields_what_parsed() {
    // Bad IHL: dl_type kept, no L3 fields.
    let mut p = tcp_packet();
    p[14] = 0x44;
    let (k, lay) = parse(&p, 1);
    assert_eq!(k.get(Field::EthType), 0x0800);
    assert_eq!(k.get(Field::IpSrc), 0);
    assert_eq!(lay.l3, None);
    // 802.3 length field.
    let mut l = tcp_packet();
    l[12] = 0;
    l[13] = 0x40;
    assert_eq!(parse(&l, 1).0.get(Field::EthType), 0x05ff);
}

#[test]
fn every_truncation_parses_a_prefix() {
    for pkt in [
        tcp_packet(),
        udp_packet(),
        icmp_packet(),
        arp_packet(),
        with_tag(with_tag(tcp_packet(), 0x8100, 5), 0x88a8, 6),
    ] {
        let (full, _) = parse(&pkt, 1);
        for n in 0..pkt.len() {
            let (k, _) = parse(&pkt[..n], 1);
            // Whatever parsed agrees with the full parse.
            for f in Field::all() {
                let v = k.get(f);
                assert!(v == 0 || v == full.get(f), "len {n}: {} = {v:#x} vs {:#x}", f.name(), full.get(f));
            }
            if n < ETH_HLEN {
                assert_eq!(k.get(Field::EthType), 0);
            }
        }
    }
}

/// From-scratch IPv6 L4 checksums: the segment from `lay.l4` to the end of
/// the payload the IPv6 header declares, under the RFC 8200 pseudo-header.
fn verify_checksums_v6(p: &[u8], l3: usize, lay: &Layout) {
    let Some(l4) = lay.l4 else { return };
    let end = l3 + 40 + u16::from_be_bytes([p[l3 + 4], p[l3 + 5]]) as usize;
    let mut s = p[l4..end].to_vec();
    let at = match lay.proto {
        6 => 16,
        17 => 6,
        58 => 2,
        _ => return,
    };
    let stored = u16::from_be_bytes([s[at], s[at + 1]]);
    s[at] = 0;
    s[at + 1] = 0;
    let mut all = p[l3 + 8..l3 + 40].to_vec();
    all.extend_from_slice(&(s.len() as u32).to_be_bytes());
    all.extend_from_slice(&[0, 0, 0, lay.proto]);
    all.extend_from_slice(&s);
    let mut c = checksum(&all);
    if lay.proto == 17 && c == 0 {
        c = 0xffff;
    }
    assert_eq!(stored, c, "IPv6 L4 checksum proto {}", lay.proto);
}

/// From-scratch checksums (independent of the incremental code).
fn verify_checksums(p: &[u8]) {
    let (k, lay) = parse(p, 0);
    let Some(l3) = lay.l3 else { return };
    if k.get(Field::EthType) == 0x86dd {
        return verify_checksums_v6(p, l3, &lay);
    }
    if k.get(Field::EthType) != 0x0800 {
        return;
    }
    let ihl = ((p[l3] & 0xf) as usize) * 4;
    let mut h = p[l3..l3 + ihl].to_vec();
    let stored = u16::from_be_bytes([h[10], h[11]]);
    h[10] = 0;
    h[11] = 0;
    assert_eq!(stored, checksum(&h), "IPv4 header checksum");
    let Some(l4) = lay.l4 else { return };
    let total = u16::from_be_bytes([p[l3 + 2], p[l3 + 3]]) as usize;
    let seg = &p[l4..l3 + total];
    let proto = p[l3 + 9];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p[l3 + 12..l3 + 20]);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    let mut s = seg.to_vec();
    match proto {
        6 | 17 => {
            let at = if proto == 6 { 16 } else { 6 };
            let stored = u16::from_be_bytes([s[at], s[at + 1]]);
            if proto == 17 && stored == 0 {
                return;
            }
            s[at] = 0;
            s[at + 1] = 0;
            let mut all = pseudo;
            all.extend_from_slice(&s);
            let mut c = checksum(&all);
            if proto == 17 && c == 0 {
                c = 0xffff;
            }
            assert_eq!(stored, c, "L4 checksum proto {proto}");
        }
        1 => {
            let stored = u16::from_be_bytes([s[2], s[3]]);
            s[2] = 0;
            s[3] = 0;
            assert_eq!(stored, checksum(&s), "ICMP checksum");
        }
        _ => {}
    }
}

#[test]
fn builder_packets_have_valid_checksums() {
    for p in [tcp_packet(), udp_packet(), icmp_packet()] {
        verify_checksums(&p);
    }
}

#[test]
fn rewrites_keep_checksums_exact() {
    for base in [tcp_packet(), udp_packet(), icmp_packet(), with_tag(tcp_packet(), 0x8100, 7)] {
        let mut p = base.clone();
        let (_, mut lay) = parse(&p, 0);
        set_ipv4_src(&mut p, &lay, 0xc0a80a0b);
        verify_checksums(&p);
        set_ipv4_dst(&mut p, &lay, 0x08080808);
        verify_checksums(&p);
        set_ipv4_ttl(&mut p, &lay, 3);
        verify_checksums(&p);
        set_ipv4_tos(&mut p, &lay, 0xb8, 0xfc);
        verify_checksums(&p);
        set_l4_src(&mut p, &lay, 40000);
        set_l4_dst(&mut p, &lay, 443);
        verify_checksums(&p);
        set_icmp(&mut p, &lay, Some(0), Some(3));
        verify_checksums(&p);
        push_vlan(&mut p, &mut lay, 0x100a);
        assert_eq!(parse(&p, 0).1, lay);
        set_ipv4_dst(&mut p, &lay, 0x01020304);
        verify_checksums(&p);
        pop_vlan(&mut p, &mut lay);
        assert_eq!(parse(&p, 0).1, lay);
        verify_checksums(&p);
        let (k, _) = parse(&p, 0);
        assert_eq!(k.get(Field::IpDst), 0x01020304);
        assert_eq!(k.get(Field::IpTtl), 3);
    }
}

/// A TCP/IPv6 frame with a hop-by-hop header and a first-fragment header
/// before TCP, built by hand.
fn ipv6_ext_packet(frag_word: u16) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x86, 0xdd];
    p.extend_from_slice(&[0x6a, 0x81, 0x23, 0x45]); // version 6, tclass 0xa8, label 0x12345
    p.extend_from_slice(&(8u16 + 8 + 20).to_be_bytes());
    p.extend_from_slice(&[0, 17]); // next: hop-by-hop; hop limit 17
    p.extend_from_slice(&(0x2001_0db8u128 << 96 | 1).to_be_bytes());
    p.extend_from_slice(&(0xfe80u128 << 112 | 2).to_be_bytes());
    p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop: next fragment, PadN
    p.extend_from_slice(&[6, 0]);
    p.extend_from_slice(&frag_word.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 9]);
    let mut tcp = [0x30, 0x39, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x12, 0xff, 0xff, 0, 0, 0, 0];
    // RFC 8200 pseudo-header checksum, written out here.
    let mut all = p[14 + 8..14 + 40].to_vec();
    all.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
    all.extend_from_slice(&tcp);
    tcp[16..18].copy_from_slice(&checksum(&all).to_be_bytes());
    p.extend_from_slice(&tcp);
    p
}

#[test]
fn ipv6_udp_and_icmpv6_golden_from_etherparse() {
    let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let b = PacketBuilder::ethernet2(SRC, DST).ipv6(src, dst, 33).udp(5353, 53);
    let mut v = Vec::new();
    b.write(&mut v, &[7u8; 13]).unwrap();
    let (k, lay) = parse(&v, 2);
    assert_eq!(k.get_wide(Field::Ipv6SrcHi), u128::from_be_bytes(src));
    assert_eq!(k.get_wide(Field::Ipv6DstHi), u128::from_be_bytes(dst));
    assert_eq!(
        (k.get(Field::IpProto), k.get(Field::IpTtl), k.get(Field::TpSrc), k.get(Field::TpDst)),
        (17, 33, 5353, 53)
    );
    assert_eq!(lay, Layout { l3: Some(14), l4: Some(54), vlans: 0, proto: 17, ipv6: true, ..Layout::default() });
    verify_checksums(&v);
    // kairo's emitter writes the same bytes for the same key.
    assert_eq!(crate::emit::frame(&k, &[7u8; 13]), v);
    let b = PacketBuilder::ethernet2(SRC, DST).ipv6(src, dst, 64).icmpv6_echo_request(1, 2);
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    let (k, _) = parse(&v, 2);
    assert_eq!((k.get(Field::IpProto), k.get(Field::Icmpv6Type), k.get(Field::Icmpv6Code)), (58, 128, 0));
    verify_checksums(&v);
}

#[test]
fn ipv6_extension_headers_and_fragments_golden() {
    use kairo_flow::parse::{FRAG_ANY, FRAG_LATER};
    // First fragment (offset 0, M set): L4 parsed.
    let (k, lay) = parse(&ipv6_ext_packet(1), 4);
    assert_eq!(k.get(Field::EthType), 0x86dd);
    assert_eq!(k.get_wide(Field::Ipv6SrcHi), 0x2001_0db8u128 << 96 | 1);
    assert_eq!(k.get_wide(Field::Ipv6DstHi), 0xfe80u128 << 112 | 2);
    assert_eq!((k.get(Field::IpDscp), k.get(Field::IpEcn), k.get(Field::Ipv6Label)), (0x2a, 0, 0x12345));
    assert_eq!((k.get(Field::IpTtl), k.get(Field::IpProto), k.get(Field::IpFrag)), (17, 6, FRAG_ANY));
    assert_eq!((k.get(Field::TpSrc), k.get(Field::TpDst), k.get(Field::TcpFlags)), (12345, 80, 0x12));
    assert_eq!(lay, Layout { l3: Some(14), l4: Some(70), vlans: 0, proto: 6, ipv6: true, ..Layout::default() });
    // A later fragment: no L4.
    let (k, lay) = parse(&ipv6_ext_packet(8 << 3), 4);
    assert_eq!((k.get(Field::IpProto), k.get(Field::IpFrag), k.get(Field::TpDst)), (6, FRAG_ANY | FRAG_LATER, 0));
    assert_eq!(lay.l4, None);
    // Cut inside the fragment header: the L3 fields stand, the walk stops there.
    let mut cut = ipv6_ext_packet(1);
    cut.truncate(14 + 40 + 8 + 4);
    let (k, lay) = parse(&cut, 4);
    assert_eq!((k.get(Field::IpProto), k.get(Field::TpDst), lay.l4), (44, 0, None));
    assert_eq!(k.get(Field::IpTtl), 17);
}

#[test]
fn neighbour_discovery_golden() {
    use kairo_flow::FlowKey;
    let mut k = FlowKey::ZERO;
    k.set(Field::EthType, 0x86dd);
    k.set(Field::IpProto, 58);
    k.set(Field::IpTtl, 255);
    k.set(Field::Icmpv6Type, 135);
    k.set_wide(Field::NdTargetHi, 0xfe80u128 << 112 | 9);
    k.set(Field::NdSll, 0x0000_0000_0042);
    let f = crate::emit::frame(&k, &[]);
    assert_eq!(f.len(), 14 + 40 + 32);
    let (back, lay) = parse(&f, 0);
    assert_eq!(back, k);
    verify_checksums(&f);
    // A zero-length option makes the message malformed: ND fields zero, type and code kept.
    let mut bad = f.clone();
    bad[14 + 40 + 25] = 0;
    let (b, _) = parse(&bad, 0);
    assert_eq!((b.get(Field::Icmpv6Type), b.get_wide(Field::NdTargetHi), b.get(Field::NdSll)), (135, 0, 0));
    // Rewrites keep the ICMPv6 checksum.
    let mut p = f.clone();
    set_nd(&mut p, &lay, Some(0x2001_0db8u128 << 96 | 5), Some(0x0a0b_0c0d_0e0f), Some(1));
    verify_checksums(&p);
    let (r, _) = parse(&p, 0);
    assert_eq!((r.get_wide(Field::NdTargetHi), r.get(Field::NdSll)), (0x2001_0db8u128 << 96 | 5, 0x0a0b_0c0d_0e0f));
    assert_eq!(r.get(Field::NdTll), 0, "no TLL option was added");
}

#[test]
fn mpls_golden_push_pop_set() {
    // One label (label 5, tc 2, bottom, ttl 64) over an IPv4 packet.
    let ip = tcp_packet();
    let mut p = ip[..12].to_vec();
    p.extend_from_slice(&[0x88, 0x47, 0x00, 0x00, 0x55, 0x40]);
    p.extend_from_slice(&ip[14..]);
    let (k, lay) = parse(&p, 2);
    assert_eq!(k.get(Field::EthType), 0x8847);
    assert_eq!((k.get(Field::MplsLabel), k.get(Field::MplsTc), k.get(Field::MplsBos)), (5, 2, 1));
    assert_eq!((k.get(Field::MplsTtl), k.get(Field::IpSrc), lay.l3), (64, 0, None));
    // Pop to IPv4: the packet under the label, byte for byte.
    let mut q = p.clone();
    let mut l = lay;
    pop_mpls(&mut q, &mut l, 0x0800);
    assert_eq!(q, ip);
    assert_eq!(l, parse(&ip, 2).1);
    // Push it back with the same entry: the labelled packet again.
    push_mpls(&mut q, &mut l, 0x5540, 0x8847);
    assert_eq!(q, p);
    set_mpls(&mut q, &l, 0x7_1e09);
    assert_eq!(&q[14..18], &[0x00, 0x07, 0x1e, 0x09]);
    // Under a VLAN tag, two labels, the first not the bottom.
    let mut t = with_tag(p.clone(), 0x8100, 9);
    t.splice(18..18, [0x00, 0x00, 0x30, 0x05]);
    let (k2, l2) = parse(&t, 2);
    assert_eq!((k2.get(Field::MplsLabel), k2.get(Field::MplsBos), k2.get(Field::MplsTtl)), (3, 0, 5));
    assert_eq!(k2.mpls_lse(1), 0x5540);
    assert_eq!(l2.vlans, 1);
    // A truncated second entry ends the stack.
    let (k3, _) = parse(&t[..24], 2);
    assert_eq!((k3.get(Field::MplsLabel), k3.mpls_lse(1)), (3, 0));
}

#[test]
fn ipv6_rewrites_keep_checksums_exact() {
    for base in [ipv6_ext_packet(1), with_tag(ipv6_ext_packet(1), 0x8100, 7)] {
        let mut p = base.clone();
        let (_, lay) = parse(&p, 0);
        set_ipv6_src(&mut p, &lay, 0x2001_0db8_ffff_0000_0000_0000_0000_0007);
        verify_checksums(&p);
        set_ipv6_dst(&mut p, &lay, 1);
        verify_checksums(&p);
        set_ipv6_tclass(&mut p, &lay, 0x03, 0x03);
        set_ipv6_label(&mut p, &lay, 0xfedcb);
        set_ipv6_hlimit(&mut p, &lay, 3);
        set_l4_dst(&mut p, &lay, 8443);
        verify_checksums(&p);
        // IPv4 rewrites leave an IPv6 packet alone.
        let before = p.clone();
        set_ipv4_src(&mut p, &lay, 0x01020304);
        set_ipv4_ttl(&mut p, &lay, 1);
        set_icmp(&mut p, &lay, Some(1), Some(1));
        assert_eq!(p, before);
        let (k, _) = parse(&p, 0);
        assert_eq!(k.get_wide(Field::Ipv6SrcHi), 0x2001_0db8_ffff_0000_0000_0000_0000_0007);
        assert_eq!(k.get_wide(Field::Ipv6DstHi), 1);
        assert_eq!((k.get(Field::IpDscp), k.get(Field::IpEcn), k.get(Field::Ipv6Label)), (0x2a, 3, 0xfedcb));
        assert_eq!((k.get(Field::IpTtl), k.get(Field::TpDst)), (3, 8443));
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn parse_and_rewrite_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120), v in any::<u32>()) {
            let (_, mut lay) = parse(&bytes, 1);
            let mut b = bytes.clone();
            set_ipv4_src(&mut b, &lay, v);
            set_ipv4_ttl(&mut b, &lay, v as u8);
            set_l4_dst(&mut b, &lay, v as u16);
            set_icmp(&mut b, &lay, Some(1), None);
            set_arp(&mut b, &lay, Some(2), Some(1), Some(v), Some(2), Some(v));
            set_ipv6_src(&mut b, &lay, u128::from(v));
            set_ipv6_tclass(&mut b, &lay, v as u8, 0xff);
            set_ipv6_label(&mut b, &lay, v);
            set_ipv6_hlimit(&mut b, &lay, v as u8);
            set_icmpv6(&mut b, &lay, Some(v as u8), None);
            set_nd(&mut b, &lay, Some(u128::from(v)), Some(1), Some(2));
            push_vlan(&mut b, &mut lay, v as u16);
            pop_vlan(&mut b, &mut lay);
            pop_vlan(&mut b, &mut lay);
            set_mpls(&mut b, &lay, v);
            pop_mpls(&mut b, &mut lay, v as u16);
            push_mpls(&mut b, &mut lay, v, 0x8847);
            pop_mpls(&mut b, &mut lay, 0x0800);
        }

        #[test]
        fn mutated_valid_packets_never_panic(idx in 0usize..80, byte in any::<u8>(), cut in 0usize..90) {
            for mut p in [tcp_packet(), udp_packet(), icmp_packet(), arp_packet(), ipv6_ext_packet(1)] {
                if idx < p.len() { p[idx] = byte; }
                p.truncate(cut.min(p.len()));
                let _ = parse(&p, 1);
            }
        }
    }

    /// Keys of well-formed packets: what `parse` could give for a real frame.
    fn packet_key() -> impl Strategy<Value = kairo_flow::FlowKey> {
        (
            any::<u64>(),
            any::<u64>(),
            prop_oneof![Just(0u64), 0u64..0x1000, 0u64..0x1000],
            prop_oneof![Just(0u64), 0u64..0x1000],
            prop_oneof![Just(6u64), Just(17), Just(1), Just(132), Just(47)],
            any::<(u32, u32, u16, u16, u8, u8)>(),
            0u64..3,
            prop_oneof![Just(0u8), Just(1), Just(2), Just(3)],
            (any::<u128>(), any::<u128>(), any::<u128>(), 0u32..0x10_0000, 0u8..4),
        )
            .prop_map(|(dst, src, outer, inner, proto, (s, d, sp, dp, tos, ttl), frag, l3, v6)| {
                let arp = l3 == 1;
                let (s6, d6, target, label, nd) = v6;
                let mut k = kairo_flow::FlowKey::ZERO;
                k.set(Field::InPort, 3);
                k.set(Field::EthDst, dst & 0xffff_ffff_ffff);
                k.set(Field::EthSrc, src & 0xffff_ffff_ffff);
                if outer != 0 {
                    k.set(Field::VlanTci, outer | 0x1000 | ((dst & 7) << 13));
                    if inner != 0 {
                        k.set(Field::VlanTciInner, inner | 0x1000);
                    }
                }
                if l3 == 3 {
                    // MPLS: one to three entries (the last the bottom of the
                    // stack unless there are three), nothing under them.
                    k.set(Field::EthType, if tos & 1 == 0 { 0x8847 } else { 0x8848 });
                    let n = 1 + usize::from(ttl % 3);
                    let words = [s, d, u32::from(sp) << 16 | u32::from(dp)];
                    for (i, w) in words.iter().take(n).enumerate() {
                        let bos = u32::from(i + 1 == n && (n < 3 || ttl & 8 != 0));
                        k.set_mpls_lse(i, (w & !0x100) | bos << 8);
                    }
                    return k;
                }
                if arp {
                    k.set(Field::EthType, 0x0806);
                    k.set(Field::ArpOp, 1 + (tos as u64 & 1));
                    k.set(Field::ArpSpa, s as u64);
                    k.set(Field::ArpTpa, d as u64);
                    k.set(Field::ArpSha, src & 0xffff_ffff_ffff);
                    k.set(Field::ArpTha, dst & 0xffff_ffff_ffff);
                    return k;
                }
                let ipv6 = l3 == 2;
                let proto = if ipv6 && proto == 1 { 58 } else { proto };
                if ipv6 {
                    k.set(Field::EthType, 0x86dd);
                    k.set_wide(Field::Ipv6SrcHi, s6);
                    k.set_wide(Field::Ipv6DstHi, d6);
                    k.set(Field::Ipv6Label, u64::from(label));
                } else {
                    k.set(Field::EthType, 0x0800);
                    k.set(Field::IpSrc, s as u64);
                    k.set(Field::IpDst, d as u64);
                }
                k.set(Field::IpProto, proto);
                k.set(Field::IpDscp, (tos >> 2) as u64);
                k.set(Field::IpEcn, (tos & 3) as u64);
                k.set(Field::IpTtl, ttl as u64);
                // frag: 0 none, 1 first fragment, 2 later fragment (no L4 fields).
                k.set(Field::IpFrag, [0, 1, 3][frag as usize]);
                if frag == 2 {
                    return k;
                }
                match proto {
                    6 | 17 | 132 => {
                        k.set(Field::TpSrc, sp as u64);
                        k.set(Field::TpDst, dp as u64);
                        if proto == 6 {
                            k.set(Field::TcpFlags, (sp & 0x0fff) as u64);
                        }
                    }
                    1 => {
                        k.set(Field::IcmpType, (sp & 0xff) as u64);
                        k.set(Field::IcmpCode, (dp & 0xff) as u64);
                    }
                    58 if nd >= 2 => {
                        // Neighbour discovery: a solicitation with its SLL or an
                        // advertisement with its TLL (zero: no option).
                        let ty = if nd == 2 { 135 } else { 136 };
                        k.set(Field::Icmpv6Type, ty);
                        k.set_wide(Field::NdTargetHi, target);
                        let lla = src & 0xffff_ffff_ffff;
                        k.set(if ty == 135 { Field::NdSll } else { Field::NdTll }, if sp & 1 == 0 { lla } else { 0 });
                    }
                    58 => {
                        k.set(Field::Icmpv6Type, (sp & 0xff) as u64);
                        k.set(Field::Icmpv6Code, (dp & 0xff) as u64);
                    }
                    _ => {}
                }
                k
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        /// emit is parse's inverse on well-formed keys, with every checksum right.
        #[test]
        fn emitted_frames_parse_back_with_valid_checksums(k in packet_key(), len in 0usize..64) {
            // Bytes after a neighbour discovery message would be read as its options.
            let nd = k.get(Field::IpProto) == 58 && matches!(k.get(Field::Icmpv6Type), 135 | 136);
            let len = if nd { 0 } else { len };
            let payload: Vec<u8> = (0..len as u8).collect();
            let f = crate::emit::frame(&k, &payload);
            let (back, _) = parse(&f, 3);
            prop_assert_eq!(back, k, "frame {:02x?}", f);
            verify_checksums(&f);
        }
    }
}

#[test]
fn set_tcp_seq_keeps_the_checksum_right() {
    let k =
        kairo_flow::parse_key("in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=5,tp_dst=80,nw_ttl=64").unwrap();
    let mut f = crate::emit::frame(&k, &[1, 2, 3]);
    let lay = crate::parse(&f, 1).1;
    crate::rewrite::set_tcp_seq(&mut f, &lay, 0xdead_beef, 0x1234_5678, 4096);
    let l4 = lay.l4.unwrap();
    assert_eq!(&f[l4 + 4..l4 + 8], &0xdead_beefu32.to_be_bytes());
    assert_eq!(&f[l4 + 14..l4 + 16], &4096u16.to_be_bytes());
    // The one's complement sum over pseudo-header and segment is all ones.
    let mut acc = crate::sum(0, &f[26..34]);
    acc = acc.wrapping_add(6).wrapping_add((f.len() - l4) as u32);
    assert_eq!(crate::fold(crate::sum(acc, &f[l4..])), 0xffff);
}

/// Offloads ([`crate::offload`]): partial checksums through rewrites and
/// software segmentation, checked from scratch by `verify_checksums` and
/// against the super-frame's payload.
mod offloads {
    use super::*;
    use crate::offload::*;
    use proptest::prelude::*;

    /// A TCP super-frame (IPv4 or IPv6, optionally VLAN-tagged) with
    /// `len` payload bytes and the given flags, its checksum complete.
    fn big_tcp(v6: bool, len: usize, flags: u8, tagged: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(SRC, DST);
        let b = if v6 {
            b.ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let b = b.tcp(40000, 5201, 0xffff_f000, 512);
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut v = Vec::with_capacity(b.size(len));
        b.write(&mut v, &payload).unwrap();
        let (_, lay) = parse(&v, 0);
        let l4 = lay.l4.unwrap();
        v[l4 + 13] = flags;
        // The flags changed: recompute the checksum from scratch.
        v[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let mut pseudo = if v6 { v[22..54].to_vec() } else { v[26..34].to_vec() };
        pseudo.extend_from_slice(&((v.len() - l4) as u32).to_be_bytes()[if v6 { 0 } else { 2 }..]);
        if v6 {
            pseudo.extend_from_slice(&[0, 0, 0, 6]);
        } else {
            pseudo.extend_from_slice(&[0, 6]);
            // IPv4's pseudo-header: addresses, zero, protocol, length.
            let n = pseudo.len();
            pseudo.swap(n - 4, n - 2);
            pseudo.swap(n - 3, n - 1);
        }
        pseudo.extend_from_slice(&v[l4..]);
        let c = checksum(&pseudo);
        v[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        if tagged {
            v = with_tag(v, 0x8100, 0x0005);
        }
        verify_checksums(&v);
        v
    }

    /// Leaves the frame's TCP/UDP checksum as a sender with checksum
    /// offload does (the pseudo-header sum); its layout says so.
    fn as_partial(f: &mut [u8]) -> Layout {
        let (_, mut lay) = parse(f, 0);
        let (l3, l4) = (lay.l3.unwrap(), lay.l4.unwrap());
        let at = if lay.proto == 6 { 16 } else { 6 };
        // The pseudo-header sum, from the addresses, protocol and length.
        let mut acc = if lay.ipv6 { sum(0, &f[l3 + 8..l3 + 40]) } else { sum(0, &f[l3 + 12..l3 + 20]) };
        acc = sum(acc, &[0, lay.proto]);
        acc = sum(acc, &((f.len() - l4) as u32).to_be_bytes());
        f[l4 + at..l4 + at + 2].copy_from_slice(&fold(acc).to_be_bytes());
        lay.offload.partial = true;
        lay
    }

    #[test]
    fn vnet_header_round_trips_and_lies_are_refused() {
        let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4, hdr_len: 54, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        assert_eq!(VnetHdr::read(&h.bytes()), Some(h));
        assert_eq!(VnetHdr::read(&[0; 9]), None);
        let mut f = big_tcp(false, 5000, 0x18, false);
        let lay = parse(&f, 0).1;
        assert_eq!(h.settle(&mut f, &lay).map(|o| o.gso.map(|g| g.kind)), Ok(Some(GsoKind::Tcp4)));
        let past = VnetHdr { csum_start: 5040, ..h };
        assert!(past.settle(&mut f, &lay).unwrap_err().contains("past the end"));
        let v6 = VnetHdr { gso_type: GSO_TCPV6, ..h };
        assert!(v6.settle(&mut f, &lay).is_err(), "a TCPv6 header on an IPv4 frame");
        let ufo = VnetHdr { gso_type: GSO_UDP, ..h };
        assert!(ufo.settle(&mut f, &lay).unwrap_err().contains("UFO"));
        let zero = VnetHdr { gso_size: 0, ..h };
        assert!(zero.settle(&mut f, &lay).is_err());
    }

    #[test]
    fn a_partial_checksum_elsewhere_is_finished_on_arrival() {
        // ICMP with its checksum left partial (start at ICMP, field at 2):
        // not one kairo keeps partial, so settle finishes it.
        let mut f = icmp_packet();
        let lay = parse(&f, 0).1;
        let l4 = lay.l4.unwrap();
        f[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
        let h = VnetHdr { flags: F_NEEDS_CSUM, csum_start: l4 as u16, csum_offset: 2, ..VnetHdr::default() };
        assert_eq!(h.settle(&mut f, &lay), Ok(Offload::default()));
        verify_checksums(&f);
    }

    #[test]
    fn ecn_super_frames_keep_the_flag_and_segment_as_the_kernel() {
        let mut f = big_tcp(false, 3000, 0x80 | 0x18 | 0x01, false);
        let mut lay = as_partial(&mut f);
        lay.offload.gso = Some(Gso { kind: GsoKind::Tcp4, size: 1000, ecn: true });
        let h = VnetHdr::for_frame(&f, &lay);
        assert_eq!(h.gso_type, GSO_TCPV4 | GSO_ECN);
        assert_eq!((h.flags, h.csum_start, h.csum_offset, h.hdr_len), (F_NEEDS_CSUM, 34, 16, 54));
        let mut segs = Vec::new();
        finish(&mut f, &mut lay, &mut Vec::new(), &mut |s| segs.push(s.to_vec()));
        let flags: Vec<u8> = segs.iter().map(|s| s[34 + 13]).collect();
        assert_eq!(flags, vec![0x80 | 0x10, 0x10, 0x10 | 0x08 | 0x01], "CWR first, FIN and PSH last");
    }

    fn rewrites(f: &mut Vec<u8>, lay: &mut Layout, v: u32, vlan: bool) {
        if lay.ipv6 {
            set_ipv6_src(f, lay, u128::from(v) << 64 | 0x77);
            set_ipv6_dst(f, lay, u128::from(v.rotate_left(5)));
            set_ipv6_hlimit(f, lay, v as u8);
            set_ipv6_tclass(f, lay, (v >> 8) as u8, 0xff);
        } else {
            set_ipv4_src(f, lay, v);
            set_ipv4_dst(f, lay, v.rotate_left(7));
            set_ipv4_ttl(f, lay, v as u8);
            set_ipv4_tos(f, lay, (v >> 8) as u8, 0xfc);
        }
        set_l4_src(f, lay, (v >> 3) as u16);
        set_l4_dst(f, lay, (v >> 17) as u16);
        if vlan {
            push_vlan(f, lay, 0x0123);
            set_l4_dst(f, lay, 8080);
            pop_vlan(f, lay);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn sum_fast_is_the_rfc1071_sum(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(sum_fast(&data), fold(sum(0, &data)));
        }

        /// A frame whose checksum was left partial, rewritten, then
        /// finished, has the checksum a full recomputation gives.
        #[test]
        fn partial_checksums_survive_rewrites(v6 in any::<bool>(), udp in any::<bool>(), tagged in any::<bool>(),
                                              len in 0usize..3000, v in any::<u32>(), vlan in any::<bool>()) {
            let mut f = if udp && !v6 { udp_packet() } else { big_tcp(v6, len, 0x18, false) };
            if tagged {
                f = with_tag(f, 0x8100, 9);
            }
            let mut lay = as_partial(&mut f);
            rewrites(&mut f, &mut lay, v, vlan);
            prop_assert!(lay.offload.partial);
            finish_csum(&mut f, &mut lay);
            prop_assert!(!lay.offload.partial);
            verify_checksums(&f);
        }

        /// Software segmentation: every segment's lengths and checksums are
        /// right, the payload is the super-frame's in order, sequence
        /// numbers follow it, and no segment carries more than the MSS.
        #[test]
        fn segments_are_what_the_super_frame_carried(v6 in any::<bool>(), len in 1usize..20000, mss in 88u16..1500,
                                                     tagged in any::<bool>(), partial in any::<bool>(), v in any::<u32>()) {
            let mut f = big_tcp(v6, len, 0x18, tagged);
            let mut lay = if partial { as_partial(&mut f) } else { parse(&f, 0).1 };
            let kind = if v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 };
            lay.offload.gso = Some(Gso { kind, size: mss, ecn: false });
            rewrites(&mut f, &mut lay, v, false);
            let l4 = lay.l4.unwrap();
            let payload = f[l4 + 20..].to_vec();
            let seq0 = u32::from_be_bytes([f[l4 + 4], f[l4 + 5], f[l4 + 6], f[l4 + 7]]);
            let mut segs = Vec::new();
            let mut scratch = Vec::new();
            finish(&mut f, &mut lay, &mut scratch, &mut |s| segs.push(s.to_vec()));
            prop_assert_eq!(segs.len(), len.div_ceil(usize::from(mss)));
            let mut got = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                verify_checksums(s);
                let (k, sl) = parse(s, 0);
                prop_assert_eq!(sl.l4, Some(l4));
                let data = &s[l4 + 20..];
                prop_assert!(data.len() <= usize::from(mss));
                let seq = u32::from_be_bytes([s[l4 + 4], s[l4 + 5], s[l4 + 6], s[l4 + 7]]);
                prop_assert_eq!(seq, seq0.wrapping_add(got.len() as u32));
                prop_assert_eq!(k.get(Field::TcpFlags) & 0x08 != 0, i + 1 == segs.len(), "PSH on the last only");
                got.extend_from_slice(data);
            }
            prop_assert_eq!(got, payload);
        }

        /// UDP segmentation (UDP_SEGMENT): one UDP header per segment,
        /// lengths and checksums right.
        #[test]
        fn udp_segments_carry_their_own_headers(len in 1usize..9000, size in 100u16..1400) {
            let b = PacketBuilder::ethernet2(SRC, DST).ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64).udp(4433, 443);
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut f = Vec::with_capacity(b.size(len));
            b.write(&mut f, &payload).unwrap();
            let mut lay = as_partial(&mut f);
            lay.offload.gso = Some(Gso { kind: GsoKind::UdpL4, size, ecn: false });
            let mut got = Vec::new();
            let mut n = 0;
            finish(&mut f, &mut lay, &mut Vec::new(), &mut |s| {
                verify_checksums(s);
                got.extend_from_slice(&s[42..]);
                n += 1;
            });
            prop_assert_eq!(n, len.div_ceil(usize::from(size)));
            prop_assert_eq!(got, payload);
        }

        /// Headers that lie never make settle, for_frame or finish panic
        /// or read out of bounds.
        #[test]
        fn lying_headers_never_panic(hdr in proptest::array::uniform10(any::<u8>()),
                                     bytes in proptest::collection::vec(any::<u8>(), 0..200), tcp in any::<bool>()) {
            let mut f = if tcp { big_tcp(false, 100, 0x10, false) } else { bytes };
            let (_, mut lay) = parse(&f, 0);
            let h = VnetHdr::read(&hdr).unwrap();
            if let Ok(o) = h.settle(&mut f, &lay) {
                lay.offload = o;
                let _ = VnetHdr::for_frame(&f, &lay);
                finish(&mut f, &mut lay, &mut Vec::new(), &mut |_| {});
            }
        }
    }
}

/// The pseudo-header sum (folded, not complemented) a Linux sender leaves
/// in a partial checksum, computed from scratch.
fn pseudo_from_scratch(p: &[u8], l3: usize, l4: usize, proto: u8, v6: bool) -> u16 {
    let mut all = if v6 { p[l3 + 8..l3 + 40].to_vec() } else { p[l3 + 12..l3 + 20].to_vec() };
    all.extend_from_slice(&[0, proto]);
    all.extend_from_slice(&((p.len() - l4) as u16).to_be_bytes());
    !checksum(&all)
}

/// `p` with its transport checksum (at `l4 + at`) left partial.
fn left_partial(mut p: Vec<u8>, l3: usize, l4: usize, proto: u8, v6: bool) -> Vec<u8> {
    let at = l4 + if proto == 6 { 16 } else { 6 };
    let ps = pseudo_from_scratch(&p, l3, l4, proto, v6);
    p[at..at + 2].copy_from_slice(&ps.to_be_bytes());
    p
}

#[test]
fn a_checksum_left_partial_is_told_from_a_whole_or_a_wrong_one() {
    use crate::offload::{partial_left, VnetHdr, F_NEEDS_CSUM};
    // Whole checksums owe nothing; nor does UDP without one, nor ICMP.
    for p in [tcp_packet(), udp_packet(), icmp_packet(), arp_packet()] {
        assert_eq!(partial_left(&p), None);
    }
    let mut no_sum = udp_packet();
    no_sum[40..42].copy_from_slice(&[0, 0]);
    assert_eq!(partial_left(&no_sum), None);
    // Left partial: found, and finishing it gives the right checksum.
    let want = |start: u16, off: u16| VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: start,
        csum_offset: off,
        ..VnetHdr::default()
    };
    for (p, start, off) in [
        (left_partial(tcp_packet(), 14, 34, 6, false), 34, 16),
        (left_partial(udp_packet(), 14, 34, 17, false), 34, 6),
        (left_partial(with_tag(tcp_packet(), 0x8100, 5), 18, 38, 6, false), 38, 16),
    ] {
        assert_eq!(partial_left(&p), Some(want(start, off)));
        let mut f = p.clone();
        let (_, lay) = parse(&f, 0);
        let mut lay = Layout { offload: want(start, off).settle(&mut f, &lay).expect("settles"), ..lay };
        crate::offload::finish_csum(&mut f, &mut lay);
        verify_checksums(&f);
    }
    let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let b = PacketBuilder::ethernet2(SRC, DST).ipv6(src, src, 33).udp(5353, 53);
    let mut v6 = Vec::new();
    b.write(&mut v6, &[7u8; 13]).unwrap();
    assert_eq!(partial_left(&v6), None);
    assert_eq!(partial_left(&left_partial(v6, 14, 54, 17, true)), Some(want(54, 6)));
    // A wrong checksum is left wrong; so is a partial one in a padded
    // frame (its sum would take in the padding) and in a first fragment.
    let mut wrong = tcp_packet();
    wrong[50] ^= 0x40;
    assert_eq!(partial_left(&wrong), None);
    let mut padded = left_partial(tcp_packet(), 14, 34, 6, false);
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(partial_left(&padded), None);
    let mut first_frag = left_partial(tcp_packet(), 14, 34, 6, false);
    first_frag[20] |= 0x20; // more fragments
    assert_eq!(partial_left(&first_frag), None);
    // Any prefix of a partial frame: no panic, and nothing owed (its
    // lengths no longer match).
    let p = left_partial(tcp_packet(), 14, 34, 6, false);
    for n in 0..p.len() {
        assert_eq!(partial_left(&p[..n]), None, "prefix of {n} bytes");
    }
}
