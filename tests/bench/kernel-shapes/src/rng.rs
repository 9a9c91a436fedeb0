//! A small seeded generator (wyrand), so every allocator sees exactly the
//! same sequence of actions for a given trial and thread.

/// wyrand: one 64-bit state, one multiply per number.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `lo..hi` (`lo < hi`); the multiply-shift bias is far below
    /// anything a benchmark could notice.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi - lo) as u64;
        lo + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as usize
    }

    /// The request size of both shapes: a cap uniform in `16..max`, then a
    /// size uniform in `4..cap`, which leans towards small sizes.
    pub fn size(&mut self, max: usize) -> usize {
        let cap = self.range(16, max);
        self.range(4, cap)
    }

    /// The alignment of both shapes: pointer alignment three times in four,
    /// twice that about one time in five, and so on up to 2 KiB (each step
    /// is two more trailing zero bits of a random 16-bit number).
    pub fn align(&mut self) -> usize {
        let bits = self.next_u64() as u16;
        8 << (bits.trailing_zeros() / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let mut aligns = [0usize; 9];
        for _ in 0..100_000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let s = a.size(1000);
            assert!((4..1000).contains(&s), "{s}");
            let al = a.align();
            assert!(al.is_power_of_two() && (8..=2048).contains(&al));
            aligns[al.trailing_zeros() as usize - 3] += 1;
            b.size(1000);
            b.align();
        }
        // About 75% pointer alignment, about 19% twice that.
        assert!((70_000..80_000).contains(&aligns[0]), "{aligns:?}");
        assert!((15_000..23_000).contains(&aligns[1]), "{aligns:?}");
    }
}
