//! Heaps: one per thread (hosted) or per CPU (kernel). A heap owns segments;
//! it alone allocates from them, frees into them without atomics, and
//! carves and coalesces their spans. Other threads free into its pages
//! through the lock-free `thread_free` lists (see `page.rs`).
//!
//! Fast paths: `malloc` pops the first page of the size class's queue;
//! `free` of an own block pushes onto the page's `local_free`. Everything
//! else (refilling, new slabs, large blocks, retiring pages, delayed frees,
//! decay) happens on the slow paths below them.
//!
//! When a heap goes away (thread exit) its segments are *abandoned*: pushed
//! on a global list with their live blocks, to be *adopted* by the next heap
//! that needs a segment. Nothing is lost, and remote frees into abandoned
//! pages are collected by the adopter.

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use crate::bins::SpanBins;
use crate::block::Block;
use crate::fatal::Misuse;
use crate::global::Global;
use crate::harden::Mitigations;
use crate::layout::{
    segment_base_of, MAX_CLASS_SIZE, MIN_ALIGN, SEGMENT_MASK, SLICES_PER_SEGMENT, SLICE_SHIFT,
    SLICE_SIZE,
};
use crate::list::List;
use crate::live;
use crate::queues::SlabQueues;
use crate::remote::{DelayedList, Notify};
use crate::segment::{Segment, HEADER_SLICES};
use crate::segment_map;
use crate::size_class::{class_for_aligned, class_of, CLASSES, DIRECT_MAX, NUM_CLASSES};
use crate::span::{next_random, Span, SpanKind, TAG_QUEUED_SLAB};
use crate::stats::{HeapStats, Snapshot};

mod abandon;
mod big;
mod counts;
mod decay;
mod free;
mod harden;
mod segments;
#[cfg(debug_assertions)]
mod verify;

/// Bytes of fresh blocks carved per refill: one page, so a thread that
/// uses a few blocks of many classes touches a page per class, not a
/// slab's worth (a short-lived thread's footprint is mostly this); still
/// 256 blocks of the smallest class per slow path.
const EXTEND_BYTES: usize = 4 * 1024;
/// Fewest fresh blocks carved per refill (where the slab has them): for
/// blocks above 1 KiB a page holds fewer, and a refill per block or two
/// (the slow path's bookkeeping each time) costs more than touching the
/// first page of a few more blocks.
const MIN_EXTEND: usize = 4;
/// The least free memory a heap keeps resident for reuse (see
/// `Heap::purge`).
const PURGE_RESERVE_MIN: usize = 1 << 20;
/// A segment given up at thread exit is trimmed to its resident reserve
/// only once its free resident slices exceed the reserve by this many: a
/// `madvise` per exiting thread would cost more than the memory it saves.
const TRIM_SLACK: usize = 32;
/// Check for decay every this many slow paths.
const PURGE_CHECK_INTERVAL: u64 = 64;

/// A thread's (or CPU's) private allocator state.
///
/// `repr(C)`, hot fields first: what the malloc and free fast paths read
/// (the owner word, the check flags, the direct table's first entries)
/// shares the record's first cache line.
#[repr(C)]
pub struct Heap {
    /// The owner word of this heap's segments (its id), or
    /// [`NO_SEGMENT_OWNER`] when every free must take the slow path.
    fast_owner: usize,
    /// The mitigations in force (a copy of the instance's, beside the hot
    /// fields).
    harden: Mitigations,
    /// The malloc fast path's checks: both the link and the bitmap check
    /// (true), or neither. The fast path is compiled once for each, so it
    /// tests one flag instead of two; a preset with only one of them has
    /// no direct table and allocates out of line.
    fast_checks: bool,
    /// Set when a mitigation needs the out-of-line malloc and free paths
    /// (see [`Mitigations::SLOW_PATHS`]). The fast paths never test it:
    /// such a heap's direct table stays empty, so its malloc fast path
    /// finds no block, and its `fast_owner` matches no segment, so its
    /// free fast path finds no own block.
    slow_paths: bool,
    /// Size-class queues of slabs with room, and the direct table (first).
    queues: SlabQueues,
    /// The delayed list's link key.
    key: usize,
    /// Layout randomness (slot order, slab secrets); never used for keys.
    rng: u64,
    global: &'static Global,
    bins: SpanBins,
    /// Owned segments, linked through `Segment::next/prev`.
    segments: List<Segment>,
    /// Blocks freed by other threads into full pages (see `page.rs`).
    delayed: DelayedList,
    tick: u64,
    /// Time of the last decay check (clock ms, or ticks / interval).
    now: u64,
    /// `now` when the periodic decay check last ran: it runs at most once
    /// per clock tick, however many slow paths a tick sees.
    purged_at: u64,
    pub stats: HeapStats,
    /// Keeps its last segment for good (see [`Heap::pin_segment`]).
    pinned: bool,
    /// Freed small blocks waiting before reuse ([`Mitigations::QUARANTINE`]).
    quarantine: harden::Quarantine<{ harden::QUARANTINE_SLOTS }>,
    /// Freed large blocks waiting, inaccessible.
    large_quarantine: harden::Quarantine<{ harden::LARGE_QUARANTINE_SLOTS }>,
}

/// An owner word no segment ever holds (owners are heap addresses or 0).
const NO_SEGMENT_OWNER: usize = usize::MAX;

/// What a pointer handed to `free`/`realloc` turned out to be.
enum Found {
    /// A live block: its span descriptor and usable bytes.
    Block(*mut Span, usize),
    /// Inside the heap but not a live block start: what it looks like, and
    /// the block size of the slab or large block it points into, if any.
    Invalid(Misuse, Option<usize>),
}

impl Heap {
    /// Creates a heap (reusing a retired one when possible). Its memory
    /// comes from the provider, never from the allocator itself.
    pub fn create(global: &'static Global) -> Option<NonNull<Heap>> {
        global.ensure_init();
        let mut pool = global.heaps.lock();
        let h = pool.take(size_of::<Heap>(), |len| global.reserve_meta(len))? as *mut Heap;
        // SAFETY: the record is ours (marked live in the pool) and big
        // enough; it is written under the pool lock, which `snapshot` holds
        // while it reads the counters of every live heap.
        unsafe {
            let harden = global.mitigations();
            let slow_paths = harden.intersects(Mitigations::SLOW_PATHS);
            let checks = Mitigations::LINKS | Mitigations::BITMAP;
            let fast_checks = harden.contains(checks);
            let fast_malloc = !slow_paths && (fast_checks || !harden.intersects(checks));
            h.write(Heap {
                queues: SlabQueues::new(fast_malloc),
                harden,
                fast_checks,
                slow_paths,
                fast_owner: if slow_paths {
                    NO_SEGMENT_OWNER
                } else {
                    h as usize
                },
                key: global.key(),
                // Distinct per heap record and per instance, never zero.
                rng: (crate::global::mix64(global.key() ^ h as usize) as u64) | 1,
                global,
                bins: SpanBins::new(),
                segments: List::new(),
                delayed: DelayedList::new(),
                tick: 0,
                // Without a clock, time counts purge checks from 1, so 0
                // never reads as a time that has passed.
                now: global.now().unwrap_or(1),
                purged_at: 0,
                stats: HeapStats::new(),
                pinned: false,
                quarantine: harden::Quarantine::new(),
                large_quarantine: harden::Quarantine::new(),
            });
        }
        drop(pool);
        global.stats.heaps_live.fetch_add(1, Ordering::Relaxed);
        NonNull::new(h)
    }

    /// Sends every allocation and free of this heap out of line, where a
    /// frontend can watch them (a sampling profiler, a leak checker): the
    /// fast paths then always fail, and cost nothing extra while this is
    /// not used. Irreversible for the heap's lifetime.
    pub fn disable_fast_paths(&mut self) {
        self.queues.disable_direct();
        self.fast_owner = NO_SEGMENT_OWNER;
    }

    /// A heap that serves nothing: its direct table is empty and its
    /// `fast_owner` is no segment's, so [`Heap::try_malloc_fast`] and
    /// [`Heap::try_free_fast_raw`] on it always fail, without writing to
    /// it. A frontend points a thread's heap slot at one while the thread
    /// has no heap, so its fast paths need no test for "no heap yet" (the
    /// slow path tells the placeholder from a real heap). Never use any
    /// other method on it.
    pub const fn placeholder(global: &'static Global) -> Heap {
        Heap {
            queues: SlabQueues::new(false),
            harden: Mitigations::empty(),
            fast_checks: false,
            slow_paths: true,
            fast_owner: NO_SEGMENT_OWNER,
            key: 0,
            rng: 1,
            global,
            bins: SpanBins::new(),
            segments: List::new(),
            delayed: DelayedList::new(),
            tick: 0,
            now: 1,
            purged_at: 0,
            stats: HeapStats::new(),
            pinned: true,
            quarantine: harden::Quarantine::new(),
            large_quarantine: harden::Quarantine::new(),
        }
    }

    /// Abandons the heap's segments (live blocks stay valid and are adopted
    /// later) and returns the heap struct for reuse.
    ///
    /// # Safety
    /// `heap` must come from [`Heap::create`], and nothing may use it
    /// afterwards.
    pub unsafe fn destroy(heap: NonNull<Heap>) {
        let h = heap.as_ptr();
        // SAFETY: the caller hands over the heap exclusively.
        unsafe {
            // Blocks other threads handed over first: draining them may
            // quarantine large ones, which the flush then frees for real
            // (a quarantine left behind would keep them inaccessible).
            (*h).drain_delayed();
            (*h).flush_quarantine();
            (*h).abandon_all();
            let g = (*h).global;
            g.stats.heaps_live.fetch_sub(1, Ordering::Relaxed);
            // Under the pool lock, which `snapshot` holds while it sums:
            // the counters move to the retired totals as the record stops
            // being live, so nothing is counted twice or lost.
            let mut pool = g.heaps.lock();
            g.retire_stats(&(*h).stats);
            pool.give_back(h as *mut u8, size_of::<Heap>());
        }
    }

    /// The allocator instance this heap belongs to.
    pub fn global(&self) -> &'static Global {
        self.global
    }

    #[inline(always)]
    pub(super) fn id(&self) -> usize {
        self as *const Heap as usize
    }

    /// Allocates `size` bytes aligned to 16. Null when out of memory.
    #[inline(always)]
    pub fn malloc(&mut self, size: usize) -> *mut u8 {
        let b = self.try_malloc_fast(size);
        if !b.is_null() {
            return b;
        }
        self.malloc_not_fast(size)
    }

    /// The allocation fast path alone: a block of the request's size class
    /// from the class's current page, or null when that takes more (an
    /// empty page, a large request). Frontends call it inline and
    /// [`Heap::malloc`] out of line otherwise, so the fast path needs no
    /// stack frame. Requests up to `DIRECT_MAX` bytes find their page with
    /// one load; larger ones take [`Heap::try_malloc_medium`] or
    /// [`Heap::malloc`].
    #[inline(always)]
    pub fn try_malloc_fast(&self, size: usize) -> *mut u8 {
        if size > DIRECT_MAX {
            return ptr::null_mut();
        }
        // SAFETY: `direct_index(size) < DIRECT_SLOTS`; direct entries are
        // queued pages of this heap or the empty page (always, for a heap
        // with slow paths); queued pages belong to this heap.
        unsafe {
            let page = self.queues.direct(size);
            if self.fast_checks {
                self.pop_checked::<true, true>(page)
            } else {
                self.pop_checked::<false, false>(page)
            }
        }
    }

    /// [`Heap::try_malloc_fast`] for the sizes above the direct table, up
    /// to the largest class: a block from the class's current page, or
    /// null when that takes more. The class is computed (a few
    /// instructions), so frontends call this past their inline fast path,
    /// before the full slow path, keeping the small-size path as short as
    /// it is. Only heaps whose small requests take the fast path (their
    /// direct table in use) take this one.
    #[inline(always)]
    pub fn try_malloc_medium(&self, size: usize) -> *mut u8 {
        if size <= DIRECT_MAX || size > MAX_CLASS_SIZE || !self.queues.direct_on() {
            return ptr::null_mut();
        }
        // SAFETY: `class_of(size) < NUM_CLASSES` for these sizes; queued
        // pages belong to this heap, and a heap with slow paths has no
        // direct table in use, so the checks of `pop_checked` are all its
        // blocks need, as on the small path.
        unsafe {
            let page = self.queues.first_unchecked(class_of(size));
            if page.is_null() {
                return ptr::null_mut();
            }
            if self.fast_checks {
                self.pop_checked::<true, true>(page)
            } else {
                self.pop_checked::<false, false>(page)
            }
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn malloc_not_fast(&mut self, size: usize) -> *mut u8 {
        // Room for the canary after the block.
        let size = size.saturating_add(self.tail_bytes());
        if size <= MAX_CLASS_SIZE {
            self.alloc_class(class_of(size))
        } else {
            self.alloc_big(size, MIN_ALIGN, false)
        }
    }

    /// Allocates `size` zeroed bytes aligned to 16.
    #[inline]
    pub fn zalloc(&mut self, size: usize) -> *mut u8 {
        // The block needs room for the canary; only the request is zeroed.
        let with_tail = size.saturating_add(self.tail_bytes());
        if with_tail <= MAX_CLASS_SIZE {
            self.alloc_class_zeroed(class_of(with_tail), size)
        } else {
            self.alloc_big(size, MIN_ALIGN, true)
        }
    }

    /// Allocates `size` bytes aligned to `align` (a power of two). The
    /// memory used is at most about `size + align`.
    pub fn malloc_aligned(&mut self, size: usize, align: usize) -> *mut u8 {
        self.alloc_aligned(size, align, false)
    }

    /// Like [`Heap::malloc_aligned`], zeroed.
    pub fn zalloc_aligned(&mut self, size: usize, align: usize) -> *mut u8 {
        self.alloc_aligned(size, align, true)
    }

    pub(super) fn alloc_aligned(&mut self, size: usize, align: usize, zero: bool) -> *mut u8 {
        debug_assert!(align.is_power_of_two());
        if align <= MIN_ALIGN {
            return if zero {
                self.zalloc(size)
            } else {
                self.malloc(size)
            };
        }
        // Blocks of a class whose size is a multiple of `align` are all
        // aligned, because slabs start on slice boundaries.
        let with_tail = size.saturating_add(self.tail_bytes());
        if let Some(c) = class_for_aligned(with_tail, align) {
            return if zero {
                self.alloc_class_zeroed(c, size)
            } else {
                self.alloc_class(c)
            };
        }
        self.alloc_big(size, align, zero)
    }

    /// Pops a block from `page`'s free list, checking the link it leaves
    /// behind and, with the bitmap, that the block is not live; null when
    /// the list is empty.
    ///
    /// # Safety
    /// `page` must be a queued page of this heap or the empty page.
    #[inline(always)]
    pub(super) unsafe fn pop_block(&mut self, page: *mut Span) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe {
            let b = if self.harden.contains(Mitigations::LINKS) {
                if self.harden.contains(Mitigations::BITMAP) {
                    self.pop_checked::<true, true>(page)
                } else {
                    self.pop_checked::<true, false>(page)
                }
            } else if self.harden.contains(Mitigations::BITMAP) {
                self.pop_checked::<false, true>(page)
            } else {
                self.pop_checked::<false, false>(page)
            };
            if !b.is_null() && self.slow_paths {
                self.check_reused(page, b as *mut Block);
            }
            b
        }
    }

    /// [`Heap::pop_block`] with the link check (`LINKS`) and the bitmap
    /// check (`BITMAP`) chosen at compile time, and without the checks of
    /// the slow-path presets (a heap with those never reaches the fast
    /// path with a real page).
    ///
    /// # Safety
    /// As [`Heap::pop_block`].
    #[inline(always)]
    pub(super) unsafe fn pop_checked<const LINKS: bool, const BITMAP: bool>(
        &self,
        page: *mut Span,
    ) -> *mut u8 {
        // SAFETY: the caller's contract; the empty page has no free blocks,
        // so it is never written.
        unsafe {
            let b = (*page).pop_free();
            if b.is_null() {
                return ptr::null_mut();
            }
            let next = (*page).free as usize;
            // A link that is not a carved block of this slab was forged or
            // overwritten (a use-after-free write). The end of the list
            // (null) fails the range compare too and is told apart only
            // then, once per list.
            // (Each report is a tail call: the fast path keeps no stack
            // frame.)
            if LINKS {
                let off = next.wrapping_sub((*page).start);
                if off >= (*page).carved {
                    if next != 0 {
                        return self.corrupt_list_at(page, b);
                    }
                } else if !(*page).is_block_offset(off) {
                    return self.corrupt_list_at(page, b);
                }
            }
            // A live block on a free list: handing it out would give one
            // block to two owners.
            // (Through the descriptor's biased base: one load, no segment
            // arithmetic; the block lies in the slab, so in its segment.)
            if BITMAP && !live::set_at((*page).live_bits, b as usize) {
                return self.corrupt_list_at(page, b);
            }
            // Clear the stale link: a live block whose first word still
            // decoded to a free-list link would send every free of it down
            // the slow double-free check.
            (b as *mut usize).write(0);
            b as *mut u8
        }
    }

    /// [`Heap::corrupt_list`] with the fast path's return type, so that
    /// the call is a jump.
    #[cold]
    #[inline(never)]
    unsafe fn corrupt_list_at(&self, page: *mut Span, b: *mut Block) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { self.corrupt_list(page, b) }
    }

    #[cold]
    #[inline(never)]
    unsafe fn corrupt_list(&self, page: *mut Span, b: *mut Block) -> ! {
        // SAFETY: `page` is one of our slabs (caller's contract).
        let size = unsafe { (*page).block_size };
        self.global
            .misuse(Misuse::FreeListCorruption, b as usize, Some(size))
    }

    /// A block from the first page of class `c`'s queue, or null.
    ///
    /// # Safety
    /// `c` must be a size class (below `NUM_CLASSES`); unchecked so that
    /// the inline fast path has no panic branch and needs no stack frame.
    #[inline(always)]
    pub(super) unsafe fn pop_queued(&mut self, c: usize) -> *mut u8 {
        debug_assert!(c < NUM_CLASSES);
        // SAFETY: `c` is a class (caller's contract); queued pages belong
        // to this heap's segments.
        unsafe {
            let page = self.queues.first_unchecked(c);
            if page.is_null() {
                return ptr::null_mut();
            }
            self.pop_block(page)
        }
    }

    /// Allocates a block of class `c`.
    #[inline(always)]
    pub(super) fn alloc_class(&mut self, c: usize) -> *mut u8 {
        // SAFETY: callers pass classes from `class_of` or
        // `class_for_aligned`.
        let b = unsafe { self.pop_queued(c) };
        if !b.is_null() {
            return b;
        }
        self.alloc_class_slow(c)
    }

    /// Allocates a zeroed block of class `c` for a request of `size` bytes.
    pub(super) fn alloc_class_zeroed(&mut self, c: usize, size: usize) -> *mut u8 {
        let mut page = self.queues.first(c);
        // SAFETY: queued pages belong to this heap's segments.
        unsafe {
            if page.is_null() || (*page).free.is_null() {
                if !self.refill(c) {
                    return ptr::null_mut();
                }
                page = self.queues.first(c);
            }
            // Whether the blocks on the list are known to be zero.
            let zero = (*page).free_is_zero;
            let b = self.pop_block(page);
            if !b.is_null() && !zero {
                ptr::write_bytes(b, 0, size);
            }
            b
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn alloc_class_slow(&mut self, c: usize) -> *mut u8 {
        if !self.refill(c) {
            return ptr::null_mut();
        }
        self.alloc_class(c)
    }

    /// Makes the first page of class `c`'s queue have free blocks: collects
    /// frees into queued pages, parks full ones, or adds a new slab.
    /// Returns false when out of memory.
    pub(super) fn refill(&mut self, c: usize) -> bool {
        self.on_slow_path();
        loop {
            if self.refill_from_queue(c) {
                return true;
            }
            // SAFETY: `c` is a size class.
            if unsafe { self.new_slab(c) }.is_some() {
                return true;
            }
            // No free span: take a segment. An adopted one brings its own
            // slabs with room, which must be used before a new slab is
            // carved, or every adopter adds a slab that the blocks it
            // leaves behind then pin (thread churn).
            if !self.add_segment() {
                return false;
            }
        }
    }

    /// Walks class `c`'s queue for a page with free blocks (collecting
    /// frees and carving fresh blocks), moving it to the front; parks full
    /// pages. Returns whether one was found.
    pub(super) fn refill_from_queue(&mut self, c: usize) -> bool {
        // SAFETY: every page reached from the queue belongs to this heap.
        unsafe {
            let mut page = self.queues.first(c);
            while !page.is_null() {
                let next = (*page).next;
                self.collect(page);
                if (*page).free.is_null() {
                    self.extend(page);
                }
                if !(*page).free.is_null() {
                    self.queues.move_to_front(c, page);
                    return true;
                }
                // Full: leave the queue and ask remote freers to tell us.
                self.queues.remove(c, page);
                (*page).in_full = true;
                if !(*page).thread_free.set_notify(Notify::Notify) {
                    // Remote frees arrived meanwhile; revisit it later.
                    (*page).in_full = false;
                    self.queues.push_back(c, page);
                }
                page = next;
            }
            false
        }
    }

    /// A new slab for class `c` carved from a free span, at the front of
    /// its queue, with blocks; `None` when no binned span fits (the caller
    /// adds a segment).
    ///
    /// # Safety
    /// `c` must be a size class.
    pub(super) unsafe fn new_slab(&mut self, c: usize) -> Option<*mut Span> {
        let info = CLASSES[c];
        let (seg, idx) = self.take_span(info.slices, SLICE_SIZE, SpanKind::Slab)?;
        // SAFETY: the span was just carved from an owned segment.
        unsafe {
            let start = (*seg).slice_addr(idx);
            let page: *mut Span = &mut (*seg).slices[idx];
            let p = &mut *page;
            p.class = c as u8;
            p.set_block_size(info.block_size);
            p.live_bits = (*seg).live.biased_base();
            p.reserved = ((info.slices * SLICE_SIZE) / info.block_size) as u32;
            p.capacity = 0;
            p.used = 0;
            p.free = ptr::null_mut();
            p.local_free = ptr::null_mut();
            p.thread_free.reset();
            p.in_full = false;
            p.start = start;
            p.carved = 0;
            p.tail = self.tail_bytes() as u8;
            p.secret = next_random(&mut self.rng) as usize;
            self.extend(page);
            self.queues.push_front(c, page);
            Some(page)
        }
    }
}

/// Resolves a pointer into its live block, or says why it is not one.
///
/// # Safety
/// `seg` must be the live segment that `segment_base_of(addr)` names.
unsafe fn find_block(seg: *mut Segment, addr: usize) -> Found {
    // SAFETY: `seg` is a live segment header (caller's contract).
    unsafe {
        let s = &*seg;
        if s.is_huge {
            let d = &s.slices[HEADER_SLICES];
            if d.kind == SpanKind::Huge && d.start == addr {
                return Found::Block(d as *const Span as *mut Span, d.usable());
            }
            return Found::Invalid(Misuse::InvalidFree, Some(d.usable()));
        }
        let Some(page) = s.page_of(addr) else {
            // Freeing the first byte of a free span is most likely a block
            // that was already freed.
            let idx = (addr - s.base()) / SLICE_SIZE;
            let looks_freed = addr.is_multiple_of(SLICE_SIZE)
                && (HEADER_SLICES..SLICES_PER_SEGMENT).contains(&idx)
                && s.slices[idx].kind == SpanKind::Free
                && s.slices[idx].slice_offset == 0;
            let what = if looks_freed {
                Misuse::DoubleFree
            } else {
                Misuse::InvalidFree
            };
            return Found::Invalid(what, None);
        };
        let page = page as *const Span as *mut Span;
        match (*page).kind {
            SpanKind::Slab => {
                if (*page).is_carved_block(addr) {
                    Found::Block(page, (*page).usable())
                } else {
                    Found::Invalid(Misuse::InvalidFree, Some((*page).usable()))
                }
            }
            SpanKind::Large if addr == (*page).start => Found::Block(page, (*page).usable()),
            _ => Found::Invalid(Misuse::InvalidFree, Some((*page).usable())),
        }
    }
}

/// Usable bytes of the block at `p`; 0 for null, foreign or invalid
/// pointers.
///
/// # Safety
/// `p` must be null, foreign, or a live block of this allocator.
pub unsafe fn usable_size(p: *const u8) -> usize {
    /// No other allocator to ask.
    unsafe fn none(_: *const u8) -> usize {
        0
    }
    // SAFETY: forwarded from the caller.
    unsafe { usable_size_or(p, none) }
}

/// [`usable_size`], asking `other` (with `p`) for pointers that are not
/// blocks of this allocator, as a tail call: a frontend with memory of its
/// own (a bootstrap arena) needs no stack frame around the common case.
///
/// # Safety
/// As [`usable_size`]; `other` must accept every such pointer.
#[inline(always)]
pub unsafe fn usable_size_or(p: *const u8, other: unsafe fn(*const u8) -> usize) -> usize {
    let addr = p as usize;
    let seg = segment_base_of(addr);
    if !segment_map::contains(seg) {
        // SAFETY: the caller's contract.
        return unsafe { other(p) };
    }
    // SAFETY: a live segment is there; the slice index is masked into
    // the segment (its header slices are never slabs).
    unsafe {
        // The common case, checked as the free fast path does (one tag
        // compare): a block boundary in the first slice of a queued slab.
        let idx = (addr >> SLICE_SHIFT) & (SLICES_PER_SEGMENT - 1);
        let d = (*(seg as *const Segment)).slices.as_ptr().add(idx);
        if (*d).tag() == TAG_QUEUED_SLAB && (*d).is_carved_block(addr) {
            return (*d).usable();
        }
        usable_size_slow(seg as *mut Segment, addr, other)
    }
}

/// [`usable_size_or`] of everything but a block in a queued slab's first
/// slice; out of line, so the common case needs no stack frame.
///
/// # Safety
/// `seg` is the live segment holding `addr`; `other` as for
/// [`usable_size_or`].
#[cold]
#[inline(never)]
unsafe fn usable_size_slow(
    seg: *mut Segment,
    addr: usize,
    other: unsafe fn(*const u8) -> usize,
) -> usize {
    // SAFETY: the caller's contract.
    match unsafe { find_block(seg, addr) } {
        Found::Block(_, usable) => usable,
        // SAFETY: the caller's contract.
        _ => unsafe { other(addr as *const u8) },
    }
}

/// Whether `p` lies in memory of this allocator (any instance): inside one
/// of its segments, or at the start of a huge block aligned to a segment
/// boundary (whose header sits one segment earlier). A pointer just past
/// the end of a segment is not ours, although `segment_base_of` maps it to
/// that segment.
pub fn owns(p: *const u8) -> bool {
    let addr = p as usize;
    if addr & SEGMENT_MASK != 0 {
        return segment_map::contains(addr & !SEGMENT_MASK);
    }
    if segment_map::contains(addr) {
        return true;
    }
    let before = addr.wrapping_sub(crate::layout::SEGMENT_SIZE);
    // SAFETY: the map says a live segment header is there.
    segment_map::contains(before)
        && unsafe {
            let s = &*(before as *const Segment);
            s.is_huge && s.slices[HEADER_SLICES].start == addr
        }
}

/// Sums every heap's counters with the global ones. Exact when no thread
/// is allocating or freeing meanwhile (see [`crate::stats`]).
pub fn snapshot(global: &Global) -> Snapshot {
    snapshot_from(global, ptr::null())
}

/// [`snapshot`] taken by the thread that owns `own` (null for none): that
/// heap's operation counts are exact, including the frees waiting on its
/// slabs' local lists.
pub fn snapshot_from(global: &Global, own: *const Heap) -> Snapshot {
    let pool = global.heaps.lock();
    let mut s = global.retired_snapshot();
    let _headers_stay = global.release_lock.lock();
    pool.for_each_live(size_of::<Heap>(), |h| {
        // SAFETY: live records are initialised heaps; counters are atomics;
        // the segment headers `totals` reads stay mapped (lock above).
        let h = unsafe { &*(h as *const Heap) };
        let st = &h.stats;
        let (m, f, bytes) = if ptr::eq(h, own) {
            h.own_totals()
        } else {
            h.totals()
        };
        // A heap's share can be "negative" (see `HeapStats::totals_less`).
        s.mallocs = s.mallocs.wrapping_add(m);
        s.frees = s.frees.wrapping_add(f);
        s.allocated = s.allocated.wrapping_add(bytes);
        s.remote_frees += st.remote_frees.load(Ordering::Relaxed);
    });
    s
}

// The heap struct fits the pool's records (at most 64 a chunk).
const _: () = assert!(crate::pool::records_per_chunk(size_of::<Heap>()) >= 1);
