//! Size classes: which block size serves a request, computed in O(1).
//!
//! Classes are multiples of 16 up to 128 bytes, then eight classes per power
//! of two, so rounding never wastes more than 12.5% above 128 bytes. Every
//! class is a multiple of 16 (the minimum alignment), and every power of two
//! is a class, which lets aligned requests pick a class whose blocks are all
//! naturally aligned.

use crate::layout::{MAX_CLASS_SIZE, SLICE_SIZE};

/// Classes of the first group: multiples of 16 up to 128 bytes.
const SMALL_CLASSES: usize = 8;
/// Classes per power of two above 128 bytes (so rounding wastes at most
/// 1/8).
const CLASSES_PER_DOUBLING: usize = 8;
/// log2 of the first and of the last power of two spanned by the groups of
/// eight: 128 bytes to 512 KiB (`MAX_CLASS_SIZE`).
const FIRST_DOUBLING: usize = 7;
const LAST_DOUBLING: usize = 19;

/// Number of size classes.
pub const NUM_CLASSES: usize =
    SMALL_CLASSES + (LAST_DOUBLING - FIRST_DOUBLING) * CLASSES_PER_DOUBLING;

// The last class is exactly the largest block a slab holds.
const _: () = assert!(1 << LAST_DOUBLING == MAX_CLASS_SIZE);

/// The block size of class `c`.
pub const fn class_size(c: usize) -> usize {
    if c < 8 {
        (c + 1) * 16
    } else {
        let k = 7 + (c - 8) / 8;
        let m = (c - 8) % 8;
        (1 << k) + (m + 1) * (1 << (k - 3))
    }
}

/// The class serving a request of `size` bytes (`size <= MAX_CLASS_SIZE`).
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    if size <= SMALL_LOOKUP_MAX {
        SMALL_LOOKUP[(size + 15) >> 4] as usize
    } else if size <= MEDIUM_LOOKUP_MAX {
        // SAFETY: `(size - 1) >> 7 < MEDIUM_LOOKUP.len()` for these sizes.
        unsafe { *MEDIUM_LOOKUP.get_unchecked((size - 1) >> MEDIUM_SHIFT) as usize }
    } else {
        class_of_large(size)
    }
}

#[inline(always)]
const fn class_of_large(size: usize) -> usize {
    let s = size - 1;
    let k = (usize::BITS - 1 - s.leading_zeros()) as usize;
    8 + (k - 7) * 8 + ((s >> (k - 3)) & 7)
}

const fn class_of_const(size: usize) -> usize {
    if size <= 128 {
        if size == 0 {
            0
        } else {
            size.div_ceil(16) - 1
        }
    } else {
        class_of_large(size)
    }
}

const SMALL_LOOKUP_MAX: usize = 1024;
/// Class by `(size + 15) / 16` for small sizes: one load on the fast path.
static SMALL_LOOKUP: [u8; SMALL_LOOKUP_MAX / 16 + 1] = {
    let mut t = [0u8; SMALL_LOOKUP_MAX / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = class_of_const(i * 16) as u8;
        i += 1;
    }
    t
};

/// Above `SMALL_LOOKUP_MAX`, classes are `1/8` of a power of two apart,
/// so up to 64 KiB every class boundary is a multiple of 128 bytes: the
/// class is one load by `(size - 1) / 128` (no bit scan, no shifts by a
/// variable amount), for the sizes programs ask for most above 1 KiB.
const MEDIUM_LOOKUP_MAX: usize = 64 * 1024;
const MEDIUM_SHIFT: u32 = 7;
static MEDIUM_LOOKUP: [u8; MEDIUM_LOOKUP_MAX >> MEDIUM_SHIFT] = {
    let mut t = [0u8; MEDIUM_LOOKUP_MAX >> MEDIUM_SHIFT];
    let mut i = SMALL_LOOKUP_MAX >> MEDIUM_SHIFT;
    while i < t.len() {
        // The sizes `(i << 7) + 1 ..= (i + 1) << 7` share a class: the
        // boundaries in this range are multiples of 128.
        t[i] = class_of_large((i << MEDIUM_SHIFT) + 1) as u8;
        assert!(class_of_large((i + 1) << MEDIUM_SHIFT) == t[i] as usize);
        i += 1;
    }
    t
};

/// Requests up to this size find their page through a heap's direct table,
/// indexed by [`direct_index`], with no class lookup.
pub const DIRECT_MAX: usize = SMALL_LOOKUP_MAX;
/// Entries of the direct table.
pub const DIRECT_SLOTS: usize = SMALL_LOOKUP_MAX / 16 + 1;
/// Classes served through the direct table (every class up to `DIRECT_MAX`).
pub const DIRECT_CLASSES: usize = class_of_const(DIRECT_MAX) + 1;

/// The direct-table slot of a request of `size <= DIRECT_MAX` bytes.
#[inline(always)]
pub const fn direct_index(size: usize) -> usize {
    (size + 15) >> 4
}

/// The direct-table slots `[first, last]` that map to class `c`
/// (`c < DIRECT_CLASSES`): the slots whose entry is the class's first page.
pub fn direct_slots(c: usize) -> (usize, usize) {
    let (first, last) = DIRECT_RANGES[c];
    (first as usize, last as usize)
}

static DIRECT_RANGES: [(u8, u8); DIRECT_CLASSES] = {
    let mut t = [(u8::MAX, 0u8); DIRECT_CLASSES];
    let mut i = 0;
    while i < DIRECT_SLOTS {
        let c = SMALL_LOOKUP[i] as usize;
        if t[c].0 == u8::MAX {
            t[c].0 = i as u8;
        }
        t[c].1 = i as u8;
        i += 1;
    }
    t
};

/// How many slices a slab of class `c` spans: the fewest that hold at least
/// one block while wasting at most 1/8 of the slab at its tail.
pub const fn slab_slices(c: usize) -> usize {
    let bs = class_size(c);
    let mut n = 1;
    loop {
        let len = n * SLICE_SIZE;
        if len >= bs && len % bs <= len / 8 {
            return n;
        }
        n += 1;
    }
}

/// Precomputed facts about each class.
#[derive(Clone, Copy)]
pub struct ClassInfo {
    pub block_size: usize,
    pub slices: usize,
}

/// The class table, built at compile time.
pub static CLASSES: [ClassInfo; NUM_CLASSES] = {
    let mut t = [ClassInfo {
        block_size: 0,
        slices: 0,
    }; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = ClassInfo {
            block_size: class_size(c),
            slices: slab_slices(c),
        };
        c += 1;
    }
    t
};

const _: () = assert!(class_size(NUM_CLASSES - 1) == MAX_CLASS_SIZE);

/// The smallest class whose blocks hold `size` bytes and are all aligned to
/// `align` (a power of two no larger than a slice), if any.
pub fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    let need = crate::layout::align_up(size.max(align), align);
    if need > MAX_CLASS_SIZE || align > SLICE_SIZE {
        return None;
    }
    let c = class_of(need);
    // The smallest multiple of a power-of-two alignment at or above `need`
    // is always a class boundary (see the module docs), but check anyway.
    if class_size(c).is_multiple_of(align) {
        Some(c)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_increasing_multiples_of_16() {
        for c in 0..NUM_CLASSES {
            assert_eq!(class_size(c) % 16, 0);
            if c > 0 {
                assert!(class_size(c) > class_size(c - 1));
            }
        }
    }

    #[test]
    fn every_size_maps_to_the_smallest_fitting_class() {
        for size in 0..=MAX_CLASS_SIZE {
            let c = class_of(size);
            assert!(class_size(c) >= size, "size {size}");
            if c > 0 {
                assert!(class_size(c - 1) < size.max(1), "size {size} class {c}");
            }
        }
    }

    #[test]
    fn rounding_waste_is_bounded() {
        for size in 129..=MAX_CLASS_SIZE {
            let bs = class_size(class_of(size));
            assert!((bs - size) * 8 <= size, "size {size} -> {bs}");
        }
    }

    #[test]
    fn powers_of_two_are_classes_and_aligned_lookup_works() {
        let mut p = 16;
        while p <= MAX_CLASS_SIZE {
            assert_eq!(class_size(class_of(p)), p);
            p *= 2;
        }
        for align in [16, 32, 64, 128, 256, 4096, 65536] {
            for size in [1, 17, 100, 1000, 5000, 70000] {
                if let Some(c) = class_for_aligned(size, align) {
                    assert_eq!(class_size(c) % align, 0);
                    assert!(class_size(c) >= size);
                    assert!(class_size(c) <= size + align + size / 8);
                }
            }
        }
    }

    #[test]
    fn direct_slots_cover_exactly_their_class() {
        for size in 0..=DIRECT_MAX {
            let c = class_of(size);
            assert!(c < DIRECT_CLASSES);
            let (first, last) = direct_slots(c);
            assert!((first..=last).contains(&direct_index(size)), "size {size}");
        }
        for c in 0..DIRECT_CLASSES {
            let (first, last) = direct_slots(c);
            for i in first..=last {
                assert_eq!(class_of(i * 16), c);
            }
        }
    }

    #[test]
    fn slabs_fit_blocks_with_small_tail_waste() {
        for c in 0..NUM_CLASSES {
            let len = slab_slices(c) * SLICE_SIZE;
            let bs = class_size(c);
            assert!(len >= bs);
            assert!(len % bs <= len / 8);
        }
    }
}
