//! Rule updates as `ovs-ofctl` knows them, applied to a pipeline, and the
//! deltas they produce: the small vocabulary cache maintenance works from.
//!
//! Invariant: applying a [`FlowMod`] either succeeds and returns every delta
//! it caused, or fails and leaves the pipeline unchanged (bundles included).

use std::sync::Arc;

use kairo_classifier::RuleId;
use kairo_ofproto::{parse_flow_in, parse_group_in, Action, FlowSpec, Group, MissBehavior, OfError, PortNames, Rule};
use kairo_xlate::{conj_related, Pipeline, PipelineError};

/// One update.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowMod {
    /// add-flow (replaces a rule with the same table, priority and match).
    Add(Rule),
    /// mod-flows [--strict]: new instructions for the rules the spec selects.
    Modify {
        strict: bool,
        spec: FlowSpec,
    },
    /// del-flows [--strict].
    Delete {
        strict: bool,
        spec: FlowSpec,
    },
    AddGroup(Group),
    /// Several groups added at once, which may name each other in any order
    /// (a group file).
    AddGroups(Vec<Group>),
    ModGroup(Group),
    /// del-groups (all groups if `None`); rules that use a deleted group are
    /// deleted with it, as OpenFlow requires.
    DelGroup(Option<u32>),
    /// A table's miss behaviour.
    SetMiss(u8, MissBehavior),
    /// A port's liveness for fast-failover groups (link state, or OpenFlow's
    /// port_down), as the switch sees it change.
    SetPortLive(u32, bool),
    /// The switch's ports (what FLOOD sends to), after one was added or
    /// removed (NORMAL forgets what it learned on a removed one).
    SetPorts(Vec<u32>),
    /// A port's VLAN settings for NORMAL (`None`: the default, a trunk of
    /// every VLAN). NORMAL forgets what it learned on the port, as Open
    /// vSwitch does when a port's VLAN configuration changes.
    SetPortSettings(u32, Option<kairo_ofproto::ports::PortSettings>),
    /// Source MACs NORMAL saw on packets the switch handled, at `now`
    /// (seconds on the switch's clock): new and moved ones change the MAC
    /// table, the others only refresh it.
    Learn {
        learned: Vec<kairo_xlate::Learn>,
        now: u64,
    },
    /// MACs not learned or refreshed for the table's aging time are
    /// forgotten (at `now`, seconds on the switch's clock).
    ExpireMacs(u64),
    /// Forget the learned MACs (of one VLAN, if given), as `ovs-appctl
    /// fdb/flush`.
    FlushMacs(Option<u16>),
    /// Flows `learn` actions made from packets the switch handled (as Open
    /// vSwitch adds them: a strict modify). A flow already there as it is
    /// changes nothing (the caller refreshes its idle timeout); one there
    /// with other actions or timeouts is replaced; a new one is added if
    /// its learn's limit lets it in (else it is dropped, as Open vSwitch
    /// drops it). A flow the pipeline refuses is dropped, not an error.
    LearnFlows(Vec<kairo_xlate::Learned>),
    /// `fin_timeout`s whose packets carried FIN or RST: each rule's idle
    /// and hard timeouts become at most the given ones (0: left alone), as
    /// Open vSwitch's `ofproto_rule_reduce_timeouts`. A rule gone since is
    /// skipped; one whose timeouts do not change is not touched.
    CutTimeouts(Vec<kairo_xlate::FinTimeout>),
    /// Several updates applied atomically, with one maintenance pass.
    Bundle(Vec<FlowMod>),
}

/// What changed in the pipeline.
#[derive(Clone, Debug)]
pub enum Delta {
    RuleAdded {
        table: u8,
        id: RuleId,
    },
    RuleRemoved {
        table: u8,
        id: RuleId,
        rule: Arc<Rule>,
    },
    /// Same match and priority, new instructions (or cookie). `conj`: the
    /// rule took part in conjunctive matches before or after (a clause or
    /// an answer), so the change can reach entries it did not answer.
    RuleModified {
        table: u8,
        id: RuleId,
        conj: bool,
    },
    GroupChanged {
        group: u32,
        /// Before and after, the group is hashed in the datapath the same
        /// way (same algorithm and basis): translations that only froze at
        /// it for the hash do the same (only its buckets changed for them).
        hashed_alike: bool,
    },
    MissChanged {
        table: u8,
    },
    /// A port went up or down (fast-failover groups watching it may choose
    /// another bucket).
    PortChanged {
        port: u32,
    },
    /// The switch's ports changed: the rules and groups that FLOOD, and the
    /// fast-failover groups whose liveness the change can flip (their users
    /// re-translate; nothing else reads the port set).
    PortsChanged {
        rules: Vec<(u8, RuleId)>,
        groups: Vec<u32>,
    },
    /// The MAC learning table changed for these (VLAN, MAC)s: what NORMAL
    /// does for packets to them.
    MacsChanged {
        macs: Vec<(u16, u64)>,
    },
}

/// Errors of a flow-mod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModError {
    #[error(transparent)]
    Syntax(#[from] OfError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("group {0} already exists")]
    GroupExists(u32),
    #[error("group {0} does not exist")]
    NoSuchGroup(u32),
    #[error(
        "port {port}: `{words}`: OpenFlow port-config bits are set by PORT_MOD (`ovs-ofctl mod-port`), not as port \
         settings (which take tag=, trunks= and vlan_mode=)"
    )]
    PortConfig { port: u32, words: String },
    #[error("unknown command `{0}` (expected add-flow, mod-flows, del-flows, add-group, mod-group, del-groups, with --strict for mod/del)")]
    UnknownCommand(String),
}

/// Parses an ovs-ofctl command and its argument: `add-flow`, `mod-flows`,
/// `del-flows` (optionally `--strict`), `add-group`, `mod-group`, `del-groups`.
pub fn parse_command(cmd: &str, arg: &str) -> Result<FlowMod, ModError> {
    parse_command_in(cmd, arg, &PortNames::NONE)
}

/// [`parse_command`] with ports that flows and groups may give by name.
pub fn parse_command_in(cmd: &str, arg: &str, names: &PortNames) -> Result<FlowMod, ModError> {
    let (strict, name) = match cmd.strip_prefix("--strict ") {
        Some(rest) => (true, rest.trim()),
        None => (cmd.ends_with("--strict"), cmd.trim_end_matches("--strict").trim()),
    };
    Ok(match name {
        // Several flows, one a line (as a flow file): one bundle.
        "add-flows" if arg.trim().contains('\n') => FlowMod::Bundle(
            arg.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| Ok(FlowMod::Add(parse_flow_in(l, Some(true), names)?.into_rule()?)))
                .collect::<Result<_, ModError>>()?,
        ),
        "add-flow" | "add-flows" => FlowMod::Add(parse_flow_in(arg, Some(true), names)?.into_rule()?),
        "mod-flows" => {
            let spec = parse_flow_in(arg, Some(true), names)?;
            FlowMod::Modify { strict, spec }
        }
        "del-flows" => FlowMod::Delete { strict, spec: parse_flow_in(arg, Some(false), names)? },
        "add-group" | "add-groups" => FlowMod::AddGroup(parse_group_in(arg, names)?),
        "mod-group" => FlowMod::ModGroup(parse_group_in(arg, names)?),
        "del-groups" => {
            let a = arg.trim();
            if a.is_empty() {
                FlowMod::DelGroup(None)
            } else {
                let id = a
                    .strip_prefix("group_id=")
                    .and_then(kairo_flow::parse::parse_uint)
                    .filter(|v| *v <= u32::MAX as u64)
                    .ok_or_else(|| OfError::Syntax { text: a.to_string(), expected: "group_id=N".into() })?;
                FlowMod::DelGroup(Some(id as u32))
            }
        }
        other => return Err(ModError::UnknownCommand(other.to_string())),
    })
}

/// The rules a mod/del spec selects: (table, id).
pub fn select_rules(p: &Pipeline, spec: &FlowSpec, strict: bool) -> Vec<(u8, RuleId)> {
    select(p, spec, strict).into_iter().map(|(t, id, _)| (t, id)).collect()
}

/// The rules a mod/del spec selects, each with its table and id.
fn select(p: &Pipeline, spec: &FlowSpec, strict: bool) -> Vec<(u8, RuleId, Arc<Rule>)> {
    let mut out = Vec::new();
    if let (true, Some(t)) = (strict, spec.table) {
        // Strict with a table: the rule identity, found directly.
        let prio = spec.priority.unwrap_or(kairo_ofproto::syntax::DEFAULT_PRIORITY);
        if let Some(r) = p.table(t).and_then(|tb| tb.cls.find_exact(&spec.m, prio)) {
            let cookie_ok = spec.cookie_mask.is_none_or(|cm| (r.payload.cookie ^ spec.cookie) & cm == 0);
            let port_ok = spec.out_port.is_none_or(|op| {
                r.payload
                    .inst
                    .apply
                    .iter()
                    .chain(r.payload.inst.write.iter())
                    .any(|a| matches!(a, Action::Output(x) if *x == op))
            });
            let group_ok = spec.out_group.is_none_or(|g| uses_group(&r.payload, g));
            if cookie_ok && port_ok && group_ok {
                out.push((t, r.id, r.payload.clone()));
            }
        }
        return out;
    }
    for (t, table) in p.tables() {
        if spec.table.is_some_and(|x| x != t) {
            continue;
        }
        // An exact cookie: only the table's flows with it (filed by cookie).
        let rules: Box<dyn Iterator<Item = &kairo_classifier::ClsRule<Arc<Rule>>>> = match spec.cookie_mask {
            Some(u64::MAX) => Box::new(table.rules_with_cookie(spec.cookie)),
            _ => Box::new(table.cls.iter()),
        };
        for r in rules {
            let rule = &r.payload;
            if let Some(cm) = spec.cookie_mask {
                if (rule.cookie ^ spec.cookie) & cm != 0 {
                    continue;
                }
            }
            let hit = if strict {
                rule.m == spec.m && rule.priority == spec.priority.unwrap_or(kairo_ofproto::syntax::DEFAULT_PRIORITY)
            } else {
                // Non-strict: the spec's match covers the rule's.
                spec.m.mask().is_subset_of(rule.m.mask()) && rule.m.key().eq_masked(spec.m.key(), spec.m.mask())
            };
            let outputs_to = |p: u32| {
                rule.inst.apply.iter().chain(rule.inst.write.iter()).any(|a| matches!(a, Action::Output(x) if *x == p))
            };
            if hit && spec.out_port.is_none_or(outputs_to) && spec.out_group.is_none_or(|g| uses_group(rule, g)) {
                out.push((t, r.id, r.payload.clone()));
            }
        }
    }
    out.sort_unstable_by_key(|&(t, id, _)| (t, id));
    out
}

/// Does the rule send to group `g` (OpenFlow's out_group filter)?
pub fn uses_group(rule: &Rule, g: u32) -> bool {
    rule.inst.apply.iter().chain(rule.inst.write.iter()).any(|a| matches!(a, Action::Group(x) if *x == g))
}

/// How to take back one change to a pipeline (a failed bundle is rolled
/// back by these, newest first, instead of working on a copy of the rules).
enum Undo {
    /// Put this rule back under its id, or remove the id.
    Rule(u8, RuleId, Option<Arc<Rule>>),
    Group(u32, Option<Arc<Group>>),
    Miss(u8, MissBehavior),
    /// The table did not exist before.
    Table(u8),
    /// The port's liveness before.
    PortLive(u32, bool),
    /// The port set before.
    Ports(Vec<u32>),
    /// A port's VLAN settings before.
    PortSettings(u32, Option<kairo_ofproto::ports::PortSettings>),
    /// What the MAC table held for keys an update changed.
    Macs(Vec<kairo_xlate::mac::MacChange>),
}

impl Undo {
    fn revert(self, p: &mut Pipeline) {
        match self {
            Undo::Rule(t, id, Some(r)) => p.restore_rule(t, id, r),
            Undo::Rule(t, id, None) => {
                p.remove_rule(t, id);
            }
            Undo::Group(id, g) => p.restore_group(id, g),
            Undo::Miss(t, m) => {
                // The value was accepted before, so it is accepted again.
                let _ = p.set_miss(t, m);
            }
            Undo::Table(t) => p.drop_table_if_unused(t),
            Undo::PortLive(port, live) => p.set_port_live(port, live),
            Undo::Ports(ports) => p.set_ports(ports),
            Undo::PortSettings(port, s) => {
                p.set_port_settings(port, s);
            }
            Undo::Macs(changes) => {
                for c in changes.into_iter().rev() {
                    p.macs_mut().restore(c);
                }
            }
        }
    }
}

fn apply_one(p: &mut Pipeline, fm: &FlowMod, out: &mut Vec<Delta>, undo: &mut Vec<Undo>) -> Result<(), ModError> {
    match fm {
        FlowMod::Add(rule) => {
            if p.table(rule.table).is_none() {
                undo.push(Undo::Table(rule.table));
            }
            let (id, old) = p.add_rule(rule.clone())?;
            undo.push(Undo::Rule(rule.table, id, old.clone()));
            out.push(match old {
                Some(old) => {
                    let conj = conj_related(&old) || conj_related(rule);
                    Delta::RuleModified { table: rule.table, id, conj }
                }
                None => Delta::RuleAdded { table: rule.table, id },
            });
        }
        FlowMod::Modify { strict, spec } => {
            let Some(inst) = &spec.instructions else {
                return Err(OfError::Syntax { text: String::new(), expected: "actions= in mod-flows".into() }.into());
            };
            let cookie = spec.cookie_mask.is_none().then_some(spec.cookie).filter(|c| *c != 0);
            // Every new rule made and checked before any is put in, from one
            // read of each selected rule (cold on a large cache; putting it
            // in reads it again, warm, and checks it again, as any caller
            // of `replace_rule` gets).
            let mut new = Vec::new();
            for (t, id, r) in select(p, spec, *strict) {
                // (The old instructions are not copied only to be dropped.)
                let mut n = Rule { inst: inst.clone(), m: r.m, ..*r };
                let has_vlan = kairo_ofproto::action::match_has_vlan(&r.m);
                kairo_ofproto::action::normalize_vlan(&mut n.inst.apply, has_vlan);
                kairo_ofproto::action::normalize_vlan(&mut n.inst.write, has_vlan);
                if let Some(c) = cookie {
                    n.cookie = c;
                }
                p.check_rule(&n)?;
                new.push((t, id, n));
            }
            for (t, id, n) in new {
                let conj = conj_related(&n);
                let old = p.replace_rule(t, id, n)?;
                let conj = conj || conj_related(&old);
                undo.push(Undo::Rule(t, id, Some(old)));
                out.push(Delta::RuleModified { table: t, id, conj });
            }
        }
        FlowMod::Delete { strict, spec } => {
            for (t, id) in select_rules(p, spec, *strict) {
                if let Some(rule) = p.remove_rule(t, id) {
                    undo.push(Undo::Rule(t, id, Some(rule.clone())));
                    out.push(Delta::RuleRemoved { table: t, id, rule });
                }
            }
        }
        FlowMod::AddGroup(g) => {
            if p.group(g.id).is_some() {
                return Err(ModError::GroupExists(g.id));
            }
            let old = p.set_group(g.clone())?;
            undo.push(Undo::Group(g.id, old));
            out.push(Delta::GroupChanged { group: g.id, hashed_alike: false });
        }
        FlowMod::AddGroups(gs) => {
            if let Some(g) = gs.iter().find(|g| p.group(g.id).is_some()) {
                return Err(ModError::GroupExists(g.id));
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(g) = gs.iter().find(|g| !seen.insert(g.id)) {
                return Err(ModError::GroupExists(g.id));
            }
            for (id, old) in p.set_groups(gs.clone())? {
                let hashed_alike = hashed_alike(old.as_deref(), p.group(id).map(|g| &**g));
                undo.push(Undo::Group(id, old));
                out.push(Delta::GroupChanged { group: id, hashed_alike });
            }
        }
        FlowMod::ModGroup(g) => {
            if p.group(g.id).is_none() {
                return Err(ModError::NoSuchGroup(g.id));
            }
            let old = p.set_group(g.clone())?;
            let hashed_alike = hashed_alike(old.as_deref(), Some(g));
            undo.push(Undo::Group(g.id, old));
            out.push(Delta::GroupChanged { group: g.id, hashed_alike });
        }
        FlowMod::DelGroup(which) => {
            // The groups to delete, and (in one pass over the rules) the
            // rules that use any of them, which go with them.
            let ids: std::collections::BTreeSet<u32> = match which {
                Some(g) => p.group(*g).map(|_| *g).into_iter().collect(),
                None => p.groups().map(|g| g.id).collect(),
            };
            if !ids.is_empty() {
                let users: Vec<(u8, RuleId)> = p
                    .tables()
                    .flat_map(|(t, tb)| {
                        tb.cls
                            .iter()
                            .filter(|r| kairo_xlate::pipeline::inst_groups(&r.payload.inst).any(|g| ids.contains(&g)))
                            .map(move |r| (t, r.id))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for (t, id) in users {
                    if let Some(rule) = p.remove_rule(t, id) {
                        undo.push(Undo::Rule(t, id, Some(rule.clone())));
                        out.push(Delta::RuleRemoved { table: t, id, rule });
                    }
                }
                let removed = match which {
                    // One group: refused while another group names it.
                    Some(g) => vec![(*g, p.remove_group(*g)?)],
                    // All of them: chains included.
                    None => p.remove_all_groups()?,
                };
                for (g, old) in removed {
                    undo.push(Undo::Group(g, old));
                    out.push(Delta::GroupChanged { group: g, hashed_alike: false });
                }
            }
        }
        FlowMod::SetMiss(t, m) => {
            let old = p.miss(*t);
            if p.table(*t).is_none() {
                undo.push(Undo::Table(*t));
            }
            p.set_miss(*t, *m)?;
            undo.push(Undo::Miss(*t, old));
            out.push(Delta::MissChanged { table: *t });
        }
        FlowMod::SetPortLive(port, live) => {
            if p.port_live(*port) != *live {
                p.set_port_live(*port, *live);
                undo.push(Undo::PortLive(*port, !*live));
                out.push(Delta::PortChanged { port: *port });
            }
        }
        FlowMod::SetPorts(ports) => {
            let old: Vec<u32> = p.ports().collect();
            let (mut a, mut b) = (old.clone(), ports.clone());
            a.sort_unstable();
            b.sort_unstable();
            b.dedup();
            if a != b {
                p.set_ports(b.iter().copied());
                undo.push(Undo::Ports(old));
                let (rules, mut groups) = flood_dependents(p);
                // A port the switch no longer (or now) has is down (or up) for
                // fast failover; with no ports at all, every port counts as up.
                let flipped: Vec<u32> = if a.is_empty() || b.is_empty() {
                    p.groups().flat_map(|g| g.buckets.iter().filter_map(|b| b.watch_port)).collect()
                } else {
                    a.iter().chain(&b).copied().filter(|x| a.contains(x) != b.contains(x)).collect()
                };
                groups.extend(p.liveness_dependents(&[], &flipped));
                groups.sort_unstable();
                groups.dedup();
                out.push(Delta::PortsChanged { rules, groups });
                // What NORMAL learned on a port that left is forgotten.
                let mut gone = Vec::new();
                for port in a.iter().filter(|x| !b.contains(x)) {
                    gone.extend(p.macs_mut().flush_port(*port));
                }
                macs_changed(gone, out, undo);
            }
        }
        FlowMod::SetPortSettings(port, settings) => {
            // The bits change what reaches and leaves a port, which the
            // maintenance of a settings change (the users of FLOOD and
            // NORMAL) does not cover: a running switch takes them from
            // PORT_MOD, which it applies to the frames themselves. (An
            // offline pipeline, `kairo trace`'s, sets them directly.)
            if let Some(s) = settings.as_ref().filter(|s| s.config.0 != 0) {
                let words: Vec<&str> = s.config.words().collect();
                return Err(ModError::PortConfig { port: *port, words: words.join(" ") });
            }
            let old = p.port_settings(*port).cloned();
            if old != *settings {
                p.set_port_settings(*port, settings.clone());
                undo.push(Undo::PortSettings(*port, old));
                let (rules, groups) = flood_dependents(p);
                out.push(Delta::PortsChanged { rules, groups });
                let gone = p.macs_mut().flush_port(*port);
                macs_changed(gone, out, undo);
            }
        }
        FlowMod::Learn { learned, now } => {
            let mut changed = Vec::new();
            for l in learned {
                changed.extend(p.macs_mut().learn(l.vlan, l.mac, l.port, *now));
            }
            macs_changed(changed, out, undo);
        }
        FlowMod::ExpireMacs(now) => {
            let gone = p.macs_mut().expire(*now);
            macs_changed(gone, out, undo);
        }
        FlowMod::FlushMacs(vlan) => {
            let gone = p.macs_mut().flush(*vlan);
            macs_changed(gone, out, undo);
        }
        FlowMod::LearnFlows(learned) => {
            for l in learned {
                let r = &l.rule;
                let there = p.table(r.table).and_then(|t| t.cls.find_exact(&r.m, r.priority));
                match there.map(|c| *c.payload == *r) {
                    Some(true) => continue,
                    None if !kairo_xlate::admitted(p, r, l.limit, &[]) => continue,
                    _ => {}
                }
                let new_table = p.table(r.table).is_none();
                let Ok((id, old)) = p.add_rule(r.clone()) else { continue };
                if new_table {
                    undo.push(Undo::Table(r.table));
                }
                undo.push(Undo::Rule(r.table, id, old.clone()));
                out.push(match old {
                    Some(old) => Delta::RuleModified { table: r.table, id, conj: conj_related(&old) },
                    None => Delta::RuleAdded { table: r.table, id },
                });
            }
        }
        FlowMod::CutTimeouts(cuts) => {
            let cut = |max: u16, t: u16| if max != 0 && (t == 0 || t > max) { max } else { t };
            for c in cuts {
                let Some(old) = p.rule(c.table, c.rule) else { continue };
                let (idle, hard) = (cut(c.idle, old.idle_timeout), cut(c.hard, old.hard_timeout));
                if (idle, hard) == (old.idle_timeout, old.hard_timeout) {
                    continue;
                }
                let new = Rule { idle_timeout: idle, hard_timeout: hard, ..(**old).clone() };
                let old = p.replace_rule(c.table, c.rule, new)?;
                let conj = conj_related(&old);
                undo.push(Undo::Rule(c.table, c.rule, Some(old)));
                out.push(Delta::RuleModified { table: c.table, id: c.rule, conj });
            }
        }
        FlowMod::Bundle(mods) => {
            for m in mods {
                apply_one(p, m, out, undo)?;
            }
        }
    }
    Ok(())
}

/// Open vSwitch's `delete_learned`: once no flow is left with a learn
/// action that has it and learns into a table with a cookie, the flows of
/// that table with that cookie go. Looks at the flows this update removed
/// or replaced (their learn actions may have been the last).
fn delete_learned(p: &mut Pipeline, out: &mut Vec<Delta>, undo: &mut Vec<Undo>) {
    let mut keys: Vec<(u8, u64)> = undo
        .iter()
        .filter_map(|u| match u {
            Undo::Rule(_, _, Some(old)) => Some(old),
            _ => None,
        })
        .flat_map(|old| kairo_xlate::pipeline::learns_of(&old.inst.apply))
        .filter(|l| l.flags & kairo_ofproto::learn::flags::DELETE_LEARNED != 0)
        .map(|l| (l.table, l.cookie))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.retain(|&(t, c)| !p.deletes_learned(t, c));
    for (t, cookie) in keys {
        let mut ids: Vec<RuleId> =
            p.table(t).map(|tb| tb.rules_with_cookie(cookie).map(|r| r.id).collect()).unwrap_or_default();
        ids.sort_unstable();
        for id in ids {
            if let Some(rule) = p.remove_rule(t, id) {
                undo.push(Undo::Rule(t, id, Some(rule.clone())));
                out.push(Delta::RuleRemoved { table: t, id, rule });
            }
        }
    }
}

/// The rules and groups whose translation reads the switch's ports and
/// their settings (FLOOD, NORMAL, an output a field gives), with the
/// frozen states that do (as [`kairo_xlate::recirc::FROZEN_FLOOD`]).
fn flood_dependents(p: &Pipeline) -> (Vec<(u8, RuleId)>, Vec<u32>) {
    let floods = |acts: &[Action]| acts.iter().any(Action::may_flood);
    let rules = p
        .tables()
        .flat_map(|(t, tb)| {
            tb.cls
                .iter()
                .filter(|r| floods(&r.payload.inst.apply) || floods(&r.payload.inst.write))
                .map(move |r| (t, r.id))
        })
        .collect();
    let mut groups: Vec<u32> =
        p.groups().filter(|g| g.buckets.iter().any(|b| floods(&b.actions))).map(|g| g.id).collect();
    // Recirculated passes that FLOOD from their frozen state.
    groups.push(kairo_xlate::recirc::FROZEN_FLOOD);
    (rules, groups)
}

/// Records MAC table changes: their delta and their undo.
fn macs_changed(changes: Vec<kairo_xlate::mac::MacChange>, out: &mut Vec<Delta>, undo: &mut Vec<Undo>) {
    if changes.is_empty() {
        return;
    }
    let mut macs: Vec<(u16, u64)> = changes.iter().map(|c| c.0).collect();
    macs.sort_unstable();
    macs.dedup();
    out.push(Delta::MacsChanged { macs });
    undo.push(Undo::Macs(changes));
}

/// Applies an update to the pipeline: all of it, or (on error) none of it.
/// A failure halfway through (a bundle, a group delete) is rolled back from
/// an undo log of what changed: O(changes), never a copy of the rules.
pub fn apply(p: &mut Pipeline, fm: &FlowMod) -> Result<Vec<Delta>, ModError> {
    let (mut out, mut undo) = (Vec::new(), Vec::new());
    match apply_one(p, fm, &mut out, &mut undo) {
        Ok(()) => {
            delete_learned(p, &mut out, &mut undo);
            Ok(out)
        }
        Err(e) => {
            for u in undo.into_iter().rev() {
                u.revert(p);
            }
            Err(e)
        }
    }
}

/// Whether both groups exist and are hashed in the datapath the same way
/// (what a translation that freezes at one for its hash depends on).
fn hashed_alike(old: Option<&kairo_ofproto::Group>, new: Option<&kairo_ofproto::Group>) -> bool {
    let how = |g: &kairo_ofproto::Group| kairo_xlate::recirc::DpHashPlan::of(g).map(|d| (d.alg, d.basis));
    match (old, new) {
        (Some(a), Some(b)) => how(a).is_some() && how(a) == how(b),
        _ => false,
    }
}
