//! A free-list heap with boundary tags.
//!
//! Memory comes from the [`Source`] in arenas. An arena starts with a
//! record (the next arena, the arena's end) and a prologue tag, and ends
//! with an epilogue tag; between them lie blocks, each with a header tag
//! and a footer tag holding its size and state. The fence tags at both
//! ends let coalescing look left and right without bounds checks. When the
//! source returns memory right after the newest arena (the program break
//! growing), the old epilogue becomes the header of the new free block.
//!
//! ```text
//! arena: | next | end | prologue | hdr payload ftr | hdr payload ftr | ... | epilogue |
//! free block payload: | next free | prev free | ...
//! ```
//!
//! Free blocks are kept in doubly linked lists (new ones in front), so a
//! block leaves its list in O(1) when a neighbour coalesces with it. The
//! [`Fit`] decides the search: one list in free order searched first-fit
//! or next-fit (from a roving pointer), or lists segregated by size (exact
//! bins of 16 bytes below 1 KiB, then four bins per power of two) with a
//! bitmap of the non-empty ones, searched best-fit, worst-fit, or
//! first-fit within the first bin that can hold the request (seglist).
//! Best-fit and worst-fit find the exact best (smallest sufficient) and
//! worst (largest) block, as a walk over every free block would, but
//! walk one or two bins instead (every block of a bin is larger than all
//! blocks of the bins below it).
//!
//! A block found is split when the rest is at least [`MIN_BLOCK`]; a
//! block freed is merged with a free left and right neighbour at once, so
//! no two free blocks are ever adjacent. A free block at the top of the
//! newest arena larger than [`TRIM`] is given back to the source.

use core::ptr::NonNull;

use super::{
    align_up, read_tag, report, write_tag, Block, Error, Fault, Source, State, Summary, ALIGN, TAG,
};
use crate::provider::PAGE_SIZE;

/// The smallest block: header, two links, footer.
pub const MIN_BLOCK: usize = 3 * TAG;
/// Bytes of an arena's record and prologue before its first block.
const ARENA_HEAD: usize = 2 * TAG;
/// A free top of the newest arena at least this large is given back.
pub const TRIM: usize = 128 << 10;
/// Segregated bins: 64 exact ones, then four per power of two.
const BINS: usize = 320;
const EXACT_BINS: usize = 64;

/// How a free block is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The first block in the list that is large enough.
    First,
    /// As first-fit, starting where the last search ended.
    Next,
    /// The smallest block that is large enough (an exact size ends the
    /// search), found through the size bins.
    Best,
    /// The largest block, found through the size bins.
    Worst,
    /// Segregated lists by size class, first-fit within a class.
    Segregated,
}

/// The bin of a free block of `size` bytes (for [`Fit::Segregated`]).
fn bin_of(size: usize) -> usize {
    if size < EXACT_BINS * ALIGN {
        return size / ALIGN;
    }
    let log = usize::BITS as usize - 1 - size.leading_zeros() as usize;
    let sub = (size >> (log - 2)) & 3;
    (EXACT_BINS + (log - 10) * 4 + sub).min(BINS - 1)
}

/// A heap of boundary-tagged blocks in free lists.
pub struct FreeList<S: Source> {
    src: S,
    fit: Fit,
    /// The newest arena (0: none); each record links to the next older.
    arenas: usize,
    /// List heads: only `heads[0]` unless segregated.
    heads: [usize; BINS],
    /// Non-empty bins (segregated).
    bitmap: [u64; BINS / 64],
    /// Where next-fit resumes (0: the list head).
    rover: usize,
    footprint: usize,
    peak_footprint: usize,
}

impl<S: Source> FreeList<S> {
    /// An empty heap; memory is obtained on the first allocation.
    pub const fn new(src: S, fit: Fit) -> Self {
        FreeList {
            src,
            fit,
            arenas: 0,
            heads: [0; BINS],
            bitmap: [0; BINS / 64],
            rover: 0,
            footprint: 0,
            peak_footprint: 0,
        }
    }

    /// The fit policy.
    pub fn fit(&self) -> Fit {
        self.fit
    }

    /// The source (for the frontend's own use of it).
    pub fn source(&mut self) -> &mut S {
        &mut self.src
    }

    /// The source, shared.
    pub fn source_ref(&self) -> &S {
        &self.src
    }

    /// Bytes held from the source now, and at most so far.
    pub fn footprint(&self) -> (usize, usize) {
        (self.footprint, self.peak_footprint)
    }

    #[cold]
    fn fail(&self, fault: Fault, addr: usize) -> ! {
        report(&self.src, fault, addr)
    }

    // --- free lists -------------------------------------------------------

    fn bin(&self, size: usize) -> usize {
        match self.fit {
            Fit::First | Fit::Next => 0,
            _ => bin_of(size),
        }
    }

    /// # Safety
    /// `b` must be a free block of this heap (tags written), in no list.
    unsafe fn insert(&mut self, b: usize, size: usize) {
        let i = self.bin(size);
        let head = self.heads[i];
        // SAFETY: `b` and `head` are free blocks of this heap: their link
        // words lie inside them.
        unsafe {
            set_next(b, head);
            set_prev(b, 0);
            if head != 0 {
                set_prev(head, b);
            }
        }
        self.heads[i] = b;
        self.bitmap[i / 64] |= 1 << (i % 64);
    }

    /// # Safety
    /// `b` must be a free block of this heap in its list.
    unsafe fn remove(&mut self, b: usize, size: usize) {
        // SAFETY: `b` is a free block in a list; its neighbours in the
        // list are free blocks too.
        unsafe {
            let (n, p) = (next(b), prev(b));
            if p != 0 {
                set_next(p, n);
            } else {
                let i = self.bin(size);
                if self.heads[i] != b {
                    self.fail(Fault::FreeListCorruption, b);
                }
                self.heads[i] = n;
                if n == 0 {
                    self.bitmap[i / 64] &= !(1 << (i % 64));
                }
            }
            if n != 0 {
                set_prev(n, p);
            }
            if self.rover == b {
                self.rover = n;
            }
        }
    }

    /// The size of free block `b`, checking its tag.
    ///
    /// # Safety
    /// `b` must be a block address taken from one of this heap's lists.
    unsafe fn free_size(&self, b: usize) -> usize {
        // SAFETY: list entries are blocks of this heap.
        match unsafe { read_tag(b) } {
            (s, Some(State::Free)) => s,
            _ => self.fail(Fault::FreeListCorruption, b),
        }
    }

    /// A free block of at least `need` bytes, still in its list (0: none).
    fn find(&mut self, need: usize) -> usize {
        // SAFETY: (whole body) every address walked comes from this heap's
        // lists, whose entries are checked free blocks.
        unsafe {
            match self.fit {
                Fit::First => self.scan(self.heads[0], 0, need),
                Fit::Next => {
                    let from = if self.rover != 0 {
                        self.rover
                    } else {
                        self.heads[0]
                    };
                    let b = self.scan(from, 0, need);
                    if b != 0 || from == self.heads[0] {
                        return b;
                    }
                    self.scan(self.heads[0], from, need)
                }
                // Blocks in a higher bin are all larger than those in a
                // lower one: the best fit is the smallest fitting block of
                // the lowest bin holding one, the worst the largest block
                // of the highest non-empty bin.
                Fit::Best => {
                    let mut i = Some(bin_of(need));
                    while let Some(bin) = i {
                        let b = self.extreme(self.heads[bin], need, false);
                        if b != 0 {
                            return b;
                        }
                        i = self.next_bin(bin + 1);
                    }
                    0
                }
                Fit::Worst => match self.last_bin() {
                    Some(bin) => self.extreme(self.heads[bin], need, true),
                    None => 0,
                },
                Fit::Segregated => {
                    let first = bin_of(need);
                    let b = self.scan(self.heads[first], 0, need);
                    if b != 0 {
                        return b;
                    }
                    match self.next_bin(first + 1) {
                        Some(i) => self.heads[i],
                        None => 0,
                    }
                }
            }
        }
    }

    /// The first block of at least `need` bytes from `b` to `stop` (0: the
    /// end of the list).
    ///
    /// # Safety
    /// `b` must be 0 or an entry of one of this heap's lists.
    unsafe fn scan(&self, mut b: usize, stop: usize, need: usize) -> usize {
        while b != 0 && b != stop {
            // SAFETY: list entries are free blocks of this heap.
            if unsafe { self.free_size(b) } >= need {
                return b;
            }
            // SAFETY: as above.
            b = unsafe { next(b) };
        }
        0
    }

    /// The smallest (or, `largest`, the largest) block of at least `need`
    /// bytes in the list from `b` (0: none); an exact fit ends the search
    /// for the smallest.
    ///
    /// # Safety
    /// `b` must be 0 or the head of one of this heap's lists.
    unsafe fn extreme(&self, mut b: usize, need: usize, largest: bool) -> usize {
        let (mut best, mut best_size) = (0, 0);
        while b != 0 {
            // SAFETY: list entries are free blocks of this heap.
            let s = unsafe { self.free_size(b) };
            if s >= need {
                if s == need && !largest {
                    return b;
                }
                let better = if largest {
                    s > best_size
                } else {
                    best == 0 || s < best_size
                };
                if better {
                    (best, best_size) = (b, s);
                }
            }
            // SAFETY: as above.
            b = unsafe { next(b) };
        }
        best
    }

    /// The highest non-empty bin.
    fn last_bin(&self) -> Option<usize> {
        (0..self.bitmap.len())
            .rev()
            .find(|&w| self.bitmap[w] != 0)
            .map(|w| w * 64 + 63 - self.bitmap[w].leading_zeros() as usize)
    }

    /// The first non-empty bin from `i` on.
    fn next_bin(&self, i: usize) -> Option<usize> {
        let mut w = i / 64;
        if w >= self.bitmap.len() {
            return None;
        }
        let mut bits = self.bitmap[w] & (!0u64 << (i % 64));
        loop {
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
            w += 1;
            if w == self.bitmap.len() {
                return None;
            }
            bits = self.bitmap[w];
        }
    }

    // --- blocks -----------------------------------------------------------

    /// Bytes of the block serving a request of `size` bytes.
    fn block_size(size: usize) -> Option<usize> {
        Some(align_up(size.checked_add(2 * TAG)?, ALIGN)?.max(MIN_BLOCK))
    }

    /// The largest request this engine can serve.
    pub fn max_request(&self) -> usize {
        isize::MAX as usize / 2
    }

    /// A block of at least `size` bytes (16-byte aligned), or null.
    pub fn alloc(&mut self, size: usize) -> *mut u8 {
        let Some(need) = Self::block_size(size) else {
            return core::ptr::null_mut();
        };
        if need > self.max_request() {
            return core::ptr::null_mut();
        }
        let mut b = self.find(need);
        if b == 0 {
            if !self.grow(need) {
                return core::ptr::null_mut();
            }
            b = self.find(need);
            if b == 0 {
                return core::ptr::null_mut();
            }
        }
        // SAFETY: `b` is a checked free block of this heap, in its list.
        unsafe {
            let size = self.free_size(b);
            self.remove(b, size);
            if self.fit == Fit::Next {
                self.rover = next(b);
            }
            self.take(b, size, need);
        }
        (b + TAG) as *mut u8
    }

    /// Marks block `b` (`size` bytes, in no list) used with `need` bytes,
    /// splitting off and freeing the rest when it is large enough.
    ///
    /// # Safety
    /// `b` must be a block of this heap of `size >= need` bytes, in no list.
    unsafe fn take(&mut self, b: usize, size: usize, need: usize) {
        // SAFETY: tags inside the block.
        unsafe {
            if size - need >= MIN_BLOCK {
                set_tags(b, need, State::Used);
                set_tags(b + need, size - need, State::Used);
                self.release(b + need, size - need);
                if self.fit == Fit::Next {
                    self.rover = b + need;
                }
            } else {
                set_tags(b, size, State::Used);
            }
        }
    }

    /// Frees block `b` of `size` bytes (tags say used or are being
    /// rewritten): merges it with free neighbours and puts it in its list.
    /// Returns the merged block.
    ///
    /// # Safety
    /// `b` must be a block of this heap of `size` bytes, in no list.
    unsafe fn release(&mut self, mut b: usize, mut size: usize) -> (usize, usize) {
        // SAFETY: the neighbours' tags lie inside this arena (the fences
        // stop the walk at its ends); every tag read is checked.
        unsafe {
            let n = b + size;
            match read_tag(n) {
                (ns, Some(State::Free)) => {
                    self.check_footer(n, ns, State::Free);
                    self.remove(n, ns);
                    size += ns;
                }
                (_, Some(State::Used)) | (0, Some(State::Fence)) => {}
                _ => self.fail(Fault::TagCorruption, n),
            }
            match read_tag(b - TAG) {
                (ps, Some(State::Free)) => {
                    let p = b - ps;
                    match read_tag(p) {
                        (s, Some(State::Free)) if s == ps => {}
                        _ => self.fail(Fault::TagCorruption, p),
                    }
                    self.remove(p, ps);
                    b = p;
                    size += ps;
                }
                (_, Some(State::Used)) | (0, Some(State::Fence)) => {}
                _ => self.fail(Fault::TagCorruption, b - TAG),
            }
            set_tags(b, size, State::Free);
            self.insert(b, size);
        }
        (b, size)
    }

    /// # Safety
    /// `b` must be a block start of this heap with a valid header of `size`.
    unsafe fn check_footer(&self, b: usize, size: usize, state: State) {
        // SAFETY: the footer lies inside the block.
        match unsafe { read_tag(b + size - TAG) } {
            (s, Some(st)) if s == size && st == state => {}
            _ => self.fail(Fault::TagCorruption, b + size - TAG),
        }
    }

    /// The size of the used block at `p` (a payload address), checking its
    /// tags; misuse is fatal.
    ///
    /// # Safety
    /// `p` must be an address inside this heap's arenas, 16-byte aligned.
    unsafe fn used_block(&self, p: usize) -> (usize, usize) {
        let b = p - TAG;
        // SAFETY: the header lies inside the arena, before `p`.
        let size = match unsafe { read_tag(b) } {
            (s, Some(State::Used)) if s >= MIN_BLOCK && s % ALIGN == 0 => s,
            (_, Some(State::Free)) => self.fail(Fault::DoubleFree, p),
            _ => self.fail(Fault::InvalidFree, p),
        };
        // SAFETY: a valid header: the footer lies inside the block.
        unsafe { self.check_footer(b, size, State::Used) };
        (b, size)
    }

    /// Frees the block at `p`.
    ///
    /// # Safety
    /// `p` must be an address inside this heap's arenas ([`Self::contains`]),
    /// 16-byte aligned; a live block is not used afterwards.
    pub unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded from the caller; the block's tags are checked.
        unsafe {
            let (b, size) = self.used_block(p as usize);
            let (b, size) = self.release(b, size);
            self.trim(b, size);
        }
    }

    /// Usable bytes of the live block at `p`.
    ///
    /// # Safety
    /// As [`Self::free`], for a live block.
    pub unsafe fn usable(&self, p: *const u8) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { self.used_block(p as usize).1 - 2 * TAG }
    }

    /// Resizes the live block at `p` in place to hold `size` bytes:
    /// shrinking splits off the tail, growing takes a free right neighbour.
    /// False (nothing changed) when it cannot.
    ///
    /// # Safety
    /// As [`Self::free`], for a live block.
    pub unsafe fn resize(&mut self, p: *mut u8, size: usize) -> bool {
        let Some(need) = Self::block_size(size) else {
            return false;
        };
        // SAFETY: forwarded from the caller; tags are checked.
        unsafe {
            let (b, cur) = self.used_block(p as usize);
            if need <= cur {
                if cur - need >= MIN_BLOCK {
                    set_tags(b, need, State::Used);
                    set_tags(b + need, cur - need, State::Used);
                    self.release(b + need, cur - need);
                }
                return true;
            }
            let n = b + cur;
            if let (ns, Some(State::Free)) = read_tag(n) {
                if cur + ns >= need {
                    self.check_footer(n, ns, State::Free);
                    self.remove(n, ns);
                    self.take(b, cur + ns, need);
                    return true;
                }
            }
        }
        false
    }

    // --- arenas -----------------------------------------------------------

    /// Obtains memory for a block of `need` bytes: extends the newest arena
    /// when the source's memory follows it, or starts a new arena.
    fn grow(&mut self, need: usize) -> bool {
        let Some(min) = need.checked_add(ARENA_HEAD + TAG) else {
            return false;
        };
        let Some((ptr, len)) = self.src.grow(min, PAGE_SIZE) else {
            return false;
        };
        let a = ptr.as_ptr() as usize;
        self.footprint += len;
        self.peak_footprint = self.peak_footprint.max(self.footprint);
        // SAFETY: the fresh range is ours; arena records and tags are
        // written inside it (or, extending, over the old epilogue).
        unsafe {
            if self.arenas != 0 && arena_end(self.arenas) == a {
                let e = a - TAG;
                set_arena_end(self.arenas, a + len);
                write_tag(e + len, 0, State::Fence);
                set_tags(e, len, State::Used);
                self.release(e, len);
            } else {
                (a as *mut usize).write(self.arenas);
                set_arena_end(a, a + len);
                write_tag(a + TAG, 0, State::Fence);
                write_tag(a + len - TAG, 0, State::Fence);
                self.arenas = a;
                let size = len - ARENA_HEAD - TAG;
                set_tags(a + ARENA_HEAD, size, State::Used);
                self.release(a + ARENA_HEAD, size);
            }
        }
        true
    }

    /// Gives the free block `b` back to the source, but for a small rest,
    /// when it is the top of the newest arena and at least [`TRIM`] bytes.
    ///
    /// # Safety
    /// `b` must be a free block of this heap of `size` bytes, in its list.
    unsafe fn trim(&mut self, b: usize, size: usize) {
        if size < TRIM || self.arenas == 0 {
            return;
        }
        // SAFETY: the newest arena's record.
        let end = unsafe { arena_end(self.arenas) };
        if b + size != end - TAG {
            return;
        }
        let give = (end - (b + MIN_BLOCK + TAG)) & !(PAGE_SIZE - 1);
        if give == 0 {
            return;
        }
        let new_end = end - give;
        // SAFETY: the tail of the newest arena, the end of the source's
        // last range, holds only this free block.
        unsafe {
            // The source has the last word on giving back, so the block
            // leaves its list only once it agreed.
            if !self
                .src
                .shrink(NonNull::new_unchecked(new_end as *mut u8), give)
            {
                return;
            }
            self.remove(b, size);
            set_arena_end(self.arenas, new_end);
            write_tag(new_end - TAG, 0, State::Fence);
            set_tags(b, new_end - TAG - b, State::Free);
            self.insert(b, new_end - TAG - b);
        }
        self.footprint -= give;
    }

    /// Whether `p` lies inside one of this heap's arenas.
    pub fn contains(&self, p: *const u8) -> bool {
        let p = p as usize;
        let mut a = self.arenas;
        while a != 0 {
            // SAFETY: arena records of this heap.
            let end = unsafe { arena_end(a) };
            if p >= a + ARENA_HEAD && p < end - TAG {
                return true;
            }
            // SAFETY: as above.
            a = unsafe { (a as *const usize).read() };
        }
        false
    }

    /// Calls `f` for every block, arena by arena (newest first), in
    /// address order within an arena.
    pub fn dump(&self, f: &mut dyn FnMut(Block)) {
        let _ = self.walk(f);
    }

    fn walk(&self, f: &mut dyn FnMut(Block)) -> Result<Summary, Error> {
        let err = |fault, addr| Err(Error { fault, addr });
        let mut sum = Summary::default();
        let mut a = self.arenas;
        // SAFETY: (whole walk) arena records and block tags of this heap;
        // every size is checked before it is used to step.
        unsafe {
            while a != 0 {
                let end = arena_end(a);
                sum.footprint += end - a;
                if read_tag(a + TAG) != (0, Some(State::Fence)) {
                    return err(Fault::TagCorruption, a + TAG);
                }
                let (mut b, last) = (a + ARENA_HEAD, end - TAG);
                let mut prev_free = false;
                while b < last {
                    let (s, st) = read_tag(b);
                    let free = match st {
                        Some(State::Free) => true,
                        Some(State::Used) => false,
                        _ => return err(Fault::TagCorruption, b),
                    };
                    if s < MIN_BLOCK || s % ALIGN != 0 || s > last - b {
                        return err(Fault::TagCorruption, b);
                    }
                    if read_tag(b + s - TAG) != (s, st) {
                        return err(Fault::TagCorruption, b + s - TAG);
                    }
                    if free && prev_free {
                        return err(Fault::FreeListCorruption, b);
                    }
                    f(Block {
                        addr: b,
                        size: s,
                        free,
                    });
                    if free {
                        sum.free_blocks += 1;
                        sum.free_bytes += s;
                    } else {
                        sum.used_blocks += 1;
                        sum.used_bytes += s;
                    }
                    prev_free = free;
                    b += s;
                }
                if b != last || read_tag(last) != (0, Some(State::Fence)) {
                    return err(Fault::TagCorruption, last);
                }
                a = (a as *const usize).read();
            }
            // Every free block is in exactly the list of its size, once.
            let mut listed = 0;
            for (i, &head) in self.heads.iter().enumerate() {
                if (head != 0) != (self.bitmap[i / 64] >> (i % 64) & 1 == 1) {
                    return err(Fault::FreeListCorruption, head);
                }
                let (mut b, mut p) = (head, 0);
                while b != 0 {
                    listed += 1;
                    if listed > sum.free_blocks || !self.contains((b + TAG) as *const u8) {
                        return err(Fault::FreeListCorruption, b);
                    }
                    match read_tag(b) {
                        (s, Some(State::Free)) if self.bin(s) == i => {}
                        _ => return err(Fault::FreeListCorruption, b),
                    }
                    if prev(b) != p {
                        return err(Fault::FreeListCorruption, b);
                    }
                    (p, b) = (b, next(b));
                }
            }
            if listed != sum.free_blocks {
                return err(Fault::FreeListCorruption, 0);
            }
        }
        if sum.footprint != self.footprint {
            return err(Fault::TagCorruption, self.arenas);
        }
        Ok(sum)
    }

    /// Walks the whole heap: every tag, the fences, coalescing (no two
    /// free neighbours), the free lists against the blocks.
    pub fn verify(&self) -> Result<Summary, Error> {
        self.walk(&mut |_| {})
    }
}

/// # Safety
/// `b` must be a free block (the link words lie inside it).
unsafe fn next(b: usize) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe { ((b + TAG) as *const usize).read() }
}
/// # Safety
/// As [`next`].
unsafe fn prev(b: usize) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe { ((b + TAG + 8) as *const usize).read() }
}
/// # Safety
/// As [`next`].
unsafe fn set_next(b: usize, v: usize) {
    // SAFETY: as the caller guarantees.
    unsafe { ((b + TAG) as *mut usize).write(v) }
}
/// # Safety
/// As [`next`].
unsafe fn set_prev(b: usize, v: usize) {
    // SAFETY: as the caller guarantees.
    unsafe { ((b + TAG + 8) as *mut usize).write(v) }
}

/// Writes the header and footer of block `b`.
///
/// # Safety
/// `[b, b+size)` must be memory of the heap, `size >= 2 * TAG`.
unsafe fn set_tags(b: usize, size: usize, state: State) {
    // SAFETY: both tags inside the block.
    unsafe {
        write_tag(b, size, state);
        write_tag(b + size - TAG, size, state);
    }
}

/// # Safety
/// `a` must be an arena record.
unsafe fn arena_end(a: usize) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe { ((a + 8) as *const usize).read() }
}

/// # Safety
/// `a` must be an arena record.
unsafe fn set_arena_end(a: usize, end: usize) {
    // SAFETY: as the caller guarantees.
    unsafe { ((a + 8) as *mut usize).write(end) }
}
