//! Sources of memory and a random generator for the strategy tests.

#![allow(dead_code)]

use std::alloc::{alloc_zeroed, Layout};
use std::ptr::NonNull;

use apex_core::strategy::Source;

const PAGE: usize = 4096;

/// A simulated program break: one reservation, a break that grows and
/// shrinks at its end (alignment gaps are skipped, as with `sbrk`).
pub struct BrkSim {
    base: usize,
    cap: usize,
    brk: usize,
    /// Bytes given back by `shrink` so far.
    pub returned: usize,
}

impl BrkSim {
    pub fn new(cap: usize) -> Self {
        let layout = Layout::from_size_align(cap, 1 << 20).unwrap();
        // SAFETY: non-zero size; leaked on purpose (tests are short).
        let base = unsafe { alloc_zeroed(layout) } as usize;
        assert_ne!(base, 0);
        // Start off the 1 MiB boundary, as a real break would.
        BrkSim {
            base,
            cap,
            brk: base + 3 * PAGE,
            returned: 0,
        }
    }

    pub fn brk(&self) -> usize {
        self.brk
    }
}

// SAFETY: ranges are disjoint pieces of one live reservation; shrink only
// moves the break back over the tail it was asked to.
unsafe impl Source for BrkSim {
    fn grow(&mut self, min: usize, align: usize) -> Option<(NonNull<u8>, usize)> {
        let start = (self.brk + align - 1) & !(align - 1);
        let len = (min + PAGE - 1) & !(PAGE - 1);
        if start + len > self.base + self.cap {
            return None;
        }
        self.brk = start + len;
        NonNull::new(start as *mut u8).map(|p| (p, len))
    }

    unsafe fn shrink(&mut self, ptr: NonNull<u8>, len: usize) -> bool {
        let p = ptr.as_ptr() as usize;
        assert_eq!(p % PAGE, 0, "shrink of an unaligned range");
        if p + len != self.brk {
            return false;
        }
        // Fresh memory after a shrink reads as zero, as with the kernel.
        // SAFETY: the tail of the reservation, no longer used by the heap.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, len) };
        self.brk = p;
        self.returned += len;
        true
    }

    fn fatal(&self, msg: &str) -> ! {
        panic!("{msg}")
    }
}

/// Separate reservations of at least `chunk` bytes (never contiguous on
/// purpose: each is placed after a gap), never given back.
pub struct Chunks {
    chunk: usize,
    pub grown: usize,
}

impl Chunks {
    pub fn new(chunk: usize) -> Self {
        Chunks { chunk, grown: 0 }
    }
}

// SAFETY: each range is its own leaked allocation of the layout asked for.
unsafe impl Source for Chunks {
    fn grow(&mut self, min: usize, align: usize) -> Option<(NonNull<u8>, usize)> {
        let len = (min.max(self.chunk) + PAGE - 1) & !(PAGE - 1);
        let layout = Layout::from_size_align(len + PAGE, align.max(PAGE)).ok()?;
        // SAFETY: non-zero size; leaked on purpose.
        let p = unsafe { alloc_zeroed(layout) };
        self.grown += 1;
        NonNull::new(p).map(|p| (p, len))
    }

    fn fatal(&self, msg: &str) -> ! {
        panic!("{msg}")
    }
}

/// A seeded xorshift generator.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
