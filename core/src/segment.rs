//! Segments: aligned runs of address space whose header describes every
//! slice, so a pointer finds its metadata by masking and indexing.
//!
//! A segment's first slice(s) hold this header; the remaining slices are
//! tiled by spans. Every span's first descriptor records its length, and
//! every other descriptor of a used span (and the last one of a free span)
//! records its distance back to the first: boundary tags that let `free`
//! resolve interior slices and let a freed span find its left neighbour.

use core::mem::{offset_of, size_of};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::block::next_of;
use crate::layout::{SEGMENT_MASK, SLICES_PER_SEGMENT, SLICE_SHIFT, SLICE_SIZE};
use crate::live::LiveMap;
use crate::provider::PAGE_SIZE;
use crate::segment_map;
use crate::span::{check, Broken, Span, SpanKind};

/// The header at the start of every segment.
#[repr(C)]
pub struct Segment {
    /// Address of the owning heap; 0 when abandoned, cached or huge.
    pub owner: AtomicUsize,
    /// `self ^ key`: checked when a segment is adopted or released.
    pub cookie: usize,
    /// A huge segment holds exactly one block.
    pub is_huge: bool,
    /// The memory node its pages are placed on (0 on a machine with one
    /// node), written by `Global::new_segment` before any heap sees the
    /// segment.
    pub node: u32,
    /// The provider range this segment came from (released as a whole).
    pub reservation: usize,
    pub reservation_len: usize,
    /// Slices in use by slabs and large blocks.
    pub used_slices: usize,
    /// From when the segment's dirty free spans may be decommitted, and
    /// when the pending batch began. Every new dirty span pushes the
    /// deadline out to a full delay again, up to a bound, so a segment in
    /// active use is not purged under its own feet (see
    /// `Heap::schedule_purge`). `purge_at == 0`: no batch pending. Touched
    /// only by the segment's holder.
    pub purge_at: u64,
    pub purge_first: u64,
    /// When the segment was last abandoned (clock ms, or 0 without a
    /// clock): a segment abandoned for long enough whose blocks have all
    /// been freed is released (see `Global::purge_abandoned`).
    pub abandoned_at: u64,
    /// One bit per slice that may hold resident pages: set when a span is
    /// handed out, cleared when its slices are decommitted. Merging free
    /// spans loses where their dirty parts were; this keeps it, so decay
    /// decommits (and counts) only memory that was really touched.
    pub resident: [u64; RESIDENT_WORDS],
    /// Set while `Global::purge_abandoned` decommits this abandoned
    /// segment outside the list's lock; an adopter that pops it meanwhile
    /// waits for the flag to clear before touching its spans.
    pub purging: AtomicBool,
    /// Links in the owning heap's list, the abandoned list or the cache.
    pub next: *mut Segment,
    pub prev: *mut Segment,
    /// Links in the registry of live segments (`Global`'s, for the heap
    /// walk) and the number it gave this segment, written only under its
    /// lock.
    pub reg_next: *mut Segment,
    pub reg_prev: *mut Segment,
    pub reg_seq: u64,
    /// One descriptor per slice.
    pub slices: [Span; SLICES_PER_SEGMENT],
    /// Which blocks are handed out (see [`crate::live`]); last, so the
    /// descriptors stay near the start of the header.
    pub live: LiveMap,
}

/// Whether `base` is a live segment whose owner is the heap at address
/// `owner`, without reading anything at `base` unless the segment map
/// holds it: the free fast path's test for "a block of my own segment".
/// An `owner` that is no heap's address is never the owner.
#[inline(always)]
pub fn owned_by(base: usize, owner: usize) -> bool {
    #[cfg(not(feature = "small-segments"))]
    {
        segment_map::owned_by(base, owner)
    }
    #[cfg(feature = "small-segments")]
    {
        // SAFETY: a segment the map holds is mapped, its header first.
        segment_map::contains(base) && unsafe { (*(base as *const Segment)).owner() } == owner
    }
}

/// Words of [`Segment::resident`].
pub const RESIDENT_WORDS: usize = SLICES_PER_SEGMENT.div_ceil(64);

/// The segment holding a descriptor or an address inside a segment (not a
/// huge block's start: see `layout::segment_base_of`).
#[inline(always)]
pub fn segment_of<T>(p: *const T) -> *mut Segment {
    (p as usize & !SEGMENT_MASK) as *mut Segment
}

/// The spans of a segment, left to right, as (first slice, length in
/// slices). Each length is read when its span is reached, so the loop body
/// may change a span's kind and state but not the tiling.
pub struct Spans {
    seg: *const Segment,
    idx: usize,
}

impl Iterator for Spans {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.idx >= SLICES_PER_SEGMENT {
            return None;
        }
        // SAFETY: `Segment::spans`' contract keeps the header valid.
        let n = unsafe { (*self.seg).slices[self.idx].slice_count as usize }.max(1);
        let idx = self.idx;
        self.idx += n;
        Some((idx, n))
    }
}

/// Slices taken by the header at the start of each segment: the header
/// itself and, after it, at least one spare page for the guard page (see
/// [`GUARD_OFFSET`]).
pub const HEADER_SLICES: usize = (size_of::<Segment>() + PAGE_SIZE).div_ceil(SLICE_SIZE);

/// Offset of the guard page that separates a segment's header from its
/// first block: the last page of the header slices, which the header never
/// reaches.
pub const GUARD_OFFSET: usize = HEADER_SLICES * SLICE_SIZE - PAGE_SIZE;

/// Bytes of the header that must be cleared when recycled memory becomes a
/// segment: everything before the bitmap (the bitmap of a segment with no
/// used span is clear already, see [`crate::live`]).
pub const HEADER_CLEAR_BYTES: usize = offset_of!(Segment, live);

impl crate::list::Linked for Segment {
    unsafe fn next_link(item: *mut Self) -> *mut *mut Self {
        // SAFETY: the caller's contract.
        unsafe { &raw mut (*item).next }
    }
    unsafe fn prev_link(item: *mut Self) -> *mut *mut Self {
        // SAFETY: the caller's contract.
        unsafe { &raw mut (*item).prev }
    }
}

impl Segment {
    /// Base address of this segment.
    #[inline(always)]
    pub fn base(&self) -> usize {
        self as *const Segment as usize
    }

    /// Initialises a header in place over fresh or recycled memory.
    ///
    /// # Safety
    /// `base` must be the start of a writable, segment-aligned region of at
    /// least `HEADER_SLICES` slices that nobody else uses. When
    /// `memory_is_zero` is false the descriptors are cleared here.
    pub unsafe fn init(
        base: usize,
        reservation: usize,
        reservation_len: usize,
        key: usize,
        memory_is_zero: bool,
    ) -> *mut Segment {
        let seg = base as *mut Segment;
        // SAFETY: the caller hands over the header memory exclusively.
        unsafe {
            if !memory_is_zero {
                ptr::write_bytes(seg as *mut u8, 0, HEADER_CLEAR_BYTES);
            }
            (*seg).owner = AtomicUsize::new(0);
            (*seg).cookie = base ^ key;
            (*seg).is_huge = false;
            (*seg).node = 0;
            (*seg).reservation = reservation;
            (*seg).reservation_len = reservation_len;
            (*seg).used_slices = 0;
            (*seg).purge_at = 0;
            (*seg).purge_first = 0;
            (*seg).abandoned_at = 0;
            (*seg).resident = [0; RESIDENT_WORDS];
            (*seg).purging = AtomicBool::new(false);
            (*seg).next = ptr::null_mut();
            (*seg).prev = ptr::null_mut();
            (*seg).reg_next = ptr::null_mut();
            (*seg).reg_prev = ptr::null_mut();
            (*seg).reg_seq = 0;
        }
        seg
    }

    /// Whether the header passes its integrity check.
    pub fn cookie_ok(&self, key: usize) -> bool {
        self.cookie == self.base() ^ key
    }

    /// The owning heap's address (0 if none).
    #[inline(always)]
    pub fn owner(&self) -> usize {
        self.owner.load(Ordering::Relaxed)
    }

    /// Makes the heap at address `owner` (0: none) the segment's owner, in
    /// the header and in the segment map's mirror of it. Only the
    /// segment's holder calls this: the heap giving it up, or the one
    /// taking it from `Global` (where no heap holds it).
    pub fn set_owner(&self, owner: usize) {
        self.owner.store(owner, Ordering::Release);
        segment_map::set_owner(self.base(), owner);
    }

    /// Index of a descriptor in `slices`.
    #[inline(always)]
    pub fn index_of(&self, page: *const Span) -> usize {
        (page as usize - self.slices.as_ptr() as usize) / size_of::<Span>()
    }

    /// Address of slice `idx`.
    #[inline(always)]
    pub fn slice_addr(&self, idx: usize) -> usize {
        self.base() + (idx << SLICE_SHIFT)
    }

    /// The used span (slab or large block) holding address `p`, or `None`
    /// when `p` is in the header, in a free span, or nowhere sensible.
    #[inline(always)]
    pub fn page_of(&self, p: usize) -> Option<&Span> {
        let idx = (p - self.base()) >> SLICE_SHIFT;
        if !(HEADER_SLICES..SLICES_PER_SEGMENT).contains(&idx) {
            return None;
        }
        let off = self.slices[idx].slice_offset as usize;
        if off > idx - HEADER_SLICES {
            return None;
        }
        let first = &self.slices[idx - off];
        if first.kind == SpanKind::Free || first.slice_count as usize <= off {
            return None;
        }
        Some(first)
    }

    /// Marks `[idx, idx+n)` as one used span of `kind`, writing the
    /// boundary tags. Does not touch `used_slices`.
    pub fn mark_used(&mut self, idx: usize, n: usize, kind: SpanKind) {
        let first = &mut self.slices[idx];
        first.kind = kind;
        first.slice_count = n as u32;
        first.slice_offset = 0;
        for i in 1..n {
            let d = &mut self.slices[idx + i];
            d.slice_offset = i as u16;
            d.slice_count = 0;
            d.kind = SpanKind::Free;
        }
    }

    /// Marks `[idx, idx+n)` as one free span with the given state.
    pub fn mark_free(&mut self, idx: usize, n: usize, dirty: bool, zero: bool) {
        let first = &mut self.slices[idx];
        first.kind = SpanKind::Free;
        first.slice_count = n as u32;
        first.slice_offset = 0;
        first.dirty = dirty;
        first.span_is_zero = zero;
        first.next = ptr::null_mut();
        first.prev = ptr::null_mut();
        if n > 1 {
            let last = &mut self.slices[idx + n - 1];
            last.slice_offset = (n - 1) as u16;
            last.slice_count = 0;
            last.kind = SpanKind::Free;
        }
    }

    /// Records that slices `[idx, idx+n)` are about to be used (touched).
    pub fn mark_resident(&mut self, idx: usize, n: usize) {
        for i in idx..idx + n {
            self.resident[i / 64] |= 1 << (i % 64);
        }
    }

    /// How many of slices `[idx, idx+n)` may be resident.
    pub fn resident_count(&self, idx: usize, n: usize) -> usize {
        (idx..idx + n)
            .filter(|&i| self.resident[i / 64] & (1 << (i % 64)) != 0)
            .count()
    }

    /// Calls `f(first, len)` for each run of possibly resident slices in
    /// `[idx, idx+n)` and forgets them (the caller decommits them).
    pub fn take_resident(&mut self, idx: usize, n: usize, mut f: impl FnMut(usize, usize)) {
        let mut i = idx;
        while i < idx + n {
            if self.resident[i / 64] & (1 << (i % 64)) == 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i < idx + n && self.resident[i / 64] & (1 << (i % 64)) != 0 {
                self.resident[i / 64] &= !(1 << (i % 64));
                i += 1;
            }
            f(start, i - start);
        }
    }

    /// How many slices of the dirty free spans may be resident.
    pub fn resident_free_slices(&self) -> usize {
        let mut total = 0;
        self.for_each_span(|idx, len| {
            let d = &self.slices[idx];
            if d.kind == SpanKind::Free && d.dirty {
                total += self.resident_count(idx, len);
            }
        });
        total
    }

    /// Forgets the touched slices of the free span at `idx` (`n` slices)
    /// from slice `from` on, calling `decommit(addr, len)` for each run;
    /// the span is clean afterwards only when `from` is its start (and then
    /// reads as zero if `zero_after()`, asked after the decommits: a
    /// provider may stop zeroing decommitted memory at any time, and says
    /// so before it does). Returns how many slices went.
    pub fn decommit_span_tail(
        &mut self,
        idx: usize,
        n: usize,
        from: usize,
        zero_after: &dyn Fn() -> bool,
        mut decommit: impl FnMut(usize, usize),
    ) -> usize {
        let base = self.base();
        let mut decommitted = 0;
        self.take_resident(from, idx + n - from, |first, len| {
            decommit(base + first * SLICE_SIZE, len * SLICE_SIZE);
            decommitted += len;
        });
        if from == idx {
            let d = &mut self.slices[idx];
            d.dirty = false;
            d.span_is_zero = zero_after();
        }
        decommitted
    }

    /// Forgets the touched free slices beyond the `keep` lowest-addressed
    /// ones (heaps carve from low addresses first, so those are reused
    /// soonest), calling `decommit(addr, len)` for each run.
    pub fn trim_free(
        &mut self,
        mut keep: usize,
        zero_after: &dyn Fn() -> bool,
        mut decommit: impl FnMut(usize, usize),
    ) {
        // SAFETY: `self` is valid for the whole loop, which keeps the
        // tiling.
        for (idx, len) in unsafe { Segment::spans(self) } {
            let d = &self.slices[idx];
            if d.kind == SpanKind::Free && d.dirty {
                let mut from = idx;
                while keep > 0 && from < idx + len {
                    if self.resident_count(from, 1) == 1 {
                        keep -= 1;
                    }
                    from += 1;
                }
                self.decommit_span_tail(idx, len, from, zero_after, &mut decommit);
            }
        }
    }

    /// Whether other threads have freed every block of every used span
    /// since the segment was abandoned (counted in the thread-free words;
    /// no block is read).
    pub fn all_blocks_freed(&self) -> bool {
        let mut all = true;
        self.for_each_span(|idx, _| {
            let d = &self.slices[idx];
            if matches!(d.kind, SpanKind::Slab | SpanKind::Large) && d.thread_free.count() != d.used
            {
                all = false;
            }
        });
        all
    }

    /// Checks the remote lists of a segment whose blocks were all freed by
    /// other threads (the counts say so, see [`Segment::all_blocks_freed`])
    /// against the live-block bitmap: every listed block must be a carved
    /// block whose bit is set, and its bit is cleared. A block freed twice
    /// shows up twice, and the count then hides a live block: the first
    /// offending block is returned.
    ///
    /// # Safety
    /// The caller holds the segment exclusively (off the abandoned list),
    /// and no remote free is still in flight into it.
    pub unsafe fn check_remote_frees(&mut self) -> Result<(), usize> {
        // SAFETY: the caller holds the segment, so its tiling is stable.
        for (idx, _) in unsafe { Segment::spans(self) } {
            let span: *const Span = &self.slices[idx];
            // SAFETY: the caller's contract; each block is checked to be a
            // carved block of its span before its link is read.
            unsafe {
                if !matches!((*span).kind, SpanKind::Slab | SpanKind::Large) {
                    continue;
                }
                let mut b = (*span).thread_free.peek();
                for _ in 0..(*span).thread_free.count() {
                    if !(*span).is_carved_block(b as usize) || !self.live.clear(b as usize) {
                        return Err(b as usize);
                    }
                    b = next_of(b, (*span).secret);
                }
            }
        }
        Ok(())
    }

    /// Turns every used span into a dirty free span (the segment's blocks
    /// are all free) and returns how many slices that freed.
    pub fn free_all_spans(&mut self) -> usize {
        let mut freed = 0;
        // SAFETY: `self` is valid for the whole loop; `mark_free` keeps
        // each span's length.
        for (idx, len) in unsafe { Segment::spans(self) } {
            if matches!(self.slices[idx].kind, SpanKind::Slab | SpanKind::Large) {
                self.slices[idx].thread_free.reset();
                // Blocks freed remotely were never collected: their live
                // bits are still set, and a recycled segment's bitmap must
                // be clear (see `crate::live`).
                let start = self.slice_addr(idx);
                self.live.clear_range(start, start + len * SLICE_SIZE);
                self.mark_free(idx, len, true, false);
                freed += len;
            }
        }
        self.used_slices -= freed;
        freed
    }

    /// Takes the remote frees of every used span into its local lists and
    /// turns the spans that became empty into dirty free spans, neither
    /// binned nor coalesced (the holder does that). With `check_live`,
    /// each remotely freed block must be a carved block whose live bit is
    /// set (the bit is cleared). Returns how many slices were freed, or
    /// the first block that failed the check.
    ///
    /// # Safety
    /// The caller holds the segment (owns it or is adopting or abandoning
    /// it), and no used span is queued.
    pub unsafe fn sweep(
        &mut self,
        check_live: bool,
        mut large_freed: impl FnMut(&Span),
    ) -> Result<usize, usize> {
        let mut freed = 0;
        // SAFETY: `self` is valid for the whole loop, which keeps the
        // tiling.
        for (idx, _) in unsafe { Segment::spans(self) } {
            // SAFETY: the caller's contract.
            freed += unsafe { self.sweep_span(idx, check_live, &mut large_freed)? };
        }
        Ok(freed)
    }

    /// [`Segment::sweep`] for the one span starting at slice `idx` (any
    /// kind; only used spans have remote frees).
    ///
    /// # Safety
    /// As [`Segment::sweep`]; `idx` is the first slice of a span.
    pub unsafe fn sweep_span(
        &mut self,
        idx: usize,
        check_live: bool,
        large_freed: &mut impl FnMut(&Span),
    ) -> Result<usize, usize> {
        let span: *mut Span = &mut self.slices[idx];
        // SAFETY: the caller's contract; remote lists hold blocks of their
        // own span, linked with its secret, and are checked before they
        // are followed.
        unsafe {
            if !matches!((*span).kind, SpanKind::Slab | SpanKind::Large) {
                return Ok(0);
            }
            (*span).next = ptr::null_mut();
            (*span).prev = ptr::null_mut();
            let (mut b, n) = (*span).thread_free.take();
            for _ in 0..n {
                if check_live
                    && (!(*span).is_carved_block(b as usize) || !self.live.clear(b as usize))
                {
                    return Err(b as usize);
                }
                let next = next_of(b, (*span).secret);
                if (*span).kind == SpanKind::Slab {
                    (*span).push_local(b);
                } else {
                    (*span).used = 0;
                }
                b = next;
            }
            if (*span).used != 0 {
                return Ok(0);
            }
            if (*span).kind == SpanKind::Large {
                large_freed(&*span);
            }
            Ok(self.free_empty_span(idx))
        }
    }

    /// Turns the empty used span at `idx` into a dirty free span (unbinned,
    /// uncoalesced) and returns its length in slices.
    pub fn free_empty_span(&mut self, idx: usize) -> usize {
        let d = &mut self.slices[idx];
        let n = d.slice_count as usize;
        d.kind = SpanKind::Free;
        d.dirty = true;
        d.span_is_zero = false;
        self.used_slices -= n;
        n
    }

    /// Checks the span tiling: spans cover the segment after the header
    /// exactly, every used span's interior slices point back to its first
    /// one, every free span's last slice does too, and `used_slices` is the
    /// sum of the used spans. Calls `f(idx)` on the first slice of each
    /// span, for the holder's own checks.
    pub fn verify(
        &self,
        key: usize,
        mut f: impl FnMut(usize) -> Result<(), Broken>,
    ) -> Result<(), Broken> {
        let at = self.base();
        check(self.cookie_ok(key), "segment header cookie", at)?;
        let mut used = 0;
        let mut idx = HEADER_SLICES;
        while idx < SLICES_PER_SEGMENT {
            let d = &self.slices[idx];
            let n = d.slice_count as usize;
            let here = self.slice_addr(idx);
            check(d.slice_offset == 0, "span start with a back offset", here)?;
            check(
                n >= 1 && idx + n <= SLICES_PER_SEGMENT,
                "span length out of the segment",
                here,
            )?;
            match d.kind {
                SpanKind::Free => {
                    if n > 1 {
                        let last = &self.slices[idx + n - 1];
                        check(
                            last.slice_offset as usize == n - 1,
                            "free span's end tag",
                            here,
                        )?;
                    }
                }
                SpanKind::Slab | SpanKind::Large => {
                    for i in 1..n {
                        let inner = &self.slices[idx + i];
                        check(
                            inner.slice_offset as usize == i,
                            "used span's inner tag",
                            here,
                        )?;
                    }
                    used += n;
                }
                SpanKind::Huge => check(false, "huge span inside a normal segment", here)?,
            }
            f(idx)?;
            idx += n;
        }
        check(
            used == self.used_slices,
            "used_slices does not match the spans",
            at,
        )
    }

    /// Index of the first slice of the span that ends just before `idx`.
    pub fn span_before(&self, idx: usize) -> Option<usize> {
        if idx <= HEADER_SLICES {
            return None;
        }
        let off = self.slices[idx - 1].slice_offset as usize;
        (idx - 1).checked_sub(off).filter(|&i| i >= HEADER_SLICES)
    }

    /// The spans of the segment at `seg` (see [`Spans`]).
    ///
    /// # Safety
    /// `seg` must stay a valid segment header, held by the caller, while
    /// the iterator is used.
    pub unsafe fn spans(seg: *const Segment) -> Spans {
        Spans {
            seg,
            idx: HEADER_SLICES,
        }
    }

    /// Calls `f(idx, count)` for every span, left to right. `f` must not
    /// change the tiling.
    pub fn for_each_span(&self, mut f: impl FnMut(usize, usize)) {
        // SAFETY: `self` is valid for the whole loop.
        for (idx, n) in unsafe { Segment::spans(self) } {
            f(idx, n);
        }
    }

    /// Joins runs of adjacent free spans into single spans and calls
    /// `f(idx)` for each resulting free span. Used after spans were freed
    /// without coalescing (abandonment and adoption).
    pub fn coalesce_all(&mut self, mut f: impl FnMut(&mut Segment, usize)) {
        let mut idx = HEADER_SLICES;
        while idx < SLICES_PER_SEGMENT {
            let n = (self.slices[idx].slice_count as usize).max(1);
            if self.slices[idx].kind != SpanKind::Free {
                idx += n;
                continue;
            }
            let (mut end, mut dirty, mut zero) = (
                idx + n,
                self.slices[idx].dirty,
                self.slices[idx].span_is_zero,
            );
            while end < SLICES_PER_SEGMENT && self.slices[end].kind == SpanKind::Free {
                let m = (self.slices[end].slice_count as usize).max(1);
                let d = &mut self.slices[end];
                dirty |= d.dirty;
                zero &= d.span_is_zero;
                d.slice_count = 0;
                end += m;
            }
            self.mark_free(idx, end - idx, dirty, zero);
            f(self, idx);
            idx = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slice numbers up to 200: the 512 slices of a hosted segment.
    #[cfg(not(feature = "small-segments"))]
    #[test]
    fn resident_runs_are_found_counted_and_cleared() {
        let mut bits = [0u64; RESIDENT_WORDS];
        let mark = |b: &mut [u64; RESIDENT_WORDS], i: usize| b[i / 64] |= 1 << (i % 64);
        for i in [5usize, 6, 7, 63, 64, 65, 200] {
            mark(&mut bits, i);
        }
        // A segment header is too big for the stack: put one on the heap.
        let layout = core::alloc::Layout::new::<Segment>();
        // SAFETY: non-zero size; zeroed memory is a valid header (all
        // fields are integers, pointers, bools, atomics or free
        // descriptors); freed below with the same layout.
        let seg = unsafe { std::alloc::alloc_zeroed(layout) as *mut Segment };
        // SAFETY: exclusively ours.
        let s = unsafe { &mut *seg };
        s.resident = bits;
        assert_eq!(s.resident_count(0, SLICES_PER_SEGMENT), 7);
        assert_eq!(s.resident_count(6, 59), 4);
        let mut runs = Vec::new();
        s.take_resident(6, 195, |a, n| runs.push((a, n)));
        assert_eq!(runs, vec![(6, 2), (63, 3), (200, 1)]);
        assert_eq!(s.resident_count(0, SLICES_PER_SEGMENT), 1, "slice 5 stays");
        s.mark_resident(100, 3);
        assert_eq!(s.resident_count(99, 5), 3);
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(seg as *mut u8, layout) };
    }

    // The header fits its slices and leaves most of the segment for spans.
    const _: () = assert!(HEADER_SLICES >= 1 && HEADER_SLICES * 4 <= SLICES_PER_SEGMENT);
}
