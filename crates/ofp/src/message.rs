//! OpenFlow messages: the header, every message kairo's switch end reads or
//! writes as a typed value, and their decoding and encoding by version.
//!
//! Invariant: [`decode`] takes one whole message (the header's length is the
//! slice's length) and either returns it or an [`Error`] carrying the
//! OpenFlow error to reply with; it reads nothing outside the slice and never
//! panics. [`encode`] refuses a message longer than OpenFlow's 64 KiB.

use crate::action::{decode_actions, encode_actions, Act};
use crate::buf::{Reader, Writer};
use crate::error::{Error, ErrorCode};
use crate::instruction::{decode_instructions, encode_instructions, Instruction};
use crate::multipart::{MpReply, MpRequest};
use crate::oxm::{decode_match, encode_match, Oxm};
use crate::Version;

pub const HEADER_LEN: usize = 8;
/// OpenFlow's length field is 16 bits.
pub const MAX_LEN: usize = 65535;
/// "No buffer": the packet is in the message.
pub const NO_BUFFER: u32 = 0xffff_ffff;

/// Message types (OFPT_*), the same numbers in 1.3, 1.4 and 1.5.
pub mod ofpt {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const EXPERIMENTER: u8 = 4;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const GET_CONFIG_REQUEST: u8 = 7;
    pub const GET_CONFIG_REPLY: u8 = 8;
    pub const SET_CONFIG: u8 = 9;
    pub const PACKET_IN: u8 = 10;
    pub const FLOW_REMOVED: u8 = 11;
    pub const PORT_STATUS: u8 = 12;
    pub const PACKET_OUT: u8 = 13;
    pub const FLOW_MOD: u8 = 14;
    pub const GROUP_MOD: u8 = 15;
    pub const PORT_MOD: u8 = 16;
    pub const TABLE_MOD: u8 = 17;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
    pub const ROLE_REQUEST: u8 = 24;
    pub const ROLE_REPLY: u8 = 25;
    pub const GET_ASYNC_REQUEST: u8 = 26;
    pub const GET_ASYNC_REPLY: u8 = 27;
    pub const SET_ASYNC: u8 = 28;
    pub const METER_MOD: u8 = 29;
    pub const BUNDLE_CONTROL: u8 = 33;
    pub const BUNDLE_ADD_MESSAGE: u8 = 34;
}

/// The fixed header of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub ty: u8,
    pub length: u16,
    pub xid: u32,
}

impl Header {
    /// Reads the 8-byte header from the front of `b` (which may hold more).
    pub fn peek(b: &[u8]) -> Result<Header, Error> {
        let mut r = Reader::new(b);
        let h = Header { version: r.u8("version")?, ty: r.u8("type")?, length: r.u16("length")?, xid: r.u32("xid")? };
        if usize::from(h.length) < HEADER_LEN {
            return Err(Error::new(
                ErrorCode::BAD_LEN,
                format!("message length {} is under the 8-byte header", h.length),
            ));
        }
        Ok(h)
    }
}

/// The switch's answer to FEATURES_REQUEST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    pub datapath_id: u64,
    pub n_buffers: u32,
    pub n_tables: u8,
    pub auxiliary_id: u8,
    pub capabilities: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    pub flags: u16,
    pub miss_send_len: u16,
}

/// OFPFC_* flow-mod commands.
pub mod ofpfc {
    pub const ADD: u8 = 0;
    pub const MODIFY: u8 = 1;
    pub const MODIFY_STRICT: u8 = 2;
    pub const DELETE: u8 = 3;
    pub const DELETE_STRICT: u8 = 4;
}

/// OFPFF_* flow-mod flags.
pub mod ofpff {
    pub const SEND_FLOW_REM: u16 = 1 << 0;
    pub const CHECK_OVERLAP: u16 = 1 << 1;
    pub const RESET_COUNTS: u16 = 1 << 2;
    pub const NO_PKT_COUNTS: u16 = 1 << 3;
    pub const NO_BYT_COUNTS: u16 = 1 << 4;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMod {
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    pub command: u8,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    pub flags: u16,
    /// OpenFlow 1.5 only (0 in 1.3).
    pub importance: u16,
    pub fields: Vec<Oxm>,
    pub instructions: Vec<Instruction>,
}

/// A bucket of a group. OpenFlow 1.3 carries no bucket id (buckets are
/// numbered in order on decode); 1.5 carries the id, and weight and watches
/// as properties (absent: weight 0, watching nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireBucket {
    pub bucket_id: u32,
    pub weight: u16,
    pub watch_port: u32,
    pub watch_group: u32,
    pub actions: Vec<Act>,
}

/// OFPGC_* group-mod commands.
pub mod ofpgc {
    pub const ADD: u16 = 0;
    pub const MODIFY: u16 = 1;
    pub const DELETE: u16 = 2;
}

/// Reserved group ids.
pub const OFPG_ALL: u32 = 0xffff_fffc;
pub const OFPG_ANY: u32 = 0xffff_ffff;

/// OpenFlow 1.5's "all buckets" in `command_bucket_id`.
pub const OFPG_BUCKET_ALL: u32 = 0xffff_ffff;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMod {
    pub command: u16,
    /// OFPGT_ALL 0, SELECT 1, INDIRECT 2, FF 3.
    pub ty: u8,
    pub group_id: u32,
    /// OpenFlow 1.5 only (OFPG_BUCKET_ALL in 1.3).
    pub command_bucket_id: u32,
    pub buckets: Vec<WireBucket>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketIn {
    pub buffer_id: u32,
    pub total_len: u16,
    pub reason: u8,
    pub table_id: u8,
    pub cookie: u64,
    pub fields: Vec<Oxm>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketOut {
    pub buffer_id: u32,
    /// OpenFlow 1.1+ port numbering (in 1.5 it travels as an in_port match).
    pub in_port: u32,
    pub actions: Vec<Act>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRemoved {
    pub cookie: u64,
    pub priority: u16,
    pub reason: u8,
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub packet_count: u64,
    pub byte_count: u64,
    pub fields: Vec<Oxm>,
}

/// A port as PORT_DESC and PORT_STATUS describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortDesc {
    pub port_no: u32,
    pub hw_addr: [u8; 6],
    pub name: String,
    pub config: u32,
    pub state: u32,
    pub curr: u32,
    pub advertised: u32,
    pub supported: u32,
    pub peer: u32,
    pub curr_speed: u32,
    pub max_speed: u32,
}

/// OFPPS_LINK_DOWN.
pub const OFPPS_LINK_DOWN: u32 = 1;
/// OFPPC_* port configuration bits.
pub mod ofppc {
    pub const PORT_DOWN: u32 = 1;
    pub const NO_RECV: u32 = 4;
    pub const NO_FWD: u32 = 32;
    pub const NO_PACKET_IN: u32 = 64;
}
/// OFPPR_* port status reasons.
pub mod ofppr {
    pub const ADD: u8 = 0;
    pub const DELETE: u8 = 1;
    pub const MODIFY: u8 = 2;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// OFPCR_ROLE_NOCHANGE 0, EQUAL 1, MASTER 2, SLAVE 3.
    pub role: u32,
    pub generation_id: u64,
}

/// OpenFlow 1.3 asynchronous message masks: [equal/master, slave] for each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncConfig {
    pub packet_in: [u32; 2],
    pub port_status: [u32; 2],
    pub flow_removed: [u32; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMod {
    pub port_no: u32,
    pub hw_addr: [u8; 6],
    pub config: u32,
    pub mask: u32,
    pub advertise: u32,
}

/// NXT_PACKET_IN2, Open vSwitch's packet-in (a controller asks for it with
/// NXT_SET_PACKET_IN_FORMAT): what a PACKET_IN says, as properties, and the
/// controller action's userdata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketIn2 {
    /// The packet (cut to the action's max_len).
    pub data: Vec<u8>,
    /// The packet's whole length, when `data` is cut short.
    pub full_len: Option<u32>,
    pub buffer_id: Option<u32>,
    pub table_id: u8,
    /// The rule's cookie (absent: none, as for a packet-out's).
    pub cookie: Option<u64>,
    pub reason: u8,
    /// in_port and the pipeline fields that are not zero, as OXMs.
    pub metadata: Vec<Oxm>,
    /// The `controller(userdata=...)` bytes, if the action had any.
    pub userdata: Option<Vec<u8>>,
}

/// The Nicira vendor id, under which Open vSwitch's extension messages travel.
pub const NX_VENDOR: u32 = 0x0000_2320;

/// Nicira message subtypes (NXT_*) kairo reads or writes.
pub mod nxt {
    pub const SET_PACKET_IN_FORMAT: u32 = 16;
    pub const SET_CONTROLLER_ID: u32 = 20;
    pub const PACKET_IN2: u32 = 30;
}

/// The packet-in formats of NXT_SET_PACKET_IN_FORMAT (NXPIF_*).
pub mod nxpif {
    /// OpenFlow's own PACKET_IN.
    pub const STANDARD: u32 = 0;
    /// NXT_PACKET_IN (Nicira's older format).
    pub const NXT_PACKET_IN: u32 = 1;
    /// NXT_PACKET_IN2.
    pub const NXT_PACKET_IN2: u32 = 2;
}

/// NXT_PACKET_IN2's property types (NXPINT_*).
mod nxpint {
    pub const PACKET: u16 = 0;
    pub const FULL_LEN: u16 = 1;
    pub const BUFFER_ID: u16 = 2;
    pub const TABLE_ID: u16 = 3;
    pub const COOKIE: u16 = 4;
    pub const REASON: u16 = 5;
    pub const METADATA: u16 = 6;
    pub const USERDATA: u16 = 7;
}

/// The ONF experimenter id, under which OpenFlow 1.3 carries bundles.
pub const ONF_EXPERIMENTER: u32 = 0x4f4e_4600;
/// ONF experimenter types of the OpenFlow 1.3 bundle extension.
pub const ONFT_BUNDLE_CONTROL: u32 = 2300;
pub const ONFT_BUNDLE_ADD_MESSAGE: u32 = 2301;
/// ONF experimenter error type of OFPBFC code 0 in OpenFlow 1.3 (code n is 2300 + n).
pub const ONF_BUNDLE_ERROR: u16 = 2300;

/// OFPBCT_* bundle control types.
pub mod ofpbct {
    pub const OPEN_REQUEST: u16 = 0;
    pub const OPEN_REPLY: u16 = 1;
    pub const CLOSE_REQUEST: u16 = 2;
    pub const CLOSE_REPLY: u16 = 3;
    pub const COMMIT_REQUEST: u16 = 4;
    pub const COMMIT_REPLY: u16 = 5;
    pub const DISCARD_REQUEST: u16 = 6;
    pub const DISCARD_REPLY: u16 = 7;
}

/// OFPBF_* bundle flags.
pub const OFPBF_ATOMIC: u16 = 1;
pub const OFPBF_ORDERED: u16 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleControl {
    pub bundle_id: u32,
    pub ty: u16,
    pub flags: u16,
}

/// A message added to a bundle: the whole inner message's bytes, header included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleAdd {
    pub bundle_id: u32,
    pub flags: u16,
    pub message: Vec<u8>,
}

/// Every message kairo reads or writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The versions offered in a version bitmap (bit n = wire version n), if any.
    Hello {
        bitmap: Option<u32>,
    },
    Error {
        code: ErrorCode,
        data: Vec<u8>,
    },
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    FeaturesRequest,
    FeaturesReply(Features),
    GetConfigRequest,
    GetConfigReply(SwitchConfig),
    SetConfig(SwitchConfig),
    PacketIn(PacketIn),
    FlowRemoved(FlowRemoved),
    PortStatus {
        reason: u8,
        desc: PortDesc,
    },
    PacketOut(PacketOut),
    FlowMod(FlowMod),
    GroupMod(GroupMod),
    PortMod(PortMod),
    MeterMod(crate::meter::MeterMod),
    MultipartRequest {
        flags: u16,
        body: MpRequest,
    },
    MultipartReply {
        flags: u16,
        body: MpReply,
    },
    BarrierRequest,
    BarrierReply,
    RoleRequest(Role),
    RoleReply(Role),
    GetAsyncRequest,
    GetAsyncReply(AsyncConfig),
    SetAsync(AsyncConfig),
    /// OFPT_BUNDLE_CONTROL (1.5) or its ONF experimenter form (1.3).
    BundleControl(BundleControl),
    /// OFPT_BUNDLE_ADD_MESSAGE (1.5) or its ONF experimenter form (1.3).
    BundleAdd(BundleAdd),
    /// NXT_SET_PACKET_IN_FORMAT: the format (`nxpif`) of this connection's packet-ins.
    SetPacketInFormat(u32),
    /// NXT_SET_CONTROLLER_ID: the id `controller(id=N)` actions name this connection by.
    SetControllerId(u16),
    /// NXT_PACKET_IN2.
    PacketIn2(PacketIn2),
}

impl Message {
    pub fn ty(&self) -> u8 {
        use Message::*;
        match self {
            Hello { .. } => ofpt::HELLO,
            Error { .. } => ofpt::ERROR,
            EchoRequest(_) => ofpt::ECHO_REQUEST,
            EchoReply(_) => ofpt::ECHO_REPLY,
            FeaturesRequest => ofpt::FEATURES_REQUEST,
            FeaturesReply(_) => ofpt::FEATURES_REPLY,
            GetConfigRequest => ofpt::GET_CONFIG_REQUEST,
            GetConfigReply(_) => ofpt::GET_CONFIG_REPLY,
            SetConfig(_) => ofpt::SET_CONFIG,
            PacketIn(_) => ofpt::PACKET_IN,
            FlowRemoved(_) => ofpt::FLOW_REMOVED,
            PortStatus { .. } => ofpt::PORT_STATUS,
            PacketOut(_) => ofpt::PACKET_OUT,
            FlowMod(_) => ofpt::FLOW_MOD,
            GroupMod(_) => ofpt::GROUP_MOD,
            PortMod(_) => ofpt::PORT_MOD,
            MeterMod(_) => ofpt::METER_MOD,
            MultipartRequest { .. } => ofpt::MULTIPART_REQUEST,
            MultipartReply { .. } => ofpt::MULTIPART_REPLY,
            BarrierRequest => ofpt::BARRIER_REQUEST,
            BarrierReply => ofpt::BARRIER_REPLY,
            RoleRequest(_) => ofpt::ROLE_REQUEST,
            RoleReply(_) => ofpt::ROLE_REPLY,
            GetAsyncRequest => ofpt::GET_ASYNC_REQUEST,
            GetAsyncReply(_) => ofpt::GET_ASYNC_REPLY,
            SetAsync(_) => ofpt::SET_ASYNC,
            BundleControl(_) => ofpt::BUNDLE_CONTROL,
            BundleAdd(_) => ofpt::BUNDLE_ADD_MESSAGE,
            SetPacketInFormat(_) | SetControllerId(_) | PacketIn2(_) => ofpt::EXPERIMENTER,
        }
    }
}

fn mac(r: &mut Reader<'_>, what: &'static str) -> Result<[u8; 6], Error> {
    let mut a = [0u8; 6];
    a.copy_from_slice(r.bytes(6, what)?);
    Ok(a)
}

/// Reads an OpenFlow 1.3 `ofp_port` (64 bytes) or a 1.4+ one (with properties).
pub(crate) fn decode_port(r: &mut Reader<'_>, v: Version) -> Result<PortDesc, Error> {
    if v < Version::V1_5 {
        let port_no = r.u32("port_no")?;
        r.skip(4, "pad")?;
        let hw_addr = mac(r, "hw_addr")?;
        r.skip(2, "pad")?;
        let name = r.string(16, "name")?;
        Ok(PortDesc {
            port_no,
            hw_addr,
            name,
            config: r.u32("config")?,
            state: r.u32("state")?,
            curr: r.u32("curr")?,
            advertised: r.u32("advertised")?,
            supported: r.u32("supported")?,
            peer: r.u32("peer")?,
            curr_speed: r.u32("curr_speed")?,
            max_speed: r.u32("max_speed")?,
        })
    } else {
        let at = r.offset();
        let port_no = r.u32("port_no")?;
        let len = usize::from(r.u16("port length")?);
        if len < 40 {
            return Err(Error::new(ErrorCode::BAD_LEN, format!("port at offset {at} has length {len} (at least 40)")));
        }
        let mut p = r.sub(len - 6, "port")?;
        p.skip(2, "pad")?;
        let hw_addr = mac(&mut p, "hw_addr")?;
        p.skip(2, "pad")?;
        let name = p.string(16, "name")?;
        let config = p.u32("config")?;
        let state = p.u32("state")?;
        let mut d = PortDesc {
            port_no,
            hw_addr,
            name,
            config,
            state,
            curr: 0,
            advertised: 0,
            supported: 0,
            peer: 0,
            curr_speed: 0,
            max_speed: 0,
        };
        while !p.is_empty() {
            let pat = p.offset();
            let ty = p.u16("property type")?;
            let plen = usize::from(p.u16("property length")?);
            if plen < 4 {
                return Err(Error::new(ErrorCode::BAD_LEN, format!("port property at offset {pat} has length {plen}")));
            }
            let mut prop = p.sub(crate::buf::pad8(plen) - 4, "port property")?;
            if ty == 0 {
                prop.skip(4, "pad")?;
                d.curr = prop.u32("curr")?;
                d.advertised = prop.u32("advertised")?;
                d.supported = prop.u32("supported")?;
                d.peer = prop.u32("peer")?;
                d.curr_speed = prop.u32("curr_speed")?;
                d.max_speed = prop.u32("max_speed")?;
            }
        }
        Ok(d)
    }
}

pub(crate) fn encode_port(w: &mut Writer, d: &PortDesc, v: Version) {
    if v < Version::V1_5 {
        w.u32(d.port_no);
        w.zeros(4);
        w.bytes(&d.hw_addr);
        w.zeros(2);
        w.string(&d.name, 16);
        for x in [d.config, d.state, d.curr, d.advertised, d.supported, d.peer, d.curr_speed, d.max_speed] {
            w.u32(x);
        }
    } else {
        w.u32(d.port_no);
        w.u16(72);
        w.zeros(2);
        w.bytes(&d.hw_addr);
        w.zeros(2);
        w.string(&d.name, 16);
        w.u32(d.config);
        w.u32(d.state);
        // The Ethernet property.
        w.u16(0);
        w.u16(32);
        w.zeros(4);
        for x in [d.curr, d.advertised, d.supported, d.peer, d.curr_speed, d.max_speed] {
            w.u32(x);
        }
    }
}

fn decode_bucket(r: &mut Reader<'_>, v: Version, index: u32) -> Result<WireBucket, Error> {
    let at = r.offset();
    let len = usize::from(r.peek_u16("bucket length")?);
    let min = if v < Version::V1_5 { 16 } else { 8 };
    if len < min || len % 8 != 0 {
        return Err(Error::new(
            ErrorCode::BAD_BUCKET,
            format!("bucket at offset {at} has length {len} (a multiple of 8, at least {min})"),
        ));
    }
    let mut b = r.sub(len, "bucket")?;
    b.skip(2, "bucket length")?;
    if v < Version::V1_5 {
        let weight = b.u16("weight")?;
        let watch_port = b.u32("watch_port")?;
        let watch_group = b.u32("watch_group")?;
        b.skip(4, "pad")?;
        let actions = decode_actions(&mut b, v)?;
        return Ok(WireBucket { bucket_id: index, weight, watch_port, watch_group, actions });
    }
    let actions_len = usize::from(b.u16("action_array_len")?);
    let bucket_id = b.u32("bucket_id")?;
    let mut a = b.sub(actions_len, "bucket actions")?;
    let actions = decode_actions(&mut a, v)?;
    let mut out =
        WireBucket { bucket_id, weight: 0, watch_port: crate::port::OFPP_ANY, watch_group: OFPG_ANY, actions };
    while !b.is_empty() {
        let pat = b.offset();
        let ty = b.u16("bucket property type")?;
        let plen = b.u16("bucket property length")?;
        if plen != 8 {
            return Err(Error::new(
                ErrorCode::BAD_LEN,
                format!("bucket property at offset {pat} has length {plen}, expected 8"),
            ));
        }
        match ty {
            0 => {
                out.weight = b.u16("weight")?;
                b.skip(2, "pad")?;
            }
            1 => out.watch_port = b.u32("watch_port")?,
            2 => out.watch_group = b.u32("watch_group")?,
            other => {
                return Err(Error::new(
                    ErrorCode::BAD_PROPERTY_TYPE,
                    format!("bucket property type {other} at offset {pat}"),
                ))
            }
        }
    }
    Ok(out)
}

fn encode_bucket(w: &mut Writer, b: &WireBucket, v: Version) {
    let start = w.len();
    let at = w.placeholder_u16();
    if v < Version::V1_5 {
        w.u16(b.weight);
        w.u32(b.watch_port);
        w.u32(b.watch_group);
        w.zeros(4);
        encode_actions(w, &b.actions);
    } else {
        let alen = w.placeholder_u16();
        w.u32(b.bucket_id);
        let astart = w.len();
        encode_actions(w, &b.actions);
        w.patch_len(alen, astart);
        if b.weight != 0 {
            w.u16(0);
            w.u16(8);
            w.u16(b.weight);
            w.zeros(2);
        }
        if b.watch_port != crate::port::OFPP_ANY {
            w.u16(1);
            w.u16(8);
            w.u32(b.watch_port);
        }
        if b.watch_group != OFPG_ANY {
            w.u16(2);
            w.u16(8);
            w.u32(b.watch_group);
        }
    }
    w.patch_len(at, start);
}

pub(crate) fn decode_buckets(r: &mut Reader<'_>, v: Version) -> Result<Vec<WireBucket>, Error> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let index = out.len() as u32;
        out.push(decode_bucket(r, v, index)?);
    }
    Ok(out)
}

pub(crate) fn encode_buckets(w: &mut Writer, bs: &[WireBucket], v: Version) {
    for b in bs {
        encode_bucket(w, b, v);
    }
}

/// Reads OpenFlow 1.5 group properties: none are supported (a selection
/// method would change what a select group hashes), so any is an error.
pub(crate) fn refuse_group_properties(r: &mut Reader<'_>) -> Result<(), Error> {
    if r.is_empty() {
        return Ok(());
    }
    let at = r.offset();
    let ty = r.u16("group property type")?;
    Err(Error::new(
        ErrorCode::BAD_PROPERTY_TYPE,
        format!("group property type {ty} at offset {at} is not supported by kairo"),
    ))
}

fn decode_async(r: &mut Reader<'_>) -> Result<AsyncConfig, Error> {
    let mut pair = |what| -> Result<[u32; 2], Error> { Ok([r.u32(what)?, r.u32(what)?]) };
    Ok(AsyncConfig {
        packet_in: pair("packet_in_mask")?,
        port_status: pair("port_status_mask")?,
        flow_removed: pair("flow_removed_mask")?,
    })
}

fn decode_bundle_control(r: &mut Reader<'_>) -> Result<BundleControl, Error> {
    let c = BundleControl { bundle_id: r.u32("bundle_id")?, ty: r.u16("bundle control type")?, flags: r.u16("flags")? };
    refuse_bundle_properties(r)?;
    Ok(c)
}

fn refuse_bundle_properties(r: &mut Reader<'_>) -> Result<(), Error> {
    if r.rest().iter().any(|&b| b != 0) {
        return Err(Error::new(ErrorCode::BAD_PROPERTY_TYPE, "bundle properties are not supported by kairo"));
    }
    Ok(())
}

fn decode_bundle_add(r: &mut Reader<'_>) -> Result<BundleAdd, Error> {
    let bundle_id = r.u32("bundle_id")?;
    r.skip(2, "pad")?;
    let flags = r.u16("flags")?;
    let at = r.offset();
    let len = {
        let mut p = *r;
        p.skip(2, "inner version and type")?;
        usize::from(p.u16("inner message length")?)
    };
    if len < HEADER_LEN {
        return Err(Error::new(
            ErrorCode::BUNDLE_MSG_BAD_LEN,
            format!("the message in the bundle at offset {at} has length {len}"),
        ));
    }
    let message =
        r.bytes(len, "inner message").map_err(|e| Error { code: ErrorCode::BUNDLE_MSG_BAD_LEN, ..e })?.to_vec();
    refuse_bundle_properties(r)?;
    Ok(BundleAdd { bundle_id, flags, message })
}

fn unsupported_in(v: Version, what: &str, code: ErrorCode) -> Error {
    Error::new(code, format!("{what} is not supported in OpenFlow {v} by kairo"))
}

/// Decodes one whole message. `b` must be exactly the message's bytes.
pub fn decode(b: &[u8]) -> Result<(Header, Message), Error> {
    let h = Header::peek(b)?;
    if usize::from(h.length) != b.len() {
        return Err(Error::new(
            ErrorCode::BAD_LEN,
            format!("header says {} bytes, the message has {}", h.length, b.len()),
        ));
    }
    let mut r = Reader::new(b);
    r.skip(HEADER_LEN, "header")?;
    // HELLO is read in any version (that is how versions are agreed).
    if h.ty == ofpt::HELLO {
        return Ok((h, decode_hello(&mut r)?));
    }
    let v = Version::from_wire(h.version).ok_or_else(|| {
        Error::new(ErrorCode::BAD_VERSION, format!("version {:#04x} (kairo speaks OpenFlow 1.3 and 1.5)", h.version))
    })?;
    let m = decode_body(&mut r, h.ty, v)?;
    if !r.is_empty() && !matches!(m, Message::EchoRequest(_) | Message::EchoReply(_)) {
        return Err(Error::new(
            ErrorCode::BAD_LEN,
            format!("{} bytes left over after the message body (type {})", r.remaining(), h.ty),
        ));
    }
    Ok((h, m))
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Message, Error> {
    let mut bitmap = None;
    while r.remaining() >= 4 {
        let at = r.offset();
        let ty = r.u16("hello element type")?;
        let len = usize::from(r.u16("hello element length")?);
        if len < 4 {
            return Err(Error::new(ErrorCode::BAD_LEN, format!("hello element at offset {at} has length {len}")));
        }
        let mut e = r.sub(len - 4, "hello element")?;
        r.skip((crate::buf::pad8(len) - len).min(r.remaining()), "hello element padding")?;
        if ty == 1 && e.remaining() >= 4 {
            // Only the first 32 bits matter: versions up to 0x1f.
            bitmap = Some(e.u32("version bitmap")?);
        }
    }
    Ok(Message::Hello { bitmap })
}

fn decode_body(r: &mut Reader<'_>, ty: u8, v: Version) -> Result<Message, Error> {
    use Message as M;
    Ok(match ty {
        ofpt::ERROR => {
            let code = ErrorCode { ty: r.u16("error type")?, code: r.u16("error code")? };
            let data = r.rest();
            // OpenFlow 1.3 carries bundle errors as ONF experimenter errors.
            match (v, code.ty, data.get(..4)) {
                (Version::V1_3, 0xffff, Some(exp))
                    if exp == ONF_EXPERIMENTER.to_be_bytes()
                        && (ONF_BUNDLE_ERROR..=ONF_BUNDLE_ERROR + 15).contains(&code.code) =>
                {
                    M::Error {
                        code: ErrorCode { ty: 17, code: code.code - ONF_BUNDLE_ERROR },
                        data: data[4..].to_vec(),
                    }
                }
                _ => M::Error { code, data: data.to_vec() },
            }
        }
        ofpt::ECHO_REQUEST => M::EchoRequest(r.rest().to_vec()),
        ofpt::ECHO_REPLY => M::EchoReply(r.rest().to_vec()),
        ofpt::EXPERIMENTER => {
            let exp = r.u32("experimenter")?;
            let exp_type = r.u32("exp_type")?;
            match (exp, exp_type, v) {
                (ONF_EXPERIMENTER, ONFT_BUNDLE_CONTROL, Version::V1_3) => M::BundleControl(decode_bundle_control(r)?),
                (ONF_EXPERIMENTER, ONFT_BUNDLE_ADD_MESSAGE, Version::V1_3) => M::BundleAdd(decode_bundle_add(r)?),
                (ONF_EXPERIMENTER, t, _) => {
                    return Err(Error::new(ErrorCode::BAD_EXP_TYPE, format!("ONF experimenter message type {t}")))
                }
                (NX_VENDOR, nxt::SET_PACKET_IN_FORMAT, _) => M::SetPacketInFormat(r.u32("packet-in format")?),
                (NX_VENDOR, nxt::SET_CONTROLLER_ID, _) => {
                    r.skip(6, "padding")?;
                    M::SetControllerId(r.u16("controller_id")?)
                }
                (NX_VENDOR, nxt::PACKET_IN2, _) => M::PacketIn2(decode_packet_in2(r)?),
                (NX_VENDOR, t, _) => {
                    return Err(Error::new(
                        ErrorCode::BAD_EXP_TYPE,
                        format!("Nicira message subtype {t} is not one kairo reads"),
                    ))
                }
                (e, _, _) => {
                    return Err(Error::new(ErrorCode::BAD_EXPERIMENTER, format!("experimenter message of {e:#010x}")))
                }
            }
        }
        ofpt::BUNDLE_CONTROL if v >= Version::V1_5 => M::BundleControl(decode_bundle_control(r)?),
        ofpt::BUNDLE_ADD_MESSAGE if v >= Version::V1_5 => M::BundleAdd(decode_bundle_add(r)?),
        ofpt::FEATURES_REQUEST => M::FeaturesRequest,
        ofpt::FEATURES_REPLY => {
            let datapath_id = r.u64("datapath_id")?;
            let n_buffers = r.u32("n_buffers")?;
            let n_tables = r.u8("n_tables")?;
            let auxiliary_id = r.u8("auxiliary_id")?;
            r.skip(2, "pad")?;
            let capabilities = r.u32("capabilities")?;
            r.skip(4, "reserved")?;
            M::FeaturesReply(Features { datapath_id, n_buffers, n_tables, auxiliary_id, capabilities })
        }
        ofpt::GET_CONFIG_REQUEST => M::GetConfigRequest,
        ofpt::GET_CONFIG_REPLY | ofpt::SET_CONFIG => {
            let c = SwitchConfig { flags: r.u16("flags")?, miss_send_len: r.u16("miss_send_len")? };
            if ty == ofpt::SET_CONFIG {
                M::SetConfig(c)
            } else {
                M::GetConfigReply(c)
            }
        }
        ofpt::PACKET_IN => {
            let buffer_id = r.u32("buffer_id")?;
            let total_len = r.u16("total_len")?;
            let reason = r.u8("reason")?;
            let table_id = r.u8("table_id")?;
            let cookie = r.u64("cookie")?;
            let fields = decode_match(r)?;
            r.skip(2, "pad")?;
            M::PacketIn(PacketIn { buffer_id, total_len, reason, table_id, cookie, fields, data: r.rest().to_vec() })
        }
        ofpt::FLOW_REMOVED if v < Version::V1_5 => {
            let cookie = r.u64("cookie")?;
            let priority = r.u16("priority")?;
            let reason = r.u8("reason")?;
            let table_id = r.u8("table_id")?;
            let duration_sec = r.u32("duration_sec")?;
            let duration_nsec = r.u32("duration_nsec")?;
            let idle_timeout = r.u16("idle_timeout")?;
            let hard_timeout = r.u16("hard_timeout")?;
            let packet_count = r.u64("packet_count")?;
            let byte_count = r.u64("byte_count")?;
            let fields = decode_match(r)?;
            M::FlowRemoved(FlowRemoved {
                cookie,
                priority,
                reason,
                table_id,
                duration_sec,
                duration_nsec,
                idle_timeout,
                hard_timeout,
                packet_count,
                byte_count,
                fields,
            })
        }
        ofpt::PORT_STATUS => {
            let reason = r.u8("reason")?;
            r.skip(7, "pad")?;
            M::PortStatus { reason, desc: decode_port(r, v)? }
        }
        ofpt::PACKET_OUT => {
            let buffer_id = r.u32("buffer_id")?;
            let (in_port, actions_len) = if v < Version::V1_5 {
                let p = r.u32("in_port")?;
                let l = r.u16("actions_len")?;
                r.skip(6, "pad")?;
                (p, l)
            } else {
                let l = r.u16("actions_len")?;
                r.skip(2, "pad")?;
                let at = r.offset();
                let fields = decode_match(r)?;
                let p = match fields.as_slice() {
                    [] => crate::port::OFPP_CONTROLLER,
                    [o] if o.id == crate::oxm::OxmId::basic(0) && o.mask.is_none() => o.value as u32,
                    _ => {
                        return Err(Error::new(
                            ErrorCode::BAD_FIELD,
                            format!("packet-out match at offset {at} may hold only in_port"),
                        ))
                    }
                };
                (p, l)
            };
            let mut a = r.sub(usize::from(actions_len), "packet-out actions")?;
            let actions = decode_actions(&mut a, v)?;
            M::PacketOut(PacketOut { buffer_id, in_port, actions, data: r.rest().to_vec() })
        }
        ofpt::FLOW_MOD => {
            let cookie = r.u64("cookie")?;
            let cookie_mask = r.u64("cookie_mask")?;
            let table_id = r.u8("table_id")?;
            let command = r.u8("command")?;
            let idle_timeout = r.u16("idle_timeout")?;
            let hard_timeout = r.u16("hard_timeout")?;
            let priority = r.u16("priority")?;
            let buffer_id = r.u32("buffer_id")?;
            let out_port = r.u32("out_port")?;
            let out_group = r.u32("out_group")?;
            let flags = r.u16("flags")?;
            let importance = r.u16("importance")?;
            let importance = if v >= Version::V1_5 { importance } else { 0 };
            let fields = decode_match(r)?;
            let instructions = decode_instructions(r, v)?;
            M::FlowMod(FlowMod {
                cookie,
                cookie_mask,
                table_id,
                command,
                idle_timeout,
                hard_timeout,
                priority,
                buffer_id,
                out_port,
                out_group,
                flags,
                importance,
                fields,
                instructions,
            })
        }
        ofpt::GROUP_MOD => {
            let command = r.u16("command")?;
            let gty = r.u8("group type")?;
            r.skip(1, "pad")?;
            let group_id = r.u32("group_id")?;
            if v < Version::V1_5 {
                let buckets = decode_buckets(r, v)?;
                M::GroupMod(GroupMod { command, ty: gty, group_id, command_bucket_id: OFPG_BUCKET_ALL, buckets })
            } else {
                let blen = usize::from(r.u16("bucket_array_len")?);
                r.skip(2, "pad")?;
                let command_bucket_id = r.u32("command_bucket_id")?;
                let mut b = r.sub(blen, "buckets")?;
                let buckets = decode_buckets(&mut b, v)?;
                refuse_group_properties(r)?;
                M::GroupMod(GroupMod { command, ty: gty, group_id, command_bucket_id, buckets })
            }
        }
        ofpt::PORT_MOD => {
            let port_no = r.u32("port_no")?;
            r.skip(4, "pad")?;
            let hw_addr = mac(r, "hw_addr")?;
            r.skip(2, "pad")?;
            let config = r.u32("config")?;
            let mask = r.u32("mask")?;
            let mut advertise = 0;
            if v < Version::V1_5 {
                advertise = r.u32("advertise")?;
                r.skip(4, "pad")?;
            } else {
                // 1.5: properties; the Ethernet one carries `advertise`.
                while !r.is_empty() {
                    let at = r.offset();
                    let ty = r.u16("property type")?;
                    let len = usize::from(r.u16("property length")?);
                    if ty != 0 || len != 8 {
                        return Err(Error::new(
                            ErrorCode::BAD_PROPERTY_TYPE,
                            format!("port-mod property of type {ty}, length {len} at offset {at}"),
                        ));
                    }
                    advertise = r.u32("advertise")?;
                }
            }
            M::PortMod(PortMod { port_no, hw_addr, config, mask, advertise })
        }
        ofpt::MULTIPART_REQUEST => {
            let (flags, body) = MpRequest::decode(r, v)?;
            M::MultipartRequest { flags, body }
        }
        ofpt::MULTIPART_REPLY => {
            let (flags, body) = MpReply::decode(r, v)?;
            M::MultipartReply { flags, body }
        }
        ofpt::BARRIER_REQUEST => M::BarrierRequest,
        ofpt::BARRIER_REPLY => M::BarrierReply,
        ofpt::ROLE_REQUEST | ofpt::ROLE_REPLY => {
            let role = r.u32("role")?;
            r.skip(4, "pad")?;
            let role = Role { role, generation_id: r.u64("generation_id")? };
            if ty == ofpt::ROLE_REQUEST {
                M::RoleRequest(role)
            } else {
                M::RoleReply(role)
            }
        }
        ofpt::GET_ASYNC_REQUEST => M::GetAsyncRequest,
        ofpt::GET_ASYNC_REPLY if v < Version::V1_5 => M::GetAsyncReply(decode_async(r)?),
        ofpt::SET_ASYNC if v < Version::V1_5 => M::SetAsync(decode_async(r)?),
        ofpt::FLOW_REMOVED => {
            let cookie = r.u64("cookie")?;
            let priority = r.u16("priority")?;
            let reason = r.u8("reason")?;
            let table_id = r.u8("table_id")?;
            let idle_timeout = r.u16("idle_timeout")?;
            let hard_timeout = r.u16("hard_timeout")?;
            let fields = decode_match(r)?;
            let s = crate::multipart::decode_oxs(r)?;
            let (duration_sec, duration_nsec) = s.duration.unwrap_or((0, 0));
            M::FlowRemoved(FlowRemoved {
                cookie,
                priority,
                reason,
                table_id,
                duration_sec,
                duration_nsec,
                idle_timeout,
                hard_timeout,
                packet_count: s.packet_count.unwrap_or(0),
                byte_count: s.byte_count.unwrap_or(0),
                fields,
            })
        }
        ofpt::METER_MOD => M::MeterMod(crate::meter::MeterMod::decode(r)?),
        ofpt::GET_ASYNC_REPLY | ofpt::SET_ASYNC => {
            return Err(unsupported_in(v, "asynchronous configuration", ErrorCode::BAD_TYPE))
        }
        ofpt::TABLE_MOD => return Err(unsupported_in(v, "TABLE_MOD", ErrorCode::BAD_TYPE)),
        ofpt::BUNDLE_CONTROL | ofpt::BUNDLE_ADD_MESSAGE => {
            return Err(unsupported_in(v, "bundles", ErrorCode::BAD_TYPE))
        }
        other => {
            return Err(Error::new(ErrorCode::BAD_TYPE, format!("message type {other} is not an OpenFlow {v} message")))
        }
    })
}

/// Encodes a message. Refuses one over 64 KiB (a multipart reply is split by
/// its builder long before that).
pub fn encode(v: Version, xid: u32, m: &Message) -> Result<Vec<u8>, Error> {
    let mut w = Writer::default();
    w.u8(v.wire());
    let onf = v < Version::V1_5 && matches!(m, Message::BundleControl(_) | Message::BundleAdd(_));
    w.u8(if onf { ofpt::EXPERIMENTER } else { m.ty() });
    w.u16(0);
    w.u32(xid);
    encode_body(&mut w, v, m);
    let len = w.len();
    if len > MAX_LEN {
        return Err(Error::new(
            ErrorCode::BAD_LEN,
            format!("a message of type {} would be {len} bytes, over OpenFlow's 65535", m.ty()),
        ));
    }
    w.patch_u16(2, len as u16);
    Ok(w.buf)
}

fn encode_body(w: &mut Writer, v: Version, m: &Message) {
    use Message as M;
    match m {
        M::Hello { bitmap } => {
            if let Some(b) = bitmap {
                w.u16(1);
                w.u16(8);
                w.u32(*b);
            }
        }
        M::Error { code, data } => {
            if v < Version::V1_5 && code.ty == 17 && code.code <= 15 {
                w.u16(0xffff);
                w.u16(ONF_BUNDLE_ERROR + code.code);
                w.u32(ONF_EXPERIMENTER);
            } else {
                w.u16(code.ty);
                w.u16(code.code);
            }
            w.bytes(data);
        }
        M::EchoRequest(d) | M::EchoReply(d) => w.bytes(d),
        M::FeaturesRequest | M::GetConfigRequest | M::BarrierRequest | M::BarrierReply | M::GetAsyncRequest => {}
        M::FeaturesReply(f) => {
            w.u64(f.datapath_id);
            w.u32(f.n_buffers);
            w.u8(f.n_tables);
            w.u8(f.auxiliary_id);
            w.zeros(2);
            w.u32(f.capabilities);
            w.zeros(4);
        }
        M::GetConfigReply(c) | M::SetConfig(c) => {
            w.u16(c.flags);
            w.u16(c.miss_send_len);
        }
        M::PacketIn(p) => {
            w.u32(p.buffer_id);
            w.u16(p.total_len);
            w.u8(p.reason);
            w.u8(p.table_id);
            w.u64(p.cookie);
            encode_match(w, &p.fields);
            w.zeros(2);
            w.bytes(&p.data);
        }
        M::FlowRemoved(f) if v >= Version::V1_5 => {
            w.u64(f.cookie);
            w.u16(f.priority);
            w.u8(f.reason);
            w.u8(f.table_id);
            w.u16(f.idle_timeout);
            w.u16(f.hard_timeout);
            encode_match(w, &f.fields);
            let s = crate::multipart::Oxs {
                duration: Some((f.duration_sec, f.duration_nsec)),
                flow_count: None,
                packet_count: Some(f.packet_count),
                byte_count: Some(f.byte_count),
            };
            crate::multipart::encode_oxs(w, &s);
        }
        M::FlowRemoved(f) => {
            w.u64(f.cookie);
            w.u16(f.priority);
            w.u8(f.reason);
            w.u8(f.table_id);
            w.u32(f.duration_sec);
            w.u32(f.duration_nsec);
            w.u16(f.idle_timeout);
            w.u16(f.hard_timeout);
            w.u64(f.packet_count);
            w.u64(f.byte_count);
            encode_match(w, &f.fields);
        }
        M::PortStatus { reason, desc } => {
            w.u8(*reason);
            w.zeros(7);
            encode_port(w, desc, v);
        }
        M::PacketOut(p) => {
            w.u32(p.buffer_id);
            let at;
            if v < Version::V1_5 {
                w.u32(p.in_port);
                at = w.placeholder_u16();
                w.zeros(6);
            } else {
                at = w.placeholder_u16();
                w.zeros(2);
                encode_match(w, &[Oxm::exact(crate::oxm::OxmId::basic(0), u128::from(p.in_port))]);
            }
            let start = w.len();
            encode_actions(w, &p.actions);
            w.patch_len(at, start);
            w.bytes(&p.data);
        }
        M::FlowMod(f) => {
            w.u64(f.cookie);
            w.u64(f.cookie_mask);
            w.u8(f.table_id);
            w.u8(f.command);
            w.u16(f.idle_timeout);
            w.u16(f.hard_timeout);
            w.u16(f.priority);
            w.u32(f.buffer_id);
            w.u32(f.out_port);
            w.u32(f.out_group);
            w.u16(f.flags);
            w.u16(if v >= Version::V1_5 { f.importance } else { 0 });
            encode_match(w, &f.fields);
            encode_instructions(w, &f.instructions);
        }
        M::GroupMod(g) => {
            w.u16(g.command);
            w.u8(g.ty);
            w.u8(0);
            w.u32(g.group_id);
            if v < Version::V1_5 {
                encode_buckets(w, &g.buckets, v);
            } else {
                let at = w.placeholder_u16();
                w.zeros(2);
                w.u32(g.command_bucket_id);
                let start = w.len();
                encode_buckets(w, &g.buckets, v);
                w.patch_len(at, start);
            }
        }
        M::MeterMod(m) => m.encode(w),
        M::PortMod(p) => {
            w.u32(p.port_no);
            w.zeros(4);
            w.bytes(&p.hw_addr);
            w.zeros(2);
            w.u32(p.config);
            w.u32(p.mask);
            if v < Version::V1_5 {
                w.u32(p.advertise);
                w.zeros(4);
            } else {
                w.u16(0);
                w.u16(8);
                w.u32(p.advertise);
            }
        }
        M::MultipartRequest { flags, body } => body.encode(w, v, *flags),
        M::MultipartReply { flags, body } => body.encode(w, v, *flags),
        M::RoleRequest(r) | M::RoleReply(r) => {
            w.u32(r.role);
            w.zeros(4);
            w.u64(r.generation_id);
        }
        M::GetAsyncReply(a) | M::SetAsync(a) => {
            for x in a.packet_in.iter().chain(&a.port_status).chain(&a.flow_removed) {
                w.u32(*x);
            }
        }
        M::BundleControl(c) => {
            if v < Version::V1_5 {
                w.u32(ONF_EXPERIMENTER);
                w.u32(ONFT_BUNDLE_CONTROL);
            }
            w.u32(c.bundle_id);
            w.u16(c.ty);
            w.u16(c.flags);
        }
        M::BundleAdd(a) => {
            if v < Version::V1_5 {
                w.u32(ONF_EXPERIMENTER);
                w.u32(ONFT_BUNDLE_ADD_MESSAGE);
            }
            w.u32(a.bundle_id);
            w.zeros(2);
            w.u16(a.flags);
            w.bytes(&a.message);
        }
        M::SetPacketInFormat(f) => {
            w.u32(NX_VENDOR);
            w.u32(nxt::SET_PACKET_IN_FORMAT);
            w.u32(*f);
        }
        M::SetControllerId(id) => {
            w.u32(NX_VENDOR);
            w.u32(nxt::SET_CONTROLLER_ID);
            w.zeros(6);
            w.u16(*id);
        }
        M::PacketIn2(p) => {
            w.u32(NX_VENDOR);
            w.u32(nxt::PACKET_IN2);
            encode_packet_in2(w, p);
        }
    }
}

/// One property (type, length, body), padded to 8 bytes.
fn property(w: &mut Writer, ty: u16, body: impl FnOnce(&mut Writer)) {
    let start = w.len();
    w.u16(ty);
    let at = w.placeholder_u16();
    body(w);
    w.patch_len(at, start);
    w.pad8_from(start);
}

/// NXT_PACKET_IN2's properties, in the order Open vSwitch writes them.
fn encode_packet_in2(w: &mut Writer, p: &PacketIn2) {
    property(w, nxpint::PACKET, |w| w.bytes(&p.data));
    if let Some(n) = p.full_len {
        property(w, nxpint::FULL_LEN, |w| w.u32(n));
    }
    if let Some(b) = p.buffer_id {
        property(w, nxpint::BUFFER_ID, |w| w.u32(b));
    }
    property(w, nxpint::TABLE_ID, |w| w.u8(p.table_id));
    if let Some(c) = p.cookie {
        // A 64-bit property's value is 8-aligned: 4 bytes of padding first.
        property(w, nxpint::COOKIE, |w| {
            w.zeros(4);
            w.u64(c)
        });
    }
    property(w, nxpint::REASON, |w| w.u8(p.reason));
    property(w, nxpint::METADATA, |w| {
        for f in &p.metadata {
            f.encode(w);
        }
    });
    if let Some(u) = &p.userdata {
        property(w, nxpint::USERDATA, |w| w.bytes(u));
    }
}

fn decode_packet_in2(r: &mut Reader<'_>) -> Result<PacketIn2, Error> {
    let mut p = PacketIn2 {
        data: Vec::new(),
        full_len: None,
        buffer_id: None,
        table_id: 0,
        cookie: None,
        reason: 0,
        metadata: Vec::new(),
        userdata: None,
    };
    let mut seen_packet = false;
    while !r.is_empty() {
        let at = r.offset();
        let ty = r.u16("property type")?;
        let len = usize::from(r.u16("property length")?);
        if len < 4 {
            return Err(Error::new(ErrorCode::BAD_LEN, format!("property {ty} at offset {at}: length {len} < 4")));
        }
        let mut b = r.sub(len - 4, "property body")?;
        r.skip(crate::buf::pad8(len) - len, "property padding")?;
        let exact = |b: &Reader<'_>, n: usize| {
            if b.remaining() == n {
                Ok(())
            } else {
                Err(Error::new(ErrorCode::BAD_LEN, format!("property {ty} at offset {at}: length {len}")))
            }
        };
        match ty {
            nxpint::PACKET => {
                p.data = b.rest().to_vec();
                seen_packet = true;
            }
            nxpint::FULL_LEN => {
                exact(&b, 4)?;
                p.full_len = Some(b.u32("full_len")?);
            }
            nxpint::BUFFER_ID => {
                exact(&b, 4)?;
                p.buffer_id = Some(b.u32("buffer_id")?);
            }
            nxpint::TABLE_ID => {
                exact(&b, 1)?;
                p.table_id = b.u8("table_id")?;
            }
            nxpint::COOKIE => {
                exact(&b, 12)?;
                b.skip(4, "cookie padding")?;
                p.cookie = Some(b.u64("cookie")?);
            }
            nxpint::REASON => {
                exact(&b, 1)?;
                p.reason = b.u8("reason")?;
            }
            nxpint::METADATA => {
                while !b.is_empty() {
                    p.metadata.push(Oxm::decode(&mut b)?);
                }
            }
            nxpint::USERDATA => p.userdata = Some(b.rest().to_vec()),
            _ => {
                return Err(Error::new(
                    ErrorCode::BAD_EXP_TYPE,
                    format!("NXT_PACKET_IN2 property {ty} at offset {at} is not one kairo reads"),
                ))
            }
        }
    }
    if !seen_packet {
        return Err(Error::new(ErrorCode::BAD_LEN, "NXT_PACKET_IN2 without its packet property".to_string()));
    }
    Ok(p)
}
