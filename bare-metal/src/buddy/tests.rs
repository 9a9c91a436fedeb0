extern crate std;

use super::*;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const MIB: usize = 1 << 20;

/// Host memory with a start aligned to `align`: over-allocate, then skip
/// to the first aligned byte. `vec![0; n]` maps lazily, so untouched pages
/// cost nothing.
struct HostMem {
    _buf: Vec<u8>,
    base: usize,
}

impl HostMem {
    fn new(len: usize, align: usize) -> Self {
        let buf = vec![0u8; len + align];
        let base = (buf.as_ptr() as usize).next_multiple_of(align);
        HostMem { _buf: buf, base }
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn counts(b: &Buddy) -> [usize; ORDERS] {
    core::array::from_fn(|k| b.free_blocks(k))
}

#[test]
fn order_helpers() {
    assert_eq!(order_for_len(0), Some(0));
    assert_eq!(order_for_len(1), Some(0));
    assert_eq!(order_for_len(PAGE_SIZE), Some(0));
    assert_eq!(order_for_len(PAGE_SIZE + 1), Some(1));
    assert_eq!(order_for_len(3 * PAGE_SIZE), Some(2));
    assert_eq!(order_for_len(64 * MIB), Some(MAX_ORDER));
    assert_eq!(order_for_len(64 * MIB + 1), None);
    assert_eq!(order_for_align(1), Some(0));
    assert_eq!(order_for_align(PAGE_SIZE), Some(0));
    assert_eq!(order_for_align(2 * MIB), Some(9));
    assert_eq!(order_for_align(64 * MIB), Some(MAX_ORDER));
    assert_eq!(order_for_align(128 * MIB), None);
    assert_eq!(order_for_align(3 * PAGE_SIZE), None);
    assert_eq!(block_size(MAX_ORDER), 64 * MIB);
}

#[test]
fn add_region_carves_aligned_blocks_and_metadata() {
    let mem = HostMem::new(4 * MIB, 4 * MIB);
    let mut b = Buddy::new();
    // 3 pages in, odd length: blocks start at page 4, metadata takes the
    // last page.
    // SAFETY: the range lies in `mem`, which outlives `b`.
    let bytes = unsafe { b.add_region(mem.base + 3 * PAGE_SIZE + 100, 2 * MIB) }.unwrap();
    let (base, end) = b.region(0).unwrap();
    assert_eq!(base, mem.base + 4 * PAGE_SIZE);
    assert_eq!(
        end,
        ((mem.base + 3 * PAGE_SIZE + 100 + 2 * MIB) & !(PAGE_SIZE - 1)) - PAGE_SIZE
    );
    assert_eq!(bytes, end - base);
    assert_eq!(b.free_bytes(), bytes);
    assert_eq!(b.total_bytes(), bytes);
    assert_eq!(b.metadata_bytes(), PAGE_SIZE);
    b.verify().unwrap();
    // Every listed block is naturally aligned and inside the region; together
    // they cover it exactly.
    let mut sum = 0;
    for k in 0..ORDERS {
        sum += b.free_blocks(k) * block_size(k);
    }
    assert_eq!(sum, bytes);
}

#[test]
fn add_region_rejects_bad_ranges() {
    let mem = HostMem::new(MIB, PAGE_SIZE);
    let mut b = Buddy::new();
    // SAFETY: (all calls) the ranges lie in `mem`, which outlives `b`.
    unsafe {
        assert_eq!(
            b.add_region(mem.base, PAGE_SIZE),
            Err(RegionError::TooSmall)
        );
        assert_eq!(
            b.add_region(mem.base + 1, 2 * PAGE_SIZE),
            Err(RegionError::TooSmall)
        );
        assert_eq!(b.add_region(mem.base, 2 * PAGE_SIZE), Ok(PAGE_SIZE));
        assert_eq!(
            b.add_region(mem.base + PAGE_SIZE, 4 * PAGE_SIZE),
            Err(RegionError::Overlap)
        );
        assert_eq!(
            b.add_region(mem.base + 4 * PAGE_SIZE, 4 * PAGE_SIZE),
            Ok(3 * PAGE_SIZE)
        );
        assert_eq!(
            b.add_region(mem.base + 2 * PAGE_SIZE, 2 * PAGE_SIZE),
            Ok(PAGE_SIZE)
        );
        assert_eq!(
            b.add_region(mem.base + 7 * PAGE_SIZE, 4 * PAGE_SIZE),
            Err(RegionError::Overlap)
        );
    }
    assert_eq!(b.region_count(), 3);
    // Sorted by address.
    let starts: Vec<usize> = (0..3).map(|i| b.region(i).unwrap().0).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    b.verify().unwrap();
}

#[test]
fn too_many_regions() {
    let mem = HostMem::new((MAX_REGIONS + 1) * 3 * PAGE_SIZE, PAGE_SIZE);
    let mut b = Buddy::new();
    for i in 0..MAX_REGIONS {
        // SAFETY: disjoint ranges inside `mem`.
        unsafe { b.add_region(mem.base + i * 3 * PAGE_SIZE, 2 * PAGE_SIZE) }.unwrap();
    }
    // SAFETY: as above.
    let err = unsafe { b.add_region(mem.base + MAX_REGIONS * 3 * PAGE_SIZE, 2 * PAGE_SIZE) };
    assert_eq!(err, Err(RegionError::TooManyRegions));
}

#[test]
fn split_and_coalesce() {
    let mem = HostMem::new(3 * MIB, MIB);
    let mut b = Buddy::new();
    // An aligned 1 MiB and one metadata page behind it: the managed part is
    // one order-8 block.
    // SAFETY: the range lies in `mem`, which outlives `b`.
    unsafe { b.add_region(mem.base + MIB, MIB + PAGE_SIZE) }.unwrap();
    let b = &mut b;
    assert_eq!(b.free_blocks(8), 1);
    let initial = counts(b);

    let a0 = b.alloc(0).unwrap();
    assert_eq!(a0, mem.base + MIB);
    // Splitting left one free block at each order 0..8.
    for k in 0..8 {
        assert_eq!(b.free_blocks(k), 1, "order {k}");
    }
    let a1 = b.alloc(0).unwrap();
    assert_eq!(a1, a0 + PAGE_SIZE);
    let a2 = b.alloc(2).unwrap();
    assert_eq!(a2 % block_size(2), 0);
    assert_eq!(b.allocated_order(a2), Some(2));
    assert_eq!(b.allocated_order(a2 + PAGE_SIZE), None);
    b.verify().unwrap();
    // SAFETY: all three were allocated with these orders above.
    unsafe {
        b.free(a1, 0);
        b.free(a2, 2);
        b.free(a0, 0);
    }
    assert_eq!(counts(b), initial);
    assert_eq!(b.free_bytes(), MIB);
    b.verify().unwrap();
}

#[test]
#[should_panic(expected = "not allocated")]
fn double_free_is_caught() {
    let mem = HostMem::new(MIB, PAGE_SIZE);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, MIB) }.unwrap();
    let a = b.alloc(1).unwrap();
    // SAFETY: deliberately wrong on the second call: the check must panic
    // before touching anything.
    unsafe {
        b.free(a, 1);
        b.free(a, 1);
    }
}

#[test]
#[should_panic(expected = "not allocated")]
fn wrong_order_is_caught() {
    let mem = HostMem::new(MIB, PAGE_SIZE);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, MIB) }.unwrap();
    let a = b.alloc(1).unwrap();
    // SAFETY: deliberately wrong: the check must panic before touching anything.
    unsafe { b.free(a, 0) };
}

#[test]
fn aligned_alloc_returns_the_tail() {
    let mem = HostMem::new(8 * MIB, 4 * MIB);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, 8 * MIB) }.unwrap();
    let before = b.free_bytes();
    let a = b.alloc_len(PAGE_SIZE, 4 * MIB).unwrap();
    assert_eq!(a % (4 * MIB), 0);
    assert_eq!(b.allocated_order(a), Some(0));
    assert_eq!(b.free_bytes(), before - PAGE_SIZE);
    let c = b.alloc_len(3 * PAGE_SIZE, PAGE_SIZE).unwrap();
    assert_eq!(b.allocated_order(c), Some(2));
    b.verify().unwrap();
    // SAFETY: both come from alloc_len with these lengths.
    unsafe {
        b.free_len(a, PAGE_SIZE);
        b.free_len(c, 3 * PAGE_SIZE);
    }
    assert_eq!(b.free_bytes(), before);
    assert!(
        b.alloc_len(PAGE_SIZE, 3 * PAGE_SIZE).is_none(),
        "non-power-of-two align"
    );
    assert!(
        b.alloc_len(65 * MIB, PAGE_SIZE).is_none(),
        "above the largest order"
    );
}

#[test]
fn max_order_blocks_and_exhaustion() {
    // 128 MiB aligned to 64 MiB; the metadata pages at the end cost the
    // second 64 MiB block its top order, the first stays whole.
    let mem = HostMem::new(128 * MIB, 64 * MIB);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, 128 * MIB) }.unwrap();
    assert_eq!(b.free_blocks(MAX_ORDER), 1);
    let initial = counts(&b);
    let big = b.alloc(MAX_ORDER).unwrap();
    assert_eq!(big, mem.base);
    assert!(b.alloc(MAX_ORDER).is_none());
    assert!(b.alloc(MAX_ORDER + 1).is_none());

    // Exhaust with order-9 (2 MiB) blocks, then pages.
    let mut got = Vec::new();
    while let Some(a) = b.alloc(9) {
        got.push((a, 9));
    }
    while let Some(a) = b.alloc(0) {
        got.push((a, 0));
    }
    assert_eq!(b.free_bytes(), 0);
    assert!(b.alloc(0).is_none());
    got.push((big, MAX_ORDER));
    for (a, k) in got.into_iter().rev() {
        // SAFETY: every entry was allocated with its order.
        unsafe { b.free(a, k) };
    }
    assert_eq!(counts(&b), initial);
    assert_eq!(b.free_bytes(), b.total_bytes());
    b.verify().unwrap();
}

/// Random alloc/free sequences against a model of live blocks: no overlap,
/// alignment, blocks inside regions, contents untouched by the allocator,
/// exact free-byte accounting, and full coalescing once everything is freed.
#[test]
fn randomized_against_shadow_model() {
    let mem = HostMem::new(40 * MIB, 16 * MIB);
    let regions = [
        // Odd edges so the carving yields blocks of many orders.
        (mem.base + 3 * PAGE_SIZE + 7, 16 * MIB + 5 * PAGE_SIZE),
        (mem.base + 20 * MIB + 2 * PAGE_SIZE, MIB + 12 * PAGE_SIZE),
        (mem.base + 24 * MIB, 8 * MIB),
    ];
    for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 42, 7777] {
        let mut b = Buddy::new();
        for &(s, l) in &regions {
            // SAFETY: disjoint ranges inside `mem`, which outlives `b`.
            unsafe { b.add_region(s, l) }.unwrap();
        }
        let total = b.total_bytes();
        let initial = counts(&b);
        let mut rng = Rng(seed);
        let mut live: BTreeMap<usize, (usize, u64)> = BTreeMap::new();
        let mut used = 0usize;
        for step in 0..20_000 {
            let free_something = !live.is_empty() && (rng.below(100) < 45 || used > total / 2);
            if free_something {
                let nth = rng.below(live.len());
                let (&addr, &(order, tag)) = live.iter().nth(nth).unwrap();
                let size = block_size(order);
                // SAFETY: `addr` is a live block of `size` bytes we tagged.
                unsafe {
                    assert_eq!(ptr::read(addr as *const u64), tag);
                    assert_eq!(ptr::read((addr + size - 8) as *const u64), !tag);
                    b.free(addr, order);
                }
                live.remove(&addr);
                used -= size;
            } else {
                // Mostly small orders, sometimes large, sometimes over-aligned.
                let order = match rng.below(10) {
                    0..=5 => rng.below(3),
                    6..=8 => rng.below(8),
                    _ => rng.below(ORDERS + 1),
                };
                let align_order = if rng.below(8) == 0 { rng.below(12) } else { 0 };
                match b.alloc_aligned(order, align_order) {
                    None => {
                        let want = order.max(align_order);
                        assert!(
                            want > MAX_ORDER || (want..ORDERS).all(|k| b.free_blocks(k) == 0),
                            "alloc failed with a large enough block free"
                        );
                    }
                    Some(addr) => {
                        let size = block_size(order);
                        assert!(order <= MAX_ORDER);
                        assert_eq!(addr % size, 0);
                        assert_eq!(addr % block_size(align_order), 0);
                        assert!(
                            (0..b.region_count()).any(|i| {
                                let (lo, hi) = b.region(i).unwrap();
                                lo <= addr && addr + size <= hi
                            }),
                            "block outside the managed regions"
                        );
                        if let Some((&p, &(po, _))) = live.range(..addr).next_back() {
                            assert!(p + block_size(po) <= addr, "overlaps the block below");
                        }
                        if let Some((&n, _)) = live.range(addr..).next() {
                            assert!(addr + size <= n, "overlaps the block above");
                        }
                        let tag = rng.next();
                        // SAFETY: the block is ours and at least 4 KiB long.
                        unsafe {
                            ptr::write(addr as *mut u64, tag);
                            ptr::write((addr + size - 8) as *mut u64, !tag);
                        }
                        live.insert(addr, (order, tag));
                        used += size;
                    }
                }
            }
            assert_eq!(b.free_bytes(), total - used);
            if step % 1000 == 0 {
                b.verify().unwrap();
            }
        }
        // Free everything in random order.
        let mut rest: Vec<(usize, usize)> = live.iter().map(|(&a, &(o, _))| (a, o)).collect();
        while !rest.is_empty() {
            let (a, o) = rest.swap_remove(rng.below(rest.len()));
            // SAFETY: each entry is a live block of its order.
            unsafe { b.free(a, o) };
        }
        b.verify().unwrap();
        assert_eq!(b.free_bytes(), total);
        assert_eq!(counts(&b), initial, "seed {seed}: did not coalesce back");
    }
}

#[test]
fn long_reservations_give_back_the_tail() {
    let mem = HostMem::new(128 * MIB, 64 * MIB);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, 128 * MIB) }.unwrap();
    let before = b.free_bytes();
    // 40 MiB and a bit: a 64 MiB block, trimmed to the pages asked for.
    let len = 40 * MIB + 3 * PAGE_SIZE + 100;
    let a = b.alloc_len(len, 4 * MIB).unwrap();
    assert_eq!(a % (4 * MIB), 0);
    assert_eq!(b.free_bytes(), before - len.next_multiple_of(PAGE_SIZE));
    assert!(b.is_allocated_len(a, len));
    assert!(
        !b.is_allocated_len(a, 64 * MIB),
        "not reserved with that length"
    );
    assert!(!b.is_allocated_len(a + PAGE_SIZE, len));
    b.verify().unwrap();
    // The tail serves other requests: 20 MiB fit beside it in the block.
    let c = b.alloc_len(20 * MIB, PAGE_SIZE).unwrap();
    assert!(c >= a + len || c + 20 * MIB <= a, "overlap");
    // Small reservations keep their power-of-two block.
    let d = b.alloc_len(5 * PAGE_SIZE, PAGE_SIZE).unwrap();
    assert_eq!(b.allocated_order(d), Some(3));
    assert!(b.is_allocated_len(d, 5 * PAGE_SIZE));
    // SAFETY: each with the length it was reserved with, once.
    unsafe {
        b.free_len(a, len);
        b.free_len(c, 20 * MIB);
        b.free_len(d, 5 * PAGE_SIZE);
    }
    assert_eq!(b.free_bytes(), before, "everything merged back");
    b.verify().unwrap();
    // Merged back into whole blocks: the largest order is there again.
    assert!(b.alloc(MAX_ORDER).is_some());
}

#[test]
fn random_long_reservations_against_a_shadow() {
    let mem = HostMem::new(64 * MIB, 64 * MIB);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, 64 * MIB) }.unwrap();
    let before = b.free_bytes();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    let mut live: Vec<(usize, usize)> = Vec::new();
    for _ in 0..3000 {
        if live.len() < 8 || next() % 2 == 0 {
            let len = 1 + next() % (3 * MIB);
            let align = PAGE_SIZE << (next() % 8);
            if let Some(a) = b.alloc_len(len, align) {
                assert_eq!(a % align, 0);
                for &(o, ol) in &live {
                    assert!(a + len <= o || o + ol <= a, "overlap");
                }
                live.push((a, len));
            }
        } else {
            let (a, len) = live.swap_remove(next() % live.len());
            assert!(b.is_allocated_len(a, len));
            // SAFETY: reserved with this length, freed once.
            unsafe { b.free_len(a, len) };
        }
        let used: usize = live
            .iter()
            .map(|&(_, l)| {
                let pages = l.div_ceil(PAGE_SIZE);
                if pages > TRIM_ABOVE_PAGES {
                    pages * PAGE_SIZE
                } else {
                    pages.next_power_of_two() * PAGE_SIZE
                }
            })
            .sum();
        assert_eq!(b.free_bytes(), before - used);
    }
    b.verify().unwrap();
    for (a, len) in live {
        // SAFETY: as above.
        unsafe { b.free_len(a, len) };
    }
    assert_eq!(b.free_bytes(), before);
    b.verify().unwrap();
}

#[test]
fn reservations_above_the_largest_block_are_runs() {
    // 128 MiB aligned to 64 MiB: all of it but the metadata pages at the end
    // is one run of free blocks.
    let mem = HostMem::new(128 * MIB, 64 * MIB);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, 128 * MIB) }.unwrap();
    let before = b.free_bytes();
    assert!(
        b.alloc_len(before + PAGE_SIZE, 4 * MIB).is_none(),
        "more than there is"
    );
    let len = before - 5 * PAGE_SIZE;
    let a = b.alloc_len(len, 4 * MIB).unwrap();
    assert_eq!(a, mem.base);
    assert!(b.is_allocated_len(a, len));
    assert!(!b.is_allocated_len(a, len - 64 * MIB));
    assert_eq!(b.free_bytes(), 5 * PAGE_SIZE);
    b.verify().unwrap();
    // SAFETY: reserved with this length, freed once.
    unsafe { b.free_len(a, len) };
    assert_eq!(b.free_bytes(), before);
    b.verify().unwrap();

    // With a page in use in the middle, a 100 MiB run must avoid it: it
    // does not fit below the page nor above it, so there is none.
    let page = b.alloc_len(PAGE_SIZE, 64 * MIB).unwrap();
    assert_eq!(page, mem.base);
    // SAFETY: as above.
    unsafe { b.free_len(page, PAGE_SIZE) };
    let low = b.alloc_len(60 * MIB, PAGE_SIZE).unwrap();
    let pin = b.alloc_len(PAGE_SIZE, 4 * MIB).unwrap();
    assert!(pin >= low + 60 * MIB || pin < low);
    // SAFETY: as above.
    unsafe { b.free_len(low, 60 * MIB) };
    assert!(
        b.alloc_len(100 * MIB, 4 * MIB).is_none(),
        "the pinned page splits the range"
    );
    let run = b.alloc_len(65 * MIB, 2 * MIB);
    if let Some(r) = run {
        assert!(r + 65 * MIB <= pin || r > pin, "run over the pinned page");
        // SAFETY: as above.
        unsafe { b.free_len(r, 65 * MIB) };
    }
    // SAFETY: as above.
    unsafe { b.free_len(pin, PAGE_SIZE) };
    assert_eq!(b.free_bytes(), before);
    b.verify().unwrap();
    assert!(b.alloc_len(100 * MIB, 4 * MIB).is_some(), "whole again");
}

#[test]
fn trimmed_reservations_fall_back_to_runs_of_smaller_blocks() {
    // 32 MiB: the metadata pages at the end break the upper 16 MiB, so no
    // 32 MiB block exists, yet 24 MiB of free blocks lie side by side.
    let mem = HostMem::new(32 * MIB, 32 * MIB);
    let mut b = Buddy::new();
    // SAFETY: the range lies in `mem`.
    unsafe { b.add_region(mem.base, 32 * MIB) }.unwrap();
    let before = b.free_bytes();
    let a = b
        .alloc_len(24 * MIB, PAGE_SIZE)
        .expect("a run of smaller blocks");
    assert!(b.is_allocated_len(a, 24 * MIB));
    assert_eq!(before - b.free_bytes(), 24 * MIB);
    b.verify().unwrap();
    // SAFETY: reserved with this length, freed once.
    unsafe { b.free_len(a, 24 * MIB) };
    assert_eq!(b.free_bytes(), before);
    b.verify().unwrap();
    // A power of two is one block or nothing (its release expects one).
    assert!(b.alloc_len(32 * MIB, PAGE_SIZE).is_none());
}
