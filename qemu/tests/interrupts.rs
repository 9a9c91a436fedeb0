//! `KernelAlloc` as the real `#[global_allocator]`, and allocation from an
//! interrupt handler.
//!
//! The library's global allocator is a `HandOver` from the early heap to
//! the per-CPU heaps `PER_CPU`. The first test switches it and checks that
//! `Box`, `Vec` and `String` come from the per-CPU heaps while blocks from
//! before the switch keep their contents and go back to the early heap. The
//! second runs a content-checked workload through the global allocator
//! while the local APIC timer fires every few microseconds and its handler
//! allocates and frees through the same allocator: it must often land
//! while the interrupted code is inside the allocator (the per-CPU heap's
//! re-entrancy flag sends it to the shared heap), never deadlock on a lock
//! and never corrupt a block. Both sides also allocate huge blocks, which
//! take the core's shared locks and the buddy allocator's: without
//! interrupts masked around those, the handler soon spins on a lock its own
//! CPU holds and the kernel hangs.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use apex_qemu::memory::{ALLOC, HEAP, PER_CPU};
use apex_qemu::rng::XorShift;
use apex_qemu::{entry_point, interrupts, println, run_tests, BootInfo, Test};

entry_point!(main);

const TESTS: &[Test] = &[
    (
        "global_allocator_hands_over_to_kernel_alloc",
        global_allocator_hands_over_to_kernel_alloc,
    ),
    (
        "timer_interrupt_allocates_inside_the_allocator",
        timer_interrupt_allocates_inside_the_allocator,
    ),
];

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

fn global_allocator_hands_over_to_kernel_alloc(_info: &'static BootInfo) {
    assert!(!ALLOC.switched());
    // Boot-time data from the early heap.
    let early_used = HEAP.used();
    let early_vec: Vec<u64> = (0..1000).collect();
    let early_box = Box::new([7u8; 300]);
    let mut early_grown: Vec<u32> = Vec::with_capacity(4);
    early_grown.extend([1, 2, 3, 4]);
    for p in [
        early_vec.as_ptr() as *const u8,
        early_box.as_ptr(),
        early_grown.as_ptr() as *const u8,
    ] {
        assert!(
            HEAP.contains(p),
            "before the switch, blocks come from the early heap"
        );
    }
    assert!(HEAP.used() > early_used);

    ALLOC.switch();
    let before = PER_CPU.stats();
    let boxed = Box::new(42u64);
    let text = String::from("per-CPU heaps");
    let mut map = BTreeMap::new();
    for i in 0..200u32 {
        map.insert(i, i * 3);
    }
    assert!(!HEAP.contains(&*boxed as *const u64 as *const u8));
    assert!(!HEAP.contains(text.as_ptr()));
    assert!(PER_CPU.stats().mallocs > before.mallocs + 10);
    let early_now = HEAP.used();

    // Growing an early block moves it to the per-CPU heaps.
    early_grown.extend(5..=5000);
    assert!(!HEAP.contains(early_grown.as_ptr() as *const u8));
    assert_eq!(&early_grown[..5], &[1, 2, 3, 4, 5]);
    assert!(HEAP.used() < early_now, "the old early block went back");
    // The rest kept their contents and go back to the early heap.
    assert!(early_vec.iter().enumerate().all(|(i, &v)| v == i as u64));
    assert!(early_box.iter().all(|&b| b == 7));
    drop(early_vec);
    drop(early_box);
    assert_eq!(
        HEAP.used(),
        early_used,
        "every early block went back to the early heap"
    );
    assert_eq!(map.get(&199), Some(&597));
    drop((boxed, text, map, early_grown));
}

/// Timer interrupts whose handler allocated.
static HANDLED: AtomicUsize = AtomicUsize::new(0);

/// Huge blocks (above a best-fit chunk) need a chunk of their own from the
/// page provider, under the buddy allocator's lock, whenever the one empty
/// chunk a heap keeps is taken (by the interrupted code's huge block, or
/// the handler's on the shared heaps).
const HUGE: usize = 3 << 20;

/// The timer handler: allocates and checks a few blocks through the global
/// allocator; every eighth time also a huge block, which needs the locks
/// that the interrupted code may be inside of.
fn on_timer() {
    let n = HANDLED.fetch_add(1, Ordering::Relaxed);
    let v: Vec<u64> = (0..(8 + n % 64) as u64).map(|i| i ^ 0x5a5a).collect();
    let b = Box::new([n as u8; 48]);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ 0x5a5a));
    assert!(b.iter().all(|&x| x == n as u8));
    if n.is_multiple_of(8) {
        huge_block(n as u8);
    }
}

/// Allocates a huge block, writes its first and last bytes (not all of
/// them: that would take long in an emulated CPU), checks and frees it.
fn huge_block(tag: u8) {
    let mut huge: Vec<u8> = Vec::with_capacity(HUGE);
    let p = huge.as_mut_ptr();
    // SAFETY: the vector's capacity is HUGE bytes.
    unsafe {
        p.write(tag);
        p.add(HUGE - 1).write(tag);
        assert!(p.read() == tag && p.add(HUGE - 1).read() == tag);
    }
    drop(huge);
}

/// One live block of the workload: its contents are its tag, repeated.
struct Slot(Box<[u64]>);

impl Slot {
    fn new(len: usize, tag: u64) -> Self {
        Slot(alloc::vec![tag; len].into_boxed_slice())
    }

    fn check(&self) {
        let tag = self.0[0];
        assert!(self.0.iter().all(|&x| x == tag), "a block was overwritten");
    }
}

fn timer_interrupt_allocates_inside_the_allocator(_info: &'static BootInfo) {
    if !ALLOC.switched() {
        ALLOC.switch();
    }
    let before = PER_CPU.stats();
    let reentries = PER_CPU.reentries();
    let mut rng = XorShift::new(0x1e7);
    let mut slots: Vec<Slot> = (0..256).map(|i| Slot::new(1 + i % 40, i as u64)).collect();
    // SAFETY: the boot CPU, ready for interrupts; nothing else here uses
    // the IDT, the PICs or the APIC timer.
    unsafe { interrupts::start_timer(20_000, on_timer) };
    let mut rounds = 0u64;
    // Until enough interrupts hit the allocator, within a bound.
    while rounds < 3_000_000
        && (HANDLED.load(Ordering::Relaxed) < 2000 || PER_CPU.reentries() - reentries < 50)
    {
        let i = rng.below(slots.len());
        slots[i].check();
        let max = if rng.below(8) == 0 { 2000 } else { 64 };
        let len = 1 + rng.below(max);
        slots[i] = Slot::new(len, rounds);
        if rounds.is_multiple_of(32) {
            // A huge block: the buddy allocator's lock and the core's
            // shared state, held with interrupts masked, so the handler's
            // huge blocks never wait for this CPU.
            huge_block(rounds as u8);
        }
        rounds += 1;
    }
    interrupts::stop_timer();
    let handled = HANDLED.load(Ordering::Relaxed);
    let hits = PER_CPU.reentries() - reentries;
    println!(
        "{rounds} rounds, {handled} timer interrupts, {hits} handler calls found the heap busy"
    );
    for s in &slots {
        s.check();
    }
    drop(slots);
    assert!(handled >= 2000, "only {handled} timer interrupts");
    assert!(
        hits >= 50,
        "only {hits} handler calls arrived inside the allocator"
    );
    let after = PER_CPU.stats();
    assert_eq!(
        after.mallocs - before.mallocs,
        after.frees - before.frees,
        "every block of the workload and the handler was freed once"
    );
}
