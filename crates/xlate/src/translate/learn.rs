//! `learn(...)`: the flow a learn action makes from the packet, as Open
//! vSwitch's `learn_execute` builds it, and the result bit it writes.
//!
//! Owns the translation of one learn action. Invariant (the megaflow
//! contract): every packet bit a spec reads is examined (Open vSwitch's
//! `learn_mask`), so every packet of the megaflow makes the same flow; the
//! only table state read is whether the flow is already there and how many
//! flows share its cookie in its table, and only when the action has both a
//! limit and a result bit ([`Learned::checked`], which maintenance follows).
//! Translation never changes the tables: the flows it made are in the
//! traversal ([`Traversal::learned`]) for the caller that handles a real
//! packet to add.
//!
//! [`Traversal::learned`]: crate::Traversal::learned

use kairo_flow::{Field, Match};
use kairo_ofproto::action::{OFPP_IN_PORT, OFPP_LOCAL};
use kairo_ofproto::learn::{flags, Learn, LearnSpec, LearnSrc};
use kairo_ofproto::{Action, Instructions, Rule};

use super::{Mode, Translator};
use crate::pipeline::Pipeline;

/// A flow a `learn` action made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Learned {
    /// The flow, as a flow-mod adds it (Open vSwitch adds it as a strict
    /// modify: a flow with its table, priority and match is replaced).
    pub rule: Rule,
    /// The learn's limit on flows with the rule's cookie in its table (0:
    /// none): a flow not there yet is not added past it.
    pub limit: u32,
    /// The translation wrote whether the limit let the flow in (the learn
    /// has a limit and a result bit): it depends on the flows with that
    /// cookie in that table.
    pub checked: bool,
}

/// OpenFlow 1.0's first reserved port number (OFPP_MAX).
const OFPP_MAX: u64 = 0xff00;
const OFPP_FLOOD: u64 = 0xfffb;
const OFPP_ALL: u64 = 0xfffc;

/// Would a learned flow be in `p` once added: there already (same table,
/// priority and match), or fewer than `limit` flows with its cookie in its
/// table (counting `pending`, made earlier in the same translation).
pub fn admitted(p: &Pipeline, rule: &Rule, limit: u32, pending: &[Learned]) -> bool {
    let same = |r: &Rule| r.table == rule.table && r.priority == rule.priority && r.m == rule.m;
    let table = p.table(rule.table);
    if limit == 0 || table.is_some_and(|t| t.cls.find_exact(&rule.m, rule.priority).is_some()) {
        return true;
    }
    if pending.iter().any(|l| same(&l.rule)) {
        return true;
    }
    let mut n = table.map_or(0, |t| t.with_cookie(rule.cookie));
    for l in pending.iter().filter(|l| l.rule.table == rule.table && l.rule.cookie == rule.cookie) {
        let there = table.is_some_and(|t| t.cls.find_exact(&l.rule.m, l.rule.priority).is_some());
        n += u32::from(!there);
    }
    n < limit
}

impl<'a, M: Mode<'a>> Translator<'a, M> {
    /// A spec's value: the packet's bits (examined) or the constant.
    fn learn_value(&mut self, src: &LearnSrc) -> u64 {
        match src {
            LearnSrc::Field(sf) => self.flow.get_bits(sf.field, sf.mask()) >> sf.ofs,
            LearnSrc::Value(v) => *v,
        }
    }

    pub(super) fn learn_flow(&mut self, l: &Learn) {
        let mut m = Match::default();
        let mut apply = Vec::new();
        if l.fin_idle_timeout != 0 || l.fin_hard_timeout != 0 {
            apply.push(Action::FinTimeout { idle: l.fin_idle_timeout, hard: l.fin_hard_timeout });
        }
        for spec in &l.specs {
            match spec {
                LearnSpec::Match { dst, src } => {
                    let v = self.learn_value(src);
                    // Open vSwitch's in_port is its 16-bit port number: a
                    // match on all of it is a match on the port.
                    let mask = if dst.field == Field::InPort && dst.ofs == 0 && dst.n_bits >= 16 {
                        Field::InPort.ones()
                    } else {
                        dst.mask()
                    };
                    m.set_masked(dst.field, v << dst.ofs, mask);
                }
                LearnSpec::Load { dst, src } => {
                    let v = self.learn_value(src);
                    apply.push(Action::SetField { field: dst.field, value: v << dst.ofs, mask: dst.mask() });
                }
                LearnSpec::Output { src } => {
                    let port = self.learn_value(&LearnSrc::Field(*src));
                    // A port an output can name, read from at most 16 bits
                    // (as Open vSwitch reads it).
                    match port {
                        OFPP_FLOOD => apply.push(Action::Flood),
                        OFPP_ALL => apply.push(Action::All),
                        p if p == u64::from(OFPP_IN_PORT) => apply.push(Action::InPort),
                        p if p == u64::from(OFPP_LOCAL) || p < OFPP_MAX => apply.push(Action::Output(p as u32)),
                        _ => {}
                    }
                }
            }
        }
        let rule = Rule {
            table: l.table,
            priority: l.priority,
            cookie: l.cookie,
            m,
            inst: Instructions { apply, ..Instructions::default() },
            idle_timeout: l.idle_timeout,
            hard_timeout: l.hard_timeout,
            flags: if l.flags & flags::SEND_FLOW_REM != 0 { kairo_ofproto::flags::SEND_FLOW_REM } else { 0 },
        };
        let checked = l.limit != 0 && l.result_dst.is_some();
        if let Some(dst) = l.result_dst {
            let ok = admitted(self.p, &rule, l.limit, &self.learned);
            if self.prereq_ok(dst.field) {
                self.flow.set_masked(dst.field, u64::from(ok) << dst.ofs, dst.mask());
            }
        }
        self.learned.push(Learned { rule, limit: l.limit, checked });
    }
}
