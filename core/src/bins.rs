//! Bins of free spans, owned by one heap, and the carving and coalescing of
//! spans inside the heap's segments: O(1) insert and remove, and a bitmap of
//! non-empty bins so the smallest fitting span is found without scanning
//! empty bins.
//!
//! Spans of fewer than 8 slices have a bin per length; above that, four
//! bins per power of two. A request looks first-fit in its own bin and
//! otherwise takes any span of the next non-empty bin, which always fits.

use core::ptr;

use crate::layout::{align_up, SLICES_PER_SEGMENT, SLICE_SIZE};
use crate::list::List;
use crate::segment::{segment_of, Segment};
use crate::span::{check, Broken, Span, SpanKind};

const BINS: usize = 64;

/// Bin index for a span of `n >= 1` slices.
#[inline]
pub fn bin_of(n: usize) -> usize {
    if n < 8 {
        n
    } else {
        let k = (usize::BITS - 1 - n.leading_zeros()) as usize;
        8 + (k - 3) * 4 + ((n >> (k - 2)) & 3)
    }
}

/// Free spans of one heap, linked through their first descriptor.
pub struct SpanBins {
    bins: [List<Span>; BINS],
    nonempty: u64,
}

impl SpanBins {
    pub const fn new() -> Self {
        SpanBins {
            bins: [List::new(); BINS],
            nonempty: 0,
        }
    }

    /// Adds a free span.
    ///
    /// # Safety
    /// `span` must be the first descriptor of a free span not in any bin.
    pub unsafe fn insert(&mut self, span: *mut Span) {
        // SAFETY: the caller passes a valid descriptor we may link.
        unsafe {
            let b = bin_of((*span).slice_count as usize);
            self.bins[b].push_front(span);
            self.nonempty |= 1 << b;
        }
    }

    /// Removes a span that is in a bin.
    ///
    /// # Safety
    /// `span` must currently be linked in these bins.
    pub unsafe fn remove(&mut self, span: *mut Span) {
        // SAFETY: the caller guarantees the span is linked here.
        unsafe {
            let b = bin_of((*span).slice_count as usize);
            self.bins[b].remove(span);
            if self.bins[b].is_empty() {
                self.nonempty &= !(1 << b);
            }
        }
    }

    /// Removes and returns a span of at least `n` slices, if any: the
    /// lowest-addressed fitting span of the first bin that has one.
    /// Address order keeps a heap's spans packed at the low end of its
    /// segments, so the memory it touches over time stays close to what it
    /// uses at once instead of wandering over whole segments (and the
    /// resident reserve a segment keeps, its lowest free slices, is what
    /// gets reused).
    ///
    /// # Safety
    /// Every linked descriptor must be valid.
    pub unsafe fn take(&mut self, n: usize) -> *mut Span {
        let b = bin_of(n);
        // SAFETY: linked descriptors are valid (caller's invariant).
        unsafe {
            let mut span = Self::lowest(self.bins[b].first, n);
            if span.is_null() {
                let higher = self.nonempty & !((2u64 << b) - 1);
                if higher == 0 {
                    return ptr::null_mut();
                }
                span = Self::lowest(self.bins[higher.trailing_zeros() as usize].first, n);
            }
            self.remove(span);
            span
        }
    }

    /// The lowest-addressed span of at least `n` slices among the first
    /// `SCAN_LIMIT` of a bin's list (a bound, so a heap with thousands of
    /// equal fragments does not pay a long walk per carve).
    ///
    /// # Safety
    /// Every linked descriptor must be valid.
    unsafe fn lowest(mut cur: *mut Span, n: usize) -> *mut Span {
        const SCAN_LIMIT: usize = 32;
        let mut best: *mut Span = ptr::null_mut();
        let mut seen = 0;
        // SAFETY: the caller's contract.
        unsafe {
            while !cur.is_null() && (seen < SCAN_LIMIT || best.is_null()) {
                seen += 1;
                if (*cur).slice_count as usize >= n && (best.is_null() || cur < best) {
                    best = cur;
                }
                cur = (*cur).next;
            }
        }
        best
    }

    /// Carves a used span of `n` slices of `kind` starting on an `align`
    /// boundary (`align >= SLICE_SIZE`) out of a binned span; its memory is
    /// committed with `commit(addr, len)`. The rest of the free span goes
    /// back to the bins. Returns the segment, the span's first slice, and
    /// whether dirty free memory was binned (the heap schedules its purge);
    /// `None` when no binned span fits or the commit fails.
    ///
    /// # Safety
    /// Every binned span must be a free span of a segment the caller holds.
    pub unsafe fn carve(
        &mut self,
        n: usize,
        align: usize,
        kind: SpanKind,
        commit: impl FnOnce(usize, usize) -> bool,
    ) -> Option<(*mut Segment, usize, bool)> {
        let extra = (align - SLICE_SIZE) / SLICE_SIZE;
        // SAFETY: the caller's contract.
        unsafe {
            let span = self.take(n + extra);
            if span.is_null() {
                return None;
            }
            let seg = segment_of(span);
            let s = &mut *seg;
            let idx = s.index_of(span);
            let m = (*span).slice_count as usize;
            let (dirty, zero) = ((*span).dirty, (*span).span_is_zero);
            let head = (align_up(s.slice_addr(idx), align) - s.slice_addr(idx)) / SLICE_SIZE;
            let at = idx + head;
            if !commit(s.slice_addr(at), n * SLICE_SIZE) {
                s.mark_free(idx, m, dirty, zero);
                self.insert(span);
                return None;
            }
            s.mark_used(at, n, kind);
            s.mark_resident(at, n);
            s.slices[at].span_is_zero = zero;
            let mut binned_dirty = false;
            if head > 0 {
                binned_dirty |= self.insert_free(seg, idx, head, dirty, zero);
            }
            if m > head + n {
                binned_dirty |= self.insert_free(seg, at + n, m - head - n, dirty, zero);
            }
            s.used_slices += n;
            Some((seg, at, binned_dirty))
        }
    }

    /// Makes `[idx, idx+n)` of `seg` a free span, merged with its free
    /// neighbours, and bins it. Returns whether the merged span is dirty
    /// (may hold resident pages): the heap then schedules its purge.
    ///
    /// # Safety
    /// The caller holds `seg`, whose free spans are all in these bins; the
    /// slices are unused.
    pub unsafe fn insert_free(
        &mut self,
        seg: *mut Segment,
        idx: usize,
        n: usize,
        dirty: bool,
        zero: bool,
    ) -> bool {
        // SAFETY: the caller's contract: any free neighbour found through
        // the boundary tags is in these bins.
        unsafe {
            let s = &mut *seg;
            let (mut idx, mut n, mut dirty, mut zero) = (idx, n, dirty, zero);
            let r = idx + n;
            if r < SLICES_PER_SEGMENT {
                let right: *mut Span = &mut s.slices[r];
                if (*right).kind == SpanKind::Free && (*right).slice_count > 0 {
                    self.remove(right);
                    n += (*right).slice_count as usize;
                    dirty |= (*right).dirty;
                    zero &= (*right).span_is_zero;
                    (*right).slice_count = 0;
                }
            }
            if let Some(l) = s.span_before(idx) {
                let left: *mut Span = &mut s.slices[l];
                if (*left).kind == SpanKind::Free && (*left).slice_count as usize == idx - l {
                    self.remove(left);
                    s.slices[idx].slice_count = 0;
                    s.slices[idx].kind = SpanKind::Free;
                    n += idx - l;
                    dirty |= (*left).dirty;
                    zero &= (*left).span_is_zero;
                    idx = l;
                }
            }
            s.mark_free(idx, n, dirty, zero);
            self.insert(&mut s.slices[idx]);
            dirty
        }
    }

    /// Checks the bins: every binned span is a free span filed under its
    /// length's bin, the links are consistent both ways, the bitmap marks
    /// exactly the non-empty bins. Returns how many spans are binned.
    pub fn verify(&self) -> Result<usize, Broken> {
        let mut count = 0;
        for b in 0..BINS {
            let head = self.bins[b].first;
            check(
                head.is_null() == (self.nonempty & (1 << b) == 0),
                "bin bitmap out of step",
                b,
            )?;
            let mut prev: *mut Span = ptr::null_mut();
            let mut cur = head;
            while !cur.is_null() {
                // SAFETY: linked descriptors are valid (the bins' invariant,
                // checked here one link at a time).
                unsafe {
                    let at = cur as usize;
                    check((*cur).kind == SpanKind::Free, "binned span not free", at)?;
                    check((*cur).slice_count > 0, "binned span without a length", at)?;
                    check(
                        bin_of((*cur).slice_count as usize) == b,
                        "span in the wrong bin",
                        at,
                    )?;
                    check((*cur).prev == prev, "bin back link", at)?;
                    prev = cur;
                    cur = (*cur).next;
                }
                count += 1;
            }
        }
        Ok(count)
    }

    /// Calls `f` on every binned span; `f` may not relink spans.
    pub fn for_each(&self, mut f: impl FnMut(*mut Span)) {
        let mut bits = self.nonempty;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let mut cur = self.bins[b].first;
            while !cur.is_null() {
                // SAFETY: linked descriptors are valid; read `next` first so
                // `f` may change the span's own state.
                let next = unsafe { (*cur).next };
                f(cur);
                cur = next;
            }
        }
    }
}

impl Default for SpanBins {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_monotonic_and_fit() {
        let mut last = 0;
        for n in 1..=4096 {
            let b = bin_of(n);
            assert!(b >= last && b < BINS);
            last = b;
        }
    }
}
