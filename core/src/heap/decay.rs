//! Decay: free memory goes back to the provider once its segment has gone
//! a purge delay without new frees, beyond a resident reserve; and at once
//! on request (`malloc_trim`).

use crate::layout::{SLICES_PER_SEGMENT, SLICE_SIZE};
use crate::options::PURGE_MAX_DEFER;
use crate::segment::{segment_of, Segment, HEADER_SLICES};
use crate::size_class::NUM_CLASSES;
use crate::stats::bump;

use super::*;

impl Heap {
    /// Notes that `seg` gained a dirty free span: its dirty spans become
    /// due for decommit one purge delay from now. A segment that keeps
    /// freeing is in active use, so each new dirty span pushes the deadline
    /// out again, but never beyond `PURGE_MAX_DEFER` delays after the batch
    /// began: decommitting memory that is about to be reused only buys page
    /// faults, while a bound keeps a busy segment from hoarding forever.
    /// The clock is read afresh (a coarse monotonic clock on Linux, cheap);
    /// without one, time is the slow-path event count.
    pub(super) unsafe fn schedule_purge(&mut self, seg: *mut Segment) {
        if let Some(t) = self.global.now() {
            self.now = t;
        }
        let now = self.now;
        let delay = self.global.options.purge_delay();
        // SAFETY: the caller holds `seg` (owns or is adopting it).
        unsafe {
            let s = &mut *seg;
            if s.purge_at == 0 {
                s.purge_first = now;
                // Never 0, which marks "nothing pending".
                s.purge_at = now.saturating_add(delay).max(1);
            } else {
                let bound = s
                    .purge_first
                    .saturating_add(delay.saturating_mul(PURGE_MAX_DEFER));
                s.purge_at = s.purge_at.max(now.saturating_add(delay).min(bound));
            }
        }
    }

    /// Per-slow-path housekeeping: delayed frees and, now and then, decay.
    #[inline]
    pub(super) fn on_slow_path(&mut self) {
        self.drain_delayed();
        self.tick += 1;
        bump(&self.stats.slow_paths, 1);
        if self.tick.is_multiple_of(PURGE_CHECK_INTERVAL) {
            self.now = self
                .global
                .now()
                .unwrap_or(self.tick / PURGE_CHECK_INTERVAL + 1);
            // Deadlines are in clock time, so a second check within one
            // tick (a loop that takes the slow path on every call) finds
            // nothing new due: skip it, it walks every free span.
            if self.now != self.purged_at {
                self.purged_at = self.now;
                self.purge(false);
            }
        }
    }

    /// Runs the decay check now instead of at the next periodic one: free
    /// spans and empty segments older than the purge delay go back to the
    /// provider (a kernel's idle loop, or a thread about to sleep).
    pub fn decay(&mut self) {
        self.drain_delayed();
        self.now = self
            .global
            .now()
            .unwrap_or(self.tick / PURGE_CHECK_INTERVAL + 1);
        self.purge(false);
    }

    /// Returns memory to the provider now: every free span is decommitted,
    /// every empty segment and every cached range released. For
    /// `malloc_trim` and `arena.purge`.
    pub fn release_now(&mut self) {
        self.flush_quarantine();
        self.release_empty_slabs();
        self.now = self.global.now().unwrap_or(self.now);
        self.purge(true);
        self.global.purge_abandoned(self.now, 0, true);
        self.global.purge_cache(self.now, true);
    }

    /// Retires the empty slabs each class queue keeps for reuse, so their
    /// spans become free spans (and their segments possibly empty).
    pub fn release_empty_slabs(&mut self) {
        self.drain_delayed();
        for c in 0..NUM_CLASSES {
            let mut page = self.queues.first(c);
            while !page.is_null() {
                // SAFETY: queued pages are our own slabs.
                unsafe {
                    let next = (*page).next;
                    self.collect(page);
                    if (*page).used == 0 {
                        self.queues.remove(c, page);
                        self.retire_span(page);
                    }
                    page = next;
                }
            }
        }
    }

    /// Decommits dirty free spans of segments whose purge deadline has
    /// passed, beyond a resident reserve, and retires segments that are
    /// entirely free. With `force`, decommits every free span and retires
    /// every empty segment.
    ///
    /// The reserve (a quarter of the heap's used slices, at least
    /// `PURGE_RESERVE_MIN` bytes) keeps the free memory a heap cycles
    /// through from being decommitted and faulted in again on every
    /// fluctuation; what exceeds it after a burst is returned.
    pub(super) fn purge(&mut self, force: bool) {
        let now = self.now;
        let global = self.global;
        let full_span = (SLICES_PER_SEGMENT - HEADER_SLICES) as u32;
        // A segment is due when its deadline passed or nothing is pending
        // (`purge_at == 0`).
        let due = |seg: *mut Segment| {
            // SAFETY: only called on our own segments.
            force || now >= unsafe { (*seg).purge_at }
        };
        let mut used = 0usize;
        let mut seg = self.segments.first;
        while !seg.is_null() {
            // SAFETY: owned segments are linked through `next`.
            unsafe {
                used += (*seg).used_slices;
                seg = (*seg).next;
            }
        }
        let mut dirty = 0usize;
        self.bins.for_each(|span| {
            // SAFETY: binned spans are free spans of owned segments.
            unsafe {
                if (*span).dirty {
                    let seg = segment_of(span);
                    let idx = (*seg).index_of(span);
                    dirty += (*seg).resident_count(idx, (*span).slice_count as usize);
                }
            }
        });
        let keep = if force {
            0
        } else {
            (used / 4).max(PURGE_RESERVE_MIN / SLICE_SIZE)
        };
        let mut excess = dirty.saturating_sub(keep);
        if excess > 0 {
            self.bins.for_each(|span| {
                // SAFETY: binned spans are free spans of owned segments.
                unsafe {
                    let seg = segment_of(span);
                    // Whole free segments are retired below instead (but
                    // for the one a pinned heap keeps).
                    if excess == 0
                        || !(*span).dirty
                        || ((*span).slice_count == full_span && !self.keeps(seg))
                        || !due(seg)
                    {
                        return;
                    }
                    let idx = (*seg).index_of(span);
                    let n = (*span).slice_count as usize;
                    excess = excess.saturating_sub(global.decommit_free_span(seg, idx, n));
                }
            });
        }
        let mut seg = self.segments.first;
        while !seg.is_null() {
            // SAFETY: owned segments; an empty one is a single binned span.
            unsafe {
                let next = (*seg).next;
                if !due(seg) {
                    seg = next;
                    continue;
                }
                // The batch is dealt with; what stayed resident is within
                // the reserve and remains eligible at later checks.
                (*seg).purge_at = 0;
                if (*seg).used_slices == 0 && !self.keeps(seg) {
                    self.release_segment(seg);
                }
                seg = next;
            }
        }
        if !force {
            global.decay(now);
        }
    }
}
