//! Slow-path translation: run a key through the OpenFlow tables from table 0
//! and produce the datapath actions, the megaflow mask and the traversal.
//!
//! One `&mut FlowMask` is threaded through every classifier lookup and every
//! action that reads or writes a field, and bits are only ever ORed into it
//! (as `ofproto-dpif-xlate.c` does). Invariant (the megaflow contract): every
//! packet P with `P & mask == key & mask` translates to the same datapath
//! actions. Header rewrites are held in the logical flow and committed to the
//! datapath packet only before an output, as set actions for the fields that
//! changed.
//!
//! [`retranslate`] runs the same translation after some tables changed,
//! taking from the traversal an earlier translation of the key recorded the
//! outcomes the change cannot have altered (a lookup is a function of the
//! table and the bits its rules read), and starting at the last visit before
//! the change where nothing but the key, the nesting and the tables decides
//! what follows; its result equals [`translate`]'s in actions, traversal and
//! error, its masks hold what it examined itself.

use kairo_classifier::RuleId;
use kairo_flow::field::{
    Field, Prereq, ETH_TYPE_ARP, ETH_TYPE_IP, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, VLAN_CFI,
};
use kairo_flow::{FlowKey, FlowMask};
use kairo_ofproto::{Action, GroupType, Instructions, MissBehavior, Rule};

use crate::odp::{commit, ControllerReason, DpAction};
use crate::pipeline::Pipeline;

/// Nesting limit of resubmits, goto_tables and groups (Open vSwitch's MAX_DEPTH).
pub const MAX_DEPTH: u32 = 64;
/// Limit of table lookups in one translation (Open vSwitch's MAX_RESUBMITS).
pub const MAX_RESUBMITS: u32 = 4096;

/// How the pipeline reached a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Start,
    Goto,
    Resubmit,
    /// The previous table missed and continues here.
    MissContinue,
}

/// What happened at one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Rule(RuleId),
    Miss,
}

/// One table visit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Step {
    pub table: u8,
    pub outcome: Outcome,
    pub via: Via,
    /// Nesting (below [`MAX_DEPTH`], so a byte: a traversal is kept per megaflow).
    pub depth: u8,
    /// Resubmit nesting (for display: goto_table stays at the same level).
    pub nest: u8,
    /// Which key this lookup saw: a version of [`Traversal::version`]
    /// (0: the key as translation started).
    pub version: u16,
}

/// One use of a group: which bucket(s) ran (`None`: no bucket was live / group empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct GroupUse {
    pub group: u32,
    pub buckets: Vec<u32>,
    pub depth: u32,
    /// How many table visits came before the group ran.
    pub step: u32,
}

/// Everything translation touched: the maintenance dependency record.
///
/// The key versions lookups saw are kept as one run of (word, value) pairs
/// with the end of each version, not a vector per version: a traversal is
/// kept per megaflow and read back whole by maintenance, where every
/// separate allocation is one more cache miss.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Traversal {
    pub steps: Vec<Step>,
    pub groups: Vec<GroupUse>,
    /// The differing words of every version, one after the other; version 0
    /// (the key as translation started) has none.
    diffs: Vec<(u8, u64)>,
    /// Where each version's words end in `diffs` (u32: up to MAX_RESUBMITS
    /// versions of up to a key's words each can pass u16).
    ends: Vec<u32>,
    /// How many leading steps were looked up in a *resumable* state: nothing
    /// output yet, the action set empty, and nothing left to do after the
    /// lookup's table returns but end the pipeline (every enclosing action
    /// list, bucket and resubmit was at its last action). What translation
    /// does from such a step on depends only on the key the step saw, its
    /// nesting and the tables ([`retranslate`] resumes there), except when
    /// it ends with a non-empty action set inside a bucket or a resubmit
    /// that puts in_port back: that action set then runs on the flow they
    /// put back.
    tail: u16,
    /// How many leading steps were resumable with no such bucket or
    /// resubmit around them (resuming there needs no such proviso).
    bare: u16,
}

impl Default for Traversal {
    fn default() -> Self {
        Traversal { steps: Vec::new(), groups: Vec::new(), diffs: Vec::new(), ends: vec![0], tail: 0, bare: 0 }
    }
}

/// A nesting level as kept in a [`Step`] (below [`MAX_DEPTH`] when kept).
fn small(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

impl Traversal {
    /// An empty traversal with room for one the size of `like`.
    fn with_capacity_of(like: &Traversal) -> Traversal {
        let mut ends = Vec::with_capacity(like.ends.len());
        ends.push(0);
        Traversal {
            steps: Vec::with_capacity(like.steps.len()),
            groups: Vec::with_capacity(like.groups.len()),
            diffs: Vec::with_capacity(like.diffs.len()),
            ends,
            tail: 0,
            bare: 0,
        }
    }

    /// The same translation's state just before step `j`'s lookup: the
    /// steps before `j`, the groups used before it and the key versions
    /// they saw (room kept for the rest of a traversal like this one).
    fn prefix(&self, j: usize) -> Traversal {
        let mut t = Traversal::with_capacity_of(self);
        t.steps.extend_from_slice(&self.steps[..j]);
        t.groups.extend(self.groups.iter().take_while(|g| g.step as usize <= j).cloned());
        // Versions are numbered as lookups first see them, so the ones that
        // exist before step j are 0..=the highest an earlier step saw.
        let v = self.steps[..j].iter().map(|s| s.version as usize).max().unwrap_or(0);
        t.ends.clear();
        t.ends.extend_from_slice(&self.ends[..=v]);
        t.diffs.extend_from_slice(&self.diffs[..self.ends[v] as usize]);
        t.tail = j as u16;
        t.bare = self.bare.min(j as u16);
        t
    }

    /// How many leading steps a re-translation could resume at (see the
    /// field's doc).
    pub fn resumable(&self) -> usize {
        self.tail as usize
    }

    /// How many leading steps a re-translation could resume at with no
    /// bucket or in_port-restoring resubmit around (see the field's doc).
    pub fn resumable_bare(&self) -> usize {
        self.bare as usize
    }

    /// Drops spare capacity (a traversal is kept per megaflow, often for
    /// long: 22 steps pushed one by one would otherwise hold room for 32).
    pub fn shrink_to_fit(&mut self) {
        self.steps.shrink_to_fit();
        self.groups.shrink_to_fit();
        self.diffs.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    /// The words version `v` of the key differs in (empty for an unknown version).
    pub fn version(&self, v: u16) -> &[(u8, u64)] {
        let v = v as usize;
        match (v.checked_sub(1).map_or(Some(&0), |i| self.ends.get(i)), self.ends.get(v)) {
            (Some(&a), Some(&b)) => &self.diffs[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The version with exactly these differing words, adding it if new.
    /// The words are written where a new version would go and taken back
    /// if an earlier version has them (no allocation per key change).
    fn version_of(&mut self, diff: impl Iterator<Item = (u8, u64)>) -> u16 {
        let at = self.diffs.len();
        self.diffs.extend(diff);
        // Every recorded version ends at or before `at`, so none reads the new words.
        if let Some(v) = (0..self.ends.len() as u16).find(|&v| self.version(v) == &self.diffs[at..]) {
            self.diffs.truncate(at);
            return v;
        }
        // At most MAX_RESUBMITS lookups, so at most that many versions (a
        // u16), each of at most a key's words (their total fits u32).
        self.ends.push(self.diffs.len() as u32);
        (self.ends.len() - 1) as u16
    }

    /// The version of the key that is `flow` for a translation that started
    /// from `start` (0 for the start itself), adding it if new.
    fn version_for(&mut self, start: &FlowKey, flow: &FlowKey) -> u16 {
        if flow == start {
            return 0;
        }
        self.version_of((0..flow.w.len()).filter(|&i| flow.w[i] != start.w[i]).map(|i| (i as u8, flow.w[i])))
    }

    /// The key a step's lookup saw, given the key translation started from.
    pub fn key_at(&self, start: &FlowKey, step: &Step) -> FlowKey {
        let mut k = *start;
        for &(w, v) in self.version(step.version) {
            k.w[w as usize] = v;
        }
        k
    }
}

/// Why a translation stopped early. The packet is dropped from that point
/// on, as Open vSwitch does, and the error is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum XlateError {
    #[error("translation nested deeper than {MAX_DEPTH} (resubmit/goto/group) at table {table}")]
    TooDeep { table: u8 },
    #[error("translation looked up more than {MAX_RESUBMITS} tables")]
    TooManyResubmits,
    /// Only from [`retranslate_checked`], whose caller rejected a visit:
    /// never in a translation of a packet.
    #[error("re-translation stopped at a visit its caller rejected")]
    Rejected,
}

/// The result of translating one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlateResult {
    pub actions: Vec<DpAction>,
    pub mask: FlowMask,
    pub traversal: Traversal,
    /// The logical flow at the end (after all rewrites).
    pub final_flow: FlowKey,
    pub error: Option<XlateError>,
    /// The bits ORed in by actions and by what the datapath always matches,
    /// without those of classifier lookups (part of `mask`). Maintenance uses
    /// it to decide whether a megaflow's mask still holds.
    pub action_mask: FlowMask,
}

/// The OpenFlow 1.3 action set (write-actions), one slot per action type.
#[derive(Clone, Debug, Default)]
struct ActionSet {
    pop_vlan: bool,
    push_vlan: Option<Action>,
    dec_ttl: bool,
    /// Set-type actions keyed by what they write; later writes replace.
    sets: Vec<Action>,
    group: Option<u32>,
    output: Option<Action>,
}

fn set_key(a: &Action) -> Option<(u8, Field)> {
    match a {
        Action::SetField { field, .. } => Some((0, *field)),
        Action::Move { dst, .. } => Some((0, dst.field)),
        Action::SetVlanVid { .. } => Some((1, Field::VlanTci)),
        Action::SetVlanPcp { .. } => Some((2, Field::VlanTci)),
        _ => None,
    }
}

impl ActionSet {
    fn is_empty(&self) -> bool {
        !self.pop_vlan
            && self.push_vlan.is_none()
            && !self.dec_ttl
            && self.sets.is_empty()
            && self.group.is_none()
            && self.output.is_none()
    }

    fn write(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::PopVlan => self.pop_vlan = true,
                Action::PushVlan { .. } => self.push_vlan = Some(a.clone()),
                Action::DecTtl => self.dec_ttl = true,
                Action::Group(g) => self.group = Some(*g),
                Action::Output(_) | Action::InPort | Action::Flood | Action::Controller { .. } => {
                    self.output = Some(a.clone())
                }
                _ => {
                    let k = set_key(a);
                    if let Some(pos) = self.sets.iter().position(|x| set_key(x) == k) {
                        self.sets[pos] = a.clone();
                    } else {
                        self.sets.push(a.clone());
                    }
                }
            }
        }
    }
    /// The actions in OpenFlow's action-set order; a group overrides output.
    fn into_list(self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.pop_vlan {
            out.push(Action::PopVlan);
        }
        out.extend(self.push_vlan);
        if self.dec_ttl {
            out.push(Action::DecTtl);
        }
        out.extend(self.sets);
        match (self.group, self.output) {
            (Some(g), _) => out.push(Action::Group(g)),
            (None, Some(o)) => out.push(o),
            (None, None) => {}
        }
        out
    }
}

struct Ctx<'a> {
    p: &'a Pipeline,
    flow: FlowKey,
    base: FlowKey,
    wc: FlowMask,
    awc: FlowMask,
    start: FlowKey,
    odp: Vec<DpAction>,
    action_set: ActionSet,
    trav: Traversal,
    depth: u32,
    nest: u32,
    lookups: u32,
    /// Enclosing action lists, buckets and resubmits with something left to
    /// do once the current lookup returns (see [`Traversal::resumable`]).
    pending: u32,
    /// Enclosing buckets and resubmits that put the flow back once it returns.
    restoring: u32,
    exit: bool,
    error: Option<XlateError>,
    replay: Option<ReplayState<'a>>,
    /// The flow when its version was last asked, and that version.
    last: (FlowKey, u16),
    /// From which visit on action bits are also gathered in `since`
    /// ([`actions_read_from`]; `None` in translation proper).
    mark: Option<usize>,
    since: FlowMask,
    /// Each commit to the datapath packet, when asked for ([`translate_suffix`]):
    /// where its set actions start and end in `odp`, and the flow it committed.
    commits: Option<Vec<(usize, usize, FlowKey)>>,
    /// Whether a resubmit put in_port back after its lookup.
    restored: bool,
    /// When recording commits: the ports output actions named (each
    /// compared with in_port), and whether anything else read in_port.
    ports: Vec<u32>,
    in_port_read: bool,
    /// The deepest nesting a lookup was made at.
    deepest: u32,
}

/// A set of table numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSet([u64; 4]);

impl TableSet {
    pub fn insert(&mut self, t: u8) {
        self.0[t as usize / 64] |= 1 << (t % 64);
    }
    pub fn contains(&self, t: u8) -> bool {
        self.0[t as usize / 64] & (1 << (t % 64)) != 0
    }
    /// Every table.
    pub fn all() -> TableSet {
        TableSet([u64::MAX; 4])
    }
    /// Whether the two have a table in common.
    pub fn meets(&self, other: &TableSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }
    /// Adds every table of `other`.
    pub fn or(&mut self, other: &TableSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
}

/// What a re-translation may take from the traversal an earlier translation
/// of the same key recorded, once some tables have changed.
#[derive(Clone, Copy, Debug)]
pub struct Replay<'a> {
    /// The earlier traversal (of the same start key).
    pub old: &'a Traversal,
    /// Tables whose rules or miss behaviour changed since `old` was recorded;
    /// every other table is as it was then.
    pub changed: &'a TableSet,
    /// The region the result is for: lookups made anew that examine only
    /// bits of it are not reported.
    pub region: &'a FlowMask,
    /// Whether any group changed since `old` was recorded.
    pub groups_changed: bool,
}

impl Replay<'_> {
    /// The step of `old` a re-translation can start at: the latest one
    /// looked up in a resumable state at or before the first visit to a
    /// changed table and, if a group changed, before the first group use.
    /// Everything before it happens as it did (unchanged tables see the same
    /// keys, unchanged groups choose the same buckets), and from a resumable
    /// state on, translation depends only on the key, the nesting and the
    /// tables. 0 when the translation has to start over.
    pub fn resume_at(&self) -> usize {
        let old = self.old;
        let Some(mut j) = old.resumable().checked_sub(1) else { return 0 };
        if let Some(k) = old.steps[..j].iter().position(|s| self.changed.contains(s.table)) {
            j = k;
        }
        if self.groups_changed {
            if let Some(g) = old.groups.first() {
                // Used once `g.step` visits were made: from the last of them on.
                j = j.min((g.step as usize).saturating_sub(1));
            }
        }
        j
    }
}

/// A judgement of one visit of a re-translation: its table, outcome and
/// the flow there ([`retranslate_checked`]).
pub type VisitCheck<'a> = dyn Fn(u8, Outcome, &FlowKey) -> bool + 'a;

struct ReplayState<'a> {
    r: Replay<'a>,
    /// The next step of `old` to align a visit with.
    cursor: usize,
    /// Indexes of the new traversal's steps looked up anew whose lookup
    /// examined bits outside the region.
    unproven: Vec<usize>,
    /// When asked ([`translate_suffix`]): each visit that took an earlier
    /// visit's outcome, as (that visit's index in `old`, the flow it saw).
    taken: Option<Vec<(usize, FlowKey)>>,
    /// When given ([`retranslate_checked`]): judges each visit that would
    /// be unproven (table, outcome, flow there); the first it rejects
    /// stops the translation.
    holds: Option<&'a VisitCheck<'a>>,
    /// A visit was rejected: the translation stopped there.
    rejected: bool,
}

/// The result of [`retranslate`]: a translation, and which of its steps were
/// looked up anew with a lookup that examined bits outside the region (every
/// other step either took the outcome the earlier traversal recorded or was
/// decided by bits of the region alone).
#[derive(Debug)]
pub struct Retranslation {
    pub result: XlateResult,
    pub unproven: Vec<usize>,
    /// The step it resumed at ([`Replay::resume_at`]; 0: from table 0).
    pub resumed_at: usize,
    /// [`retranslate_checked`] only: a visit that would be unproven was
    /// rejected, and the translation stopped there (`result` is then
    /// unfinished and means nothing).
    pub rejected: bool,
}

/// Translates `key` through `p` from table 0.
pub fn translate(p: &Pipeline, key: &FlowKey) -> XlateResult {
    run(p, key, Opts::default()).result
}

/// The bits the actions of visit `step` (counted from 0 in the traversal)
/// and of every later visit read or write, as translating `key` gathers
/// them into its action mask: the part of the action mask a change at that
/// visit can reach. A diagnostic (`examples/share_probe`), not used by
/// maintenance.
pub fn actions_read_from(p: &Pipeline, key: &FlowKey, step: usize) -> FlowMask {
    run(p, key, Opts { mark: Some(step), ..Opts::default() }).since
}

/// Translates `key` again after the tables in `replay.changed` changed,
/// producing the same actions, traversal and action mask as [`translate`]
/// but without a classifier lookup where the earlier traversal already
/// answers it: a visit to an unchanged table `t` whose key agrees, on every
/// bit some rule of `t` reads, with the key the aligned earlier visit to `t`
/// saw gets that visit's outcome (a lookup is a function of those bits and
/// the table). It does not start at table 0 but at [`Replay::resume_at`],
/// from the state translation had there (everything before it is as it
/// was: the steps, groups and key versions are copied; if it ends there
/// with an action set to run inside a bucket or in_port-restoring resubmit,
/// whose put-back flow it would have run on, it starts over; when it
/// resumed inside one, `final_flow` is the flow before they put it back).
/// Its `mask` holds
/// only the lookups made anew, and its `action_mask` (and the fixed bits)
/// only what the actions from the resumed step on read or wrote: what came
/// before is what the earlier translation gathered. The caller decides from
/// [`Retranslation::unproven`] what still needs checking.
pub fn retranslate(p: &Pipeline, key: &FlowKey, replay: Replay<'_>) -> Retranslation {
    retranslate_with(p, key, replay, None)
}

/// [`retranslate`], judging each visit that would be unproven as it is
/// made, with `holds` (given the table, the outcome and the flow there):
/// at the first one it rejects, translation stops, with
/// [`Retranslation::rejected`] set. Every visit `holds` sees is one the
/// whole re-translation makes, at that flow, so a caller whose verdict
/// fails when any unproven visit fails has its verdict there without the
/// visits after it (an entry evicted by a new rule at the table it
/// resumes at is then not translated through the rest of the pipeline).
/// Not rejected: the same result as [`retranslate`], every unproven visit
/// accepted by `holds`.
pub fn retranslate_checked(p: &Pipeline, key: &FlowKey, replay: Replay<'_>, holds: &VisitCheck) -> Retranslation {
    retranslate_with(p, key, replay, Some(holds))
}

fn retranslate_with<'a>(
    p: &'a Pipeline,
    key: &FlowKey,
    replay: Replay<'a>,
    holds: Option<&'a VisitCheck<'a>>,
) -> Retranslation {
    let mut resumed_at = replay.resume_at();
    let from = (resumed_at > 0).then_some((replay.old, resumed_at));
    let state = |cursor| ReplayState { r: replay, cursor, unproven: Vec::new(), taken: None, holds, rejected: false };
    let mut out = run(p, key, Opts { replay: Some(state(resumed_at)), from, ..Opts::default() });
    // (A rejected visit was made before the end, where spoiling happens:
    // the lookups of a spoilt run are a whole translation's.)
    let rejected = |out: &Run<'_>| out.replay.as_ref().is_some_and(|s| s.rejected);
    if out.spoilt && !rejected(&out) {
        resumed_at = 0;
        out = run(p, key, Opts { replay: Some(state(0)), ..Opts::default() });
    }
    let rejected = rejected(&out);
    Retranslation {
        result: out.result,
        unproven: out.replay.map(|s| s.unproven).unwrap_or_default(),
        resumed_at,
        rejected,
    }
}

/// The part of a translation from a resumable step on, made once and
/// shared by every key that reaches that step in the same state as far as
/// the part can tell ([`translate_suffix`]).
///
/// Why sharing it is sound: from a resumable step, translation depends only
/// on the key there, the nesting depth, the lookups made so far and the
/// tables ([`Traversal::resumable`]); it reads the key only through
/// classifier lookups, which examine the bits they un-wildcard (the
/// classifier's contract), and through actions, which un-wildcard what they
/// read; and it writes only bits it un-wildcards (set-field, move, VLAN and
/// TTL actions), in_port (a resubmit's, put back after: not shared) or
/// pipeline-only fields (write_metadata, which no commit reads). Output
/// actions read in_port only to skip the ingress port, so unless something
/// else reads it, it is left out and the ports compared with it are kept
/// instead; and the nesting depth decides only whether the depth limit is
/// reached. Visits to unchanged tables that took the earlier traversal's
/// outcome examined nothing: another key's visit gets the same outcome if
/// its own earlier traversal has, at the same place, a visit to that table
/// with that outcome and a key that agrees with its key now on every bit
/// the table's rules read (a lookup is a function of those bits and the
/// table). So a key that agrees with this one on `same` (the bits the
/// lookups made anew and the actions examined, and the fixed ones), on
/// which output ports are its in_port, whose earlier traversal answers
/// those visits, and that has room for the suffix's nesting and lookups,
/// makes the same lookups with the same outcomes (by induction over the
/// visits), runs the same actions with the same values, and at every point
/// its flow is this flow on `same` and its own key elsewhere. Its datapath
/// actions are then these, except that each commit turns *its* packet into
/// *its* flow: [`Suffix::actions_for`] redoes the commits.
#[derive(Clone, Debug)]
pub struct Suffix {
    /// How much deeper than the step the suffix nested (room for it is
    /// all that the step's own depth decides).
    deeper: u32,
    /// Lookups the suffix made.
    lookups: usize,
    /// When the suffix read in_port only to compare it with output ports
    /// (and in_port is then not in `same`): those ports.
    ports: Option<Vec<u32>>,
    same: FlowMask,
    /// What the suffix examined (lookups and actions, and the fixed bits):
    /// for a region that contains it, every packet of the region gets the
    /// same outcomes and actions from this step on.
    need: FlowMask,
    odp: Vec<DpAction>,
    /// (first, end) of each commit's set actions in `odp`, and the flow committed.
    commits: Vec<(usize, usize, FlowKey)>,
    /// The visits that took the earlier traversal's outcome instead of a
    /// lookup: for another key, its own earlier traversal must answer them.
    taken: Vec<Taken>,
    /// The translation it was made from, whose visits from step `from` on
    /// are the suffix's (the first is the step itself), each seeing its
    /// version of `key`; the flow at the step; and how many of its visits
    /// were resumable. (The whole traversal is kept, not a copy of each
    /// visit's flow: making a suffix copies nothing per visit.)
    trav: Traversal,
    from: usize,
    key: FlowKey,
    first: FlowKey,
    resumable: usize,
}

/// A visit of a [`Suffix`] answered by the earlier traversal: at `offset`
/// visits past the step there, table `table` had `outcome` for a key that
/// agrees on `read` (every bit the table's rules read) with the flow the
/// suffix had there, `flow`.
#[derive(Clone, Debug)]
struct Taken {
    offset: usize,
    table: u8,
    outcome: Outcome,
    flow: FlowKey,
    read: FlowMask,
    /// The words `read` has bits in (bit `i`: word `i`; a key has at most
    /// 64 words, checked below), so that making a suffix allocates no list
    /// per visit.
    words: u64,
}

const _: () = assert!(kairo_flow::WORDS <= 64, "Taken::words holds one bit per key word");

/// The positions of the set bits of `w`, lowest first.
fn set_bits(mut w: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let i = w.trailing_zeros() as usize;
        w &= w.wrapping_sub(1);
        (i < 64).then_some(i)
    })
}

/// Reads what translating through `steps` first reads of the pipeline at
/// each (the table's read mask, the rule and its instructions), level by
/// level across the steps, and returns a word of it. Translation reads
/// them one visit after another, each read waiting on the last; done here
/// first, on a cold cache, their misses overlap (a re-translation of a
/// suffix at 10M entries is mostly such misses). Nothing else changes.
pub fn touch_steps(p: &Pipeline, steps: &[Step]) -> u64 {
    let mut w = 0u64;
    let rules: Vec<&Rule> = steps
        .iter()
        .filter_map(|st| {
            if let Some(t) = p.table(st.table) {
                w ^= t.cls.read_mask().w[0];
            }
            match st.outcome {
                Outcome::Rule(id) => p.rule(st.table, id).map(|r| &**r),
                Outcome::Miss => None,
            }
        })
        .collect();
    for r in &rules {
        w ^= r.inst.apply.len() as u64 ^ r.inst.write.len() as u64;
    }
    for r in &rules {
        w ^= r.inst.apply.first().map_or(0, |a| matches!(a, Action::Output(_)) as u64);
    }
    w
}

/// Translates `key` from step `j` of its earlier traversal `old` (a
/// resumable step: `j < old.resumable()`; the tables before it unchanged
/// since, the ones in `changed` changed), for sharing ([`Suffix`]). A visit
/// to an unchanged table whose key agrees with the earlier visit's on the
/// bits the table reads takes that visit's outcome (as [`retranslate`]
/// does); the suffix keeps those visits for other keys to answer from their
/// own earlier traversals. `None` when the part from there cannot be shared
/// this way: it uses a group (whose buckets put the flow back), a resubmit
/// that puts in_port back, it ends with an action set to run on a flow put
/// back, or it stopped on an error.
pub fn translate_suffix(p: &Pipeline, key: &FlowKey, old: &Traversal, j: usize, changed: &TableSet) -> Option<Suffix> {
    if j == 0 || j >= old.resumable() {
        return None;
    }
    let region = FlowMask::ZERO;
    let replay = Replay { old, changed, region: &region, groups_changed: false };
    let state = ReplayState {
        r: replay,
        cursor: j,
        unproven: Vec::new(),
        taken: Some(Vec::new()),
        holds: None,
        rejected: false,
    };
    let out = run(p, key, Opts { replay: Some(state), from: Some((old, j)), commits: true, ..Opts::default() });
    let r = &out.result;
    // Groups before the step are the earlier traversal's, copied.
    if r.error.is_some() || out.restored || out.spoilt || r.traversal.groups.iter().any(|g| g.step as usize > j) {
        return None;
    }
    let visits = out.replay.as_ref().and_then(|st| st.taken.as_deref()).unwrap_or_default();
    let mut taken = Vec::with_capacity(visits.len());
    taken.extend(visits.iter().filter_map(|&(k, flow)| {
        let was = old.steps[k];
        let read = *p.table(was.table)?.cls.read_mask();
        let words = (0..read.w.len()).filter(|&i| read.w[i] != 0).fold(0u64, |b, i| b | 1 << i);
        Some(Taken { offset: k - j, table: was.table, outcome: was.outcome, flow, read, words })
    }));
    let r = out.result;
    let at = old.steps[j];
    // Not empty: no error, so the step itself was visited.
    let first = r.traversal.key_at(key, r.traversal.steps.get(j)?);
    let resumable = r.traversal.resumable() - j;
    let mut ports = out.ports;
    ports.sort_unstable();
    ports.dedup();
    let mut same = out.examined;
    if out.in_port_read {
        same.exact(Field::InPort);
    }
    Some(Suffix {
        deeper: out.deepest.saturating_sub(at.depth.into()),
        lookups: out.lookups as usize - j,
        ports: (!out.in_port_read).then_some(ports),
        // Registers and metadata included: from a step on they are not the
        // zeros a packet enters with.
        same,
        need: r.mask,
        odp: r.actions,
        commits: out.commits,
        taken,
        trav: r.traversal,
        from: j,
        key: *key,
        first,
        resumable,
    })
}

impl Suffix {
    /// Whether a key that started as `start`, whose earlier traversal
    /// `old` has step `j` at `at`, with `flow` there, gets this suffix: same
    /// table and state, room for its nesting and lookups, and its own
    /// earlier traversal answers every visit the suffix took from one (the
    /// aligned visit has the same table and outcome, and a key that agrees
    /// with the one it will have there on every bit the table reads).
    pub fn applies(&self, at: &Step, j: usize, flow: &FlowKey, old: &Traversal, start: &FlowKey) -> bool {
        self.same_state(at, j, flow)
            && self.taken.iter().all(|t| {
                let Some(was) = old.steps.get(j + t.offset) else { return false };
                if was.table != t.table || was.outcome != t.outcome {
                    return false;
                }
                // Its flow there now: the suffix's on `same`, its own
                // elsewhere; then: its start key but for the words that
                // version of it differs in.
                let diffs = old.version(was.version);
                set_bits(t.words).all(|i| {
                    let then = diffs.iter().find(|d| d.0 as usize == i).map_or(start.w[i], |d| d.1);
                    let now = (t.flow.w[i] & self.same.w[i]) | (flow.w[i] & !self.same.w[i]);
                    (now ^ then) & t.read.w[i] == 0
                })
            })
    }

    /// Same table and state at the step, and room for the suffix's
    /// nesting and lookups (what [`Suffix::applies`] asks besides the
    /// visits the suffix took from an earlier traversal).
    fn same_state(&self, at: &Step, j: usize, flow: &FlowKey) -> bool {
        let (first, here) = (&self.steps()[0], &self.first);
        let (mine, theirs) = (here.get(Field::InPort), flow.get(Field::InPort));
        at.table == first.table
            && u32::from(at.depth) + self.deeper < MAX_DEPTH
            && j + self.lookups <= MAX_RESUBMITS as usize
            && flow.eq_masked(here, &self.same)
            && self.ports.as_ref().is_none_or(|ps| ps.iter().all(|&p| (p as u64 == mine) == (p as u64 == theirs)))
    }

    /// Whether this suffix is what translation gave a key whose traversal
    /// `t` has, from step `j` (at `at`, with `flow` there), this suffix's
    /// visits (table and outcome, [`Suffix::start_in`]), as it would give
    /// it if it [`Suffix::applies`]: the same state there, room for it,
    /// and the visits the suffix took from an earlier traversal have, in
    /// `t`, the outcome the suffix took (`t`'s own: translation made
    /// them). Then, by the induction of [`Suffix`], the key's flow at every
    /// visit is this suffix's on `same` and its own elsewhere, and its
    /// actions are [`Suffix::actions_for`] it.
    pub fn gave(&self, at: &Step, j: usize, flow: &FlowKey, t: &Traversal) -> bool {
        self.start_in(t) == Some(j) && self.same_state(at, j, flow)
    }

    /// The traversal translation gives a key this suffix
    /// [`Suffix::applies`] to (same arguments): its earlier traversal's
    /// steps, groups and key versions before step `j`, then the suffix's
    /// visits at its own nesting, each seeing its own flow (the suffix's on
    /// `same`, its own elsewhere) as a version of its own key, numbered as
    /// translation numbers them (in order of first sight).
    pub fn traversal_for(&self, start: &FlowKey, old: &Traversal, j: usize, flow: &FlowKey) -> Traversal {
        let (at, first) = (old.steps[j], self.steps()[0]);
        let mut t = old.prefix(j);
        for (k, st) in self.steps().iter().enumerate() {
            let theirs = &self.trav.key_at(&self.key, st);
            let version = t.version_for(start, &self.mixed(theirs, flow));
            t.steps.push(Step {
                table: st.table,
                outcome: st.outcome,
                // The step itself was reached the way this key reached it.
                via: if k == 0 { at.via } else { st.via },
                depth: (st.depth - first.depth) + at.depth,
                nest: (st.nest - first.nest) + at.nest,
                version,
            });
        }
        // The suffix has no bucket or restoring resubmit of its own: its
        // visits are resumable as the first's, and bare unless the step
        // was inside one.
        t.tail = (j + self.resumable) as u16;
        t.bare = if j < old.resumable_bare() { t.tail } else { old.bare };
        t
    }

    /// Another key's flow where this suffix's was `theirs`, that key having
    /// reached the step as `flow`: the suffix's on `same`, its own elsewhere.
    fn mixed(&self, theirs: &FlowKey, flow: &FlowKey) -> FlowKey {
        let mut f = *flow;
        for i in 0..f.w.len() {
            f.w[i] = (theirs.w[i] & self.same.w[i]) | (flow.w[i] & !self.same.w[i]);
        }
        f
    }

    /// What the suffix examined: a region containing it gets these actions throughout.
    pub fn need(&self) -> &FlowMask {
        &self.need
    }

    /// The bits a key must share with this one at the step.
    pub fn same(&self) -> &FlowMask {
        &self.same
    }

    /// The datapath actions for a key that starts as `start` and reaches
    /// the step as `flow` (one this suffix [`Suffix::applies`] to).
    pub fn actions_for(&self, start: &FlowKey, flow: &FlowKey) -> Vec<DpAction> {
        self.actions_and_commits(start, flow).0
    }

    /// [`Suffix::actions_for`], and how many actions each commit in them
    /// made (with the suffix's own actions, which are the same for every
    /// key, this tells where each commit's actions are).
    pub fn actions_and_commits(&self, start: &FlowKey, flow: &FlowKey) -> (Vec<DpAction>, Vec<u32>) {
        let mut out = Vec::with_capacity(self.odp.len());
        let mut made = Vec::with_capacity(self.commits.len());
        // Nothing was output before a resumable step: the packet is the key.
        let mut base = *start;
        let mut at = 0;
        for (first, end, committed) in &self.commits {
            out.extend_from_slice(&self.odp[at..*first]);
            let before = out.len();
            commit(&mut base, &self.mixed(committed, flow), &mut out);
            made.push((out.len() - before) as u32);
            at = *end;
        }
        out.extend_from_slice(&self.odp[at..]);
        (out, made)
    }

    /// The ports the suffix compared in_port with, sorted, unless it read
    /// in_port otherwise (`None`: then in_port is in `same`).
    pub fn compared_ports(&self) -> Option<&[u32]> {
        self.ports.as_deref()
    }

    /// The table the suffix starts at.
    pub fn table(&self) -> u8 {
        self.steps()[0].table
    }

    /// Its visits (the step's included), as its translation recorded them.
    pub fn steps(&self) -> &[Step] {
        &self.trav.steps[self.from..]
    }

    /// The key it reached the step with.
    pub fn first_flow(&self) -> FlowKey {
        self.first
    }

    /// Its visits (the step's included).
    pub fn visits(&self) -> usize {
        self.steps().len()
    }

    /// Where this suffix would sit in traversal `t`: the step `j` (past
    /// table 0) from which `t`'s visits are this suffix's, table and
    /// outcome, to the end.
    pub fn start_in(&self, t: &Traversal) -> Option<usize> {
        let j = t.steps.len().checked_sub(self.visits()).filter(|&j| j > 0)?;
        let same = t.steps[j..].iter().zip(self.steps()).all(|(a, b)| a.table == b.table && a.outcome == b.outcome);
        same.then_some(j)
    }

    /// Whether a key that reached the step at nesting `depth` with `j`
    /// lookups made has room for the suffix's nesting and lookups.
    pub fn fits(&self, depth: u8, j: usize) -> bool {
        u32::from(depth) + self.deeper < MAX_DEPTH && j + self.lookups <= MAX_RESUBMITS as usize
    }

    /// Whether every lookup of the suffix was made anew (it was translated
    /// with every table taken as changed): whether it applies to a key then
    /// depends on the key's state at the step alone, not on its earlier
    /// traversal.
    pub fn fresh(&self) -> bool {
        self.taken.is_empty()
    }

    /// Whether this suffix (made after some update, for one key of a set)
    /// gives every key of the set the translation it would get now, and the
    /// same datapath actions, given that `old` applied to every one of
    /// them before the update (their earlier traversals end with `old`'s
    /// visits, up to date before it), with the same actions and the same
    /// number of actions from each commit. Both start at the same table.
    /// `agree` is a mask of bits on which every key of the set has the same
    /// flow at the step (it contains `old.same`); `in_ports` is every
    /// in_port the keys have, sorted.
    ///
    /// The conditions: this suffix examined only bits of `agree` (so every
    /// key agrees with it on `same`); every port it compares in_port with
    /// and `old` did not, every key compares alike with (one in_port among
    /// them, or not that port; if either suffix read in_port otherwise, it
    /// is in `agree`); and it makes no commit, or as many as `old`, each to
    /// a flow that agrees with `old`'s on every packet bit either examined.
    ///
    /// Why it applies to every key ([`Suffix::applies`]): agreement on
    /// `same` and in_port as above; and each visit it took from the
    /// earlier traversal of the key it was made for is answered by every
    /// key's own: their earlier visits there are `old`'s (same table and
    /// outcome), and a key's flow there now and then differ on the table's
    /// bits exactly as that key's did. (Now, a key's flow is this suffix's
    /// on `same` and its own flow at the step elsewhere; then, `old`'s on
    /// `old.same` and its own elsewhere. On a bit of either `same` that the
    /// other does not write, the key's own flow at the step is the same for
    /// every key, since both lie in `agree`; off both, now and then are
    /// the key's own bit alike.)
    ///
    /// Why the actions are the same for every key: with no commit they
    /// are this suffix's own. Otherwise a key's commit target is the
    /// suffix's committed flow on its `same` and the key's own flow at the
    /// step elsewhere ([`Suffix::actions_for`]). Take a packet bit. On this
    /// suffix's `same`, its target and `old`'s agree by the last condition
    /// (when the bit is in `old.same`, `old`'s target is `old`'s flow;
    /// otherwise it is the key's flow at the step, on `agree` the same for
    /// every key, which is what `old`'s flow has there, unwritten: a suffix
    /// writes only bits it examines). On `old.same` outside this suffix's
    /// `same`, this suffix wrote nothing, so its target is the key's flow
    /// at the step, and `old`'s target is `old`'s flow there, equal to it
    /// on `agree`. Off both, both targets are the key's own. So each key's
    /// commits make under this suffix what they made under `old`: the same
    /// for every key, since their actions and commit counts were.
    pub fn stands_in_for(&self, old: &Suffix, agree: &FlowMask, in_ports: &[u32]) -> bool {
        let packet = crate::odp::packet_mask();
        let mut bits = old.same;
        bits.or(&self.same);
        for (b, p) in bits.w.iter_mut().zip(packet.w) {
            *b &= p;
        }
        self.table() == old.table()
            && self.same.is_subset_of(agree)
            && old.same.is_subset_of(agree)
            && match (&self.ports, &old.ports) {
                (Some(ps), Some(qs)) => {
                    // (Both sorted: a flood compares with every port.)
                    in_ports.len() == 1 || sorted_minus(ps, qs).all(|p| in_ports.binary_search(&p).is_err())
                }
                _ => true,
            }
            && (self.commits.is_empty()
                || (self.commits.len() == old.commits.len()
                    && self.commits.iter().zip(&old.commits).all(|(a, b)| a.2.eq_masked(&b.2, &bits))))
    }
}

/// The values of `a` not in `b`, both sorted ascending without repeats,
/// in one walk over both (compared port lists run to every port of a
/// flood: searching one in the other per value cost more).
pub fn sorted_minus<'a>(a: &'a [u32], b: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    let mut rest = b;
    a.iter().copied().filter(move |&x| {
        let skip = rest.iter().take_while(|&&y| y < x).count();
        rest = &rest[skip..];
        rest.first() != Some(&x)
    })
}

/// How [`run`] translates.
#[derive(Default)]
struct Opts<'a> {
    /// Take outcomes from an earlier traversal where they still hold.
    replay: Option<ReplayState<'a>>,
    /// Start at this step of this earlier traversal of the same key (a
    /// resumable one), from the state translation had there.
    from: Option<(&'a Traversal, usize)>,
    /// Gather the action bits from this visit on ([`actions_read_from`]).
    mark: Option<usize>,
    /// Record each commit ([`translate_suffix`]).
    commits: bool,
}

/// What [`run`] gives besides the result.
struct Run<'a> {
    result: XlateResult,
    replay: Option<ReplayState<'a>>,
    since: FlowMask,
    commits: Vec<(usize, usize, FlowKey)>,
    restored: bool,
    lookups: u32,
    /// The mask before the pipeline-only fields were taken out of it.
    examined: FlowMask,
    ports: Vec<u32>,
    in_port_read: bool,
    deepest: u32,
    /// Resumed where the result needs the flow put back (see [`Traversal::resumable`]).
    spoilt: bool,
}

fn run<'a>(p: &'a Pipeline, key: &FlowKey, opts: Opts<'a>) -> Run<'a> {
    let Opts { replay, from, mark, commits } = opts;
    let mut spoilt = false;
    let mut wc = FlowMask::ZERO;
    // What the datapath always matches exactly (as Open vSwitch's xlate does).
    // A suffix made for sharing keeps in_port out unless something reads
    // it, and records the ports outputs compare with it instead.
    if !commits {
        wc.exact(Field::InPort);
    }
    wc.exact(Field::RecircId);
    wc.exact(Field::EthType);
    if key.is_ipv4() {
        wc.exact(Field::IpFrag);
    }
    let mut ctx = Ctx {
        p,
        flow: *key,
        base: *key,
        wc,
        awc: wc,
        start: *key,
        odp: Vec::with_capacity(if replay.is_some() { 8 } else { 0 }),
        action_set: ActionSet::default(),
        // A re-translation mostly takes the earlier path: room for it at once
        // (a kept traversal is shrunk to fit, which is then free).
        trav: match (from, replay.as_ref()) {
            (Some((old, at)), _) => old.prefix(at),
            (None, Some(r)) => Traversal::with_capacity_of(r.r.old),
            (None, None) => Traversal::default(),
        },
        depth: 0,
        nest: 0,
        lookups: 0,
        pending: 0,
        restoring: 0,
        exit: false,
        error: None,
        replay,
        last: (*key, 0),
        mark,
        since: FlowMask::ZERO,
        commits: commits.then(Vec::new),
        restored: false,
        ports: Vec::new(),
        in_port_read: false,
        deepest: 0,
    };
    match from {
        // The state translation had just before that step's lookup: nothing
        // output (so nothing committed), the action set empty, the key the
        // step recorded, its nesting, and one lookup per earlier step.
        Some((old, j)) => {
            let at = old.steps[j];
            ctx.flow = old.key_at(key, &at);
            ctx.depth = at.depth.into();
            ctx.nest = at.nest.into();
            ctx.lookups = j as u32;
            ctx.table(at.table, at.via);
            // Inside a bucket or in_port-restoring resubmit, an action set
            // left to run would have run on the flow they put back.
            spoilt = j >= old.resumable_bare() && !ctx.action_set.is_empty();
        }
        None => ctx.table(0, Via::Start),
    }
    // The action set runs at the end of the pipeline, even after a table miss.
    if ctx.error.is_none() {
        let set = std::mem::take(&mut ctx.action_set).into_list();
        // Lookups from here on are not resumable: writes to the action set
        // now go to one that never runs.
        ctx.pending += 1;
        ctx.actions(&set);
        ctx.pending -= 1;
    }
    if ctx.error.is_some() {
        ctx.odp.clear();
    }
    let examined = ctx.wc;
    let in_port_read = ctx.in_port_read || examined.get(Field::InPort) != 0;
    // Registers and metadata are zero whenever a packet enters the datapath:
    // matching on them there is useless (Open vSwitch clears them too).
    for f in Field::all().filter(|f| f.pipeline_only()) {
        if key.get(f) == 0 {
            ctx.wc.set(f, 0);
            ctx.awc.set(f, 0);
        }
    }
    let result = XlateResult {
        actions: ctx.odp,
        mask: ctx.wc,
        traversal: ctx.trav,
        final_flow: ctx.flow,
        error: ctx.error,
        action_mask: ctx.awc,
    };
    Run {
        result,
        replay: ctx.replay,
        since: ctx.since,
        commits: ctx.commits.unwrap_or_default(),
        restored: ctx.restored,
        lookups: ctx.lookups,
        examined,
        ports: ctx.ports,
        in_port_read,
        deepest: ctx.deepest,
        spoilt,
    }
}

impl<'a> Ctx<'a> {
    /// The outcome the earlier traversal recorded for this visit to table
    /// `t` (seeing key version `version`), if it still holds: `Some(Some(rule))`
    /// or `Some(None)` (a miss). Aligns the visit with the next earlier visit
    /// to `t` from the cursor (translation is deterministic, so until an
    /// outcome differs the two traversals visit the same tables in the same
    /// order).
    fn replayed(&mut self, t: u8, version: u16) -> Option<Option<(RuleId, &'a Rule)>> {
        let p = self.p;
        let st = self.replay.as_mut()?;
        let old = st.r.old;
        let k = st.cursor + old.steps[st.cursor.min(old.steps.len())..].iter().position(|s| s.table == t)?;
        st.cursor = k + 1;
        if st.r.changed.contains(t) {
            return None;
        }
        let was = old.steps[k];
        let same_key = old.version(was.version) == self.trav.version(version);
        if !same_key && !self.flow.eq_masked(&old.key_at(&self.start, &was), p.table(t)?.cls.read_mask()) {
            return None;
        }
        if let Some(taken) = st.taken.as_mut() {
            taken.push((k, self.flow));
        }
        match was.outcome {
            Outcome::Rule(id) => p.rule(t, id).map(|r| Some((id, &**r))),
            Outcome::Miss => Some(None),
        }
    }

    /// The version of the current flow (adding one if it is new). Compares
    /// the whole key, so every change counts (rewrites, resubmit's in_port).
    fn key_version(&mut self) -> u16 {
        if self.flow == self.last.0 {
            return self.last.1;
        }
        let v = self.new_key_version();
        self.last = (self.flow, v);
        v
    }

    fn new_key_version(&mut self) -> u16 {
        self.trav.version_for(&self.start, &self.flow)
    }

    /// Un-wildcards bits read or written by an action (both masks).
    fn act_bits(&mut self, f: Field, bits: u64) {
        self.wc.or_bits(f, bits);
        self.awc.or_bits(f, bits);
        if self.mark.is_some_and(|m| self.trav.steps.len() > m) {
            self.since.or_bits(f, bits);
        }
    }

    fn fail(&mut self, e: XlateError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.exit = true;
    }

    /// Is the field's prerequisite met by the current flow? Un-wildcards what it reads.
    fn prereq_ok(&mut self, f: Field) -> bool {
        let ip = self.flow.get(Field::EthType) == ETH_TYPE_IP;
        let proto = self.flow.get(Field::IpProto);
        let needs_proto = matches!(f.def().prereq, Prereq::L4 | Prereq::Tcp | Prereq::Icmp);
        if needs_proto && ip {
            self.act_bits(Field::IpProto, u64::MAX);
        }
        match f.def().prereq {
            Prereq::None => true,
            Prereq::Ipv4 => ip,
            Prereq::Arp => self.flow.get(Field::EthType) == ETH_TYPE_ARP,
            Prereq::L4 => ip && matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP),
            Prereq::Tcp => ip && proto == IPPROTO_TCP,
            Prereq::Icmp => ip && proto == IPPROTO_ICMP,
        }
    }

    fn table(&mut self, t: u8, via: Via) {
        if self.exit {
            return;
        }
        self.lookups += 1;
        if self.lookups > MAX_RESUBMITS {
            return self.fail(XlateError::TooManyResubmits);
        }
        if self.depth >= MAX_DEPTH {
            return self.fail(XlateError::TooDeep { table: t });
        }
        self.deepest = self.deepest.max(self.depth);
        let resumable = self.pending == 0 && self.odp.is_empty() && self.action_set.is_empty();
        let bare = resumable && self.restoring == 0;
        let table = self.p.table(t);
        let version = self.key_version();
        let hit = match self.replayed(t, version) {
            Some(hit) => hit,
            None => {
                let mut wc = FlowMask::ZERO;
                let hit = table.and_then(|tb| tb.cls.lookup(&self.flow, &mut wc)).map(|r| (r.id, &*r.payload));
                self.wc.or(&wc);
                let n = self.trav.steps.len();
                if let Some(st) = self.replay.as_mut().filter(|st| !wc.is_subset_of(st.r.region)) {
                    st.unproven.push(n);
                    let outcome = hit.map_or(Outcome::Miss, |(id, _)| Outcome::Rule(id));
                    if st.holds.is_some_and(|holds| !holds(t, outcome, &self.flow)) {
                        st.rejected = true;
                        return self.fail(XlateError::Rejected);
                    }
                }
                hit
            }
        };
        let (depth, nest) = (small(self.depth), small(self.nest));
        let step = |outcome| Step { table: t, outcome, via, depth, nest, version };
        if resumable && self.trav.resumable() == self.trav.steps.len() {
            self.trav.tail += 1;
        }
        if bare && self.trav.resumable_bare() == self.trav.steps.len() {
            self.trav.bare += 1;
        }
        match hit {
            Some((id, r)) => {
                self.trav.steps.push(step(Outcome::Rule(id)));
                let inst: &Instructions = &r.inst;
                self.depth += 1;
                self.instructions(inst);
                self.depth -= 1;
            }
            None => {
                self.trav.steps.push(step(Outcome::Miss));
                if let MissBehavior::Continue(n) = self.p.miss(t) {
                    self.depth += 1;
                    self.table(n, Via::MissContinue);
                    self.depth -= 1;
                }
            }
        }
    }

    fn instructions(&mut self, inst: &Instructions) {
        let after = u32::from(
            inst.clear_actions || !inst.write.is_empty() || inst.write_metadata.is_some() || inst.goto_table.is_some(),
        );
        self.pending += after;
        let done = self.actions(&inst.apply);
        self.pending -= after;
        if !done {
            return;
        }
        if inst.clear_actions {
            self.action_set = ActionSet::default();
        }
        self.action_set.write(&inst.write);
        if let Some((v, m)) = inst.write_metadata {
            self.flow.set_masked(Field::Metadata, v, m);
        }
        if let Some(g) = inst.goto_table {
            self.table(g, Via::Goto);
        }
    }

    /// Commits the flow's rewrites to the datapath packet (recording it when asked).
    fn commit(&mut self) {
        let at = self.odp.len();
        commit(&mut self.base, &self.flow, &mut self.odp);
        if let Some(c) = self.commits.as_mut() {
            c.push((at, self.odp.len(), self.flow));
        }
    }

    fn output(&mut self, port: u32) {
        self.commit();
        self.odp.push(DpAction::Output(port));
    }

    /// Runs an action list. Returns false if an action ended the list early
    /// (dec_ttl reaching zero ends the rest of the list, not the pipeline: the
    /// caller, an outer resubmit and the action set carry on, as in Open vSwitch).
    fn actions(&mut self, list: &[Action]) -> bool {
        for (i, a) in list.iter().enumerate() {
            let more = u32::from(i + 1 < list.len());
            self.pending += more;
            let go_on = !self.exit && self.action(a);
            self.pending -= more;
            if !go_on {
                return false;
            }
        }
        !self.exit
    }

    fn action(&mut self, a: &Action) -> bool {
        match a {
            Action::Output(p) => {
                if self.commits.is_some() {
                    self.ports.push(*p);
                }
                // Never back out of the ingress port unless asked with in_port.
                if *p as u64 != self.flow.get(Field::InPort) {
                    self.output(*p);
                }
            }
            Action::InPort => {
                self.in_port_read = true;
                self.output(self.flow.get(Field::InPort) as u32)
            }
            Action::Flood => {
                self.in_port_read = true;
                let in_port = self.flow.get(Field::InPort);
                let ports: Vec<u32> = self.p.ports().filter(|&p| p as u64 != in_port).collect();
                for p in ports {
                    self.output(p);
                }
            }
            Action::Controller { max_len } => {
                self.commit();
                self.odp.push(DpAction::Controller { reason: ControllerReason::Action, max_len: *max_len });
            }
            Action::SetField { field, value, mask } => {
                if self.prereq_ok(*field) {
                    self.act_bits(*field, *mask);
                    self.flow.set_masked(*field, *value, *mask);
                }
            }
            Action::Move { src, dst } => {
                if self.prereq_ok(src.field) && self.prereq_ok(dst.field) {
                    self.act_bits(src.field, src.mask());
                    self.act_bits(dst.field, dst.mask());
                    let bits = (self.flow.get(src.field) & src.mask()) >> src.ofs;
                    self.flow.set_masked(dst.field, bits << dst.ofs, dst.mask());
                }
            }
            Action::PushVlan { .. } => {
                self.act_bits(Field::VlanTci, u64::MAX);
                self.act_bits(Field::VlanTciInner, u64::MAX);
                // Two tags are tracked (as Open vSwitch's FLOW_MAX_VLAN_HEADERS):
                // pushing a third shifts the innermost out of the key, as there.
                let outer = self.flow.get(Field::VlanTci);
                self.flow.set(Field::VlanTciInner, outer);
                self.flow.set(Field::VlanTci, VLAN_CFI);
            }
            Action::PopVlan => {
                self.act_bits(Field::VlanTci, u64::MAX);
                self.act_bits(Field::VlanTciInner, u64::MAX);
                let inner = self.flow.get(Field::VlanTciInner);
                self.flow.set(Field::VlanTci, inner);
                self.flow.set(Field::VlanTciInner, 0);
            }
            Action::SetVlanVid { vid, push } => {
                self.act_bits(Field::VlanTci, u64::MAX);
                self.act_bits(Field::VlanTciInner, u64::MAX);
                let tci = self.flow.get(Field::VlanTci);
                if tci & VLAN_CFI != 0 {
                    self.flow.set(Field::VlanTci, (tci & !0xfff) | *vid as u64);
                } else if *push {
                    self.flow.set(Field::VlanTci, VLAN_CFI | *vid as u64);
                }
            }
            Action::SetVlanPcp { pcp, push } => {
                self.act_bits(Field::VlanTci, u64::MAX);
                self.act_bits(Field::VlanTciInner, u64::MAX);
                let tci = self.flow.get(Field::VlanTci);
                if tci & VLAN_CFI != 0 {
                    self.flow.set(Field::VlanTci, (tci & 0x1fff) | (*pcp as u64) << 13);
                } else if *push {
                    self.flow.set(Field::VlanTci, VLAN_CFI | (*pcp as u64) << 13);
                }
            }
            Action::DecTtl => {
                if !self.flow.is_ipv4() {
                    return true;
                }
                self.act_bits(Field::IpTtl, u64::MAX);
                let ttl = self.flow.get(Field::IpTtl);
                if ttl > 1 {
                    self.flow.set(Field::IpTtl, ttl - 1);
                } else {
                    // As Open vSwitch: the packet goes to the controller and translation ends.
                    self.commit();
                    self.odp.push(DpAction::Controller { reason: ControllerReason::InvalidTtl, max_len: u16::MAX });
                    return false;
                }
            }
            Action::Resubmit { port, table } => {
                let t = table.unwrap_or_else(|| self.trav.steps.last().map_or(0, |s| s.table));
                let saved = self.flow.get(Field::InPort);
                if let Some(p) = port {
                    self.flow.set(Field::InPort, *p as u64);
                }
                // in_port is put back afterwards.
                let restore = u32::from(port.is_some());
                self.restored |= port.is_some();
                self.nest += 1;
                self.restoring += restore;
                self.table(t, Via::Resubmit);
                self.restoring -= restore;
                self.nest -= 1;
                if port.is_some() {
                    self.flow.set(Field::InPort, saved);
                }
            }
            Action::Group(g) => self.group(*g),
        }
        true
    }

    fn bucket_live(&self, b: &kairo_ofproto::Bucket, depth: u32) -> bool {
        if b.watch_port.is_none() && b.watch_group.is_none() {
            return true;
        }
        b.watch_port.is_some_and(|p| self.p.port_live(p))
            || b.watch_group.is_some_and(|g| depth < MAX_DEPTH && self.group_live(g, depth + 1))
    }

    fn group_live(&self, g: u32, depth: u32) -> bool {
        self.p.group(g).is_some_and(|grp| grp.buckets.iter().any(|b| self.bucket_live(b, depth)))
    }

    /// The hash of the fields a select group reads, un-wildcarding them.
    fn select_hash(&mut self, fields: Option<&[Field]>) -> u64 {
        let default_fields: Vec<Field>;
        let fields: &[Field] = match fields {
            Some(f) => f,
            None => {
                // Symmetric L4 (Open vSwitch's default): addresses and ports when
                // present, otherwise the Ethernet addresses.
                default_fields = if self.flow.is_ipv4() {
                    self.act_bits(Field::IpProto, u64::MAX);
                    if self.flow.has_ports() {
                        vec![Field::IpSrc, Field::IpDst, Field::IpProto, Field::TpSrc, Field::TpDst]
                    } else {
                        vec![Field::IpSrc, Field::IpDst, Field::IpProto]
                    }
                } else {
                    vec![Field::EthSrc, Field::EthDst, Field::EthType]
                };
                &default_fields
            }
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        // Symmetric: the same for both directions of a connection.
        let mut pair = |a: u64, b: u64| {
            h ^= a.min(b);
            h = h.wrapping_mul(0x100_0000_01b3);
            h ^= a.max(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        };
        let mut i = 0;
        while i < fields.len() {
            let f = fields[i];
            self.act_bits(f, u64::MAX);
            let next = fields.get(i + 1).copied();
            let partner = match (f, next) {
                (Field::IpSrc, Some(Field::IpDst))
                | (Field::TpSrc, Some(Field::TpDst))
                | (Field::EthSrc, Some(Field::EthDst)) => next,
                _ => None,
            };
            match partner {
                Some(n) => {
                    self.act_bits(n, u64::MAX);
                    pair(self.flow.get(f), self.flow.get(n));
                    i += 2;
                }
                None => {
                    pair(self.flow.get(f), 0);
                    i += 1;
                }
            }
        }
        h
    }

    fn group(&mut self, gid: u32) {
        if self.depth >= MAX_DEPTH {
            return self.fail(XlateError::TooDeep { table: self.trav.steps.last().map_or(0, |s| s.table) });
        }
        let depth = self.depth;
        let Some(g) = self.p.group(gid).cloned() else {
            let step = self.trav.steps.len() as u32;
            self.trav.groups.push(GroupUse { group: gid, buckets: vec![], depth, step });
            return;
        };
        let chosen: Vec<usize> = match g.ty {
            GroupType::All => (0..g.buckets.len()).collect(),
            GroupType::Indirect => (0..g.buckets.len().min(1)).collect(),
            GroupType::FastFailover => g.buckets.iter().position(|b| self.bucket_live(b, depth)).into_iter().collect(),
            GroupType::Select => {
                let live: Vec<usize> = (0..g.buckets.len())
                    .filter(|&i| g.buckets[i].weight > 0 && self.bucket_live(&g.buckets[i], depth))
                    .collect();
                if live.len() <= 1 {
                    live
                } else {
                    // Highest random weight: stable when buckets come and go.
                    let h = self.select_hash(g.fields.as_deref());
                    let score = |i: usize| {
                        let b = &g.buckets[i];
                        let mut x = h ^ (b.id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        x ^= x >> 33;
                        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
                        x ^= x >> 33;
                        ((x >> 16) as u128) * b.weight as u128
                    };
                    live.into_iter().max_by_key(|&i| (score(i), std::cmp::Reverse(i))).into_iter().collect()
                }
            }
        };
        self.trav.groups.push(GroupUse {
            group: gid,
            buckets: chosen.iter().map(|&i| g.buckets[i].id).collect(),
            depth,
            step: self.trav.steps.len() as u32,
        });
        let n = chosen.len();
        for (k, i) in chosen.into_iter().enumerate() {
            // Each bucket works on its own copy of the flow (clone semantics),
            // put back afterwards; another bucket may follow.
            let saved = self.flow;
            let more = u32::from(k + 1 < n);
            self.depth += 1;
            self.pending += more;
            self.restoring += 1;
            self.actions(&g.buckets[i].actions);
            self.restoring -= 1;
            self.pending -= more;
            self.depth -= 1;
            self.flow = saved;
            if self.error.is_some() {
                return;
            }
        }
    }
}
