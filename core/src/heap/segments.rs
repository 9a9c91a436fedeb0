//! The heap's segments: carving spans from them, getting more (adopting,
//! mapping, reclaiming when memory is short) and linking them.

use crate::layout::SLICE_SIZE;
use crate::segment::{Segment, HEADER_SLICES};
use crate::span::SpanKind;

use super::*;

impl Heap {
    /// Carves a used span of `n` slices starting on an `align` boundary
    /// (`align >= SLICE_SIZE`) from the bins, adding segments as needed.
    pub(super) fn alloc_span(
        &mut self,
        n: usize,
        align: usize,
        kind: SpanKind,
    ) -> Option<(*mut Segment, usize)> {
        loop {
            if let Some(found) = self.take_span(n, align, kind) {
                return Some(found);
            }
            if !self.add_segment() {
                return None;
            }
        }
    }

    /// Carves a used span of `n` slices starting on an `align` boundary
    /// (`align >= SLICE_SIZE`) from the bins; `None` when no binned span
    /// fits or its memory cannot be committed.
    pub(super) fn take_span(
        &mut self,
        n: usize,
        align: usize,
        kind: SpanKind,
    ) -> Option<(*mut Segment, usize)> {
        let global = self.global;
        // SAFETY: binned spans are free spans of owned segments.
        let (seg, idx, dirty) = unsafe {
            self.bins
                .carve(n, align, kind, |addr, len| global.commit(addr, len))?
        };
        if dirty {
            // SAFETY: `seg` is ours.
            unsafe { self.schedule_purge(seg) };
        }
        global.stats.add_active(n * SLICE_SIZE);
        Some((seg, idx))
    }

    /// Makes `[idx, idx+n)` of an own segment a free span, merged with its
    /// free neighbours, binned, and its purge scheduled if it is dirty.
    ///
    /// # Safety
    /// `seg` is an own segment; the slices are unused.
    pub(super) unsafe fn insert_free(
        &mut self,
        seg: *mut Segment,
        idx: usize,
        n: usize,
        dirty: bool,
        zero: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            if self.bins.insert_free(seg, idx, n, dirty, zero) {
                self.schedule_purge(seg);
            }
        }
    }

    /// Gives the heap a segment now and keeps its last segment for good:
    /// decay and reclaims still return its free memory, but never its
    /// address space. For a shared fallback heap, which must have room when
    /// threads that cannot get a segment of their own turn to it, exactly
    /// when memory is short. Returns false when no segment could be had.
    pub fn pin_segment(&mut self) -> bool {
        self.pinned = true;
        !self.segments.is_empty() || self.add_segment()
    }

    /// Whether `seg` is the one segment a pinned heap keeps.
    pub(super) fn keeps(&self, seg: *mut Segment) -> bool {
        // SAFETY: `seg` is an own segment.
        self.pinned && self.segments.first == seg && unsafe { (*seg).next.is_null() }
    }

    /// Gets one more segment: an abandoned one to adopt, else a new one;
    /// when none can be had, reclaims memory and tries once more. Returns
    /// false when out of memory.
    pub(super) fn add_segment(&mut self) -> bool {
        if let Some(seg) = self.global.pop_abandoned() {
            // SAFETY: popped abandoned segments are exclusively ours.
            unsafe { self.adopt(seg) };
            return true;
        }
        if self.new_segment() {
            return true;
        }
        self.reclaim() || self.new_segment()
    }

    /// Gives back every bit of memory this heap can reach, after a
    /// reservation failed: the cached segments and huge blocks, this heap's
    /// empty slabs and segments, and abandoned segments whose blocks other
    /// threads freed meanwhile (they are adopted, so their remote frees are
    /// collected; the empty ones are released). Returns whether segments
    /// with free space were adopted (the caller retries its carve).
    pub(super) fn reclaim(&mut self) -> bool {
        let now = self.global.now().unwrap_or(self.now);
        self.flush_quarantine();
        self.global.purge_cache(now, true);
        let mut adopted = 0;
        while let Some(seg) = self.global.pop_abandoned() {
            // SAFETY: popped abandoned segments are exclusively ours.
            unsafe { self.adopt(seg) };
            adopted += 1;
        }
        self.release_empty_slabs();
        // Retires every empty segment (under pressure, straight back to the
        // provider) and decommits the free spans of the rest.
        self.purge(true);
        adopted > 0 && !self.segments.is_empty()
    }

    /// Takes a fresh (or cached) segment from `Global`.
    pub(super) fn new_segment(&mut self) -> bool {
        let Some(seg) = self.global.new_segment() else {
            return false;
        };
        // SAFETY: a new segment is exclusively ours.
        unsafe {
            (*seg).set_owner(self.id());
            self.link_segment(seg);
            self.bins.insert(&mut (*seg).slices[HEADER_SLICES]);
        }
        true
    }

    pub(super) unsafe fn link_segment(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` is ours and unlinked.
        unsafe { self.segments.push_front(seg) };
    }

    pub(super) unsafe fn unlink_segment(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` is linked in our list.
        unsafe { self.segments.remove(seg) };
    }
}
