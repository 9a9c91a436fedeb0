//! The cross-thread hand-off of a block of a parked (full) span when its
//! owner gives the span up in the middle: a remote free has found the span
//! in `Notify` and is about to claim the hand-off, and right then the
//! owning thread exits (its segments are abandoned with their spans reset
//! to `Normal`). The free must still land, once, on the span's remote
//! list for the adopter; taking it for a double free killed programs that
//! free blocks kept from threads that just exited.

mod common;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use apex_core::fork::HandoffPoint;
use apex_core::{snapshot, usable_size, Heap};
use common::{instance, HeapBox};

/// The heap the hook destroys (null once done).
static OWNER: AtomicPtr<Heap> = AtomicPtr::new(std::ptr::null_mut());
static STARTS: AtomicUsize = AtomicUsize::new(0);

/// At the start of the hand-off, the owner exits.
fn owner_exits_now(at: HandoffPoint) {
    if at != HandoffPoint::Start {
        return;
    }
    STARTS.fetch_add(1, Ordering::Relaxed);
    let h = OWNER.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if let Some(h) = NonNull::new(h) {
        // SAFETY: the heap came from `Heap::create` and nothing uses it
        // after this.
        unsafe { Heap::destroy(h) };
    }
}

#[test]
fn owner_exiting_during_a_large_hand_off_is_not_a_double_free() {
    let (_p, g) = instance();
    g.set_handoff_hook(owner_exits_now);
    let owner = Heap::create(g).expect("heap");
    // SAFETY: a fresh heap, used only here and by the hook.
    let large = unsafe { (*owner.as_ptr()).malloc(900 * 1024) };
    assert!(!large.is_null());
    // A second live block keeps the segment in use after the large one
    // goes, so the adopter has a segment to keep.
    // SAFETY: as above.
    let small = unsafe { (*owner.as_ptr()).malloc(64) };
    OWNER.store(owner.as_ptr(), Ordering::Release);

    let freer = HeapBox::new(g);
    // SAFETY: a live block, freed once, from a heap that does not own it.
    unsafe { freer.get().free(large) };
    assert_eq!(
        STARTS.load(Ordering::Relaxed),
        1,
        "the free took the hand-off"
    );
    assert!(OWNER.load(Ordering::Acquire).is_null(), "the owner exited");
    assert_eq!(snapshot(g).abandoned, 1);

    // The adopter collects the free: the large block's memory is free
    // again, and only the small block is live.
    let adopter = HeapBox::new(g);
    let probe = adopter.get().malloc(64);
    assert_eq!(snapshot(g).abandoned, 0, "the segment was adopted");
    adopter.get().verify().expect("adopter's heap");
    g.verify().expect("shared state");
    // SAFETY: live blocks of this instance.
    let live = unsafe { usable_size(small) + usable_size(probe) } as u64;
    assert_eq!(snapshot(g).allocated, live, "the large block is freed");
    // The large block's slices are reusable: a block of the same size fits
    // in the adopted segment without a new one.
    let segments = snapshot(g).segments;
    let again = adopter.get().malloc(900 * 1024);
    assert!(!again.is_null());
    assert_eq!(snapshot(g).segments, segments);
    // SAFETY: live blocks, freed once each.
    unsafe {
        adopter.get().free(again);
        adopter.get().free(probe);
        adopter.get().free(small);
    }
    assert_eq!(snapshot(g).allocated, 0);
}

/// The block another heap frees when the hook fires (0: none).
static PENDING_FREE: AtomicUsize = AtomicUsize::new(0);
static FREER: AtomicPtr<Heap> = AtomicPtr::new(std::ptr::null_mut());

/// While a heap adopts the block's segment, another heap frees the block.
fn free_while_adopting(at: HandoffPoint) {
    if at != HandoffPoint::Adopting {
        return;
    }
    let p = PENDING_FREE.swap(0, Ordering::AcqRel);
    let freer = FREER.load(Ordering::Acquire);
    if p != 0 && !freer.is_null() {
        // SAFETY: a live block, freed once, by a heap that does not own it
        // and is used by nobody else meanwhile.
        unsafe { (*freer).free(p as *mut u8) };
    }
}

#[test]
fn a_free_landing_while_its_segment_is_adopted_is_collected_whole() {
    let (_p, g) = instance();
    g.set_handoff_hook(free_while_adopting);
    let owner = HeapBox::new(g);
    let large = owner.get().malloc(900 * 1024);
    let small = owner.get().malloc(64);
    // SAFETY: the owner exits with both blocks live: its segment is
    // abandoned.
    unsafe { Heap::destroy(owner.0) };
    assert_eq!(snapshot(g).abandoned, 1);

    let freer = HeapBox::new(g);
    FREER.store(freer.0.as_ptr(), Ordering::Release);
    PENDING_FREE.store(large as usize, Ordering::Release);
    let adopter = HeapBox::new(g);
    let probe = adopter.get().malloc(64);
    assert_eq!(PENDING_FREE.load(Ordering::Acquire), 0, "the hook ran");
    assert_eq!(snapshot(g).abandoned, 0, "the segment was adopted");
    // The free was collected as a sweep collects one: its live bit is
    // clear (a stale bit in the free span would make the next block
    // carved there look live, and be reported as list corruption).
    adopter.get().verify().expect("adopter's heap");
    g.verify().expect("shared state");
    // SAFETY: live blocks of this instance.
    let live = unsafe { usable_size(small) + usable_size(probe) } as u64;
    assert_eq!(snapshot(g).allocated, live, "the large block is freed");
    // Blocks carved over the freed span are handed out normally.
    let mut blocks = Vec::new();
    for _ in 0..64 {
        let p = adopter.get().malloc(16 * 1024);
        assert!(!p.is_null());
        blocks.push(p);
    }
    adopter.get().verify().expect("adopter's heap after reuse");
    // SAFETY: live blocks, freed once each.
    unsafe {
        for p in blocks {
            adopter.get().free(p);
        }
        adopter.get().free(probe);
        adopter.get().free(small);
    }
    assert_eq!(snapshot(g).allocated, 0);
}
