//! Hash-consing of what maintenance gives megaflows: action lists (as the
//! datapath does at install) and the traversals that go with them.
//!
//! Invariant: as [`kairo_datapath::intern::Table`]'s: a value handed out
//! equals the value asked for, and is freed with its last holder.

use std::sync::Arc;

use kairo_datapath::intern::{self, Table};
use kairo_odp::DpAction;
use kairo_xlate::Traversal;

/// Shared action lists and traversals.
#[derive(Default)]
pub struct Interner {
    actions: intern::Interner,
    traversals: Table<Traversal>,
}

impl Interner {
    pub fn actions(&mut self, a: Vec<DpAction>) -> Arc<Vec<DpAction>> {
        self.actions.actions(a)
    }
    pub fn traversal(&mut self, t: Traversal) -> Arc<Traversal> {
        self.traversals.get(t, Traversal::shrink_to_fit)
    }
    /// Distinct traversals alive (O(table): for reports).
    pub fn traversals(&self) -> usize {
        self.traversals.live()
    }
}
