//! The slow path: the rule tables of a switch ([`Pipeline`]) and translation
//! of a flow key through them ([`translate`]) into datapath actions, the widest
//! correct megaflow mask, and the traversal that cache maintenance depends on.
//!
//! Invariant (the megaflow contract, `docs/design.md` section 3): for a result
//! with key K, mask M and actions A, every packet P with `P & M == K & M`
//! translates to A against the same pipeline.
//!
//! Modules, in the order a reader meets them:
//! - [`translate`](crate::translate()): the translator, the path of every upcall;
//! - `tracked`: the flow and the one mechanism that gathers the mask;
//! - `action_set`: the OpenFlow action set;
//! - [`traversal`]: the record of a translation maintenance depends on;
//! - [`replay`]: re-translation after a change, from an earlier traversal;
//! - [`suffix`]: suffixes of a translation shared by keys in the same state;
//! - `commit`: the set actions that bring the packet up to the flow;
//! - [`recirc`]: frozen states for recirculation, and dp_hash select groups;
//! - [`pipeline`], [`trace`]: rule tables, rendering.

mod action_set;
mod commit;
pub mod mac;
pub mod pipeline;
pub mod recirc;
pub mod replay;
pub mod suffix;
pub mod trace;
mod tracked;
mod translate;
pub mod traversal;

/// Datapath actions (the `kairo-odp` crate), re-exported for translation's users.
pub use kairo_odp as odp;
pub use kairo_odp::{format_actions, DpAction};
pub use pipeline::{answers, conj_floor, conj_related, Pipeline, PipelineError, Table};
pub use replay::{retranslate, retranslate_checked, Replay, Retranslation, TableSet, VisitCheck};
pub use suffix::{actions_read_from, sorted_minus, translate_suffix, Suffix};
pub use translate::{
    admitted, learned_from, translate, translate_actions, Learn, Learned, XlateError, XlateResult, MAX_ACTION_BYTES,
    MAX_BUCKETS, MAX_DEPTH, MAX_RESUBMITS,
};
pub use traversal::{FinTimeout, Floor, GroupUse, Outcome, Step, Traversal, Via};

#[cfg(test)]
mod tests;
