//! The heap's side of the batched statistics (see [`crate::stats`]): the
//! counting where a slab's cached blocks change hands, and the cached-block
//! counts read from the slab descriptors on demand.

use core::ptr::{addr_of, read_volatile};

use crate::segment::Segment;
use crate::size_class::NUM_CLASSES;
use crate::span::{Span, SpanKind};

use super::*;

/// Cached blocks per size class.
pub type ClassCounts = [u64; NUM_CLASSES];

/// Most segments one heap's list is followed through while another thread
/// may be changing it (a guard against a list caught mid-update).
const MAX_WALKED_SEGMENTS: usize = 1 << 20;

impl Heap {
    /// Settles the counts of a slab that dies or leaves this heap: its
    /// cached blocks (`free` and `local_free`, `capacity - used` of them)
    /// count as freed. In O(1), without walking the lists: blocks that
    /// were carved or collected and never handed out again are then
    /// counted as one allocation and one free each, which keeps the live
    /// counts exact and lets the operation counts run ahead by at most the
    /// blocks a slab held unused when it died.
    ///
    /// # Safety
    /// `page` is an own slab.
    pub(super) unsafe fn count_cached_as_freed(&mut self, page: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe {
            let cached = (*page).capacity.saturating_sub((*page).used);
            self.stats
                .add_class_frees((*page).class as usize, cached as u64);
        }
    }

    /// The blocks on the `local_free` lists of this heap's queued slabs,
    /// per class: frees made and not counted yet (the owner's view).
    pub fn uncounted_frees(&self, out: &mut ClassCounts) {
        for (c, n) in out.iter_mut().enumerate() {
            let mut page = self.queues.first(c);
            let mut walked = 0;
            while !page.is_null() && walked < MAX_WALKED_SEGMENTS {
                // SAFETY: queued pages are own slabs; only the owner calls.
                unsafe {
                    *n += (*page).list_len((*page).local_free) as u64;
                    page = (*page).next;
                }
                walked += 1;
            }
        }
    }

    /// Adds the blocks cached by this heap's slabs, per class, to `out`.
    ///
    /// Reads only segment headers (the descriptors' `capacity` and `used`),
    /// never block memory, so another thread may call it on a live heap
    /// while holding `Global::heaps` (the heap stays alive) and
    /// `Global::release_lock` (no header is unmapped meanwhile): the reads
    /// are then racy but harmless, and exact when the owner is quiescent.
    pub fn cached_blocks(&self, out: &mut ClassCounts) {
        let mut seg = self.segments.first;
        let mut walked = 0;
        while !seg.is_null() && walked < MAX_WALKED_SEGMENTS {
            // SAFETY: a segment on this heap's list; while another thread
            // reads, it may have just left the list, but its header stays
            // mapped (see above). Volatile reads: the owner may be writing.
            unsafe {
                add_cached_of_segment(seg, out);
                seg = read_volatile(addr_of!((*seg).next));
            }
            walked += 1;
        }
    }

    /// This heap's (allocations, frees, bytes allocated minus freed) as
    /// another thread sees them: blocks freed and not collected yet count
    /// as neither allocated nor freed (see [`crate::stats`]).
    pub fn totals(&self) -> (u64, u64, u64) {
        let mut cached = [0; NUM_CLASSES];
        self.cached_blocks(&mut cached);
        self.stats.totals_less(&cached, &[0; NUM_CLASSES])
    }

    /// [`Heap::totals`], exact: the owner also counts the frees on its
    /// slabs' local lists.
    pub fn own_totals(&self) -> (u64, u64, u64) {
        let (mut cached, mut freed) = ([0; NUM_CLASSES], [0; NUM_CLASSES]);
        self.cached_blocks(&mut cached);
        self.uncounted_frees(&mut freed);
        self.stats.totals_less(&cached, &freed)
    }
}

/// Adds the cached blocks of every slab of `seg` to `out`.
///
/// # Safety
/// `seg` must point to a mapped segment header (its contents may change
/// meanwhile: every value read is bounded before use).
unsafe fn add_cached_of_segment(seg: *const Segment, out: &mut ClassCounts) {
    let mut idx = HEADER_SLICES;
    while idx < SLICES_PER_SEGMENT {
        // SAFETY: `idx` is a slice of the segment; see the contract.
        unsafe {
            let d: *const Span = addr_of!((*seg).slices[idx]);
            let kind = read_volatile(addr_of!((*d).kind) as *const u8);
            let count = read_volatile(addr_of!((*d).slice_count)) as usize;
            if kind == SpanKind::Slab as u8 {
                let class = read_volatile(addr_of!((*d).class)) as usize;
                let capacity = read_volatile(addr_of!((*d).capacity));
                let used = read_volatile(addr_of!((*d).used));
                if let Some(c) = out.get_mut(class) {
                    *c += capacity.saturating_sub(used) as u64;
                }
            }
            idx += count.max(1);
        }
    }
}
