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
    assert!(parse_match("ipv6").is_err());
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
            if matches!(f.def().fmt, field::Fmt::Frag) { return Ok(()); }
            let (v, mk) = (v & f.ones() & mk, mk & f.ones());
            let text = parse::format_field_value(f, v, mk);
            let (v2, m2) = parse_field_value(f, &text).unwrap();
            prop_assert_eq!((v2, m2), (v, mk), "{}", text);
        }
    }
}
