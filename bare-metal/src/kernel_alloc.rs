//! `KernelAlloc`: the core's heaps as a kernel's `#[global_allocator]`, one
//! set of heaps per CPU.
//!
//! Each CPU allocates from its own heaps, so CPUs never contend on the
//! fast paths:
//!
//! - blocks above the *slab limit* (every block by default, see
//!   [`KernelAlloc::with_slab_limit`]) come from the CPU's best-fit
//!   instance (see [`crate::fit_heap`]), cut to their size from chunks of
//!   pages; a block freed on another CPU goes onto its owner's lock-free
//!   stack;
//! - blocks up to the slab limit come from the CPU's core heap, slabs of
//!   equal blocks in 4 MiB segments; a block freed on another CPU goes
//!   back through the core's lock-free remote-free lists. When a slab heap
//!   has no room left (no 4 MiB-aligned memory for a segment), its small
//!   blocks come from the best-fit instance too.
//!
//! A free tells the two apart without a lookup for big layouts (only the
//! best-fit instances hold blocks above the slab limit); a small layout's
//! block is the core's exactly when the core knows it: it lies in one of
//! the core's segments ([`apex_core::owns`]) and is a block there
//! ([`apex_core::usable_size`], which also tells a best-fit block in the
//! unused tail of a huge block's segment from the huge block). So a
//! `Global` behind a `KernelAlloc` must serve nothing else.
//!
//! A CPU's heaps are guarded by a re-entrancy flag that only its own CPU
//! reads and writes, with plain loads and stores (no locked instruction,
//! no shared cache line: each slot has a cache line of its own). The flag
//! is set while the CPU is inside its heaps, so an interrupt handler that
//! allocates while the interrupted code was inside the allocator finds it
//! set and goes to the shared heaps (behind a spin lock, interrupts
//! masked) instead of corrupting them. CPUs without an index yet (early
//! boot of an AP) use the shared heaps too.
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
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use apex_core::fit::{self, Checked, Fit, QuickPop, QuickPush, RemoteFrees};
use apex_core::layout::MIN_ALIGN;
use apex_core::{Global, Heap, Snapshot};
use spin::Mutex;

use crate::fit_heap::{RemoteSlot, OWNERS, SHARED};
use crate::irq;
use crate::percpu::{CpuIndex, IndexFn, MAX_CPUS};

/// The default slab limit: no block goes to the slab heaps, every one is
/// cut to size by best fit (see [`KernelAlloc::with_slab_limit`]).
pub const SLAB_LIMIT: usize = 0;

/// A slab limit that puts the blocks the slab heaps serve best (the
/// small ones, many per slab) there: for kernels that want the slab
/// heaps' mitigations (free-list and bitmap checks, shuffled slots) on
/// their small blocks, at some memory (each CPU's heap takes a 4 MiB
/// segment and a slab per size class in use).
pub const SMALL_SLAB_LIMIT: usize = 512;

/// A slab limit that sends every block to the slab heaps and none to best
/// fit: the fastest single-CPU configuration on small and mid-sized blocks,
/// at the memory cost of slabs (size-class rounding, partly used slabs,
/// 4 MiB segments).
pub const SLABS_ONLY: usize = usize::MAX;

/// Allocations and frees a slot made through best fit, counted by its
/// owner with plain loads and stores (read by [`KernelAlloc::stats`]).
pub(crate) struct Counts {
    allocs: AtomicU64,
    frees: AtomicU64,
    /// Frees of another CPU's blocks (handed to their owner).
    remote: AtomicU64,
}

impl Counts {
    const fn new() -> Self {
        Counts {
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            remote: AtomicU64::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn remote_free(&self) {
        self.remote
            .store(self.remote.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn alloc(&self) {
        self.allocs
            .store(self.allocs.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn free(&self) {
        self.frees
            .store(self.frees.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// What a call into a slot works with: the slot's heaps, its owner number
/// (the CPU index, or [`SHARED`]) and its counters.
pub(crate) struct Slot<'a> {
    pub(crate) local: &'a mut Local,
    pub(crate) who: usize,
    pub(crate) counts: &'a Counts,
}

/// A CPU's heaps (or the shared ones), each created on first use.
pub(crate) struct Local {
    /// The core's slab heap.
    pub(crate) heap: Option<NonNull<Heap>>,
    /// The best-fit instance (see [`crate::fit_heap`]).
    pub(crate) fit: Option<NonNull<Fit>>,
    /// The best-fit instance when the inline fast paths may serve every
    /// request from it (no slab limit), else `None`: one load tells both.
    pub(crate) quick: Option<NonNull<Fit>>,
}

impl Local {
    const fn new() -> Self {
        Local {
            heap: None,
            fit: None,
            quick: None,
        }
    }
}

/// The shared heaps, which live in a static behind a lock.
struct SharedSlot(Local, Counts);

// SAFETY: the shared heaps are used only while their lock is held.
unsafe impl Send for SharedSlot {}

/// One CPU's heaps and its re-entrancy flag, alone on a cache line: the
/// flag is written on every call, and a line shared with a neighbour's
/// flag would bounce between the two CPUs.
#[repr(align(64))]
struct CpuSlot {
    /// Set while the CPU is inside its heaps. Only the owning CPU (and its
    /// interrupt handlers, which run on it) touches it.
    busy: AtomicBool,
    counts: Counts,
    local: UnsafeCell<Local>,
}

/// The calling CPU's slot while it is inside its heaps (its `busy` flag
/// set); leaving (the drop) clears the flag.
struct Entered<'a> {
    slot: &'a CpuSlot,
    who: usize,
}

impl Entered<'_> {
    /// The slot's heaps, counters and owner number.
    #[inline(always)]
    fn slot(&mut self) -> Slot<'_> {
        Slot {
            // SAFETY: the flag was clear when it was set for this guard, so
            // nothing else on this CPU is inside these heaps, and no other
            // CPU uses this slot; `&mut self` keeps the reference unique.
            local: unsafe { &mut *self.slot.local.get() },
            who: self.who,
            counts: &self.slot.counts,
        }
    }
}

impl Drop for Entered<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        self.slot.busy.store(false, Ordering::Relaxed);
    }
}

/// Per-CPU heaps over one allocator instance; `C` tells the running CPU
/// (see [`CpuIndex`]: a function by default).
pub struct KernelAlloc<C: CpuIndex = IndexFn> {
    global: &'static Global,
    /// The calling CPU's dense index (below `MAX_CPUS`), or `None` if it
    /// has none yet. Kernels usually read it from per-CPU data.
    cpu_index: C,
    /// Blocks up to this size and alignment go to the slab heaps: the
    /// limit asked for, or every block when the instance's mitigations
    /// need the slab heaps' out-of-line paths (set at the first best-fit
    /// allocation, see `fit_heap`).
    pub(crate) slab_limit: AtomicUsize,
    heaps: [CpuSlot; MAX_CPUS],
    shared: Mutex<SharedSlot>,
    /// Each fit instance's remote frees, by owner number.
    pub(crate) remote: [RemoteSlot; OWNERS],
    /// Bytes of chunks the fit instances hold.
    pub(crate) chunk_bytes: AtomicUsize,
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

// SAFETY: a CPU slot's heaps are used only by its own CPU while its `busy`
// flag is set (see `with_local`); the shared heaps are behind a lock; the
// remote stacks are atomics.
unsafe impl<C: CpuIndex> Sync for KernelAlloc<C> {}

impl KernelAlloc<IndexFn> {
    /// Per-CPU heaps drawing from `global`; `cpu_index` names the calling
    /// CPU. Every block comes from best fit ([`SLAB_LIMIT`]), unless the
    /// instance's mitigations include canaries, zeroing or quarantines,
    /// which only the slab heaps have: then every block comes from those.
    /// [`KernelAlloc::with_index`] takes an index that is read inline
    /// instead of called.
    pub const fn new(global: &'static Global, cpu_index: fn() -> Option<usize>) -> Self {
        Self::with_slab_limit(global, cpu_index, SLAB_LIMIT)
    }

    /// [`KernelAlloc::new`] with a slab limit (a power of two, at most the
    /// core's largest size class): blocks up to `limit` bytes and alignment
    /// go to the slab heaps, larger ones to best fit.
    /// [`SMALL_SLAB_LIMIT`] gives small blocks the slab heaps' checks for
    /// a few MiB per CPU; [`SLABS_ONLY`] sends every block there; 0 (the
    /// default) sends every block to best fit, which takes the least
    /// memory.
    pub const fn with_slab_limit(
        global: &'static Global,
        cpu_index: fn() -> Option<usize>,
        limit: usize,
    ) -> Self {
        KernelAlloc::with_index(global, IndexFn(cpu_index), limit)
    }
}

impl<C: CpuIndex> KernelAlloc<C> {
    /// [`KernelAlloc::with_slab_limit`] with any [`CpuIndex`], such as
    /// [`percpu::Registered`](crate::percpu::Registered) or a
    /// [`percpu::GsField`](crate::percpu::GsField).
    pub const fn with_index(global: &'static Global, cpu_index: C, limit: usize) -> Self {
        KernelAlloc {
            global,
            cpu_index,
            slab_limit: AtomicUsize::new(limit),
            heaps: [const {
                CpuSlot {
                    busy: AtomicBool::new(false),
                    counts: Counts::new(),
                    local: UnsafeCell::new(Local::new()),
                }
            }; MAX_CPUS],
            shared: Mutex::new(SharedSlot(Local::new(), Counts::new())),
            remote: [const { RemoteSlot(RemoteFrees::new()) }; OWNERS],
            chunk_bytes: AtomicUsize::new(0),
            reentries: AtomicUsize::new(0),
            oom_handler: AtomicUsize::new(0),
        }
    }

    /// Whether a block of this size and alignment belongs to the slab
    /// heaps.
    #[inline(always)]
    fn is_small(&self, size: usize, align: usize) -> bool {
        let limit = self.slab_limit.load(Ordering::Relaxed);
        size <= limit && align <= limit
    }

    /// Runs `f` on the calling CPU's heaps (with the CPU's index), or on
    /// the shared heaps when the CPU's are busy (re-entered from an
    /// interrupt handler) or the CPU has no index.
    #[inline(always)]
    pub(crate) fn with_local<R>(&self, f: impl FnOnce(Slot<'_>) -> R) -> R {
        match self.enter_local() {
            Some(mut entered) => f(entered.slot()),
            None => self.on_shared(f),
        }
    }

    /// Enters the calling CPU's slot: `None` when the CPU has no index or
    /// is inside its heaps already (an interrupt handler that interrupted
    /// the allocator). The hot paths use this rather than
    /// [`KernelAlloc::with_local`], so that their work is inlined here
    /// instead of running in a closure called through the stack.
    #[inline(always)]
    fn enter_local(&self) -> Option<Entered<'_>> {
        let i = self.cpu_index.current()?;
        let slot = self.heaps.get(i)?;
        // Only this CPU reads and writes the flag, so a plain load and
        // store suffice: an interrupt arriving between them runs to
        // completion (leaving the flag clear) before the store.
        if slot.busy.load(Ordering::Relaxed) {
            self.reentries.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        slot.busy.store(true, Ordering::Relaxed);
        // Keep the heap accesses after the flag is set (and, in `Drop`,
        // before it is cleared), as seen by an interrupt on this CPU.
        compiler_fence(Ordering::SeqCst);
        Some(Entered { slot, who: i })
    }

    /// Enters the calling CPU's slot for the inline fast paths, which
    /// serve blocks from its best-fit instance's quick lists: `None` when
    /// blocks may go to the slab heaps (a slab limit above 0), the CPU has
    /// no index or is inside its heaps already, or it has no instance yet.
    /// Whatever declines here takes the full path, which does the same
    /// work with every case handled.
    #[inline(always)]
    fn enter_fit(&self) -> Option<(Entered<'_>, NonNull<Fit>)> {
        let i = self.cpu_index.current()?;
        let slot = self.heaps.get(i)?;
        // As in `enter_local`; a busy slot is counted by the full path.
        if slot.busy.load(Ordering::Relaxed) {
            return None;
        }
        slot.busy.store(true, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        let entered = Entered { slot, who: i };
        // SAFETY: the flag is set: nothing else on this CPU is inside the
        // slot, and no other CPU uses it.
        let fit = unsafe { (*slot.local.get()).quick }?;
        Some((entered, fit))
    }

    /// Runs `f` on the shared heaps, with interrupts masked while their
    /// lock is held (see [`irq`]).
    pub(crate) fn on_shared<R>(&self, f: impl FnOnce(Slot<'_>) -> R) -> R {
        irq::masked(|| {
            let mut shared = self.shared.lock();
            let SharedSlot(local, counts) = &mut *shared;
            f(Slot {
                local,
                who: SHARED,
                counts,
            })
        })
    }

    /// The slot's slab heap, created on first use; `None` when out of
    /// memory.
    #[inline(always)]
    fn heap_of<'a>(&self, l: &'a mut Local) -> Option<&'a mut Heap> {
        if l.heap.is_none() {
            // Creating a heap takes the core's heap-pool lock.
            l.heap = irq::masked(|| Heap::create(self.global));
            crate::log_debug!("KernelAlloc: heap created: {=bool}", l.heap.is_some());
        }
        // SAFETY: the caller holds the slot exclusively (its CPU's flag or
        // the shared lock) for the life of the reference.
        l.heap.map(|h| unsafe { &mut *h.as_ptr() })
    }

    /// Allocates on the slot's heaps: a small block from the slab heap (or
    /// best fit when the slab heap has no room), a big one from best fit.
    /// Null when out of memory. Only the two fast paths are inline.
    #[inline(always)]
    fn alloc_on(&self, s: &mut Slot<'_>, size: usize, align: usize, zero: bool) -> *mut u8 {
        if self.is_small(size, align) {
            if let Some(h) = s.local.heap {
                if !zero && align <= MIN_ALIGN {
                    // SAFETY: the caller holds the slot (its CPU's flag or
                    // the shared lock).
                    let p = unsafe { (*h.as_ptr()).try_malloc_fast(size) };
                    if !p.is_null() {
                        return p;
                    }
                }
            }
            return self.alloc_small_slow(s, size, align, zero);
        }
        if let Some(f) = s.local.fit {
            if !zero {
                // SAFETY: as above. (Remote frees wait until the instance
                // runs out of free blocks: the slow path collects them
                // before it takes more memory.)
                if let Ok(p) = unsafe { (*f.as_ptr()).alloc(size, align) } {
                    if !p.is_null() {
                        s.counts.alloc();
                        return p;
                    }
                }
            }
        }
        self.alloc_big_slow(s, size, align, zero)
    }

    /// [`KernelAlloc::alloc_on`] of a small block past the slab fast path:
    /// the slab heap's slow path, then best fit.
    #[cold]
    #[inline(never)]
    fn alloc_small_slow(&self, s: &mut Slot<'_>, size: usize, align: usize, zero: bool) -> *mut u8 {
        if let Some(p) = self.alloc_slab(s.local, size, align, zero) {
            return p;
        }
        self.alloc_big_slow(s, size, align, zero)
    }

    /// A block from the slot's slab heap; `None` when it has no room.
    fn alloc_slab(&self, l: &mut Local, size: usize, align: usize, zero: bool) -> Option<*mut u8> {
        let h = self.heap_of(l)?;
        let p = irq::masked(|| {
            if zero {
                h.zalloc_aligned(size, align)
            } else {
                h.malloc_aligned(size, align)
            }
        });
        (!p.is_null()).then_some(p)
    }

    /// [`KernelAlloc::alloc_on`] from best fit past its fast path: remote
    /// frees collected, a chunk added when needed, a zeroed block cleared.
    /// When the instance's mitigations rule best fit out, the slab heap.
    #[cold]
    #[inline(never)]
    fn alloc_big_slow(&self, s: &mut Slot<'_>, size: usize, align: usize, zero: bool) -> *mut u8 {
        if !self.fit_allowed() {
            return self
                .alloc_slab(s.local, size, align, zero)
                .unwrap_or(ptr::null_mut());
        }
        let p = self.fit_alloc(s, size, align);
        if !p.is_null() {
            s.counts.alloc();
            if zero {
                // SAFETY: a fresh block of at least `size` bytes.
                unsafe { ptr::write_bytes(p, 0, size) };
            }
        }
        p
    }

    /// Allocates through the calling CPU's heaps, then the shared ones,
    /// then (after the out-of-memory handler, if any) again.
    #[inline(always)]
    fn alloc_routed(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        let p = match self.enter_local() {
            Some(mut entered) => self.alloc_on(&mut entered.slot(), size, align, zero),
            None => self.alloc_shared(size, align, zero),
        };
        if !p.is_null() {
            return p;
        }
        self.out_of_memory(size, align, zero)
    }

    /// [`KernelAlloc::alloc_on`] on the shared heaps.
    #[cold]
    #[inline(never)]
    fn alloc_shared(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        self.on_shared(|mut s| self.alloc_on(&mut s, size, align, zero))
    }

    #[cold]
    #[inline(never)]
    fn out_of_memory(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        for _ in 0..OOM_RETRIES {
            // A CPU whose heaps cannot get memory of their own still
            // allocates from the memory the shared heaps have.
            let p = self.on_shared(|mut s| self.alloc_on(&mut s, size, align, zero));
            if !p.is_null() {
                return p;
            }
            let handler = self.oom_handler.load(Ordering::Acquire);
            if handler == 0 {
                break;
            }
            crate::log_error!(
                "KernelAlloc: out of memory: {=usize} bytes, alignment {=usize}; calling the handler",
                size,
                align
            );
            // SAFETY: only `set_oom_handler` stores a non-zero value, an
            // `OomHandler` converted to an address.
            let handler = unsafe { core::mem::transmute::<usize, OomHandler>(handler) };
            // SAFETY: `size` and `align` came from a valid layout.
            if !handler(unsafe { Layout::from_size_align_unchecked(size, align) }) {
                break;
            }
            // New memory (or memory reclaimed): the CPU's own heaps first.
            let p = self.with_local(|mut s| self.alloc_on(&mut s, size, align, zero));
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

    /// Resizes a best-fit block within the slot's heaps when it is the
    /// slot's own: in place when its neighbour allows (a small new size
    /// included: the block stays a best-fit block, which its free finds),
    /// else moved within the slot's heaps. `None` when the block is
    /// another slot's or nothing here holds the new size.
    ///
    /// # Safety
    /// `p` is a live best-fit block of this allocator allocated with
    /// alignment `align`, of which `keep` bytes are kept.
    #[inline(always)]
    unsafe fn fit_realloc_on(
        &self,
        s: &mut Slot<'_>,
        p: *mut u8,
        align: usize,
        new_size: usize,
        keep: usize,
    ) -> Option<*mut u8> {
        // SAFETY: the caller's contract; a fit block has a header.
        unsafe {
            if fit::owner_of(p) != Some(s.who) {
                return None;
            }
            if self.fit_resize_local(s.local, p, new_size) {
                return Some(p);
            }
            let q = self.alloc_on(s, new_size, align, false);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, keep);
                self.fit_free_in(s, p);
                return Some(q);
            }
            // No free block anywhere holds the new size: the block may
            // still grow into its neighbours on both sides.
            if align <= fit::GRANULE {
                let q = self.fit_slide_local(s.local, p, new_size, keep);
                if !q.is_null() {
                    return Some(q);
                }
            }
            None
        }
    }

    /// Frees a block on the slot's heaps.
    ///
    /// # Safety
    /// `p` is a live block of this allocator with this layout, freed once.
    #[inline(always)]
    unsafe fn free_on(&self, s: &mut Slot<'_>, p: *mut u8, layout: Layout) {
        // SAFETY: a big layout's block is a best-fit block.
        unsafe {
            if self.is_small(layout.size(), layout.align()) {
                self.free_small(s, p)
            } else {
                self.fit_free_in(s, p)
            }
        }
    }

    /// [`KernelAlloc::free_on`] on the shared heaps.
    ///
    /// # Safety
    /// As [`KernelAlloc::free_on`].
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_shared(&self, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        self.on_shared(|mut s| unsafe { self.free_on(&mut s, p, layout) })
    }

    /// Frees a block of a small layout: the slab fast path inline, the
    /// rest out of line.
    ///
    /// # Safety
    /// `p` is a live block of this allocator, not used afterwards.
    #[inline(always)]
    unsafe fn free_small(&self, s: &mut Slot<'_>, p: *mut u8) {
        if let Some(h) = s.local.heap {
            // SAFETY: the caller holds the slot; `p` is a live block (the
            // fast path declines anything but an own slab's block).
            if unsafe { (*h.as_ptr()).try_free_fast(p) } {
                return;
            }
        }
        // SAFETY: forwarded.
        unsafe { self.free_small_slow(s, p) }
    }

    /// A small layout's block that the slab fast path declined: the core's
    /// when it lies in a core segment, else a best-fit block.
    ///
    /// # Safety
    /// As [`KernelAlloc::free_small`].
    #[cold]
    #[inline(never)]
    unsafe fn free_small_slow(&self, s: &mut Slot<'_>, p: *mut u8) {
        // SAFETY: `p` is a live block of ours (the caller's contract).
        if unsafe { core_block(p) } {
            if let Some(h) = self.heap_of(s.local) {
                // SAFETY: a live block of the core's, freed once.
                irq::masked(|| unsafe { h.free(p) });
            }
        } else {
            // SAFETY: forwarded: a best-fit block.
            unsafe { self.fit_free_in(s, p) }
        }
    }

    /// Returns what the calling CPU's heaps hold free to the page
    /// provider: the slab heap's free pages and cached segments, the
    /// best-fit instance's empty chunks (after freeing what other CPUs
    /// handed it and what its quick lists hold).
    pub fn release_now(&self) {
        self.with_local(|s| {
            if let Some(h) = s.local.heap {
                // SAFETY: the slot is ours (its flag or the shared lock).
                irq::masked(|| unsafe { (*h.as_ptr()).release_now() });
            }
            self.fit_trim(s.local, s.who);
        });
    }

    /// How many calls found their CPU's heap busy and used the shared heap:
    /// interrupt handlers that allocated while the code they interrupted
    /// was inside the allocator.
    pub fn reentries(&self) -> usize {
        self.reentries.load(Ordering::Relaxed)
    }

    /// Counters summed over all heaps: the slab heaps' (see
    /// [`apex_core::snapshot`]), with the best-fit allocations, frees and
    /// frees of other CPUs' blocks added to `mallocs`, `frees` and
    /// `remote_frees` (a block freed on another CPU counts when it is
    /// freed there).
    pub fn stats(&self) -> Snapshot {
        let mut s = apex_core::snapshot(self.global);
        let mut add = |c: &Counts| {
            s.mallocs += c.allocs.load(Ordering::Relaxed);
            s.frees += c.frees.load(Ordering::Relaxed);
            s.remote_frees += c.remote.load(Ordering::Relaxed);
        };
        for slot in &self.heaps {
            add(&slot.counts);
        }
        irq::masked(|| add(&self.shared.lock().1));
        s
    }

    /// Bytes the best-fit instances hold in chunks from the page provider.
    pub fn fit_chunk_bytes(&self) -> usize {
        self.chunk_bytes.load(Ordering::Relaxed)
    }

    /// The allocator instance behind these heaps.
    pub fn global(&self) -> &'static Global {
        self.global
    }

    /// Gives every heap's memory back to the page provider: for a test or
    /// benchmark that builds allocator instances over the same memory one
    /// after another. Afterwards this `KernelAlloc` is empty and may be
    /// used again.
    ///
    /// # Safety
    /// Every block allocated from this allocator has been freed, and no
    /// other CPU is inside it.
    pub unsafe fn tear_down(&self) {
        let global = self.global;
        let drop_local = |l: &mut Local, owner: usize| {
            // SAFETY: the caller's contract: nothing of these heaps is in
            // use, and the slot is ours (no CPU is inside it).
            unsafe {
                self.fit_destroy(l, owner);
                if let Some(h) = l.heap.take() {
                    irq::masked(|| {
                        (*h.as_ptr()).release_now();
                        Heap::destroy(h);
                    });
                }
            }
        };
        for (i, slot) in self.heaps.iter().enumerate() {
            // SAFETY: no CPU is inside the allocator (the caller's
            // contract).
            drop_local(unsafe { &mut *slot.local.get() }, i);
        }
        irq::masked(|| drop_local(&mut self.shared.lock().0, SHARED));
        // The destroyed heaps' segments, all of whose blocks are free, go
        // back to the provider.
        let now = global.now().unwrap_or(u64::MAX);
        global.purge_abandoned(now, 0, true);
        global.purge_cache(now, true);
    }
}

/// Whether the live block `p` of this allocator is the core's (a slab or
/// huge block) rather than a best-fit block: it lies in a core segment,
/// and the core finds a block starting there.
///
/// # Safety
/// `p` is a live block of this allocator.
unsafe fn core_block(p: *mut u8) -> bool {
    // SAFETY: `usable_size` accepts any live block (a best-fit block is
    // foreign to the core: 0).
    apex_core::owns(p) && unsafe { apex_core::usable_size(p) } != 0
}

// SAFETY: blocks come from the core's heaps or a fit instance, which hand
// out distinct blocks of at least the requested size and alignment; each
// is freed once by the allocator that owns it (big layouts are always best
// fit's; a small layout's block is the core's exactly when `core_block`
// says so); `realloc` keeps the contents up to the smaller size.
//
// Only the lock-free paths run with interrupts enabled: the core's fast
// paths, a CPU's own best-fit instance, remote-free pushes. Everything that
// may take a lock of the core or the page provider runs with interrupts
// masked, so a handler never interrupts a lock holder on its own CPU.
unsafe impl<C: CpuIndex> GlobalAlloc for KernelAlloc<C> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The fast path: a block of the request's size that this CPU freed
        // and cached. Everything else runs out of line, from the entry on.
        if let Some((entered, fit)) = self.enter_fit() {
            let (size, align) = (layout.size(), layout.align());
            // SAFETY: the slot is entered: its instance is ours alone.
            return match unsafe { (*fit.as_ptr()).try_pop_quick(size, align) } {
                QuickPop::Block(p) => {
                    entered.slot.counts.alloc();
                    p
                }
                QuickPop::Bins => self.alloc_entered(entered, size, align, true),
                QuickPop::Check(_) => self.alloc_entered(entered, size, align, false),
            };
        }
        self.alloc_slow(layout.size(), layout.align())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_routed(layout.size(), layout.align(), true)
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // The fast path: a block of this CPU's instance waits on its quick
        // list. Everything else (and every misuse) runs out of line.
        if let Some((entered, fit)) = self.enter_fit() {
            // SAFETY: the slot is entered; `p` is a live block of ours
            // (the caller's contract), so its header is readable.
            return match unsafe { (*fit.as_ptr()).try_push_quick(p) } {
                QuickPush::Cached => entered.slot.counts.free(),
                // SAFETY: checked by this instance just now.
                QuickPush::Bins(block) => unsafe { self.free_checked(entered, block) },
                // SAFETY: forwarded.
                QuickPush::Declined => unsafe { self.dealloc_entered(entered, p, layout) },
            };
        }
        // SAFETY: forwarded.
        unsafe { self.dealloc_slow(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some((entered, fit)) = self.enter_fit() {
            // SAFETY: forwarded; the slot is entered.
            return unsafe { self.realloc_entered(entered, fit, p, layout, new_size) };
        }
        // SAFETY: forwarded.
        unsafe { self.realloc_routed(p, layout, new_size) }
    }
}

impl<C: CpuIndex> KernelAlloc<C> {
    /// [`GlobalAlloc::alloc`] past its fast path, in the slot it entered,
    /// whose instance's quick list had nothing (`bins`: go to its bins) or
    /// a head that looked wrong (then [`Fit::alloc`] pops it again and
    /// reports a corrupted list). (Few arguments, so that the fast path
    /// reaches this by a jump, with no stack frame of its own.)
    #[inline(never)]
    fn alloc_entered(
        &self,
        mut entered: Entered<'_>,
        size: usize,
        align: usize,
        bins: bool,
    ) -> *mut u8 {
        let Some(fit) = entered.slot().local.fit else {
            // SAFETY: the fast path found the instance in this slot, and
            // nothing takes it away while the slot is entered.
            unsafe { core::hint::unreachable_unchecked() }
        };
        // SAFETY: the slot is entered: its instance is ours alone.
        let f = unsafe { &mut *fit.as_ptr() };
        let got = if bins {
            f.alloc_binned(size, align)
        } else {
            f.alloc(size, align)
        };
        let p = match got {
            Ok(p) if !p.is_null() => {
                entered.slot.counts.alloc();
                p
            }
            Ok(_) => self.alloc_big_slow(&mut entered.slot(), size, align, false),
            Err(m) => self.fit_misuse(m, None),
        };
        drop(entered);
        if !p.is_null() {
            return p;
        }
        self.out_of_memory(size, align, false)
    }

    /// [`GlobalAlloc::dealloc`] of a block of the slot's own instance that
    /// goes to its bins, in the slot it entered.
    ///
    /// # Safety
    /// `block` came from the entered slot's instance's
    /// [`Fit::try_push_quick`] just now.
    #[inline(never)]
    unsafe fn free_checked(&self, mut entered: Entered<'_>, block: Checked) {
        let Some(fit) = entered.slot().local.fit else {
            // SAFETY: the fast path found the instance in this slot, and
            // nothing takes it away while the slot is entered.
            unsafe { core::hint::unreachable_unchecked() }
        };
        entered.slot.counts.free();
        // SAFETY: the caller's contract; the slot is entered.
        match unsafe { (*fit.as_ptr()).free_checked(block) } {
            Ok(None) => {}
            Ok(chunk) => self.give_back(chunk),
            Err(m) => self.fit_misuse(m, None),
        }
    }

    /// [`GlobalAlloc::dealloc`] of a block the slot's quick lists declined
    /// (another CPU's, or misuse, which the full path reports), in the
    /// slot it entered.
    ///
    /// # Safety
    /// `p` is a live block of ours with this layout, freed once.
    #[inline(never)]
    unsafe fn dealloc_entered(&self, mut entered: Entered<'_>, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { self.free_on(&mut entered.slot(), p, layout) }
    }

    /// [`GlobalAlloc::realloc`] of a block of the slot's own instance, in
    /// the slot it entered: in place when the neighbour allows, else moved
    /// to a block of the instance's lists. Anything else (another CPU's
    /// block, no free block that fits) takes the full path.
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`]; `fit` is the entered slot's instance.
    #[inline(always)]
    unsafe fn realloc_entered(
        &self,
        entered: Entered<'_>,
        fit: NonNull<Fit>,
        p: *mut u8,
        layout: Layout,
        new_size: usize,
    ) -> *mut u8 {
        // SAFETY: `p` is a live block of ours (the caller's contract), and
        // with no slab limit every block is a best-fit block, headed; the
        // slot is entered, so its instance is ours alone.
        unsafe {
            if fit::owner_of(p) == Some(entered.who) {
                let f = &mut *fit.as_ptr();
                match f.resize(p, new_size) {
                    Ok(true) => return p,
                    Ok(false) => {}
                    Err(m) => self.fit_misuse(m, None),
                }
                let q = f
                    .alloc(new_size, layout.align())
                    .unwrap_or_else(|m| self.fit_misuse(m, None));
                if !q.is_null() {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    let freed = match f.try_push_quick(p) {
                        QuickPush::Cached => Ok(None),
                        QuickPush::Bins(block) => f.free_checked(block),
                        // Not after `resize` checked it; `free` says why.
                        QuickPush::Declined => f.free(p),
                    };
                    match freed {
                        Ok(chunk) => self.give_back(chunk),
                        Err(m) => self.fit_misuse(m, None),
                    }
                    entered.slot.counts.alloc();
                    entered.slot.counts.free();
                    return q;
                }
            }
            drop(entered);
            self.realloc_routed(p, layout, new_size)
        }
    }

    /// [`GlobalAlloc::alloc`] past its fast path.
    #[inline(never)]
    fn alloc_slow(&self, size: usize, align: usize) -> *mut u8 {
        self.alloc_routed(size, align, false)
    }

    /// [`GlobalAlloc::dealloc`] past its fast path.
    ///
    /// # Safety
    /// `p` is a live block of ours with this layout, freed once.
    #[inline(never)]
    unsafe fn dealloc_slow(&self, p: *mut u8, layout: Layout) {
        match self.enter_local() {
            // SAFETY: `p` is a live block of ours with this layout, freed
            // once.
            Some(mut entered) => unsafe { self.free_on(&mut entered.slot(), p, layout) },
            // SAFETY: as above.
            None => unsafe { self.dealloc_shared(p, layout) },
        }
    }

    /// [`GlobalAlloc::realloc`].
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    unsafe fn realloc_routed(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let keep = layout.size().min(new_size);
        // SAFETY: `p` is a live block of ours (the caller's contract).
        let core_block = self.is_small(layout.size(), align) && unsafe { core_block(p) };
        if core_block {
            if self.is_small(new_size, align) {
                let q = self.with_local(|s| match self.heap_of(s.local) {
                    // SAFETY: `p` is a live block of this allocator with
                    // this layout.
                    Some(h) => irq::masked(|| unsafe { h.realloc_aligned(p, align, new_size) }),
                    None => ptr::null_mut(),
                });
                if !q.is_null() {
                    return q;
                }
            }
        } else {
            // A best-fit block of the calling CPU's: resized or moved within
            // this CPU's heaps, all under one entry.
            let done = match self.enter_local() {
                // SAFETY: `p` is a live fit block with `keep` bytes to keep.
                Some(mut entered) => unsafe {
                    self.fit_realloc_on(&mut entered.slot(), p, align, new_size, keep)
                },
                // SAFETY: as above.
                None => self.on_shared(|mut s| unsafe {
                    self.fit_realloc_on(&mut s, p, align, new_size, keep)
                }),
            };
            if let Some(q) = done {
                return q;
            }
        }
        // Move: through `alloc`, which routes the new size and falls back
        // to the shared heaps.
        let q = self.alloc_routed(new_size, align, false);
        if !q.is_null() {
            // SAFETY: both blocks hold the copied length; `p` is freed once
            // with its layout.
            unsafe {
                ptr::copy_nonoverlapping(p, q, keep);
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
        // The block in a chunk of its own (cut to whole pages) and the
        // best-fit instance's lists (about 40.1 MiB), not the 64 MiB block
        // a power-of-two reservation takes.
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

    /// A provider over `len` bytes of fresh host memory, an instance and
    /// `KernelAlloc` over it with this slab limit (all leaked, as statics
    /// would be).
    fn instance_with(
        len: usize,
        cpu: fn() -> Option<usize>,
        limit: usize,
    ) -> (&'static BuddyProvider, &'static KernelAlloc) {
        let provider: &'static BuddyProvider = Box::leak(Box::new(BuddyProvider::new()));
        // SAFETY: leaked host memory, ours forever.
        unsafe { provider.add_region(memory(len), len) }.unwrap();
        let global: &'static Global = Box::leak(Box::new(Global::new(provider)));
        let heaps = KernelAlloc::with_slab_limit(global, cpu, limit);
        (provider, Box::leak(Box::new(heaps)))
    }

    fn instance(
        len: usize,
        cpu: fn() -> Option<usize>,
    ) -> (&'static BuddyProvider, &'static KernelAlloc) {
        instance_with(len, cpu, SLAB_LIMIT)
    }

    fn fill(p: *mut u8, len: usize, byte: u8) {
        // SAFETY: the block holds `len` bytes.
        unsafe { p.write_bytes(byte, len) }
    }

    fn holds(p: *mut u8, len: usize, byte: u8) -> bool {
        // SAFETY: the block holds `len` bytes.
        unsafe { core::slice::from_raw_parts(p, len) }
            .iter()
            .all(|&b| b == byte)
    }

    #[test]
    fn small_blocks_in_slabs_big_ones_best_fit_and_realloc_across_the_limit() {
        let (provider, heaps) = instance_with(64 * MIB, on_cpu_zero, SMALL_SLAB_LIMIT);
        let before = provider.free_bytes();
        let lay = |n: usize| Layout::from_size_align(n, 16).unwrap();
        // SAFETY: non-zero sizes; each block is freed once with its layout.
        unsafe {
            let small = heaps.alloc(lay(100));
            let big = heaps.alloc(lay(5000));
            assert!(apex_core::owns(small), "slab block in a core segment");
            assert!(!apex_core::owns(big), "best-fit block outside segments");
            assert_eq!(fit::owner_of(big), Some(0));
            // Aligned big blocks.
            for shift in 5..=12 {
                let l = Layout::from_size_align(3000, 1 << shift).unwrap();
                let p = heaps.alloc(l);
                assert_eq!(p as usize % (1 << shift), 0);
                heaps.dealloc(p, l);
            }
            fill(small, 100, 1);
            fill(big, 5000, 2);
            // Small to big: moves to best fit with its contents.
            let grown = heaps.realloc(small, lay(100), 20_000);
            assert!(!apex_core::owns(grown) && holds(grown, 100, 1));
            // Big to small: stays where it is (shrunk in place).
            let shrunk = heaps.realloc(big, lay(5000), 50);
            assert_eq!(shrunk, big);
            assert!(holds(shrunk, 50, 2));
            // A big block with free memory after it grows in place.
            let last = heaps.alloc(lay(10_000));
            fill(last, 10_000, 3);
            let next = heaps.alloc(lay(10_000));
            heaps.dealloc(next, lay(10_000));
            assert_eq!(heaps.realloc(last, lay(10_000), 19_000), last);
            assert!(holds(last, 10_000, 3));
            for (p, n) in [(grown, 20_000), (shrunk, 50), (last, 19_000)] {
                heaps.dealloc(p, lay(n));
            }
        }
        heaps.release_now();
        // Everything went back but the heaps' own state and the slab
        // heap's segment.
        let held = before - provider.free_bytes();
        assert!(held <= 4 * MIB + 512 * 1024, "{held}");
        assert_eq!(heaps.fit_chunk_bytes(), 0);
        // SAFETY: every block was freed; no other thread uses `heaps`.
        unsafe { heaps.tear_down() };
        // All but the core's pool of heap records (one 64 KiB chunk).
        assert_eq!(heaps.stats().segments, 0);
        let kept = before - provider.free_bytes();
        assert!(kept <= 64 * 1024, "tear_down kept {kept}");
        provider.lock().verify().unwrap();
    }

    std::thread_local! {
        static CPU: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    fn thread_cpu() -> Option<usize> {
        Some(CPU.with(|c| c.get()))
    }

    #[test]
    fn blocks_freed_on_another_cpu_go_back_to_their_owner() {
        let (provider, heaps) = instance(64 * MIB, thread_cpu);
        let before = provider.free_bytes();
        let lay = |n: usize| Layout::from_size_align(n, 16).unwrap();
        // CPU 1 allocates, CPU 2 frees (remote frees for both kinds).
        let blocks: Vec<(usize, usize)> = std::thread::spawn(move || {
            CPU.with(|c| c.set(1));
            (0..2000)
                .map(|i| {
                    let n = if i % 2 == 0 { 64 } else { 3000 + i };
                    // SAFETY: a non-zero size.
                    let p = unsafe { heaps.alloc(lay(n)) };
                    assert!(!p.is_null());
                    fill(p, n, i as u8);
                    (p as usize, n)
                })
                .collect()
        })
        .join()
        .unwrap();
        let used = heaps.fit_chunk_bytes();
        assert!(used >= 3 * MIB, "{used}");
        std::thread::spawn(move || {
            CPU.with(|c| c.set(2));
            for (i, &(p, n)) in blocks.iter().enumerate() {
                assert!(holds(p as *mut u8, n, i as u8));
                // SAFETY: live blocks, freed once with their layouts.
                unsafe { heaps.dealloc(p as *mut u8, lay(n)) };
            }
        })
        .join()
        .unwrap();
        // The big blocks wait on CPU 1's stack until it runs out of free
        // blocks (or trims).
        assert_eq!(heaps.fit_chunk_bytes(), used);
        std::thread::spawn(move || {
            CPU.with(|c| c.set(1));
            heaps.release_now();
        })
        .join()
        .unwrap();
        assert_eq!(heaps.fit_chunk_bytes(), 0, "CPU 1's chunks went back");
        // SAFETY: every block was freed; no thread is inside `heaps`.
        unsafe { heaps.tear_down() };
        assert_eq!(heaps.stats().segments, 0);
        assert!(before - provider.free_bytes() <= 64 * 1024);
    }

    #[test]
    fn small_blocks_use_best_fit_when_no_segment_fits() {
        // 3 MiB: no 4 MiB-aligned block for a segment, so the slab heap
        // has no room and small blocks come from best fit.
        let (_, heaps) = instance_with(3 * MIB, on_cpu_zero, SMALL_SLAB_LIMIT);
        let l = Layout::from_size_align(200, 8).unwrap();
        let mut live = Vec::new();
        loop {
            // SAFETY: a non-zero size.
            let p = unsafe { heaps.alloc(l) };
            if p.is_null() {
                break;
            }
            assert!(!apex_core::owns(p));
            fill(p, 200, live.len() as u8);
            live.push(p);
        }
        // Nearly all of the 3 MiB (less the buddy's and best fit's state).
        assert!(live.len() * 200 > 3 * MIB * 85 / 100, "{}", live.len());
        for (i, &p) in live.iter().enumerate() {
            assert!(holds(p, 200, i as u8));
            // SAFETY: live blocks, freed once: a small layout's block
            // outside the core's segments goes to best fit.
            unsafe { heaps.dealloc(p, l) };
        }
        heaps.release_now();
        assert_eq!(heaps.fit_chunk_bytes(), 0);
    }

    #[test]
    fn by_default_every_block_is_cut_to_size_by_best_fit() {
        let (provider, heaps) = instance(64 * MIB, on_cpu_zero);
        let before = provider.free_bytes();
        let mut live = Vec::new();
        for i in 1..2000usize {
            let l = Layout::from_size_align(i * 7 % 3000 + 1, 8 << (i % 4)).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { heaps.alloc(l) };
            assert!(!p.is_null() && !apex_core::owns(p));
            assert_eq!(p as usize % l.align(), 0);
            fill(p, l.size(), i as u8);
            live.push((p, l, i as u8));
        }
        assert_eq!(heaps.stats().segments, 0, "no slab segment");
        // About 3 MB requested: the chunks hold little more.
        let requested: usize = live.iter().map(|(_, l, _)| l.size()).sum();
        let taken = before - provider.free_bytes();
        assert!(
            taken < requested + requested / 10 + 2 * MIB,
            "{taken} for {requested}"
        );
        for (p, l, b) in live {
            assert!(holds(p, l.size(), b));
            // SAFETY: live blocks, freed once with their layouts.
            unsafe { heaps.dealloc(p, l) };
        }
        let s = heaps.stats();
        assert_eq!((s.mallocs, s.frees), (1999, 1999));
        heaps.release_now();
        assert_eq!(heaps.fit_chunk_bytes(), 0);
    }

    #[test]
    fn mitigations_only_the_slab_heaps_have_send_every_block_there() {
        let (_, heaps) = instance(64 * MIB, on_cpu_zero);
        heaps
            .global()
            .set_mitigations(apex_core::harden::Mitigations::FULL);
        let mut live = Vec::new();
        for size in [24, 200, 5000, 100_000] {
            let l = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { heaps.alloc(l) };
            assert!(apex_core::owns(p), "{size}: a slab heap block");
            live.push((p, l));
        }
        assert_eq!(heaps.fit_chunk_bytes(), 0);
        for (p, l) in live {
            // SAFETY: live blocks, freed once with their layouts.
            unsafe { heaps.dealloc(p, l) };
        }
    }

    #[test]
    fn best_fit_blocks_beside_a_huge_block_are_not_taken_for_the_cores() {
        fn fatal(msg: &str) -> ! {
            std::panic!("fatal: {msg}");
        }
        // Everything in the slab heaps: a block of three quarters of a
        // segment is a huge block whose reservation ends mid-segment; when
        // the slab heaps run out, best-fit chunks fill what is left, that
        // tail included.
        let seg = apex_core::layout::SEGMENT_SIZE;
        let (provider, heaps) = instance_with(4 * seg, on_cpu_zero, SLABS_ONLY);
        provider.set_fatal_handler(fatal);
        let big = Layout::from_size_align(apex_core::layout::LARGE_MAX + seg / 4, 16).unwrap();
        // SAFETY: a non-zero size.
        let huge = unsafe { heaps.alloc(big) };
        assert!(apex_core::owns(huge));
        let l = Layout::from_size_align(3000, 16).unwrap();
        let mut live = Vec::new();
        loop {
            // SAFETY: a non-zero size.
            let p = unsafe { heaps.alloc(l) };
            if p.is_null() {
                break;
            }
            live.push(p);
        }
        assert!(heaps.fit_chunk_bytes() > 0, "best fit took the rest");
        // Best-fit blocks in the huge block's segment-sized window: the
        // segment map names the huge block's segment for them.
        let beside = live
            .iter()
            .filter(|&&p| (p as usize - 1) / seg == (huge as usize - 1) / seg)
            .count();
        assert!(beside > 0, "no best-fit block beside the huge block");
        for p in live {
            // SAFETY: live blocks, freed once with their (small) layout.
            unsafe { heaps.dealloc(p, l) };
        }
        // SAFETY: as above.
        unsafe { heaps.dealloc(huge, big) };
        heaps.release_now();
        assert_eq!(heaps.fit_chunk_bytes(), 0);
    }
}
