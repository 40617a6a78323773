//! Tests of the ovs-ofctl syntax: every form, action and instruction, and the errors.

use crate::action::*;
use crate::*;
use kairo_flow::Field;

fn rule(s: &str) -> Rule {
    parse_flow(s, Some(true)).and_then(FlowSpec::into_rule).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn act(s: &str) -> Action {
    Action::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn flow_line_basics() {
    let r = rule("table=3,priority=100,cookie=0x1f,ip,nw_dst=10.0.0.0/8,actions=output:2");
    assert_eq!((r.table, r.priority, r.cookie), (3, 100, 0x1f));
    assert_eq!(r.m.field(Field::IpDst), (0x0a000000, 0xff000000));
    assert_eq!(r.inst.apply, vec![Action::Output(2)]);
    let d = rule("actions=drop");
    assert_eq!((d.table, d.priority), (0, 32768));
    assert!(d.inst.is_empty());
    // spaces as separators
    let s = rule("table=1 priority=5 tcp tp_dst=80 actions=output:3");
    assert_eq!(s.m.field(Field::TpDst), (80, 0xffff));
}

#[test]
fn dump_flows_lines_load() {
    let r = rule(" cookie=0x5, duration=12.345s, table=2, n_packets=10, n_bytes=600, idle_age=3, priority=200,tcp,in_port=1,nw_src=1.2.3.0/24 actions=mod_dl_dst:00:00:00:00:00:01,goto_table:4");
    assert_eq!((r.table, r.priority, r.cookie), (2, 200, 5));
    assert_eq!(r.inst.goto_table, Some(4));
    let f = parse_flow_file("OFPST_FLOW reply (OF1.3) (xid=0x2):\n cookie=0x0, duration=1s, table=0, n_packets=0, n_bytes=0, priority=0 actions=drop\n").unwrap();
    assert_eq!(f.rules.len(), 1);
}

#[test]
fn instructions() {
    let r =
        rule("actions=output:1,clear_actions,write_actions(output:2,group:3),write_metadata:0x10/0xff,goto_table:5");
    assert_eq!(r.inst.apply, vec![Action::Output(1)]);
    assert!(r.inst.clear_actions);
    assert_eq!(r.inst.write, vec![Action::Output(2), Action::Group(3)]);
    assert_eq!(r.inst.write_metadata, Some((0x10, 0xff)));
    assert_eq!(r.inst.goto_table, Some(5));
    assert_eq!(
        r.inst.to_string(),
        "output:1,clear_actions,write_actions(output:2,group:3),write_metadata:0x10/0xff,goto_table:5"
    );
}

#[test]
fn every_action_parses_and_prints_back() {
    for (text, want) in [
        ("output:3", Action::Output(3)),
        ("3", Action::Output(3)),
        ("in_port", Action::InPort),
        ("IN_PORT", Action::InPort),
        ("output:in_port", Action::InPort),
        ("controller", Action::controller(65535)),
        ("CONTROLLER:128", Action::controller(128)),
        ("controller(max_len=64)", Action::controller(64)),
        ("controller(reason=action,id=0,max_len=64)", Action::controller(64)),
        (
            "controller(reason=no_match,id=3,userdata=01.02)",
            Action::Controller {
                max_len: 65535,
                reason: crate::ControllerReason::NoMatch,
                id: 3,
                userdata: vec![1, 2],
            },
        ),
        ("mod_dl_src:00:00:00:00:00:01", Action::SetField { field: Field::EthSrc, value: 1, mask: 0xffff_ffff_ffff }),
        ("mod_dl_dst:00:00:00:00:00:02", Action::SetField { field: Field::EthDst, value: 2, mask: 0xffff_ffff_ffff }),
        ("mod_nw_src:1.2.3.4", Action::SetField { field: Field::IpSrc, value: 0x01020304, mask: 0xffff_ffff }),
        ("mod_nw_dst:1.2.3.5", Action::SetField { field: Field::IpDst, value: 0x01020305, mask: 0xffff_ffff }),
        ("mod_tp_src:1000", Action::SetField { field: Field::TpSrc, value: 1000, mask: 0xffff }),
        ("mod_tp_dst:80", Action::SetField { field: Field::TpDst, value: 80, mask: 0xffff }),
        ("mod_nw_tos:16", Action::SetField { field: Field::IpDscp, value: 4, mask: 0x3f }),
        ("mod_nw_ttl:9", Action::SetField { field: Field::IpTtl, value: 9, mask: 0xff }),
        ("mod_vlan_vid:10", Action::SetVlanVid { vid: 10, push: true }),
        ("mod_vlan_pcp:3", Action::SetVlanPcp { pcp: 3, push: true }),
        ("set_field:4116->vlan_vid", Action::SetVlanVid { vid: 20, push: false }),
        ("strip_vlan", Action::PopVlan),
        ("pop_vlan", Action::PopVlan),
        ("push_vlan:0x8100", Action::PushVlan { tpid: 0x8100 }),
        ("dec_ttl", Action::DecTtl),
        ("set_field:10.0.0.1->ip_dst", Action::SetField { field: Field::IpDst, value: 0x0a000001, mask: 0xffff_ffff }),
        ("set_field:0x1/0x1->reg0", Action::SetField { field: Field::Reg0, value: 1, mask: 1 }),
        ("set_field:5->metadata", Action::SetField { field: Field::Metadata, value: 5, mask: u64::MAX }),
        ("load:0x5->NXM_NX_REG0[0..3]", Action::SetField { field: Field::Reg0, value: 5, mask: 0xf }),
        ("load:1->reg2[4]", Action::SetField { field: Field::Reg2, value: 0x10, mask: 0x10 }),
        ("load:0xa->NXM_NX_REG1[8..15]", Action::SetField { field: Field::Reg1, value: 0xa00, mask: 0xff00 }),
        ("resubmit(,3)", Action::Resubmit { port: None, table: Some(3) }),
        ("resubmit(2,3)", Action::Resubmit { port: Some(2), table: Some(3) }),
        ("resubmit:2", Action::Resubmit { port: Some(2), table: None }),
        ("group:7", Action::Group(7)),
        (
            "output:NXM_NX_REG1[0..15]",
            Action::OutputReg { src: SubField { field: Field::Reg1, ofs: 0, n_bits: 16 }, max_len: u16::MAX },
        ),
        (
            "output:reg2[]",
            Action::OutputReg { src: SubField { field: Field::Reg2, ofs: 0, n_bits: 32 }, max_len: u16::MAX },
        ),
        (
            "check_pkt_larger(1500)->NXM_NX_REG0[1]",
            Action::CheckPktLarger { len: 1500, dst: SubField { field: Field::Reg0, ofs: 1, n_bits: 1 } },
        ),
        (
            "output:tp_dst[0..1]",
            Action::OutputReg { src: SubField { field: Field::TpDst, ofs: 0, n_bits: 2 }, max_len: u16::MAX },
        ),
    ] {
        let a = act(text);
        assert_eq!(a, want, "{text}");
        assert_eq!(act(&a.to_string()), a, "{text} printed as {a}");
    }
    let mv = act("move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]");
    assert_eq!(
        mv,
        Action::Move {
            src: SubField { field: Field::EthSrc, ofs: 0, n_bits: 48 },
            dst: SubField { field: Field::EthDst, ofs: 0, n_bits: 48 }
        }
    );
    assert_eq!(act(&mv.to_string()), mv);
    let mv2 = act("move:reg0[0..15]->reg1[16..31]");
    assert_eq!(act(&mv2.to_string()), mv2);
}

#[test]
fn action_errors() {
    let cases = [
        ("output:x", "port"),
        ("output:reg1[0..40]", "bit range"),
        ("controller(userdata=01.0)", "userdata"),
        ("controller(max_len=64,pause)", "continuations"),
        ("controller(reason=group)", "not supported"),
        ("controller(id=70000)", "0-65535"),
        ("controller(meter_id=1)", "meter"),
        ("output:bogus[]", "bogus"),
        ("load:0x10->NXM_NX_REG0[0..3]", "fits in 4 bits"),
        ("load:1->NXM_NX_REG0[0..40]", "bit range"),
        ("move:reg0[0..3]->reg1[0..4]", "equal width"),
        ("set_field:1->nw_proto", "writable"),
        ("set_field:1->bogus", "bogus"),
        ("frobnicate", "frobnicate"),
        ("ct(force)", "commit"),
        ("ct(exec(set_field:1->ct_mark))", "commit"),
        ("ct(commit,exec(set_field:1->reg0))", "ct_mark or ct_label"),
        ("ct(commit,exec(push_vlan:0x8100))", "set_field, load or move"),
        ("ct(zone=NXM_NX_REG0[0..7])", "16 bits"),
        ("ct(zone=65536)", "zone"),
        ("ct(table=255)", "table"),
        ("ct(commit,alg=ftp)", "application-level"),
        ("ct(commit,nat(src=10.0.0.2-10.0.0.1))", "min <= max"),
        ("ct(nat(src=10.0.0.1:0))", "ports 1-65535"),
        ("ct(commit,nat(src=10.0.0.1,random,hash))", "hash or random"),
        ("ct(commit,nat(src=10.0.0.1),nat(dst=10.0.0.2))", "at most one nat"),
        ("ct(commit,bogus)", "one of commit"),
        ("set_field:1->ct_mark", "outside ct"),
        ("move:NXM_NX_REG0[]->NXM_NX_CT_MARK[]", "outside ct"),
        ("resubmit(,300)", "table"),
        ("resubmit(,3,ct)", "ct option"),
        ("resubmit(,3,bogus)", "`bogus`"),
        ("push_vlan:0x1234", "push_vlan"),
        ("mod_vlan_vid:5000", "VLAN id"),
        ("mod_nw_dst:1.2.3", "IPv4"),
        ("check_pkt_larger(100)->reg0[0..1]", "1-bit destination"),
        ("check_pkt_larger(100)->reg0", "1-bit destination"),
        ("check_pkt_larger(65536)->reg0[0]", "0-65535"),
        ("check_pkt_larger(100)", "check_pkt_larger(LEN)->DST"),
        ("check_pkt_larger(100)->nw_proto[0]", "writable"),
        ("check_pkt_larger(100)->bogus[0]", "bogus"),
    ];
    for (text, want) in cases {
        let e = Action::parse(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    assert!(Instructions::parse("output:1,drop").is_err());
    assert!(Instructions::parse("goto_table:1,goto_table:2").is_err());
    assert!(Instructions::parse("").is_err());
}

#[test]
fn ct_actions_round_trip_in_ovs_ofctl_order() {
    for (text, printed) in [
        ("ct(table=1,zone=5)", "ct(table=1,zone=5)"),
        ("ct", "ct()"),
        ("ct(commit,force,zone=5,table=3,exec(set_field:1->ct_mark,load:0x2->NXM_NX_CT_LABEL[0..3]),nat(src=10.0.0.1-10.0.0.9:100-200,persistent,random))",
         "ct(commit,force,table=3,zone=5,nat(src=10.0.0.1-10.0.0.9:100-200,persistent,random),exec(set_field:0x1->ct_mark,load:0x2->ct_label[0..3]))"),
        ("ct(commit,nat(dst=[fe80::1]-[fe80::3]:80))", "ct(commit,nat(dst=[fe80::1]-[fe80::3]:80))"),
        ("ct(table=2,zone=NXM_NX_REG0[0..15],nat)", "ct(table=2,zone=reg0[0..15],nat)"),
        ("ct(commit,exec(move:NXM_NX_REG0[]->NXM_NX_CT_MARK[]))", "ct(commit,exec(move:reg0[]->ct_mark[]))"),
        ("ct(commit,exec(set_field:0x1/0x3->ct_label))", "ct(commit,exec(load:0x1->ct_label[0..1]))"),
        ("ct(commit,nat(src))", "ct(commit,nat(src))"),
        ("ct_clear", "ct_clear"),
    ] {
        let a = Action::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(a.to_string(), printed, "{text}");
        assert_eq!(Action::parse(printed).unwrap(), a, "{printed}");
    }
}

#[test]
fn ct_needs_an_ip_match_of_its_nat_family() {
    for bad in [
        "actions=ct(commit)",
        "arp,actions=ct(table=1)",
        "ipv6,actions=ct(commit,nat(src=10.0.0.1))",
        "ip,actions=ct(commit,nat(src=[fe80::1]))",
        "ip,actions=push_mpls:0x8847,ct(table=1)",
        "ip,ct_state=+inv+trk,actions=ct(commit)",
    ] {
        let e = parse_flow_file(bad).expect_err(bad).to_string();
        assert!(e.contains("invalid with the specified match"), "{bad}: {e}");
    }
    for good in [
        "ip,actions=ct(commit,nat(src=10.0.0.1:5))",
        "ipv6,actions=ct(table=1)",
        "actions=ct_clear",
        "ip,ct_state=+inv+trk,actions=ct(table=1)",
    ] {
        parse_flow_file(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn groups() {
    let g = parse_group(
        "group_id=1,type=select,bucket=output:1,bucket=weight:20,actions=mod_dl_dst:00:00:00:00:00:09,output:2",
    )
    .unwrap();
    assert_eq!(g.ty, GroupType::Select);
    assert_eq!(g.buckets.len(), 2);
    assert_eq!(g.buckets[1].weight, 20);
    assert_eq!(g.buckets[1].actions.len(), 2);
    let g2 = parse_group(&g.to_string()).unwrap();
    assert_eq!(g2, g);
    let ff = parse_group("group_id=2,type=ff,bucket=watch_port:1,output:1,bucket=watch_port:2,output:2").unwrap();
    assert_eq!(ff.buckets[0].watch_port, Some(1));
    assert_eq!(ff.buckets[1].actions, vec![Action::Output(2)]);
    let h = parse_group("group_id=3,type=select,selection_method=hash,fields(ip_src,ip_dst),bucket=output:1").unwrap();
    assert_eq!(h.fields, Some(vec![Field::IpSrc, Field::IpDst]));
    assert!(parse_group("group_id=4,type=indirect,bucket=output:1,bucket=output:2").is_err());
    assert!(parse_group("type=all,bucket=output:1").is_err());
    assert!(parse_group("group_id=5,type=weird").is_err());
    let all = parse_group("group_id=6,type=all,bucket=output:1,bucket=output:2,bucket=output:3").unwrap();
    assert_eq!(all.buckets.iter().map(|b| b.id).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn file_errors_name_line_and_text() {
    let text =
        "# comment\ntable=0,ip,nw_dst=10.0.0.0/8,actions=output:2\n\ntable=0,ip,nw_dst=10.0.0.999,actions=output:2\n";
    let e = parse_flow_file(text).unwrap_err();
    assert_eq!(e.line, 4);
    assert!(e.text.contains("10.0.0.999"));
    let msg = e.to_string();
    assert!(msg.contains("line 4") && msg.contains("IPv4"), "{msg}");
    let e = parse_flow_file("table=0,ip,nw_dst=10.0.0.1\n").unwrap_err();
    assert!(e.to_string().contains("actions="), "{e}");
    let e = parse_flow_file("ip,actions=output:1\nnw_dst=1.2.3.4,actions=output:1\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().contains("prerequisite"), "{e}");
    let e = parse_group_file("group_id=1,type=all,bucket=output:1\ngroup_id=2,bucket=output:1\n").unwrap_err();
    assert_eq!(e.line, 2);
}

#[test]
fn miss_directives() {
    let f =
        parse_flow_file("#@ table=10 miss=continue:20\n#@ table=20 miss=continue\n#@ table=30 miss=drop\n").unwrap();
    assert_eq!(
        f.misses,
        vec![(10, MissBehavior::Continue(20)), (20, MissBehavior::Continue(21)), (30, MissBehavior::Drop)]
    );
    assert!(parse_flow_file("#@ table=10 miss=continue:5\n").is_err());
    assert!(parse_flow_file("#@ table=10 miss=explode\n").is_err());
}

#[test]
fn rule_display_round_trips() {
    for s in [
        "table=1,priority=10,tcp,tp_dst=80,actions=mod_tp_dst:8080,write_actions(output:3),goto_table:2",
        "priority=0,actions=drop",
        "cookie=0x9,reg0=0x1/0x1,actions=load:0x3->NXM_NX_REG1[0..1],resubmit(,5)",
        "ipv6,actions=meter:2,move:ipv6_src[64..127]->metadata[],load:0x1->ipv6_dst[0..15],set_field:fe80::/10->nd_target",
    ] {
        let r = rule(s);
        let printed = r.to_string();
        assert_eq!(rule(&printed), r, "{printed}");
    }
    // Bits of a 128-bit field are bits of one half, printed as bits of the whole.
    let r = rule("ipv6,actions=move:NXM_NX_IPV6_SRC[70..73]->NXM_NX_REG0[0..3],load:0x5->ipv6_dst[1..3]");
    assert_eq!(r.inst.to_string(), "move:ipv6_src[70..73]->reg0[0..3],load:0x5->ipv6_dst[1..3]");
    let Action::Move { src, .. } = r.inst.apply[0] else { panic!("a move") };
    assert_eq!((src.field, src.ofs, src.n_bits), (Field::Ipv6SrcHi, 6, 4));
    let e = Action::parse("move:ipv6_src[60..67]->NXM_NX_REG0[0..7]").unwrap_err().to_string();
    assert!(e.contains("both halves"), "{e}");
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    proptest! {
        #[test]
        fn flow_parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse_flow(&s, Some(true));
            let _ = parse_group(&s);
            let _ = Action::parse(&s);
        }
        #[test]
        fn flow_parser_never_panics_structured(s in "(table=|priority=|actions=|ip,|tcp,|nw_dst=|[0-9]{1,4}|[.,/:()\\[\\]]|bucket=|group_id=|load:|move:|->|reg0|resubmit){0,12}") {
            let _ = parse_flow(&s, Some(true));
            let _ = parse_group(&s);
        }
    }
}

#[test]
fn instructions_must_come_in_openflow_order() {
    // As ovs-ofctl: apply-actions, clear, write-actions, write-metadata, goto.
    assert!(
        Instructions::parse("output:1,clear_actions,write_actions(output:2),write_metadata:0x1,goto_table:3").is_ok()
    );
    let e = Instructions::parse("clear_actions,controller").unwrap_err().to_string();
    assert!(e.contains("apply_actions must appear before clear_actions"), "{e}");
    let e = Instructions::parse("goto_table:2,write_actions(output:1)").unwrap_err().to_string();
    assert!(e.contains("write_actions must appear before goto_table"), "{e}");
    // The action set has no place for check_pkt_larger (ovs-ofctl: "disallowed action in action set").
    let e = parse_flow("actions=write_actions(check_pkt_larger(100)->reg0[0])", Some(true))
        .and_then(FlowSpec::into_rule)
        .unwrap_err()
        .to_string();
    assert!(e.contains("check_pkt_larger") && e.contains("write_actions"), "{e}");
}

#[test]
fn conjunction_and_note_parse_print_and_stand_alone_as_ovs_ofctl_requires() {
    let r = parse_flow("ip,nw_src=10.0.0.1,actions=conjunction(1234, 1/2),note:0102", Some(true))
        .and_then(FlowSpec::into_rule)
        .unwrap();
    assert_eq!(r.inst.to_string(), "conjunction(1234,1/2),note:01.02.00.00.00.00");
    assert_eq!(r.inst.conjunctions().collect::<Vec<_>>(), vec![(1234, 1, 2)]);
    // Printing parses back to the same actions.
    assert_eq!(Instructions::parse(&r.inst.to_string()).unwrap(), r.inst);
    let e = parse_flow("ip,actions=conjunction(1,1/2),output:1", Some(true)).unwrap_err().to_string();
    assert!(e.contains("only conjunction and note actions"), "{e}");
    for bad in
        ["conjunction(1,1/1)", "conjunction(1,3/2)", "conjunction(1,0/2)", "conjunction(1,1/65)", "conjunction(1)"]
    {
        let e = Action::parse(bad).unwrap_err().to_string();
        assert!(e.contains("conjunction(ID,K/N)"), "{bad}: {e}");
    }
    assert!(parse_flow("ip,actions=write_actions(conjunction(1,1/2))", Some(true)).is_err());
    assert!(parse_flow("ip,actions=conjunction(1,1/2),goto_table:2", Some(true)).is_err());
    let conj = parse_flow("conj_id=5,actions=output:1", Some(true)).unwrap();
    assert_eq!(conj.m.to_string(), "conj_id=5");
    let e = parse_flow("conj_id=5/3,actions=output:1", Some(true)).unwrap_err().to_string();
    assert!(e.contains("not maskable"), "{e}");
    assert!(Action::parse("note:012").is_err());
}

#[test]
fn output_to_a_field_s_port_is_refused_in_write_actions() {
    let e = parse_flow("ip,actions=write_actions(output:NXM_NX_REG1[])", Some(true)).unwrap_err().to_string();
    assert!(e.contains("write_actions") && e.contains("output:reg1[]"), "{e}");
    assert!(parse_flow("ip,actions=output:NXM_NX_REG1[],write_actions(output:2)", Some(true)).is_ok());
}

/// Ports given by name, as ovs-ofctl takes them against a bridge: bare or
/// quoted, in matches, actions and groups; numbers and reserved ports read
/// as before; an unknown name is an error naming it and the names there are.
#[test]
fn ports_given_by_name_resolve_to_their_numbers() {
    let mut names = PortNames::default();
    names.insert("antrea-gw0", 2).unwrap();
    names.insert("pod1-7e503a", 5).unwrap();
    names.insert("10", 7).unwrap();
    let r = parse_flow_in(
        r#"table=1,in_port="pod1-7e503a",ip,actions=output:antrea-gw0,resubmit(pod1-7e503a,3),output:"10",antrea-gw0,output:10,LOCAL"#,
        Some(true),
        &names,
    )
    .unwrap()
    .into_rule()
    .unwrap();
    assert_eq!(r.m.key().get(Field::InPort), 5);
    assert_eq!(
        r.inst.to_string(),
        "output:2,resubmit(5,3),output:7,output:2,output:10,output:LOCAL",
        "quoted \"10\" is the port named 10; bare 10 is port 10"
    );
    let d = parse_flow_in("out_port=antrea-gw0,in_port=2", Some(false), &names).unwrap();
    assert_eq!(d.out_port, Some(2));
    let g =
        parse_group_in("group_id=1,type=ff,bucket=watch_port:pod1-7e503a,actions=output:antrea-gw0", &names).unwrap();
    assert_eq!(g.buckets[0].watch_port, Some(5));
    assert_eq!(g.buckets[0].actions, vec![Action::Output(2)]);
    // Unknown names, with names known and without.
    let e = parse_flow_in("in_port=pod9,actions=drop", Some(true), &names).unwrap_err().to_string();
    assert!(e.contains("pod9") && e.contains("antrea-gw0"), "{e}");
    let e = parse_flow_in("ip,actions=output:\"pod9\"", Some(true), &names).unwrap_err().to_string();
    assert!(e.contains("pod9"), "{e}");
    let e = parse_flow("in_port=pod1-7e503a,actions=drop", Some(true)).unwrap_err().to_string();
    assert!(e.contains("pod1-7e503a"), "{e}");
    let e = parse_flow("ip,actions=output:\"pod1\"", Some(true)).unwrap_err().to_string();
    assert!(e.contains("no port names"), "{e}");
    // A name a port cannot have, or one taken by another port.
    assert!(names.insert("a b", 9).is_err());
    assert!(names.insert("antrea-gw0", 9).is_err());
    assert!(names.insert("antrea-gw0", 2).is_ok());
}

#[test]
fn clone_parses_prints_back_and_refuses_what_kairo_cannot_run_in_line() {
    let a = Action::parse("clone(set_field:10.0.0.9->nw_dst,resubmit(,1),clone(output:2),output:3)").unwrap();
    assert_eq!(a.to_string(), "clone(set_field:10.0.0.9->nw_dst,resubmit(,1),clone(output:2),output:3)");
    assert_eq!(Action::parse(&a.to_string()).unwrap(), a);
    for (text, want) in [
        ("clone(ct(commit),output:2)", "datapath's clone"),
        ("clone(output:1,clone(ct(table=2)))", "datapath's clone"),
        ("clone(conjunction(1,1/2))", "conjunction"),
        ("clone(set_field:1->ct_mark)", "outside ct"),
    ] {
        let e = Action::parse(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    // ct_clear runs in line, as Open vSwitch runs it (OVN's clone(ct_clear,...)).
    assert!(Action::parse("clone(ct_clear,output:1,clone(ct_clear))").is_ok());
}

#[test]
fn learn_parses_as_ovs_ofctl_reads_it_and_prints_back() {
    use crate::learn::{Learn, LearnSpec, LearnSrc};
    let text = "learn(table=10,idle_timeout=60,hard_timeout=300,priority=7,send_flow_rem,delete_learned,cookie=0x99,\
                limit=4,result_dst=reg5[3],NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],dl_type=0x800,\
                nw_src=10.0.0.1,load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15],load:0x2a->reg1[4..11],output:reg4[0..15])";
    let Action::Learn(l) = Action::parse(text).unwrap() else { panic!("not a learn") };
    assert_eq!((l.table, l.idle_timeout, l.hard_timeout, l.priority, l.cookie, l.limit), (10, 60, 300, 7, 0x99, 4));
    assert_eq!(l.flags, crate::learn::flags::SEND_FLOW_REM | crate::learn::flags::DELETE_LEARNED | 4);
    let sf = |s: &str| SubField::parse(s).unwrap();
    assert_eq!(
        l.specs,
        vec![
            LearnSpec::Match { dst: sf("vlan_tci[0..11]"), src: LearnSrc::Field(sf("vlan_tci[0..11]")) },
            LearnSpec::Match { dst: sf("eth_dst"), src: LearnSrc::Field(sf("eth_src")) },
            LearnSpec::Match { dst: sf("dl_type"), src: LearnSrc::Value(0x800) },
            LearnSpec::Match { dst: sf("nw_src"), src: LearnSrc::Value(0x0a00_0001) },
            // NXM_OF_IN_PORT is Open vSwitch's 16-bit port number.
            LearnSpec::Load { dst: sf("reg0[0..15]"), src: LearnSrc::Field(sf("in_port[0..15]")) },
            LearnSpec::Load { dst: sf("reg1[4..11]"), src: LearnSrc::Value(0x2a) },
            LearnSpec::Output { src: sf("reg4[0..15]") },
        ]
    );
    let again = Action::parse(&Action::Learn(l.clone()).to_string()).unwrap();
    assert_eq!(again, Action::Learn(l));
    // The defaults, as ovs-ofctl has them.
    let Action::Learn(d) = Action::parse("learn(eth_dst=eth_src)").unwrap() else { panic!() };
    assert_eq!((d.table, d.priority, d.idle_timeout, d.limit, d.result_dst), (1, 32768, 0, 0, None));
    assert_eq!(*d, Learn { specs: d.specs.clone(), ..Learn::default() });
    for (text, want) in [
        ("learn(nw_src=10.0.0.1)", "prerequisites"),
        ("learn(nw_src=10.0.0.1,dl_type=0x800)", "prerequisites"),
        ("learn(ip_src=eth_src)", "equal width"),
        ("learn(reg0[0..3]=0x1f)", "fits in 4 bits"),
        ("learn(table=255,eth_dst=eth_src)", "255"),
        ("learn(result_dst=reg0[0..1],eth_dst)", "single bit"),
        ("learn(load:0x800->dl_type[])", "writable"),
        ("learn(bogus=3)", "a field to match"),
        ("fin_timeout(idle=5)", "fin_timeout(idle_timeout=N"),
        ("learn(eth_dst=01:00:00:00:00:00/01:00:00:00:00:00)", "exact value"),
    ] {
        let e = Action::parse(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    // No learn in the action set.
    let e = crate::parse_flow("actions=write_actions(learn(eth_dst))", Some(true)).unwrap_err().to_string();
    assert!(e.contains("write_actions"), "{e}");
    // fin timeouts, for the learned flow's fin_timeout.
    let Action::Learn(l) = Action::parse("learn(fin_idle_timeout=5,fin_hard_timeout=9,eth_dst)").unwrap() else {
        panic!()
    };
    assert_eq!((l.fin_idle_timeout, l.fin_hard_timeout), (5, 9));
    assert_eq!(Action::parse(&Action::Learn(l.clone()).to_string()).unwrap(), Action::Learn(l));
    let a = Action::parse("fin_timeout(idle_timeout=5,hard_timeout=7)").unwrap();
    assert_eq!(a, Action::FinTimeout { idle: 5, hard: 7 });
    assert_eq!(a.to_string(), "fin_timeout(idle_timeout=5,hard_timeout=7)");
    assert_eq!(Action::parse("fin_timeout(hard_timeout=7)").unwrap().to_string(), "fin_timeout(hard_timeout=7)");
}
