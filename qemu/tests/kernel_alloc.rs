//! The per-CPU heaps (`KernelAlloc`) on physical memory from the buddy
//! provider: a shadow-checked random run on the boot CPU, then every CPU
//! allocating at once and freeing blocks other CPUs allocated, then pages
//! going back to the buddy allocator; the default (every block from best
//! fit) and again with small blocks in the slab heaps.
//!
//! Runs with 4 CPUs (`qemu_smp!(4)`) unless QEMU_SMP says otherwise.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use apex_bare_metal::kernel_alloc::SMALL_SLAB_LIMIT;
use apex_bare_metal::percpu;
use apex_bare_metal::KernelAlloc;
use apex_core::Global;
use apex_qemu::memory::PROVIDER;
use apex_qemu::rng::XorShift;
use apex_qemu::{entry_point, qemu_smp, run_tests, smp, BootInfo, Test};
use spin::Mutex;

entry_point!(main);
qemu_smp!(4);

static GLOBAL: Global = Global::new(&PROVIDER);
static HEAPS: KernelAlloc = KernelAlloc::new(&GLOBAL, percpu::current_cpu_index);
static SLAB_GLOBAL: Global = Global::new(&PROVIDER);
static SLAB_HEAPS: KernelAlloc =
    KernelAlloc::with_slab_limit(&SLAB_GLOBAL, percpu::current_cpu_index, SMALL_SLAB_LIMIT);
/// Which of the two the tests use.
static SLABS: AtomicBool = AtomicBool::new(false);

fn heaps() -> &'static KernelAlloc {
    if SLABS.load(Ordering::Relaxed) {
        &SLAB_HEAPS
    } else {
        &HEAPS
    }
}

const TESTS: &[Test] = &[
    ("random_run_on_one_cpu", random_run_on_one_cpu),
    (
        "all_cpus_with_cross_cpu_frees",
        all_cpus_with_cross_cpu_frees,
    ),
    (
        "memory_goes_back_to_the_buddy",
        memory_goes_back_to_the_buddy,
    ),
    (
        "random_run_with_small_blocks_in_slabs",
        random_run_with_small_blocks_in_slabs,
    ),
    (
        "memory_goes_back_with_small_blocks_in_slabs",
        memory_goes_back_with_small_blocks_in_slabs,
    ),
];

fn random_run_with_small_blocks_in_slabs(info: &'static BootInfo) {
    SLABS.store(true, Ordering::Relaxed);
    random_run_on_one_cpu(info);
    assert!(heaps().stats().segments > 0, "no slab segment was used");
}

fn memory_goes_back_with_small_blocks_in_slabs(info: &'static BootInfo) {
    SLABS.store(true, Ordering::Relaxed);
    memory_goes_back_to_the_buddy(info);
}

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    size: usize,
    align: usize,
    tag: u64,
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn random_block(rng: &mut XorShift, tag: u64) -> Block {
    let size = match rng.below(100) {
        0..=59 => 1 + rng.below(256),
        60..=92 => 1 + rng.below(16 * 1024),
        93..=98 => 1 + rng.below(600 * 1024),
        _ => (2 << 20) + rng.below(2 << 20),
    };
    let align = if rng.below(8) == 0 {
        16 << rng.below(9)
    } else {
        8
    };
    // SAFETY: non-zero size, valid alignment.
    let p = unsafe { heaps().alloc(layout(size, align)) };
    assert!(!p.is_null(), "out of memory for {size} bytes");
    assert_eq!(p as usize % align, 0, "alignment {align}");
    let b = Block {
        addr: p as usize,
        size,
        align,
        tag,
    };
    fill(b);
    b
}

fn pattern(b: Block, off: usize) -> u8 {
    (b.tag ^ (b.addr + off) as u64 ^ ((b.addr + off) as u64 >> 8)) as u8
}

fn offsets(size: usize) -> impl Iterator<Item = usize> {
    (0..size).step_by(509).chain(core::iter::once(size - 1))
}

fn fill(b: Block) {
    for off in offsets(b.size) {
        // SAFETY: inside the live block.
        unsafe { ((b.addr + off) as *mut u8).write(pattern(b, off)) };
    }
}

fn check(b: Block) {
    for off in offsets(b.size) {
        // SAFETY: inside the live block.
        let v = unsafe { ((b.addr + off) as *const u8).read() };
        assert_eq!(v, pattern(b, off), "block {:#x}+{off} overwritten", b.addr);
    }
}

fn free(b: Block) {
    check(b);
    // SAFETY: a live block of these heaps, freed once.
    unsafe { heaps().dealloc(b.addr as *mut u8, layout(b.size, b.align)) };
}

fn assert_disjoint(blocks: &mut [Block]) {
    blocks.sort_unstable_by_key(|b| b.addr);
    for w in blocks.windows(2) {
        assert!(
            w[0].addr + w[0].size <= w[1].addr,
            "{:#x}+{} overlaps {:#x}",
            w[0].addr,
            w[0].size,
            w[1].addr
        );
    }
}

fn random_run_on_one_cpu(_info: &'static BootInfo) {
    let mut rng = XorShift::new(0xa11c);
    let mut live: Vec<Block> = Vec::new();
    for step in 0..20_000u64 {
        // Keep the live set bounded: the machine has 256 MiB.
        let alloc_weight = if live.len() > 300 { 3 } else { 5 };
        match rng.below(10) {
            r if r < alloc_weight => live.push(random_block(&mut rng, step)),
            r if r < 8 && !live.is_empty() => {
                let i = rng.below(live.len());
                free(live.swap_remove(i));
            }
            _ if !live.is_empty() => {
                let i = rng.below(live.len());
                let b = live[i];
                if b.align > 16 {
                    continue;
                }
                check(b);
                let new_size = 1 + rng.below(2 * b.size + 64);
                // SAFETY: a live block; the new size is non-zero.
                let p = unsafe {
                    heaps().realloc(b.addr as *mut u8, layout(b.size, b.align), new_size)
                };
                assert!(!p.is_null());
                let kept = b.size.min(new_size);
                for off in offsets(kept).filter(|&o| o < kept && (o % 509 == 0 || o == b.size - 1))
                {
                    // SAFETY: inside the new block.
                    let v = unsafe { p.add(off).read() };
                    assert_eq!(v, pattern(b, off), "realloc lost byte {off}");
                }
                let nb = Block {
                    addr: p as usize,
                    size: new_size,
                    align: b.align,
                    tag: step,
                };
                fill(nb);
                live[i] = nb;
            }
            _ => {}
        }
    }
    assert_disjoint(&mut live);
    for b in live {
        free(b);
    }
    let s = heaps().stats();
    assert_eq!(s.mallocs, s.frees, "allocations and frees do not balance");
    assert_eq!(s.allocated, 0);
}

/// Blocks each CPU hands to the others to free.
static EXCHANGE: Mutex<Vec<Block>> = Mutex::new(Vec::new());
static KEPT: Mutex<Vec<Block>> = Mutex::new(Vec::new());
static GO: AtomicBool = AtomicBool::new(false);
static READY: AtomicUsize = AtomicUsize::new(0);
const ROUNDS: u64 = 3000;

fn worker(cpu: usize) {
    READY.fetch_add(1, Ordering::AcqRel);
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let mut rng = XorShift::new(0xc0ffee + cpu as u64);
    let mut mine: Vec<Block> = Vec::new();
    for round in 0..ROUNDS {
        let b = random_block(&mut rng, ((cpu as u64) << 48) | round);
        match rng.below(4) {
            0 => free(b),
            1 => EXCHANGE.lock().push(b),
            _ => mine.push(b),
        }
        if rng.below(3) == 0 {
            let theirs = EXCHANGE.lock().pop();
            if let Some(t) = theirs {
                free(t); // often another CPU's block: a remote free
            }
        }
        if mine.len() > 32 {
            let i = rng.below(mine.len());
            free(mine.swap_remove(i));
        }
    }
    KEPT.lock().extend_from_slice(&mine);
}

fn all_cpus_with_cross_cpu_frees(_info: &'static BootInfo) {
    let cpus = apex_qemu::fw_cfg::cpu_count();
    let aps = smp::start_aps(worker);
    assert_eq!(aps, cpus - 1, "not every AP came online");
    while READY.load(Ordering::Acquire) < aps {
        core::hint::spin_loop();
    }
    GO.store(true, Ordering::Release);
    worker(percpu::current_cpu_index().unwrap());
    smp::wait_for_aps(aps);

    let mut all = core::mem::take(&mut *KEPT.lock());
    all.extend(core::mem::take(&mut *EXCHANGE.lock()));
    assert_disjoint(&mut all);
    for b in all {
        free(b);
    }
    let s = heaps().stats();
    assert_eq!(s.mallocs, s.frees, "allocations and frees do not balance");
    assert_eq!(s.allocated, 0);
    assert!(s.remote_frees > 0, "no block was freed by another CPU");
}

fn memory_goes_back_to_the_buddy(_info: &'static BootInfo) {
    // Blocks freed remotely reach their owners' heaps; each CPU's heap then
    // keeps only free spans. This CPU returns its own and the cache.
    let before = PROVIDER.free_bytes();
    let mut rng = XorShift::new(7);
    let blocks: Vec<Block> = (0..2000).map(|i| random_block(&mut rng, i)).collect();
    assert!(PROVIDER.free_bytes() < before, "allocations took no pages");
    for b in blocks {
        free(b);
    }
    heaps().release_now();
    assert!(
        PROVIDER.free_bytes() >= before,
        "pages not returned: {} before, {} after",
        before,
        PROVIDER.free_bytes()
    );
    PROVIDER.lock().verify().unwrap();
}
