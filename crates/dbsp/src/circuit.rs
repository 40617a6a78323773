//! The circuit: a pipeline's traversals as one DBSP query over three input
//! collections (rules, first-pass traffic, groups) and one of second-pass
//! traffic, written as joins, an aggregate and maps, so that DBSP maintains
//! its output incrementally from the inputs' deltas.
//!
//! A lookup is two equi-joins, the way a tuple-space classifier probes:
//! the states waiting at a table meet each distinct mask of that table's
//! rules (join on the table), and the masked key meets the rules with that
//! mask and value (join on table, mask and value); the highest priority,
//! then the lowest rule id, wins (`Max` per state). States no rule matched
//! take the table's miss. The rule's instructions make the next state (a
//! function of the book). Traversals go up the tables (goto_table goes to a
//! higher table), so the query is unrolled once per declared table. Groups
//! are expanded by joins on the group id, level by level.
//!
//! The output is the view: rows `(owner, slot, a, b, c)`: table steps
//! (`slot` < [`GROUP_SLOT`]: table `a`, rule version `b` or [`MISS`]), the
//! end of the pipeline ([`END_SLOT`]: action-set group `a`, output `b`), and
//! groups run ([`GROUP_SLOT`] + level: group `a`, its version or how it
//! hashes `b`, bucket `c`). Owners are first-pass flow ids, or second-pass
//! ids (from [`SECOND_PASS`] up): a group hashed in the datapath and a hash.
//!
//! Invariant: every state stream holds each (flow, step) at most once with
//! weight 1 (the traffic is a set, a state has one winner or is missed), so
//! `states - hit states` is exactly the missed states.

use dbsp::operator::Max;
use dbsp::utils::{Tup2, Tup3, Tup5, Tup6};
use dbsp::{OrdZSet, OutputHandle, RootCircuit, Stream, ZSetHandle};
use kairo_ofproto::MissBehavior;
use rustc_hash::FxHashMap;

use crate::book::{miss_next, Book, Projection, END, MISS, NONE};

/// A state: flow, step, table, key, action-set group, action-set output.
pub type State = Tup6<u64, u64, u64, Vec<u64>, u64, u64>;
/// A rule: table, order (priority above, inverted id below: `Max` wins), mask, value, version.
pub type RuleRow = Tup5<u64, u64, Vec<u64>, Vec<u64>, u64>;
/// A flow of the first pass: its id and projected key.
pub type FlowRow = Tup2<u64, Vec<u64>>;
/// A group: id, version.
pub type GroupRow = Tup2<u64, u64>;
/// Second-pass traffic: owner, group, datapath hash.
pub type PassRow = Tup3<u64, u64, u64>;
/// A row of the view.
pub type ViewRow = Tup5<u64, u64, u64, u64, u64>;

pub const END_SLOT: u64 = 1 << 20;
pub const GROUP_SLOT: u64 = 1 << 21;
/// Second-pass owners start here.
pub const SECOND_PASS: u64 = 1 << 62;
/// Levels of group chaining expanded (OF-DPA chains three: ECMP, L3
/// unicast, L2 interface).
pub const GROUP_LEVELS: usize = 4;

/// A rule's order key: higher priority first, then lower id.
pub fn order(priority: u16, id: u64) -> u64 {
    (u64::from(priority) << 48) | ((1u64 << 48) - 1 - (id & ((1u64 << 48) - 1)))
}

pub struct Handles {
    pub rules: ZSetHandle<RuleRow>,
    pub flows: ZSetHandle<FlowRow>,
    pub groups: ZSetHandle<GroupRow>,
    pub second: ZSetHandle<PassRow>,
    pub view: OutputHandle<OrdZSet<ViewRow>>,
}

/// Builds the query: `first` is the table traversals start at, `stages`
/// how many lookups it unrolls (the declared tables), `miss` each table's
/// miss behaviour.
pub fn build(
    c: &mut RootCircuit,
    book: Book,
    proj: Projection,
    first: u8,
    stages: usize,
    miss: FxHashMap<u8, MissBehavior>,
) -> Handles {
    let (rules, rules_h) = c.add_input_zset::<RuleRow>();
    let (flows, flows_h) = c.add_input_zset::<FlowRow>();
    let (groups, groups_h) = c.add_input_zset::<GroupRow>();
    let (second, second_h) = c.add_input_zset::<PassRow>();

    // Each table's distinct masks, and its rules by (table, mask, value).
    let masks = rules.map(|r| Tup2(r.0, r.2.clone())).distinct().map_index(|m| (m.0, m.1.clone()));
    let by_tuple = rules.map_index(|r| (Tup3(r.0, r.2.clone(), r.3.clone()), Tup2(r.1, r.4)));

    let first = u64::from(first);
    let mut states: Stream<RootCircuit, OrdZSet<State>> =
        flows.map(move |f| Tup6(f.0, 0u64, first, f.1.clone(), NONE, NONE));
    let mut rows: Vec<Stream<RootCircuit, OrdZSet<ViewRow>>> = Vec::new();
    let mut ended: Vec<Stream<RootCircuit, OrdZSet<State>>> = Vec::new();
    for _ in 0..stages {
        let probes = states.map_index(|s| (s.2, s.clone())).join_index(&masks, |t, s, m| {
            let k: Vec<u64> = s.3.iter().zip(m.iter()).map(|(a, b)| a & b).collect();
            Some((Tup3(*t, m.clone(), k), s.clone()))
        });
        let best = probes.join_index(&by_tuple, |_, s, r| Some((s.clone(), *r))).aggregate(Max);
        let missed = states.minus(&best.map(|(s, _)| s.clone()));
        rows.push(best.map(|(s, r)| Tup5(s.0, s.1, s.2, r.1, 0u64)));
        rows.push(missed.map(|s| Tup5(s.0, s.1, s.2, MISS, 0u64)));
        let (b, p) = (book.clone(), proj.clone());
        let after = best.map(move |(s, r)| {
            let a = b.after(&p, r.1, &s.3, s.4, s.5);
            Tup6(s.0, s.1 + 1, a.table, a.key, a.set_group, a.set_out)
        });
        let miss = miss.clone();
        let after_miss = missed.map(move |s| Tup6(s.0, s.1 + 1, miss_next(&miss, s.2), s.3.clone(), s.4, s.5));
        let next = after.plus(&after_miss);
        ended.push(next.filter(|s| s.2 == END));
        states = next.filter(|s| s.2 != END);
    }
    // States still going after every declared table: cut there (the end row says so).
    ended.push(states.map(|s| Tup6(s.0, s.1, MISS, s.3.clone(), s.4, s.5)));
    let ended = ended[0].sum(&ended[1..]);
    rows.push(ended.map(|s| Tup5(s.0, END_SLOT, s.4, s.5, if s.2 == MISS { MISS } else { 0 })));

    // Groups: references (owner, level, group, hash) meet the groups by id.
    let by_id = groups.map_index(|g| (g.0, g.1));
    let mut refs =
        ended.filter(|s| s.4 != NONE).map(|s| Tup3(s.0, s.4, NONE)).plus(&second.map(|p| Tup3(p.0, p.1, p.2)));
    for level in 0..GROUP_LEVELS as u64 {
        let b = book.clone();
        let met = refs.map_index(|r| (r.1, Tup2(r.0, r.2))).join_index(&by_id, move |gid, o, v| {
            let (value, bucket, children) = b.expand(*v, o.1);
            Some((Tup5(o.0, GROUP_SLOT + level, *gid, value, bucket), Tup2(o.1, children)))
        });
        rows.push(met.map(|(r, _)| *r));
        refs = met.flat_map(|(r, ch)| {
            let (owner, hash) = (r.0, ch.0);
            ch.1.clone().into_iter().map(move |g| Tup3(owner, g, hash))
        });
    }
    let view = rows[0].sum(&rows[1..]);
    Handles { rules: rules_h, flows: flows_h, groups: groups_h, second: second_h, view: view.output() }
}
