//! Shadow-model tests: random operation sequences checked against a model of
//! what every live block must look like.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use apex_core::harden::Mitigations;
use apex_core::layout::SEGMENT_SIZE;
use apex_core::{snapshot, usable_size, Heap};
use common::{instance, HeapBox, Rng};

struct Live {
    size: usize,
    align: usize,
    seed: u8,
}

fn fill(p: *mut u8, size: usize, seed: u8) {
    for i in (0..size).step_by(61).chain(size.saturating_sub(1)..size) {
        // SAFETY: inside the block.
        unsafe { *p.add(i) = seed.wrapping_add(i as u8) };
    }
}

/// Checks the bytes `fill(p, size, seed)` wrote, up to `upto`.
fn check_upto(p: *mut u8, size: usize, seed: u8, upto: usize) {
    for i in (0..size)
        .step_by(61)
        .chain(size.saturating_sub(1)..size)
        .filter(|&i| i < upto)
    {
        // SAFETY: inside the block.
        let v = unsafe { *p.add(i) };
        assert_eq!(
            v,
            seed.wrapping_add(i as u8),
            "block {p:?} size {size} byte {i}"
        );
    }
}

fn check(p: *mut u8, size: usize, seed: u8) {
    check_upto(p, size, seed, size);
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => rng.below(256) as usize,
        60..=84 => rng.below(8192) as usize,
        85..=96 => rng.below(600_000) as usize,
        97..=98 => rng.below(4 << 20) as usize,
        _ => (16 << 20) + rng.below(8 << 20) as usize,
    }
}

fn assert_no_overlap(live: &BTreeMap<usize, Live>, p: usize, size: usize) {
    if let Some((&q, l)) = live.range(..=p).next_back() {
        assert!(q + l.size.max(1) <= p, "{p:#x} overlaps {q:#x}+{}", l.size);
    }
    if let Some((&q, _)) = live.range(p..).next() {
        assert!(p + size.max(1) <= q, "{p:#x}+{size} overlaps {q:#x}");
    }
}

/// After a trim, only the chunk holding the heap structs stays reserved.
fn assert_only_metadata_reserved(g: &apex_core::Global) {
    assert_eq!(
        snapshot(g).reserved,
        apex_core::pool::CHUNK_SIZE,
        "reservations left after trim"
    );
}

fn run_model(seed: u64, steps: usize) {
    run_model_with(seed, steps, Mitigations::DEFAULT)
}

fn run_model_with(seed: u64, steps: usize, harden: Mitigations) {
    let (_p, g) = instance();
    g.set_mitigations(harden);
    let hb = HeapBox::new(g);
    let heap: &mut Heap = hb.get();
    let mut rng = Rng(seed);
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut keys: Vec<usize> = Vec::new();
    for step in 0..steps {
        let op = rng.below(100);
        if op < 45 || live.is_empty() {
            let size = random_size(&mut rng);
            let (p, align, zeroed) = match rng.below(10) {
                0 => {
                    let align = 1usize << (4 + rng.below(20));
                    (heap.malloc_aligned(size, align), align, false)
                }
                1 => (heap.zalloc(size), 16, true),
                _ => (heap.malloc(size), 16, false),
            };
            assert!(!p.is_null(), "step {step}: malloc({size}) failed");
            assert_eq!(p as usize % align, 0, "alignment {align}");
            // SAFETY: live block of this allocator.
            assert!(unsafe { usable_size(p) } >= size);
            if zeroed {
                for i in (0..size).step_by(97) {
                    // SAFETY: inside the block.
                    assert_eq!(unsafe { *p.add(i) }, 0, "calloc byte {i} of {size}");
                }
            }
            assert_no_overlap(&live, p as usize, size);
            let seed = rng.next() as u8;
            fill(p, size, seed);
            live.insert(p as usize, Live { size, align, seed });
            keys.push(p as usize);
        } else if op < 80 {
            let i = rng.below(keys.len() as u64) as usize;
            let k = keys.swap_remove(i);
            let l = live.remove(&k).unwrap();
            check(k as *mut u8, l.size, l.seed);
            // SAFETY: live block freed once.
            unsafe { heap.free(k as *mut u8) };
        } else {
            let i = rng.below(keys.len() as u64) as usize;
            let k = keys[i];
            let l = live.remove(&k).unwrap();
            check(k as *mut u8, l.size, l.seed);
            let new_size = if rng.below(2) == 0 {
                l.size + rng.below(l.size as u64 + 100) as usize
            } else {
                (l.size / 2).max(1)
            };
            // SAFETY: live block.
            let q = unsafe { heap.realloc(k as *mut u8, new_size) };
            assert!(!q.is_null());
            check_upto(q, l.size, l.seed, new_size);
            assert_no_overlap(&live, q as usize, new_size);
            fill(q, new_size, l.seed);
            live.insert(
                q as usize,
                Live {
                    size: new_size,
                    align: if q as usize == k { l.align } else { 16 },
                    seed: l.seed,
                },
            );
            keys[i] = q as usize;
        }
        // The heap checks its own invariants after every step.
        if let Err(e) = heap.verify() {
            panic!("step {step}: {} at {:#x}", e.what, e.at);
        }
    }
    let snap = snapshot(g);
    assert_eq!(snap.mallocs - snap.frees, live.len() as u64);
    for (&k, l) in &live {
        check(k as *mut u8, l.size, l.seed);
        assert_eq!(k % l.align, 0);
        // SAFETY: live block freed once.
        unsafe { heap.free(k as *mut u8) };
    }
    heap.release_now();
    let snap = snapshot(g);
    assert_eq!(snap.allocated, 0, "bytes still counted as allocated");
    assert_eq!(
        snap.active, 0,
        "spans still active after freeing everything"
    );
    assert_eq!(snap.segments, 0, "segments kept after release_now");
}

#[test]
fn shadow_model_seed_1() {
    run_model(0x1234_5678_9abc_def1, 20_000);
}

#[test]
fn shadow_model_seed_2() {
    run_model(0xdead_beef_cafe_f00d, 20_000);
}

#[test]
fn shadow_model_under_every_preset() {
    for (i, m) in [Mitigations::OFF, Mitigations::FULL]
        .into_iter()
        .enumerate()
    {
        run_model_with(0x5eed_0000_0000_0001 + i as u64, 10_000, m);
    }
}

#[test]
fn shadow_model_many_seeds_short() {
    for s in 1..20u64 {
        run_model(s.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, 2_000);
    }
}

#[test]
fn small_blocks_are_distinct_and_reused() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let mut ptrs: Vec<*mut u8> = (0..10_000).map(|_| heap.malloc(24)).collect();
    let mut sorted: Vec<usize> = ptrs.iter().map(|&p| p as usize).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10_000);
    for w in sorted.windows(2) {
        assert!(w[1] - w[0] >= 32);
    }
    for p in ptrs.drain(..) {
        // SAFETY: live blocks.
        unsafe { heap.free(p) };
    }
    let before = snapshot(g).segments;
    for _ in 0..10_000 {
        ptrs.push(heap.malloc(24));
    }
    assert_eq!(snapshot(g).segments, before, "freed blocks were not reused");
    for p in ptrs {
        // SAFETY: live blocks.
        unsafe { heap.free(p) };
    }
}

#[test]
fn huge_alignments_up_to_64_mib() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    for shift in 4..=26 {
        let align = 1usize << shift;
        for size in [1usize, 100, 70_000, 3 << 20] {
            let p = heap.malloc_aligned(size, align);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "align {align} size {size}");
            // SAFETY: live block.
            unsafe {
                assert!(usable_size(p) >= size);
                p.write_bytes(0x5a, size);
                heap.free(p);
            }
        }
    }
    heap.release_now();
    assert_only_metadata_reserved(g);
}

#[test]
fn large_realloc_grows_in_place() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let p = heap.malloc(600_000);
    // SAFETY: live block.
    unsafe {
        p.write_bytes(7, 600_000);
        let q = heap.realloc(p, 1_200_000);
        assert_eq!(q, p, "growth into the free neighbour should stay in place");
        assert_eq!(*q.add(599_999), 7);
        let r = heap.realloc(q, 700_000);
        assert_eq!(r, q, "shrinking a large block stays in place");
        assert!(usable_size(r) < 1_200_000);
        heap.free(r);
    }
}

/// A block grown step by step far past the segment-internal sizes moves
/// only O(log n) times (headroom when it must move), keeping its contents.
#[test]
fn step_by_step_growth_moves_rarely() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let step = 64 * 1024;
    let mut size = step;
    let mut p = heap.malloc(size);
    let mut moves = 0;
    // SAFETY: `p` is always the live block of `size` bytes.
    unsafe {
        p.write_bytes(0x3c, size);
        while size < 96 << 20 {
            let q = heap.realloc(p, size + step);
            assert!(!q.is_null());
            if q != p {
                moves += 1;
            }
            // The old contents survived; mark the new tail.
            assert_eq!(*q.add(size - 1), 0x3c, "contents lost at {size} bytes");
            q.add(size).write_bytes(0x3c, step);
            p = q;
            size += step;
        }
        heap.free(p);
    }
    // 1535 steps; copying at every step would be 1500 moves.
    assert!(moves <= 40, "{moves} moves for 1535 growth steps");
    heap.release_now();
    assert_only_metadata_reserved(g);
}

#[test]
fn foreign_pointers_are_ignored_without_the_foreign_check() {
    let (_p, g) = instance();
    g.set_mitigations(Mitigations::DEFAULT - Mitigations::FOREIGN);
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let mut local = [0u8; 64];
    let boxed = Box::new([1u8; 64]);
    // SAFETY: foreign pointers are explicitly allowed.
    unsafe {
        heap.free(local.as_mut_ptr());
        heap.free(Box::into_raw(boxed) as *mut u8);
        assert_eq!(usable_size(local.as_ptr()), 0);
        assert!(heap.realloc(local.as_mut_ptr(), 10).is_null());
    }
    // The realloc counts too.
    assert_eq!(snapshot(g).foreign_frees, 3);
}

#[test]
#[should_panic(expected = "apexalloc: fatal: double free")]
fn double_free_small_is_fatal() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let keep = heap.malloc(48);
    let p = heap.malloc(48);
    // SAFETY: deliberately freed twice.
    unsafe {
        heap.free(p);
        heap.free(p);
    }
    let _ = keep;
}

#[test]
#[should_panic(expected = "apexalloc: fatal: double free")]
fn double_free_large_is_fatal() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let _keep = heap.malloc(100);
    let p = heap.malloc(1 << 20);
    // SAFETY: deliberately freed twice.
    unsafe {
        heap.free(p);
        heap.free(p);
    }
}

#[test]
#[should_panic(expected = "apexalloc: fatal: invalid free")]
fn interior_free_is_fatal() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let p = heap.malloc(64);
    // SAFETY: deliberately invalid.
    unsafe { heap.free(p.add(8)) };
}

#[test]
#[should_panic(expected = "apexalloc: fatal: free-list corruption")]
fn overwritten_free_link_is_detected() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let a = heap.malloc(32);
    let b = heap.malloc(32);
    // SAFETY: deliberate use-after-free write of a link.
    unsafe {
        heap.free(a);
        heap.free(b);
        // Refill `free` from local_free, then smash the head's link.
        let _ = heap.malloc(32);
        let _ = heap.malloc(32);
        let c = heap.malloc(32);
        heap.free(c);
        let d = heap.malloc(32); // pops c again
        heap.free(d);
        *(d as *mut usize) = 0x4141_4141_4141;
        // Collect local_free into free and pop through the smashed link.
        for _ in 0..100_000 {
            let _ = heap.malloc(32);
        }
    }
}

/// A block freed again after its segment went to the cache and came back:
/// the recycled segment's header must not keep the old slab descriptors.
#[test]
#[should_panic(expected = "apexalloc: fatal: double free")]
fn stale_pointer_into_a_recycled_segment_is_fatal() {
    let (_p, g) = instance();
    g.options.purge_delay.store(0, Ordering::Relaxed);
    let hb = HeapBox::new(g);
    let heap = hb.get();
    // Two slabs of different classes, then the empty segment goes to the
    // cache (kept reserved, header untouched).
    let a = heap.malloc(64);
    let b = heap.malloc(3000);
    // SAFETY: live blocks, freed once.
    unsafe {
        heap.free(a);
        heap.free(b);
    }
    heap.release_empty_slabs();
    heap.decay();
    assert_eq!(snapshot(g).segments, 0);
    // The segment comes back from the cache with only the first class in
    // use; `b`'s old slab is now part of a free span.
    let a2 = heap.malloc(64);
    assert_eq!(
        a2 as usize & !(SEGMENT_SIZE - 1),
        a as usize & !(SEGMENT_SIZE - 1),
        "the cached segment was not reused"
    );
    // SAFETY: deliberately frees a pointer into a free span.
    unsafe { heap.free(b) };
}

/// A heap whose fast paths are turned off (for a frontend that watches
/// every allocation) still allocates and frees correctly, only out of line.
#[test]
fn heap_without_fast_paths_still_works() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    heap.disable_fast_paths();
    let mut live = Vec::new();
    for i in 0..5_000usize {
        let size = 1 + (i * 37) % 900;
        let p = heap.malloc(size);
        assert!(!p.is_null());
        // The fast path never serves this heap.
        assert!(heap.try_malloc_fast(size).is_null());
        // SAFETY: fresh block of `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
        live.push((p, size, i as u8));
        if i % 3 == 0 {
            let (q, n, v) = live.swap_remove(i % live.len());
            // SAFETY: a live block written above.
            unsafe {
                assert!((0..n).all(|k| *q.add(k) == v));
                assert!(!heap.try_free_fast(q));
                heap.free(q);
            }
        }
    }
    for (p, n, v) in live {
        // SAFETY: live blocks written above.
        unsafe {
            assert!((0..n).all(|k| *p.add(k) == v));
            heap.free(p);
        }
    }
    let s = snapshot(g);
    assert_eq!(s.mallocs, s.frees, "{s:?}");
    assert_eq!(s.allocated, 0, "{s:?}");
}
