//! Run-time options, set by the frontend before the first allocation (the
//! hosted library reads them from `APEX_*` environment variables).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A segment's pending decommit is deferred by at most this many purge
/// delays while it keeps gaining free spans (see `Heap::schedule_purge`);
/// abandoned segments wait this many delays before their free memory goes.
pub const PURGE_MAX_DEFER: u64 = 8;

/// The option table; every field has a documented default.
pub struct Options {
    /// Milliseconds a free span stays resident before it is decommitted
    /// (`APEX_PURGE_DELAY_MS`, default 100). 0 purges at the next check.
    /// Shorter delays return memory sooner but, under thread churn or
    /// phased workloads, decommit memory that is faulted in again moments
    /// later.
    /// Without a provider clock this counts slow-path events instead.
    pub purge_delay: AtomicU64,
    /// Empty segments kept (decommitted) for reuse before release
    /// (`APEX_SEGMENT_CACHE`, default 8).
    pub segment_cache: AtomicUsize,
    /// Resident bytes of freed huge blocks and empty segments kept for reuse
    /// (`APEX_HUGE_CACHE_MB`, default 256 MiB). Entries older than the purge
    /// delay are decommitted at the next slow path; `malloc_trim` drops all.
    pub huge_cache_bytes: AtomicUsize,
}

impl Options {
    pub const fn new() -> Self {
        Options {
            purge_delay: AtomicU64::new(100),
            segment_cache: AtomicUsize::new(8),
            huge_cache_bytes: AtomicUsize::new(256 << 20),
        }
    }

    pub fn purge_delay(&self) -> u64 {
        self.purge_delay.load(Ordering::Relaxed)
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}
