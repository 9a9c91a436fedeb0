//! The free paths: own blocks onto their slab's local list, other heaps'
//! blocks through the remote-free protocol, slabs and segments that become
//! empty.

use core::sync::atomic::Ordering;

use crate::block::{next_of, Block};
use crate::fatal::Misuse;
use crate::fork::HandoffPoint;
use crate::harden::Mitigations;
use crate::layout::{segment_base_of, MIN_ALIGN, SLICES_PER_SEGMENT, SLICE_SHIFT, SLICE_SIZE};
use crate::live;
use crate::remote::{Notify, RemotePush};
use crate::segment::{self, segment_of, Segment, HEADER_SLICES};
use crate::segment_map;
use crate::span::{Span, SpanKind, TAG_QUEUED_SLAB};
use crate::stats::bump;

use super::*;

/// Where the free fast path left a block.
enum FreeStep {
    /// Freed.
    Done,
    /// Not a block of a segment this heap owns: another heap's, or not
    /// this allocator's at all (the segment base `segment_base_of` gives).
    Other(usize),
    /// In a segment this heap owns, but not a block of the first slice of
    /// a queued slab (a later slice of a slab of several, a slab parked
    /// full, a large block, or misuse).
    OwnOther(*mut Segment),
    /// Anything else: for the out-of-line paths.
    Slow,
}

impl Heap {
    /// Frees a block from any heap. Foreign pointers (not from this
    /// allocator) are ignored; detected misuse ends the process.
    ///
    /// # Safety
    /// `p` must be null, a foreign pointer, or a block from this allocator
    /// instance that is not used afterwards.
    #[inline(always)]
    pub unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded from the caller.
        unsafe {
            if !self.try_free_fast(p) {
                self.free_not_fast(p);
            }
        }
    }

    /// The free fast path alone: frees `p` if it is a block of a queued
    /// slab of this heap (returns true), else does nothing and returns
    /// false, leaving the pointer to [`Heap::free`].
    ///
    /// # Safety
    /// As [`Heap::free`].
    #[inline(always)]
    pub unsafe fn try_free_fast(&mut self, p: *mut u8) -> bool {
        // SAFETY: forwarded from the caller; `self` is a real heap.
        unsafe { Heap::try_free_fast_raw(self, p) }
    }

    /// [`Heap::try_free_fast`] through a pointer that may also be a
    /// [`Heap::placeholder`] shared by many threads: it reads the heap's
    /// fields in place and takes the heap as `&mut` only on a path a
    /// placeholder never reaches (a block of its own segment).
    ///
    /// # Safety
    /// As [`Heap::free`]; `this` is the calling thread's heap or a
    /// placeholder.
    #[inline(always)]
    pub unsafe fn try_free_fast_raw(this: *mut Heap, p: *mut u8) -> bool {
        // SAFETY: forwarded from the caller.
        matches!(unsafe { Heap::free_step(this, p) }, FreeStep::Done)
    }

    /// A whole free through a pointer as for [`Heap::try_free_fast_raw`]:
    /// the fast path inline, another heap's queued-slab block pushed to it
    /// out of line, and everything else handed to the frontend's `slow`
    /// path, each as a tail call (so the inline part keeps no stack
    /// frame).
    ///
    /// # Safety
    /// As [`Heap::try_free_fast_raw`]; `slow` must complete any free the
    /// fast path leaves (typically [`Heap::free_not_fast`] on the thread's
    /// heap).
    #[inline(always)]
    pub unsafe fn free_raw_or(this: *mut Heap, p: *mut u8, slow: unsafe fn(*mut u8)) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match Heap::free_step(this, p) {
                FreeStep::Done => {}
                FreeStep::Other(seg) => Heap::free_other_or(this, seg, p, slow),
                FreeStep::OwnOther(seg) => Heap::free_own_or(this, seg, p, slow),
                FreeStep::Slow => slow(p),
            }
        }
    }

    /// The free fast path, stopping where it leaves the block.
    ///
    /// # Safety
    /// As [`Heap::try_free_fast_raw`].
    #[inline(always)]
    unsafe fn free_step(this: *mut Heap, p: *mut u8) -> FreeStep {
        let addr = p as usize;
        let seg_base = segment_base_of(addr);
        // The common case, checked cheaply: a block of one of our own
        // segments (the segment map names the owner: one compare, nothing
        // read at `seg_base` first), in the first slice of a queued slab
        // (one tag compare). Everything else takes the fully validating
        // slow path, as does every free of a heap with slow paths (its
        // `fast_owner` is no heap's). Another heap's block goes to the
        // remote path from here, without a second lookup.
        // SAFETY: `this` is readable (the caller's contract).
        if !segment::owned_by(seg_base, unsafe { (*this).fast_owner }) {
            return FreeStep::Other(seg_base);
        }
        // SAFETY: the segment map says a live segment of ours is there.
        unsafe {
            let seg = seg_base as *mut Segment;
            // The slice index, wrapped to the segment: the one pointer that
            // `segment_base_of` maps to this segment from outside it (its
            // end) lands on the header's descriptor, which is never a slab.
            let idx = (addr >> SLICE_SHIFT) & (SLICES_PER_SEGMENT - 1);
            let d: *mut Span = (*seg).slices.as_mut_ptr().add(idx);
            if (*d).tag() != TAG_QUEUED_SLAB {
                return FreeStep::OwnOther(seg);
            }
            let b = p as *mut Block;
            // From here on `this` owns the segment: a real heap.
            let heap = &mut *this;
            if heap.harden.contains(Mitigations::BITMAP) {
                // Only handed-out block starts have their bit set, so the
                // bit alone proves a live block of this slab (no carved
                // check needed); anything else (a double free, an interior
                // or never-carved pointer) is told apart by the slow path.
                // Bits are per 16-byte granule: a pointer into the first
                // granule of a block must not pass for the block.
                // (`addr` lies in the segment: its descriptor was found.)
                if !addr.is_multiple_of(MIN_ALIGN) || !live::clear_at((*d).live_bits, addr) {
                    return FreeStep::Slow;
                }
            } else {
                if !(*d).is_carved_block(addr) {
                    return FreeStep::Slow;
                }
                if !heap.check_own_free(seg, d, b) {
                    // Freed out of line (a suspected double free that was
                    // not one).
                    return FreeStep::Done;
                }
            }
            (*d).push_local(b);
            if (*d).used == 0 {
                heap.after_local_free(d);
            }
            FreeStep::Done
        }
    }

    /// The double-free check of an own slab block: with the bitmap, its
    /// live bit must be set (and is cleared); without it, a first word that
    /// decodes to a free-list link is confirmed out of line. Returns false
    /// when the out-of-line check freed the block itself.
    ///
    /// # Safety
    /// `b` is a carved block start of the own slab `page` in `seg`.
    #[inline(always)]
    unsafe fn check_own_free(&mut self, seg: *mut Segment, page: *mut Span, b: *mut Block) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            if self.harden.contains(Mitigations::BITMAP) {
                if !(*seg).live.clear(b as usize) {
                    self.free_not_live(page, b);
                }
                return true;
            }
            let link = next_of(b, (*page).secret) as usize;
            // A free block's link is null or another carved block; live
            // blocks have their link cleared at allocation, so seeing one
            // is rare enough to confirm out of line, by scanning the page.
            if link == 0 || (*page).is_carved_block(link) {
                self.free_suspected_double(page, b);
                return false;
            }
            true
        }
    }

    /// A pointer that is not a block of a segment the freeing heap owns
    /// (or any pointer, for a heap with slow paths): another heap's block
    /// is pushed to its owner when it is in the first slice of a queued
    /// slab (the producer-consumer case), after the fast path's checks;
    /// everything else (null, foreign pointers too) goes to `slow`. Out of
    /// line, so the inline free path stays short.
    ///
    /// # Safety
    /// As [`Heap::free_raw_or`]; `seg_base` is `segment_base_of(p)`.
    #[inline(never)]
    unsafe fn free_other_or(
        this: *mut Heap,
        seg_base: usize,
        p: *mut u8,
        slow: unsafe fn(*mut u8),
    ) {
        // SAFETY: the caller's contract; a heap without fast paths (slow
        // presets, `disable_fast_paths`, the placeholder) is only read: its
        // frontend must see every free. A segment the map holds is live.
        unsafe {
            if (*this).fast_owner != NO_SEGMENT_OWNER
                && segment_map::contains(seg_base)
                && (*this).free_remote_queued(seg_base as *mut Segment, p as usize)
            {
                return;
            }
            slow(p)
        }
    }

    /// A pointer into a segment the freeing heap owns that the fast path
    /// passed over: a block of one of its slabs is freed after the fast
    /// path's checks wherever in the slab it lies (blocks of 8 KiB and
    /// more are mostly in later slices), without the frontend's slow
    /// entry; everything else (large blocks, misuse) goes to `slow`. Out of
    /// line, so the inline free path stays short.
    ///
    /// # Safety
    /// As [`Heap::free_raw_or`]; `seg` is a live segment that `this` (a
    /// real heap, then) owns, holding `p`.
    #[inline(never)]
    unsafe fn free_own_or(
        this: *mut Heap,
        seg: *mut Segment,
        p: *mut u8,
        slow: unsafe fn(*mut u8),
    ) {
        // SAFETY: the caller's contract: only a real heap owns segments.
        unsafe {
            if !(*this).free_own_slab_block(seg, p as usize) {
                slow(p)
            }
        }
    }

    /// The remote part of [`Heap::free_other_raw`] and
    /// [`Heap::free_not_fast`]: another heap's block in the first slice of
    /// one of its queued slabs is pushed to it; false for anything else.
    /// The slab's state is read without its owner's synchronisation, so it
    /// only picks the path; the push follows the remote-free protocol.
    ///
    /// # Safety
    /// `seg` is a live segment holding `addr`, not owned by this heap,
    /// which has no slow paths.
    #[inline(always)]
    unsafe fn free_remote_queued(&mut self, seg: *mut Segment, addr: usize) -> bool {
        // SAFETY: the caller's contract; the descriptor is found as on the
        // fast path.
        unsafe {
            if (*seg).owner() == self.id() {
                return false;
            }
            let idx = (addr >> SLICE_SHIFT) & (SLICES_PER_SEGMENT - 1);
            let d: *mut Span = (*seg).slices.as_mut_ptr().add(idx);
            if (*d).tag() != TAG_QUEUED_SLAB || !(*d).is_carved_block(addr) {
                return false;
            }
            // A remote free is counted by the heap that makes it.
            self.stats.add_class_frees((*d).class as usize, 1);
            self.free_remote(seg, d, addr as *mut Block);
            true
        }
    }

    /// Everything `try_free_fast` leaves: null and foreign pointers, other
    /// heaps' blocks, large and huge blocks, full pages, misuse.
    ///
    /// Frontends that ran [`Heap::try_free_fast`] themselves call this
    /// when it failed, rather than [`Heap::free`], which would try it again.
    ///
    /// # Safety
    /// As [`Heap::free`].
    #[cold]
    #[inline(never)]
    pub unsafe fn free_not_fast(&mut self, p: *mut u8) {
        let addr = p as usize;
        let seg_base = segment_base_of(addr);
        if !segment_map::contains(seg_base) {
            if !p.is_null() {
                self.free_foreign(addr, false);
            }
            return;
        }
        let seg = seg_base as *mut Segment;
        // SAFETY: a live segment is there; the descriptor is found as on
        // the fast path.
        unsafe {
            // Another heap's block in the first slice of one of its slabs
            // (from a frontend that did not run the fast path): pushed after
            // the fast path's checks. Our own blocks are here because the
            // fast path passed them over (a later slice of a slab of
            // several, a slab parked full) or something was wrong with
            // them: the first are freed after the fast path's checks, the
            // rest take the fully validating path for an exact report.
            if !self.slow_paths
                && (self.free_remote_queued(seg, addr) || self.free_own_slab_block(seg, addr))
            {
                return;
            }
            self.free_slow(seg, addr)
        }
    }

    /// Frees `addr` if it is a live block of one of this heap's slabs,
    /// with the fast path's checks, wherever in the slab it lies and
    /// whatever queue the slab is on; false (nothing done) for anything
    /// else, which the caller takes to the validating path.
    ///
    /// # Safety
    /// `seg` is the live segment `segment_base_of(addr)` names; the heap
    /// has no slow paths.
    #[inline(always)]
    unsafe fn free_own_slab_block(&mut self, seg: *mut Segment, addr: usize) -> bool {
        // SAFETY: the caller's contract; `page_of` bounds the descriptor's
        // back distance and turns free spans away.
        unsafe {
            if (*seg).owner() != self.fast_owner {
                return false;
            }
            let Some(page) = (*seg).page_of(addr) else {
                return false;
            };
            let page = page as *const Span as *mut Span;
            if (*page).kind != SpanKind::Slab {
                return false;
            }
            let b = addr as *mut Block;
            if self.harden.contains(Mitigations::BITMAP) {
                // As on the fast path: only handed-out block starts have
                // their bit set, and the span holding `addr` is this slab.
                if !addr.is_multiple_of(MIN_ALIGN) || !live::clear_at((*page).live_bits, addr) {
                    return false;
                }
            } else {
                if !(*page).is_carved_block(addr) {
                    return false;
                }
                if !self.check_own_free(seg, page, b) {
                    return true;
                }
            }
            self.push_local(page, b);
            true
        }
    }

    /// Frees a block of one of this heap's slabs, after its double-free
    /// check.
    ///
    /// # Safety
    /// `b` must be a carved block start of the slab `page`, owned by this
    /// heap.
    #[inline(always)]
    pub(super) unsafe fn free_to_own_slab(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller guarantees `page` is our slab holding `b`.
        unsafe {
            if !self.check_own_free(segment_of(page), page, b) {
                return;
            }
            if self.slow_paths {
                return self.free_small_hardened(page, b, true);
            }
            self.push_local(page, b);
        }
    }

    /// Puts a block of an own slab on the slab's local list and deals with
    /// a slab that this emptied or that was parked full.
    ///
    /// # Safety
    /// `page` is an own slab and `b` a live block of it, not used again.
    #[inline(always)]
    pub(super) unsafe fn push_local(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller's contract.
        unsafe {
            (*page).push_local(b);
            if (*page).used == 0 || (*page).in_full {
                self.after_local_free(page);
            }
        }
    }

    /// A block whose first word looks like a free-list link: a double free
    /// if the page's lists hold it, otherwise a live block whose data merely
    /// looks like a link, freed normally.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn free_suspected_double(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller passes our slab and a block start in it.
        unsafe {
            if (*page).list_contains(b) {
                self.global
                    .misuse(Misuse::DoubleFree, b as usize, Some((*page).usable()));
            }
            self.push_local(page, b);
        }
    }

    /// Frees everything the fast path does not: large blocks, blocks of
    /// other heaps, huge blocks, and misuse.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn free_slow(&mut self, seg: *mut Segment, addr: usize) {
        // SAFETY: `seg` is a live segment (checked by the caller).
        unsafe {
            let (page, usable) = match find_block(seg, addr) {
                Found::Block(page, usable) => (page, usable),
                Found::Invalid(m, size) => self.global.misuse(m, addr, size),
            };
            let b = addr as *mut Block;
            let own = !(*seg).is_huge && (*seg).owner() == self.id();
            if own && (*page).kind == SpanKind::Slab {
                // Own slab block the fast path did not take (multi-slice
                // slab, parked full, or a preset with slow paths).
                self.free_to_own_slab(page, b);
                return;
            }
            if !(*seg).is_huge && (*page).kind == SpanKind::Slab {
                // A remote free is counted by the heap that makes it.
                self.stats.add_class_frees((*page).class as usize, 1);
                if self.slow_paths {
                    return self.free_small_hardened(page, b, false);
                }
            } else {
                bump(&self.stats.frees, 1);
                bump(&self.stats.free_bytes, usable as u64);
            }
            if (*seg).is_huge {
                self.global.free_huge(seg, true);
                return;
            }
            if own {
                // Own large block. A live one waits in `Notify` for a remote
                // free; any other state means another thread freed it
                // already (it may sit in our delayed list).
                if (*page).thread_free.state() != Notify::Notify as usize {
                    self.global
                        .misuse(Misuse::DoubleFree, addr, Some((*page).usable()));
                }
                if self.harden.contains(Mitigations::BITMAP) && !(*seg).live.clear(addr) {
                    self.free_not_live(page, b);
                }
                self.free_own_block(page, b);
                return;
            }
            self.free_remote(seg, page, b);
        }
    }

    /// Hands a block of a parked full page to the page's owner through its
    /// delayed-free list, which brings the page back into the owner's
    /// queue. Two steps that a `fork` must not split (a child would find
    /// the page `Notifying` for ever), hence the fork guard around them.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn hand_over(&mut self, page: *mut Span, seg: *mut Segment, b: *mut Block) {
        self.global
            .fork_gate()
            .run_handoff_hook(HandoffPoint::Start);
        let _guard = self.global.fork_guard();
        // SAFETY: `b` is a live block of `page` given up by the caller;
        // while we hold `Notifying` the owner cannot go away.
        unsafe {
            let large = (*page).kind == SpanKind::Large;
            match (*page).thread_free.push(b, (*page).secret, true) {
                RemotePush::Notifying => {
                    self.global
                        .fork_gate()
                        .run_handoff_hook(HandoffPoint::Notifying);
                    let owner = (*seg).owner.load(Ordering::Acquire) as *const Heap;
                    (*owner).delayed.push(b, (*owner).key);
                    let then = if large { Notify::Freed } else { Notify::Normal };
                    (*page).thread_free.end_notifying(then);
                }
                // Since the caller saw `Notify`, the owner took the span
                // back into its queue or gave the segment up (thread exit
                // resets every span to `Normal`): the block now waits on
                // the list like any remote free, for the owner or the
                // segment's adopter. Only a large block's second free can
                // meet another one there.
                RemotePush::Pushed => {
                    if large && (*page).thread_free.count() > 1 {
                        self.global
                            .misuse(Misuse::DoubleFree, b as usize, Some((*page).usable()));
                    }
                }
                // Someone else handed this large block over meanwhile.
                // (`MustNotify` does not come back when notifying is
                // allowed.)
                RemotePush::Freed | RemotePush::MustNotify => {
                    self.global
                        .misuse(Misuse::DoubleFree, b as usize, Some((*page).usable()))
                }
            }
        }
    }

    /// Frees a block of a page this heap owns (slab or large).
    pub(super) unsafe fn free_own_block(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller guarantees `page` is ours and `b` live in it.
        unsafe {
            if (*page).kind == SpanKind::Large {
                if self.harden.contains(Mitigations::QUARANTINE) {
                    return self.quarantine_large(page);
                }
                self.unguard_large(page);
                (*page).used = 0;
                self.retire_span(page);
            } else {
                self.push_local(page, b);
            }
        }
    }

    /// A local free emptied a page or hit a parked full page.
    #[cold]
    pub(super) unsafe fn after_local_free(&mut self, page: *mut Span) {
        // SAFETY: `page` is an own slab.
        unsafe {
            let c = (*page).class as usize;
            if (*page).in_full {
                (*page).in_full = false;
                (*page).thread_free.set_notify(Notify::Normal);
                self.queues.push_back(c, page);
            }
            if (*page).used == 0 {
                if self.harden.contains(Mitigations::ISOLATE) {
                    // The slab keeps its class: its addresses are never
                    // reused for another size while this heap holds it.
                    return;
                }
                // Keep a lone page to avoid thrashing on alloc/free cycles,
                // unless it spans several slices (blocks of tens of KiB and
                // more): re-carving such a slab costs little next to the
                // blocks' own use, while every class and heap keeping one
                // would hold megabytes idle.
                if self.queues.holds_only(c, page) && (*page).slice_count == 1 {
                    return;
                }
                self.queues.remove(c, page);
                self.retire_span(page);
            }
        }
    }

    /// Returns an empty (unqueued) page's span to the free bins.
    pub(super) unsafe fn retire_span(&mut self, page: *mut Span) {
        // SAFETY: `page` is an own, empty, unqueued span.
        unsafe {
            // Wait out a remote thread still finishing a notification.
            (*page).thread_free.set_notify(Notify::Normal);
            // An empty slab has no block out, so nothing can be waiting on
            // its remote list but a block freed twice (once here, once by
            // another thread): dropping it would let that stale free reach
            // the block's next owner.
            if (*page).kind == SpanKind::Slab && (*page).thread_free.count() != 0 {
                let b = (*page).thread_free.peek() as usize;
                self.global
                    .misuse(Misuse::DoubleFree, b, Some((*page).usable()));
            }
            (*page).thread_free.reset();
            (*page).in_full = false;
            let seg = segment_of(page);
            let idx = (*seg).index_of(page);
            let n = (*page).slice_count as usize;
            (*seg).used_slices -= n;
            self.global.stats.sub_active(n * SLICE_SIZE);
            if (*page).kind == SpanKind::Slab {
                // Its cached blocks leave the counts (see `crate::stats`).
                self.count_cached_as_freed(page);
            }
            (*page).kind = SpanKind::Free;
            (*page).slice_count = 0;
            self.insert_free(seg, idx, n, true, false);
            if (*seg).used_slices == 0 {
                self.segment_emptied(seg);
            }
        }
    }

    /// A segment of this heap has no used span any more. One empty segment
    /// stays for reuse (until the decay retires it); a second one, or any
    /// while memory is short, goes back to `Global` now, where every heap
    /// can get it and a failed reservation can release it. So memory a
    /// thread freed never strands in its heap while another thread runs
    /// out.
    ///
    /// # Safety
    /// `seg` is an own segment whose only span is a binned free span.
    pub(super) unsafe fn segment_emptied(&mut self, seg: *mut Segment) {
        // SAFETY: own segments, linked through `next`.
        unsafe {
            let mut other = self.segments.first;
            while !other.is_null() && (other == seg || (*other).used_slices != 0) {
                other = (*other).next;
            }
            if (other.is_null() && !self.global.under_pressure()) || self.keeps(seg) {
                return;
            }
            self.release_segment(seg);
        }
    }

    /// Hands an empty own segment back to `Global`.
    ///
    /// # Safety
    /// `seg` is an own segment whose only span is a binned free span.
    pub(super) unsafe fn release_segment(&mut self, seg: *mut Segment) {
        // SAFETY: the caller's contract.
        unsafe {
            self.bins.remove(&mut (*seg).slices[HEADER_SLICES]);
            self.unlink_segment(seg);
            (*seg).set_owner(0);
            self.global.retire_segment(seg);
        }
    }

    /// Frees every block other threads handed us through `delayed`.
    pub(super) fn drain_delayed(&mut self) {
        let mut b = self.delayed.take();
        while !b.is_null() {
            // The links live in freed blocks, where a use-after-free write
            // can reach them: each block is checked to be a block of one of
            // our own segments before it is read.
            let seg = segment_base_of(b as usize) as *mut Segment;
            // The map takes addresses modulo 2^48: an overwritten link may
            // be non-canonical and alias a live segment's entry, so that
            // is ruled out first.
            let canonical = ((((b as usize) << 16) as isize) >> 16) as usize == b as usize;
            // SAFETY: the segment is read only once the map says it is
            // live (and the address is one the map can speak for).
            let ours = canonical
                && segment_map::contains(seg as usize)
                && unsafe { !(*seg).is_huge && (*seg).owner() == self.id() };
            let found = if ours {
                // SAFETY: a live segment of ours.
                unsafe { find_block(seg, b as usize) }
            } else {
                Found::Invalid(Misuse::FreeListCorruption, None)
            };
            let Found::Block(page, _) = found else {
                self.global
                    .misuse(Misuse::FreeListCorruption, b as usize, None);
            };
            // SAFETY: `b` is a block of our own slab or large span, handed
            // to us by the remote-free protocol.
            unsafe {
                let next = next_of(b, self.key);
                if self.harden.contains(Mitigations::BITMAP) && !(*seg).live.clear(b as usize) {
                    self.free_not_live(page, b);
                }
                if (*page).kind == SpanKind::Slab {
                    // Its freer counted the free; on our local list it
                    // becomes a cached block (see `crate::stats`).
                    self.stats.add_class_mallocs((*page).class as usize, 1);
                }
                if (*page).kind == SpanKind::Slab && self.slow_paths {
                    // Its canary was checked and it was zeroed by its freer.
                    self.push_local(page, b);
                } else {
                    self.free_own_block(page, b);
                }
                b = next;
            }
        }
    }
}
