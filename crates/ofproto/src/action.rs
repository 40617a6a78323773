//! OpenFlow actions and instructions, and their ovs-ofctl notation.
//!
//! Invariant: an [`Action`] that parses is executable: its field is writable,
//! its bit range lies inside the field, its value fits. Printing an action
//! gives text that parses back to the same action.

use kairo_flow::field::{Field, VLAN_CFI};
use kairo_flow::parse::{format_field_value, format_wide_value, parse_field_value, parse_uint, parse_wide_value};
use kairo_flow::split_top;

use crate::ports::PortNames;
use crate::OfError;

/// Reserved port numbers (OpenFlow 1.0 numbering, as ovs-ofctl prints them).
pub const OFPP_IN_PORT: u32 = 0xfff8;
pub const OFPP_CONTROLLER: u32 = 0xfffd;
pub const OFPP_LOCAL: u32 = 0xfffe;

/// A bit range of a field: `NXM_NX_REG0[4..7]` is (Reg0, ofs 4, 4 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubField {
    pub field: Field,
    pub ofs: u32,
    pub n_bits: u32,
}

impl SubField {
    /// Mask of the range within the field.
    pub fn mask(&self) -> u64 {
        let m = if self.n_bits == 64 { u64::MAX } else { (1u64 << self.n_bits) - 1 };
        m << self.ofs
    }

    /// Parses `NAME[]`, `NAME[b]` or `NAME[a..b]`. A range of a 128-bit
    /// field (`ipv6_src[0..63]`) names bits of the half it lies in; a range
    /// across both halves is not supported yet and says so.
    pub fn parse(s: &str) -> Result<SubField, OfError> {
        let bad = |exp: &str| OfError::Syntax { text: s.to_string(), expected: exp.to_string() };
        let (name, range) = match s.find('[') {
            Some(i) if s.ends_with(']') => (&s[..i], &s[i + 1..s.len() - 1]),
            Some(_) => return Err(bad("a field bit range NAME[a..b]")),
            None => (s, ""),
        };
        let field = Field::from_name(name)
            .ok_or_else(|| OfError::Flow(kairo_flow::FlowError::UnknownField { name: name.to_string() }))?;
        let width = if field.wide().is_some() { 128 } else { field.bits() };
        let (ofs, end) = if range.is_empty() {
            // Open vSwitch's `in_port` (NXM_OF_IN_PORT) is the 16-bit port
            // number; its 32-bit one is `in_port_oxm` (OXM_OF_IN_PORT).
            let whole = if matches!(name, "in_port" | "NXM_OF_IN_PORT") { 16 } else { width };
            (0, whole - 1)
        } else if let Some((a, b)) = range.split_once("..") {
            let a: u32 = a.trim().parse().map_err(|_| bad("a bit range a..b"))?;
            let b: u32 = b.trim().parse().map_err(|_| bad("a bit range a..b"))?;
            (a, b)
        } else {
            let a: u32 = range.trim().parse().map_err(|_| bad("a bit index"))?;
            (a, a)
        };
        if ofs > end || end >= width {
            return Err(bad(&format!("a bit range within the {width} bits of {name}")));
        }
        if let Some((hi, lo)) = field.wide() {
            return match (ofs, end) {
                (_, 0..=63) => Ok(SubField { field: lo, ofs, n_bits: end - ofs + 1 }),
                (64.., _) => Ok(SubField { field: hi, ofs: ofs - 64, n_bits: end - ofs + 1 }),
                _ => Err(OfError::Unsupported {
                    what: s.to_string(),
                    why: format!(
                        "a bit range across both halves of 128-bit {name}: use {name}[0..63] and {name}[64..127]"
                    ),
                }),
            };
        }
        Ok(SubField { field, ofs, n_bits: end - ofs + 1 })
    }
}

impl std::fmt::Display for SubField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A half of a 128-bit field prints as bits of the whole.
        if let Some((hi, base)) = self.field.half_of() {
            let (name, ofs) = (hi.name(), self.ofs + base);
            return if self.n_bits == 1 {
                write!(f, "{name}[{ofs}]")
            } else {
                write!(f, "{name}[{}..{}]", ofs, ofs + self.n_bits - 1)
            };
        }
        let name = self.field.name();
        if self.field == Field::InPort && self.ofs == 0 && self.n_bits == 32 {
            // (`in_port[]` is the 16-bit port number)
            f.write_str("OXM_OF_IN_PORT[]")
        } else if self.ofs == 0 && self.n_bits == self.field.bits() {
            write!(f, "{name}[]")
        } else if self.n_bits == 1 {
            write!(f, "{name}[{}]", self.ofs)
        } else {
            write!(f, "{name}[{}..{}]", self.ofs, self.ofs + self.n_bits - 1)
        }
    }
}

/// One action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Output to a port (never to the ingress port: use [`Action::InPort`]).
    Output(u32),
    /// `output:FIELD[a..b]`: output to the port the field's bits hold when
    /// it runs (a 16-bit OpenFlow 1.0 port number: the reserved ports
    /// 0xfff8.. are IN_PORT, TABLE, NORMAL, FLOOD, ALL, CONTROLLER, LOCAL,
    /// NONE; a value above 0xffff outputs nothing), as Open vSwitch's
    /// `output_reg`. The bits it reads are exact in the megaflow.
    OutputReg {
        src: SubField,
        max_len: u16,
    },
    /// `push:FIELD[a..b]`: the field's bits onto the translation's stack
    /// (Open vSwitch's register stack; exact in the megaflow).
    StackPush(SubField),
    /// `pop:FIELD[a..b]`: the stack's top entry into the field's bits (its
    /// low bits, zero-extended); an empty stack pops nothing.
    StackPop(SubField),
    /// Output to the ingress port.
    InPort,
    /// Output to every port of the switch but the ingress port and those
    /// set `no-flood` (`FLOOD`).
    Flood,
    /// Output to every port of the switch but the ingress port (`ALL`).
    All,
    /// `NORMAL`: the bridge as an L2 learning switch (Open vSwitch's
    /// `xlate_normal`): learn the source MAC on the ingress port and VLAN,
    /// send to the port the destination was learned on, else flood the
    /// VLAN, with each port's VLAN mode applied on the way in and out.
    Normal,
    /// Send to the controller: at most `max_len` bytes, with `reason`
    /// (`action` on a table-miss rule is reported as `no_match`, as Open
    /// vSwitch reports it in OpenFlow 1.3), to the connections with
    /// controller id `id` (0 unless one set another), with `userdata`
    /// (which only NXT_PACKET_IN2 carries: a connection asks for that
    /// format, as with Open vSwitch).
    Controller {
        max_len: u16,
        reason: kairo_odp::ControllerReason,
        id: u16,
        userdata: Vec<u8>,
    },
    /// Set bits of a field: `set_field`, `load`, `mod_dl_src`, `mod_nw_dst`, ...
    SetField {
        field: Field,
        value: u64,
        mask: u64,
    },
    /// Set bits of a 128-bit field (named by its high half): `set_field` of
    /// `ipv6_src`, `ipv6_dst`, `nd_target`.
    SetWide {
        field: Field,
        value: u128,
        mask: u128,
    },
    /// Copy a bit range from one field to another.
    Move {
        src: SubField,
        dst: SubField,
    },
    PushVlan {
        tpid: u16,
    },
    PopVlan,
    /// Set the VLAN id; `push` pushes a tag on untagged packets (mod_vlan_vid),
    /// otherwise untagged packets are left alone (set_field:..->vlan_vid).
    SetVlanVid {
        vid: u16,
        push: bool,
    },
    SetVlanPcp {
        pcp: u8,
        push: bool,
    },
    DecTtl,
    /// Push an MPLS label stack entry; the ethertype is 0x8847 or 0x8848.
    /// On a packet without labels the entry is made from the IP header
    /// (label 0, or 2 for IPv6; TTL and the DSCP's low 3 bits as TC), as
    /// Open vSwitch makes it; on a labelled packet the top entry is copied.
    PushMpls {
        ethertype: u16,
    },
    /// Pop the top MPLS label stack entry; the packet gets `ethertype`.
    PopMpls {
        ethertype: u16,
    },
    /// `set_mpls_ttl(N)` (OpenFlow's own action; `set_field:N->mpls_ttl`
    /// is a [`Action::SetField`]).
    SetMplsTtl(u8),
    /// `dec_mpls_ttl`: a TTL that would reach zero sends the packet to the
    /// controller and ends the action list, as `dec_ttl` does.
    DecMplsTtl,
    /// `resubmit(port,table)`: look the packet up again (in table, as if from port).
    Resubmit {
        port: Option<u32>,
        table: Option<u8>,
    },
    Group(u32),
    /// `ct(...)`: connection tracking (see [`crate::ct`]).
    Ct(Box<crate::ct::Ct>),
    /// `ct_clear`: the packet becomes untracked (ct fields zero).
    CtClear,
    /// `conjunction(id,k/n)`: the rule is clause `k` (1-based) of the `n`
    /// of conjunctive flow `id` (ovs-fields(7), "Conjunctive Match
    /// Fields"). Never run: a lookup that meets such rules completes the
    /// conjunction and looks up `conj_id=id` instead. Only [`Action::Note`]
    /// may accompany it ([`Instructions::check_conjunctions`]).
    Conjunction {
        id: u32,
        clause: u8,
        n_clauses: u8,
    },
    /// `note:hh...`: does nothing; the bytes, padded with zeros as Open
    /// vSwitch pads them (to 6 more than a multiple of 8).
    Note(Vec<u8>),
    /// `clone(action...)`: runs the actions on a copy of the packet and of
    /// the pipeline's state (flow, metadata, registers, the action set, which
    /// runs at the clone's end), then puts them back (ovs-actions(7)). Only
    /// the actions Open vSwitch calls reversible, which it runs in line:
    /// `ct`, which needs the datapath's own clone, is refused
    /// ([`check_clone`]); `ct_clear` runs in line as there, clearing the
    /// packet itself (the flow's ct fields are put back after the clone).
    Clone(Vec<Action>),
    /// `learn(...)`: add (or refresh) a flow built from the packet (see
    /// [`crate::learn`]).
    Learn(Box<crate::learn::Learn>),
    /// `check_pkt_larger(LEN)->DST`: whether the packet is longer than
    /// `len` bytes, as the one bit `dst` (1: longer). Only the datapath
    /// knows a packet's length, so translation goes on twice from here, as
    /// Open vSwitch's does: the rest of this action list (and, for a rule's
    /// own list, its remaining instructions) with the bit 1, then with 0,
    /// each run with the action set at its end, into the datapath's
    /// `check_pkt_len(size=LEN,gt(...),le(...))`; this list ends there.
    CheckPktLarger {
        len: u16,
        dst: SubField,
    },
    /// `fin_timeout(idle_timeout=I,hard_timeout=H)`: once a TCP packet with
    /// FIN or RST runs this flow, its idle and hard timeouts become at most
    /// `I` and `H` seconds (0: that one is left alone). Does nothing to the
    /// packet; its IP protocol is exact in the megaflow (as Open vSwitch
    /// has it).
    FinTimeout {
        idle: u16,
        hard: u16,
    },
}

/// What kairo runs inside `clone(...)`: anything but `ct` (Open vSwitch
/// sends a clone with `ct` to the datapath's clone action, which kairo's
/// datapath does not have yet; `ct_clear` it runs in line, as kairo does)
/// and `conjunction` (only a flow's own).
pub fn check_clone(body: &[Action]) -> Result<(), OfError> {
    for a in body {
        match a {
            Action::Ct(_) => {
                return Err(OfError::Unsupported {
                    what: a.to_string(),
                    why: "ct inside clone(...) needs the datapath's clone action, which kairo does not have yet".into(),
                })
            }
            Action::Conjunction { .. } => {
                return Err(OfError::Syntax {
                    text: a.to_string(),
                    expected: "no conjunction inside clone(...) (it stands alone in a flow)".into(),
                })
            }
            Action::Clone(inner) => check_clone(inner)?,
            _ => {}
        }
    }
    Ok(())
}

/// The largest number of clauses a conjunctive flow may have (Open
/// vSwitch's: one bit per clause of a 64-bit word).
pub const MAX_CONJ_CLAUSES: u8 = 64;

/// The instructions of a rule, in OpenFlow 1.3 execution order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Instructions {
    /// OpenFlow 1.3's meter instruction (`meter:N`), run first: a packet the
    /// meter's band drops goes no further.
    pub meter: Option<u32>,
    pub apply: Vec<Action>,
    pub clear_actions: bool,
    pub write: Vec<Action>,
    pub write_metadata: Option<(u64, u64)>,
    pub goto_table: Option<u8>,
}

fn port_name(p: u32) -> String {
    match p {
        OFPP_LOCAL => "LOCAL".into(),
        OFPP_CONTROLLER => "CONTROLLER".into(),
        OFPP_IN_PORT => "IN_PORT".into(),
        _ => p.to_string(),
    }
}

fn parse_port(s: &str, names: &PortNames) -> Result<u32, OfError> {
    if let Some(p) = names.resolve(s)? {
        return Ok(p);
    }
    match s {
        "LOCAL" | "local" => Ok(OFPP_LOCAL),
        _ => parse_uint(s)
            .filter(|&v| v <= u32::MAX as u64)
            .map(|v| v as u32)
            .ok_or_else(|| OfError::Syntax { text: s.to_string(), expected: "a port number".into() }),
    }
}

/// `check_pkt_larger(LEN)->DST`, as ovs-ofctl takes it: LEN 0-65535 and a
/// writable one-bit destination.
/// (`rest`: what follows `check_pkt_larger(` in `s`.)
fn parse_check_pkt_larger(s: &str, rest: &str) -> Result<Action, OfError> {
    let syntax = |exp: &str| OfError::Syntax { text: s.to_string(), expected: exp.to_string() };
    let (len, dst) = rest.split_once(")->").ok_or_else(|| syntax("check_pkt_larger(LEN)->DST"))?;
    let len = parse_uint(len)
        .and_then(|l| u16::try_from(l).ok())
        .ok_or_else(|| syntax("a packet length 0-65535 in check_pkt_larger(LEN)"))?;
    let dst = SubField::parse(dst)?;
    if dst.n_bits != 1 {
        return Err(syntax("a 1-bit destination (check_pkt_larger writes one bit), as FIELD[BIT]"));
    }
    writable(dst.field, s)?;
    Ok(Action::CheckPktLarger { len, dst })
}

fn unsupported(what: &str, why: &str) -> OfError {
    OfError::Unsupported { what: what.to_string(), why: why.to_string() }
}

fn writable(f: Field, text: &str) -> Result<(), OfError> {
    if f.def().writable {
        Ok(())
    } else {
        Err(OfError::Syntax {
            text: text.to_string(),
            expected: format!("a writable field ({} is read-only)", f.name()),
        })
    }
}

fn set_from_text(field: Field, valtext: &str, whole: &str) -> Result<Action, OfError> {
    writable(field, whole)?;
    if field.wide().is_some() {
        let (value, mask) = parse_wide_value(field, valtext)?;
        return Ok(Action::set_wide(field, value, mask));
    }
    let (value, mask) = parse_field_value(field, valtext)?;
    Ok(Action::SetField { field, value, mask })
}

impl Action {
    /// A write of the `mask` bits of 128-bit field `field` (named by its
    /// high half). Bits within one half are a write of that half (as a
    /// `load` to them is): one action has one form, however it was written
    /// or sent.
    pub fn set_wide(field: Field, value: u128, mask: u128) -> Action {
        let Some((hi, lo)) = field.wide() else {
            return Action::SetField { field, value: value as u64, mask: mask as u64 };
        };
        if mask >> 64 == 0 {
            Action::SetField { field: lo, value: value as u64, mask: mask as u64 }
        } else if mask as u64 == 0 {
            Action::SetField { field: hi, value: (value >> 64) as u64, mask: (mask >> 64) as u64 }
        } else {
            Action::SetWide { field, value, mask }
        }
    }

    /// Parses one action (`output:2`, `mod_nw_dst:10.0.0.1`, `resubmit(,3)`, ...).
    pub fn parse(s: &str) -> Result<Action, OfError> {
        Action::parse_in(s, &PortNames::NONE)
    }

    /// [`Action::parse`] with ports that may be given by name.
    pub fn parse_in(s: &str, names: &PortNames) -> Result<Action, OfError> {
        let a = Action::parse_nested_in(s, names)?;
        crate::ct::check_outside(&a, s)?;
        Ok(a)
    }

    /// [`Action::parse`] without the check that only `ct(exec(...))`
    /// writes ct_mark and ct_label (for the actions nested there).
    pub(crate) fn parse_nested(s: &str) -> Result<Action, OfError> {
        Action::parse_nested_in(s, &PortNames::NONE)
    }

    fn parse_nested_in(s: &str, names: &PortNames) -> Result<Action, OfError> {
        let syntax = |exp: &str| OfError::Syntax { text: s.to_string(), expected: exp.to_string() };
        // Bare port number: output; so is a bare port name (a port's name
        // comes before an action's, as ovs-ofctl reads them).
        if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
            return Ok(Action::Output(parse_port(s, names)?));
        }
        if !names.is_empty() && !s.contains([':', '(']) {
            if let Ok(Some(p)) = names.resolve(s) {
                return Ok(Action::Output(p));
            }
        }
        if let Some(rest) = s.get(..17).filter(|p| p.eq_ignore_ascii_case("check_pkt_larger(")).and(s.get(17..)) {
            return parse_check_pkt_larger(s, rest);
        }
        let (name, arg) = if let Some(i) = s.find([':', '(']) {
            if s.as_bytes()[i] == b'(' {
                if !s.ends_with(')') {
                    return Err(syntax("a closing parenthesis"));
                }
                (&s[..i], Some(&s[i + 1..s.len() - 1]))
            } else {
                (&s[..i], Some(&s[i + 1..]))
            }
        } else {
            (s, None)
        };
        let need = || arg.ok_or_else(|| syntax(&format!("{name}:ARGUMENT")));
        let lname = name.to_ascii_lowercase();
        Ok(match lname.as_str() {
            "output" => {
                let a = need()?;
                match a {
                    "in_port" | "IN_PORT" => Action::InPort,
                    "controller" | "CONTROLLER" => Action::controller(u16::MAX),
                    "normal" | "NORMAL" => Action::Normal,
                    "flood" | "FLOOD" => Action::Flood,
                    "all" | "ALL" => Action::All,
                    _ if a.contains('[') => Action::OutputReg { src: SubField::parse(a)?, max_len: u16::MAX },
                    _ => Action::Output(parse_port(a, names)?),
                }
            }
            "in_port" if arg.is_none() => Action::InPort,
            "local" if arg.is_none() => Action::Output(OFPP_LOCAL),
            "controller" => {
                let mut a = Action::controller(u16::MAX);
                let Action::Controller { max_len, reason, id, userdata } = &mut a else { unreachable!() };
                // controller:LEN or controller(max_len=LEN,reason=R,id=N,userdata=HH.HH...)
                for part in arg.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = match part.split_once('=') {
                        Some(kv) => kv,
                        None if parse_uint(part).is_some() => ("max_len", part),
                        None => (part, ""),
                    };
                    match k {
                        "max_len" => {
                            *max_len = parse_uint(v)
                                .ok_or_else(|| syntax("controller[:max_len] or controller(max_len=N,...)"))?
                                .min(u64::from(u16::MAX)) as u16
                        }
                        "reason" => {
                            *reason = match v {
                                "action" => kairo_odp::ControllerReason::Action,
                                "no_match" => kairo_odp::ControllerReason::NoMatch,
                                "invalid_ttl" => kairo_odp::ControllerReason::InvalidTtl,
                                "action_set" | "group" | "packet_out" => {
                                    return Err(unsupported(
                                        part,
                                        "kairo reports reasons action, no_match and invalid_ttl",
                                    ))
                                }
                                _ => return Err(syntax("reason=action|no_match|invalid_ttl")),
                            }
                        }
                        "id" => {
                            *id = parse_uint(v)
                                .and_then(|n| u16::try_from(n).ok())
                                .ok_or_else(|| syntax("id=N, a controller id 0-65535"))?
                        }
                        "userdata" => {
                            *userdata = parse_hex_bytes(v).ok_or_else(|| syntax("userdata=HH.HH... (hex bytes)"))?
                        }
                        "pause" => {
                            return Err(unsupported(
                                part,
                                "pausing for the controller (continuations) is not supported yet",
                            ))
                        }
                        "meter_id" => {
                            return Err(unsupported(part, "a meter on packets to the controller is not supported yet"))
                        }
                        _ => {
                            return Err(syntax(
                                "controller[:max_len] or controller(max_len=N,reason=R,id=N,userdata=HH...)",
                            ))
                        }
                    }
                }
                a
            }
            "drop" => return Err(syntax("`drop` alone (it cannot be combined with other actions)")),
            "flood" if arg.is_none() => Action::Flood,
            "all" if arg.is_none() => Action::All,
            "normal" if arg.is_none() => Action::Normal,
            "mod_dl_src" => set_from_text(Field::EthSrc, need()?, s)?,
            "mod_dl_dst" => set_from_text(Field::EthDst, need()?, s)?,
            "mod_nw_src" => set_from_text(Field::IpSrc, need()?, s)?,
            "mod_nw_dst" => set_from_text(Field::IpDst, need()?, s)?,
            "mod_tp_src" => set_from_text(Field::TpSrc, need()?, s)?,
            "mod_tp_dst" => set_from_text(Field::TpDst, need()?, s)?,
            "mod_nw_ttl" => set_from_text(Field::IpTtl, need()?, s)?,
            "mod_nw_ecn" => set_from_text(Field::IpEcn, need()?, s)?,
            "mod_nw_tos" => {
                let v = parse_uint(need()?)
                    .filter(|v| *v <= 0xff && v & 3 == 0)
                    .ok_or_else(|| syntax("a TOS byte with the ECN bits clear"))?;
                Action::SetField { field: Field::IpDscp, value: v >> 2, mask: 0x3f }
            }
            "mod_vlan_vid" => {
                let v = parse_uint(need()?).filter(|v| *v <= 0xfff).ok_or_else(|| syntax("a VLAN id 0-4095"))?;
                Action::SetVlanVid { vid: v as u16, push: true }
            }
            "mod_vlan_pcp" => {
                let v = parse_uint(need()?).filter(|v| *v <= 7).ok_or_else(|| syntax("a VLAN priority 0-7"))?;
                Action::SetVlanPcp { pcp: v as u8, push: true }
            }
            "strip_vlan" | "pop_vlan" => Action::PopVlan,
            "push_vlan" => {
                let t = parse_uint(need()?)
                    .filter(|t| *t == 0x8100 || *t == 0x88a8)
                    .ok_or_else(|| syntax("push_vlan:0x8100 or push_vlan:0x88a8"))?;
                Action::PushVlan { tpid: t as u16 }
            }
            "dec_ttl" => {
                if let Some(a) = arg {
                    if !a.split(',').all(|x| parse_uint(x).is_some()) {
                        return Err(syntax("dec_ttl or dec_ttl(id,...)"));
                    }
                }
                Action::DecTtl
            }
            "set_field" => {
                let a = need()?;
                let (val, dst) = a.split_once("->").ok_or_else(|| syntax("set_field:VALUE->FIELD"))?;
                match dst {
                    "vlan_vid" => {
                        let v = parse_uint(val)
                            .filter(|v| *v <= 0x1fff)
                            .ok_or_else(|| syntax("a 13-bit vlan_vid (0x1000 = present)"))?;
                        Action::SetVlanVid { vid: (v & 0xfff) as u16, push: false }
                    }
                    "vlan_pcp" => {
                        let v = parse_uint(val).filter(|v| *v <= 7).ok_or_else(|| syntax("a VLAN priority 0-7"))?;
                        Action::SetVlanPcp { pcp: v as u8, push: false }
                    }
                    "nw_tos" => {
                        let v = parse_uint(val)
                            .filter(|v| *v <= 0xff && v & 3 == 0)
                            .ok_or_else(|| syntax("a TOS byte with the ECN bits clear"))?;
                        Action::SetField { field: Field::IpDscp, value: v >> 2, mask: 0x3f }
                    }
                    _ => {
                        let f = Field::from_name(dst).ok_or_else(|| {
                            OfError::Flow(kairo_flow::FlowError::UnknownField { name: dst.to_string() })
                        })?;
                        set_from_text(f, val, s)?
                    }
                }
            }
            "load" => {
                let a = need()?;
                let (val, dst) = a.split_once("->").ok_or_else(|| syntax("load:VALUE->FIELD[a..b]"))?;
                let sf = SubField::parse(dst)?;
                writable(sf.field, s)?;
                let v = parse_uint(val).ok_or_else(|| syntax("a decimal or 0x-hex value to load"))?;
                if sf.n_bits < 64 && v >> sf.n_bits != 0 {
                    return Err(syntax(&format!("a value that fits in {} bits", sf.n_bits)));
                }
                Action::SetField { field: sf.field, value: v << sf.ofs, mask: sf.mask() }
            }
            "push" => Action::StackPush(SubField::parse(need()?)?),
            "pop" => {
                let dst = SubField::parse(need()?)?;
                writable(dst.field, s)?;
                Action::StackPop(dst)
            }
            "move" => {
                let a = need()?;
                let (src, dst) = a.split_once("->").ok_or_else(|| syntax("move:SRC[a..b]->DST[c..d]"))?;
                let (src, dst) = (SubField::parse(src)?, SubField::parse(dst)?);
                writable(dst.field, s)?;
                if src.n_bits != dst.n_bits {
                    return Err(syntax(&format!(
                        "source and destination of equal width ({} vs {} bits)",
                        src.n_bits, dst.n_bits
                    )));
                }
                Action::Move { src, dst }
            }
            "resubmit" => {
                let a = need()?;
                let (p, t) = match a.split_once(',') {
                    Some((p, t)) => (p, t),
                    None => (a, ""),
                };
                // A third argument: `ct` (look up with the connection's
                // original tuple), which kairo does not do yet.
                let (t, extra) = t.split_once(',').map_or((t, None), |(t, x)| (t, Some(x.trim())));
                match extra {
                    None => {}
                    Some("ct") => {
                        return Err(OfError::Unsupported {
                            what: s.to_string(),
                            why: "resubmit's ct option (a lookup by the connection's original tuple) is not \
                                  supported yet"
                                .into(),
                        })
                    }
                    Some(x) => return Err(syntax(&format!("resubmit(PORT,TABLE[,ct]), not the parameter `{x}`"))),
                }
                let port = match p {
                    "" => None,
                    "in_port" | "IN_PORT" => None,
                    _ => Some(parse_port(p, names)?),
                };
                let table = match t {
                    "" | "*" => None,
                    _ => Some(parse_uint(t).filter(|t| *t < 255).ok_or_else(|| syntax("a table number 0-254"))? as u8),
                };
                if port.is_none() && table.is_none() && !p.eq_ignore_ascii_case("in_port") {
                    return Err(syntax("resubmit(PORT,TABLE) with a port or a table"));
                }
                Action::Resubmit { port, table }
            }
            "group" => {
                let g = parse_uint(need()?).filter(|g| *g <= u32::MAX as u64).ok_or_else(|| syntax("a group id"))?;
                Action::Group(g as u32)
            }
            "push_mpls" => {
                let t = parse_uint(need()?)
                    .filter(|t| kairo_flow::field::is_mpls_type(*t))
                    .ok_or_else(|| syntax("push_mpls:0x8847 or push_mpls:0x8848"))?;
                Action::PushMpls { ethertype: t as u16 }
            }
            "pop_mpls" => {
                let t = parse_uint(need()?).filter(|t| *t <= 0xffff).ok_or_else(|| syntax("pop_mpls:ETHERTYPE"))?;
                Action::PopMpls { ethertype: t as u16 }
            }
            "set_mpls_label" => {
                let v =
                    parse_uint(need()?).filter(|v| *v < 1 << 20).ok_or_else(|| syntax("an MPLS label 0-1048575"))?;
                Action::SetField { field: Field::MplsLabel, value: v, mask: Field::MplsLabel.ones() }
            }
            "set_mpls_tc" => {
                let v = parse_uint(need()?).filter(|v| *v <= 7).ok_or_else(|| syntax("an MPLS traffic class 0-7"))?;
                Action::SetField { field: Field::MplsTc, value: v, mask: 7 }
            }
            "set_mpls_ttl" => {
                let v = parse_uint(need()?).filter(|v| *v <= 0xff).ok_or_else(|| syntax("an MPLS TTL 0-255"))?;
                Action::SetMplsTtl(v as u8)
            }
            "dec_mpls_ttl" if arg.is_none() => Action::DecMplsTtl,
            "ct" => Action::Ct(Box::new(crate::ct::Ct::parse(arg.unwrap_or(""))?)),
            "ct_clear" if arg.is_none() => Action::CtClear,
            "clone" => {
                let body = parse_action_list_in(arg.unwrap_or(""), names)?;
                check_clone(&body)?;
                Action::Clone(body)
            }
            "conjunction" => parse_conjunction(need()?)
                .ok_or_else(|| syntax("conjunction(ID,K/N) with ID a 32-bit number, 2 <= N <= 64 and 1 <= K <= N"))?,
            "note" => Action::Note(parse_note(arg.unwrap_or("")).ok_or_else(|| syntax("note:HH.HH... (hex bytes)"))?),
            "learn" => Action::Learn(Box::new(crate::learn::Learn::parse(arg.unwrap_or(""))?)),
            "fin_timeout" => {
                let (mut idle, mut hard) = (0u16, 0u16);
                for part in split_top(need()?)? {
                    let (k, v) =
                        part.split_once('=').ok_or_else(|| syntax("fin_timeout(idle_timeout=N,hard_timeout=N)"))?;
                    let n = parse_uint(v)
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or_else(|| syntax("a timeout 0-65535 s"))?;
                    match k {
                        "idle_timeout" => idle = n,
                        "hard_timeout" => hard = n,
                        _ => return Err(syntax("fin_timeout(idle_timeout=N,hard_timeout=N)")),
                    }
                }
                Action::FinTimeout { idle, hard }
            }
            "enqueue" | "set_queue" | "multipath" | "bundle" => {
                return Err(unsupported(name, "this action is not implemented yet"))
            }
            _ => return Err(OfError::UnknownAction { text: s.to_string() }),
        })
    }
}

impl Action {
    /// Can it send to every port (FLOOD, NORMAL, or an output whose port a
    /// field gives, which may hold FLOOD, ALL or NORMAL)? What it does then
    /// changes with the switch's ports and their settings.
    pub fn may_flood(&self) -> bool {
        match self {
            Action::Flood | Action::All | Action::Normal | Action::OutputReg { .. } => true,
            Action::Clone(body) => body.iter().any(Action::may_flood),
            _ => false,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Output(p) => write!(f, "output:{}", port_name(*p)),
            // (as ovs-ofctl shows it: a max_len other than 65535 comes
            // only from the wire, and the text has no place for it)
            Action::OutputReg { src, .. } => write!(f, "output:{src}"),
            Action::Clone(body) => write!(f, "clone({})", join(body)),
            Action::CheckPktLarger { len, dst } => write!(f, "check_pkt_larger({len})->{dst}"),
            Action::Learn(l) => write!(f, "{l}"),
            Action::FinTimeout { idle, hard } => {
                let mut parts = Vec::new();
                if *idle != 0 {
                    parts.push(format!("idle_timeout={idle}"));
                }
                if *hard != 0 {
                    parts.push(format!("hard_timeout={hard}"));
                }
                write!(f, "fin_timeout({})", parts.join(","))
            }
            Action::InPort => write!(f, "IN_PORT"),
            Action::Flood => write!(f, "FLOOD"),
            Action::All => write!(f, "ALL"),
            Action::Normal => write!(f, "NORMAL"),
            Action::Controller { max_len, reason, id, userdata } => {
                if *reason == kairo_odp::ControllerReason::Action && *id == 0 && userdata.is_empty() {
                    return write!(f, "CONTROLLER:{max_len}");
                }
                // As ovs-ofctl prints it.
                let mut parts = Vec::new();
                if *reason != kairo_odp::ControllerReason::Action {
                    parts.push(format!("reason={}", reason.name()));
                }
                if *max_len != u16::MAX {
                    parts.push(format!("max_len={max_len}"));
                }
                if *id != 0 {
                    parts.push(format!("id={id}"));
                }
                if !userdata.is_empty() {
                    let hex: Vec<String> = userdata.iter().map(|b| format!("{b:02x}")).collect();
                    parts.push(format!("userdata={}", hex.join(".")));
                }
                write!(f, "controller({})", parts.join(","))
            }
            Action::SetField { field, value, mask } => {
                if *mask == field.ones() {
                    write!(f, "set_field:{}->{}", format_field_value(*field, *value, *mask), field.name())
                } else if mask.count_ones() + mask.trailing_zeros() == 64 - mask.leading_zeros() {
                    // contiguous range: print as load, which is exact about bits
                    let ofs = mask.trailing_zeros();
                    let n = mask.count_ones();
                    let sf = SubField { field: *field, ofs, n_bits: n };
                    write!(f, "load:{:#x}->{}", value >> ofs, sf)
                } else {
                    write!(f, "set_field:{:#x}/{:#x}->{}", value, mask, field.name())
                }
            }
            Action::SetWide { field, value, mask } => {
                write!(f, "set_field:{}->{}", format_wide_value(*field, *value, *mask), field.name())
            }
            Action::Move { src, dst } => write!(f, "move:{src}->{dst}"),
            Action::StackPush(src) => write!(f, "push:{src}"),
            Action::StackPop(dst) => write!(f, "pop:{dst}"),
            Action::PushVlan { tpid } => write!(f, "push_vlan:{tpid:#06x}"),
            Action::PopVlan => write!(f, "pop_vlan"),
            Action::SetVlanVid { vid, push: true } => write!(f, "mod_vlan_vid:{vid}"),
            Action::SetVlanVid { vid, push: false } => {
                write!(f, "set_field:{}->vlan_vid", *vid as u64 | VLAN_CFI)
            }
            Action::SetVlanPcp { pcp, push: true } => write!(f, "mod_vlan_pcp:{pcp}"),
            Action::SetVlanPcp { pcp, push: false } => write!(f, "set_field:{pcp}->vlan_pcp"),
            Action::DecTtl => write!(f, "dec_ttl"),
            Action::PushMpls { ethertype } => write!(f, "push_mpls:{ethertype:#06x}"),
            Action::PopMpls { ethertype } => write!(f, "pop_mpls:{ethertype:#06x}"),
            Action::SetMplsTtl(t) => write!(f, "set_mpls_ttl({t})"),
            Action::DecMplsTtl => write!(f, "dec_mpls_ttl"),
            Action::Resubmit { port, table } => {
                let p = port.map(port_name).unwrap_or_default();
                let t = table.map(|t| t.to_string()).unwrap_or_default();
                write!(f, "resubmit({p},{t})")
            }
            Action::Group(g) => write!(f, "group:{g}"),
            Action::Ct(ct) => write!(f, "{ct}"),
            Action::CtClear => f.write_str("ct_clear"),
            Action::Conjunction { id, clause, n_clauses } => write!(f, "conjunction({id},{clause}/{n_clauses})"),
            Action::Note(bytes) => {
                f.write_str("note:")?;
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Encodes OpenFlow 1.0's "set VLAN, pushing a tag if needed" (`mod_vlan_vid`,
/// `mod_vlan_pcp`) as OpenFlow 1.1+ has to, and as `ovs-ofctl -O OpenFlow13`
/// does: where the match (and the actions before) do not guarantee a tag, it
/// becomes `push_vlan` followed by the set, unconditionally; where they do,
/// a plain set. `has_vlan`: does the match require a tag? Inside `clone`
/// too, and what the clone's body pushes or pops counts for the actions
/// after it, as in Open vSwitch's check (one match state through nested
/// lists), though the clone puts the packet back.
pub fn normalize_vlan(actions: &mut Vec<Action>, has_vlan: bool) {
    normalize_vlan_from(actions, has_vlan);
}

fn normalize_vlan_from(actions: &mut Vec<Action>, mut has_vlan: bool) -> bool {
    let mut out = Vec::with_capacity(actions.len() + 1);
    for a in actions.drain(..) {
        match a {
            Action::PushVlan { .. } => {
                has_vlan = true;
                out.push(a);
            }
            Action::PopVlan => {
                has_vlan = false;
                out.push(a);
            }
            Action::SetVlanVid { vid, push: true } => {
                if !has_vlan {
                    out.push(Action::PushVlan { tpid: 0x8100 });
                    has_vlan = true;
                }
                out.push(Action::SetVlanVid { vid, push: false });
            }
            Action::SetVlanPcp { pcp, push: true } => {
                if !has_vlan {
                    out.push(Action::PushVlan { tpid: 0x8100 });
                    has_vlan = true;
                }
                out.push(Action::SetVlanPcp { pcp, push: false });
            }
            Action::Clone(mut body) => {
                has_vlan = normalize_vlan_from(&mut body, has_vlan);
                out.push(Action::Clone(body));
            }
            other => out.push(other),
        }
    }
    *actions = out;
    has_vlan
}

/// Does the match require a VLAN tag (the "present" bit matched as 1)?
pub fn match_has_vlan(m: &kairo_flow::Match) -> bool {
    let (v, mk) = m.field(Field::VlanTci);
    mk & VLAN_CFI != 0 && v & VLAN_CFI != 0
}

/// `ID,K/N` of `conjunction(ID,K/N)` (spaces allowed, as ovs-ofctl allows).
fn parse_conjunction(a: &str) -> Option<Action> {
    let (id, kn) = a.split_once(',')?;
    let (k, n) = kn.split_once('/')?;
    let id = u32::try_from(parse_uint(id.trim())?).ok()?;
    let (k, n) = (parse_uint(k.trim())?, parse_uint(n.trim())?);
    if !(2..=u64::from(MAX_CONJ_CLAUSES)).contains(&n) || k == 0 || k > n {
        return None;
    }
    Some(Action::Conjunction { id, clause: k as u8, n_clauses: n as u8 })
}

/// The bytes of `HH.HH...` (periods between pairs optional).
fn parse_hex_bytes(a: &str) -> Option<Vec<u8>> {
    let hex: Vec<u8> = a.bytes().filter(|b| *b != b'.').collect();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).collect()
}

impl Action {
    /// `controller:max_len`: to the controller, reason `action`, id 0, no userdata.
    pub fn controller(max_len: u16) -> Action {
        Action::Controller { max_len, reason: kairo_odp::ControllerReason::Action, id: 0, userdata: Vec::new() }
    }
}

/// The bytes of `note:HH.HH...` (periods between pairs optional), padded
/// with zeros to 6 more than a multiple of 8 as Open vSwitch pads them.
fn parse_note(a: &str) -> Option<Vec<u8>> {
    let mut out = parse_hex_bytes(a)?;
    while out.len() % 8 != 6 {
        out.push(0);
    }
    Some(out)
}

/// Parses a list of plain actions (no instructions), `drop` meaning none.
pub fn parse_action_list(s: &str) -> Result<Vec<Action>, OfError> {
    parse_action_list_in(s, &PortNames::NONE)
}

/// [`parse_action_list`] with ports that may be given by name.
pub fn parse_action_list_in(s: &str, names: &PortNames) -> Result<Vec<Action>, OfError> {
    let toks = split_top(s)?;
    if toks.len() == 1 && toks[0].eq_ignore_ascii_case("drop") {
        return Ok(Vec::new());
    }
    toks.into_iter().map(|t| Action::parse_in(t, names)).collect()
}

fn join(actions: &[Action]) -> String {
    actions.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

/// Formats an action list (`drop` when empty).
pub fn format_action_list(actions: &[Action]) -> String {
    if actions.is_empty() {
        "drop".into()
    } else {
        join(actions)
    }
}

impl Instructions {
    /// Parses the text after `actions=`: plain actions (apply-actions) mixed with
    /// `clear_actions`, `write_actions(...)`, `write_metadata:V[/M]`, `goto_table:N`.
    pub fn parse(s: &str) -> Result<Instructions, OfError> {
        Instructions::parse_in(s, &PortNames::NONE)
    }

    /// [`Instructions::parse`] with ports that may be given by name.
    pub fn parse_in(s: &str, names: &PortNames) -> Result<Instructions, OfError> {
        let mut out = Instructions::default();
        let toks = split_top(s)?;
        if toks.is_empty() {
            return Err(OfError::Syntax { text: s.to_string(), expected: "at least one action, or `drop`".into() });
        }
        if toks.len() == 1 && toks[0].eq_ignore_ascii_case("drop") {
            return Ok(out);
        }
        // OpenFlow 1.1+ executes instructions in one fixed order; like
        // ovs-ofctl, reject text that lists them in another.
        const ORDER: [&str; 6] =
            ["meter", "apply_actions", "clear_actions", "write_actions", "write_metadata", "goto_table"];
        let mut last = 0usize;
        for t in toks {
            let lower = t.to_ascii_lowercase();
            let rank = match lower.as_str() {
                l if l.starts_with("goto_table:") => 5,
                l if l.starts_with("write_metadata:") => 4,
                l if l.starts_with("write_actions(") => 3,
                "clear_actions" => 2,
                l if l.starts_with("meter:") => 0,
                _ => 1,
            };
            if rank < last {
                return Err(OfError::Syntax {
                    text: s.to_string(),
                    expected: format!(
                        "instructions in OpenFlow order: {} must appear before {}",
                        ORDER[rank], ORDER[last]
                    ),
                });
            }
            last = rank;
            if let Some(rest) = lower.strip_prefix("meter:") {
                if out.meter.is_some() {
                    return Err(OfError::Syntax { text: t.to_string(), expected: "at most one meter".into() });
                }
                let n = parse_uint(rest).filter(|n| (1..=0xffff_0000).contains(n)).ok_or_else(|| OfError::Syntax {
                    text: t.to_string(),
                    expected: "meter:N with N in 1-4294901760".into(),
                })?;
                out.meter = Some(n as u32);
            } else if let Some(rest) = lower.strip_prefix("goto_table:") {
                if out.goto_table.is_some() {
                    return Err(OfError::Syntax { text: t.to_string(), expected: "at most one goto_table".into() });
                }
                let n = parse_uint(rest).filter(|n| *n < 255).ok_or_else(|| OfError::Syntax {
                    text: t.to_string(),
                    expected: "goto_table:N with N in 0-254".into(),
                })?;
                out.goto_table = Some(n as u8);
            } else if lower == "clear_actions" {
                out.clear_actions = true;
            } else if lower.starts_with("write_actions(") && t.ends_with(')') {
                out.write.extend(parse_action_list_in(&t["write_actions(".len()..t.len() - 1], names)?);
            } else if lower.starts_with("apply_actions(") && t.ends_with(')') {
                out.apply.extend(parse_action_list_in(&t["apply_actions(".len()..t.len() - 1], names)?);
            } else if let Some(rest) = t.strip_prefix("write_metadata:") {
                let (v, m) = parse_field_value(Field::Metadata, rest)?;
                out.write_metadata = Some((v, m));
            } else if lower == "drop" {
                return Err(OfError::Syntax {
                    text: s.to_string(),
                    expected: "`drop` alone (it cannot be combined with other actions)".into(),
                });
            } else {
                out.apply.push(Action::parse_in(t, names)?);
            }
        }
        out.check()?;
        Ok(out)
    }

    /// The conjunctions this rule is a clause of (its `conjunction`
    /// actions), empty for an ordinary rule.
    pub fn conjunctions(&self) -> impl Iterator<Item = (u32, u8, u8)> + '_ {
        self.apply.iter().filter_map(|a| match a {
            Action::Conjunction { id, clause, n_clauses } => Some((*id, *clause, *n_clauses)),
            _ => None,
        })
    }

    /// Is the rule a clause of some conjunction (it has `conjunction` actions)?
    pub fn is_clause(&self) -> bool {
        self.conjunctions().next().is_some()
    }

    /// What Open vSwitch requires of instructions as a whole: the
    /// conjunction rules ([`Instructions::check_conjunctions`]), and no
    /// action in write_actions that the action set has no place for
    /// (`output:FIELD`).
    pub fn check(&self) -> Result<(), OfError> {
        if let Some(a) = self.write.iter().find(|a| matches!(a, Action::OutputReg { .. })) {
            return Err(OfError::Unsupported {
                what: a.to_string(),
                why: "output to a port taken from a field is not allowed in write_actions (the action set has no place for it)".into(),
            });
        }
        if let Some(a) = self.write.iter().find(|a| {
            matches!(
                a,
                Action::StackPush(_)
                    | Action::StackPop(_)
                    | Action::Learn(_)
                    | Action::FinTimeout { .. }
                    | Action::CheckPktLarger { .. }
            )
        }) {
            return Err(OfError::Unsupported {
                what: a.to_string(),
                why: "push, pop, learn, fin_timeout and check_pkt_larger are not allowed in write_actions (the \
                      action set has no place for them)"
                    .into(),
            });
        }
        self.check_conjunctions()
    }

    /// As Open vSwitch requires: a rule with `conjunction` actions has
    /// nothing else but `note` actions (no other action, instruction or
    /// meter: they would never run), and `conjunction` appears nowhere
    /// else (in write_actions).
    pub fn check_conjunctions(&self) -> Result<(), OfError> {
        let conj = |a: &Action| matches!(a, Action::Conjunction { .. });
        if let Some(a) = self.write.iter().find(|a| conj(a)) {
            return Err(OfError::Unsupported {
                what: a.to_string(),
                why: "conjunction is not allowed in write_actions".into(),
            });
        }
        if !self.apply.iter().any(conj) {
            return Ok(());
        }
        let other = self.apply.iter().find(|a| !conj(a) && !matches!(a, Action::Note(_)));
        if other.is_some()
            || self.meter.is_some()
            || self.clear_actions
            || !self.write.is_empty()
            || self.write_metadata.is_some()
            || self.goto_table.is_some()
        {
            return Err(OfError::Syntax {
                text: self.to_string(),
                expected: "only conjunction and note actions in a flow with a conjunction action".into(),
            });
        }
        Ok(())
    }

    /// No actions at all (drops the packet unless an action set is pending).
    pub fn is_empty(&self) -> bool {
        self.meter.is_none()
            && self.apply.is_empty()
            && !self.clear_actions
            && self.write.is_empty()
            && self.write_metadata.is_none()
            && self.goto_table.is_none()
    }
}

impl std::fmt::Display for Instructions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = self.meter {
            parts.push(format!("meter:{m}"));
        }
        if !self.apply.is_empty() {
            parts.push(join(&self.apply));
        }
        if self.clear_actions {
            parts.push("clear_actions".into());
        }
        if !self.write.is_empty() {
            parts.push(format!("write_actions({})", join(&self.write)));
        }
        if let Some((v, m)) = self.write_metadata {
            if m == u64::MAX {
                parts.push(format!("write_metadata:{v:#x}"));
            } else {
                parts.push(format!("write_metadata:{v:#x}/{m:#x}"));
            }
        }
        if let Some(t) = self.goto_table {
            parts.push(format!("goto_table:{t}"));
        }
        if parts.is_empty() {
            f.write_str("drop")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}
