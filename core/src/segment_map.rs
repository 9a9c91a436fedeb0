//! A map of every segment this allocator owns, so `free` can tell its own
//! pointers from foreign ones (memory from another allocator, the stack, a
//! static) before reading any header.
//!
//! One entry per segment-sized unit of a 48-bit address space, in a
//! zero-initialised static, so only the parts that are used ever become
//! resident. Addresses are taken modulo 2^48, so x86_64's canonical upper
//! half (where kernels keep their heaps) has entries too; only
//! non-canonical garbage aliases, which no caller can hold a real pointer
//! to. With 32 MiB segments an entry is a word naming the owning heap (64
//! MiB of address space, of which one page per 16 GiB of segments is ever
//! touched), so the free fast path tells "a block of one of my segments"
//! from everything else with one load and one compare; with the 4 MiB
//! segments of kernels it is a bit (8 MiB instead of 64 MiB for bytes,
//! which a kernel image's bss must really back), and the owner is read
//! from the segment header.

use core::sync::atomic::Ordering;

use crate::layout::SEGMENT_SHIFT;

const ADDRESS_BITS: usize = 48;
const UNITS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

/// The map entry of the segment at `base`: its unit number modulo 2^48.
#[inline(always)]
fn unit(base: usize) -> usize {
    (base >> SEGMENT_SHIFT) & (UNITS - 1)
}

#[cfg(not(feature = "small-segments"))]
mod imp {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    /// An entry is [`FREED_HUGE`], [`UNOWNED`] or the owning heap's
    /// address (every heap record lies far above the two marks), so the
    /// free fast path asks "a segment of mine?" with one load and one
    /// compare, before it reads any header.
    static MAP: [AtomicUsize; UNITS] = [const { AtomicUsize::new(0) }; UNITS];

    #[inline(always)]
    fn slot(base: usize) -> &'static AtomicUsize {
        &MAP[unit(base)]
    }

    const FREED_HUGE: usize = 1;
    /// A live segment no heap owns (cached, abandoned or huge).
    const UNOWNED: usize = 2;

    pub fn insert(base: usize) {
        slot(base).store(UNOWNED, Ordering::Release);
    }

    pub fn set_owner(base: usize, owner: usize) {
        debug_assert!(owner == 0 || owner > UNOWNED);
        slot(base).store(owner.max(UNOWNED), Ordering::Release);
    }

    pub fn remove(base: usize) {
        slot(base).store(0, Ordering::Release);
    }

    pub fn remove_huge(base: usize) {
        slot(base).store(FREED_HUGE, Ordering::Release);
    }

    #[inline(always)]
    pub fn contains(base: usize) -> bool {
        slot(base).load(Ordering::Relaxed) >= UNOWNED
    }

    #[inline(always)]
    pub fn owned_by(base: usize, owner: usize) -> bool {
        slot(base).load(Ordering::Relaxed) == owner
    }

    pub fn was_huge(base: usize) -> bool {
        slot(base).load(Ordering::Relaxed) == FREED_HUGE
    }
}

#[cfg(feature = "small-segments")]
mod imp {
    use super::*;
    use core::sync::atomic::AtomicU64;

    static MAP: [AtomicU64; UNITS / 64] = [const { AtomicU64::new(0) }; UNITS / 64];

    #[inline(always)]
    fn slot(base: usize) -> (&'static AtomicU64, u64) {
        let unit = unit(base);
        (&MAP[unit / 64], 1u64 << (unit % 64))
    }

    pub fn insert(base: usize) {
        let (w, bit) = slot(base);
        w.fetch_or(bit, Ordering::Release);
    }

    pub fn remove(base: usize) {
        let (w, bit) = slot(base);
        w.fetch_and(!bit, Ordering::Release);
    }

    #[inline(always)]
    pub fn contains(base: usize) -> bool {
        let (w, bit) = slot(base);
        w.load(Ordering::Relaxed) & bit != 0
    }

    // The owner lives in the segment header only (a bit has no room).
    pub fn set_owner(_base: usize, _owner: usize) {}

    // One bit per unit has no room for the freed-huge mark: kernels tell a
    // huge block freed twice from a foreign pointer only by the pointer.
    pub fn remove_huge(base: usize) {
        remove(base)
    }

    pub fn was_huge(_base: usize) -> bool {
        false
    }
}

/// Records that the segment at `base` belongs to the allocator. The topmost
/// unit (where `segment_base_of(null)` points) must never be a segment.
pub fn insert(base: usize) {
    debug_assert_ne!(unit(base), unit(crate::layout::segment_base_of(0)));
    imp::insert(base)
}

/// Forgets the segment at `base` (before its memory is released).
pub fn remove(base: usize) {
    imp::remove(base)
}

/// Forgets the huge segment at `base`, remembering (where the map has room)
/// that a huge block was freed there until the unit is used again.
pub fn remove_huge(base: usize) {
    imp::remove_huge(base)
}

/// Whether the unit at `base` last held a huge block that was freed.
pub fn was_huge(base: usize) -> bool {
    imp::was_huge(base)
}

/// Whether `base` is the start of a segment the allocator owns.
#[inline(always)]
pub fn contains(base: usize) -> bool {
    imp::contains(base)
}

/// Records that the heap at address `owner` (0: none) now owns the live
/// segment at `base`. Only the segment's holder calls this, alongside the
/// header's owner word (`Segment::set_owner` writes both).
pub fn set_owner(base: usize, owner: usize) {
    imp::set_owner(base, owner)
}

/// Whether `base` is a live segment owned by the heap at address `owner`
/// (one load and compare). An `owner` no heap has (0, or an address that
/// is no heap's) is never reported as owning anything. Only the map of 32
/// MiB segments keeps owners; see `segment::owned_by`.
#[cfg(not(feature = "small-segments"))]
#[inline(always)]
pub fn owned_by(base: usize, owner: usize) -> bool {
    imp::owned_by(base, owner)
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
        // The canonical upper half has entries of its own.
        let high = 0xffff_c000_0000_0000usize;
        assert!(!contains(high));
        insert(high);
        assert!(contains(high));
        assert!(!contains(high - SEGMENT_SIZE));
        remove(high);
        assert!(!contains(high));
        // Null (whose segment base is the top of the address space) is not
        // in the map.
        assert!(!contains(crate::layout::segment_base_of(0)));
    }

    /// The map mirrors owners: only the owner set last is reported, a
    /// segment given up is still the allocator's, and nothing outlives
    /// `remove` (a heap record reused later must not find its old
    /// segments).
    #[cfg(not(feature = "small-segments"))]
    #[test]
    fn owners_are_mirrored() {
        let base = 0x7d00_0000_0000usize & !(SEGMENT_SIZE - 1);
        let (heap_a, heap_b) = (0x5555_0000_1000usize, 0x5555_0000_2000usize);
        insert(base);
        assert!(contains(base));
        assert!(!owned_by(base, heap_a) && !owned_by(base, 0));
        set_owner(base, heap_a);
        assert!(contains(base) && owned_by(base, heap_a));
        assert!(!owned_by(base, heap_b));
        assert!(!owned_by(base + SEGMENT_SIZE, heap_a));
        set_owner(base, 0);
        assert!(contains(base) && !owned_by(base, heap_a) && !owned_by(base, 0));
        set_owner(base, heap_b);
        assert!(owned_by(base, heap_b) && !owned_by(base, heap_a));
        remove(base);
        assert!(!contains(base) && !owned_by(base, heap_b));
        remove_huge(base);
        assert!(!contains(base) && was_huge(base) && !owned_by(base, heap_b));
        remove(base);
        assert!(!was_huge(base));
    }
}
