//! The reference's `NORMAL`, from ovs-vswitchd.conf.db(5)'s description of
//! a port's `vlan_mode`, `tag` and `trunks` and the L2 learning switch of
//! ovs-actions(7), written apart from translation's (it reads the ports'
//! resolved settings and the learned MACs out of the pipeline as data).
//!
//! The rule: a frame from a port that is not the bridge's, or whose VLAN
//! the port does not admit, or to a reserved address (IEEE 802.1D's
//! 01:80:c2:00:00:0x, and Extreme's and Cisco's protocol addresses), goes
//! nowhere. Inside the bridge its VLAN is the access or native port's for
//! an untagged frame, else its tag's. To a group address, or to a MAC not
//! learned in that VLAN, it floods every other port that carries the VLAN;
//! to a learned MAC, it goes to that port unless it came from there. It
//! leaves an access port untagged, a native-untagged port untagged in the
//! port's own VLAN, and anything else tagged with its VLAN (and its PCP);
//! a tag whose TCI is all zero is dropped on the way out. A frame that
//! leaves with the tags it came with is not touched (so an inner tag whose
//! TCI is all zero stays, where Open vSwitch would drop it).

use std::collections::BTreeSet;

use kairo_flow::Field;
use kairo_ofproto::ports::VlanMode;

use crate::Run;

const CFI: u64 = 0x1000;

/// A port's settings as the reference reads them: mode, VLAN, trunks.
pub(crate) type Settings = (VlanMode, u16, Option<BTreeSet<u16>>);

fn trunk(s: &Settings, vid: u16) -> bool {
    s.0 != VlanMode::Access && s.2.as_ref().is_none_or(|t| t.contains(&vid))
}

fn reserved(mac: u64) -> bool {
    let cisco_cfm = (0x0100_0ccc_ccc0..=0x0100_0ccc_ccc7).contains(&mac);
    (0x0180_c200_0000..=0x0180_c200_000f).contains(&mac)
        || cisco_cfm
        || [
            0x00e0_2b00_0000,
            0x00e0_2b00_0004,
            0x00e0_2b00_0006,
            0x0100_0c00_0000,
            0x0100_0ccc_cccc,
            0x0100_0ccc_cccd,
            0x0100_0ccd_cdcd,
        ]
        .contains(&mac)
}

impl Run<'_> {
    pub(crate) fn normal(&mut self) {
        let in_port = self.flow.get(Field::InPort) as u32;
        if !self.r.ports.contains(&in_port) {
            return;
        }
        let trunk_all: Settings = (VlanMode::Trunk, 0, None);
        let setting = |p: u32| self.r.settings.get(&p).cloned().unwrap_or_else(|| trunk_all.clone());
        let s = setting(in_port);
        let (outer, inner) = (self.flow.get(Field::VlanTci), self.flow.get(Field::VlanTciInner));
        let tagged = outer & CFI != 0;
        let vid = if tagged { (outer & 0xfff) as u16 } else { 0 };
        let admitted = match s.0 {
            VlanMode::Access => vid == 0,
            VlanMode::NativeTagged | VlanMode::NativeUntagged if vid == 0 => true,
            _ => trunk(&s, vid),
        };
        if !admitted {
            return;
        }
        // The frame's tags inside the bridge, outer first (id | PCP bits, 0: none).
        let pcp = if tagged { (outer & 0xe000) as u16 } else { 0 };
        let in_inner = if tagged && inner & CFI != 0 { (inner & !CFI) as u16 } else { 0 };
        let tags: [u16; 2] = match s.0 {
            VlanMode::Access => [s.1 | pcp, 0],
            VlanMode::NativeTagged | VlanMode::NativeUntagged if vid == 0 => [s.1 | pcp, in_inner],
            _ if tagged => [(outer & !CFI) as u16, in_inner],
            _ => [0, 0],
        };
        let vlan = tags[0] & 0xfff;
        let dst = self.flow.get(Field::EthDst);
        if reserved(dst) {
            return;
        }
        let to: Vec<u32> = match self.r.macs.get(&(vlan, dst)) {
            Some(&p) if dst >> 40 & 1 == 0 => {
                if p == in_port || !self.r.ports.contains(&p) {
                    return;
                }
                vec![p]
            }
            _ => self
                .r
                .ports
                .iter()
                .copied()
                .filter(|&p| p != in_port)
                // A no-flood port is not flooded to.
                .filter(|&p| !self.r.port_bit(p, crate::OFPPC_NO_FLOOD))
                .filter(|&p| {
                    let o = setting(p);
                    match o.0 {
                        VlanMode::Access => vlan == o.1 && tags[1] & 0xfff == 0,
                        _ => trunk(&o, vlan),
                    }
                })
                .collect(),
        };
        let (was_outer, was_inner) = (outer, inner);
        // The tags as the frame came (an all-zero inner one read as none).
        let as_came: [u16; 2] = if tagged { [(outer & !CFI) as u16, in_inner] } else { [0, 0] };
        let zero_outer = tagged && outer & !CFI == 0;
        for p in to {
            let o = setting(p);
            let out: [u16; 2] = match o.0 {
                VlanMode::Access => [0, 0],
                VlanMode::NativeUntagged if vlan == o.1 => [tags[1], 0],
                _ => tags,
            };
            let out = if out[0] == 0 { [0, 0] } else { out };
            if out == as_came && !zero_outer {
                // Leaves with the tags it came with: untouched.
                self.emit(p);
                continue;
            }
            let tci = |t: u16| if t != 0 { u64::from(t) | CFI } else { 0 };
            self.flow.set(Field::VlanTci, tci(out[0]));
            self.flow.set(Field::VlanTciInner, tci(out[1]));
            self.emit(p);
            self.flow.set(Field::VlanTci, was_outer);
            self.flow.set(Field::VlanTciInner, was_inner);
        }
    }
}
