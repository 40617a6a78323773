//! Shareable suffixes ([`translate_suffix`]): the part of a translation from
//! a resumable step on, made once for one key and given to every key that
//! reaches that step in the same state. Shared action cells in maintenance
//! are built on them.
//!
//! Invariant: a key a [`Suffix`] [`Suffix::applies`] to gets, from the step
//! on, exactly the visits, outcomes and (with its own commits redone,
//! [`Suffix::actions_for`]) the datapath actions translation would give it.
//! Why: `docs/design.md` section 4.4; the xlate proptests check it.

use crate::translate::Hit;
use kairo_flow::field::Field;
use kairo_flow::{FlowKey, FlowMask};

use crate::commit::commit;
use crate::pipeline::Pipeline;
use crate::replay::{Replay, ReplayState, TableSet};
use crate::tracked::Tracked;
use crate::translate::{run, Mode, Visit, MAX_DEPTH, MAX_RESUBMITS};
use crate::traversal::{Outcome, Step, Traversal};
use kairo_odp::DpAction;

/// The part of a translation from a resumable step on, made once and
/// shared by every key that reaches that step in the same state as far as
/// the part can tell ([`translate_suffix`]). Why sharing it is sound:
/// `docs/design.md` section 4.4.
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

/// Translates `key` from step `j` of its earlier traversal `old` (a
/// resumable step: `j < old.resumable()`; the tables before it unchanged
/// since, the ones in `changed` changed), for sharing ([`Suffix`]). A visit
/// to an unchanged table whose key agrees with the earlier visit's on the
/// bits the table reads takes that visit's outcome (as [`crate::retranslate`]
/// does); the suffix keeps those visits for other keys to answer from their
/// own earlier traversals. `None` when the part from there cannot be shared
/// this way: it uses a group (whose buckets put the flow back), a resubmit
/// that puts in_port back, it ends with an action set to run on a flow put
/// back, it writes conntrack fields (which keys sharing it may differ in),
/// or it stopped on an error.
pub fn translate_suffix(p: &Pipeline, key: &FlowKey, old: &Traversal, j: usize, changed: &TableSet) -> Option<Suffix> {
    if j == 0 || j >= old.resumable() {
        return None;
    }
    let region = FlowMask::ZERO;
    let replay = Replay { old, changed, region: &region, groups_changed: false };
    let mode = Sharing { replay: ReplayState::new(replay, j, None), taken: Vec::new(), commits: Vec::new() };
    let out = run(p, key, mode, Some((old, j)));
    let r = &out.result;
    // Groups before the step are the earlier traversal's, copied.
    if r.error.is_some()
        || r.slow
        || out.restored
        || out.spoilt
        || out.wrote_ct
        || r.traversal.groups.iter().any(|g| g.step as usize > j)
    {
        return None;
    }
    let visits = &out.mode.taken;
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
    // recirc_id is examined as the datapath always matches it, and the
    // resumed run took from its frozen state only what `thaw_read` says
    // was read (the metadata is in the flow): unless that decided
    // something, keys of other frozen states in the same state at the
    // step get the same suffix (pass 1 of connections from every port).
    if !out.thaw_read {
        same.set(Field::RecircId, 0);
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
        commits: out.mode.commits,
        taken,
        trav: r.traversal,
        from: j,
        key: *key,
        first,
        resumable,
    })
}

/// The mode that makes a suffix: a replay that records the visits it took
/// from the earlier traversal and each commit, with in_port not matched
/// exactly (the ports compared with it are recorded instead).
struct Sharing<'a> {
    replay: ReplayState<'a>,
    /// Each visit that took an earlier visit's outcome: that visit's index
    /// in the earlier traversal, and the flow it saw.
    taken: Vec<(usize, FlowKey)>,
    /// Each commit: where its set actions start and end, and the flow it committed.
    commits: Vec<(usize, usize, FlowKey)>,
}

impl<'a> Mode<'a> for Sharing<'a> {
    const IN_PORT_FIXED: bool = false;

    fn like(&self) -> Option<&'a Traversal> {
        Some(self.replay.r.old)
    }

    fn replayed(&mut self, v: &Visit<'_, 'a>) -> Option<Hit<'a>> {
        let (k, hit) = self.replay.answer(v)?;
        self.taken.push((k, *v.flow));
        Some(hit)
    }

    fn looked_up(&mut self, n: usize, t: u8, outcome: Outcome, wc: &FlowMask, flow: &FlowKey) -> bool {
        self.replay.judge(n, t, outcome, wc, flow)
    }

    fn committed(&mut self, at: usize, end: usize, flow: &FlowKey) {
        self.commits.push((at, end, *flow));
    }
}

/// The bits the actions of visit `step` (counted from 0 in the traversal)
/// and of every later visit read or write, as translating `key` gathers
/// them into its action mask: the part of the action mask a change at that
/// visit can reach. A diagnostic (`examples/share_probe`), not used by
/// maintenance.
pub fn actions_read_from(p: &Pipeline, key: &FlowKey, step: usize) -> FlowMask {
    run(p, key, Mark(step), None).since
}

/// The mode of [`actions_read_from`]: a plain translation that starts
/// gathering action bits once visit `.0` is recorded.
struct Mark(usize);

impl Mode<'_> for Mark {
    fn visited(&mut self, n: usize, flow: &mut Tracked) {
        if n == self.0 {
            flow.mark();
        }
    }
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
        // NORMAL runs only after the last resumable step, so only in the
        // suffix, on the bits its `need` makes every key share: the same
        // lookups.
        t.normal.clone_from(&self.trav.normal);
        // So does learn (its sources are exact, so shared).
        t.learned.clone_from(&self.trav.learned);
        t.fin.clone_from(&self.trav.fin);
        // The clause flows that completed each visit's conjunctions: a
        // visit the suffix took from an earlier traversal has this key's
        // own (its earlier traversal answers it), one it looked up has the
        // suffix's (a function of the bits examined, which `same` holds).
        for k in 0..self.visits() {
            let clauses = if self.taken.iter().any(|tk| tk.offset == k) {
                old.clauses_at(j + k)
            } else {
                self.trav.clauses_at(self.from + k)
            };
            t.clauses.extend(clauses.iter().map(|&(_, c)| ((j + k) as u16, c)));
        }
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
    /// Why it applies to every key and gives each the same actions:
    /// `docs/design.md` section 4.5.
    pub fn stands_in_for(&self, old: &Suffix, agree: &FlowMask, in_ports: &[u32]) -> bool {
        let packet = kairo_odp::packet_mask();
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
