//! The kernel-heap benchmark's shapes inside the guest: talc's random
//! actions (max sizes 200 to 30000 B) and heap efficiency, the 1000-byte
//! fill and the largest block, over a 32 MiB arena of physical memory, for
//! talc, rlsf, buddy_system_allocator, linked_list_allocator and
//! `KernelAlloc` (the default, and with small blocks in the slab heaps).
//! The workloads are the host benchmark's own code
//! (`tests/bench/kernel-shapes/src/workload.rs`, included here).
//!
//! Speed is reported, not asserted: under QEMU's emulation it says little
//! about hardware, only how the allocators compare on this one. Each
//! random-actions cell runs a fixed number of actions; the rate is actions
//! per million TSC ticks. What is asserted is that every shape runs
//! on every allocator: no failed request in random actions, a heap
//! efficiency and a fill that leave little of the arena unused (anything
//! above half), a largest block of at least a quarter of the arena, and
//! the arena whole again after each `KernelAlloc` is torn down.

#![no_std]
#![no_main]

extern crate alloc;

#[allow(dead_code)]
#[path = "../../tests/bench/kernel-shapes/src/workload.rs"]
mod workload;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use apex_bare_metal::kernel_alloc::{SLAB_LIMIT, SMALL_SLAB_LIMIT};
use apex_bare_metal::{BuddyProvider, KernelAlloc};
use apex_core::provider::PageProvider;
use apex_core::Global;
use apex_qemu::memory::PROVIDER;
use apex_qemu::{entry_point, println, run_tests, BootInfo, Test};
use spin::Mutex;

entry_point!(main);

const TESTS: &[Test] = &[
    ("random_actions", random_actions),
    ("memory_shapes", memory_shapes),
];

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

/// The arena every allocator manages in turn.
const ARENA_LEN: usize = 32 << 20;
/// Actions per random-actions cell (in batches of 100), after an untimed
/// warm-up of `WARM_UP`.
const ACTIONS: usize = 20_000;
const WARM_UP: usize = 5_000;
const SIZES: [usize; 5] = [200, 1000, 3000, 10000, 30000];

#[derive(Clone, Copy)]
struct Arena {
    base: *mut u8,
    len: usize,
}

/// The arena, reserved from the kernel's page provider once.
fn arena() -> Arena {
    static ARENA: Mutex<usize> = Mutex::new(0);
    let mut a = ARENA.lock();
    if *a == 0 {
        *a = PROVIDER
            .reserve(ARENA_LEN, 4 << 20)
            .expect("32 MiB for the arena")
            .as_ptr() as usize;
    }
    Arena {
        base: *a as *mut u8,
        len: ARENA_LEN,
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions in ring 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A single-threaded heap behind a spin lock, as a kernel installs one.
struct Locked<T>(Mutex<T>);

// SAFETY: the heap is only used under its lock, on this one CPU.
unsafe impl<T> Sync for Locked<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Locked<T> {}

/// Moves a block through `alloc`, copy and `dealloc`.
///
/// # Safety
/// As `GlobalAlloc::realloc`.
unsafe fn move_block(a: &dyn GlobalAlloc, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
    // SAFETY: the caller's layout rules carry over to the new size.
    let q = unsafe { a.alloc(Layout::from_size_align_unchecked(n, l.align())) };
    if !q.is_null() {
        // SAFETY: both blocks hold the copied length; `p` is freed once.
        unsafe {
            ptr::copy_nonoverlapping(p, q, l.size().min(n));
            a.dealloc(p, l);
        }
    }
    q
}

type TalcHeap = talc::base::Talc<talc::source::Manual, talc::DefaultBinning>;

// SAFETY: talc's contract, under the lock.
unsafe impl GlobalAlloc for Locked<TalcHeap> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: non-zero sizes only.
        unsafe { self.0.lock().allocate(l) }.map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().deallocate(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: `p` is live with layout `l`.
        if unsafe { self.0.lock().try_realloc_in_place(p, l, n) } {
            return p;
        }
        // SAFETY: forwarded.
        unsafe { move_block(self, p, l, n) }
    }
}

type RlsfHeap =
    rlsf::Tlsf<'static, usize, usize, { usize::BITS as usize - 12 }, { usize::BITS as usize }>;

// SAFETY: rlsf's contract, under the lock.
unsafe impl GlobalAlloc for Locked<RlsfHeap> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate(l)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with this alignment.
        unsafe {
            self.0
                .lock()
                .deallocate(NonNull::new_unchecked(p), l.align())
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: `p` is live with this alignment.
        unsafe {
            self.0.lock().reallocate(
                NonNull::new_unchecked(p),
                Layout::from_size_align_unchecked(n, l.align()),
            )
        }
        .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
}

type BuddySystem = buddy_system_allocator::Heap<32>;

// SAFETY: buddy_system_allocator's contract, under the lock.
unsafe impl GlobalAlloc for Locked<BuddySystem> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.0
            .lock()
            .alloc(l)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().dealloc(NonNull::new_unchecked(p), l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { move_block(self, p, l, n) }
    }
}

type LinkedList = linked_list_allocator::Heap;

// SAFETY: linked_list_allocator's contract, under the lock.
unsafe impl GlobalAlloc for Locked<LinkedList> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(l)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().deallocate(NonNull::new_unchecked(p), l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { move_block(self, p, l, n) }
    }
}

fn talc(a: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut t = TalcHeap::new(talc::source::Manual);
    // SAFETY: the arena is ours while the allocator lives.
    unsafe { t.claim(a.base, a.len) }.expect("talc claims the arena");
    Box::new(Locked(Mutex::new(t)))
}

fn rlsf(a: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut t = RlsfHeap::new();
    let block = NonNull::slice_from_raw_parts(NonNull::new(a.base).unwrap(), a.len);
    // SAFETY: the arena is ours while the allocator lives.
    unsafe { t.insert_free_block_ptr(block) }.expect("rlsf takes the arena");
    Box::new(Locked(Mutex::new(t)))
}

fn buddy_system(a: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut h = BuddySystem::new();
    // SAFETY: the arena is ours while the allocator lives.
    unsafe { h.init(a.base as usize, a.len) };
    Box::new(Locked(Mutex::new(h)))
}

fn linked_list(a: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut h = LinkedList::empty();
    // SAFETY: the arena is ours while the allocator lives.
    unsafe { h.init(a.base, a.len) };
    Box::new(Locked(Mutex::new(h)))
}

fn on_cpu_zero() -> Option<usize> {
    Some(0)
}

/// `KernelAlloc` over a provider of its own that owns the arena, torn
/// down when dropped (the next allocator reuses the memory).
struct Apex {
    heaps: &'static KernelAlloc,
    provider: &'static BuddyProvider,
    free_at_start: usize,
}

impl Drop for Apex {
    fn drop(&mut self) {
        // SAFETY: the workloads free every block; this CPU is the only one.
        unsafe { self.heaps.tear_down() };
        // Everything but the core's pool of heap records came back.
        let kept = self.free_at_start - self.provider.free_bytes();
        assert!(kept <= 64 << 10, "tear_down kept {kept} bytes");
    }
}

// SAFETY: forwarded to `KernelAlloc`.
unsafe impl GlobalAlloc for Apex {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { self.heaps.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded.
        unsafe { self.heaps.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { self.heaps.realloc(p, l, n) }
    }
}

fn apex_with(a: Arena, slab_limit: usize) -> Box<dyn GlobalAlloc + Sync> {
    // Leaked (a few KiB per instance): the core keeps `'static`
    // references to the provider and the instance.
    let provider: &'static BuddyProvider = Box::leak(Box::new(BuddyProvider::new()));
    // SAFETY: the arena is ours, identity-mapped, while the allocator lives.
    unsafe { provider.add_region(a.base as usize, a.len) }.expect("the buddy takes the arena");
    let global: &'static Global = Box::leak(Box::new(Global::new(provider)));
    let heaps = Box::leak(Box::new(KernelAlloc::with_slab_limit(
        global,
        on_cpu_zero,
        slab_limit,
    )));
    Box::new(Apex {
        heaps,
        provider,
        free_at_start: provider.free_bytes(),
    })
}

fn apex(a: Arena) -> Box<dyn GlobalAlloc + Sync> {
    apex_with(a, SLAB_LIMIT)
}

fn apex_slabs(a: Arena) -> Box<dyn GlobalAlloc + Sync> {
    apex_with(a, SMALL_SLAB_LIMIT)
}

type Build = fn(Arena) -> Box<dyn GlobalAlloc + Sync>;

const ALLOCATORS: [(&str, Build); 6] = [
    ("talc", talc),
    ("rlsf", rlsf),
    ("buddy_system_allocator", buddy_system),
    ("linked_list_allocator", linked_list),
    ("apex KernelAlloc", apex),
    ("apex KernelAlloc, slabs <= 512 B", apex_slabs),
];

fn random_actions(_info: &'static BootInfo) {
    println!();
    println!("random actions: actions per million TSC ticks (ratio to talc), one CPU");
    let mut talc_rate = [0.0f64; SIZES.len()];
    for (name, build) in ALLOCATORS {
        let mut row: Vec<(f64, u64)> = Vec::new();
        for (si, &max) in SIZES.iter().enumerate() {
            let a = build(arena());
            // Untimed first: QEMU translates code on its first run, which
            // would otherwise be timed as the allocator's.
            let mut warm = 0;
            workload::random_actions(&*a, max, si as u64 + 1, || {
                warm += 1;
                warm <= WARM_UP / 100
            });
            let mut batches = 0;
            let t0 = rdtsc();
            let r = workload::random_actions(&*a, max, si as u64 + 1, || {
                batches += 1;
                batches <= ACTIONS / 100
            });
            let ticks = rdtsc() - t0;
            drop(a);
            assert!(r.done > ACTIONS as u64 * 9 / 10, "{name}, {max} B: {r:?}");
            assert_eq!(r.failed, 0, "{name}, {max} B: a request failed");
            let rate = r.done as f64 / (ticks as f64 / 1e6);
            if name == "talc" {
                talc_rate[si] = rate;
            }
            row.push((rate, r.moved * 100 / r.reallocs.max(1)));
        }
        apex_qemu::print!("  {name:<34}");
        for (si, (rate, _)) in row.iter().enumerate() {
            apex_qemu::print!(" {:7.1} ({:.2})", rate, rate / talc_rate[si]);
        }
        let moved: Vec<u64> = row.iter().map(|&(_, m)| m).collect();
        println!("  moved {moved:?}%");
    }
    apex_qemu::print!("test random_actions ... ");
}

fn memory_shapes(_info: &'static BootInfo) {
    println!();
    println!(
        "memory, % of a {} MiB arena: heap efficiency, 1000 B fill, largest block",
        ARENA_LEN >> 20
    );
    let pct = |x: usize| x as f64 * 100.0 / ARENA_LEN as f64;
    for (name, build) in ALLOCATORS {
        let he = {
            let a = build(arena());
            workload::heap_efficiency(&*a, ARENA_LEN, 3, 42)
        };
        let fill = {
            let a = build(arena());
            let live = workload::fill(&*a, 1000);
            let b = workload::bytes(&live);
            workload::release(&*a, live);
            b
        };
        let largest = workload::largest_block(&|| build(arena()), ARENA_LEN);
        println!(
            "  {name:<34} {he:5.1}%  {:5.1}%  {:5.1}%",
            pct(fill),
            pct(largest)
        );
        assert!((50.0..=100.0).contains(&he), "{name}: heap efficiency {he}");
        assert!(fill > ARENA_LEN / 2, "{name}: fill {fill}");
        assert!(largest >= ARENA_LEN / 4, "{name}: largest block {largest}");
    }
    apex_qemu::print!("test memory_shapes ... ");
}
