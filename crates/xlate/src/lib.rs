//! The slow path: the rule tables of a switch ([`Pipeline`]) and translation
//! of a flow key through them ([`translate`]) into datapath actions, the widest
//! correct megaflow mask, and the traversal that cache maintenance depends on.
//!
//! Invariant (the megaflow contract, DESIGN.md section 3): for a result with
//! key K, mask M and actions A, every packet P with `P & M == K & M`
//! translates to A against the same pipeline.

pub mod odp;
pub mod pipeline;
pub mod trace;
mod xlate;

pub use odp::{format_actions, DpAction};
pub use pipeline::{Pipeline, PipelineError, Table};
pub use xlate::{
    actions_read_from, retranslate, retranslate_checked, sorted_minus, touch_steps, translate, translate_suffix,
    GroupUse, Outcome, Replay, Retranslation, Step, Suffix, TableSet, Traversal, Via, XlateError, XlateResult,
    MAX_DEPTH, MAX_RESUBMITS,
};

#[cfg(test)]
mod tests;
