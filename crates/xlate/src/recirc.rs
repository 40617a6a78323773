//! Recirculation: translation that stops where it needs the datapath (a
//! `hash` for a select group, later conntrack), freezes what it was doing
//! under a recirculation id, and goes on from there when the packet comes
//! back with that `recirc_id` (Open vSwitch's freezing and thawing,
//! `ofproto-dpif-rid.h`).
//!
//! Owns the frozen states ([`FrozenState`]) and the table of them
//! ([`Recircs`]), and the dp_hash bucket map of a select group
//! ([`DpHashPlan`]).
//!
//! Invariants: an id names one state for as long as the table holds it, and
//! one state has one id (ids are content-addressed: two translations that
//! freeze the same state emit the same `recirc(id)`, so a megaflow's actions
//! are a function of its key and the tables, which maintenance relies on);
//! a state holds everything the next pass depends on besides the packet
//! (what to run, the action set, the metadata the datapath does not carry),
//! so the next pass's megaflows match `recirc_id`, not the frozen values.

use std::sync::{Arc, RwLock};

use kairo_flow::field::{Field, REGS};
use kairo_odp::HashAlg;
use kairo_ofproto::{Action, Group, GroupType, Selection};
use rustc_hash::FxHashMap;

/// One step of what a frozen translation has left to do (Open vSwitch's
/// unrolled actions): the instructions of the rules it was inside, from
/// the innermost out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The actions that follow are those of a rule of this table with this
    /// cookie (`miss`: its table-miss rule), for controller actions.
    Rule {
        table: u8,
        cookie: u64,
        miss: bool,
    },
    Act(Action),
    ClearActions,
    WriteActions(Vec<Action>),
    WriteMetadata {
        value: u64,
        mask: u64,
    },
    Goto(u8),
}

/// The metadata a frozen state keeps: what translation reads that the
/// datapath does not carry into the next pass (Open vSwitch's
/// `frozen_metadata`, plus pkt_mark, which kairo's datapath does not carry).
pub const FROZEN_FIELDS: [Field; 22] = {
    let mut out = [Field::InPort; 22];
    out[1] = Field::Metadata;
    let mut i = 0;
    while i < REGS.len() {
        out[2 + i] = REGS[i];
        i += 1;
    }
    out[18] = Field::PktMark;
    out[19] = Field::TunId;
    out[20] = Field::TunSrc;
    out[21] = Field::TunDst;
    out
};

/// The group id (none of OpenFlow's: they end at 0xffffff00) a
/// recirculated pass records a use of when its frozen state FLOODs (in what
/// is left to do or in the action set): what FLOOD does depends on the
/// switch's ports, and that state came from rules of an earlier pass, not
/// from this pass's traversal. A change of ports takes the users of this
/// group too.
pub const FROZEN_FLOOD: u32 = u32::MAX;

/// A translation frozen for recirculation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FrozenState {
    /// What is left to do; empty: look the packet up in `table`.
    pub ops: Vec<Op>,
    pub table: u8,
    /// The action set, in action-set order.
    pub action_set: Vec<Action>,
    /// The values of [`FROZEN_FIELDS`], in that order.
    pub metadata: [u64; FROZEN_FIELDS.len()],
    /// The packet has its datapath hash (a `hash` action ran on this pass
    /// or an earlier one): a select group hashed in the datapath picks its
    /// bucket from `dp_hash` instead of asking for it. A first pass has
    /// none; that the state says it makes it a function of `recirc_id`, as
    /// every megaflow matches that.
    pub hashed: bool,
    /// The packet went through the connection tracker before the freeze
    /// and was not cleared since (Open vSwitch's `conntracked`): only then
    /// does `ct_clear` emit the datapath's `ct_clear`.
    pub conntracked: bool,
    /// The push/pop stack, bottom first.
    pub stack: Vec<u64>,
}

impl FrozenState {
    /// Whether anything the state runs FLOODs (an action left to do, one
    /// written to the action set, or the action set's output).
    pub fn floods(&self) -> bool {
        let flood = Action::may_flood;
        self.action_set.iter().any(flood)
            || self.ops.iter().any(|o| match o {
                Op::Act(a) => flood(a),
                Op::WriteActions(w) => w.iter().any(flood),
                _ => false,
            })
    }

    /// A one-line description, as `kairo trace` shows a thawed state.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.ops.is_empty() {
            parts.push(format!("resume at table {}", self.table));
        } else {
            let acts: Vec<String> = self
                .ops
                .iter()
                .filter_map(|o| match o {
                    Op::Rule { .. } => None,
                    Op::Act(a) => Some(a.to_string()),
                    Op::ClearActions => Some("clear_actions".into()),
                    Op::WriteActions(w) => {
                        Some(format!("write_actions({})", kairo_ofproto::action::format_action_list(w)))
                    }
                    Op::WriteMetadata { value, mask } => Some(format!("write_metadata:{value:#x}/{mask:#x}")),
                    Op::Goto(t) => Some(format!("goto_table:{t}")),
                })
                .collect();
            parts.push(format!("actions: {}", acts.join(",")));
        }
        if !self.action_set.is_empty() {
            parts.push(format!("action set: {}", kairo_ofproto::action::format_action_list(&self.action_set)));
        }
        let meta: Vec<String> = FROZEN_FIELDS
            .iter()
            .zip(self.metadata)
            .filter(|(f, v)| *v != 0 || **f == Field::InPort)
            .map(|(f, v)| format!("{}={v:#x}", f.name()))
            .collect();
        parts.push(meta.join(","));
        parts.join("; ")
    }
}

/// The frozen states by id, and the ids by state. Shared by every copy of a
/// pipeline (a state is a value: which tables produced it does not matter
/// to what it does).
#[derive(Debug, Default)]
pub struct Recircs {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: FxHashMap<u32, Arc<FrozenState>>,
    ids: FxHashMap<Arc<FrozenState>, u32>,
    next: u32,
}

impl Recircs {
    /// The id of `state`, giving it one if it has none (ids start at 1; 0
    /// is the first pass).
    pub fn intern(&self, state: FrozenState) -> u32 {
        if let Some(&id) = self.read().ids.get(&state) {
            return id;
        }
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = w.ids.get(&state) {
            return id;
        }
        // Skip 0 and ids still held after a wrap (4G states never live at once).
        loop {
            w.next = w.next.wrapping_add(1);
            if w.next != 0 && !w.by_id.contains_key(&w.next) {
                break;
            }
        }
        let id = w.next;
        let s = Arc::new(state);
        w.by_id.insert(id, s.clone());
        w.ids.insert(s, id);
        id
    }

    /// The id of `state`, if it has one (never gives one).
    pub fn id_of(&self, state: &FrozenState) -> Option<u32> {
        self.read().ids.get(state).copied()
    }

    /// The state of `id`, if the table holds it.
    pub fn get(&self, id: u32) -> Option<Arc<FrozenState>> {
        self.read().by_id.get(&id).cloned()
    }

    /// How many states the table holds.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the states `keep` says no to (their ids may be given again).
    pub fn retain(&self, mut keep: impl FnMut(u32) -> bool) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<u32> = w.by_id.keys().copied().filter(|&id| !keep(id)).collect();
        for id in gone {
            if let Some(s) = w.by_id.remove(&id) {
                w.ids.remove(&s);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A writer that panicked left the maps consistent (each write is
        // one insert or remove pair): keep using them.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The most hash values a dp_hash select group spreads its buckets over
/// (Open vSwitch's MAX_SELECT_GROUP_HASH_VALUES).
pub const MAX_HASH_VALUES: u64 = 256;
/// The most a select group without a selection method may need to be
/// hashed in the datapath (else it is hashed in translation, as Open vSwitch).
pub const DEFAULT_MAX_HASH_VALUES: u64 = 64;

/// How a select group is hashed in the datapath: the `hash` action's
/// algorithm and basis, and which bucket (an index into the group's
/// buckets) each of `mask + 1` hash values picks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpHashPlan {
    pub alg: HashAlg,
    pub basis: u32,
    pub mask: u32,
    pub map: Vec<usize>,
}

impl DpHashPlan {
    /// The plan of a select group that is hashed in the datapath, or
    /// `None` (hashed in translation): as Open vSwitch's
    /// `group_set_selection_method`, a group without a method is if its
    /// weights fit 64 hash values, one with `selection_method=dp_hash` if
    /// they fit 256, one with `selection_method=hash` never. Hash values
    /// go to buckets by Webster's method of apportionment (the bucket with
    /// the highest weight / (2 * values so far + 1) takes the next value,
    /// the first such bucket on ties), as Open vSwitch's
    /// `group_setup_dp_hash_table`.
    pub fn of(g: &Group) -> Option<DpHashPlan> {
        if g.ty != GroupType::Select {
            return None;
        }
        let (limit, alg, basis) = match g.selection {
            Selection::Default => (DEFAULT_MAX_HASH_VALUES, HashAlg::SymL4, 0),
            Selection::DpHash { param } => (MAX_HASH_VALUES, HashAlg::from_param((param >> 32) as u32), param as u32),
            Selection::Hash => return None,
        };
        let total: u64 = g.buckets.iter().map(|b| u64::from(b.weight)).sum();
        let min = g.buckets.iter().map(|b| u64::from(b.weight)).filter(|&w| w > 0).min()?;
        if total == 0 {
            return None;
        }
        let n = total.div_ceil(min).next_power_of_two().max(16);
        if n > limit {
            return None;
        }
        // (divisor, value) per bucket; values compared as exact fractions
        // weight / divisor (Open vSwitch compares doubles of the same).
        let mut div: Vec<u64> = vec![1; g.buckets.len()];
        let weight = |i: usize| u64::from(g.buckets[i].weight);
        let mut map = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let mut win = 0;
            for i in 1..g.buckets.len() {
                // weight(i) / div(i) > weight(win) / div(win)
                if u128::from(weight(i)) * u128::from(div[win]) > u128::from(weight(win)) * u128::from(div[i]) {
                    win = i;
                }
            }
            div[win] += 2;
            map.push(win);
        }
        Some(DpHashPlan { alg, basis, mask: (n - 1) as u32, map })
    }
}

/// Passes a packet may take, the first included (Open vSwitch's datapath
/// limit, `MAX_RECIRC_DEPTH`).
pub const MAX_PASSES: usize = 6;

/// One pass of a packet through the tables: the key the datapath looked up
/// and what translation gave for it.
#[derive(Clone, Debug)]
pub struct Pass {
    pub key: kairo_flow::FlowKey,
    pub result: crate::XlateResult,
}

/// Translates `key` and every pass its recirculations lead to, as the
/// datapath would run them (each recirculated key made by applying the
/// previous pass's actions, [`kairo_odp::apply`]), in the order the
/// datapath takes them, up to [`MAX_PASSES`] deep.
pub fn follow(p: &crate::Pipeline, key: &kairo_flow::FlowKey) -> Vec<Pass> {
    follow_ct(p, key, &[])
}

/// [`follow`], each pass recirculated after a `ct` seeing the next of
/// `ct_next` as its ct_state (then `trk|new`), as `ofproto/trace --ct-next`
/// hands them out: in the order the passes are taken.
pub fn follow_ct(p: &crate::Pipeline, key: &kairo_flow::FlowKey, ct_next: &[u64]) -> Vec<Pass> {
    let mut states = ct_next.iter().copied();
    let mut out = Vec::new();
    let mut todo = std::collections::VecDeque::from([(*key, 1)]);
    while let Some((k, depth)) = todo.pop_front() {
        let result = crate::translate(p, &k);
        if depth < MAX_PASSES {
            for (port, next) in kairo_odp::apply_ct(&result.actions, &k, &mut states) {
                if port == kairo_odp::RECIRC_PORT {
                    todo.push_back((next, depth + 1));
                }
            }
        }
        out.push(Pass { key: k, result });
    }
    out
}
