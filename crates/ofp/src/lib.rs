//! OpenFlow on the wire for kairo's switch end: versions 1.3 (0x04) and 1.5
//! (0x06), OXM/NXM matches, instructions, the OpenFlow and Nicira actions,
//! and the messages a switch reads and writes; and the mapping of those
//! messages onto kairo's rules and groups ([`map`]).
//!
//! Why hand-written: the OpenFlow crates on crates.io are controller-side,
//! OpenFlow 1.0 only, or stop short of the Nicira extensions (NXM fields,
//! resubmit, reg_load/reg_move, ct, learn, conjunction) that every Open vSwitch
//! pipeline uses; a switch has to read all of them and answer each one it
//! cannot honour with the error OpenFlow defines.
//!
//! The codec ([`message`], [`multipart`], [`instruction`], [`action`],
//! [`oxm`]) knows nothing of kairo: typed values in, bytes out, and back.
//! Invariant: decoding never panics and never reads past the message, on any
//! input; every refusal carries the OpenFlow (type, code) to answer with.
//! Versions differ only where a layout does: a version is a parameter of
//! `decode`/`encode`, and OpenFlow 1.4 would be a row in [`Version`] and the
//! few layouts it changes.

pub mod action;
pub mod buf;
pub mod error;
pub mod instruction;
pub mod map;
pub mod message;
pub mod meter;
pub mod multipart;
pub mod oxm;
pub mod port;

pub use error::{Error, ErrorCode};
pub use message::{decode, encode, Header, Message};

/// The OpenFlow versions kairo speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V1_3,
    V1_5,
}

impl Version {
    pub const ALL: [Version; 2] = [Version::V1_3, Version::V1_5];

    pub fn wire(self) -> u8 {
        match self {
            Version::V1_3 => 0x04,
            Version::V1_5 => 0x06,
        }
    }

    pub fn from_wire(v: u8) -> Option<Version> {
        match v {
            0x04 => Some(Version::V1_3),
            0x06 => Some(Version::V1_5),
            _ => None,
        }
    }

    /// The HELLO version bitmap offering these versions.
    pub fn bitmap(versions: &[Version]) -> u32 {
        versions.iter().fold(0, |b, v| b | (1 << v.wire()))
    }

    /// The version two peers agree on: the highest both offer. A peer that
    /// sends no bitmap offers every version up to its header's.
    pub fn negotiate(ours: &[Version], their_header: u8, their_bitmap: Option<u32>) -> Option<Version> {
        let theirs =
            their_bitmap.unwrap_or_else(
                || {
                    if their_header >= 31 {
                        u32::MAX
                    } else {
                        (1u32 << (their_header + 1)) - 1
                    }
                },
            );
        ours.iter().copied().filter(|v| theirs & (1 << v.wire()) != 0).max()
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1_3 => "1.3",
            Version::V1_5 => "1.5",
        })
    }
}

#[cfg(test)]
mod tests;
