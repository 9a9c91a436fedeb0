//! The C-like API the `libapexalloc.so` crate exports as the libc
//! functions: allocation, freeing, resizing, usable size, trimming and
//! counters.

use core::ptr;

use apex_core::layout::MIN_ALIGN;
use apex_core::{Heap, Snapshot};

use crate::thread::{from_shared, own_heap, with_heap};
use crate::{bootstrap, init, leaks, strategy, tls, GLOBAL};

/// Allocates `size` bytes (16-byte aligned); null when out of memory.
///
/// The fast path is inline and frameless: anything beyond popping a block
/// of the current page is a tail call.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    let p = try_malloc_fast(size);
    if !p.is_null() {
        return p;
    }
    malloc_slow(size)
}

/// A block from the calling thread's heap's fast path, or null.
#[inline(always)]
fn try_malloc_fast(size: usize) -> *mut u8 {
    // SAFETY: the slot holds this thread's heap or the placeholder, on
    // which the fast path fails without writing; either way nothing else
    // holds a reference to it during this call.
    unsafe { (*tls::heap()).try_malloc_fast(size) }
}

/// Past the fast path: above the direct table, the class's current slab
/// (inline, with no stack frame: its failure is a tail call), then
/// everything else.
#[inline(never)]
fn malloc_slow(size: usize) -> *mut u8 {
    medium_or(size, malloc_full)
}

/// A block from the class's current slab (sizes above the direct table),
/// else `full(size)` as a tail call.
#[inline(always)]
fn medium_or(size: usize, full: fn(usize) -> *mut u8) -> *mut u8 {
    // SAFETY: as in `try_malloc_fast`.
    let p = unsafe { (*tls::heap()).try_malloc_medium(size) };
    if !p.is_null() {
        return p;
    }
    full(size)
}

/// [`malloc`] past the fast and the medium paths.
#[cold]
#[inline(never)]
fn malloc_full(size: usize) -> *mut u8 {
    if leaks::enabled() {
        return leaks::watch(size, || allocate(size));
    }
    allocate(size)
}

/// [`malloc`] beyond the fast path, unwatched.
#[inline(always)]
fn allocate(size: usize) -> *mut u8 {
    if strategy::classic() {
        return strategy::alloc(size, MIN_ALIGN, false);
    }
    or_shared(
        with_heap(|h| h.malloc(size), || bootstrap::alloc(size, MIN_ALIGN)),
        |h| h.malloc(size),
    )
}

/// `p`, or when it is null and the calling thread has a heap of its own,
/// `f` on the shared heap: a thread whose heap cannot get a segment of its
/// own (the address space is short) still allocates from the segments the
/// shared heap already has.
#[inline(always)]
fn or_shared(p: *mut u8, f: impl FnOnce(&mut Heap) -> *mut u8) -> *mut u8 {
    if !p.is_null() || own_heap().is_none() {
        return p;
    }
    from_shared(f)
}

/// Like [`malloc`], setting `errno` to `ENOMEM` on failure (the C ABI).
#[inline(always)]
pub fn malloc_c(size: usize) -> *mut u8 {
    let p = try_malloc_fast(size);
    if !p.is_null() {
        return p;
    }
    malloc_slow_c(size)
}

/// [`malloc_slow`] for the C ABI.
#[inline(never)]
fn malloc_slow_c(size: usize) -> *mut u8 {
    medium_or(size, malloc_full_c)
}

/// [`malloc_full`], setting `errno` on failure.
#[cold]
#[inline(never)]
fn malloc_full_c(size: usize) -> *mut u8 {
    let p = malloc_full(size);
    if p.is_null() {
        // SAFETY: the calling thread's errno location is always valid.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
    }
    p
}

/// Allocates `size` zeroed bytes.
#[inline]
pub fn zalloc(size: usize) -> *mut u8 {
    leaks::watch(size, || {
        if strategy::classic() {
            return strategy::alloc(size, MIN_ALIGN, true);
        }
        // Arena memory is never reused, so it is still zero.
        or_shared(
            with_heap(|h| h.zalloc(size), || bootstrap::alloc(size, MIN_ALIGN)),
            |h| h.zalloc(size),
        )
    })
}

/// Allocates `size` bytes aligned to `align` (a power of two).
#[inline]
pub fn malloc_aligned(size: usize, align: usize) -> *mut u8 {
    leaks::watch(size, || {
        if strategy::classic() {
            return strategy::alloc(size, align, false);
        }
        or_shared(
            with_heap(
                |h| h.malloc_aligned(size, align),
                || bootstrap::alloc(size, align),
            ),
            |h| h.malloc_aligned(size, align),
        )
    })
}

/// Allocates `size` zeroed bytes aligned to `align` (a power of two).
#[inline]
pub fn zalloc_aligned(size: usize, align: usize) -> *mut u8 {
    leaks::watch(size, || {
        if strategy::classic() {
            return strategy::alloc(size, align, true);
        }
        or_shared(
            with_heap(
                |h| h.zalloc_aligned(size, align),
                || bootstrap::alloc(size, align),
            ),
            |h| h.zalloc_aligned(size, align),
        )
    })
}

/// Frees a block; null and foreign pointers are ignored.
///
/// # Safety
/// `p` must be null, foreign, or a live block of this allocator, not used
/// afterwards.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded from the caller; the slot holds this thread's heap
    // or the placeholder; `free_slow` completes any free.
    unsafe { Heap::free_raw_or(tls::heap(), p, free_slow) }
}

/// # Safety
/// As [`free`].
#[cold]
#[inline(never)]
unsafe fn free_slow(p: *mut u8) {
    // Before the block is freed: once it is, another thread may get the
    // same address and sample it.
    leaks::before_free(p);
    if strategy::classic() {
        // SAFETY: forwarded from the caller.
        return unsafe { strategy::free(p) };
    }
    // Bootstrap-arena blocks are not in any segment, so the core treats
    // them as foreign and ignores them, as it should.
    // SAFETY: forwarded from the caller. A block freed while this thread
    // initialises is leaked rather than touching a heap.
    // The fast path already failed: straight to the rest.
    with_heap(|h| unsafe { h.free_not_fast(p) }, || ())
}

/// Resizes a block (`p` non-null). Null when out of memory (the block stays
/// valid) or when `p` is foreign.
///
/// # Safety
/// `p` must be a live block of this allocator or foreign.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: forwarded from the caller.
    unsafe { realloc_aligned(p, MIN_ALIGN, size) }
}

/// Resizes a block allocated with alignment `align` (a power of two),
/// keeping that alignment; as [`realloc`] otherwise.
///
/// # Safety
/// `p` must be a live block of this allocator allocated with at least
/// `align` alignment, or foreign.
pub unsafe fn realloc_aligned(p: *mut u8, align: usize, size: usize) -> *mut u8 {
    // SAFETY: forwarded from the caller.
    leaks::watch_realloc_if_on(p, size, || unsafe { resize(p, align, size) })
}

/// [`realloc_aligned`], unwatched.
///
/// # Safety
/// As [`realloc_aligned`].
#[inline(always)]
unsafe fn resize(p: *mut u8, align: usize, size: usize) -> *mut u8 {
    if bootstrap::contains(p) {
        let q = malloc_aligned(size, align);
        if !q.is_null() {
            // SAFETY: both blocks are valid for the copied length.
            unsafe { ptr::copy_nonoverlapping(p, q, bootstrap::size_of(p).min(size)) };
        }
        return q;
    }
    if strategy::classic() {
        // SAFETY: forwarded from the caller.
        return unsafe { strategy::realloc(p, align, size) };
    }
    // SAFETY: forwarded from the caller.
    let q = with_heap(
        |h| unsafe { h.realloc_aligned(p, align, size) },
        ptr::null_mut,
    );
    if !q.is_null() || own_heap().is_none() || !apex_core::owns(p) {
        return q;
    }
    // The own heap is out of memory: move the block to the shared heap.
    let q = from_shared(|h| h.malloc_aligned(size, align));
    if !q.is_null() {
        // SAFETY: `p` is a live block of ours (it is in one of our
        // segments), `q` a new one of at least `size` bytes; `p` is freed
        // once, after the copy.
        unsafe {
            ptr::copy_nonoverlapping(p, q, apex_core::usable_size(p).min(size));
            free(p);
        }
    }
    q
}

/// Usable size of a block; 0 for null or foreign pointers.
///
/// # Safety
/// `p` must be null, foreign, or a live block of this allocator.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // The common case first: a block of the default engine. Only its
    // segments are in the core's map, so bootstrap and classic-engine
    // blocks are looked up after, out of line.
    // SAFETY: forwarded from the caller.
    unsafe { apex_core::usable_size_or(p, usable_size_elsewhere) }
}

/// [`usable_size`] of a pointer outside the default engine's segments.
///
/// # Safety
/// As [`usable_size`].
#[cold]
#[inline(never)]
unsafe fn usable_size_elsewhere(p: *const u8) -> usize {
    if bootstrap::contains(p) {
        return bootstrap::size_of(p);
    }
    if strategy::classic() {
        // SAFETY: forwarded from the caller.
        return unsafe { strategy::usable_size(p) };
    }
    0
}

/// Returns free memory of the calling thread's heap and all cached memory
/// to the system. Returns whether the allocator is initialised.
pub fn trim() -> bool {
    if !init::is_ready() {
        return false;
    }
    if strategy::classic() {
        // The engines give the top of the break back as it frees.
        return true;
    }
    with_heap(|h| h.release_now(), || ());
    true
}

/// Counters summed over all heaps.
pub fn stats() -> Snapshot {
    if strategy::classic() {
        return strategy::stats();
    }
    apex_core::snapshot_from(&GLOBAL, tls::heap())
}
