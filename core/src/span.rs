//! Span descriptors: the metadata of one span (a run of slices), one per
//! slice in the segment header. When the span is a slab, its descriptor
//! holds the slab's three sharded free lists:
//!
//! - `free`: blocks ready for allocation; popped on the fast path.
//! - `local_free`: blocks freed by the owning thread; no atomics.
//! - `thread_free`: blocks freed by other threads (see [`crate::remote`]).
//!
//! The owner moves `local_free` and `thread_free` into `free` only when
//! `free` runs dry, so the fast path never touches an atomic. Links inside
//! free blocks are encoded (see [`crate::block`]).

use crate::block::{next_of, set_next, Block};
use crate::live::BiasedBase;
use crate::remote::ThreadFree;
use core::ptr;

/// What a span is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanKind {
    /// In a heap's free-span bins (or a segment's header).
    Free = 0,
    /// Equal-size blocks of one size class.
    Slab = 1,
    /// A single large block.
    Large = 2,
    /// The single block of a huge segment.
    Huge = 3,
}

/// Metadata for one span; lives in its segment's header, one per slice.
///
/// Only the descriptor of a span's first slice is meaningful; the others
/// hold `slice_offset`, the distance back to it (a boundary tag), so any
/// interior pointer finds its span.
/// Cache-line aligned, so the hot fields of every descriptor share one line.
#[repr(C, align(64))]
pub struct Span {
    // Hot fields first: the fast paths touch only the first cache line.
    /// Blocks ready for allocation.
    pub free: *mut Block,
    /// Blocks freed by the owner.
    pub local_free: *mut Block,
    /// Blocks handed out and not yet returned to `free`/`local_free`.
    pub used: u32,
    // The next three fields form the span tag, read as one `u32` by the
    // free fast path (see [`Span::tag`]); keep them together, in this order.
    /// Distance to the span's first slice (0 for the first slice).
    pub slice_offset: u16,
    pub kind: SpanKind,
    /// Set when the page left its queue because it was full.
    pub in_full: bool,
    /// First byte of the span (for huge/aligned large: of the block).
    pub start: usize,
    /// The segment's live-block bitmap as the fast paths address it (see
    /// [`crate::live::BiasedBase`]); set with the block size.
    pub live_bits: BiasedBase,
    /// `ceil(2^64 / block_size)`: offsets that are multiples of the block
    /// size are exactly those whose product with it wraps below it
    /// (see [`Span::is_block_offset`]).
    div_magic: u64,
    /// The slab's link secret (see [`crate::block`]), drawn per slab.
    pub secret: usize,
    /// Bytes of blocks carved so far: `capacity * block_size`.
    pub carved: usize,
    // Cold fields.
    /// Block size of a slab; usable size of a large/huge block.
    pub block_size: usize,
    /// Blocks carved out of the span so far (the rest is untouched).
    pub capacity: u32,
    /// Blocks that fit in the span.
    pub reserved: u32,
    /// Size class of a slab.
    pub class: u8,
    /// Bytes at the end of each block that are not usable (the canary's).
    pub tail: u8,
    /// The blocks in `free` are known to hold zeros (except their link).
    pub free_is_zero: bool,
    /// The whole span reads as zero (fresh from the provider).
    pub span_is_zero: bool,
    /// Parts of this free span may be resident and can be decommitted.
    pub dirty: bool,
    /// Span length in slices (first slice only).
    pub slice_count: u32,
    /// Remote frees: encoded list head plus [`crate::remote::Notify`] state
    /// bits.
    pub thread_free: ThreadFree,
    /// Queue or bin links.
    pub next: *mut Span,
    pub prev: *mut Span,
}

/// Most blocks carved in one go (a page of the smallest class).
pub const MAX_CARVE: u32 = 256;

/// The next word of a xorshift64* generator (period 2^64 - 1; `state` must
/// not be zero). Cheap randomness for layout, never for secrets.
#[inline]
pub fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The span tag of the first slice of a slab that is in its queue (not
/// full): the only descriptor state the free fast path accepts.
pub const TAG_QUEUED_SLAB: u32 = u32::from_ne_bytes([0, 0, SpanKind::Slab as u8, 0]);

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Span, slice_offset) % 4 == 0);
    assert!(offset_of!(Span, kind) == offset_of!(Span, slice_offset) + 2);
    assert!(offset_of!(Span, in_full) == offset_of!(Span, slice_offset) + 3);
    // The fields of the fast paths share the first cache line.
    assert!(offset_of!(Span, carved) + 8 <= 64);
};

impl Span {
    /// An all-zero descriptor, as found in fresh segment headers. Each use
    /// is meant to be a fresh value, so the interior atomic is not shared.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: Span = Span {
        free: ptr::null_mut(),
        local_free: ptr::null_mut(),
        used: 0,
        slice_offset: 0,
        kind: SpanKind::Free,
        in_full: false,
        start: 0,
        live_bits: 0,
        div_magic: 0,
        secret: 0,
        carved: 0,
        block_size: 0,
        capacity: 0,
        reserved: 0,
        class: 0,
        tail: 0,
        free_is_zero: false,
        span_is_zero: false,
        dirty: false,
        slice_count: 0,
        thread_free: ThreadFree::new(),
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
    };

    /// Usable bytes of each block (the block size less the canary's).
    #[inline(always)]
    pub fn usable(&self) -> usize {
        self.block_size - self.tail as usize
    }

    /// Prepares the block-offset check for `block_size`.
    pub fn set_block_size(&mut self, block_size: usize) {
        self.block_size = block_size;
        self.div_magic = (u64::MAX / block_size as u64).wrapping_add(1);
    }

    /// Whether `offset` (from `start`, below 2^32) is a multiple of the
    /// block size, without a division: with c = ceil(2^64/d), n is a
    /// multiple of d exactly when n·c mod 2^64 < c, for every n < 2^32
    /// (Lemire, Kaser and Kurz, "Faster remainder by direct computation").
    /// Spans are far smaller than 4 GiB, so every in-span offset qualifies.
    #[inline(always)]
    pub fn is_block_offset(&self, offset: usize) -> bool {
        (offset as u64).wrapping_mul(self.div_magic) < self.div_magic
    }

    /// Whether `addr` is the start of a block carved so far: the check every
    /// link popped from a free list must pass (a forged link to anything
    /// else, in this slab or not, fails it).
    #[inline(always)]
    pub fn is_carved_block(&self, addr: usize) -> bool {
        // One unsigned compare covers both ends.
        let off = addr.wrapping_sub(self.start);
        off < self.carved && self.is_block_offset(off)
    }

    /// `slice_offset`, `kind` and `in_full` as one word, so the free fast
    /// path checks "first slice of a queued slab" with one comparison
    /// against [`TAG_QUEUED_SLAB`].
    #[inline(always)]
    pub fn tag(&self) -> u32 {
        // SAFETY: the three fields are adjacent, fully initialised bytes at
        // a 4-aligned offset (checked at compile time above), and the
        // pointer is derived from the whole descriptor.
        unsafe {
            (self as *const Span as *const u8)
                .add(core::mem::offset_of!(Span, slice_offset))
                .cast::<u32>()
                .read()
        }
    }

    /// Pops a block from `free`, if any. The owner's fast path.
    ///
    /// # Safety
    /// Only the owning heap may call this.
    #[inline(always)]
    pub unsafe fn pop_free(&mut self) -> *mut Block {
        let b = self.free;
        if b.is_null() {
            return b;
        }
        // SAFETY: `b` is a free block of this page, owned by the caller.
        let next = unsafe { next_of(b, self.secret) };
        self.free = next;
        self.used += 1;
        b
    }

    /// Pushes `b` onto `local_free`. The owner's free path.
    ///
    /// # Safety
    /// Only the owning heap may call this, with a live block of this page.
    #[inline(always)]
    pub unsafe fn push_local(&mut self, b: *mut Block) {
        // SAFETY: the caller hands over a live block of this page.
        unsafe { set_next(b, self.local_free, self.secret) };
        self.local_free = b;
        self.used -= 1;
    }

    /// Refills an empty `free` list from `local_free`. (The remote list is
    /// taken by the heap, which checks it first: see `Heap::collect`.)
    ///
    /// # Safety
    /// Only the owning heap may call this.
    pub unsafe fn collect_local(&mut self) {
        if !self.free.is_null() || self.local_free.is_null() {
            return;
        }
        self.free = self.local_free;
        self.local_free = ptr::null_mut();
        self.free_is_zero = false;
    }

    /// Carves up to `max_bytes` worth of fresh blocks into `free` (which must
    /// be empty), linked in address order, or, when `shuffle` gives a
    /// random state and a group size, in address order of groups of that
    /// many blocks with a random order inside each group (a group as large
    /// as the carve shuffles it whole). Returns how many were added.
    ///
    /// # Safety
    /// Only the owning heap may call this, on a slab whose span is usable.
    pub unsafe fn extend(&mut self, max_bytes: usize, shuffle: Option<(&mut u64, usize)>) -> u32 {
        debug_assert!(self.free.is_null());
        let left = self.reserved - self.capacity;
        if left == 0 {
            return 0;
        }
        let n = ((max_bytes / self.block_size).max(1) as u32)
            .min(left)
            .min(MAX_CARVE);
        let bs = self.block_size;
        let first = self.start + self.capacity as usize * bs;
        let mut next: *mut Block = ptr::null_mut();
        if let Some((state, group)) = shuffle {
            // The order in which the new blocks will be handed out:
            // Fisher-Yates inside each group, a fresh random word per step.
            let mut order = [0u16; MAX_CARVE as usize];
            for (i, o) in order.iter_mut().enumerate().take(n as usize) {
                *o = i as u16;
            }
            let n = n as usize;
            let group = group.clamp(1, n);
            // Each step takes 32 random bits, scaled to its range by a
            // multiply (no division; the bias, under 2^-24 for ranges up
            // to 256, does not matter for layout).
            let mut bits = 0u64;
            let mut have = 0u32;
            let mut start = 0;
            while start < n {
                let end = (start + group).min(n);
                for i in (start + 1..end).rev() {
                    if have == 0 {
                        bits = next_random(state);
                        have = 2;
                    }
                    let r = bits & 0xffff_ffff;
                    bits >>= 32;
                    have -= 1;
                    let j = start + ((r * ((i - start) as u64 + 1)) >> 32) as usize;
                    order.swap(i, j);
                }
                start = end;
            }
            for &i in order[..n].iter().rev() {
                let b = (first + i as usize * bs) as *mut Block;
                // SAFETY: the block lies inside this page's span, untouched
                // so far.
                unsafe { set_next(b, next, self.secret) };
                next = b;
            }
        } else {
            // In address order, with no order to set up (one block, for
            // the classes above 2 KiB, is the common case here).
            for i in (0..n as usize).rev() {
                let b = (first + i * bs) as *mut Block;
                // SAFETY: as above.
                unsafe { set_next(b, next, self.secret) };
                next = b;
            }
        }
        self.free = next;
        self.capacity += n;
        self.carved = self.capacity as usize * bs;
        self.free_is_zero = self.span_is_zero;
        n
    }

    /// Whether `b` is on one of this page's free lists (owner only; used to
    /// confirm a suspected double free).
    ///
    /// # Safety
    /// Only the owning heap may call this.
    /// A link that is not a carved block of this slab (a forged or
    /// overwritten one) ends the walk: it is neither followed nor reported
    /// here, and the block counts as not found.
    pub unsafe fn list_contains(&self, b: *mut Block) -> bool {
        let key = self.secret;
        for head in [self.free, self.local_free, self.thread_free.peek()] {
            let mut cur = head;
            let mut steps = 0u32;
            while !cur.is_null() && steps <= self.reserved {
                if cur == b {
                    return true;
                }
                if !self.is_carved_block(cur as usize) {
                    break;
                }
                // SAFETY: `cur` is a block of this slab (checked above).
                cur = unsafe { next_of(cur, key) };
                steps += 1;
            }
        }
        false
    }

    /// How many blocks the list starting at `head` (this slab's `free` or
    /// `local_free`) holds, following links only to carved blocks of this
    /// slab and at most `reserved` of them.
    ///
    /// # Safety
    /// Only the owning heap may call this.
    pub unsafe fn list_len(&self, head: *mut Block) -> u32 {
        let mut cur = head;
        let mut n = 0u32;
        while !cur.is_null() && n < self.reserved && self.is_carved_block(cur as usize) {
            n += 1;
            // SAFETY: `cur` is a block of this slab (checked above).
            cur = unsafe { next_of(cur, self.secret) };
        }
        n
    }
}

impl crate::list::Linked for Span {
    unsafe fn next_link(item: *mut Self) -> *mut *mut Self {
        // SAFETY: the caller's contract.
        unsafe { &raw mut (*item).next }
    }
    unsafe fn prev_link(item: *mut Self) -> *mut *mut Self {
        // SAFETY: the caller's contract.
        unsafe { &raw mut (*item).prev }
    }
}

/// A broken invariant found by a `verify` method: what is wrong, and the
/// address where it was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken {
    pub what: &'static str,
    pub at: usize,
}

/// `Err(Broken)` unless `ok`.
#[inline]
pub fn check(ok: bool, what: &'static str, at: usize) -> Result<(), Broken> {
    if ok {
        Ok(())
    } else {
        Err(Broken { what, at })
    }
}

impl Span {
    /// Checks a slab: every block carved so far is accounted for exactly
    /// once (handed out, which includes blocks waiting on the thread-free
    /// list, or on `free` or `local_free`), and every link of the owner's
    /// lists stays inside the slab on a block boundary. Owner only, with no remote free in flight for an
    /// exact count.
    ///
    /// # Safety
    /// The span must be a slab of the caller's heap.
    pub unsafe fn verify_slab(&self) -> Result<(), Broken> {
        let key = self.secret;
        let at = self as *const Span as usize;
        check(self.kind == SpanKind::Slab, "not a slab", at)?;
        check(
            self.capacity <= self.reserved,
            "capacity above reserved",
            at,
        )?;
        let end = self.start + self.capacity as usize * self.block_size;
        check(
            self.start + self.carved == end,
            "carved bytes disagree with capacity",
            at,
        )?;
        let mut listed = 0u32;
        for head in [self.free, self.local_free] {
            let mut cur = head;
            while !cur.is_null() {
                let b = cur as usize;
                check(
                    b >= self.start && b < end,
                    "free-list link outside the slab",
                    b,
                )?;
                check(
                    self.is_block_offset(b - self.start),
                    "free-list link off a block boundary",
                    b,
                )?;
                listed += 1;
                check(
                    listed <= self.capacity,
                    "free list longer than the slab (a cycle)",
                    at,
                )?;
                // SAFETY: `cur` is a block of this slab (checked above).
                cur = unsafe { next_of(cur, key) };
            }
        }
        // `used` still counts blocks freed remotely until the owner
        // collects them.
        check(
            self.used as u64 + listed as u64 == self.capacity as u64,
            "slab blocks lost or counted twice (used + free + local != capacity)",
            at,
        )?;
        check(
            self.thread_free.count() <= self.used,
            "more remote frees than blocks handed out",
            at,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisibility_check_matches_division() {
        let mut p = Span::EMPTY;
        for c in 0..crate::size_class::NUM_CLASSES {
            let bs = crate::size_class::class_size(c);
            p.set_block_size(bs);
            let span = crate::size_class::slab_slices(c) * crate::layout::SLICE_SIZE;
            for off in (0..span + bs).step_by(16) {
                assert_eq!(p.is_block_offset(off), off % bs == 0, "bs {bs} off {off}");
            }
            // Offsets that are not multiples of 16 never pass either.
            for off in [1, 8, 15, bs + 1, bs - 8] {
                assert!(!p.is_block_offset(off), "bs {bs} off {off}");
            }
        }
        // Large blocks: whole slices, up to a segment.
        for n in [1usize, 3, 7, 100, 255] {
            let bs = n * crate::layout::SLICE_SIZE;
            p.set_block_size(bs);
            for off in (0..crate::layout::SEGMENT_SIZE).step_by(4096) {
                assert_eq!(p.is_block_offset(off), off % bs == 0, "bs {bs} off {off}");
            }
        }
    }

    #[test]
    fn span_tag_reads_the_three_fields() {
        let mut p = Span::EMPTY;
        p.kind = SpanKind::Slab;
        assert_eq!(p.tag(), TAG_QUEUED_SLAB);
        p.in_full = true;
        assert_ne!(p.tag(), TAG_QUEUED_SLAB);
        p.in_full = false;
        p.slice_offset = 1;
        assert_ne!(p.tag(), TAG_QUEUED_SLAB);
        p.slice_offset = 0;
        p.kind = SpanKind::Large;
        assert_ne!(p.tag(), TAG_QUEUED_SLAB);
    }
}
