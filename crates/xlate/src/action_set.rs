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
