//! The OpenFlow 1.3 action set (write-actions): one slot per action type,
//! run in OpenFlow's order at the end of the pipeline.
//!
//! Invariant: at most one action per slot (a later write replaces an earlier
//! one of the same slot; set-type actions are keyed by what they write), and
//! a group, when present, takes the place of output.

use kairo_flow::field::Field;
use kairo_ofproto::Action;

/// The OpenFlow 1.3 action set (write-actions), one slot per action type.
#[derive(Clone, Debug, Default)]
pub(crate) struct ActionSet {
    pop_vlan: bool,
    pop_mpls: Option<Action>,
    push_mpls: Option<Action>,
    push_vlan: Option<Action>,
    dec_ttl: bool,
    dec_mpls_ttl: bool,
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
        Action::SetMplsTtl(_) => Some((0, Field::MplsTtl)),
        _ => None,
    }
}

impl ActionSet {
    pub(crate) fn is_empty(&self) -> bool {
        !self.pop_vlan
            && self.pop_mpls.is_none()
            && self.push_mpls.is_none()
            && self.push_vlan.is_none()
            && !self.dec_ttl
            && !self.dec_mpls_ttl
            && self.sets.is_empty()
            && self.group.is_none()
            && self.output.is_none()
    }

    pub(crate) fn write(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::PopVlan => self.pop_vlan = true,
                Action::PushVlan { .. } => self.push_vlan = Some(a.clone()),
                Action::DecTtl => self.dec_ttl = true,
                Action::PopMpls { .. } => self.pop_mpls = Some(a.clone()),
                Action::PushMpls { .. } => self.push_mpls = Some(a.clone()),
                Action::DecMplsTtl => self.dec_mpls_ttl = true,
                Action::Group(g) => self.group = Some(*g),
                Action::Output(_)
                | Action::InPort
                | Action::Flood
                | Action::All
                | Action::Normal
                | Action::Controller { .. } => self.output = Some(a.clone()),
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
    /// The actions in OpenFlow's action-set order (as Open vSwitch's
    /// `ofpacts_execute_action_set`: pops, pushes, TTL decrements, sets,
    /// then group or output); a group overrides output.
    pub(crate) fn into_list(self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.pop_vlan {
            out.push(Action::PopVlan);
        }
        out.extend(self.pop_mpls);
        out.extend(self.push_mpls);
        out.extend(self.push_vlan);
        if self.dec_ttl {
            out.push(Action::DecTtl);
        }
        if self.dec_mpls_ttl {
            out.push(Action::DecMplsTtl);
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

/// Whether Open vSwitch's `ofpact_is_set_or_move_action` holds: the
/// actions an action set (and a bucket) keeps every one of, in order.
fn is_set_or_move(a: &Action) -> bool {
    matches!(
        a,
        Action::SetField { .. }
            | Action::SetWide { .. }
            | Action::Move { .. }
            | Action::SetVlanVid { .. }
            | Action::SetVlanPcp { .. }
            | Action::SetMplsTtl(_)
    )
}

/// Whether the action is an OpenFlow output (`OFPACT_OUTPUT`): to a port,
/// IN_PORT, FLOOD, ALL, NORMAL, or CONTROLLER without any of the
/// `controller(...)` options (ovs-ofctl makes a plain `controller` an
/// output to the CONTROLLER port; one with a reason, an id or userdata is
/// an action of its own, which an action set has no place for).
fn is_output(a: &Action) -> bool {
    match a {
        Action::Output(_) | Action::InPort | Action::Flood | Action::All | Action::Normal => true,
        Action::Controller { reason, id, userdata, .. } => {
            *reason == kairo_odp::ControllerReason::Action && *id == 0 && userdata.is_empty()
        }
        _ => false,
    }
}

/// A group bucket's actions as Open vSwitch runs them: `xlate_group_bucket`
/// passes them through `ofpacts_execute_action_set`, so a bucket is an
/// action set written in one go. The last pop_vlan, pop_mpls, push_mpls,
/// push_vlan, dec_ttl and dec_mpls_ttl, in that order; every set and move,
/// in the order written; then the last group, or else the last output, or
/// else the last resubmit, or else the last `ct`. A bucket with none of
/// those four does nothing at all, and every other action (`clone`,
/// `learn`, `note`, `push`, `check_pkt_larger`, ...) is left out, as there.
pub(crate) fn bucket_list(actions: &[Action]) -> Vec<Action> {
    let last = |is: &dyn Fn(&Action) -> bool| actions.iter().rev().find(|a| is(a)).cloned();
    let Some(end) = last(&|a| matches!(a, Action::Group(_)))
        .or_else(|| last(&is_output))
        .or_else(|| last(&|a| matches!(a, Action::Resubmit { .. })))
        .or_else(|| last(&|a| matches!(a, Action::Ct(_))))
    else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(actions.len());
    out.extend(last(&|a| matches!(a, Action::PopVlan)));
    out.extend(last(&|a| matches!(a, Action::PopMpls { .. })));
    out.extend(last(&|a| matches!(a, Action::PushMpls { .. })));
    out.extend(last(&|a| matches!(a, Action::PushVlan { .. })));
    out.extend(last(&|a| matches!(a, Action::DecTtl)));
    out.extend(last(&|a| matches!(a, Action::DecMplsTtl)));
    out.extend(actions.iter().filter(|a| is_set_or_move(a)).cloned());
    out.push(end);
    out
}
