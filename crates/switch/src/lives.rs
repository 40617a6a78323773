//! Rules' lives: when each rule was installed, when a packet last used it,
//! which ones a timeout ends, and the removal notices owed when they go.
//!
//! Invariants: every rule in the pipeline that changed since the switch
//! started has an install time here (rules loaded at start count from then);
//! a rule with an idle or hard timeout is in `timed` until it leaves; the
//! last use of a timed rule only moves forward (it is read from the cache
//! every second, before the megaflows holding it can idle out of the cache,
//! which takes at least `max_idle_ms`).

use std::sync::Arc;

use kairo_classifier::RuleId;
use kairo_maintain::flowmod::Delta;
use kairo_ofproto::Rule;
use rustc_hash::FxHashMap;

/// Why a rule left (OFPRR_*, the FLOW_REMOVED reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovedBy {
    Idle = 0,
    Hard = 1,
    Delete = 2,
    GroupDelete = 3,
}

/// A rule that left and asked to be reported (`send_flow_rem`).
#[derive(Clone, Debug)]
pub struct Removed {
    pub table: u8,
    pub id: RuleId,
    pub rule: Arc<Rule>,
    pub reason: RemovedBy,
    /// Milliseconds it lived.
    pub lived_ms: u64,
}

#[derive(Default)]
pub struct Lives {
    /// Install time (switch clock, ms) of each rule.
    installed: FxHashMap<(u8, RuleId), u64>,
    /// Rules with a timeout, and the last use seen of each.
    timed: FxHashMap<(u8, RuleId), u64>,
    /// Packet and byte counts of rules whose counters were reset (a modify
    /// with `reset_counts`) at the moment of the reset: what their
    /// statistics no longer include.
    reset: FxHashMap<(u8, RuleId), (u64, u64)>,
}

impl Lives {
    /// Follows one update's deltas at time `now`; the rules it removed that
    /// want a removal notice.
    pub fn follow(
        &mut self,
        deltas: &[Delta],
        now: u64,
        reason: RemovedBy,
        timed: impl Fn(u8, RuleId) -> bool,
    ) -> Vec<Removed> {
        let mut out = Vec::new();
        for d in deltas {
            match d {
                Delta::RuleAdded { table, id } => {
                    self.installed.insert((*table, *id), now);
                    if timed(*table, *id) {
                        self.timed.insert((*table, *id), now);
                    }
                }
                Delta::RuleModified { table, id, .. } => {
                    let installed = *self.installed.entry((*table, *id)).or_insert(now);
                    // (A rule whose timeouts a fin_timeout cut may have had none.)
                    if timed(*table, *id) {
                        self.timed.entry((*table, *id)).or_insert(installed);
                    }
                }
                Delta::RuleRemoved { table, id, rule } => {
                    let since = self.installed.remove(&(*table, *id)).unwrap_or(0);
                    self.timed.remove(&(*table, *id));
                    self.reset.remove(&(*table, *id));
                    if rule.flags & kairo_ofproto::flags::SEND_FLOW_REM != 0 {
                        let lived_ms = now.saturating_sub(since);
                        out.push(Removed { table: *table, id: *id, rule: rule.clone(), reason, lived_ms });
                    }
                }
                Delta::GroupChanged { .. }
                | Delta::MissChanged { .. }
                | Delta::PortChanged { .. }
                | Delta::PortsChanged { .. }
                | Delta::MacsChanged { .. } => {}
            }
        }
        out
    }

    /// Resets a rule's counters: `counts` are what it had counted so far.
    pub fn reset_counts(&mut self, table: u8, id: RuleId, counts: (u64, u64)) {
        self.reset.insert((table, id), counts);
    }

    /// A rule's counts since its last reset, from all it counted.
    pub fn since_reset(&self, table: u8, id: RuleId, (p, b): (u64, u64)) -> (u64, u64) {
        let (p0, b0) = self.reset.get(&(table, id)).copied().unwrap_or_default();
        (p.saturating_sub(p0), b.saturating_sub(b0))
    }

    /// When the rule was installed (0: before the switch kept track).
    pub fn installed(&self, table: u8, id: RuleId) -> u64 {
        self.installed.get(&(table, id)).copied().unwrap_or(0)
    }

    /// The rules with a timeout.
    pub fn timed(&self) -> Vec<(u8, RuleId)> {
        self.timed.keys().copied().collect()
    }

    /// Records a use of a timed rule seen in the cache; the last use known.
    pub fn used(&mut self, table: u8, id: RuleId, seen: u64) -> u64 {
        let installed = self.installed(table, id);
        match self.timed.get_mut(&(table, id)) {
            Some(u) => {
                *u = (*u).max(seen).max(installed);
                *u
            }
            None => seen.max(installed),
        }
    }
}

/// The rules due to expire at `now` among `timed` (each with its rule,
/// install time and last use), and why.
pub fn due(rule: &Rule, installed: u64, used: u64, now: u64) -> Option<RemovedBy> {
    let secs = |t: u16| u64::from(t) * 1000;
    if rule.hard_timeout != 0 && now.saturating_sub(installed) >= secs(rule.hard_timeout) {
        return Some(RemovedBy::Hard);
    }
    if rule.idle_timeout != 0 && now.saturating_sub(used) >= secs(rule.idle_timeout) {
        return Some(RemovedBy::Idle);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(idle: u16, hard: u16) -> Rule {
        let mut r = kairo_ofproto::parse_flow("actions=drop", Some(true)).unwrap().into_rule().unwrap();
        r.idle_timeout = idle;
        r.hard_timeout = hard;
        r
    }

    #[test]
    fn timeouts_fall_due_as_openflow_says() {
        let r = rule(10, 0);
        assert_eq!(due(&r, 0, 5_000, 14_999), None);
        assert_eq!(due(&r, 0, 5_000, 15_000), Some(RemovedBy::Idle));
        let r = rule(10, 30);
        assert_eq!(due(&r, 1_000, 30_000, 31_000), Some(RemovedBy::Hard));
        assert_eq!(due(&r, 1_000, 30_000, 30_999), None);
        assert_eq!(due(&rule(0, 0), 0, 0, u64::MAX), None);
    }

    #[test]
    fn lives_follow_deltas_and_uses_only_move_forward() {
        let mut l = Lives::default();
        let mut r = rule(10, 0);
        r.flags = kairo_ofproto::flags::SEND_FLOW_REM;
        let out = l.follow(&[Delta::RuleAdded { table: 1, id: 7 }], 100, RemovedBy::Delete, |_, _| true);
        assert!(out.is_empty());
        assert_eq!(l.timed(), vec![(1, 7)]);
        assert_eq!(l.used(1, 7, 500), 500);
        assert_eq!(l.used(1, 7, 0), 500, "a megaflow gone does not make the rule unused since install");
        let out =
            l.follow(&[Delta::RuleRemoved { table: 1, id: 7, rule: Arc::new(r) }], 900, RemovedBy::Idle, |_, _| true);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].reason, out[0].lived_ms), (RemovedBy::Idle, 800));
        assert!(l.timed().is_empty());
    }
}
