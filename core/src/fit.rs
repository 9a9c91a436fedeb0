//! Best-fit blocks carved from chunks of memory: a two-level segregated
//! fit allocator with boundary tags, for blocks of any size rounded to 16
//! bytes. Allocation, free and resizing in place are O(1).
//!
//! A kernel heap serves blocks above the slab sizes with it: a slab of a
//! few big blocks leaves most of its memory idle, while a block cut to its
//! request from a shared run of pages wastes at most 15 bytes plus its
//! header, and freed neighbours merge back into one run.
//!
//! # Chunks and blocks
//! Memory comes in *chunks* the caller hands over ([`Fit::add_chunk`]): a
//! 24-byte chunk header (its length, a caller's tag, the links of the
//! instance's chunk list), the blocks, and an 8-byte end sentinel. Every
//! block starts with an 8-byte header, one word:
//!
//! - bits 4..40: the block's size (header included, a multiple of 16);
//! - bits 0..4: `FREE`, `PREV_FREE` (the block before it is free: its size
//!   is in the word just before this header, the free block's footer),
//!   `FIRST` (first block of its chunk), `WHOLE` (a free block that spans
//!   its whole chunk);
//! - bits 40..50: the owning instance's number ([`Fit::owner`]), so a
//!   frontend with one instance per CPU finds where a block goes back;
//! - bits 50..64: a fixed pattern, so a pointer that is not a block start
//!   is caught (in all but one case in 16384) instead of corrupting the
//!   lists.
//!
//! Headers sit 8 bytes before a 16-byte boundary, so payloads are 16-byte
//! aligned. A free block keeps its free-list links in its payload and its
//! size in its last word (the footer); the smallest block is 32 bytes.
//!
//! # Free lists
//! Free blocks are binned by size: below 1 KiB one list per 16 bytes, above
//! 64 lists per power of two (sizes within 1/64 of each other share one).
//! Two bitmaps (which power of two has a non-empty list, which lists of it
//! are non-empty) find the smallest list whose blocks all fit in two
//! `trailing_zeros`. From 1 KiB up the request's own list (whose blocks
//! may or may not fit) is looked at first, the best fitting of its first
//! four blocks taken: that keeps larger blocks whole for larger requests
//! (about 0.2 points of heap efficiency near exhaustion). When no list has
//! a block, the own list is searched deeper before the caller is asked
//! for a new chunk: that is what lets the last free blocks serve requests
//! of their own size.
//!
//! # Quick lists
//! A freed block of up to [`QUICK_MAX`] bytes is first kept whole on a
//! list of blocks of exactly its size (marked `CACHED`: the `WHOLE` bit on
//! a used block), up to a byte budget, and handed out again by the next
//! request of that size without touching its neighbours or the bins: one
//! header read and a pop, where a merging free and a splitting allocation
//! touch three or four cache lines. Before the instance reports that
//! nothing fits (and its caller adds memory), it frees every cached block
//! for real, so the lists never cost memory a request needs. Their links
//! are stored masked with the instance's key and every popped block's
//! header is checked, so an overwritten link does not hand out arbitrary
//! memory.
//!
//! # Empty chunks
//! A free that leaves a chunk entirely free keeps it as a free block while
//! fewer than the instance's `keep_empty` chunks are empty, and otherwise
//! takes it out of the instance and returns it to the caller, who gives it
//! back to where it came from.
//!
//! Nothing here is thread-safe: one instance is used by one CPU at a time.
//! [`RemoteFrees`] is the lock-free stack other CPUs push blocks onto for
//! the owner to free.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::fatal::Misuse;

/// Bytes of a block's header.
pub const HEADER: usize = 8;
/// Block sizes and payload alignment.
pub const GRANULE: usize = 16;
/// The smallest block: header, two links, footer.
pub const MIN_BLOCK: usize = 32;
/// Bytes of a chunk's own header.
const CHUNK_HEADER: usize = 24;
/// Bytes a chunk spends on itself: its header and its end sentinel.
pub const CHUNK_OVERHEAD: usize = CHUNK_HEADER + HEADER;
/// The largest block (bits 4..40 of the header).
pub const MAX_BLOCK: usize = SIZE_MASK;
/// The highest owner number.
pub const MAX_OWNER: usize = (1 << OWNER_BITS) - 1;
/// Chunk tags are below this.
pub const TAG_LIMIT: usize = GRANULE;
/// Freed blocks up to this size (header included) go to the quick lists.
pub const QUICK_MAX: usize = 4096;
/// Quick lists, indexed by block size / 16.
const QUICK_LISTS: usize = QUICK_MAX / GRANULE + 1;
/// The most blocks one quick list holds: without a bound, sizes that are
/// rarely asked for again would fill the budget and leave no room for
/// the common ones.
pub const QUICK_DEPTH: u16 = 32;

const FREE: usize = 1;
const PREV_FREE: usize = 2;
const FIRST: usize = 4;
const WHOLE: usize = 8;
/// On a used block (`FREE` clear): it waits on a quick list.
const CACHED: usize = WHOLE;
const SIZE_BITS: u32 = 40;
const SIZE_MASK: usize = ((1 << SIZE_BITS) - 1) & !(GRANULE - 1);
const OWNER_SHIFT: u32 = SIZE_BITS;
const OWNER_BITS: u32 = 10;
const MAGIC_SHIFT: u32 = OWNER_SHIFT + OWNER_BITS;
const MAGIC: usize = 0b10_1101_0110_1001;

/// log2 of the lists per power of two.
const SL_SHIFT: u32 = 6;
/// Lists per power of two (one bitmap word).
const SL: usize = 1 << SL_SHIFT;
/// Below this, one list per 16 bytes (the first row).
const LINEAR_LIMIT: usize = SL * GRANULE;
/// log2 of `LINEAR_LIMIT`.
const LINEAR_SHIFT: u32 = LINEAR_LIMIT.trailing_zeros();
/// Rows: the linear one, then one per power of two up to `MAX_BLOCK`.
const FL: usize = SIZE_BITS as usize - LINEAR_SHIFT as usize + 1;
/// How many blocks of the request's own list are tried when no list above
/// it has one.
const SCAN_LIMIT: usize = 32;
/// How many blocks of the request's own list are compared first (from
/// 1 KiB up): the best of them is taken when one fits.
const BEST_OF: usize = 4;

/// A chunk the instance no longer uses, to be given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub base: usize,
    pub len: usize,
    /// The caller's tag from [`Fit::add_chunk`].
    pub tag: usize,
}

/// Counters of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FitStats {
    /// Bytes of used blocks, headers included (cached blocks count as
    /// used); [`Fit::stats`] walks the chunks to count them.
    pub used: usize,
    /// Bytes of the chunks held.
    pub chunk_bytes: usize,
    /// Chunks held.
    pub chunks: usize,
    /// Chunks held that are entirely free.
    pub empty_chunks: usize,
    /// Bytes of blocks waiting on the quick lists (counted in `used`).
    pub cached: usize,
}

/// A misuse found by a free or resize: what, and the address.
pub type FitMisuse = (Misuse, usize);

/// What [`Fit::try_pop_quick`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuickPop {
    /// A cached block of the request's size, handed out.
    Block(*mut u8),
    /// No cached block serves the request: it goes to the bins
    /// ([`Fit::alloc_binned`]).
    Bins,
    /// The list's head (this payload address) looks corrupted:
    /// [`Fit::alloc`] reports it.
    Check(usize),
}

/// What [`Fit::try_push_quick`] did with a block.
#[derive(Debug, PartialEq, Eq)]
pub enum QuickPush {
    /// It waits on its quick list.
    Cached,
    /// A used block of the instance that goes to the bins: for
    /// [`Fit::free_checked`].
    Bins(Checked),
    /// Not a used block of this instance (or misuse): for [`Fit::free`].
    Declined,
}

/// A used block of an instance whose header [`Fit::try_push_quick`]
/// checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// The block (its header's address).
    b: usize,
    /// Its header.
    h: usize,
}

/// One best-fit instance. All-zero bytes are not valid: create it with
/// [`Fit::init`].
pub struct Fit {
    /// Bit `f`: row `f` has a non-empty list.
    fl_bitmap: u64,
    /// Bit `s` of word `f`: list `(f, s)` is non-empty.
    sl_bitmap: [u64; FL],
    /// Free-list heads (block header addresses; 0 for none).
    heads: [[usize; SL]; FL],
    /// Quick-list heads (block addresses, 0 for none), by size / 16.
    quick: [usize; QUICK_LISTS],
    /// Blocks on each quick list.
    quick_len: [u16; QUICK_LISTS],
    /// Most bytes the quick lists hold.
    quick_budget: usize,
    /// Masks the quick lists' links.
    key: usize,
    /// Owner number and pattern, in place in a header word.
    mark: usize,
    /// Empty chunks kept before one is returned.
    keep_empty: usize,
    /// First chunk of the instance's list (0 for none).
    chunk_list: usize,
    stats: FitStats,
}

#[inline(always)]
unsafe fn rd(addr: usize) -> usize {
    // SAFETY: the caller's contract (an address inside a chunk).
    unsafe { *(addr as *const usize) }
}

#[inline(always)]
unsafe fn wr(addr: usize, v: usize) {
    // SAFETY: the caller's contract (an address inside a chunk).
    unsafe { *(addr as *mut usize) = v }
}

/// The block size that serves a request of `size` bytes (at least 16-byte
/// aligned), or `None` above [`MAX_BLOCK`].
#[inline(always)]
pub const fn block_size_for(size: usize) -> Option<usize> {
    if size > MAX_BLOCK - HEADER - GRANULE {
        return None;
    }
    let s = (size + HEADER + GRANULE - 1) & !(GRANULE - 1);
    Some(if s < MIN_BLOCK { MIN_BLOCK } else { s })
}

/// Whether `a` may be a block address (or the end of a list): headers are
/// 8 bytes past a multiple of 16.
#[inline(always)]
fn plausible(a: usize) -> bool {
    a % GRANULE == HEADER || a == 0
}

/// Whether a decoded quick-list link `next` of the block `b` may be real:
/// the end of the list, or a block address within 1 TiB of `b`. A link
/// overwritten without the key decodes to random bits, which this rejects
/// in all but one case in 2^28, before it is read through.
#[inline(always)]
fn near(next: usize, b: usize) -> bool {
    next == 0 || (next % GRANULE == HEADER && (next ^ b) >> 40 == 0)
}

/// The list that holds free blocks of `size` bytes.
#[inline(always)]
fn list_of(size: usize) -> (usize, usize) {
    if size < LINEAR_LIMIT {
        return (0, size / GRANULE);
    }
    let log = usize::BITS - 1 - size.leading_zeros();
    let fl = (log - LINEAR_SHIFT + 1) as usize;
    let sl = (size >> (log - SL_SHIFT)) & (SL - 1);
    (fl, sl)
}

/// The first list all of whose blocks hold `size` bytes.
#[inline(always)]
fn list_at_least(size: usize) -> (usize, usize) {
    if size < LINEAR_LIMIT {
        return (0, size / GRANULE);
    }
    let log = usize::BITS - 1 - size.leading_zeros();
    list_of(size + (1 << (log - SL_SHIFT)) - 1)
}

/// Usable bytes of the live block at `p`.
///
/// # Safety
/// `p` must be a live block of some instance.
#[inline]
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: the caller's contract: the header precedes the block.
    (unsafe { rd(p as usize - HEADER) } & SIZE_MASK) - HEADER
}

/// The owner number recorded in the block at `p`, or `None` if `p` does
/// not look like a block start (its header lacks the pattern).
///
/// # Safety
/// The 8 bytes before `p` must be readable.
#[inline(always)]
pub unsafe fn owner_of(p: *const u8) -> Option<usize> {
    // SAFETY: the caller's contract.
    let h = unsafe { rd(p as usize - HEADER) };
    (h >> MAGIC_SHIFT == MAGIC).then_some((h >> OWNER_SHIFT) & MAX_OWNER)
}

impl Fit {
    /// Makes `this` an empty instance numbered `owner` (at most
    /// [`MAX_OWNER`]) that keeps up to `keep_empty` empty chunks and up to
    /// `quick_budget` bytes on its quick lists (0: none), masking their
    /// links with `key` (a secret). Written in place: the instance is
    /// about 22 KiB.
    ///
    /// # Safety
    /// `this` must be valid for writes of a `Fit` and aligned for it.
    pub unsafe fn init(
        this: *mut Fit,
        owner: usize,
        keep_empty: usize,
        quick_budget: usize,
        key: usize,
    ) {
        debug_assert!(owner <= MAX_OWNER);
        // SAFETY: the caller's contract; zero is a valid bit pattern of
        // every field (integers and arrays of them).
        unsafe {
            ptr::write_bytes(this, 0, 1);
            (*this).mark = (MAGIC << MAGIC_SHIFT) | ((owner & MAX_OWNER) << OWNER_SHIFT);
            (*this).keep_empty = keep_empty;
            (*this).quick_budget = quick_budget;
            (*this).key = key;
        }
    }

    /// This instance's owner number.
    pub fn owner(&self) -> usize {
        (self.mark >> OWNER_SHIFT) & MAX_OWNER
    }

    /// Counters. O(blocks): the used bytes are counted by walking every
    /// chunk (the allocation paths keep no running total).
    pub fn stats(&self) -> FitStats {
        let mut s = self.stats;
        s.used = 0;
        let mut c = self.chunk_list;
        while c != 0 {
            // SAFETY: chunks on the list are ours; their blocks tile them
            // up to the sentinel.
            unsafe {
                let end = c + (rd(c) & !(TAG_LIMIT - 1)) - HEADER;
                let mut b = c + CHUNK_HEADER;
                while b < end {
                    let h = rd(b);
                    if h & FREE == 0 {
                        s.used += h & SIZE_MASK;
                    }
                    b += h & SIZE_MASK;
                }
                c = rd(c + 16);
            }
        }
        s
    }

    /// Hands `[base, base + len)` to the instance as one free block.
    /// `tag` (below [`TAG_LIMIT`]) comes back with the chunk when it is
    /// returned.
    ///
    /// # Safety
    /// The range must be writable memory used by nothing else until the
    /// instance returns it; `base` and `len` multiples of 16, `len` at
    /// least `CHUNK_OVERHEAD + MIN_BLOCK` and at most `MAX_BLOCK`.
    pub unsafe fn add_chunk(&mut self, base: usize, len: usize, tag: usize) {
        debug_assert!(base.is_multiple_of(GRANULE) && len.is_multiple_of(GRANULE));
        debug_assert!((CHUNK_OVERHEAD + MIN_BLOCK..=MAX_BLOCK).contains(&len));
        debug_assert!(tag < TAG_LIMIT);
        let b = base + CHUNK_HEADER;
        let size = len - CHUNK_OVERHEAD;
        // SAFETY: the range is ours (the caller's contract).
        unsafe {
            wr(base, len | tag);
            wr(base + 8, 0);
            wr(base + 16, self.chunk_list);
            if self.chunk_list != 0 {
                wr(self.chunk_list + 8, base);
            }
            self.chunk_list = base;
            // The sentinel: a used block of no size.
            wr(base + len - HEADER, PREV_FREE | self.mark);
            wr(b, size | FREE | FIRST | WHOLE | self.mark);
            wr(b + size - 8, size);
            self.insert(b, size);
        }
        self.stats.chunks += 1;
        self.stats.chunk_bytes += len;
        self.stats.empty_chunks += 1;
    }

    /// Allocates `size` bytes aligned to `align` (a power of two); null
    /// when no free block fits (the caller adds a chunk and retries). A
    /// free list found corrupted is reported instead of followed. Only the
    /// quick-list pop is inline.
    #[inline(always)]
    pub fn alloc(&mut self, size: usize, align: usize) -> Result<*mut u8, FitMisuse> {
        match self.try_pop_quick(size, align) {
            QuickPop::Block(p) => Ok(p),
            QuickPop::Bins => self.alloc_binned(size, align),
            QuickPop::Check(head) => Err((Misuse::FreeListCorruption, head)),
        }
    }

    /// The quick-list pop alone, for a frontend's inline fast path: a
    /// cached block of the request's size, or where the request goes
    /// instead. Nothing is written before the head's header and link have
    /// been checked; a head that looks wrong in any way is left where it
    /// is and named (a frontend hands the request to [`Fit::alloc`], which
    /// reports it).
    #[inline(always)]
    pub fn try_pop_quick(&mut self, size: usize, align: usize) -> QuickPop {
        // The list of the smallest block that holds `size` (a size is at
        // most `isize::MAX`, so the sum does not overflow).
        if align > GRANULE {
            return QuickPop::Bins;
        }
        // Rounded up by a shift: `div_ceil` would guard an overflow that
        // cannot happen here.
        let i =
            ((size + HEADER + GRANULE - 1) >> GRANULE.trailing_zeros()).max(MIN_BLOCK / GRANULE);
        if i >= QUICK_LISTS {
            return QuickPop::Bins;
        }
        let need = i * GRANULE;
        // SAFETY: `i < QUICK_LISTS`; a non-zero head is a cached block of
        // ours unless a link was overwritten, which the header and link
        // checks catch before anything is written.
        unsafe {
            let b = *self.quick.get_unchecked(i);
            if b == 0 {
                return QuickPop::Bins;
            }
            let h = rd(b);
            if h & !(FREE | PREV_FREE | FIRST) != need | CACHED | self.mark {
                return QuickPop::Check(b + HEADER);
            }
            let next = rd(b + HEADER) ^ self.key ^ b;
            if !near(next, b) {
                return QuickPop::Check(b + HEADER);
            }
            *self.quick.get_unchecked_mut(i) = next;
            *self.quick_len.get_unchecked_mut(i) -= 1;
            wr(b, h & !CACHED);
            self.stats.cached -= need;
            QuickPop::Block((b + HEADER) as *mut u8)
        }
    }

    /// The quick-list push alone, for a frontend's inline fast path:
    /// [`QuickPush::Cached`] when `p`, a used block of this instance of a
    /// quick-listed size, now waits on its list; [`QuickPush::Bins`] with
    /// the checked block when it is a used block of this instance that the
    /// lists do not take (too big, or its list or the budget is full), for
    /// [`Fit::free_checked`]; [`QuickPush::Declined`] for anything else
    /// (another instance's block, and every misuse: a free or cached block,
    /// a header without this instance's mark), which the caller hands to
    /// [`Fit::free`] or its owner, and which `free` reports.
    ///
    /// # Safety
    /// The 8 bytes before `p` are readable; if `p` is a live block of this
    /// instance it is not used afterwards.
    #[inline(always)]
    pub unsafe fn try_push_quick(&mut self, p: *mut u8) -> QuickPush {
        let b = (p as usize).wrapping_sub(HEADER);
        // SAFETY: the caller's contract: the header word is readable; once
        // it carries this instance's mark with `FREE` and `CACHED` clear,
        // the block is a used block of ours (as in `live_block`).
        unsafe {
            let h = rd(b);
            // One compare: the pattern, the owner, and neither free nor
            // cached.
            if h & !(SIZE_MASK | PREV_FREE | FIRST) != self.mark {
                return QuickPush::Declined;
            }
            let s = h & SIZE_MASK;
            if s.wrapping_sub(MIN_BLOCK) > QUICK_MAX - MIN_BLOCK {
                // Also a size below the smallest block: not a block of
                // ours, whatever its header says.
                return if s < MIN_BLOCK {
                    QuickPush::Declined
                } else {
                    QuickPush::Bins(Checked { b, h })
                };
            }
            let i = s / GRANULE;
            let len = self.quick_len.get_unchecked_mut(i);
            if self.stats.cached + s > self.quick_budget || *len >= QUICK_DEPTH {
                return QuickPush::Bins(Checked { b, h });
            }
            *len += 1;
            let head = self.quick.get_unchecked_mut(i);
            wr(b + HEADER, *head ^ self.key ^ b);
            *head = b;
            wr(b, h | CACHED);
            self.stats.cached += s;
            QuickPush::Cached
        }
    }

    /// Frees a block [`Fit::try_push_quick`] checked and left to the bins,
    /// merging it with its free neighbours: as [`Fit::free`].
    ///
    /// # Safety
    /// `block` came from this instance's `try_push_quick`, and nothing
    /// freed or resized the block since.
    #[inline(always)]
    pub unsafe fn free_checked(&mut self, block: Checked) -> Result<Option<Chunk>, FitMisuse> {
        // SAFETY: the caller's contract: the header was checked.
        unsafe { self.release_binned((block.b + HEADER) as *mut u8, block.b, block.h) }
    }

    /// [`Fit::alloc`] from the bins alone: for a caller whose
    /// [`Fit::try_pop_quick`] said [`QuickPop::Bins`].
    #[inline(never)]
    pub fn alloc_binned(&mut self, size: usize, align: usize) -> Result<*mut u8, FitMisuse> {
        let Some(need) = block_size_for(size) else {
            return Ok(ptr::null_mut());
        };
        if align > GRANULE {
            return self.alloc_aligned(need, align);
        }
        let (mut b, mut list) = self.find(need);
        if b == 0 {
            if self.stats.cached == 0 {
                return Ok(ptr::null_mut());
            }
            // Nothing is returned: what the flush frees is wanted now.
            self.flush_quick(true, |_| {})?;
            (b, list) = self.find(need);
            if b == 0 {
                return Ok(ptr::null_mut());
            }
        }
        // SAFETY: `find` returns a listed free block of at least `need`
        // and its list.
        unsafe {
            self.check_links(b, list)?;
            self.unlink_unchecked(b, list);
            self.take(b, need);
        }
        Ok((b + HEADER) as *mut u8)
    }

    /// Frees every block on the quick lists for real (merging it with its
    /// free neighbours). A chunk that leaves empty goes to `give` as a free
    /// does, or with `keep` stays in the instance whatever its limit.
    fn flush_quick(&mut self, keep: bool, mut give: impl FnMut(Chunk)) -> Result<(), FitMisuse> {
        for i in 0..QUICK_LISTS {
            let mut b = self.quick[i];
            self.quick[i] = 0;
            self.quick_len[i] = 0;
            while b != 0 {
                // SAFETY: as in `pop_quick`: each block is checked before
                // it is freed.
                unsafe {
                    let h = rd(b);
                    if h & !(FREE | PREV_FREE | FIRST) != (i * GRANULE) | CACHED | self.mark {
                        return Err((Misuse::FreeListCorruption, b + HEADER));
                    }
                    let next = rd(b + HEADER) ^ self.key ^ b;
                    if !near(next, b) {
                        return Err((Misuse::FreeListCorruption, b + HEADER));
                    }
                    self.stats.cached -= i * GRANULE;
                    if let Some(c) = self.release((b + HEADER) as *mut u8, b, h & !CACHED, keep)? {
                        give(c);
                    }
                    b = next;
                }
            }
        }
        Ok(())
    }

    /// [`Fit::alloc`] above 16-byte alignment: a block with room for a
    /// free block in front of an aligned start, split there.
    #[cold]
    fn alloc_aligned(&mut self, need: usize, align: usize) -> Result<*mut u8, FitMisuse> {
        // Payloads are 16-aligned, so an aligned one lies at most
        // `align - 16` past the first spot that leaves a whole free block
        // in front.
        let search = match need.checked_add(align + MIN_BLOCK - GRANULE) {
            Some(s) if s <= MAX_BLOCK => s,
            _ => return Ok(ptr::null_mut()),
        };
        let (mut b, mut list) = self.find(search);
        if b == 0 && self.stats.cached != 0 {
            self.flush_quick(true, |_| {})?;
            (b, list) = self.find(search);
        }
        if b == 0 {
            return Ok(ptr::null_mut());
        }
        // SAFETY: `find` returns a listed free block of at least `search`
        // and its list.
        unsafe {
            let h = rd(b);
            let s = h & SIZE_MASK;
            self.check_links(b, list)?;
            self.unlink_unchecked(b, list);
            if !(b + HEADER).is_multiple_of(align) {
                let p = (b + HEADER + MIN_BLOCK).next_multiple_of(align);
                let gap = p - HEADER - b;
                if h & WHOLE != 0 {
                    self.stats.empty_chunks -= 1;
                }
                wr(b, gap | FREE | (h & FIRST) | self.mark);
                wr(b + gap - 8, gap);
                self.insert(b, gap);
                b += gap;
                wr(b, (s - gap) | FREE | PREV_FREE | self.mark);
            }
            self.take(b, need);
        }
        Ok((b + HEADER) as *mut u8)
    }

    /// A listed free block of at least `need` bytes and its list, or 0.
    #[inline(always)]
    fn find(&mut self, need: usize) -> (usize, (usize, usize)) {
        if need >= LINEAR_LIMIT {
            // Blocks of the request's own list may be just large enough:
            // the best of its first few keeps a larger block whole, which
            // near exhaustion is what the next large request needs.
            let own = list_of(need);
            let b = self.best_of_list(own, need);
            if b != 0 {
                return (b, own);
            }
        }
        let (fl, sl) = list_at_least(need);
        if fl < FL {
            // SAFETY: `fl < FL` and `sl < SL`.
            let bits = unsafe { *self.sl_bitmap.get_unchecked(fl) } & (!0u64 << sl);
            if bits != 0 {
                let s = bits.trailing_zeros() as usize;
                // SAFETY: as above; a set bit means a non-empty list.
                return (
                    unsafe { *self.heads.get_unchecked(fl).get_unchecked(s) },
                    (fl, s),
                );
            }
            let rows = self.fl_bitmap & (!0u64 << (fl + 1));
            if rows != 0 {
                let f = rows.trailing_zeros() as usize;
                // SAFETY: a set row bit is a row below `FL` with a set list
                // bit.
                unsafe {
                    let s = self.sl_bitmap.get_unchecked(f).trailing_zeros() as usize;
                    return (*self.heads.get_unchecked(f).get_unchecked(s), (f, s));
                }
            }
        }
        (self.scan(need), list_of(need))
    }

    /// The smallest of the first [`BEST_OF`] blocks of list `(fl, sl)` that
    /// holds `need` bytes, or 0.
    #[inline(always)]
    fn best_of_list(&self, (fl, sl): (usize, usize), need: usize) -> usize {
        if fl >= FL {
            return 0;
        }
        // SAFETY: `fl < FL`, `sl < SL`; listed blocks are free blocks of
        // our chunks.
        unsafe {
            let mut b = *self.heads.get_unchecked(fl).get_unchecked(sl);
            let (mut best, mut best_size) = (0, usize::MAX);
            let mut n = 0;
            while b != 0 && n < BEST_OF {
                let s = rd(b) & SIZE_MASK;
                if s >= need && s < best_size {
                    (best, best_size) = (b, s);
                }
                b = rd(b + 8);
                n += 1;
            }
            best
        }
    }

    /// The first of a few blocks of `need`'s own list that holds it, or 0.
    #[cold]
    fn scan(&self, need: usize) -> usize {
        let (fl, sl) = list_of(need);
        if fl >= FL {
            return 0;
        }
        let mut b = self.heads[fl][sl];
        let mut n = 0;
        while b != 0 && n < SCAN_LIMIT {
            // SAFETY: listed blocks are free blocks of our chunks.
            unsafe {
                if rd(b) & SIZE_MASK >= need {
                    return b;
                }
                b = rd(b + 8);
            }
            n += 1;
        }
        0
    }

    /// Makes the unlisted free block `b` a used block of `need` bytes,
    /// listing what is left over as a free block of its own.
    ///
    /// # Safety
    /// `b` is an unlisted free block of at least `need` bytes.
    #[inline(always)]
    unsafe fn take(&mut self, b: usize, need: usize) {
        // SAFETY: the caller's contract; the next header lies in the chunk.
        unsafe {
            let h = rd(b);
            let s = h & SIZE_MASK;
            if h & WHOLE != 0 {
                self.stats.empty_chunks -= 1;
            }
            self.use_block(b, s, need, h & (PREV_FREE | FIRST));
        }
    }

    /// Makes the `total` bytes at `b` (no longer listed anywhere) a used
    /// block of `need` bytes with the header bits `keep`: the rest becomes
    /// a listed free block when it is big enough to be one, or stays in the
    /// used block (whose successor then no longer has a free predecessor).
    ///
    /// # Safety
    /// `[b, b + total)` is unlisted memory of this heap's chunk ending at a
    /// block header, and `need <= total`.
    #[inline(always)]
    unsafe fn use_block(&mut self, b: usize, total: usize, need: usize, keep: usize) {
        // SAFETY: the caller's contract; every address written lies in the
        // range or is the next block's header.
        unsafe {
            let rest = total - need;
            if rest >= MIN_BLOCK {
                wr(b, need | keep | self.mark);
                let r = b + need;
                wr(r, rest | FREE | self.mark);
                wr(r + rest - 8, rest);
                self.insert(r, rest);
            } else {
                wr(b, total | keep | self.mark);
                let n = b + total;
                wr(n, rd(n) & !PREV_FREE);
            }
        }
    }

    /// Checks that `p` is a live block of this instance; returns its block
    /// address and header.
    #[inline(always)]
    unsafe fn live_block(&self, p: *mut u8, what: Misuse) -> Result<(usize, usize), FitMisuse> {
        let b = (p as usize).wrapping_sub(HEADER);
        // SAFETY: the caller's contract: the header word is readable.
        let h = unsafe { rd(b) };
        if h & !(SIZE_MASK | (GRANULE - 1)) != self.mark || h & SIZE_MASK < MIN_BLOCK {
            return Err((what, p as usize));
        }
        // A free or cached block is not live: freed twice.
        if h & (FREE | CACHED) != 0 {
            return Err((Misuse::DoubleFree, p as usize));
        }
        Ok((b, h))
    }

    /// Frees the block at `p`, merging it with free neighbours. Returns the
    /// chunk when that left it entirely free and the instance keeps enough
    /// empty chunks already (the caller gives it back); a misuse is
    /// reported instead of acted on.
    ///
    /// # Safety
    /// `p` must be null-free and its 8 bytes before readable; if it is a
    /// live block of this instance it is not used afterwards.
    #[inline(always)]
    pub unsafe fn free(&mut self, p: *mut u8) -> Result<Option<Chunk>, FitMisuse> {
        // SAFETY: the caller's contract; a block comes back checked only
        // when its header is that of a used block of ours.
        unsafe {
            match self.try_push_quick(p) {
                QuickPush::Cached => Ok(None),
                QuickPush::Bins(block) => self.free_checked(block),
                // Not a used block of this instance: the header check says
                // which misuse.
                QuickPush::Declined => match self.live_block(p, Misuse::InvalidFree) {
                    Err(m) => Err(m),
                    Ok(_) => Err((Misuse::InvalidFree, p as usize)),
                },
            }
        }
    }

    /// [`Fit::free`] into the bins.
    ///
    /// # Safety
    /// As [`Fit::release`].
    #[inline(never)]
    unsafe fn release_binned(
        &mut self,
        p: *mut u8,
        b: usize,
        h: usize,
    ) -> Result<Option<Chunk>, FitMisuse> {
        // SAFETY: forwarded.
        unsafe { self.release(p, b, h, false) }
    }

    /// Frees the used block `b` (header `h`, payload `p`) into the bins,
    /// merging it with its free neighbours; a chunk this empties is
    /// returned as [`Fit::free`] says, or with `keep` kept whatever the
    /// limit.
    ///
    /// # Safety
    /// `b` is a used block of ours whose header (checked) is `h`.
    #[inline(always)]
    unsafe fn release(
        &mut self,
        p: *mut u8,
        mut b: usize,
        h: usize,
        keep: bool,
    ) -> Result<Option<Chunk>, FitMisuse> {
        // SAFETY: the caller's contract: the neighbours the header names
        // lie in the same chunk.
        unsafe {
            let mut s = h & SIZE_MASK;
            let n = b + s;
            let hn = rd(n);
            // Everything is checked before anything changes.
            let ns = hn & SIZE_MASK;
            let mut n_list = (0, 0);
            if hn & FREE != 0 {
                n_list = list_of(ns);
                self.check_links(n, n_list)?;
            }
            let (mut prev, mut ps, mut hp, mut p_list) = (0, 0, 0, (0, 0));
            if h & PREV_FREE != 0 {
                ps = rd(b - 8);
                prev = b.wrapping_sub(ps);
                if !plausible(prev) {
                    return Err((Misuse::FreeListCorruption, p as usize));
                }
                hp = rd(prev);
                if hp & (SIZE_MASK | FREE) != ps | FREE {
                    return Err((Misuse::FreeListCorruption, p as usize));
                }
                p_list = list_of(ps);
                self.check_links(prev, p_list)?;
            }
            let mut first = h & FIRST;
            if hn & FREE != 0 {
                self.unlink_unchecked(n, n_list);
                s += ns;
            } else {
                wr(n, hn | PREV_FREE);
            }
            if prev != 0 {
                self.unlink_unchecked(prev, p_list);
                s += ps;
                b = prev;
                first = hp & FIRST;
            }
            if first != 0 && rd(b + s) & SIZE_MASK == 0 {
                return Ok(self.chunk_emptied(b, s, keep));
            }
            wr(b, s | FREE | first | self.mark);
            wr(b + s - 8, s);
            self.insert(b, s);
            Ok(None)
        }
    }

    /// A free block `b` of `s` bytes spans its whole chunk: keep it listed
    /// (below the limit, or with `keep`) or hand the chunk back.
    ///
    /// # Safety
    /// `b` is the unlisted first block of its chunk, free, ending at the
    /// sentinel.
    #[cold]
    unsafe fn chunk_emptied(&mut self, b: usize, s: usize, keep: bool) -> Option<Chunk> {
        // SAFETY: the caller's contract: the chunk header precedes `b`.
        unsafe {
            if keep || self.stats.empty_chunks < self.keep_empty {
                self.stats.empty_chunks += 1;
                wr(b, s | FREE | FIRST | WHOLE | self.mark);
                wr(b + s - 8, s);
                self.insert(b, s);
                return None;
            }
            Some(self.unlink_chunk(b - CHUNK_HEADER))
        }
    }

    /// Takes the chunk at `base` off the chunk list.
    ///
    /// # Safety
    /// `base` is a chunk of this instance with no listed block.
    unsafe fn unlink_chunk(&mut self, base: usize) -> Chunk {
        // SAFETY: the caller's contract.
        unsafe {
            let word = rd(base);
            let (prev, next) = (rd(base + 8), rd(base + 16));
            if prev != 0 {
                wr(prev + 16, next);
            } else {
                self.chunk_list = next;
            }
            if next != 0 {
                wr(next + 8, prev);
            }
            let len = word & !(TAG_LIMIT - 1);
            self.stats.chunks -= 1;
            self.stats.chunk_bytes -= len;
            Chunk {
                base,
                len,
                tag: word & (TAG_LIMIT - 1),
            }
        }
    }

    /// Resizes the live block at `p` in place to hold `new_size` bytes:
    /// a shrink frees the tail (when it makes a block), a growth takes the
    /// free block after it. Returns whether the block now holds
    /// `new_size`; a misuse is reported instead of acted on.
    ///
    /// # Safety
    /// As [`Fit::free`]; the block stays live.
    #[inline(always)]
    pub unsafe fn resize(&mut self, p: *mut u8, new_size: usize) -> Result<bool, FitMisuse> {
        let Some(need) = block_size_for(new_size) else {
            return Ok(false);
        };
        // SAFETY: the caller's contract; the header was checked, so the
        // next block lies in the same chunk.
        unsafe {
            let (b, h) = self.live_block(p, Misuse::InvalidRealloc)?;
            let s = h & SIZE_MASK;
            let keep = h & (PREV_FREE | FIRST);
            let n = b + s;
            let hn = rd(n);
            if need <= s {
                let mut rest = s - need;
                if rest < MIN_BLOCK {
                    return Ok(true);
                }
                if hn & FREE != 0 {
                    let ns = hn & SIZE_MASK;
                    self.unlink(n, ns)?;
                    rest += ns;
                } else {
                    wr(n, hn | PREV_FREE);
                }
                wr(b, need | keep | self.mark);
                let r = b + need;
                wr(r, rest | FREE | self.mark);
                wr(r + rest - 8, rest);
                self.insert(r, rest);
                return Ok(true);
            }
            if hn & FREE == 0 {
                return Ok(false);
            }
            let ns = hn & SIZE_MASK;
            let total = s + ns;
            if total < need {
                return Ok(false);
            }
            self.unlink(n, ns)?;
            self.use_block(b, total, need, keep);
            Ok(true)
        }
    }

    /// Moves the live block at `p` down into the free block before it and
    /// grows it over the free block after it, when together they hold
    /// `new_size` bytes: the last resort of a growing `realloc` when no
    /// free block elsewhere is large enough. The first `keep` bytes (at
    /// most `new_size`) move with it. Returns the block's new address,
    /// null when the neighbours leave too little room; a misuse is
    /// reported instead of acted on.
    ///
    /// # Safety
    /// As [`Fit::resize`]; on success `p` is no longer valid.
    pub unsafe fn slide(
        &mut self,
        p: *mut u8,
        new_size: usize,
        keep: usize,
    ) -> Result<*mut u8, FitMisuse> {
        let Some(need) = block_size_for(new_size) else {
            return Ok(ptr::null_mut());
        };
        // SAFETY: the caller's contract; the header was checked, so its
        // neighbours lie in the same chunk, and their links are checked
        // before they are unlisted.
        unsafe {
            let (b, h) = self.live_block(p, Misuse::InvalidRealloc)?;
            if h & PREV_FREE == 0 {
                return Ok(ptr::null_mut());
            }
            let s = h & SIZE_MASK;
            let ps = rd(b - 8);
            let prev = b.wrapping_sub(ps);
            if !plausible(prev) || rd(prev) & (SIZE_MASK | FREE) != ps | FREE {
                return Err((Misuse::FreeListCorruption, p as usize));
            }
            let hp = rd(prev);
            let n = b + s;
            let hn = rd(n);
            let ns = if hn & FREE != 0 { hn & SIZE_MASK } else { 0 };
            let total = ps + s + ns;
            if total < need {
                return Ok(ptr::null_mut());
            }
            self.check_links(prev, list_of(ps))?;
            if ns != 0 {
                self.unlink(n, ns)?;
            }
            self.unlink_unchecked(prev, list_of(ps));
            // The header first: it lies below both copies.
            wr(prev, total | (hp & FIRST) | self.mark);
            let q = prev + HEADER;
            ptr::copy(p, q as *mut u8, keep.min(new_size));
            let end = prev + total;
            let rest = total - need;
            if rest >= MIN_BLOCK {
                wr(prev, need | (hp & FIRST) | self.mark);
                let r = prev + need;
                wr(r, rest | FREE | self.mark);
                wr(r + rest - 8, rest);
                self.insert(r, rest);
                // The block after now follows a free one.
                wr(end, rd(end) | PREV_FREE);
            } else {
                wr(end, rd(end) & !PREV_FREE);
            }
            Ok(q as *mut u8)
        }
    }

    /// Returns the empty chunks the instance keeps (for a trim, or before
    /// the instance is dropped); `give` gets each.
    pub fn release_empty(&mut self, mut give: impl FnMut(Chunk)) -> Result<(), FitMisuse> {
        // Cached blocks keep their chunks in use: free them first.
        self.flush_quick(false, &mut give)?;
        let mut c = self.chunk_list;
        while c != 0 {
            // SAFETY: chunks on the list are ours; the first block follows
            // the chunk header.
            unsafe {
                let next = rd(c + 16);
                let b = c + CHUNK_HEADER;
                let h = rd(b);
                // A chunk whose links were overwritten stays (and is
                // reported by the next allocation that meets it).
                if h & (FREE | WHOLE) == FREE | WHOLE && self.unlink(b, h & SIZE_MASK).is_ok() {
                    self.stats.empty_chunks -= 1;
                    give(self.unlink_chunk(c));
                }
                c = next;
            }
        }
        Ok(())
    }

    /// Hands every chunk back, whatever it holds: for tearing an instance
    /// down after all its blocks are gone (or abandoned with it).
    pub fn release_all(&mut self, mut give: impl FnMut(Chunk)) {
        while self.chunk_list != 0 {
            // SAFETY: a chunk of ours; the lists are dropped below.
            give(unsafe { self.unlink_chunk(self.chunk_list) });
        }
        self.fl_bitmap = 0;
        self.sl_bitmap = [0; FL];
        self.heads = [[0; SL]; FL];
        self.quick = [0; QUICK_LISTS];
        self.quick_len = [0; QUICK_LISTS];
        self.stats = FitStats::default();
    }

    /// Lists the free block `b` of `s` bytes.
    ///
    /// # Safety
    /// `b` is an unlisted free block of ours whose header says `s`.
    #[inline(always)]
    unsafe fn insert(&mut self, b: usize, s: usize) {
        let (fl, sl) = list_of(s);
        // SAFETY: `fl < FL` for every size up to `MAX_BLOCK`; the block's
        // payload holds its links.
        unsafe {
            let head = self.heads.get_unchecked_mut(fl).get_unchecked_mut(sl);
            wr(b + 8, *head);
            wr(b + 16, 0);
            if *head != 0 {
                wr(*head + 16, b);
            }
            *head = b;
            *self.sl_bitmap.get_unchecked_mut(fl) |= 1 << sl;
        }
        self.fl_bitmap |= 1 << fl;
    }

    /// Unlists the free block `b` of `s` bytes, its links checked first
    /// (see [`Fit::check_links`]).
    ///
    /// # Safety
    /// `b` is a listed free block of ours whose header says `s`.
    #[inline(always)]
    unsafe fn unlink(&mut self, b: usize, s: usize) -> Result<(), FitMisuse> {
        let list = list_of(s);
        // SAFETY: forwarded from the caller.
        unsafe {
            self.check_links(b, list)?;
            self.unlink_unchecked(b, list);
        }
        Ok(())
    }

    /// Unlists the free block `b` from its list `(fl, sl)`.
    ///
    /// # Safety
    /// `b` is a free block of ours on that list, with links that were
    /// checked.
    #[inline(always)]
    unsafe fn unlink_unchecked(&mut self, b: usize, (fl, sl): (usize, usize)) {
        // SAFETY: the caller's contract; neighbours on the list are listed
        // free blocks of ours.
        unsafe {
            let (next, prev) = (rd(b + 8), rd(b + 16));
            if next != 0 {
                wr(next + 16, prev);
            }
            if prev != 0 {
                wr(prev + 8, next);
            } else {
                let head = self.heads.get_unchecked_mut(fl).get_unchecked_mut(sl);
                *head = next;
                if next == 0 {
                    let row = self.sl_bitmap.get_unchecked_mut(fl);
                    *row &= !(1 << sl);
                    if *row == 0 {
                        self.fl_bitmap &= !(1 << fl);
                    }
                }
            }
        }
    }

    /// Checks that the links of a free neighbour found through a header
    /// point back at it (an overflow from the block before it may have
    /// rewritten them). A forged link that is a plausible block address is
    /// read through (not written) before it is rejected.
    ///
    /// # Safety
    /// `b` holds a header of ours that says it is free with a size of list
    /// `(fl, sl)`.
    #[inline(always)]
    unsafe fn check_links(&self, b: usize, (fl, sl): (usize, usize)) -> Result<(), FitMisuse> {
        // SAFETY: the caller's contract; links are read through only once
        // they look like block addresses.
        unsafe {
            let (next, prev) = (rd(b + 8), rd(b + 16));
            let ok = plausible(next)
                && plausible(prev)
                && (next == 0 || rd(next + 16) == b)
                && if prev == 0 {
                    *self.heads.get_unchecked(fl).get_unchecked(sl) == b
                } else {
                    rd(prev + 8) == b
                };
            if ok {
                Ok(())
            } else {
                Err((Misuse::FreeListCorruption, b + HEADER))
            }
        }
    }

    /// Walks every chunk and every list and checks headers, footers, flags,
    /// list membership, bitmaps and counters. O(blocks); a test aid.
    pub fn verify(&self) -> Result<(), &'static str> {
        let mut listed = 0usize;
        for fl in 0..FL {
            let row = self.sl_bitmap[fl];
            if (self.fl_bitmap >> fl) & 1 != (row != 0) as u64 {
                return Err("row bitmap out of date");
            }
            for sl in 0..SL {
                let mut b = self.heads[fl][sl];
                if (row >> sl) & 1 != (b != 0) as u64 {
                    return Err("list bitmap out of date");
                }
                let mut prev = 0;
                while b != 0 {
                    // SAFETY: listed blocks are free blocks of our chunks.
                    let (h, next, back) = unsafe { (rd(b), rd(b + 8), rd(b + 16)) };
                    if h & FREE == 0 || list_of(h & SIZE_MASK) != (fl, sl) {
                        return Err("listed block not free or in the wrong list");
                    }
                    if back != prev {
                        return Err("broken back link");
                    }
                    listed += 1;
                    prev = b;
                    b = next;
                }
            }
        }
        let mut cached = 0;
        let mut cached_blocks = 0;
        for (i, &head) in self.quick.iter().enumerate() {
            let mut b = head;
            let mut n = 0;
            while b != 0 {
                n += 1;
                // SAFETY: quick-list blocks are cached blocks of our chunks.
                let h = unsafe { rd(b) };
                if h & !(PREV_FREE | FIRST) != (i * GRANULE) | CACHED | self.mark {
                    return Err("quick-list block with a wrong header");
                }
                cached += i * GRANULE;
                cached_blocks += 1;
                // SAFETY: as above.
                let next = unsafe { rd(b + HEADER) } ^ self.key ^ b;
                if !near(next, b) {
                    return Err("quick-list link out of reach");
                }
                b = next;
            }
            if n != self.quick_len[i] as usize || n > QUICK_DEPTH as usize {
                return Err("quick-list length out of date");
            }
        }
        let mut cached_seen = 0;
        let (mut free_blocks, mut used, mut chunks, mut bytes, mut empty) = (0, 0, 0, 0, 0);
        let mut c = self.chunk_list;
        while c != 0 {
            // SAFETY: chunks on the list are ours; the walk stays inside
            // each one (sizes are checked to end at its sentinel).
            unsafe {
                let len = rd(c) & !(TAG_LIMIT - 1);
                let end = c + len - HEADER;
                let mut b = c + CHUNK_HEADER;
                let mut prev_free = false;
                let mut first = true;
                while b < end {
                    let h = rd(b);
                    let s = h & SIZE_MASK;
                    if h & !(SIZE_MASK | (GRANULE - 1)) != self.mark || s < MIN_BLOCK {
                        return Err("bad header");
                    }
                    if (h & FIRST != 0) != first || (h & PREV_FREE != 0) != prev_free {
                        return Err("FIRST or PREV_FREE flag wrong");
                    }
                    if h & FREE != 0 {
                        if prev_free {
                            return Err("two free blocks side by side");
                        }
                        if rd(b + s - 8) != s {
                            return Err("footer wrong");
                        }
                        let whole = b == c + CHUNK_HEADER && b + s == end;
                        if (h & WHOLE != 0) != whole {
                            return Err("WHOLE flag wrong");
                        }
                        empty += whole as usize;
                        free_blocks += 1;
                    } else {
                        used += s;
                        cached_seen += (h & CACHED != 0) as usize;
                    }
                    prev_free = h & FREE != 0;
                    first = false;
                    b += s;
                }
                if b != end || rd(end) & SIZE_MASK != 0 || (rd(end) & PREV_FREE != 0) != prev_free {
                    return Err("blocks do not end at the sentinel");
                }
                chunks += 1;
                bytes += len;
                c = rd(c + 16);
            }
        }
        if free_blocks != listed {
            return Err("free blocks and listed blocks differ");
        }
        if cached_seen != cached_blocks {
            return Err("cached blocks and quick-listed blocks differ");
        }
        let s = self.stats;
        if self.stats().used != used
            || s.chunks != chunks
            || s.chunk_bytes != bytes
            || s.empty_chunks != empty
            || s.cached != cached
        {
            return Err("counters out of date");
        }
        Ok(())
    }
}

/// Blocks freed on other CPUs, waiting for their owner: a lock-free stack
/// linked through the blocks' first words. Any CPU pushes; only the owner
/// takes (the whole stack at once, so no ABA).
pub struct RemoteFrees {
    head: AtomicUsize,
}

impl Default for RemoteFrees {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteFrees {
    pub const fn new() -> Self {
        RemoteFrees {
            head: AtomicUsize::new(0),
        }
    }

    /// Pushes the block at `p`.
    ///
    /// # Safety
    /// `p` is a live block its caller gives up (its first word becomes the
    /// link).
    pub unsafe fn push(&self, p: *mut u8) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is ours to write until it is published.
            unsafe { wr(p as usize, head) };
            match self.head.compare_exchange_weak(
                head,
                p as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Whether nothing waits (a plain load: cheap to test on every call).
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == 0
    }

    /// Takes every waiting block; walk them with [`RemoteFrees::next`].
    pub fn take(&self) -> *mut u8 {
        self.head.swap(0, Ordering::Acquire) as *mut u8
    }

    /// The block after `p` in a list from [`RemoteFrees::take`].
    ///
    /// # Safety
    /// `p` is on such a list and not yet freed.
    pub unsafe fn next(p: *mut u8) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { rd(p as usize) as *mut u8 }
    }
}

#[cfg(test)]
mod tests;
