//! Large blocks (spans of their own inside segments) and huge blocks
//! (reservations of their own): allocation and in-place resizing.

use core::ptr::{self};

use crate::fatal::Misuse;
use crate::harden::Mitigations;
use crate::layout::{
    align_up, segment_base_of, LARGE_MAX, MAX_CLASS_SIZE, SEGMENT_SIZE, SLICES_PER_SEGMENT,
    SLICE_SIZE,
};
use crate::provider::PAGE_SIZE;
use crate::segment::Segment;
use crate::segment_map;
use crate::span::{Span, SpanKind};
use crate::stats::bump;

use super::*;

impl Heap {
    /// Allocates a block above the class limit or with a large alignment:
    /// a span of its own, or a huge segment.
    #[cold]
    pub(super) fn alloc_big(&mut self, size: usize, align: usize, zero: bool) -> *mut u8 {
        self.on_slow_path();
        let fits_in_segment = align < SEGMENT_SIZE
            && size <= LARGE_MAX
            && size.saturating_add(align) <= LARGE_MAX + SLICE_SIZE;
        if !fits_in_segment {
            let mut huge = self.global.alloc_huge(size, align);
            if huge.is_none() {
                self.reclaim();
                huge = self.global.alloc_huge(size, align);
            }
            return match huge {
                Some((p, z)) => {
                    // SAFETY: huge blocks are ours; read their usable size.
                    let usable = unsafe { usable_size(p) };
                    if zero && !z {
                        // SAFETY: fresh block of at least `size` bytes.
                        unsafe { ptr::write_bytes(p, 0, size) };
                    }
                    bump(&self.stats.mallocs, 1);
                    bump(&self.stats.malloc_bytes, usable as u64);
                    p
                }
                None => ptr::null_mut(),
            };
        }
        // With guard pages the span's last page is the guard.
        let guard = if self.harden.contains(Mitigations::LARGE_GUARDS) {
            PAGE_SIZE
        } else {
            0
        };
        let n = (size.max(1) + guard).div_ceil(SLICE_SIZE);
        let Some((seg, idx)) = self.alloc_span(n, align.max(SLICE_SIZE), SpanKind::Large) else {
            return ptr::null_mut();
        };
        // SAFETY: the span was just carved from an owned segment.
        unsafe {
            let p = &mut (*seg).slices[idx];
            p.start = (*seg).slice_addr(idx);
            p.set_block_size(n * SLICE_SIZE - guard);
            // Its one block is carved: remote-free checks accept its start.
            p.carved = p.block_size;
            p.tail = 0;
            if guard != 0 {
                self.global.protect(p.start + p.block_size, guard, false);
            }
            if self.harden.contains(Mitigations::BITMAP) {
                (*seg).live.set(p.start);
            }
            p.used = 1;
            p.reserved = 1;
            p.capacity = 1;
            p.free = ptr::null_mut();
            p.local_free = ptr::null_mut();
            // A large block is always "full": remote frees notify us.
            p.in_full = true;
            p.thread_free.arm();
            if (zero || self.harden.contains(Mitigations::ZERO)) && !p.span_is_zero {
                ptr::write_bytes(p.start as *mut u8, 0, size);
            }
            bump(&self.stats.mallocs, 1);
            bump(&self.stats.malloc_bytes, p.block_size as u64);
            p.start as *mut u8
        }
    }

    /// Resizes a block, in place when its usable size or a following free
    /// span allows. Returns null (leaving `p` valid) when out of memory or
    /// when `p` is foreign.
    ///
    /// # Safety
    /// `p` must be non-null and either foreign or a live block of this
    /// allocator instance.
    pub unsafe fn realloc(&mut self, p: *mut u8, new_size: usize) -> *mut u8 {
        // The common case, checked as the free fast path checks a block: a
        // block of one of our queued slabs, resized within the size
        // classes (no headroom applies there).
        if new_size <= MAX_CLASS_SIZE {
            // SAFETY: the caller's contract.
            if let Some(usable) = unsafe { self.own_queued_block(p) } {
                if new_size <= usable && new_size >= usable / 2 {
                    return p;
                }
                let q = self.malloc(new_size);
                if !q.is_null() {
                    // SAFETY: `p` is live with `usable` bytes, `q` fresh
                    // with at least `new_size`; `p` is freed once.
                    unsafe {
                        ptr::copy_nonoverlapping(p, q, usable.min(new_size));
                        self.free(p);
                    }
                }
                return q;
            }
        }
        let addr = p as usize;
        let seg = segment_base_of(addr) as *mut Segment;
        if !segment_map::contains(seg as usize) {
            self.free_foreign(addr, true);
            return ptr::null_mut();
        }
        // SAFETY: the segment is live; `find_block` validates the pointer.
        unsafe {
            let (page, usable) = match find_block(seg, addr) {
                Found::Block(page, usable) => (page, usable),
                Found::Invalid(_, size) => self.global.misuse(Misuse::InvalidRealloc, addr, size),
            };
            // Guard pages sit right after the block: such blocks move.
            let guarded = self.harden.contains(Mitigations::LARGE_GUARDS);
            if !guarded
                && !(*seg).is_huge
                && (*page).kind == SpanKind::Large
                && (*seg).owner() == self.id()
                && new_size > MAX_CLASS_SIZE
                && self.resize_large(seg, page, new_size)
            {
                return p;
            }
            if !guarded
                && (*seg).is_huge
                && new_size > LARGE_MAX
                && self.resize_huge(seg, page, new_size)
            {
                return p;
            }
            // Keep the block unless shrinking would free real memory.
            if new_size <= usable && new_size >= usable / 2 {
                return p;
            }
            // A big block that must move to grow gets headroom, so a block
            // grown step by step (a string, a vector) is copied O(log n)
            // times rather than at every step. Untouched headroom costs
            // address space only.
            let headroom = new_size > usable && new_size > MAX_CLASS_SIZE;
            let mut q = ptr::null_mut();
            if headroom {
                q = self.malloc(new_size.max(usable.saturating_add(usable / 2)));
            }
            if q.is_null() {
                q = self.malloc(new_size);
            }
            if q.is_null() {
                return q;
            }
            ptr::copy_nonoverlapping(p, q, usable.min(new_size));
            if (*seg).is_huge {
                // The old block of a growing huge block is not wanted again
                // soon: keep its address range for reuse, not its pages.
                bump(&self.stats.frees, 1);
                bump(&self.stats.free_bytes, usable as u64);
                self.global.free_huge(seg, false);
            } else {
                self.free(p);
            }
            q
        }
    }

    /// The usable size of `p` when it is a live block in the first slice of
    /// one of this heap's queued slabs (the blocks the free fast path
    /// takes), found with that path's checks: with the bitmap, its live bit
    /// is set; without, it is a carved block start. `None` for anything
    /// else, which the validating path handles, and always for a heap
    /// with slow paths.
    ///
    /// # Safety
    /// `p` is a block of this allocator instance or foreign.
    #[inline(always)]
    unsafe fn own_queued_block(&self, p: *mut u8) -> Option<usize> {
        let addr = p as usize;
        let seg = segment_base_of(addr);
        if !segment_map::contains(seg) {
            return None;
        }
        // SAFETY: the map says a live segment header is there; the
        // descriptor index is wrapped to the segment as on the free path.
        unsafe {
            let seg = seg as *mut Segment;
            if (*seg).owner() != self.fast_owner {
                return None;
            }
            let idx = (addr >> crate::layout::SLICE_SHIFT) & (SLICES_PER_SEGMENT - 1);
            let d = &(*seg).slices[idx];
            if d.tag() != crate::span::TAG_QUEUED_SLAB {
                return None;
            }
            let live = if self.harden.contains(Mitigations::BITMAP) {
                addr.is_multiple_of(crate::layout::MIN_ALIGN) && (*seg).live.is_set(addr)
            } else {
                d.is_carved_block(addr)
            };
            live.then(|| d.usable())
        }
    }

    /// Resizes a huge block in place within its reservation: a shrink
    /// decommits the pages past the new end (a block cut from 1 GiB to
    /// 600 MiB must not keep 1 GiB resident), a growth takes them back.
    /// Returns false when the reservation is too small.
    ///
    /// # Safety
    /// `page` is the descriptor of the live huge block of `seg`.
    pub(super) unsafe fn resize_huge(
        &mut self,
        seg: *mut Segment,
        page: *mut Span,
        new_size: usize,
    ) -> bool {
        // SAFETY: the caller's contract; the block is the caller's.
        unsafe {
            let start = (*page).start;
            let end = (*seg).reservation + (*seg).reservation_len;
            let old = (*page).block_size;
            let new = align_up(new_size, PAGE_SIZE);
            if new > end - start {
                return false;
            }
            if new < old {
                self.global.decommit(start + new, old - new);
            } else if new > old && !self.global.commit(start + old, new - old) {
                return false;
            }
            (*page).block_size = new;
            bump(&self.stats.malloc_bytes, new as u64);
            bump(&self.stats.free_bytes, old as u64);
            true
        }
    }

    /// Resizes a block allocated with alignment `align` (a power of two):
    /// the one entry point `GlobalAlloc`-style frontends need. Up to the
    /// minimum alignment it is [`Heap::realloc`]; above it the block stays
    /// when it is big enough and shrinking would free little, and otherwise
    /// moves to a new block with the same alignment. Null when out of
    /// memory (the block stays valid).
    ///
    /// # Safety
    /// `p` must be a live block of this allocator instance, allocated with
    /// at least `align` alignment; it is not used afterwards unless the
    /// result is `p` or null.
    pub unsafe fn realloc_aligned(&mut self, p: *mut u8, align: usize, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe {
            if align <= MIN_ALIGN || !owns(p) {
                return self.realloc(p, new_size);
            }
            let usable = usable_size(p);
            if new_size <= usable && new_size >= usable / 2 {
                return p;
            }
            let q = self.malloc_aligned(new_size, align);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, usable.min(new_size));
                self.free(p);
            }
            q
        }
    }

    /// Grows or shrinks a large block in place. Returns false if it cannot.
    pub(super) unsafe fn resize_large(
        &mut self,
        seg: *mut Segment,
        page: *mut Span,
        new_size: usize,
    ) -> bool {
        if new_size > LARGE_MAX {
            return false;
        }
        // SAFETY: `page` is an own large span of `seg`.
        unsafe {
            let s = &mut *seg;
            let idx = s.index_of(page);
            let n = (*page).slice_count as usize;
            let need = new_size.div_ceil(SLICE_SIZE);
            if need == n {
                return true;
            }
            if need < n {
                s.mark_used(idx, need, SpanKind::Large);
                s.used_slices -= n - need;
                self.global.stats.sub_active((n - need) * SLICE_SIZE);
                self.insert_free(seg, idx + need, n - need, true, false);
            } else {
                let r = idx + n;
                if r >= SLICES_PER_SEGMENT {
                    return false;
                }
                let right: *mut Span = &mut s.slices[r];
                let rn = (*right).slice_count as usize;
                if (*right).kind != SpanKind::Free || rn == 0 || n + rn < need {
                    return false;
                }
                self.bins.remove(right);
                let (dirty, zero) = ((*right).dirty, (*right).span_is_zero);
                (*right).slice_count = 0;
                if !self.global.commit(s.slice_addr(r), (need - n) * SLICE_SIZE) {
                    // Put it back untouched.
                    s.mark_free(r, rn, dirty, zero);
                    self.bins.insert(right);
                    return false;
                }
                s.mark_used(idx, need, SpanKind::Large);
                s.mark_resident(r, need - n);
                s.used_slices += need - n;
                self.global.stats.add_active((need - n) * SLICE_SIZE);
                if n + rn > need {
                    self.insert_free(seg, idx + need, n + rn - need, dirty, zero);
                }
            }
            let old = (*page).block_size;
            (*page).set_block_size(need * SLICE_SIZE);
            bump(&self.stats.malloc_bytes, (need * SLICE_SIZE) as u64);
            bump(&self.stats.free_bytes, old as u64);
            true
        }
    }
}
