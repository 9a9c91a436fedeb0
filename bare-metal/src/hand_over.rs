//! [`HandOver`]: one `#[global_allocator]` for the whole life of a kernel,
//! the early heap first, the per-CPU heaps once they can run.
//!
//! Rust allows one global allocator, but a kernel allocates before it can
//! run [`KernelAlloc`] (before RAM is handed to the page provider, before
//! the boot CPU has an index). `HandOver` sends every allocation to the
//! [`EarlyHeap`] until [`HandOver::switch`], then to the `KernelAlloc`.
//! Frees go to whichever heap owns the block, told apart by address (the
//! early heap's memory is one range, [`EarlyHeap::contains`]), so blocks
//! from before the switch stay valid and return to the early heap whenever
//! they are freed. A reallocated early block moves to the per-CPU heaps.
//!
//! (`apex_core::owns` is not the test: it maps a pointer to the segment
//! that ends there too, so an early block starting right after a segment
//! would count as the core's.)
//!
//! ```ignore
//! static PROVIDER: BuddyProvider = BuddyProvider::new();
//! static GLOBAL: Global = Global::new(&PROVIDER);
//! static PER_CPU: KernelAlloc = KernelAlloc::new(&GLOBAL, percpu::current_cpu_index);
//! static EARLY: EarlyHeap = EarlyHeap::empty();
//! #[global_allocator]
//! static ALLOC: HandOver = HandOver::new(&EARLY, &PER_CPU);
//! // boot: EARLY.init_from(&PROVIDER, 16 << 20), RAM to PROVIDER,
//! // percpu::register_current_cpu(), then:
//! ALLOC.switch();
//! ```

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::percpu::{CpuIndex, IndexFn};
use crate::{EarlyHeap, KernelAlloc};

/// The early heap until [`HandOver::switch`], the per-CPU heaps after.
pub struct HandOver<C: CpuIndex + 'static = IndexFn> {
    early: &'static EarlyHeap,
    heaps: &'static KernelAlloc<C>,
    switched: AtomicBool,
}

impl<C: CpuIndex> HandOver<C> {
    /// Serves allocations from `early` until [`HandOver::switch`].
    pub const fn new(early: &'static EarlyHeap, heaps: &'static KernelAlloc<C>) -> Self {
        HandOver {
            early,
            heaps,
            switched: AtomicBool::new(false),
        }
    }

    /// From now on, new blocks come from the per-CPU heaps. Call it once
    /// the page provider has RAM (the core's segments come from it); CPUs
    /// that have no index yet use `KernelAlloc`'s shared heap.
    pub fn switch(&self) {
        self.switched.store(true, Ordering::Release);
    }

    /// Whether [`HandOver::switch`] has run.
    pub fn switched(&self) -> bool {
        self.switched.load(Ordering::Acquire)
    }

    /// The early heap.
    pub fn early(&self) -> &'static EarlyHeap {
        self.early
    }

    /// The per-CPU heaps.
    pub fn heaps(&self) -> &'static KernelAlloc<C> {
        self.heaps
    }
}

// SAFETY: each block comes from one of the two allocators and is freed by
// the one that owns it (`early.contains` is true exactly for the early
// heap's blocks);
// `realloc` either stays within one allocator or moves the contents.
unsafe impl<C: CpuIndex> GlobalAlloc for HandOver<C> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.switched() {
            // SAFETY: forwarded.
            unsafe { self.heaps.alloc(layout) }
        } else {
            // SAFETY: forwarded.
            unsafe { self.early.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.switched() {
            // SAFETY: forwarded.
            unsafe { self.heaps.alloc_zeroed(layout) }
        } else {
            // SAFETY: forwarded.
            unsafe { self.early.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if self.early.contains(p) {
            // SAFETY: a live block of the early heap's, freed once.
            unsafe { self.early.dealloc(p, layout) }
        } else {
            // SAFETY: then it is the core's.
            unsafe { self.heaps.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.early.contains(p) {
            // SAFETY: a live block of the core's.
            return unsafe { self.heaps.realloc(p, layout, new_size) };
        }
        if !self.switched() {
            // SAFETY: a live block of the early heap's.
            return unsafe { self.early.realloc(p, layout, new_size) };
        }
        // An early block after the switch leaves the early heap.
        // SAFETY: the caller vouches for the new size with this alignment.
        let q = unsafe {
            self.heaps
                .alloc(Layout::from_size_align_unchecked(new_size, layout.align()))
        };
        if !q.is_null() {
            // SAFETY: both blocks hold the copied length; `p` is the early
            // heap's and freed once.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.early.dealloc(p, layout);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::provider::BuddyProvider;
    use apex_core::Global;
    use std::boxed::Box;
    use std::vec::Vec;

    const MIB: usize = 1 << 20;

    fn on_cpu_zero() -> Option<usize> {
        Some(0)
    }

    #[test]
    fn early_blocks_survive_the_switch_and_go_home() {
        // A provider over 64 MiB of host memory, aligned for 4 or 32 MiB
        // segments; everything is leaked, as statics would be.
        let buf: &'static mut [u8] = std::vec![0u8; 96 * MIB].leak();
        let base = (buf.as_ptr() as usize).next_multiple_of(32 * MIB);
        let provider: &'static BuddyProvider = Box::leak(Box::new(BuddyProvider::new()));
        // SAFETY: the range lies in the leaked buffer, ours forever.
        unsafe { provider.add_region(base, 64 * MIB) }.unwrap();
        let global: &'static Global = Box::leak(Box::new(Global::new(provider)));
        let heaps: &'static KernelAlloc =
            Box::leak(Box::new(KernelAlloc::new(global, on_cpu_zero)));
        let early: &'static EarlyHeap = Box::leak(Box::new(EarlyHeap::empty()));
        early.init_from(provider, 2 * MIB).unwrap();
        let a = HandOver::new(early, heaps);

        let l = Layout::from_size_align(200, 16).unwrap();
        let mut before = Vec::new();
        for i in 0..50u8 {
            // SAFETY: a non-zero size.
            let p = unsafe { a.alloc(l) };
            assert!(
                !p.is_null() && early.contains(p),
                "before the switch: the early heap"
            );
            // SAFETY: 200 writable bytes.
            unsafe { p.write_bytes(i, 200) };
            before.push((p, i));
        }
        let early_used = early.used();
        a.switch();
        assert!(a.switched());

        // New blocks come from the core; none from the early heap.
        let mut after = Vec::new();
        for _ in 0..50 {
            // SAFETY: a non-zero size.
            let p = unsafe { a.alloc_zeroed(l) };
            assert!(
                !p.is_null() && !early.contains(p),
                "after the switch: the per-CPU heaps"
            );
            // SAFETY: 200 readable bytes, zeroed.
            assert!(unsafe { core::slice::from_raw_parts(p, 200) }
                .iter()
                .all(|&b| b == 0));
            after.push(p);
        }
        assert_eq!(early.used(), early_used);
        assert!(heaps.fit_chunk_bytes() > 0, "served by the per-CPU heaps");

        // Early blocks kept their contents; one grown moves to the
        // per-CPU heaps with them (best fit, at this size), the rest return
        // to the early heap.
        let (grown, fill) = before.pop().unwrap();
        // SAFETY: a live early block with layout `l`.
        let q = unsafe { a.realloc(grown, l, 5000) };
        assert!(!q.is_null() && !early.contains(q));
        // SAFETY: the first 200 bytes were copied.
        assert!(unsafe { core::slice::from_raw_parts(q, 200) }
            .iter()
            .all(|&b| b == fill));
        for (p, fill) in before {
            // SAFETY: live early blocks of 200 bytes.
            assert!(unsafe { core::slice::from_raw_parts(p, 200) }
                .iter()
                .all(|&b| b == fill));
            // SAFETY: freed once, with its layout.
            unsafe { a.dealloc(p, l) };
        }
        assert_eq!(
            early.used(),
            0,
            "every early block went back to the early heap"
        );
        for p in after {
            // SAFETY: freed once, with its layout.
            unsafe { a.dealloc(p, l) };
        }
        // SAFETY: the grown block, with its new layout.
        unsafe { a.dealloc(q, Layout::from_size_align(5000, 16).unwrap()) };
        let s = heaps.stats();
        assert_eq!(s.mallocs, s.frees, "{s:?}");
        assert!(s.mallocs >= 51, "{s:?}");
        assert_eq!(heaps.reentries(), 0);
    }
}
