//! The KAIRO prototype's approach, as a reference engine beside kairo's
//! own: the megaflow cache's traversals expressed as a view that DBSP
//! (Feldera's incremental dataflow engine, the IVM engine of the KAIRO
//! poster) maintains from the deltas of the rule tables. Rules, groups and
//! the cached traffic are input collections; translation is joins over the
//! tables (module `circuit`); a flow-mod becomes rows retracted and inserted, and
//! DBSP's step yields exactly the view rows that change, hence the cache
//! entries whose traversal changed.
//!
//! It exists to be measured (`kairo bench ttu --engines dbsp`), so that the
//! poster's system runs on the same machine, workload and update stream as
//! kairo's incremental engine and Open vSwitch, and to be checked: after
//! every update its view must give each cached megaflow the traversal
//! kairo's incremental engine holds for it (`DbspView::check`).
//!
//! What it computes is the traversal (the rules each table chose, the
//! groups and buckets run), not datapath actions: the poster's view.
//! What it does not model it refuses, naming the rule (module `book`).
//!
//! The crate is empty unless built with the `dbsp` feature (DBSP is about
//! 440 crates and several minutes of build; kairo does not need it).

#[cfg(feature = "dbsp")]
pub mod book;
#[cfg(feature = "dbsp")]
pub mod circuit;
#[cfg(feature = "dbsp")]
mod traffic;
#[cfg(feature = "dbsp")]
mod view;

#[cfg(feature = "dbsp")]
pub use traffic::{Check, Traffic};
#[cfg(feature = "dbsp")]
pub use view::{DbspError, DbspView, LoadReport, UpdateReport};
