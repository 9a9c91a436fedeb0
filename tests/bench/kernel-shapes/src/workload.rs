//! The workloads themselves, free of `std` so that the same code runs on
//! the host (`shapes.rs` adds the clock) and inside a QEMU guest
//! (`qemu/tests/kernel_shapes.rs` includes this file): talc's
//! random-actions and heap-efficiency shapes, a fill probe and a
//! largest-block probe, over any `GlobalAlloc`, with a seeded generator so
//! every allocator sees the same actions.
//!
//! Only `core` and `alloc` are used; the live-block lists come from the
//! global allocator of whatever runs this (never from the allocator under
//! test).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};

/// A small seeded generator (wyrand), so every allocator sees exactly the
/// same sequence of actions for a given trial and thread.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `lo..hi` (`lo < hi`); the multiply-shift bias is far below
    /// anything a benchmark could notice.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi - lo) as u64;
        lo + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as usize
    }

    /// The request size of both shapes: a cap uniform in `16..max`, then a
    /// size uniform in `4..cap`, which leans towards small sizes.
    pub fn size(&mut self, max: usize) -> usize {
        let cap = self.range(16, max);
        self.range(4, cap)
    }

    /// The alignment of both shapes: pointer alignment three times in four,
    /// twice that about one time in five, and so on up to 2 KiB (each step
    /// is two more trailing zero bits of a random 16-bit number).
    pub fn align(&mut self) -> usize {
        let bits = self.next_u64() as u16;
        8 << (bits.trailing_zeros() / 2)
    }
}

/// A live block and its layout.
pub type Block = (*mut u8, Layout);

/// Frees every block in `live`.
///
/// # Safety
/// Each block must be live in `a` with its layout.
unsafe fn free_all(a: &dyn GlobalAlloc, live: &mut Vec<Block>) {
    for (p, l) in live.drain(..) {
        // SAFETY: the caller's promise.
        unsafe { a.dealloc(p, l) }
    }
}

/// What one run of random actions did.
#[derive(Clone, Copy, Default, Debug)]
pub struct Actions {
    /// Successful allocations, frees and reallocations.
    pub done: u64,
    /// Time spent, in the caller's unit (set by the caller).
    pub time: u64,
    pub reallocs: u64,
    /// Reallocations that returned a different address.
    pub moved: u64,
    /// Allocations or reallocations that returned null.
    pub failed: u64,
}

impl Actions {
    pub fn add(&mut self, o: &Actions) {
        self.done += o.done;
        self.time += o.time;
        self.reallocs += o.reallocs;
        self.moved += o.moved;
        self.failed += o.failed;
    }
}

/// At least this many blocks stay live: below it every action allocates.
const MIN_LIVE: usize = 300;
/// Reallocation sizes reach this multiple of the largest allocation.
const REALLOC_FACTOR: usize = 3;

/// Random actions while `go()` says so (asked every 100 actions): of seven
/// equally likely choices, one reallocates a random live block to a size
/// below `3 * max`, three allocate (size and alignment from [`Rng::size`]
/// and [`Rng::align`]) and three free a random live block, except that with
/// fewer than 300 live blocks every non-realloc choice allocates. Frees
/// what is left at the end (outside the counted actions).
pub fn random_actions(
    a: &dyn GlobalAlloc,
    max: usize,
    seed: u64,
    mut go: impl FnMut() -> bool,
) -> Actions {
    let mut rng = Rng::new(seed);
    let mut live: Vec<Block> = Vec::with_capacity(100_000);
    let mut out = Actions::default();
    while go() {
        for _ in 0..100 {
            let choice = rng.range(0, 7);
            if choice == 6 {
                if live.is_empty() {
                    continue;
                }
                let i = rng.range(0, live.len());
                let new_size = rng.range(1, max * REALLOC_FACTOR);
                let (p, l) = live[i];
                // SAFETY: `p` is live with layout `l`; `new_size` is non-zero.
                let q = unsafe { a.realloc(p, l, new_size) };
                out.reallocs += 1;
                if q.is_null() {
                    out.failed += 1;
                } else {
                    out.moved += u64::from(q != p);
                    live[i] = (q, Layout::from_size_align(new_size, l.align()).unwrap());
                    out.done += 1;
                }
            } else if choice < 3 || live.len() < MIN_LIVE {
                let l = Layout::from_size_align(rng.size(max), rng.align()).unwrap();
                // SAFETY: a non-zero size.
                let p = unsafe { a.alloc(l) };
                if p.is_null() {
                    out.failed += 1;
                } else {
                    live.push((p, l));
                    out.done += 1;
                }
            } else {
                let (p, l) = live.swap_remove(rng.range(0, live.len()));
                // SAFETY: `p` is live with layout `l`.
                unsafe { a.dealloc(p, l) };
                out.done += 1;
            }
        }
    }
    // SAFETY: `live` holds exactly the live blocks.
    unsafe { free_all(a, &mut live) };
    out
}

/// Allocation sizes of the heap-efficiency shape stay below this...
const HE_MAX: usize = 10_000;
/// ...and reallocation sizes below this.
const HE_REALLOC_MAX: usize = 100_000;

/// Heap efficiency: `rounds` times, act at random until a request fails (of
/// ten choices five allocate, one frees, four reallocate), note the bytes
/// requested by the live blocks, then free everything. Returns the mean of
/// those bytes as a percentage of `arena_len`. One allocator instance
/// serves every round, as one kernel heap serves a long uptime.
pub fn heap_efficiency(a: &dyn GlobalAlloc, arena_len: usize, rounds: usize, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let mut live: Vec<Block> = Vec::with_capacity(200_000);
    let mut used = 0usize;
    for _ in 0..rounds {
        loop {
            match rng.range(0, 10) {
                0..=4 => {
                    let l = Layout::from_size_align(rng.size(HE_MAX), rng.align()).unwrap();
                    // SAFETY: a non-zero size.
                    let p = unsafe { a.alloc(l) };
                    if p.is_null() {
                        break;
                    }
                    live.push((p, l));
                }
                5 => {
                    if !live.is_empty() {
                        let (p, l) = live.swap_remove(rng.range(0, live.len()));
                        // SAFETY: `p` is live with layout `l`.
                        unsafe { a.dealloc(p, l) };
                    }
                }
                _ => {
                    if live.is_empty() {
                        continue;
                    }
                    let i = rng.range(0, live.len());
                    let new_size = rng.range(1, HE_REALLOC_MAX);
                    let (p, l) = live[i];
                    // SAFETY: `p` is live with layout `l`.
                    let q = unsafe { a.realloc(p, l, new_size) };
                    if q.is_null() {
                        break;
                    }
                    live[i] = (q, Layout::from_size_align(new_size, l.align()).unwrap());
                }
            }
        }
        used += live.iter().map(|(_, l)| l.size()).sum::<usize>();
        // SAFETY: `live` holds exactly the live blocks.
        unsafe { free_all(a, &mut live) };
    }
    used as f64 / (rounds * arena_len) as f64 * 100.0
}

/// Fills the allocator with `size`-byte blocks until a request fails;
/// returns the blocks.
pub fn fill(a: &dyn GlobalAlloc, size: usize) -> Vec<Block> {
    let l = Layout::from_size_align(size, 8).unwrap();
    let mut live = Vec::new();
    loop {
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(l) };
        if p.is_null() {
            return live;
        }
        live.push((p, l));
    }
}

/// Frees blocks [`fill`] returned.
pub fn release(a: &dyn GlobalAlloc, mut live: Vec<Block>) {
    // SAFETY: `fill` returns live blocks with their layouts.
    unsafe { free_all(a, &mut live) }
}

/// Bytes requested by blocks.
pub fn bytes(live: &[Block]) -> usize {
    live.iter().map(|(_, l)| l.size()).sum()
}

/// The largest single block a fresh allocator hands out, to a page: a
/// binary search, each probe on a new instance from `build`.
pub fn largest_block<'a>(
    build: &dyn Fn() -> Box<dyn GlobalAlloc + Sync + 'a>,
    arena_len: usize,
) -> usize {
    const PAGE: usize = 4096;
    let fits = |pages: usize| {
        let a = build();
        let l = Layout::from_size_align(pages * PAGE, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(l) };
        if p.is_null() {
            return false;
        }
        // SAFETY: just allocated with `l`.
        unsafe { a.dealloc(p, l) };
        true
    };
    let (mut lo, mut hi) = (0, arena_len / PAGE + 1); // lo fits (or is 0), hi does not
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo * PAGE
}
