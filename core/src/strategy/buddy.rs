//! A buddy heap for byte allocations.
//!
//! Memory comes from the [`Source`] in arenas aligned to the top block
//! size, [`TOP`] bytes (1 MiB), cut into top blocks. A request takes the
//! smallest power-of-two block that holds it and its 16-byte tag
//! (at least [`MIN_ORDER`]); a larger free block is split in halves until
//! it fits, each unused half going to the free list of its order. On free,
//! a block merges with its buddy (its address with the order's bit
//! flipped: arenas are aligned, so no base needs subtracting) as long as
//! the buddy is free and of the same order.
//!
//! The tag's `info` is the block's order. The arena record (the next
//! arena, the arena's length) lives in the arena's first minimum-size
//! block, marked with a fence tag, so it is never merged.
//!
//! The address arithmetic (`buddy = b ^ size`, split and merge by order)
//! is the same as a page buddy's, where the order counts pages; this one
//! keeps its free lists inside the free blocks, so it needs no memory of
//! its own.

use core::ptr::NonNull;

use super::{read_tag, report, write_tag, Block, Error, Fault, Source, State, Summary, TAG};

/// The smallest block: a tag and two links, 32 bytes.
pub const MIN_ORDER: u32 = 5;
/// The largest block, 1 MiB: arenas are aligned to it.
pub const TOP_ORDER: u32 = 20;
/// Bytes of a top block.
pub const TOP: usize = 1 << TOP_ORDER;
const ORDERS: usize = TOP_ORDER as usize + 1;

/// A buddy heap.
pub struct Buddy<S: Source> {
    src: S,
    /// Free lists by order (doubly linked through the free blocks).
    free: [usize; ORDERS],
    /// The newest arena (0: none).
    arenas: usize,
    footprint: usize,
    peak_footprint: usize,
}

impl<S: Source> Buddy<S> {
    /// An empty heap; memory is obtained on the first allocation.
    pub const fn new(src: S) -> Self {
        Buddy {
            src,
            free: [0; ORDERS],
            arenas: 0,
            footprint: 0,
            peak_footprint: 0,
        }
    }

    /// The source (for the frontend's own use of it).
    pub fn source(&mut self) -> &mut S {
        &mut self.src
    }

    /// The source, shared.
    pub fn source_ref(&self) -> &S {
        &self.src
    }

    /// Bytes held from the source now, and at most so far (including
    /// any part of a range too small for a top block).
    pub fn footprint(&self) -> (usize, usize) {
        (self.footprint, self.peak_footprint)
    }

    /// The largest request this engine can serve.
    pub fn max_request(&self) -> usize {
        TOP - TAG
    }

    #[cold]
    fn fail(&self, fault: Fault, addr: usize) -> ! {
        report(&self.src, fault, addr)
    }

    /// # Safety
    /// `b` must be a block of this heap of order `o`, in no list.
    unsafe fn push(&mut self, b: usize, o: u32) {
        let head = self.free[o as usize];
        // SAFETY: `b` and `head` are free blocks of this heap.
        unsafe {
            write_tag(b, o as usize, State::Free);
            link(b).write([head, 0]);
            if head != 0 {
                (link(head) as *mut usize).add(1).write(b);
            }
        }
        self.free[o as usize] = b;
    }

    /// # Safety
    /// `b` must be a free block of order `o` in its list.
    unsafe fn unlink(&mut self, b: usize, o: u32) {
        // SAFETY: `b` and its list neighbours are free blocks of this heap.
        unsafe {
            let [n, p] = link(b).read();
            if p != 0 {
                (link(p) as *mut usize).write(n);
            } else {
                if self.free[o as usize] != b {
                    self.fail(Fault::FreeListCorruption, b);
                }
                self.free[o as usize] = n;
            }
            if n != 0 {
                (link(n) as *mut usize).add(1).write(p);
            }
        }
    }

    /// The order of the block serving `size` bytes.
    fn order_for(size: usize) -> Option<u32> {
        let need = size.checked_add(TAG)?;
        let o = need.checked_next_power_of_two()?.trailing_zeros();
        (o <= TOP_ORDER).then_some(o.max(MIN_ORDER))
    }

    /// A block of at least `size` bytes (16-byte aligned), or null.
    pub fn alloc(&mut self, size: usize) -> *mut u8 {
        let Some(o) = Self::order_for(size) else {
            return core::ptr::null_mut();
        };
        let find = |h: &Self| (o..=TOP_ORDER).find(|&k| h.free[k as usize] != 0);
        let k = match find(self) {
            Some(k) => k,
            // A new arena's first top block is split for its record, so
            // the block found after growing may be any order.
            None => match self.grow().then(|| find(self)).flatten() {
                Some(k) => k,
                None => return core::ptr::null_mut(),
            },
        };
        let b = self.free[k as usize];
        // SAFETY: `b` heads a free list of this heap; its tag is checked.
        unsafe {
            if read_tag(b) != (k as usize, Some(State::Free)) {
                self.fail(Fault::FreeListCorruption, b);
            }
            self.unlink(b, k);
            for half in (o..k).rev() {
                self.push(b + (1 << half), half);
            }
            write_tag(b, o as usize, State::Used);
        }
        (b + TAG) as *mut u8
    }

    /// The order of the used block at `p` (a payload address), checked;
    /// misuse is fatal.
    ///
    /// # Safety
    /// `p` must lie inside this heap's arenas, 16-byte aligned.
    unsafe fn used_block(&self, p: usize) -> (usize, u32) {
        let b = p - TAG;
        // SAFETY: the tag lies inside the arena, before `p`.
        match unsafe { read_tag(b) } {
            (o, Some(State::Used))
                if (MIN_ORDER as usize..=TOP_ORDER as usize).contains(&o)
                    && b & ((1 << o) - 1) == 0 =>
            {
                (b, o as u32)
            }
            (_, Some(State::Free)) => self.fail(Fault::DoubleFree, p),
            _ => self.fail(Fault::InvalidFree, p),
        }
    }

    /// Frees the block at `p`, merging it with free buddies.
    ///
    /// # Safety
    /// `p` must lie inside this heap's arenas ([`Self::contains`]), 16-byte
    /// aligned; a live block is not used afterwards.
    pub unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded from the caller; every tag read is checked, and
        // a buddy below the top order lies inside the same top block.
        unsafe {
            let (mut b, mut o) = self.used_block(p as usize);
            while o < TOP_ORDER {
                let bud = b ^ (1 << o);
                match read_tag(bud) {
                    (bo, Some(State::Free)) if bo == o as usize => {
                        self.unlink(bud, o);
                        b = b.min(bud);
                        o += 1;
                    }
                    (_, Some(_)) => break,
                    (_, None) => self.fail(Fault::TagCorruption, bud),
                }
            }
            self.push(b, o);
            if o == TOP_ORDER {
                self.trim();
            }
        }
    }

    /// Usable bytes of the live block at `p`.
    ///
    /// # Safety
    /// As [`Self::free`], for a live block.
    pub unsafe fn usable(&self, p: *const u8) -> usize {
        // SAFETY: forwarded from the caller.
        (1 << unsafe { self.used_block(p as usize) }.1) - TAG
    }

    /// Resizes in place: true when the block already holds `size` bytes
    /// (a buddy block never changes size in place).
    ///
    /// # Safety
    /// As [`Self::free`], for a live block.
    pub unsafe fn resize(&mut self, p: *mut u8, size: usize) -> bool {
        // SAFETY: forwarded from the caller.
        size <= unsafe { self.usable(p) }
    }

    /// Adds a top block: extends the newest arena when the source's memory
    /// follows it, or starts a new arena whose first block holds the record.
    fn grow(&mut self) -> bool {
        let Some((ptr, len)) = self.src.grow(TOP, TOP) else {
            return false;
        };
        let a = ptr.as_ptr() as usize;
        self.footprint += len;
        self.peak_footprint = self.peak_footprint.max(self.footprint);
        let tops = len / TOP;
        if tops == 0 || !a.is_multiple_of(TOP) {
            // A source breaking its promise: keep the memory unused.
            return false;
        }
        // SAFETY: the fresh range is ours; records and tags are written
        // inside it.
        unsafe {
            if self.arenas != 0 && self.arenas + arena_len(self.arenas) == a {
                set_arena_len(self.arenas, arena_len(self.arenas) + tops * TOP);
            } else {
                (link(a) as *mut usize).write(self.arenas);
                set_arena_len(a, tops * TOP);
                write_tag(a, MIN_ORDER as usize, State::Fence);
                self.arenas = a;
                for half in (MIN_ORDER..TOP_ORDER).rev() {
                    self.push(a + (1 << half), half);
                }
            }
            // The new top blocks, the highest last so it is used first.
            for i in (if self.arenas == a { 1 } else { 0 })..tops {
                self.push(a + i * TOP, TOP_ORDER);
            }
        }
        // Bytes beyond whole top blocks stay unused (counted, not carved).
        true
    }

    /// Gives free top blocks at the end of the newest arena back to the
    /// source (never the arena's first, which holds the record).
    fn trim(&mut self) {
        while self.arenas != 0 {
            // SAFETY: the newest arena's record.
            let len = unsafe { arena_len(self.arenas) };
            let last = self.arenas + len - TOP;
            if last == self.arenas {
                return;
            }
            // SAFETY: `last` is a top block start of the arena.
            if unsafe { read_tag(last) } != (TOP_ORDER as usize, Some(State::Free)) {
                return;
            }
            // SAFETY: the tail of the source's last range, one free block.
            // The block leaves its list first: the source may clear it.
            unsafe {
                self.unlink(last, TOP_ORDER);
                if !self
                    .src
                    .shrink(NonNull::new_unchecked(last as *mut u8), TOP)
                {
                    self.push(last, TOP_ORDER);
                    return;
                }
                set_arena_len(self.arenas, len - TOP);
            }
            self.footprint -= TOP;
        }
    }

    /// Whether `p` lies inside one of this heap's arenas.
    pub fn contains(&self, p: *const u8) -> bool {
        let p = p as usize;
        let mut a = self.arenas;
        while a != 0 {
            // SAFETY: arena records of this heap.
            let len = unsafe { arena_len(a) };
            if p > a && p < a + len {
                return true;
            }
            // SAFETY: as above.
            a = unsafe { (link(a) as *const usize).read() };
        }
        false
    }

    /// Calls `f` for every block (the arena records excluded), arena by
    /// arena, in address order within an arena.
    pub fn dump(&self, f: &mut dyn FnMut(Block)) {
        let _ = self.walk(f);
    }

    fn walk(&self, f: &mut dyn FnMut(Block)) -> Result<Summary, Error> {
        let err = |fault, addr| Err(Error { fault, addr });
        let mut sum = Summary::default();
        let mut a = self.arenas;
        // SAFETY: (whole walk) records and tags of this heap; each order is
        // checked before it is used to step.
        unsafe {
            while a != 0 {
                let len = arena_len(a);
                if !len.is_multiple_of(TOP)
                    || read_tag(a) != (MIN_ORDER as usize, Some(State::Fence))
                {
                    return err(Fault::TagCorruption, a);
                }
                sum.footprint += len;
                let mut b = a + (1 << MIN_ORDER);
                while b < a + len {
                    let (o, st) = read_tag(b);
                    let free = match st {
                        Some(State::Free) => true,
                        Some(State::Used) => false,
                        _ => return err(Fault::TagCorruption, b),
                    };
                    if !(MIN_ORDER as usize..=TOP_ORDER as usize).contains(&o)
                        || b & ((1 << o) - 1) != 0
                    {
                        return err(Fault::TagCorruption, b);
                    }
                    if free && o < TOP_ORDER as usize {
                        // A free block whose buddy is free whole was not merged.
                        let bud = b ^ (1 << o);
                        if bud != a && read_tag(bud) == (o, Some(State::Free)) {
                            return err(Fault::FreeListCorruption, b);
                        }
                    }
                    f(Block {
                        addr: b,
                        size: 1 << o,
                        free,
                    });
                    if free {
                        sum.free_blocks += 1;
                        sum.free_bytes += 1 << o;
                    } else {
                        sum.used_blocks += 1;
                        sum.used_bytes += 1 << o;
                    }
                    b += 1 << o;
                }
                a = (link(a) as *const usize).read();
            }
            let mut listed = 0;
            for (o, &head) in self.free.iter().enumerate() {
                let (mut b, mut p) = (head, 0);
                while b != 0 {
                    listed += 1;
                    if listed > sum.free_blocks
                        || !self.contains((b + TAG) as *const u8)
                        || read_tag(b) != (o, Some(State::Free))
                    {
                        return err(Fault::FreeListCorruption, b);
                    }
                    let [n, bp] = link(b).read();
                    if bp != p {
                        return err(Fault::FreeListCorruption, b);
                    }
                    (p, b) = (b, n);
                }
            }
            if listed != sum.free_blocks {
                return err(Fault::FreeListCorruption, 0);
            }
        }
        Ok(sum)
    }

    /// Walks the whole heap: every tag, alignment of every block to its
    /// size, merging (no free block with a free buddy of its order), and
    /// the free lists against the blocks.
    pub fn verify(&self) -> Result<Summary, Error> {
        self.walk(&mut |_| {})
    }
}

/// The two link words of a block (after its tag); for an arena record,
/// the next arena and the length.
fn link(b: usize) -> *mut [usize; 2] {
    (b + TAG) as *mut [usize; 2]
}

/// # Safety
/// `a` must be an arena record.
unsafe fn arena_len(a: usize) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe { (link(a) as *const usize).add(1).read() }
}

/// # Safety
/// `a` must be an arena record.
unsafe fn set_arena_len(a: usize, len: usize) {
    // SAFETY: as the caller guarantees.
    unsafe { (link(a) as *mut usize).add(1).write(len) }
}
