//! The host side of the workloads (see [`crate::workload`]): random actions
//! timed in the calling thread's CPU time, and the probes as they are.
//!
//! Every function takes the allocator as a `&dyn GlobalAlloc` and runs on
//! the calling thread, which must have set its CPU index.

use std::alloc::GlobalAlloc;
use std::time::{Duration, Instant};

pub use crate::workload::{bytes, fill, heap_efficiency, largest_block, release, Actions};

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

/// Actions per CPU-second (`time` is thread CPU time in nanoseconds).
pub fn rate(a: &Actions) -> f64 {
    a.done as f64 / (a.time.max(1) as f64 / 1e9)
}

/// [`crate::workload::random_actions`] for `duration` of wall time, its
/// `time` the thread's CPU time in nanoseconds.
pub fn random_actions(a: &dyn GlobalAlloc, max: usize, seed: u64, duration: Duration) -> Actions {
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let mut out = crate::workload::random_actions(a, max, seed, || start.elapsed() < duration);
    out.time = thread_cpu_ns() - cpu0;
    out
}

/// [`crate::workload::random_actions`] for `count` actions (rounded up to
/// a hundred), for counting instructions per action under callgrind.
pub fn random_actions_counted(a: &dyn GlobalAlloc, max: usize, seed: u64, count: u64) -> Actions {
    let cpu0 = thread_cpu_ns();
    let mut hundreds = count.div_ceil(100);
    let mut out = crate::workload::random_actions(a, max, seed, || {
        let go = hundreds > 0;
        hundreds = hundreds.saturating_sub(1);
        go
    });
    out.time = thread_cpu_ns() - cpu0;
    out
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
        let l = std::alloc::Layout::from_size_align(LEN, LEN).unwrap();
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
            drop(a);
            let big = largest_block(&|| (n.build)(arena), LEN);
            assert!((LEN / 4..=LEN).contains(&big), "{}: {big}", n.name);
        }
    }
}
