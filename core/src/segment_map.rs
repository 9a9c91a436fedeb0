//! A bitmap of every segment this allocator owns, so `free` can tell its own
//! pointers from foreign ones (memory from another allocator, the stack, a
//! static) before reading any header.
//!
//! One bit per segment-sized unit of a 48-bit address space; the bitmap is a
//! zero-initialised static, so only the parts that are used ever become
//! resident.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::layout::SEGMENT_SHIFT;

const ADDRESS_BITS: usize = 48;
const UNITS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);
const WORDS: usize = UNITS / 64;

static MAP: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

#[inline(always)]
fn slot(base: usize) -> Option<(&'static AtomicU64, u64)> {
    let unit = base >> SEGMENT_SHIFT;
    MAP.get(unit / 64).map(|w| (w, 1u64 << (unit % 64)))
}

/// Records that the segment at `base` belongs to the allocator.
pub fn insert(base: usize) {
    if let Some((w, bit)) = slot(base) {
        w.fetch_or(bit, Ordering::Release);
    }
}

/// Forgets the segment at `base` (before its memory is released).
pub fn remove(base: usize) {
    if let Some((w, bit)) = slot(base) {
        w.fetch_and(!bit, Ordering::Release);
    }
}

/// Whether `base` is the start of a segment the allocator owns.
#[inline(always)]
pub fn contains(base: usize) -> bool {
    match slot(base) {
        Some((w, bit)) => w.load(Ordering::Relaxed) & bit != 0,
        None => false,
    }
}
