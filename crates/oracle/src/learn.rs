//! The reference's `learn`: the flow a learn action adds, built from the
//! packet as ovs-actions(7) describes it, and whether a limit lets it in,
//! counted over the reference's own copy of the tables.
//!
//! Shares no code with translation's learn: it reads the action's specs
//! and the packet's fields itself.

use kairo_flow::Match;
use kairo_ofproto::learn::{flags, Learn, LearnSpec, LearnSrc};
use kairo_ofproto::{Action, Instructions, Rule};

use crate::Run;

impl Run<'_> {
    /// Runs `learn(...)`: records the flow it makes and writes its result bit.
    pub(crate) fn learn(&mut self, l: &Learn) {
        let read = |flow: &kairo_flow::FlowKey, src: &LearnSrc| match src {
            LearnSrc::Field(sf) => (flow.get(sf.field) & sf.mask()) >> sf.ofs,
            LearnSrc::Value(v) => *v,
        };
        let mut m = Match::default();
        let mut apply = Vec::new();
        // ovs-actions(7): fin timeouts make the learned flow's fin_timeout,
        // its first action.
        if l.fin_idle_timeout != 0 || l.fin_hard_timeout != 0 {
            apply.push(Action::FinTimeout { idle: l.fin_idle_timeout, hard: l.fin_hard_timeout });
        }
        for spec in &l.specs {
            match spec {
                LearnSpec::Match { dst, src } => {
                    // All of OVS's 16-bit in_port is the whole port.
                    let whole_port = dst.field == kairo_flow::Field::InPort && dst.ofs == 0 && dst.n_bits >= 16;
                    let mask = if whole_port { u64::from(u32::MAX) } else { dst.mask() };
                    m.set_masked(dst.field, read(&self.flow, src) << dst.ofs, mask)
                }
                LearnSpec::Load { dst, src } => apply.push(Action::SetField {
                    field: dst.field,
                    value: read(&self.flow, src) << dst.ofs,
                    mask: dst.mask(),
                }),
                LearnSpec::Output { src } => {
                    // ovs-actions(7): the port from the field, if it is one
                    // an output names (a number below 0xff00, IN_PORT,
                    // FLOOD, ALL or LOCAL).
                    let port = (self.flow.get(src.field) & src.mask()) >> src.ofs;
                    let a = match port {
                        0xfff8 => Some(Action::InPort),
                        0xfffb => Some(Action::Flood),
                        0xfffc => Some(Action::All),
                        0xfffe => Some(Action::Output(0xfffe)),
                        p if p < 0xff00 => Some(Action::Output(p as u32)),
                        _ => None,
                    };
                    apply.extend(a);
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
        if let Some(dst) = l.result_dst {
            let ok = self.admits(&rule, l.limit);
            if self.prereq(dst.field) {
                self.flow.set_masked(dst.field, u64::from(ok) << dst.ofs, dst.mask());
            }
        }
        self.learned.push(rule);
    }

    /// Is the flow in its table once learned: no limit, there already (or
    /// learned earlier by this packet), or fewer flows with its cookie
    /// there than the limit, counting this packet's earlier new ones.
    fn admits(&self, rule: &Rule, limit: u32) -> bool {
        let same = |r: &Rule| r.table == rule.table && r.priority == rule.priority && r.m == rule.m;
        let table = self.r.tables.get(&rule.table).map(Vec::as_slice).unwrap_or_default();
        if limit == 0 || table.iter().any(|r| same(r)) || self.learned.iter().any(same) {
            return true;
        }
        let mut seen: Vec<&Rule> = Vec::new();
        for l in self.learned.iter().filter(|l| l.table == rule.table && l.cookie == rule.cookie) {
            let known = table.iter().any(|r| r.priority == l.priority && r.m == l.m)
                || seen.iter().any(|s| s.priority == l.priority && s.m == l.m);
            if !known {
                seen.push(l);
            }
        }
        let n = table.iter().filter(|r| r.cookie == rule.cookie).count() + seen.len();
        n < limit as usize
    }
}
