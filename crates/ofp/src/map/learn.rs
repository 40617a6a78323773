//! `learn(...)` between the wire (NXAST_LEARN, NXAST_LEARN2) and kairo's
//! [`Learn`].
//!
//! Invariant: a learn that maps in maps back to the same bytes Open vSwitch
//! sends for it: NXAST_LEARN2 exactly when there is a limit or a result
//! bit, fields named by their NXM headers where they have one (as Open
//! vSwitch encodes learn specs in every version), immediates in 16-bit
//! units. What kairo's learn cannot hold (immediates wider than 64 bits)
//! is refused naming it.

use kairo_flow::field::Field;
use kairo_ofproto::learn::{flags, Learn, LearnSpec, LearnSrc};
use kairo_ofproto::SubField;

use super::{by_name, sub_from_wire, sub_to_wire, writable};
use crate::action::{WireLearn, WireLearnDst, WireLearnSpec, WireLearnSrc, WireSub};
use crate::error::{Error, ErrorCode};
use crate::oxm::OxmId;

fn bad(why: String) -> Error {
    Error::new(ErrorCode::BAD_ACTION_ARGUMENT, format!("learn: {why}"))
}

/// A wire learn as kairo's, checked as `learn(...)` text is.
pub(super) fn from_wire(w: &WireLearn) -> Result<Learn, Error> {
    let mut l = Learn {
        table: w.table,
        priority: w.priority,
        idle_timeout: w.idle_timeout,
        hard_timeout: w.hard_timeout,
        fin_idle_timeout: w.fin_idle_timeout,
        fin_hard_timeout: w.fin_hard_timeout,
        cookie: w.cookie,
        flags: w.flags,
        limit: w.limit,
        result_dst: None,
        specs: Vec::with_capacity(w.specs.len()),
    };
    if let Some(r) = &w.result_dst {
        let r = sub_from_wire(r)?;
        writable(r.field, "learn result_dst")?;
        l.result_dst = Some(r);
    }
    for s in &w.specs {
        let sub = |id: OxmId, ofs: u16| sub_from_wire(&WireSub { id, ofs, n_bits: s.n_bits });
        let src = match &s.src {
            WireLearnSrc::Field(id, ofs) => LearnSrc::Field(sub(*id, *ofs)?),
            WireLearnSrc::Imm(bytes) => {
                let v = bytes.iter().fold(0u128, |v, b| (v << 8) | u128::from(*b));
                let bits = u32::from(s.n_bits);
                if bits < 128 && v >> bits != 0 {
                    return Err(bad(format!("immediate {v:#x} does not fit in {bits} bits")));
                }
                LearnSrc::Value(
                    u64::try_from(v).map_err(|_| bad(format!("immediate {v:#x} is wider than kairo's 64 bits")))?,
                )
            }
        };
        l.specs.push(match s.dst {
            WireLearnDst::Match(id, ofs) => LearnSpec::Match { dst: sub(id, ofs)?, src },
            WireLearnDst::Load(id, ofs) => {
                let dst = sub(id, ofs)?;
                writable(dst.field, "learn load")?;
                LearnSpec::Load { dst, src }
            }
            WireLearnDst::Output => match src {
                LearnSrc::Field(src) => LearnSpec::Output { src },
                LearnSrc::Value(_) => return Err(bad("an output spec with an immediate".into())),
            },
        });
    }
    l.check().map_err(|e| Error::new(ErrorCode::BAD_PREREQ, e.to_string()))?;
    Ok(l)
}

/// A field's bits as a learn spec names them: by the NXM header where the
/// field has one.
fn nxm_sub(s: &SubField) -> Result<WireSub, Error> {
    if s.field == Field::InPort && s.ofs + s.n_bits <= 16 {
        return Ok(WireSub { id: by_name("NXM_OF_IN_PORT"), ofs: s.ofs as u16, n_bits: s.n_bits as u16 });
    }
    let (f, base) = s.field.half_of().unwrap_or((s.field, 0));
    let nxm = f
        .def()
        .aliases
        .iter()
        .find(|a| (a.starts_with("NXM_OF_") || a.starts_with("NXM_NX_")) && OxmId::by_name(a).is_some());
    match nxm {
        Some(name) => Ok(WireSub { id: by_name(name), ofs: (s.ofs + base) as u16, n_bits: s.n_bits as u16 }),
        None => sub_to_wire(s),
    }
}

/// Kairo's learn on the wire.
pub(super) fn to_wire(l: &Learn) -> Result<WireLearn, Error> {
    let mut specs = Vec::with_capacity(l.specs.len());
    for s in &l.specs {
        let (dst, n_bits) = match s {
            LearnSpec::Match { dst, .. } | LearnSpec::Load { dst, .. } => (Some(nxm_sub(dst)?), dst.n_bits),
            LearnSpec::Output { src } => (None, src.n_bits),
        };
        let src = match s {
            LearnSpec::Match { src: LearnSrc::Field(f), .. }
            | LearnSpec::Load { src: LearnSrc::Field(f), .. }
            | LearnSpec::Output { src: f } => {
                let w = nxm_sub(f)?;
                WireLearnSrc::Field(w.id, w.ofs)
            }
            LearnSpec::Match { src: LearnSrc::Value(v), .. } | LearnSpec::Load { src: LearnSrc::Value(v), .. } => {
                let n = 2 * (n_bits as usize).div_ceil(16);
                let be = u128::from(*v).to_be_bytes();
                WireLearnSrc::Imm(be[16 - n.min(16)..].to_vec())
            }
        };
        let dst = match (s, dst) {
            (LearnSpec::Match { .. }, Some(d)) => WireLearnDst::Match(d.id, d.ofs),
            (LearnSpec::Load { .. }, Some(d)) => WireLearnDst::Load(d.id, d.ofs),
            _ => WireLearnDst::Output,
        };
        specs.push(WireLearnSpec { n_bits: n_bits as u16, src, dst });
    }
    Ok(WireLearn {
        v2: l.limit != 0 || l.result_dst.is_some(),
        idle_timeout: l.idle_timeout,
        hard_timeout: l.hard_timeout,
        priority: l.priority,
        cookie: l.cookie,
        flags: l.flags | if l.result_dst.is_some() { flags::WRITE_RESULT } else { 0 },
        table: l.table,
        fin_idle_timeout: l.fin_idle_timeout,
        fin_hard_timeout: l.fin_hard_timeout,
        limit: l.limit,
        result_dst: l.result_dst.as_ref().map(nxm_sub).transpose()?,
        specs,
    })
}
