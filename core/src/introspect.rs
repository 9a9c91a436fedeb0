//! Introspection: a walk over every live segment and its spans, and the
//! statistics computed from it and from the heaps' counters, on demand.
//!
//! Nothing here runs unless asked: the allocation and free paths write no
//! counter for it (see [`crate::stats`] for what they do keep), and the
//! segment registry it walks changes only on slow paths.
//!
//! # Consistency
//!
//! Readers run while other threads allocate and free. Every segment the
//! walk visits is in the registry ([`crate::registry`]), which is read
//! under its lock, and a registered segment is never released or recycled,
//! so reading its header cannot fault. The span descriptors themselves are
//! written by their owners without locks: the walk reads each field once,
//! with a volatile load, and bounds every value before using it (a span
//! length that a concurrent split left at zero counts as one slice), so a
//! descriptor caught in the middle of a change yields a plausible but
//! possibly stale span, never a crash. The lock is held only while up to
//! [`WALK_CHUNK`] items are copied out; visitors run without it, so they
//! may allocate and free (also huge blocks) as they like.
//!
//! "Exact" means: when no thread is inside an allocator call between the
//! first and the last read of a query (the program is quiescent), every
//! figure is exactly what the allocator holds. While threads run, each
//! figure is a mix of slightly different moments; the counts are off by at
//! most the blocks those threads move meanwhile.
//!
//! Two views of a size class exist. [`ClassStats::active_blocks`] (and
//! [`ClassStats::allocated`]) count the blocks the program holds, from the
//! heaps' counters less the blocks their slabs cache: a block freed by
//! another thread stops counting at once. [`SpanInfo::used`] is a slab's
//! own count of blocks out of its lists: a block another thread freed
//! still counts there until the slab's owner collects it (the next time it
//! refills from that slab, or when its thread ends).

use core::mem::size_of;
use core::ptr::{addr_of, read_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::global::Global;
use crate::heap::Heap;
use crate::layout::{SLICES_PER_SEGMENT, SLICE_SIZE};
use crate::segment::{Segment, HEADER_SLICES, RESIDENT_WORDS};
use crate::size_class::{class_size, NUM_CLASSES};
use crate::span::{Span, SpanKind};
use crate::stats::HeapStats;

/// Items copied out of the registry per lock hold.
pub const WALK_CHUNK: usize = 32;
/// Heaps whose counters are read per lock hold (see [`for_each_heap`]).
pub const HEAP_CHUNK: usize = 16;

/// What a span is used for, as the walk reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanUse {
    /// Free pages of a segment (in a heap's bins, or of an abandoned
    /// segment).
    Free,
    /// A slab: blocks of one size class.
    Slab,
    /// One large block in a span of its own.
    Large,
    /// The block of a huge segment (a reservation of its own).
    Huge,
}

impl SpanUse {
    /// The lower-case name used in reports: `free`, `slab`, `large`, `huge`.
    pub fn name(self) -> &'static str {
        match self {
            SpanUse::Free => "free",
            SpanUse::Slab => "slab",
            SpanUse::Large => "large",
            SpanUse::Huge => "huge",
        }
    }
}

/// A live segment, as the walk reports it before its spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Address of the segment (its header).
    pub base: usize,
    /// Bytes from `base` to the end of its reservation: the segment size,
    /// or for a huge block its header, the block and any slack and guard.
    pub size: usize,
    /// A huge block's segment (one span, [`SpanUse::Huge`]).
    pub huge: bool,
    /// Address of the owning heap; 0 when none (abandoned, or huge).
    pub owner: usize,
    /// Bytes in used spans (slabs and large blocks; a huge segment's
    /// block).
    pub used_bytes: usize,
    /// Bytes that may be resident: slices touched and not returned since
    /// (a huge segment: its block). Header pages are not counted.
    pub resident_bytes: usize,
}

/// One span of a segment, as the walk reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanInfo {
    /// The segment it belongs to ([`SegmentInfo::base`]).
    pub segment: usize,
    /// First byte of the span (of the block, for a huge span).
    pub addr: usize,
    /// Bytes of the span (of the block, for a huge span).
    pub len: usize,
    pub kind: SpanUse,
    /// The size class of a slab; 0 otherwise.
    pub class: usize,
    /// Bytes per block: a slab's block size, a large or huge block's usable
    /// size; 0 for a free span.
    pub block_size: usize,
    /// Blocks out of the span's lists: handed out, or freed by another
    /// thread and not collected yet (see the module documentation). 0 or 1
    /// for large and huge spans.
    pub used: usize,
    /// Blocks carved so far (a slab carves its blocks as it needs them).
    pub carved: usize,
    /// Blocks that fit in the span.
    pub blocks: usize,
}

impl SpanInfo {
    /// Offset of the span from its segment's base.
    pub fn offset(&self) -> usize {
        self.addr - self.segment
    }

    /// Bytes of the blocks counted in [`SpanInfo::used`].
    pub fn used_bytes(&self) -> usize {
        self.used * self.block_size
    }
}

/// What [`Global::walk`] visits: each segment, then its spans in address
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkItem {
    Segment(SegmentInfo),
    Span(SpanInfo),
}

const NO_ITEM: WalkItem = WalkItem::Segment(SegmentInfo {
    base: 0,
    size: 0,
    huge: false,
    owner: 0,
    used_bytes: 0,
    resident_bytes: 0,
});

/// Where a walk resumes after dropping the registry lock: the first
/// segment numbered `seq` or more, from slice `idx` when it is numbered
/// `seq` (0: the segment itself first). `seg` is that segment when the
/// last chunk stopped inside it, found again without a search while the
/// registry's `removals` is still `removals`.
#[derive(Clone, Copy)]
struct Cursor {
    seq: u64,
    idx: usize,
    seg: *mut Segment,
    removals: u64,
}

/// Reads `*p` once; the owner may be writing it.
///
/// # Safety
/// `p` points into a mapped segment header.
#[inline]
unsafe fn rd<T: Copy>(p: *const T) -> T {
    // SAFETY: the caller's contract.
    unsafe { read_volatile(p) }
}

/// The header facts of a registered segment.
///
/// # Safety
/// `seg` is registered (its header is mapped).
unsafe fn segment_info(seg: *const Segment) -> SegmentInfo {
    // SAFETY: the caller's contract; every field is read once.
    unsafe {
        let base = seg as usize;
        let huge = rd(addr_of!((*seg).is_huge));
        let end = rd(addr_of!((*seg).reservation)) + rd(addr_of!((*seg).reservation_len));
        let owner = (*seg).owner.load(Ordering::Relaxed);
        let (used_bytes, resident_bytes) = if huge {
            let b = rd(addr_of!((*seg).slices[HEADER_SLICES].block_size));
            (b, b)
        } else {
            let mut touched = 0;
            for w in 0..RESIDENT_WORDS {
                touched += rd(addr_of!((*seg).resident[w])).count_ones() as usize;
            }
            let used = rd(addr_of!((*seg).used_slices)).min(SLICES_PER_SEGMENT);
            (used * SLICE_SIZE, touched * SLICE_SIZE)
        };
        SegmentInfo {
            base,
            size: end.saturating_sub(base),
            huge,
            owner,
            used_bytes,
            resident_bytes,
        }
    }
}

/// The span starting at slice `idx` of a registered normal segment, and
/// its length in slices (at least one, never past the segment's end).
///
/// # Safety
/// `seg` is registered; `idx` is below `SLICES_PER_SEGMENT`.
unsafe fn span_info(seg: *const Segment, idx: usize) -> (SpanInfo, usize) {
    // SAFETY: the caller's contract; each field is read once and bounded.
    unsafe {
        let d: *const Span = addr_of!((*seg).slices[idx]);
        let kind = rd(addr_of!((*d).kind) as *const u8);
        let n = (rd(addr_of!((*d).slice_count)) as usize).clamp(1, SLICES_PER_SEGMENT - idx);
        let base = seg as usize;
        let mut info = SpanInfo {
            segment: base,
            addr: base + idx * SLICE_SIZE,
            len: n * SLICE_SIZE,
            kind: SpanUse::Free,
            class: 0,
            block_size: 0,
            used: 0,
            carved: 0,
            blocks: 0,
        };
        if kind == SpanKind::Slab as u8 {
            let reserved = rd(addr_of!((*d).reserved)) as usize;
            info.kind = SpanUse::Slab;
            info.class = (rd(addr_of!((*d).class)) as usize).min(NUM_CLASSES - 1);
            info.block_size = rd(addr_of!((*d).block_size));
            info.blocks = reserved;
            info.carved = (rd(addr_of!((*d).capacity)) as usize).min(reserved);
            info.used = (rd(addr_of!((*d).used)) as usize).min(info.carved);
        } else if kind == SpanKind::Large as u8 {
            info.kind = SpanUse::Large;
            info.block_size = rd(addr_of!((*d).block_size));
            info.used = (rd(addr_of!((*d).used)) as usize).min(1);
            info.carved = 1;
            info.blocks = 1;
        }
        (info, n)
    }
}

/// The block of a registered huge segment.
///
/// # Safety
/// `seg` is registered and huge.
unsafe fn huge_info(seg: *const Segment) -> SpanInfo {
    // SAFETY: the caller's contract.
    unsafe {
        let d: *const Span = addr_of!((*seg).slices[HEADER_SLICES]);
        let size = rd(addr_of!((*d).block_size));
        SpanInfo {
            segment: seg as usize,
            addr: rd(addr_of!((*d).start)),
            len: size,
            kind: SpanUse::Huge,
            class: 0,
            block_size: size,
            used: 1,
            carved: 1,
            blocks: 1,
        }
    }
}

impl Global {
    /// Calls `visitor` for every live segment, in the order they were set
    /// up, and after each segment for each of its spans, in address order:
    /// free spans,
    /// slabs, large blocks, or the one huge block of a huge segment.
    ///
    /// Safe against other threads allocating, freeing and releasing
    /// segments meanwhile (see the module documentation): a segment
    /// released during the walk is either visited whole, visited up to
    /// where it went, or not at all, and a segment set up during the walk
    /// may or may not be visited. Exact when no other thread is inside the
    /// allocator. The visitor runs without any lock held and may allocate.
    pub fn walk(&self, visitor: &mut dyn FnMut(&WalkItem)) {
        let mut cur = Cursor {
            seq: 0,
            idx: 0,
            seg: core::ptr::null_mut(),
            removals: 0,
        };
        loop {
            let mut items = [NO_ITEM; WALK_CHUNK];
            let (n, done) = self.walk_chunk(&mut cur, &mut items);
            for item in &items[..n] {
                visitor(item);
            }
            if done {
                return;
            }
        }
    }

    /// Copies the next items of a walk into `out`, under the registry
    /// lock. Returns how many, and whether the walk is complete.
    fn walk_chunk(&self, cur: &mut Cursor, out: &mut [WalkItem; WALK_CHUNK]) -> (usize, bool) {
        let reg = self.registry.lock();
        let mut n = 0;
        // Where the last chunk stopped, if nothing was taken out since
        // (then it is still registered); else a search.
        let mut seg = if !cur.seg.is_null() && cur.removals == reg.removals() {
            Some(cur.seg)
        } else {
            reg.first_from(cur.seq)
        };
        cur.seg = core::ptr::null_mut();
        cur.removals = reg.removals();
        while let Some(s) = seg {
            // SAFETY: `s` is registered while the lock is held.
            unsafe {
                let seq = (*s).reg_seq;
                if seq != cur.seq {
                    cur.seq = seq;
                    cur.idx = 0;
                }
                if cur.idx == 0 {
                    if n == WALK_CHUNK {
                        cur.seg = s;
                        return (n, false);
                    }
                    out[n] = WalkItem::Segment(segment_info(s));
                    n += 1;
                    cur.idx = HEADER_SLICES;
                }
                if rd(addr_of!((*s).is_huge)) {
                    if cur.idx == HEADER_SLICES {
                        if n == WALK_CHUNK {
                            cur.seg = s;
                            return (n, false);
                        }
                        out[n] = WalkItem::Span(huge_info(s));
                        n += 1;
                    }
                } else {
                    while cur.idx < SLICES_PER_SEGMENT {
                        if n == WALK_CHUNK {
                            cur.seg = s;
                            return (n, false);
                        }
                        let (info, len) = span_info(s, cur.idx);
                        out[n] = WalkItem::Span(info);
                        n += 1;
                        cur.idx += len;
                    }
                }
                // On to the next segment.
                cur.seq = seq + 1;
                cur.idx = 0;
                seg = reg.next(s);
            }
        }
        (n, true)
    }
}

// ---------------------------------------------------------------------------
// Counters of one heap
// ---------------------------------------------------------------------------

/// The operation counts of one heap (a thread's, or the shared one), or of
/// all heaps summed.
///
/// Small blocks are counted in batches where they enter or leave a slab's
/// free lists (see [`crate::stats`]): a block the heap freed into its own
/// slab counts as neither allocated nor freed until the slab's blocks are
/// collected for reuse, and a slab that dies counts its never-used blocks
/// as both. So `mallocs` and `frees` (and the two byte sums) may each be
/// off from the program's own count by the same number of blocks, while
/// their differences, `mallocs - frees` and `bytes_allocated -
/// bytes_freed` (wrapping: a heap that frees other heaps' blocks frees more
/// than it allocates), and `remote_frees` are exact when the heap's thread
/// is not inside the allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// Blocks handed out, by every allocation function.
    pub mallocs: u64,
    /// Blocks freed by this heap's thread (its own blocks and others').
    pub frees: u64,
    /// Bytes handed out (usable sizes: the size class, or the pages of a
    /// large or huge block), cumulative.
    pub bytes_allocated: u64,
    /// Bytes freed by this heap's thread, cumulative.
    pub bytes_freed: u64,
    /// Of `frees`, blocks that another heap owned (sent back to it through
    /// its remote-free lists).
    pub remote_frees: u64,
    /// Allocations served from a slab already at the front of its class's
    /// queue: `mallocs - cache_misses`.
    pub cache_hits: u64,
    /// Trips to the slow path: refilling a class's queue (collecting frees,
    /// a new slab, a new segment) or allocating a large or huge block.
    pub cache_misses: u64,
}

impl ThreadStats {
    /// The counts of `heap`, for its owner (the thread using it).
    pub fn of_own(heap: &Heap) -> ThreadStats {
        let mut cached = [0; NUM_CLASSES];
        heap.cached_blocks(&mut cached);
        counts(&heap.stats, &cached, None)
    }

    fn add(&mut self, o: &ThreadStats) {
        self.mallocs = self.mallocs.wrapping_add(o.mallocs);
        self.frees = self.frees.wrapping_add(o.frees);
        self.bytes_allocated = self.bytes_allocated.wrapping_add(o.bytes_allocated);
        self.bytes_freed = self.bytes_freed.wrapping_add(o.bytes_freed);
        self.remote_frees = self.remote_frees.wrapping_add(o.remote_frees);
        self.cache_hits = self.cache_hits.wrapping_add(o.cache_hits);
        self.cache_misses = self.cache_misses.wrapping_add(o.cache_misses);
    }
}

/// Blocks that slabs cache, per class.
type ClassCounts = [u64; NUM_CLASSES];

/// The counts of one heap's counters `st` whose slabs cache `cached[c]`
/// blocks of class `c` (those are counted in `class_mallocs` though the
/// program never got them). With `live`, also adds each class's live
/// blocks (`mallocs - frees`, wrapping: a heap's frees of other heaps'
/// blocks can exceed its own mallocs) to it.
///
/// The one place that knows how [`HeapStats`] counts (see
/// [`crate::stats`]).
fn counts(st: &HeapStats, cached: &ClassCounts, mut live: Option<&mut ClassCounts>) -> ThreadStats {
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut t = ThreadStats {
        mallocs: ld(&st.mallocs),
        frees: ld(&st.frees),
        bytes_allocated: ld(&st.malloc_bytes),
        bytes_freed: ld(&st.free_bytes),
        remote_frees: ld(&st.remote_frees),
        cache_hits: 0,
        cache_misses: ld(&st.slow_paths),
    };
    for c in 0..NUM_CLASSES {
        let m = ld(&st.class_mallocs[c]).wrapping_sub(cached[c]);
        let f = ld(&st.class_frees[c]);
        let size = class_size(c) as u64;
        t.mallocs = t.mallocs.wrapping_add(m);
        t.frees = t.frees.wrapping_add(f);
        t.bytes_allocated = t.bytes_allocated.wrapping_add(m.wrapping_mul(size));
        t.bytes_freed = t.bytes_freed.wrapping_add(f.wrapping_mul(size));
        if let Some(l) = live.as_deref_mut() {
            l[c] = l[c].wrapping_add(m.wrapping_sub(f));
        }
    }
    t.cache_hits = t.mallocs.saturating_sub(t.cache_misses);
    t
}

/// One heap's counts, read by another thread: under the pool lock (the
/// heap stays alive) and the release lock (its segment headers stay
/// mapped).
///
/// # Safety
/// `h` is a live heap record, and the caller holds both locks.
unsafe fn counts_of_live(h: *const Heap, live: Option<&mut ClassCounts>) -> ThreadStats {
    // SAFETY: the caller's contract.
    let h = unsafe { &*h };
    let mut cached = [0; NUM_CLASSES];
    h.cached_blocks(&mut cached);
    counts(&h.stats, &cached, live)
}

/// Calls `f(heap, counts)` for every live heap (heap: its address, as in
/// [`SegmentInfo::owner`]), in address order. The counters are read in
/// batches of [`HEAP_CHUNK`] under the heap pool's lock; `f` runs without
/// it, so it may allocate (and even start or end threads, whose heaps are
/// then visited or not).
pub fn for_each_heap(global: &Global, f: &mut dyn FnMut(usize, &ThreadStats)) {
    let rec = size_of::<Heap>();
    let mut after = 0usize;
    loop {
        let mut ids = [0usize; HEAP_CHUNK];
        let mut stats = [ThreadStats::default(); HEAP_CHUNK];
        let mut n = 0;
        {
            let pool = global.heaps.lock();
            let _headers_stay = global.release_lock.lock();
            // The HEAP_CHUNK lowest addresses above `after`, in order.
            pool.for_each_live(rec, |h| {
                let a = h as usize;
                if a <= after || (n == HEAP_CHUNK && a >= ids[n - 1]) {
                    return;
                }
                let mut i = n.min(HEAP_CHUNK - 1);
                while i > 0 && ids[i - 1] > a {
                    ids[i] = ids[i - 1];
                    i -= 1;
                }
                ids[i] = a;
                n = (n + 1).min(HEAP_CHUNK);
            });
            for i in 0..n {
                // SAFETY: live records under both locks.
                stats[i] = unsafe { counts_of_live(ids[i] as *const Heap, None) };
            }
        }
        for i in 0..n {
            f(ids[i], &stats[i]);
        }
        if n < HEAP_CHUNK {
            return;
        }
        after = ids[n - 1];
    }
}

// ---------------------------------------------------------------------------
// The whole picture
// ---------------------------------------------------------------------------

/// One size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// The class number (0 is 16 bytes).
    pub class: usize,
    /// Bytes per block of the class.
    pub size: usize,
    /// Blocks of the class the program holds (exact at quiescence).
    pub active_blocks: u64,
    /// Their bytes: `active_blocks * size`.
    pub allocated: u64,
    /// Slabs of the class in live segments (from the walk).
    pub slabs: u64,
    /// Bytes of those slabs' spans.
    pub slab_bytes: u64,
    /// Blocks carved in those slabs.
    pub carved_blocks: u64,
    /// Blocks out of those slabs' lists (the slabs' own count, see the
    /// module documentation).
    pub used_blocks: u64,
}

/// The allocator's totals. Figures marked "walk" come from the segments
/// and spans, the others from the heaps' counters; all are exact at
/// quiescence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapTotals {
    /// Bytes in blocks the program holds (usable sizes).
    pub allocated: u64,
    /// Blocks the program holds.
    pub blocks_active: u64,
    /// Bytes in used spans: whole slabs, large blocks' spans, huge blocks
    /// (walk).
    pub active: u64,
    /// Bytes that may be resident: slices of segments touched and not
    /// returned since, huge blocks, resident cached ranges (walk; header
    /// pages and other metadata are not counted).
    pub resident: u64,
    /// Address space reserved from the system and not yet released:
    /// segments (live and cached), huge blocks, metadata.
    pub mapped: u64,
    /// Of `mapped`, cached ranges (empty segments and freed huge blocks
    /// kept for reuse).
    pub retained: u64,
    /// Live normal segments (walk).
    pub segments: u64,
    /// Live huge blocks (walk).
    pub huge_blocks: u64,
    /// Slabs and large blocks in live segments (walk).
    pub slabs: u64,
    pub large_blocks: u64,
    /// Normal segments and huge blocks ever set up.
    pub segments_total: u64,
    pub huge_total: u64,
    /// Of `segments`, those abandoned by exited threads and not adopted.
    pub abandoned_segments: u64,
    /// Live heaps (threads with a heap, and the shared one).
    pub heaps: u64,
    /// The operation counts of all heaps, live and exited, summed.
    pub ops: ThreadStats,
    /// The highest `active` so far (a running counter that counts huge
    /// blocks with their whole reservation).
    pub peak_active: u64,
    /// Frees of pointers the allocator never handed out (ignored).
    pub foreign_frees: u64,
}

impl HeapTotals {
    /// Internal fragmentation: the share of `active` not in blocks the
    /// program holds (free and uncarved blocks of slabs, the rounding of
    /// large blocks to pages), in percent; 0 when nothing is active.
    pub fn fragmentation_pct(&self) -> f64 {
        if self.active == 0 {
            return 0.0;
        }
        let waste = self.active.saturating_sub(self.allocated);
        waste as f64 * 100.0 / self.active as f64
    }
}

/// The totals and every size class, from one pass over the counters and
/// one walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Census {
    pub totals: HeapTotals,
    pub classes: [ClassStats; NUM_CLASSES],
}

/// Takes a [`Census`] of `global`: the counters of every heap (and of the
/// exited ones) under the pool lock, then a walk of every segment.
pub fn census(global: &Global) -> Census {
    let mut c = census_counters(global);
    c.add_walk(global);
    c
}

/// The part of a [`Census`] that comes from counters, without the walk
/// (cheaper: no segment is visited). The figures marked "walk" are zero;
/// [`Census::add_walk`] fills them in.
pub fn census_counters(global: &Global) -> Census {
    let mut classes = [ClassStats::default(); NUM_CLASSES];
    for (c, k) in classes.iter_mut().enumerate() {
        k.class = c;
        k.size = class_size(c);
    }
    let mut t = HeapTotals::default();
    let mut live: ClassCounts = [0; NUM_CLASSES];
    // Large and huge blocks are counted by number and bytes directly.
    let (mut big_blocks, mut big_bytes) = (0u64, 0u64);
    {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut big = |st: &HeapStats| {
            big_blocks = big_blocks.wrapping_add(ld(&st.mallocs).wrapping_sub(ld(&st.frees)));
            big_bytes =
                big_bytes.wrapping_add(ld(&st.malloc_bytes).wrapping_sub(ld(&st.free_bytes)));
        };
        let pool = global.heaps.lock();
        let _headers_stay = global.release_lock.lock();
        // Exited heaps cache nothing: their slabs' blocks were counted
        // as freed when they went.
        t.ops = counts(global.retired_stats(), &[0; NUM_CLASSES], Some(&mut live));
        big(global.retired_stats());
        pool.for_each_live(size_of::<Heap>(), |h| {
            // SAFETY: a live record under both locks.
            let one = unsafe { counts_of_live(h as *const Heap, Some(&mut live)) };
            t.ops.add(&one);
            // SAFETY: as above.
            big(unsafe { &(*(h as *const Heap)).stats });
        });
    }
    t.allocated = big_bytes;
    t.blocks_active = big_blocks;
    for (c, k) in classes.iter_mut().enumerate() {
        // Wrapped below zero only while threads run: clamp.
        k.active_blocks = if (live[c] as i64) < 0 { 0 } else { live[c] };
        k.allocated = k.active_blocks * k.size as u64;
        t.allocated = t.allocated.wrapping_add(k.allocated);
        t.blocks_active = t.blocks_active.wrapping_add(k.active_blocks);
    }
    let g = &global.stats;
    let (_, cached_bytes, _) = global.cache_totals();
    t.retained = cached_bytes as u64;
    t.mapped = g.reserved.load(Ordering::Relaxed) as u64;
    t.peak_active = g.active_peak.load(Ordering::Relaxed) as u64;
    t.heaps = g.heaps_live.load(Ordering::Relaxed) as u64;
    t.foreign_frees = g.foreign_frees.load(Ordering::Relaxed);
    {
        let reg = global.registry.lock();
        t.segments_total = reg.segments_total();
        t.huge_total = reg.huge_total();
    }
    Census { totals: t, classes }
}

impl Census {
    /// Fills in the figures that come from a walk of every segment
    /// (those marked "walk", and the classes' slab figures), once, on a
    /// census from [`census_counters`].
    pub fn add_walk(&mut self, global: &Global) {
        let (t, classes) = (&mut self.totals, &mut self.classes);
        global.walk(&mut |item| match item {
            WalkItem::Segment(s) => {
                if s.huge {
                    t.huge_blocks += 1;
                } else {
                    t.segments += 1;
                    if s.owner == 0 {
                        t.abandoned_segments += 1;
                    }
                }
                t.resident += s.resident_bytes as u64;
            }
            WalkItem::Span(s) => match s.kind {
                SpanUse::Free => {}
                SpanUse::Slab => {
                    let k = &mut classes[s.class];
                    k.slabs += 1;
                    k.slab_bytes += s.len as u64;
                    k.carved_blocks += s.carved as u64;
                    k.used_blocks += s.used as u64;
                    t.slabs += 1;
                    t.active += s.len as u64;
                }
                SpanUse::Large => {
                    t.large_blocks += 1;
                    t.active += s.len as u64;
                }
                SpanUse::Huge => t.active += s.len as u64,
            },
        });
        let (_, _, cached_resident) = global.cache_totals();
        t.resident += cached_resident as u64;
    }
}

/// The span holding address `addr` in a live segment, from a walk (a
/// helper for tests and tools that check a block against the walk).
pub fn span_of(global: &Global, addr: usize) -> Option<SpanInfo> {
    let mut found = None;
    global.walk(&mut |item| {
        if let WalkItem::Span(s) = item {
            if (s.addr..s.addr + s.len).contains(&addr) {
                found = Some(*s);
            }
        }
    });
    found
}
