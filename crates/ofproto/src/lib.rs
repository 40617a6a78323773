//! OpenFlow rules, actions, instructions and groups, and the ovs-ofctl syntax
//! that describes them (flow files, group files, dump-flows output).
//!
//! This crate owns the vocabulary of the slow path; it knows nothing of lookup
//! or translation. Invariant: everything it hands out has been validated
//! (prerequisites met, bit ranges in range, values fit), and every rejection
//! quotes the offending text.

pub mod action;
pub mod group;
pub mod syntax;

pub use action::{Action, Instructions, SubField};
pub use group::{Bucket, Group, GroupType};
pub use syntax::{
    parse_flow, parse_flow_file, parse_group, parse_group_file, FileError, FlowFile, FlowSpec, MissBehavior,
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
}

impl std::fmt::Display for Rule {
    /// As `ovs-ofctl dump-flows` prints it (without counters).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cookie={:#x}, table={}, priority={}", self.cookie, self.table, self.priority)?;
        let m = self.m.to_string();
        if !m.is_empty() {
            write!(f, ",{m}")?;
        }
        write!(f, " actions={}", self.inst)
    }
}

#[cfg(test)]
mod tests;
