//! Unit tests for the notation: every field form, shorthand and error.

use crate::field::*;
use crate::*;

fn m(s: &str) -> Match {
    parse_match(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn shorthands_set_type_and_proto() {
    let x = m("tcp");
    assert_eq!(x.field(Field::EthType), (0x0800, 0xffff));
    assert_eq!(x.field(Field::IpProto), (6, 0xff));
    assert_eq!(m("udp").field(Field::IpProto), (17, 0xff));
    assert_eq!(m("icmp").field(Field::IpProto), (1, 0xff));
    assert_eq!(m("arp").field(Field::EthType), (0x0806, 0xffff));
    assert_eq!(m("ipv4").field(Field::EthType), (0x0800, 0xffff));
    assert_eq!(m("dl_type=0x0800"), m("ip"));
    assert_eq!(m("eth_type=2048"), m("ip"));
}

#[test]
fn aliases_are_the_same_field() {
    assert_eq!(m("dl_dst=00:11:22:33:44:55"), m("eth_dst=00:11:22:33:44:55"));
    assert_eq!(m("ip,nw_src=10.0.0.1"), m("ip,ip_src=10.0.0.1"));
    assert_eq!(m("tcp,tp_dst=80"), m("tcp,tcp_dst=80"));
    assert_eq!(m("udp,tp_dst=53"), m("udp,udp_dst=53"));
    assert_eq!(m("ip,nw_ttl=5"), m("ip,ip_ttl=5"));
    assert_eq!(m("reg0=1"), m("NXM_NX_REG0=1"));
    assert_eq!(m("arp,arp_spa=1.2.3.4").field(Field::ArpSpa), (0x01020304, 0xffffffff));
    assert_eq!(m("icmp,icmp_type=8,icmp_code=0").field(Field::IcmpType), (8, 0xff));
}

#[test]
fn ipv4_cidr_and_dotted_masks() {
    assert_eq!(m("ip,nw_dst=10.1.2.3/8").field(Field::IpDst), (0x0a000000, 0xff000000));
    assert_eq!(m("ip,nw_dst=10.1.2.3/255.255.0.0").field(Field::IpDst), (0x0a010000, 0xffff0000));
    assert_eq!(m("ip,nw_dst=10.1.2.3/0.255.0.255").field(Field::IpDst), (0x00010003, 0x00ff00ff));
    assert_eq!(m("ip,nw_dst=1.2.3.4").field(Field::IpDst).1, 0xffffffff);
}

#[test]
fn mac_and_hex_masks() {
    let x = m("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00");
    assert_eq!(x.field(Field::EthDst), (0x010000000000, 0x010000000000));
    assert_eq!(m("reg0=0x1/0x1").field(Field::Reg0), (1, 1));
    assert_eq!(m("metadata=0x10/0xf0").field(Field::Metadata), (0x10, 0xf0));
    assert_eq!(m("tcp,tp_dst=0x50/0xfff0").field(Field::TpDst), (0x50, 0xfff0));
}

#[test]
fn vlan_views() {
    assert_eq!(m("dl_vlan=10").field(Field::VlanTci), (0x100a, 0x1fff));
    assert_eq!(m("dl_vlan=0xffff").field(Field::VlanTci), (0, 0xffff));
    assert_eq!(m("dl_vlan_pcp=3").field(Field::VlanTci), (0x7000, 0xf000));
    assert_eq!(m("vlan_vid=0x1005").field(Field::VlanTci), (0x1005, 0x1fff));
    assert_eq!(m("vlan_tci=0x1000/0x1000").field(Field::VlanTci), (0x1000, 0x1000));
    assert_eq!(m("ip,nw_tos=32").field(Field::IpDscp), (8, 0x3f));
}

#[test]
fn frag_flags_and_ct_state() {
    assert_eq!(m("ip,ip_frag=no").field(Field::IpFrag), (0, 1));
    assert_eq!(m("ip,ip_frag=later").field(Field::IpFrag), (3, 3));
    assert_eq!(m("ip,nw_frag=not_later").field(Field::IpFrag), (0, 2));
    assert_eq!(m("tcp,tcp_flags=+syn-ack").field(Field::TcpFlags), (0x002, 0x012));
    assert_eq!(m("tcp,tcp_flags=0x2/0x12").field(Field::TcpFlags), (0x002, 0x012));
    assert_eq!(m("ct_state=+trk+est").field(Field::CtState), (0x22, 0x22));
    assert_eq!(m("ct_state=+trk-new").field(Field::CtState), (0x20, 0x21));
}

#[test]
fn errors_name_the_problem() {
    let e = parse_match("ip,nw_dst=10.0.0.300").unwrap_err();
    assert!(e.to_string().contains("10.0.0.300") && e.to_string().contains("IPv4"), "{e}");
    let e = parse_match("bogus=1").unwrap_err();
    assert_eq!(e, FlowError::UnknownField { name: "bogus".into() });
    let e = parse_match("nw_dst=10.0.0.1").unwrap_err();
    assert!(matches!(e, FlowError::Prerequisite { .. }), "{e}");
    let e = parse_match("ip,tp_dst=80").unwrap_err();
    assert!(matches!(e, FlowError::Prerequisite { .. }), "{e}");
    let e = parse_match("tcp,udp").unwrap_err();
    assert!(matches!(e, FlowError::Conflict { .. }), "{e}");
    let e = parse_match("in_port=4294967296").unwrap_err();
    assert!(e.to_string().contains("32 bits"), "{e}");
    assert!(parse_match("dl_src=00:11:22").is_err());
    assert!(parse_match("ip,nw_dst=10.0.0.0/33").is_err());
    assert!(parse_match("in_port").is_err());
    assert!(parse_match("tcp,tcp_flags=+bogus").is_err());
    assert!(parse_match("ipv6,ipv6_src=::1/64/3").is_err());
    assert!(parse_match("reg0=(1").is_err());
    assert!(parse_match("dl_vlan=5000").is_err());
    assert!(parse_match("ip,nw_tos=3").is_err());
}

#[test]
fn print_round_trips() {
    for s in [
        "in_port=1,tcp,nw_dst=10.0.0.0/8,tp_dst=80",
        "arp,arp_op=1,arp_spa=10.0.0.1",
        "icmp,icmp_type=8,icmp_code=0",
        "reg3=0x5/0xf,dl_vlan=10,dl_vlan_pcp=3",
        "ip,dl_src=00:11:22:33:44:55/ff:ff:ff:00:00:00,nw_src=1.2.3.4/255.0.255.0,nw_tos=32,nw_ttl=3,nw_frag=later",
        "metadata=0x1,ct_state=+trk+est,tcp,tcp_flags=0x2/0x12",
        "dl_vlan=0xffff",
        "udp,tp_src=0x100/0xff00",
        "ipv6,ipv6_src=2001:db8::/32,ipv6_dst=fe80::1,ipv6_label=0x12345",
        "tcp6,ipv6_dst=2001:db8::/ffff:0:ffff::,tp_dst=443,nw_tos=8",
        "icmp6,icmp_type=135,icmp_code=0,nd_target=fe80::2,nd_sll=00:11:22:33:44:55",
        "icmp6,icmp_type=136,nd_target=fe80::/10,nd_tll=00:11:22:33:44:66",
        "udp6,nw_frag=first,tp_src=53",
    ] {
        let a = m(s);
        let printed = a.to_string();
        assert_eq!(m(&printed), a, "{s} -> {printed}");
    }
}

#[test]
fn megaflow_format() {
    let k = parse_key("in_port=1,tcp,nw_dst=10.0.0.1,tp_dst=80").unwrap();
    let mut mask = FlowMask::ZERO;
    for f in [Field::RecircId, Field::InPort, Field::EthType, Field::IpProto, Field::TpDst] {
        mask.exact(f);
    }
    mask.set(Field::IpDst, 0xff000000);
    assert_eq!(format_megaflow(&k, &mask), "recirc_id=0,eth,tcp,in_port=1,nw_dst=10.0.0.0/8,tp_dst=80");
}

#[test]
fn ipv6_matches_and_prerequisites() {
    let a = m("tcp6,ipv6_src=2001:db8::1/64,tp_dst=80");
    assert_eq!(a.to_string(), "tcp6,ipv6_src=2001:db8::/64,tp_dst=80");
    assert_eq!(a.field(Field::Ipv6SrcHi), (0x2001_0db8_0000_0000, u64::MAX));
    assert_eq!(a.field(Field::Ipv6SrcLo), (0, 0));
    // A mask reaching into the low half.
    let b = m("ipv6,ipv6_dst=::1:0:0:0/::ffff:ffff:0:0:0");
    assert_eq!(b.field(Field::Ipv6DstLo), (0x0001_0000_0000_0000, 0xffff_0000_0000_0000));
    assert_eq!(b.field(Field::Ipv6DstHi), (0, 0xffff));
    // Prerequisites, each named.
    for (text, needs) in [
        ("ipv6_src=::1", "ipv6"),
        ("ip,ipv6_src=::1", "ipv6"),
        ("ipv6,nw_src=1.2.3.4", "ip (dl_type=0x0800)"),
        ("icmp6,nd_target=::1", "icmp_type=135 or 136"),
        ("icmp6,icmp_type=136,nd_sll=00:00:00:00:00:01", "icmp_type=135"),
        ("icmp6,icmp_type=135,icmp_code=1,nd_target=::1", "icmp_code=0"),
        ("ipv6,tp_dst=80", "tcp, udp or sctp"),
    ] {
        let e = parse_match(text).unwrap_err().to_string();
        assert!(e.contains(needs), "{text}: {e}");
    }
    // Shared fields need either IP.
    assert!(parse_match("ipv6,nw_ttl=3,nw_proto=17").is_ok());
    assert!(parse_match("udp6,tp_dst=53").is_ok());
    // Half of a wide field is never a name, and conflicts are checked whole.
    assert!(matches!(parse_match("ipv6,ipv6_src[lo]=0x1"), Err(FlowError::UnknownField { .. })));
    assert!(matches!(parse_match("ipv6,ipv6_src=2001:db8::/32,ipv6_src=2001:db9::1"), Err(FlowError::Conflict { .. })));
    assert!(parse_match("ipv6,ipv6_src=2001:db8::/32,ipv6_src=2001:db8::1").is_ok());
    for bad in ["ipv6,ipv6_src=1.2.3.4", "ipv6,ipv6_src=::1/129", "ipv6,ipv6_src=::1/xyz", "ipv6,ipv6_label=0x100000"] {
        assert!(matches!(parse_match(bad), Err(FlowError::BadValue { .. })), "{bad}");
    }
    let k = parse_key("in_port=1,icmp6,icmp_type=135,nd_target=fe80::1,nd_sll=00:00:00:00:00:07").unwrap();
    assert_eq!(k.get_wide(Field::NdTargetHi), 0xfe80_0000_0000_0000_0000_0000_0000_0001);
    assert_eq!(k.get(Field::ArpSha), 7);
    assert_eq!(format_key(&k), "icmp6,in_port=1,nd_sll=00:00:00:00:00:07,nd_target=fe80::1,icmp_type=135");
}

#[test]
fn packet_specs_reject_masks() {
    assert!(parse_key("ip,nw_dst=10.0.0.0/8").is_err());
    let k = parse_key("in_port=2,dl_vlan=7,udp,tp_src=1").unwrap();
    assert_eq!(k.get(Field::VlanTci), 0x1007);
    assert_eq!(k.get(Field::IpProto), 17);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = parse_match(&s);
            let _ = parse_key(&s);
        }

        #[test]
        fn field_values_round_trip(idx in 0..FIELDS.len(), v in any::<u64>(), mk in any::<u64>()) {
            let f = FIELDS[idx].id;
            if matches!(f.def().fmt, field::Fmt::Frag | field::Fmt::Ipv6Hi | field::Fmt::Ipv6Lo) { return Ok(()); }
            let (v, mk) = (v & f.ones() & mk, mk & f.ones());
            // conj_id is matched exactly or not at all (not maskable).
            let mk = if f == Field::ConjId { f.ones() } else { mk };
            let v = v & mk;
            let text = parse::format_field_value(f, v, mk);
            let (v2, m2) = parse_field_value(f, &text).unwrap();
            prop_assert_eq!((v2, m2), (v, mk), "{}", text);
        }

        #[test]
        fn wide_values_round_trip(v in any::<u128>(), mk in any::<u128>(), plen in 0u32..=128, cidr in any::<bool>()) {
            let mk = if cidr { parse::prefix_mask128(plen) } else { mk };
            let v = v & mk;
            let text = parse::format_wide_value(Field::Ipv6SrcHi, v, mk);
            prop_assert_eq!(parse::parse_wide_value(Field::Ipv6SrcHi, &text).unwrap(), (v, mk), "{}", text);
            let mut a = Match::ANY;
            a.set_exact(Field::EthType, field::ETH_TYPE_IPV6);
            a.set_wide_masked(Field::Ipv6DstHi, v, mk);
            let printed = a.to_string();
            prop_assert_eq!(parse_match(&printed).unwrap(), a, "{}", printed);
        }
    }
}

#[test]
fn mpls_fields_parse_print_and_need_an_mpls_ethertype() {
    let m = parse_match("mpls,mpls_label=100,mpls_tc=3,mpls_bos=1,mpls_ttl=64").unwrap();
    assert_eq!(m.to_string(), "mpls,mpls_label=100,mpls_tc=3,mpls_ttl=64,mpls_bos=1");
    let k = parse_key("in_port=1,mplsm,mpls_label=7,mpls_ttl=9").unwrap();
    assert_eq!(k.mpls_lse(0), 7 << 12 | 9);
    assert!(k.is_mpls());
    assert!(matches!(parse_match("mpls_label=5"), Err(FlowError::Prerequisite { .. })));
    assert!(parse_match("ip,mpls_tc=1").is_err());
    assert!(parse_match("mpls,mpls_label=0x100000").is_err());
}
