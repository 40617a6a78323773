//! The reference against translation (two implementations that share no
//! code agree on random pipelines), and the cache check against caches
//! made wrong on purpose (each mutation is caught).

use super::*;
use kairo_flow::{parse_key, FlowMask};
use kairo_odp::DpAction;
use kairo_ofproto::{parse_flow_file, parse_group_file};
use kairo_testkit::{gen_case, gen_packets, GenConfig};
use kairo_xlate::translate;
use rand::SeedableRng;

fn pipeline(flows: &str, groups: &str) -> Pipeline {
    let ff = parse_flow_file(flows).unwrap_or_else(|e| panic!("{e}"));
    let gs = parse_group_file(groups).unwrap_or_else(|e| panic!("{e}"));
    Pipeline::from_parts(ff, gs).unwrap_or_else(|e| panic!("{e}"))
}

/// Translation and the reference give packet `spec` the same outcome;
/// returns whether it went through a conjunctive match.
fn agree(p: &Pipeline, reference: &Reference, seed: u64, spec: &str, flows: &str) -> bool {
    let k = parse_key(spec).unwrap();
    let r = translate(p, &k);
    let answered = r.traversal.steps.iter().any(|s| matches!(s.outcome, kairo_xlate::Outcome::Conj { .. }));
    for &len in reference.lengths() {
        same_at(reference, seed, spec, flows, &k, &r, len);
    }
    answered
}

/// The reference and translation `r` agree on `k` at length `len`.
fn same_at(
    reference: &Reference,
    seed: u64,
    spec: &str,
    flows: &str,
    k: &FlowKey,
    r: &kairo_xlate::XlateResult,
    len: usize,
) {
    let want = reference.run_len(k, len);
    assert_eq!(want.stop.is_some(), r.error.is_some() || r.slow, "seed {seed} {spec}\n{flows}");
    let got = kairo_odp::apply_len(&r.actions, k, len);
    if want.emitted != got {
        let diff: Vec<String> = want
            .emitted
            .iter()
            .zip(&got)
            .flat_map(|((_, a), (_, b))| {
                kairo_flow::Field::all()
                    .filter(|f| a.get(*f) != b.get(*f))
                    .map(|f| format!("{}: {:#x} vs {:#x}", f.name(), a.get(f), b.get(f)))
                    .collect::<Vec<_>>()
            })
            .collect();
        panic!(
            "seed {seed} packet {spec} ({len} bytes)\nreference {:?}\ntranslation {} {:?}\ndiffering fields {diff:?}\n{flows}",
            want.emitted,
            kairo_odp::format_actions(&r.actions),
            got,
        );
    }
}

#[test]
fn the_reference_agrees_with_translation_on_random_pipelines() {
    let cfg = GenConfig { resubmit: true, ..GenConfig::default() };
    let (mut packets, mut answered) = (0, 0);
    for seed in 0..300u64 {
        let case = gen_case(seed, &cfg);
        let p = pipeline(&case.flows, &case.groups);
        let reference = Reference::new(&p);
        for spec in gen_packets(seed, 40, 4) {
            answered += usize::from(agree(&p, &reference, seed, &spec, &case.flows));
            packets += 1;
        }
    }
    assert_eq!(packets, 12_000);
    // The generated conjunctive matches are met, not only loaded.
    assert!(answered >= 200, "only {answered} packets went through a conjunctive match");
}

/// The same with the bridge's four ports given random OpenFlow port-config
/// bits (`no-flood`, `no-forward`, `no-receive`, `down`, `no-packet-in`),
/// which FLOOD, ALL, NORMAL, outputs, groups and the first lookup read.
#[test]
fn the_reference_agrees_with_translation_under_port_config_bits() {
    use rand::{Rng, SeedableRng};
    let cfg = GenConfig { resubmit: true, ..GenConfig::default() };
    let words = ["no-flood", "no-forward", "no-receive", "down", "no-packet-in"];
    let mut changed = 0;
    for seed in 0..200u64 {
        let case = gen_case(seed, &cfg);
        let mut p = pipeline(&case.flows, &case.groups);
        p.set_ports(1..=4);
        let plain = p.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        for port in 1..=4u32 {
            let set: Vec<&str> = words.iter().copied().filter(|_| rng.gen_bool(0.25)).collect();
            let s = kairo_ofproto::ports::PortSettings::parse(set.iter().copied()).unwrap();
            if s.config.has(kairo_ofproto::ports::PortConfig::DOWN) {
                p.set_port_live(port, false);
            }
            p.set_port_settings(port, Some(s));
        }
        let reference = Reference::new(&p);
        for spec in gen_packets(seed, 30, 4) {
            agree(&p, &reference, seed, &spec, &case.flows);
            let k = parse_key(&spec).unwrap();
            changed += usize::from(translate(&p, &k).actions != translate(&plain, &k).actions);
        }
    }
    // The bits are met, not only set.
    assert!(changed >= 300, "only {changed} packets were changed by the ports' config bits");
}

#[test]
fn fan_out_stops_where_translation_stops() {
    let p = pipeline("actions=group:1", &kairo_testkit::fan_out_groups(10, 4, "output:2"));
    let k = parse_key("in_port=1").unwrap();
    let out = Reference::new(&p).run(&k);
    assert_eq!((out.stop, out.emitted.len()), (Some(Stop::TooManyActions), translate(&p, &k).actions.len()));
}

#[test]
fn liveness_of_groups_watching_groups_is_bounded_here_too() {
    let p = pipeline("actions=group:1", &kairo_testkit::watch_chain_groups(25, 4));
    let k = parse_key("in_port=1").unwrap();
    let out = kairo_testkit::within(10, move || Reference::new(&p).run(&k)).expect("finished within 10 s");
    assert_eq!((out.emitted.len(), out.stop), (0, None));
}

/// A cache of one pipeline's megaflows for some packets, as (key, mask, actions).
type Entry = (FlowKey, FlowMask, Vec<DpAction>, Vec<kairo_ofproto::Rule>);

fn cache(p: &Pipeline, packets: &[String]) -> Vec<Entry> {
    packets
        .iter()
        .map(|s| {
            let k = parse_key(s).unwrap();
            let r = translate(p, &k);
            let learned = r.traversal.learned.iter().flatten().map(|l| l.rule.clone()).collect();
            (k, r.mask, r.actions, learned)
        })
        .collect()
}

fn disagreements(p: &Pipeline, c: &[Entry]) -> Vec<Disagreement> {
    let reference = Reference::new(p);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    c.iter().filter_map(|(k, m, a, l)| check_entry(&reference, k, m, a, Some(l), 32, &mut rng)).collect()
}

#[test]
fn the_check_catches_caches_made_wrong() {
    let p = pipeline(
        "table=0,priority=10,ip,nw_dst=10.0.0.0/8,actions=goto_table:1\ntable=0,priority=0,actions=drop\n\
         table=1,priority=20,tcp,tp_dst=80,actions=output:2\ntable=1,priority=10,ip,actions=output:3",
        "",
    );
    let packets: Vec<String> =
        ["in_port=1,tcp,nw_dst=10.1.2.3,tp_dst=80", "in_port=1,udp,nw_dst=10.1.2.3", "in_port=1,arp"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let good = cache(&p, &packets);
    assert!(disagreements(&p, &good).is_empty(), "{:?}", disagreements(&p, &good));

    // Wrong actions.
    let mut wrong = good.clone();
    wrong[0].2 = vec![DpAction::Output(3)];
    assert_eq!(disagreements(&p, &wrong).len(), 1);

    // A mask without a bit translation needed (tp_dst of the port-80 entry):
    // packets inside it go elsewhere.
    let mut wide = good.clone();
    wide[0].1.set(Field::TpDst, 0);
    let d = disagreements(&p, &wide);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].expected.contains("3:"), "{}", d[0]);

    // A stale cache: the rules changed and the entries were not maintained
    // (an engine that skipped an update, or missed an overlap).
    let changed = pipeline(
        "table=0,priority=10,ip,nw_dst=10.0.0.0/8,actions=goto_table:1\ntable=0,priority=0,actions=drop\n\
         table=1,priority=30,ip,nw_dst=10.1.0.0/16,actions=output:4\n\
         table=1,priority=20,tcp,tp_dst=80,actions=output:2\ntable=1,priority=10,ip,actions=output:3",
        "",
    );
    assert_eq!(disagreements(&changed, &good).len(), 2);
    // Re-made for the new rules, it is right again.
    assert!(disagreements(&changed, &cache(&changed, &packets)).is_empty());
}

/// Entries of a learning pipeline agree with the reference on what their
/// packets learn; one whose mask lets a source bit vary, or whose learned
/// flow is not the packet's, does not.
#[test]
fn the_check_covers_what_packets_learn() {
    let flows =
        "table=0,actions=learn(table=1,limit=2,result_dst=reg0[0],cookie=0x3,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],\
                 load:NXM_OF_IN_PORT[]->NXM_NX_REG1[0..15],output:NXM_OF_IN_PORT[]),resubmit(,2)\n\
                 table=1,cookie=0x3,dl_dst=02:00:00:00:00:07,actions=drop\n\
                 table=2,reg0=1,actions=output:1\ntable=2,reg0=0,actions=output:2";
    let p = pipeline(flows, "");
    let packets: Vec<String> = ["in_port=3,dl_src=02:00:00:00:00:01", "in_port=4,dl_src=02:00:00:00:00:07"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let good = cache(&p, &packets);
    assert_eq!(good[0].3.len(), 1);
    assert!(disagreements(&p, &good).is_empty(), "{:?}", disagreements(&p, &good));
    // The source MAC wildcarded: other MACs learn other flows.
    let mut wide = good.clone();
    wide[0].1.set(Field::EthSrc, 0);
    let d = disagreements(&p, &wide);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].expected.contains("learn"), "{}", d[0]);
    // A learned flow that is not the packet's.
    let mut other = good.clone();
    other[0].3[0].priority = 7;
    assert_eq!(disagreements(&p, &other).len(), 1);
    // The limit: with two flows of cookie 0x3 in table 1, a new flow is
    // refused (reg0=0: port 2) and one already there is not (port 1).
    let full = pipeline(&format!("{flows}\ntable=1,cookie=0x3,dl_dst=02:00:00:00:00:08,actions=drop"), "");
    let r = Reference::new(&full);
    let out = |s: &str| r.run(&parse_key(s).unwrap()).emitted.iter().map(|(port, _)| *port).collect::<Vec<_>>();
    assert_eq!(out("in_port=3,dl_src=02:00:00:00:00:01"), vec![2]);
    assert_eq!(out("in_port=3,dl_src=02:00:00:00:00:07"), vec![1]);
    assert!(disagreements(&full, &cache(&full, &packets)).is_empty());
}
