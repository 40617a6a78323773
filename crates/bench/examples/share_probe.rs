//! How much of an update's re-translation work its affected entries could
//! share. Measures the question behind the Antrea targets (README): a pod
//! move or an endpoint change re-translates hundreds of entries one by one;
//! if many of them entered the tables after the change in the same state
//! (as far as those tables' lookups can tell), one re-translation of that
//! suffix could serve them all.
//!
//! Fills an Antrea cache, applies the stream's updates of the chosen kinds,
//! and for each entry whose traversal changed takes the first visit that
//! changed and the key it saw there; then counts the distinct such keys
//! under (a) the bits the lookups of that visit and every later one examined
//! (each lookup's own wildcards, re-run on the key that visit saw), and (b)
//! those bits plus the bits the whole translation's actions read (its action
//! mask), and (e) the bits of (a) plus those the actions of that visit and
//! every later one read ([`kairo_xlate::actions_read_from`]: the candidate
//! key of a shared re-translation), beside (c) the distinct new datapath
//! action lists and (d) the distinct pairs of a state under (a) and its
//! entry's new action list (as many pairs as states: entries in one state
//! all ended with the same actions). It does not
//! change the engine; it reads the cache after each update. Run with
//! `cargo run --release -p kairo-bench --example share_probe [ENTRIES] [UPDATES]`.

use kairo_bench::count_arg;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kairo_bench::ttu::{fill, workload, PipelineKind};
use kairo_flow::FlowMask;
use kairo_maintain::{parse_command, EngineKind};
use kairo_xlate::{Pipeline, Traversal};

fn main() -> Result<(), String> {
    let entries = count_arg(1, 100_000)?;
    let updates = count_arg(2, 50)?;
    let kinds = ["pod move", "endpoint change"];
    let wl = workload(PipelineKind::Antrea, entries, updates, 1)?;
    let p = Pipeline::from_parts(
        kairo_ofproto::parse_flow_file(&wl.flows).map_err(|e| e.to_string())?,
        kairo_ofproto::parse_group_file(&wl.groups).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let (_dp, sc) = fill(p, EngineKind::Incremental, wl.keys(), wl.connections, entries, false)?;
    println!("Antrea, {entries} megaflows: per update, entries re-translated and what they could share");
    println!(
        "{:>16}  {:>8}  {:>10}  {:>12}  {:>11}  {:>12}  {:>6}",
        "update", "updated", "(a) states", "(a)+(b) all", "(a)+(e) ", "action lists", "pairs"
    );
    for (kind, cmd, a) in wl.updates.iter().filter(|u| kinds.contains(&u.0)) {
        let mut c = sc.lock();
        let before: HashMap<usize, Arc<Traversal>> =
            c.engine.entries().iter().map(|mf| (Arc::as_ptr(mf) as usize, mf.traversal())).collect();
        let fm = parse_command(cmd, a).map_err(|e| format!("{cmd} {a}: {e}"))?;
        c.apply(&fm).map_err(|e| e.to_string())?;
        let guard = c.pipeline();
        let p = &*guard;
        let (mut lookup_states, mut action_states, mut actions) = (HashSet::new(), HashSet::new(), HashSet::new());
        let mut state_actions = HashSet::new();
        let mut suffix_states = HashSet::new();
        let mut updated = 0;
        for mf in c.engine.entries() {
            let Some(old) = before.get(&(Arc::as_ptr(&mf) as usize)) else { continue };
            let new = mf.traversal();
            if Arc::ptr_eq(old, &new) {
                continue;
            }
            updated += 1;
            let differs = |i: usize| {
                old.steps.get(i) != new.steps.get(i)
                    || old.version(old.steps[i].version) != new.version(new.steps[i].version)
            };
            let Some(k) = (0..new.steps.len()).find(|&i| i >= old.steps.len() || differs(i)) else { continue };
            let mut examined = FlowMask::ZERO;
            for st in &new.steps[k..] {
                if let Some(t) = p.table(st.table) {
                    let mut wc = FlowMask::ZERO;
                    let _ = t.cls.lookup(&new.key_at(&mf.rep, st), &mut wc);
                    examined.or(&wc);
                }
            }
            let at = new.key_at(&mf.rep, &new.steps[k]);
            let state = (new.steps[k].table, at.masked(&examined).w);
            let mut with_suffix_actions = examined;
            with_suffix_actions.or(&kairo_xlate::actions_read_from(p, &mf.rep, k));
            suffix_states.insert((new.steps[k].table, at.masked(&with_suffix_actions).w));
            let r = kairo_xlate::translate(p, &mf.rep);
            let mut with_actions = examined;
            with_actions.or(&r.action_mask);
            lookup_states.insert(state);
            action_states.insert((new.steps[k].table, at.masked(&with_actions).w));
            let acts = Arc::as_ptr(&mf.actions()) as usize;
            actions.insert(acts);
            state_actions.insert((state, acts));
        }
        drop(guard);
        c.housekeep();
        println!(
            "{kind:>16}  {updated:>8}  {:>10}  {:>12}  {:>11}  {:>12}  {:>6}",
            lookup_states.len(),
            action_states.len(),
            suffix_states.len(),
            actions.len(),
            state_actions.len()
        );
    }
    Ok(())
}
