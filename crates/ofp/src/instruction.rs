//! OpenFlow instructions on the wire (goto_table, write_metadata,
//! write/apply/clear actions, meter).
//!
//! Invariant: a decoded instruction list has each instruction type at most
//! once (OFPBIC_DUP_INST otherwise), as OpenFlow requires.

use crate::action::{decode_actions, encode_actions, Act};
use crate::buf::{Reader, Writer};
use crate::error::{Error, ErrorCode};
use crate::Version;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    GotoTable(u8),
    WriteMetadata {
        value: u64,
        mask: u64,
    },
    WriteActions(Vec<Act>),
    ApplyActions(Vec<Act>),
    ClearActions,
    /// OpenFlow 1.3/1.4 meter instruction (1.5 has a meter action instead).
    Meter(u32),
}

impl Instruction {
    fn ty(&self) -> u16 {
        match self {
            Instruction::GotoTable(_) => 1,
            Instruction::WriteMetadata { .. } => 2,
            Instruction::WriteActions(_) => 3,
            Instruction::ApplyActions(_) => 4,
            Instruction::ClearActions => 5,
            Instruction::Meter(_) => 6,
        }
    }

    pub fn decode(r: &mut Reader<'_>, v: Version) -> Result<Instruction, Error> {
        let at = r.offset();
        let mut peek = *r;
        let ty = peek.u16("instruction type")?;
        let len = usize::from(peek.u16("instruction length")?);
        if len < 8 || len % 8 != 0 {
            return Err(Error::new(
                ErrorCode::INST_BAD_LEN,
                format!("instruction type {ty} at offset {at} has length {len} (a multiple of 8, at least 8)"),
            ));
        }
        let mut b = r.sub(len, "instruction")?;
        b.skip(4, "instruction header")?;
        let fixed = |want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorCode::INST_BAD_LEN,
                    format!("instruction type {ty} at offset {at} has length {len}, expected {want}"),
                ))
            }
        };
        Ok(match ty {
            1 => {
                fixed(8)?;
                Instruction::GotoTable(b.u8("table_id")?)
            }
            2 => {
                fixed(24)?;
                b.skip(4, "pad")?;
                let value = b.u64("metadata")?;
                let mask = b.u64("metadata_mask")?;
                Instruction::WriteMetadata { value, mask }
            }
            3 | 4 => {
                b.skip(4, "pad")?;
                let acts = decode_actions(&mut b, v)?;
                if ty == 3 {
                    Instruction::WriteActions(acts)
                } else {
                    Instruction::ApplyActions(acts)
                }
            }
            5 => {
                fixed(8)?;
                Instruction::ClearActions
            }
            6 if v < Version::V1_5 => {
                fixed(8)?;
                Instruction::Meter(b.u32("meter_id")?)
            }
            0xffff => {
                let exp = b.u32("experimenter").unwrap_or(0);
                return Err(Error::new(
                    ErrorCode::UNKNOWN_INST,
                    format!("experimenter instruction of {exp:#010x} at offset {at} is not supported"),
                ));
            }
            other => {
                return Err(Error::new(
                    ErrorCode::UNKNOWN_INST,
                    format!("instruction type {other} at offset {at} is not an OpenFlow {v} instruction"),
                ))
            }
        })
    }

    pub fn encode(&self, w: &mut Writer) {
        let start = w.len();
        w.u16(self.ty());
        let at = w.placeholder_u16();
        match self {
            Instruction::GotoTable(t) => {
                w.u8(*t);
                w.zeros(3);
            }
            Instruction::WriteMetadata { value, mask } => {
                w.zeros(4);
                w.u64(*value);
                w.u64(*mask);
            }
            Instruction::WriteActions(a) | Instruction::ApplyActions(a) => {
                w.zeros(4);
                encode_actions(w, a);
            }
            Instruction::ClearActions => w.zeros(4),
            Instruction::Meter(m) => w.u32(*m),
        }
        w.patch_len(at, start);
    }
}

/// Reads the instructions filling `r`, refusing a type given twice.
pub fn decode_instructions(r: &mut Reader<'_>, v: Version) -> Result<Vec<Instruction>, Error> {
    let mut out: Vec<Instruction> = Vec::new();
    while !r.is_empty() {
        let at = r.offset();
        let i = Instruction::decode(r, v)?;
        if out.iter().any(|x| x.ty() == i.ty()) {
            return Err(Error::new(
                ErrorCode::DUP_INST,
                format!("instruction type {} at offset {at} given twice", i.ty()),
            ));
        }
        out.push(i);
    }
    Ok(out)
}

pub fn encode_instructions(w: &mut Writer, insts: &[Instruction]) {
    for i in insts {
        i.encode(w);
    }
}
