//! The generators on small sizes: seeds parse, generated pipelines load, the
//! traffic translates without error and reaches the routes it was drawn from.

use super::classbench::*;
use super::ofdpa::*;
use kairo_flow::Field;
use kairo_xlate::{translate, Outcome, Pipeline};

fn seed(name: &str) -> Seed {
    builtin_seed(name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_seed_parses_and_samples() {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    for name in seed_names() {
        let s = seed(name);
        let fs: Vec<Filter> = (0..500).map(|_| s.sample(&mut rng)).collect();
        // prefixes are aligned and ports only on tcp/udp
        for f in &fs {
            assert_eq!(f.src.0 & !f.src.1, 0);
            assert_eq!(f.dst.0 & !f.dst.1, 0);
            if !matches!(f.proto, Some(6) | Some(17)) {
                assert!(f.sport.is_none() && f.dport.is_none());
            }
        }
        assert!(!proto_histogram(&fs).is_empty(), "{name}");
    }
}

#[test]
fn acl1_protocol_mix_follows_the_seed() {
    // acl1: tcp 87.3%, icmp(1) 3.1%, any(0) 8.5%, udp 1.1%
    let s = seed("acl1");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let fs: Vec<Filter> = (0..20000).map(|_| s.sample(&mut rng)).collect();
    let h = proto_histogram(&fs);
    let tcp = *h.get(&Some(6)).unwrap_or(&0) as f64 / fs.len() as f64;
    assert!((tcp - 0.873).abs() < 0.02, "tcp share {tcp}");
}

#[test]
fn seed_errors_name_the_line() {
    let e = parse_seed("-prots\nsix 0.5\n#\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().contains("protocol"), "{e}");
    assert!(parse_seed("-scale\n10\n#\n").is_err());
    let e = parse_seed("-prots\n6\t1.0\t1.0\n#\n-wc_wc\n70,1.0\t40,1.0\n#\n").unwrap_err();
    assert_eq!(e.line, 5);
}

#[test]
fn ranges_expand_to_exact_prefix_covers() {
    for (lo, hi) in [(0u16, 1023u16), (1024, 65535), (1600, 1649), (80, 80), (0, 65535), (1025, 65535)] {
        let ps = range_to_prefixes(lo, hi);
        let covered: u64 = ps.iter().map(|(_, m)| 1u64 << (16 - m.count_ones())).sum();
        assert_eq!(covered, (hi - lo) as u64 + 1, "{lo}-{hi}: {ps:?}");
        for (v, m) in &ps {
            assert_eq!(v & !m, 0);
            assert!(*v >= lo && (v | !m) <= hi);
        }
    }
}

#[test]
fn ofdpa_loads_and_its_traffic_is_routed() {
    let s = seed("of2");
    let cfg = OfdpaConfig { routes: 300, macs: 50, acls: 60, ..OfdpaConfig::default() };
    let w = generate(&s, &cfg, 3);
    let p = Pipeline::from_parts(
        kairo_ofproto::parse_flow_file(&w.flows).unwrap(),
        kairo_ofproto::parse_group_file(&w.groups).unwrap(),
    )
    .unwrap();
    let tables: Vec<u8> = p.tables().map(|(t, _)| t).collect();
    assert_eq!(tables, vec![0, 10, 20, 23, 24, 30, 40, 50, 60, 63]);
    let keys = w.traffic(500, 4);
    assert_eq!(keys.len(), 500);
    let mut routed = 0;
    for k in &keys {
        let r = translate(&p, k);
        assert!(r.error.is_none(), "{:?}", r.error);
        // Every flow reaches the routing table and matches a route there.
        let at30 = r.traversal.steps.iter().find(|st| st.table == 30).expect("reached table 30");
        if let Outcome::Rule(id) = at30.outcome {
            let rule = p.rule(30, id).unwrap();
            assert!(rule.m.matches(&r.traversal.key_at(k, at30)));
            if rule.priority > 0 {
                routed += 1;
            }
        }
    }
    assert_eq!(routed, 500, "every flow was drawn inside a route");
    // Updates parse and apply.
    let ups = w.updates(&s, 60, 5);
    let mut ctl = kairo_maintain::Control::new(p, kairo_maintain::EngineKind::Incremental);
    for (_, c, a) in ups {
        let fm = kairo_maintain::parse_command(&c, &a).unwrap_or_else(|e| panic!("{c} {a}: {e}"));
        let _ = ctl.apply(&fm);
    }
}

#[test]
fn antrea_loads_with_22_tables_and_its_traffic_translates() {
    let s = seed("acl1");
    let cfg = crate::antrea::AntreaConfig { pods: 40, services: 8, policies: 40, ..Default::default() };
    let w = crate::antrea::generate(&s, &cfg, 9);
    let p = Pipeline::from_parts(
        kairo_ofproto::parse_flow_file(&w.flows).unwrap_or_else(|e| panic!("{e}")),
        kairo_ofproto::parse_group_file(&w.groups).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap();
    let tables: Vec<u8> = p.tables().map(|(t, _)| t).collect();
    assert_eq!(tables, vec![0, 10, 20, 23, 30, 31, 40, 41, 42, 45, 50, 60, 70, 71, 72, 80, 85, 90, 100, 105, 108, 110]);
    // ARP from a pod, not for the gateway: SpoofGuard, then the bridge's
    // learning switch (NORMAL), which floods a request to every other port
    // and sends the answer to the port it learned the asker on.
    let mut p = p;
    p.set_ports(w.ports());
    let (a, b) = (3u32, 7u32);
    let arp = |from: u32, to: u32, op: u64, dst: u64| {
        kairo_flow::FlowKey::default()
            .with(Field::InPort, u64::from(crate::antrea::pod_port(from)))
            .with(Field::EthSrc, crate::antrea::pod_mac(from))
            .with(Field::EthDst, dst)
            .with(Field::EthType, 0x0806)
            .with(Field::ArpOp, op)
            .with(Field::IpSrc, u64::from(crate::antrea::pod_ip(from)))
            .with(Field::ArpSha, crate::antrea::pod_mac(from))
            .with(Field::IpDst, u64::from(crate::antrea::pod_ip(to)))
    };
    let req = arp(a, b, 1, 0xffff_ffff_ffff);
    let r = translate(&p, &req);
    assert_eq!(r.actions.len(), w.ports().len() - 1, "{}", kairo_xlate::format_actions(&r.actions));
    for l in r.learn {
        p.macs_mut().learn(l.vlan, l.mac, l.port, 0);
    }
    let reply = arp(b, a, 2, crate::antrea::pod_mac(a));
    let r = translate(&p, &reply);
    assert_eq!(kairo_xlate::format_actions(&r.actions), crate::antrea::pod_port(a).to_string());
    let keys = w.traffic(400, 1);
    assert_eq!(keys.len(), 400);
    let (mut deep, mut dnat, mut committed) = (0, 0, 0);
    for k in &keys {
        // Every IP packet is tracked first: one pass ends in ct and recirc.
        let first = translate(&p, k);
        assert!(first.error.is_none(), "{:?}", first.error);
        let a = kairo_xlate::format_actions(&first.actions);
        assert!(a.starts_with("ct(zone=65520,nat),recirc(0x"), "{a}");
        // The later passes as a new connection's packet takes them.
        let passes = kairo_xlate::recirc::follow(&p, k);
        for pass in &passes {
            assert!(pass.result.error.is_none(), "{:?}", pass.result.error);
            let a = kairo_xlate::format_actions(&pass.result.actions);
            dnat += usize::from(a.contains("nat(dst="));
            committed += usize::from(a.contains("ct(commit,zone=65520,mark=0x2/0xf)"));
        }
        if passes.iter().any(|pass| pass.result.traversal.steps.iter().any(|st| st.table == 110)) {
            deep += 1;
        }
    }
    // Most connections go through the whole pipeline (some are dropped by
    // policy); service connections are DNATed, the others committed in
    // ConntrackCommit with where they came from (a pod, 2) in ct_mark.
    assert!(deep > 200, "{deep} of 400 reached table 110");
    assert!(dnat > 50 && committed > 100, "{dnat} DNATed, {committed} committed");
    let mut ctl = kairo_maintain::Control::new(p, kairo_maintain::EngineKind::Incremental);
    for (_, c, a) in w.updates(&s, 40, 2) {
        let fm = kairo_maintain::parse_command(&c, &a).unwrap_or_else(|e| panic!("{c} {a}: {e}"));
        ctl.apply(&fm).unwrap_or_else(|e| panic!("{c} {a}: {e}"));
    }
}
