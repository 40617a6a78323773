//! The book: every rule and group content the circuit was given, by
//! version, and the scalar functions the circuit applies to them (a rule's
//! instructions to a lookup state, a group to a reference). Rows of the
//! circuit carry versions, never rules, so the circuit's data stays plain
//! integers and vectors (what DBSP stores and compares).
//!
//! Invariant: a version names one content forever (a modified rule or group
//! gets a new version; the book only grows), so the circuit's functions are
//! pure functions of their rows, as DBSP requires of them; and every
//! function here is total (a version the book lacks yields a dead end, not
//! a panic).
//!
//! Also here: what the engine refuses. It models the actions that move a
//! packet between tables or change what later tables see (goto, the action
//! set, field writes, VLAN tags, metadata) and the groups Open vSwitch hashes
//! in the datapath, indirect and all groups; a pipeline with anything that
//! makes a traversal depend on more than the rule tables and the packet
//! (resubmit, conntrack, learn, conjunctions, NORMAL, MPLS, the register
//! stack, a group run in apply-actions, dec_ttl in a table, fast-failover,
//! select groups hashed in translation or with watched buckets) is refused
//! with the rule or group named, rather than modelled wrongly.

use std::sync::{Arc, RwLock};

use kairo_flow::field::{Field, Prereq};
use kairo_flow::{FlowKey, FlowMask};
use kairo_ofproto::{Action, Group, GroupType, Instructions, MissBehavior, Rule};
use kairo_xlate::recirc::DpHashPlan;
use rustc_hash::FxHashMap;

/// "None" in a row's slot (no group, no output, no hash, no bucket).
pub const NONE: u64 = u64::MAX;
/// A lookup that matched no rule.
pub const MISS: u64 = u64::MAX - 1;
/// The table of a state whose pipeline ended.
pub const END: u64 = u64::MAX;
/// A group hashed in the datapath met without a hash yet: it recirculates.
pub const RECIRC: u64 = u64::MAX - 2;
/// Every bucket of the group ran (indirect, all).
pub const ALL: u64 = u64::MAX - 3;

/// What the engine cannot model, naming the rule or group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("the DBSP engine does not model `{what}` (in {whom})")]
    Action { what: String, whom: String },
    #[error("the DBSP engine does not model {what} (group {group})")]
    Group { what: String, group: u32 },
    #[error("table {0} is not in the tables declared when the view was built")]
    Table(u8),
}

/// Which words of a flow key the circuit keeps: those any rule matches on,
/// and those the modelled actions read (a state's key is these words, in
/// this order; the rest cannot change a lookup).
#[derive(Clone, Debug)]
pub struct Projection {
    words: Vec<usize>,
}

impl Projection {
    /// The words `masks` touch, plus those of `also`.
    pub fn new<'a>(masks: impl IntoIterator<Item = &'a FlowMask>, also: &[Field]) -> Projection {
        let mut used = [false; kairo_flow::field::WORDS];
        for m in masks {
            for (u, w) in used.iter_mut().zip(m.w.iter()) {
                *u |= *w != 0;
            }
        }
        for f in also {
            used[f.place().word] = true;
        }
        Projection { words: used.iter().enumerate().filter(|(_, u)| **u).map(|(i, _)| i).collect() }
    }

    /// The fields the modelled actions read, whatever the rules match.
    pub const READ: &'static [Field] = &[
        Field::EthType,
        Field::IpProto,
        Field::TpSrc,
        Field::TpDst,
        Field::VlanTci,
        Field::VlanTciInner,
        Field::CtState,
        Field::Metadata,
    ];

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn key(&self, k: &FlowKey) -> Vec<u64> {
        self.words.iter().map(|&i| k.w[i]).collect()
    }

    pub fn mask(&self, m: &FlowMask) -> Vec<u64> {
        self.words.iter().map(|&i| m.w[i]).collect()
    }

    /// A key with these words and zero elsewhere.
    pub fn unkey(&self, v: &[u64]) -> FlowKey {
        let mut k = FlowKey::ZERO;
        for (&i, &x) in self.words.iter().zip(v) {
            k.w[i] = x;
        }
        k
    }
}

/// What a version names.
#[derive(Clone, Debug)]
pub enum Content {
    Rule { id: kairo_classifier::RuleId, rule: Arc<Rule> },
    Group(Arc<Group>),
}

/// The versions, shared by the circuit's functions (read) and the engine
/// (which adds before it pushes rows naming them).
#[derive(Clone, Debug, Default)]
pub struct Book {
    inner: Arc<RwLock<FxHashMap<u64, Content>>>,
    next: u64,
}

/// A lookup state after a rule ran: where it goes, its key, its action set.
pub struct After {
    pub table: u64,
    pub key: Vec<u64>,
    pub set_group: u64,
    pub set_out: u64,
}

impl Book {
    /// Files `c` under a new version.
    pub fn add(&mut self, c: Content) -> u64 {
        let v = self.next;
        self.next += 1;
        if let Ok(mut m) = self.inner.write() {
            m.insert(v, c);
        }
        v
    }

    pub fn get(&self, v: u64) -> Option<Content> {
        self.inner.read().ok()?.get(&v).cloned()
    }

    /// The rule id a version names (for comparing with a traversal).
    pub fn rule_id(&self, v: u64) -> Option<kairo_classifier::RuleId> {
        match self.inner.read().ok()?.get(&v)? {
            Content::Rule { id, .. } => Some(*id),
            Content::Group(_) => None,
        }
    }

    /// The state after rule version `v` ran on a state with key `key` and
    /// action set (`group`, `out`): OpenFlow's instruction order (apply,
    /// clear, write, write-metadata, goto).
    pub fn after(&self, proj: &Projection, v: u64, key: &[u64], group: u64, out: u64) -> After {
        let dead = After { table: END, key: key.to_vec(), set_group: group, set_out: out };
        let rule = match self.get(v) {
            Some(Content::Rule { rule, .. }) => rule,
            _ => return dead,
        };
        let mut k = proj.unkey(key);
        for a in &rule.inst.apply {
            apply(&mut k, a);
        }
        let (mut group, mut out) = (group, out);
        if rule.inst.clear_actions {
            (group, out) = (NONE, NONE);
        }
        for a in &rule.inst.write {
            match a {
                Action::Group(g) => group = u64::from(*g),
                Action::Output(p) => out = u64::from(*p),
                _ => {}
            }
        }
        if let Some((value, mask)) = rule.inst.write_metadata {
            k.set_masked(Field::Metadata, value, mask);
        }
        let table = rule.inst.goto_table.map_or(END, u64::from);
        After { table, key: proj.key(&k), set_group: group, set_out: out }
    }

    /// What group version `v` does for a packet with datapath hash `hash`
    /// ([`NONE`]: not hashed yet): the value its row carries (the version;
    /// for a group hashed in the datapath met without a hash, only how it
    /// hashes, which is all the pass that recirculates depends on), the
    /// bucket ([`RECIRC`], [`ALL`] or an index) and the groups run next.
    pub fn expand(&self, v: u64, hash: u64) -> (u64, u64, Vec<u64>) {
        let g = match self.get(v) {
            Some(Content::Group(g)) => g,
            _ => return (v, NONE, Vec::new()),
        };
        let children = |buckets: &mut dyn Iterator<Item = &kairo_ofproto::Bucket>| -> Vec<u64> {
            buckets
                .flat_map(|b| b.actions.iter())
                .filter_map(|a| match a {
                    Action::Group(c) => Some(u64::from(*c)),
                    _ => None,
                })
                .collect()
        };
        match (g.ty, DpHashPlan::of(&g)) {
            (GroupType::Select, Some(plan)) => {
                if hash == NONE {
                    let how = (plan.alg as u64) << 32 | u64::from(plan.basis);
                    return (how, RECIRC, Vec::new());
                }
                match plan.map.get((hash & u64::from(plan.mask)) as usize) {
                    Some(&b) => (v, b as u64, children(&mut g.buckets.get(b).into_iter())),
                    None => (v, NONE, Vec::new()),
                }
            }
            _ => (v, ALL, children(&mut g.buckets.iter())),
        }
    }
}

/// `a`'s effect on what later tables see (the modelled actions; the rest
/// change nothing a lookup reads, or are refused by [`check_rule`]).
fn apply(k: &mut FlowKey, a: &Action) {
    match a {
        Action::SetField { field, value, mask } if prereq(k, *field) => k.set_masked(*field, *value, *mask),
        Action::SetWide { field, value, mask } if prereq(k, *field) => {
            let old = k.get_wide(*field);
            k.set_wide(*field, (old & !mask) | (value & mask));
        }
        Action::Move { src, dst } if prereq(k, src.field) && prereq(k, dst.field) => {
            let bits = (k.get(src.field) & src.mask()) >> src.ofs;
            k.set_masked(dst.field, bits << dst.ofs, dst.mask());
        }
        Action::PushVlan { .. } => {
            let outer = k.get(Field::VlanTci);
            k.set(Field::VlanTciInner, outer);
            k.set(Field::VlanTci, VLAN_CFI);
        }
        Action::PopVlan => {
            let inner = k.get(Field::VlanTciInner);
            k.set(Field::VlanTci, inner);
            k.set(Field::VlanTciInner, 0);
        }
        Action::SetVlanVid { vid, push } => {
            let tci = k.get(Field::VlanTci);
            if tci & VLAN_CFI != 0 {
                k.set(Field::VlanTci, (tci & !0xfff) | u64::from(*vid & 0xfff));
            } else if *push {
                k.set(Field::VlanTci, VLAN_CFI | u64::from(*vid & 0xfff));
            }
        }
        Action::SetVlanPcp { pcp, push } => {
            let tci = k.get(Field::VlanTci);
            if tci & VLAN_CFI != 0 {
                k.set(Field::VlanTci, (tci & 0x1fff) | u64::from(*pcp & 7) << 13);
            } else if *push {
                k.set(Field::VlanTci, VLAN_CFI | u64::from(*pcp & 7) << 13);
            }
        }
        _ => {}
    }
}

const VLAN_CFI: u64 = 0x1000;

/// Does the packet have the protocol `f` belongs to (a write to a field
/// it lacks does nothing, as Open vSwitch's `set_field`)?
fn prereq(k: &FlowKey, f: Field) -> bool {
    let et = k.get(Field::EthType);
    let (v4, v6) = (et == 0x0800, et == 0x86dd);
    let ip = v4 || v6;
    let proto = k.get(Field::IpProto);
    let nd = |types: &[u64]| v6 && proto == 58 && k.get(Field::TpDst) == 0 && types.contains(&k.get(Field::TpSrc));
    match f.def().prereq {
        Prereq::None => true,
        Prereq::Ipv4 => v4,
        Prereq::Ipv6 => v6,
        Prereq::Ip => ip,
        Prereq::Arp => et == 0x0806,
        Prereq::L4 => ip && matches!(proto, 6 | 17 | 132),
        Prereq::Tcp => ip && proto == 6,
        Prereq::Icmp => v4 && proto == 1,
        Prereq::Icmpv6 => v6 && proto == 58,
        Prereq::Nd => nd(&[135, 136]),
        Prereq::NdSolicit => nd(&[135]),
        Prereq::NdAdvert => nd(&[136]),
        Prereq::Mpls => matches!(et, 0x8847 | 0x8848),
        Prereq::Ct => k.get(Field::CtState) & 0x0b != 0,
    }
}

/// Refuses what the engine does not model in a table's rule.
pub fn check_rule(r: &Rule) -> Result<(), Unsupported> {
    let whom = || format!("table={},priority={},{}", r.table, r.priority, r.m);
    if r.m.mask().get(Field::ConjId) != 0 {
        return Err(Unsupported::Action { what: "conj_id".into(), whom: whom() });
    }
    check_instructions(&r.inst, whom)
}

/// Refuses what the engine does not model in a rule's instructions
/// (`whom` names the rule in the error).
pub fn check_instructions(inst: &Instructions, whom: impl Fn() -> String) -> Result<(), Unsupported> {
    for a in inst.apply.iter().chain(&inst.write) {
        let name = match a {
            Action::Resubmit { .. } => "resubmit",
            Action::Ct(_) | Action::CtClear => "ct",
            Action::Conjunction { .. } => "conjunction",
            Action::Learn(_) => "learn",
            Action::Normal => "NORMAL",
            Action::Clone(_) => "clone",
            Action::PushMpls { .. } | Action::PopMpls { .. } | Action::SetMplsTtl(_) | Action::DecMplsTtl => "MPLS",
            Action::StackPush(_) | Action::StackPop(_) => "push/pop (the register stack)",
            Action::CheckPktLarger { .. } => "check_pkt_larger",
            _ => continue,
        };
        return Err(Unsupported::Action { what: name.into(), whom: whom() });
    }
    for a in &inst.apply {
        let name = match a {
            Action::Group(_) => "a group in apply-actions",
            Action::DecTtl => "dec_ttl in apply-actions",
            _ => continue,
        };
        return Err(Unsupported::Action { what: name.into(), whom: whom() });
    }
    Ok(())
}

/// Refuses what the engine does not model in a group.
pub fn check_group(g: &Group) -> Result<(), Unsupported> {
    let refuse = |what: &str| Err(Unsupported::Group { what: what.to_string(), group: g.id });
    match g.ty {
        GroupType::FastFailover => return refuse("fast-failover groups"),
        GroupType::Select if DpHashPlan::of(g).is_none() => {
            return refuse(
                "select groups hashed in translation (selection_method=hash, or weights beyond 64/256 hash values)",
            )
        }
        _ => {}
    }
    for b in &g.buckets {
        if b.watch_port.is_some() || b.watch_group.is_some() {
            return refuse("watched buckets");
        }
        for a in &b.actions {
            match a {
                Action::Resubmit { .. } | Action::Ct(_) | Action::CtClear | Action::Learn(_) | Action::Normal => {
                    return refuse("resubmit, ct, learn or NORMAL in a bucket")
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Table-miss behaviour per table (fixed for the view's life: flow-mods do
/// not change it).
pub fn miss_next(miss: &FxHashMap<u8, MissBehavior>, table: u64) -> u64 {
    match u8::try_from(table).ok().and_then(|t| miss.get(&t)) {
        Some(MissBehavior::Continue(t)) => u64::from(*t),
        _ => END,
    }
}
