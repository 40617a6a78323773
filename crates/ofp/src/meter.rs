//! Meters on the wire (OpenFlow 1.3 and 1.5 share the layouts): METER_MOD
//! and its bands, and the bodies of the METER, METER_CONFIG and
//! METER_FEATURES multipart messages.
//!
//! Invariant (the crate's): decoding never panics and reads only inside the
//! message; a band whose length is not 16 or whose type kairo does not know
//! is kept as its type (the switch answers it with OFPMMFC_BAD_BAND).

use crate::buf::{Reader, Writer};
use crate::error::{Error, ErrorCode};

/// METER_MOD commands.
pub mod ofpmc {
    pub const ADD: u16 = 0;
    pub const MODIFY: u16 = 1;
    pub const DELETE: u16 = 2;
}

/// Meter flags.
pub mod ofpmf {
    pub const KBPS: u16 = 1;
    pub const PKTPS: u16 = 2;
    pub const BURST: u16 = 4;
    pub const STATS: u16 = 8;
}

/// Band types.
pub mod ofpmbt {
    pub const DROP: u16 = 1;
    pub const DSCP_REMARK: u16 = 2;
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// The meter id meaning "every meter" in requests and deletes.
pub const OFPM_ALL: u32 = 0xffff_ffff;
/// The largest meter id a switch may hand out (ids above are virtual).
pub const OFPM_MAX: u32 = 0xffff_0000;

/// One band: its type, rate (kb/s or packets/s by the meter's flags), burst
/// size, and for DSCP remark the precedence level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Band {
    pub ty: u16,
    pub rate: u32,
    pub burst_size: u32,
    pub prec_level: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterMod {
    pub command: u16,
    pub flags: u16,
    pub meter_id: u32,
    pub bands: Vec<Band>,
}

/// One meter's statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterStats {
    pub meter_id: u32,
    pub flow_count: u32,
    pub packet_in_count: u64,
    pub byte_in_count: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    /// (packets, bytes) each band applied to.
    pub bands: Vec<(u64, u64)>,
}

/// One meter's configuration (METER_CONFIG reply entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterConfig {
    pub flags: u16,
    pub meter_id: u32,
    pub bands: Vec<Band>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterFeatures {
    pub max_meter: u32,
    pub band_types: u32,
    pub capabilities: u32,
    pub max_bands: u8,
    pub max_color: u8,
}

pub(crate) fn decode_bands(r: &mut Reader<'_>) -> Result<Vec<Band>, Error> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let at = r.offset();
        let ty = r.u16("band type")?;
        let len = usize::from(r.u16("band length")?);
        if len < 16 || len % 8 != 0 {
            return Err(Error::new(ErrorCode::BAD_LEN, format!("meter band at offset {at} has length {len}")));
        }
        let mut b = r.sub(len - 4, "meter band")?;
        let rate = b.u32("rate")?;
        let burst_size = b.u32("burst_size")?;
        let prec_level = if ty == ofpmbt::DSCP_REMARK { b.u8("prec_level")? } else { 0 };
        out.push(Band { ty, rate, burst_size, prec_level });
    }
    Ok(out)
}

pub(crate) fn encode_bands(w: &mut Writer, bands: &[Band]) {
    for b in bands {
        w.u16(b.ty);
        w.u16(16);
        w.u32(b.rate);
        w.u32(b.burst_size);
        w.u8(b.prec_level);
        w.zeros(3);
    }
}

impl MeterMod {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<MeterMod, Error> {
        let command = r.u16("command")?;
        let flags = r.u16("flags")?;
        let meter_id = r.u32("meter_id")?;
        let bands = decode_bands(r)?;
        Ok(MeterMod { command, flags, meter_id, bands })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.command);
        w.u16(self.flags);
        w.u32(self.meter_id);
        encode_bands(w, &self.bands);
    }
}

/// The body of a METER or METER_CONFIG request: the meter id.
pub(crate) fn decode_meter_request(r: &mut Reader<'_>) -> Result<u32, Error> {
    let id = r.u32("meter_id")?;
    r.skip(4, "pad")?;
    Ok(id)
}

pub(crate) fn decode_stats(r: &mut Reader<'_>) -> Result<Vec<MeterStats>, Error> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let at = r.offset();
        let meter_id = r.u32("meter_id")?;
        let len = usize::from(r.u16("len")?);
        if len < 40 || (len - 40) % 16 != 0 {
            return Err(Error::new(ErrorCode::BAD_LEN, format!("meter stats at offset {at} has length {len}")));
        }
        let mut e = r.sub(len - 6, "meter stats")?;
        e.skip(6, "pad")?;
        let flow_count = e.u32("flow_count")?;
        let packet_in_count = e.u64("packet_in_count")?;
        let byte_in_count = e.u64("byte_in_count")?;
        let duration_sec = e.u32("duration_sec")?;
        let duration_nsec = e.u32("duration_nsec")?;
        let mut bands = Vec::new();
        while !e.is_empty() {
            bands.push((e.u64("packet_band_count")?, e.u64("byte_band_count")?));
        }
        out.push(MeterStats {
            meter_id,
            flow_count,
            packet_in_count,
            byte_in_count,
            duration_sec,
            duration_nsec,
            bands,
        });
    }
    Ok(out)
}

pub(crate) fn encode_stats(w: &mut Writer, stats: &[MeterStats]) {
    for s in stats {
        w.u32(s.meter_id);
        w.u16((40 + 16 * s.bands.len()) as u16);
        w.zeros(6);
        w.u32(s.flow_count);
        w.u64(s.packet_in_count);
        w.u64(s.byte_in_count);
        w.u32(s.duration_sec);
        w.u32(s.duration_nsec);
        for (p, b) in &s.bands {
            w.u64(*p);
            w.u64(*b);
        }
    }
}

pub(crate) fn decode_configs(r: &mut Reader<'_>) -> Result<Vec<MeterConfig>, Error> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let at = r.offset();
        let len = usize::from(r.u16("length")?);
        if len < 8 || len % 8 != 0 {
            return Err(Error::new(ErrorCode::BAD_LEN, format!("meter config at offset {at} has length {len}")));
        }
        let mut e = r.sub(len - 2, "meter config")?;
        let flags = e.u16("flags")?;
        let meter_id = e.u32("meter_id")?;
        out.push(MeterConfig { flags, meter_id, bands: decode_bands(&mut e)? });
    }
    Ok(out)
}

pub(crate) fn encode_configs(w: &mut Writer, configs: &[MeterConfig]) {
    for c in configs {
        w.u16((8 + 16 * c.bands.len()) as u16);
        w.u16(c.flags);
        w.u32(c.meter_id);
        encode_bands(w, &c.bands);
    }
}

pub(crate) fn decode_features(r: &mut Reader<'_>) -> Result<MeterFeatures, Error> {
    let f = MeterFeatures {
        max_meter: r.u32("max_meter")?,
        band_types: r.u32("band_types")?,
        capabilities: r.u32("capabilities")?,
        max_bands: r.u8("max_bands")?,
        max_color: r.u8("max_color")?,
    };
    r.skip(2, "pad")?;
    Ok(f)
}

pub(crate) fn encode_features(w: &mut Writer, f: &MeterFeatures) {
    w.u32(f.max_meter);
    w.u32(f.band_types);
    w.u32(f.capabilities);
    w.u8(f.max_bands);
    w.u8(f.max_color);
    w.zeros(2);
}
