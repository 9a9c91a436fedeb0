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
use crate::block::{next_of, Block};
use crate::fatal::Misuse;
use crate::global::Global;
use crate::layout::{
    align_up, segment_base_of, LARGE_MAX, MAX_CLASS_SIZE, MIN_ALIGN, SEGMENT_MASK, SEGMENT_SIZE,
    SLICES_PER_SEGMENT, SLICE_SHIFT, SLICE_SIZE,
};
use crate::options::PURGE_MAX_DEFER;
use crate::provider::PAGE_SIZE;
use crate::queues::SlabQueues;
use crate::remote::{DelayedList, Notify, RemotePush};
use crate::segment::{Segment, HEADER_SLICES};
use crate::segment_map;
use crate::size_class::{class_for_aligned, class_of, CLASSES, DIRECT_MAX, NUM_CLASSES};
use crate::span::{Span, SpanKind, TAG_QUEUED_SLAB};
use crate::stats::{bump, HeapStats, Snapshot};

/// Bytes of fresh blocks carved per refill: one page, so a thread that
/// uses a few blocks of many classes touches a page per class, not a
/// slab's worth (a short-lived thread's footprint is mostly this); still
/// 256 blocks of the smallest class per slow path.
const EXTEND_BYTES: usize = 4 * 1024;
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
pub struct Heap {
    /// Size-class queues of slabs with room, and the direct table.
    queues: SlabQueues,
    key: usize,
    global: &'static Global,
    bins: SpanBins,
    /// Owned segments, linked through `Segment::next/prev`.
    segments: *mut Segment,
    /// Blocks freed by other threads into full pages (see `page.rs`).
    delayed: DelayedList,
    tick: u64,
    /// Time of the last decay check (clock ms, or ticks / interval).
    now: u64,
    pub stats: HeapStats,
}

/// What a pointer handed to `free`/`realloc` turned out to be.
enum Found {
    /// A live block: its span descriptor and usable bytes.
    Block(*mut Span, usize),
    /// Inside the heap but not a live block start.
    Invalid(Misuse),
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
            h.write(Heap {
                queues: SlabQueues::new(),
                key: global.key(),
                global,
                bins: SpanBins::new(),
                segments: ptr::null_mut(),
                delayed: DelayedList::new(),
                tick: 0,
                // Without a clock, time counts purge checks from 1, so 0
                // never reads as a time that has passed.
                now: global.now().unwrap_or(1),
                stats: HeapStats::new(),
            });
        }
        drop(pool);
        global.stats.heaps_live.fetch_add(1, Ordering::Relaxed);
        NonNull::new(h)
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
    fn id(&self) -> usize {
        self as *const Heap as usize
    }

    // ----------------------------------------------------------------------
    // Allocation
    // ----------------------------------------------------------------------

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
    /// one load; larger ones compute their class first.
    #[inline(always)]
    pub fn try_malloc_fast(&mut self, size: usize) -> *mut u8 {
        // SAFETY: `direct_index(size) < DIRECT_SLOTS`; direct entries are
        // queued pages of this heap or the empty page; queued pages belong
        // to this heap.
        unsafe {
            // One pop for both branches: two inlined copies would cost the
            // fast path its frameless shape.
            let page = if size <= DIRECT_MAX {
                self.queues.direct(size)
            } else if size <= MAX_CLASS_SIZE {
                let page = self.queues.first_unchecked(class_of(size));
                if page.is_null() {
                    return ptr::null_mut();
                }
                page
            } else {
                return ptr::null_mut();
            };
            self.pop_counted(page)
        }
    }

    #[cold]
    #[inline(never)]
    fn malloc_not_fast(&mut self, size: usize) -> *mut u8 {
        if size <= MAX_CLASS_SIZE {
            self.alloc_class(class_of(size))
        } else {
            self.alloc_big(size, MIN_ALIGN, false)
        }
    }

    /// Allocates `size` zeroed bytes aligned to 16.
    #[inline]
    pub fn zalloc(&mut self, size: usize) -> *mut u8 {
        if size <= MAX_CLASS_SIZE {
            self.alloc_class_zeroed(class_of(size), size)
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

    fn alloc_aligned(&mut self, size: usize, align: usize, zero: bool) -> *mut u8 {
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
        if let Some(c) = class_for_aligned(size, align) {
            return if zero {
                self.alloc_class_zeroed(c, size)
            } else {
                self.alloc_class(c)
            };
        }
        self.alloc_big(size, align, zero)
    }

    /// Pops a block from `page`'s free list, checking the link it leaves
    /// behind; null when the list is empty.
    ///
    /// # Safety
    /// `page` must be a queued page of this heap or the empty page.
    #[inline(always)]
    unsafe fn pop_block(&mut self, page: *mut Span) -> *mut u8 {
        // SAFETY: the caller's contract; the empty page has no free blocks,
        // so it is never written.
        unsafe {
            let b = (*page).pop_free(self.key);
            if b.is_null() {
                return ptr::null_mut();
            }
            let next = (*page).free as usize;
            // A link leaving the block's segment means the free list was
            // overwritten (a use-after-free write).
            if next != 0 && (next ^ b as usize) > SEGMENT_MASK {
                self.global.misuse(Misuse::FreeListCorruption, b as usize);
            }
            // Clear the stale link: a live block whose first word still
            // decoded to a free-list link would send every free of it down
            // the slow double-free check.
            (b as *mut usize).write(0);
            b as *mut u8
        }
    }

    /// [`Heap::pop_block`], counting the block in the statistics.
    ///
    /// # Safety
    /// As [`Heap::pop_block`].
    #[inline(always)]
    unsafe fn pop_counted(&mut self, page: *mut Span) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe {
            let b = self.pop_block(page);
            if !b.is_null() {
                self.stats.count_class_malloc((*page).class as usize);
            }
            b
        }
    }

    /// A block from the first page of class `c`'s queue, or null.
    ///
    /// # Safety
    /// `c` must be a size class (below `NUM_CLASSES`); unchecked so that
    /// the inline fast path has no panic branch and needs no stack frame.
    #[inline(always)]
    unsafe fn pop_queued(&mut self, c: usize) -> *mut u8 {
        debug_assert!(c < NUM_CLASSES);
        // SAFETY: `c` is a class (caller's contract); queued pages belong
        // to this heap's segments.
        unsafe {
            let page = self.queues.first_unchecked(c);
            if page.is_null() {
                return ptr::null_mut();
            }
            self.pop_counted(page)
        }
    }

    /// Allocates a block of class `c`.
    #[inline(always)]
    fn alloc_class(&mut self, c: usize) -> *mut u8 {
        // SAFETY: callers pass classes from `class_of` or
        // `class_for_aligned`.
        let b = unsafe { self.pop_queued(c) };
        if !b.is_null() {
            return b;
        }
        self.alloc_class_slow(c)
    }

    /// Allocates a zeroed block of class `c` for a request of `size` bytes.
    fn alloc_class_zeroed(&mut self, c: usize, size: usize) -> *mut u8 {
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
            if !b.is_null() {
                self.stats.count_class_malloc(c);
                if !zero {
                    ptr::write_bytes(b, 0, size);
                }
            }
            b
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_class_slow(&mut self, c: usize) -> *mut u8 {
        if !self.refill(c) {
            return ptr::null_mut();
        }
        self.alloc_class(c)
    }

    /// Makes the first page of class `c`'s queue have free blocks: collects
    /// frees into queued pages, parks full ones, or adds a new slab.
    /// Returns false when out of memory.
    fn refill(&mut self, c: usize) -> bool {
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
    fn refill_from_queue(&mut self, c: usize) -> bool {
        let key = self.key;
        // SAFETY: every page reached from the queue belongs to this heap.
        unsafe {
            let mut page = self.queues.first(c);
            while !page.is_null() {
                let next = (*page).next;
                (*page).collect();
                if (*page).free.is_null() {
                    (*page).extend(key, EXTEND_BYTES);
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
    unsafe fn new_slab(&mut self, c: usize) -> Option<*mut Span> {
        let info = CLASSES[c];
        let (seg, idx) = self.take_span(info.slices, SLICE_SIZE, SpanKind::Slab)?;
        // SAFETY: the span was just carved from an owned segment.
        unsafe {
            let start = (*seg).slice_addr(idx);
            let page: *mut Span = &mut (*seg).slices[idx];
            let p = &mut *page;
            p.class = c as u8;
            p.set_block_size(info.block_size);
            p.reserved = ((info.slices * SLICE_SIZE) / info.block_size) as u32;
            p.capacity = 0;
            p.used = 0;
            p.free = ptr::null_mut();
            p.local_free = ptr::null_mut();
            p.thread_free.reset();
            p.in_full = false;
            p.start = start;
            p.extend(self.key, EXTEND_BYTES);
            self.queues.push_front(c, page);
            Some(page)
        }
    }

    /// Allocates a block above the class limit or with a large alignment:
    /// a span of its own, or a huge segment.
    #[cold]
    fn alloc_big(&mut self, size: usize, align: usize, zero: bool) -> *mut u8 {
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
        let n = size.max(1).div_ceil(SLICE_SIZE);
        let Some((seg, idx)) = self.alloc_span(n, align.max(SLICE_SIZE), SpanKind::Large) else {
            return ptr::null_mut();
        };
        // SAFETY: the span was just carved from an owned segment.
        unsafe {
            let p = &mut (*seg).slices[idx];
            p.start = (*seg).slice_addr(idx);
            p.set_block_size(n * SLICE_SIZE);
            p.used = 1;
            p.reserved = 1;
            p.capacity = 1;
            p.free = ptr::null_mut();
            p.local_free = ptr::null_mut();
            // A large block is always "full": remote frees notify us.
            p.in_full = true;
            p.thread_free.arm();
            if zero && !p.span_is_zero {
                ptr::write_bytes(p.start as *mut u8, 0, size);
            }
            bump(&self.stats.mallocs, 1);
            bump(&self.stats.malloc_bytes, p.block_size as u64);
            p.start as *mut u8
        }
    }

    // ----------------------------------------------------------------------
    // Free
    // ----------------------------------------------------------------------

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
        let addr = p as usize;
        let seg_base = segment_base_of(addr);
        if !segment_map::contains(seg_base) {
            return false;
        }
        // SAFETY: the segment map says a live segment header is there.
        unsafe {
            let seg = seg_base as *mut Segment;
            // The common case, checked cheaply: a block boundary in the
            // first slice of a queued slab of our own segment (one tag
            // compare). Everything else takes the fully validating slow path.
            if (*seg).owner() != self.id() {
                return false;
            }
            // The slice index, wrapped to the segment: the one pointer that
            // `segment_base_of` maps to this segment from outside it (its
            // end) lands on the header's descriptor, which is never a slab.
            let idx = (addr >> SLICE_SHIFT) & (SLICES_PER_SEGMENT - 1);
            let d: *mut Span = (*seg).slices.as_mut_ptr().add(idx);
            if (*d).tag() != TAG_QUEUED_SLAB || !(*d).is_block_offset(addr - (*d).start) {
                return false;
            }
            let b = p as *mut Block;
            let link = next_of(b, self.key) as usize;
            // A free block's link is null or points into its segment; live
            // blocks have their link cleared at allocation, so seeing one is
            // rare enough to confirm out of line, by scanning the page.
            if link == 0 || (link ^ addr) <= SEGMENT_MASK {
                self.free_suspected_double(d, b);
                return true;
            }
            // Counting first lets the `used` decrement feed the emptiness
            // test directly.
            self.stats.count_class_free((*d).class as usize);
            (*d).push_local(b, self.key);
            if (*d).used == 0 {
                self.after_local_free(d);
            }
            true
        }
    }

    /// Everything `try_free_fast` leaves: null and foreign pointers, other
    /// heaps' blocks, large and huge blocks, full pages, misuse.
    #[cold]
    #[inline(never)]
    unsafe fn free_not_fast(&mut self, p: *mut u8) {
        let addr = p as usize;
        let seg_base = segment_base_of(addr);
        if !segment_map::contains(seg_base) {
            if !p.is_null() {
                self.global
                    .stats
                    .foreign_frees
                    .fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        // SAFETY: a live segment is there.
        unsafe { self.free_slow(seg_base as *mut Segment, addr) }
    }

    /// Frees a block of one of this heap's slabs, after a cheap check for a
    /// double free.
    ///
    /// # Safety
    /// `b` must be a block start of the slab `page`, owned by this heap.
    #[inline(always)]
    unsafe fn free_to_own_slab(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller guarantees `page` is our slab holding `b`.
        unsafe {
            let link = next_of(b, self.key) as usize;
            // A free block's link is null or points into its segment; live
            // blocks have their link cleared at allocation, so seeing one is
            // rare enough to confirm out of line, by scanning the page.
            if link == 0 || (link ^ b as usize) <= SEGMENT_MASK {
                return self.free_suspected_double(page, b);
            }
            (*page).push_local(b, self.key);
            self.stats.count_class_free((*page).class as usize);
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
    unsafe fn free_suspected_double(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller passes our slab and a block start in it.
        unsafe {
            if (*page).list_contains(b, self.key) {
                self.global.misuse(Misuse::DoubleFree, b as usize);
            }
            (*page).push_local(b, self.key);
            self.stats.count_class_free((*page).class as usize);
            if (*page).used == 0 || (*page).in_full {
                self.after_local_free(page);
            }
        }
    }

    /// Frees everything the fast path does not: large blocks, blocks of
    /// other heaps, huge blocks, and misuse.
    #[cold]
    #[inline(never)]
    unsafe fn free_slow(&mut self, seg: *mut Segment, addr: usize) {
        // SAFETY: `seg` is a live segment (checked by the caller).
        unsafe {
            let (page, usable) = match find_block(seg, addr) {
                Found::Block(page, usable) => (page, usable),
                Found::Invalid(m) => {
                    let m = if m == Misuse::InvalidRealloc {
                        Misuse::InvalidFree
                    } else {
                        m
                    };
                    self.global.misuse(m, addr)
                }
            };
            let b = addr as *mut Block;
            if !(*seg).is_huge && (*seg).owner() == self.id() && (*page).kind == SpanKind::Slab {
                // Own slab block the fast path did not take (multi-slice
                // slab): the same checks and bookkeeping.
                self.free_to_own_slab(page, b);
                return;
            }
            if !(*seg).is_huge && (*page).kind == SpanKind::Slab {
                self.stats.count_class_free((*page).class as usize);
            } else {
                bump(&self.stats.frees, 1);
                bump(&self.stats.free_bytes, usable as u64);
            }
            if (*seg).is_huge {
                self.global.free_huge(seg, true);
                return;
            }
            if (*seg).owner() == self.id() {
                // Own large block.
                self.free_own_block(page, b);
                return;
            }
            bump(&self.stats.remote_frees, 1);
            if (*page).thread_free.push(b, self.key, false) == RemotePush::MustNotify {
                self.hand_over(page, seg, b);
            }
        }
    }

    /// Hands a block of a parked full page to the page's owner through its
    /// delayed-free list, which brings the page back into the owner's
    /// queue. Two steps that a `fork` must not split (a child would find
    /// the page `Notifying` for ever), hence the fork guard around them.
    #[cold]
    #[inline(never)]
    unsafe fn hand_over(&mut self, page: *mut Span, seg: *mut Segment, b: *mut Block) {
        let _guard = self.global.fork_guard();
        // SAFETY: `b` is a live block of `page` given up by the caller;
        // while we hold `Notifying` the owner cannot go away.
        unsafe {
            if (*page).thread_free.push(b, self.key, true) == RemotePush::Notifying {
                self.global.fork_gate().run_handoff_hook();
                let owner = (*seg).owner.load(Ordering::Acquire) as *const Heap;
                (*owner).delayed.push(b, (*owner).key);
                (*page).thread_free.end_notifying();
            }
        }
    }

    /// Frees a block of a page this heap owns (slab or large).
    unsafe fn free_own_block(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller guarantees `page` is ours and `b` live in it.
        unsafe {
            if (*page).kind == SpanKind::Large {
                (*page).used = 0;
                self.retire_page(page);
            } else {
                (*page).push_local(b, self.key);
                if (*page).used == 0 || (*page).in_full {
                    self.after_local_free(page);
                }
            }
        }
    }

    /// A local free emptied a page or hit a parked full page.
    #[cold]
    unsafe fn after_local_free(&mut self, page: *mut Span) {
        // SAFETY: `page` is an own slab.
        unsafe {
            let c = (*page).class as usize;
            if (*page).in_full {
                (*page).in_full = false;
                (*page).thread_free.set_notify(Notify::Normal);
                self.queues.push_back(c, page);
            }
            if (*page).used == 0 {
                // Keep a lone page to avoid thrashing on alloc/free cycles,
                // unless it spans several slices (blocks of tens of KiB and
                // more): re-carving such a slab costs little next to the
                // blocks' own use, while every class and heap keeping one
                // would hold megabytes idle.
                if self.queues.holds_only(c, page) && (*page).slice_count == 1 {
                    return;
                }
                self.queues.remove(c, page);
                self.retire_page(page);
            }
        }
    }

    /// Returns an empty (unqueued) page's span to the free bins.
    unsafe fn retire_page(&mut self, page: *mut Span) {
        // SAFETY: `page` is an own, empty, unqueued span.
        unsafe {
            // Wait out a remote thread still finishing a notification.
            (*page).thread_free.set_notify(Notify::Normal);
            (*page).thread_free.reset();
            (*page).in_full = false;
            let seg = ((page as usize) & !SEGMENT_MASK) as *mut Segment;
            let idx = (*seg).index_of(page);
            let n = (*page).slice_count as usize;
            (*seg).used_slices -= n;
            self.global.stats.sub_active(n * SLICE_SIZE);
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
    unsafe fn segment_emptied(&mut self, seg: *mut Segment) {
        // SAFETY: own segments, linked through `next`.
        unsafe {
            let mut other = self.segments;
            while !other.is_null() && (other == seg || (*other).used_slices != 0) {
                other = (*other).next;
            }
            if other.is_null() && !self.global.under_pressure() {
                return;
            }
            self.release_segment(seg);
        }
    }

    /// Hands an empty own segment back to `Global`.
    ///
    /// # Safety
    /// `seg` is an own segment whose only span is a binned free span.
    unsafe fn release_segment(&mut self, seg: *mut Segment) {
        // SAFETY: the caller's contract.
        unsafe {
            self.bins.remove(&mut (*seg).slices[HEADER_SLICES]);
            self.unlink_segment(seg);
            (*seg).owner.store(0, Ordering::Release);
            self.global.retire_segment(seg);
        }
    }

    /// Frees every block other threads handed us through `delayed`.
    fn drain_delayed(&mut self) {
        let mut b = self.delayed.take();
        while !b.is_null() {
            // SAFETY: delayed blocks are live blocks of our own pages.
            unsafe {
                let next = next_of(b, self.key);
                let seg = segment_base_of(b as usize) as *mut Segment;
                if let Found::Block(page, _) = find_block(seg, b as usize) {
                    self.free_own_block(page, b);
                }
                b = next;
            }
        }
    }

    // ----------------------------------------------------------------------
    // Realloc and sizes
    // ----------------------------------------------------------------------

    /// Resizes a block, in place when its usable size or a following free
    /// span allows. Returns null (leaving `p` valid) when out of memory or
    /// when `p` is foreign.
    ///
    /// # Safety
    /// `p` must be non-null and either foreign or a live block of this
    /// allocator instance.
    pub unsafe fn realloc(&mut self, p: *mut u8, new_size: usize) -> *mut u8 {
        let addr = p as usize;
        let seg = segment_base_of(addr) as *mut Segment;
        if !segment_map::contains(seg as usize) {
            return ptr::null_mut();
        }
        // SAFETY: the segment is live; `find_block` validates the pointer.
        unsafe {
            let (page, usable) = match find_block(seg, addr) {
                Found::Block(page, usable) => (page, usable),
                Found::Invalid(_) => self.global.misuse(Misuse::InvalidRealloc, addr),
            };
            if !(*seg).is_huge
                && (*page).kind == SpanKind::Large
                && (*seg).owner() == self.id()
                && new_size > MAX_CLASS_SIZE
                && self.resize_large(seg, page, new_size)
            {
                return p;
            }
            if (*seg).is_huge && new_size > LARGE_MAX && self.resize_huge(seg, page, new_size) {
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

    /// Resizes a huge block in place within its reservation: a shrink
    /// decommits the pages past the new end (a block cut from 1 GiB to
    /// 600 MiB must not keep 1 GiB resident), a growth takes them back.
    /// Returns false when the reservation is too small.
    ///
    /// # Safety
    /// `page` is the descriptor of the live huge block of `seg`.
    unsafe fn resize_huge(&mut self, seg: *mut Segment, page: *mut Span, new_size: usize) -> bool {
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

    /// Grows or shrinks a large block in place. Returns false if it cannot.
    unsafe fn resize_large(&mut self, seg: *mut Segment, page: *mut Span, new_size: usize) -> bool {
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

    // ----------------------------------------------------------------------
    // Spans
    // ----------------------------------------------------------------------

    /// Carves a used span of `n` slices starting on an `align` boundary
    /// (`align >= SLICE_SIZE`) from the bins, adding segments as needed.
    fn alloc_span(
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
    fn take_span(
        &mut self,
        n: usize,
        align: usize,
        kind: SpanKind,
    ) -> Option<(*mut Segment, usize)> {
        let extra = (align - SLICE_SIZE) / SLICE_SIZE;
        // SAFETY: binned spans are free spans of owned segments.
        unsafe {
            let span = self.bins.take(n + extra);
            if span.is_null() {
                return None;
            }
            let seg = ((span as usize) & !SEGMENT_MASK) as *mut Segment;
            let s = &mut *seg;
            let idx = s.index_of(span);
            let m = (*span).slice_count as usize;
            let (dirty, zero) = ((*span).dirty, (*span).span_is_zero);
            let head = (align_up(s.slice_addr(idx), align) - s.slice_addr(idx)) / SLICE_SIZE;
            let at = idx + head;
            if !self.global.commit(s.slice_addr(at), n * SLICE_SIZE) {
                s.mark_free(idx, m, dirty, zero);
                self.bins.insert(span);
                return None;
            }
            s.mark_used(at, n, kind);
            s.mark_resident(at, n);
            s.slices[at].span_is_zero = zero;
            if head > 0 {
                self.insert_free(seg, idx, head, dirty, zero);
            }
            if m > head + n {
                self.insert_free(seg, at + n, m - head - n, dirty, zero);
            }
            s.used_slices += n;
            self.global.stats.add_active(n * SLICE_SIZE);
            Some((seg, at))
        }
    }

    /// Makes `[idx, idx+n)` a free span, merged with free neighbours, and
    /// bins it.
    unsafe fn insert_free(
        &mut self,
        seg: *mut Segment,
        idx: usize,
        n: usize,
        dirty: bool,
        zero: bool,
    ) {
        // SAFETY: `seg` is owned; its free spans are all binned, so any free
        // neighbour found through the boundary tags is in our bins.
        unsafe {
            let s = &mut *seg;
            let (mut idx, mut n, mut dirty, mut zero) = (idx, n, dirty, zero);
            let r = idx + n;
            if r < SLICES_PER_SEGMENT {
                let right: *mut Span = &mut s.slices[r];
                if (*right).kind == SpanKind::Free && (*right).slice_count > 0 {
                    self.bins.remove(right);
                    n += (*right).slice_count as usize;
                    dirty |= (*right).dirty;
                    zero &= (*right).span_is_zero;
                    (*right).slice_count = 0;
                }
            }
            if let Some(l) = s.span_before(idx) {
                let left: *mut Span = &mut s.slices[l];
                if (*left).kind == SpanKind::Free && (*left).slice_count as usize == idx - l {
                    self.bins.remove(left);
                    s.slices[idx].slice_count = 0;
                    s.slices[idx].kind = SpanKind::Free;
                    n += idx - l;
                    dirty |= (*left).dirty;
                    zero &= (*left).span_is_zero;
                    idx = l;
                }
            }
            s.mark_free(idx, n, dirty, zero);
            self.bins.insert(&mut s.slices[idx]);
            if dirty {
                self.schedule_purge(seg);
            }
        }
    }

    /// Gets one more segment: an abandoned one to adopt, else a new one;
    /// when none can be had, reclaims memory and tries once more. Returns
    /// false when out of memory. (Public so a frontend can give a heap its
    /// first segment ahead of need.)
    pub fn add_segment(&mut self) -> bool {
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
    fn reclaim(&mut self) -> bool {
        let now = self.global.now().unwrap_or(self.now);
        self.global.purge_cache(now, true);
        let mut adopted = 0;
        while let Some(seg) = self.global.pop_abandoned() {
            // SAFETY: popped abandoned segments are exclusively ours.
            unsafe { self.adopt(seg) };
            adopted += 1;
        }
        self.release_empty_pages();
        // Retires every empty segment (under pressure, straight back to the
        // provider) and decommits the free spans of the rest.
        self.purge(true);
        adopted > 0 && !self.segments.is_null()
    }

    /// Takes a fresh (or cached) segment from `Global`.
    fn new_segment(&mut self) -> bool {
        let Some(seg) = self.global.new_segment() else {
            return false;
        };
        // SAFETY: a new segment is exclusively ours.
        unsafe {
            (*seg).owner.store(self.id(), Ordering::Release);
            self.link_segment(seg);
            self.bins.insert(&mut (*seg).slices[HEADER_SLICES]);
        }
        true
    }

    unsafe fn link_segment(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` is ours and unlinked.
        unsafe {
            (*seg).prev = ptr::null_mut();
            (*seg).next = self.segments;
            if !self.segments.is_null() {
                (*self.segments).prev = seg;
            }
            self.segments = seg;
        }
    }

    unsafe fn unlink_segment(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` is linked in our list.
        unsafe {
            let (prev, next) = ((*seg).prev, (*seg).next);
            if prev.is_null() {
                self.segments = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*seg).next = ptr::null_mut();
            (*seg).prev = ptr::null_mut();
        }
    }

    // ----------------------------------------------------------------------
    // Abandonment and adoption
    // ----------------------------------------------------------------------

    /// Takes remote frees of every used span of `seg` into local lists and
    /// turns spans that became empty into (uncoalesced) free spans.
    unsafe fn sweep_segment(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` is owned by this heap (or being adopted by it).
        unsafe {
            let s = &mut *seg;
            let mut freed = false;
            let mut idx = HEADER_SLICES;
            while idx < SLICES_PER_SEGMENT {
                let n = (s.slices[idx].slice_count as usize).max(1);
                let page: *mut Span = &mut s.slices[idx];
                if matches!((*page).kind, SpanKind::Slab | SpanKind::Large) {
                    (*page).next = ptr::null_mut();
                    (*page).prev = ptr::null_mut();
                    let (mut b, _) = (*page).thread_free.take();
                    while !b.is_null() {
                        let next = next_of(b, self.key);
                        if (*page).kind == SpanKind::Slab {
                            (*page).push_local(b, self.key);
                        } else {
                            (*page).used = 0;
                        }
                        b = next;
                    }
                    if (*page).used == 0 {
                        self.free_swept_span(seg, page);
                        freed = true;
                    }
                }
                idx += n;
            }
            if freed {
                self.schedule_purge(seg);
            }
        }
    }

    /// Turns an empty used span of `seg` into an (uncoalesced, unbinned)
    /// dirty free span; the caller schedules the purge and coalesces.
    ///
    /// # Safety
    /// `seg` is held by this heap; `page` is the first descriptor of an
    /// unqueued used span with no live block.
    unsafe fn free_swept_span(&mut self, seg: *mut Segment, page: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe {
            let n = (*page).slice_count as usize;
            (*seg).used_slices -= n;
            self.global.stats.sub_active(n * SLICE_SIZE);
            (*page).kind = SpanKind::Free;
            (*page).dirty = true;
            (*page).span_is_zero = false;
        }
    }

    /// Gives up every segment: drains notifications, returns empty segments
    /// and pushes the rest on the abandoned list.
    fn abandon_all(&mut self) {
        self.drain_delayed();
        // No page may stay in `Notify`: remote freers would then reach for
        // this heap after it is gone. `set_notify` waits out `Notifying`.
        let mut seg = self.segments;
        while !seg.is_null() {
            // SAFETY: owned segments; spans are walked by their tags.
            unsafe {
                let s = &*seg;
                let mut idx = HEADER_SLICES;
                while idx < SLICES_PER_SEGMENT {
                    let d = &s.slices[idx];
                    if matches!(d.kind, SpanKind::Slab | SpanKind::Large) {
                        d.thread_free.set_notify(Notify::Normal);
                    }
                    idx += (d.slice_count as usize).max(1);
                }
                seg = s.next;
            }
        }
        self.drain_delayed();
        while !self.segments.is_null() {
            let seg = self.segments;
            // SAFETY: owned segment, unlinked before it is handed on.
            unsafe {
                self.unlink_segment(seg);
                self.sweep_segment(seg);
                if (*seg).used_slices == 0 {
                    (*seg).owner.store(0, Ordering::Release);
                    self.global.retire_segment(seg);
                } else {
                    self.trim_before_abandoning(seg);
                    (*seg).owner.store(0, Ordering::Release);
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
    unsafe fn trim_before_abandoning(&mut self, seg: *mut Segment) {
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
    unsafe fn adopt(&mut self, seg: *mut Segment) {
        // SAFETY: the segment was popped from the abandoned list, so only we
        // touch its metadata (remote freers touch only `thread_free`).
        unsafe {
            if !(*seg).cookie_ok(self.key) {
                self.global.misuse(Misuse::HeaderCorruption, seg as usize);
            }
            // Owner first: a page set to `Notify` below must lead remote
            // freers to us.
            (*seg).owner.store(self.id(), Ordering::Release);
            self.link_segment(seg);
            self.sweep_segment(seg);
            let s = &mut *seg;
            let mut idx = HEADER_SLICES;
            while idx < SLICES_PER_SEGMENT {
                let n = (s.slices[idx].slice_count as usize).max(1);
                let page: *mut Span = &mut s.slices[idx];
                match (*page).kind {
                    SpanKind::Slab => {
                        let p = &mut *page;
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
                        // A remote free racing in leaves the block on the
                        // list; notify refuses then, and we free it here.
                        while !(*page).thread_free.set_notify(Notify::Notify) {
                            if !(*page).thread_free.take().0.is_null() {
                                (*page).used = 0;
                                (*page).kind = SpanKind::Free;
                                (*page).dirty = true;
                                (*page).span_is_zero = false;
                                s.used_slices -= n;
                                self.global.stats.sub_active(n * SLICE_SIZE);
                                break;
                            }
                        }
                    }
                    _ => {}
                }
                idx += n;
            }
            let bins: *mut SpanBins = &mut self.bins;
            s.coalesce_all(|s, i| (*bins).insert(&mut s.slices[i]));
        }
    }

    // ----------------------------------------------------------------------
    // Decay and trimming
    // ----------------------------------------------------------------------

    /// Notes that `seg` gained a dirty free span: its dirty spans become
    /// due for decommit one purge delay from now. A segment that keeps
    /// freeing is in active use, so each new dirty span pushes the deadline
    /// out again, but never beyond `PURGE_MAX_DEFER` delays after the batch
    /// began: decommitting memory that is about to be reused only buys page
    /// faults, while a bound keeps a busy segment from hoarding forever.
    /// The clock is read afresh (a coarse monotonic clock on Linux, cheap);
    /// without one, time is the slow-path event count.
    unsafe fn schedule_purge(&mut self, seg: *mut Segment) {
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
    fn on_slow_path(&mut self) {
        self.drain_delayed();
        self.tick += 1;
        bump(&self.stats.slow_paths, 1);
        if self.tick.is_multiple_of(PURGE_CHECK_INTERVAL) {
            self.now = self
                .global
                .now()
                .unwrap_or(self.tick / PURGE_CHECK_INTERVAL + 1);
            self.purge(false);
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
        self.release_empty_pages();
        self.now = self.global.now().unwrap_or(self.now);
        self.purge(true);
        self.global.purge_abandoned(self.now, 0, true);
        self.global.purge_cache(self.now, true);
    }

    /// Retires the empty slabs each class queue keeps for reuse, so their
    /// spans become free spans (and their segments possibly empty).
    pub fn release_empty_pages(&mut self) {
        self.drain_delayed();
        for c in 0..NUM_CLASSES {
            let mut page = self.queues.first(c);
            while !page.is_null() {
                // SAFETY: queued pages are our own slabs.
                unsafe {
                    let next = (*page).next;
                    (*page).collect();
                    if (*page).used == 0 {
                        self.queues.remove(c, page);
                        self.retire_page(page);
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
    fn purge(&mut self, force: bool) {
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
        let mut seg = self.segments;
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
                    let seg = ((span as usize) & !SEGMENT_MASK) as *mut Segment;
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
                    let seg = ((span as usize) & !SEGMENT_MASK) as *mut Segment;
                    // Whole free segments are retired below instead.
                    if excess == 0
                        || !(*span).dirty
                        || (*span).slice_count == full_span
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
        let mut seg = self.segments;
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
                if (*seg).used_slices == 0 {
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
                return Found::Block(d as *const Span as *mut Span, d.block_size);
            }
            return Found::Invalid(Misuse::InvalidFree);
        }
        let Some(page) = s.page_of(addr) else {
            // Freeing the first byte of a free span is most likely a block
            // that was already freed.
            let idx = (addr - s.base()) / SLICE_SIZE;
            let looks_freed = addr.is_multiple_of(SLICE_SIZE)
                && (HEADER_SLICES..SLICES_PER_SEGMENT).contains(&idx)
                && s.slices[idx].kind == SpanKind::Free
                && s.slices[idx].slice_offset == 0;
            return Found::Invalid(if looks_freed {
                Misuse::DoubleFree
            } else {
                Misuse::InvalidFree
            });
        };
        let page = page as *const Span as *mut Span;
        match (*page).kind {
            SpanKind::Slab => {
                if (*page).is_block_offset(addr - (*page).start) {
                    Found::Block(page, (*page).block_size)
                } else {
                    Found::Invalid(Misuse::InvalidFree)
                }
            }
            SpanKind::Large if addr == (*page).start => Found::Block(page, (*page).block_size),
            _ => Found::Invalid(Misuse::InvalidFree),
        }
    }
}

/// Usable bytes of the block at `p`; 0 for null, foreign or invalid
/// pointers.
///
/// # Safety
/// `p` must be null, foreign, or a live block of this allocator.
pub unsafe fn usable_size(p: *const u8) -> usize {
    let addr = p as usize;
    let seg = segment_base_of(addr);
    if !segment_map::contains(seg) {
        return 0;
    }
    // SAFETY: a live segment is there.
    match unsafe { find_block(seg as *mut Segment, addr) } {
        Found::Block(_, usable) => usable,
        _ => 0,
    }
}

/// Whether `p` lies in a segment of this allocator (any instance).
pub fn owns(p: *const u8) -> bool {
    segment_map::contains(segment_base_of(p as usize))
}

/// Sums every heap's counters with the global ones.
pub fn snapshot(global: &Global) -> Snapshot {
    let pool = global.heaps.lock();
    let mut s = global.retired_snapshot();
    pool.for_each_live(size_of::<Heap>(), |h| {
        // SAFETY: live records are initialised heaps; counters are atomics.
        let st = unsafe { &(*(h as *const Heap)).stats };
        let (m, f, bytes) = st.totals();
        s.mallocs += m;
        s.frees += f;
        s.allocated = s.allocated.wrapping_add(bytes);
        s.remote_frees += st.remote_frees.load(Ordering::Relaxed);
    });
    s
}

// The heap struct fits the pool's records (at most 64 a chunk).
const _: () = assert!(crate::pool::records_per_chunk(size_of::<Heap>()) >= 1);
