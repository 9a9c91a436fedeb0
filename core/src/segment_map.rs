//! A map of every segment this allocator owns, so `free` can tell its own
//! pointers from foreign ones (memory from another allocator, the stack, a
//! static) before reading any header.
//!
//! One entry per segment-sized unit of a 48-bit address space, in a
//! zero-initialised static, so only the parts that are used ever become
//! resident. With 32 MiB segments an entry is a byte (8 MiB of address
//! space, tested with one compare on the free fast path); with the 4 MiB
//! segments of kernels it is a bit (8 MiB instead of 64 MiB, which a kernel
//! image's bss must really back).

use core::sync::atomic::Ordering;

use crate::layout::SEGMENT_SHIFT;

const ADDRESS_BITS: usize = 48;
const UNITS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

#[cfg(not(feature = "small-segments"))]
mod imp {
    use super::*;
    use core::sync::atomic::AtomicU8;

    static MAP: [AtomicU8; UNITS] = [const { AtomicU8::new(0) }; UNITS];

    #[inline(always)]
    pub fn slot(base: usize) -> Option<&'static AtomicU8> {
        MAP.get(base >> SEGMENT_SHIFT)
    }

    pub fn insert(base: usize) {
        if let Some(e) = slot(base) {
            e.store(1, Ordering::Release);
        }
    }

    pub fn remove(base: usize) {
        if let Some(e) = slot(base) {
            e.store(0, Ordering::Release);
        }
    }

    #[inline(always)]
    pub fn contains(base: usize) -> bool {
        match slot(base) {
            Some(e) => e.load(Ordering::Relaxed) != 0,
            None => false,
        }
    }
}

#[cfg(feature = "small-segments")]
mod imp {
    use super::*;
    use core::sync::atomic::AtomicU64;

    static MAP: [AtomicU64; UNITS / 64] = [const { AtomicU64::new(0) }; UNITS / 64];

    #[inline(always)]
    fn slot(base: usize) -> Option<(&'static AtomicU64, u64)> {
        let unit = base >> SEGMENT_SHIFT;
        MAP.get(unit / 64).map(|w| (w, 1u64 << (unit % 64)))
    }

    pub fn insert(base: usize) {
        if let Some((w, bit)) = slot(base) {
            w.fetch_or(bit, Ordering::Release);
        }
    }

    pub fn remove(base: usize) {
        if let Some((w, bit)) = slot(base) {
            w.fetch_and(!bit, Ordering::Release);
        }
    }

    #[inline(always)]
    pub fn contains(base: usize) -> bool {
        match slot(base) {
            Some((w, bit)) => w.load(Ordering::Relaxed) & bit != 0,
            None => false,
        }
    }
}

/// Records that the segment at `base` belongs to the allocator.
pub fn insert(base: usize) {
    imp::insert(base)
}

/// Forgets the segment at `base` (before its memory is released).
pub fn remove(base: usize) {
    imp::remove(base)
}

/// Whether `base` is the start of a segment the allocator owns.
#[inline(always)]
pub fn contains(base: usize) -> bool {
    imp::contains(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::SEGMENT_SIZE;

    #[test]
    fn insert_contains_remove() {
        // An address range no test allocates from.
        let base = 0x7e00_0000_0000usize & !(SEGMENT_SIZE - 1);
        assert!(!contains(base));
        insert(base);
        assert!(contains(base));
        assert!(!contains(base + SEGMENT_SIZE));
        assert!(!contains(base - SEGMENT_SIZE));
        remove(base);
        assert!(!contains(base));
        // Beyond 48 bits: never ours, never an out-of-bounds read.
        assert!(!contains(1usize << 50));
        assert!(!contains(usize::MAX & !(SEGMENT_SIZE - 1)));
    }
}
