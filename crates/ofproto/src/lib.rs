//! OpenFlow rules, actions, instructions and groups, and the ovs-ofctl syntax
//! that describes them (flow files, group files, dump-flows output).
//!
//! This crate owns the vocabulary of the slow path; it knows nothing of lookup
//! or translation. Invariant: everything it hands out has been validated
//! (prerequisites met, bit ranges in range, values fit), and every rejection
//! quotes the offending text.

pub mod action;
pub mod ct;
pub mod group;
pub mod learn;
pub mod ports;
pub mod syntax;

pub use action::{Action, Instructions, SubField};
pub use ct::{Ct, CtZone, Nat, NatAddrs, NatKind};
pub use group::{Bucket, Group, GroupType, Selection};
/// Why a packet goes to the controller (the datapath action's, re-exported
/// for the `controller` action).
pub use kairo_odp::ControllerReason;
pub use learn::{Learn, LearnSpec, LearnSrc};
pub use ports::PortNames;
pub use syntax::{
    parse_flow, parse_flow_file, parse_flow_file_in, parse_flow_in, parse_group, parse_group_file, parse_group_file_in,
    parse_group_in, FileError, FlowFile, FlowSpec, MissBehavior,
};

use kairo_flow::{FlowError, Match};

/// Errors from reading rules, actions and groups.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfError {
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("unknown action `{text}`")]
    UnknownAction { text: String },
    #[error("`{what}` is not supported: {why}")]
    Unsupported { what: String, why: String },
    #[error("syntax error in `{text}`: expected {expected}")]
    Syntax { text: String, expected: String },
}

/// An OpenFlow rule (flow entry).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    pub m: Match,
    pub inst: Instructions,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    /// OpenFlow flow-mod flags the rule keeps ([`flags::KEPT`]).
    pub flags: u16,
}

impl kairo_flow::HasMatch for Rule {
    fn matched(&self) -> &Match {
        &self.m
    }
}

/// OpenFlow flow-mod flags (OFPFF_*), the same numbers in 1.3 and 1.5.
pub mod flags {
    pub const SEND_FLOW_REM: u16 = 1 << 0;
    pub const CHECK_OVERLAP: u16 = 1 << 1;
    pub const RESET_COUNTS: u16 = 1 << 2;
    pub const NO_PKT_COUNTS: u16 = 1 << 3;
    pub const NO_BYT_COUNTS: u16 = 1 << 4;
    /// What a rule keeps (CHECK_OVERLAP and RESET_COUNTS act at install only).
    pub const KEPT: u16 = SEND_FLOW_REM | NO_PKT_COUNTS | NO_BYT_COUNTS;
}

impl std::fmt::Display for Rule {
    /// As `ovs-ofctl dump-flows` prints it (without counters).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cookie={:#x}, table={}, ", self.cookie, self.table)?;
        if self.flags & flags::SEND_FLOW_REM != 0 {
            f.write_str("send_flow_rem ")?;
        }
        write!(f, "priority={}", self.priority)?;
        let m = self.m.to_string();
        if !m.is_empty() {
            write!(f, ",{m}")?;
        }
        write!(f, " actions={}", self.inst)
    }
}

#[cfg(test)]
mod tests;
