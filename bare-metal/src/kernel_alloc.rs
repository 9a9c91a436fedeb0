//! `KernelAlloc`: the core's heaps as a kernel's `#[global_allocator]`, one
//! heap per CPU.
//!
//! Each CPU allocates from its own heap, so CPUs never contend on the fast
//! path; a block freed on another CPU goes back through the core's lock-free
//! remote-free lists. A per-CPU heap is guarded by a re-entrancy flag that
//! only its own CPU reads and writes, with plain loads and stores (no
//! locked instruction, no shared cache line: each slot has a cache line of
//! its own). The flag is set while the CPU is inside its heap, so an
//! interrupt handler that allocates while the interrupted code was inside
//! the allocator finds it set and goes to a shared heap (behind a spin lock)
//! instead of corrupting the heap. CPUs without an index yet (early boot of
//! an AP) use the shared heap too.
//!
//! The flag needs the one rule every per-CPU variable needs: a call into
//! the allocator finishes on the CPU whose index it read. Kernels that
//! preempt and migrate kernel code disable preemption across allocator
//! calls (interrupts may stay enabled).
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
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicUsize, Ordering};

use apex_core::layout::MIN_ALIGN;
use apex_core::{Global, Heap, Snapshot};
use spin::Mutex;

use crate::irq;
use crate::percpu::MAX_CPUS;

/// The shared heap's pointer, which lives in a static behind a lock.
struct HeapSlot(Option<NonNull<Heap>>);

// SAFETY: the shared heap is used only while its lock is held.
unsafe impl Send for HeapSlot {}

/// One CPU's heap and its re-entrancy flag, alone on a cache line: the
/// flag is written on every call, and a line shared with a neighbour's
/// flag would bounce between the two CPUs.
#[repr(align(64))]
struct CpuSlot {
    /// Set while the CPU is inside `heap`. Only the owning CPU (and its
    /// interrupt handlers, which run on it) touches it.
    busy: AtomicBool,
    heap: UnsafeCell<Option<NonNull<Heap>>>,
}

/// Per-CPU heaps over one allocator instance.
pub struct KernelAlloc {
    global: &'static Global,
    /// Returns the calling CPU's dense index (below `MAX_CPUS`), or `None`
    /// if it has none yet. Kernels usually read it from per-CPU data.
    cpu_index: fn() -> Option<usize>,
    heaps: [CpuSlot; MAX_CPUS],
    shared: Mutex<HeapSlot>,
    /// Calls that found their CPU's heap busy (an interrupt handler
    /// allocating while the interrupted code was inside the allocator).
    reentries: AtomicUsize,
    /// An [`OomHandler`] stored as an address; 0 means none.
    oom_handler: AtomicUsize,
}

/// What [`KernelAlloc::set_oom_handler`] installs: called with the request
/// that failed, returns whether it made memory available.
pub type OomHandler = fn(Layout) -> bool;

/// How often one request calls the out-of-memory handler before failing.
const OOM_RETRIES: usize = 8;

// SAFETY: a CPU slot's heap is used only by its own CPU while its `busy`
// flag is set (see `with_heap`); the shared heap is behind a lock.
unsafe impl Sync for KernelAlloc {}

impl KernelAlloc {
    /// Per-CPU heaps drawing from `global`; `cpu_index` names the calling
    /// CPU.
    pub const fn new(global: &'static Global, cpu_index: fn() -> Option<usize>) -> Self {
        KernelAlloc {
            global,
            cpu_index,
            heaps: [const {
                CpuSlot {
                    busy: AtomicBool::new(false),
                    heap: UnsafeCell::new(None),
                }
            }; MAX_CPUS],
            shared: Mutex::new(HeapSlot(None)),
            reentries: AtomicUsize::new(0),
            oom_handler: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the calling CPU's heap (created on first use), or on the
    /// shared heap when that one is busy (re-entered from an interrupt
    /// handler) or the CPU has no index. Returns `None` only if no heap
    /// could be created (out of memory).
    #[inline(always)]
    fn with_heap<R>(&self, f: impl FnOnce(&mut Heap) -> R) -> Option<R> {
        if let Some(slot) = (self.cpu_index)().and_then(|i| self.heaps.get(i)) {
            // Only this CPU reads and writes the flag, so a plain load and
            // store suffice: an interrupt arriving between them runs to
            // completion (leaving the flag clear) before the store.
            if !slot.busy.load(Ordering::Relaxed) {
                slot.busy.store(true, Ordering::Relaxed);
                // Keep the heap accesses after the flag is set and before
                // it is cleared, as seen by an interrupt on this CPU.
                compiler_fence(Ordering::SeqCst);
                // SAFETY: the flag was clear, so nothing on this CPU is
                // inside this heap, and no other CPU uses this slot.
                let r = Self::run(self.global, unsafe { &mut *slot.heap.get() }, f);
                compiler_fence(Ordering::SeqCst);
                slot.busy.store(false, Ordering::Relaxed);
                return r;
            }
            self.reentries.fetch_add(1, Ordering::Relaxed);
        }
        self.on_shared(f)
    }

    /// Runs `f` on the shared heap, with interrupts masked while its lock
    /// is held (see [`irq`]).
    fn on_shared<R>(&self, f: impl FnOnce(&mut Heap) -> R) -> Option<R> {
        irq::masked(|| Self::run(self.global, &mut self.shared.lock().0, f))
    }

    /// Runs `f` on the shared heap (the fallback when the CPU's own heap
    /// cannot get memory: its segments may be elsewhere).
    fn with_shared(&self, f: impl FnOnce(&mut Heap) -> *mut u8) -> *mut u8 {
        self.on_shared(f).unwrap_or(ptr::null_mut())
    }

    /// `p`, or when it is null, `f` on the shared heap: a CPU whose heap
    /// cannot get a segment of its own still allocates from the segments
    /// the shared heap has. When that fails too, the out-of-memory handler
    /// (if any) gets its chance and the request is retried.
    #[inline(always)]
    fn or_shared(
        &self,
        p: *mut u8,
        layout: Layout,
        f: impl Fn(&mut Heap) -> *mut u8 + Copy,
    ) -> *mut u8 {
        if p.is_null() {
            self.out_of_memory(layout, f)
        } else {
            p
        }
    }

    #[cold]
    #[inline(never)]
    fn out_of_memory(&self, layout: Layout, f: impl Fn(&mut Heap) -> *mut u8 + Copy) -> *mut u8 {
        for _ in 0..OOM_RETRIES {
            let p = self.with_shared(f);
            if !p.is_null() {
                return p;
            }
            let handler = self.oom_handler.load(Ordering::Acquire);
            if handler == 0 {
                break;
            }
            crate::log_error!(
                "KernelAlloc: out of memory: {=usize} bytes, alignment {=usize}; calling the handler",
                layout.size(),
                layout.align()
            );
            // SAFETY: only `set_oom_handler` stores a non-zero value, an
            // `OomHandler` converted to an address.
            let handler = unsafe { core::mem::transmute::<usize, OomHandler>(handler) };
            if !handler(layout) {
                break;
            }
            // New memory (or memory reclaimed): the CPU's own heap first.
            let p = self.with_heap(f).unwrap_or(ptr::null_mut());
            if !p.is_null() {
                return p;
            }
        }
        ptr::null_mut()
    }

    /// Installs what runs when a request cannot be met from any heap: it
    /// may give the page provider more memory (`BuddyProvider::add_region`)
    /// or free memory of the kernel's own, and returns whether it did (then
    /// the request is retried, up to 8 times). It runs in the allocating
    /// context, interrupts as the caller had them, and must not allocate
    /// through this allocator.
    pub fn set_oom_handler(&self, handler: OomHandler) {
        self.oom_handler.store(handler as usize, Ordering::Release);
    }

    #[inline(always)]
    fn run<R>(
        global: &'static Global,
        slot: &mut Option<NonNull<Heap>>,
        f: impl FnOnce(&mut Heap) -> R,
    ) -> Option<R> {
        let heap = match *slot {
            Some(h) => h,
            None => {
                // Creating a heap takes the core's heap-pool lock.
                *slot = irq::masked(|| Heap::create(global));
                crate::log_debug!("KernelAlloc: heap created: {=bool}", slot.is_some());
                (*slot)?
            }
        };
        // SAFETY: the caller holds the slot exclusively (its CPU's flag or
        // the shared lock) for the duration of `f`.
        Some(f(unsafe { &mut *heap.as_ptr() }))
    }

    /// Returns every free page the calling CPU's heap holds, and every
    /// cached segment, to the page provider.
    pub fn release_now(&self) {
        self.with_heap(|h| irq::masked(|| h.release_now()));
    }

    /// How many calls found their CPU's heap busy and used the shared heap:
    /// interrupt handlers that allocated while the code they interrupted
    /// was inside the allocator.
    pub fn reentries(&self) -> usize {
        self.reentries.load(Ordering::Relaxed)
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
//
// Only the core's fast paths (a block from the current slab, a free into
// an own slab) run with interrupts enabled: they take no lock. Everything
// else may take a lock of the core or the page provider and runs with
// interrupts masked, so a handler never interrupts a lock holder on its own
// CPU.
unsafe impl GlobalAlloc for KernelAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let f = |h: &mut Heap| {
            if align <= MIN_ALIGN {
                let p = h.try_malloc_fast(size);
                if !p.is_null() {
                    return p;
                }
            }
            irq::masked(|| h.malloc_aligned(size, align))
        };
        self.or_shared(self.with_heap(f).unwrap_or(ptr::null_mut()), layout, f)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let f = |h: &mut Heap| irq::masked(|| h.zalloc_aligned(size, align));
        self.or_shared(self.with_heap(f).unwrap_or(ptr::null_mut()), layout, f)
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        self.with_heap(|h| {
            // SAFETY: `p` came from this allocator and is freed once.
            unsafe {
                if !h.try_free_fast(p) {
                    irq::masked(|| h.free(p));
                }
            }
        });
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = self
            .with_heap(|h| {
                irq::masked(|| {
                    // SAFETY: `p` is a live block of this allocator with
                    // this layout.
                    unsafe { h.realloc_aligned(p, layout.align(), new_size) }
                })
            })
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

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::provider::BuddyProvider;
    use std::boxed::Box;
    use std::sync::atomic::AtomicPtr;
    use std::vec::Vec;

    const MIB: usize = 1 << 20;

    fn on_cpu_zero() -> Option<usize> {
        Some(0)
    }

    /// 32 MiB-aligned host memory, leaked.
    fn memory(len: usize) -> usize {
        let buf: &'static mut [u8] = std::vec![0u8; len + 32 * MIB].leak();
        (buf.as_ptr() as usize).next_multiple_of(32 * MIB)
    }

    static PROVIDER: AtomicPtr<BuddyProvider> = AtomicPtr::new(ptr::null_mut());
    static SPARE: AtomicUsize = AtomicUsize::new(0);
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// Gives the provider the spare region, once.
    fn add_spare(layout: Layout) -> bool {
        assert!(layout.size() > 0);
        CALLS.fetch_add(1, Ordering::Relaxed);
        let spare = SPARE.swap(0, Ordering::Relaxed);
        if spare == 0 {
            return false;
        }
        // SAFETY: set by the test below before any allocation.
        let provider = unsafe { &*PROVIDER.load(Ordering::Acquire) };
        // SAFETY: leaked host memory, ours forever, used by nothing else.
        unsafe { provider.add_region(spare, 64 * MIB) }.is_ok()
    }

    #[test]
    fn oom_handler_adds_memory_and_the_request_is_retried() {
        let provider: &'static BuddyProvider = Box::leak(Box::new(BuddyProvider::new()));
        // SAFETY: leaked host memory, ours forever.
        unsafe { provider.add_region(memory(64 * MIB), 64 * MIB) }.unwrap();
        PROVIDER.store(provider as *const _ as *mut _, Ordering::Release);
        SPARE.store(memory(64 * MIB), Ordering::Relaxed);
        let global: &'static Global = Box::leak(Box::new(Global::new(provider)));
        let heaps: &'static KernelAlloc =
            Box::leak(Box::new(KernelAlloc::new(global, on_cpu_zero)));
        heaps.set_oom_handler(add_spare);

        let l = Layout::from_size_align(256 * 1024, 16).unwrap();
        let mut live = Vec::new();
        let mut before_handler = None;
        loop {
            // SAFETY: a non-zero size.
            let p = unsafe { heaps.alloc(l) };
            if p.is_null() {
                break;
            }
            if before_handler.is_none() && CALLS.load(Ordering::Relaxed) > 0 {
                // This request failed, got the handler's region, succeeded.
                before_handler = Some(live.len());
            }
            live.push(p);
            assert!(live.len() < 1000, "more than both regions hold");
        }
        // The handler's region, as large as the first one, served about as
        // many blocks again.
        let before = before_handler.expect("the handler ran and the request then succeeded");
        assert!(before > 50, "{before} blocks before the handler");
        assert!(
            live.len() > before * 3 / 2,
            "{} blocks, {before} before the handler",
            live.len()
        );
        // Called once with success, then once more (nothing left to add)
        // before the final failure.
        assert_eq!(CALLS.load(Ordering::Relaxed), 2);
        for p in live {
            // SAFETY: live blocks with this layout, freed once.
            unsafe { heaps.dealloc(p, l) };
        }
        assert_eq!(heaps.reentries(), 0);
    }

    #[test]
    fn huge_blocks_take_their_pages_and_may_exceed_the_largest_buddy_block() {
        let provider: &'static BuddyProvider = Box::leak(Box::new(BuddyProvider::new()));
        // SAFETY: leaked host memory, ours forever.
        unsafe { provider.add_region(memory(128 * MIB), 128 * MIB) }.unwrap();
        let global: &'static Global = Box::leak(Box::new(Global::new(provider)));
        let heaps: &'static KernelAlloc =
            Box::leak(Box::new(KernelAlloc::new(global, on_cpu_zero)));
        let before = provider.free_bytes();
        let l = Layout::from_size_align(40 * MIB, 16).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { heaps.alloc(l) };
        assert!(!p.is_null());
        let taken = before - provider.free_bytes();
        // The block, its header and the heap's own records (about 40.1 to
        // 40.5 MiB), not the 64 MiB block a power-of-two reservation takes.
        assert!((40 * MIB..44 * MIB).contains(&taken), "{taken}");
        // SAFETY: allocated above, freed once.
        unsafe { heaps.dealloc(p, l) };
        heaps.release_now();
        // Above the buddy's largest block (64 MiB): a run of blocks.
        let l = Layout::from_size_align(100 * MIB, 16).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { heaps.alloc(l) };
        assert!(!p.is_null(), "100 MiB of a 128 MiB region");
        // SAFETY: the block is 100 MiB of writable memory.
        unsafe {
            p.write_bytes(0xa5, 100 * MIB);
            heaps.dealloc(p, l);
        }
    }
}
