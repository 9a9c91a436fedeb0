//! `KernelAlloc`: the core's heaps as a kernel's `#[global_allocator]`, one
//! heap per CPU.
//!
//! Each CPU allocates from its own heap, so CPUs never contend on the fast
//! path; a block freed on another CPU goes back through the core's lock-free
//! remote-free lists. Each per-CPU heap sits behind a spin lock that only
//! its own CPU takes, so the lock is always free except when the CPU
//! re-enters the allocator (an interrupt handler allocating while the
//! interrupted code was inside it): then `try_lock` fails and the request
//! goes to a shared heap instead of deadlocking. CPUs without an index yet
//! (early boot of an AP) use the shared heap too.
//!
//! ```ignore
//! static PROVIDER: BuddyProvider = BuddyProvider::new();
//! static GLOBAL: apex_core::Global = apex_core::Global::new(&PROVIDER);
//! #[global_allocator]
//! static ALLOC: KernelAlloc = KernelAlloc::new(&GLOBAL, cpu_index);
//! ```
//! Build the core with its `small-segments` feature (4 MiB segments) for
//! kernels with little memory.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use apex_core::{Global, Heap, Snapshot};
use spin::Mutex;

use crate::percpu::MAX_CPUS;

/// A heap pointer that may live in a static.
struct HeapSlot(Option<NonNull<Heap>>);

// SAFETY: a heap is used only while its slot's lock is held.
unsafe impl Send for HeapSlot {}

/// Per-CPU heaps over one allocator instance.
pub struct KernelAlloc {
    global: &'static Global,
    /// Returns the calling CPU's dense index (below `MAX_CPUS`), or `None`
    /// if it has none yet. Kernels usually read it from per-CPU data.
    cpu_index: fn() -> Option<usize>,
    heaps: [Mutex<HeapSlot>; MAX_CPUS],
    shared: Mutex<HeapSlot>,
}

impl KernelAlloc {
    /// Per-CPU heaps drawing from `global`; `cpu_index` names the calling
    /// CPU.
    pub const fn new(global: &'static Global, cpu_index: fn() -> Option<usize>) -> Self {
        KernelAlloc {
            global,
            cpu_index,
            heaps: [const { Mutex::new(HeapSlot(None)) }; MAX_CPUS],
            shared: Mutex::new(HeapSlot(None)),
        }
    }

    /// Runs `f` on the calling CPU's heap (created on first use), or on the
    /// shared heap when that one is busy or the CPU has no index. Returns
    /// `None` only if no heap could be created (out of memory).
    fn with_heap<R>(&self, f: impl FnOnce(&mut Heap) -> R) -> Option<R> {
        if let Some(slot) = (self.cpu_index)().and_then(|i| self.heaps.get(i)) {
            if let Some(mut guard) = slot.try_lock() {
                return Self::run(self.global, &mut guard, f);
            }
        }
        Self::run(self.global, &mut self.shared.lock(), f)
    }

    /// Runs `f` on the shared heap (the fallback when the CPU's own heap
    /// cannot get memory: its segments may be elsewhere).
    fn with_shared(&self, f: impl FnOnce(&mut Heap) -> *mut u8) -> *mut u8 {
        Self::run(self.global, &mut self.shared.lock(), f).unwrap_or(ptr::null_mut())
    }

    /// `p`, or when it is null, `f` on the shared heap: a CPU whose heap
    /// cannot get a segment of its own still allocates from the segments
    /// the shared heap has.
    fn or_shared(&self, p: *mut u8, f: impl FnOnce(&mut Heap) -> *mut u8) -> *mut u8 {
        if p.is_null() {
            self.with_shared(f)
        } else {
            p
        }
    }

    fn run<R>(
        global: &'static Global,
        slot: &mut HeapSlot,
        f: impl FnOnce(&mut Heap) -> R,
    ) -> Option<R> {
        if slot.0.is_none() {
            slot.0 = Heap::create(global);
        }
        // SAFETY: the heap is used only under this slot's lock, held by the
        // caller for the duration of `f`.
        slot.0.map(|h| f(unsafe { &mut *h.as_ptr() }))
    }

    /// Returns every free page the calling CPU's heap holds, and every
    /// cached segment, to the page provider.
    pub fn release_now(&self) {
        self.with_heap(|h| h.release_now());
    }

    /// Counters summed over all heaps.
    pub fn stats(&self) -> Snapshot {
        apex_core::snapshot(self.global)
    }

    /// The allocator instance behind these heaps.
    pub fn global(&self) -> &'static Global {
        self.global
    }
}

// SAFETY: blocks come from the core, which hands out distinct blocks of at
// least the requested size and alignment and frees each exactly once;
// `realloc` keeps the contents up to the smaller size.
unsafe impl GlobalAlloc for KernelAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let f = |h: &mut Heap| h.malloc_aligned(layout.size(), layout.align());
        self.or_shared(self.with_heap(f).unwrap_or(ptr::null_mut()), f)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let f = |h: &mut Heap| h.zalloc_aligned(layout.size(), layout.align());
        self.or_shared(self.with_heap(f).unwrap_or(ptr::null_mut()), f)
    }

    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        // SAFETY: `p` came from this allocator and is freed once.
        self.with_heap(|h| unsafe { h.free(p) });
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` is a live block of this allocator with this layout.
        let q = self
            .with_heap(|h| unsafe { h.realloc_aligned(p, layout.align(), new_size) })
            .unwrap_or(ptr::null_mut());
        if !q.is_null() {
            return q;
        }
        // The CPU's heap is out of memory: move the block through `alloc`,
        // which falls back to the shared heap.
        // SAFETY: the new layout keeps a valid alignment and a size the
        // caller vouches for.
        let q = unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !q.is_null() {
            // SAFETY: both blocks hold the copied length; `p` is freed once.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}
