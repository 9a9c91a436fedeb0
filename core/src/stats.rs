//! Counters. Nothing here is written on the fast paths: the only count
//! they keep is each slab's `used` (in the descriptor they touch anyway).
//!
//! Small blocks are counted per size class in batches, where blocks enter
//! or leave a thread's cache of free blocks:
//! - `class_mallocs` grows by the blocks put on a slab's `free` list (a
//!   carve, a collection of local or remote frees, an adopted slab's free
//!   blocks);
//! - `class_frees` grows by the local frees a collection takes, by every
//!   remote free this heap makes, and by a slab's cached blocks (`free` and
//!   `local_free`) when the slab dies or is abandoned.
//!
//! So each block on a live slab's lists is counted once more in
//! `class_mallocs` than in `class_frees`, like a live block; a slab's
//! cached blocks are `capacity - used` (its descriptor says so), and the
//! live blocks of a class are `mallocs - frees - cached`. A reader gets the
//! cached counts from the descriptors of every live heap's slabs (the
//! heap's `snapshot` does): exact when the heaps are quiescent, and
//! while they run off by at most the blocks moving at that moment. Blocks
//! freed by the owner and not collected yet count as neither allocated nor
//! freed, so operation counts (not live counts) may trail by them.
//!
//! Per-heap counters are written only by their owner with plain load/store
//! pairs and summed by readers; global counters change on slow paths only.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::size_class::{class_size, NUM_CLASSES};

/// Adds to a counter that only one thread writes.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Counters kept by each heap. Small blocks are counted per size class
/// (one store per operation; bytes follow from the class sizes); large and
/// huge blocks in `mallocs`/`frees` and the byte counters.
pub struct HeapStats {
    pub class_mallocs: [AtomicU64; NUM_CLASSES],
    pub class_frees: [AtomicU64; NUM_CLASSES],
    pub mallocs: AtomicU64,
    pub frees: AtomicU64,
    pub malloc_bytes: AtomicU64,
    pub free_bytes: AtomicU64,
    pub remote_frees: AtomicU64,
    pub slow_paths: AtomicU64,
}

impl HeapStats {
    pub const fn new() -> Self {
        HeapStats {
            class_mallocs: [const { AtomicU64::new(0) }; NUM_CLASSES],
            class_frees: [const { AtomicU64::new(0) }; NUM_CLASSES],
            mallocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            malloc_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(0),
            remote_frees: AtomicU64::new(0),
            slow_paths: AtomicU64::new(0),
        }
    }
}

impl Default for HeapStats {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapStats {
    /// Counts `n` blocks of class `c` entering a slab's `free` list.
    #[inline]
    pub fn add_class_mallocs(&self, c: usize, n: u64) {
        if let Some(a) = self.class_mallocs.get(c) {
            bump(a, n);
        }
    }

    /// Counts `n` blocks of class `c` freed (see the module comment).
    #[inline]
    pub fn add_class_frees(&self, c: usize, n: u64) {
        if let Some(a) = self.class_frees.get(c) {
            bump(a, n);
        }
    }

    /// (allocations, frees, bytes allocated minus bytes freed), for a heap
    /// with no cached blocks (a retired one's totals).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.totals_less(&[0; NUM_CLASSES], &[0; NUM_CLASSES])
    }

    /// (allocations, frees, bytes allocated minus bytes freed) of a heap
    /// whose slabs cache `cached[c]` blocks of class `c`, `freed[c]` of
    /// which were freed (the rest were never handed out).
    pub fn totals_less(
        &self,
        cached: &[u64; NUM_CLASSES],
        freed: &[u64; NUM_CLASSES],
    ) -> (u64, u64, u64) {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (mut m, mut f) = (ld(&self.mallocs), ld(&self.frees));
        let mut bytes = ld(&self.malloc_bytes).wrapping_sub(ld(&self.free_bytes));
        for c in 0..NUM_CLASSES {
            let unused = cached[c].saturating_sub(freed[c]);
            let cm = ld(&self.class_mallocs[c]).wrapping_sub(unused);
            let cf = ld(&self.class_frees[c]).wrapping_add(freed[c]);
            // One heap's share may be "negative" (blocks it adopted or
            // collected count where they were first handed out): only
            // the sum over all heaps is meaningful, so wrap.
            m = m.wrapping_add(cm);
            f = f.wrapping_add(cf);
            bytes = bytes.wrapping_add(cm.wrapping_sub(cf).wrapping_mul(class_size(c) as u64));
        }
        (m, f, bytes)
    }

    /// Sets every counter to zero.
    pub fn reset(&self) {
        let zero = |c: &AtomicU64| c.store(0, Ordering::Relaxed);
        for c in 0..NUM_CLASSES {
            zero(&self.class_mallocs[c]);
            zero(&self.class_frees[c]);
        }
        zero(&self.mallocs);
        zero(&self.frees);
        zero(&self.malloc_bytes);
        zero(&self.free_bytes);
        zero(&self.remote_frees);
        zero(&self.slow_paths);
    }

    /// Adds every counter of `other` into `self` (atomically).
    pub fn absorb(&self, other: &HeapStats) {
        let add = |to: &AtomicU64, from: &AtomicU64| {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        for c in 0..NUM_CLASSES {
            add(&self.class_mallocs[c], &other.class_mallocs[c]);
            add(&self.class_frees[c], &other.class_frees[c]);
        }
        add(&self.mallocs, &other.mallocs);
        add(&self.frees, &other.frees);
        add(&self.malloc_bytes, &other.malloc_bytes);
        add(&self.free_bytes, &other.free_bytes);
        add(&self.remote_frees, &other.remote_frees);
        add(&self.slow_paths, &other.slow_paths);
    }
}

/// Counters shared by all heaps.
pub struct GlobalStats {
    /// Bytes reserved from the provider and not yet released.
    pub reserved: AtomicUsize,
    /// Bytes in used spans and huge blocks (the heap's active footprint).
    pub active: AtomicUsize,
    pub active_peak: AtomicUsize,
    /// Bytes given back with `decommit` so far.
    pub decommitted_total: AtomicU64,
    pub segments: AtomicUsize,
    pub segments_peak: AtomicUsize,
    pub huge_live: AtomicUsize,
    pub abandoned: AtomicUsize,
    pub adopted_total: AtomicU64,
    pub heaps_live: AtomicUsize,
    /// Frees of pointers the allocator never handed out (ignored).
    pub foreign_frees: AtomicU64,
}

impl GlobalStats {
    pub const fn new() -> Self {
        GlobalStats {
            reserved: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            active_peak: AtomicUsize::new(0),
            decommitted_total: AtomicU64::new(0),
            segments: AtomicUsize::new(0),
            segments_peak: AtomicUsize::new(0),
            huge_live: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            adopted_total: AtomicU64::new(0),
            heaps_live: AtomicUsize::new(0),
            foreign_frees: AtomicU64::new(0),
        }
    }

    pub fn add_active(&self, n: usize) {
        let now = self.active.fetch_add(n, Ordering::Relaxed) + n;
        self.active_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn sub_active(&self, n: usize) {
        self.active.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for GlobalStats {
    fn default() -> Self {
        Self::new()
    }
}

/// A consistent-enough snapshot of every counter, summed over heaps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub mallocs: u64,
    pub frees: u64,
    /// Bytes currently allocated (usable sizes), summed over heaps.
    pub allocated: u64,
    pub remote_frees: u64,
    pub active: usize,
    pub active_peak: usize,
    pub reserved: usize,
    pub decommitted_total: u64,
    pub segments: usize,
    pub segments_peak: usize,
    pub huge_live: usize,
    pub abandoned: usize,
    pub adopted_total: u64,
    pub heaps_live: usize,
    pub foreign_frees: u64,
}
