//! OXM and NXM match fields on the wire: the field table (class, field number,
//! width, maskability, name), one field's TLV, and a whole `ofp_match`.
//!
//! Invariant: a decoded [`Oxm`] names a field in [`FIELDS`], its value and
//! mask are exactly the field's width, the value has no bit outside the mask,
//! and a match holds each field at most once. Values are kept as `u128`
//! (the widest field kairo decodes is 16 bytes), right-aligned.

use crate::buf::{Reader, Writer};
use crate::error::{Error, ErrorCode};

/// OXM classes.
pub const NXM_0: u16 = 0x0000;
pub const NXM_1: u16 = 0x0001;
pub const OPENFLOW_BASIC: u16 = 0x8000;
pub const PACKET_REGS: u16 = 0x8001;
pub const EXPERIMENTER: u16 = 0xffff;

/// Which field: class and field number (the `hasmask` bit and length are
/// not part of a field's identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OxmId {
    pub class: u16,
    pub field: u8,
}

/// One row of the field table.
#[derive(Clone, Copy, Debug)]
pub struct OxmInfo {
    pub id: OxmId,
    /// Width of the value in bytes.
    pub bytes: u8,
    pub maskable: bool,
    /// Open vSwitch's name for it (`OXM_OF_IN_PORT`, `NXM_NX_REG0`, ...).
    pub name: &'static str,
}

macro_rules! table {
    ($($class:ident $field:literal $bytes:literal $mask:literal $name:literal;)*) => {
        /// Every field kairo decodes, OpenFlow basic then Nicira.
        pub const FIELDS: &[OxmInfo] = &[$(OxmInfo {
            id: OxmId { class: $class, field: $field }, bytes: $bytes, maskable: $mask, name: $name,
        }),*];
    };
}

table! {
    OPENFLOW_BASIC 0 4 false "OXM_OF_IN_PORT";
    OPENFLOW_BASIC 1 4 false "OXM_OF_IN_PHY_PORT";
    OPENFLOW_BASIC 2 8 true "OXM_OF_METADATA";
    OPENFLOW_BASIC 3 6 true "OXM_OF_ETH_DST";
    OPENFLOW_BASIC 4 6 true "OXM_OF_ETH_SRC";
    OPENFLOW_BASIC 5 2 false "OXM_OF_ETH_TYPE";
    OPENFLOW_BASIC 6 2 true "OXM_OF_VLAN_VID";
    OPENFLOW_BASIC 7 1 false "OXM_OF_VLAN_PCP";
    OPENFLOW_BASIC 8 1 false "OXM_OF_IP_DSCP";
    OPENFLOW_BASIC 9 1 false "OXM_OF_IP_ECN";
    OPENFLOW_BASIC 10 1 false "OXM_OF_IP_PROTO";
    OPENFLOW_BASIC 11 4 true "OXM_OF_IPV4_SRC";
    OPENFLOW_BASIC 12 4 true "OXM_OF_IPV4_DST";
    OPENFLOW_BASIC 13 2 true "OXM_OF_TCP_SRC";
    OPENFLOW_BASIC 14 2 true "OXM_OF_TCP_DST";
    OPENFLOW_BASIC 15 2 true "OXM_OF_UDP_SRC";
    OPENFLOW_BASIC 16 2 true "OXM_OF_UDP_DST";
    OPENFLOW_BASIC 17 2 true "OXM_OF_SCTP_SRC";
    OPENFLOW_BASIC 18 2 true "OXM_OF_SCTP_DST";
    OPENFLOW_BASIC 19 1 false "OXM_OF_ICMPV4_TYPE";
    OPENFLOW_BASIC 20 1 false "OXM_OF_ICMPV4_CODE";
    OPENFLOW_BASIC 21 2 false "OXM_OF_ARP_OP";
    OPENFLOW_BASIC 22 4 true "OXM_OF_ARP_SPA";
    OPENFLOW_BASIC 23 4 true "OXM_OF_ARP_TPA";
    OPENFLOW_BASIC 24 6 true "OXM_OF_ARP_SHA";
    OPENFLOW_BASIC 25 6 true "OXM_OF_ARP_THA";
    OPENFLOW_BASIC 26 16 true "OXM_OF_IPV6_SRC";
    OPENFLOW_BASIC 27 16 true "OXM_OF_IPV6_DST";
    OPENFLOW_BASIC 28 4 true "OXM_OF_IPV6_FLABEL";
    OPENFLOW_BASIC 29 1 false "OXM_OF_ICMPV6_TYPE";
    OPENFLOW_BASIC 30 1 false "OXM_OF_ICMPV6_CODE";
    OPENFLOW_BASIC 31 16 true "OXM_OF_IPV6_ND_TARGET";
    OPENFLOW_BASIC 32 6 true "OXM_OF_IPV6_ND_SLL";
    OPENFLOW_BASIC 33 6 true "OXM_OF_IPV6_ND_TLL";
    OPENFLOW_BASIC 34 4 false "OXM_OF_MPLS_LABEL";
    OPENFLOW_BASIC 35 1 false "OXM_OF_MPLS_TC";
    OPENFLOW_BASIC 36 1 false "OXM_OF_MPLS_BOS";
    OPENFLOW_BASIC 37 3 true "OXM_OF_PBB_ISID";
    OPENFLOW_BASIC 38 8 true "OXM_OF_TUNNEL_ID";
    OPENFLOW_BASIC 39 2 true "OXM_OF_IPV6_EXTHDR";
    OPENFLOW_BASIC 42 2 true "OXM_OF_TCP_FLAGS";
    OPENFLOW_BASIC 43 4 false "OXM_OF_ACTSET_OUTPUT";
    OPENFLOW_BASIC 44 4 false "OXM_OF_PACKET_TYPE";
    PACKET_REGS 0 8 true "OXM_OF_PKT_REG0";
    PACKET_REGS 1 8 true "OXM_OF_PKT_REG1";
    PACKET_REGS 2 8 true "OXM_OF_PKT_REG2";
    PACKET_REGS 3 8 true "OXM_OF_PKT_REG3";
    PACKET_REGS 4 8 true "OXM_OF_PKT_REG4";
    PACKET_REGS 5 8 true "OXM_OF_PKT_REG5";
    PACKET_REGS 6 8 true "OXM_OF_PKT_REG6";
    PACKET_REGS 7 8 true "OXM_OF_PKT_REG7";
    NXM_0 0 2 false "NXM_OF_IN_PORT";
    NXM_0 1 6 true "NXM_OF_ETH_DST";
    NXM_0 2 6 true "NXM_OF_ETH_SRC";
    NXM_0 3 2 false "NXM_OF_ETH_TYPE";
    NXM_0 4 2 true "NXM_OF_VLAN_TCI";
    NXM_0 5 1 false "NXM_OF_IP_TOS";
    NXM_0 6 1 false "NXM_OF_IP_PROTO";
    NXM_0 7 4 true "NXM_OF_IP_SRC";
    NXM_0 8 4 true "NXM_OF_IP_DST";
    NXM_0 9 2 true "NXM_OF_TCP_SRC";
    NXM_0 10 2 true "NXM_OF_TCP_DST";
    NXM_0 11 2 true "NXM_OF_UDP_SRC";
    NXM_0 12 2 true "NXM_OF_UDP_DST";
    NXM_0 13 1 false "NXM_OF_ICMP_TYPE";
    NXM_0 14 1 false "NXM_OF_ICMP_CODE";
    NXM_0 15 2 false "NXM_OF_ARP_OP";
    NXM_0 16 4 true "NXM_OF_ARP_SPA";
    NXM_0 17 4 true "NXM_OF_ARP_TPA";
    NXM_1 0 4 true "NXM_NX_REG0";
    NXM_1 1 4 true "NXM_NX_REG1";
    NXM_1 2 4 true "NXM_NX_REG2";
    NXM_1 3 4 true "NXM_NX_REG3";
    NXM_1 4 4 true "NXM_NX_REG4";
    NXM_1 5 4 true "NXM_NX_REG5";
    NXM_1 6 4 true "NXM_NX_REG6";
    NXM_1 7 4 true "NXM_NX_REG7";
    NXM_1 8 4 true "NXM_NX_REG8";
    NXM_1 9 4 true "NXM_NX_REG9";
    NXM_1 10 4 true "NXM_NX_REG10";
    NXM_1 11 4 true "NXM_NX_REG11";
    NXM_1 12 4 true "NXM_NX_REG12";
    NXM_1 13 4 true "NXM_NX_REG13";
    NXM_1 14 4 true "NXM_NX_REG14";
    NXM_1 15 4 true "NXM_NX_REG15";
    NXM_1 16 8 true "NXM_NX_TUN_ID";
    NXM_1 17 6 true "NXM_NX_ARP_SHA";
    NXM_1 18 6 true "NXM_NX_ARP_THA";
    NXM_1 19 16 true "NXM_NX_IPV6_SRC";
    NXM_1 20 16 true "NXM_NX_IPV6_DST";
    NXM_1 21 1 false "NXM_NX_ICMPV6_TYPE";
    NXM_1 22 1 false "NXM_NX_ICMPV6_CODE";
    NXM_1 23 16 true "NXM_NX_ND_TARGET";
    NXM_1 24 6 true "NXM_NX_ND_SLL";
    NXM_1 25 6 true "NXM_NX_ND_TLL";
    NXM_1 26 1 true "NXM_NX_IP_FRAG";
    NXM_1 27 4 true "NXM_NX_IPV6_LABEL";
    NXM_1 28 1 false "NXM_NX_IP_ECN";
    NXM_1 29 1 false "NXM_NX_IP_TTL";
    NXM_1 30 1 false "NXM_NX_MPLS_TTL";
    NXM_1 31 4 true "NXM_NX_TUN_IPV4_SRC";
    NXM_1 32 4 true "NXM_NX_TUN_IPV4_DST";
    NXM_1 33 4 true "NXM_NX_PKT_MARK";
    NXM_1 34 2 true "NXM_NX_TCP_FLAGS";
    NXM_1 35 4 true "NXM_NX_DP_HASH";
    NXM_1 36 4 false "NXM_NX_RECIRC_ID";
    NXM_1 37 4 false "NXM_NX_CONJ_ID";
    NXM_1 38 2 true "NXM_NX_TUN_GBP_ID";
    NXM_1 39 1 true "NXM_NX_TUN_GBP_FLAGS";
    NXM_1 104 2 true "NXM_NX_TUN_FLAGS";
    NXM_1 105 4 true "NXM_NX_CT_STATE";
    NXM_1 106 2 false "NXM_NX_CT_ZONE";
    NXM_1 107 4 true "NXM_NX_CT_MARK";
    NXM_1 108 16 true "NXM_NX_CT_LABEL";
    NXM_1 109 16 true "NXM_NX_TUN_IPV6_SRC";
    NXM_1 110 16 true "NXM_NX_TUN_IPV6_DST";
    NXM_1 119 1 false "NXM_NX_CT_NW_PROTO";
    NXM_1 120 4 true "NXM_NX_CT_NW_SRC";
    NXM_1 121 4 true "NXM_NX_CT_NW_DST";
    NXM_1 122 16 true "NXM_NX_CT_IPV6_SRC";
    NXM_1 123 16 true "NXM_NX_CT_IPV6_DST";
    NXM_1 124 2 true "NXM_NX_CT_TP_SRC";
    NXM_1 125 2 true "NXM_NX_CT_TP_DST";
}

impl OxmId {
    pub const fn basic(field: u8) -> OxmId {
        OxmId { class: OPENFLOW_BASIC, field }
    }

    pub fn info(&self) -> Option<&'static OxmInfo> {
        FIELDS.iter().find(|i| i.id == *self)
    }

    pub fn by_name(name: &str) -> Option<&'static OxmInfo> {
        FIELDS.iter().find(|i| i.name == name)
    }

    /// `OXM_OF_X` or `class 0xC field F` for a field not in the table.
    pub fn name(&self) -> String {
        match self.info() {
            Some(i) => i.name.to_string(),
            None => format!("class {:#06x} field {}", self.class, self.field),
        }
    }

    /// The 32-bit header of this field (`hasmask` clear) with a payload of `len` bytes.
    pub fn header(&self, hasmask: bool, len: u8) -> u32 {
        (u32::from(self.class) << 16) | (u32::from(self.field) << 9) | (u32::from(hasmask) << 8) | u32::from(len)
    }

    /// This field's table row, or the error for a field kairo does not
    /// decode (`exp`: the experimenter id of an experimenter-class field).
    fn known(&self, at: usize, exp: u32) -> Result<&'static OxmInfo, Error> {
        if self.class == EXPERIMENTER {
            return Err(Error::new(
                ErrorCode::BAD_FIELD,
                format!(
                    "experimenter OXM field {} of experimenter {exp:#010x} at offset {at} is not supported",
                    self.field
                ),
            ));
        }
        self.info()
            .ok_or_else(|| Error::new(ErrorCode::BAD_FIELD, format!("unknown field {} at offset {at}", self.name())))
    }

    /// Reads a bare OXM header (as `copy_field` and `reg_move` carry them).
    /// An experimenter header's 4-byte experimenter id is read and refused.
    pub fn decode_header(r: &mut Reader<'_>) -> Result<(OxmId, &'static OxmInfo), Error> {
        let at = r.offset();
        let h = r.u32("OXM header")?;
        let id = OxmId { class: (h >> 16) as u16, field: ((h >> 9) & 0x7f) as u8 };
        let exp = if id.class == EXPERIMENTER { r.u32("OXM experimenter id")? } else { 0 };
        Ok((id, id.known(at, exp)?))
    }
}

/// All-ones of `bytes` bytes.
pub fn ones(bytes: u8) -> u128 {
    if bytes >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * u32::from(bytes))) - 1
    }
}

/// One match field (or a `set_field` argument): value and optional mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Oxm {
    pub id: OxmId,
    pub value: u128,
    /// `None`: exact. A mask is never all-ones (that is encoded as exact).
    pub mask: Option<u128>,
}

fn read_be(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |acc, &x| (acc << 8) | u128::from(x))
}

fn write_be(w: &mut Writer, v: u128, bytes: u8) {
    let all = v.to_be_bytes();
    w.bytes(&all[16 - usize::from(bytes)..]);
}

impl Oxm {
    pub fn exact(id: OxmId, value: u128) -> Oxm {
        Oxm { id, value, mask: None }
    }

    /// Reads one OXM TLV and checks it against the field table.
    pub fn decode(r: &mut Reader<'_>) -> Result<Oxm, Error> {
        let at = r.offset();
        let h = r.u32("OXM header")?;
        let id = OxmId { class: (h >> 16) as u16, field: ((h >> 9) & 0x7f) as u8 };
        let hasmask = h & 0x100 != 0;
        let len = (h & 0xff) as usize;
        let mut body = r.sub(len, "OXM payload")?;
        let exp = if id.class == EXPERIMENTER { body.u32("OXM experimenter id").unwrap_or(0) } else { 0 };
        let info = id.known(at, exp)?;
        let w = usize::from(info.bytes);
        let want = if hasmask { 2 * w } else { w };
        if len != want {
            return Err(Error::new(
                ErrorCode::BAD_MATCH_LEN,
                format!("{} at offset {at} has {len} bytes of payload, expected {want}", info.name),
            ));
        }
        if hasmask && !info.maskable {
            return Err(Error::new(ErrorCode::BAD_MASK, format!("{} at offset {at} cannot be masked", info.name)));
        }
        let value = read_be(body.bytes(w, "OXM value")?);
        let mask = if hasmask { Some(read_be(body.bytes(w, "OXM mask")?)) } else { None };
        if let Some(m) = mask {
            if value & !m != 0 {
                return Err(Error::new(
                    ErrorCode::BAD_WILDCARDS,
                    format!("{} at offset {at}: value {value:#x} has bits outside mask {m:#x}", info.name),
                ));
            }
        }
        // An all-ones mask means exact: keep one representation.
        let mask = mask.filter(|&m| m != ones(info.bytes));
        Ok(Oxm { id, value, mask })
    }

    /// Appends the TLV. The field must be in the table (the mapping only builds such).
    pub fn encode(&self, w: &mut Writer) {
        let bytes = self.id.info().map_or(16, |i| i.bytes);
        match self.mask {
            Some(m) => {
                w.u32(self.id.header(true, 2 * bytes));
                write_be(w, self.value, bytes);
                write_be(w, m, bytes);
            }
            None => {
                w.u32(self.id.header(false, bytes));
                write_be(w, self.value, bytes);
            }
        }
    }
}

/// Reads an `ofp_match` (type OXM), padding included; returns its fields in order.
pub fn decode_match(r: &mut Reader<'_>) -> Result<Vec<Oxm>, Error> {
    let at = r.offset();
    let ty = r.u16("match type")?;
    let len = usize::from(r.u16("match length")?);
    if ty != 1 {
        return Err(Error::new(ErrorCode::BAD_MATCH_TYPE, format!("match type {ty} at offset {at} (expected 1, OXM)")));
    }
    if len < 4 {
        return Err(Error::new(ErrorCode::BAD_MATCH_LEN, format!("match length {len} at offset {at} (at least 4)")));
    }
    let as_match = |e: Error| Error { code: ErrorCode::BAD_MATCH_LEN, ..e };
    let mut body = r.sub(len - 4, "match fields").map_err(as_match)?;
    r.skip(crate::buf::pad8(len) - len, "match padding").map_err(as_match)?;
    let mut out: Vec<Oxm> = Vec::new();
    while !body.is_empty() {
        let o = Oxm::decode(&mut body)?;
        if out.iter().any(|x| x.id == o.id) {
            return Err(Error::new(
                ErrorCode::DUP_FIELD,
                format!("{} appears twice in the match at offset {at}", o.id.name()),
            ));
        }
        out.push(o);
    }
    Ok(out)
}

/// Appends an `ofp_match` holding these fields, padded to 8 bytes.
pub fn encode_match(w: &mut Writer, fields: &[Oxm]) {
    let start = w.len();
    w.u16(1);
    let at = w.placeholder_u16();
    for f in fields {
        f.encode(w);
    }
    w.patch_len(at, start);
    w.pad8_from(start);
}
