//! Rendering a translation like `ovs-appctl ofproto/trace`: one block per
//! table visited, then `Megaflow:` and `Datapath actions:`; or as JSON.

use kairo_flow::{format_key, format_megaflow, FlowKey};
use serde_json::{json, Value};

use crate::odp::format_actions;
use crate::pipeline::Pipeline;
use crate::translate::XlateResult;
use crate::traversal::Via;

/// The trace as text.
pub fn trace_text(p: &Pipeline, key: &FlowKey, r: &XlateResult) -> String {
    let mut s = String::new();
    s.push_str(&format!("Flow: {}\n\nbridge(\"kairo\")\n---------------\n", format_key(key)));
    for st in &r.traversal.steps {
        let ind = " ".repeat(4 * st.nest as usize);
        let how = match st.via {
            Via::Resubmit => format!("{ind}resubmit(,{})\n", st.table),
            Via::MissContinue => format!("{ind}continue to table {}\n", st.table),
            _ => String::new(),
        };
        s.push_str(&how);
        // A conjunctive match shows the conj_id rule that answered it, as
        // ofproto/trace does.
        match st.outcome.rule() {
            Some(id) => match p.rule(st.table, id) {
                Some(rule) => {
                    let m = rule.m.to_string();
                    let m = if m.is_empty() { String::new() } else { format!("{m}, ") };
                    s.push_str(&format!(
                        "{ind}{:2}. {m}priority {}, cookie {:#x}\n{ind}    {}\n",
                        st.table, rule.priority, rule.cookie, rule.inst
                    ));
                }
                None => s.push_str(&format!("{ind}{:2}. rule {id} (since removed)\n", st.table)),
            },
            None => {
                let then = match p.miss(st.table) {
                    kairo_ofproto::MissBehavior::Drop => "drop".to_string(),
                    kairo_ofproto::MissBehavior::Continue(n) => format!("continue to table {n}"),
                };
                s.push_str(&format!("{ind}{:2}. No match.\n{ind}    {then}\n", st.table));
            }
        }
    }
    for g in r.traversal.groups.iter().filter(|g| g.group != crate::recirc::FROZEN_FLOOD) {
        let b = if g.buckets.is_empty() {
            "no live bucket".to_string()
        } else {
            format!("bucket {}", g.buckets.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(","))
        };
        s.push_str(&format!("group:{} -> {b}\n", g.group));
    }
    // The flows learn actions made, as ofproto/trace reports each.
    for l in r.traversal.learned.iter().flatten() {
        s.push_str(&format!("learned: {}\n", learned_text(&l.rule)));
    }
    s.push('\n');
    if let Some(e) = &r.error {
        s.push_str(&format!("Translation error: {e}\n"));
    }
    if r.slow && r.error.is_none() {
        s.push_str(&format!(
            "Translation stopped: resubmits yielded over {} kB of actions\n",
            (crate::MAX_ACTION_BYTES + 1) / 1024
        ));
    }
    let fin = if r.final_flow == *key { "unchanged".to_string() } else { format_key(&r.final_flow) };
    s.push_str(&format!(
        "Final flow: {fin}\nMegaflow: {}\nDatapath actions: {}\n",
        format_megaflow(key, &r.mask),
        format_actions(&r.actions)
    ));
    s
}

/// The trace as one JSON object with keys `traversal`, `megaflow` and `datapath_actions`.
pub fn trace_json(p: &Pipeline, key: &FlowKey, r: &XlateResult) -> Value {
    let steps: Vec<Value> = r
        .traversal
        .steps
        .iter()
        .map(|st| {
            let rule = st.outcome.rule().and_then(|id| {
                p.rule(st.table, id).map(|rule| {
                    json!({"id": id, "priority": rule.priority, "cookie": format!("{:#x}", rule.cookie),
                           "match": rule.m.to_string(), "actions": rule.inst.to_string()})
                })
            });
            json!({"table": st.table, "outcome": st.outcome, "via": st.via, "depth": st.depth, "rule": rule})
        })
        .collect();
    json!({
        "flow": format_key(key),
        "traversal": {"tables": steps, "groups": r.traversal.groups},
        "megaflow": format_megaflow(key, &r.mask),
        "datapath_actions": format_actions(&r.actions),
        "final_flow": format_key(&r.final_flow),
        "error": r.error.as_ref().map(|e| e.to_string()),
        "slow_path": r.slow,
        "learned": r.traversal.learned.iter().flatten().map(|l| learned_text(&l.rule)).collect::<Vec<_>>(),
    })
}

/// A learned flow as `ofproto/trace` shows it: `table=T match priority=P
/// [cookie=C] [idle_timeout=I] [hard_timeout=H] [send_flow_rem] actions=...`.
fn learned_text(r: &kairo_ofproto::Rule) -> String {
    let mut s = format!("table={}", r.table);
    let m = r.m.to_string();
    if !m.is_empty() {
        s.push_str(&format!(" {m}"));
    }
    s.push_str(&format!(" priority={}", r.priority));
    if r.cookie != 0 {
        s.push_str(&format!(" cookie={:#x}", r.cookie));
    }
    if r.idle_timeout != 0 {
        s.push_str(&format!(" idle_timeout={}", r.idle_timeout));
    }
    if r.hard_timeout != 0 {
        s.push_str(&format!(" hard_timeout={}", r.hard_timeout));
    }
    if r.flags & kairo_ofproto::flags::SEND_FLOW_REM != 0 {
        s.push_str(" send_flow_rem");
    }
    s.push_str(&format!(" actions={}", r.inst));
    s
}

/// The banner between passes, as `ofproto/trace` prints one before a
/// recirculated pass: the id, what the datapath set, and what it resumes.
fn pass_banner(p: &Pipeline, key: &FlowKey) -> String {
    let id = key.get(kairo_flow::Field::RecircId) as u32;
    let hash = key.get(kairo_flow::Field::DpHash);
    let state = p.recircs().get(id);
    let thaw = state.as_ref().map_or_else(|| "no frozen state".to_string(), |st| st.describe());
    let rule = "=".repeat(79);
    let ct = key.get(kairo_flow::Field::CtState);
    // A `ct` fork resumes at a table with nothing else to do; a datapath
    // hash's resumes inside its group (a packet tracked earlier keeps its
    // ct_state through it).
    let ct_fork = state.as_ref().is_some_and(|st| st.ops.is_empty() && st.conntracked);
    let what = if ct_fork {
        let names: Vec<&str> =
            kairo_flow::parse::CT_STATE_NAMES.iter().filter(|(_, b)| ct & b != 0).map(|(n, _)| *n).collect();
        format!("resume conntrack with ct_state={},ct_zone={}", names.join("|"), key.get(kairo_flow::Field::CtZone))
    } else {
        format!("resume with dp_hash={hash:#x}")
    };
    format!("\n{rule}\nrecirc({id:#x}) - {what}\n    thaw: {thaw}\n{rule}\n\n")
}

/// Every pass of a packet (see [`crate::recirc::follow`]) as text, each
/// recirculated one after a banner.
pub fn trace_passes_text(p: &Pipeline, passes: &[crate::recirc::Pass]) -> String {
    let mut s = String::new();
    for (i, pass) in passes.iter().enumerate() {
        if i > 0 {
            s.push_str(&pass_banner(p, &pass.key));
        }
        s.push_str(&trace_text(p, &pass.key, &pass.result));
    }
    s
}

/// Every pass of a packet as a JSON list of [`trace_json`] objects, each
/// with its `recirc_id`.
pub fn trace_passes_json(p: &Pipeline, passes: &[crate::recirc::Pass]) -> Value {
    Value::Array(
        passes
            .iter()
            .map(|pass| {
                let mut v = trace_json(p, &pass.key, &pass.result);
                v["recirc_id"] = json!(pass.key.get(kairo_flow::Field::RecircId));
                v
            })
            .collect(),
    )
}
