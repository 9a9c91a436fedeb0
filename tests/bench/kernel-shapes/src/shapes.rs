//! The workloads: talc's random-actions and heap-efficiency shapes, and two
//! probes of how memory moves between CPUs and how large a block can be.
//!
//! Every function takes the allocator as a `&dyn GlobalAlloc` and runs on
//! the calling thread, which must have set its CPU index.

use std::alloc::{GlobalAlloc, Layout};
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// A live block and its layout.
type Block = (*mut u8, Layout);

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

/// The calling thread's CPU time, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What one thread of a random-actions run did.
#[derive(Clone, Copy, Default, Debug)]
pub struct Actions {
    /// Successful allocations, frees and reallocations.
    pub done: u64,
    /// CPU time the thread spent, nanoseconds.
    pub cpu_ns: u64,
    pub reallocs: u64,
    /// Reallocations that returned a different address.
    pub moved: u64,
    /// Allocations or reallocations that returned null.
    pub failed: u64,
}

impl Actions {
    pub fn add(&mut self, o: &Actions) {
        self.done += o.done;
        self.cpu_ns += o.cpu_ns;
        self.reallocs += o.reallocs;
        self.moved += o.moved;
        self.failed += o.failed;
    }

    /// Actions per CPU-second.
    pub fn rate(&self) -> f64 {
        self.done as f64 / (self.cpu_ns.max(1) as f64 / 1e9)
    }
}

/// At least this many blocks stay live: below it every action allocates.
const MIN_LIVE: usize = 300;
/// Reallocation sizes reach this multiple of the largest allocation.
const REALLOC_FACTOR: usize = 3;

/// Random actions for `duration`: of seven equally likely choices, one
/// reallocates a random live block to a size below `3 * max`, three
/// allocate (size and alignment from [`Rng::size`] and [`Rng::align`]) and
/// three free a random live block, except that with fewer than 300 live
/// blocks every non-realloc choice allocates. The clock is read every 100
/// actions.
pub fn random_actions(a: &dyn GlobalAlloc, max: usize, seed: u64, duration: Duration) -> Actions {
    let mut rng = Rng::new(seed);
    let mut live: Vec<Block> = Vec::with_capacity(100_000);
    let mut out = Actions::default();
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    while start.elapsed() < duration {
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
    out.cpu_ns = thread_cpu_ns() - cpu0;
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
pub fn largest_block(build: &dyn Fn() -> Box<dyn GlobalAlloc + Sync>, arena_len: usize) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocators::{set_cpu, Arena, ALL};

    /// Every allocator on a small arena: the shapes run, measure something
    /// and leave nothing allocated (a second fill gets as much again).
    #[test]
    fn shapes_run_on_every_allocator() {
        const LEN: usize = 32 << 20;
        let l = Layout::from_size_align(LEN, LEN).unwrap();
        // SAFETY: a non-zero size; leaked.
        let base = unsafe { std::alloc::alloc(l) };
        assert!(!base.is_null());
        let arena = Arena { base, len: LEN };
        set_cpu(0);
        for n in ALL {
            let a = (n.build)(arena);
            let r = random_actions(&*a, 1000, 1, Duration::from_millis(20));
            assert!(r.done > 300 && r.failed == 0, "{}: {r:?}", n.name);
            assert!(r.reallocs > 0 && r.moved <= r.reallocs, "{}: {r:?}", n.name);
            let he = heap_efficiency(&*a, LEN, 1, 3);
            assert!((30.0..=100.0).contains(&he), "{}: {he}", n.name);
            let first = fill(&*a, 1000);
            let got = bytes(&first);
            assert!((LEN / 2..=LEN).contains(&got), "{}: {got}", n.name);
            release(&*a, first);
            let again = fill(&*a, 1000);
            assert!(bytes(&again) >= got * 9 / 10, "{}: memory lost", n.name);
            release(&*a, again);
            let big = largest_block(&|| (n.build)(arena), LEN);
            assert!((LEN / 4..=LEN).contains(&big), "{}: {big}", n.name);
        }
    }
}
