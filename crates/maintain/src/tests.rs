//! The oracle at work: random pipelines, a cache filled by real upcalls, and
//! hundreds of random updates applied to both engines; after every update the
//! incremental cache must equal the full-revalidation cache and the oracle,
//! and cached forwarding must equal slow-path forwarding.

use std::collections::BTreeMap;
use std::sync::Arc;

use kairo_datapath::{Datapath, DpConfig};
use kairo_flow::{FlowKey, FlowMask};
use kairo_ofproto::{parse_flow_file, parse_group_file, MissBehavior};
use kairo_testkit::{
    gen_case, gen_clause_line, gen_flow_line, gen_group_line, gen_match_text, gen_packets, rng, GenConfig,
};
use kairo_xlate::{format_actions, translate, DpAction, Pipeline};
use rand::Rng;

use crate::shared::SharedControl;
use crate::*;

fn pipeline(flows: &str, groups: &str) -> Pipeline {
    Pipeline::from_parts(parse_flow_file(flows).unwrap(), parse_group_file(groups).unwrap()).unwrap()
}

/// A datapath filled by upcalls through a control with the given engine.
fn filled(p: &Pipeline, kind: EngineKind, packets: &[String]) -> (Datapath, SharedControl) {
    filled_with(p, kind.build(), packets)
}

fn filled_with(p: &Pipeline, engine: Box<dyn Engine>, packets: &[String]) -> (Datapath, SharedControl) {
    let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 1, ..DpConfig::default() });
    let mut c = Control::new(p.clone(), EngineKind::Full);
    c.engine = engine;
    let mut sc = SharedControl::new(c);
    for spec in packets {
        // Every pass of the packet: recirculated ones meet the cache too.
        for pass in kairo_xlate::recirc::follow(p, &kairo_flow::parse_key(spec).unwrap()) {
            dp.process_key(&pass.key, 64, None, 0, &mut sc);
        }
    }
    (dp, sc)
}

type CacheView = BTreeMap<(FlowKey, FlowMask), Vec<DpAction>>;

fn view(c: &Control) -> CacheView {
    c.engine.entries().iter().filter(|m| !m.is_dead()).map(|m| ((m.key(), *m.mask), (*m.actions()).clone())).collect()
}

/// A random update, as an ovs-ofctl command line (or a miss change / bundle).
fn gen_update(seed: u64, p: &Pipeline, cfg: &GenConfig) -> FlowMod {
    let mut r = rng(seed);
    let groups: Vec<u32> = p.groups().map(|g| g.id).collect();
    let rules: Vec<(u8, Arc<kairo_ofproto::Rule>)> =
        p.tables().flat_map(|(t, tb)| tb.cls.iter().map(move |c| (t, c.payload.clone()))).collect();
    let t = r.gen_range(0..cfg.n_tables);
    let one = |r: &mut rand::rngs::StdRng, kind: u32| -> Option<FlowMod> {
        let acts = || {
            let line = gen_flow_line(&mut rng(seed ^ 0xabc), cfg, t, &groups);
            line.split_once("actions=").map(|(_, a)| a.to_string()).unwrap_or_else(|| "drop".into())
        };
        let pick_rule =
            |r: &mut rand::rngs::StdRng| (!rules.is_empty()).then(|| rules[r.gen_range(0..rules.len())].clone());
        let text = |rule: &kairo_ofproto::Rule| {
            let m = rule.m.to_string();
            if m.is_empty() {
                format!("table={},priority={}", rule.table, rule.priority)
            } else {
                format!("table={},priority={},{m}", rule.table, rule.priority)
            }
        };
        match kind {
            0..=3 => parse_command("add-flow", &gen_flow_line(r, cfg, t, &groups)).ok(),
            4 => pick_rule(r).and_then(|(_, rule)| {
                parse_command("--strict mod-flows", &format!("{},actions={}", text(&rule), acts())).ok()
            }),
            5 => parse_command("mod-flows", &format!("table={t},{},actions={}", gen_match_text(r, cfg), acts())).ok(),
            6 => pick_rule(r).and_then(|(_, rule)| parse_command("--strict del-flows", &text(&rule)).ok()),
            7 => parse_command("del-flows", &format!("table={t},{}", gen_match_text(r, cfg))).ok(),
            8 => {
                let id = r.gen_range(1..6u32);
                let line = gen_group_line(r, cfg, id);
                if groups.contains(&id) {
                    match r.gen_range(0..10) {
                        0 => parse_command("del-groups", "").ok(),
                        1..=5 => parse_command("mod-group", &line).ok(),
                        _ => parse_command("del-groups", &format!("group_id={id}")).ok(),
                    }
                } else if r.gen_bool(0.3) && !groups.contains(&(id + 10)) {
                    // A group file: two new groups at once.
                    let other = gen_group_line(r, cfg, id + 10);
                    kairo_ofproto::parse_group_file(&format!("{other}\n{line}\n")).ok().map(FlowMod::AddGroups)
                } else {
                    parse_command("add-group", &line).ok()
                }
            }
            // A new member of a conjunctive flow (a clause of one that is
            // there, or a clause of it no flow had yet), or a clause
            // joining another conjunction in place of its own.
            9 if r.gen_bool(0.6) => {
                let clauses: Vec<&(u8, Arc<kairo_ofproto::Rule>)> =
                    rules.iter().filter(|(_, rule)| rule.inst.is_clause()).collect();
                let (ct, rule) = clauses.get(r.gen_range(0..clauses.len().max(1)))?;
                let (id, k, n) = rule.inst.conjunctions().next()?;
                let k = if r.gen_bool(0.3) { r.gen_range(1..=n) } else { k };
                if r.gen_bool(0.2) {
                    // An answer for it (another, or the first), at any priority.
                    let prio = if r.gen_bool(0.5) { rule.priority } else { r.gen_range(1..40u16) * 10 };
                    let m = if r.gen_bool(0.3) { "tcp" } else { "ip" };
                    let line = format!("table={ct},priority={prio},conj_id={id},{m},actions={}", acts());
                    parse_command("add-flow", &line).ok()
                } else if r.gen_bool(0.8) {
                    let line = gen_clause_line(r, cfg, *ct, rule.priority, &format!("conjunction({id},{k}/{n})"));
                    parse_command("add-flow", &line).ok()
                } else {
                    let other = if r.gen_bool(0.5) { id } else { id + 1 };
                    let a = format!("conjunction({other},{k}/{n})");
                    parse_command("--strict mod-flows", &format!("{},actions={a}", text(rule))).ok()
                }
            }
            // NORMAL's state: a port's VLAN settings, a MAC learned or
            // moved (as an upcall elsewhere would teach it), MACs aging
            // out, a flush.
            10 => Some(match r.gen_range(0..6) {
                0 | 1 => {
                    const SETTINGS: [&str; 6] = [
                        "tag=1",
                        "trunks=1,2",
                        "vlan_mode=native-untagged tag=1",
                        "vlan_mode=native-tagged tag=2 trunks=1",
                        "vlan_mode=access",
                        "trunks=0,3",
                    ];
                    let s = (r.gen_bool(0.8)).then(|| SETTINGS[r.gen_range(0..SETTINGS.len())]);
                    let s = s.map(|w| kairo_ofproto::ports::PortSettings::parse(w.split(' ')).expect("settings"));
                    FlowMod::SetPortSettings(r.gen_range(1..=cfg.n_ports), s)
                }
                2 | 3 => {
                    const MACS: [u64; 4] = [0x1, 0x2, 0xaa01, 0x0200_0000_0009];
                    let learned = (0..r.gen_range(1..3))
                        .map(|_| kairo_xlate::Learn {
                            vlan: r.gen_range(0..4),
                            mac: MACS[r.gen_range(0..MACS.len())],
                            port: r.gen_range(1..=cfg.n_ports + 1),
                        })
                        .collect();
                    FlowMod::Learn { learned, now: r.gen_range(0..400) }
                }
                4 => FlowMod::ExpireMacs(r.gen_range(0..800)),
                _ => FlowMod::FlushMacs(r.gen_bool(0.5).then(|| r.gen_range(0..4))),
            }),
            _ if r.gen_bool(0.3) => Some(FlowMod::SetPortLive(r.gen_range(1..=cfg.n_ports), r.gen_bool(0.5))),
            _ if r.gen_bool(0.3) => {
                Some(FlowMod::SetPorts((1..=cfg.n_ports + 1).filter(|_| r.gen_bool(0.7)).collect()))
            }
            _ => {
                let m = if t + 1 < cfg.n_tables && r.gen_bool(0.5) {
                    MissBehavior::Continue(r.gen_range(t + 1..cfg.n_tables))
                } else {
                    MissBehavior::Drop
                };
                Some(FlowMod::SetMiss(t, m))
            }
        }
    };
    let kind = r.gen_range(0..14u32);
    let fm = if kind >= 12 {
        one(&mut r, 10)
    } else if kind >= 10 {
        let n = r.gen_range(2..4);
        let mut mods = Vec::new();
        for _ in 0..n {
            let k = r.gen_range(0..11);
            mods.extend(one(&mut r, k));
        }
        Some(FlowMod::Bundle(mods))
    } else {
        one(&mut r, kind)
    };
    fm.unwrap_or(FlowMod::Bundle(vec![]))
}

fn describe(fm: &FlowMod) -> String {
    match fm {
        FlowMod::Add(r) => format!("add-flow {r}"),
        FlowMod::Modify { strict, spec } => format!(
            "mod-flows{} {:?} {} {:?}",
            if *strict { " --strict" } else { "" },
            spec.table,
            spec.m,
            spec.instructions.as_ref().map(|i| i.to_string())
        ),
        FlowMod::Delete { strict, spec } => format!(
            "del-flows{} {:?} {} prio {:?}",
            if *strict { " --strict" } else { "" },
            spec.table,
            spec.m,
            spec.priority
        ),
        FlowMod::AddGroup(g) => format!("add-group {g}"),
        FlowMod::AddGroups(gs) => {
            format!("add-groups [{}]", gs.iter().map(|g| g.to_string()).collect::<Vec<_>>().join("; "))
        }
        FlowMod::ModGroup(g) => format!("mod-group {g}"),
        FlowMod::DelGroup(g) => format!("del-groups {g:?}"),
        FlowMod::SetMiss(t, m) => format!("table {t} miss {m:?}"),
        FlowMod::SetPortLive(port, live) => format!("port {port} live {live}"),
        FlowMod::SetPorts(ports) => format!("ports {ports:?}"),
        FlowMod::SetPortSettings(port, s) => format!("port {port} settings {s:?}"),
        FlowMod::Learn { learned, now } => format!("learn {learned:?} at {now}"),
        FlowMod::ExpireMacs(now) => format!("expire MACs at {now}"),
        FlowMod::FlushMacs(vlan) => format!("flush MACs {vlan:?}"),
        FlowMod::CutTimeouts(cuts) => format!("cut timeouts {cuts:?}"),
        FlowMod::LearnFlows(learned) => {
            format!("learn [{}]", learned.iter().map(|l| l.rule.to_string()).collect::<Vec<_>>().join("; "))
        }
        FlowMod::Bundle(v) => format!("bundle[{}]", v.iter().map(describe).collect::<Vec<_>>().join("; ")),
    }
}

fn run_case(seed: u64, update_seeds: &[u64]) -> Result<(), String> {
    let cfg = GenConfig { n_tables: 4, rules_per_table: 3..9, ..GenConfig::default() };
    let case = gen_case(seed, &cfg);
    let mut p0 = pipeline(&case.flows, &case.groups);
    // The bridge's ports (what FLOOD and NORMAL send to), from the start.
    p0.set_ports(1..=cfg.n_ports);
    let packets = gen_packets(seed, 120, 4);
    let (mut dp_full, full) = filled(&p0, EngineKind::Full, &packets);
    // Shared action cells anchored at a random set of tables (none in a
    // quarter of the cases).
    let mut anchors = kairo_xlate::TableSet::default();
    for t in 0..cfg.n_tables {
        if !seed.is_multiple_of(4) && (seed >> (8 + t)) & 1 == 1 {
            anchors.insert(t);
        }
    }
    let (mut dp_inc, inc) = filled_with(&p0, Box::new(Incremental::with_anchors(anchors)), &packets);
    if let Err(e) = inc.lock().engine.check() {
        return Err(format!("after filling: {e}"));
    }
    if view(&full.lock()) != view(&inc.lock()) {
        return Err("caches differ before any update".into());
    }
    let mut applied = Vec::new();
    for (i, us) in update_seeds.iter().enumerate() {
        let fm = gen_update(*us, &inc.lock().pipeline(), &cfg);
        let rf = full.lock().apply(&fm);
        let ri = inc.lock().apply(&fm);
        applied.push(describe(&fm));
        let fail = |what: String| {
            Err(format!(
                "{what}\nafter updates:\n  {}\nflows:\n{}\ngroups:\n{}",
                applied.join("\n  "),
                case.flows,
                case.groups
            ))
        };
        match (&rf, &ri) {
            (Ok(_), Ok(_)) => {}
            (Err(a), Err(b)) if a == b => continue,
            _ => return fail(format!("engines disagree on accepting the update: {rf:?} vs {ri:?}")),
        }
        let (vf, vi) = (view(&full.lock()), view(&inc.lock()));
        if vf != vi {
            let only_f: Vec<String> = vf
                .iter()
                .filter(|(k, a)| vi.get(k) != Some(a))
                .map(|((k, m), a)| {
                    format!("{} -> {}", kairo_flow::format_megaflow(k, m), kairo_xlate::format_actions(a))
                })
                .collect();
            let only_i: Vec<String> = vi
                .iter()
                .filter(|(k, a)| vf.get(k) != Some(a))
                .map(|((k, m), a)| {
                    format!("{} -> {}", kairo_flow::format_megaflow(k, m), kairo_xlate::format_actions(a))
                })
                .collect();
            return fail(format!("update {i}: incremental cache differs from full revalidation\n full only: {only_f:#?}\n incremental only: {only_i:#?}"));
        }
        let mm = inc.lock().verify();
        if !mm.is_empty() {
            return fail(format!("update {i}: oracle mismatches: {mm:#?}"));
        }
        // And the reference, which shares no code with the engines: packets
        // drawn inside every entry leave as it says. What entries learn is
        // checked after every other update, housekept first (a shared
        // cell's members get the traversals that go with new actions, and
        // with them the flows they learn, in housekeeping).
        let housekept = i % 2 == 1;
        if housekept {
            inc.lock().housekeep();
        }
        {
            let c = inc.lock();
            let reference = kairo_oracle::Reference::new(&c.pipeline());
            let mut r = rng(seed ^ ((i as u64) << 32));
            for mf in c.engine.entries() {
                let learned = learned_rules(&mf.traversal());
                let learned = housekept.then_some(learned.as_slice());
                if let Some(d) =
                    kairo_oracle::check_entry(&reference, &mf.rep, &mf.mask, &mf.actions(), learned, 12, &mut r)
                {
                    let k = kairo_flow::parse_key(&d.packet).ok();
                    let tr = k.map(|k| format!("{:?}", translate(&c.pipeline(), &k).traversal)).unwrap_or_default();
                    let state = pipeline_state(&c.pipeline());
                    drop(c);
                    return fail(format!(
                        "update {i}: the reference disagrees: {d}\ntranslation: {tr}\npipeline now:\n{state}"
                    ));
                }
            }
        }
        // Deferred index bookkeeping: done between some updates, left to the
        // next pass between others; the index holds its invariants either way.
        if us % 3 == 0 {
            inc.lock().housekeep();
            // Once nothing waits, every entry's traversal is translation's
            // (those of entries that took a shared suffix were built, not
            // re-translated).
            let c = inc.lock();
            for mf in c.engine.entries() {
                let want = translate(&c.pipeline(), &mf.rep).traversal;
                if *mf.traversal() != want {
                    let (mf, w) = (format!("{:?}", mf.traversal()), format!("{want:?}"));
                    drop(c);
                    return fail(format!(
                        "update {i}: a traversal differs from translation's:
 {mf}
 {w}"
                    ));
                }
            }
        }
        if let Err(e) = inc.lock().engine.check() {
            return fail(format!("update {i}: index: {e}"));
        }
        if i % 25 == 24 {
            // Cached forwarding equals slow-path forwarding, through EMC, megaflows and upcalls.
            let mut scf = full.clone();
            let mut sci = inc.clone();
            let p = inc.lock().pipeline().clone();
            let keys = gen_packets(seed ^ *us, 40, 4).into_iter().flat_map(|spec| {
                kairo_xlate::recirc::follow(&p, &kairo_flow::parse_key(&spec).unwrap())
                    .into_iter()
                    .map(move |pass| (spec.clone(), pass.key))
            });
            for (spec, k) in keys {
                let want = translate(&inc.lock().pipeline(), &k).actions;
                let gi = dp_inc.process_key(&k, 64, None, 1, &mut sci);
                let gf = dp_full.process_key(&k, 64, None, 1, &mut scf);
                if *gi != want || *gf != want {
                    return fail(format!(
                        "update {i}: packet {spec} forwarded with {} (incremental) / {} (full), slow path says {}",
                        kairo_xlate::format_actions(&gi),
                        kairo_xlate::format_actions(&gf),
                        kairo_xlate::format_actions(&want)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every live megaflow of `dp` (and of `extra`) forwards its packet as the
/// pipeline says now.
fn datapath_true_to(dp: &Datapath, extra: &[Arc<Megaflow>], p: &Pipeline) -> Result<(), String> {
    for mf in dp.megaflows().chain(extra).filter(|m| !m.is_dead()) {
        let want = translate(p, &mf.rep).actions;
        if *mf.actions() != want {
            return Err(format!(
                "megaflow {} has {}, the rules say {}",
                kairo_flow::format_megaflow(&mf.key(), &mf.mask),
                format_actions(&mf.actions()),
                format_actions(&want)
            ));
        }
    }
    Ok(())
}

/// Misses while an update holds the control state throughout: random
/// packets (through the datapath, so every upcall is translated against the
/// published tables and its megaflow offered for later) between random
/// updates made under that state, and upcalls whose megaflows are offered
/// only some steps later (as a forwarding thread racing an update would:
/// translated before it, offered after). After every step every megaflow the
/// datapath holds forwards as the rules say (none was kept stale), and
/// once the state is let go (registrations and lessons settled) the cache
/// equals recomputation and the reference.
fn run_busy_case(seed: u64, ops: &[u64]) -> Result<(), String> {
    use kairo_datapath::{Packet, SlowPath};
    let cfg = GenConfig { n_tables: 4, rules_per_table: 3..9, ..GenConfig::default() };
    let case = gen_case(seed, &cfg);
    let mut p0 = pipeline(&case.flows, &case.groups);
    p0.set_ports(1..=cfg.n_ports);
    let keys: Vec<FlowKey> = gen_packets(seed, 60, 4).iter().map(|s| key(s)).collect();
    let sc = SharedControl::new(Control::new(p0, EngineKind::Incremental));
    let mut fwd = sc.clone();
    let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 1, ..DpConfig::default() });
    let mut applied = Vec::new();
    let fail = |what: String, applied: &[String]| {
        Err(format!(
            "{what}\nafter updates:\n  {}\nflows:\n{}\ngroups:\n{}",
            applied.join("\n  "),
            case.flows,
            case.groups
        ))
    };
    // Upcalls answered and not yet offered; megaflows offered that way.
    let (mut answered, mut extra) = (None, Vec::new());
    let mut update = sc.lock();
    for (i, op) in ops.iter().enumerate() {
        if op % 3 == 0 {
            let fm = gen_update(*op, &update.pipeline(), &cfg);
            applied.push(describe(&fm));
            let _ = update.apply(&fm);
        } else if op % 5 == 1 {
            let k = keys[(op >> 16) as usize % keys.len()];
            match answered.take() {
                None => answered = fwd.try_upcall(&k, 0).map(|up| (k, up)),
                Some((k, up)) if up.install => {
                    let mf = Arc::new(Megaflow::new(k, Arc::new(up.mask), up.actions.clone(), 1));
                    if fwd.try_installed(&mf, up.note, up.version).is_ok() {
                        extra.push(mf);
                    }
                }
                Some(_) => {}
            }
        } else {
            let n = 1 + (op >> 8) as usize % 4;
            let mut batch: Vec<Packet> = (0..n)
                .map(|j| {
                    let k = keys[((op >> 16) as usize + j) % keys.len()];
                    Packet::new(kairo_wire::emit::frame(&k, &[]), k.get(kairo_flow::Field::InPort) as u32)
                })
                .collect();
            dp.process_packets(&mut batch, 1, &mut fwd, &mut |_, _, _| {});
        }
        if let Err(e) = datapath_true_to(&dp, &extra, &update.pipeline()) {
            return fail(format!("step {i}: {e}"), &applied);
        }
    }
    if dp.n_parked() != 0 {
        return fail(format!("{} packets parked though the tables never changed under them", dp.n_parked()), &applied);
    }
    let late = sc.published().late();
    if dp.stats.misses == 0 || late.translated < dp.stats.misses {
        return fail(
            format!("{late:?} for {} misses: not every miss was translated outside", dp.stats.misses),
            &applied,
        );
    }
    drop(update);
    let c = sc.lock();
    if let Err(e) = datapath_true_to(&dp, &extra, &c.pipeline()) {
        return fail(format!("settled: {e}"), &applied);
    }
    let mm = c.verify();
    if !mm.is_empty() {
        return fail(format!("settled: oracle mismatches: {mm:#?}"), &applied);
    }
    let reference = kairo_oracle::Reference::new(&c.pipeline());
    let mut r = rng(seed);
    for mf in c.engine.entries() {
        if let Some(d) = kairo_oracle::check_entry(&reference, &mf.rep, &mf.mask, &mf.actions(), None, 12, &mut r) {
            return fail(format!("settled: the reference disagrees: {d}"), &applied);
        }
    }
    let live = dp.megaflows().chain(&extra).filter(|m| !m.is_dead()).count();
    let registered = c.engine.entries().iter().filter(|m| !m.is_dead()).count();
    if live != registered {
        return fail(
            format!("settled: the datapath holds {live} live megaflows, maintenance knows {registered}"),
            &applied,
        );
    }
    Ok(())
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("KAIRO_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
            max_shrink_iters: 200,
            ..ProptestConfig::default()
        })]

        /// At least 200 random updates per case; a failure shrinks to the
        /// minimal update sequence and prints it.
        #[test]
        fn incremental_equals_full_revalidation(seed in any::<u64>(), updates in proptest::collection::vec(any::<u64>(), 200..=220)) {
            if let Err(e) = run_case(seed, &updates) {
                prop_assert!(false, "{}", e);
            }
        }

        /// Misses during updates (translated against the published tables)
        /// leave no megaflow stale and every one maintained.
        #[test]
        fn misses_during_updates_stay_exact(seed in any::<u64>(), ops in proptest::collection::vec(any::<u64>(), 100..=150)) {
            if let Err(e) = run_busy_case(seed, &ops) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

fn key(s: &str) -> FlowKey {
    kairo_flow::parse_key(s).unwrap()
}

/// NORMAL on a bridge of four trunk ports: a packet's source MAC is learned
/// on its upcall, and each change of the MAC table (learned, moved, aged
/// out) re-translates exactly the entries that sent to that MAC: the
/// others are not looked at.
#[test]
fn a_mac_learned_moved_or_aged_out_retranslates_only_the_entries_sent_to_it() {
    let mut p = pipeline("actions=NORMAL", "");
    p.set_ports([1, 2, 3, 4]);
    let mac = |i: u64| format!("02:00:00:00:00:{i:02x}");
    // Hosts 1..=8 talk to host 9 (not heard from yet) and to each other.
    let mut pkts = Vec::new();
    for i in 1..=8u64 {
        pkts.push(format!("in_port={},dl_src={},dl_dst={},ip", 1 + i % 2, mac(i), mac(9)));
        pkts.push(format!("in_port={},dl_src={},dl_dst={},ip", 1 + i % 2, mac(i), mac(i % 8 + 1)));
    }
    let (mut dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
    let to9 = |c: &Control| {
        c.engine.entries().iter().filter(|m| m.rep.get(kairo_flow::Field::EthDst) == 0x0200_0000_0009).count()
    };
    let n = inc.lock().engine.len();
    let n9 = to9(&inc.lock());
    assert!(n9 == 8 && n > n9, "{n9} of {n}");
    // Everything to 9 floods; host 9 speaks from port 3: learned.
    let flood = inc.lock().engine.entries().iter().filter(|m| m.actions().len() == 3).count();
    assert!(flood >= 8, "{flood}");
    let mut sc = inc.clone();
    let k9 = key(&format!("in_port=3,dl_src={},dl_dst={},ip", mac(9), mac(1)));
    dp.process_key(&k9, 64, None, 0, &mut sc);
    assert_eq!(inc.lock().pipeline().macs().lookup(0, 0x0200_0000_0009), Some(3));
    let sent_to_9 = |c: &Control| {
        c.engine
            .entries()
            .iter()
            .filter(|m| m.rep.get(kairo_flow::Field::EthDst) == 0x0200_0000_0009)
            .map(|m| kairo_xlate::format_actions(&m.actions()))
            .collect::<Vec<_>>()
    };
    assert_eq!(sent_to_9(&inc.lock()), vec!["3"; 8]);
    assert!(inc.lock().verify().is_empty());
    // It moves to port 4 (at 100 s): exactly the eight entries are
    // re-translated (once the learning upcall's deferred bookkeeping is
    // done: a pass counts what it finds pending in its own).
    inc.lock().housekeep();
    inc.lock().clock = 100;
    let rep = inc
        .lock()
        .learn(&[kairo_xlate::Learn { vlan: 0, mac: 0x0200_0000_0009, port: 4 }])
        .expect("a move is an update");
    assert_eq!(rep.examined, 8, "{rep}");
    assert_eq!(sent_to_9(&inc.lock()), vec!["4"; 8]);
    // The same again only refreshes: no update.
    assert!(inc.lock().learn(&[kairo_xlate::Learn { vlan: 0, mac: 0x0200_0000_0009, port: 4 }]).is_none());
    // At 300 s the others (learned at 0) age out: the entries that sent
    // to them (all but the eight, host 9's own included) flood now.
    let rep = inc.lock().tick(300_000).expect("hosts 1..8 age out");
    assert_eq!(rep.examined, n + 1 - 8, "{rep}");
    assert!(inc.lock().verify().is_empty());
    // At 400 s, host 9 too.
    let rep = inc.lock().tick(400_000).expect("9 ages out");
    assert_eq!(rep.examined, 8, "{rep}");
    assert!(sent_to_9(&inc.lock()).iter().all(|a| a.split(',').count() == 3));
    assert!(inc.lock().verify().is_empty());
    assert_eq!(inc.lock().engine.len(), n + 1);
}

/// A MAC whose traffic runs on megaflows alone (no upcall learns it again)
/// stays learned: the megaflows NORMAL made that carried its frames
/// refresh it (as Open vSwitch's revalidators do); one that stops sending
/// ages out.
#[test]
fn megaflows_that_carry_a_mac_s_traffic_keep_it_learned() {
    let mut p = pipeline("actions=NORMAL", "");
    p.set_ports([1, 2]);
    let pkts = [
        "in_port=1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,ip".to_string(),
        "in_port=2,dl_src=02:00:00:00:00:02,dl_dst=02:00:00:00:00:01,ip".to_string(),
    ];
    let (mut dp, sc) = filled(&p, EngineKind::Incremental, &pkts);
    assert_eq!(sc.lock().pipeline().macs().len(), 2);
    let mut slow = sc.clone();
    // For ten minutes host 1 sends every 10 s (megaflow hits only) and
    // host 2 is silent; the switch ticks every 10 s.
    let k1 = key(&pkts[0]);
    let misses = dp.stats.misses;
    for t in (10..=600u64).step_by(10) {
        dp.process_key(&k1, 64, None, t * 1000, &mut slow);
        sc.lock().tick(t * 1000);
    }
    assert_eq!(dp.stats.misses, misses, "host 1's frames all hit their megaflow");
    let c = sc.lock();
    assert_eq!(c.pipeline().macs().lookup(0, 0x0200_0000_0001), Some(1), "host 1 refreshed by its megaflow");
    assert_eq!(c.pipeline().macs().lookup(0, 0x0200_0000_0002), None, "host 2 aged out");
    // Host 1's frames to host 2 flood now; host 2's to host 1 still go to port 1.
    assert!(c.verify().is_empty());
}

/// A host that moves is not sent back by its old traffic: the megaflow
/// that carried its frames from the old port, used just before the move
/// and so in the refresh that follows it, does not undo what the later
/// packet from the new port taught (the MAC table's refresh, which Open
/// vSwitch's revalidators also do, arbitrates by packet time). A frame
/// from the old port after that moves it back, as it would packet by packet.
#[test]
fn a_refresh_from_traffic_older_than_a_move_does_not_undo_it() {
    let mut p = pipeline("actions=NORMAL", "");
    p.set_ports([1, 2, 3, 4]);
    let (x, h1) = ("02:00:00:00:00:09", "02:00:00:00:00:01");
    let (mut dp, sc) = filled(&p, EngineKind::Incremental, &[format!("in_port=1,dl_src={h1},dl_dst={x},ip")]);
    let mut slow = sc.clone();
    let from = |port: u32| key(&format!("in_port={port},dl_src={x},dl_dst={h1},ip"));
    let port_of_x = |sc: &SharedControl| sc.lock().pipeline().macs().lookup(0, 0x0200_0000_0009);
    dp.process_key(&from(3), 64, None, 1_000, &mut slow);
    assert_eq!(port_of_x(&sc), Some(3));
    dp.process_key(&from(4), 64, None, 1_500, &mut slow);
    assert_eq!(port_of_x(&sc), Some(4), "moved");
    // The refresh (every quarter of the aging time) reads both megaflows:
    // port 3's was used at 1.0 s, port 4's at 1.5 s.
    sc.lock().tick(75_000);
    assert_eq!(port_of_x(&sc), Some(4), "the refresh kept the later packet's lesson");
    assert!(sc.lock().verify().is_empty());
    // Both megaflows hit since (no upcall), port 4's last: its lesson.
    dp.process_key(&from(3), 64, None, 76_000, &mut slow);
    dp.process_key(&from(4), 64, None, 77_000, &mut slow);
    sc.lock().tick(150_000);
    assert_eq!(port_of_x(&sc), Some(4), "of two megaflows' lessons, the later one's");
    // x speaks from port 3 again (its megaflow, no upcall): the next
    // refresh moves it back.
    dp.process_key(&from(3), 64, None, 151_000, &mut slow);
    sc.lock().tick(225_000);
    assert_eq!(port_of_x(&sc), Some(3), "a later frame from the old port moves it back");
    assert!(sc.lock().verify().is_empty());
    // A move taught by a packet that left no megaflow behind (at 226 s):
    // the next refresh sees only port 3's megaflow, used before it.
    dp.process_key(&from(3), 64, None, 225_500, &mut slow);
    sc.lock().learn_at(vec![(kairo_xlate::Learn { vlan: 0, mac: 0x0200_0000_0009, port: 2 }, 226_000)]);
    assert_eq!(port_of_x(&sc), Some(2));
    sc.lock().tick(300_000);
    assert_eq!(port_of_x(&sc), Some(2), "a refresh from traffic before the move left it");
    assert!(sc.lock().verify().is_empty());
}

/// The same for a flow `learn` made: a megaflow's refresh of a learned
/// flow from a packet older than the one whose lesson the flow holds now
/// does not undo it; a later one does.
#[test]
fn a_learned_flow_keeps_the_latest_packets_lesson() {
    let flows = "table=0,priority=10,actions=learn(table=1,idle_timeout=120,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],\
                 load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15]),resubmit(,1),resubmit(,2)\n\
                 table=2,priority=10,reg0=0,actions=FLOOD\n\
                 table=2,priority=5,actions=output:NXM_NX_REG0[0..15]";
    let mut p = pipeline(flows, "");
    p.set_ports([1, 2, 3, 4]);
    let (x, h1) = ("02:00:00:00:00:09", "02:00:00:00:00:01");
    let (mut dp, sc) = filled(&p, EngineKind::Incremental, &[]);
    let mut slow = sc.clone();
    let from = |port: u32| key(&format!("in_port={port},dl_src={x},dl_dst={h1},ip"));
    let to_x = key(&format!("in_port=1,dl_src={h1},dl_dst={x},ip"));
    let out = |sc: &SharedControl| format_actions(&translate(&sc.lock().pipeline(), &to_x).actions);
    // (The first packet's megaflow goes at once: the flow it learned
    // widened its lookup in table 1; the second's stays.)
    dp.process_key(&from(3), 64, None, 900, &mut slow);
    dp.process_key(&from(3), 64, None, 1_000, &mut slow);
    assert_eq!(out(&sc), "3");
    dp.process_key(&from(4), 64, None, 1_500, &mut slow);
    assert_eq!(out(&sc), "4", "learned again on port 4");
    // The refresh (every second) reads both megaflows, used at 1.0 and 1.5 s.
    sc.lock().tick(2_000);
    assert_eq!(out(&sc), "4", "the refresh kept the later packet's lesson");
    assert!(sc.lock().verify().is_empty());
    dp.process_key(&from(3), 64, None, 2_100, &mut slow);
    dp.process_key(&from(4), 64, None, 2_200, &mut slow);
    sc.lock().tick(3_000);
    assert_eq!(out(&sc), "4", "of two megaflows' lessons, the later one's");
    dp.process_key(&from(3), 64, None, 3_500, &mut slow);
    sc.lock().tick(4_100);
    assert_eq!(out(&sc), "3", "a later frame from port 3 learns it there again");
    assert!(sc.lock().verify().is_empty());
    // A lesson from a packet that left no megaflow behind (port 2, at
    // 4.6 s): the next refresh sees only port 3's megaflow, used before it.
    dp.process_key(&from(3), 64, None, 4_500, &mut slow);
    let learned = translate(&sc.lock().pipeline(), &from(2)).traversal.learned.expect("a learn ran");
    sc.lock().learn_flows(learned.iter().map(|l| (l.clone(), 4_600)));
    assert_eq!(out(&sc), "2");
    sc.lock().tick(5_200);
    assert_eq!(out(&sc), "2", "a refresh from traffic before the lesson left it");
    assert!(sc.lock().verify().is_empty());
}

#[test]
fn route_insert_touches_only_the_overlapping_entries() {
    let p = pipeline("table=0,priority=8,ip,nw_dst=10.0.0.0/8,actions=output:1\ntable=0,priority=8,ip,nw_dst=11.0.0.0/8,actions=output:2", "");
    let pkts: Vec<String> = (0..50)
        .map(|i| format!("in_port=9,ip,nw_dst=10.{i}.0.1"))
        .chain((0..50).map(|i| format!("in_port=9,ip,nw_dst=11.{i}.0.1")))
        .collect();
    let (_dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
    let n = inc.lock().engine.len();
    assert!(n >= 2, "{n}");
    // Exactly the entries whose region overlaps the new route are examined
    // (counted here from their keys and masks: none in 10/8).
    let overlapping = inc
        .lock()
        .engine
        .entries()
        .iter()
        .filter(|m| {
            let ip = kairo_flow::Field::IpDst;
            (m.rep.get(ip) ^ 0x0b03_0000) & m.mask.get(ip) & 0xffff_ff00 == 0
        })
        .count();
    assert!(overlapping >= 1 && overlapping < n, "{overlapping} of {n}");
    let rep = inc
        .lock()
        .apply(&parse_command("add-flow", "table=0,priority=24,ip,nw_dst=11.3.0.0/24,actions=output:3").unwrap())
        .unwrap();
    assert_eq!(rep.examined, overlapping, "{rep}");
    assert!(inc.lock().verify().is_empty());
    let (_dpf, full) = filled(&p, EngineKind::Full, &pkts);
    let repf = full
        .lock()
        .apply(&parse_command("add-flow", "table=0,priority=24,ip,nw_dst=11.3.0.0/24,actions=output:3").unwrap())
        .unwrap();
    assert_eq!(repf.examined, n);
    assert_eq!(view(&full.lock()), view(&inc.lock()));
}

#[test]
fn a_bucket_change_of_a_datapath_hashed_group_takes_only_its_second_passes() {
    // Routes to an ECMP group hashed in the datapath (as Open vSwitch's
    // default): first passes freeze for the hash, second passes pick.
    let p = pipeline(
        "table=0,priority=8,ip,nw_dst=10.0.0.0/8,actions=dec_ttl,group:1\ntable=0,priority=8,ip,nw_dst=11.0.0.0/8,actions=output:4",
        "group_id=1,type=select,bucket=bucket_id:1,actions=output:1,bucket=bucket_id:2,actions=output:2",
    );
    let pkts: Vec<String> = (0..200)
        .map(|i| {
            format!("in_port=9,tcp,nw_src=1.2.{}.{},nw_dst=10.{i}.0.1,nw_ttl=9,tp_src={i},tp_dst=80", i / 7, i % 7)
        })
        .chain((0..20).map(|i| format!("in_port=9,ip,nw_dst=11.{i}.0.1")))
        .collect();
    let (_dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
    let entries = inc.lock().engine.entries();
    let second: Vec<_> = entries.iter().filter(|m| m.rep.get(kairo_flow::Field::RecircId) != 0).collect();
    let first = entries.len() - second.len();
    // Megaflows of the first pass match no transport port; one per TTL and
    // hash slot on the second (16 slots for two buckets).
    assert!(first >= 1 && second.len() >= 2 && second.len() <= 16, "{first} first, {} second", second.len());
    let change = "group_id=1,type=select,bucket=bucket_id:1,actions=output:1,bucket=bucket_id:2,actions=output:3";
    let rep = inc.lock().apply(&parse_command("mod-group", change).unwrap()).unwrap();
    assert_eq!(rep.examined, second.len(), "{rep}");
    assert!(rep.updated >= 1, "{rep}");
    assert!(inc.lock().verify().is_empty());
    let (_dpf, full) = filled(&p, EngineKind::Full, &pkts);
    full.lock().apply(&parse_command("mod-group", change).unwrap()).unwrap();
    assert_eq!(view(&full.lock()), view(&inc.lock()));
    // A change of how it is hashed takes the first passes too.
    let rehash = "group_id=1,type=select,selection_method=dp_hash,selection_method_param=7,bucket=bucket_id:1,actions=output:1,bucket=bucket_id:2,actions=output:3";
    let users =
        inc.lock().engine.entries().iter().filter(|m| m.traversal().groups.iter().any(|g| g.group == 1)).count();
    assert!(users > second.len(), "{users}");
    let rep = inc.lock().apply(&parse_command("mod-group", rehash).unwrap()).unwrap();
    assert_eq!(rep.examined, users, "{rep}");
    full.lock().apply(&parse_command("mod-group", rehash).unwrap()).unwrap();
    assert_eq!(view(&full.lock()), view(&inc.lock()));
}

/// States frozen inside the lists of a `check_pkt_len` are in use too.
#[test]
fn frozen_states_used_inside_check_pkt_len_are_kept() {
    let p = pipeline(
        "table=0,priority=8,ip,actions=move:NXM_OF_IP_SRC[]->NXM_NX_REG0[],check_pkt_larger(100)->reg1[0],group:1",
        "group_id=1,type=select,bucket=actions=output:1,bucket=actions=output:2",
    );
    let pkts: Vec<String> = (0..10).map(|i| format!("in_port=9,ip,nw_src=10.0.0.{i}")).collect();
    let (_dp, c) = filled(&p, EngineKind::Incremental, &pkts);
    // Two per source address: one for each list.
    assert_eq!(c.lock().pipeline().recircs().len(), 20);
    for i in 0..1100 {
        let k = key(&format!("in_port=9,ip,nw_src=10.1.{}.{}", i / 250, i % 250));
        kairo_xlate::translate(&c.lock().pipeline(), &k);
    }
    assert_eq!(c.lock().pipeline().recircs().len(), 2220);
    assert_eq!(c.lock().retire_frozen(), 2200);
    assert_eq!(c.lock().pipeline().recircs().len(), 20);
    assert!(c.lock().verify().is_empty());
}

#[test]
fn frozen_states_no_megaflow_uses_are_retired() {
    // Each source address freezes its own state (reg0 holds it).
    let p = pipeline(
        "table=0,priority=8,ip,actions=move:NXM_OF_IP_SRC[]->NXM_NX_REG0[],group:1",
        "group_id=1,type=select,bucket=actions=output:1,bucket=actions=output:2",
    );
    let pkts: Vec<String> = (0..10).map(|i| format!("in_port=9,ip,nw_src=10.0.0.{i}")).collect();
    let (_dp, c) = filled(&p, EngineKind::Incremental, &pkts);
    let in_use = c.lock().pipeline().recircs().len();
    assert_eq!(in_use, 10);
    // Translations that install nothing (a trace, a full cache) leave states behind.
    let spare: Vec<u32> = (0..3000)
        .map(|i| {
            let k = key(&format!("in_port=9,ip,nw_src=10.1.{}.{}", i / 250, i % 250));
            match kairo_xlate::translate(&c.lock().pipeline(), &k).actions.last() {
                Some(DpAction::Recirc(id)) => *id,
                a => panic!("{a:?}"),
            }
        })
        .collect();
    assert_eq!(c.lock().pipeline().recircs().len(), 3010);
    assert_eq!(c.lock().retire_frozen(), 3000);
    assert_eq!(c.lock().pipeline().recircs().len(), 10);
    // Below twice what is in use plus 1024, nothing is walked.
    assert_eq!(c.lock().retire_frozen(), 0);
    // A packet still carrying a retired id is dropped, and no megaflow holds it.
    let mut k = key("in_port=9,ip,nw_src=10.1.0.0");
    k.set(kairo_flow::Field::RecircId, u64::from(spare[0]));
    k.set(kairo_flow::Field::DpHash, 5);
    let r = kairo_xlate::translate(&c.lock().pipeline(), &k);
    assert!(r.slow && r.actions.is_empty(), "{r:?}");
    assert!(matches!(r.error, Some(kairo_xlate::XlateError::NoRecirculationContext { .. })));
    // What the cache uses still translates as before.
    assert!(c.lock().verify().is_empty());
}

#[test]
fn delete_modify_group_and_miss_changes() {
    let p = pipeline(
        "#@ table=1 miss=drop\ntable=0,priority=10,tcp,actions=goto_table:1\ntable=0,priority=5,udp,actions=group:1\ntable=1,priority=10,tcp,tp_dst=80,actions=output:2",
        "group_id=1,type=all,bucket=output:3",
    );
    let pkts = vec![
        "in_port=1,tcp,tp_dst=80".to_string(),
        "in_port=1,tcp,tp_dst=22".to_string(),
        "in_port=1,udp,tp_dst=53".to_string(),
    ];
    for kind in [EngineKind::Full, EngineKind::Incremental] {
        let (mut dp, sc) = filled(&p, kind, &pkts);
        let mut s2 = sc.clone();
        let upd = |c: &SharedControl, cmd: &str, arg: &str| c.lock().apply(&parse_command(cmd, arg).unwrap()).unwrap();
        let r = upd(&sc, "--strict mod-flows", "table=1,priority=10,tcp,tp_dst=80,actions=output:4");
        assert_eq!(r.updated, 1, "{}: {r}", sc.lock().engine.name());
        assert_eq!(*dp.process_key(&key("in_port=1,tcp,tp_dst=80"), 1, None, 0, &mut s2), vec![DpAction::Output(4)]);
        let r = upd(&sc, "mod-group", "group_id=1,type=all,bucket=output:5");
        assert_eq!(r.updated, 1);
        assert_eq!(*dp.process_key(&key("in_port=1,udp,tp_dst=53"), 1, None, 0, &mut s2), vec![DpAction::Output(5)]);
        let c = sc.lock().apply(&FlowMod::SetMiss(1, MissBehavior::Continue(2))).unwrap();
        assert_eq!(c.examined, if kind == EngineKind::Full { 3 } else { 1 });
        let r = upd(&sc, "del-groups", "group_id=1");
        assert_eq!(r.updated + r.evicted, 1, "the udp entry used the group (its rule is deleted with it): {r}");
        assert!(sc.lock().pipeline().group(1).is_none());
        assert_eq!(*dp.process_key(&key("in_port=1,udp,tp_dst=53"), 1, None, 0, &mut s2), vec![]);
        let r = upd(&sc, "del-flows", "table=0,tcp");
        assert!(r.evicted >= 2 || r.updated >= 2, "{r}");
        assert!(sc.lock().verify().is_empty());
        assert_eq!(*dp.process_key(&key("in_port=1,tcp,tp_dst=80"), 1, None, 0, &mut s2), vec![]);
    }
}

#[test]
fn failed_bundle_changes_nothing() {
    let p = pipeline("table=0,priority=10,ip,actions=output:1", "");
    let (_dp, inc) = filled(&p, EngineKind::Incremental, &["in_port=1,ip".to_string()]);
    let before = view(&inc.lock());
    let bad = FlowMod::Bundle(vec![
        parse_command("add-flow", "table=0,priority=20,ip,actions=output:2").unwrap(),
        parse_command("add-flow", "table=0,priority=30,ip,actions=group:7").unwrap(),
    ]);
    let e = inc.lock().apply(&bad).unwrap_err();
    assert!(e.to_string().contains("group 7"), "{e}");
    assert_eq!(inc.lock().pipeline().n_rules(), 1);
    assert_eq!(view(&inc.lock()), before);
    assert!(parse_command("frob-flows", "x").is_err());
    assert!(parse_command("add-flow", "table=0,ip,nw_dst=1.2.3.999,actions=drop").is_err());
}

#[test]
fn verify_catches_a_corrupted_cache() {
    let p = pipeline("table=0,priority=10,ip,actions=output:1", "");
    let (_dp, inc) = filled(&p, EngineKind::Incremental, &["in_port=2,ip".to_string()]);
    assert!(inc.lock().verify().is_empty());
    let mf = inc.lock().engine.entries()[0].clone();
    mf.set_actions(vec![DpAction::Output(9)], (*mf.traversal()).clone());
    let mm = inc.lock().verify();
    assert_eq!(mm.len(), 1);
    assert!(mm[0].to_string().contains("expected 1, found 9"), "{}", mm[0]);
}

#[test]
fn readers_see_old_or_new_actions_and_only_new_after_the_ack() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let p = pipeline("table=0,priority=8,ip,nw_dst=10.0.0.0/8,actions=output:1", "");
    let sc = SharedControl::new(Control::new(p, EngineKind::Incremental));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let reader = {
        let (mut sc, acked, stop, lookups) = (sc.clone(), acked.clone(), stop.clone(), lookups.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 1, ..DpConfig::default() });
            // From a port no version outputs to (output to the input port
            // is dropped, as in Open vSwitch: a reader that looked up before
            // the first update would otherwise see version 0 as no actions).
            let keys: Vec<FlowKey> = (0..64).map(|i| key(&format!("in_port=4000,ip,nw_dst=10.2.{i}.1"))).collect();
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                for k in &keys {
                    let before = acked.load(Ordering::Acquire);
                    let a = dp.process_key(k, 64, None, 0, &mut sc);
                    let after = acked.load(Ordering::Acquire);
                    let [DpAction::Output(port)] = a.as_slice() else {
                        return Err(format!("torn or unexpected actions {a:?}"));
                    };
                    let v = *port as u64 - 1; // rule version that produced it
                    if v < before {
                        return Err(format!("stale: saw version {v} after update {before} was acknowledged"));
                    }
                    if v > after + 1 {
                        return Err(format!("saw version {v} from the future (acked {after})"));
                    }
                    n += 1;
                    lookups.store(n, Ordering::Release);
                }
            }
            Ok(n)
        })
    };
    for v in 1..=300u64 {
        let mut c = sc.lock();
        c.apply(
            &parse_command("mod-flows", &format!("table=0,ip,nw_dst=10.0.0.0/8,actions=output:{}", v + 1)).unwrap(),
        )
        .unwrap();
        // Every tenth update also adds or removes a more specific route nearby: evictions.
        if v % 10 == 0 {
            let cmd = if v % 20 == 0 {
                ("del-flows", "table=0,ip,nw_dst=10.1.0.0/16".to_string())
            } else {
                ("add-flow", "table=0,priority=16,ip,nw_dst=10.1.0.0/16,actions=output:999".to_string())
            };
            c.apply(&parse_command(cmd.0, &cmd.1).unwrap()).unwrap();
        }
        drop(c);
        acked.store(v, Ordering::Release);
        // Let the reader look up after every acknowledgement (bounded wait:
        // on a loaded machine it may be descheduled for a while).
        let (seen, deadline) =
            (lookups.load(Ordering::Acquire), std::time::Instant::now() + std::time::Duration::from_secs(2));
        while lookups.load(Ordering::Acquire) == seen && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        // A reader that stopped has found something wrong: say what now,
        // not after every update's wait has run out.
        if reader.is_finished() {
            break;
        }
    }
    stop.store(true, Ordering::Release);
    let n = reader.join().expect("reader thread").unwrap_or_else(|e| panic!("{e}"));
    assert!(n > 300, "reader made only {n} lookups");
}

#[test]
fn idle_expiry_leaves_both_engines() {
    let p = pipeline("table=0,priority=10,ip,actions=output:1", "");
    for kind in [EngineKind::Full, EngineKind::Incremental] {
        let mut dp = Datapath::new(DpConfig { max_idle_ms: 100, ..DpConfig::default() });
        let mut sc = SharedControl::new(Control::new(p.clone(), kind));
        for port in 2..12 {
            dp.process_key(&key(&format!("in_port={port},ip")), 64, None, 0, &mut sc);
        }
        assert_eq!(sc.lock().engine.len(), 10);
        dp.process_key(&key("in_port=2,ip"), 64, None, 950, &mut sc);
        assert_eq!(dp.sweep(1000, &mut sc), 9);
        assert_eq!(dp.n_flows(), 1);
        // (One lock: a second in the message would wait on the first, held
        // by assert_eq!'s match for its whole body, were the check to fail.)
        let (len, name) = {
            let c = sc.lock();
            (c.engine.len(), c.engine.name())
        };
        assert_eq!(len, 1, "{name}");
        assert_eq!(sc.lock().engine.entries().len(), 1);
        // Expired entries are unregistered at once (no update may follow).
        sc.lock().engine.check().unwrap();
        let r =
            sc.lock().apply(&parse_command("add-flow", "table=0,priority=20,ip,actions=output:3").unwrap()).unwrap();
        assert_eq!(r.examined, 1);
        assert!(sc.lock().verify().is_empty());
    }
}

/// Everything a pipeline holds, ids included, for before/after comparisons.
fn pipeline_state(p: &Pipeline) -> String {
    let mut out = String::new();
    for (t, tb) in p.tables() {
        let mut rules: Vec<String> = tb.cls.iter().map(|r| format!("{} {}", r.id, r.payload)).collect();
        rules.sort();
        out += &format!("table {t} miss {:?}: {}\n", tb.miss, rules.join(" | "));
    }
    for g in p.groups() {
        out += &format!("{g}\n");
    }
    out
}

#[test]
fn a_failing_bundle_is_rolled_back_exactly() {
    let mut p = pipeline(
        "table=0,priority=10,ip,actions=group:1\ntable=0,priority=5,arp,actions=output:2\ntable=1,priority=1,actions=output:3\n",
        "group_id=1,type=all,bucket=output:1\ngroup_id=2,type=all,bucket=output:2\n",
    );
    let before = pipeline_state(&p);
    let mods = [
        "add-group group_id=5,type=all,bucket=output:5",
        "add-flow table=7,priority=3,ip,actions=group:5",
        "add-flow table=0,priority=10,ip,actions=output:4",
        "mod-flows table=0,arp,actions=output:9",
        "mod-group group_id=2,type=all,bucket=output:7",
        "--strict del-flows table=1,priority=1",
        "del-groups group_id=1",
    ];
    let mut fms: Vec<FlowMod> = mods
        .iter()
        .map(|m| {
            let (c, a) = m.split_once(' ').unwrap();
            let (c, a) = if c == "--strict" {
                a.split_once(' ').map(|(c2, a2)| (format!("--strict {c2}"), a2)).unwrap()
            } else {
                (c.to_string(), a)
            };
            parse_command(&c, a).unwrap()
        })
        .collect();
    fms.insert(3, FlowMod::SetMiss(9, kairo_ofproto::MissBehavior::Continue(12)));
    // Last: a rule that uses a group nobody defined.
    fms.push(parse_command("add-flow", "table=2,priority=1,actions=group:99").unwrap());
    let e = flowmod::apply(&mut p, &FlowMod::Bundle(fms.clone())).unwrap_err();
    assert!(e.to_string().contains("99"), "{e}");
    assert_eq!(pipeline_state(&p), before, "the failed bundle left changes behind");
    // Without the bad step it applies, and changes what it says.
    fms.pop();
    flowmod::apply(&mut p, &FlowMod::Bundle(fms)).unwrap();
    assert_ne!(pipeline_state(&p), before);
}

#[test]
fn a_rule_on_two_fields_finds_its_entries_without_scanning_either_field() {
    // 20 sources x 30 destinations, each pair a rule: the table is indexed on
    // nw_src, then nw_dst, so a new pair rule looks at its own entries only
    // (not at the 30 of its source nor the 20 of its destination).
    let mut flows = String::new();
    for s in 0..20 {
        for d in 0..30 {
            flows.push_str(&format!(
                "table=0,priority=10,ip,nw_src=10.0.0.{s},nw_dst=10.1.0.{d},actions=output:{}\n",
                d + 1
            ));
        }
    }
    let p = pipeline(&flows, "");
    let pkts: Vec<String> = (0..20)
        .flat_map(|s| (0..30).map(move |d| format!("in_port=9,ip,nw_src=10.0.0.{s},nw_dst=10.1.0.{d}")))
        .collect();
    let (_dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
    assert_eq!(inc.lock().engine.len(), 600);
    let add =
        parse_command("add-flow", "table=0,priority=20,ip,nw_src=10.0.0.7,nw_dst=10.1.0.11,actions=drop").unwrap();
    let rep = inc.lock().apply(&add).unwrap();
    assert_eq!((rep.examined, rep.updated), (1, 1), "{rep}");
    assert!(rep.probed <= 2, "looked at {} index keys for one entry", rep.probed);
    // A rule on the source alone finds that source's 30 entries.
    let add = parse_command("add-flow", "table=0,priority=30,ip,nw_src=10.0.0.3,actions=drop").unwrap();
    let rep = inc.lock().apply(&add).unwrap();
    assert_eq!(rep.examined, 30, "{rep}");
    // A rule on a destination prefix alone still finds every entry it overlaps.
    let add = parse_command("add-flow", "table=0,priority=40,ip,nw_dst=10.1.0.0/30,actions=drop").unwrap();
    let rep = inc.lock().apply(&add).unwrap();
    assert_eq!(rep.examined, 20 * 4, "{rep}");
    assert!(inc.lock().verify().is_empty());
}

#[test]
fn revalidating_on_several_threads_equals_one_thread() {
    // 20 x 30 pair rules and a group per destination: updates that touch
    // most entries (above the parallel threshold) and some that evict.
    let mut flows = String::new();
    let mut groups = String::new();
    for d in 0..30 {
        groups.push_str(&format!("group_id={},type=all,bucket=output:{}\n", d + 1, d + 1));
    }
    for s in 0..20 {
        for d in 0..30 {
            flows.push_str(&format!(
                "table=0,priority=10,ip,nw_src=10.0.0.{s},nw_dst=10.1.0.{d},actions=group:{}\n",
                d + 1
            ));
        }
    }
    let p = pipeline(&flows, &groups);
    let pkts: Vec<String> = (0..20)
        .flat_map(|s| {
            (0..30).map(move |d| format!("in_port=9,ip,nw_src=10.0.0.{s},nw_dst=10.1.0.{d},tcp,tp_dst={}", 80 + d))
        })
        .collect();
    assert!(pkts.len() > 2 * revalidate::PARALLEL_MIN);
    let engines: Vec<Box<dyn Engine>> = vec![
        Box::new(Incremental { threads: 1, ..Incremental::default() }),
        Box::new(Incremental { threads: 3, ..Incremental::default() }),
        Box::new(FullRevalidator { threads: 1, ..FullRevalidator::default() }),
        Box::new(FullRevalidator { threads: 3, ..FullRevalidator::default() }),
    ];
    let ctls: Vec<(Datapath, SharedControl)> = engines.into_iter().map(|e| filled_with(&p, e, &pkts)).collect();
    let updates = [
        ("mod-flows", "table=0,ip,nw_src=10.0.0.0/24,actions=output:7"),
        ("add-flow", "table=0,priority=20,ip,nw_dst=10.1.0.0/27,actions=drop"),
        ("add-flow", "table=0,priority=30,tcp,tp_dst=85,actions=output:9"),
        ("del-flows", "table=0,ip,nw_dst=10.1.0.0/28"),
    ];
    let mut widest = 0;
    for (cmd, arg) in updates {
        let fm = parse_command(cmd, arg).unwrap();
        let reps: Vec<Report> = ctls.iter().map(|(_, c)| c.lock().apply(&fm).unwrap()).collect();
        widest = widest.max(reps[1].updated + reps[1].evicted);
        let want = view(&ctls[0].1.lock());
        for (i, (_, c)) in ctls.iter().enumerate() {
            let c = c.lock();
            assert_eq!(view(&c), want, "{cmd} {arg}: engine {i} ({}) differs", c.engine.name());
            assert!(c.verify().is_empty(), "{cmd} {arg}: engine {i}");
        }
        assert_eq!(
            (reps[0].examined, reps[0].updated, reps[0].evicted),
            (reps[1].examined, reps[1].updated, reps[1].evicted)
        );
        assert_eq!((reps[2].updated, reps[2].evicted), (reps[3].updated, reps[3].evicted));
    }
    // The threaded path ran: some update changed more entries than one thread takes.
    assert!(widest > 2 * revalidate::PARALLEL_MIN, "{widest}");
}

/// Entries that reach the changed table in the same state share one
/// re-translation of what follows; entries whose registers differ there do
/// not (the suffix reads a register the prefix set from a field the suffix
/// never looks at), and every entry ends with what full revalidation gives,
/// its own packet's rewrites committed.
#[test]
fn a_shared_suffix_serves_entries_in_the_same_state_only() {
    // Three sources to port 80 (one megaflow each, by dl_src) reach table 1
    // in the same state; the one to port 81 has reg0=2 there.
    let p = pipeline(
        "table=0,priority=10,tcp,dl_src=00:00:00:00:00:01,tp_dst=80,actions=load:0x1->NXM_NX_REG0[],mod_dl_dst:00:00:00:00:00:99,goto_table:1\n\
         table=0,priority=10,tcp,dl_src=00:00:00:00:00:02,tp_dst=80,actions=load:0x1->NXM_NX_REG0[],mod_dl_dst:00:00:00:00:00:99,goto_table:1\n\
         table=0,priority=10,tcp,dl_src=00:00:00:00:00:03,tp_dst=80,actions=load:0x1->NXM_NX_REG0[],mod_dl_dst:00:00:00:00:00:99,goto_table:1\n\
         table=0,priority=10,tcp,dl_src=00:00:00:00:00:04,tp_dst=81,actions=load:0x2->NXM_NX_REG0[],mod_dl_dst:00:00:00:00:00:99,goto_table:1\n\
         table=1,priority=10,tcp,nw_dst=10.1.1.1,actions=goto_table:2\n\
         table=2,priority=10,reg0=0x1,actions=output:5\n\
         table=2,priority=10,reg0=0x2,actions=output:6",
        "",
    );
    let pkts: Vec<String> = [
        "in_port=1,tcp,tp_dst=80,dl_src=00:00:00:00:00:01,nw_dst=10.1.1.1",
        "in_port=1,tcp,tp_dst=80,dl_src=00:00:00:00:00:02,dl_dst=00:00:00:00:00:99,nw_dst=10.1.1.1",
        "in_port=1,tcp,tp_dst=80,dl_src=00:00:00:00:00:03,nw_dst=10.1.1.1",
        "in_port=1,tcp,tp_dst=81,dl_src=00:00:00:00:00:04,nw_dst=10.1.1.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut dp, sc) = filled(&p, EngineKind::Incremental, &pkts);
    let mut s2 = sc.clone();
    let r = sc
        .lock()
        .apply(
            &parse_command(
                "--strict mod-flows",
                "table=1,priority=10,tcp,nw_dst=10.1.1.1,actions=mod_nw_dst:10.9.9.9,goto_table:2",
            )
            .unwrap(),
        )
        .unwrap();
    assert_eq!((r.examined, r.updated), (4, 4), "{r}");
    // Each entry resumes at table 1; the first of each state translates the
    // rest, the two others in the first state share it.
    assert_eq!(r.shared, 4, "{r}");
    assert!(sc.lock().verify().is_empty(), "{:?}", sc.lock().verify());
    let mut out = |pkt: &str, s2: &mut SharedControl| format_actions(&dp.process_key(&key(pkt), 1, None, 0, s2));
    // The second packet already had the new dl_dst: its commit sets only nw_dst.
    assert_eq!(out(&pkts[1], &mut s2), "set(ipv4(dst=10.9.9.9)),5");
    assert_eq!(out(&pkts[0], &mut s2), "set(eth(dst=00:00:00:00:00:99)),set(ipv4(dst=10.9.9.9)),5");
    assert_eq!(out(&pkts[3], &mut s2), "set(eth(dst=00:00:00:00:00:99)),set(ipv4(dst=10.9.9.9)),6");
    // Housekeeping gives them the traversals that go with the actions.
    sc.lock().housekeep();
    assert!(sc.lock().engine.check().is_ok());
    assert!(sc.lock().verify().is_empty());
}

/// A suffix visit that took the old traversal's outcome serves another
/// entry only if that entry's own old traversal answers it: here the two
/// entries reach the added rule in the same state, but the second one's
/// register was different before it, so at table 2 it now meets a rule
/// its old visit never could. (A third entry, on another port, in the
/// first one's state: a pass shares only from [`revalidate::MEMO_MIN`]
/// entries.)
#[test]
fn a_shared_suffix_needs_each_entry_s_own_traversal_to_answer_its_replayed_visits() {
    let p = pipeline(
        "table=0,priority=10,actions=goto_table:1\n\
         table=1,priority=10,tcp,nw_src=10.0.0.1,actions=load:0x1->NXM_NX_REG0[],goto_table:2\n\
         table=1,priority=10,tcp,nw_src=10.0.0.2,actions=load:0x2->NXM_NX_REG0[],goto_table:2\n\
         table=2,priority=20,ip,reg0=0x1,nw_src=10.0.0.2,actions=drop\n\
         table=2,priority=1,actions=output:3",
        "",
    );
    let pkts: Vec<String> =
        ["in_port=1,tcp,nw_src=10.0.0.1", "in_port=1,tcp,nw_src=10.0.0.2", "in_port=2,tcp,nw_src=10.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let (mut dp, sc) = filled(&p, EngineKind::Incremental, &pkts);
    let mut s2 = sc.clone();
    let r = sc
        .lock()
        .apply(
            &parse_command("add-flow", "table=1,priority=20,tcp,actions=load:0x1->NXM_NX_REG0[],goto_table:2").unwrap(),
        )
        .unwrap();
    // Each from a suffix: the second one its own, the third the first's.
    assert_eq!((r.updated, r.shared), (1, 3), "{r}");
    assert_eq!(r.examined, 3, "{r}");
    assert!(sc.lock().verify().is_empty(), "{:?}", sc.lock().verify());
    assert_eq!(format_actions(&dp.process_key(&key(&pkts[0]), 1, None, 0, &mut s2)), "3");
    assert_eq!(format_actions(&dp.process_key(&key(&pkts[1]), 1, None, 0, &mut s2)), "drop");
    assert_eq!(format_actions(&dp.process_key(&key(&pkts[2]), 1, None, 0, &mut s2)), "3");
}

/// Entries that reach the change inside a group's bucket share a suffix
/// too, and the traversals housekeeping builds for them from it are the
/// ones translation gives (resumable inside the bucket, not bare).
#[test]
fn shared_suffix_traversals_inside_a_bucket_are_translation_s() {
    let p = pipeline(
        "table=0,priority=10,tcp,dl_src=00:00:00:00:00:01,actions=group:1\n\
         table=0,priority=10,tcp,dl_src=00:00:00:00:00:02,actions=group:1\n\
         table=1,priority=10,tcp,nw_dst=10.1.1.1,actions=goto_table:2\n\
         table=2,priority=1,actions=output:5",
        "group_id=1,type=indirect,bucket=resubmit(,1)",
    );
    let pkts: Vec<String> = [
        "in_port=1,tcp,dl_src=00:00:00:00:00:01,nw_dst=10.1.1.1",
        "in_port=1,tcp,dl_src=00:00:00:00:00:02,nw_dst=10.1.1.1",
        "in_port=2,tcp,dl_src=00:00:00:00:00:01,nw_dst=10.1.1.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (_dp, sc) = filled(&p, EngineKind::Incremental, &pkts);
    let fm = parse_command(
        "--strict mod-flows",
        "table=1,priority=10,tcp,nw_dst=10.1.1.1,actions=mod_nw_dst:10.9.9.9,goto_table:2",
    );
    let r = sc.lock().apply(&fm.unwrap()).unwrap();
    assert_eq!((r.updated, r.shared), (3, 3), "{r}");
    assert!(sc.lock().verify().is_empty());
    sc.lock().housekeep();
    let c = sc.lock();
    for mf in c.engine.entries() {
        let want = translate(&c.pipeline(), &mf.rep).traversal;
        assert!(want.resumable_bare() < want.resumable(), "the step is inside the bucket: {want:?}");
        assert_eq!(*mf.traversal(), want);
    }
    assert!(c.engine.check().is_ok());
}

/// The cell tests' pipeline: table 1 (the anchor) loads the port of
/// dl_dst 00:00:00:00:00:99 into reg1, table 2 outputs by reg1 (`outputs`:
/// its rules after table 0 and 1's); and a cache filled with one entry to
/// that address from each of `in_ports`, with cells anchored at table 1.
fn cell_case(outputs: &str, in_ports: &[u32]) -> (Datapath, SharedControl, Vec<String>) {
    let p = pipeline(
        &format!(
            "table=0,priority=10,ip,actions=goto_table:1\n\
             table=1,priority=10,dl_dst=00:00:00:00:00:99,actions=load:0x9->NXM_NX_REG1[],goto_table:2\n{outputs}"
        ),
        "",
    );
    let pkts: Vec<String> =
        in_ports.iter().map(|i| format!("in_port={i},ip,dl_dst=00:00:00:00:00:99,nw_dst=10.0.0.9")).collect();
    let mut anchors = kairo_xlate::TableSet::default();
    anchors.insert(1);
    let (dp, sc) = filled_with(&p, Box::new(Incremental::with_anchors(anchors)), &pkts);
    (dp, sc, pkts)
}

/// Moves the cell tests' address to the port `port` (its table-1 rule now loads it).
fn move_pod(sc: &SharedControl, port: u32) -> Report {
    let fm = parse_command(
        "--strict mod-flows",
        &format!("table=1,priority=10,dl_dst=00:00:00:00:00:99,actions=load:{port:#x}->NXM_NX_REG1[],goto_table:2"),
    )
    .unwrap();
    sc.lock().apply(&fm).unwrap()
}

/// A pod moves (its L2 forwarding rule now loads another port): the
/// entries to it from six sources share one action cell, anchored at the
/// forwarding table, and the change is translated and published once for
/// all of them, except the one whose in_port is the pod's new port: output
/// to its own in_port is skipped, so it alone gets other actions; it
/// leaves for a cell of its own, with a suffix translated for it. Every
/// entry ends with what full revalidation gives, before and after
/// housekeeping.
#[test]
fn a_pod_move_is_taken_once_per_cell_and_a_peer_on_the_new_port_apart() {
    let (mut dp, sc, pkts) = cell_case(
        "table=2,priority=10,reg1=0x9,actions=output:9\n\
         table=2,priority=10,reg1=0x2,actions=output:2\n\
         table=2,priority=10,reg1=0x3,actions=output:3",
        &[1, 2, 3, 5, 6, 7],
    );
    assert!(sc.lock().engine.check().is_ok());
    let mut s2 = sc.clone();
    let r = move_pod(&sc, 2);
    // One cell for all six; five stay in it, the one from port 2 leaves
    // for a cell of its own.
    assert_eq!((r.examined, r.updated, r.cells), (6, 6, 2), "{r}");
    assert!(sc.lock().verify().is_empty(), "{:?}", sc.lock().verify());
    let mut out = |pkt: &str, s2: &mut SharedControl| format_actions(&dp.process_key(&key(pkt), 1, None, 0, s2));
    assert_eq!(out(&pkts[0], &mut s2), "2");
    assert_eq!(out(&pkts[1], &mut s2), "drop");
    assert!(sc.lock().engine.check().is_ok());
    sc.lock().housekeep();
    assert!(sc.lock().engine.check().is_ok(), "{:?}", sc.lock().engine.check());
    assert!(sc.lock().verify().is_empty());
    // The next move is again the cell's, the entry from port 3 leaving it
    // now for a cell of its own. The cell of the one from port 2 cannot
    // take this move at its level: it had no output (so no commit) and now
    // has one, whose commit depends on each member's packet; it is
    // revalidated by itself.
    let r = move_pod(&sc, 3);
    assert_eq!((r.examined, r.cells), (6, 2), "{r}");
    assert!(sc.lock().verify().is_empty(), "{:?}", sc.lock().verify());
    assert_eq!(out(&pkts[1], &mut s2), "3");
    assert_eq!(out(&pkts[2], &mut s2), "drop");
}

/// Passes after a `ct` recirculation have a frozen state per in_port (it is
/// frozen metadata), so a recirc_id each; a pod move after the thaw is
/// still taken once for all of them: the suffix from the anchor reads
/// nothing of the frozen state but its metadata, so recirc_id is not part
/// of the state cells share.
#[test]
fn passes_of_different_frozen_states_share_a_cell_after_ct() {
    let p = pipeline(
        "table=0,priority=10,ip,actions=ct(table=1,zone=1)\n\
         table=1,priority=10,ip,actions=goto_table:2\n\
         table=2,priority=10,dl_dst=00:00:00:00:00:99,actions=load:0x9->NXM_NX_REG1[],goto_table:3\n\
         table=3,priority=10,reg1=0x9,actions=output:9\n\
         table=3,priority=10,reg1=0x2,actions=output:12",
        "",
    );
    let pkts: Vec<String> =
        [1, 2, 3, 5, 6, 7].iter().map(|i| format!("in_port={i},ip,dl_dst=00:00:00:00:00:99,nw_dst=10.0.0.9")).collect();
    let mut anchors = kairo_xlate::TableSet::default();
    anchors.insert(2);
    let (_dp, sc) = filled_with(&p, Box::new(Incremental::with_anchors(anchors)), &pkts);
    let ids: std::collections::BTreeSet<u64> = sc
        .lock()
        .engine
        .entries()
        .iter()
        .map(|e| e.rep.get(kairo_flow::Field::RecircId))
        .filter(|&id| id != 0)
        .collect();
    assert_eq!(ids.len(), 6, "a frozen state per in_port: {ids:?}");
    let fm = parse_command(
        "--strict mod-flows",
        "table=2,priority=10,dl_dst=00:00:00:00:00:99,actions=load:0x2->NXM_NX_REG1[],goto_table:3",
    )
    .unwrap();
    let r = sc.lock().apply(&fm).unwrap();
    assert_eq!((r.examined, r.updated, r.cells), (6, 6, 1), "{r}");
    assert!(sc.lock().verify().is_empty(), "{:?}", sc.lock().verify());
    sc.lock().housekeep();
    assert!(sc.lock().engine.check().is_ok(), "{:?}", sc.lock().engine.check());
}

/// When a change makes a cell output to two ports and members come in on
/// each of them, those two leave the cell, each with other actions (each
/// skips its own in_port): not together, since they differ in in_port.
#[test]
fn members_on_two_new_output_ports_do_not_leave_together() {
    let (mut dp, sc, pkts) = cell_case(
        "table=2,priority=10,reg1=0x9,actions=output:9,output:12\n\
         table=2,priority=10,reg1=0x8,actions=output:2,output:3",
        &[1, 2, 3, 5, 6, 7, 10, 11],
    );
    let mut s2 = sc.clone();
    let r = move_pod(&sc, 8);
    assert_eq!((r.examined, r.updated, r.cells), (8, 8, 1), "{r}");
    assert!(sc.lock().verify().is_empty(), "{:?}", sc.lock().verify());
    let mut out = |pkt: &str, s2: &mut SharedControl| format_actions(&dp.process_key(&key(pkt), 1, None, 0, s2));
    assert_eq!(out(&pkts[0], &mut s2), "2,3");
    assert_eq!(out(&pkts[1], &mut s2), "3");
    assert_eq!(out(&pkts[2], &mut s2), "2");
    sc.lock().housekeep();
    assert!(sc.lock().engine.check().is_ok(), "{:?}", sc.lock().engine.check());
    assert!(sc.lock().verify().is_empty());
}

#[test]
fn long_group_chains_are_added_and_deleted_in_linear_time() {
    // 20,000 groups, each naming the next, added as one file (in an order
    // where every group names one further down) and then all deleted:
    // checking each on its own walked the rest of the chain (quadratic),
    // and deleting all picked one free group per pass over them (cubic).
    let n = 20_000u32;
    let text: String = (1..=n)
        .map(|g| match g < n {
            true => format!("group_id={g},type=all,bucket=group:{}\n", g + 1),
            false => format!("group_id={g},type=all,bucket=output:2\n"),
        })
        .collect();
    let done = kairo_testkit::within(20, move || {
        let mut p = Pipeline::new();
        let groups = kairo_ofproto::parse_group_file(&text).expect("group file");
        crate::flowmod::apply(&mut p, &FlowMod::AddGroups(groups)).expect("add-groups");
        let added = p.groups().count();
        crate::flowmod::apply(&mut p, &FlowMod::DelGroup(None)).expect("del-groups");
        (added, p.groups().count())
    });
    assert_eq!(done, Some((n as usize, 0)), "did not finish within 20 s");
}

/// A fast-failover group that watches another group: changing the watched
/// group changes which bucket the watcher takes, so the watcher's users are
/// taken too, though their traversals never ran the watched group.
#[test]
fn a_group_watching_a_changed_group_has_its_users_taken() {
    let p = pipeline(
        "in_port=1,actions=group:2",
        "group_id=1,type=ff,bucket=watch_port:1,actions=output:1\n\
         group_id=2,type=ff,bucket=watch_group:1,actions=output:2,bucket=watch_port:3,actions=output:3",
    );
    let pkts = vec!["in_port=1,tcp,tp_dst=80".to_string()];
    for kind in [EngineKind::Full, EngineKind::Incremental] {
        let (mut dp, sc) = filled(&p, kind, &pkts);
        let mut s2 = sc.clone();
        assert_eq!(*dp.process_key(&key("in_port=1,tcp,tp_dst=80"), 1, None, 0, &mut s2), vec![DpAction::Output(2)]);
        let r = sc.lock().apply(&parse_command("mod-group", "group_id=1,type=ff").unwrap()).unwrap();
        assert_eq!(r.updated, 1, "{}: {r}", sc.lock().engine.name());
        assert!(sc.lock().verify().is_empty());
        assert_eq!(*dp.process_key(&key("in_port=1,tcp,tp_dst=80"), 1, None, 0, &mut s2), vec![DpAction::Output(3)]);
    }
}

/// Found by the random-update test: an MPLS packet whose label stack entries
/// are all zero (no labels counted), pushed onto and popped to another
/// ethertype without a commit between, leaves unchanged; the reference
/// showed its hidden IP fields under the MPLS ethertype it kept.
#[test]
fn regression_unlabelled_mpls_packet_pushed_and_popped() {
    run_case(13074092321137382925, &[98163137074700664]).unwrap();
}

/// The flows a traversal's learn actions made.
fn learned_rules(t: &kairo_xlate::Traversal) -> Vec<kairo_ofproto::Rule> {
    t.learned.iter().flatten().map(|l| l.rule.clone()).collect()
}

/// A learning switch made of `learn` (the classic Open vSwitch example):
/// each packet teaches table 1 where its source is; the flows upcalls learn
/// go in as updates, and the entries that flooded to a host learned later
/// are re-translated to its port. A limit refuses flows past it; deleting
/// the learning flow takes its learned flows (delete_learned); megaflows
/// hit again refresh the flows they learn, and bring back one that left.
#[test]
fn flows_learned_from_upcalls_are_installed_maintained_refreshed_and_deleted() {
    let flows = "table=0,priority=10,actions=learn(table=1,idle_timeout=10,delete_learned,cookie=0x5,\
                 NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),resubmit(,1)\n\
                 table=1,priority=0,actions=FLOOD";
    let mut p = pipeline(flows, "");
    p.set_ports([1, 2, 3]);
    let mac = |i: u64| format!("02:00:00:00:00:{i:02x}");
    // Host 1 (port 1) sends to host 2, not heard from yet: flooded. (The
    // first megaflow, made before table 1 had the flow learned from it,
    // did not examine dl_dst and goes when the flow comes: the second
    // packet makes the one that stays.)
    let first = format!("in_port=1,dl_src={},dl_dst={}", mac(1), mac(2));
    let (mut dp, inc) = filled(&p, EngineKind::Incremental, &[first.clone(), first]);
    inc.lock().keep_deltas = true;
    let learned = |c: &Control| {
        c.pipeline().table(1).map_or(Vec::new(), |t| {
            let mut v: Vec<String> = t.cls.iter().filter(|r| r.priority != 0).map(|r| r.payload.to_string()).collect();
            v.sort();
            v
        })
    };
    assert_eq!(
        learned(&inc.lock()),
        vec!["cookie=0x5, table=1, priority=32768,dl_dst=02:00:00:00:00:01 actions=output:1".to_string()]
    );
    let to = |c: &Control, i: u64| {
        c.engine
            .entries()
            .iter()
            .filter(|m| m.rep.get(kairo_flow::Field::EthDst) == 0x0200_0000_0000 + i)
            .map(|m| kairo_xlate::format_actions(&m.actions()))
            .collect::<Vec<_>>()
    };
    assert_eq!(to(&inc.lock(), 2), vec!["2,3"]);
    // Host 2 answers from port 2: it goes to port 1 (learned), and the
    // entry that flooded to host 2 now sends to port 2.
    let mut sc = inc.clone();
    dp.process_key(&key(&format!("in_port=2,dl_src={},dl_dst={}", mac(2), mac(1))), 64, None, 0, &mut sc);
    assert_eq!(to(&inc.lock(), 1), vec!["1"]);
    assert_eq!(to(&inc.lock(), 2), vec!["2"]);
    assert!(inc.lock().verify().is_empty());
    // Learning a flow that is there changes nothing (an idle refresh).
    let again = kairo_xlate::translate(&inc.lock().pipeline(), &key(&format!("in_port=2,dl_src={}", mac(2))));
    let l = again.traversal.learned.expect("learns")[0].clone();
    let v = inc.lock().version();
    assert!(inc.lock().learn_flows([(l.clone(), 777)]).is_none());
    assert_eq!(inc.lock().version(), v);
    let id = inc.lock().pipeline().table(1).and_then(|t| t.cls.find_exact(&l.rule.m, l.rule.priority)).unwrap().id;
    assert_eq!(inc.lock().touched.get(&(1, id)), Some(&777));
    // The learned flow leaves (a timeout, say); the megaflow that learned
    // it is hit again, and the refresh a second later brings it back.
    inc.lock()
        .apply(&FlowMod::Delete { strict: true, spec: kairo_ofproto::FlowSpec::exact(1, l.rule.priority, l.rule.m) })
        .unwrap();
    assert_eq!(learned(&inc.lock()).len(), 1);
    inc.lock().housekeep();
    dp.process_key(&key(&format!("in_port=2,dl_src={},dl_dst={}", mac(2), mac(1))), 64, None, 5_000, &mut sc);
    assert!(inc.lock().tick(5_500).is_none());
    let now = learned(&inc.lock());
    assert_eq!(now.len(), 2, "{now:?}");
    // delete_learned: the learning flow goes, and the flows it learned.
    let table0 = kairo_ofproto::FlowSpec { table: Some(0), ..kairo_ofproto::FlowSpec::default() };
    let rep = inc.lock().apply(&FlowMod::Delete { strict: false, spec: table0 }).unwrap();
    assert!(rep.examined > 0);
    // (Table 1's miss flow has another cookie: it stays.)
    let left: Vec<u64> = inc.lock().pipeline().table(1).unwrap().cls.iter().map(|r| r.payload.cookie).collect();
    assert_eq!(left, vec![0]);

    // A limit of one learned flow: the second host is refused.
    let flows = "table=0,actions=learn(table=1,limit=1,cookie=0x6,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),resubmit(,1)\n\
                 table=1,priority=0,actions=drop";
    let p = pipeline(flows, "");
    let pkts: Vec<String> = (1..=2).map(|i| format!("in_port={i},dl_src={},dl_dst={}", mac(i), mac(9))).collect();
    let (_, inc) = filled(&p, EngineKind::Incremental, &pkts);
    assert_eq!(learned(&inc.lock()).len(), 1);
}

/// `fin_timeout`: a TCP packet with FIN or RST through a flow with it cuts
/// the flow's timeouts: from the upcall that brings one, or (as Open
/// vSwitch does from its flow statistics) from a megaflow whose packets
/// carried one, at the next refresh. Timeouts only ever go down, and a cut
/// that changes nothing is no update. A learn's fin timeouts give the
/// learned flow its fin_timeout.
#[test]
fn fin_timeout_cuts_timeouts_once_fin_or_rst_is_seen() {
    let flows = "table=0,priority=10,tcp,actions=fin_timeout(idle_timeout=5,hard_timeout=20),output:2\n\
                 table=0,priority=5,udp,actions=learn(table=1,fin_idle_timeout=3,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[]),output:3";
    let p = pipeline(flows, "");
    let syn = "in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=1000,tp_dst=80,tcp_flags=+syn";
    let (mut dp, inc) = filled(&p, EngineKind::Incremental, &[syn.to_string()]);
    let timeouts = |c: &Control| {
        let r = c.pipeline().table(0).unwrap().cls.iter().find(|r| r.priority == 10).unwrap().payload.clone();
        (r.idle_timeout, r.hard_timeout)
    };
    assert_eq!(timeouts(&inc.lock()), (0, 0));
    assert_eq!(inc.lock().engine.len(), 1);
    // A FIN on the same megaflow (tcp_flags is not in its mask): the
    // datapath counts it, and the refresh a second later cuts.
    let mut sc = inc.clone();
    let fin = "in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=1000,tp_dst=80,tcp_flags=+fin+ack";
    dp.process_key(&key(fin), 64, None, 1_500, &mut sc);
    assert_eq!(inc.lock().engine.len(), 1, "the FIN hit the megaflow");
    assert_eq!(timeouts(&inc.lock()), (0, 0));
    inc.lock().tick(1_600);
    assert_eq!(timeouts(&inc.lock()), (5, 20));
    // Only down: a longer cut does nothing, and is no update.
    let id = inc.lock().pipeline().table(0).unwrap().cls.iter().find(|r| r.priority == 10).unwrap().id;
    let v = inc.lock().version();
    assert!(inc.lock().cut_timeouts(vec![kairo_xlate::FinTimeout { table: 0, rule: id, idle: 9, hard: 30 }]).is_none());
    assert_eq!(inc.lock().version(), v);
    // An upcall that brings a RST cuts at once.
    let p = pipeline(flows, "");
    let rst = "in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=1000,tp_dst=80,tcp_flags=+rst";
    let (_, inc) = filled(&p, EngineKind::Incremental, &[rst.to_string()]);
    assert_eq!(timeouts(&inc.lock()), (5, 20));
    // The learned flow's fin_timeout.
    let (_, inc) = filled(&p, EngineKind::Incremental, &["in_port=1,udp,dl_src=02:00:00:00:00:01".to_string()]);
    let learned: Vec<String> =
        inc.lock().pipeline().table(1).unwrap().cls.iter().map(|r| r.payload.to_string()).collect();
    assert_eq!(
        learned,
        vec!["cookie=0x0, table=1, priority=32768,dl_dst=02:00:00:00:00:01 actions=fin_timeout(idle_timeout=3)"]
    );
}

/// A control with one rule (IP to port 2), a datapath, and a forwarding
/// thread's handle on the control.
fn one_rule_switch() -> (SharedControl, Datapath, SharedControl) {
    let p = pipeline("table=0,priority=10,ip,actions=output:2", "");
    let sc = SharedControl::new(Control::new(p, EngineKind::Incremental));
    let fwd = sc.clone();
    (sc, Datapath::new(DpConfig::default()), fwd)
}

/// A UDP packet of one flow, from port 1.
fn one_flow_frame() -> kairo_datapath::Packet {
    kairo_datapath::Packet::new(
        kairo_wire::emit::frame(&key("in_port=1,udp,nw_dst=10.0.0.9,tp_src=1,tp_dst=2"), &[]),
        1,
    )
}

/// Forwards `pkts` (and what is parked), returning where each went.
fn forward(
    dp: &mut Datapath,
    slow: &mut SharedControl,
    pkts: &mut [kairo_datapath::Packet],
) -> Vec<kairo_datapath::execute::Sent> {
    let mut sent = Vec::new();
    dp.process_packets(pkts, 0, slow, &mut |to, _, _| sent.push(to));
    sent
}

/// A miss while an update holds the control state (its maintenance, say)
/// does not wait: it is translated against the published tables and
/// forwarded, its megaflow installed at once and registered with
/// maintenance as the update goes on, so the update's change reaches it.
#[test]
fn a_miss_during_an_update_is_forwarded_from_the_published_tables() {
    use kairo_datapath::execute::Sent;
    let (sc, mut dp, mut fwd) = one_rule_switch();
    let mut run = |dp: &mut Datapath, pkts: &mut [kairo_datapath::Packet]| forward(dp, &mut fwd, pkts);
    let frame = one_flow_frame;
    let mut update = sc.lock(); // an update in progress
    assert_eq!(run(&mut dp, &mut [frame(), frame()]), vec![Sent::Port(2), Sent::Port(2)]);
    assert_eq!((dp.n_parked(), dp.n_flows(), update.engine.len()), (0, 1, 0), "installed, not yet registered");
    update.apply(&parse_command("mod-flows", "table=0,ip,actions=output:3").unwrap()).unwrap();
    assert_eq!(update.engine.len(), 1, "registered by the update");
    assert_eq!(run(&mut dp, &mut [frame()]), vec![Sent::Port(3)], "maintained by the update that registered it");
    drop(update);
    sc.lock().apply(&parse_command("mod-flows", "table=0,ip,actions=output:4").unwrap()).unwrap();
    assert_eq!(run(&mut dp, &mut [frame()]), vec![Sent::Port(4)]);
    assert!(sc.lock().verify().is_empty());
}

/// A packet that came with MPLS labels, popped and looked up again, goes
/// through the datapath twice: the first pass pops and recirculates, the
/// second sees the IPv4 header under the label (parsed from the packet
/// again) and rewrites it, as Open vSwitch 3.1's datapath did with the same
/// frame (`netdev-dummy/receive`: `pop_mpls(eth_type=0x800),recirc(..)`, then
/// `set(ipv4(dst=10.0.0.9)),3` on a flow matching `ipv4(dst=10.0.0.2)`).
#[test]
fn a_popped_mpls_packet_is_looked_up_again_by_its_ip_header() {
    use kairo_datapath::execute::Sent;
    use kairo_datapath::Packet;
    let p = pipeline(
        "table=0,priority=10,in_port=1,mpls,actions=pop_mpls:0x0800,resubmit(,1)\n\
         table=1,priority=10,ip,nw_dst=10.0.0.2,actions=mod_nw_dst:10.0.0.9,output:3\n\
         table=1,priority=5,actions=output:4",
        "",
    );
    // Ethernet, one label (5, bottom of stack, TTL 64), IPv4 UDP 10.0.0.1 -> 10.0.0.2.
    let mut f = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x88, 0x47, 0x00, 0x00, 0x51, 0x40];
    let mut ip = vec![0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    let sum = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend([0x03, 0xe8, 0x07, 0xd0, 0, 12, 0, 0, b'a', b'b', b'c', b'd']);
    let sc = SharedControl::new(Control::new(p, EngineKind::Incremental));
    let mut fwd = sc.clone();
    let mut dp = Datapath::new(DpConfig::default());
    let mut sent = Vec::new();
    dp.process_packets(&mut [Packet::new(f, 1)], 1, &mut fwd, &mut |to, bytes, _| sent.push((to, bytes.to_vec())));
    assert_eq!(sent.len(), 1);
    let (to, out) = &sent[0];
    assert_eq!(*to, Sent::Port(3));
    assert_eq!(&out[12..14], &[0x08, 0x00], "the label is gone");
    assert_eq!(&out[14 + 16..14 + 20], &[10, 0, 0, 9], "the address under it rewritten");
    let mut megaflows: Vec<String> = dp.megaflows().map(|m| kairo_flow::format_megaflow(&m.key(), &m.mask)).collect();
    megaflows.sort();
    assert_eq!(megaflows.len(), 2, "{megaflows:?}");
    assert!(megaflows[0].starts_with("recirc_id=0,") && megaflows[0].contains("mpls"), "{megaflows:?}");
    assert!(megaflows[1].contains("nw_dst=10.0.0.2"), "{megaflows:?}");
    assert!(sc.lock().verify().is_empty());
}

/// Only while the tables themselves are being changed (the write lock on
/// the published pipeline) is a miss parked; it goes out by the new rules
/// once the change is made, and its flow's later packets wait behind it.
#[test]
fn a_miss_while_the_tables_change_is_parked_then_forwarded_by_the_new_rules() {
    use kairo_datapath::execute::Sent;
    let (sc, mut dp, mut fwd) = one_rule_switch();
    let mut run = |dp: &mut Datapath, pkts: &mut [kairo_datapath::Packet]| forward(dp, &mut fwd, pkts);
    let frame = one_flow_frame;
    let mut c = sc.lock();
    {
        let mut w = c.pipeline_mut(); // the change being made
        assert_eq!(run(&mut dp, &mut [frame(), frame()]), vec![]);
        assert_eq!(dp.n_parked(), 2);
        // (No megaflow exists yet for maintenance to know of.)
        flowmod::apply(&mut w, &parse_command("mod-flows", "table=0,ip,actions=output:3").unwrap()).unwrap();
    }
    assert_eq!(run(&mut dp, &mut []), vec![Sent::Port(3), Sent::Port(3)]);
    drop(c);
    assert_eq!((dp.n_parked(), dp.n_flows(), sc.lock().engine.len()), (0, 1, 1));
    sc.lock().apply(&parse_command("mod-flows", "table=0,ip,actions=output:4").unwrap()).unwrap();
    assert_eq!(run(&mut dp, &mut [frame()]), vec![Sent::Port(4)], "the parked flow's megaflow is maintained");
    assert!(sc.lock().verify().is_empty());
}

/// A megaflow translated before an update and offered for registration
/// after the update bumped the version is refused (that update may have
/// drained already and would never bring it up to date); one offered
/// before is registered by the update and brought up to date before it
/// returns.
#[test]
fn registrations_from_before_an_update_are_refused_or_revalidated() {
    use kairo_datapath::SlowPath;
    let p = pipeline("table=0,priority=10,ip,actions=output:2", "");
    let sc = SharedControl::new(Control::new(p, EngineKind::Incremental));
    let mut fwd = sc.clone();
    let k = key("in_port=1,udp,nw_dst=10.0.0.9,tp_src=1,tp_dst=2");
    let megaflow = |up: &kairo_datapath::Upcall<kairo_xlate::Traversal>| {
        Arc::new(Megaflow::new(k, Arc::new(up.mask), up.actions.clone(), 0))
    };
    let mut update = sc.lock();
    // Translated, then the update, then offered: refused.
    let up = fwd.try_upcall(&k, 0).expect("translated while the control state is held");
    update.apply(&parse_command("mod-flows", "table=0,ip,actions=output:3").unwrap()).unwrap();
    let mf = megaflow(&up);
    assert!(fwd.try_installed(&mf, up.note, up.version).is_err(), "offered after the version moved on");
    assert_eq!(update.engine.len(), 0);
    // Translated and offered, then the update: registered and maintained.
    let up = fwd.try_upcall(&k, 0).unwrap();
    let mf = megaflow(&up);
    assert!(fwd.try_installed(&mf, up.note, up.version).is_ok());
    assert_eq!(mf.actions().as_slice(), &[DpAction::Output(3)]);
    update.apply(&parse_command("mod-flows", "table=0,ip,actions=output:5").unwrap()).unwrap();
    assert_eq!(mf.actions().as_slice(), &[DpAction::Output(5)], "up to date when the update returns");
    assert_eq!(update.engine.len(), 1);
    assert!(update.verify().is_empty());
}

/// Updates know which forwarding threads have packets parked (to let them
/// go first): each handle counts once while it has some, and a handle
/// dropped with some stops counting.
#[test]
fn handles_with_parked_packets_are_counted_once_each() {
    use kairo_datapath::SlowPath;
    let sc = SharedControl::new(Control::new(pipeline("table=0,priority=1,actions=drop", ""), EngineKind::Incremental));
    let (mut a, mut b) = (sc.clone(), sc.clone());
    a.parked(3);
    a.parked(5);
    assert_eq!(sc.threads_with_parked(), 1);
    b.parked(1);
    assert_eq!(sc.threads_with_parked(), 2);
    a.parked(0);
    assert_eq!(sc.threads_with_parked(), 1);
    drop(b);
    assert_eq!(sc.threads_with_parked(), 0);
    // An update with nobody parked takes the lock at once.
    drop(sc.lock_for_update());
}

/// A packet forwarded by an upcall's actions without a megaflow (the cache
/// at its flow limit) is still credited to the rules it went through, when
/// the control state is next locked.
#[test]
fn packets_forwarded_without_a_megaflow_are_credited() {
    use kairo_datapath::Packet;
    let p = pipeline("table=0,priority=10,ip,actions=output:2", "");
    let sc = SharedControl::new(Control::new(p, EngineKind::Incremental));
    sc.lock().keep_moved = true;
    let mut dp = Datapath::new(DpConfig { flow_limit: 0, ..DpConfig::default() });
    let mut fwd = sc.clone();
    let frame = Packet::new(kairo_wire::emit::frame(&key("in_port=1,udp,nw_dst=10.0.0.9,tp_src=1,tp_dst=2"), &[]), 1);
    let len = frame.bytes.len() as u64;
    let mut sent = 0;
    dp.process_packets(&mut [frame], 0, &mut fwd, &mut |_, _, _| sent += 1);
    assert_eq!((sent, dp.n_flows(), dp.stats.not_installed), (1, 0, 1));
    let moved = std::mem::take(&mut sc.lock().moved);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].counts(), (1, len));
    assert_eq!(moved[0].traversal.steps.len(), 1);
}

/// A learn with a limit and a result bit reads how many flows of its table
/// carry its cookie, and whether its flow is there (by match and priority,
/// any cookie): a flow with its match added or removed, or one with its
/// cookie deleted alone (one rule removed, which maintenance otherwise
/// answers from the rule's users), re-translates the entries whose learn
/// it decided, though they never visited its table. (Found by the
/// random-update test: the entry kept the bit it had.)
#[test]
fn removing_a_flow_a_learn_limit_counted_retranslates_the_refused_entries() {
    let flows = "table=0,actions=learn(table=1,limit=1,cookie=0x6,result_dst=reg0[2],\
                 NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),resubmit(,2)\n\
                 table=1,priority=5,cookie=0x6,dl_dst=02:00:00:00:00:77,actions=output:3\n\
                 table=2,priority=10,reg0=0x4/0x4,actions=output:1\n\
                 table=2,priority=0,actions=output:2";
    let p = pipeline(flows, "");
    let pkt = "in_port=3,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:09";
    let (_, inc) = filled(&p, EngineKind::Incremental, &[pkt.to_string()]);
    let actions =
        |c: &Control| c.engine.entries().iter().map(|m| kairo_xlate::format_actions(&m.actions())).collect::<Vec<_>>();
    // Table 1 holds one flow with cookie 6: the learn is refused.
    assert_eq!(actions(&inc.lock()), vec!["2"]);
    // A flow with the learned flow's match and priority, another cookie:
    // the learned flow is there, so the learn is let in; gone, refused.
    let same = "table=1,priority=32768,cookie=0x9,dl_dst=02:00:00:00:00:01,actions=drop";
    inc.lock().apply(&crate::parse_command("add-flow", same).unwrap()).unwrap();
    assert_eq!(actions(&inc.lock()), vec!["1"]);
    let del = "table=1,priority=32768,dl_dst=02:00:00:00:00:01";
    inc.lock().apply(&crate::parse_command("--strict del-flows", del).unwrap()).unwrap();
    assert_eq!(actions(&inc.lock()), vec!["2"]);
    let m = inc.lock().pipeline().table(1).and_then(|t| t.cls.iter().next().map(|r| r.payload.m)).unwrap();
    let gone = kairo_ofproto::FlowSpec::exact(1, 5, m);
    inc.lock().apply(&FlowMod::Delete { strict: true, spec: gone }).unwrap();
    assert_eq!(actions(&inc.lock()), vec!["1"]);
    assert!(inc.lock().verify().is_empty());
}

/// A two-clause conjunction over sources and destinations, answered, with
/// a fallback; and packets where it completes and where it does not.
fn conj_case() -> (Pipeline, Vec<String>) {
    let p = pipeline(
        "table=0,priority=10,cookie=0x7,ip,nw_src=10.0.0.0/24,actions=conjunction(1,1/2)\n\
         table=0,priority=10,cookie=0x7,ip,nw_dst=10.1.0.0/24,actions=conjunction(1,2/2)\n\
         table=0,priority=10,cookie=0x8,conj_id=1,ip,actions=output:2\n\
         table=0,priority=1,actions=output:3",
        "",
    );
    // (One megaflow each: in_port is always exact.)
    let mut pkts: Vec<String> =
        (0..64).map(|i| format!("in_port={},ip,nw_src=10.0.{i}.5,nw_dst=10.2.{i}.1", i + 10)).collect();
    pkts.extend((0..4).map(|i| format!("in_port={},ip,nw_src=10.0.{i}.5,nw_dst=10.1.0.{i}", i + 1)));
    (p, pkts)
}

#[test]
fn clause_flows_removed_together_take_the_entries_their_conjunction_answered() {
    let (p, pkts) = conj_case();
    // In one flow-mod (both clauses by cookie), and in a bundle of two.
    let removals = [
        parse_command("del-flows", "table=0,cookie=0x7/-1").unwrap(),
        FlowMod::Bundle(vec![
            parse_command("--strict del-flows", "table=0,priority=10,ip,nw_src=10.0.0.0/24").unwrap(),
            parse_command("--strict del-flows", "table=0,priority=10,ip,nw_dst=10.1.0.0/24").unwrap(),
        ]),
    ];
    for fm in removals {
        let (mut dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
        let mut s2 = inc.clone();
        let done = key("in_port=1,ip,nw_src=10.0.0.5,nw_dst=10.1.0.0");
        assert_eq!(*dp.process_key(&done, 1, None, 0, &mut s2), vec![DpAction::Output(2)]);
        let r = inc.lock().apply(&fm).unwrap();
        // The answered entry (only it) changes: the conjunction no longer completes.
        assert_eq!(r.updated, 1, "{}: {r}", describe(&fm));
        assert!(inc.lock().verify().is_empty(), "{}", describe(&fm));
        assert_eq!(*dp.process_key(&done, 1, None, 0, &mut s2), vec![DpAction::Output(3)]);
        let (_dpf, full) = filled(&p, EngineKind::Full, &pkts);
        full.lock().apply(&fm).unwrap();
        assert_eq!(view(&full.lock()), view(&inc.lock()), "{}", describe(&fm));
    }
}

/// Two conjunctions over the same sources and destinations at one
/// priority: where both complete, the one of lower id answers (and the
/// other is never tried).
fn two_conj_case() -> (Pipeline, Vec<String>) {
    let p = pipeline(
        "table=0,priority=10,ip,nw_src=10.0.0.0/16,actions=conjunction(1,1/2)\n\
         table=0,priority=10,ip,nw_dst=10.1.0.0/16,actions=conjunction(1,2/2)\n\
         table=0,priority=10,ip,nw_src=10.0.0.0/24,actions=conjunction(2,1/2)\n\
         table=0,priority=10,ip,nw_dst=10.1.0.0/24,actions=conjunction(2,2/2)\n\
         table=0,priority=10,conj_id=1,ip,actions=output:2\n\
         table=0,priority=10,conj_id=2,ip,actions=output:4\n\
         table=0,priority=1,actions=output:3",
        "",
    );
    let mut pkts: Vec<String> =
        (0..8).map(|i| format!("in_port={},ip,nw_src=10.0.0.{i},nw_dst=10.1.0.{i}", i + 1)).collect();
    pkts.extend((0..8).map(|i| format!("in_port={},ip,nw_src=10.0.{i}.9,nw_dst=10.2.0.{i}", i + 20)));
    (p, pkts)
}

#[test]
fn a_clause_flow_removed_takes_only_the_entries_where_it_completed_a_conjunction() {
    let (p, pkts) = two_conj_case();
    let cases = [
        // Conjunction 2 completes over the first eight entries, but 1
        // answers them first: its clause flow decided nothing there.
        ("--strict del-flows", "table=0,priority=10,ip,nw_src=10.0.0.0/24", 0),
        // Conjunction 1's did: without it 2 answers them.
        ("--strict del-flows", "table=0,priority=10,ip,nw_src=10.0.0.0/16", 8),
    ];
    for (cmd, line, changed) in cases {
        let fm = parse_command(cmd, line).unwrap();
        let (_dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
        assert_eq!(inc.lock().engine.len(), 16);
        let r = inc.lock().apply(&fm).unwrap();
        assert_eq!((r.examined, r.updated), (changed, changed), "{line}: {r}");
        assert!(inc.lock().verify().is_empty(), "{line}");
        let (_dpf, full) = filled(&p, EngineKind::Full, &pkts);
        full.lock().apply(&fm).unwrap();
        assert_eq!(view(&full.lock()), view(&inc.lock()), "{line}");
    }
}

#[test]
fn a_policy_added_in_one_bundle_takes_the_entries_where_it_completes() {
    let (p, pkts) = conj_case();
    // A new conjunction above the first, whole in one bundle: it completes
    // for the sources 10.0.0-1.x toward 10.1.0.0/24 and 10.2.0-1.0/24,
    // and answers there.
    let lines = [
        "table=0,priority=20,ip,nw_src=10.0.0.0/24,actions=conjunction(9,1/2)",
        "table=0,priority=20,ip,nw_src=10.0.1.0/24,actions=conjunction(9,1/2)",
        "table=0,priority=20,ip,nw_dst=10.1.0.0/24,actions=conjunction(9,2/2)",
        "table=0,priority=20,ip,nw_dst=10.2.0.0/23,actions=conjunction(9,2/2)",
        "table=0,priority=20,conj_id=9,ip,actions=output:5",
    ];
    // With its answer, and without (completed, unanswered: the lookup goes
    // on below it, as before, but may now be changed by any rule).
    for n in [lines.len(), lines.len() - 1] {
        let fm = FlowMod::Bundle(lines[..n].iter().map(|l| parse_command("add-flow", l).unwrap()).collect());
        let (_dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
        let r = inc.lock().apply(&fm).unwrap();
        // Sources 10.0.0.5 and 10.0.1.5: toward 10.2.0.1, 10.2.1.1 and 10.1.0.0-1.
        assert_eq!(r.examined, 4, "{n} flows: {r}");
        assert!(inc.lock().verify().is_empty(), "{n} flows");
        let (_dpf, full) = filled(&p, EngineKind::Full, &pkts);
        full.lock().apply(&fm).unwrap();
        assert_eq!(view(&full.lock()), view(&inc.lock()), "{n} flows");
    }
}

#[test]
fn a_broad_clause_flow_finds_its_entries_through_the_other_dimension() {
    let (p, pkts) = conj_case();
    let (_dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
    let n = inc.lock().engine.len();
    assert!(n >= 60, "{n}");
    // A source /16 covers every entry; only the four toward 10.1.0.0/24
    // can complete the conjunction with it, and only they are taken.
    let add =
        parse_command("add-flow", "table=0,priority=10,ip,nw_src=10.0.0.0/16,actions=conjunction(1,1/2)").unwrap();
    let r = inc.lock().apply(&add).unwrap();
    assert!(r.examined <= 4, "{r}");
    assert!(inc.lock().verify().is_empty());
    let (_dpf, full) = filled(&p, EngineKind::Full, &pkts);
    full.lock().apply(&add).unwrap();
    assert_eq!(view(&full.lock()), view(&inc.lock()));
}

#[test]
fn conjunction_plans_pair_the_dimensions_that_narrow_both_index_fields() {
    use kairo_flow::Field;
    let rules: Vec<kairo_ofproto::Rule> = parse_flow_file(
        "table=0,priority=10,ip,nw_src=10.0.0.0/16,actions=conjunction(1,1/3)\n\
         table=0,priority=10,ip,nw_dst=10.1.0.0/24,actions=conjunction(1,2/3)\n\
         table=0,priority=10,ip,nw_dst=10.2.0.0/24,actions=conjunction(1,2/3)\n\
         table=0,priority=10,tcp,tp_dst=80,actions=conjunction(1,3/3)",
    )
    .unwrap()
    .rules;
    let dims = vec![vec![&rules[0]], vec![&rules[1], &rules[2]], vec![&rules[3]]];
    let plans = conj_plans(&dims, (Field::IpSrc, Some(Field::IpDst)), third_probes(&dims, Some(Field::TpDst)));
    // First the pairs of sources and destinations, each narrowed on both;
    // then the floors and the ports on the third field; then the
    // dimensions one by one, sources (the outer field) first.
    let index::Probe::Walk(pairs) = &plans[0] else { panic!("first: pairs") };
    assert_eq!(pairs.len(), 2);
    assert!(pairs.iter().all(|q| q.mask().get(Field::IpSrc) != 0 && q.mask().get(Field::IpDst) != 0));
    assert!(matches!(plans[1], index::Probe::Floor));
    assert!(matches!(&plans[2], index::Probe::Third(q) if q.len() == 1 && q[0].mask().get(Field::TpDst) != 0));
    assert!(matches!(&plans[3], index::Probe::Walk(q) if q.len() == 1 && q[0].mask().get(Field::IpSrc) != 0));
    assert!(matches!(&plans[4], index::Probe::Walk(q) if q.len() == 2));
    assert_eq!(plans.len(), 5);
    // Without an inner field no pair; the dimension on the outer field first.
    let plans = conj_plans(&dims, (Field::IpDst, None), third_probes(&dims, None));
    assert!(matches!(&plans[0], index::Probe::Walk(q) if q.len() == 2 && q[0].mask().get(Field::IpDst) != 0));
    assert!(matches!(plans[1], index::Probe::Floor));
}

/// A policy as Antrea writes one for a large namespace: 3000 pods, 8 peer
/// networks and 3 ports as one conjunction.
fn thousands_case() -> (Pipeline, Vec<String>) {
    let mut flows = String::new();
    for i in 0..3000u32 {
        let a = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        flows.push_str(&format!("table=0,priority=10,ip,nw_dst={a},actions=conjunction(1,1/3)\n"));
    }
    for i in 0..8u32 {
        flows.push_str(&format!("table=0,priority=10,ip,nw_src=10.2.{i}.0/24,actions=conjunction(1,2/3)\n"));
    }
    for port in [80u32, 443, 8080] {
        flows.push_str(&format!("table=0,priority=10,tcp,tp_dst={port},actions=conjunction(1,3/3)\n"));
    }
    flows.push_str("table=0,priority=10,conj_id=1,ip,actions=output:2\ntable=0,priority=1,actions=output:3\n");
    let pkts = (0..4000u32)
        .map(|i| {
            let (src, dst) =
                (format!("10.2.{}.{}", i % 8, i % 200 + 1), format!("10.1.{}.{}", (i / 7) % 12, i % 250 + 1));
            format!("in_port={},tcp,nw_src={src},nw_dst={dst},tp_dst={}", i % 50 + 1, [80, 443, 22][i as usize % 3])
        })
        .collect();
    (pipeline(&flows, ""), pkts)
}

#[test]
fn a_policy_of_thousands_of_members_is_maintained_exactly() {
    let (p, pkts) = thousands_case();
    let (_dp, inc) = filled(&p, EngineKind::Incremental, &pkts);
    let (_dpf, full) = filled(&p, EngineKind::Full, &pkts);
    assert!(inc.lock().engine.len() > 3000);
    // Members of each dimension added and taken (one pod, a /16 of them,
    // a peer network, a port), and the answer taken and put back.
    for (cmd, arg) in [
        ("add-flow", "table=0,priority=10,ip,nw_dst=10.1.20.1,actions=conjunction(1,1/3)"),
        ("add-flow", "table=0,priority=10,ip,nw_dst=10.1.0.0/16,actions=conjunction(1,1/3)"),
        ("--strict del-flows", "table=0,priority=10,ip,nw_dst=10.1.0.5"),
        ("add-flow", "table=0,priority=10,ip,nw_src=10.2.9.0/24,actions=conjunction(1,2/3)"),
        ("--strict del-flows", "table=0,priority=10,ip,nw_src=10.2.3.0/24"),
        ("add-flow", "table=0,priority=10,tcp,tp_dst=22,actions=conjunction(1,3/3)"),
        ("--strict del-flows", "table=0,priority=10,conj_id=1,ip"),
        ("add-flow", "table=0,priority=10,conj_id=1,ip,actions=output:4"),
    ] {
        let fm = parse_command(cmd, arg).unwrap();
        let r = inc.lock().apply(&fm).unwrap();
        full.lock().apply(&fm).unwrap();
        assert!(inc.lock().verify().is_empty(), "{cmd} {arg}: {r}");
        assert_eq!(view(&full.lock()), view(&inc.lock()), "{cmd} {arg}");
    }
}

/// A delete or modify by an exact cookie selects every flow with that
/// cookie, and only those (found through the table's flows by cookie); a
/// masked cookie walks the table.
#[test]
fn flows_are_selected_by_exact_and_masked_cookie() {
    let mut flows = String::new();
    for i in 0..40u32 {
        flows.push_str(&format!(
            "table=0,priority={},cookie={:#x},ip,nw_src=10.0.0.{i},actions=output:1\n",
            10 + i,
            i % 4
        ));
    }
    let p = pipeline(&flows, "");
    let spec = |cmd: &str, line: &str| match parse_command(cmd, line).unwrap() {
        FlowMod::Delete { spec, strict } | FlowMod::Modify { spec, strict, .. } => (spec, strict),
        other => panic!("{other:?}"),
    };
    let cookies = |sel: &[(u8, kairo_classifier::RuleId)]| -> Vec<u64> {
        sel.iter().map(|&(t, id)| p.rule(t, id).unwrap().cookie).collect()
    };
    let (s, strict) = spec("del-flows", "table=0,cookie=0x2/-1");
    let sel = flowmod::select_rules(&p, &s, strict);
    assert_eq!((sel.len(), cookies(&sel).iter().all(|&c| c == 2)), (10, true));
    let (s, strict) = spec("del-flows", "cookie=0x3/-1,ip,nw_src=10.0.0.0/28");
    assert_eq!(cookies(&flowmod::select_rules(&p, &s, strict)), vec![3, 3, 3, 3]);
    let (s, strict) = spec("mod-flows", "cookie=0x1/0x1,actions=drop");
    let sel = flowmod::select_rules(&p, &s, strict);
    assert_eq!((sel.len(), cookies(&sel).iter().all(|&c| c % 2 == 1)), (20, true));
    let (s, strict) = spec("del-flows", "table=0,cookie=0x9/-1");
    assert!(flowmod::select_rules(&p, &s, strict).is_empty());
}

/// A datapath-hashed group inside a clone in check_pkt_larger's first
/// list: the clone's freeze keeps the action set (a copy), then the
/// first list's end uses the shared set up, so the second list freezes
/// without it: two frozen states, as Open vSwitch 3.1's `ofproto/trace`
/// shows (`gt(..recirc(0xfd)),le(..recirc(0xfe))`). Translation, the
/// cache after the update and the reference agree (the reference kept
/// the set for the second list, found by the engine proptest).
#[test]
fn a_freeze_in_a_clone_uses_up_the_action_set_the_second_list_shares() {
    let flows = "table=0,priority=230,actions=write_actions(output:2),goto_table:2\n";
    let groups =
        "group_id=5,type=select,bucket=bucket_id:0,weight:1,actions=set_field:02:00:00:00:00:09->dl_dst,output:2";
    let mut p = pipeline(flows, groups);
    p.set_ports([1, 2, 3, 4]);
    let pk = "in_port=4,arp,dl_src=00:00:00:00:00:02,dl_dst=00:00:00:00:00:01,arp_op=2".to_string();
    let (_dp, sc) = filled(&p, EngineKind::Incremental, &[pk]);
    let fm = crate::flowmod::parse_command(
        "add-flow",
        "table=2,priority=160,arp,actions=check_pkt_larger(1500)->reg0[1],load:0x0->reg0[0..3],\
         clone(output:3,group:5,set_field:00:00:00:00:00:01->dl_src),goto_table:3",
    )
    .unwrap();
    let mut c = sc.lock();
    c.apply(&fm).unwrap();
    c.housekeep();
    assert!(c.verify().is_empty());
    let p = c.pipeline();
    let states: Vec<_> = (1..=2).filter_map(|id| p.recircs().get(id)).collect();
    assert_eq!(states.len(), 2, "one frozen state per list");
    assert_eq!(states.iter().map(|s| s.action_set.len()).collect::<Vec<_>>(), [1, 0], "the second list's has no set");
    let reference = kairo_oracle::Reference::new(&p);
    let mut r = rng(1);
    for mf in c.engine.entries() {
        if let Some(d) = kairo_oracle::check_entry(&reference, &mf.rep, &mf.mask, &mf.actions(), None, 12, &mut r) {
            panic!("the reference disagrees: {d}");
        }
    }
}
