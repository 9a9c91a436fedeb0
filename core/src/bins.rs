//! Bins of free spans, owned by one heap: O(1) insert and remove, and a
//! bitmap of non-empty bins so the smallest fitting span is found without
//! scanning empty bins.
//!
//! Spans of fewer than 8 slices have a bin per length; above that, four
//! bins per power of two. A request looks first-fit in its own bin and
//! otherwise takes any span of the next non-empty bin, which always fits.

use core::ptr;

use crate::span::Span;

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
    heads: [*mut Span; BINS],
    nonempty: u64,
}

impl SpanBins {
    pub const fn new() -> Self {
        SpanBins {
            heads: [ptr::null_mut(); BINS],
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
            let head = self.heads[b];
            (*span).prev = ptr::null_mut();
            (*span).next = head;
            if !head.is_null() {
                (*head).prev = span;
            }
            self.heads[b] = span;
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
            let (prev, next) = ((*span).prev, (*span).next);
            if prev.is_null() {
                self.heads[b] = next;
                if next.is_null() {
                    self.nonempty &= !(1 << b);
                }
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*span).next = ptr::null_mut();
            (*span).prev = ptr::null_mut();
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
            let mut span = Self::lowest(self.heads[b], n);
            if span.is_null() {
                let higher = self.nonempty & !((2u64 << b) - 1);
                if higher == 0 {
                    return ptr::null_mut();
                }
                span = Self::lowest(self.heads[higher.trailing_zeros() as usize], n);
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

    /// Calls `f` on every binned span; `f` may not relink spans.
    pub fn for_each(&self, mut f: impl FnMut(*mut Span)) {
        let mut bits = self.nonempty;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let mut cur = self.heads[b];
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
