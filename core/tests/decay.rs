//! Decay: free memory beyond a heap's resident reserve goes back to the
//! provider once its segment has been quiet for the purge delay; memory a
//! heap keeps cycling through stays resident; abandoned segments of exited
//! threads are purged too.
//!
//! The burst sizes and reserves here are those of 32 MiB segments; the
//! kernel build (`small-segments`) has its decay tested in the QEMU kernels
//! (`cross_cpu_reclaim`, `kernel_alloc`'s memory going back to the buddy).
#![cfg(not(feature = "small-segments"))]

mod common;

use std::sync::atomic::Ordering;

use apex_core::{snapshot, Global, Heap};
use common::{instance_with_clock, HeapBox, TestProvider};

const MIB: usize = 1 << 20;
const DELAY_MS: u64 = 10;

fn decommitted(p: &TestProvider) -> usize {
    p.decommitted.load(Ordering::Relaxed)
}

/// Allocates `total` bytes in blocks of `size` and frees them again.
fn burst(heap: &mut Heap, size: usize, total: usize) {
    let blocks: Vec<*mut u8> = (0..total / size)
        .map(|_| {
            let b = heap.malloc(size);
            assert!(!b.is_null());
            // SAFETY: a fresh block of `size` bytes; touch it like a user.
            unsafe { b.write_bytes(0x77, size) };
            b
        })
        .collect();
    for b in blocks {
        // SAFETY: live blocks, freed once.
        unsafe { heap.free(b) };
    }
}

/// An instance with a hand-moved clock and the test's purge delay, and a
/// heap of it.
fn setup() -> (&'static TestProvider, &'static Global, HeapBox) {
    let (p, g) = instance_with_clock();
    g.options.purge_delay.store(DELAY_MS, Ordering::Relaxed);
    (p, g, HeapBox::new(g))
}

#[test]
fn a_freed_burst_is_returned_after_the_delay() {
    let (p, g, hb) = setup();
    let heap = hb.get();
    // A live block keeps the segment (and so the spans) in the heap.
    let keep = heap.malloc(100);
    burst(heap, 96 * 1024, 24 * MIB);
    heap.decay();
    assert_eq!(decommitted(p), 0, "purged before the delay passed");
    p.advance(DELAY_MS);
    heap.decay();
    let back = decommitted(p);
    // Everything beyond the 1 MiB minimum reserve goes back.
    assert!(back >= 22 * MIB, "only {back} bytes decommitted");
    assert_eq!(snapshot(g).segments, 1);
    // SAFETY: live block.
    unsafe { heap.free(keep) };
}

#[test]
fn a_small_fluctuation_stays_resident() {
    let (p, _g, hb) = setup();
    let heap = hb.get();
    let keep = heap.malloc(100);
    for _ in 0..5 {
        burst(heap, 96 * 1024, 768 * 1024);
        p.advance(DELAY_MS * 2);
        heap.decay();
    }
    assert_eq!(
        decommitted(p),
        0,
        "memory within the reserve was decommitted and would fault in again"
    );
    // SAFETY: live block.
    unsafe { heap.free(keep) };
}

#[test]
fn a_segment_in_active_use_is_purged_later_but_not_never() {
    let (p, _g, hb) = setup();
    let heap = hb.get();
    let keep = heap.malloc(100);
    burst(heap, 96 * 1024, 24 * MIB);
    // Frees keep arriving every half delay: the deadline moves out...
    let mut waited = 0;
    while decommitted(p) == 0 && waited < 20 * DELAY_MS {
        p.advance(DELAY_MS / 2);
        waited += DELAY_MS / 2;
        burst(heap, 96 * 1024, 96 * 1024);
        heap.decay();
    }
    assert!(waited > DELAY_MS, "purged while the segment was busy");
    // ...but only up to a bound.
    assert!(
        decommitted(p) >= 20 * MIB,
        "a busy segment hoards forever: {} after {waited} ms",
        decommitted(p)
    );
    // SAFETY: live block.
    unsafe { heap.free(keep) };
}

#[test]
fn abandoned_segments_are_purged_without_adoption() {
    let (p, g) = instance_with_clock();
    g.options.purge_delay.store(DELAY_MS, Ordering::Relaxed);
    let exiting = Heap::create(g).expect("heap");
    // SAFETY: the heap is used only here, by this thread.
    let live = unsafe {
        let h = &mut *exiting.as_ptr();
        let live = h.malloc(100);
        burst(h, 96 * 1024, 24 * MIB);
        live
    };
    // SAFETY: nothing uses the heap afterwards; `live` stays valid.
    unsafe { Heap::destroy(exiting) };
    assert_eq!(snapshot(g).abandoned, 1);
    // At exit, free memory beyond a reserve the size of the segment's used
    // part (at least 1 MiB) goes back at once, the lowest slices stay for
    // the next owner...
    let at_exit = decommitted(p);
    assert!(
        (22 * MIB..=23 * MIB).contains(&at_exit),
        "trimmed at exit to the reserve: {at_exit}"
    );
    let hb = HeapBox::new(g);
    let other = hb.get();
    other.decay();
    assert_eq!(decommitted(p), at_exit, "purged before the delay passed");
    // ...until the purge delay passes without anybody adopting it.
    p.advance(100 * DELAY_MS);
    other.decay();
    assert!(
        decommitted(p) >= at_exit + MIB / 2,
        "exited thread's reserve stays resident: {} after {at_exit}",
        decommitted(p)
    );
    assert_eq!(
        snapshot(g).abandoned,
        1,
        "the segment was adopted, not purged"
    );
    // The live block is still there and can be freed by another heap.
    // SAFETY: live block from the exited heap.
    unsafe { other.free(live) };
}

#[test]
fn abandoned_segments_whose_blocks_were_all_freed_are_released() {
    let (p, g) = instance_with_clock();
    g.options.purge_delay.store(DELAY_MS, Ordering::Relaxed);
    let exiting = Heap::create(g).expect("heap");
    // Blocks of several classes, one large block, all left live at exit.
    // SAFETY: the heap is used only here, by this thread.
    let live: Vec<*mut u8> = unsafe {
        let h = &mut *exiting.as_ptr();
        let mut v: Vec<*mut u8> = (0..300).map(|i| h.malloc(16 + i * 40)).collect();
        v.push(h.malloc(700 * 1024));
        v
    };
    assert!(live.iter().all(|b| !b.is_null()));
    // SAFETY: nothing uses the heap afterwards; the blocks stay valid.
    unsafe { Heap::destroy(exiting) };
    assert_eq!(snapshot(g).abandoned, 1);
    let segments = snapshot(g).segments;
    let hb = HeapBox::new(g);
    let other = hb.get();
    // Every block but one freed by another thread: the segment stays.
    for &b in &live[1..] {
        // SAFETY: live blocks, freed once.
        unsafe { other.free(b) };
    }
    p.advance(100 * DELAY_MS);
    other.decay();
    assert_eq!(snapshot(g).abandoned, 1, "released with a block still live");
    // The last one: the segment is released without being adopted.
    // SAFETY: the last live block.
    unsafe { other.free(live[0]) };
    other.decay();
    let s = snapshot(g);
    assert_eq!(
        s.abandoned, 0,
        "a segment with no live block stays abandoned"
    );
    assert_eq!(s.adopted_total, 0, "it was adopted, not released");
    assert_eq!(s.segments, segments - 1);
    // The blocks were freed remotely and never collected one by one: the
    // recycled segment must still come back with a clear live-block
    // bitmap (a stale bit would read as a forged free list).
    let again: Vec<*mut u8> = (0..3000)
        .map(|i| other.malloc(16 + (i % 300) * 40))
        .collect();
    assert!(again.iter().all(|b| !b.is_null()));
    for b in again {
        // SAFETY: live blocks, freed once.
        unsafe { other.free(b) };
    }
}

#[test]
fn a_pinned_heap_keeps_its_segment_but_returns_its_memory() {
    let (p, g, hb) = setup();
    let heap = hb.get();
    assert!(heap.pin_segment());
    assert_eq!(snapshot(g).segments, 1);
    burst(heap, 96 * 1024, 24 * MIB);
    p.advance(DELAY_MS);
    heap.decay();
    heap.release_now();
    // The memory went back, the segment (address space) stayed.
    assert!(
        decommitted(p) >= 22 * MIB,
        "only {} decommitted",
        decommitted(p)
    );
    assert_eq!(snapshot(g).segments, 1, "a pinned heap gave up its segment");
    // Without the pin the same heap's empty segment goes.
    let other = HeapBox::new(g);
    let h2 = other.get();
    burst(h2, 96 * 1024, 4 * MIB);
    h2.release_now();
    assert_eq!(snapshot(g).segments, 1, "an unpinned empty segment stayed");
}
