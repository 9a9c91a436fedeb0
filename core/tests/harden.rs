//! The mitigations against heap exploitation (see `apex_core::harden`),
//! attacked the way an attacker with a heap bug would: each attack is shown
//! to work without its mitigation where that is safe to show, and to end in
//! the exact fatal line (the test provider panics with it) or to be
//! defeated with it.

mod common;

use apex_core::harden::Mitigations;
use apex_core::layout::SLICE_SIZE;
use apex_core::{usable_size, Global, Heap};
use common::{instance, HeapBox};

fn heap_with(m: Mitigations) -> (&'static Global, HeapBox) {
    let (_p, g) = instance();
    g.set_mitigations(m);
    (g, HeapBox::new(g))
}

/// Frees `p` and reads back the word the allocator stored in it.
unsafe fn free_and_peek(heap: &mut Heap, p: *mut u8) -> usize {
    // SAFETY: the caller passes a live block; reading it after the free
    // is the attack.
    unsafe {
        heap.free(p);
        *(p as *const usize)
    }
}

/// Class 1: an overflowing read shows the next free block's link; the
/// attacker learns its pad and rewrites it to name a live block. Returns
/// whether malloc handed out the live block.
fn forge_link(m: Mitigations, target_offset: usize) -> bool {
    let (_g, hb) = heap_with(m - Mitigations::SHUFFLE);
    let heap = hb.get();
    // Fresh slab, carved in address order (no shuffle here, so the
    // attacker knows which block follows which).
    let victim = heap.malloc(48);
    let b1 = victim.wrapping_add(48);
    let b2 = victim.wrapping_add(96);
    // SAFETY: reading and writing past the victim's end is the attack.
    unsafe {
        let pad = *(b1 as *const usize) ^ (b2 as usize);
        *(b1 as *mut usize) = (victim as usize + target_offset) ^ pad;
        let first = heap.malloc(48);
        assert_eq!(first, b1);
        heap.malloc(48) == victim
    }
}

#[test]
fn forged_link_hands_out_a_live_block_without_mitigations() {
    assert!(forge_link(Mitigations::OFF, 0));
}

#[test]
#[should_panic(expected = "apexalloc: fatal: free-list corruption (0x")]
fn forged_link_to_a_live_block_is_fatal() {
    forge_link(Mitigations::DEFAULT, 0);
}

#[test]
#[should_panic(expected = "apexalloc: fatal: free-list corruption (0x")]
fn misaligned_link_inside_the_slab_is_fatal() {
    forge_link(Mitigations::LINKS, 8);
}

#[test]
fn links_copied_between_slots_do_not_decode_to_blocks() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let heap = hb.get();
    let blocks: Vec<*mut u8> = (0..16).map(|_| heap.malloc(32)).collect();
    // SAFETY: reads of freed blocks only.
    unsafe {
        let words: Vec<usize> = blocks.iter().map(|&p| free_and_peek(heap, p)).collect();
        // No stored word is a plain pointer into the heap.
        for (w, &p) in words.iter().zip(&blocks) {
            assert!(w.abs_diff(p as usize) > 1 << 32, "{w:#x} near {p:?}");
        }
    }
}

/// Class 2: a block boundary that was never handed out.
#[test]
#[should_panic(expected = "apexalloc: fatal: invalid free (0x")]
fn free_of_a_never_carved_slot_is_fatal() {
    let (_g, hb) = heap_with(Mitigations::OFF);
    let heap = hb.get();
    let p = heap.malloc(64);
    // 100 blocks on: beyond the page of blocks carved so far.
    // SAFETY: deliberately invalid.
    unsafe { heap.free(p.add(64 * 100)) };
}

/// A carved slot that was never handed out sits on a free list, so the
/// bitmap (and, without it, the list scan) sees it freed already.
#[test]
#[should_panic(expected = "apexalloc: fatal: double free (0x")]
fn free_of_a_carved_slot_never_handed_out_is_fatal() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT - Mitigations::SHUFFLE);
    let heap = hb.get();
    let p = heap.malloc(64);
    // SAFETY: deliberately invalid.
    unsafe { heap.free(p.add(64 * 3)) };
}

/// Class 3: a large block freed twice from another thread.
#[test]
#[should_panic(expected = "apexalloc: fatal: double free (0x")]
fn large_block_freed_twice_by_another_heap_is_fatal() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let other = HeapBox::new(_g);
    let p = hb.get().malloc(600 * 1024);
    // SAFETY: deliberately freed twice.
    unsafe {
        other.get().free(p);
        other.get().free(p);
    }
}

#[test]
#[should_panic(expected = "apexalloc: fatal: double free (0x")]
fn small_block_freed_twice_by_another_heap_is_fatal() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let other = HeapBox::new(_g);
    let heap = hb.get();
    let blocks: Vec<*mut u8> = (0..300).map(|_| heap.malloc(64)).collect();
    // SAFETY: deliberately freed twice; the owner collects them.
    unsafe {
        other.get().free(blocks[7]);
        other.get().free(blocks[7]);
    }
    for _ in 0..10_000 {
        heap.malloc(64);
    }
}

/// The kernel build's one-bit segment map has no room for the freed-huge
/// mark: there the second free is an invalid free of a foreign pointer.
#[test]
#[cfg_attr(
    not(feature = "small-segments"),
    should_panic(expected = "apexalloc: fatal: double free (0x")
)]
#[cfg_attr(
    feature = "small-segments",
    should_panic(expected = "apexalloc: fatal: invalid free (0x")
)]
fn huge_block_freed_twice_is_fatal() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let heap = hb.get();
    let p = heap.malloc(40 << 20);
    // SAFETY: deliberately freed twice.
    unsafe {
        heap.free(p);
        heap.free(p);
    }
}

#[test]
#[should_panic(expected = "apexalloc: fatal: invalid free (0x")]
fn stale_huge_pointer_never_frees_the_block_that_reuses_its_range() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let heap = hb.get();
    let p = heap.malloc(40 << 20);
    // SAFETY: `p` is freed, a new block takes its range, then the stale
    // pointer is freed.
    unsafe {
        heap.free(p);
        let q = heap.malloc(40 << 20);
        assert_ne!(p, q, "the new block starts where the freed one did");
        heap.free(p);
    }
}

/// Class 4: a dangling 64-byte pointer must not land in a block of
/// another size.
fn dangling_pointer_lands_in_another_class(m: Mitigations) -> bool {
    let (_g, hb) = heap_with(m);
    let heap = hb.get();
    let small: Vec<*mut u8> = (0..5000).map(|_| heap.malloc(64)).collect();
    let dangling = small[2500] as usize;
    for &p in &small {
        // SAFETY: live blocks, freed once.
        unsafe { heap.free(p) };
    }
    let big: Vec<*mut u8> = (0..400).map(|_| heap.malloc(4000)).collect();
    big.iter()
        .any(|&b| (b as usize..b as usize + 4000).contains(&dangling))
}

#[test]
fn cross_class_reuse_happens_without_isolation() {
    assert!(dangling_pointer_lands_in_another_class(Mitigations::OFF));
}

#[test]
fn size_classes_are_isolated_in_full() {
    assert!(!dangling_pointer_lands_in_another_class(Mitigations::FULL));
}

/// Class 6: a linear overflow into the next block.
#[test]
#[should_panic(expected = "apexalloc: fatal: heap overflow (0x")]
fn overflow_past_a_small_block_is_caught_by_its_canary() {
    let (_g, hb) = heap_with(Mitigations::FULL);
    let heap = hb.get();
    let p = heap.malloc(40);
    // SAFETY: the usable size is writable; the byte after it is not ours.
    unsafe {
        let n = usable_size(p);
        assert!(n >= 40);
        // One byte changed, as a string overflow by one would.
        *p.add(n) = !*p.add(n);
        heap.free(p);
    }
}

/// Class 7: secrets survive free, and writes after free.
#[test]
fn freed_blocks_are_zeroed_in_full() {
    for (m, zeroed) in [(Mitigations::OFF, false), (Mitigations::FULL, true)] {
        let (_g, hb) = heap_with(m);
        let heap = hb.get();
        let p = heap.malloc(64);
        // SAFETY: reading a freed block is the attack.
        unsafe {
            std::ptr::write_bytes(p, 0x5a, 48);
            heap.free(p);
            let after: Vec<u8> = (8..48).map(|i| *p.add(i)).collect();
            assert_eq!(after.iter().all(|&b| b == 0), zeroed, "{m:?}");
        }
    }
}

#[test]
#[should_panic(expected = "apexalloc: fatal: write after free (0x")]
fn write_after_free_is_caught_when_the_block_is_reused() {
    let (_g, hb) = heap_with(Mitigations::FULL);
    let heap = hb.get();
    let p = heap.malloc(64);
    // SAFETY: the write after free is the attack.
    unsafe {
        heap.free(p);
        *p.add(24) = 1;
        // Push it out of the quarantine, then allocate until it is reused.
        for _ in 0..1000 {
            let q = heap.malloc(64);
            heap.free(q);
        }
    }
    for _ in 0..100_000 {
        heap.malloc(64);
    }
}

#[test]
fn quarantine_delays_reuse() {
    let (_g, hb) = heap_with(Mitigations::FULL);
    let heap = hb.get();
    let p = heap.malloc(64);
    // SAFETY: freed once.
    unsafe { heap.free(p) };
    let next: Vec<*mut u8> = (0..100).map(|_| heap.malloc(64)).collect();
    assert!(!next.contains(&p), "a freed block came back at once");
}

/// Class 8: foreign pointers.
#[test]
#[should_panic(expected = "apexalloc: fatal: invalid free (0x")]
fn free_of_a_stack_pointer_is_fatal() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let mut local = [0u8; 64];
    // SAFETY: deliberately foreign.
    unsafe { hb.get().free(local.as_mut_ptr()) };
}

#[test]
#[should_panic(expected = "apexalloc: fatal: invalid realloc (0x")]
fn realloc_of_a_stack_pointer_is_fatal() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let mut local = [0u8; 64];
    // SAFETY: deliberately foreign.
    unsafe { hb.get().realloc(local.as_mut_ptr(), 100) };
}

/// Class 9: predictable layout.
fn consecutive_blocks_are_sequential(m: Mitigations) -> bool {
    let (_g, hb) = heap_with(m);
    let heap = hb.get();
    let v: Vec<usize> = (0..64).map(|_| heap.malloc(64) as usize).collect();
    v.windows(2).all(|w| w[1] == w[0] + 64)
}

#[test]
fn slots_are_handed_out_in_random_order_with_shuffle() {
    assert!(consecutive_blocks_are_sequential(Mitigations::OFF));
    assert!(!consecutive_blocks_are_sequential(Mitigations::SHUFFLE));
}

/// A block of an exited thread freed twice by another thread while a
/// second block stays live: the counts of remote frees then say the
/// segment is empty. Releasing it would free the live block's memory;
/// the bitmap check must stop it first.
#[test]
#[should_panic(expected = "apexalloc: fatal: double free (0x")]
fn remote_double_free_never_releases_an_abandoned_segment_with_a_live_block() {
    let (p, g) = common::instance_with_clock();
    g.options
        .purge_delay
        .store(10, std::sync::atomic::Ordering::Relaxed);
    let exiting = Heap::create(g).expect("heap");
    // SAFETY: the heap is used only here.
    let (a, b) = unsafe {
        let h = &mut *exiting.as_ptr();
        (h.malloc(64), h.malloc(64))
    };
    // SAFETY: nothing uses the heap afterwards; its blocks stay valid.
    unsafe { Heap::destroy(exiting) };
    let other = HeapBox::new(g);
    // SAFETY: `a` freed twice is the attack; `b` stays live.
    unsafe {
        other.get().free(a);
        other.get().free(a);
    }
    let _ = b;
    p.advance(10_000);
    other.get().decay();
}

/// An exited thread's large block freed by another thread, then its
/// segment adopted: the remote-free check of the adoption accepts it.
#[test]
fn adopting_a_segment_with_a_remotely_freed_large_block() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let g = _g;
    let exiting = Heap::create(g).expect("heap");
    // SAFETY: the heap is used only here.
    let (big, small) = unsafe {
        let h = &mut *exiting.as_ptr();
        (h.malloc(700 * 1024), h.malloc(64))
    };
    // SAFETY: nothing uses the heap afterwards; its blocks stay valid.
    unsafe { Heap::destroy(exiting) };
    let other = hb.get();
    // SAFETY: live blocks, freed once, from another heap.
    unsafe {
        other.free(big);
        other.free(small);
    }
    // Enough to need a segment: the abandoned one is adopted and swept.
    let v: Vec<*mut u8> = (0..2000).map(|_| other.malloc(4000)).collect();
    assert!(v.iter().all(|p| !p.is_null()));
    assert!(apex_core::snapshot(g).adopted_total >= 1);
    for p in v {
        // SAFETY: live blocks, freed once.
        unsafe { other.free(p) };
    }
}

/// A zero-byte block with a huge alignment lies inside its own
/// reservation, not one past its end.
#[test]
fn zero_byte_huge_aligned_block_is_inside_its_reservation() {
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let heap = hb.get();
    // Several at once: the bad case needs a reservation that happens to
    // start on the alignment.
    let align = 64usize << 20;
    let blocks: Vec<*mut u8> = (0..12).map(|_| heap.malloc_aligned(0, align)).collect();
    for &p in &blocks {
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0);
        // SAFETY: a live block of at least one byte.
        unsafe {
            assert!(usable_size(p) >= 1, "{p:?} has no byte of its own");
            *p = 7;
        }
    }
    for p in blocks {
        // SAFETY: live blocks, freed once.
        unsafe { heap.free(p) };
    }
}

/// `owns` is true inside segments and at an over-aligned huge block's
/// start, and false just past a segment's end (which `segment_base_of`
/// maps to that segment).
#[test]
fn owns_knows_segment_ends_from_aligned_huge_blocks() {
    use apex_core::layout::SEGMENT_SIZE;
    let (_g, hb) = heap_with(Mitigations::DEFAULT);
    let heap = hb.get();
    let small = heap.malloc(64);
    assert!(apex_core::owns(small));
    let seg = small as usize & !(SEGMENT_SIZE - 1);
    let past_end = seg + SEGMENT_SIZE;
    // Unless a segment of ours starts right there.
    if !apex_core::segment_map::contains(past_end) {
        assert!(
            !apex_core::owns(past_end as *const u8),
            "the address after a segment"
        );
    }
    let huge = heap.malloc_aligned(100, SEGMENT_SIZE * 2);
    assert_eq!(huge as usize % (SEGMENT_SIZE * 2), 0);
    assert!(apex_core::owns(huge), "an over-aligned huge block's start");
    // SAFETY: live blocks, freed once.
    unsafe {
        heap.free(huge);
        heap.free(small);
    }
}

/// The carving order of 64 fresh 64-byte blocks under `m`: their offsets
/// from the lowest, in blocks, in the order they were handed out.
fn carve_order(m: Mitigations) -> Vec<usize> {
    let (_g, hb) = heap_with(m);
    let heap = hb.get();
    let p: Vec<usize> = (0..64).map(|_| heap.malloc(64) as usize).collect();
    let low = *p.iter().min().unwrap();
    p.iter().map(|&a| (a - low) / 64).collect()
}

/// Class 9: `shuffle` hands fresh blocks out in a random order inside
/// groups of four neighbours (256 bytes), groups in address order, so
/// blocks allocated together stay within a few cache lines; consecutive
/// blocks are not at a fixed distance. `wide-shuffle` mixes the whole
/// carve; without either, blocks come in address order.
#[test]
fn shuffle_mixes_groups_of_neighbours_and_wide_shuffle_the_whole_carve() {
    let plain = carve_order(Mitigations::DEFAULT - Mitigations::SHUFFLE);
    assert_eq!(plain, (0..64).collect::<Vec<_>>());

    let mut shuffled_groups = 0;
    for _ in 0..8 {
        let order = carve_order(Mitigations::DEFAULT);
        for (g, group) in order.chunks(4).enumerate() {
            let mut sorted = group.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (4 * g..4 * g + 4).collect::<Vec<_>>(), "{order:?}");
            shuffled_groups += usize::from(sorted != group);
        }
    }
    // 128 groups, each left in order with probability 1/24.
    assert!(
        shuffled_groups > 64,
        "{shuffled_groups} of 128 groups shuffled"
    );

    let wide = carve_order(Mitigations::DEFAULT | Mitigations::WIDE_SHUFFLE);
    let spread = wide
        .chunks(4)
        .filter(|g| g.iter().max().unwrap() - g.iter().min().unwrap() > 3)
        .count();
    assert!(
        spread > 8,
        "wide shuffle kept neighbours together: {wide:?}"
    );
}

/// A block in the second slice of a slab of several (40 KB blocks: three
/// in a two-slice slab) freed twice: the free path that serves such
/// blocks out of the fast path still finds the double free, with the
/// bitmap and without it.
#[test]
#[should_panic(expected = "apexalloc: fatal: double free (0x")]
fn block_in_a_later_slice_freed_twice_is_fatal() {
    later_slice_freed_twice(Mitigations::DEFAULT);
}

#[test]
#[should_panic(expected = "apexalloc: fatal: double free (0x")]
fn block_in_a_later_slice_freed_twice_without_bitmap_is_fatal() {
    later_slice_freed_twice(Mitigations::DEFAULT - Mitigations::BITMAP);
}

fn later_slice_freed_twice(m: Mitigations) {
    let (_g, hb) = heap_with(m);
    let heap = hb.get();
    let blocks: Vec<*mut u8> = (0..3).map(|_| heap.malloc(40_000)).collect();
    let slab = blocks.iter().map(|&p| p as usize).min().unwrap() & !(SLICE_SIZE - 1);
    let later = *blocks
        .iter()
        .find(|&&p| p as usize >= slab + SLICE_SIZE)
        .expect("a block in the slab's second slice");
    // SAFETY: deliberately freed twice.
    unsafe {
        heap.free(later);
        heap.free(later);
    }
}
