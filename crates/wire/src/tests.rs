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
    assert_eq!(lay, Layout { l3: Some(14), l4: Some(34), vlans: 0 });
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
    assert_eq!(lay, Layout { l3: Some(18), l4: Some(38), vlans: 1 });
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

/// From-scratch checksums (independent of the incremental code).
fn verify_checksums(p: &[u8]) {
    let (k, lay) = parse(p, 0);
    let Some(l3) = lay.l3 else { return };
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
            push_vlan(&mut b, &mut lay, v as u16);
            pop_vlan(&mut b, &mut lay);
            pop_vlan(&mut b, &mut lay);
        }

        #[test]
        fn mutated_valid_packets_never_panic(idx in 0usize..80, byte in any::<u8>(), cut in 0usize..90) {
            for mut p in [tcp_packet(), udp_packet(), icmp_packet(), arp_packet()] {
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
            any::<bool>(),
        )
            .prop_map(|(dst, src, outer, inner, proto, (s, d, sp, dp, tos, ttl), frag, arp)| {
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
                if arp {
                    k.set(Field::EthType, 0x0806);
                    k.set(Field::ArpOp, 1 + (tos as u64 & 1));
                    k.set(Field::ArpSpa, s as u64);
                    k.set(Field::ArpTpa, d as u64);
                    k.set(Field::ArpSha, src & 0xffff_ffff_ffff);
                    k.set(Field::ArpTha, dst & 0xffff_ffff_ffff);
                    return k;
                }
                k.set(Field::EthType, 0x0800);
                k.set(Field::IpSrc, s as u64);
                k.set(Field::IpDst, d as u64);
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
            let payload: Vec<u8> = (0..len as u8).collect();
            let f = crate::emit::frame(&k, &payload);
            let (back, _) = parse(&f, 3);
            prop_assert_eq!(back, k, "frame {:02x?}", f);
            verify_checksums(&f);
        }
    }
}
