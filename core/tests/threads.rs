//! Heaps on real threads, checked by their own invariant checker: blocks
//! handed between threads and freed remotely (into queued slabs and into
//! parked full slabs, which takes the notify hand-off), heaps destroyed
//! with live blocks (abandon) and new heaps adopting their segments. At each
//! quiescent point every thread verifies its own heap and one verifies the
//! shared state. A second test breaks invariants on purpose and expects the
//! checker to name them.

mod common;

use std::sync::{Barrier, Mutex};
use std::thread;

use apex_core::layout::segment_base_of;
use apex_core::segment::Segment;
use apex_core::span::{Span, SpanKind};
use apex_core::{snapshot, usable_size, Global, Heap};
use common::{instance, HeapBox, Rng};

const THREADS: usize = 4;
const ROUNDS: usize = 12;

/// A block and the byte pattern it holds.
#[derive(Clone, Copy)]
struct Blk {
    addr: usize,
    size: usize,
    seed: u8,
}

// SAFETY: blocks are plain addresses handed between threads with their
// ownership.
unsafe impl Send for Blk {}

fn fill(b: Blk) {
    for i in [0, b.size / 2, b.size - 1] {
        // SAFETY: inside the live block.
        unsafe { *(b.addr as *mut u8).add(i) = b.seed.wrapping_add(i as u8) };
    }
}

fn check(b: Blk) {
    for i in [0, b.size / 2, b.size - 1] {
        // SAFETY: inside the live block.
        let v = unsafe { *(b.addr as *const u8).add(i) };
        assert_eq!(
            v,
            b.seed.wrapping_add(i as u8),
            "block {:#x} corrupted",
            b.addr
        );
    }
}

fn verify(heap: &Heap, what: &str) {
    if let Err(e) = heap.verify() {
        let d = e.at as *const Span;
        // SAFETY: debugging aid: slab errors point at a descriptor.
        let info = unsafe {
            format!(
                "used {} capacity {} reserved {} remote {} class {} block {}",
                (*d).used,
                (*d).capacity,
                (*d).reserved,
                (*d).thread_free.count(),
                (*d).class,
                (*d).block_size
            )
        };
        panic!("{what}: {} at {:#x} ({info})", e.what, e.at);
    }
}

fn verify_global(g: &Global, what: &str) {
    if let Err(e) = g.verify() {
        panic!("{what}: {} at {:#x}", e.what, e.at);
    }
}

#[test]
fn threads_with_remote_frees_notify_and_adoption() {
    let (_p, g) = instance();
    let barrier = Barrier::new(THREADS);
    // Blocks in flight to each thread.
    let inbox: Vec<Mutex<Vec<Blk>>> = (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (barrier, inbox) = (&barrier, &inbox);
            scope.spawn(move || {
                let mut rng = Rng(0x9e37_79b9 ^ ((t as u64 + 1) * 0x1234_5678_9abc_def1));
                let mut hb = HeapBox::new(g);
                let mut kept: Vec<Blk> = Vec::new();
                for round in 0..ROUNDS {
                    let heap = hb.get();
                    // Allocate: mostly small blocks of a few classes, so
                    // slabs fill up and get parked (the next round's remote
                    // frees into them take the notify hand-off); some large.
                    for i in 0..600 {
                        let size = match rng.below(20) {
                            0 => 70_000 + rng.below(200_000) as usize,
                            1..=2 => 1 + rng.below(4000) as usize,
                            // Eight to a slab: slabs fill and are parked.
                            3..=4 => 8000,
                            _ => [24, 48, 100, 200][i % 4],
                        };
                        let p = heap.malloc(size);
                        assert!(!p.is_null());
                        // SAFETY: a live block of ours.
                        assert!(unsafe { usable_size(p) } >= size);
                        let b = Blk {
                            addr: p as usize,
                            size,
                            seed: rng.next() as u8,
                        };
                        fill(b);
                        match rng.below(3) {
                            0 => inbox[(t + 1 + rng.below(THREADS as u64 - 1) as usize) % THREADS]
                                .lock()
                                .unwrap()
                                .push(b),
                            1 => kept.push(b),
                            _ => {
                                check(b);
                                // SAFETY: live, freed once.
                                unsafe { heap.free(p) };
                            }
                        }
                    }
                    barrier.wait();
                    // Free what others sent: remote frees.
                    let mine = std::mem::take(&mut *inbox[t].lock().unwrap());
                    for b in mine {
                        check(b);
                        // SAFETY: live, handed to us, freed once.
                        unsafe { heap.free(b.addr as *mut u8) };
                    }
                    // Free some of our own.
                    for _ in 0..kept.len() / 2 {
                        let b = kept.swap_remove(rng.below(kept.len() as u64) as usize);
                        check(b);
                        // SAFETY: live, freed once.
                        unsafe { heap.free(b.addr as *mut u8) };
                    }
                    barrier.wait();
                    // Quiescent: nobody frees now. A small allocation makes
                    // the heap drain its delayed frees first.
                    let probe = heap.malloc(16);
                    // SAFETY: just allocated.
                    unsafe { heap.free(probe) };
                    verify(heap, &format!("thread {t} round {round}"));
                    if t == 0 {
                        verify_global(g, &format!("round {round}"));
                    }
                    barrier.wait();
                    // Every third round, half the threads exit: their heap
                    // is destroyed with live blocks (abandoned), and a new
                    // one adopts segments as it needs them.
                    if round % 3 == 2 && t % 2 == round % 2 {
                        let old = std::mem::replace(&mut hb, HeapBox::new(g));
                        // SAFETY: nobody uses the old heap any more; its
                        // live blocks stay valid.
                        unsafe { Heap::destroy(old.0) };
                    }
                    barrier.wait();
                }
                for b in kept {
                    check(b);
                    // SAFETY: live, freed once (possibly from another heap
                    // than the one that allocated it).
                    unsafe { hb.get().free(b.addr as *mut u8) };
                }
                barrier.wait();
                verify(hb.get(), &format!("thread {t} at the end"));
            });
        }
    });
    verify_global(g, "at the end");
    let s = snapshot(g);
    assert_eq!(s.mallocs, s.frees, "allocations and frees do not balance");
    assert!(s.remote_frees > 0, "no remote free happened");
    assert!(s.adopted_total > 0, "no segment was adopted");
}

/// The span descriptor of the live block at `p`.
fn span_of(p: *mut u8) -> *mut Span {
    let seg = segment_base_of(p as usize) as *mut Segment;
    // SAFETY: `p` is a live block of this allocator, so its segment is.
    unsafe { (*seg).page_of(p as usize).unwrap() as *const Span as *mut Span }
}

#[test]
fn the_checker_catches_broken_invariants() {
    let (_p, g) = instance();
    let hb = HeapBox::new(g);
    let heap = hb.get();
    let blocks: Vec<*mut u8> = (0..64).map(|_| heap.malloc(48)).collect();
    let large = heap.malloc(600_000);
    verify(heap, "before");
    // Usable sizes: block starts (the quick check) and everything else
    // (the full lookup) agree with the blocks.
    // SAFETY: live blocks and addresses inside them; nothing is written.
    unsafe {
        for &b in &blocks {
            assert_eq!(usable_size(b), 48);
            assert_eq!(usable_size(b.add(8)), 0, "an interior pointer has no size");
        }
        assert!(usable_size(large) >= 600_000);
        assert_eq!(usable_size(large.add(4096)), 0);
    }
    let slab = span_of(blocks[0]);

    // A block lost from the accounting (a `used` count off by one).
    // SAFETY: a test: the descriptor is ours and restored below.
    unsafe { (*slab).used += 1 };
    let e = heap.verify().expect_err("a lost block must be caught");
    assert!(e.what.contains("lost or counted twice"), "{}", e.what);
    // SAFETY: restores the count.
    unsafe { (*slab).used -= 1 };
    verify(heap, "restored count");

    // A free-list link overwritten (a use-after-free write).
    // SAFETY: a test: the block is freed, then its link word overwritten
    // and restored; the heap is not used in between.
    unsafe {
        heap.free(blocks[1]);
        let word = blocks[1] as *mut usize;
        let saved = *word;
        *word = 0x4141_4141_4141_4141;
        let e = heap
            .verify()
            .expect_err("an overwritten link must be caught");
        assert!(e.what.contains("free-list link"), "{}", e.what);
        *word = saved;
    }
    verify(heap, "restored link");

    // A broken boundary tag inside a large block's span.
    let big = span_of(large);
    // SAFETY: a test: the tag is restored below.
    unsafe {
        assert_eq!((*big).kind, SpanKind::Large);
        let inner = big.add(2);
        let saved = (*inner).slice_offset;
        (*inner).slice_offset = 7;
        let e = heap.verify().expect_err("a broken tag must be caught");
        assert!(e.what.contains("inner tag"), "{}", e.what);
        (*inner).slice_offset = saved;
    }
    verify(heap, "restored tag");

    // A slab dropped from its queue without being parked.
    // SAFETY: a test: the queue links are restored below.
    unsafe {
        let saved_free = (*slab).free;
        (*slab).in_full = true;
        let e = heap
            .verify()
            .expect_err("a parked slab in its queue must be caught");
        assert!(e.what.contains("parked slab still queued"), "{}", e.what);
        (*slab).in_full = false;
        assert_eq!((*slab).free, saved_free);
    }
    verify(heap, "restored queue");

    for (i, &b) in blocks.iter().enumerate() {
        if i != 1 {
            // SAFETY: live blocks, freed once.
            unsafe { heap.free(b) };
        }
    }
    // SAFETY: live block.
    unsafe { heap.free(large) };
    verify(heap, "after");
}
