//! Thread exit and thread start: a heap going away abandons its segments
//! with their live blocks; a heap that needs a segment adopts one.

use crate::bins::SpanBins;
use crate::fatal::Misuse;
use crate::fork::HandoffPoint;
use crate::layout::SLICE_SIZE;
use crate::remote::Notify;
use crate::segment::Segment;
use crate::span::{Span, SpanKind};

use super::*;

impl Heap {
    /// Takes remote frees of every used span of `seg` into local lists and
    /// turns spans that became empty into (uncoalesced) free spans.
    pub(super) unsafe fn sweep_segment(&mut self, seg: *mut Segment) {
        // SAFETY: forwarded from the caller.
        unsafe { self.sweep(seg, None) };
    }

    /// [`Heap::sweep_segment`] for the span at slice `idx` alone, or for
    /// every span when `only` is `None`. Returns the slices freed.
    unsafe fn sweep(&mut self, seg: *mut Segment, only: Option<usize>) -> usize {
        // SAFETY: `seg` is owned by this heap (or being adopted by it).
        unsafe {
            let check = self.harden.contains(crate::harden::Mitigations::BITMAP);
            let global = self.global;
            let guarded = self
                .harden
                .contains(crate::harden::Mitigations::LARGE_GUARDS);
            let mut unguard = |d: &Span| {
                let span_end = d.start + d.slice_count as usize * SLICE_SIZE;
                let block_end = d.start + d.block_size;
                if guarded && span_end > block_end {
                    global.protect(block_end, span_end - block_end, true);
                }
            };
            let swept = match only {
                None => (*seg).sweep(check, unguard),
                Some(idx) => (*seg).sweep_span(idx, check, &mut unguard),
            };
            let freed = match swept {
                Ok(n) => n,
                Err(b) => self.global.misuse(Misuse::DoubleFree, b, None),
            };
            if freed > 0 {
                self.global.stats.sub_active(freed * SLICE_SIZE);
                self.schedule_purge(seg);
            }
            freed
        }
    }

    /// Gives up every segment: drains notifications, returns empty segments
    /// and pushes the rest on the abandoned list.
    pub(super) fn abandon_all(&mut self) {
        self.drain_delayed();
        // No page may stay in `Notify`: remote freers would then reach for
        // this heap after it is gone. `set_notify` waits out `Notifying`.
        let mut seg = self.segments.first;
        while !seg.is_null() {
            // SAFETY: owned segments; spans are walked by their tags.
            unsafe {
                for (idx, _) in Segment::spans(seg) {
                    let d = &(*seg).slices[idx];
                    if matches!(d.kind, SpanKind::Slab | SpanKind::Large) {
                        d.thread_free.set_notify(Notify::Normal);
                    }
                }
                seg = (*seg).next;
            }
        }
        self.drain_delayed();
        while !self.segments.is_empty() {
            let seg = self.segments.first;
            // SAFETY: owned segment, unlinked before it is handed on.
            unsafe {
                self.unlink_segment(seg);
                // Cached blocks leave this heap's counts (the adopter counts
                // them in again); remote frees still in flight were counted
                // by their freers and are not among them.
                for (idx, _) in Segment::spans(seg) {
                    let d: *mut Span = &mut (*seg).slices[idx];
                    if (*d).kind == SpanKind::Slab {
                        self.count_cached_as_freed(d);
                    }
                }
                self.sweep_segment(seg);
                if (*seg).used_slices == 0 {
                    (*seg).set_owner(0);
                    self.global.retire_segment(seg);
                } else {
                    self.trim_before_abandoning(seg);
                    (*seg).set_owner(0);
                    self.global.push_abandoned(seg);
                }
            }
        }
        self.bins = SpanBins::new();
        self.queues.clear();
    }

    /// Returns free memory of a segment about to be abandoned. Under thread
    /// churn a segment passes from heap to heap, each living too short a
    /// time to run its own decay check, and each owner touches a few more
    /// slices: memory whose purge is due goes back now, and otherwise the
    /// segment keeps as many free slices resident as it has used ones (the
    /// next owner's likely need; the lowest, which are carved first). The
    /// rest is purged while abandoned if nobody adopts it in time (see
    /// `Global::purge_abandoned`).
    ///
    /// # Safety
    /// `seg` is an own segment, swept, about to be abandoned.
    pub(super) unsafe fn trim_before_abandoning(&mut self, seg: *mut Segment) {
        // SAFETY: the caller's contract.
        unsafe {
            self.schedule_purge(seg);
            if self.now >= (*seg).purge_at {
                self.global.purge_segment(seg);
                return;
            }
            let keep = (*seg).used_slices.max(PURGE_RESERVE_MIN / SLICE_SIZE);
            if (*seg).resident_free_slices() > keep + TRIM_SLACK {
                self.global.trim_segment(seg, keep);
            }
        }
    }

    /// Takes over an abandoned segment with its live blocks.
    pub(super) unsafe fn adopt(&mut self, seg: *mut Segment) {
        // SAFETY: the segment was popped from the abandoned list, so only we
        // touch its metadata (remote freers touch only `thread_free`).
        unsafe {
            if !(*seg).cookie_ok(self.global.cookie_key()) {
                self.global
                    .misuse(Misuse::HeaderCorruption, seg as usize, None);
            }
            // Owner first: a page set to `Notify` below must lead remote
            // freers to us.
            (*seg).set_owner(self.id());
            self.link_segment(seg);
            self.sweep_segment(seg);
            self.global
                .fork_gate()
                .run_handoff_hook(HandoffPoint::Adopting);
            for (idx, _) in Segment::spans(seg) {
                let page: *mut Span = &mut (*seg).slices[idx];
                match (*page).kind {
                    SpanKind::Slab => {
                        let p = &mut *page;
                        // Its cached blocks (remote frees included, swept
                        // onto its local list) become ours.
                        self.stats.add_class_mallocs(
                            p.class as usize,
                            p.capacity.saturating_sub(p.used) as u64,
                        );
                        p.in_full = false;
                        let has_room =
                            !p.free.is_null() || !p.local_free.is_null() || p.capacity < p.reserved;
                        if has_room || !p.thread_free.set_notify(Notify::Notify) {
                            self.queues.push_back(p.class as usize, page);
                        } else {
                            p.in_full = true;
                        }
                    }
                    SpanKind::Large => {
                        (*page).in_full = true;
                        // A remote free racing in after the sweep leaves the
                        // block on the list; notify refuses then, and the
                        // free is collected as the sweep would have (live
                        // bit checked and cleared, guard page lifted).
                        while !(*page).thread_free.set_notify(Notify::Notify) {
                            if self.sweep(seg, Some(idx)) > 0 {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            let bins: *mut SpanBins = &mut self.bins;
            (*seg).coalesce_all(|s, i| (*bins).insert(&mut s.slices[i]));
        }
    }
}
