//! The classic engines piece by piece: splitting, coalescing in both
//! directions, trimming the top, buddy split and merge, integrity checks,
//! the heap dump and the slab cache.

mod strategy_common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use apex_core::strategy::buddy::{Buddy, TOP};
use apex_core::strategy::classic::{Classic, Kind};
use apex_core::strategy::freelist::{Fit, FreeList, MIN_BLOCK, TRIM};
use apex_core::strategy::pool::{Pool, SlabCache};
use apex_core::strategy::{Block, Fault, TAG};
use strategy_common::{BrkSim, Chunks};

fn heap(fit: Fit) -> FreeList<BrkSim> {
    FreeList::new(BrkSim::new(64 << 20), fit)
}

fn blocks<S: apex_core::strategy::Source>(h: &FreeList<S>) -> Vec<Block> {
    let mut v = Vec::new();
    h.dump(&mut |b| v.push(b));
    v
}

fn block_at(v: &[Block], p: *mut u8) -> Block {
    *v.iter()
        .find(|b| b.addr == p as usize - TAG)
        .expect("a block at the address")
}

/// The panic message of `f`, which must panic.
fn fatal_of(f: impl FnOnce()) -> String {
    let e = catch_unwind(AssertUnwindSafe(f)).expect_err("a fatal report");
    e.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn split_leaves_a_free_rest_only_when_it_is_large_enough() {
    let mut h = heap(Fit::First);
    let a = h.alloc(200);
    let guard = h.alloc(16);
    // SAFETY: live blocks of `h`.
    unsafe {
        assert_eq!(h.usable(a), 208); // 200 + tags, rounded to 16
        h.free(a);
        // 184 bytes need 224: the 16 left over are too few to split off.
        let b = h.alloc(184);
        assert_eq!(b, a);
        assert_eq!(h.usable(b), 208);
        h.free(b);
        // 100 bytes need 144: the 96 left over become a free block.
        let c = h.alloc(100);
        assert_eq!(c, a);
        assert_eq!(h.usable(c), 112);
        let v = blocks(&h);
        let rest = block_at(&v, c.add(144));
        assert!(rest.free);
        assert_eq!(rest.size, 96);
        assert!(rest.size >= MIN_BLOCK);
        h.free(c);
        h.free(guard);
    }
    h.verify().unwrap();
}

#[test]
fn free_coalesces_left_right_and_both() {
    let mut h = heap(Fit::First);
    let p: Vec<*mut u8> = (0..7).map(|_| h.alloc(64)).collect();
    let size = blocks(&h)[0].size;
    // SAFETY: live blocks of `h`, each freed once.
    unsafe {
        // Left: p1 freed after p0 merges into p0.
        h.free(p[0]);
        h.free(p[1]);
        let v = blocks(&h);
        assert_eq!(block_at(&v, p[0]).size, 2 * size);
        assert!(block_at(&v, p[0]).free);
        // Right: p3 freed before p4... p4 freed after p5 merges with p5.
        h.free(p[5]);
        h.free(p[4]);
        let v = blocks(&h);
        assert_eq!(block_at(&v, p[4]).size, 2 * size);
        assert!(!v.iter().any(|b| b.addr == p[5] as usize - TAG));
        // Both: p2 between free p1 and p3 free... free p3 first (merges
        // with p4+p5 on the right), then p2 joins both sides.
        h.free(p[3]);
        h.free(p[2]);
        let v = blocks(&h);
        let merged = block_at(&v, p[0]);
        assert!(merged.free);
        assert_eq!(merged.size, 6 * size);
        // No two free blocks next to each other anywhere.
        assert!(v.windows(2).all(|w| !(w[0].free && w[1].free)));
        h.free(p[6]);
    }
    let s = h.verify().unwrap();
    assert_eq!(s.used_blocks, 0);
    assert_eq!(s.free_blocks, 1, "everything coalesced into one block");
}

#[test]
fn fits_choose_as_their_names_say() {
    // Holes of 1000, 300, 600 bytes (separated by live guards), then a
    // request of 250 bytes.
    let pick = |fit| {
        let mut h = heap(fit);
        let sizes = [1000, 300, 600];
        let mut holes = Vec::new();
        for s in sizes {
            holes.push(h.alloc(s));
            h.alloc(16);
        }
        // SAFETY: live blocks of `h`.
        unsafe {
            for &p in &holes {
                h.free(p);
            }
        }
        let q = h.alloc(250);
        h.verify().unwrap();
        holes.iter().position(|&p| p == q)
    };
    // The lists are LIFO: the hole freed last (600) is first in line.
    assert_eq!(pick(Fit::First), Some(2));
    assert_eq!(pick(Fit::Best), Some(1));
    // The top of the arena is the largest free block of all.
    assert_eq!(pick(Fit::Worst), None);
    assert_eq!(pick(Fit::Segregated), Some(1));
}

#[test]
fn next_fit_resumes_after_the_last_block_taken() {
    let mut h = heap(Fit::Next);
    let mut holes = Vec::new();
    for _ in 0..4 {
        holes.push(h.alloc(500));
        h.alloc(16);
    }
    // SAFETY: live blocks of `h`.
    unsafe {
        for &p in &holes {
            h.free(p);
        }
    }
    // The last search ended in the top block (the guards were carved
    // from it), so the next ones resume there, past the holes, where
    // first-fit would take the hole at the head of the list.
    let a = h.alloc(500);
    let b = h.alloc(500);
    assert!(
        holes.iter().all(|&p| a > p && b > a),
        "{holes:?} {a:?} {b:?}"
    );
    let mut f = heap(Fit::First);
    let mut fholes = Vec::new();
    for _ in 0..4 {
        fholes.push(f.alloc(500));
        f.alloc(16);
    }
    // SAFETY: live blocks of `f`.
    unsafe {
        for &p in &fholes {
            f.free(p);
        }
    }
    assert_eq!(f.alloc(500), fholes[3]);
    h.verify().unwrap();
}

#[test]
fn a_free_top_goes_back_to_the_source_and_grows_again_in_place() {
    let mut h = heap(Fit::Best);
    let small = h.alloc(100);
    let big = h.alloc(4 * TRIM);
    let held = h.footprint().0;
    assert!(held > 4 * TRIM);
    // SAFETY: a live block.
    unsafe { h.free(big) };
    let after = h.footprint().0;
    assert!(after < held - 3 * TRIM, "{after} of {held} still held");
    assert!(h.source_ref().returned > 3 * TRIM);
    // Growing again extends the same arena (one arena, contiguous).
    let again = h.alloc(4 * TRIM);
    assert_eq!(again, big);
    // SAFETY: live blocks.
    unsafe {
        h.free(again);
        h.free(small);
    }
    h.verify().unwrap();
}

#[test]
fn separate_chunks_make_separate_arenas() {
    let mut h = FreeList::new(Chunks::new(64 << 10), Fit::First);
    let a = h.alloc(40 << 10);
    let b = h.alloc(40 << 10);
    assert!(h.contains(a) && h.contains(b));
    assert!(!h.contains(std::ptr::null()));
    assert_eq!(h.source_ref().grown, 2);
    // SAFETY: live blocks.
    unsafe {
        h.free(a);
        h.free(b);
    }
    assert_eq!(h.verify().unwrap().free_blocks, 2);
}

#[test]
fn double_free_is_fatal() {
    for fit in [Fit::First, Fit::Segregated] {
        let mut h = heap(fit);
        let a = h.alloc(64);
        let _guard = h.alloc(64);
        // SAFETY: a live block, then the misuse under test.
        let msg = fatal_of(|| unsafe {
            h.free(a);
            h.free(a);
        });
        assert!(msg.starts_with("apexalloc: fatal: double free"), "{msg}");
    }
}

#[test]
fn invalid_free_is_fatal() {
    let mut h = heap(Fit::First);
    let a = h.alloc(256);
    // SAFETY: the misuse under test: an address inside a block.
    let msg = fatal_of(|| unsafe { h.free(a.add(32)) });
    assert!(msg.starts_with("apexalloc: fatal: invalid free"), "{msg}");
}

#[test]
fn a_corrupted_footer_or_neighbour_tag_is_fatal_and_verify_finds_it() {
    let mut h = heap(Fit::First);
    let a = h.alloc(64);
    let b = h.alloc(64);
    let _c = h.alloc(64);
    // SAFETY: an overflow of `a` by one byte into its own footer, the
    // corruption under test.
    unsafe { *a.add(h.usable(a)) ^= 1 };
    let e = h.verify().unwrap_err();
    assert_eq!(e.fault, Fault::TagCorruption);
    // SAFETY: as above.
    let msg = fatal_of(|| unsafe { h.free(a) });
    assert!(
        msg.starts_with("apexalloc: fatal: boundary tag corruption"),
        "{msg}"
    );
    // Freeing `b` looks at `a`'s footer (its left neighbour) too.
    // SAFETY: a live block whose neighbour is corrupted.
    let msg = fatal_of(|| unsafe { h.free(b) });
    assert!(msg.contains("boundary tag corruption"), "{msg}");
}

#[test]
fn buddy_splits_to_the_smallest_block_and_merges_back() {
    let mut h = Buddy::new(BrkSim::new(64 << 20));
    let a = h.alloc(100); // 100 + 16 -> 128
    let mut v = Vec::new();
    h.dump(&mut |b| v.push(b));
    let blk = *v.iter().find(|b| b.addr == a as usize - TAG).unwrap();
    assert_eq!(blk.size, 128);
    assert!(!blk.free);
    assert_eq!(blk.addr % 128, 0);
    // SAFETY: a live block.
    assert_eq!(unsafe { h.usable(a) }, 112);
    // Its buddy is the free block right after it.
    assert!(v.iter().any(|b| b.addr == blk.addr + 128 && b.free));
    // SAFETY: a live block.
    unsafe { h.free(a) };
    assert_eq!(h.verify().unwrap().used_blocks, 0);
    // Two blocks of the same order that are buddies merge when both are
    // free: `y` splits a 2 KiB block, `z` takes the other half.
    let _x = h.alloc(1000);
    let before = h.verify().unwrap().free_blocks;
    let y = h.alloc(1000);
    let z = h.alloc(1000);
    assert_eq!((y as usize - TAG) ^ 1024, z as usize - TAG);
    // SAFETY: live blocks.
    unsafe {
        h.free(y);
        assert_eq!(h.verify().unwrap().free_blocks, before, "y waits for z");
        h.free(z);
    }
    assert_eq!(h.verify().unwrap().free_blocks, before);
    // The top block limits requests.
    assert!(h.alloc(TOP).is_null());
    assert!(!h.alloc(TOP - TAG - 1).is_null());
}

#[test]
fn buddy_double_free_is_fatal() {
    let mut h = Buddy::new(Chunks::new(1 << 20));
    let a = h.alloc(64);
    let _b = h.alloc(64);
    // SAFETY: the misuse under test.
    let msg = fatal_of(|| unsafe {
        h.free(a);
        h.free(a);
    });
    assert!(msg.starts_with("apexalloc: fatal: double free"), "{msg}");
}

#[test]
fn aligned_blocks_free_through_their_shim() {
    for kind in Kind::ALL {
        let mut h = Classic::new(kind, BrkSim::new(64 << 20));
        for align in [32, 64, 4096, 65536] {
            let p = h.alloc_aligned(1000, align);
            assert_eq!(p as usize % align, 0, "{kind:?}");
            // SAFETY: a live block.
            unsafe {
                assert!(h.usable(p) >= 1000);
                std::ptr::write_bytes(p, 7, 1000);
                h.free(p);
            }
        }
        assert_eq!(h.verify().unwrap().used_blocks, 0, "{kind:?}");
        assert_eq!(h.stats().in_use, 0);
        assert_eq!(h.stats().allocations, 4);
    }
}

#[test]
fn realloc_grows_in_place_into_a_free_neighbour() {
    let mut h = Classic::new(Kind::FirstFit, BrkSim::new(64 << 20));
    let a = h.alloc(100);
    let b = h.alloc(1000);
    let _c = h.alloc(16);
    // SAFETY: live blocks.
    unsafe {
        std::ptr::write_bytes(a, 9, 100);
        h.free(b);
        let q = h.realloc(a, 16, 900);
        assert_eq!(q, a, "grown into the free block after it");
        assert!((0..100).all(|i| *q.add(i) == 9));
        let q = h.realloc(q, 16, 50);
        assert_eq!(q, a, "shrunk in place");
    }
    h.verify().unwrap();
}

#[test]
fn fragmentation_counts_free_bytes_too_small_for_the_request() {
    let mut h = Classic::new(Kind::FirstFit, BrkSim::new(64 << 20));
    let p: Vec<*mut u8> = (0..10).map(|_| h.alloc(100)).collect();
    // SAFETY: live blocks; every other one freed.
    unsafe {
        for q in p.iter().step_by(2) {
            h.free(*q);
        }
    }
    let (small, free) = h.fragmentation(1000);
    // Five holes of 144 bytes are too small for 1000 bytes; the top is not.
    assert_eq!(small, 5 * 144);
    assert!(free > small);
    let (small, _) = h.fragmentation(50);
    assert_eq!(small, 0);
}

#[test]
fn slab_cache_constructs_once_and_keeps_state_across_reuse() {
    fn ctor(p: *mut u8) {
        // SAFETY: the cache passes an object of 48 bytes.
        unsafe { std::ptr::write_bytes(p, 0xab, 48) };
    }
    let mut c = SlabCache::new(Chunks::new(0), 48, 16, Some(ctor)).unwrap();
    let a = c.alloc().unwrap();
    // SAFETY: a live object of 48 bytes.
    unsafe {
        assert!((0..48).all(|i| *a.as_ptr().add(i) == 0xab));
        *a.as_ptr() = 0x11;
        c.free(a);
    }
    let constructed = c.stats().constructed;
    let b = c.alloc().unwrap();
    assert_eq!(b, a, "the last freed object is reused first");
    // SAFETY: a live object.
    assert_eq!(unsafe { *b.as_ptr() }, 0x11, "reused as it was left");
    assert_eq!(c.stats().constructed, constructed);
    // A slab's worth and one more: a second slab.
    let mut v = vec![b];
    for _ in 0..c.per_slab() {
        v.push(c.alloc().unwrap());
    }
    let s = c.stats();
    assert_eq!(s.slabs, 2);
    assert_eq!(s.live, c.per_slab() + 1);
    assert_eq!(s.constructed, 2 * c.per_slab() as u64);
    let mut sorted: Vec<usize> = v.iter().map(|p| p.as_ptr() as usize).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), v.len(), "objects are distinct");
    // SAFETY: live objects, each freed once.
    unsafe {
        for p in v {
            c.free(p);
        }
    }
    assert_eq!(c.stats().live, 0);
    // SAFETY: the misuse under test.
    let msg = fatal_of(|| unsafe { c.free(a) });
    assert!(msg.starts_with("apexalloc: fatal: double free"), "{msg}");
}

#[test]
fn pool_drops_values_and_reuses_slots() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Node(u64, [u8; 40]);
    impl Drop for Node {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut pool: Pool<Node, _> = Pool::new(Chunks::new(0)).unwrap();
    let ps: Vec<_> = (0..1000)
        .map(|i| pool.alloc(Node(i, [0; 40])).unwrap())
        .collect();
    // SAFETY: live values of the pool.
    unsafe {
        for (i, p) in ps.iter().enumerate() {
            assert_eq!(p.as_ref().0, i as u64);
            assert_eq!(p.as_ref().1, [0; 40]);
            assert_eq!(p.as_ptr() as usize % std::mem::align_of::<Node>(), 0);
        }
        for p in ps {
            pool.free(p);
        }
    }
    assert_eq!(DROPS.load(Ordering::Relaxed), 1000);
    let s = pool.stats();
    assert_eq!((s.allocations, s.frees, s.live), (1000, 1000, 0));
    let slabs = s.slabs;
    for i in 0..1000 {
        let p = pool.alloc(Node(i, [1; 40])).unwrap();
        // SAFETY: a live value, freed once.
        unsafe { pool.free(p) };
    }
    assert_eq!(pool.stats().slabs, slabs, "freed slots are reused");
}

#[test]
fn best_and_worst_fit_pick_what_a_walk_over_every_free_block_would() {
    for fit in [Fit::Best, Fit::Worst] {
        let mut h = heap(fit);
        let mut rng = strategy_common::XorShift::new(5);
        let mut live = Vec::new();
        for _ in 0..3000 {
            if live.len() < 50 || rng.below(2) == 0 {
                let size = 1 + rng.below(3000);
                let need = ((size + 2 * TAG + 15) & !15).max(MIN_BLOCK);
                let free: Vec<Block> = blocks(&h).into_iter().filter(|b| b.free).collect();
                let fitting = free.iter().filter(|b| b.size >= need).map(|b| b.size);
                let want = if fit == Fit::Best {
                    fitting.min()
                } else {
                    fitting.max()
                };
                let p = h.alloc(size);
                if let Some(want) = want {
                    let taken = free
                        .iter()
                        .find(|b| b.addr == p as usize - TAG)
                        .expect("carved from the front of a free block");
                    assert_eq!(taken.size, want, "{fit:?}");
                }
                live.push(p);
            } else {
                let p = live.swap_remove(rng.below(live.len()));
                // SAFETY: a live block, freed once.
                unsafe { h.free(p) };
            }
        }
        h.verify().unwrap();
    }
}
