//! The DBSP view against kairo's caches: after loading and after every
//! update, each cached megaflow's traversal in the view must be the one the
//! cache holds (kairo's incremental engine on OF-DPA; full recomputation
//! on random pipelines, so the view is checked against recomputation too).
#![cfg(feature = "dbsp")]

use kairo_datapath::{Datapath, DpConfig};
use kairo_dbsp::{DbspView, Traffic};
use kairo_flow::FlowKey;
use kairo_maintain::shared::SharedControl;
use kairo_maintain::{parse_command, Control, EngineKind, FlowMod};
use kairo_xlate::Pipeline;
use proptest::prelude::*;

/// A cache of `keys` through `p`, maintained by `kind`.
fn cache(p: &Pipeline, kind: EngineKind, keys: impl IntoIterator<Item = FlowKey>) -> (Datapath, SharedControl) {
    let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 0, max_idle_ms: u64::MAX / 4, ..DpConfig::default() });
    let mut sc = SharedControl::new(Control::new(p.clone(), kind));
    for k in keys {
        dp.process_key_passes(&k, 64, 0, &mut sc);
    }
    (dp, sc)
}

fn ofdpa(routes: usize, keys: usize, updates: usize) -> (Pipeline, Vec<FlowKey>, Vec<FlowMod>) {
    let cb = kairo_workload::classbench::builtin_seed("of2").unwrap();
    let cfg = kairo_workload::ofdpa::OfdpaConfig { routes, ..Default::default() };
    let w = kairo_workload::ofdpa::generate(&cb, &cfg, 7);
    let p = Pipeline::from_parts(
        kairo_ofproto::parse_flow_file(&w.flows).unwrap(),
        kairo_ofproto::parse_group_file(&w.groups).unwrap(),
    )
    .unwrap();
    let mods = w.updates(&cb, updates, 7).iter().map(|(_, c, a)| parse_command(c, a).unwrap()).collect();
    (p, w.traffic_iter(7).take(keys).collect(), mods)
}

#[test]
fn ofdpa_view_follows_the_incremental_cache_through_its_update_stream() {
    let (p, keys, mods) = ofdpa(600, 3000, 60);
    let (_dp, sc) = cache(&p, EngineKind::Incremental, keys);
    let traffic = Traffic::of(&sc.lock().engine.entries());
    assert!(!traffic.second.is_empty(), "OF-DPA's ECMP groups recirculate: second passes expected");
    assert_eq!(traffic.left_out, 0);
    let mut view = DbspView::new(&p, &mods).unwrap();
    let load = view.load(&traffic).unwrap();
    assert_eq!(load.owners, traffic.len());
    let c = view.check_cache(&traffic, &sc.lock().engine.entries());
    assert_eq!(c.checked, traffic.len());
    assert!(c.mismatches.is_empty(), "after load: {:#?}", c.mismatches);
    let (mut affected, mut checked) = (0, 0);
    for fm in &mods {
        sc.lock().apply(fm).unwrap();
        let rep = view.apply(fm).unwrap();
        affected += rep.affected;
        let c = view.check_cache(&traffic, &sc.lock().engine.entries());
        checked += c.checked;
        assert!(c.mismatches.is_empty(), "after {fm:?}: {:#?}", c.mismatches);
    }
    // The stream changed what some cached flows do, and most stayed checked.
    assert!(affected > 0);
    assert!(checked > mods.len() * traffic.len() * 9 / 10, "{checked} checked");
}

/// The check has power: an update the view did not see leaves it wrong
/// for the megaflows the update changed.
#[test]
fn a_missed_update_is_found() {
    let (p, keys, mods) = ofdpa(600, 3000, 60);
    let (_dp, sc) = cache(&p, EngineKind::Incremental, keys);
    let traffic = Traffic::of(&sc.lock().engine.entries());
    let mut view = DbspView::new(&p, &mods).unwrap();
    view.load(&traffic).unwrap();
    let mut found = 0;
    for fm in &mods {
        // Each update goes to the cache; to the view only if the check
        // after the cache's change already finds the difference.
        sc.lock().apply(fm).unwrap();
        let c = view.check_cache(&traffic, &sc.lock().engine.entries());
        let rep = view.apply(fm).unwrap();
        if rep.affected > 0 && c.n_mismatches > 0 {
            found += 1;
        }
        if rep.affected > 0 {
            assert!(c.n_mismatches > 0, "the view was behind by {fm:?} and no check saw it");
        }
    }
    assert!(found > 0);
}

#[test]
fn what_the_view_cannot_model_is_refused_by_name() {
    let flows = "table=0,priority=10,ip,actions=resubmit(,1)\ntable=1,priority=1,actions=output:1\n";
    let p = Pipeline::from_parts(kairo_ofproto::parse_flow_file(flows).unwrap(), Vec::new()).unwrap();
    let e = DbspView::new(&p, &[]).err().expect("refused").to_string();
    assert!(e.contains("resubmit") && e.contains("table=0,priority=10"), "{e}");
    let flows = "table=0,priority=10,ip,actions=ct(table=1)\n";
    let p = Pipeline::from_parts(kairo_ofproto::parse_flow_file(flows).unwrap(), Vec::new()).unwrap();
    assert!(DbspView::new(&p, &[]).err().expect("refused").to_string().contains("ct"));
    // An update the view cannot take is refused before anything changes.
    let p = Pipeline::from_parts(
        kairo_ofproto::parse_flow_file("table=0,priority=1,actions=output:1\n").unwrap(),
        Vec::new(),
    )
    .unwrap();
    let mut view = DbspView::new(&p, &[]).unwrap();
    view.load(&Traffic { first: vec![FlowKey::ZERO], ..Traffic::default() }).unwrap();
    let fm = parse_command("add-flow", "table=0,priority=5,actions=learn(table=1,output:NXM_OF_IN_PORT[])").unwrap();
    assert!(view.apply(&fm).is_err());
    let fm = parse_command("add-flow", "table=0,priority=5,actions=output:2").unwrap();
    assert!(view.apply(&fm).is_ok(), "the view still works after a refused update");
}

/// A random pipeline's flow lines without what the view does not model,
/// groups in apply-actions moved to the action set.
fn modelled(flows: &str) -> String {
    const REFUSED: [&str; 12] = [
        "resubmit",
        "ct(",
        "ct_clear",
        "learn(",
        "NORMAL",
        "clone(",
        "mpls",
        "push:",
        "pop:",
        "dec_ttl",
        "conj",
        "fin_timeout",
    ];
    let mut out = String::new();
    for line in flows.lines() {
        if REFUSED.iter().any(|r| line.contains(r)) {
            continue;
        }
        match line.split_once("actions=") {
            Some((head, acts)) if !acts.contains("write_actions") => {
                let mut group = None;
                let mut kept: Vec<&str> = Vec::new();
                for a in acts.split(',') {
                    if a.starts_with("group:") && group.is_none() {
                        group = Some(a);
                    } else {
                        kept.push(a);
                    }
                }
                let mut v: Vec<String> =
                    kept.iter().filter(|a| !a.starts_with("goto_table")).map(|a| a.to_string()).collect();
                v.extend(group.map(|g| format!("write_actions({g})")));
                v.extend(kept.iter().filter(|a| a.starts_with("goto_table")).map(|a| a.to_string()));
                if v.len() > 1 {
                    v.retain(|a| a != "drop");
                }
                out.push_str(&format!("{head}actions={}\n", v.join(",")));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random pipelines, packets and updates: the view equals full
    /// recomputation's cache after loading and after every update.
    #[test]
    fn random_pipelines_follow_recomputation(seed in any::<u64>()) {
        let cfg = kairo_testkit::GenConfig {
            resubmit: false, conntrack: false, conjunction: false, normal: false, stack: false, learn: false,
            check_len: false,
            ..kairo_testkit::GenConfig::default()
        };
        let case = kairo_testkit::gen_case(seed, &cfg);
        let flows = modelled(&case.flows);
        let (Ok(ff), Ok(gs)) = (kairo_ofproto::parse_flow_file(&flows), kairo_ofproto::parse_group_file(&case.groups)) else {
            return Err(TestCaseError::reject("generated case does not parse once filtered"));
        };
        let Ok(p) = Pipeline::from_parts(ff.clone(), gs) else { return Err(TestCaseError::reject("pipeline")) };
        let keys: Vec<FlowKey> = kairo_testkit::gen_packets(seed, 40, cfg.n_ports)
            .iter()
            .filter_map(|s| kairo_flow::parse_key(s).ok())
            .collect();
        // Updates: delete a rule, add a fresh one, re-add the deleted one.
        let mut rng = kairo_testkit::rng(seed ^ 0xdb5);
        let mut mods = Vec::new();
        let extra = modelled(&(0..6).map(|i| kairo_testkit::gen_flow_line(&mut rng, &cfg, (i % cfg.n_tables as usize) as u8, &[])).collect::<Vec<_>>().join("\n"));
        for (i, r) in ff.rules.iter().enumerate().filter(|(i, _)| i % 3 == 0).take(6) {
            let sel = format!("table={},priority={},{}", r.table, r.priority, r.m);
            mods.push(parse_command("--strict del-flows", &sel).unwrap());
            if let Some(line) = extra.lines().nth(i / 3) {
                if let Ok(fm) = parse_command("add-flow", line) { mods.push(fm); }
            }
            mods.push(parse_command("add-flow", &format!("{sel},actions={}", r.inst)).unwrap());
        }
        let view = DbspView::new(&p, &mods);
        let Ok(mut view) = view else { return Err(TestCaseError::reject("refused")) };
        let (_dp, sc) = cache(&p, EngineKind::Full, keys);
        let traffic = Traffic::of(&sc.lock().engine.entries());
        view.load(&traffic).unwrap();
        let c = view.check_cache(&traffic, &sc.lock().engine.entries());
        prop_assert!(c.mismatches.is_empty(), "after load:\n{}\n{:#?}", flows, c.mismatches);
        for fm in &mods {
            sc.lock().apply(fm).unwrap();
            view.apply(fm).unwrap();
            let c = view.check_cache(&traffic, &sc.lock().engine.entries());
            prop_assert!(c.mismatches.is_empty(), "after {:?}:\n{}\n{:#?}", fm, flows, c.mismatches);
        }
    }
}

/// A transaction DBSP commits in several steps (a large load or change)
/// still reaches the view whole: every step's output counts.
#[test]
fn a_load_and_an_update_committed_in_several_steps_reach_the_view_whole() {
    let p = Pipeline::from_parts(
        kairo_ofproto::parse_flow_file("table=0,priority=1,actions=output:1\n").unwrap(),
        Vec::new(),
    )
    .unwrap();
    let n = 60_000u64;
    let first: Vec<FlowKey> = (0..n)
        .map(|i| {
            let mut k = FlowKey::ZERO;
            k.set(kairo_flow::Field::EthType, 0x0800);
            k.set(kairo_flow::Field::IpSrc, i);
            k
        })
        .collect();
    let fm = parse_command("add-flow", "table=0,priority=5,ip,nw_src=0.0.0.0/1,actions=output:2").unwrap();
    let mut view = DbspView::new(&p, std::slice::from_ref(&fm)).unwrap();
    let load = view.load(&Traffic { first, ..Traffic::default() }).unwrap();
    assert_eq!(view.owners(), n as usize);
    assert_eq!(load.rows, 2 * n as usize, "a step and an end per flow");
    let rep = view.apply(&fm).unwrap();
    assert_eq!(rep.affected, n as usize, "every flow now meets the new rule");
}
