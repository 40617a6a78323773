//! Meters over OpenFlow: METER_MOD into the datapath's meter table, the
//! check that a flow names only meters that exist, and the METER,
//! METER_CONFIG and METER_FEATURES statistics.
//!
//! Invariant: a meter change that is refused changes nothing; deleting a
//! meter deletes the rules that use it in the same step (as OpenFlow and
//! Open vSwitch do), through [`Switch::apply`] like every rule change.

use kairo_datapath::meter::{Band, BandKind, MeterConfig as DpConfig, MeterError, MAX_BANDS, MAX_METERS};
use kairo_maintain::flowmod::FlowMod as KFlowMod;
use kairo_ofp::error::{Error, ErrorCode};
use kairo_ofp::message::Message;
use kairo_ofp::meter::{
    ofpmbt, ofpmc, ofpmf, Band as WireBand, MeterConfig, MeterFeatures, MeterMod, MeterStats, OFPM_ALL, OFPM_MAX,
};
use kairo_ofp::multipart::MpReply;
use kairo_ofproto::{FlowSpec, Instructions};

use crate::Switch;

/// The rules that use meter `id` (all meters if `None`), as one change that
/// deletes each strictly.
fn delete_users(sw: &Switch, id: Option<u32>) -> Option<KFlowMod> {
    let c = sw.ctl.lock();
    let p = c.pipeline();
    let mut dels = Vec::new();
    for (t, tb) in p.tables() {
        for r in tb.cls.iter() {
            let rule = &r.payload;
            if rule.inst.meter.is_some_and(|m| id.is_none_or(|id| id == m)) {
                dels.push(KFlowMod::Delete { strict: true, spec: FlowSpec::exact(t, rule.priority, rule.m) });
            }
        }
    }
    (!dels.is_empty()).then_some(KFlowMod::Bundle(dels))
}

fn config_of(mm: &MeterMod) -> Result<DpConfig, Error> {
    let known = ofpmf::KBPS | ofpmf::PKTPS | ofpmf::BURST | ofpmf::STATS;
    let (kbps, pktps) = (mm.flags & ofpmf::KBPS != 0, mm.flags & ofpmf::PKTPS != 0);
    if mm.flags & !known != 0 || kbps == pktps {
        return Err(Error::new(
            ErrorCode::METER_BAD_FLAGS,
            format!(
                "meter {}: flags {:#x} (exactly one of kbps and pktps, with burst and stats)",
                mm.meter_id, mm.flags
            ),
        ));
    }
    if mm.bands.is_empty() || mm.bands.len() > MAX_BANDS {
        return Err(Error::new(
            ErrorCode::METER_OUT_OF_BANDS,
            format!("meter {}: {} bands (1 to {MAX_BANDS})", mm.meter_id, mm.bands.len()),
        ));
    }
    let mut bands = Vec::new();
    for b in &mm.bands {
        if b.ty != ofpmbt::DROP {
            return Err(Error::new(
                ErrorCode::METER_BAD_BAND,
                format!("meter {}: band type {} (kairo runs drop bands)", mm.meter_id, b.ty),
            ));
        }
        if b.rate == 0 {
            return Err(Error::new(ErrorCode::METER_BAD_RATE, format!("meter {}: a band of rate 0", mm.meter_id)));
        }
        bands.push(Band { kind: BandKind::Drop, rate: b.rate, burst: b.burst_size });
    }
    Ok(DpConfig { pktps, burst: mm.flags & ofpmf::BURST != 0, stats: mm.flags & ofpmf::STATS != 0, bands })
}

fn meter_error(e: MeterError) -> Error {
    let code = match e {
        MeterError::Exists(_) => ErrorCode::METER_EXISTS,
        MeterError::Unknown(_) => ErrorCode::METER_UNKNOWN_METER,
        MeterError::Bands(_) => ErrorCode::METER_OUT_OF_BANDS,
        MeterError::ZeroRate => ErrorCode::METER_BAD_RATE,
        MeterError::Full => ErrorCode::METER_OUT_OF_METERS,
    };
    Error::new(code, e.to_string())
}

/// A METER_MOD, applied.
pub fn meter_mod(sw: &Switch, mm: &MeterMod) -> Result<(), Error> {
    let meters = &sw.meters;
    match mm.command {
        ofpmc::ADD | ofpmc::MODIFY => {
            if mm.meter_id == 0 || mm.meter_id > OFPM_MAX {
                return Err(Error::new(
                    ErrorCode::METER_INVALID,
                    format!("meter id {:#x} (1 to {OFPM_MAX:#x})", mm.meter_id),
                ));
            }
            let cfg = config_of(mm)?;
            meters.set(mm.meter_id, cfg, mm.command == ofpmc::MODIFY).map_err(meter_error)
        }
        ofpmc::DELETE => {
            let which = (mm.meter_id != OFPM_ALL).then_some(mm.meter_id);
            if let Some(change) = delete_users(sw, which) {
                sw.apply(&change).map_err(|e| Error::new(ErrorCode::METER_UNKNOWN, e.to_string()))?;
            }
            match which {
                Some(id) => {
                    // Deleting a meter that does not exist is a no-op (as OVS).
                    meters.delete(id);
                }
                None => meters.clear(),
            }
            Ok(())
        }
        other => Err(Error::new(ErrorCode::METER_BAD_COMMAND, format!("meter-mod command {other}"))),
    }
}

/// Refuses instructions that name a meter the switch does not have.
pub fn check(sw: &Switch, inst: &Instructions) -> Result<(), Error> {
    match inst.meter {
        Some(m) if !sw.meters.contains(m) => {
            Err(Error::new(ErrorCode::METER_UNKNOWN_METER, format!("meter {m} does not exist")))
        }
        _ => Ok(()),
    }
}

fn selected(sw: &Switch, id: u32) -> Vec<u32> {
    sw.meters.ids().into_iter().filter(|m| id == OFPM_ALL || *m == id).collect()
}

/// How many rules use each meter.
fn flow_counts(sw: &Switch) -> std::collections::BTreeMap<u32, u32> {
    let c = sw.ctl.lock();
    let p = c.pipeline();
    let mut n = std::collections::BTreeMap::new();
    for (_, tb) in p.tables() {
        for r in tb.cls.iter() {
            if let Some(m) = r.payload.inst.meter {
                *n.entry(m).or_insert(0) += 1;
            }
        }
    }
    n
}

/// The METER statistics reply entries.
pub fn stats(sw: &Switch, id: u32) -> Vec<MeterStats> {
    let flows = flow_counts(sw);
    selected(sw, id)
        .into_iter()
        .filter_map(|m| {
            let c = sw.meters.counters(m)?;
            Some(MeterStats {
                meter_id: m,
                flow_count: flows.get(&m).copied().unwrap_or(0),
                packet_in_count: c.packets,
                byte_in_count: c.bytes,
                duration_sec: c.duration.0,
                duration_nsec: c.duration.1,
                bands: c.bands,
            })
        })
        .collect()
}

/// The METER_CONFIG reply entries.
pub fn configs(sw: &Switch, id: u32) -> Vec<MeterConfig> {
    selected(sw, id)
        .into_iter()
        .filter_map(|m| {
            let c = sw.meters.config(m)?;
            let mut flags = if c.pktps { ofpmf::PKTPS } else { ofpmf::KBPS };
            if c.burst {
                flags |= ofpmf::BURST;
            }
            if c.stats {
                flags |= ofpmf::STATS;
            }
            let bands = c
                .bands
                .iter()
                .map(|b| WireBand { ty: ofpmbt::DROP, rate: b.rate, burst_size: b.burst, prec_level: 0 })
                .collect();
            Some(MeterConfig { flags, meter_id: m, bands })
        })
        .collect()
}

/// The METER_FEATURES reply.
pub fn features() -> Message {
    Message::MultipartReply {
        flags: 0,
        body: MpReply::MeterFeatures(MeterFeatures {
            max_meter: MAX_METERS as u32,
            band_types: 1 << ofpmbt::DROP,
            capabilities: u32::from(ofpmf::KBPS | ofpmf::PKTPS | ofpmf::BURST | ofpmf::STATS),
            max_bands: MAX_BANDS as u8,
            max_color: 0,
        }),
    }
}
