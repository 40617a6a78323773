//! Flow keys, masks and matches, and their Open vSwitch notation.
//!
//! This crate owns the field table ([`field`]): which fields a key has, where
//! each one lives, its names and its prerequisites. Everything else in kairo
//! (classifier, translation, datapath) reads and writes fields only through
//! [`FlowKey`], [`FlowMask`] and [`Match`], so adding a field is one line.
//!
//! Invariants kept here: a [`Match`]'s value has no bits outside its mask; every
//! parse error names the offending text and what was expected; parsing never
//! panics.

pub mod field;
pub mod key;
pub mod parse;
pub mod print;

pub use field::{Field, Stage, N_STAGES, STAGE_WORDS, WORDS};
pub use key::{FlowKey, FlowMask, HasMatch, Match};
pub use parse::{parse_field_value, parse_key, parse_match, split_top, MatchBuilder};
pub use print::{format_key, format_match, format_megaflow};

/// Errors from reading fields, values and matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("unknown field `{name}`")]
    UnknownField { name: String },
    #[error("bad value `{value}` for `{field}`: expected {expected}")]
    BadValue { field: String, value: String, expected: String },
    #[error("`{field}` needs a value (`{field}=...`)")]
    MissingValue { field: String },
    #[error("`{field}={value}` contradicts an earlier constraint on `{field}`")]
    Conflict { field: String, value: String },
    #[error("`{field}` is matched without its prerequisite ({needs})")]
    Prerequisite { field: String, needs: String },
    #[error("`{what}` is not supported: {why}")]
    Unsupported { what: String, why: String },
    #[error("syntax error in `{text}`: expected {expected}")]
    Syntax { text: String, expected: String },
}

#[cfg(test)]
mod tests;
