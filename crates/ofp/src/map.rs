//! The mapping between OpenFlow on the wire and kairo's rules: OXM matches to
//! [`Match`], wire actions and instructions to [`Action`] and
//! [`Instructions`], buckets to [`Group`]s, and back for the replies.
//!
//! Invariant: what maps in maps back to the same wire meaning (a rule
//! installed over OpenFlow is echoed by flow stats as installed); whatever
//! kairo cannot execute is refused with the OpenFlow error a switch gives for
//! it (OFPBMC_BAD_FIELD for a field outside the flow key, OFPBAC_BAD_TYPE or
//! OFPBAC_BAD_EXP_TYPE for an action kairo does not implement, naming it),
//! never dropped or approximated.

use kairo_flow::field::{
    Field, FIELDS as KFIELDS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, ND_ADVERT,
    ND_SOLICIT, VLAN_CFI,
};
use kairo_flow::{FlowKey, FlowMask, Match};
use kairo_ofproto::action::OFPP_IN_PORT as K_IN_PORT;
use kairo_ofproto::{Action, Bucket, Group, GroupType, Instructions, SubField};

use crate::action::{nxast, Act, WireSub};
use crate::error::{Error, ErrorCode};
use crate::instruction::Instruction;
use crate::message::WireBucket;
use crate::oxm::{ones, Oxm, OxmId, NXM_0, NXM_1, OPENFLOW_BASIC};
use crate::port;
use crate::Version;

mod learn;

const VID_MASK: u64 = 0x1fff;
const PCP_MASK: u64 = 0xe000;

fn oxm_name(f: Field) -> Option<&'static str> {
    f.def().aliases.iter().copied().find(|a| a.starts_with("OXM_OF_") && OxmId::by_name(a).is_some()).or_else(|| {
        f.def()
            .aliases
            .iter()
            .copied()
            .find(|a| (a.starts_with("NXM_NX_") || a.starts_with("NXM_OF_")) && OxmId::by_name(a).is_some())
    })
}

/// kairo's field for a wire field, if the flow key has it (ports and views
/// resolved by the caller).
fn field_of(id: OxmId) -> Option<Field> {
    let info = id.info()?;
    match (id.class, id.field) {
        (OPENFLOW_BASIC, 13..=18) | (NXM_0, 9..=12) => {
            Some(if info.name.ends_with("_SRC") { Field::TpSrc } else { Field::TpDst })
        }
        (OPENFLOW_BASIC, 42) => Some(Field::TcpFlags),
        (NXM_1, 36) => Some(Field::RecircId),
        _ => Field::from_name(info.name),
    }
}

/// The L4 protocol a transport-port OXM requires, if it is one.
fn port_proto(id: OxmId) -> Option<u64> {
    match (id.class, id.field) {
        (OPENFLOW_BASIC, 13 | 14) | (NXM_0, 9 | 10) => Some(IPPROTO_TCP),
        (OPENFLOW_BASIC, 15 | 16) | (NXM_0, 11 | 12) => Some(IPPROTO_UDP),
        (OPENFLOW_BASIC, 17 | 18) => Some(IPPROTO_SCTP),
        _ => None,
    }
}

fn fit(f: Field, v: u128, what: &str) -> Result<u64, Error> {
    let bits = f.bits();
    if bits < 128 && v >> bits != 0 {
        return Err(Error::new(
            ErrorCode::BAD_VALUE,
            format!("{what}: {v:#x} does not fit the {bits} bits of {}", f.name()),
        ));
    }
    Ok(v as u64)
}

/// A wire field's (value, mask) as kairo's field, value and mask.
fn field_value(o: &Oxm) -> Result<(Field, u64, u64), Error> {
    let name = o.id.name();
    let full = o.id.info().map_or(u128::MAX, |i| ones(i.bytes));
    let mask = o.mask.unwrap_or(full);
    match (o.id.class, o.id.field) {
        (OPENFLOW_BASIC, 0) => Ok((Field::InPort, u64::from(port::from_wire(o.value as u32)?), u64::from(u32::MAX))),
        (OPENFLOW_BASIC, 6) => Ok((Field::VlanTci, (o.value as u64) & VID_MASK, (mask as u64) & VID_MASK)),
        (OPENFLOW_BASIC, 7) => Ok((Field::VlanTci, ((o.value as u64) & 7) << 13, PCP_MASK)),
        (NXM_0, 5) => {
            Err(Error::new(ErrorCode::BAD_FIELD, "NXM_OF_IP_TOS: use OXM_OF_IP_DSCP (kairo keeps DSCP and ECN apart)"))
        }
        _ => {
            let f = field_of(o.id).ok_or_else(|| {
                Error::new(ErrorCode::BAD_FIELD, format!("{name} is not a field of kairo's flow key yet"))
            })?;
            let value = fit(f, o.value, &name)?;
            let fm = if f.bits() >= 64 { u64::MAX } else { (1u64 << f.bits()) - 1 };
            let m = if o.mask.is_none() { fm } else { fit(f, mask, &name)? };
            Ok((f, value, m))
        }
    }
}

/// A wire field that is one of kairo's 128-bit fields: the field (its high
/// half), value and mask.
fn wide_value(o: &Oxm) -> Option<(Field, u128, u128)> {
    let f = field_of(o.id)?;
    f.wide()?;
    let mask = o.mask.unwrap_or(u128::MAX);
    Some((f, o.value & mask, mask))
}

/// An OXM match as a kairo match, prerequisites checked.
pub fn match_from_wire(fields: &[Oxm]) -> Result<Match, Error> {
    let mut key = FlowKey::default();
    let mut mask = FlowMask::default();
    for o in fields {
        if let Some((f, v, m)) = wide_value(o) {
            if mask.get_wide(f) & m != 0 {
                return Err(Error::new(ErrorCode::DUP_FIELD, format!("{} constrains {} twice", o.id.name(), f.name())));
            }
            key.set_wide(f, key.get_wide(f) | v);
            mask.or_wide(f, m);
            continue;
        }
        let (f, v, m) = field_value(o)?;
        let (ov, om) = (key.get(f), mask.get(f));
        if om & m != 0 {
            return Err(Error::new(ErrorCode::DUP_FIELD, format!("{} constrains {} twice", o.id.name(), f.name())));
        }
        key.set(f, ov | (v & m));
        mask.set(f, om | m);
    }
    let m = Match::new(key, mask);
    for o in fields {
        if let Some(p) = port_proto(o.id) {
            if m.field(Field::IpProto) != (p, 0xff) {
                return Err(Error::new(ErrorCode::BAD_PREREQ, format!("{} needs ip_proto={p}", o.id.name())));
            }
        }
    }
    if m.field(Field::VlanTci).1 & PCP_MASK != 0
        && fields.iter().any(|o| o.id == OxmId::basic(7))
        && m.field(Field::VlanTci).0 & VLAN_CFI == 0
    {
        return Err(Error::new(ErrorCode::BAD_PREREQ, "OXM_OF_VLAN_PCP needs OXM_OF_VLAN_VID with OFPVID_PRESENT"));
    }
    kairo_flow::parse::check_prereqs(&m).map_err(|e| Error::new(ErrorCode::BAD_PREREQ, e.to_string()))?;
    Ok(m)
}

fn by_name(name: &str) -> OxmId {
    // Every name this module asks for is in the table (a test checks it).
    OxmId::by_name(name).map_or(OxmId { class: 0xffff, field: 0 }, |i| i.id)
}

fn oxm(id: OxmId, value: u64, mask: u64, field_bits: u32) -> Oxm {
    let full = if field_bits >= 64 { u64::MAX } else { (1u64 << field_bits) - 1 };
    Oxm { id, value: u128::from(value), mask: (mask != full).then_some(u128::from(mask)) }
}

/// A kairo match as OXM fields, in kairo's field order (as flow stats echo it).
pub fn match_to_wire(m: &Match, v: Version) -> Result<Vec<Oxm>, Error> {
    let mut out = Vec::new();
    let (proto, proto_m) = m.field(Field::IpProto);
    let is_arp = m.field(Field::EthType) == (kairo_flow::field::ETH_TYPE_ARP, 0xffff);
    let is_v6 = m.field(Field::EthType) == (kairo_flow::field::ETH_TYPE_IPV6, 0xffff);
    let is_nd = is_v6
        && (proto, proto_m) == (IPPROTO_ICMPV6, 0xff)
        && matches!(m.field(Field::Icmpv6Type), (ND_SOLICIT | ND_ADVERT, 0xff));
    // Neighbour discovery fields go after the ICMPv6 type they depend on
    // (a decoder checks each field's prerequisites as it reads it).
    let mut nd = Vec::new();
    for d in KFIELDS.iter().filter(|d| d.storage.is_none() && !d.id.is_wide_low()) {
        let f = d.id;
        if f.wide().is_some() {
            let (val, msk) = m.wide_field(f);
            if msk != 0 {
                let name = oxm_name(f).ok_or_else(|| {
                    Error::new(ErrorCode::BAD_FIELD, format!("{} has no OpenFlow field to carry it", f.name()))
                })?;
                let o = Oxm { id: by_name(name), value: val, mask: (msk != u128::MAX).then_some(msk) };
                if f == Field::NdTargetHi {
                    nd.push(o);
                } else {
                    out.push(o);
                }
            }
            continue;
        }
        let (val, msk) = m.field(d.id);
        if msk == 0 {
            continue;
        }
        match f {
            Field::ArpSha | Field::ArpTha if is_nd => {
                let name = if f == Field::ArpSha { "OXM_OF_IPV6_ND_SLL" } else { "OXM_OF_IPV6_ND_TLL" };
                nd.push(oxm(by_name(name), val, msk, 48));
            }
            Field::InPort => out.push(Oxm::exact(OxmId::basic(0), u128::from(port::to_wire(val as u32)))),
            Field::VlanTci => {
                let pcp_m = msk & PCP_MASK;
                let vid_m = msk & VID_MASK;
                let oxm_ok =
                    (pcp_m == 0 || (pcp_m == PCP_MASK && vid_m & VLAN_CFI != 0 && val & VLAN_CFI != 0)) && vid_m != 0;
                if oxm_ok {
                    out.push(oxm(OxmId::basic(6), val & VID_MASK, vid_m, 13));
                    if pcp_m != 0 {
                        out.push(Oxm::exact(OxmId::basic(7), u128::from(val >> 13)));
                    }
                } else {
                    out.push(oxm(by_name("NXM_OF_VLAN_TCI"), val, msk, 16));
                }
            }
            Field::IpSrc | Field::IpDst | Field::IpProto if is_arp => {
                let (name, bits) = match f {
                    Field::IpSrc => ("OXM_OF_ARP_SPA", 32),
                    Field::IpDst => ("OXM_OF_ARP_TPA", 32),
                    _ => ("OXM_OF_ARP_OP", 16),
                };
                let full = if bits == 16 && msk == 0xff { 0xffff } else { msk };
                out.push(oxm(by_name(name), val, full, bits));
            }
            Field::TpSrc | Field::TpDst => {
                let src = f == Field::TpSrc;
                let name = match (proto, proto_m) {
                    (IPPROTO_ICMP, 0xff) if !is_v6 => {
                        Some(if src { "OXM_OF_ICMPV4_TYPE" } else { "OXM_OF_ICMPV4_CODE" })
                    }
                    (IPPROTO_ICMPV6, 0xff) if is_v6 => {
                        Some(if src { "OXM_OF_ICMPV6_TYPE" } else { "OXM_OF_ICMPV6_CODE" })
                    }
                    (IPPROTO_TCP, 0xff) => Some(if src { "OXM_OF_TCP_SRC" } else { "OXM_OF_TCP_DST" }),
                    (IPPROTO_UDP, 0xff) => Some(if src { "OXM_OF_UDP_SRC" } else { "OXM_OF_UDP_DST" }),
                    (IPPROTO_SCTP, 0xff) => Some(if src { "OXM_OF_SCTP_SRC" } else { "OXM_OF_SCTP_DST" }),
                    _ => None,
                };
                match name {
                    Some(n) if n.contains("ICMP") => out.push(oxm(by_name(n), val, msk, 8)),
                    Some(n) => out.push(oxm(by_name(n), val, msk, 16)),
                    None => {
                        let n = if src { "NXM_OF_TCP_SRC" } else { "NXM_OF_TCP_DST" };
                        out.push(oxm(by_name(n), val, msk, 16));
                    }
                }
            }
            Field::TcpFlags if v >= Version::V1_5 => out.push(oxm(OxmId::basic(42), val, msk, 12)),
            _ => {
                let name = oxm_name(f).ok_or_else(|| {
                    Error::new(ErrorCode::BAD_FIELD, format!("{} has no OpenFlow field to carry it", f.name()))
                })?;
                // A field narrower than its wire field is exact at its own width.
                out.push(oxm(by_name(name), val, msk, d.bits));
            }
        }
    }
    out.extend(nd);
    Ok(out)
}

fn sub_from_wire(s: &WireSub) -> Result<SubField, Error> {
    let o = Oxm::exact(s.id, 0);
    if let Some((hi, _, _)) = wide_value(&o) {
        // Bits of a 128-bit field: those of the half they lie in.
        let lo = Field::wide_low(hi);
        let (ofs, end) = (u32::from(s.ofs), u32::from(s.ofs) + u32::from(s.n_bits));
        return match (ofs, end) {
            (_, 0..=64) if s.n_bits > 0 => Ok(SubField { field: lo, ofs, n_bits: u32::from(s.n_bits) }),
            (64.., ..=128) if s.n_bits > 0 => Ok(SubField { field: hi, ofs: ofs - 64, n_bits: u32::from(s.n_bits) }),
            _ => Err(Error::new(
                ErrorCode::BAD_ACTION_ARGUMENT,
                format!(
                    "bits {ofs}..{end} of {}: kairo moves and loads a 128-bit field within one 64-bit half",
                    s.id.name()
                ),
            )),
        };
    }
    let (field, _, _) = field_value(&o)?;
    let n = SubField { field, ofs: u32::from(s.ofs), n_bits: u32::from(s.n_bits) };
    if n.ofs + n.n_bits > field.bits() {
        return Err(Error::new(
            ErrorCode::BAD_ACTION_ARGUMENT,
            format!(
                "bits {}..{} of {} are outside kairo's {} bits",
                n.ofs,
                n.ofs + n.n_bits,
                s.id.name(),
                field.bits()
            ),
        ));
    }
    Ok(n)
}

/// [`sub_to_wire`] in an action of a rule with match `m`: bits of a
/// transport port take the match's protocol's name, as a set_field's do
/// ([`set_field_id`]; Open vSwitch checks a source or destination field's
/// prerequisites against the match: tcp_dst under a UDP match is
/// OFPBAC_MATCH_INCONSISTENT).
fn sub_in(s: &SubField, m: &Match) -> Result<WireSub, Error> {
    if matches!(s.field, Field::TpSrc | Field::TpDst) {
        return Ok(WireSub { id: set_field_id(s.field, m)?, ofs: s.ofs as u16, n_bits: s.n_bits as u16 });
    }
    sub_to_wire(s)
}

fn sub_to_wire(s: &SubField) -> Result<WireSub, Error> {
    // A half of a 128-bit field: bits of the whole on the wire.
    if let Some((hi, base)) = s.field.half_of() {
        let name = oxm_name(hi).unwrap_or("");
        return Ok(WireSub { id: by_name(name), ofs: (s.ofs + base) as u16, n_bits: s.n_bits as u16 });
    }
    let name = oxm_name(s.field).ok_or_else(|| {
        Error::new(ErrorCode::BAD_FIELD, format!("{} has no OpenFlow field to carry it", s.field.name()))
    })?;
    Ok(WireSub { id: by_name(name), ofs: s.ofs as u16, n_bits: s.n_bits as u16 })
}

fn writable(f: Field, what: &str) -> Result<(), Error> {
    if f.def().writable {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::BAD_SET_ARGUMENT, format!("{what}: {} is read-only", f.name())))
    }
}

fn set_field(o: &Oxm) -> Result<Action, Error> {
    match (o.id.class, o.id.field, o.mask) {
        (OPENFLOW_BASIC, 6, None) => {
            return Ok(Action::SetVlanVid { vid: (o.value as u16) & 0xfff, push: false });
        }
        (OPENFLOW_BASIC, 7, None) => return Ok(Action::SetVlanPcp { pcp: (o.value as u8) & 7, push: false }),
        _ => {}
    }
    if let Some((field, value, mask)) = wide_value(o) {
        writable(field, "set_field")?;
        return Ok(Action::set_wide(field, value, mask));
    }
    let (field, value, mask) = field_value(o)?;
    writable(field, "set_field")?;
    Ok(Action::SetField { field, value: value & mask, mask })
}

/// The packet-in reason a controller action names, if kairo reports it.
fn controller_reason(code: u8) -> Result<kairo_ofproto::ControllerReason, Error> {
    kairo_ofproto::ControllerReason::from_code(code).ok_or_else(|| {
        Error::new(
            ErrorCode::BAD_ACTION_ARGUMENT,
            format!("controller with packet-in reason {code}: kairo reports action, no_match and invalid_ttl"),
        )
    })
}

fn unsupported_nx(subtype: u16) -> Error {
    let name = nxast::name(subtype).unwrap_or("?");
    Error::new(
        ErrorCode::BAD_ACTION_EXP_TYPE,
        format!("the Nicira action `{name}` (subtype {subtype}) is not supported by kairo yet"),
    )
}

fn unsupported(name: &str) -> Error {
    Error::new(ErrorCode::BAD_ACTION_TYPE, format!("the action `{name}` is not supported by kairo yet"))
}

/// A wire action as kairo's action.
pub fn action_from_wire(a: &Act) -> Result<Action, Error> {
    let x = action_from_wire_nested(a)?;
    if kairo_ofproto::ct::written(&x).is_some_and(kairo_ofproto::ct::is_ct_field) {
        return Err(Error::new(
            ErrorCode::BAD_SET_ARGUMENT,
            format!("`{x}`: cannot set CT fields outside of ct action"),
        ));
    }
    Ok(x)
}

/// [`action_from_wire`] without the check that only a `ct`'s nested
/// actions write ct_mark and ct_label.
fn action_from_wire_nested(a: &Act) -> Result<Action, Error> {
    Ok(match a {
        Act::Output { port: p, max_len } => match *p {
            port::OFPP_IN_PORT => Action::InPort,
            port::OFPP_FLOOD => Action::Flood,
            port::OFPP_ALL => Action::All,
            port::OFPP_CONTROLLER => Action::controller(*max_len),
            port::OFPP_NORMAL => Action::Normal,
            port::OFPP_TABLE => {
                return Err(Error::new(ErrorCode::BAD_OUT_PORT, "output:TABLE is only valid in a packet-out"))
            }
            port::OFPP_ANY => return Err(Error::new(ErrorCode::BAD_OUT_PORT, "output:ANY is not a port")),
            p => Action::Output(port::from_wire(p).map_err(|e| Error::new(ErrorCode::BAD_OUT_PORT, e.detail))?),
        },
        Act::Group(g) => Action::Group(*g),
        Act::PushVlan(t) => {
            if *t != 0x8100 && *t != 0x88a8 {
                return Err(Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("push_vlan with ethertype {t:#06x}")));
            }
            Action::PushVlan { tpid: *t }
        }
        Act::PopVlan => Action::PopVlan,
        Act::DecNwTtl | Act::NxDecTtl => Action::DecTtl,
        Act::SetField(o) | Act::RegLoad2(o) => set_field(o)?,
        Act::RegLoad { dst, value } => {
            let d = sub_from_wire(dst)?;
            writable(d.field, "load")?;
            Action::SetField { field: d.field, value: value << d.ofs, mask: d.mask() }
        }
        Act::RegMove { src, dst } => {
            let (s, d) = (sub_from_wire(src)?, sub_from_wire(dst)?);
            writable(d.field, "move")?;
            Action::Move { src: s, dst: d }
        }
        Act::CopyField { n_bits, src_ofs, dst_ofs, src, dst } => {
            let s = sub_from_wire(&WireSub { id: *src, ofs: *src_ofs, n_bits: *n_bits })?;
            let d = sub_from_wire(&WireSub { id: *dst, ofs: *dst_ofs, n_bits: *n_bits })?;
            writable(d.field, "copy_field")?;
            Action::Move { src: s, dst: d }
        }
        Act::Resubmit { in_port, table, ct: false } => {
            let port = (u32::from(*in_port) != K_IN_PORT).then_some(u32::from(*in_port));
            let table = table.filter(|&t| t != 255);
            Action::Resubmit { port, table }
        }
        Act::Resubmit { ct: true, .. } => return Err(unsupported_nx(nxast::RESUBMIT_TABLE_CT)),
        Act::Controller { max_len, id, reason } => {
            Action::Controller { max_len: *max_len, reason: controller_reason(*reason)?, id: *id, userdata: Vec::new() }
        }
        Act::Controller2(c) => {
            if c.pause {
                return Err(Error::new(
                    ErrorCode::BAD_ACTION_ARGUMENT,
                    "controller(pause): pausing for the controller (continuations) is not supported by kairo yet",
                ));
            }
            if c.meter_id.is_some() {
                return Err(Error::new(
                    ErrorCode::BAD_ACTION_ARGUMENT,
                    "controller(meter_id=...): a meter on packets to the controller is not supported by kairo yet",
                ));
            }
            Action::Controller {
                max_len: c.max_len.unwrap_or(u16::MAX),
                reason: controller_reason(c.reason.unwrap_or(1))?,
                id: c.controller_id.unwrap_or(0),
                userdata: c.userdata.clone().unwrap_or_default(),
            }
        }
        Act::Note(bytes) => Action::Note(bytes.clone()),
        Act::OutputReg { src, max_len } | Act::OutputReg2 { src, max_len } => {
            Action::OutputReg { src: sub_from_wire(src)?, max_len: *max_len }
        }
        Act::StackPush(src) => Action::StackPush(sub_from_wire(src)?),
        Act::StackPop(dst) => {
            let dst = sub_from_wire(dst)?;
            writable(dst.field, "pop")?;
            Action::StackPop(dst)
        }
        Act::Learn(l) => Action::Learn(Box::new(learn::from_wire(l)?)),
        Act::FinTimeout { idle, hard } => Action::FinTimeout { idle: *idle, hard: *hard },
        Act::CheckPktLarger { pkt_len, dst } => {
            let dst = sub_from_wire(dst)?;
            writable(dst.field, "check_pkt_larger")?;
            Action::CheckPktLarger { len: *pkt_len, dst }
        }
        Act::Exit => return Err(unsupported_nx(nxast::EXIT)),
        Act::SetTunnel64(_) => return Err(unsupported_nx(nxast::SET_TUNNEL64)),
        Act::CtClear => Action::CtClear,
        Act::Clone(list) => {
            let body = list.iter().map(action_from_wire).collect::<Result<Vec<_>, _>>()?;
            kairo_ofproto::action::check_clone(&body)
                .map_err(|e| Error::new(ErrorCode::BAD_ACTION_ARGUMENT, e.to_string()))?;
            Action::Clone(body)
        }
        Act::Ct { flags, zone_src, zone_imm, table, alg, actions } => {
            ct_from_wire(*flags, zone_src, *zone_imm, *table, *alg, actions)?
        }
        Act::Nat { .. } => {
            return Err(Error::new(
                ErrorCode::BAD_ACTION_ARGUMENT,
                "nat outside a ct action (it is only valid nested in ct)",
            ))
        }
        Act::Conjunction { clause, n_clauses, id } => {
            Action::Conjunction { id: *id, clause: clause + 1, n_clauses: *n_clauses }
        }
        Act::Nicira { subtype, .. } => return Err(unsupported_nx(*subtype)),
        Act::Experimenter { vendor, .. } => {
            return Err(Error::new(
                ErrorCode::BAD_ACTION_EXPERIMENTER,
                format!("experimenter action of vendor {vendor:#010x} is not supported"),
            ))
        }
        Act::CopyTtlOut => return Err(unsupported("copy_ttl_out")),
        Act::CopyTtlIn => return Err(unsupported("copy_ttl_in")),
        Act::SetMplsTtl(t) => Action::SetMplsTtl(*t),
        Act::DecMplsTtl => Action::DecMplsTtl,
        Act::PushMpls(t) => {
            if !kairo_flow::field::is_mpls_type(u64::from(*t)) {
                return Err(Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("push_mpls with ethertype {t:#06x}")));
            }
            Action::PushMpls { ethertype: *t }
        }
        Act::PopMpls(t) => Action::PopMpls { ethertype: *t },
        Act::SetQueue(_) => return Err(unsupported("set_queue")),
        Act::SetNwTtl(_) => return Err(unsupported("set_nw_ttl")),
        Act::PushPbb(_) => return Err(unsupported("push_pbb")),
        Act::PopPbb => return Err(unsupported("pop_pbb")),
        Act::Meter(_) => return Err(unsupported("meter")),
    })
}

/// NXAST_NAT for a NAT spec.
fn nat_to_wire(n: &kairo_ofproto::Nat) -> Act {
    use kairo_ofproto::{NatAddrs, NatKind};
    let mut flags = match n.kind {
        Some(NatKind::Src) => 1,
        Some(NatKind::Dst) => 2,
        None => 0,
    };
    flags |= if n.persistent { 4 } else { 0 } | if n.hash { 8 } else { 0 } | if n.random { 16 } else { 0 };
    let range = |lo, hi| (lo, (hi != lo).then_some(hi));
    let (ipv4, ipv6) = match n.addrs {
        Some(NatAddrs::V4(a, b)) => (Some(range(a, b)), None),
        Some(NatAddrs::V6(a, b)) => (None, Some((a, (b != a).then_some(b)))),
        None => (None, None),
    };
    Act::Nat { flags, ipv4, ipv6, ports: n.ports.map(|(a, b)| (a, (b != a).then_some(b))) }
}

/// A NAT spec from NXAST_NAT (checked as ovs-ofctl checks the text).
fn nat_from_wire(
    flags: u16,
    ipv4: Option<(u32, Option<u32>)>,
    ipv6: Option<(u128, Option<u128>)>,
    ports: Option<(u16, Option<u16>)>,
) -> Result<kairo_ofproto::Nat, Error> {
    use kairo_ofproto::{NatAddrs, NatKind};
    let bad = |why: &str| Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("nat: {why}"));
    if flags & !0x1f != 0 {
        return Err(bad(&format!("unknown flags {flags:#x}")));
    }
    let kind = match flags & 3 {
        0 => None,
        1 => Some(NatKind::Src),
        2 => Some(NatKind::Dst),
        _ => return Err(bad("both src and dst")),
    };
    let addrs = match (ipv4, ipv6) {
        (Some((a, b)), None) => Some(NatAddrs::V4(a, b.unwrap_or(a))),
        (None, Some((a, b))) => Some(NatAddrs::V6(a, b.unwrap_or(a))),
        (None, None) => None,
        _ => return Err(bad("both IPv4 and IPv6 ranges")),
    };
    let ports = ports.map(|(a, b)| (a, b.unwrap_or(a)));
    let ok = |lo: u128, hi: u128| lo <= hi;
    let ranges_ok = match addrs {
        Some(NatAddrs::V4(a, b)) => ok(a.into(), b.into()),
        Some(NatAddrs::V6(a, b)) => ok(a, b),
        None => true,
    } && ports.is_none_or(|(a, b)| a >= 1 && a <= b);
    let (persistent, hash, random) = (flags & 4 != 0, flags & 8 != 0, flags & 16 != 0);
    if !ranges_ok || (hash && random) || (kind.is_none() && (addrs.is_some() || ports.is_some())) {
        return Err(bad("ranges with min <= max (ports from 1), a kind for a range, not both hash and random"));
    }
    Ok(kairo_ofproto::Nat { kind, addrs, ports, persistent, hash, random })
}

/// A `ct` from NXAST_CT (its nested actions: at most one nat, then writes
/// to ct_mark or ct_label), checked as ovs-ofctl checks the text.
fn ct_from_wire(
    flags: u16,
    zone_src: &Option<WireSub>,
    zone_imm: u16,
    table: u8,
    alg: u16,
    actions: &[Act],
) -> Result<Action, Error> {
    let bad = |why: String| Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("ct: {why}"));
    if flags & !3 != 0 {
        return Err(bad(format!("unknown flags {flags:#x}")));
    }
    if alg != 0 {
        return Err(bad(format!("alg={alg}: kairo's connection tracker has no application-level gateways")));
    }
    let zone = match zone_src {
        None => kairo_ofproto::CtZone::Imm(zone_imm),
        Some(s) if s.n_bits == 16 => kairo_ofproto::CtZone::Field(sub_from_wire(s)?),
        Some(s) => return Err(bad(format!("a zone of {} bits (16 needed)", s.n_bits))),
    };
    let mut ct = kairo_ofproto::Ct {
        commit: flags & 1 != 0,
        force: flags & 2 != 0,
        zone,
        table: (table != 255).then_some(table),
        nat: None,
        exec: Vec::new(),
    };
    for a in actions {
        match a {
            Act::Nat { flags, ipv4, ipv6, ports } if ct.nat.is_none() => {
                ct.nat = Some(nat_from_wire(*flags, *ipv4, *ipv6, *ports)?)
            }
            Act::Nat { .. } => return Err(bad("more than one nat".into())),
            other => {
                let x = action_from_wire_nested(other)?;
                if !kairo_ofproto::ct::written(&x).is_some_and(kairo_ofproto::ct::is_ct_field) {
                    return Err(bad(format!("nested `{x}`: only writes to ct_mark or ct_label may be nested")));
                }
                ct.exec.push(x);
            }
        }
    }
    if ct.force && !ct.commit {
        return Err(bad("force without commit".into()));
    }
    if !ct.exec.is_empty() && !ct.commit {
        return Err(bad("nested writes without commit".into()));
    }
    Ok(Action::Ct(Box::new(ct)))
}

fn contiguous(mask: u64) -> Option<(u32, u32)> {
    if mask == 0 {
        return None;
    }
    let ofs = mask.trailing_zeros();
    let n = (mask >> ofs).trailing_ones();
    (mask >> ofs >> n == 0).then_some((ofs, n))
}

/// The wire field for a set_field on `f` under match `m`: transport ports
/// take the name of the match's protocol (as OVS requires: setting udp_dst
/// under a TCP match is OFPBAC_MATCH_INCONSISTENT).
fn set_field_id(f: Field, m: &Match) -> Result<OxmId, Error> {
    let src = f == Field::TpSrc;
    let name = match (f, m.field(Field::IpProto)) {
        (Field::TpSrc | Field::TpDst, (IPPROTO_UDP, 0xff)) => {
            Some(if src { "OXM_OF_UDP_SRC" } else { "OXM_OF_UDP_DST" })
        }
        (Field::TpSrc | Field::TpDst, (IPPROTO_SCTP, 0xff)) => {
            Some(if src { "OXM_OF_SCTP_SRC" } else { "OXM_OF_SCTP_DST" })
        }
        (Field::TpSrc | Field::TpDst, (IPPROTO_ICMP, 0xff)) if m.key().is_ipv4() => {
            Some(if src { "OXM_OF_ICMPV4_TYPE" } else { "OXM_OF_ICMPV4_CODE" })
        }
        (Field::TpSrc | Field::TpDst, (IPPROTO_ICMPV6, 0xff)) if m.key().is_ipv6() => {
            Some(if src { "OXM_OF_ICMPV6_TYPE" } else { "OXM_OF_ICMPV6_CODE" })
        }
        _ => oxm_name(f),
    };
    name.map(by_name)
        .ok_or_else(|| Error::new(ErrorCode::BAD_FIELD, format!("{} has no OpenFlow field to carry it", f.name())))
}

/// Kairo's actions on the wire, for a rule with match `m`. As Open vSwitch,
/// `mod_vlan_vid` on a match that does not require a VLAN tag is written as
/// push_vlan then set_field, and transport-port fields take the match's
/// protocol's name.
pub fn actions_to_wire(acts: &[Action], v: Version, m: &Match) -> Result<Vec<Act>, Error> {
    let mut out = Vec::new();
    let mut tagged = kairo_ofproto::action::match_has_vlan(m);
    for a in acts {
        match a {
            Action::Output(p) => out.push(Act::Output { port: port::to_wire(*p), max_len: 0 }),
            Action::Clone(body) => out.push(Act::Clone(actions_to_wire(body, v, m)?)),
            Action::Learn(l) => out.push(Act::Learn(Box::new(learn::to_wire(l)?))),
            Action::FinTimeout { idle, hard } => out.push(Act::FinTimeout { idle: *idle, hard: *hard }),
            Action::CheckPktLarger { len, dst } => {
                out.push(Act::CheckPktLarger { pkt_len: *len, dst: sub_in(dst, m)? })
            }
            Action::StackPush(src) => out.push(Act::StackPush(sub_in(src, m)?)),
            Action::StackPop(dst) => out.push(Act::StackPop(sub_in(dst, m)?)),
            Action::OutputReg { src, max_len } => out.push(Act::OutputReg { src: sub_in(src, m)?, max_len: *max_len }),
            Action::InPort => out.push(Act::Output { port: port::OFPP_IN_PORT, max_len: 0 }),
            Action::Flood => out.push(Act::Output { port: port::OFPP_FLOOD, max_len: 0 }),
            Action::All => out.push(Act::Output { port: port::OFPP_ALL, max_len: 0 }),
            Action::Normal => out.push(Act::Output { port: port::OFPP_NORMAL, max_len: 0 }),
            Action::Controller { max_len, reason, id, userdata } => {
                let default_reason = *reason == kairo_ofproto::ControllerReason::Action;
                // As Open vSwitch encodes it: an output to CONTROLLER when
                // nothing else is said, NXAST_CONTROLLER2 for userdata.
                if !userdata.is_empty() {
                    out.push(Act::Controller2(Box::new(crate::action::WireController2 {
                        max_len: (*max_len != u16::MAX).then_some(*max_len),
                        controller_id: (*id != 0).then_some(*id),
                        reason: (!default_reason).then_some(reason.code()),
                        userdata: Some(userdata.clone()),
                        pause: false,
                        meter_id: None,
                    })))
                } else if !default_reason || *id != 0 {
                    out.push(Act::Controller { max_len: *max_len, id: *id, reason: reason.code() })
                } else {
                    out.push(Act::Output { port: port::OFPP_CONTROLLER, max_len: *max_len })
                }
            }
            Action::Group(g) => out.push(Act::Group(*g)),
            Action::PushVlan { tpid } => {
                tagged = true;
                out.push(Act::PushVlan(*tpid));
            }
            Action::PopVlan => {
                tagged = false;
                out.push(Act::PopVlan);
            }
            Action::DecTtl => out.push(Act::DecNwTtl),
            Action::PushMpls { ethertype } => out.push(Act::PushMpls(*ethertype)),
            Action::PopMpls { ethertype } => out.push(Act::PopMpls(*ethertype)),
            Action::SetMplsTtl(t) => out.push(Act::SetMplsTtl(*t)),
            Action::DecMplsTtl => out.push(Act::DecMplsTtl),
            Action::SetVlanVid { vid, push } => {
                if *push && !tagged {
                    out.push(Act::PushVlan(0x8100));
                    tagged = true;
                }
                out.push(Act::SetField(Oxm::exact(OxmId::basic(6), u128::from(*vid | 0x1000))));
            }
            Action::SetVlanPcp { pcp, push } => {
                if *push && !tagged {
                    out.push(Act::PushVlan(0x8100));
                    tagged = true;
                }
                out.push(Act::SetField(Oxm::exact(OxmId::basic(7), u128::from(*pcp))));
            }
            // Bits of one half of a 128-bit field: bits of the whole on the wire.
            Action::SetField { field, value, mask } if field.half_of().is_some() => {
                let (hi, base) = field.half_of().unwrap_or((*field, 0));
                let id = set_field_id(hi, m)?;
                match contiguous(*mask).filter(|_| v < Version::V1_5) {
                    Some((ofs, n)) => {
                        let dst = WireSub { id, ofs: (ofs + base) as u16, n_bits: n as u16 };
                        out.push(Act::RegLoad { dst, value: (value & mask) >> ofs });
                    }
                    None => {
                        let o =
                            Oxm { id, value: u128::from(value & mask) << base, mask: Some(u128::from(*mask) << base) };
                        out.push(if v >= Version::V1_5 { Act::SetField(o) } else { Act::RegLoad2(o) });
                    }
                }
            }
            Action::SetField { field, value, mask } => {
                let full = if field.bits() >= 64 { u64::MAX } else { (1u64 << field.bits()) - 1 };
                let (val, msk) = if *field == Field::InPort {
                    (u64::from(port::to_wire(*value as u32)), u64::from(u32::MAX))
                } else {
                    (*value, *mask)
                };
                let id = set_field_id(*field, m)?;
                if *mask == full || *field == Field::InPort {
                    out.push(Act::SetField(Oxm::exact(id, u128::from(val))));
                } else if v >= Version::V1_5 {
                    out.push(Act::SetField(Oxm { id, value: u128::from(val & msk), mask: Some(u128::from(msk)) }));
                } else if let Some((ofs, n)) = contiguous(msk) {
                    let dst = WireSub { id, ofs: ofs as u16, n_bits: n as u16 };
                    out.push(Act::RegLoad { dst, value: (val & msk) >> ofs });
                } else {
                    out.push(Act::RegLoad2(Oxm { id, value: u128::from(val & msk), mask: Some(u128::from(msk)) }));
                }
            }
            Action::SetWide { field, value, mask } => {
                let id = set_field_id(*field, m)?;
                let bits =
                    (*mask != 0).then(|| (mask.trailing_zeros(), (mask >> mask.trailing_zeros()).trailing_ones()));
                let load = bits.filter(|&(ofs, n)| n <= 64 && (mask >> ofs) >> n == 0);
                if *mask == u128::MAX {
                    out.push(Act::SetField(Oxm::exact(id, *value)));
                } else if let (Some((ofs, n)), true) = (load, v < Version::V1_5) {
                    // As ovs-ofctl: a contiguous range of up to 64 bits is a load.
                    let dst = WireSub { id, ofs: ofs as u16, n_bits: n as u16 };
                    out.push(Act::RegLoad { dst, value: ((value & mask) >> ofs) as u64 });
                } else if v >= Version::V1_5 {
                    out.push(Act::SetField(Oxm { id, value: value & mask, mask: Some(*mask) }));
                } else {
                    out.push(Act::RegLoad2(Oxm { id, value: value & mask, mask: Some(*mask) }));
                }
            }
            Action::Move { src, dst } => {
                let (s, d) = (sub_in(src, m)?, sub_in(dst, m)?);
                if v >= Version::V1_5 {
                    out.push(Act::CopyField { n_bits: s.n_bits, src_ofs: s.ofs, dst_ofs: d.ofs, src: s.id, dst: d.id });
                } else {
                    out.push(Act::RegMove { src: s, dst: d });
                }
            }
            Action::Resubmit { port: p, table } => {
                let in_port = p.map_or(K_IN_PORT as u16, |p| p as u16);
                out.push(Act::Resubmit { in_port, table: Some(table.unwrap_or(255)), ct: false });
                if table.is_none() {
                    if let Some(Act::Resubmit { table, .. }) = out.last_mut() {
                        *table = None;
                    }
                }
            }
            Action::CtClear => out.push(Act::CtClear),
            Action::Conjunction { id, clause, n_clauses } => {
                out.push(Act::Conjunction { clause: clause.saturating_sub(1), n_clauses: *n_clauses, id: *id })
            }
            Action::Note(bytes) => out.push(Act::Note(bytes.clone())),
            Action::Ct(ct) => {
                let flags = u16::from(ct.commit) | if ct.force { 2 } else { 0 };
                let (zone_src, zone_imm) = match ct.zone {
                    kairo_ofproto::CtZone::Imm(z) => (None, z),
                    kairo_ofproto::CtZone::Field(sf) => (Some(sub_in(&sf, m)?), 0),
                };
                // As ovs-ofctl: the NAT first, then the writes of exec(...).
                let mut actions: Vec<Act> = ct.nat.iter().map(nat_to_wire).collect();
                actions.extend(actions_to_wire(&ct.exec, v, m)?);
                out.push(Act::Ct { flags, zone_src, zone_imm, table: ct.table.unwrap_or(255), alg: 0, actions });
            }
        }
    }
    Ok(out)
}

fn actions_from_wire(acts: &[Act]) -> Result<Vec<Action>, Error> {
    acts.iter().map(action_from_wire).collect()
}

/// Wire instructions as kairo's instructions.
pub fn instructions_from_wire(insts: &[Instruction]) -> Result<Instructions, Error> {
    let mut out = Instructions::default();
    for i in insts {
        match i {
            Instruction::GotoTable(t) => out.goto_table = Some(*t),
            Instruction::WriteMetadata { value, mask } => out.write_metadata = Some((*value & *mask, *mask)),
            Instruction::WriteActions(a) => out.write = actions_from_wire(a)?,
            Instruction::ApplyActions(a) => {
                // OpenFlow 1.5 carries the meter as the first apply action.
                let rest = match a.first() {
                    Some(Act::Meter(m)) => {
                        out.meter = Some(*m);
                        &a[1..]
                    }
                    _ => &a[..],
                };
                out.apply = actions_from_wire(rest)?;
            }
            Instruction::ClearActions => out.clear_actions = true,
            Instruction::Meter(m) => out.meter = Some(*m),
        }
    }
    Ok(out)
}

/// Kairo's instructions on the wire, in OpenFlow's execution order.
pub fn instructions_to_wire(inst: &Instructions, v: Version, m: &Match) -> Result<Vec<Instruction>, Error> {
    let mut out = Vec::new();
    let mut apply = actions_to_wire(&inst.apply, v, m)?;
    match inst.meter {
        Some(id) if v >= Version::V1_5 => apply.insert(0, Act::Meter(id)),
        Some(id) => out.push(Instruction::Meter(id)),
        None => {}
    }
    if !apply.is_empty() {
        out.push(Instruction::ApplyActions(apply));
    }
    if inst.clear_actions {
        out.push(Instruction::ClearActions);
    }
    if !inst.write.is_empty() {
        out.push(Instruction::WriteActions(actions_to_wire(&inst.write, v, m)?));
    }
    if let Some((value, mask)) = inst.write_metadata {
        out.push(Instruction::WriteMetadata { value, mask });
    }
    if let Some(t) = inst.goto_table {
        out.push(Instruction::GotoTable(t));
    }
    Ok(out)
}

/// OFPGT_* as kairo's group type.
pub fn group_type_from_wire(t: u8) -> Result<GroupType, Error> {
    Ok(match t {
        0 => GroupType::All,
        1 => GroupType::Select,
        2 => GroupType::Indirect,
        3 => GroupType::FastFailover,
        other => return Err(Error::new(ErrorCode::BAD_GROUP_TYPE, format!("group type {other}"))),
    })
}

pub fn group_type_to_wire(t: GroupType) -> u8 {
    match t {
        GroupType::All => 0,
        GroupType::Select => 1,
        GroupType::Indirect => 2,
        GroupType::FastFailover => 3,
    }
}

/// A group from a GROUP_MOD's type, id and buckets (bucket ids numbered in
/// order, as Open vSwitch numbers OpenFlow 1.3 buckets).
pub fn group_from_wire(ty: u8, group_id: u32, buckets: &[WireBucket]) -> Result<Group, Error> {
    let ty = group_type_from_wire(ty)?;
    if group_id > 0xffff_ff00 {
        return Err(Error::new(ErrorCode::INVALID_GROUP, format!("group id {group_id:#x} is reserved")));
    }
    let mut out = Vec::new();
    for (i, b) in buckets.iter().enumerate() {
        let watch_port = match b.watch_port {
            port::OFPP_ANY => None,
            p => Some(port::from_wire(p).map_err(|e| Error::new(ErrorCode::BAD_WATCH, e.detail))?),
        };
        let watch_group = (b.watch_group != crate::message::OFPG_ANY).then_some(b.watch_group);
        if ty == GroupType::FastFailover && watch_port.is_none() && watch_group.is_none() {
            return Err(Error::new(ErrorCode::BAD_WATCH, format!("fast-failover bucket {i} watches nothing")));
        }
        let actions = actions_from_wire(&b.actions)?;
        out.push(Bucket {
            id: i as u32,
            weight: if ty == GroupType::Select { b.weight } else { 0 },
            watch_port,
            watch_group,
            actions,
        });
    }
    let g = Group { id: group_id, ty, buckets: out, fields: None, selection: kairo_ofproto::group::Selection::Default };
    g.validate().map_err(|e| Error::new(ErrorCode::BAD_BUCKET, e.to_string()))?;
    Ok(g)
}

pub fn buckets_to_wire(g: &Group, v: Version) -> Result<Vec<WireBucket>, Error> {
    g.buckets
        .iter()
        .map(|b| {
            Ok(WireBucket {
                bucket_id: b.id,
                weight: if g.ty == GroupType::Select { b.weight } else { 0 },
                watch_port: b.watch_port.map_or(port::OFPP_ANY, port::to_wire),
                watch_group: b.watch_group.unwrap_or(crate::message::OFPG_ANY),
                actions: actions_to_wire(&b.actions, v, &Match::default())?,
            })
        })
        .collect()
}

/// The wire fields kairo matches on (for TABLE_FEATURES).
pub fn match_field_ids() -> Vec<OxmId> {
    let mut out: Vec<OxmId> = KFIELDS
        .iter()
        .filter(|d| d.storage.is_none() || matches!(d.id, Field::ArpOp | Field::ArpSpa | Field::ArpTpa))
        .filter_map(|d| oxm_name(d.id))
        .map(by_name)
        .collect();
    for n in [
        "OXM_OF_VLAN_VID",
        "OXM_OF_VLAN_PCP",
        "OXM_OF_TCP_SRC",
        "OXM_OF_TCP_DST",
        "OXM_OF_UDP_SRC",
        "OXM_OF_UDP_DST",
        "OXM_OF_SCTP_SRC",
        "OXM_OF_SCTP_DST",
        "OXM_OF_ICMPV4_TYPE",
        "OXM_OF_ICMPV4_CODE",
    ] {
        out.push(by_name(n));
    }
    out.sort();
    out.dedup();
    out
}
