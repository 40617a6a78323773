//! OpenFlow actions on the wire: the OpenFlow 1.3 and 1.5 action set and the
//! Nicira experimenter actions (vendor 0x00002320), as typed values.
//!
//! Invariant: [`Act::decode`] reads exactly one action of the length its
//! header states (a multiple of 8, at least 8) or fails naming it; an action
//! it knows but does not model field by field (ct, nat, learn, clone, ...)
//! is kept as [`Act::Nicira`] with its body, so it re-encodes byte for byte
//! and the mapping can refuse it with the right error rather than drop it.

use crate::buf::{pad8, Reader, Writer};
use crate::error::{Error, ErrorCode};
use crate::oxm::{Oxm, OxmId};
use crate::Version;

/// The Nicira vendor id.
pub const NX_VENDOR: u32 = 0x0000_2320;

/// Nicira action subtypes (NXAST_*).
pub mod nxast {
    pub const RESUBMIT: u16 = 1;
    pub const SET_TUNNEL: u16 = 2;
    pub const SET_QUEUE: u16 = 4;
    pub const POP_QUEUE: u16 = 5;
    pub const REG_MOVE: u16 = 6;
    pub const REG_LOAD: u16 = 7;
    pub const NOTE: u16 = 8;
    pub const SET_TUNNEL64: u16 = 9;
    pub const MULTIPATH: u16 = 10;
    pub const BUNDLE: u16 = 12;
    pub const BUNDLE_LOAD: u16 = 13;
    pub const RESUBMIT_TABLE: u16 = 14;
    pub const OUTPUT_REG: u16 = 15;
    pub const LEARN: u16 = 16;
    pub const EXIT: u16 = 17;
    pub const DEC_TTL: u16 = 18;
    pub const FIN_TIMEOUT: u16 = 19;
    pub const CONTROLLER: u16 = 20;
    pub const DEC_TTL_CNT_IDS: u16 = 21;
    pub const WRITE_METADATA: u16 = 22;
    pub const SET_MPLS_TTL: u16 = 25;
    pub const DEC_MPLS_TTL: u16 = 26;
    pub const STACK_PUSH: u16 = 27;
    pub const STACK_POP: u16 = 28;
    pub const SAMPLE: u16 = 29;
    pub const SET_MPLS_LABEL: u16 = 30;
    pub const SET_MPLS_TC: u16 = 31;
    pub const OUTPUT_REG2: u16 = 32;
    pub const REG_LOAD2: u16 = 33;
    pub const CONJUNCTION: u16 = 34;
    pub const CT: u16 = 35;
    pub const NAT: u16 = 36;
    pub const CONTROLLER2: u16 = 37;
    pub const SAMPLE2: u16 = 38;
    pub const OUTPUT_TRUNC: u16 = 39;
    pub const SAMPLE3: u16 = 41;
    pub const CLONE: u16 = 42;
    pub const CT_CLEAR: u16 = 43;
    pub const RESUBMIT_TABLE_CT: u16 = 44;
    pub const LEARN2: u16 = 45;
    pub const ENCAP: u16 = 46;
    pub const DECAP: u16 = 47;
    pub const DEC_NSH_TTL: u16 = 48;
    pub const CHECK_PKT_LARGER: u16 = 49;
    pub const DELETE_FIELD: u16 = 50;

    /// Every subtype Open vSwitch 3.1 defines, with its `ovs-ofctl` name.
    pub const KNOWN: &[(u16, &str)] = &[
        (RESUBMIT, "resubmit"),
        (SET_TUNNEL, "set_tunnel"),
        (SET_QUEUE, "set_queue"),
        (POP_QUEUE, "pop_queue"),
        (REG_MOVE, "move"),
        (REG_LOAD, "load"),
        (NOTE, "note"),
        (SET_TUNNEL64, "set_tunnel64"),
        (MULTIPATH, "multipath"),
        (BUNDLE, "bundle"),
        (BUNDLE_LOAD, "bundle_load"),
        (RESUBMIT_TABLE, "resubmit"),
        (OUTPUT_REG, "output_reg"),
        (LEARN, "learn"),
        (EXIT, "exit"),
        (DEC_TTL, "dec_ttl"),
        (FIN_TIMEOUT, "fin_timeout"),
        (CONTROLLER, "controller"),
        (DEC_TTL_CNT_IDS, "dec_ttl"),
        (WRITE_METADATA, "write_metadata"),
        (SET_MPLS_TTL, "set_mpls_ttl"),
        (DEC_MPLS_TTL, "dec_mpls_ttl"),
        (STACK_PUSH, "push"),
        (STACK_POP, "pop"),
        (SAMPLE, "sample"),
        (SET_MPLS_LABEL, "set_mpls_label"),
        (SET_MPLS_TC, "set_mpls_tc"),
        (OUTPUT_REG2, "output_reg2"),
        (REG_LOAD2, "set_field"),
        (CONJUNCTION, "conjunction"),
        (CT, "ct"),
        (NAT, "nat"),
        (CONTROLLER2, "controller"),
        (SAMPLE2, "sample"),
        (OUTPUT_TRUNC, "output_trunc"),
        (SAMPLE3, "sample"),
        (CLONE, "clone"),
        (CT_CLEAR, "ct_clear"),
        (RESUBMIT_TABLE_CT, "resubmit"),
        (LEARN2, "learn"),
        (ENCAP, "encap"),
        (DECAP, "decap"),
        (DEC_NSH_TTL, "dec_nsh_ttl"),
        (CHECK_PKT_LARGER, "check_pkt_larger"),
        (DELETE_FIELD, "delete_field"),
    ];

    pub fn name(subtype: u16) -> Option<&'static str> {
        KNOWN.iter().find(|(s, _)| *s == subtype).map(|(_, n)| *n)
    }
}

/// OpenFlow action types (OFPAT_*).
mod ofpat {
    pub const OUTPUT: u16 = 0;
    pub const COPY_TTL_OUT: u16 = 11;
    pub const COPY_TTL_IN: u16 = 12;
    pub const SET_MPLS_TTL: u16 = 15;
    pub const DEC_MPLS_TTL: u16 = 16;
    pub const PUSH_VLAN: u16 = 17;
    pub const POP_VLAN: u16 = 18;
    pub const PUSH_MPLS: u16 = 19;
    pub const POP_MPLS: u16 = 20;
    pub const SET_QUEUE: u16 = 21;
    pub const GROUP: u16 = 22;
    pub const SET_NW_TTL: u16 = 23;
    pub const DEC_NW_TTL: u16 = 24;
    pub const SET_FIELD: u16 = 25;
    pub const PUSH_PBB: u16 = 26;
    pub const POP_PBB: u16 = 27;
    pub const COPY_FIELD: u16 = 28;
    pub const METER: u16 = 29;
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// A field bit range as `reg_move`, `copy_field` and `output_reg` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireSub {
    pub id: OxmId,
    pub ofs: u16,
    pub n_bits: u16,
}

/// NXAST_LEARN and NXAST_LEARN2 (`learn(...)`) as on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WireLearn {
    /// NXAST_LEARN2 (limit and result_dst) rather than NXAST_LEARN.
    pub v2: bool,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub cookie: u64,
    pub flags: u16,
    pub table: u8,
    pub fin_idle_timeout: u16,
    pub fin_hard_timeout: u16,
    pub limit: u32,
    /// The result bit (NXAST_LEARN2 with NX_LEARN_F_WRITE_RESULT).
    pub result_dst: Option<WireSub>,
    pub specs: Vec<WireLearnSpec>,
}

/// One flow_mod_spec of a learn action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WireLearnSpec {
    pub n_bits: u16,
    pub src: WireLearnSrc,
    pub dst: WireLearnDst,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WireLearnSrc {
    /// A field's bits (field and offset; the width is the spec's).
    Field(OxmId, u16),
    /// An immediate: its bytes as sent, 2 for every 16 bits or part.
    Imm(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireLearnDst {
    Match(OxmId, u16),
    Load(OxmId, u16),
    Output,
}

/// Learn flags Open vSwitch knows (send_flow_rem, delete_learned, write_result).
const LEARN_FLAGS: u16 = 0b111;
const LEARN_SRC_IMM: u16 = 1 << 13;
const LEARN_DST_SHIFT: u16 = 11;

fn decode_learn(a: &mut Reader<'_>, at: usize, subtype: u16) -> Result<WireLearn, Error> {
    let bad = |why: String| Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("learn at offset {at}: {why}"));
    let mut l = WireLearn {
        v2: subtype == nxast::LEARN2,
        idle_timeout: a.u16("idle_timeout")?,
        hard_timeout: a.u16("hard_timeout")?,
        priority: a.u16("priority")?,
        cookie: a.u64("cookie")?,
        flags: a.u16("flags")?,
        table: a.u8("table_id")?,
        fin_idle_timeout: 0,
        fin_hard_timeout: 0,
        limit: 0,
        result_dst: None,
        specs: Vec::new(),
    };
    if a.u8("pad")? != 0 {
        return Err(Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("learn at offset {at}: padding is not zero")));
    }
    l.fin_idle_timeout = a.u16("fin_idle_timeout")?;
    l.fin_hard_timeout = a.u16("fin_hard_timeout")?;
    let allowed = if l.v2 { LEARN_FLAGS } else { LEARN_FLAGS & !4 };
    if l.flags & !allowed != 0 {
        return Err(bad(format!("unknown flags {:#x}", l.flags & !allowed)));
    }
    if l.table == 255 {
        return Err(bad("table 255 is not valid for learn".into()));
    }
    if l.v2 {
        l.limit = a.u32("limit")?;
        let result_ofs = a.u16("result_dst_ofs")?;
        if a.u16("pad2")? != 0 {
            return Err(Error::new(
                ErrorCode::BAD_ACTION_ARGUMENT,
                format!("learn2 at offset {at}: padding is not zero"),
            ));
        }
        if l.flags & 4 != 0 {
            let (id, _) = OxmId::decode_header(a)?;
            let s = WireSub { id, ofs: result_ofs, n_bits: 1 };
            check_sub(&s, at)?;
            l.result_dst = Some(s);
        } else if result_ofs != 0 {
            return Err(bad("result_dst_ofs without the write_result flag".into()));
        }
    }
    while a.remaining() >= 2 {
        let h = a.u16("flow_mod_spec header")?;
        if h == 0 {
            break; // padding
        }
        let n_bits = h & 0x3ff;
        let dst_type = (h >> LEARN_DST_SHIFT) & 3;
        if h & !(0x3ff | LEARN_SRC_IMM | (3 << LEARN_DST_SHIFT)) != 0 || dst_type == 3 || n_bits == 0 {
            return Err(bad(format!("bad flow_mod_spec header {h:#06x}")));
        }
        let src = if h & LEARN_SRC_IMM != 0 {
            let n = 2 * usize::from(n_bits).div_ceil(16);
            WireLearnSrc::Imm(a.bytes(n, "learn immediate")?.to_vec())
        } else {
            let (id, _) = OxmId::decode_header(a)?;
            let ofs = a.u16("learn source offset")?;
            check_sub(&WireSub { id, ofs, n_bits }, at)?;
            WireLearnSrc::Field(id, ofs)
        };
        let dst = match dst_type {
            2 => WireLearnDst::Output,
            t => {
                let (id, _) = OxmId::decode_header(a)?;
                let ofs = a.u16("learn destination offset")?;
                check_sub(&WireSub { id, ofs, n_bits }, at)?;
                if t == 0 {
                    WireLearnDst::Match(id, ofs)
                } else {
                    WireLearnDst::Load(id, ofs)
                }
            }
        };
        if matches!((&src, dst), (WireLearnSrc::Imm(_), WireLearnDst::Output)) {
            return Err(bad("an output spec takes its port from a field, not an immediate".into()));
        }
        l.specs.push(WireLearnSpec { n_bits, src, dst });
    }
    if a.rest().iter().any(|&b| b != 0) {
        return Err(bad("bytes after the specs are not zero padding".into()));
    }
    Ok(l)
}

fn encode_learn(w: &mut Writer, l: &WireLearn) {
    let hdr = |id: &OxmId| id.header(false, id.info().map_or(0, |i| i.bytes));
    w.u16(if l.v2 { nxast::LEARN2 } else { nxast::LEARN });
    w.u16(l.idle_timeout);
    w.u16(l.hard_timeout);
    w.u16(l.priority);
    w.u64(l.cookie);
    w.u16(l.flags);
    w.u8(l.table);
    w.u8(0);
    w.u16(l.fin_idle_timeout);
    w.u16(l.fin_hard_timeout);
    if l.v2 {
        w.u32(l.limit);
        w.u16(l.result_dst.map_or(0, |s| s.ofs));
        w.zeros(2);
        if let Some(s) = &l.result_dst {
            w.u32(hdr(&s.id));
        }
    }
    for s in &l.specs {
        let (src_bit, dst_bits) = (
            if matches!(s.src, WireLearnSrc::Imm(_)) { LEARN_SRC_IMM } else { 0 },
            match s.dst {
                WireLearnDst::Match(..) => 0,
                WireLearnDst::Load(..) => 1,
                WireLearnDst::Output => 2,
            } << LEARN_DST_SHIFT,
        );
        w.u16(s.n_bits | src_bit | dst_bits);
        match &s.src {
            WireLearnSrc::Field(id, ofs) => {
                w.u32(hdr(id));
                w.u16(*ofs);
            }
            WireLearnSrc::Imm(bytes) => w.bytes(bytes),
        }
        if let WireLearnDst::Match(id, ofs) | WireLearnDst::Load(id, ofs) = &s.dst {
            w.u32(hdr(id));
            w.u16(*ofs);
        }
    }
}

/// NXAST_CONTROLLER2's properties, each as sent (`None`: absent, at its
/// default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WireController2 {
    pub max_len: Option<u16>,
    pub controller_id: Option<u16>,
    pub reason: Option<u8>,
    pub userdata: Option<Vec<u8>>,
    pub pause: bool,
    pub meter_id: Option<u32>,
}

/// NXAC2PT_* property types.
mod nxac2pt {
    pub const MAX_LEN: u16 = 0;
    pub const CONTROLLER_ID: u16 = 1;
    pub const REASON: u16 = 2;
    pub const USERDATA: u16 = 3;
    pub const PAUSE: u16 = 4;
    pub const METER_ID: u16 = 5;
}

fn decode_controller2(a: &mut Reader<'_>, at: usize) -> Result<WireController2, Error> {
    let bad = |why: String| Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("controller2 at offset {at}: {why}"));
    if a.bytes(6, "pad")?.iter().any(|&b| b != 0) {
        return Err(bad("padding is not zero".into()));
    }
    let mut c = WireController2::default();
    while a.remaining() >= 4 {
        let ty = a.u16("property type")?;
        let len = usize::from(a.u16("property length")?);
        if len < 4 {
            return Err(bad(format!("property {ty} of length {len}")));
        }
        let v = a.bytes(len - 4, "property value")?;
        a.skip((8 - len % 8) % 8, "property padding")?;
        // (As Open vSwitch reads them: a 16-bit or 8-bit value may come
        // padded, as OpenFlow gives such properties 8 bytes.)
        let n = |want: usize| {
            if v.len() == want {
                Ok(())
            } else {
                Err(bad(format!("property {ty} of {} bytes", v.len())))
            }
        };
        let at_least = |want: usize| {
            if v.len() >= want {
                Ok(())
            } else {
                Err(bad(format!("property {ty} of {} bytes", v.len())))
            }
        };
        match ty {
            nxac2pt::MAX_LEN => at_least(2).map(|_| c.max_len = Some(u16::from_be_bytes([v[0], v[1]])))?,
            nxac2pt::CONTROLLER_ID => at_least(2).map(|_| c.controller_id = Some(u16::from_be_bytes([v[0], v[1]])))?,
            nxac2pt::REASON => at_least(1).map(|_| c.reason = Some(v[0]))?,
            nxac2pt::USERDATA => c.userdata = Some(v.to_vec()),
            nxac2pt::PAUSE => n(0).map(|_| c.pause = true)?,
            nxac2pt::METER_ID => n(4).map(|_| c.meter_id = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])))?,
            _ => return Err(bad(format!("unknown property {ty}"))),
        }
    }
    if a.rest().iter().any(|&b| b != 0) {
        return Err(bad("trailing bytes".into()));
    }
    Ok(c)
}

fn encode_controller2(w: &mut Writer, c: &WireController2) {
    w.u16(nxast::CONTROLLER2);
    w.zeros(6);
    let prop = |w: &mut Writer, ty: u16, v: &[u8]| {
        w.u16(ty);
        w.u16(4 + v.len() as u16);
        w.bytes(v);
        w.zeros((8 - (4 + v.len()) % 8) % 8);
    };
    // 16-bit values padded to 4 bytes, as Open vSwitch writes them (an
    // 8-bit one is not).
    let u16_prop = |v: u16| [(v >> 8) as u8, v as u8, 0, 0];
    if let Some(m) = c.max_len {
        prop(w, nxac2pt::MAX_LEN, &u16_prop(m));
    }
    if let Some(id) = c.controller_id {
        prop(w, nxac2pt::CONTROLLER_ID, &u16_prop(id));
    }
    if let Some(r) = c.reason {
        prop(w, nxac2pt::REASON, &[r]);
    }
    if let Some(u) = &c.userdata {
        prop(w, nxac2pt::USERDATA, u);
    }
    if c.pause {
        prop(w, nxac2pt::PAUSE, &[]);
    }
    if let Some(m) = c.meter_id {
        prop(w, nxac2pt::METER_ID, &m.to_be_bytes());
    }
}

/// One action as it is on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    /// OFPAT_OUTPUT; `port` in OpenFlow 1.1+ numbering.
    Output {
        port: u32,
        max_len: u16,
    },
    CopyTtlOut,
    CopyTtlIn,
    SetMplsTtl(u8),
    DecMplsTtl,
    PushVlan(u16),
    PopVlan,
    PushMpls(u16),
    PopMpls(u16),
    SetQueue(u32),
    Group(u32),
    SetNwTtl(u8),
    DecNwTtl,
    /// OFPAT_SET_FIELD (a mask only from OpenFlow 1.5 on).
    SetField(Oxm),
    PushPbb(u16),
    PopPbb,
    /// OpenFlow 1.5 copy_field.
    CopyField {
        n_bits: u16,
        src_ofs: u16,
        dst_ofs: u16,
        src: OxmId,
        dst: OxmId,
    },
    /// OpenFlow 1.5 meter action.
    Meter(u32),
    /// NXAST_RESUBMIT (`table` None), NXAST_RESUBMIT_TABLE or, with `ct`,
    /// NXAST_RESUBMIT_TABLE_CT. `in_port` in OpenFlow 1.0 numbering
    /// (0xfff8 = the packet's own); `table` 255 = the current table.
    Resubmit {
        in_port: u16,
        table: Option<u8>,
        ct: bool,
    },
    /// NXAST_REG_MOVE.
    RegMove {
        src: WireSub,
        dst: WireSub,
    },
    /// NXAST_REG_LOAD: `value` into `dst` bits.
    RegLoad {
        dst: WireSub,
        value: u64,
    },
    /// NXAST_REG_LOAD2: a set_field that may carry a mask, in any version.
    RegLoad2(Oxm),
    /// NXAST_OUTPUT_REG.
    OutputReg {
        src: WireSub,
        max_len: u16,
    },
    /// NXAST_OUTPUT_REG2 (the same, its field after the fixed part: Open
    /// vSwitch sends it for fields without an NXM header).
    OutputReg2 {
        src: WireSub,
        max_len: u16,
    },
    /// NXAST_STACK_PUSH.
    StackPush(WireSub),
    /// NXAST_STACK_POP.
    StackPop(WireSub),
    /// NXAST_NOTE: the note's bytes, padding included (as Open vSwitch keeps them).
    Note(Vec<u8>),
    /// NXAST_DEC_TTL.
    NxDecTtl,
    /// NXAST_EXIT.
    Exit,
    /// NXAST_CONTROLLER.
    Controller {
        max_len: u16,
        id: u16,
        reason: u8,
    },
    /// NXAST_SET_TUNNEL64.
    SetTunnel64(u64),
    /// NXAST_CT_CLEAR.
    CtClear,
    /// NXAST_CLONE: the nested actions.
    Clone(Vec<Act>),
    /// NXAST_CT: `flags` (NX_CT_F_COMMIT 1, NX_CT_F_FORCE 2), the zone (a
    /// field's bits, else `zone_imm`), the table to resume at (255: none),
    /// the ALG port, and the nested actions (nat, writes to ct_mark/label).
    Ct {
        flags: u16,
        zone_src: Option<WireSub>,
        zone_imm: u16,
        table: u8,
        alg: u16,
        actions: Vec<Act>,
    },
    /// NXAST_NAT: `flags` (NX_NAT_F_SRC 1, DST 2, PERSISTENT 4, PROTO_HASH
    /// 8, PROTO_RANDOM 16) and the ranges present (a max absent = the min).
    Nat {
        flags: u16,
        ipv4: Option<(u32, Option<u32>)>,
        ipv6: Option<(u128, Option<u128>)>,
        ports: Option<(u16, Option<u16>)>,
    },
    /// NXAST_CONJUNCTION: clause `clause` (0-based) of `n_clauses`.
    Conjunction {
        clause: u8,
        n_clauses: u8,
        id: u32,
    },
    /// NXAST_LEARN or NXAST_LEARN2.
    Learn(Box<WireLearn>),
    /// NXAST_CONTROLLER2.
    Controller2(Box<WireController2>),
    /// NXAST_FIN_TIMEOUT: idle and hard timeouts after a FIN or RST.
    /// NXAST_CHECK_PKT_LARGER: whether the packet is longer than
    /// `pkt_len`, into the one bit `dst`.
    CheckPktLarger {
        pkt_len: u16,
        dst: WireSub,
    },
    FinTimeout {
        idle: u16,
        hard: u16,
    },
    /// Any other Nicira action: subtype and the bytes after it.
    Nicira {
        subtype: u16,
        body: Vec<u8>,
    },
    /// An experimenter action of another vendor: vendor and the bytes after it.
    Experimenter {
        vendor: u32,
        body: Vec<u8>,
    },
}

fn bad_len(what: &str, at: usize, len: usize, want: usize) -> Error {
    Error::new(ErrorCode::BAD_ACTION_LEN, format!("{what} action at offset {at} has length {len}, expected {want}"))
}

fn read_sub_nbits(r: &mut Reader<'_>) -> Result<(u16, u16), Error> {
    let v = r.u16("ofs_nbits")?;
    Ok((v >> 6, (v & 0x3f) + 1))
}

fn check_sub(s: &WireSub, at: usize) -> Result<(), Error> {
    let width = s.id.info().map_or(0, |i| u32::from(i.bytes) * 8);
    if s.n_bits == 0 || u32::from(s.ofs) + u32::from(s.n_bits) > width {
        return Err(Error::new(
            ErrorCode::BAD_ACTION_ARGUMENT,
            format!(
                "bits {}..{} of {} (action at offset {at}) are outside its {width} bits",
                s.ofs,
                u32::from(s.ofs) + u32::from(s.n_bits),
                s.id.name()
            ),
        ));
    }
    Ok(())
}

impl Act {
    /// Reads one action.
    pub fn decode(r: &mut Reader<'_>, v: Version) -> Result<Act, Error> {
        let at = r.offset();
        let ty = r.peek_u16("action type")?;
        let mut hdr = *r;
        hdr.skip(2, "action type")?;
        let len = usize::from(hdr.u16("action length")?);
        if len < 8 || len % 8 != 0 {
            return Err(Error::new(
                ErrorCode::BAD_ACTION_LEN,
                format!("action type {ty} at offset {at} has length {len} (a multiple of 8, at least 8)"),
            ));
        }
        let mut a = r.sub(len, "action")?;
        a.skip(4, "action header")?;
        let fixed = |want: usize, name: &str| if len == want { Ok(()) } else { Err(bad_len(name, at, len, want)) };
        Ok(match ty {
            ofpat::OUTPUT => {
                fixed(16, "output")?;
                Act::Output { port: a.u32("port")?, max_len: a.u16("max_len")? }
            }
            ofpat::COPY_TTL_OUT => fixed(8, "copy_ttl_out").map(|_| Act::CopyTtlOut)?,
            ofpat::COPY_TTL_IN => fixed(8, "copy_ttl_in").map(|_| Act::CopyTtlIn)?,
            ofpat::SET_MPLS_TTL => {
                fixed(8, "set_mpls_ttl")?;
                Act::SetMplsTtl(a.u8("mpls_ttl")?)
            }
            ofpat::DEC_MPLS_TTL => fixed(8, "dec_mpls_ttl").map(|_| Act::DecMplsTtl)?,
            ofpat::PUSH_VLAN => {
                fixed(8, "push_vlan")?;
                Act::PushVlan(a.u16("ethertype")?)
            }
            ofpat::POP_VLAN => fixed(8, "pop_vlan").map(|_| Act::PopVlan)?,
            ofpat::PUSH_MPLS => {
                fixed(8, "push_mpls")?;
                Act::PushMpls(a.u16("ethertype")?)
            }
            ofpat::POP_MPLS => {
                fixed(8, "pop_mpls")?;
                Act::PopMpls(a.u16("ethertype")?)
            }
            ofpat::SET_QUEUE => {
                fixed(8, "set_queue")?;
                Act::SetQueue(a.u32("queue_id")?)
            }
            ofpat::GROUP => {
                fixed(8, "group")?;
                Act::Group(a.u32("group_id")?)
            }
            ofpat::SET_NW_TTL => {
                fixed(8, "set_nw_ttl")?;
                Act::SetNwTtl(a.u8("nw_ttl")?)
            }
            ofpat::DEC_NW_TTL => fixed(8, "dec_nw_ttl").map(|_| Act::DecNwTtl)?,
            ofpat::SET_FIELD => {
                let o = Oxm::decode(&mut a)?;
                if o.mask.is_some() && v < Version::V1_5 {
                    return Err(Error::new(
                        ErrorCode::BAD_SET_ARGUMENT,
                        format!("set_field at offset {at} has a mask (allowed from OpenFlow 1.5)"),
                    ));
                }
                if a.rest().iter().any(|&b| b != 0) {
                    return Err(bad_len("set_field", at, len, pad8(4 + 4)));
                }
                Act::SetField(o)
            }
            ofpat::PUSH_PBB => {
                fixed(8, "push_pbb")?;
                Act::PushPbb(a.u16("ethertype")?)
            }
            ofpat::POP_PBB => fixed(8, "pop_pbb").map(|_| Act::PopPbb)?,
            ofpat::COPY_FIELD if v >= Version::V1_5 => {
                let n_bits = a.u16("n_bits")?;
                let src_ofs = a.u16("src_offset")?;
                let dst_ofs = a.u16("dst_offset")?;
                a.skip(2, "pad")?;
                let (src, _) = OxmId::decode_header(&mut a)?;
                let (dst, _) = OxmId::decode_header(&mut a)?;
                for s in [WireSub { id: src, ofs: src_ofs, n_bits }, WireSub { id: dst, ofs: dst_ofs, n_bits }] {
                    check_sub(&s, at)?;
                }
                Act::CopyField { n_bits, src_ofs, dst_ofs, src, dst }
            }
            ofpat::METER if v >= Version::V1_5 => {
                fixed(8, "meter")?;
                Act::Meter(a.u32("meter_id")?)
            }
            ofpat::EXPERIMENTER => {
                let vendor = a.u32("experimenter")?;
                if vendor != NX_VENDOR {
                    return Ok(Act::Experimenter { vendor, body: a.rest().to_vec() });
                }
                Self::decode_nx(&mut a, at, len, v)?
            }
            other => {
                return Err(Error::new(
                    ErrorCode::BAD_ACTION_TYPE,
                    format!("action type {other} at offset {at} is not an OpenFlow {v} action"),
                ))
            }
        })
    }

    fn decode_nx(a: &mut Reader<'_>, at: usize, len: usize, v: Version) -> Result<Act, Error> {
        let subtype = a.u16("Nicira subtype")?;
        let fixed = |want: usize, name: &str| if len == want { Ok(()) } else { Err(bad_len(name, at, len, want)) };
        Ok(match subtype {
            nxast::RESUBMIT => {
                fixed(16, "resubmit")?;
                Act::Resubmit { in_port: a.u16("in_port")?, table: None, ct: false }
            }
            nxast::RESUBMIT_TABLE | nxast::RESUBMIT_TABLE_CT => {
                fixed(16, "resubmit")?;
                let in_port = a.u16("in_port")?;
                let table = a.u8("table")?;
                Act::Resubmit { in_port, table: Some(table), ct: subtype == nxast::RESUBMIT_TABLE_CT }
            }
            nxast::REG_MOVE => {
                let n_bits = a.u16("n_bits")?;
                let src_ofs = a.u16("src_ofs")?;
                let dst_ofs = a.u16("dst_ofs")?;
                let (src, _) = OxmId::decode_header(a)?;
                let (dst, _) = OxmId::decode_header(a)?;
                let src = WireSub { id: src, ofs: src_ofs, n_bits };
                let dst = WireSub { id: dst, ofs: dst_ofs, n_bits };
                check_sub(&src, at)?;
                check_sub(&dst, at)?;
                if a.rest().iter().any(|&b| b != 0) {
                    return Err(bad_len("move", at, len, 24));
                }
                Act::RegMove { src, dst }
            }
            nxast::REG_LOAD => {
                fixed(24, "load")?;
                let (ofs, n_bits) = read_sub_nbits(a)?;
                let (id, _) = OxmId::decode_header(a)?;
                let dst = WireSub { id, ofs, n_bits };
                check_sub(&dst, at)?;
                let value = a.u64("value")?;
                if n_bits < 64 && value >> n_bits != 0 {
                    return Err(Error::new(
                        ErrorCode::BAD_ACTION_ARGUMENT,
                        format!("load at offset {at}: value {value:#x} does not fit in {n_bits} bits"),
                    ));
                }
                Act::RegLoad { dst, value }
            }
            nxast::REG_LOAD2 => {
                let o = Oxm::decode(a)?;
                if a.rest().iter().any(|&b| b != 0) {
                    return Err(bad_len("set_field", at, len, pad8(10 + 4)));
                }
                Act::RegLoad2(o)
            }
            nxast::OUTPUT_REG => {
                fixed(24, "output_reg")?;
                let (ofs, n_bits) = read_sub_nbits(a)?;
                let (id, _) = OxmId::decode_header(a)?;
                let src = WireSub { id, ofs, n_bits };
                check_sub(&src, at)?;
                Act::OutputReg { src, max_len: a.u16("max_len")? }
            }
            nxast::OUTPUT_REG2 => {
                fixed(24, "output_reg2")?;
                let (ofs, n_bits) = read_sub_nbits(a)?;
                let max_len = a.u16("max_len")?;
                let (id, _) = OxmId::decode_header(a)?;
                let src = WireSub { id, ofs, n_bits };
                check_sub(&src, at)?;
                if a.rest().iter().any(|&b| b != 0) {
                    return Err(bad_len("output_reg2", at, len, 24));
                }
                Act::OutputReg2 { src, max_len }
            }
            nxast::STACK_PUSH | nxast::STACK_POP => {
                let name = if subtype == nxast::STACK_PUSH { "push" } else { "pop" };
                fixed(24, name)?;
                let ofs = a.u16("offset")?;
                let (id, _) = OxmId::decode_header(a)?;
                let n_bits = a.u16("n_bits")?;
                if a.rest().iter().any(|&b| b != 0) {
                    return Err(bad_len(name, at, len, 24));
                }
                let sub = WireSub { id, ofs, n_bits };
                check_sub(&sub, at)?;
                if subtype == nxast::STACK_PUSH {
                    Act::StackPush(sub)
                } else {
                    Act::StackPop(sub)
                }
            }
            nxast::NOTE => Act::Note(a.rest().to_vec()),
            nxast::DEC_TTL => fixed(16, "dec_ttl").map(|_| Act::NxDecTtl)?,
            nxast::EXIT => fixed(16, "exit").map(|_| Act::Exit)?,
            nxast::CT_CLEAR => fixed(16, "ct_clear").map(|_| Act::CtClear)?,
            nxast::CLONE => {
                if len < 16 {
                    return Err(bad_len("clone", at, len, 16));
                }
                a.skip(6, "pad")?;
                let mut inner = Reader::new(a.rest());
                Act::Clone(decode_actions(&mut inner, v)?)
            }
            nxast::CT => {
                if len < 24 {
                    return Err(bad_len("ct", at, len, 24));
                }
                let flags = a.u16("flags")?;
                let src = a.u32("zone_src")?;
                let zone = a.u16("zone")?;
                let table = a.u8("recirc_table")?;
                a.skip(3, "pad")?;
                let alg = a.u16("alg")?;
                let zone_src = if src == 0 {
                    None
                } else {
                    let bytes = src.to_be_bytes();
                    let mut hr = Reader::new(&bytes);
                    let (id, _) = OxmId::decode_header(&mut hr)?;
                    let s = WireSub { id, ofs: zone >> 6, n_bits: (zone & 0x3f) + 1 };
                    check_sub(&s, at)?;
                    Some(s)
                };
                let mut inner = Reader::new(a.rest());
                let actions = decode_actions(&mut inner, v)?;
                Act::Ct { flags, zone_src, zone_imm: if src == 0 { zone } else { 0 }, table, alg, actions }
            }
            nxast::NAT => {
                if len < 16 {
                    return Err(bad_len("nat", at, len, 16));
                }
                a.skip(2, "pad")?;
                let flags = a.u16("flags")?;
                let present = a.u16("range_present")?;
                let bit = |b: u16| present & b != 0;
                let ipv4 = if bit(1) {
                    Some((a.u32("ipv4 min")?, if bit(2) { Some(a.u32("ipv4 max")?) } else { None }))
                } else {
                    None
                };
                let ipv6 = if bit(4) {
                    let lo = u128::from_be_bytes(a.bytes(16, "ipv6 min")?.try_into().unwrap_or([0; 16]));
                    let hi = if bit(8) {
                        Some(u128::from_be_bytes(a.bytes(16, "ipv6 max")?.try_into().unwrap_or([0; 16])))
                    } else {
                        None
                    };
                    Some((lo, hi))
                } else {
                    None
                };
                let ports = if bit(16) {
                    Some((a.u16("proto min")?, if bit(32) { Some(a.u16("proto max")?) } else { None }))
                } else {
                    None
                };
                if present & !0x3f != 0 || a.rest().iter().any(|&b| b != 0) {
                    return Err(Error::new(
                        ErrorCode::BAD_ACTION_ARGUMENT,
                        format!("nat at offset {at}: unknown range bits {present:#x} or trailing bytes"),
                    ));
                }
                Act::Nat { flags, ipv4, ipv6, ports }
            }
            nxast::CONTROLLER => {
                fixed(16, "controller")?;
                Act::Controller { max_len: a.u16("max_len")?, id: a.u16("controller_id")?, reason: a.u8("reason")? }
            }
            nxast::SET_TUNNEL64 => {
                fixed(24, "set_tunnel64")?;
                a.skip(6, "pad")?;
                Act::SetTunnel64(a.u64("tun_id")?)
            }
            nxast::CONJUNCTION => {
                fixed(16, "conjunction")?;
                let clause = a.u8("clause")?;
                let n_clauses = a.u8("n_clauses")?;
                let id = a.u32("id")?;
                if !(2..=64).contains(&n_clauses) || clause >= n_clauses {
                    return Err(Error::new(
                        ErrorCode::BAD_ACTION_ARGUMENT,
                        format!("conjunction at offset {at}: clause {} of {n_clauses} (2 to 64 clauses)", clause + 1),
                    ));
                }
                Act::Conjunction { clause, n_clauses, id }
            }
            nxast::LEARN | nxast::LEARN2 => Act::Learn(Box::new(decode_learn(a, at, subtype)?)),
            nxast::CONTROLLER2 => Act::Controller2(Box::new(decode_controller2(a, at)?)),
            nxast::CHECK_PKT_LARGER => {
                fixed(24, "check_pkt_larger")?;
                let pkt_len = a.u16("pkt_len")?;
                let ofs = a.u16("offset")?;
                let (id, _) = OxmId::decode_header(a)?;
                let dst = WireSub { id, ofs, n_bits: 1 };
                check_sub(&dst, at)?;
                if a.rest().iter().any(|&b| b != 0) {
                    return Err(bad_len("check_pkt_larger", at, len, 24));
                }
                Act::CheckPktLarger { pkt_len, dst }
            }
            nxast::FIN_TIMEOUT => {
                fixed(16, "fin_timeout")?;
                Act::FinTimeout { idle: a.u16("fin_idle_timeout")?, hard: a.u16("fin_hard_timeout")? }
            }
            s if nxast::name(s).is_some() => Act::Nicira { subtype: s, body: a.rest().to_vec() },
            s => {
                return Err(Error::new(
                    ErrorCode::BAD_ACTION_EXP_TYPE,
                    format!("Nicira action subtype {s} at offset {at} is unknown"),
                ))
            }
        })
    }

    /// Appends the action.
    pub fn encode(&self, w: &mut Writer) {
        let start = w.len();
        let simple = |w: &mut Writer, ty: u16| {
            w.u16(ty);
            w.u16(8);
            w.zeros(4);
        };
        let with16 = |w: &mut Writer, ty: u16, v: u16| {
            w.u16(ty);
            w.u16(8);
            w.u16(v);
            w.zeros(2);
        };
        let with32 = |w: &mut Writer, ty: u16, v: u32| {
            w.u16(ty);
            w.u16(8);
            w.u32(v);
        };
        let with8 = |w: &mut Writer, ty: u16, v: u8| {
            w.u16(ty);
            w.u16(8);
            w.u8(v);
            w.zeros(3);
        };
        match self {
            Act::Output { port, max_len } => {
                w.u16(ofpat::OUTPUT);
                w.u16(16);
                w.u32(*port);
                w.u16(*max_len);
                w.zeros(6);
            }
            Act::CopyTtlOut => simple(w, ofpat::COPY_TTL_OUT),
            Act::CopyTtlIn => simple(w, ofpat::COPY_TTL_IN),
            Act::SetMplsTtl(t) => with8(w, ofpat::SET_MPLS_TTL, *t),
            Act::DecMplsTtl => simple(w, ofpat::DEC_MPLS_TTL),
            Act::PushVlan(e) => with16(w, ofpat::PUSH_VLAN, *e),
            Act::PopVlan => simple(w, ofpat::POP_VLAN),
            Act::PushMpls(e) => with16(w, ofpat::PUSH_MPLS, *e),
            Act::PopMpls(e) => with16(w, ofpat::POP_MPLS, *e),
            Act::SetQueue(q) => with32(w, ofpat::SET_QUEUE, *q),
            Act::Group(g) => with32(w, ofpat::GROUP, *g),
            Act::SetNwTtl(t) => with8(w, ofpat::SET_NW_TTL, *t),
            Act::DecNwTtl => simple(w, ofpat::DEC_NW_TTL),
            Act::SetField(o) => {
                w.u16(ofpat::SET_FIELD);
                let at = w.placeholder_u16();
                o.encode(w);
                w.pad8_from(start);
                w.patch_len(at, start);
            }
            Act::PushPbb(e) => with16(w, ofpat::PUSH_PBB, *e),
            Act::PopPbb => simple(w, ofpat::POP_PBB),
            Act::CopyField { n_bits, src_ofs, dst_ofs, src, dst } => {
                w.u16(ofpat::COPY_FIELD);
                let at = w.placeholder_u16();
                w.u16(*n_bits);
                w.u16(*src_ofs);
                w.u16(*dst_ofs);
                w.zeros(2);
                w.u32(src.header(false, src.info().map_or(0, |i| i.bytes)));
                w.u32(dst.header(false, dst.info().map_or(0, |i| i.bytes)));
                w.pad8_from(start);
                w.patch_len(at, start);
            }
            Act::Meter(m) => with32(w, ofpat::METER, *m),
            Act::Experimenter { vendor, body } => {
                w.u16(ofpat::EXPERIMENTER);
                let at = w.placeholder_u16();
                w.u32(*vendor);
                w.bytes(body);
                w.pad8_from(start);
                w.patch_len(at, start);
            }
            nx => {
                w.u16(ofpat::EXPERIMENTER);
                let at = w.placeholder_u16();
                w.u32(NX_VENDOR);
                nx.encode_nx(w);
                w.pad8_from(start);
                w.patch_len(at, start);
            }
        }
    }

    /// The Nicira part: subtype and body (the caller pads and sets the length).
    fn encode_nx(&self, w: &mut Writer) {
        let ofs_nbits = |s: &WireSub| (s.ofs << 6) | (s.n_bits.saturating_sub(1) & 0x3f);
        let hdr = |id: &OxmId| id.header(false, id.info().map_or(0, |i| i.bytes));
        match self {
            Act::Resubmit { in_port, table, ct } => {
                match (table, ct) {
                    (None, _) => w.u16(nxast::RESUBMIT),
                    (Some(_), false) => w.u16(nxast::RESUBMIT_TABLE),
                    (Some(_), true) => w.u16(nxast::RESUBMIT_TABLE_CT),
                }
                w.u16(*in_port);
                w.u8(table.unwrap_or(0));
                w.zeros(3);
            }
            Act::RegMove { src, dst } => {
                w.u16(nxast::REG_MOVE);
                w.u16(src.n_bits);
                w.u16(src.ofs);
                w.u16(dst.ofs);
                w.u32(hdr(&src.id));
                w.u32(hdr(&dst.id));
            }
            Act::RegLoad { dst, value } => {
                w.u16(nxast::REG_LOAD);
                w.u16(ofs_nbits(dst));
                w.u32(hdr(&dst.id));
                w.u64(*value);
            }
            Act::RegLoad2(o) => {
                w.u16(nxast::REG_LOAD2);
                o.encode(w);
            }
            Act::OutputReg { src, max_len } => {
                w.u16(nxast::OUTPUT_REG);
                w.u16(ofs_nbits(src));
                w.u32(hdr(&src.id));
                w.u16(*max_len);
                w.zeros(6);
            }
            Act::Learn(l) => encode_learn(w, l),
            Act::Controller2(c) => encode_controller2(w, c),
            Act::CheckPktLarger { pkt_len, dst } => {
                w.u16(nxast::CHECK_PKT_LARGER);
                w.u16(*pkt_len);
                w.u16(dst.ofs);
                w.u32(hdr(&dst.id));
                w.zeros(6);
            }
            Act::FinTimeout { idle, hard } => {
                w.u16(nxast::FIN_TIMEOUT);
                w.u16(*idle);
                w.u16(*hard);
                w.zeros(2);
            }
            Act::OutputReg2 { src, max_len } => {
                w.u16(nxast::OUTPUT_REG2);
                w.u16(ofs_nbits(src));
                w.u16(*max_len);
                w.u32(hdr(&src.id));
                w.zeros(6);
            }
            Act::StackPush(sub) | Act::StackPop(sub) => {
                w.u16(if matches!(self, Act::StackPush(_)) { nxast::STACK_PUSH } else { nxast::STACK_POP });
                w.u16(sub.ofs);
                w.u32(hdr(&sub.id));
                w.u16(sub.n_bits);
                w.zeros(6);
            }
            Act::Note(n) => {
                w.u16(nxast::NOTE);
                w.bytes(n);
                // At least the 6 bytes of an empty note's body.
                w.zeros(6usize.saturating_sub(n.len()));
            }
            Act::NxDecTtl => {
                w.u16(nxast::DEC_TTL);
                w.zeros(6);
            }
            Act::Exit => {
                w.u16(nxast::EXIT);
                w.zeros(6);
            }
            Act::CtClear => {
                w.u16(nxast::CT_CLEAR);
                w.zeros(6);
            }
            Act::Clone(actions) => {
                w.u16(nxast::CLONE);
                w.zeros(6);
                encode_actions(w, actions);
            }
            Act::Ct { flags, zone_src, zone_imm, table, alg, actions } => {
                w.u16(nxast::CT);
                w.u16(*flags);
                match zone_src {
                    Some(s) => {
                        w.u32(hdr(&s.id));
                        w.u16(ofs_nbits(s));
                    }
                    None => {
                        w.u32(0);
                        w.u16(*zone_imm);
                    }
                }
                w.u8(*table);
                w.zeros(3);
                w.u16(*alg);
                encode_actions(w, actions);
            }
            Act::Nat { flags, ipv4, ipv6, ports } => {
                w.u16(nxast::NAT);
                w.zeros(2);
                w.u16(*flags);
                let mut present = 0u16;
                if let Some((_, max)) = ipv4 {
                    present |= 1 | if max.is_some() { 2 } else { 0 };
                }
                if let Some((_, max)) = ipv6 {
                    present |= 4 | if max.is_some() { 8 } else { 0 };
                }
                if let Some((_, max)) = ports {
                    present |= 16 | if max.is_some() { 32 } else { 0 };
                }
                w.u16(present);
                if let Some((lo, hi)) = ipv4 {
                    w.u32(*lo);
                    if let Some(h) = hi {
                        w.u32(*h);
                    }
                }
                if let Some((lo, hi)) = ipv6 {
                    w.bytes(&lo.to_be_bytes());
                    if let Some(h) = hi {
                        w.bytes(&h.to_be_bytes());
                    }
                }
                if let Some((lo, hi)) = ports {
                    w.u16(*lo);
                    if let Some(h) = hi {
                        w.u16(*h);
                    }
                }
            }
            Act::Controller { max_len, id, reason } => {
                w.u16(nxast::CONTROLLER);
                w.u16(*max_len);
                w.u16(*id);
                w.u8(*reason);
                w.u8(0);
            }
            Act::SetTunnel64(t) => {
                w.u16(nxast::SET_TUNNEL64);
                w.zeros(6);
                w.u64(*t);
            }
            Act::Conjunction { clause, n_clauses, id } => {
                w.u16(nxast::CONJUNCTION);
                w.u8(*clause);
                w.u8(*n_clauses);
                w.u32(*id);
            }
            Act::Nicira { subtype, body } => {
                w.u16(*subtype);
                w.bytes(body);
            }
            // The OpenFlow actions are encoded by `encode`.
            _ => {}
        }
    }
}

/// Reads a list of actions filling `r`.
pub fn decode_actions(r: &mut Reader<'_>, v: Version) -> Result<Vec<Act>, Error> {
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Act::decode(r, v)?);
    }
    Ok(out)
}

pub fn encode_actions(w: &mut Writer, acts: &[Act]) {
    for a in acts {
        a.encode(w);
    }
}
