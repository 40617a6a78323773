//! `NORMAL`: the bridge as an L2 learning switch, as Open vSwitch's
//! `xlate_normal` runs it (no bonds, mirrors or multicast snooping).
//!
//! Owns the translation of one NORMAL action: the ingress port's VLAN
//! check, the source MAC to learn, the MAC table lookup and the flood, and
//! each output's VLAN tags. Invariant (the megaflow contract): everything a
//! decision reads is examined — the ingress port, both MACs (the source
//! because a packet from a MAC the table does not have yet must reach the
//! slow path to be learned), the outer VLAN's id and presence, and the
//! whole tags wherever an output changes them (the commit reads them) or
//! a priority tag's fate depends on its PCP. (One deviation: a frame that
//! leaves with the tags it came with keeps an inner tag whose TCI is all
//! zero, which Open vSwitch strips, reading that tag without examining
//! it.) The MAC table is read only through lookups recorded in the
//! traversal ([`Traversal::normal`]), which is how maintenance finds the
//! entries a table change can alter.
//!
//! [`Traversal::normal`]: crate::Traversal::normal

use kairo_flow::field::{Field, VLAN_CFI};
use kairo_flow::FlowKey;
use kairo_ofproto::ports::{PortConfig, PortSettings, VlanMode};

use super::{Learn, Mode, Translator};
use crate::mac::{is_multicast, is_reserved};
use crate::pipeline::Pipeline;

/// A frame's VLAN tags as NORMAL handles them (Open vSwitch's `xvlan`):
/// outer then inner, each its id and PCP bits (`vid | pcp << 13`), 0 for
/// no tag.
type Tags = [u16; 2];

const VID: u16 = 0x0fff;
const DEFAULT: PortSettings = PortSettings::TRUNK;

impl<'a, M: Mode<'a>> Translator<'a, M> {
    pub(super) fn normal(&mut self) {
        let in_port = self.flow.get(Field::InPort) as u32;
        let src = self.flow.get(Field::EthSrc);
        let dst = self.flow.get(Field::EthDst);
        let outer = self.flow.get_bits(Field::VlanTci, VLAN_CFI | u64::from(VID)) as u16;
        if !self.p.has_port(in_port) {
            return; // no input bundle, dropping
        }
        let in_cfg = self.p.port_settings(in_port).unwrap_or(&DEFAULT);
        let tagged = outer & VLAN_CFI as u16 != 0;
        let in_vid = if tagged { outer & VID } else { 0 };
        if tagged && in_vid == 0 {
            // A priority tag: whether it survives depends on its PCP.
            self.flow.examine(Field::VlanTci);
        }
        // Whether the inner tag travels with the frame (a tagged frame into
        // a port that keeps its tags): an access port's flood check reads it.
        let inner_kept = tagged && in_cfg.mode != VlanMode::Access;
        if !in_cfg.admits(in_vid) {
            return; // disallowed VLAN for this input port
        }
        let in_tags = self.in_tags();
        let tags = input_tags(in_cfg, in_tags);
        let vlan = tags[0] & VID;
        if is_reserved(dst) {
            return; // reserved destination MAC
        }
        if !is_multicast(src) {
            self.learn.push(Learn { vlan, mac: src, port: in_port });
        }
        if is_multicast(dst) {
            return self.flood(in_port, tags, inner_kept);
        }
        self.normal.push((vlan, dst));
        match self.p.macs().lookup(vlan, dst) {
            // The learned port is the input port, or not a port any more: dropping.
            Some(port) if port == in_port || !self.p.has_port(port) => {}
            Some(port) => self.output_normal(port, tags),
            None => self.flood(in_port, tags, inner_kept),
        }
    }

    /// The frame's tags as they are (read without examining beyond what
    /// [`Translator::normal`] examined; a decision that depends on more
    /// examines it itself).
    fn in_tags(&self) -> Tags {
        tags_of(self.flow.unexamined())
    }

    /// Every port but the input port that carries the VLAN.
    fn flood(&mut self, in_port: u32, tags: Tags, inner_kept: bool) {
        let ports: Vec<u32> = self.p.ports().filter(|&p| p != in_port).collect();
        for p in ports {
            let cfg = self.p.port_settings(p).unwrap_or(&DEFAULT);
            if cfg.config.has(PortConfig::NO_FLOOD) {
                continue; // not floodable
            }
            if inner_kept && cfg.mode == VlanMode::Access && tags[0] & VID == cfg.vlan {
                // An access port takes the VLAN only without an inner tag.
                self.flow.get_bits(Field::VlanTciInner, VLAN_CFI | u64::from(VID));
            }
            if cfg.includes(tags[0] & VID, tags[1] & VID) {
                self.output_normal(p, tags);
            }
        }
    }

    /// Outputs to `port` with the tags its VLAN mode gives the frame, then
    /// puts the flow's tags back.
    fn output_normal(&mut self, port: u32, tags: Tags) {
        let cfg = self.p.port_settings(port).unwrap_or(&DEFAULT);
        let out = match output_tags(cfg, tags) {
            [0, _] => [0, 0],
            t => t,
        };
        let zero_outer = self.flow.unexamined().get(Field::VlanTci) == VLAN_CFI;
        if out == self.in_tags() && !zero_outer {
            // The frame leaves with the tags it came with: nothing to do
            // to them (Open vSwitch reads no more of them either).
            return self.output(port);
        }
        let tci = |t: u16| if t != 0 { u64::from(t) | VLAN_CFI } else { 0 };
        let (o, i) = (tci(out[0]), tci(out[1]));
        let f = self.flow.unexamined();
        let (was_o, was_i) = (f.get(Field::VlanTci), f.get(Field::VlanTciInner));
        // The commit pops and pushes what differs: it reads both tags.
        self.vlan_tci();
        self.flow.set(Field::VlanTci, o);
        self.flow.set(Field::VlanTciInner, i);
        self.output(port);
        self.flow.set(Field::VlanTci, was_o);
        self.flow.set(Field::VlanTciInner, was_i);
    }
}

/// What NORMAL learns from a packet with key `key` on its ingress port, as
/// translation does, without translating (for refreshing the MAC table
/// from the megaflows that carry a source's traffic, as Open vSwitch's
/// revalidators do from their `XC_NORMAL` cache entries): `None` where
/// NORMAL would learn nothing (the port is not the bridge's, or does not
/// admit the VLAN, or the source is a group address or the destination a
/// reserved one).
pub fn learned_from(p: &Pipeline, key: &FlowKey) -> Option<Learn> {
    let port = key.get(Field::InPort) as u32;
    let (src, dst) = (key.get(Field::EthSrc), key.get(Field::EthDst));
    if !p.has_port(port) || is_multicast(src) || is_reserved(dst) {
        return None;
    }
    let cfg = p.port_settings(port).unwrap_or(&DEFAULT);
    let t = tags_of(key);
    if !cfg.admits(t[0] & VID) {
        return None;
    }
    Some(Learn { vlan: input_tags(cfg, t)[0] & VID, mac: src, port })
}

/// A key's VLAN tags as [`Tags`] (an inner tag only under an outer one).
fn tags_of(key: &FlowKey) -> Tags {
    let (o, i) = (key.get(Field::VlanTci) as u16, key.get(Field::VlanTciInner) as u16);
    let cfi = VLAN_CFI as u16;
    if o & cfi == 0 {
        return [0, 0];
    }
    [o & !cfi, if i & cfi != 0 { i & !cfi } else { 0 }]
}

/// The tags inside the bridge for a frame that came in on a port with
/// these settings (Open vSwitch's `xvlan_input_translate`).
fn input_tags(cfg: &PortSettings, t: Tags) -> Tags {
    match cfg.mode {
        VlanMode::Trunk => t,
        VlanMode::Access => [cfg.vlan | (t[0] & !VID), 0],
        VlanMode::NativeTagged | VlanMode::NativeUntagged if t[0] & VID == 0 => [cfg.vlan | (t[0] & !VID), t[1]],
        VlanMode::NativeTagged | VlanMode::NativeUntagged => t,
    }
}

/// The tags a frame inside the bridge leaves by a port with these
/// settings (Open vSwitch's `xvlan_output_translate`).
fn output_tags(cfg: &PortSettings, t: Tags) -> Tags {
    match cfg.mode {
        VlanMode::Access => [0, 0],
        VlanMode::Trunk | VlanMode::NativeTagged => t,
        VlanMode::NativeUntagged if t[0] & VID == cfg.vlan => [t[1], 0],
        VlanMode::NativeUntagged => t,
    }
}
