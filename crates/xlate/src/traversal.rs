//! The traversal: what one translation visited (tables and their outcomes,
//! groups and their buckets, the versions of the key each lookup saw). It is
//! the dependency record cache maintenance keeps per megaflow.
//!
//! Invariant: steps are in visit order; a step's `version` names a version
//! recorded in the same traversal, and versions are numbered in order of
//! first sight, so the versions before step `j` are exactly `0..=max` of the
//! steps before it (`Traversal::prefix` relies on it).

use kairo_classifier::RuleId;
use kairo_flow::FlowKey;

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
    /// A lookup in a table with conjunctive flows whose outcome is not
    /// what an ordinary lookup's would be taken for (a conjunction answered
    /// it, or one was completed without an answer): the rule whose actions
    /// ran ([`Outcome::NO_RULE`]: none) and the floor ([`Floor`]'s code)
    /// below which no rule added to the table can change it.
    Conj {
        rule: RuleId,
        floor: u32,
    },
}

/// The lowest rules that can still change a lookup's outcome by being
/// added to the table: none ([`Floor::None`]: any rule may), those of
/// priority above `priority`, or (`ties`) at or above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    None,
    Above { priority: u16, ties: bool },
}

impl Floor {
    /// Can a rule of `priority` added to the table (so losing ties to the
    /// rules there) change the outcome?
    #[inline]
    pub fn admits_new(self, priority: u16) -> bool {
        match self {
            Floor::None => true,
            Floor::Above { priority: p, ties } => priority > p || (ties && priority == p),
        }
    }

    /// Can a change (removal or new instructions) of a rule of `priority`
    /// change the outcome? (Ties count: the rule may be one of those that
    /// decided.)
    #[inline]
    pub fn admits_change(self, priority: u16) -> bool {
        match self {
            Floor::None => true,
            Floor::Above { priority: p, .. } => priority >= p,
        }
    }

    /// [`Floor::admits_change`] for a `change`, else [`Floor::admits_new`].
    #[inline]
    pub fn admits(self, priority: u16, change: bool) -> bool {
        if change {
            self.admits_change(priority)
        } else {
            self.admits_new(priority)
        }
    }

    /// A number per floor, in the order of what they let in: `Above`'s by
    /// priority then ties, [`Floor::None`] above them all.
    pub fn code(self) -> u32 {
        match self {
            Floor::None => u32::MAX,
            Floor::Above { priority, ties } => (u32::from(priority) << 1) | u32::from(ties),
        }
    }

    /// The floor [`Floor::code`] gave `c`.
    pub fn of_code(c: u32) -> Floor {
        if c == u32::MAX {
            Floor::None
        } else {
            Floor::Above { priority: (c >> 1) as u16, ties: c & 1 == 1 }
        }
    }
}

impl Outcome {
    /// [`Outcome::Conj`]'s rule when none ran.
    pub const NO_RULE: RuleId = RuleId::MAX;

    /// The outcome of a lookup that gave `rule` with floor `floor`: the
    /// plain form where it says the same (a rule is its own floor, and a
    /// miss has none).
    pub fn of(rule: Option<RuleId>, rule_priority: u16, floor: Floor) -> Outcome {
        match rule {
            Some(id) if floor == (Floor::Above { priority: rule_priority, ties: false }) => Outcome::Rule(id),
            None if floor == Floor::None => Outcome::Miss,
            _ => Outcome::Conj { rule: rule.unwrap_or(Outcome::NO_RULE), floor: floor.code() },
        }
    }

    /// The rule whose actions ran, if one did.
    #[inline]
    pub fn rule(self) -> Option<RuleId> {
        match self {
            Outcome::Rule(id) => Some(id),
            Outcome::Miss => None,
            Outcome::Conj { rule, .. } => (rule != Outcome::NO_RULE).then_some(rule),
        }
    }

    /// The floor of the outcome (`prio` gives a rule's priority): a plain
    /// rule's is itself, a miss has none.
    #[inline]
    pub fn floor(self, prio: impl FnOnce(RuleId) -> Option<u16>) -> Floor {
        match self {
            Outcome::Rule(id) => match prio(id) {
                Some(priority) => Floor::Above { priority, ties: false },
                None => Floor::None,
            },
            Outcome::Miss => Floor::None,
            Outcome::Conj { floor, .. } => Floor::of_code(floor),
        }
    }
}

/// One table visit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Step {
    pub table: u8,
    pub outcome: Outcome,
    pub via: Via,
    /// Nesting (below [`MAX_DEPTH`](crate::MAX_DEPTH), so a byte: a traversal is kept per megaflow).
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
    /// The group is hashed in the datapath and the packet had no hash yet:
    /// translation froze there for one, choosing no bucket. What it did
    /// depends on how the group is hashed, not on its buckets.
    pub recirc: bool,
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
    pub(crate) tail: u16,
    /// How many leading steps were resumable with no such bucket or
    /// resubmit around them (resuming there needs no such proviso).
    pub(crate) bare: u16,
    /// The (VLAN, MAC) destinations `NORMAL` looked up in the MAC learning
    /// table, in order (`None`: NORMAL did not run): what a change of that
    /// table can alter. No step after the first NORMAL is resumable, so a
    /// re-translation always runs it again.
    pub normal: Option<Box<[(u16, u64)]>>,
    /// The flows `learn` actions made, in order (`None`: no learn ran):
    /// for the caller that handles a real packet to add, and for the
    /// megaflow's hits to refresh. No step after the first learn is
    /// resumable, so a re-translation always makes them again.
    #[serde(skip)]
    pub learned: Option<Box<[crate::translate::Learned]>>,
    /// The `fin_timeout` actions that ran, in order (`None`: none did):
    /// once the megaflow's packets carry FIN or RST, the rules' timeouts
    /// are cut. No step after the first is resumable.
    #[serde(skip)]
    pub fin: Option<Box<[FinTimeout]>>,
    /// The clause flows of the conjunctions each visit's lookup completed
    /// ([`kairo_classifier::ConjLookup::completed`]), by visit number
    /// (ascending), for the step whose outcome they decided: which entries
    /// a clause flow's removal can change. A function of the bits the
    /// lookup examined, as its outcome is.
    #[serde(skip)]
    pub clauses: Vec<(u16, kairo_classifier::RuleId)>,
}

/// A `fin_timeout` that ran: in the actions of rule `rule` of `table`, to
/// cut its timeouts to `idle` and `hard` seconds (0: not that one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FinTimeout {
    pub table: u8,
    pub rule: kairo_classifier::RuleId,
    pub idle: u16,
    pub hard: u16,
}

impl Default for Traversal {
    fn default() -> Self {
        Traversal {
            steps: Vec::new(),
            groups: Vec::new(),
            diffs: Vec::new(),
            ends: vec![0],
            tail: 0,
            bare: 0,
            normal: None,
            learned: None,
            fin: None,
            clauses: Vec::new(),
        }
    }
}

/// A nesting level as kept in a [`Step`] (below [`MAX_DEPTH`](crate::MAX_DEPTH) when kept).
pub(crate) fn small(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

impl Traversal {
    /// An empty traversal with room for one the size of `like`.
    pub(crate) fn with_capacity_of(like: &Traversal) -> Traversal {
        let mut ends = Vec::with_capacity(like.ends.len());
        ends.push(0);
        Traversal {
            steps: Vec::with_capacity(like.steps.len()),
            groups: Vec::with_capacity(like.groups.len()),
            diffs: Vec::with_capacity(like.diffs.len()),
            ends,
            tail: 0,
            bare: 0,
            normal: None,
            learned: None,
            fin: None,
            clauses: Vec::new(),
        }
    }

    /// The same translation's state just before step `j`'s lookup: the
    /// steps before `j`, the groups used before it and the key versions
    /// they saw (room kept for the rest of a traversal like this one).
    /// Where `j` is resumable NORMAL had not run yet: the prefix has no
    /// NORMAL lookups.
    pub(crate) fn prefix(&self, j: usize) -> Traversal {
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
        t.clauses.extend_from_slice(&self.clauses[..self.clauses_from(j)]);
        t
    }

    /// Where the clause flows of visits `j` onwards start in
    /// [`Traversal::clauses`].
    fn clauses_from(&self, j: usize) -> usize {
        self.clauses.partition_point(|&(s, _)| usize::from(s) < j)
    }

    /// The clause flows that completed conjunctions at visit `j`.
    pub fn clauses_at(&self, j: usize) -> &[(u16, kairo_classifier::RuleId)] {
        &self.clauses[self.clauses_from(j)..self.clauses_from(j + 1)]
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
        self.clauses.shrink_to_fit();
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
    pub(crate) fn version_for(&mut self, start: &FlowKey, flow: &FlowKey) -> u16 {
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
