//! Multipart (statistics) requests and replies: desc, flow (1.5 flow_desc),
//! aggregate, table, port stats, port desc, group, group desc, group features.
//!
//! Invariant: a reply body decodes to exactly the entries it holds, each
//! entry within its own stated length; a request type kairo does not serve
//! is refused as OFPBRC_BAD_MULTIPART, naming the type.

use crate::buf::{Reader, Writer};
use crate::error::{Error, ErrorCode};
use crate::instruction::{decode_instructions, encode_instructions, Instruction};
use crate::message::{decode_buckets, decode_port, encode_buckets, encode_port, PortDesc, WireBucket};
use crate::oxm::{decode_match, encode_match, Oxm};
use crate::Version;

/// OFPMP_* types.
pub mod ofpmp {
    pub const DESC: u16 = 0;
    pub const FLOW: u16 = 1;
    pub const AGGREGATE: u16 = 2;
    pub const TABLE: u16 = 3;
    pub const PORT_STATS: u16 = 4;
    pub const QUEUE: u16 = 5;
    pub const GROUP: u16 = 6;
    pub const GROUP_DESC: u16 = 7;
    pub const GROUP_FEATURES: u16 = 8;
    pub const METER: u16 = 9;
    pub const METER_CONFIG: u16 = 10;
    pub const METER_FEATURES: u16 = 11;
    pub const TABLE_FEATURES: u16 = 12;
    pub const PORT_DESC: u16 = 13;
}

/// OFPMPF_REQ_MORE / OFPMPF_REPLY_MORE.
pub const MORE: u16 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowStatsRequest {
    pub table_id: u8,
    pub out_port: u32,
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    pub fields: Vec<Oxm>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MpRequest {
    Desc,
    Flow(FlowStatsRequest),
    Aggregate(FlowStatsRequest),
    Table,
    PortStats(u32),
    /// The port to describe (1.5; 1.3 always asks for all, OFPP_ANY).
    PortDesc(u32),
    Group(u32),
    /// The group to describe (1.5; 1.3 always asks for all, OFPG_ALL).
    GroupDesc(u32),
    GroupFeatures,
    /// Reading the tables' features (a request that sets them is refused).
    TableFeatures,
    /// Statistics of one meter or all (OFPM_ALL).
    Meter(u32),
    MeterConfig(u32),
    MeterFeatures,
}

/// One table's features (properties kept as their bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFeatures {
    pub table_id: u8,
    pub name: String,
    pub metadata_match: u64,
    pub metadata_write: u64,
    pub config: u32,
    pub max_entries: u32,
    pub properties: Vec<u8>,
}

impl TableFeatures {
    /// The eight properties OpenFlow requires of a table (instructions, next
    /// tables, write and apply actions, match, wildcards, write and apply
    /// set-field), as bytes. `actions` are OFPAT_* types (experimenter ones
    /// are not listed); fields are OXM ids.
    pub fn properties(instructions: &[u16], next: &[u8], actions: &[u16], fields: &[crate::oxm::OxmId]) -> Vec<u8> {
        let mut w = Writer::default();
        let prop = |w: &mut Writer, ty: u16, body: &dyn Fn(&mut Writer)| {
            let start = w.len();
            w.u16(ty);
            let at = w.placeholder_u16();
            body(w);
            w.patch_len(at, start);
            w.pad8_from(start);
        };
        let ids = |w: &mut Writer, xs: &[u16]| {
            for x in xs {
                w.u16(*x);
                w.u16(4);
            }
        };
        let oxms = |w: &mut Writer| {
            for f in fields {
                w.u32(f.header(false, f.info().map_or(0, |i| i.bytes)));
            }
        };
        prop(&mut w, 0, &|w| ids(w, instructions));
        prop(&mut w, 2, &|w| w.bytes(next));
        prop(&mut w, 4, &|w| ids(w, actions));
        prop(&mut w, 6, &|w| ids(w, actions));
        prop(&mut w, 8, &oxms);
        prop(&mut w, 10, &oxms);
        prop(&mut w, 12, &oxms);
        prop(&mut w, 14, &oxms);
        w.buf
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    pub mfr: String,
    pub hw: String,
    pub sw: String,
    pub serial: String,
    pub dp: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowStats {
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    /// 1.5 only.
    pub importance: u16,
    pub cookie: u64,
    pub packet_count: u64,
    pub byte_count: u64,
    pub fields: Vec<Oxm>,
    pub instructions: Vec<Instruction>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub packet_count: u64,
    pub byte_count: u64,
    pub flow_count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableStats {
    pub table_id: u8,
    pub active_count: u32,
    pub lookup_count: u64,
    pub matched_count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortStats {
    pub port_no: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_frame_err: u64,
    pub rx_over_err: u64,
    pub rx_crc_err: u64,
    pub collisions: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStats {
    pub group_id: u32,
    pub ref_count: u32,
    pub packet_count: u64,
    pub byte_count: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    /// (packets, bytes) per bucket.
    pub buckets: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDesc {
    pub ty: u8,
    pub group_id: u32,
    pub buckets: Vec<WireBucket>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupFeatures {
    pub types: u32,
    pub capabilities: u32,
    pub max_groups: [u32; 4],
    pub actions: [u32; 4],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MpReply {
    Desc(Desc),
    Flow(Vec<FlowStats>),
    Aggregate(Aggregate),
    Table(Vec<TableStats>),
    PortStats(Vec<PortStats>),
    PortDesc(Vec<PortDesc>),
    Group(Vec<GroupStats>),
    GroupDesc(Vec<GroupDesc>),
    GroupFeatures(GroupFeatures),
    TableFeatures(Vec<TableFeatures>),
    Meter(Vec<crate::meter::MeterStats>),
    MeterConfig(Vec<crate::meter::MeterConfig>),
    MeterFeatures(crate::meter::MeterFeatures),
}

fn bad_mp(ty: u16, v: Version) -> Error {
    Error::new(ErrorCode::BAD_MULTIPART, format!("multipart type {ty} is not served by kairo in OpenFlow {v}"))
}

fn decode_flow_request(r: &mut Reader<'_>) -> Result<FlowStatsRequest, Error> {
    let table_id = r.u8("table_id")?;
    r.skip(3, "pad")?;
    let out_port = r.u32("out_port")?;
    let out_group = r.u32("out_group")?;
    r.skip(4, "pad")?;
    let cookie = r.u64("cookie")?;
    let cookie_mask = r.u64("cookie_mask")?;
    Ok(FlowStatsRequest { table_id, out_port, out_group, cookie, cookie_mask, fields: decode_match(r)? })
}

fn encode_flow_request(w: &mut Writer, f: &FlowStatsRequest) {
    w.u8(f.table_id);
    w.zeros(3);
    w.u32(f.out_port);
    w.u32(f.out_group);
    w.zeros(4);
    w.u64(f.cookie);
    w.u64(f.cookie_mask);
    encode_match(w, &f.fields);
}

fn mp_header(r: &mut Reader<'_>) -> Result<(u16, u16), Error> {
    let ty = r.u16("multipart type")?;
    let flags = r.u16("multipart flags")?;
    r.skip(4, "pad")?;
    Ok((ty, flags))
}

fn write_mp_header(w: &mut Writer, ty: u16, flags: u16) {
    w.u16(ty);
    w.u16(flags);
    w.zeros(4);
}

impl MpRequest {
    pub fn ty(&self) -> u16 {
        match self {
            MpRequest::Desc => ofpmp::DESC,
            MpRequest::Flow(_) => ofpmp::FLOW,
            MpRequest::Aggregate(_) => ofpmp::AGGREGATE,
            MpRequest::Table => ofpmp::TABLE,
            MpRequest::PortStats(_) => ofpmp::PORT_STATS,
            MpRequest::PortDesc(_) => ofpmp::PORT_DESC,
            MpRequest::Group(_) => ofpmp::GROUP,
            MpRequest::GroupDesc(_) => ofpmp::GROUP_DESC,
            MpRequest::GroupFeatures => ofpmp::GROUP_FEATURES,
            MpRequest::TableFeatures => ofpmp::TABLE_FEATURES,
            MpRequest::Meter(_) => ofpmp::METER,
            MpRequest::MeterConfig(_) => ofpmp::METER_CONFIG,
            MpRequest::MeterFeatures => ofpmp::METER_FEATURES,
        }
    }

    pub fn decode(r: &mut Reader<'_>, v: Version) -> Result<(u16, MpRequest), Error> {
        let (ty, flags) = mp_header(r)?;
        let body = match ty {
            ofpmp::DESC => MpRequest::Desc,
            ofpmp::FLOW => MpRequest::Flow(decode_flow_request(r)?),
            ofpmp::AGGREGATE => MpRequest::Aggregate(decode_flow_request(r)?),
            ofpmp::TABLE => MpRequest::Table,
            ofpmp::PORT_STATS => {
                let p = r.u32("port_no")?;
                r.skip(4, "pad")?;
                MpRequest::PortStats(p)
            }
            ofpmp::PORT_DESC if v >= Version::V1_5 => {
                let p = r.u32("port_no")?;
                r.skip(4, "pad")?;
                MpRequest::PortDesc(p)
            }
            ofpmp::PORT_DESC => MpRequest::PortDesc(crate::port::OFPP_ANY),
            ofpmp::GROUP => {
                let g = r.u32("group_id")?;
                r.skip(4, "pad")?;
                MpRequest::Group(g)
            }
            ofpmp::GROUP_DESC if v >= Version::V1_5 => {
                let g = r.u32("group_id")?;
                r.skip(4, "pad")?;
                MpRequest::GroupDesc(g)
            }
            ofpmp::GROUP_DESC => MpRequest::GroupDesc(crate::message::OFPG_ALL),
            ofpmp::GROUP_FEATURES => MpRequest::GroupFeatures,
            ofpmp::METER => MpRequest::Meter(crate::meter::decode_meter_request(r)?),
            ofpmp::METER_CONFIG => MpRequest::MeterConfig(crate::meter::decode_meter_request(r)?),
            ofpmp::METER_FEATURES => MpRequest::MeterFeatures,
            ofpmp::TABLE_FEATURES if r.is_empty() => MpRequest::TableFeatures,
            ofpmp::TABLE_FEATURES => {
                return Err(Error::new(
                    ErrorCode { ty: 13, code: 5 },
                    "kairo's tables are not reconfigurable: TABLE_FEATURES may only read",
                ))
            }
            other => return Err(bad_mp(other, v)),
        };
        Ok((flags, body))
    }

    pub fn encode(&self, w: &mut Writer, v: Version, flags: u16) {
        write_mp_header(w, self.ty(), flags);
        match self {
            MpRequest::Desc
            | MpRequest::Table
            | MpRequest::GroupFeatures
            | MpRequest::TableFeatures
            | MpRequest::MeterFeatures => {}
            MpRequest::Meter(m) | MpRequest::MeterConfig(m) => {
                w.u32(*m);
                w.zeros(4);
            }
            MpRequest::Flow(f) | MpRequest::Aggregate(f) => encode_flow_request(w, f),
            MpRequest::PortStats(p) | MpRequest::Group(p) => {
                w.u32(*p);
                w.zeros(4);
            }
            MpRequest::PortDesc(x) | MpRequest::GroupDesc(x) => {
                if v >= Version::V1_5 {
                    w.u32(*x);
                    w.zeros(4);
                }
            }
        }
    }
}

/// OXS (OpenFlow 1.5 statistics) fields kairo reads and writes.
mod oxs {
    pub const CLASS: u32 = 0x8002;
    pub const DURATION: u8 = 0;
    pub const FLOW_COUNT: u8 = 3;
    pub const PACKET_COUNT: u8 = 4;
    pub const BYTE_COUNT: u8 = 5;

    pub fn header(field: u8, len: u8) -> u32 {
        (CLASS << 16) | (u32::from(field) << 9) | u32::from(len)
    }
}

/// Counters carried in an OpenFlow 1.5 `ofp_stats`.
#[derive(Default)]
pub(crate) struct Oxs {
    pub duration: Option<(u32, u32)>,
    pub flow_count: Option<u32>,
    pub packet_count: Option<u64>,
    pub byte_count: Option<u64>,
}

pub(crate) fn decode_oxs(r: &mut Reader<'_>) -> Result<Oxs, Error> {
    let at = r.offset();
    r.skip(2, "stats reserved")?;
    let len = usize::from(r.u16("stats length")?);
    if len < 4 {
        return Err(Error::new(ErrorCode::BAD_LEN, format!("stats at offset {at} has length {len}")));
    }
    let mut b = r.sub(len - 4, "stats fields")?;
    r.skip(crate::buf::pad8(len) - len, "stats padding")?;
    let mut s = Oxs::default();
    while !b.is_empty() {
        let fat = b.offset();
        let h = b.u32("OXS header")?;
        let flen = (h & 0xff) as usize;
        let mut f = b.sub(flen, "OXS value")?;
        if h >> 16 != oxs::CLASS {
            continue;
        }
        let want = |n: usize| {
            if flen == n {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorCode::BAD_LEN,
                    format!("OXS field at offset {fat} has length {flen}, expected {n}"),
                ))
            }
        };
        match ((h >> 9) & 0x7f) as u8 {
            oxs::DURATION => {
                want(8)?;
                s.duration = Some((f.u32("duration sec")?, f.u32("duration nsec")?));
            }
            oxs::FLOW_COUNT => {
                want(4)?;
                s.flow_count = Some(f.u32("flow_count")?);
            }
            oxs::PACKET_COUNT => {
                want(8)?;
                s.packet_count = Some(f.u64("packet_count")?);
            }
            oxs::BYTE_COUNT => {
                want(8)?;
                s.byte_count = Some(f.u64("byte_count")?);
            }
            _ => {}
        }
    }
    Ok(s)
}

pub(crate) fn encode_oxs(w: &mut Writer, s: &Oxs) {
    let start = w.len();
    w.u16(0);
    let at = w.placeholder_u16();
    if let Some((sec, nsec)) = s.duration {
        w.u32(oxs::header(oxs::DURATION, 8));
        w.u32(sec);
        w.u32(nsec);
    }
    if let Some(c) = s.flow_count {
        w.u32(oxs::header(oxs::FLOW_COUNT, 4));
        w.u32(c);
    }
    if let Some(c) = s.packet_count {
        w.u32(oxs::header(oxs::PACKET_COUNT, 8));
        w.u64(c);
    }
    if let Some(c) = s.byte_count {
        w.u32(oxs::header(oxs::BYTE_COUNT, 8));
        w.u64(c);
    }
    w.patch_len(at, start);
    w.pad8_from(start);
}

fn entry<'a>(r: &mut Reader<'a>, what: &'static str, min: usize) -> Result<Reader<'a>, Error> {
    let at = r.offset();
    let len = usize::from(r.peek_u16(what)?);
    if len < min || len % 8 != 0 {
        return Err(Error::new(ErrorCode::BAD_LEN, format!("{what} at offset {at} has length {len}")));
    }
    r.sub(len, what)
}

fn decode_flow_stats(r: &mut Reader<'_>, v: Version) -> Result<FlowStats, Error> {
    if v < Version::V1_5 {
        let mut e = entry(r, "flow stats", 56)?;
        e.skip(2, "length")?;
        let table_id = e.u8("table_id")?;
        e.skip(1, "pad")?;
        let duration_sec = e.u32("duration_sec")?;
        let duration_nsec = e.u32("duration_nsec")?;
        let priority = e.u16("priority")?;
        let idle_timeout = e.u16("idle_timeout")?;
        let hard_timeout = e.u16("hard_timeout")?;
        let flags = e.u16("flags")?;
        e.skip(4, "pad")?;
        let cookie = e.u64("cookie")?;
        let packet_count = e.u64("packet_count")?;
        let byte_count = e.u64("byte_count")?;
        let fields = decode_match(&mut e)?;
        let instructions = decode_instructions(&mut e, v)?;
        Ok(FlowStats {
            table_id,
            duration_sec,
            duration_nsec,
            priority,
            idle_timeout,
            hard_timeout,
            flags,
            importance: 0,
            cookie,
            packet_count,
            byte_count,
            fields,
            instructions,
        })
    } else {
        let mut e = entry(r, "flow desc", 40)?;
        e.skip(4, "length and pad")?;
        let table_id = e.u8("table_id")?;
        e.skip(1, "pad")?;
        let priority = e.u16("priority")?;
        let idle_timeout = e.u16("idle_timeout")?;
        let hard_timeout = e.u16("hard_timeout")?;
        let flags = e.u16("flags")?;
        let importance = e.u16("importance")?;
        let cookie = e.u64("cookie")?;
        let fields = decode_match(&mut e)?;
        let s = decode_oxs(&mut e)?;
        let instructions = decode_instructions(&mut e, v)?;
        let (duration_sec, duration_nsec) = s.duration.unwrap_or((0, 0));
        Ok(FlowStats {
            table_id,
            duration_sec,
            duration_nsec,
            priority,
            idle_timeout,
            hard_timeout,
            flags,
            importance,
            cookie,
            packet_count: s.packet_count.unwrap_or(0),
            byte_count: s.byte_count.unwrap_or(0),
            fields,
            instructions,
        })
    }
}

/// Appends one flow stats entry (the builder of a reply uses this to measure).
pub fn encode_flow_stats(w: &mut Writer, f: &FlowStats, v: Version) {
    let start = w.len();
    let at = w.placeholder_u16();
    if v < Version::V1_5 {
        w.u8(f.table_id);
        w.u8(0);
        w.u32(f.duration_sec);
        w.u32(f.duration_nsec);
        w.u16(f.priority);
        w.u16(f.idle_timeout);
        w.u16(f.hard_timeout);
        w.u16(f.flags);
        w.zeros(4);
        w.u64(f.cookie);
        w.u64(f.packet_count);
        w.u64(f.byte_count);
        encode_match(w, &f.fields);
    } else {
        w.zeros(2);
        w.u8(f.table_id);
        w.u8(0);
        w.u16(f.priority);
        w.u16(f.idle_timeout);
        w.u16(f.hard_timeout);
        w.u16(f.flags);
        w.u16(f.importance);
        w.u64(f.cookie);
        encode_match(w, &f.fields);
        let s = Oxs {
            duration: Some((f.duration_sec, f.duration_nsec)),
            flow_count: None,
            packet_count: Some(f.packet_count),
            byte_count: Some(f.byte_count),
        };
        encode_oxs(w, &s);
    }
    encode_instructions(w, &f.instructions);
    w.patch_len(at, start);
}

fn decode_port_stats(r: &mut Reader<'_>, v: Version) -> Result<PortStats, Error> {
    let mut s = PortStats::default();
    if v < Version::V1_5 {
        let mut e = r.sub(112, "port stats")?;
        s.port_no = e.u32("port_no")?;
        e.skip(4, "pad")?;
        for x in [
            &mut s.rx_packets,
            &mut s.tx_packets,
            &mut s.rx_bytes,
            &mut s.tx_bytes,
            &mut s.rx_dropped,
            &mut s.tx_dropped,
            &mut s.rx_errors,
            &mut s.tx_errors,
            &mut s.rx_frame_err,
            &mut s.rx_over_err,
            &mut s.rx_crc_err,
            &mut s.collisions,
        ] {
            *x = e.u64("counter")?;
        }
        s.duration_sec = e.u32("duration_sec")?;
        s.duration_nsec = e.u32("duration_nsec")?;
    } else {
        let at = r.offset();
        s.port_no = r.u32("port_no")?;
        let len = usize::from(r.u16("length")?);
        if len < 80 {
            return Err(Error::new(ErrorCode::BAD_LEN, format!("port stats at offset {at} has length {len}")));
        }
        let mut e = r.sub(len - 6, "port stats")?;
        e.skip(2, "pad")?;
        s.duration_sec = e.u32("duration_sec")?;
        s.duration_nsec = e.u32("duration_nsec")?;
        for x in [
            &mut s.rx_packets,
            &mut s.tx_packets,
            &mut s.rx_bytes,
            &mut s.tx_bytes,
            &mut s.rx_dropped,
            &mut s.tx_dropped,
            &mut s.rx_errors,
            &mut s.tx_errors,
        ] {
            *x = e.u64("counter")?;
        }
        while !e.is_empty() {
            let pat = e.offset();
            let ty = e.u16("property type")?;
            let plen = usize::from(e.u16("property length")?);
            if plen < 4 {
                return Err(Error::new(ErrorCode::BAD_LEN, format!("port stats property at offset {pat}")));
            }
            let mut p = e.sub(crate::buf::pad8(plen) - 4, "port stats property")?;
            if ty == 0 {
                p.skip(4, "pad")?;
                s.rx_frame_err = p.u64("rx_frame_err")?;
                s.rx_over_err = p.u64("rx_over_err")?;
                s.rx_crc_err = p.u64("rx_crc_err")?;
                s.collisions = p.u64("collisions")?;
            }
        }
    }
    Ok(s)
}

fn encode_port_stats(w: &mut Writer, s: &PortStats, v: Version) {
    if v < Version::V1_5 {
        w.u32(s.port_no);
        w.zeros(4);
        for x in [
            s.rx_packets,
            s.tx_packets,
            s.rx_bytes,
            s.tx_bytes,
            s.rx_dropped,
            s.tx_dropped,
            s.rx_errors,
            s.tx_errors,
            s.rx_frame_err,
            s.rx_over_err,
            s.rx_crc_err,
            s.collisions,
        ] {
            w.u64(x);
        }
        w.u32(s.duration_sec);
        w.u32(s.duration_nsec);
    } else {
        w.u32(s.port_no);
        w.u16(120);
        w.zeros(2);
        w.u32(s.duration_sec);
        w.u32(s.duration_nsec);
        for x in
            [s.rx_packets, s.tx_packets, s.rx_bytes, s.tx_bytes, s.rx_dropped, s.tx_dropped, s.rx_errors, s.tx_errors]
        {
            w.u64(x);
        }
        w.u16(0);
        w.u16(40);
        w.zeros(4);
        for x in [s.rx_frame_err, s.rx_over_err, s.rx_crc_err, s.collisions] {
            w.u64(x);
        }
    }
}

impl MpReply {
    pub fn ty(&self) -> u16 {
        match self {
            MpReply::Desc(_) => ofpmp::DESC,
            MpReply::Flow(_) => ofpmp::FLOW,
            MpReply::Aggregate(_) => ofpmp::AGGREGATE,
            MpReply::Table(_) => ofpmp::TABLE,
            MpReply::PortStats(_) => ofpmp::PORT_STATS,
            MpReply::PortDesc(_) => ofpmp::PORT_DESC,
            MpReply::Group(_) => ofpmp::GROUP,
            MpReply::GroupDesc(_) => ofpmp::GROUP_DESC,
            MpReply::GroupFeatures(_) => ofpmp::GROUP_FEATURES,
            MpReply::TableFeatures(_) => ofpmp::TABLE_FEATURES,
            MpReply::Meter(_) => ofpmp::METER,
            MpReply::MeterConfig(_) => ofpmp::METER_CONFIG,
            MpReply::MeterFeatures(_) => ofpmp::METER_FEATURES,
        }
    }

    pub fn decode(r: &mut Reader<'_>, v: Version) -> Result<(u16, MpReply), Error> {
        let (ty, flags) = mp_header(r)?;
        let body = match ty {
            ofpmp::DESC => MpReply::Desc(Desc {
                mfr: r.string(256, "mfr_desc")?,
                hw: r.string(256, "hw_desc")?,
                sw: r.string(256, "sw_desc")?,
                serial: r.string(32, "serial_num")?,
                dp: r.string(256, "dp_desc")?,
            }),
            ofpmp::FLOW => {
                let mut out = Vec::new();
                while !r.is_empty() {
                    out.push(decode_flow_stats(r, v)?);
                }
                MpReply::Flow(out)
            }
            ofpmp::AGGREGATE if v < Version::V1_5 => {
                let packet_count = r.u64("packet_count")?;
                let byte_count = r.u64("byte_count")?;
                let flow_count = r.u32("flow_count")?;
                r.skip(4, "pad")?;
                MpReply::Aggregate(Aggregate { packet_count, byte_count, flow_count })
            }
            ofpmp::AGGREGATE => {
                let s = decode_oxs(r)?;
                MpReply::Aggregate(Aggregate {
                    packet_count: s.packet_count.unwrap_or(0),
                    byte_count: s.byte_count.unwrap_or(0),
                    flow_count: s.flow_count.unwrap_or(0),
                })
            }
            ofpmp::TABLE => {
                let mut out = Vec::new();
                while !r.is_empty() {
                    let table_id = r.u8("table_id")?;
                    r.skip(3, "pad")?;
                    out.push(TableStats {
                        table_id,
                        active_count: r.u32("active_count")?,
                        lookup_count: r.u64("lookup_count")?,
                        matched_count: r.u64("matched_count")?,
                    });
                }
                MpReply::Table(out)
            }
            ofpmp::PORT_STATS => {
                let mut out = Vec::new();
                while !r.is_empty() {
                    out.push(decode_port_stats(r, v)?);
                }
                MpReply::PortStats(out)
            }
            ofpmp::PORT_DESC => {
                let mut out = Vec::new();
                while !r.is_empty() {
                    out.push(decode_port(r, v)?);
                }
                MpReply::PortDesc(out)
            }
            ofpmp::GROUP => {
                let mut out = Vec::new();
                while !r.is_empty() {
                    let mut e = entry(r, "group stats", 40)?;
                    e.skip(4, "length and pad")?;
                    let group_id = e.u32("group_id")?;
                    let ref_count = e.u32("ref_count")?;
                    e.skip(4, "pad")?;
                    let packet_count = e.u64("packet_count")?;
                    let byte_count = e.u64("byte_count")?;
                    let duration_sec = e.u32("duration_sec")?;
                    let duration_nsec = e.u32("duration_nsec")?;
                    let mut buckets = Vec::new();
                    while !e.is_empty() {
                        buckets.push((e.u64("bucket packet_count")?, e.u64("bucket byte_count")?));
                    }
                    out.push(GroupStats {
                        group_id,
                        ref_count,
                        packet_count,
                        byte_count,
                        duration_sec,
                        duration_nsec,
                        buckets,
                    });
                }
                MpReply::Group(out)
            }
            ofpmp::GROUP_DESC => {
                let mut out = Vec::new();
                while !r.is_empty() {
                    let mut e = entry(r, "group desc", 8)?;
                    e.skip(2, "length")?;
                    let gty = e.u8("type")?;
                    e.skip(1, "pad")?;
                    let group_id = e.u32("group_id")?;
                    let buckets = if v < Version::V1_5 {
                        decode_buckets(&mut e, v)?
                    } else {
                        let blen = usize::from(e.u16("bucket_array_len")?);
                        e.skip(6, "pad")?;
                        let mut b = e.sub(blen, "buckets")?;
                        let buckets = decode_buckets(&mut b, v)?;
                        crate::message::refuse_group_properties(&mut e)?;
                        buckets
                    };
                    out.push(GroupDesc { ty: gty, group_id, buckets });
                }
                MpReply::GroupDesc(out)
            }
            ofpmp::METER => MpReply::Meter(crate::meter::decode_stats(r)?),
            ofpmp::METER_CONFIG => MpReply::MeterConfig(crate::meter::decode_configs(r)?),
            ofpmp::METER_FEATURES => MpReply::MeterFeatures(crate::meter::decode_features(r)?),
            ofpmp::GROUP_FEATURES => {
                let types = r.u32("types")?;
                let capabilities = r.u32("capabilities")?;
                let mut max_groups = [0u32; 4];
                for x in &mut max_groups {
                    *x = r.u32("max_groups")?;
                }
                let mut actions = [0u32; 4];
                for x in &mut actions {
                    *x = r.u32("actions")?;
                }
                MpReply::GroupFeatures(GroupFeatures { types, capabilities, max_groups, actions })
            }
            ofpmp::TABLE_FEATURES => {
                let mut out = Vec::new();
                while !r.is_empty() {
                    let mut e = entry(r, "table features", 64)?;
                    e.skip(2, "length")?;
                    let table_id = e.u8("table_id")?;
                    e.skip(5, "pad")?;
                    out.push(TableFeatures {
                        table_id,
                        name: e.string(32, "name")?,
                        metadata_match: e.u64("metadata_match")?,
                        metadata_write: e.u64("metadata_write")?,
                        config: e.u32("capabilities")?,
                        max_entries: e.u32("max_entries")?,
                        properties: e.rest().to_vec(),
                    });
                }
                MpReply::TableFeatures(out)
            }
            other => return Err(bad_mp(other, v)),
        };
        Ok((flags, body))
    }

    pub fn encode(&self, w: &mut Writer, v: Version, flags: u16) {
        write_mp_header(w, self.ty(), flags);
        match self {
            MpReply::TableFeatures(ts) => {
                for t in ts {
                    let start = w.len();
                    let at = w.placeholder_u16();
                    w.u8(t.table_id);
                    w.zeros(5);
                    w.string(&t.name, 32);
                    w.u64(t.metadata_match);
                    w.u64(t.metadata_write);
                    w.u32(t.config);
                    w.u32(t.max_entries);
                    w.bytes(&t.properties);
                    w.pad8_from(start);
                    w.patch_len(at, start);
                }
            }
            MpReply::Desc(d) => {
                w.string(&d.mfr, 256);
                w.string(&d.hw, 256);
                w.string(&d.sw, 256);
                w.string(&d.serial, 32);
                w.string(&d.dp, 256);
            }
            MpReply::Flow(fs) => {
                for f in fs {
                    encode_flow_stats(w, f, v);
                }
            }
            MpReply::Aggregate(a) => {
                if v < Version::V1_5 {
                    w.u64(a.packet_count);
                    w.u64(a.byte_count);
                    w.u32(a.flow_count);
                    w.zeros(4);
                } else {
                    let s = Oxs {
                        duration: None,
                        flow_count: Some(a.flow_count),
                        packet_count: Some(a.packet_count),
                        byte_count: Some(a.byte_count),
                    };
                    encode_oxs(w, &s);
                }
            }
            MpReply::Table(ts) => {
                for t in ts {
                    w.u8(t.table_id);
                    w.zeros(3);
                    w.u32(t.active_count);
                    w.u64(t.lookup_count);
                    w.u64(t.matched_count);
                }
            }
            MpReply::PortStats(ps) => {
                for p in ps {
                    encode_port_stats(w, p, v);
                }
            }
            MpReply::PortDesc(ps) => {
                for p in ps {
                    encode_port(w, p, v);
                }
            }
            MpReply::Group(gs) => {
                for g in gs {
                    let start = w.len();
                    let at = w.placeholder_u16();
                    w.zeros(2);
                    w.u32(g.group_id);
                    w.u32(g.ref_count);
                    w.zeros(4);
                    w.u64(g.packet_count);
                    w.u64(g.byte_count);
                    w.u32(g.duration_sec);
                    w.u32(g.duration_nsec);
                    for (p, b) in &g.buckets {
                        w.u64(*p);
                        w.u64(*b);
                    }
                    w.patch_len(at, start);
                }
            }
            MpReply::GroupDesc(gs) => {
                for g in gs {
                    let start = w.len();
                    let at = w.placeholder_u16();
                    w.u8(g.ty);
                    w.u8(0);
                    w.u32(g.group_id);
                    if v < Version::V1_5 {
                        encode_buckets(w, &g.buckets, v);
                    } else {
                        let blen = w.placeholder_u16();
                        w.zeros(6);
                        let bstart = w.len();
                        encode_buckets(w, &g.buckets, v);
                        w.patch_len(blen, bstart);
                    }
                    w.patch_len(at, start);
                }
            }
            MpReply::GroupFeatures(g) => {
                w.u32(g.types);
                w.u32(g.capabilities);
                for x in g.max_groups.iter().chain(&g.actions) {
                    w.u32(*x);
                }
            }
            MpReply::Meter(s) => crate::meter::encode_stats(w, s),
            MpReply::MeterConfig(c) => crate::meter::encode_configs(w, c),
            MpReply::MeterFeatures(f) => crate::meter::encode_features(w, f),
        }
    }
}
