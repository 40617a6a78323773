//! OpenFlow port numbers: the 32-bit numbering of OpenFlow 1.1+ on the wire,
//! and the 16-bit numbering (OpenFlow 1.0, as Open vSwitch keeps it inside)
//! that kairo's rules use.
//!
//! Invariant: [`from_wire`] and [`to_wire`] are inverse on every port kairo
//! can hold; a wire number with no 16-bit equivalent is an error, not a
//! truncation.

use crate::error::{Error, ErrorCode};

pub const OFPP_MAX: u32 = 0xffff_ff00;
pub const OFPP_IN_PORT: u32 = 0xffff_fff8;
pub const OFPP_TABLE: u32 = 0xffff_fff9;
pub const OFPP_NORMAL: u32 = 0xffff_fffa;
pub const OFPP_FLOOD: u32 = 0xffff_fffb;
pub const OFPP_ALL: u32 = 0xffff_fffc;
pub const OFPP_CONTROLLER: u32 = 0xffff_fffd;
pub const OFPP_LOCAL: u32 = 0xffff_fffe;
pub const OFPP_ANY: u32 = 0xffff_ffff;

/// The same reserved ports in 16-bit numbering.
pub const OFPP10_MAX: u32 = 0xff00;
const RESERVED_OFFSET: u32 = 0xffff_0000;

/// A wire (32-bit) port number as kairo numbers it.
pub fn from_wire(p: u32) -> Result<u32, Error> {
    if p < OFPP10_MAX {
        Ok(p)
    } else if p >= OFPP_MAX {
        Ok(p - RESERVED_OFFSET)
    } else {
        Err(Error::new(
            ErrorCode::BAD_PORT,
            format!("port {p:#x} is outside the ports kairo numbers (below 0xff00 or reserved)"),
        ))
    }
}

/// A kairo port number on the wire.
pub fn to_wire(p: u32) -> u32 {
    if (OFPP10_MAX..=0xffff).contains(&p) {
        p + RESERVED_OFFSET
    } else {
        p
    }
}
