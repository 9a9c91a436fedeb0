//! The allocators under test, each a `GlobalAlloc` over the one arena.
//!
//! The anchors (talc, rlsf, dlmalloc, buddy_system_allocator,
//! linked_list_allocator) are single-threaded heaps; each sits behind the
//! same `spin::Mutex`, as a kernel would install it. ApexAlloc comes four
//! times: `KernelAlloc` exactly as a kernel installs it (its own per-CPU
//! locking, over a `BuddyProvider` that owns the arena; every block from
//! best fit), the same with small blocks in the core's slab heaps
//! (`SMALL_SLAB_LIMIT`) and with every block there (`SLABS_ONLY`), and
//! the core heaps alone without `KernelAlloc`'s layer (one heap per
//! benchmark thread, no lock).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};

use apex_bare_metal::percpu::CpuIndex;
use apex_bare_metal::{BuddyProvider, KernelAlloc};
use apex_core::{Global, Heap};

/// The memory every allocator manages: one block, reused by each trial.
#[derive(Clone, Copy)]
pub struct Arena {
    pub base: *mut u8,
    pub len: usize,
}

// SAFETY: the arena is plain memory; who may touch it is decided by the
// allocator built over it, one at a time.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

/// An allocator by name, built fresh over the arena for each trial.
pub struct Named {
    pub name: &'static str,
    pub build: fn(Arena) -> Box<dyn GlobalAlloc + Sync>,
}

pub const ALL: &[Named] = &[
    Named {
        name: "talc",
        build: talc,
    },
    Named {
        name: "rlsf",
        build: rlsf,
    },
    Named {
        name: "dlmalloc",
        build: dlmalloc,
    },
    Named {
        name: "buddy_system_allocator",
        build: buddy_system,
    },
    Named {
        name: "linked_list_allocator",
        build: linked_list,
    },
    Named {
        name: "apex KernelAlloc",
        build: apex_kernel,
    },
    Named {
        name: "apex KernelAlloc, index by function",
        build: apex_kernel_index_fn,
    },
    Named {
        name: "apex KernelAlloc, slabs ≤ 512 B",
        build: apex_kernel_slabs,
    },
    Named {
        name: "apex KernelAlloc, slabs only",
        build: apex_kernel_slabs_only,
    },
    Named {
        name: "apex core heap",
        build: apex_core_heaps,
    },
];

/// The most benchmark threads (each is one "CPU").
pub const MAX_THREADS: usize = 8;

thread_local! {
    /// The benchmark thread's CPU index, set by the thread before it
    /// allocates; `usize::MAX` on threads that have none.
    static CPU: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Names the calling thread's CPU for `KernelAlloc` and the core heaps.
pub fn set_cpu(index: usize) {
    assert!(index < MAX_THREADS);
    CPU.with(|c| c.set(index));
}

/// The calling thread's CPU: a thread-local read, what a kernel's
/// `gs`-relative per-CPU field costs.
fn cpu_index() -> Option<usize> {
    let i = CPU.with(|c| c.get());
    (i != usize::MAX).then_some(i)
}

/// The CPU index `KernelAlloc` is built with: [`cpu_index`], inlined, as
/// `percpu::GsField` is in a kernel.
#[derive(Clone, Copy)]
struct ThreadCpu;

impl CpuIndex for ThreadCpu {
    #[inline(always)]
    fn current(&self) -> Option<usize> {
        cpu_index()
    }
}

/// A heap that is not `Send` by itself (raw pointers inside), made so: it is
/// only ever reached through the mutex around it.
struct Owned<T>(T);
// SAFETY: every anchor heap below is used only under its `spin::Mutex`.
unsafe impl<T> Send for Owned<T> {}

/// An anchor behind the shared kind of lock.
struct Locked<T>(spin::Mutex<Owned<T>>);

impl<T> Locked<T> {
    fn new(heap: T) -> Self {
        Locked(spin::Mutex::new(Owned(heap)))
    }
}

/// Moves a block the way `GlobalAlloc::realloc`'s default does, for the
/// anchors that have no in-place path: allocate, copy, free.
///
/// # Safety
/// As `GlobalAlloc::realloc`.
unsafe fn move_block(a: &dyn GlobalAlloc, p: *mut u8, old: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: the caller's layout rules carry over to the new size.
    let q = unsafe { a.alloc(Layout::from_size_align_unchecked(new_size, old.align())) };
    if !q.is_null() {
        // SAFETY: both blocks are live and hold the copied length; `p` is
        // freed once.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old.size().min(new_size));
            a.dealloc(p, old);
        }
    }
    q
}

type TalcHeap = talc::base::Talc<talc::source::Manual, talc::DefaultBinning>;

fn talc(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut t = TalcHeap::new(talc::source::Manual);
    // SAFETY: the arena is ours for the allocator's life.
    unsafe { t.claim(arena.base, arena.len) }.expect("talc claims the arena");
    Box::new(Locked::new(t))
}

// SAFETY: talc's contract, under the lock.
unsafe impl GlobalAlloc for Locked<TalcHeap> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: a non-zero size, as the benchmark only asks for those.
        unsafe { self.0.lock().0.allocate(l) }.map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().0.deallocate(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // talc's own lock wrapper does the same: in place first, then move.
        // SAFETY: `p` is live with layout `l`.
        if unsafe { self.0.lock().0.try_realloc_in_place(p, l, new_size) } {
            return p;
        }
        // SAFETY: forwarded.
        unsafe { move_block(self, p, l, new_size) }
    }
}

type RlsfHeap =
    rlsf::Tlsf<'static, usize, usize, { usize::BITS as usize - 12 }, { usize::BITS as usize }>;

fn rlsf(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut t = RlsfHeap::new();
    let block = NonNull::slice_from_raw_parts(NonNull::new(arena.base).unwrap(), arena.len);
    // SAFETY: the arena is ours for the allocator's life.
    unsafe { t.insert_free_block_ptr(block) }.expect("rlsf takes the arena");
    Box::new(Locked::new(t))
}

// SAFETY: rlsf's contract, under the lock.
unsafe impl GlobalAlloc for Locked<RlsfHeap> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.0
            .lock()
            .0
            .allocate(l)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with alignment `l.align()`.
        unsafe {
            self.0
                .lock()
                .0
                .deallocate(NonNull::new_unchecked(p), l.align())
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` is live with this alignment; rlsf grows or shrinks in
        // place when it can and moves otherwise.
        unsafe {
            self.0.lock().0.reallocate(
                NonNull::new_unchecked(p),
                Layout::from_size_align_unchecked(new_size, l.align()),
            )
        }
        .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
}

/// dlmalloc's system interface over the arena: the whole arena on the first
/// request, nothing after.
struct DlArena(Cell<Option<Arena>>);

// SAFETY: the arena is handed out once and never released, remapped or
// trimmed (`can_release_part` is false, `free` refuses).
unsafe impl dlmalloc::Allocator for DlArena {
    fn alloc(&self, _size: usize) -> (*mut u8, usize, u32) {
        match self.0.take() {
            Some(a) => (a.base, a.len, 0),
            None => (ptr::null_mut(), 0, 0),
        }
    }
    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        ptr::null_mut()
    }
    fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
        false
    }
    fn free(&self, _: *mut u8, _: usize) -> bool {
        false
    }
    fn can_release_part(&self, _: u32) -> bool {
        false
    }
    fn allocates_zeros(&self) -> bool {
        false
    }
    fn page_size(&self) -> usize {
        4096
    }
}

type DlHeap = dlmalloc::Dlmalloc<DlArena>;

fn dlmalloc(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    Box::new(Locked::new(DlHeap::new_with_allocator(DlArena(Cell::new(
        Some(arena),
    )))))
}

// SAFETY: dlmalloc's contract, under the lock.
unsafe impl GlobalAlloc for Locked<DlHeap> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: a valid layout.
        unsafe { self.0.lock().0.malloc(l.size(), l.align()) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().0.free(p, l.size(), l.align()) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().0.realloc(p, l.size(), l.align(), new_size) }
    }
}

type BuddySystem = buddy_system_allocator::Heap<32>;

fn buddy_system(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut h = BuddySystem::new();
    // SAFETY: the arena is ours for the allocator's life.
    unsafe { h.init(arena.base as usize, arena.len) };
    Box::new(Locked::new(h))
}

// SAFETY: buddy_system_allocator's contract, under the lock.
unsafe impl GlobalAlloc for Locked<BuddySystem> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.0
            .lock()
            .0
            .alloc(l)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().0.dealloc(NonNull::new_unchecked(p), l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { move_block(self, p, l, new_size) }
    }
}

type LinkedList = linked_list_allocator::Heap;

fn linked_list(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let mut h = LinkedList::empty();
    // SAFETY: the arena is ours for the allocator's life.
    unsafe { h.init(arena.base, arena.len) };
    Box::new(Locked::new(h))
}

// SAFETY: linked_list_allocator's contract, under the lock.
unsafe impl GlobalAlloc for Locked<LinkedList> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.0
            .lock()
            .0
            .allocate_first_fit(l)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` is live with layout `l`.
        unsafe { self.0.lock().0.deallocate(NonNull::new_unchecked(p), l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { move_block(self, p, l, new_size) }
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::abort()
}

/// A fresh page provider and allocator instance over the arena. Both are
/// leaked: a few KiB per trial, and the core keeps `'static` references.
fn apex_global(arena: Arena) -> &'static Global {
    let provider: &'static BuddyProvider = Box::leak(Box::new(BuddyProvider::new()));
    // SAFETY: the arena is ours, at its own address, for the allocator's
    // life.
    unsafe { provider.add_region(arena.base as usize, arena.len) }.expect("buddy takes the arena");
    provider.set_fatal_handler(fatal);
    Box::leak(Box::new(Global::new(provider)))
}

/// `KernelAlloc` over the arena, torn down when the trial drops it: the
/// next trial builds a new instance over the same memory, where none of
/// this one's segments may still be registered.
struct ApexKernel<C: CpuIndex + 'static> {
    heaps: &'static KernelAlloc<C>,
    arena: Arena,
}

fn apex_kernel(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    apex_kernel_with(arena, apex_bare_metal::kernel_alloc::SLAB_LIMIT)
}

fn apex_kernel_slabs(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    apex_kernel_with(arena, apex_bare_metal::kernel_alloc::SMALL_SLAB_LIMIT)
}

fn apex_kernel_slabs_only(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    apex_kernel_with(arena, apex_bare_metal::kernel_alloc::SLABS_ONLY)
}

/// The default layout with the index read through a function pointer
/// (`KernelAlloc::new`), for what that call costs.
fn apex_kernel_index_fn(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    let heaps = KernelAlloc::new(apex_global(arena), cpu_index);
    Box::new(ApexKernel {
        heaps: Box::leak(Box::new(heaps)),
        arena,
    })
}

fn apex_kernel_with(arena: Arena, slab_limit: usize) -> Box<dyn GlobalAlloc + Sync> {
    let heaps = KernelAlloc::with_index(apex_global(arena), ThreadCpu, slab_limit);
    Box::new(ApexKernel {
        heaps: Box::leak(Box::new(heaps)),
        arena,
    })
}

/// Checks that no segment of a torn-down instance is still registered
/// over the arena (the next instance's frees would misread it).
fn assert_no_segments(arena: Arena) {
    let seg = apex_core::layout::SEGMENT_SIZE;
    for off in (0..arena.len).step_by(seg) {
        let p = arena.base.wrapping_add(off + 64);
        assert!(!apex_core::owns(p), "a segment survived its instance");
    }
}

impl<C: CpuIndex> Drop for ApexKernel<C> {
    fn drop(&mut self) {
        // SAFETY: the shapes free every block before the trial ends, and
        // the trial's threads have finished.
        unsafe { self.heaps.tear_down() };
        assert_no_segments(self.arena);
    }
}

// SAFETY: forwarded to `KernelAlloc`.
unsafe impl<C: CpuIndex> GlobalAlloc for ApexKernel<C> {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { self.heaps.alloc(l) }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded.
        unsafe { self.heaps.dealloc(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { self.heaps.realloc(p, l, new_size) }
    }
}

/// One core heap per benchmark thread, reached without a lock: each thread
/// touches only the slot of its own CPU index.
struct CoreHeaps {
    global: &'static Global,
    heaps: [UnsafeCell<Option<NonNull<Heap>>>; MAX_THREADS],
    arena: Arena,
}

// SAFETY: slot `i` is used only by the thread whose CPU index is `i`.
unsafe impl Sync for CoreHeaps {}

impl CoreHeaps {
    #[inline]
    #[allow(clippy::mut_from_ref)]
    fn heap(&self) -> Option<&mut Heap> {
        let slot = self.heaps[cpu_index()?].get();
        // SAFETY: only this thread uses its slot (see `Sync` above), and the
        // reference does not outlive the call that asked for it.
        unsafe {
            if (*slot).is_none() {
                *slot = Heap::create(self.global);
            }
            (*slot).map(|h| &mut *h.as_ptr())
        }
    }
}

fn apex_core_heaps(arena: Arena) -> Box<dyn GlobalAlloc + Sync> {
    Box::new(CoreHeaps {
        global: apex_global(arena),
        heaps: [const { UnsafeCell::new(None) }; MAX_THREADS],
        arena,
    })
}

impl Drop for CoreHeaps {
    fn drop(&mut self) {
        for slot in &mut self.heaps {
            if let Some(h) = slot.get_mut().take() {
                // SAFETY: the shapes freed every block; the trial's
                // threads have finished, so nothing uses the heap.
                unsafe {
                    (*h.as_ptr()).release_now();
                    Heap::destroy(h);
                }
            }
        }
        self.global.purge_abandoned(0, 0, true);
        self.global.purge_cache(0, true);
        assert_no_segments(self.arena);
    }
}

// SAFETY: the core's contract; each heap used by one thread.
unsafe impl GlobalAlloc for CoreHeaps {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.heap()
            .map_or(ptr::null_mut(), |h| h.malloc_aligned(l.size(), l.align()))
    }
    unsafe fn dealloc(&self, p: *mut u8, _: Layout) {
        if let Some(h) = self.heap() {
            // SAFETY: `p` is a live block of this instance.
            unsafe { h.free(p) }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` is a live block of this instance with this alignment.
        self.heap().map_or(ptr::null_mut(), |h| unsafe {
            h.realloc_aligned(p, l.align(), new_size)
        })
    }
}
