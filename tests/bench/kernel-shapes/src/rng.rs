//! Tests of the workloads' seeded generator ([`crate::workload::Rng`]).

#[cfg(test)]
mod tests {
    use crate::workload::Rng;

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
