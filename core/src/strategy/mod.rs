//! The strategy lab: the textbook allocators, self-contained, over a
//! [`Source`] of memory.
//!
//! None of this shares code or state with the default engine (the
//! segments, slabs and heaps of the rest of the crate): it is a second,
//! simpler family of allocators, for learning how they trade speed for
//! fragmentation and for code that wants a small predictable heap.
//!
//! - [`freelist`]: one free list searched first-fit, next-fit, best-fit or
//!   worst-fit, or segregated lists (size bins with a bitmap); blocks carry
//!   boundary tags (header and footer), are split with a minimum remainder
//!   and coalesced with both neighbours in O(1) on free;
//! - [`buddy`]: power-of-two blocks, split on allocation and merged with
//!   their buddy on free;
//! - [`classic`]: one of those engines behind one interface, with aligned
//!   allocation, `realloc`, statistics, a heap dump and `verify`;
//! - [`pool`]: a fixed-size typed [`pool::Pool`] and a slab object cache.
//!
//! # The tag convention
//! Every block an engine hands out is preceded by a 16-byte tag, two
//! words: `info` (the engine's size or order) and a check word, a keyed
//! mix of the tag's address, `info` and the block's state ([`State`]).
//! A tag is valid only at its own address with its own contents, so a
//! stray pointer, a stale copy or an overwritten size fails the check.
//! Every operation checks the tags it touches: a free block freed again
//! is a double free, anything else that fails is an invalid free or a
//! corrupted tag, each reported with the project's fatal line.

use core::fmt::Write as _;
use core::ptr::NonNull;

use crate::fatal::LineBuf;
use crate::provider::{Capabilities, PageProvider, PAGE_SIZE};

pub mod buddy;
pub mod classic;
pub mod freelist;
pub mod pool;

/// Alignment of every block (and of every tag).
pub const ALIGN: usize = 16;
/// Bytes of a tag.
pub const TAG: usize = 16;

/// Where an engine's memory comes from: the program break, mappings, a
/// page provider, a static array.
///
/// # Safety
/// Implementors promise that `grow` returns `None` or a range of `len`
/// bytes (a multiple of [`PAGE_SIZE`], at least the `min` asked for) starting
/// at an address aligned to `align`, readable and writable, overlapping no
/// other live range, valid until given back by `shrink`; that `shrink`
/// gives back only what it reports; and that no method allocates through
/// the engine being served.
pub unsafe trait Source {
    /// At least `min` bytes aligned to `align` (a power of two, at most the
    /// source's page-aligned reservations allow).
    fn grow(&mut self, min: usize, align: usize) -> Option<(NonNull<u8>, usize)>;

    /// Gives back `[ptr, ptr+len)`, the end of the last range `grow`
    /// returned; false (and nothing changed) when the source cannot.
    ///
    /// # Safety
    /// The range must be the tail of memory obtained from `grow`, page
    /// aligned, and nothing may access it afterwards.
    unsafe fn shrink(&mut self, _ptr: NonNull<u8>, _len: usize) -> bool {
        false
    }

    /// Ends the process after detected heap misuse (one line, no newline).
    fn fatal(&self, msg: &str) -> !;
}

/// A [`Source`] over a [`PageProvider`]: each growth is a reservation of
/// its own (at least `chunk` bytes), never given back.
pub struct ProviderSource {
    provider: &'static dyn PageProvider,
    chunk: usize,
}

impl ProviderSource {
    /// Grows in reservations of at least `chunk` bytes.
    pub const fn new(provider: &'static dyn PageProvider, chunk: usize) -> Self {
        ProviderSource { provider, chunk }
    }
}

// SAFETY: ranges are whole reservations of the provider, page multiples
// aligned as asked; they are never released, so they stay valid.
unsafe impl Source for ProviderSource {
    fn grow(&mut self, min: usize, align: usize) -> Option<(NonNull<u8>, usize)> {
        let len = min.max(self.chunk).checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
        let p = self.provider.reserve(len, align.max(PAGE_SIZE))?;
        if !self
            .provider
            .capabilities()
            .contains(Capabilities::LAZY_COMMIT)
        {
            // SAFETY: the whole fresh reservation.
            if !unsafe { self.provider.commit(p, len) } {
                // SAFETY: exactly the range just reserved, never used.
                unsafe { self.provider.release(p, len) };
                return None;
            }
        }
        Some((p, len))
    }

    fn fatal(&self, msg: &str) -> ! {
        self.provider.fatal(msg)
    }
}

/// The state a tag records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum State {
    /// A block handed out.
    Used = 0x75,
    /// A free block.
    Free = 0xf2,
    /// An engine's own marker (prologue, epilogue, arena record).
    Fence = 0xfe,
    /// The tag in front of an over-aligned block: `info` is the distance
    /// back to the block that holds it.
    Shim = 0x5e,
    /// A block with a mapping of its own (the hosted frontend's).
    Mapped = 0xa9,
}

const KEY: usize = 0x9e37_79b9_7f4a_7c15;

/// The check word of a tag at `addr` holding `info` in `state`.
#[inline]
pub fn check_word(addr: usize, info: usize, state: State) -> usize {
    let x = (addr ^ KEY).wrapping_mul(0xff51_afd7_ed55_8ccd) ^ info.rotate_left(29);
    x.wrapping_add(state as usize).rotate_left(17) ^ (state as usize) << 56
}

/// Writes a tag at `addr`.
///
/// # Safety
/// `addr` must be 8-byte aligned and valid for writing 16 bytes.
#[inline]
pub unsafe fn write_tag(addr: usize, info: usize, state: State) {
    let p = addr as *mut usize;
    // SAFETY: the caller guarantees 16 writable bytes.
    unsafe {
        p.write(info);
        p.add(1).write(check_word(addr, info, state));
    }
}

/// Reads the tag at `addr`: its `info` and the state whose check word it
/// carries (`None`: none of them, a corrupted or foreign tag).
///
/// # Safety
/// `addr` must be 8-byte aligned and valid for reading 16 bytes.
#[inline]
pub unsafe fn read_tag(addr: usize) -> (usize, Option<State>) {
    let p = addr as *const usize;
    // SAFETY: the caller guarantees 16 readable bytes.
    let (info, check) = unsafe { (p.read(), p.add(1).read()) };
    let state = [
        State::Used,
        State::Free,
        State::Fence,
        State::Shim,
        State::Mapped,
    ]
    .into_iter()
    .find(|&s| check_word(addr, info, s) == check);
    (info, state)
}

/// What a check found wrong; the text is part of the fatal line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A block was freed while already free.
    DoubleFree,
    /// `free` or `realloc` of an address that is not a live block start.
    InvalidFree,
    /// A tag fails its check, or header and footer disagree.
    TagCorruption,
    /// A free list is inconsistent with the blocks.
    FreeListCorruption,
}

impl Fault {
    /// The fixed words of the fatal line.
    pub const fn text(self) -> &'static str {
        match self {
            Fault::DoubleFree => "double free",
            Fault::InvalidFree => "invalid free",
            Fault::TagCorruption => "boundary tag corruption",
            Fault::FreeListCorruption => "free-list corruption",
        }
    }
}

/// A fault found by `verify`, with the address of the tag or block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    pub fault: Fault,
    pub addr: usize,
}

/// Reports `fault` at `addr` through the source's `fatal`, in the
/// project's one-line format.
#[cold]
#[inline(never)]
pub fn report(source: &dyn Source, fault: Fault, addr: usize) -> ! {
    let mut line = LineBuf::new();
    let _ = write!(
        line,
        "apexalloc: fatal: {} (pointer {:#x})",
        fault.text(),
        addr
    );
    source.fatal(line.as_str())
}

/// One block of a heap dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Address of the block (its tag).
    pub addr: usize,
    /// Bytes of the block, tags included.
    pub size: usize,
    /// Whether the block is free.
    pub free: bool,
}

/// What `verify` counted on its walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Blocks in use and their bytes (tags included).
    pub used_blocks: usize,
    pub used_bytes: usize,
    /// Free blocks and their bytes (tags included).
    pub free_blocks: usize,
    pub free_bytes: usize,
    /// Bytes obtained from the source and still held.
    pub footprint: usize,
}

/// `x` rounded up to `a` (a power of two); `None` on overflow.
#[inline]
pub const fn align_up(x: usize, a: usize) -> Option<usize> {
    match x.checked_add(a - 1) {
        Some(v) => Some(v & !(a - 1)),
        None => None,
    }
}
