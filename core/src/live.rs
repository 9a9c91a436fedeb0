//! The live-block bitmap: one bit per 16-byte granule of a segment, set
//! while the block starting there is handed out.
//!
//! It lives in the segment header, out of reach of the blocks (a guard page
//! separates them, see [`crate::harden::Mitigations::GUARDS`]), and makes
//! three checks exact where in-band metadata can only guess:
//! - a free of a block whose bit is clear is a double free or a free of a
//!   slot that was never handed out;
//! - a free list that offers a block whose bit is set was forged;
//! - a remote double free is caught when the owner collects the list.
//!
//! Only the segment's owner writes the bits (plain, non-atomic words), so
//! remote frees leave them set until the owner collects them. The bits of
//! every free span are clear: whatever frees a block clears its bit, so a
//! recycled segment needs no clearing.

use crate::layout::{MIN_ALIGN, SEGMENT_MASK, SEGMENT_SIZE};

/// Words of the bitmap of one segment.
pub const LIVE_WORDS: usize = SEGMENT_SIZE / MIN_ALIGN / 64;

/// The bitmap of one segment.
#[repr(C)]
pub struct LiveMap {
    words: [u64; LIVE_WORDS],
}

/// The word index and bit of the block at `addr` (any address in the
/// segment; only 16-aligned ones are block starts).
#[inline(always)]
fn position(addr: usize) -> (usize, u64) {
    const GRANULE_SHIFT: u32 = MIN_ALIGN.trailing_zeros();
    let word = (addr & SEGMENT_MASK) >> (GRANULE_SHIFT + 6);
    // `wrapping_shl` takes the shift modulo 64, as the hardware does, so
    // the granule's low six bits need no mask.
    (word, 1u64.wrapping_shl((addr >> GRANULE_SHIFT) as u32))
}

/// A segment's bitmap as the fast paths address it: the address such that
/// the bit of the block at `addr` is bit `addr / 16` counted from it (see
/// [`LiveMap::biased_base`]). Kept in each slab's descriptor, so a fast path
/// finds the bit with one load and a shift, with no segment arithmetic.
pub type BiasedBase = usize;

/// Sets (`SET`) or clears bit `bit` of the bit string at `base` and
/// returns its old value: on x86-64 one `bts`/`btr` whose register bit
/// offset addresses any bit of the string (the word index, mask, load,
/// test and store in one instruction), with the jump on the old bit
/// inside the `asm!`, so a caller's test of the result folds into it.
///
/// # Safety
/// The quadword `base + 8 * (bit / 64)` is a bitmap word that nothing
/// else reads or writes meanwhile.
#[inline(always)]
unsafe fn bit_string_op<const SET: bool>(base: usize, bit: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract: the instruction touches exactly that
    // quadword; the jump reads the old bit (the carry flag).
    unsafe {
        if SET {
            core::arch::asm!(
                "bts qword ptr [{base}], {bit}",
                "jc {was_set}",
                base = in(reg) base,
                bit = in(reg) bit,
                was_set = label { return true; },
                options(nostack),
            );
            false
        } else {
            // Jumps on the rare outcome (the bit was clear: misuse), so the
            // free path goes on without a jump.
            core::arch::asm!(
                "btr qword ptr [{base}], {bit}",
                "jnc {was_clear}",
                base = in(reg) base,
                bit = in(reg) bit,
                was_clear = label { return false; },
                options(nostack),
            );
            true
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above.
    unsafe {
        let word = (base + (bit >> 6) * 8) as *mut u64;
        let mask = 1u64 << (bit & 63);
        let old = *word;
        *word = if SET { old | mask } else { old & !mask };
        old & mask != 0
    }
}

/// Sets (`SET`) or clears the bit of the block at `addr` through a biased
/// base; returns whether it was set before.
///
/// # Safety
/// `base` is [`LiveMap::biased_base`] of a live segment's bitmap, `addr`
/// lies in that segment, and nothing else writes the bitmap meanwhile.
#[inline(always)]
unsafe fn biased_op<const SET: bool>(base: BiasedBase, addr: usize) -> bool {
    const GRANULE_SHIFT: u32 = MIN_ALIGN.trailing_zeros();
    // SAFETY: the caller's contract: bit `addr / 16` from the biased base
    // is the bitmap's bit of `addr` (see `biased_base`).
    unsafe { bit_string_op::<SET>(base, addr >> GRANULE_SHIFT) }
}

/// [`LiveMap::set`] through a biased base: marks the block at `addr`
/// handed out; false (and nothing changed) if it was marked already.
///
/// # Safety
/// `base` is [`LiveMap::biased_base`] of the bitmap of the live segment
/// `addr` lies in, which only the caller writes meanwhile.
#[inline(always)]
pub unsafe fn set_at(base: BiasedBase, addr: usize) -> bool {
    // SAFETY: forwarded.
    !unsafe { biased_op::<true>(base, addr) }
}

/// [`LiveMap::clear`] through a biased base: marks the block at `addr`
/// returned; false (and nothing changed) if it was not marked.
///
/// # Safety
/// As [`set_at`].
#[inline(always)]
pub unsafe fn clear_at(base: BiasedBase, addr: usize) -> bool {
    // SAFETY: forwarded.
    unsafe { biased_op::<false>(base, addr) }
}

impl LiveMap {
    /// The base [`set_at`] and [`clear_at`] take: the bitmap's address
    /// less the segment's first granule index over 8, so that granule
    /// `addr / 16` counts from it. The map must lie in its segment's
    /// header (it does: segments are aligned to their size).
    pub fn biased_base(&self) -> BiasedBase {
        const GRANULE_SHIFT: u32 = MIN_ALIGN.trailing_zeros();
        let words = self.words.as_ptr() as usize;
        let segment = words & !SEGMENT_MASK;
        // Segments are aligned far beyond 128 bytes, so the bias is a
        // multiple of 8 and the base stays aligned to a word.
        words.wrapping_sub(segment >> (GRANULE_SHIFT + 3))
    }

    /// Marks the block at `addr` handed out; false (and nothing changed) if
    /// it already was.
    #[inline(always)]
    pub fn set(&mut self, addr: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            // One bit-string instruction finds, tests and sets the bit.
            !self.bit_op::<true>(addr)
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.set_portable(addr)
    }

    /// [`LiveMap::set`] in plain Rust.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline(always)]
    fn set_portable(&mut self, addr: usize) -> bool {
        let (w, bit) = position(addr);
        // SAFETY: `w < LIVE_WORDS` because the address is masked into the
        // segment.
        let word = unsafe { self.words.get_unchecked_mut(w) };
        // Written unconditionally (a set bit stays as it was), so the
        // compiler can test and set in one instruction.
        let old = *word;
        *word = old | bit;
        old & bit == 0
    }

    /// Marks the block at `addr` free; false (and nothing changed) if it
    /// was not handed out.
    #[inline(always)]
    pub fn clear(&mut self, addr: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.bit_op::<false>(addr)
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.clear_portable(addr)
    }

    /// Sets (`SET`) or clears the bit of the block at `addr` on the bit
    /// string itself, and returns the bit's old value.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn bit_op<const SET: bool>(&mut self, addr: usize) -> bool {
        const GRANULE_SHIFT: u32 = MIN_ALIGN.trailing_zeros();
        let granule = (addr & SEGMENT_MASK) >> GRANULE_SHIFT;
        // SAFETY: `granule < LIVE_WORDS * 64` (the address is masked into
        // the segment), so only `words[granule / 64]` is touched, which
        // `&mut self` lets us change.
        unsafe { bit_string_op::<SET>(self.words.as_mut_ptr() as usize, granule) }
    }

    /// [`LiveMap::clear`] in plain Rust.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline(always)]
    fn clear_portable(&mut self, addr: usize) -> bool {
        let (w, bit) = position(addr);
        // SAFETY: as in `set`.
        let word = unsafe { self.words.get_unchecked_mut(w) };
        // As in `set`: a clear bit stays clear.
        let old = *word;
        *word = old & !bit;
        old & bit != 0
    }

    /// Clears the bits of `[start, end)` (16-aligned, inside the segment):
    /// a span freed as a whole, without its blocks being freed one by one.
    pub fn clear_range(&mut self, start: usize, end: usize) {
        let mut a = start;
        while a < end {
            let (w, bit) = position(a);
            if bit == 1 && end - a >= 64 * MIN_ALIGN {
                // A whole word at once.
                self.words[w] = 0;
                a += 64 * MIN_ALIGN;
            } else {
                self.words[w] &= !bit;
                a += MIN_ALIGN;
            }
        }
    }

    /// Clears every bit (memory of unknown contents becoming a segment).
    pub fn clear_all(&mut self) {
        self.words.fill(0);
    }

    /// Whether the block at `addr` is handed out.
    #[inline(always)]
    pub fn is_set(&self, addr: usize) -> bool {
        let (w, bit) = position(addr);
        // SAFETY: as in `set`.
        unsafe { *self.words.get_unchecked(w) & bit != 0 }
    }

    /// Whether no bit of `[start, end)` (16-aligned, inside the segment)
    /// is set; used by the self-check.
    pub fn none_in(&self, start: usize, end: usize) -> bool {
        const WORD_SPAN: usize = MIN_ALIGN * 64;
        let mut a = start;
        while a < end {
            // Whole words where the range covers them (free spans are
            // slice-aligned), single bits at the edges.
            if a.is_multiple_of(WORD_SPAN) && end - a >= WORD_SPAN {
                if self.words[position(a).0] != 0 {
                    return false;
                }
                a += WORD_SPAN;
            } else {
                if self.is_set(a) {
                    return false;
                }
                a += MIN_ALIGN;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_track_blocks_independently() {
        let mut m: Box<LiveMap> = Box::new(LiveMap {
            words: [0; LIVE_WORDS],
        });
        let base = 0x7f00_0000_0000usize;
        let a = base + 16 * 63;
        let b = base + 16 * 64;
        let last = base + SEGMENT_SIZE - 16;
        for p in [a, b, last] {
            assert!(!m.is_set(p));
            assert!(m.set(p));
            assert!(!m.set(p), "second set must fail");
        }
        assert!(m.clear(a));
        assert!(!m.clear(a), "second clear must fail");
        // The portable forms agree with the ones in use.
        assert!(!m.set_portable(b) && !m.clear_portable(a));
        assert!(m.clear_portable(b) && m.set(b));
        assert!(m.set_portable(a) && m.clear(a));
        assert!(m.is_set(b) && m.is_set(last));
        assert!(m.none_in(base, base + 16 * 64));
        assert!(!m.none_in(base, base + 16 * 65));
        // Ranges clear whole words and partial ones.
        for i in 3..300 {
            m.set(base + 16 * i);
        }
        m.clear_range(base + 16 * 10, base + 16 * 200);
        assert!(m.none_in(base + 16 * 10, base + 16 * 200));
        assert!(m.is_set(base + 16 * 9) && m.is_set(base + 16 * 200));
    }

    /// The fast paths' biased base reaches the same bits as the map's own
    /// methods, for any block of the segment the map lies in.
    #[test]
    fn biased_base_reaches_the_same_bits() {
        let mut m: Box<LiveMap> = Box::new(LiveMap {
            words: [0; LIVE_WORDS],
        });
        let seg = m.words.as_ptr() as usize & !SEGMENT_MASK;
        let base = m.biased_base();
        assert_eq!(base % 8, 0);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = match i {
                0 => seg,
                1 => seg + SEGMENT_SIZE - MIN_ALIGN,
                _ => seg + (x as usize % SEGMENT_SIZE) / MIN_ALIGN * MIN_ALIGN,
            };
            let was = m.is_set(addr);
            // SAFETY: `base` is this map's biased base, `addr` lies in its
            // segment, and only this test writes the map.
            unsafe {
                if i % 2 == 0 {
                    assert_eq!(set_at(base, addr), !was);
                    assert!(m.is_set(addr));
                    assert!(!set_at(base, addr), "second set must fail");
                    assert!(m.clear(addr));
                    assert!(!clear_at(base, addr), "cleared through the map");
                } else {
                    assert!(m.set(addr) != was);
                    assert!(clear_at(base, addr));
                    assert!(!m.is_set(addr));
                }
            }
        }
        assert!(m.none_in(seg, seg + SEGMENT_SIZE));
    }
}
