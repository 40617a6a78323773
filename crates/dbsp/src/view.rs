//! The engine: a pipeline of its own (changed by flow-mods as kairo's is),
//! the DBSP circuit fed the rows each change retracts and inserts, and the
//! view materialised from the circuit's output (what the cache would hold).
//!
//! Invariant: after [`DbspView::load`] and after every [`DbspView::apply`]
//! that returned `Ok`, the circuit's inputs are exactly the pipeline's rules
//! and groups (one row each, under their current version) and the loaded
//! traffic, and `view` is the sum of every output delta so far: the query
//! over the current tables. An `apply` that failed after changing the
//! pipeline leaves the engine broken (every later call says so) rather than
//! silently out of step.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsp::typed_batch::IndexedZSetReader;
use dbsp::utils::{Tup2, Tup3, Tup5};
use dbsp::{DBSPHandle, Runtime};
use kairo_classifier::RuleId;
use kairo_flow::FlowMask;
use kairo_maintain::{Delta, FlowMod, ModError};
use kairo_ofproto::{Action, Rule};
use kairo_xlate::{Pipeline, Traversal};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::book::{check_group, check_instructions, check_rule, Book, Content, Projection, Unsupported};
use crate::book::{ALL, MISS, NONE, RECIRC};
use crate::circuit::{self, GroupRow, Handles, RuleRow, ViewRow, END_SLOT, GROUP_LEVELS, GROUP_SLOT, SECOND_PASS};

/// Why the engine could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DbspError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error(transparent)]
    FlowMod(#[from] ModError),
    #[error("DBSP: {0}")]
    Dbsp(String),
    #[error("a rule matches bits the view was not built to keep ({0}); declare the flow-mods that add it when building the view")]
    Projection(String),
    #[error("group {0} chains more than {GROUP_LEVELS} groups deep")]
    TooDeep(u32),
    #[error("the view is out of step with its pipeline since an earlier failed update ({0})")]
    Broken(String),
}

/// What loading the view took.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub took: Duration,
    pub owners: usize,
    pub rows: usize,
}

/// What one update did to the view.
#[derive(Clone, Debug)]
pub struct UpdateReport {
    /// From the flow-mod to the view's last changed row applied: changing
    /// the pipeline, the rows in, DBSP's step, the output folded in.
    pub ttu: Duration,
    /// Of which DBSP's step alone.
    pub step: Duration,
    /// Owners (cached megaflows) whose traversal changed.
    pub affected: usize,
    /// View rows retracted and inserted.
    pub changed_rows: usize,
}

pub struct DbspView {
    handle: DBSPHandle,
    h: Handles,
    book: Book,
    proj: Projection,
    pipeline: Pipeline,
    tables: BTreeSet<u8>,
    rules: FxHashMap<(u8, RuleId), RuleRow>,
    groups: FxHashMap<u32, GroupRow>,
    view: FxHashMap<u64, Vec<ViewRow>>,
    broken: Option<String>,
    loaded: bool,
}

/// Every rule `fm` can add, and the instructions it can give.
fn rules_of(fm: &FlowMod, out: &mut Vec<Rule>, insts: &mut Vec<kairo_ofproto::Instructions>) {
    match fm {
        FlowMod::Add(r) => out.push(r.clone()),
        FlowMod::Modify { spec, .. } => insts.extend(spec.instructions.clone()),
        FlowMod::Bundle(v) => v.iter().for_each(|f| rules_of(f, out, insts)),
        _ => {}
    }
}

impl DbspView {
    /// A view of `p`'s traversals, able to take the flow-mods of `stream`
    /// (they decide which tables and key bits the circuit keeps; others
    /// may be refused later). Refuses a pipeline it cannot model.
    pub fn new(p: &Pipeline, stream: &[FlowMod]) -> Result<DbspView, DbspError> {
        let (mut extra, mut insts) = (Vec::new(), Vec::new());
        stream.iter().for_each(|f| rules_of(f, &mut extra, &mut insts));
        let mut all: Vec<Arc<Rule>> = Vec::new();
        for (_, t) in p.tables() {
            all.extend(t.cls.iter().map(|r| r.payload.clone()));
        }
        all.extend(extra.into_iter().map(Arc::new));
        let mut tables: BTreeSet<u8> = p.tables().map(|(t, _)| t).collect();
        let mut also: Vec<kairo_flow::Field> = Projection::READ.to_vec();
        let mut masks: Vec<FlowMask> = Vec::new();
        for r in &all {
            check_rule(r)?;
            tables.insert(r.table);
            masks.push(*r.m.mask());
        }
        for inst in all.iter().map(|r| &r.inst).chain(insts.iter()) {
            tables.extend(inst.goto_table);
            for a in &inst.apply {
                if let Action::Move { src, .. } = a {
                    also.push(src.field);
                }
            }
        }
        for g in p.groups() {
            check_group(g)?;
        }
        let proj = Projection::new(masks.iter(), &also);
        let continued: Vec<u8> = tables
            .iter()
            .filter_map(|&t| match p.miss(t) {
                kairo_ofproto::MissBehavior::Continue(n) => Some(n),
                kairo_ofproto::MissBehavior::Drop => None,
            })
            .collect();
        tables.extend(continued);
        let miss: FxHashMap<u8, kairo_ofproto::MissBehavior> = tables.iter().map(|&t| (t, p.miss(t))).collect();
        let book = Book::default();
        // Every traversal starts at table 0 (OpenFlow).
        let first = 0;
        let stages = tables.len().max(1);
        let (b, pr) = (book.clone(), proj.clone());
        let (handle, h) = Runtime::init_circuit(1, move |c| Ok(circuit::build(c, b, pr, first, stages, miss)))
            .map_err(|e| DbspError::Dbsp(e.to_string()))?;
        let v = DbspView {
            handle,
            h,
            book,
            proj,
            pipeline: p.clone(),
            tables,
            rules: FxHashMap::default(),
            groups: FxHashMap::default(),
            view: FxHashMap::default(),
            broken: None,
            loaded: false,
        };
        v.check_chains()?;
        Ok(v)
    }

    /// How many key words a state carries.
    pub fn key_words(&self) -> usize {
        self.proj.len()
    }

    /// Loads the pipeline's rules and groups and the traffic: the first
    /// packets of the cached flows (owners 0, 1, ... in order) and the
    /// second passes (the group a flow recirculated for and its datapath
    /// hash; owners from [`SECOND_PASS`] up, in order).
    pub fn load(&mut self, traffic: &crate::Traffic) -> Result<LoadReport, DbspError> {
        let start = Instant::now();
        if self.loaded {
            return Err(DbspError::Dbsp("the view is loaded already".into()));
        }
        self.loaded = true;
        let rules: Vec<(u8, RuleId, Arc<Rule>)> = self
            .pipeline
            .tables()
            .flat_map(|(t, tab)| tab.cls.iter().map(move |r| (t, r.id, r.payload.clone())))
            .collect();
        for (t, id, r) in rules {
            self.insert_rule(t, id, r)?;
        }
        let groups: Vec<u32> = self.pipeline.groups().map(|g| g.id).collect();
        for g in groups {
            self.insert_group(g);
        }
        let mut owners = 0;
        for (i, k) in traffic.first.iter().enumerate() {
            self.h.flows.push(Tup2(i as u64, self.proj.key(k)), 1);
            owners += 1;
        }
        for (i, (g, hash, _)) in traffic.second.iter().enumerate() {
            self.h.second.push(Tup3(SECOND_PASS + i as u64, u64::from(*g), *hash), 1);
            owners += 1;
        }
        let net = self.step()?;
        let (_, rows) = self.fold(net);
        Ok(LoadReport { took: start.elapsed(), owners, rows })
    }

    fn insert_rule(&mut self, table: u8, id: RuleId, r: Arc<Rule>) -> Result<(), DbspError> {
        check_rule(&r)?;
        if !self.tables.contains(&table) {
            return Err(Unsupported::Table(table).into());
        }
        if let Some(t) = r.inst.goto_table.filter(|t| !self.tables.contains(t)) {
            return Err(Unsupported::Table(t).into());
        }
        let mask = self.proj.mask(r.m.mask());
        if self.proj.unkey(&mask).w != r.m.mask().w {
            return Err(DbspError::Projection(format!("table={},priority={},{}", r.table, r.priority, r.m)));
        }
        let value: Vec<u64> = self.proj.key(r.m.key()).iter().zip(&mask).map(|(a, b)| a & b).collect();
        let order = circuit::order(r.priority, id);
        let version = self.book.add(Content::Rule { id, rule: r });
        let row = Tup5(u64::from(table), order, mask, value, version);
        self.h.rules.push(row.clone(), 1);
        self.rules.insert((table, id), row);
        Ok(())
    }

    fn retract_rule(&mut self, table: u8, id: RuleId) {
        if let Some(row) = self.rules.remove(&(table, id)) {
            self.h.rules.push(row, -1);
        }
    }

    fn insert_group(&mut self, g: u32) {
        if let Some(grp) = self.pipeline.group(g).cloned() {
            let version = self.book.add(Content::Group(grp));
            let row = Tup2(u64::from(g), version);
            self.h.groups.push(row, 1);
            self.groups.insert(g, row);
        }
    }

    fn retract_group(&mut self, g: u32) {
        if let Some(row) = self.groups.remove(&g) {
            self.h.groups.push(row, -1);
        }
    }

    /// Every group chains at most [`GROUP_LEVELS`] deep (what the circuit expands).
    fn check_chains(&self) -> Result<(), DbspError> {
        fn depth(p: &Pipeline, g: u32, seen: &mut Vec<u32>) -> usize {
            if seen.contains(&g) || seen.len() > GROUP_LEVELS {
                return usize::MAX;
            }
            let Some(grp) = p.group(g) else { return 0 };
            seen.push(g);
            let mut d = 1;
            for b in &grp.buckets {
                for a in &b.actions {
                    if let Action::Group(c) = a {
                        d = d.max(depth(p, *c, seen).saturating_add(1));
                    }
                }
            }
            seen.pop();
            d
        }
        for g in self.pipeline.groups() {
            if depth(&self.pipeline, g.id, &mut Vec::new()) > GROUP_LEVELS {
                return Err(DbspError::TooDeep(g.id));
            }
        }
        Ok(())
    }

    /// Refuses, before anything changes, a flow-mod the view cannot take.
    fn precheck(fm: &FlowMod) -> Result<(), DbspError> {
        match fm {
            FlowMod::Add(r) => check_rule(r)?,
            FlowMod::Modify { spec, .. } => {
                if let Some(inst) = &spec.instructions {
                    check_instructions(inst, || format!("mod-flows {}", spec.m))?;
                }
            }
            FlowMod::Delete { .. } | FlowMod::DelGroup(_) => {}
            FlowMod::AddGroup(g) | FlowMod::ModGroup(g) => check_group(g)?,
            FlowMod::AddGroups(gs) => gs.iter().try_for_each(check_group)?,
            FlowMod::Bundle(v) => v.iter().try_for_each(Self::precheck)?,
            other => {
                let what = format!("{other:?}");
                let what = what.split(['(', ' ', '{']).next().unwrap_or("this update").to_string();
                return Err(Unsupported::Action { what, whom: "the update stream".into() }.into());
            }
        }
        Ok(())
    }

    /// Applies a flow-mod: to the pipeline, then as rows to the circuit,
    /// then DBSP's step, then the output into the view.
    pub fn apply(&mut self, fm: &FlowMod) -> Result<UpdateReport, DbspError> {
        if let Some(why) = &self.broken {
            return Err(DbspError::Broken(why.clone()));
        }
        Self::precheck(fm)?;
        let start = Instant::now();
        let deltas = kairo_maintain::apply_flow_mod(&mut self.pipeline, fm)?;
        let r = self.feed(&deltas);
        if let Err(e) = &r {
            self.broken = Some(e.to_string());
        }
        r?;
        let s = Instant::now();
        let net = self.step()?;
        let step = s.elapsed();
        let (affected, changed_rows) = self.fold(net);
        Ok(UpdateReport { ttu: start.elapsed(), step, affected, changed_rows })
    }

    fn feed(&mut self, deltas: &[Delta]) -> Result<(), DbspError> {
        let mut groups_changed = false;
        for d in deltas {
            match d {
                Delta::RuleAdded { table, id } => {
                    let r = self.pipeline.rule(*table, *id).cloned().ok_or_else(|| gone(*table, *id))?;
                    self.insert_rule(*table, *id, r)?;
                }
                Delta::RuleRemoved { table, id, .. } => self.retract_rule(*table, *id),
                Delta::RuleModified { table, id, .. } => {
                    self.retract_rule(*table, *id);
                    let r = self.pipeline.rule(*table, *id).cloned().ok_or_else(|| gone(*table, *id))?;
                    self.insert_rule(*table, *id, r)?;
                }
                Delta::GroupChanged { group, .. } => {
                    if let Some(g) = self.pipeline.group(*group) {
                        check_group(g)?;
                    }
                    self.retract_group(*group);
                    self.insert_group(*group);
                    groups_changed = true;
                }
                other => {
                    return Err(
                        Unsupported::Action { what: format!("{other:?}"), whom: "the update stream".into() }.into()
                    )
                }
            }
        }
        if groups_changed {
            self.check_chains()?;
        }
        Ok(())
    }

    /// One transaction: DBSP may commit it in several steps, each with its
    /// own output (the output handle keeps only the last step's), so every
    /// step's output is read and summed. Returns the net change per row.
    fn step(&mut self) -> Result<FxHashMap<ViewRow, i64>, DbspError> {
        let err = |e: dbsp::Error| DbspError::Dbsp(e.to_string());
        self.handle.start_transaction().map_err(err)?;
        self.handle.start_commit_transaction().map_err(err)?;
        let mut net: FxHashMap<ViewRow, i64> = FxHashMap::default();
        loop {
            let done = self.handle.step().map_err(err)?;
            for (row, (), w) in self.h.view.consolidate().iter() {
                *net.entry(row).or_default() += w;
            }
            if done {
                break;
            }
        }
        net.retain(|_, w| *w != 0);
        Ok(net)
    }

    /// Folds a transaction's net change into the view: (owners changed, rows changed).
    fn fold(&mut self, net: FxHashMap<ViewRow, i64>) -> (usize, usize) {
        let mut owners = FxHashSet::default();
        let n = net.len();
        for (row, w) in net {
            owners.insert(row.0);
            let rows = self.view.entry(row.0).or_default();
            if w > 0 {
                rows.push(row);
            } else if let Some(i) = rows.iter().position(|r| *r == row) {
                rows.swap_remove(i);
            }
        }
        for o in &owners {
            if self.view.get(o).is_some_and(|r| r.is_empty()) {
                self.view.remove(o);
            }
        }
        (owners.len(), n)
    }

    /// Rows the view holds.
    pub fn rows(&self) -> usize {
        self.view.values().map(Vec::len).sum()
    }

    /// Owners the view holds rows for.
    pub fn owners(&self) -> usize {
        self.view.len()
    }

    /// Does the view give `owner` (a first-pass flow's index, or
    /// [`SECOND_PASS`] + a second pass's index) the traversal `t`, the one
    /// kairo's cache holds for it? `None` if so, else what differs.
    pub fn check(&self, owner: u64, t: &Traversal) -> Option<String> {
        let empty = Vec::new();
        let rows = self.view.get(&owner).unwrap_or(&empty);
        let mut steps: Vec<&ViewRow> = rows.iter().filter(|r| r.1 < END_SLOT).collect();
        steps.sort_by_key(|r| r.1);
        let ours: Vec<(u64, u64)> = steps
            .iter()
            .map(|r| (r.2, if r.3 == MISS { MISS } else { self.book.rule_id(r.3).unwrap_or(NONE) }))
            .collect();
        let theirs: Vec<(u64, u64)> =
            t.steps.iter().map(|s| (u64::from(s.table), s.outcome.rule().unwrap_or(MISS))).collect();
        if ours != theirs {
            return Some(format!("tables: view {ours:?}, cache {theirs:?}"));
        }
        if rows.iter().any(|r| r.1 == END_SLOT && r.4 == MISS) {
            return Some("the view cut the traversal at its last declared table".into());
        }
        let mut ours: Vec<(u64, bool, Vec<u32>)> = rows
            .iter()
            .filter(|r| r.1 >= GROUP_SLOT)
            .map(|r| match r.4 {
                RECIRC => (r.2, true, Vec::new()),
                ALL => {
                    let n = match self.book.get(r.3) {
                        Some(Content::Group(g)) => g.buckets.len() as u32,
                        _ => 0,
                    };
                    (r.2, false, (0..n).collect())
                }
                NONE => (r.2, false, Vec::new()),
                b => (r.2, false, vec![b as u32]),
            })
            .collect();
        let mut theirs: Vec<(u64, bool, Vec<u32>)> = t
            .groups
            .iter()
            .map(|g| {
                let mut b = g.buckets.clone();
                b.sort_unstable();
                (u64::from(g.group), g.recirc, b)
            })
            .collect();
        ours.sort();
        theirs.sort();
        (ours != theirs).then(|| format!("groups: view {ours:?}, cache {theirs:?}"))
    }
}

fn gone(table: u8, id: RuleId) -> DbspError {
    DbspError::Dbsp(format!("rule {id} of table {table} reported changed but not in the pipeline"))
}
