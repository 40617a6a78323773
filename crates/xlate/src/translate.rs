//! The translator: runs a key through the OpenFlow tables from table 0 and
//! produces the datapath actions, the megaflow mask and the traversal
//! ([`translate`], the path of every upcall).
//!
//! Invariant (the megaflow contract, `docs/design.md` section 3): every
//! packet P with `P & mask == key & mask` translates to the same datapath
//! actions. The flow and every bit examined of it live in one [`Tracked`],
//! the only way translation reads or writes the flow; bits are only ever
//! added. Header rewrites are held in the logical flow and committed to the
//! datapath packet only before an output, as set actions for the fields that
//! changed (as `ofproto-dpif-xlate.c` does).
//!
//! Maintenance runs the same interpreter in other modes (a [`Mode`]: replay
//! an earlier traversal in [`crate::replay`], make a shareable suffix in
//! [`crate::suffix`]); a plain translation is the mode [`Plain`], whose hooks
//! are empty and compile away.

use kairo_flow::field::Stage;
use kairo_flow::field::{
    Field, Prereq, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP, MPLS_BOS_MASK, MPLS_MAX_LABELS, ND_ADVERT, ND_SOLICIT, VLAN_CFI,
};
use kairo_flow::parse::{CS_EST, CS_NEW, CS_RPL};
use kairo_flow::{FlowKey, FlowMask};
use kairo_ofproto::ports::PortConfig;
use kairo_ofproto::{Action, GroupType, Instructions, MissBehavior, Rule};

use crate::action_set::ActionSet;
use crate::commit::commit;
use crate::pipeline::Pipeline;
use crate::recirc::{FrozenState, Op, FROZEN_FIELDS};
use crate::tracked::Tracked;
use crate::traversal::{small, GroupUse, Outcome, Step, Traversal, Via};

/// A visit's outcome and the rule whose instructions run there (none: a miss).
/// A visit's outcome, the rule whose instructions run, and the clause flows
/// that completed its conjunctions ([`Traversal::clauses`]; a replayed
/// visit's, as the traversal it came from recorded them).
pub(crate) type Hit<'a> = (Outcome, Option<&'a Rule>, &'a [(u16, kairo_classifier::RuleId)]);
use kairo_odp::{ControllerReason, DpAction, HashAlg};

mod learn;
mod normal;
pub use learn::{admitted, Learned};
pub use normal::learned_from;

/// Nesting limit of resubmits to this or an earlier table and of groups
/// (Open vSwitch's MAX_DEPTH); goto_table, table-miss continues and
/// resubmits to a later table walk the pipeline forward and do not nest.
pub const MAX_DEPTH: u32 = 64;
/// Entries the push/pop stack holds at most (Open vSwitch bounds it at 64
/// kB; 8192 entries of up to 8 bytes fit in that).
pub const MAX_STACK: usize = 8192;
/// Limit of table lookups in one translation (Open vSwitch's MAX_RESUBMITS).
pub const MAX_RESUBMITS: u32 = 4096;
/// Bytes of datapath actions past which a translation stops (Open vSwitch's
/// "resubmits yielded over 64 kB of actions"): it keeps what it made, and
/// the datapath cannot hold them, so no megaflow is installed ([`XlateResult::slow`]).
pub const MAX_ACTION_BYTES: usize = u16::MAX as usize;
/// Limit of group buckets run in one translation. Open vSwitch has none (a
/// chain of 40 groups of 8 buckets runs 8^40 of them); this one is far above
/// what 64 kB of actions can come from (a tree of buckets with 8192 outputs
/// at its leaves has fewer than 8192 inner buckets).
pub const MAX_BUCKETS: u32 = 1 << 16;

/// Why a translation stopped early. The packet is dropped from that point
/// on, as Open vSwitch does, and the error is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum XlateError {
    #[error("translation nested deeper than {MAX_DEPTH} (resubmit/goto/group) at table {table}")]
    TooDeep { table: u8 },
    #[error("translation looked up more than {MAX_RESUBMITS} tables")]
    TooManyResubmits,
    #[error("translation ran more than {MAX_BUCKETS} group buckets")]
    TooManyBuckets,
    /// More than `MAX_STACK` entries pushed (Open vSwitch's "stack too deep").
    #[error("more than {MAX_STACK} entries pushed onto the stack")]
    StackTooDeep,
    /// A push onto three MPLS labels, or a pop under three labels none of
    /// which is the bottom (Open vSwitch's XLATE_TOO_MANY_MPLS_LABELS).
    #[error("{action} on a packet with more MPLS labels than the {MPLS_MAX_LABELS} a flow holds")]
    TooManyMplsLabels { action: &'static str },
    /// The packet arrived under MPLS labels and was popped out of them: what
    /// now needs its L3 header (a lookup, an L3 action, another MPLS action)
    /// waits for the datapath to parse it again. Open vSwitch recirculates
    /// here; kairo does not yet, and drops the packet.
    #[error(
        "`{action}` after pop_mpls needs the headers under the labels, which takes recirculation (not supported yet)"
    )]
    NeedsRecirculation { action: &'static str },
    /// A recirculated packet whose `recirc_id` names no frozen state (Open
    /// vSwitch's XLATE_NO_RECIRCULATION_CONTEXT): it is dropped.
    #[error("recirc_id {id:#x} names no frozen translation (no recirculation context)")]
    NoRecirculationContext { id: u32 },
    /// Only from [`crate::retranslate_checked`], whose caller rejected a
    /// visit: never in a translation of a packet.
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
    /// The actions passed [`MAX_ACTION_BYTES`]: translation stopped there
    /// (not an error: the packet gets what was made), and the datapath
    /// cannot hold them, so this packet is forwarded without installing a
    /// megaflow (Open vSwitch's slow path). Also set with
    /// [`XlateError::TooManyBuckets`], whose record is too big to keep.
    pub slow: bool,
    /// What `NORMAL` would learn from this packet (its source MAC on its
    /// ingress port and VLAN), for the caller that handles a real packet
    /// to put in the MAC table; translation itself never changes it.
    pub learn: Vec<Learn>,
}

/// A source MAC `NORMAL` saw on a port, in a VLAN (see [`XlateResult::learn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Learn {
    pub vlan: u16,
    pub mac: u64,
    pub port: u32,
}

/// Translates `key` through `p` from table 0.
pub fn translate(p: &Pipeline, key: &FlowKey) -> XlateResult {
    run(p, key, Plain, None).result
}

/// A visit about to be looked up, as a [`Mode`] sees it.
pub(crate) struct Visit<'v, 'a> {
    pub p: &'a Pipeline,
    pub table: u8,
    /// The key version the visit sees ([`Traversal::version`] of `trav`).
    pub version: u16,
    /// The traversal so far.
    pub trav: &'v Traversal,
    /// The key translation started from.
    pub start: &'v FlowKey,
    /// The flow at the visit (unexamined: a mode that takes an outcome from
    /// elsewhere must itself make sure it holds for this flow).
    pub flow: &'v FlowKey,
}

/// How a translation differs from a plain one: hooks the translator calls.
/// Every hook's default is what [`translate`] does.
pub(crate) trait Mode<'a> {
    /// Whether in_port is matched exactly (false: a suffix made for
    /// sharing records the ports compared with it instead).
    const IN_PORT_FIXED: bool = true;

    /// An earlier traversal to size the new one like (a re-translation
    /// mostly takes the earlier path).
    fn like(&self) -> Option<&'a Traversal> {
        None
    }

    /// The outcome of this visit taken from elsewhere instead of a lookup,
    /// and the rule whose instructions run (none: a miss).
    #[inline]
    fn replayed(&mut self, _v: &Visit<'_, 'a>) -> Option<Hit<'a>> {
        None
    }

    /// A lookup made anew for visit number `n` (table `t`, its outcome, the
    /// bits it examined, the flow there). False rejects it: the translation
    /// stops with [`XlateError::Rejected`].
    #[inline]
    fn looked_up(&mut self, _n: usize, _t: u8, _outcome: Outcome, _wc: &FlowMask, _flow: &FlowKey) -> bool {
        true
    }

    /// Visit number `n` was recorded (before its instructions run).
    #[inline]
    fn visited(&mut self, _n: usize, _flow: &mut Tracked) {}

    /// A commit of `flow` to the packet wrote `odp[at..end]`.
    #[inline]
    fn committed(&mut self, _at: usize, _end: usize, _flow: &FlowKey) {}
}

/// A plain translation: every visit looked up.
pub(crate) struct Plain;

impl Mode<'_> for Plain {}

/// What [`run`] gives: the result, the mode back, and what maintenance
/// modes ask of a translation beyond its result.
pub(crate) struct Run<M> {
    pub result: XlateResult,
    pub mode: M,
    /// Lookups made (the resumed-at step's predecessors counted).
    pub lookups: u32,
    /// Everything examined, pipeline-only fields included.
    pub examined: FlowMask,
    /// Whether in_port was read other than compared with a port.
    pub in_port_read: bool,
    /// The ports compared with in_port (when not matched exactly).
    pub ports: Vec<u32>,
    /// The action bits from a marked visit on.
    pub since: FlowMask,
    /// Whether a resubmit put in_port back after its lookup.
    pub restored: bool,
    /// The deepest nesting a lookup was made at.
    pub deepest: u32,
    /// Resumed where the result needs the flow put back (see
    /// [`Traversal::resumable`]): the result is not the translation's.
    pub spoilt: bool,
    /// Conntrack fields were written without being recorded (a `ct`, a
    /// `ct_clear`): two keys of one megaflow can differ there, so their
    /// key versions can too, and the part from here is not shared.
    pub wrote_ct: bool,
    /// What the frozen state says besides its metadata (`hashed`,
    /// `conntracked`) decided something: the result depends on which
    /// frozen state the key's recirc_id names, not only on the flow.
    pub thaw_read: bool,
}

/// Translates `key` in mode `mode`, from table 0 or, given `from`, from that
/// step of an earlier traversal of the same key (a resumable one), in the
/// state translation had there.
pub(crate) fn run<'a, M: Mode<'a>>(
    p: &'a Pipeline,
    key: &FlowKey,
    mode: M,
    from: Option<(&'a Traversal, usize)>,
) -> Run<M> {
    let mut x = Translator::new(p, key, mode, from);
    let mut spoilt = false;
    match from {
        // The state translation had just before that step's lookup: nothing
        // output (so nothing committed), the action set empty, the key the
        // step recorded, its nesting, and one lookup per earlier step.
        Some((old, j)) => {
            let at = old.steps[j];
            // A recirculated pass goes on with what its frozen state says
            // of the packet (the rest of that state is in the key versions,
            // and its action set, if any, made no step resumable).
            if let Some(st) = p.recircs().get(key.get(Field::RecircId) as u32).filter(|_| key.get(Field::RecircId) != 0)
            {
                x.hashed = st.hashed;
                x.conntracked = st.conntracked;
            }
            x.flow.restore(old.key_at(key, &at));
            x.depth = at.depth.into();
            x.nest = at.nest.into();
            x.lookups = j as u32;
            x.table(at.table, at.via);
            // Inside a bucket or in_port-restoring resubmit, an action set
            // left to run would have run on the flow they put back.
            spoilt = j >= old.resumable_bare() && !x.action_set.is_empty();
        }
        None => x.start(),
    }
    x.finish(key, spoilt)
}

/// Translates `actions` for a packet with key `key`, as a packet-out does
/// (an action that looks the packet up goes into `p`).
pub fn translate_actions(p: &Pipeline, key: &FlowKey, actions: &[Action]) -> XlateResult {
    let mut x = Translator::new(p, key, Plain, None);
    x.actions(actions);
    x.finish(key, false).result
}

impl<'a, M: Mode<'a>> Translator<'a, M> {
    /// A translator at the start of `key`'s translation, its traversal the
    /// prefix of `from` up to its step (a resumed translation) or sized like
    /// the mode's earlier traversal.
    fn new(p: &'a Pipeline, key: &FlowKey, mode: M, from: Option<(&'a Traversal, usize)>) -> Self {
        let trav = match (from, mode.like()) {
            (Some((old, at)), _) => old.prefix(at),
            (None, Some(old)) => Traversal::with_capacity_of(old),
            (None, None) => Traversal::default(),
        };
        Translator {
            p,
            flow: Tracked::new(key, M::IN_PORT_FIXED),
            base: *key,
            start: *key,
            odp: Vec::with_capacity(if mode.like().is_some() { 8 } else { 0 }),
            action_set: ActionSet::default(),
            trav,
            depth: 0,
            nest: 0,
            lookups: 0,
            pending: 0,
            restoring: 0,
            exit: false,
            error: None,
            last: (*key, 0),
            restored: false,
            deepest: 0,
            table_id: 0,
            rule: (0, false),
            buckets: 0,
            odp_bytes: (0, 0),
            slow: false,
            live: rustc_hash::FxHashMap::default(),
            l3_hidden: false,
            no_recv: false,
            freezing: None,
            hashed: false,
            conntracked: false,
            wrote_ct: false,
            thaw_read: false,
            normal: Vec::new(),
            learn: Vec::new(),
            learned: Vec::new(),
            fin: Vec::new(),
            rule_id: None,
            stack: Vec::new(),
            mode,
        }
    }

    /// The action set run, and the result.
    fn finish(self, key: &FlowKey, spoilt: bool) -> Run<M> {
        let mut x = self;
        // The action set runs at the end of the pipeline, even after a table
        // miss, unless the translation froze (the frozen state holds it).
        if x.error.is_none() && x.freezing.is_none() {
            let set = std::mem::take(&mut x.action_set).into_list();
            // Lookups from here on are not resumable: writes to the action set
            // now go to one that never runs.
            x.pending += 1;
            x.actions(&set);
            x.pending -= 1;
        }
        if x.error.is_none() {
            x.finish_freezing();
        }
        if x.error.is_some() {
            x.odp.clear();
        }
        let in_port_read = x.flow.in_port_read();
        if !x.normal.is_empty() {
            x.trav.normal = Some(std::mem::take(&mut x.normal).into_boxed_slice());
        }
        if !x.learned.is_empty() {
            x.trav.learned = Some(std::mem::take(&mut x.learned).into_boxed_slice());
        }
        if !x.fin.is_empty() {
            x.trav.fin = Some(std::mem::take(&mut x.fin).into_boxed_slice());
        }
        let seen = x.flow.finish(key);
        Run {
            result: XlateResult {
                actions: x.odp,
                mask: seen.mask,
                traversal: x.trav,
                final_flow: seen.flow,
                error: x.error,
                action_mask: seen.action_mask,
                slow: x.slow,
                learn: x.learn,
            },
            mode: x.mode,
            lookups: x.lookups,
            examined: seen.all,
            in_port_read,
            ports: seen.ports,
            since: seen.since,
            restored: x.restored,
            deepest: x.deepest,
            spoilt,
            wrote_ct: x.wrote_ct,
            thaw_read: x.thaw_read,
        }
    }
}

/// One translation in progress.
struct Translator<'a, M> {
    p: &'a Pipeline,
    /// The logical flow and what was examined of it.
    flow: Tracked,
    /// The packet as the datapath has it (the key, then each commit).
    base: FlowKey,
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
    /// The flow when its version was last asked, and that version.
    last: (FlowKey, u16),
    restored: bool,
    deepest: u32,
    /// The table whose rule's actions are running (0 before any lookup).
    table_id: u8,
    /// That rule's cookie, and whether it is its table's table-miss rule
    /// (priority 0, matching everything), for controller actions.
    rule: (u64, bool),
    /// Group buckets run so far.
    buckets: u32,
    /// Netlink bytes of `odp`, counted up to the first of its actions not
    /// yet counted.
    odp_bytes: (usize, usize),
    /// The actions passed [`MAX_ACTION_BYTES`].
    slow: bool,
    /// Group liveness found so far, by (group, depth).
    live: rustc_hash::FxHashMap<(u32, u32), bool>,
    /// The packet arrived under MPLS labels and a pop took it out of them:
    /// its L3 and L4 headers are not in the key (Open vSwitch's `was_mpls`).
    /// A packet pushed and popped within the translation keeps its headers
    /// in the flow, so it never sets this.
    l3_hidden: bool,
    /// The packet came in on a `no-receive` port: its first lookup runs
    /// no actions (Open vSwitch looks table 0 up, for the rule's counters
    /// and the megaflow, and drops).
    no_recv: bool,
    /// Translation is freezing for recirculation: what is left to do so
    /// far (see [`crate::recirc`]).
    freezing: Option<Freezing>,
    /// The packet has its datapath hash (see [`FrozenState::hashed`]).
    hashed: bool,
    /// The packet went through the connection tracker on an earlier pass
    /// and has not been cleared since (see [`FrozenState::conntracked`]).
    conntracked: bool,
    /// See [`Run::wrote_ct`].
    wrote_ct: bool,
    /// The flows `learn` actions made so far ([`Traversal::learned`]).
    learned: Vec<Learned>,
    /// The `fin_timeout` actions run so far ([`Traversal::fin`]).
    fin: Vec<crate::traversal::FinTimeout>,
    /// The id of the rule whose actions are running (none before any
    /// lookup, or in a recirculated pass's frozen actions).
    rule_id: Option<kairo_classifier::RuleId>,
    /// See [`Run::thaw_read`].
    thaw_read: bool,
    /// The MAC table lookups NORMAL made ([`Traversal::normal`]): none
    /// yet, or no lookup after is resumable.
    normal: Vec<(u16, u64)>,
    /// What NORMAL learned ([`XlateResult::learn`]).
    learn: Vec<Learn>,
    /// The push/pop stack (values of the bits pushed), bottom first.
    stack: Vec<u64>,
    mode: M,
}

/// A freeze in progress: the ops gathered as translation unwinds to where
/// the frozen state is made (the end of a bucket or of the translation),
/// and the datapath hash to take before recirculating.
struct Freezing {
    ops: Vec<Op>,
    table: u8,
    hash: Option<(HashAlg, u32)>,
}

/// What follows a `check_pkt_larger` in Open vSwitch's flat list of
/// actions, which each of its two lists runs.
#[derive(Clone, Copy)]
enum Rest<'r> {
    /// The rest of an action list, then, for a rule's own list, the rule's
    /// remaining instructions.
    List(&'r [Action], Option<&'r Instructions>),
    /// The rest of a frozen state's ops.
    Ops(&'r [Op]),
}

/// Whether a rule has instructions after its apply-actions list.
fn has_after_apply(inst: &Instructions) -> bool {
    inst.clear_actions || !inst.write.is_empty() || inst.write_metadata.is_some() || inst.goto_table.is_some()
}

impl<'a, M: Mode<'a>> Translator<'a, M> {
    /// The version of the current flow (adding one if it is new). Compares
    /// the whole key, so every change counts (rewrites, resubmit's in_port).
    fn key_version(&mut self) -> u16 {
        let flow = self.flow.unexamined();
        if *flow == self.last.0 {
            return self.last.1;
        }
        let v = self.trav.version_for(&self.start, flow);
        self.last = (*flow, v);
        v
    }

    /// Whether the actions made so far leave room for more (checked where
    /// Open vSwitch checks: before each lookup and each group). Past the
    /// bound, translation stops without an error and is marked slow.
    fn room_for_actions(&mut self) -> bool {
        self.count_actions();
        if self.odp_bytes.0 > MAX_ACTION_BYTES {
            self.slow = true;
            self.exit = true;
            return false;
        }
        true
    }

    /// Counts the Netlink bytes of the actions made since the last count.
    fn count_actions(&mut self) {
        let (bytes, counted) = &mut self.odp_bytes;
        *bytes += self.odp[*counted..].iter().map(DpAction::netlink_len).sum::<usize>();
        *counted = self.odp.len();
    }

    fn fail(&mut self, e: XlateError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.exit = true;
    }

    /// Is the field's prerequisite met by the current flow? Records what it
    /// reads, in Open vSwitch's order (`mf_are_prereqs_ok`): eth_type, then
    /// nw_proto, then for ND the ICMPv6 code before the type.
    fn prereq_ok(&mut self, f: Field) -> bool {
        let eth = self.flow.get(Field::EthType);
        let (ip4, ip6) = (eth == ETH_TYPE_IP, eth == ETH_TYPE_IPV6);
        let proto = |flow: &mut Tracked| if ip4 || ip6 { flow.get(Field::IpProto) } else { u64::MAX };
        let nd = |flow: &mut Tracked, types: &[u64]| {
            ip6 && flow.get(Field::IpProto) == IPPROTO_ICMPV6
                && flow.get(Field::TpDst) == 0
                && types.contains(&flow.get(Field::TpSrc))
        };
        match f.def().prereq {
            Prereq::None => true,
            Prereq::Ipv4 => ip4,
            Prereq::Ipv6 => ip6,
            Prereq::Ip => ip4 || ip6,
            Prereq::Arp => eth == ETH_TYPE_ARP,
            Prereq::L4 => matches!(proto(&mut self.flow), IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP),
            Prereq::Tcp => proto(&mut self.flow) == IPPROTO_TCP,
            Prereq::Icmp => ip4 && self.flow.get(Field::IpProto) == IPPROTO_ICMP,
            Prereq::Icmpv6 => ip6 && self.flow.get(Field::IpProto) == IPPROTO_ICMPV6,
            Prereq::Nd => nd(&mut self.flow, &[ND_SOLICIT, ND_ADVERT]),
            Prereq::NdSolicit => nd(&mut self.flow, &[ND_SOLICIT]),
            Prereq::NdAdvert => nd(&mut self.flow, &[ND_ADVERT]),
            Prereq::Mpls => kairo_flow::field::is_mpls_type(eth),
            // As Open vSwitch's is_ct_valid on a flow: new, est or rpl.
            Prereq::Ct => self.flow.get_bits(Field::CtState, CS_NEW | CS_EST | CS_RPL) != 0,
        }
    }

    fn table(&mut self, t: u8, via: Via) {
        if self.exit {
            return;
        }
        if self.l3_hidden {
            return self.fail(XlateError::NeedsRecirculation { action: "table lookup" });
        }
        self.lookups += 1;
        if self.lookups > MAX_RESUBMITS {
            return self.fail(XlateError::TooManyResubmits);
        }
        if self.depth >= MAX_DEPTH {
            return self.fail(XlateError::TooDeep { table: t });
        }
        if !self.room_for_actions() {
            return;
        }
        self.deepest = self.deepest.max(self.depth);
        // (After NORMAL nothing is: what it did depends on the MAC table,
        // which a re-translation must read again.)
        // (Nor with something on the stack: what follows may pop it.)
        // (Nor after a learn or a fin_timeout: a re-translation makes its
        // flow, or its record, again.)
        let resumable = self.pending == 0
            && self.odp.is_empty()
            && self.action_set.is_empty()
            && self.normal.is_empty()
            && self.learned.is_empty()
            && self.fin.is_empty()
            && self.stack.is_empty();
        let bare = resumable && self.restoring == 0;
        let version = self.key_version();
        let p = self.p;
        let visit = Visit { p, table: t, version, trav: &self.trav, start: &self.start, flow: self.flow.unexamined() };
        let n = self.trav.steps.len();
        let step_no = n as u16; // below MAX_RESUBMITS visits, as `tail`
        let (outcome, hit) = match self.mode.replayed(&visit) {
            Some((outcome, hit, clauses)) => {
                self.trav.clauses.extend(clauses.iter().map(|&(_, c)| (step_no, c)));
                (outcome, hit)
            }
            None => {
                let table = p.table(t);
                let clauses = &mut self.trav.clauses;
                let ((outcome, hit), wc) = self.flow.lookup(|flow, wc| match table {
                    Some(tb) => {
                        let (outcome, r) = tb.lookup(flow, wc, &mut |c| clauses.push((step_no, c)));
                        (outcome, r.map(|r| &*r.payload))
                    }
                    None => (Outcome::Miss, None),
                });
                if !self.mode.looked_up(n, t, outcome, &wc, self.flow.unexamined()) {
                    return self.fail(XlateError::Rejected);
                }
                (outcome, hit)
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
        self.trav.steps.push(step(outcome));
        self.mode.visited(n, &mut self.flow);
        if self.no_recv {
            // In on a no-receive port: looked up, nothing run.
            self.exit = true;
            return;
        }
        match hit {
            Some(r) => {
                let inst: &Instructions = &r.inst;
                let outer = std::mem::replace(&mut self.table_id, t);
                let miss_rule = r.priority == 0 && r.m.mask().is_zero();
                let outer_rule = std::mem::replace(&mut self.rule, (r.cookie, miss_rule));
                let outer_id = std::mem::replace(&mut self.rule_id, outcome.rule());
                self.instructions(inst);
                self.table_id = outer;
                self.rule = outer_rule;
                self.rule_id = outer_id;
                if let Some(fz) = self.freezing.as_mut() {
                    // What the outer list has left is that rule's.
                    fz.ops.push(Op::Rule { table: outer, cookie: outer_rule.0, miss: outer_rule.1 });
                }
            }
            None => {
                // A miss that continues goes on to a later table: the
                // pipeline walked forward, not a nesting.
                if let MissBehavior::Continue(n) = p.miss(t) {
                    self.table(n, Via::MissContinue);
                }
            }
        }
    }

    fn instructions(&mut self, inst: &Instructions) {
        if let Some(m) = inst.meter {
            // Before the rule's actions, as Open vSwitch's xlate_meter_action.
            self.odp.push(DpAction::Meter(m));
        }
        let after = u32::from(has_after_apply(inst));
        self.pending += after;
        let done = self.actions_in(&inst.apply, Some(inst));
        self.pending -= after;
        self.after_apply(inst, done);
    }

    /// A rule's instructions after its apply-actions list, which ran to
    /// its end (`done`) or not.
    fn after_apply(&mut self, inst: &Instructions, done: bool) {
        if done && has_after_apply(inst) && self.l3_hidden && self.freezing.is_none() && !self.exit {
            // Open vSwitch recirculates before any instruction after a pop
            // (they are actions of its list; recirc_for_mpls spares none).
            self.freeze_here(None);
        }
        if let Some(fz) = self.freezing.as_mut() {
            // The rest of the instructions run after the recirculation.
            if inst.clear_actions {
                fz.ops.push(Op::ClearActions);
            }
            if !inst.write.is_empty() {
                fz.ops.push(Op::WriteActions(inst.write.clone()));
            }
            if let Some((value, mask)) = inst.write_metadata {
                fz.ops.push(Op::WriteMetadata { value, mask });
            }
            if let Some(g) = inst.goto_table {
                fz.ops.push(Op::Goto(g));
            }
            return;
        }
        if !done {
            return;
        }
        if inst.clear_actions {
            self.action_set = ActionSet::default();
        }
        self.action_set.write(&inst.write);
        if let Some((v, m)) = inst.write_metadata {
            self.flow.write_pipeline(Field::Metadata, v, m);
        }
        if let Some(g) = inst.goto_table {
            self.table(g, Via::Goto);
        }
    }

    /// Commits the flow's rewrites to the datapath packet.
    fn commit(&mut self) {
        let at = self.odp.len();
        let flow = self.flow.unexamined();
        // Which label stack entries the packet and the flow share, and what
        // a set writes besides the bits actions changed, come from the
        // label stacks: a commit where either is MPLS depends on all of them
        // (a packet without labels has them at zero, so this splits nothing).
        let labelled = self.base.is_mpls() || flow.is_mpls();
        commit(&mut self.base, flow, &mut self.odp);
        self.mode.committed(at, self.odp.len(), flow);
        if labelled {
            for i in 0..MPLS_MAX_LABELS {
                self.flow.mpls_lse_bits(i, u32::MAX);
            }
        }
    }

    fn output(&mut self, port: u32) {
        if self.p.port_config(port).has(PortConfig::NO_FWD) {
            return; // OFPPC_NO_FWD set, skipping output
        }
        self.commit();
        self.odp.push(DpAction::Output(port));
    }

    /// Runs an action list. Returns false if an action ended the list early
    /// (dec_ttl reaching zero ends the rest of the list, not the pipeline: the
    /// caller, an outer resubmit and the action set carry on, as in Open vSwitch).
    fn actions(&mut self, list: &[Action]) -> bool {
        self.actions_in(list, None)
    }

    /// [`Self::actions`] of a list that is a rule's own (`inst`: the rule's
    /// instructions, whose remaining ones a `check_pkt_larger` runs too).
    fn actions_in(&mut self, list: &[Action], inst: Option<&Instructions>) -> bool {
        for (i, a) in list.iter().enumerate() {
            if let Some(fz) = self.freezing.as_mut() {
                // Freezing: the rest of this list runs after the recirculation.
                fz.ops.extend(list[i..].iter().cloned().map(Op::Act));
                return false;
            }
            if let (Action::CheckPktLarger { len, dst }, false) = (a, self.l3_hidden) {
                // The rest of the list runs inside it, twice; the list ends.
                if !self.exit {
                    self.check_pkt_larger(*len, *dst, Rest::List(&list[i + 1..], inst));
                }
                return false;
            }
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

    /// Starts a translation: from table 0 for a packet's first pass, else
    /// from the frozen state its `recirc_id` names.
    fn start(&mut self) {
        let id = self.start.get(Field::RecircId) as u32;
        if id == 0 {
            let in_port = self.flow.unexamined().get(Field::InPort) as u32;
            self.no_recv = self.p.port_config(in_port).has(PortConfig::NO_RECV);
            return self.table(0, Via::Start);
        }
        let Some(st) = self.p.recircs().get(id) else {
            // No megaflow for it: the id may name another state one day.
            self.slow = true;
            return self.fail(XlateError::NoRecirculationContext { id });
        };
        // The frozen metadata replaces what the datapath key has there (it
        // does not carry them): the megaflow matches recirc_id, which
        // names these values, not the values themselves.
        let mut flow = *self.flow.unexamined();
        for (f, v) in FROZEN_FIELDS.iter().zip(st.metadata) {
            flow.set(*f, v);
        }
        self.flow.restore(flow);
        if st.floods() {
            self.used_group(crate::recirc::FROZEN_FLOOD, vec![], false);
        }
        // (Nothing is hidden under labels: the datapath parsed the packet
        // again.)
        self.hashed = st.hashed;
        self.conntracked = st.conntracked;
        self.stack.clone_from(&st.stack);
        self.action_set.write(&st.action_set);
        if st.ops.is_empty() {
            self.table(st.table, Via::Start);
        } else {
            self.ops(&st.ops);
        }
    }

    /// Runs a frozen state's ops. An action that ends its rule's list
    /// (dec_ttl at TTL 1) skips the rest of that rule's ops, up to the next
    /// rule's.
    fn ops(&mut self, ops: &[Op]) {
        let mut skip = false;
        for (i, op) in ops.iter().enumerate() {
            if self.exit {
                return;
            }
            if skip && !matches!(op, Op::Rule { .. }) {
                continue;
            }
            skip = false;
            if let (Op::Act(Action::CheckPktLarger { len, dst }), false) = (op, self.l3_hidden) {
                // The rest of the ops run inside it, twice (in Open
                // vSwitch they are one list of actions); they end here.
                return self.check_pkt_larger(*len, *dst, Rest::Ops(&ops[i + 1..]));
            }
            let more = u32::from(i + 1 < ops.len());
            self.pending += more;
            match op {
                Op::Rule { table, cookie, miss } => {
                    self.table_id = *table;
                    self.rule = (*cookie, *miss);
                    self.rule_id = None;
                }
                Op::Act(a) => skip = !self.action(a),
                Op::ClearActions => self.action_set = ActionSet::default(),
                Op::WriteActions(w) => self.action_set.write(w),
                Op::WriteMetadata { value, mask } => self.flow.write_pipeline(Field::Metadata, *value, *mask),
                Op::Goto(t) => self.table(*t, Via::Goto),
            }
            self.pending -= more;
            if let Some(fz) = self.freezing.as_mut() {
                // Freezing again: the rest runs after that recirculation.
                fz.ops.extend(ops[i + 1..].iter().cloned());
                return;
            }
        }
    }

    /// Starts freezing at the action `a` of the current rule, which runs
    /// again after the recirculation (with what the datapath found out).
    fn freeze_at(&mut self, a: Action, hash: Option<(HashAlg, u32)>) {
        self.freeze_here(hash);
        if let Some(fz) = self.freezing.as_mut() {
            fz.ops.push(Op::Act(a));
        }
    }

    /// Starts freezing in the current rule's context, before whatever it
    /// has left (the caller's to add).
    fn freeze_here(&mut self, hash: Option<(HashAlg, u32)>) {
        let (cookie, miss) = self.rule;
        let ops = vec![Op::Rule { table: self.table_id, cookie, miss }];
        self.freezing = Some(Freezing { ops, table: 0, hash });
        self.exit = true;
    }

    /// Ends a freeze: commits the flow, makes the frozen state (the ops
    /// gathered, the action set, the metadata) and emits the datapath hash,
    /// if any, and `recirc` of the state's id. Nothing if not freezing.
    fn finish_freezing(&mut self) {
        let Some(fz) = self.freezing.take() else { return };
        self.commit();
        let metadata = self.frozen_metadata();
        let mut ops = fz.ops;
        // A rule's context with nothing of its own after it says nothing.
        let mut tidy: Vec<Op> = Vec::with_capacity(ops.len());
        for op in ops.drain(..) {
            if matches!(op, Op::Rule { .. }) && matches!(tidy.last(), Some(Op::Rule { .. })) {
                tidy.pop();
            }
            tidy.push(op);
        }
        if matches!(tidy.last(), Some(Op::Rule { .. })) {
            tidy.pop();
        }
        let state = FrozenState {
            ops: tidy,
            table: fz.table,
            action_set: self.action_set.clone().into_list(),
            metadata,
            hashed: self.hashed || fz.hash.is_some(),
            conntracked: self.conntracked,
            stack: self.stack.clone(),
        };
        self.thaw_read = true;
        let id = self.p.recircs().intern(state);
        if let Some((alg, basis)) = fz.hash {
            self.odp.push(DpAction::Hash { alg, basis });
        }
        self.odp.push(DpAction::Recirc(id));
    }

    /// The values of [`FROZEN_FIELDS`] now, as a freeze and a packet-in
    /// keep them.
    fn frozen_metadata(&mut self) -> [u64; FROZEN_FIELDS.len()] {
        let mut metadata = [0; FROZEN_FIELDS.len()];
        for (m, f) in metadata.iter_mut().zip(FROZEN_FIELDS) {
            *m = if f == Field::InPort || f.pipeline_only() {
                // Recorded: in_port is matched, and registers and metadata
                // leave the mask where the key has them at zero.
                self.flow.get(f)
            } else {
                // pkt_mark and tunnel metadata: zero in every key the
                // datapath makes, so a value here was written by an action
                // whose own reads were recorded.
                self.flow.unexamined().get(f)
            };
        }
        metadata
    }

    /// What a packet-in of a controller action here says besides the
    /// packet: the frozen metadata that is not zero (Open vSwitch's
    /// controller action freezes it), in_port aside, and `userdata`.
    fn packet_in_meta(&mut self, userdata: &[u8]) -> Box<kairo_odp::PacketInMeta> {
        let values = self.frozen_metadata();
        let fields =
            FROZEN_FIELDS.iter().zip(values).filter(|(f, v)| **f != Field::InPort && *v != 0).map(|(f, v)| (*f, v));
        Box::new(kairo_odp::PacketInMeta { fields: fields.collect(), userdata: userdata.to_vec() })
    }

    /// `check_pkt_larger(size)->dst` followed by `rest`, as Open vSwitch
    /// 3.1's `xlate_check_pkt_larger`: the flow committed, then `rest` run
    /// twice, with the bit 1 (packets longer than `size`) and with 0, each
    /// ended by the action set and by its own freeze, if it froze, into the
    /// two lists of one `check_pkt_len`. Between the two the flow, the
    /// packet and what is known of it are put back, not the action set and
    /// the stack: Open vSwitch copies those once for both (what the first
    /// list's end took of the set, the second does not see). Afterwards all
    /// is put back; the caller's list ends, and whatever encloses it goes
    /// on (unless the first list froze). Visits inside are never resumed
    /// at, and no suffix made across it is shared.
    fn check_pkt_larger(&mut self, size: u16, dst: kairo_ofproto::SubField, rest: Rest<'_>) {
        self.commit();
        let saved = (*self.flow.unexamined(), self.base, self.l3_hidden, self.conntracked);
        let (set, stack) = (self.action_set.clone(), self.stack.clone());
        self.count_actions();
        let outer = std::mem::take(&mut self.odp);
        self.odp_bytes.1 = 0;
        self.pending += 1;
        self.restoring += 1;
        self.restored = true;
        let mut lists: [Vec<DpAction>; 2] = Default::default();
        let mut exit = false;
        for (n, bit) in [1u64, 0].into_iter().enumerate() {
            if n == 1 {
                self.flow.restore(saved.0);
                (self.base, self.l3_hidden, self.conntracked) = (saved.1, saved.2, saved.3);
                exit = self.exit;
                if self.error.is_some() || self.slow {
                    break;
                }
                self.exit = false;
            }
            if self.prereq_ok(dst.field) {
                self.flow.set_masked(dst.field, bit << dst.ofs, dst.mask());
            }
            match rest {
                Rest::List(list, inst) => {
                    let done = self.actions_in(list, inst);
                    if let Some(inst) = inst {
                        self.after_apply(inst, done);
                    }
                }
                Rest::Ops(ops) => self.ops(ops),
            }
            if self.error.is_none() && self.freezing.is_none() {
                let set = std::mem::take(&mut self.action_set).into_list();
                self.actions(&set);
            }
            if self.freezing.is_some() && self.error.is_none() && !self.slow {
                self.finish_freezing();
            }
            self.freezing = None;
            self.count_actions();
            lists[n] = std::mem::take(&mut self.odp);
            self.odp_bytes.1 = 0;
        }
        self.restoring -= 1;
        self.pending -= 1;
        let [gt, le] = lists;
        self.odp = outer;
        self.odp.push(DpAction::CheckPktLen(Box::new(kairo_odp::CheckPktLen { size, gt, le })));
        // The lists are counted; the action's own attributes are not yet.
        self.odp_bytes.0 += 20;
        self.odp_bytes.1 = self.odp.len();
        self.flow.restore(saved.0);
        (self.base, self.l3_hidden, self.conntracked) = (saved.1, saved.2, saved.3);
        (self.action_set, self.stack) = (set, stack);
        self.exit = exit || self.slow;
    }

    /// `clone(...)`, as Open vSwitch runs a clone of reversible actions in
    /// line: the body on the flow as it is, then the clone's own action
    /// set (a copy of the pipeline's, with what the body wrote), then the
    /// flow, the action set and what was known of the packet are put back;
    /// what the body changed of the packet, the next commit undoes. A body
    /// that froze (a `ct` with a table, a datapath-hashed group, reached
    /// through a resubmit or a group) recirculates with the rest of the body
    /// only, and translation ends there, as Open vSwitch's does (unlike after
    /// a group bucket, nothing after the clone runs). Visits inside are never
    /// resumed at: a re-translation starts before the clone.
    fn clone_actions(&mut self, body: &[Action]) {
        let saved = (*self.flow.unexamined(), self.l3_hidden, self.action_set.clone());
        let stack = self.stack.clone();
        self.pending += 1;
        self.restoring += 1;
        self.restored = true;
        self.actions(body);
        if self.error.is_none() && self.freezing.is_none() {
            let set = std::mem::take(&mut self.action_set).into_list();
            self.actions(&set);
        }
        self.restoring -= 1;
        self.pending -= 1;
        // Open vSwitch finishes the freeze inside the clone and leaves the
        // translation ended: nothing after the clone runs, not even the
        // action set (the frozen state holds only the body's rest).
        if self.freezing.is_some() && self.error.is_none() && !self.slow {
            self.finish_freezing();
        }
        self.freezing = None;
        self.flow.restore(saved.0);
        // (Not whether the packet is tracked: a ct_clear inside cleared the
        // packet itself, as in Open vSwitch, which runs it in line.)
        (self.l3_hidden, self.action_set) = (saved.1, saved.2);
        self.stack = stack;
    }

    /// The VLAN tags, both recorded whole (the commit compares both).
    fn vlan_tci(&mut self) -> u64 {
        self.flow.examine(Field::VlanTciInner);
        self.flow.get(Field::VlanTci)
    }

    fn action(&mut self, a: &Action) -> bool {
        if self.l3_hidden && !self.exit && recirculates_after_pop(a) {
            // The header under the labels takes a recirculation to show:
            // this action runs again after it (Open vSwitch's
            // recirc_for_mpls).
            self.freeze_at(a.clone(), None);
            return true;
        }
        match a {
            Action::Output(p) => {
                // Never back out of the ingress port unless asked with in_port.
                if !self.flow.is_in_port(*p) {
                    self.output(*p);
                }
            }
            Action::Clone(body) => self.clone_actions(body),
            Action::CheckPktLarger { len, dst } => {
                // Run on its own: nothing after it (a list gives it the rest).
                self.check_pkt_larger(*len, *dst, Rest::List(&[], None));
                return false;
            }
            Action::Normal => self.normal(),
            Action::Learn(l) => self.learn_flow(l),
            Action::FinTimeout { idle, hard } => {
                // As Open vSwitch: the IP protocol is exact; whether the
                // packets carry FIN or RST is for their statistics to say.
                self.flow.examine(Field::IpProto);
                if let Some(rule) = self.rule_id {
                    let f = crate::traversal::FinTimeout { table: self.table_id, rule, idle: *idle, hard: *hard };
                    self.fin.push(f);
                }
            }
            Action::OutputReg { src, max_len } => {
                let port = self.flow.get_bits(src.field, src.mask()) >> src.ofs;
                if let Some(a) = output_reg_port(port, *max_len) {
                    return self.action(&a);
                }
            }
            Action::InPort => {
                let in_port = self.flow.get(Field::InPort) as u32;
                self.output(in_port)
            }
            Action::Flood | Action::All => {
                let in_port = self.flow.get(Field::InPort);
                let all = matches!(a, Action::All);
                let ports: Vec<u32> = self
                    .p
                    .ports()
                    .filter(|&p| p as u64 != in_port && (all || !self.p.port_config(p).has(PortConfig::NO_FLOOD)))
                    .collect();
                for p in ports {
                    self.output(p);
                }
            }
            Action::Controller { max_len, reason, id, userdata } => {
                self.commit();
                // (A table-miss rule's `action` is reported as no_match, as
                // Open vSwitch reports it in OpenFlow 1.3.)
                let reason = match reason {
                    ControllerReason::Action if self.rule.1 => ControllerReason::NoMatch,
                    r => *r,
                };
                let (table, cookie) = (self.table_id, self.rule.0);
                let controller_id = *id;
                let meta = self.packet_in_meta(userdata);
                self.odp.push(DpAction::Controller { reason, max_len: *max_len, table, cookie, controller_id, meta });
            }
            Action::SetField { field, value, mask } => {
                if self.prereq_ok(*field) {
                    self.flow.set_masked(*field, *value, *mask);
                }
            }
            Action::SetWide { field, value, mask } => {
                if self.prereq_ok(*field) {
                    let lo = Field::wide_low(*field);
                    self.flow.set_masked(*field, (value >> 64) as u64, (mask >> 64) as u64);
                    self.flow.set_masked(lo, *value as u64, *mask as u64);
                }
            }
            Action::Move { src, dst } => {
                if self.prereq_ok(src.field) && self.prereq_ok(dst.field) {
                    let bits = self.flow.get_bits(src.field, src.mask()) >> src.ofs;
                    self.flow.set_masked(dst.field, bits << dst.ofs, dst.mask());
                }
            }
            Action::StackPush(src) => {
                if self.stack.len() >= MAX_STACK {
                    self.fail(XlateError::StackTooDeep);
                    return false;
                }
                let v = self.flow.get_bits(src.field, src.mask()) >> src.ofs;
                self.stack.push(v);
            }
            Action::StackPop(dst) => {
                // An empty stack pops nothing, and translation goes on (as
                // Open vSwitch's, which reports a stack underflow).
                if let Some(v) = self.stack.pop() {
                    if self.prereq_ok(dst.field) {
                        self.flow.set_masked(dst.field, v << dst.ofs, dst.mask());
                    }
                }
            }
            Action::PushVlan { .. } => {
                // Two tags are tracked (as Open vSwitch's FLOW_MAX_VLAN_HEADERS):
                // pushing a third shifts the innermost out of the key, as there.
                let outer = self.vlan_tci();
                self.flow.set(Field::VlanTciInner, outer);
                self.flow.set(Field::VlanTci, VLAN_CFI);
            }
            Action::PopVlan => {
                self.vlan_tci();
                let inner = self.flow.get(Field::VlanTciInner);
                self.flow.set(Field::VlanTci, inner);
                self.flow.set(Field::VlanTciInner, 0);
            }
            Action::SetVlanVid { vid, push } => {
                let tci = self.vlan_tci();
                if tci & VLAN_CFI != 0 {
                    self.flow.set(Field::VlanTci, (tci & !0xfff) | *vid as u64);
                } else if *push {
                    self.flow.set(Field::VlanTci, VLAN_CFI | *vid as u64);
                }
            }
            Action::SetVlanPcp { pcp, push } => {
                let tci = self.vlan_tci();
                if tci & VLAN_CFI != 0 {
                    self.flow.set(Field::VlanTci, (tci & 0x1fff) | (*pcp as u64) << 13);
                } else if *push {
                    self.flow.set(Field::VlanTci, VLAN_CFI | (*pcp as u64) << 13);
                }
            }
            Action::DecTtl => {
                if !self.flow.is_ip() {
                    return true;
                }
                let ttl = self.flow.get(Field::IpTtl);
                if ttl > 1 {
                    self.flow.set(Field::IpTtl, ttl - 1);
                } else {
                    // As Open vSwitch: the packet goes to the controller and the list ends.
                    self.invalid_ttl();
                    return false;
                }
            }
            Action::PushMpls { ethertype } => return self.push_mpls(*ethertype),
            Action::PopMpls { ethertype } => return self.pop_mpls(*ethertype),
            Action::SetMplsTtl(ttl) => {
                if self.flow.is_mpls() {
                    self.flow.set(Field::MplsTtl, u64::from(*ttl));
                }
            }
            Action::DecMplsTtl => {
                if self.flow.is_mpls() {
                    let ttl = self.flow.get(Field::MplsTtl);
                    if ttl > 1 {
                        self.flow.set(Field::MplsTtl, ttl - 1);
                    } else {
                        // As dec_ttl: to the controller, and the list ends.
                        self.invalid_ttl();
                        return false;
                    }
                }
            }
            Action::Resubmit { port, table } => {
                // `resubmit(,)` without a table: the table of the rule
                // whose actions these are (Open vSwitch's ctx->table_id).
                let t = table.unwrap_or(self.table_id);
                // in_port is put back afterwards.
                let saved = port.map(|p| {
                    let saved = self.flow.get(Field::InPort);
                    self.flow.set(Field::InPort, p as u64);
                    saved
                });
                let restore = u32::from(port.is_some());
                self.restored |= port.is_some();
                // Only a resubmit to this or an earlier table nests (as Open
                // vSwitch's xlate_table_action deepens): a forward one walks
                // the pipeline on, like goto_table.
                let deepens = u32::from(t <= self.table_id);
                self.nest += 1;
                self.depth += deepens;
                self.restoring += restore;
                self.table(t, Via::Resubmit);
                self.restoring -= restore;
                self.depth -= deepens;
                self.nest -= 1;
                if let Some(saved) = saved {
                    self.flow.set(Field::InPort, saved);
                }
            }
            Action::Group(g) => self.group(*g),
            Action::Ct(ct) => self.conntrack(ct),
            Action::CtClear => {
                // Only a packet the datapath tracked has anything to clear,
                // and nothing happens otherwise, not even to the flow (as in
                // Open vSwitch 3.1: after a clone's ct_clear, the flow's
                // ct fields are back and a ct_clear leaves them).
                self.thaw_read = true;
                if std::mem::take(&mut self.conntracked) {
                    self.odp.push(DpAction::CtClear);
                    self.clear_conntrack();
                }
            }
            // A clause of a conjunctive flow is never the rule a lookup
            // gives (the classifier completes the conjunction instead),
            // and a note does nothing.
            Action::Conjunction { .. } | Action::Note(_) => {}
        }
        true
    }

    /// The ct fields back to zero (an untracked packet), as Open vSwitch
    /// clears them after `ct` and `ct_clear`.
    fn clear_conntrack(&mut self) {
        self.wrote_ct = true;
        for f in kairo_odp::CT_FIELDS {
            self.flow.write_conntrack(f, 0, u64::MAX);
        }
    }

    /// `ct(...)` as Open vSwitch's compose_conntrack_action: the datapath
    /// `ct` action (the zone, the mark and label bits its nested actions
    /// set, the NAT), then with `table=` a recirculation that resumes at
    /// that table with the connection's state (a fork: translation goes on
    /// here too), and the ct fields cleared for what follows.
    fn conntrack(&mut self, ct: &kairo_ofproto::Ct) {
        self.commit();
        let zone = match ct.zone {
            kairo_ofproto::CtZone::Imm(z) => z,
            kairo_ofproto::CtZone::Field(sf) => (self.flow.get_bits(sf.field, sf.mask()) >> sf.ofs) as u16,
        };
        // The nested actions write ct_mark and ct_label; what they write
        // (not the fields' earlier bits) goes into the action.
        let (mut mark_mask, mut label_mask) = (0u64, 0u128);
        for a in &ct.exec {
            let (field, value, mask) = match a {
                Action::SetField { field, value, mask } => (*field, u128::from(*value), u128::from(*mask)),
                Action::SetWide { field, value, mask } => (*field, *value, *mask),
                Action::Move { src, dst } => {
                    let bits = self.flow.get_bits(src.field, src.mask()) >> src.ofs;
                    (dst.field, u128::from(bits << dst.ofs), u128::from(dst.mask()))
                }
                _ => continue,
            };
            match field {
                Field::CtMark => {
                    self.flow.write_conntrack(field, value as u64, mask as u64);
                    mark_mask |= mask as u64;
                }
                // A 128-bit write names the high half; a move names a half.
                Field::CtLabelHi if matches!(a, Action::SetWide { .. }) => {
                    self.flow.write_conntrack(Field::CtLabelHi, (value >> 64) as u64, (mask >> 64) as u64);
                    self.flow.write_conntrack(Field::CtLabelLo, value as u64, mask as u64);
                    label_mask |= mask;
                }
                Field::CtLabelHi => {
                    self.flow.write_conntrack(field, value as u64, mask as u64);
                    label_mask |= mask << 64;
                }
                Field::CtLabelLo => {
                    self.flow.write_conntrack(field, value as u64, mask as u64);
                    label_mask |= mask;
                }
                _ => {}
            }
        }
        let now = *self.flow.unexamined();
        let mark = (mark_mask != 0).then(|| ((now.get(Field::CtMark) & mark_mask) as u32, mark_mask as u32));
        let label = (label_mask != 0).then(|| (now.get_wide(Field::CtLabelHi) & label_mask, label_mask));
        let dp = kairo_odp::ct::DpCt { commit: ct.commit, force: ct.force, zone, mark, label, nat: ct.nat };
        self.odp.push(DpAction::Ct(Box::new(dp)));
        if let Some(table) = ct.table {
            // (The next pass's ct fields, zone included, come from the datapath.)
            self.conntracked = true;
            self.freezing = Some(Freezing { ops: Vec::new(), table, hash: None });
            self.finish_freezing();
        }
        self.conntracked = false;
        self.clear_conntrack();
    }

    /// A TTL that would reach zero: the packet goes to the controller
    /// (reason invalid_ttl, whole), as Open vSwitch's dec_ttl and dec_mpls_ttl.
    fn invalid_ttl(&mut self) {
        self.commit();
        let (table, cookie) = (self.table_id, self.rule.0);
        let reason = ControllerReason::InvalidTtl;
        let meta = self.packet_in_meta(&[]);
        self.odp.push(DpAction::Controller { reason, max_len: u16::MAX, table, cookie, controller_id: 0, meta });
    }

    /// The MPLS label stack entries the flow has (Open vSwitch's
    /// `flow_count_mpls_labels`): up to the bottom of the stack, else the
    /// non-zero ones of the three a key holds. Records what it reads.
    fn mpls_labels(&mut self) -> usize {
        if !self.flow.is_mpls() {
            return 0;
        }
        let mut n = 0;
        for i in 0..MPLS_MAX_LABELS {
            if self.flow.mpls_lse_bits(i, MPLS_BOS_MASK) != 0 {
                return i + 1;
            }
            // Whether a non-bottom entry is zero depends on all its bits.
            if self.flow.mpls_lse_bits(i, u32::MAX) != 0 {
                n += 1;
            }
        }
        n
    }

    /// push_mpls, as Open vSwitch's `compose_mpls_push_action` and
    /// `flow_push_mpls`. The L3 and L4 fields stay in the flow, hidden under
    /// the labels (Open vSwitch clears them): nothing reads or commits them
    /// while the flow is MPLS, and a pop brings them back as they are.
    fn push_mpls(&mut self, ethertype: u16) -> bool {
        // (Never after a pop: it waits for a recirculation.)
        let n = self.mpls_labels();
        if n >= MPLS_MAX_LABELS {
            self.fail(XlateError::TooManyMplsLabels { action: "push_mpls" });
            return false;
        }
        if n == 0 {
            // Rewrites of the headers about to be hidden go out first.
            self.commit();
            let ipv6 = self.flow.get(Field::EthType) == ETH_TYPE_IPV6;
            let (mut tc, mut ttl) = (0, 64);
            if self.flow.is_ip() {
                // The DSCP's low three bits, as Open vSwitch takes them.
                tc = self.flow.get_bits(Field::IpDscp, 0x3f) & 7;
                ttl = match self.flow.get(Field::IpTtl) {
                    0 => 64,
                    t => t,
                };
            }
            let label = if ipv6 { 2 } else { 0 };
            self.flow.set_mpls_lse(0, (label << 12 | tc << 9 | 1 << 8 | ttl) as u32);
        } else {
            for i in (1..=n).rev() {
                let below = self.flow.mpls_lse_bits(i - 1, u32::MAX);
                self.flow.set_mpls_lse(i, below);
            }
            let top = self.flow.mpls_lse_bits(1, u32::MAX) & !MPLS_BOS_MASK;
            self.flow.set_mpls_lse(0, top);
        }
        self.flow.set(Field::EthType, u64::from(ethertype));
        true
    }

    /// pop_mpls, as Open vSwitch's `compose_mpls_pop_action` and `flow_pop_mpls`.
    fn pop_mpls(&mut self, ethertype: u16) -> bool {
        let n = self.mpls_labels();
        if n == 0 {
            return true;
        }
        if n == MPLS_MAX_LABELS && self.flow.mpls_lse_bits(n - 1, MPLS_BOS_MASK) == 0 {
            // What would fill the third entry is not in the key.
            self.fail(XlateError::TooManyMplsLabels { action: "pop_mpls" });
            return false;
        }
        for i in 1..n {
            let v = self.flow.mpls_lse_bits(i, u32::MAX);
            self.flow.set_mpls_lse(i - 1, v);
        }
        self.flow.set_mpls_lse(n - 1, 0);
        self.flow.set(Field::EthType, u64::from(ethertype));
        if !kairo_flow::field::is_mpls_type(u64::from(ethertype)) {
            // What was under the labels (or, pushed and popped here, what
            // Open vSwitch forgot as it pushed) is for the datapath to show
            // again: Open vSwitch's was_mpls.
            self.l3_hidden = true;
        }
        true
    }

    fn bucket_live(&mut self, b: &kairo_ofproto::Bucket, depth: u32) -> bool {
        if b.watch_port.is_none() && b.watch_group.is_none() {
            return true;
        }
        b.watch_port.is_some_and(|p| self.p.port_live(p))
            || b.watch_group.is_some_and(|g| depth < MAX_DEPTH && self.group_live(g, depth + 1))
    }

    /// Whether group `g` has a live bucket, remembered for this translation
    /// by (group, depth): liveness depends on the pipeline alone, and a
    /// chain of groups whose buckets all watch the next, ending in a dead
    /// group, would otherwise cost buckets^depth.
    fn group_live(&mut self, g: u32, depth: u32) -> bool {
        if let Some(&v) = self.live.get(&(g, depth)) {
            return v;
        }
        let p = self.p;
        let v = p.group(g).is_some_and(|grp| grp.buckets.iter().any(|b| self.bucket_live(b, depth)));
        self.live.insert((g, depth), v);
        v
    }

    /// The hash of the fields a select group reads, recording them.
    fn select_hash(&mut self, fields: Option<&[Field]>) -> u64 {
        let default_fields: Vec<Field>;
        let fields: &[Field] = match fields {
            Some(f) => f,
            None => {
                // Symmetric L4 (Open vSwitch's default): addresses and ports when
                // present, otherwise the Ethernet addresses.
                let eth = self.flow.get(Field::EthType);
                default_fields = if eth == ETH_TYPE_IP || eth == ETH_TYPE_IPV6 {
                    let mut v = if eth == ETH_TYPE_IP {
                        vec![Field::IpSrc, Field::IpDst]
                    } else {
                        vec![Field::Ipv6SrcHi, Field::Ipv6DstHi, Field::Ipv6SrcLo, Field::Ipv6DstLo]
                    };
                    v.push(Field::IpProto);
                    if matches!(self.flow.get(Field::IpProto), IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
                        v.extend([Field::TpSrc, Field::TpDst]);
                    }
                    v
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
            let next = fields.get(i + 1).copied();
            let partner = match (f, next) {
                (Field::IpSrc, Some(Field::IpDst))
                | (Field::Ipv6SrcHi, Some(Field::Ipv6DstHi))
                | (Field::Ipv6SrcLo, Some(Field::Ipv6DstLo))
                | (Field::TpSrc, Some(Field::TpDst))
                | (Field::EthSrc, Some(Field::EthDst)) => next,
                _ => None,
            };
            let a = self.flow.get(f);
            match partner {
                Some(n) => {
                    pair(a, self.flow.get(n));
                    i += 2;
                }
                None => {
                    pair(a, 0);
                    i += 1;
                }
            }
        }
        h
    }

    /// Records a use of group `gid` at the current depth, after the
    /// lookups made so far: the buckets that ran, or that it froze for
    /// the datapath's hash (`recirc`).
    fn used_group(&mut self, gid: u32, buckets: Vec<u32>, recirc: bool) {
        let (depth, step) = (self.depth, self.trav.steps.len() as u32);
        self.trav.groups.push(GroupUse { group: gid, buckets, depth, step, recirc });
    }

    fn group(&mut self, gid: u32) {
        if self.depth >= MAX_DEPTH {
            return self.fail(XlateError::TooDeep { table: self.trav.steps.last().map_or(0, |s| s.table) });
        }
        if !self.room_for_actions() {
            return;
        }
        let depth = self.depth;
        let Some(run) = self.p.group_run(gid).cloned() else {
            return self.used_group(gid, vec![], false);
        };
        let (g, sets) = (&*run.group, &run.sets);
        let dp_hash = run.dp_hash.as_ref();
        let chosen: Vec<usize> = match g.ty {
            GroupType::All => (0..g.buckets.len()).collect(),
            GroupType::Indirect => (0..g.buckets.len().min(1)).collect(),
            GroupType::FastFailover => g.buckets.iter().position(|b| self.bucket_live(b, depth)).into_iter().collect(),
            GroupType::Select if self.l3_hidden => {
                // Recorded: a change of the group's type changes this.
                self.used_group(gid, vec![], false);
                // A select group may hash what is under the labels: it is
                // chosen again after a recirculation (as Open vSwitch's
                // xlate_select_group).
                return self.freeze_at(Action::Group(gid), None);
            }
            GroupType::Select if dp_hash.is_some() => {
                let Some(plan) = dp_hash else { return };
                // Hashed in the datapath: a packet not hashed yet (every
                // first pass; a later one as its frozen state says) goes
                // back to the datapath for its hash, and this group runs
                // again on the next pass. Open vSwitch asks whether
                // dp_hash is 0 without matching it; the frozen state says
                // the same for every key of the megaflow.
                self.thaw_read = true;
                if !self.hashed {
                    self.used_group(gid, vec![], true);
                    return self.freeze_at(Action::Group(gid), Some((plan.alg, plan.basis)));
                }
                // The first live bucket from the hash's slot on, so the
                // weights hold among the live buckets.
                let h = self.flow.get_bits(Field::DpHash, u64::from(plan.mask)) as usize;
                let n = plan.map.len();
                (0..n)
                    .map(|i| plan.map[(h + i) & (n - 1)])
                    .find(|&b| self.bucket_live(&g.buckets[b], depth))
                    .into_iter()
                    .collect()
            }
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
        self.used_group(gid, chosen.iter().map(|&i| g.buckets[i].id).collect(), false);
        let n = chosen.len();
        for (k, i) in chosen.into_iter().enumerate() {
            // Each bucket works on its own copy of the flow (clone semantics),
            // put back afterwards; another bucket may follow. Its actions
            // run as the action set they make (as Open vSwitch runs them).
            self.buckets += 1;
            if self.buckets > MAX_BUCKETS {
                // Its traversal (every group use) is too big to keep for a
                // megaflow as well: dropped, and not installed.
                self.slow = true;
                return self.fail(XlateError::TooManyBuckets);
            }
            let saved = (*self.flow.unexamined(), self.l3_hidden);
            // A bucket works on a copy of the stack (as Open vSwitch's).
            let stack = self.stack.clone();
            let more = u32::from(k + 1 < n);
            self.depth += 1;
            self.pending += more;
            self.restoring += 1;
            self.actions(&sets[i]);
            self.restoring -= 1;
            self.pending -= more;
            self.depth -= 1;
            // A bucket that froze: the frozen state is the bucket's, and
            // translation goes on after it with the packet as it was (as
            // Open vSwitch forks there).
            if self.freezing.is_some() && self.error.is_none() && !self.slow {
                self.finish_freezing();
                self.exit = false;
            }
            self.freezing = None;
            self.flow.restore(saved.0);
            self.l3_hidden = saved.1;
            self.stack = stack;
            if self.error.is_some() {
                return;
            }
        }
    }
}

/// The actions that, after a pop took the packet out of its labels, run
/// only after a recirculation has shown the header under them: Open
/// vSwitch's `recirc_for_mpls`, which spares the outputs, the VLAN and
/// Ethernet rewrites, groups (a select group asks for itself) and set_field
/// below L3, and recirculates before everything else, even a note.
fn recirculates_after_pop(a: &Action) -> bool {
    match a {
        Action::Output(_)
        | Action::OutputReg { .. }
        | Action::InPort
        | Action::Flood
        | Action::All
        | Action::Normal
        | Action::SetVlanVid { .. }
        | Action::SetVlanPcp { .. }
        | Action::Group(_) => false,
        Action::SetField { field, .. } => field.def().stage >= Stage::L3,
        _ => true,
    }
}

/// What `output:FIELD` does with the port number the field held, as Open
/// vSwitch's `xlate_output_reg_action`: a 16-bit OpenFlow 1.0 port, its
/// reserved numbers the reserved ports; beyond 16 bits, or port 0 or NONE
/// (no switch has them), nothing.
fn output_reg_port(port: u64, max_len: u16) -> Option<Action> {
    match port {
        0 | 0xffff | 0x1_0000.. => None,
        0xfffa => Some(Action::Normal),
        0xfff8 => Some(Action::InPort),
        0xfff9 => Some(Action::Resubmit { port: None, table: Some(0) }),
        0xfffb => Some(Action::Flood),
        0xfffc => Some(Action::All),
        0xfffd => Some(Action::controller(max_len)),
        p => Some(Action::Output(p as u32)),
    }
}
