//! The reference: a plain, slow interpreter of the rule tables over a
//! linear scan of each table's rules, and a check of a megaflow cache
//! against it by sampling packets inside each megaflow.
//!
//! It shares no code with what it checks: no classifier lookup, no overlap
//! test, no translation, no commit, no mask. It reads the rules, groups,
//! misses and ports out of a [`Pipeline`] and interprets OpenFlow's
//! semantics as `docs/design.md` section 2 states them, on the packet
//! itself: an output emits the packet's header fields as they are then. A
//! cache entry (key K, mask M, actions A) is right if every packet P with
//! `P & M == K & M` leaves as the reference says; the check draws such
//! packets (random values in every wildcarded bit of a packet field) and
//! compares the reference's emissions with [`kairo_odp::apply`] of A.
//!
//! Invariant: the reference is deterministic in the pipeline and the packet;
//! it never panics on any pipeline or packet, and it stops at the bounds
//! translation has (nesting, lookups, buckets, 64 kB of actions), where it
//! says so instead of emitting.

mod conj;
mod learn;
mod normal;

use std::collections::BTreeMap;
use std::sync::Arc;

use kairo_flow::field::{Field, Prereq};
use kairo_flow::FlowKey;
use kairo_odp::{packet_fields, Emitted, HashAlg, CT_FIELDS, RECIRC_PORT};
use kairo_ofproto::{Action, Group, GroupType, MissBehavior, Rule, Selection};
use kairo_xlate::recirc::{FrozenState, Op, Recircs, FROZEN_FIELDS};
use kairo_xlate::Pipeline;
use rand::Rng;

/// Where the reference gave up (a translation's bound), if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Too deep or too many lookups: the packet is dropped.
    Error,
    /// Over 64 kB of datapath actions: the packet gets what was made, and
    /// no megaflow may hold it.
    TooManyActions,
    /// Too many group buckets: dropped, and no megaflow may hold it.
    TooManyBuckets,
}

/// What the reference does with a packet: the packets that leave, in
/// order (the controller as port `u32::MAX`), or where it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub emitted: Vec<Emitted>,
    pub stop: Option<Stop>,
    /// The flows `learn` actions made, in order.
    pub learned: Vec<Rule>,
}

/// OpenFlow's port-config bits (OpenFlow 1.0's `ofp_port_config`), as the
/// reference reads them out of the ports' settings.
const OFPPC_NO_RECV: u32 = 1 << 2;
const OFPPC_NO_FLOOD: u32 = 1 << 4;
const OFPPC_NO_FWD: u32 = 1 << 5;

/// The rule tables, read out of a pipeline, each sorted by priority (high
/// first), then installation order (a rule's id grows with it).
pub struct Reference {
    tables: BTreeMap<u8, Vec<Arc<Rule>>>,
    misses: BTreeMap<u8, MissBehavior>,
    groups: BTreeMap<u32, Arc<Group>>,
    ports: Vec<u32>,
    down: Vec<u32>,
    /// NORMAL's view: the ports' VLAN settings and the learned MACs.
    settings: BTreeMap<u32, normal::Settings>,
    /// The ports' OpenFlow port-config bits, as numbers (`OFPPC_*`).
    config: BTreeMap<u32, u32>,
    macs: BTreeMap<(u16, u64), u32>,
    /// Per packet field, the (value, mask) pairs the rules match it on and
    /// the values set actions write: where outcomes change, for sampling.
    hints: BTreeMap<Field, Vec<(u64, u64)>>,
    /// The packet lengths that tell every `check_pkt_larger` of the rules
    /// apart: 0, and each length compared + 1.
    lengths: Vec<usize>,
    /// The frozen states recirculated packets resume from (read as data:
    /// the reference interprets them itself, and names a state it freezes
    /// by the id the table has for the same state).
    recircs: Arc<Recircs>,
}

const MAX_DEPTH: u32 = 64;
const MAX_LOOKUPS: u32 = 4096;
const MAX_BUCKETS: u32 = 1 << 16;
const MAX_STACK: usize = 8192;
/// A translation stops past 64 kB of datapath actions (Open vSwitch's
/// Netlink sizes). The reference counts 8 bytes per output and a masked set
/// per group of headers changed before it (`headers_changed`); it does not
/// redo translation's commit action by action, so right at the bound it may
/// stop one check apart from it (no shipped or generated pipeline comes
/// near; the fan-out tests are outputs only, where the counts are equal).
const MAX_ACTION_BYTES: usize = u16::MAX as usize;

impl Reference {
    pub fn new(p: &Pipeline) -> Reference {
        let mut tables: BTreeMap<u8, Vec<Arc<Rule>>> = BTreeMap::new();
        let mut misses = BTreeMap::new();
        for (t, tb) in p.tables() {
            let mut rules: Vec<(u64, Arc<Rule>)> = tb.cls.iter().map(|r| (r.id, r.payload.clone())).collect();
            rules.sort_by_key(|(id, r)| (std::cmp::Reverse(r.priority), *id));
            tables.insert(t, rules.into_iter().map(|(_, r)| r).collect());
            misses.insert(t, p.miss(t));
        }
        let groups = p.groups().map(|g| (g.id, g.clone())).collect();
        let ports: Vec<u32> = p.ports().collect();
        let down = p.down_ports().collect();
        let mut hints: BTreeMap<Field, Vec<(u64, u64)>> = BTreeMap::new();
        for rules in tables.values() {
            for r in rules {
                for f in Field::all().filter(|f| f.in_packet()) {
                    let (v, m) = r.m.field(f);
                    if m != 0 {
                        hints.entry(f).or_default().push((v, m));
                    }
                }
                for a in r.inst.apply.iter().chain(&r.inst.write) {
                    if let Action::SetField { field, value, mask } = a {
                        hints.entry(*field).or_default().push((*value, *mask));
                    }
                }
            }
        }
        for h in hints.values_mut() {
            h.sort_unstable();
            h.dedup();
        }
        let mut lengths = vec![0];
        let mut todo: Vec<&[Action]> = tables.values().flatten().map(|r| &r.inst.apply[..]).collect();
        while let Some(list) = todo.pop() {
            for a in list {
                match a {
                    Action::CheckPktLarger { len, .. } => lengths.push(usize::from(*len) + 1),
                    Action::Clone(body) => todo.push(body),
                    _ => {}
                }
            }
        }
        lengths.sort_unstable();
        lengths.dedup();
        let settings = ports
            .iter()
            .filter_map(|&port| p.port_settings(port).map(|s| (port, (s.mode, s.vlan, s.trunks.clone()))))
            .collect();
        let config = ports
            .iter()
            .filter_map(|&port| p.port_settings(port).map(|s| (port, s.config.0)))
            .filter(|(_, bits)| *bits != 0)
            .collect();
        let macs = p.macs().entries().iter().map(|e| ((e.vlan, e.mac), e.port)).collect();
        Reference {
            tables,
            misses,
            groups,
            ports,
            down,
            settings,
            config,
            macs,
            hints,
            lengths,
            recircs: p.recircs().clone(),
        }
    }

    /// Packet lengths that between them take every branch any
    /// `check_pkt_larger` of the rules can take (0, and each length it
    /// compares with + 1).
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// What the tables do with `packet` (registers and metadata zero): a
    /// first pass from table 0, a recirculated one (`recirc_id` set) from
    /// the frozen state it names.
    /// Has port `p` the OpenFlow port-config bit `bit` set?
    fn port_bit(&self, p: u32, bit: u32) -> bool {
        self.config.get(&p).is_some_and(|c| c & bit != 0)
    }

    pub fn run(&self, packet: &FlowKey) -> Outcome {
        self.run_len(packet, 0)
    }

    /// [`Reference::run`] for a packet of `len` bytes on the wire (what
    /// `check_pkt_larger` compares; [`Reference::run`] takes 0).
    pub fn run_len(&self, packet: &FlowKey, len: usize) -> Outcome {
        let mut run = Run {
            r: self,
            len,
            flow: *packet,
            emitted: Vec::new(),
            set: Vec::new(),
            lookups: 0,
            buckets: 0,
            stop: None,
            bytes: 0,
            base: packet_fields(packet),
            live: BTreeMap::new(),
            hidden: false,
            ctx: (0, 0, false),
            freezing: None,
            hashed: false,
            dp_hash: packet.get(Field::DpHash),
            conntracked: false,
            stack: Vec::new(),
            ct: *packet,
            nat: Vec::new(),
            ended: false,
            learned: Vec::new(),
        };
        match packet.get(Field::RecircId) as u32 {
            // OFPPC_NO_RECV: what the port receives goes nowhere.
            0 if self.port_bit(packet.get(Field::InPort) as u32, OFPPC_NO_RECV) => {}
            0 => run.table(0, 0),
            id => match self.recircs.get(id) {
                None => run.stop = Some(Stop::Error),
                Some(st) => {
                    for (f, v) in FROZEN_FIELDS.iter().zip(st.metadata) {
                        run.flow.set(*f, v);
                    }
                    run.hashed = st.hashed;
                    run.conntracked = st.conntracked;
                    run.stack = st.stack.clone();
                    run.set = st.action_set.clone();
                    if st.ops.is_empty() {
                        run.table(st.table, 0);
                    } else {
                        run.ops(&st.ops);
                    }
                }
            },
        }
        if !run.halted() && run.freezing.is_none() {
            let set = std::mem::take(&mut run.set);
            run.action_list(&ordered(set), 0, 0);
        }
        if run.stop.is_none() {
            run.finish_freezing();
        }
        match run.stop {
            Some(stop @ (Stop::Error | Stop::TooManyBuckets)) => {
                Outcome { emitted: Vec::new(), stop: Some(stop), learned: run.learned }
            }
            stop => Outcome { emitted: run.emitted, stop, learned: run.learned },
        }
    }

    fn miss(&self, t: u8) -> MissBehavior {
        self.misses.get(&t).copied().unwrap_or(MissBehavior::Drop)
    }
}

/// The action set in OpenFlow's order: pop_vlan, push_vlan, dec_ttl, the
/// set actions in the order written (a later write of the same thing
/// replacing an earlier), then a group or else an output.
fn ordered(set: Vec<Action>) -> Vec<Action> {
    let mut pop = false;
    let mut pop_mpls = None;
    let mut push_mpls = None;
    let mut push = None;
    let mut dec = false;
    let mut dec_mpls = false;
    let mut sets: Vec<Action> = Vec::new();
    let mut group = None;
    let mut output = None;
    for a in set {
        match a {
            Action::PopVlan => pop = true,
            Action::PushVlan { .. } => push = Some(a),
            Action::DecTtl => dec = true,
            Action::PopMpls { .. } => pop_mpls = Some(a),
            Action::PushMpls { .. } => push_mpls = Some(a),
            Action::DecMplsTtl => dec_mpls = true,
            Action::Group(_) => group = Some(a),
            Action::Output(_)
            | Action::InPort
            | Action::Flood
            | Action::All
            | Action::Normal
            | Action::Controller { .. } => output = Some(a),
            _ => {
                let slot = |x: &Action| match x {
                    Action::SetField { field, .. } => Some((0, *field)),
                    Action::Move { dst, .. } => Some((0, dst.field)),
                    Action::SetVlanVid { .. } => Some((1, Field::VlanTci)),
                    Action::SetVlanPcp { .. } => Some((2, Field::VlanTci)),
                    Action::SetMplsTtl(_) => Some((0, Field::MplsTtl)),
                    _ => None,
                };
                match sets.iter().position(|x| slot(x) == slot(&a)) {
                    Some(i) => sets[i] = a,
                    None => sets.push(a),
                }
            }
        }
    }
    let mut out = Vec::new();
    if pop {
        out.push(Action::PopVlan);
    }
    out.extend(pop_mpls);
    out.extend(push_mpls);
    out.extend(push);
    if dec {
        out.push(Action::DecTtl);
    }
    if dec_mpls {
        out.push(Action::DecMplsTtl);
    }
    out.extend(sets);
    out.extend(group.or(output));
    out
}

/// A group bucket's actions as the action set they make (Open vSwitch
/// runs a bucket through `ofpacts_execute_action_set`): one slot for each
/// of pop_vlan, pop_mpls, push_mpls, push_vlan, dec_ttl, dec_mpls_ttl (the
/// last written wins), all set-type actions in order, and one terminal: a
/// group, or else an output (a `controller` without options counts), or
/// else a resubmit, or else a `ct`. No terminal: nothing runs. Anything
/// else is dropped.
fn as_action_set(bucket: &[Action]) -> Vec<Action> {
    let mut single: [Option<&Action>; 6] = [None; 6];
    let mut sets = Vec::new();
    let mut terminal: [Option<&Action>; 4] = [None; 4];
    for a in bucket {
        let slot = match a {
            Action::PopVlan => Some(0),
            Action::PopMpls { .. } => Some(1),
            Action::PushMpls { .. } => Some(2),
            Action::PushVlan { .. } => Some(3),
            Action::DecTtl => Some(4),
            Action::DecMplsTtl => Some(5),
            _ => None,
        };
        if let Some(i) = slot {
            single[i] = Some(a);
            continue;
        }
        let end = match a {
            Action::Group(_) => Some(0),
            Action::Output(_) | Action::InPort | Action::Flood | Action::All | Action::Normal => Some(1),
            Action::Controller { reason: kairo_odp::ControllerReason::Action, id: 0, userdata, .. }
                if userdata.is_empty() =>
            {
                Some(1)
            }
            Action::Resubmit { .. } => Some(2),
            Action::Ct(_) => Some(3),
            _ => None,
        };
        if let Some(i) = end {
            terminal[i] = Some(a);
        } else if matches!(
            a,
            Action::SetField { .. }
                | Action::SetWide { .. }
                | Action::Move { .. }
                | Action::SetVlanVid { .. }
                | Action::SetVlanPcp { .. }
                | Action::SetMplsTtl(_)
        ) {
            sets.push(a.clone());
        }
    }
    let Some(end) = terminal.into_iter().flatten().next() else { return Vec::new() };
    let mut out: Vec<Action> = single.into_iter().flatten().cloned().collect();
    out.extend(sets);
    out.push(end.clone());
    out
}

/// One packet's walk through the tables.
struct Run<'a> {
    r: &'a Reference,
    /// The packet's length on the wire.
    len: usize,
    flow: FlowKey,
    emitted: Vec<Emitted>,
    /// The action set, as written.
    set: Vec<Action>,
    lookups: u32,
    buckets: u32,
    stop: Option<Stop>,
    /// Datapath action bytes the emissions so far need (outputs, and a
    /// masked set for each header that changed since the last emission).
    bytes: usize,
    /// The headers at the last emission.
    base: FlowKey,
    /// Group liveness found so far, by (group, depth).
    live: BTreeMap<(u32, u32), bool>,
    /// Did the packet arrive with MPLS labels?
    /// It did, and a pop took it out of them: its L3 header is unknown, and
    /// whatever needs it stops the packet (Open vSwitch recirculates there;
    /// kairo does not yet).
    hidden: bool,
    /// The table, cookie and table-miss-ness of the rule whose actions run.
    ctx: (u8, u64, bool),
    /// Freezing for recirculation: what is left to do, gathered while
    /// unwinding, and the hash to take first.
    freezing: Option<(Vec<Op>, Option<DpHashing>)>,
    /// The packet has its datapath hash (this pass or an earlier one).
    hashed: bool,
    dp_hash: u64,
    /// The packet went through the tracker on an earlier pass and nothing
    /// cleared it since (only then does `ct_clear` reach the datapath).
    conntracked: bool,
    /// The push/pop stack, bottom first (ovs-actions(7): a copy for each
    /// clone and group bucket, shared across resubmits).
    stack: Vec<u64>,
    /// The flows `learn` actions made so far.
    learned: Vec<Rule>,
    /// The connection metadata the packet has in the datapath (its ct
    /// fields; the flow's own are cleared after each `ct`).
    ct: FlowKey,
    /// Headers a `ct` NAT rewrote in the datapath: (field, value written,
    /// the flow's value then). The packet keeps the written value while
    /// the flow keeps its value then (an action that changes it is what the
    /// packet gets instead).
    nat: Vec<(Field, u128, u128)>,
    /// A clone's body froze: the packet recirculated from inside it, and
    /// nothing after the clone runs (Open vSwitch ends the translation).
    ended: bool,
}

/// What a `check_pkt_larger` goes on with (twice): the rest of an action
/// list, then a rule's remaining instructions if it is the rule's own; or
/// the rest of a frozen state's ops.
#[derive(Clone, Copy)]
enum Then<'l> {
    List(&'l [Action], Option<&'l kairo_ofproto::Instructions>),
    Ops(&'l [Op]),
}

/// A datapath `hash` action's algorithm and basis.
type DpHashing = (HashAlg, u32);

/// Hash values a select group spreads over in the datapath, and which
/// bucket each picks (Webster's apportionment of the weights), or `None`
/// where the group is hashed in translation: no method and more than 64
/// values needed, `dp_hash` and more than 256, or `hash`.
fn dp_hash_buckets(g: &Group) -> Option<(HashAlg, u32, Vec<usize>)> {
    let (most, alg, basis) = match g.selection {
        Selection::Hash => return None,
        Selection::Default => (64u64, HashAlg::SymL4, 0),
        Selection::DpHash { param } => (256, HashAlg::from_param((param >> 32) as u32), param as u32),
    };
    let weights: Vec<u64> = g.buckets.iter().map(|b| u64::from(b.weight)).collect();
    let total: u64 = weights.iter().sum();
    let least = weights.iter().copied().filter(|&w| w > 0).min()?;
    let mut values = 16;
    while values < total.div_ceil(least) {
        values *= 2;
    }
    if values > most {
        return None;
    }
    let mut taken = vec![0u64; weights.len()];
    let mut map = Vec::new();
    for _ in 0..values {
        // The highest weight / (2 * taken + 1); the first on ties.
        let mut best = 0;
        for i in 1..weights.len() {
            if weights[i] * (2 * taken[best] + 1) > weights[best] * (2 * taken[i] + 1) {
                best = i;
            }
        }
        taken[best] += 1;
        map.push(best);
    }
    Some((alg, basis, map))
}

const VLAN_CFI: u64 = 0x1000;

/// A field's value, the whole 128 bits of a wide one named by its high half.
fn wide_get(k: &FlowKey, f: Field) -> u128 {
    if f.wide().is_some() {
        k.get_wide(f)
    } else {
        u128::from(k.get(f))
    }
}

fn wide_set(k: &mut FlowKey, f: Field, v: u128) {
    if f.wide().is_some() {
        k.set_wide(f, v)
    } else {
        k.set(f, v as u64)
    }
}
const MPLS_BOS: u32 = 0x100;

fn is_mpls(eth_type: u64) -> bool {
    eth_type == 0x8847 || eth_type == 0x8848
}

/// Label stack entry `i` of `k` (label << 12 | tc << 9 | bos << 8 | ttl).
fn lse(k: &FlowKey, i: usize) -> u32 {
    match i {
        0 => {
            (k.get(Field::MplsLabel) << 12
                | k.get(Field::MplsTc) << 9
                | k.get(Field::MplsBos) << 8
                | k.get(Field::MplsTtl)) as u32
        }
        1 => k.get(Field::MplsLse1) as u32,
        _ => k.get(Field::MplsLse2) as u32,
    }
}

fn set_lse(k: &mut FlowKey, i: usize, v: u32) {
    let v = u64::from(v);
    match i {
        0 => {
            k.set(Field::MplsLabel, v >> 12);
            k.set(Field::MplsTc, (v >> 9) & 7);
            k.set(Field::MplsBos, (v >> 8) & 1);
            k.set(Field::MplsTtl, v & 0xff);
        }
        1 => k.set(Field::MplsLse1, v),
        _ => k.set(Field::MplsLse2, v),
    }
}

const MPLS_FIELDS: [Field; 6] =
    [Field::MplsLabel, Field::MplsTc, Field::MplsBos, Field::MplsTtl, Field::MplsLse1, Field::MplsLse2];

/// The fields a packet shows: nothing under MPLS labels, and no labels
/// without an MPLS ethertype.
fn shown(k: &FlowKey) -> FlowKey {
    let mut v = packet_fields(k);
    if is_mpls(k.get(Field::EthType)) {
        for f in Field::all().filter(|f| f.in_packet() && f.def().stage >= kairo_flow::field::Stage::L3) {
            v.set(f, 0);
        }
    } else {
        for f in MPLS_FIELDS {
            v.set(f, 0);
        }
    }
    v
}

impl Run<'_> {
    fn halted(&self) -> bool {
        self.stop.is_some() || self.ended
    }

    /// The bounds translation checks before each lookup and group.
    fn within_bounds(&mut self, depth: u32) -> bool {
        if self.halted() {
            return false;
        }
        if depth >= MAX_DEPTH {
            self.stop = Some(Stop::Error);
            return false;
        }
        if self.bytes > MAX_ACTION_BYTES {
            self.stop = Some(Stop::TooManyActions);
            return false;
        }
        true
    }

    fn emit(&mut self, port: u32) {
        if self.r.port_bit(port, OFPPC_NO_FWD) {
            return; // nothing goes out of a no-forward port
        }
        let mut now = self.sync();
        self.bytes += if port == u32::MAX { 64 } else { 8 };
        if port == RECIRC_PORT {
            // A recirculated packet keeps its connection metadata.
            for f in CT_FIELDS {
                now.set(f, self.ct.get(f));
            }
        }
        self.emitted.push((port, now));
    }

    /// Brings the packet up to the flow (what the datapath's actions have
    /// done to it by now, as an output or a push onto an unlabelled packet
    /// sees it) and returns it.
    fn sync(&mut self) -> FlowKey {
        let mut now = shown(&self.flow);
        // A datapath changes the ethertype only by pushing or popping a
        // label: where the stacks at the last emission and now differ at
        // most in the top entry, none is pushed or popped (Open vSwitch
        // elides a push and pop that cancel, whatever they set).
        let stack = |k: &FlowKey| -> Vec<u32> {
            let n = Run::labels_of(k);
            (0..n).map(|i| lse(k, i)).collect()
        };
        let (b, f) = (stack(&self.base), stack(&self.flow));
        if is_mpls(now.get(Field::EthType)) {
            // The flow's entries replace the packet's on top; what the
            // packet had below its own entries stays below (pushes drop the
            // third, pops bring up zeros).
            for i in 0..3usize {
                let v = match i.checked_sub(f.len()) {
                    None => f[i],
                    Some(j) if b.len() + j < 3 => lse(&self.base, b.len() + j),
                    Some(_) => 0,
                };
                set_lse(&mut now, i, v);
            }
        }
        if b.len() == f.len() && b.get(1..) == f.get(1..) {
            now.set(Field::EthType, self.base.get(Field::EthType));
            if !is_mpls(now.get(Field::EthType)) {
                // Headers that were hidden under labels show again.
                let shown_flow = packet_fields(&self.flow);
                for fd in Field::all().filter(|x| x.in_packet() && x.def().stage >= kairo_flow::field::Stage::L3) {
                    now.set(fd, shown_flow.get(fd));
                }
            }
        }
        // NAT rewrites the flow has not overwritten since.
        let flow = self.flow;
        self.nat.retain(|(f, _, then)| wide_get(&flow, *f) == *then);
        for (f, v, _) in &self.nat {
            wide_set(&mut now, *f, *v);
        }
        // What the packet shows under the ethertype it leaves with.
        let now = shown(&now);
        // A set action per changed header group (Ethernet, VLAN, IPv4, L4,
        // ICMP, ARP): what the datapath needs to bring the packet here.
        self.bytes += headers_changed(&self.base, &now);
        self.base = now;
        now
    }

    /// A lookup in table `t` at nesting `depth`.
    fn table(&mut self, t: u8, depth: u32) {
        if self.hidden {
            self.stop = Some(Stop::Error);
            return;
        }
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            self.stop = Some(Stop::Error);
            return;
        }
        if !self.within_bounds(depth) {
            return;
        }
        let flow = self.flow;
        let hit = self.r.tables.get(&t).and_then(|rules| conj::lookup(rules, &flow).cloned());
        match hit {
            Some(rule) => {
                let inst = &rule.inst;
                let outer = self.ctx;
                self.ctx = (t, rule.cookie, rule.priority == 0 && rule.m.mask().is_zero());
                let done = self.action_list_of(&inst.apply, depth, t, Some(inst));
                self.rest_of_rule(inst, done, depth);
                self.ctx = outer;
                if let Some((ops, _)) = self.freezing.as_mut() {
                    ops.push(Op::Rule { table: outer.0, cookie: outer.1, miss: outer.2 });
                }
            }
            None => {
                if let MissBehavior::Continue(n) = self.r.miss(t) {
                    self.table(n, depth);
                }
            }
        }
    }

    /// The instructions of the running rule (`self.ctx`) after its
    /// apply-actions, which ran to their end (`done`) or not.
    fn rest_of_rule(&mut self, inst: &kairo_ofproto::Instructions, done: bool, depth: u32) {
        let more =
            inst.clear_actions || !inst.write.is_empty() || inst.write_metadata.is_some() || inst.goto_table.is_some();
        if done && more && self.hidden && self.freezing.is_none() {
            // The instructions after a pop, too, wait for the packet
            // to be parsed again.
            let (t, cookie, miss) = self.ctx;
            self.freezing = Some((vec![Op::Rule { table: t, cookie, miss }], None));
        }
        if let Some((ops, _)) = self.freezing.as_mut() {
            if inst.clear_actions {
                ops.push(Op::ClearActions);
            }
            if !inst.write.is_empty() {
                ops.push(Op::WriteActions(inst.write.clone()));
            }
            if let Some((value, mask)) = inst.write_metadata {
                ops.push(Op::WriteMetadata { value, mask });
            }
            if let Some(g) = inst.goto_table {
                ops.push(Op::Goto(g));
            }
        } else if done {
            if inst.clear_actions {
                self.set.clear();
            }
            self.set.extend(inst.write.iter().cloned());
            if let Some((v, m)) = inst.write_metadata {
                self.flow.set_masked(Field::Metadata, v, m);
            }
            if let Some(g) = inst.goto_table {
                self.table(g, depth);
            }
        }
    }

    /// Runs a frozen state's ops; an action that ends its list skips the
    /// rest of its rule's ops.
    fn ops(&mut self, ops: &[Op]) {
        let mut skip = false;
        for (i, op) in ops.iter().enumerate() {
            if self.halted() {
                return;
            }
            if skip && !matches!(op, Op::Rule { .. }) {
                continue;
            }
            skip = false;
            if let (Op::Act(Action::CheckPktLarger { len, dst }), false) = (op, self.hidden) {
                return self.larger(*len, *dst, Then::Ops(&ops[i + 1..]), 0, self.ctx.0);
            }
            match op {
                Op::Rule { table, cookie, miss } => self.ctx = (*table, *cookie, *miss),
                Op::Act(a) => skip = !self.action(a, 0, self.ctx.0),
                Op::ClearActions => self.set.clear(),
                Op::WriteActions(w) => self.set.extend(w.iter().cloned()),
                Op::WriteMetadata { value, mask } => self.flow.set_masked(Field::Metadata, *value, *mask),
                Op::Goto(t) => self.table(*t, 0),
            }
            if let Some((more, _)) = self.freezing.as_mut() {
                more.extend(ops[i + 1..].iter().cloned());
                return;
            }
        }
    }

    /// Ends a freeze, if one is on: the packet leaves for the datapath
    /// again (hashed first if asked) under the id the frozen state has.
    fn finish_freezing(&mut self) {
        let Some((ops, hash)) = self.freezing.take() else { return };
        self.freeze(ops, hash, 0);
    }

    /// The packet leaves for the datapath again under the id of the state
    /// made of `ops` (or, with none, a lookup in `table`), hashed first if
    /// asked.
    fn freeze(&mut self, ops: Vec<Op>, hash: Option<DpHashing>, table: u8) {
        let mut tidy: Vec<Op> = Vec::new();
        for op in ops {
            if matches!(op, Op::Rule { .. }) && matches!(tidy.last(), Some(Op::Rule { .. })) {
                tidy.pop();
            }
            tidy.push(op);
        }
        if matches!(tidy.last(), Some(Op::Rule { .. })) {
            tidy.pop();
        }
        let mut metadata = [0; FROZEN_FIELDS.len()];
        for (m, f) in metadata.iter_mut().zip(FROZEN_FIELDS) {
            *m = self.flow.get(f);
        }
        let state = FrozenState {
            ops: tidy,
            table,
            action_set: ordered(self.set.clone()),
            metadata,
            hashed: self.hashed || hash.is_some(),
            conntracked: self.conntracked,
            stack: self.stack.clone(),
        };
        // A state the translator never froze has no id: u32::MAX names none.
        let id = self.r.recircs.id_of(&state).unwrap_or(u32::MAX);
        self.emit(RECIRC_PORT);
        self.bytes += if hash.is_some() { 12 } else { 0 };
        if let Some((_, k)) = self.emitted.last_mut() {
            let mut dp_hash = self.dp_hash;
            if let Some((alg, basis)) = hash {
                dp_hash = u64::from(kairo_odp::dp_hash(alg, basis, k));
            }
            k.set(Field::RecircId, u64::from(id));
            k.set(Field::DpHash, dp_hash);
        }
    }

    /// Runs a list; false if it ended early (dec_ttl at the end of a TTL).
    fn action_list(&mut self, list: &[Action], depth: u32, table: u8) -> bool {
        self.action_list_of(list, depth, table, None)
    }

    /// [`Run::action_list`] of a rule's own apply-actions (`inst`: its
    /// instructions, which a `check_pkt_larger` in it goes on with).
    fn action_list_of(
        &mut self,
        list: &[Action],
        depth: u32,
        table: u8,
        inst: Option<&kairo_ofproto::Instructions>,
    ) -> bool {
        for (i, a) in list.iter().enumerate() {
            if let Some((ops, _)) = self.freezing.as_mut() {
                ops.extend(list[i..].iter().cloned().map(Op::Act));
                return false;
            }
            if self.halted() {
                return false;
            }
            if let (Action::CheckPktLarger { len, dst }, false) = (a, self.hidden) {
                self.larger(*len, *dst, Then::List(&list[i + 1..], inst), depth, table);
                return false;
            }
            if !self.action(a, depth, table) {
                return false;
            }
        }
        !self.halted()
    }

    /// `check_pkt_larger(size)->dst`, then `then`: Open vSwitch 3.1
    /// translates what follows twice, for a longer packet (the bit 1) and
    /// for a shorter one (0), each ended by the action set and its own
    /// freeze; the datapath runs the one the packet's length picks, on a
    /// copy. Both runs are made here too (the second starts from what the
    /// first left of the action set and the stack, as there: one copy of
    /// them serves both), and the emissions of the one this packet's
    /// length picks are kept. Afterwards the packet, the flow, the action
    /// set and the stack are as before; the list ends, and if the first run
    /// froze nothing after runs at all.
    fn larger(&mut self, size: u16, dst: kairo_ofproto::SubField, then: Then<'_>, depth: u32, table: u8) {
        self.sync();
        let saved = (self.flow, self.hidden, self.conntracked, self.base, self.ct, self.nat.clone());
        let (set, stack) = (self.set.clone(), self.stack.clone());
        let mark = self.emitted.len();
        let mut runs: Vec<Vec<Emitted>> = Vec::new();
        let mut froze = false;
        for bit in [1u64, 0] {
            if bit == 0 {
                froze = self.ended;
                self.ended = false;
                (self.flow, self.hidden, self.conntracked, self.base, self.ct, self.nat) = saved.clone();
                if self.stop.is_some() {
                    break;
                }
            }
            if self.prereq(dst.field) {
                self.flow.set_masked(dst.field, bit << dst.ofs, dst.mask());
            }
            match then {
                Then::List(list, inst) => {
                    let done = self.action_list_of(list, depth, table, inst);
                    if let Some(inst) = inst {
                        self.rest_of_rule(inst, done, depth);
                    }
                }
                Then::Ops(ops) => self.ops(ops),
            }
            self.end_copy(depth, table);
            runs.push(self.emitted.split_off(mark));
        }
        // The datapath action's own attributes.
        self.bytes += 20;
        let longer = self.len > usize::from(size);
        let kept = if longer { runs.first() } else { runs.get(1) };
        self.emitted.extend(kept.into_iter().flatten().cloned());
        (self.flow, self.hidden, self.conntracked, self.base, self.ct, self.nat) = saved;
        (self.set, self.stack) = (set, stack);
        self.ended = froze;
    }

    /// The end of what runs on a copy (a clone's body, a list of
    /// check_pkt_larger): the action set, unless it froze; a freeze made
    /// there recirculates from there, and nothing after runs at all. The
    /// set is used up unless a freeze is pending, even where translation
    /// already ended (a freeze finished inside a clone): Open vSwitch's
    /// `xlate_action_set` clears it whenever it is not freezing, so the
    /// second list of a check_pkt_larger, which shares the first's copy,
    /// then sees none.
    fn end_copy(&mut self, depth: u32, table: u8) {
        if self.freezing.is_none() && self.stop.is_none() {
            let set = std::mem::take(&mut self.set);
            if !self.ended {
                self.action_list(&ordered(set), depth, table);
            }
        }
        if !self.halted() && self.freezing.is_some() {
            self.finish_freezing();
            self.ended = true;
        }
        self.freezing = None;
    }

    fn is_ipv4(&self) -> bool {
        self.flow.get(Field::EthType) == 0x0800
    }

    fn is_ipv6(&self) -> bool {
        self.flow.get(Field::EthType) == 0x86dd
    }

    fn prereq(&self, f: Field) -> bool {
        let ip = self.is_ipv4() || self.is_ipv6();
        let proto = self.flow.get(Field::IpProto);
        // ICMPv6 neighbour discovery: the type in tp_src, the code (0) in tp_dst.
        let nd = |types: &[u64]| {
            self.is_ipv6()
                && proto == 58
                && self.flow.get(Field::TpDst) == 0
                && types.contains(&self.flow.get(Field::TpSrc))
        };
        match f.def().prereq {
            Prereq::None => true,
            Prereq::Ipv4 => self.is_ipv4(),
            Prereq::Ipv6 => self.is_ipv6(),
            Prereq::Ip => ip,
            Prereq::Arp => self.flow.get(Field::EthType) == 0x0806,
            Prereq::L4 => ip && matches!(proto, 6 | 17 | 132),
            Prereq::Tcp => ip && proto == 6,
            Prereq::Icmp => self.is_ipv4() && proto == 1,
            Prereq::Icmpv6 => self.is_ipv6() && proto == 58,
            Prereq::Nd => nd(&[135, 136]),
            Prereq::NdSolicit => nd(&[135]),
            Prereq::NdAdvert => nd(&[136]),
            Prereq::Mpls => is_mpls(self.flow.get(Field::EthType)),
            // A tracked packet of a valid connection: new, est or rpl.
            Prereq::Ct => self.flow.get(Field::CtState) & 0x0b != 0,
        }
    }

    /// The label stack entries the packet has: to the bottom of the stack,
    /// else the non-zero ones of the three a key holds.
    fn labels(&self) -> usize {
        Run::labels_of(&self.flow)
    }

    fn labels_of(k: &FlowKey) -> usize {
        if !is_mpls(k.get(Field::EthType)) {
            return 0;
        }
        let mut n = 0;
        for i in 0..3 {
            let e = lse(k, i);
            if e & MPLS_BOS != 0 {
                return i + 1;
            }
            if e != 0 {
                n += 1;
            }
        }
        n
    }

    /// `ct(...)`: the packet's connection metadata in the datapath becomes
    /// what a tracker reports for a new connection (`trk|new`, the zone,
    /// the mark and label bits the nested actions set), a NAT rewrites the
    /// packet to its range's first address and port; with `table=` a copy
    /// goes round again to resume there. The flow itself ends untracked.
    fn conntrack(&mut self, ct: &kairo_ofproto::Ct) {
        // The connection tracker sees the packet as the actions so far made
        // it: what they did reaches it first (Open vSwitch commits there,
        // so a label pushed before and popped after is not elided).
        self.sync();
        let zone = match ct.zone {
            kairo_ofproto::CtZone::Imm(z) => u64::from(z),
            kairo_ofproto::CtZone::Field(sf) => (self.flow.get(sf.field) & sf.mask()) >> sf.ofs,
        };
        // The nested actions run on a copy: what they write goes to the connection.
        let mut scratch = self.flow;
        let mut written = FlowKey::ZERO;
        for a in &ct.exec {
            match a {
                Action::SetField { field, value, mask } => {
                    scratch.set_masked(*field, *value, *mask);
                    written.set(*field, written.get(*field) | mask);
                }
                Action::SetWide { field, value, mask } => {
                    let old = scratch.get_wide(*field);
                    scratch.set_wide(*field, (old & !mask) | (value & mask));
                    written.set_wide(*field, written.get_wide(*field) | mask);
                }
                Action::Move { src, dst } => {
                    let bits = (scratch.get(src.field) & src.mask()) >> src.ofs;
                    scratch.set_masked(dst.field, bits << dst.ofs, dst.mask());
                    written.set(dst.field, written.get(dst.field) | dst.mask());
                }
                _ => {}
            }
        }
        for f in [Field::CtMark, Field::CtLabelHi, Field::CtLabelLo] {
            let m = written.get(f);
            self.ct.set(f, (self.ct.get(f) & !m) | (scratch.get(f) & m));
        }
        self.ct.set(Field::CtState, kairo_odp::ct::DEFAULT_NEXT_STATE);
        self.ct.set(Field::CtZone, zone);
        self.bytes += 40;
        if let Some(kairo_ofproto::Nat { kind: Some(kind), addrs: Some(addrs), ports, .. }) = ct.nat {
            let src = kind == kairo_ofproto::NatKind::Src;
            let eth = self.flow.get(Field::EthType);
            let addr = match addrs {
                kairo_ofproto::NatAddrs::V4(lo, _) if eth == 0x0800 => {
                    Some((if src { Field::IpSrc } else { Field::IpDst }, u128::from(lo)))
                }
                kairo_ofproto::NatAddrs::V6(lo, _) if eth == 0x86dd => {
                    Some((if src { Field::Ipv6SrcHi } else { Field::Ipv6DstHi }, lo))
                }
                _ => None,
            };
            if let Some((f, v)) = addr {
                self.rewrite(f, v);
                let l4 = matches!(self.flow.get(Field::IpProto), 6 | 17 | 132);
                if let Some((p, _)) = ports.filter(|_| l4) {
                    self.rewrite(if src { Field::TpSrc } else { Field::TpDst }, u128::from(p));
                }
            }
        }
        if let Some(t) = ct.table {
            self.conntracked = true;
            self.freeze(Vec::new(), None, t);
        }
        self.conntracked = false;
        for f in CT_FIELDS {
            self.flow.set(f, 0);
        }
    }

    /// The datapath rewrites header `f` of the packet to `v` (a NAT).
    fn rewrite(&mut self, f: Field, v: u128) {
        let then = wide_get(&self.flow, f);
        self.nat.retain(|(g, _, _)| *g != f);
        self.nat.push((f, v, then));
    }

    /// Stops the packet: what comes needs headers the flow does not have.
    fn blind(&mut self) -> bool {
        self.stop = Some(Stop::Error);
        false
    }

    fn action(&mut self, a: &Action, depth: u32, table: u8) -> bool {
        let in_port = self.flow.get(Field::InPort);
        let l3 = |f: Field| f.def().stage >= kairo_flow::field::Stage::L3;
        if self.hidden {
            // After a pop, Open vSwitch lets only outputs, groups and
            // rewrites below L3 (VLAN, Ethernet, registers) run before the
            // packet is parsed again; the rest runs after a recirculation.
            let waits = match a {
                Action::Output(_)
                | Action::InPort
                | Action::Flood
                | Action::All
                | Action::Normal
                | Action::OutputReg { .. }
                | Action::Group(_)
                | Action::SetVlanVid { .. }
                | Action::SetVlanPcp { .. } => false,
                Action::SetField { field, .. } => l3(*field),
                _ => true,
            };
            if waits {
                let (t, cookie, miss) = self.ctx;
                self.freezing = Some((vec![Op::Rule { table: t, cookie, miss }, Op::Act(a.clone())], None));
                return true;
            }
        }
        match a {
            Action::PushMpls { ethertype } => {
                let n = self.labels();
                if n >= 3 {
                    return self.blind();
                }
                if n == 0 {
                    // Onto a packet without labels: what was done so far
                    // reaches the packet first (Open vSwitch commits there).
                    self.sync();
                }
                let top = if n == 0 {
                    let ip = matches!(self.flow.get(Field::EthType), 0x0800 | 0x86dd);
                    let label = if self.flow.get(Field::EthType) == 0x86dd { 2 } else { 0 };
                    let (tc, ttl) = if ip {
                        let t = self.flow.get(Field::IpTtl);
                        (self.flow.get(Field::IpDscp) & 7, if t == 0 { 64 } else { t })
                    } else {
                        (0, 64)
                    };
                    (label << 12 | tc << 9 | 1 << 8 | ttl) as u32
                } else {
                    for i in (1..=n).rev() {
                        let below = lse(&self.flow, i - 1);
                        set_lse(&mut self.flow, i, below);
                    }
                    lse(&self.flow, 1) & !MPLS_BOS
                };
                set_lse(&mut self.flow, 0, top);
                self.flow.set(Field::EthType, u64::from(*ethertype));
            }
            Action::Ct(ct) => self.conntrack(ct),
            Action::CtClear => {
                // Only a tracked packet is cleared; otherwise nothing is,
                // not even the flow's ct fields (which a clone put back).
                if std::mem::take(&mut self.conntracked) {
                    for f in CT_FIELDS {
                        self.ct.set(f, 0);
                        self.flow.set(f, 0);
                    }
                    self.bytes += 4;
                }
            }
            Action::Conjunction { .. } | Action::Note(_) => {}
            Action::CheckPktLarger { len, dst } => {
                self.larger(*len, *dst, Then::List(&[], None), depth, table);
                return false;
            }
            Action::PopMpls { ethertype } => {
                let n = self.labels();
                if n == 3 && lse(&self.flow, 2) & MPLS_BOS == 0 {
                    return self.blind();
                }
                if n > 0 {
                    for i in 1..n {
                        let v = lse(&self.flow, i);
                        set_lse(&mut self.flow, i - 1, v);
                    }
                    set_lse(&mut self.flow, n - 1, 0);
                    self.flow.set(Field::EthType, u64::from(*ethertype));
                    if !is_mpls(u64::from(*ethertype)) {
                        self.hidden = true;
                    }
                }
            }
            Action::SetMplsTtl(t) => {
                if is_mpls(self.flow.get(Field::EthType)) {
                    self.flow.set(Field::MplsTtl, u64::from(*t));
                }
            }
            Action::DecMplsTtl => {
                if is_mpls(self.flow.get(Field::EthType)) {
                    let ttl = self.flow.get(Field::MplsTtl);
                    if ttl > 1 {
                        self.flow.set(Field::MplsTtl, ttl - 1);
                    } else {
                        self.emit(u32::MAX);
                        return false;
                    }
                }
            }
            Action::Output(p) => {
                if u64::from(*p) != in_port {
                    self.emit(*p);
                }
            }
            Action::InPort => self.emit(in_port as u32),
            Action::Clone(body) => {
                // ovs-actions(7): the body on a copy of the packet and the
                // pipeline's state, the copy's action set run at its end;
                // then everything as it was (a freeze inside recirculates
                // on its own, as a bucket's does).
                // (Whether the packet is tracked is not put back: a ct_clear
                // in the body cleared the packet itself.)
                let saved = (self.flow, self.hidden, self.set.clone());
                let stack = self.stack.clone();
                self.action_list(body, depth, table);
                self.end_copy(depth, table);
                (self.flow, self.hidden, self.set) = saved;
                self.stack = stack;
                return !self.halted();
            }
            Action::OutputReg { src, max_len } => {
                // The field holds an OpenFlow 1.0 port number (ovs-actions(7)).
                let to = match (self.flow.get(src.field) & src.mask()) >> src.ofs {
                    0xfff8 => Action::InPort,
                    0xfff9 => Action::Resubmit { port: None, table: Some(0) },
                    0xfffb => Action::Flood,
                    0xfffc => Action::All,
                    0xfffd => Action::controller(*max_len),
                    0xfffa => Action::Normal,
                    p @ (1..=0xfff7 | 0xfffe) => Action::Output(p as u32),
                    _ => return true, // NONE, 0, beyond 16 bits
                };
                return self.action(&to, depth, table);
            }
            Action::Flood | Action::All => {
                // ALL reaches no-flood ports too.
                let all = matches!(a, Action::All);
                for p in self.r.ports.clone() {
                    if u64::from(p) != in_port && (all || !self.r.port_bit(p, OFPPC_NO_FLOOD)) {
                        self.emit(p);
                    }
                }
            }
            Action::Controller { .. } => self.emit(u32::MAX),
            Action::Normal => self.normal(),
            Action::Learn(l) => self.learn(l),
            // It cuts its rule's timeouts once packets carry FIN or RST;
            // the packet is left alone.
            Action::FinTimeout { .. } => {}
            Action::SetField { field, value, mask } => {
                if self.prereq(*field) {
                    self.flow.set_masked(*field, *value, *mask);
                }
            }
            Action::SetWide { field, value, mask } => {
                if self.prereq(*field) {
                    let old = self.flow.get_wide(*field);
                    self.flow.set_wide(*field, (old & !mask) | (value & mask));
                }
            }
            Action::Move { src, dst } => {
                if self.prereq(src.field) && self.prereq(dst.field) {
                    let bits = (self.flow.get(src.field) & src.mask()) >> src.ofs;
                    self.flow.set_masked(dst.field, bits << dst.ofs, dst.mask());
                }
            }
            Action::StackPush(src) => {
                if self.stack.len() >= MAX_STACK {
                    self.stop = Some(Stop::Error);
                    return false;
                }
                self.stack.push((self.flow.get(src.field) & src.mask()) >> src.ofs);
            }
            Action::StackPop(dst) => {
                // Popping an empty stack does nothing (a stack underflow).
                if let Some(v) = self.stack.pop() {
                    if self.prereq(dst.field) {
                        let low = if dst.n_bits >= 64 { u64::MAX } else { (1u64 << dst.n_bits) - 1 };
                        self.flow.set_masked(dst.field, (v & low) << dst.ofs, dst.mask());
                    }
                }
            }
            Action::PushVlan { .. } => {
                let outer = self.flow.get(Field::VlanTci);
                self.flow.set(Field::VlanTciInner, outer);
                self.flow.set(Field::VlanTci, VLAN_CFI);
            }
            Action::PopVlan => {
                let inner = self.flow.get(Field::VlanTciInner);
                self.flow.set(Field::VlanTci, inner);
                self.flow.set(Field::VlanTciInner, 0);
            }
            Action::SetVlanVid { vid, push } => {
                let tci = self.flow.get(Field::VlanTci);
                if tci & VLAN_CFI != 0 {
                    self.flow.set(Field::VlanTci, (tci & !0xfff) | u64::from(*vid));
                } else if *push {
                    self.flow.set(Field::VlanTci, VLAN_CFI | u64::from(*vid));
                }
            }
            Action::SetVlanPcp { pcp, push } => {
                let tci = self.flow.get(Field::VlanTci);
                if tci & VLAN_CFI != 0 {
                    self.flow.set(Field::VlanTci, (tci & 0x1fff) | u64::from(*pcp) << 13);
                } else if *push {
                    self.flow.set(Field::VlanTci, VLAN_CFI | u64::from(*pcp) << 13);
                }
            }
            Action::DecTtl => {
                if self.is_ipv4() || self.is_ipv6() {
                    let ttl = self.flow.get(Field::IpTtl);
                    if ttl > 1 {
                        self.flow.set(Field::IpTtl, ttl - 1);
                    } else {
                        self.emit(u32::MAX);
                        return false;
                    }
                }
            }
            Action::Resubmit { port, table: target } => {
                let t = target.unwrap_or(table);
                let deeper = depth + u32::from(t <= table);
                let saved = self.flow.get(Field::InPort);
                if let Some(p) = port {
                    self.flow.set(Field::InPort, u64::from(*p));
                }
                self.table(t, deeper);
                if port.is_some() {
                    self.flow.set(Field::InPort, saved);
                }
            }
            Action::Group(g) => self.group(*g, depth, table),
        }
        true
    }

    fn port_live(&self, p: u32) -> bool {
        !self.r.down.contains(&p) && (self.r.ports.is_empty() || self.r.ports.contains(&p))
    }

    fn bucket_live(&mut self, b: &kairo_ofproto::Bucket, depth: u32) -> bool {
        if b.watch_port.is_none() && b.watch_group.is_none() {
            return true;
        }
        if b.watch_port.is_some_and(|p| self.port_live(p)) {
            return true;
        }
        let Some(g) = b.watch_group.filter(|_| depth < MAX_DEPTH) else { return false };
        // Remembered by (group, depth): a chain of groups watching each
        // other would otherwise cost buckets^depth.
        if let Some(&v) = self.live.get(&(g, depth + 1)) {
            return v;
        }
        let r = self.r;
        let v = r.groups.get(&g).is_some_and(|grp| grp.buckets.iter().any(|x| self.bucket_live(x, depth + 1)));
        self.live.insert((g, depth + 1), v);
        v
    }

    fn group(&mut self, id: u32, depth: u32, table: u8) {
        if !self.within_bounds(depth) {
            return;
        }
        let Some(g) = self.r.groups.get(&id).cloned() else { return };
        let chosen: Vec<usize> = match g.ty {
            GroupType::All => (0..g.buckets.len()).collect(),
            GroupType::Indirect => (0..g.buckets.len().min(1)).collect(),
            GroupType::FastFailover => g.buckets.iter().position(|b| self.bucket_live(b, depth)).into_iter().collect(),
            GroupType::Select if self.hidden => {
                // Chosen after the packet is parsed again.
                let (t, cookie, miss) = self.ctx;
                self.freezing = Some((vec![Op::Rule { table: t, cookie, miss }, Op::Act(Action::Group(id))], None));
                return;
            }
            GroupType::Select if dp_hash_buckets(&g).is_some() => {
                let Some((alg, basis, map)) = dp_hash_buckets(&g) else { return };
                if !self.hashed {
                    let (t, cookie, miss) = self.ctx;
                    let ops = vec![Op::Rule { table: t, cookie, miss }, Op::Act(Action::Group(id))];
                    self.freezing = Some((ops, Some((alg, basis))));
                    return;
                }
                let n = map.len();
                let h = self.flow.get(Field::DpHash) as usize;
                (0..n).map(|i| map[(h + i) % n]).find(|&b| self.bucket_live(&g.buckets[b], depth)).into_iter().collect()
            }
            GroupType::Select => {
                let live: Vec<usize> = (0..g.buckets.len())
                    .filter(|&i| g.buckets[i].weight > 0 && self.bucket_live(&g.buckets[i], depth))
                    .collect();
                if live.len() <= 1 {
                    live
                } else {
                    let h = self.hash(g.fields.as_deref());
                    let score = |i: usize| {
                        let b = &g.buckets[i];
                        let mut x = h ^ u64::from(b.id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        x ^= x >> 33;
                        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
                        x ^= x >> 33;
                        u128::from(x >> 16) * u128::from(b.weight)
                    };
                    live.into_iter().max_by_key(|&i| (score(i), std::cmp::Reverse(i))).into_iter().collect()
                }
            }
        };
        for i in chosen {
            self.buckets += 1;
            if self.buckets > MAX_BUCKETS {
                self.stop = Some(Stop::TooManyBuckets);
                return;
            }
            let saved = (self.flow, self.hidden, self.stack.clone());
            // A bucket's actions run one level deeper, on a copy of the
            // packet and the stack, for the rule (and table) that ran the group.
            self.action_list(&as_action_set(&g.buckets[i].actions), depth + 1, table);
            // A bucket that froze recirculates on its own; the group goes on.
            if !self.halted() {
                self.finish_freezing();
            }
            self.freezing = None;
            (self.flow, self.hidden, self.stack) = saved;
            if self.halted() {
                return;
            }
        }
    }

    /// The select-group hash (symmetric over address and port pairs).
    fn hash(&self, fields: Option<&[Field]>) -> u64 {
        let ports = matches!(self.flow.get(Field::IpProto), 6 | 17 | 132);
        let default: Vec<Field> = if self.is_ipv4() {
            if ports {
                vec![Field::IpSrc, Field::IpDst, Field::IpProto, Field::TpSrc, Field::TpDst]
            } else {
                vec![Field::IpSrc, Field::IpDst, Field::IpProto]
            }
        } else if self.is_ipv6() {
            // The addresses' high halves as one pair, their low halves as another.
            let mut v = vec![Field::Ipv6SrcHi, Field::Ipv6DstHi, Field::Ipv6SrcLo, Field::Ipv6DstLo, Field::IpProto];
            if ports {
                v.extend([Field::TpSrc, Field::TpDst]);
            }
            v
        } else {
            vec![Field::EthSrc, Field::EthDst, Field::EthType]
        };
        let fields = fields.unwrap_or(&default);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: u64| {
            h ^= v;
            h = h.wrapping_mul(0x100_0000_01b3);
        };
        let mut i = 0;
        while i < fields.len() {
            let f = fields[i];
            let pair = matches!(
                (f, fields.get(i + 1)),
                (Field::IpSrc, Some(Field::IpDst))
                    | (Field::Ipv6SrcHi, Some(Field::Ipv6DstHi))
                    | (Field::Ipv6SrcLo, Some(Field::Ipv6DstLo))
                    | (Field::TpSrc, Some(Field::TpDst))
                    | (Field::EthSrc, Some(Field::EthDst))
            );
            let (a, b) = if pair { (self.flow.get(f), self.flow.get(fields[i + 1])) } else { (self.flow.get(f), 0) };
            mix(a.min(b));
            mix(a.max(b));
            i += if pair { 2 } else { 1 };
        }
        h
    }
}

/// Bytes of the masked set actions that bring headers `from` to `to`: one
/// per group of headers that differs (Open vSwitch's sizes, see
/// `kairo_odp::DpAction::netlink_len`, written again here from the table).
fn headers_changed(from: &FlowKey, to: &FlowKey) -> usize {
    let differs = |fs: &[Field]| fs.iter().any(|&f| from.get(f) != to.get(f));
    let mut n = 0;
    if differs(&[Field::EthSrc, Field::EthDst]) {
        n += 32;
    }
    if differs(&[Field::VlanTci, Field::VlanTciInner]) {
        n += 12;
    }
    if differs(&MPLS_FIELDS) {
        n += 12;
    }
    if differs(&[Field::IpSrc, Field::IpDst, Field::IpDscp, Field::IpEcn, Field::IpTtl]) {
        n += 32;
    }
    if differs(&[Field::TpSrc, Field::TpDst]) {
        n += 16;
    }
    if differs(&[Field::ArpSpa, Field::ArpTpa, Field::ArpOp, Field::ArpSha, Field::ArpTha]) {
        n += 56;
    }
    n
}

/// A cache entry the reference disagrees with, and a packet that shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// The megaflow (`format_megaflow` of key and mask).
    pub megaflow: String,
    /// A packet inside it.
    pub packet: String,
    /// What the reference does with it.
    pub expected: String,
    /// What the entry's actions do with it.
    pub found: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: packet {}: expected {}, found {}", self.megaflow, self.packet, self.expected, self.found)
    }
}

fn describe(e: &[Emitted]) -> String {
    if e.is_empty() {
        return "nothing".into();
    }
    e.iter()
        .map(|(p, k)| if *p == u32::MAX { "controller".into() } else { format!("{p}: {}", kairo_flow::format_key(k)) })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Draws `samples` packets inside the megaflow (key `key`, mask `mask`):
/// the key itself, then packets with every wildcarded bit of a packet field
/// drawn (registers and metadata stay zero, as a packet enters). Half the
/// time a field's free bits take a value some rule matches it on or some
/// action writes (the places where outcomes change, which uniform bits
/// rarely hit: a TTL of 1 is 1 in 256), the rest uniformly.
pub fn packets_inside(
    reference: &Reference,
    key: &FlowKey,
    mask: &kairo_flow::FlowMask,
    samples: usize,
    rng: &mut impl Rng,
) -> Vec<FlowKey> {
    let mut out = vec![*key];
    // A recirculated packet's hash is drawn too, where the megaflow lets it.
    // So are its connection metadata.
    let recirculated = key.get(Field::RecircId) != 0;
    let drawn = |f: &Field| f.in_packet() || (recirculated && (*f == Field::DpHash || CT_FIELDS.contains(f)));
    for _ in 0..samples {
        let mut p = *key;
        for f in Field::all().filter(drawn) {
            let free = !mask.get(f);
            if free == 0 {
                continue;
            }
            let mut v = rng.gen::<u64>();
            if let Some(hs) = reference.hints.get(&f).filter(|_| rng.gen_bool(0.5)) {
                let (hv, hm) = hs[rng.gen_range(0..hs.len())];
                v = (hv & hm) | (v & !hm);
            }
            p.set(f, (key.get(f) & !free) | (v & free));
        }
        out.push(p);
    }
    out
}

/// Checks one cache entry: the packets drawn inside it leave as the
/// reference says (a megaflow the reference stops on for too many actions
/// must not exist), and learn the flows the entry says its packets learn
/// (`learned`; `None`: not checked).
pub fn check_entry(
    reference: &Reference,
    key: &FlowKey,
    mask: &kairo_flow::FlowMask,
    actions: &[kairo_odp::DpAction],
    learned: Option<&[Rule]>,
    samples: usize,
    rng: &mut impl Rng,
) -> Option<Disagreement> {
    let rules = |rs: &[Rule]| rs.iter().map(|r| format!("learn {r}")).collect::<Vec<_>>().join("; ");
    let lengths = reference.lengths().iter();
    let packets = packets_inside(reference, key, mask, samples, rng);
    for (p, &len) in packets.iter().flat_map(|p| lengths.clone().map(move |l| (p, l))) {
        let want = reference.run_len(p, len);
        let got = kairo_odp::apply_len(actions, p, len);
        let (expected, found) = match want.stop {
            Some(Stop::TooManyActions | Stop::TooManyBuckets) => {
                (Some("no megaflow (past a translation bound)".to_string()), describe(&got))
            }
            _ if want.emitted != got => (Some(describe(&want.emitted)), describe(&got)),
            _ if learned.is_some_and(|l| want.learned != l) => {
                (Some(rules(&want.learned)), rules(learned.unwrap_or_default()))
            }
            _ => (None, String::new()),
        };
        if let Some(expected) = expected {
            return Some(Disagreement {
                megaflow: kairo_flow::format_megaflow(key, mask),
                packet: if len == 0 {
                    kairo_flow::format_key(p)
                } else {
                    format!("{} of {len} bytes", kairo_flow::format_key(p))
                },
                expected,
                found,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests;
