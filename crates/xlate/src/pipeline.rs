//! The rule tables and groups of one switch: what translation reads.
//!
//! Invariants: every rule is in the classifier of its table under a unique
//! [`RuleId`] (ids grow with installation order, which breaks priority ties);
//! `(table, priority, match)` identifies at most one rule; every `goto_table`
//! and table-miss `continue` goes forward; every group a rule or bucket names
//! exists; a rejected change leaves the pipeline as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kairo_classifier::{Classifier, Clause, ClsRule, ConjLookup, RuleId};
use kairo_flow::{Field, FlowKey, FlowMask};

use crate::traversal::{Floor, Outcome};
use kairo_ofproto::{Action, FlowFile, Group, Instructions, MissBehavior, Rule};
use rustc_hash::FxHashMap;

/// Errors that reject a change to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("table {table}: goto_table:{target} must go to a later table")]
    GotoBackward { table: u8, target: u8 },
    #[error("table {table}: the miss behaviour must continue to a later table, not {target}")]
    MissBackward { table: u8, target: u8 },
    #[error("group {group} does not exist (referenced by {by})")]
    MissingGroup { group: u32, by: String },
    #[error("`{action}` is not allowed in write_actions")]
    NotInActionSet { action: String },
    /// An action the rule's match cannot run (ct on a packet that is not
    /// IP, ...), as ovs-ofctl's "actions are invalid with specified match".
    #[error("table {table}: {why}")]
    Inconsistent { table: u8, why: String },
    #[error("group {group} refers to itself through its buckets")]
    GroupLoop { group: u32 },
    #[error("table {table} has no rule {id}")]
    UnknownRule { table: u8, id: u64 },
    #[error("a replacement for rule {id} of table {table} must keep its table, match and priority")]
    NotSameRule { table: u8, id: u64 },
    #[error("group {group} is still referenced by {by}")]
    GroupInUse { group: u32, by: String },
}

/// One OpenFlow table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub cls: Classifier<Arc<Rule>>,
    pub miss: MissBehavior,
    /// How many of its rules take part in conjunctive matches (clauses,
    /// and rules matching `conj_id`): while any do, lookups complete
    /// conjunctions ([`Table::lookup`]).
    conj: usize,
    /// The clause flows of each conjunction, by (priority, id, number of
    /// clauses): rule -> its clause number.
    members: FxHashMap<(u16, u32, u8), FxHashMap<RuleId, u8>>,
    /// Clause flows holding two clauses of one conjunction (then a clause
    /// added anywhere at their priority can complete it: see
    /// [`Table::clause_members`]).
    multi: usize,
    /// Its rules by cookie (how many a `learn` limit counts; which a delete
    /// or modify by an exact cookie selects).
    cookies: FxHashMap<u64, rustc_hash::FxHashSet<RuleId>>,
}

/// Does the rule take part in conjunctive matches: a clause (it has
/// `conjunction` actions) or an answer (it matches `conj_id`)?
pub fn conj_related(r: &Rule) -> bool {
    r.inst.is_clause() || r.m.mask().get(Field::ConjId) != 0
}

/// The conjunction a rule answers: it matches `conj_id` on a nonzero id.
pub fn answers(r: &Rule) -> Option<u32> {
    let (id, mask) = (r.m.key().get(Field::ConjId), r.m.mask().get(Field::ConjId));
    (mask != 0 && id != 0).then_some(id as u32)
}

/// Calls `f` with each `conjunction` action of a rule.
fn clauses_of(r: &Arc<Rule>, f: &mut dyn FnMut(Clause)) {
    for (id, k, n) in r.inst.conjunctions() {
        f(Clause { id, k, n });
    }
}

impl Table {
    /// Does it hold rules of conjunctive matches?
    pub fn conjunctive(&self) -> bool {
        self.conj > 0
    }

    /// The clause flows of conjunction (`priority`, `id`, `n`): (rule,
    /// clause number). `None` when some flow of the table holds two
    /// clauses of one conjunction (a clause then counts toward completing
    /// conjunctions it is no clause of, so members alone do not say which
    /// entries a new clause can change).
    pub fn clause_members(&self, priority: u16, id: u32, n: u8) -> Option<impl Iterator<Item = (RuleId, u8)> + '_> {
        (self.multi == 0).then(|| self.members.get(&(priority, id, n)).into_iter().flatten().map(|(r, k)| (*r, *k)))
    }

    /// Does every flow hold at most one clause of each conjunction (so that
    /// conjunctions complete only from their own clause flows)?
    pub fn single_clauses(&self) -> bool {
        self.multi == 0
    }

    /// Whether a clause flow of dimension `k` of conjunction `key`
    /// (priority, id, number of clauses) overlaps the region `kt`/`mask`
    /// (found by the classifier: where the region fixes the fields the
    /// flows match, a probe per subtable, however many flows there are).
    pub fn clause_overlaps(&self, key: (u16, u32, u8), k: u8, kt: &FlowKey, mask: &FlowMask) -> bool {
        let (priority, id, n) = key;
        let of_dim =
            |c: &ClsRule<Arc<Rule>>| c.priority == priority && c.payload.inst.conjunctions().any(|x| x == (id, k, n));
        self.cls.any_overlapping(kt, mask, priority, of_dim)
    }

    /// The conjunctions (priority, id, number of clauses) with id `id`.
    pub fn conjunctions_with_id(&self, id: u32) -> Vec<(u16, u32, u8)> {
        self.members.keys().filter(|k| k.1 == id).copied().collect()
    }

    /// How many of its rules have cookie `cookie`.
    pub fn with_cookie(&self, cookie: u64) -> u32 {
        self.cookies.get(&cookie).map_or(0, |ids| ids.len() as u32)
    }

    /// Its rules with cookie `cookie` (Open vSwitch keeps its flows by
    /// cookie too: a delete or modify by an exact cookie finds them
    /// without a walk of the table).
    pub fn rules_with_cookie(&self, cookie: u64) -> impl Iterator<Item = &ClsRule<Arc<Rule>>> + '_ {
        self.cookies.get(&cookie).into_iter().flatten().filter_map(|&id| self.cls.get(id))
    }

    /// Files rule `id` under its cookie (`add`) or takes it out.
    fn file_cookie(&mut self, id: RuleId, cookie: u64, add: bool) {
        if add {
            self.cookies.entry(cookie).or_default().insert(id);
        } else if let Some(ids) = self.cookies.get_mut(&cookie) {
            ids.remove(&id);
            if ids.is_empty() {
                self.cookies.remove(&cookie);
            }
        }
    }

    /// Files (`add`) or takes out a rule's clauses.
    fn file_clauses(&mut self, id: RuleId, r: &Rule, add: bool) {
        let mut seen: Vec<(u32, u8)> = Vec::new();
        let mut multi = false;
        for (cid, k, n) in r.inst.conjunctions() {
            multi |= seen.contains(&(cid, n));
            seen.push((cid, n));
            let key = (r.priority, cid, n);
            if add {
                self.members.entry(key).or_default().insert(id, k);
            } else if let Some(m) = self.members.get_mut(&key) {
                m.remove(&id);
                if m.is_empty() {
                    self.members.remove(&key);
                }
            }
        }
        if multi {
            if add {
                self.multi += 1;
            } else {
                self.multi -= 1;
            }
        }
    }

    /// Looks `key` up, ORing into `wc` the bits examined: the outcome to
    /// record, and the rule whose instructions run. A table with
    /// conjunctive flows completes them as Open vSwitch does
    /// ([`Classifier::lookup_conjunctive`]), and gives `completed` each
    /// clause flow of a conjunction the lookup completed
    /// ([`ConjLookup::completed`]), once, by increasing id.
    #[inline]
    pub fn lookup<'a>(
        &'a self,
        key: &FlowKey,
        wc: &mut FlowMask,
        completed: &mut impl FnMut(RuleId),
    ) -> (Outcome, Option<&'a ClsRule<Arc<Rule>>>) {
        if !self.conjunctive() {
            let r = self.cls.lookup(key, wc);
            return (r.map_or(Outcome::Miss, |r| Outcome::Rule(r.id)), r);
        }
        let l = self.lookup_conj(key, wc);
        if !l.completed.is_empty() {
            // By id, once each: the record is a set (the classifier's order
            // follows its subtables').
            let mut ids: Vec<RuleId> = l.completed.iter().map(|c| c.id).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into_iter().for_each(&mut *completed);
        }
        let floor = conj_floor(&l);
        (Outcome::of(l.rule.map(|r| r.id), l.rule.map_or(0, |r| r.priority), floor), l.rule)
    }

    /// The conjunctive lookup itself, with what decided it.
    pub fn lookup_conj<'a>(&'a self, key: &FlowKey, wc: &mut FlowMask) -> ConjLookup<'a, Arc<Rule>> {
        self.cls.lookup_conjunctive(key, wc, clauses_of)
    }
}

/// The floor of a conjunctive lookup. A completed conjunction no rule
/// answered can be answered by a rule of any priority: none. An answered
/// one stands until a rule of the clauses' priority or above comes (an
/// ordinary rule there drops them, a clause there or above may complete
/// another conjunction first) or one that beats the answer: the weaker of
/// the two. Otherwise the hard match decided, and only a rule that beats
/// it can change that (a miss: any rule).
pub fn conj_floor<R>(l: &ConjLookup<'_, R>) -> Floor {
    if l.unanswered {
        return Floor::None;
    }
    match (l.rule, l.conj, l.hard) {
        (Some(w), Some((_, level)), _) => {
            if w.priority < level {
                Floor::Above { priority: w.priority, ties: false }
            } else {
                Floor::Above { priority: level, ties: true }
            }
        }
        (_, _, Some(h)) => Floor::Above { priority: h.priority, ties: false },
        _ => Floor::None,
    }
}

/// A group id and the group it replaced, if any.
pub type Replaced = (u32, Option<Arc<Group>>);

/// A group as translation runs it: the group, each bucket's actions as
/// the action set they make (as Open vSwitch runs a bucket), and how it is
/// hashed in the datapath, if it is.
#[derive(Debug)]
pub(crate) struct GroupRun {
    pub group: Arc<Group>,
    pub sets: Vec<Vec<Action>>,
    pub dp_hash: Option<crate::recirc::DpHashPlan>,
}

/// Rule tables, per-table miss behaviour, groups and port liveness.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    tables: BTreeMap<u8, Table>,
    groups: BTreeMap<u32, Arc<Group>>,
    down_ports: BTreeSet<u32>,
    /// The switch's ports, for FLOOD and NORMAL.
    ports: BTreeSet<u32>,
    /// Ports' VLAN settings for NORMAL (a port without is a trunk of every VLAN).
    port_settings: BTreeMap<u32, kairo_ofproto::ports::PortSettings>,
    /// NORMAL's MAC learning table.
    macs: crate::mac::MacTable,
    next_id: RuleId,
    /// Every rule by id (as its table's classifier holds it), for the
    /// lookups translation replays from a recorded traversal.
    by_id: FxHashMap<RuleId, Arc<Rule>>,
    /// The frozen states translations made (shared by every copy).
    recircs: Arc<crate::recirc::Recircs>,
    /// Each group with its buckets as the action sets they run as
    /// (`action_set::bucket_list`) and, for a select group hashed in the
    /// datapath, how it spreads hash values over its buckets: made when the
    /// group is put in (not on every use), what translation reads of a
    /// group, in one lookup. Kept by [`Pipeline::put_group`].
    runs: FxHashMap<u32, Arc<GroupRun>>,
    /// Rules with a `learn` or a `fin_timeout` action: what the megaflows
    /// that ran them refresh from their hits.
    learners: usize,
    /// Per (table, cookie), the learn actions with `delete_learned` that
    /// learn into it (Open vSwitch's learned cookies): when the last goes,
    /// the flows it learned go too.
    learned_cookies: FxHashMap<(u8, u64), u32>,
}

/// Does a `fin_timeout` run among the actions (in clones too)?
fn has_fin_timeout(actions: &[Action]) -> bool {
    actions.iter().any(|a| match a {
        Action::FinTimeout { .. } => true,
        Action::Clone(body) => has_fin_timeout(body),
        _ => false,
    })
}

/// The learn actions of a rule's actions (in clones too).
pub fn learns_of(actions: &[Action]) -> Vec<&kairo_ofproto::Learn> {
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::Learn(l) => out.push(&**l),
            Action::Clone(body) => out.extend(learns_of(body)),
            _ => {}
        }
    }
    out
}

/// The groups `actions` name, those inside clones too (as Open vSwitch's
/// `ofpacts_output_to_group` walks nested actions).
fn groups_named(actions: &[Action]) -> impl Iterator<Item = u32> + '_ {
    let mut out = Vec::new();
    let mut todo = vec![actions];
    while let Some(list) = todo.pop() {
        for a in list {
            match a {
                Action::Group(g) => out.push(*g),
                Action::Clone(body) => todo.push(body),
                _ => {}
            }
        }
    }
    out.into_iter()
}

/// The groups a rule's instructions name (nested ones too): a group
/// deleted takes those rules with it, and one a rule names cannot be.
pub fn inst_groups(i: &Instructions) -> impl Iterator<Item = u32> + '_ {
    groups_named(&i.apply).chain(groups_named(&i.write))
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a pipeline from a flow file and groups, all or nothing.
    pub fn from_parts(flows: FlowFile, groups: Vec<Group>) -> Result<Pipeline, PipelineError> {
        let mut p = Pipeline::new();
        for g in groups {
            p.put_group(g.id, Some(Arc::new(g)));
        }
        let ids: Vec<u32> = p.groups.keys().copied().collect();
        p.check_groups(&ids)?;
        for (t, m) in flows.misses {
            p.set_miss(t, m)?;
        }
        for r in flows.rules {
            p.add_rule(r)?;
        }
        Ok(p)
    }

    /// The frozen states of recirculated translations.
    pub fn recircs(&self) -> &Arc<crate::recirc::Recircs> {
        &self.recircs
    }

    pub fn table(&self, t: u8) -> Option<&Table> {
        self.tables.get(&t)
    }
    pub fn tables(&self) -> impl Iterator<Item = (u8, &Table)> {
        self.tables.iter().map(|(t, x)| (*t, x))
    }
    pub fn group(&self, g: u32) -> Option<&Arc<Group>> {
        self.groups.get(&g)
    }
    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }
    pub fn miss(&self, t: u8) -> MissBehavior {
        self.tables.get(&t).map(|x| x.miss).unwrap_or_default()
    }
    pub fn n_rules(&self) -> usize {
        self.tables.values().map(|t| t.cls.len()).sum()
    }
    /// Sets the switch's ports (what FLOOD sends to). Translation depends on
    /// them: set them before the first packet (changing them later leaves
    /// cached FLOOD results stale until a full revalidation).
    pub fn set_ports(&mut self, ports: impl IntoIterator<Item = u32>) {
        self.ports = ports.into_iter().collect();
    }
    /// A port's VLAN settings for NORMAL (`None`: the default trunk of
    /// every VLAN). Translation depends on them: a change is an update
    /// ([`Pipeline::set_port_settings`] through maintenance).
    pub fn port_settings(&self, port: u32) -> Option<&kairo_ofproto::ports::PortSettings> {
        self.port_settings.get(&port)
    }
    /// Sets (or, with `None`, clears) a port's VLAN settings; returns the
    /// old ones.
    pub fn set_port_settings(
        &mut self,
        port: u32,
        s: Option<kairo_ofproto::ports::PortSettings>,
    ) -> Option<kairo_ofproto::ports::PortSettings> {
        match s {
            Some(s) if s != kairo_ofproto::ports::PortSettings::default() => self.port_settings.insert(port, s),
            _ => self.port_settings.remove(&port),
        }
    }
    /// NORMAL's MAC learning table.
    pub fn macs(&self) -> &crate::mac::MacTable {
        &self.macs
    }
    /// The MAC learning table to change: whoever changes it hands what
    /// changed to cache maintenance (the update `FlowMod::Learn` and its
    /// kin do).
    pub fn macs_mut(&mut self) -> &mut crate::mac::MacTable {
        &mut self.macs
    }
    /// Whether the switch has `port` (the set FLOOD and NORMAL use).
    /// A port's OpenFlow port-config bits (none for a port without settings).
    pub fn port_config(&self, port: u32) -> kairo_ofproto::ports::PortConfig {
        self.port_settings.get(&port).map(|s| s.config).unwrap_or_default()
    }
    pub fn has_port(&self, port: u32) -> bool {
        self.ports.contains(&port)
    }
    pub fn ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.ports.iter().copied()
    }
    /// Is this port up (for fast-failover liveness)? As Open vSwitch, a
    /// port the switch does not have is not; one it has is, unless set
    /// down. A pipeline without ports (offline, before a switch gives it
    /// its own) counts every port not set down as up.
    pub fn port_live(&self, port: u32) -> bool {
        !self.down_ports.contains(&port) && (self.ports.is_empty() || self.ports.contains(&port))
    }
    /// The ports set down (whether the switch has them or not).
    pub fn down_ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.down_ports.iter().copied()
    }
    pub fn set_port_live(&mut self, port: u32, live: bool) {
        if live {
            self.down_ports.remove(&port);
        } else {
            self.down_ports.insert(port);
        }
    }
    /// The groups whose liveness (a fast-failover choice) can change when
    /// the groups in `changed` change or the ports in `ports` go up or down:
    /// those with a bucket watching one of them, and those watching such a
    /// group, to the end of the chain. `changed` themselves are included.
    /// Costs one pass over the groups per link of the chain.
    pub fn liveness_dependents(&self, changed: &[u32], ports: &[u32]) -> Vec<u32> {
        let mut out: BTreeSet<u32> = changed.iter().copied().collect();
        let mut frontier: Vec<u32> = changed.to_vec();
        let mut first = true;
        while !frontier.is_empty() || first {
            let watching: Vec<u32> = self
                .groups
                .values()
                .filter(|g| !out.contains(&g.id))
                .filter(|g| {
                    g.buckets.iter().any(|b| {
                        b.watch_group.is_some_and(|w| frontier.contains(&w))
                            || (first && b.watch_port.is_some_and(|p| ports.contains(&p)))
                    })
                })
                .map(|g| g.id)
                .collect();
            first = false;
            out.extend(watching.iter().copied());
            frontier = watching;
        }
        out.into_iter().collect()
    }
    /// The rule with this id in table `t`.
    pub fn rule(&self, t: u8, id: RuleId) -> Option<&Arc<Rule>> {
        self.by_id.get(&id).filter(|r| r.table == t)
    }

    pub fn set_miss(&mut self, t: u8, m: MissBehavior) -> Result<(), PipelineError> {
        if let MissBehavior::Continue(n) = m {
            if n <= t {
                return Err(PipelineError::MissBackward { table: t, target: n });
            }
        }
        self.tables.entry(t).or_default().miss = m;
        Ok(())
    }

    /// Checks a rule against the pipeline without installing it.
    pub fn check_rule(&self, r: &Rule) -> Result<(), PipelineError> {
        if let Some(g) = r.inst.goto_table {
            if g <= r.table {
                return Err(PipelineError::GotoBackward { table: r.table, target: g });
            }
        }
        for a in &r.inst.write {
            if matches!(a, Action::Resubmit { .. }) {
                return Err(PipelineError::NotInActionSet { action: a.to_string() });
            }
        }
        for list in [&r.inst.apply, &r.inst.write] {
            kairo_ofproto::ct::check_match(&r.m, list)
                .map_err(|e| PipelineError::Inconsistent { table: r.table, why: e.to_string() })?;
        }
        for g in inst_groups(&r.inst) {
            if !self.groups.contains_key(&g) {
                return Err(PipelineError::MissingGroup { group: g, by: format!("a rule in table {}", r.table) });
            }
        }
        r.inst.check().map_err(|e| PipelineError::Inconsistent { table: r.table, why: e.to_string() })?;
        Ok(())
    }

    /// Checks groups `ids` of this pipeline (put in together: they may name
    /// each other in any order) as [`Pipeline::check_group`] does, in
    /// O(groups + references) for all of them: one depth-first walk, each
    /// group left once all it reaches is known sound, a loop found as a
    /// group met again on the path. (Each checked on its own, a file of
    /// thousands of chained groups was quadratic.)
    fn check_groups(&self, ids: &[u32]) -> Result<(), PipelineError> {
        #[derive(PartialEq)]
        enum Mark {
            OnPath,
            Sound,
        }
        let named = |g: &Group| -> Vec<u32> { g.buckets.iter().flat_map(|b| groups_named(&b.actions)).collect() };
        let mut mark: FxHashMap<u32, Mark> = FxHashMap::default();
        for &root in ids {
            let Some(rg) = self.groups.get(&root) else { continue };
            if mark.contains_key(&root) {
                continue;
            }
            mark.insert(root, Mark::OnPath);
            let mut path: Vec<(u32, Vec<u32>, usize)> = vec![(root, named(rg), 0)];
            while let Some((id, names, next)) = path.last_mut() {
                let Some(&n) = names.get(*next) else {
                    mark.insert(*id, Mark::Sound);
                    path.pop();
                    continue;
                };
                *next += 1;
                match mark.get(&n) {
                    Some(Mark::OnPath) => return Err(PipelineError::GroupLoop { group: n }),
                    Some(Mark::Sound) => {}
                    None => {
                        let Some(ng) = self.groups.get(&n) else {
                            return Err(PipelineError::MissingGroup { group: n, by: format!("group {id}") });
                        };
                        mark.insert(n, Mark::OnPath);
                        path.push((n, named(ng), 0));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every group `g` (not yet put in) names exists, and following buckets
    /// never comes back to `g`.
    fn check_group(&self, g: &Group) -> Result<(), PipelineError> {
        let mut stack: Vec<u32> = g.buckets.iter().flat_map(|b| groups_named(&b.actions).collect::<Vec<_>>()).collect();
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if n == g.id {
                return Err(PipelineError::GroupLoop { group: g.id });
            }
            if !seen.insert(n) {
                continue;
            }
            let Some(ng) = self.groups.get(&n) else {
                return Err(PipelineError::MissingGroup { group: n, by: format!("group {}", g.id) });
            };
            stack.extend(ng.buckets.iter().flat_map(|b| groups_named(&b.actions).collect::<Vec<_>>()));
        }
        Ok(())
    }

    /// Adds a rule; a rule with the same table, priority and match is replaced
    /// and keeps its id (and so its place among equal-priority rules).
    /// Returns the id and the replaced rule.
    pub fn add_rule(&mut self, r: Rule) -> Result<(RuleId, Option<Arc<Rule>>), PipelineError> {
        self.check_rule(&r)?;
        let t = self.tables.entry(r.table).or_default();
        let existing = t.cls.find_exact(&r.m, r.priority).map(|c| (c.id, c.payload.clone()));
        let (id, old) = match existing {
            Some((id, old)) => (id, Some(old)),
            None => {
                self.next_id += 1;
                (self.next_id, None)
            }
        };
        self.put_rule(r.table, id, Arc::new(r));
        Ok((id, old))
    }

    /// Replaces rule `id` of table `t` with `new`, checked like any rule,
    /// which has the same match and priority (a modify's new instructions
    /// and cookie, made by the caller). Returns the rule it replaced.
    pub fn replace_rule(&mut self, t: u8, id: RuleId, new: Rule) -> Result<Arc<Rule>, PipelineError> {
        let Some(old) = self.rule(t, id).cloned() else {
            return Err(PipelineError::UnknownRule { table: t, id });
        };
        if new.table != t || new.priority != old.priority || new.m != old.m {
            return Err(PipelineError::NotSameRule { table: t, id });
        }
        self.check_rule(&new)?;
        self.put_rule(t, id, Arc::new(new));
        Ok(old)
    }

    /// Puts `r` under id `id` in table `t`, replacing what holds that id
    /// (undoing a change: the id keeps the rule's place among equal priorities).
    pub fn restore_rule(&mut self, t: u8, id: RuleId, r: Arc<Rule>) {
        self.put_rule(t, id, r);
    }

    /// Puts `r` under id `id` in table `t`, replacing what holds that id, in
    /// the table's classifier and in the rules by id alike (the one place
    /// both are written, so they always agree).
    fn put_rule(&mut self, t: u8, id: RuleId, r: Arc<Rule>) {
        let table = self.tables.entry(t).or_default();
        // Same match and priority (a modify, or an add that replaces): in place.
        let old = match table.cls.replace_payload(id, r.priority, &r.m, r.clone()) {
            Some(old) => Some(old),
            None => {
                let old = table.cls.remove(id).map(|c| c.payload);
                table.cls.insert(ClsRule { id, priority: r.priority, payload: r.clone() });
                old
            }
        };
        if let Some(o) = &old {
            table.conj -= usize::from(conj_related(o));
            table.file_clauses(id, o, false);
            table.file_cookie(id, o.cookie, false);
        }
        table.conj += usize::from(conj_related(&r));
        table.file_clauses(id, &r, true);
        table.file_cookie(id, r.cookie, true);
        if let Some(o) = &old {
            self.count_learns(o, false);
        }
        self.count_learns(&r, true);
        self.by_id.insert(id, r);
    }

    /// Counts a rule's learn actions in (`add`) or out.
    fn count_learns(&mut self, r: &Rule, add: bool) {
        let learns = learns_of(&r.inst.apply);
        if learns.is_empty() && !has_fin_timeout(&r.inst.apply) {
            return;
        }
        if add {
            self.learners += 1;
        } else {
            self.learners -= 1;
        }
        for l in learns.iter().filter(|l| l.flags & kairo_ofproto::learn::flags::DELETE_LEARNED != 0) {
            let key = (l.table, l.cookie);
            if add {
                *self.learned_cookies.entry(key).or_default() += 1;
            } else if let Some(n) = self.learned_cookies.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.learned_cookies.remove(&key);
                }
            }
        }
    }

    /// Does any rule have a `learn` or a `fin_timeout` action (whose
    /// megaflows' hits refresh what they learned, or cut timeouts)?
    pub fn has_learners(&self) -> bool {
        self.learners > 0
    }

    /// Does a learn action with `delete_learned` learn into `table` with
    /// `cookie`?
    pub fn deletes_learned(&self, table: u8, cookie: u64) -> bool {
        self.learned_cookies.contains_key(&(table, cookie))
    }

    /// Puts a group back as it was (undoing a change; no checks).
    pub fn restore_group(&mut self, id: u32, g: Option<Arc<Group>>) {
        self.put_group(id, g);
    }

    /// Puts group `id` in (or takes it out, given `None`), with its dp_hash
    /// plan; returns the group it replaced. Every change of the groups
    /// goes through here.
    fn put_group(&mut self, id: u32, g: Option<Arc<Group>>) -> Option<Arc<Group>> {
        match &g {
            Some(g) => {
                let sets = g.buckets.iter().map(|b| crate::action_set::bucket_list(&b.actions)).collect();
                let dp_hash = crate::recirc::DpHashPlan::of(g);
                self.runs.insert(id, Arc::new(GroupRun { group: g.clone(), sets, dp_hash }))
            }
            None => self.runs.remove(&id),
        };
        match g {
            Some(g) => self.groups.insert(id, g),
            None => self.groups.remove(&id),
        }
    }

    /// Group `g` as translation runs it.
    pub(crate) fn group_run(&self, g: u32) -> Option<&Arc<GroupRun>> {
        self.runs.get(&g)
    }

    /// Drops table `t` if it holds no rules and has the default miss
    /// behaviour (undoing its creation).
    pub fn drop_table_if_unused(&mut self, t: u8) {
        if self.tables.get(&t).is_some_and(|tb| tb.cls.is_empty() && tb.miss == MissBehavior::default()) {
            self.tables.remove(&t);
        }
    }

    /// Removes a rule by table and id.
    pub fn remove_rule(&mut self, t: u8, id: RuleId) -> Option<Arc<Rule>> {
        let table = self.tables.get_mut(&t)?;
        let r = table.cls.remove(id).map(|c| c.payload)?;
        table.conj -= usize::from(conj_related(&r));
        table.file_clauses(id, &r, false);
        table.file_cookie(id, r.cookie, false);
        self.count_learns(&r, false);
        self.by_id.remove(&id);
        Some(r)
    }

    /// Adds or replaces a group.
    pub fn set_group(&mut self, g: Group) -> Result<Option<Arc<Group>>, PipelineError> {
        self.check_group(&g)?;
        Ok(self.put_group(g.id, Some(Arc::new(g))))
    }

    /// Adds or replaces several groups at once, which may name each other
    /// in any order (as a group file may): all are put in, then each is
    /// checked. On error the pipeline is as it was. Returns what each
    /// replaced.
    pub fn set_groups(&mut self, gs: Vec<Group>) -> Result<Vec<Replaced>, PipelineError> {
        let ids: Vec<u32> = gs.iter().map(|g| g.id).collect();
        let mut old = Vec::with_capacity(gs.len());
        for g in gs {
            old.push((g.id, self.put_group(g.id, Some(Arc::new(g)))));
        }
        let checked = self.check_groups(&ids);
        if let Err(e) = checked {
            for (id, was) in old.into_iter().rev() {
                self.put_group(id, was);
            }
            return Err(e);
        }
        Ok(old)
    }

    /// Removes every group (chains included); no rule may use one any more
    /// (the caller removed those). Returns what was removed.
    pub fn remove_all_groups(&mut self) -> Result<Vec<Replaced>, PipelineError> {
        for (t, table) in &self.tables {
            if let Some(g) = table.cls.iter().find_map(|r| inst_groups(&r.payload.inst).next()) {
                return Err(PipelineError::GroupInUse { group: g, by: format!("a rule in table {t}") });
            }
        }
        // (Through put_group, which keeps what is made of each group with it.)
        let ids: Vec<u32> = self.groups.keys().copied().collect();
        Ok(ids.into_iter().map(|id| (id, self.put_group(id, None))).collect())
    }

    /// Removes a group that no rule or group references.
    pub fn remove_group(&mut self, id: u32) -> Result<Option<Arc<Group>>, PipelineError> {
        for (t, table) in &self.tables {
            if table.cls.iter().any(|r| inst_groups(&r.payload.inst).any(|g| g == id)) {
                return Err(PipelineError::GroupInUse { group: id, by: format!("a rule in table {t}") });
            }
        }
        for g in self.groups.values() {
            if g.id != id && g.buckets.iter().any(|b| groups_named(&b.actions).any(|x| x == id)) {
                return Err(PipelineError::GroupInUse { group: id, by: format!("group {}", g.id) });
            }
        }
        Ok(self.put_group(id, None))
    }
}
