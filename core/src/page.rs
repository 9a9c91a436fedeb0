//! Page descriptors: the metadata of one span (a run of slices) and, when the
//! span is a slab, its three sharded free lists.
//!
//! - `free`: blocks ready for allocation; popped on the fast path.
//! - `local_free`: blocks freed by the owning thread; no atomics.
//! - `thread_free`: blocks freed by other threads, pushed with a CAS. Its low
//!   two bits hold a [`Notify`] state used for full pages (see below), its
//!   top 16 bits the number of blocks on the list.
//!
//! The owner moves `local_free` and `thread_free` into `free` only when
//! `free` runs dry, so the fast path never touches an atomic.
//!
//! Full pages leave their size-class queue, so the owner would never look at
//! their `thread_free` again. A full page is therefore put in state
//! `Notify`: the first remote free that finds that state does not push its
//! block to the page, but switches the state to `Notifying`, hands the block
//! to the owning heap's delayed-free list (which the owner drains on its slow
//! path, bringing the page back into its queue) and then resets the state to
//! `Normal`. The owner never frees a page or abandons its heap while a page
//! is `Notifying`, so the remote thread may still read the heap pointer.
//!
//! Every link stored inside a free block is encoded with a secret key and
//! the block's own address (safe-linking), so a leaked or overwritten link
//! does not give an attacker a usable pointer.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

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

/// States kept in the low bits of `thread_free`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Notify {
    /// Remote frees push onto the page.
    Normal = 0,
    /// The page is full and out of its queue: tell the owner.
    Notify = 1,
    /// A remote thread is telling the owner right now.
    Notifying = 2,
}

const STATE_MASK: usize = 3;
/// Bits 48 and up of `thread_free` count the blocks on the list, so the
/// owner takes the list without walking it (each block there sits in the
/// freeing thread's cache: a walk would be one cache miss after another).
/// A slab never holds more than 4096 blocks, well inside 16 bits.
const COUNT_SHIFT: u32 = 48;
const COUNT_ONE: usize = 1 << COUNT_SHIFT;

/// The list head stored in a `thread_free` word: bits 2..48, sign-extended
/// from bit 47 so upper-half (kernel) addresses survive.
#[inline(always)]
fn tf_head(word: usize) -> *mut Block {
    ((((word << 16) as isize) >> 16) as usize & !STATE_MASK) as *mut Block
}

/// The number of blocks on the list of a `thread_free` word.
#[inline(always)]
fn tf_count(word: usize) -> u32 {
    (word >> COUNT_SHIFT) as u32
}

/// A `thread_free` word from a head, a count and a state.
#[inline(always)]
fn tf_pack(head: *mut Block, count: u32, state: usize) -> usize {
    (head as usize & (COUNT_ONE - 1)) | ((count as usize) << COUNT_SHIFT) | state
}

/// What [`Page::push_thread_free`] did with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemotePush {
    /// The block is on the page's `thread_free` list.
    Pushed,
    /// The page is parked full (`Notify`); nothing was done.
    MustNotify,
    /// The caller now holds `Notifying` and must hand the block over.
    Notifying,
}

/// A free block; its first word is the encoded link to the next one.
#[repr(C)]
pub struct Block {
    next: usize,
}

/// Encodes the link stored at `slot`.
#[inline(always)]
pub fn encode(next: *mut Block, slot: *mut Block, key: usize) -> usize {
    (next as usize) ^ (slot as usize).rotate_left(23) ^ key
}

/// Decodes the link stored at `slot`.
#[inline(always)]
pub fn decode(stored: usize, slot: *mut Block, key: usize) -> *mut Block {
    (stored ^ (slot as usize).rotate_left(23) ^ key) as *mut Block
}

/// Reads the next link of `b`.
///
/// # Safety
/// `b` must point to a readable block.
#[inline(always)]
pub unsafe fn next_of(b: *mut Block, key: usize) -> *mut Block {
    // SAFETY: the caller guarantees `b` is readable.
    decode(unsafe { (*b).next }, b, key)
}

/// Writes the next link of `b`.
///
/// # Safety
/// `b` must point to a writable block nobody else uses.
#[inline(always)]
pub unsafe fn set_next(b: *mut Block, next: *mut Block, key: usize) {
    // SAFETY: the caller guarantees `b` is writable and ours.
    unsafe { (*b).next = encode(next, b, key) }
}

/// Metadata for one span; lives in its segment's header, one per slice.
///
/// Only the descriptor of a span's first slice is meaningful; the others
/// hold `slice_offset`, the distance back to it (a boundary tag), so any
/// interior pointer finds its span.
/// Cache-line aligned, so the hot fields of every descriptor share one line.
#[repr(C, align(64))]
pub struct Page {
    // Hot fields first: the fast paths touch only the first cache line.
    /// Blocks ready for allocation.
    pub free: *mut Block,
    /// Blocks freed by the owner.
    pub local_free: *mut Block,
    /// Blocks handed out and not yet returned to `free`/`local_free`.
    pub used: u32,
    /// Blocks carved out of the span so far (the rest is untouched).
    pub capacity: u32,
    /// Blocks that fit in the span.
    pub reserved: u32,
    // The next three fields form the span tag, read as one `u32` by the
    // free fast path (see [`Page::tag`]); keep them together, in this order.
    /// Distance to the span's first slice (0 for the first slice).
    pub slice_offset: u16,
    pub kind: SpanKind,
    /// Set when the page left its queue because it was full.
    pub in_full: bool,
    /// First byte of the span (for huge/aligned large: of the block).
    pub start: usize,
    /// Block size of a slab; usable size of a large/huge block.
    pub block_size: usize,
    /// `ceil(2^64 / block_size)`: offsets that are multiples of the block
    /// size are exactly those whose product with it wraps below it
    /// (see [`Page::is_block_offset`]).
    div_magic: u64,
    /// Size class of a slab.
    pub class: u8,
    /// The blocks in `free` are known to hold zeros (except their link).
    pub free_is_zero: bool,
    /// The whole span reads as zero (fresh from the provider).
    pub span_is_zero: bool,
    /// Parts of this free span may be resident and can be decommitted.
    pub dirty: bool,
    /// Span length in slices (first slice only).
    pub slice_count: u32,
    /// Remote frees: encoded list head plus [`Notify`] state bits.
    pub thread_free: AtomicUsize,
    /// Queue or bin links.
    pub next: *mut Page,
    pub prev: *mut Page,
}

/// The span tag of the first slice of a slab that is in its queue (not
/// full): the only descriptor state the free fast path accepts.
pub const TAG_QUEUED_SLAB: u32 = u32::from_ne_bytes([0, 0, SpanKind::Slab as u8, 0]);

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Page, slice_offset) % 4 == 0);
    assert!(offset_of!(Page, kind) == offset_of!(Page, slice_offset) + 2);
    assert!(offset_of!(Page, in_full) == offset_of!(Page, slice_offset) + 3);
};

impl Page {
    /// An all-zero descriptor, as found in fresh segment headers. Each use
    /// is meant to be a fresh value, so the interior atomic is not shared.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: Page = Page {
        free: ptr::null_mut(),
        local_free: ptr::null_mut(),
        used: 0,
        capacity: 0,
        reserved: 0,
        slice_offset: 0,
        kind: SpanKind::Free,
        in_full: false,
        start: 0,
        block_size: 0,
        div_magic: 0,
        class: 0,
        free_is_zero: false,
        span_is_zero: false,
        dirty: false,
        slice_count: 0,
        thread_free: AtomicUsize::new(0),
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
    };

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

    /// `slice_offset`, `kind` and `in_full` as one word, so the free fast
    /// path checks "first slice of a queued slab" with one comparison
    /// against [`TAG_QUEUED_SLAB`].
    #[inline(always)]
    pub fn tag(&self) -> u32 {
        // SAFETY: the three fields are adjacent, fully initialised bytes at
        // a 4-aligned offset (checked at compile time above), and the
        // pointer is derived from the whole descriptor.
        unsafe {
            (self as *const Page as *const u8)
                .add(core::mem::offset_of!(Page, slice_offset))
                .cast::<u32>()
                .read()
        }
    }

    /// Pops a block from `free`, if any. The owner's fast path.
    ///
    /// # Safety
    /// Only the owning heap may call this.
    #[inline(always)]
    pub unsafe fn pop_free(&mut self, key: usize) -> *mut Block {
        let b = self.free;
        if b.is_null() {
            return b;
        }
        // SAFETY: `b` is a free block of this page, owned by the caller.
        let next = unsafe { next_of(b, key) };
        self.free = next;
        self.used += 1;
        b
    }

    /// Pushes `b` onto `local_free`. The owner's free path.
    ///
    /// # Safety
    /// Only the owning heap may call this, with a live block of this page.
    #[inline(always)]
    pub unsafe fn push_local(&mut self, b: *mut Block, key: usize) {
        // SAFETY: the caller hands over a live block of this page.
        unsafe { set_next(b, self.local_free, key) };
        self.local_free = b;
        self.used -= 1;
    }

    /// Pushes a block freed by another thread.
    ///
    /// When the page is in state `Notify` the block is *not* pushed: with
    /// `may_notify` the state becomes `Notifying` and the caller must hand
    /// the block to the owner and then call [`Page::end_notifying`]
    /// ([`RemotePush::Notifying`]); without it nothing changes
    /// ([`RemotePush::MustNotify`]), so the caller can first make the
    /// hand-off safe against `fork` and then call again.
    ///
    /// # Safety
    /// `b` must be a live block of this page, given up by the caller.
    pub unsafe fn push_thread_free(
        &self,
        b: *mut Block,
        key: usize,
        may_notify: bool,
    ) -> RemotePush {
        let mut cur = self.thread_free.load(Ordering::Relaxed);
        loop {
            let state = cur & STATE_MASK;
            let new = if state == Notify::Notify as usize {
                if !may_notify {
                    return RemotePush::MustNotify;
                }
                (cur & !STATE_MASK) | Notify::Notifying as usize
            } else {
                let head = tf_head(cur);
                // SAFETY: `b` is ours until the CAS publishes it.
                unsafe { set_next(b, head, key) };
                tf_pack(b, tf_count(cur) + 1, state)
            };
            match self.thread_free.compare_exchange_weak(
                cur,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) if state == Notify::Notify as usize => return RemotePush::Notifying,
                Ok(_) => return RemotePush::Pushed,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Returns a `Notifying` page to `Normal`.
    pub fn end_notifying(&self) {
        let mut cur = self.thread_free.load(Ordering::Relaxed);
        loop {
            let new = (cur & !STATE_MASK) | Notify::Normal as usize;
            match self.thread_free.compare_exchange_weak(
                cur,
                new,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sets the notify state, waiting out a remote `Notifying` phase.
    /// Setting `Notify` succeeds only while `thread_free` is empty (a page
    /// with pending remote frees is not full); returns whether it was set.
    pub fn set_notify(&self, want: Notify) -> bool {
        let mut cur = self.thread_free.load(Ordering::Acquire);
        loop {
            if cur & STATE_MASK == Notify::Notifying as usize {
                core::hint::spin_loop();
                cur = self.thread_free.load(Ordering::Acquire);
                continue;
            }
            if want == Notify::Notify && cur & !STATE_MASK != 0 {
                return false;
            }
            let new = (cur & !STATE_MASK) | want as usize;
            match self.thread_free.compare_exchange_weak(
                cur,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes every remotely freed block, keeping the state bits. Returns the
    /// list head and the number of blocks on it.
    pub fn take_thread_free(&self) -> (*mut Block, u32) {
        let mut cur = self.thread_free.load(Ordering::Relaxed);
        loop {
            if cur & !STATE_MASK == 0 {
                return (ptr::null_mut(), 0);
            }
            match self.thread_free.compare_exchange_weak(
                cur,
                cur & STATE_MASK,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (tf_head(cur), tf_count(cur)),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether every block handed out of this span has come back through
    /// `thread_free` (counted in the word itself, no block is read): the
    /// span of an abandoned segment can then be freed as a whole.
    pub fn all_freed_remotely(&self) -> bool {
        tf_count(self.thread_free.load(Ordering::Acquire)) == self.used
    }

    /// Head of the remote list without taking it (for checks by the owner,
    /// who is the only one that ever removes blocks from it).
    pub fn peek_thread_free(&self) -> *mut Block {
        tf_head(self.thread_free.load(Ordering::Acquire))
    }

    /// Refills an empty `free` list: with the remotely freed blocks if there
    /// are any (taken whole, counted by the word itself), else with
    /// `local_free`. A remote list leaves `local_free` for the next refill.
    ///
    /// # Safety
    /// Only the owning heap may call this.
    pub unsafe fn collect(&mut self) {
        if !self.free.is_null() {
            return;
        }
        let (tf, n) = self.take_thread_free();
        if !tf.is_null() {
            self.used -= n;
            self.free = tf;
        } else if !self.local_free.is_null() {
            self.free = self.local_free;
            self.local_free = ptr::null_mut();
        } else {
            return;
        }
        self.free_is_zero = false;
    }

    /// Carves up to `max_bytes` worth of fresh blocks into `free` (which must
    /// be empty). Returns how many were added.
    ///
    /// # Safety
    /// Only the owning heap may call this, on a slab whose span is usable.
    pub unsafe fn extend(&mut self, key: usize, max_bytes: usize) -> u32 {
        debug_assert!(self.free.is_null());
        let left = self.reserved - self.capacity;
        if left == 0 {
            return 0;
        }
        let n = ((max_bytes / self.block_size).max(1) as u32).min(left);
        let bs = self.block_size;
        let first = self.start + self.capacity as usize * bs;
        for i in 0..n as usize {
            let b = (first + i * bs) as *mut Block;
            let next = if i + 1 < n as usize {
                (first + (i + 1) * bs) as *mut Block
            } else {
                ptr::null_mut()
            };
            // SAFETY: the block lies inside this page's span, untouched so far.
            unsafe { set_next(b, next, key) };
        }
        self.free = first as *mut Block;
        self.capacity += n;
        self.free_is_zero = self.span_is_zero;
        n
    }

    /// Whether `b` is on one of this page's free lists (owner only; used to
    /// confirm a suspected double free).
    ///
    /// # Safety
    /// Only the owning heap may call this.
    pub unsafe fn list_contains(&self, b: *mut Block, key: usize) -> bool {
        for head in [self.free, self.local_free, self.peek_thread_free()] {
            let mut cur = head;
            let mut steps = 0u32;
            while !cur.is_null() && steps <= self.reserved {
                if cur == b {
                    return true;
                }
                // SAFETY: list members are free blocks of this page.
                cur = unsafe { next_of(cur, key) };
                steps += 1;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisibility_check_matches_division() {
        let mut p = Page::EMPTY;
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
    fn remote_frees_are_counted_in_the_word() {
        let mut blocks = [[0usize; 2]; 5];
        let page = Page::EMPTY;
        let key = 0x1234_5678_9abc_def1;
        for b in blocks.iter_mut() {
            // SAFETY: each block is a distinct writable pair of words.
            let r = unsafe { page.push_thread_free(b.as_mut_ptr() as *mut Block, key, false) };
            assert_eq!(r, RemotePush::Pushed);
        }
        let last = blocks[4].as_mut_ptr() as *mut Block;
        assert_eq!(page.peek_thread_free(), last);
        let (head, n) = page.take_thread_free();
        assert_eq!((head, n), (last, 5));
        assert_eq!(page.take_thread_free(), (ptr::null_mut(), 0));
        // The links still chain all five, newest first.
        let mut cur = head;
        let mut seen = 0;
        while !cur.is_null() {
            seen += 1;
            // SAFETY: blocks of this test, linked above.
            cur = unsafe { next_of(cur, key) };
        }
        assert_eq!(seen, 5);
        // Upper-half addresses keep their sign through the packing.
        let high = 0xffff_8000_1234_5670usize as *mut Block;
        assert_eq!(tf_head(tf_pack(high, 7, 2)), high);
        assert_eq!(tf_count(tf_pack(high, 7, 2)), 7);
    }

    #[test]
    fn span_tag_reads_the_three_fields() {
        let mut p = Page::EMPTY;
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

    #[test]
    fn encoded_links_round_trip_and_hide_pointers() {
        let slot = 0x7f00_0001_0000usize as *mut Block;
        let next = 0x7f00_0001_0040usize as *mut Block;
        let key = 0x9e37_79b9_7f4a_7c15;
        let e = encode(next, slot, key);
        assert_ne!(e, next as usize);
        assert_eq!(decode(e, slot, key), next);
        assert_eq!(
            decode(encode(ptr::null_mut(), slot, key), slot, key),
            ptr::null_mut()
        );
    }
}
