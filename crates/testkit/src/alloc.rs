//! A counting global allocator for tests that assert what a code path
//! allocates: each test binary declares it (`#[global_allocator] static A:
//! kairo_testkit::alloc::Counting = kairo_testkit::alloc::Counting;`), arms
//! it on the thread to watch ([`arm`]) and reads what that thread
//! allocated meanwhile ([`count`]).
//!
//! Invariant: every call is passed unchanged to the system allocator;
//! counting touches only const-initialised thread-local cells (no
//! allocation, no re-entry), and only on a thread that armed it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Counts allocations (and reallocations) made on armed threads.
pub struct Counting;

fn note() {
    // `try_with`: during thread teardown the slots may be gone.
    let _ = ARMED.try_with(|a| {
        if a.get() {
            ALLOCS.with(|c| c.set(c.get() + 1));
        }
    });
}

/// Starts (true) or stops (false) counting on this thread.
pub fn arm(on: bool) {
    ARMED.with(|a| a.set(on));
}

/// Allocations counted on this thread so far.
pub fn count() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; counting touches only const-initialised
// thread-local cells (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) }
    }
}
