//! The kernel integration guide (`bare-metal/README.md`) as a kernel that
//! runs: the allocator set up the way a kernel of your own would, then
//! checked.
//!
//! `main` is the boot sequence:
//!
//! 1. RAM goes to a buddy page allocator (`BuddyProvider::add_region`);
//! 2. an early heap is carved from it (`EarlyHeap::init_from`), and early
//!    boot allocates from it;
//! 3. the CPU registers for a dense index
//!    (`percpu::register_current_cpu_fast`);
//! 4. the kernel hands over to the per-CPU heaps (`HandOver::switch` to
//!    `KernelAlloc`): new blocks come from them, blocks from before still go
//!    back to the early heap.
//!
//! The tests then check that the early blocks survived the hand-over, that
//! new blocks come from the per-CPU heaps, that two CPUs allocate and free
//! each other's blocks, and that memory goes back to the buddy allocator.
//!
//! One difference from a kernel of your own: every kernel in this crate
//! links `apex-qemu`, whose early heap is already the `#[global_allocator]`
//! (and whose start-up gave it all of RAM). So [`ALLOC`] below is called
//! through `GlobalAlloc` directly, and the RAM of step 1 is a block taken
//! from that start-up provider, standing in for the firmware memory map.
//! In your kernel, put `#[global_allocator]` on `ALLOC` and feed
//! `KERNEL_PROVIDER` from the memory map.
//!
//! Runs with 2 CPUs.

#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use apex_bare_metal::kernel_alloc::SLAB_LIMIT;
use apex_bare_metal::percpu::{self, Registered};
use apex_bare_metal::{BuddyProvider, EarlyHeap, HandOver, KernelAlloc};
use apex_core::provider::{PageProvider, PAGE_SIZE};
use apex_core::Global;
use apex_qemu::{entry_point, println, qemu_smp, run_tests, smp, BootInfo, Test};
use spin::Mutex;

entry_point!(main);
qemu_smp!(2);

// ---------------------------------------------------------------------------
// The allocator, as a kernel declares it
// ---------------------------------------------------------------------------

/// Physical pages: a buddy allocator over the RAM the kernel gives it.
static KERNEL_PROVIDER: BuddyProvider = BuddyProvider::new();
/// The allocator core over those pages.
static GLOBAL: Global = Global::new(&KERNEL_PROVIDER);
/// One heap per CPU, which `percpu`'s registration names (read inline).
static PER_CPU: KernelAlloc<Registered> = KernelAlloc::with_index(&GLOBAL, Registered, SLAB_LIMIT);
/// The heap for early boot, before the per-CPU heaps are switched on.
static EARLY: EarlyHeap = EarlyHeap::empty();

/// The kernel's allocator: `#[global_allocator]` in a kernel of your own.
static ALLOC: HandOver<Registered> = HandOver::new(&EARLY, &PER_CPU);

/// Size of the early heap.
const EARLY_HEAP_SIZE: usize = 1 << 20;

/// RAM for the buddy allocator: 4 MiB segments (`small-segments`), a few
/// per CPU, plus the early heap.
const RAM_SIZE: usize = 64 << 20;

/// What the provider calls on misuse (a bad release): report and fail.
fn fatal(msg: &str) -> ! {
    apex_qemu::test_runner::report_failure();
    println!("\nfatal: {msg}");
    apex_qemu::exit::exit(apex_qemu::exit::ExitCode::Failure)
}

// ---------------------------------------------------------------------------
// Boot
// ---------------------------------------------------------------------------

/// Blocks early boot allocated: (address, size).
static EARLY_BLOCKS: Mutex<[(usize, usize); 32]> = Mutex::new([(0, 0); 32]);
/// Early-heap bytes in use before early boot allocated anything.
static EARLY_BASELINE: AtomicUsize = AtomicUsize::new(0);

fn main(info: &'static BootInfo) -> ! {
    // 1. RAM to the buddy allocator. A real kernel walks the firmware memory
    // map and adds every usable range, minus its own image and boot data
    // (`apex_bare_metal::ranges::for_each_usable` cuts such holes).
    let ram = info
        .provider()
        .reserve(RAM_SIZE, PAGE_SIZE)
        .expect("RAM for the example's buddy allocator");
    // SAFETY: identity-mapped RAM (the boot page tables map 0..4 GiB), and
    // this reservation is never released: the buddy allocator owns it for
    // good.
    let managed = unsafe { KERNEL_PROVIDER.add_region(ram.as_ptr() as usize, RAM_SIZE) }
        .expect("a region the buddy allocator accepts");
    KERNEL_PROVIDER.set_fatal_handler(fatal);
    println!(
        "buddy allocator: {} MiB managed, {} MiB free",
        managed >> 20,
        KERNEL_PROVIDER.free_bytes() >> 20
    );

    // 2. The early heap, and early boot using it.
    EARLY
        .init_from(&KERNEL_PROVIDER, EARLY_HEAP_SIZE)
        .expect("early heap");
    EARLY_BASELINE.store(EARLY.used(), Ordering::Relaxed);
    for (i, slot) in EARLY_BLOCKS.lock().iter_mut().enumerate() {
        let size = 24 + 40 * i;
        // SAFETY: a non-zero size with alignment 8.
        let p = unsafe { ALLOC.alloc(Layout::from_size_align(size, 8).unwrap()) };
        assert!(!p.is_null(), "early heap out of memory");
        // SAFETY: `p` is `size` writable bytes.
        unsafe { p.write_bytes(i as u8, size) };
        *slot = (p as usize, size);
    }

    // 3. This CPU's index (the others register as they come up; see
    // `second_cpu`). Registering again returns the same index.
    // SAFETY: ring 0, on this CPU; nothing else uses IA32_TSC_AUX.
    let cpu = unsafe { percpu::register_current_cpu_fast() }.expect("at most MAX_CPUS CPUs");
    assert_eq!(percpu::current_cpu_index(), Some(cpu));

    // 4. The hand-over.
    ALLOC.switch();

    run_tests(info, TESTS)
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

const TESTS: &[Test] = &[
    (
        "early_blocks_survive_the_hand_over",
        early_blocks_survive_the_hand_over,
    ),
    (
        "new_blocks_come_from_the_per_cpu_heaps",
        new_blocks_come_from_the_per_cpu_heaps,
    ),
    (
        "two_cpus_allocate_and_free_each_others_blocks",
        two_cpus_allocate_and_free_each_others_blocks,
    ),
    (
        "memory_goes_back_to_the_buddy",
        memory_goes_back_to_the_buddy,
    ),
];

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn early_blocks_survive_the_hand_over(_info: &'static BootInfo) {
    let mut blocks = EARLY_BLOCKS.lock();
    for (i, &(addr, size)) in blocks.iter().enumerate() {
        assert!(
            EARLY.contains(addr as *const u8),
            "an early block outside the early heap"
        );
        // SAFETY: a live early block of `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, size) };
        assert!(
            bytes.iter().all(|&b| b == i as u8),
            "early block {i} changed"
        );
    }
    // Half of them grow: they move to the per-CPU heaps with their contents.
    for (i, slot) in blocks.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
        let (addr, size) = *slot;
        // SAFETY: a live block of ALLOC with this layout; non-zero new size.
        let q = unsafe { ALLOC.realloc(addr as *mut u8, layout(size), 2 * size) };
        assert!(!q.is_null());
        assert!(
            !EARLY.contains(q),
            "a grown early block stayed in the early heap"
        );
        // SAFETY: the new block holds at least `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(q, size) };
        assert!(
            bytes.iter().all(|&b| b == i as u8),
            "realloc lost block {i}"
        );
        *slot = (q as usize, 2 * size);
    }
    // All of them freed: each goes back to where it came from.
    for &(addr, size) in blocks.iter() {
        // SAFETY: live blocks of ALLOC, each freed once.
        unsafe { ALLOC.dealloc(addr as *mut u8, layout(size)) };
    }
    *blocks = [(0, 0); 32];
    assert_eq!(
        EARLY.used(),
        EARLY_BASELINE.load(Ordering::Relaxed),
        "early blocks did not go back to the early heap"
    );
}

fn new_blocks_come_from_the_per_cpu_heaps(_info: &'static BootInfo) {
    let before = PER_CPU.stats();
    let early_used = EARLY.used();
    let mut blocks = [ptr::null_mut::<u8>(); 64];
    for (i, p) in blocks.iter_mut().enumerate() {
        // SAFETY: non-zero sizes.
        *p = unsafe { ALLOC.alloc(layout(16 << (i % 12))) };
        assert!(!p.is_null());
        assert!(!EARLY.contains(*p), "a new block from the early heap");
    }
    assert_eq!(EARLY.used(), early_used, "the early heap still serves");
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { ALLOC.dealloc(p, layout(16 << (i % 12))) };
    }
    let after = PER_CPU.stats();
    assert_eq!(after.mallocs - before.mallocs, 64);
    assert_eq!(after.frees - before.frees, 64);
}

/// Blocks the boot CPU leaves for the second CPU to free.
static HANDED: Mutex<[usize; 256]> = Mutex::new([0; 256]);
static SECOND_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The second CPU's work. `apex-qemu`'s AP entry registered it already; an
/// AP of your own kernel calls `percpu::register_current_cpu_fast()` first
/// thing.
fn second_cpu(index: usize) {
    // SAFETY: ring 0, on this CPU; nothing else uses IA32_TSC_AUX.
    assert_eq!(unsafe { percpu::register_current_cpu_fast() }, Some(index));
    SECOND_CPU.store(index, Ordering::Release);
    // Free the boot CPU's blocks (remote frees), then churn on its own heap.
    for &p in HANDED.lock().iter() {
        // SAFETY: blocks of ALLOC allocated with `layout(100)`, freed once.
        unsafe { ALLOC.dealloc(p as *mut u8, layout(100)) };
    }
    for round in 0..2000 {
        let size = 8 + round % 3000;
        // SAFETY: non-zero size.
        let p = unsafe { ALLOC.alloc(layout(size)) };
        assert!(!p.is_null());
        // SAFETY: `p` is `size` writable bytes; freed once.
        unsafe {
            p.write_bytes(0x5a, size);
            ALLOC.dealloc(p, layout(size));
        }
    }
}

fn two_cpus_allocate_and_free_each_others_blocks(_info: &'static BootInfo) {
    let before = PER_CPU.stats();
    for p in HANDED.lock().iter_mut() {
        // SAFETY: non-zero size.
        *p = unsafe { ALLOC.alloc(layout(100)) } as usize;
        assert!(*p != 0);
    }
    let aps = smp::start_aps(second_cpu);
    assert_eq!(aps, 1, "the second CPU did not come online");
    smp::wait_for_aps(aps);
    let index = SECOND_CPU.load(Ordering::Acquire);
    assert!(
        index != 0 && index < percpu::MAX_CPUS,
        "second CPU index {index}"
    );
    assert_eq!(percpu::registered_cpus(), 2);
    let after = PER_CPU.stats();
    assert_eq!(after.mallocs - before.mallocs, after.frees - before.frees);
    assert!(
        after.remote_frees > before.remote_frees,
        "no block was freed by the other CPU"
    );
}

fn memory_goes_back_to_the_buddy(_info: &'static BootInfo) {
    let before = KERNEL_PROVIDER.free_bytes();
    let mut blocks = [ptr::null_mut::<u8>(); 200];
    for p in blocks.iter_mut() {
        // SAFETY: non-zero size.
        *p = unsafe { ALLOC.alloc(layout(64 << 10)) };
        assert!(!p.is_null());
    }
    assert!(KERNEL_PROVIDER.free_bytes() < before, "no pages were taken");
    for &p in blocks.iter() {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { ALLOC.dealloc(p, layout(64 << 10)) };
    }
    PER_CPU.release_now();
    assert!(
        KERNEL_PROVIDER.free_bytes() >= before,
        "pages not returned: {} before, {} after",
        before,
        KERNEL_PROVIDER.free_bytes()
    );
    KERNEL_PROVIDER.lock().verify().unwrap();
}
