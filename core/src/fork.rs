//! Fork safety for lock-free operations that take more than one step.
//!
//! Locks are easy: the frontend's fork handlers take them all before
//! `fork` and release them on both sides. A lock-free operation that takes
//! two steps is not: a child forked between them inherits the intermediate
//! state, and the thread that would finish it does not exist there (a
//! span left `Notifying` for ever, a segment left marked `purging`). Such
//! operations run under a [`ForkGuard`]; before a fork, [`ForkGate::quiesce`]
//! waits until none is in flight and holds new ones back until the fork is
//! over.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Set in the gate's word while a fork is being prepared; the low bits
/// count guarded operations in flight.
const FORK_PENDING: usize = 1 << (usize::BITS - 1);

/// Counts the guarded operations in flight.
pub struct ForkGate {
    word: AtomicUsize,
    /// A test aid: called in the middle of a cross-thread hand-off (see
    /// [`ForkGate::set_handoff_hook`]); 0 when unset.
    handoff_hook: AtomicUsize,
}

/// Proof that a `fork` cannot happen until it is dropped.
pub struct ForkGuard<'a>(&'a AtomicUsize);

impl Drop for ForkGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl ForkGate {
    pub const fn new() -> Self {
        ForkGate {
            word: AtomicUsize::new(0),
            handoff_hook: AtomicUsize::new(0),
        }
    }

    /// Marks the start of a guarded operation; waits while a fork is being
    /// prepared. A guarded operation must take no lock (the forking thread
    /// holds them all while it waits for guards to end). Costs one atomic
    /// add, on paths that are already slow.
    pub fn guard(&self) -> ForkGuard<'_> {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            if cur & FORK_PENDING != 0 {
                core::hint::spin_loop();
                cur = self.word.load(Ordering::Relaxed);
                continue;
            }
            match self.word.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return ForkGuard(&self.word),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Before `fork`, after taking the locks: waits until no guarded
    /// operation is in flight and holds new ones back.
    pub fn quiesce(&self) {
        self.word.fetch_or(FORK_PENDING, Ordering::AcqRel);
        while self.word.load(Ordering::Acquire) & !FORK_PENDING != 0 {
            core::hint::spin_loop();
        }
    }

    /// In the parent after `fork`: guarded operations may start again.
    pub fn reopen(&self) {
        self.word.fetch_and(!FORK_PENDING, Ordering::Release);
    }

    /// In the child after `fork`: nothing was in flight at the fork, and
    /// the threads that would end anything do not exist here.
    pub fn reset_in_child(&self) {
        self.word.store(0, Ordering::Release);
    }

    /// Installs a function called at two points of every cross-thread
    /// hand-off (see [`HandoffPoint`]). A test aid for making a `fork` or
    /// an owner's exit land exactly there; never set in normal operation.
    pub fn set_handoff_hook(&self, hook: fn(HandoffPoint)) {
        self.handoff_hook.store(hook as usize, Ordering::Release);
    }

    /// Calls the hand-off hook, if one is set.
    pub fn run_handoff_hook(&self, at: HandoffPoint) {
        let h = self.handoff_hook.load(Ordering::Acquire);
        if h != 0 {
            // SAFETY: only `set_handoff_hook` stores non-zero values, and
            // they are `fn(HandoffPoint)` pointers.
            let f: fn(HandoffPoint) = unsafe { core::mem::transmute::<usize, fn(HandoffPoint)>(h) };
            f(at);
        }
    }
}

/// Where in a cross-thread hand-off the test hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffPoint {
    /// A remote free found its span parked (`Notify`) and is about to take
    /// the fork guard and claim the hand-off: the owner may still give the
    /// span up (exit, abandon) before the claim.
    Start,
    /// The span is `Notifying`; the block has not reached its owner yet.
    Notifying,
    /// A heap adopting a segment has collected its remote frees and is
    /// about to park its large blocks: a remote free landing now must not
    /// be lost.
    Adopting,
}

impl Default for ForkGate {
    fn default() -> Self {
        Self::new()
    }
}
