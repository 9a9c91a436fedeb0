//! `libapexalloc.so`: the libc allocation functions and C++ `operator
//! new`/`delete`, for `LD_PRELOAD` or linking. Declared in `apexalloc.h`.
//!
//! Failures return NULL with `errno = ENOMEM` (EINVAL for bad alignments);
//! `free` never changes `errno`; pointers the library did not allocate are
//! ignored by `free` and reported as size 0 by `malloc_usable_size`.

#![cfg_attr(not(test), no_std)]

use core::ffi::{c_char, c_int, c_void};
use core::ptr;

use hosted as apex;

const PAGE: usize = 4096;

// A test build of this crate links std, which brings its own handler.
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    apex::report::write_stderr("apexalloc: fatal: internal error\n");
    // SAFETY: abort is always safe.
    unsafe { libc::abort() }
}

#[inline(always)]
fn set_errno(e: c_int) {
    // SAFETY: the calling thread's errno location is always valid.
    unsafe { *libc::__errno_location() = e };
}

#[inline(always)]
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p as *mut c_void
}

/// # Safety
/// As C `malloc`.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    apex::malloc_c(size) as *mut c_void
}

/// # Safety
/// As C `free`.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the caller passes NULL or a block from malloc and friends.
    unsafe { apex::free(p as *mut u8) }
}

/// # Safety
/// As C `calloc`.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => or_enomem(apex::zalloc(total)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// # Safety
/// As C `realloc`: `realloc(p, 0)` frees `p` and returns NULL, as glibc.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return or_enomem(apex::malloc(size));
    }
    if size == 0 {
        // SAFETY: `p` is a live block being released.
        unsafe { apex::free(p as *mut u8) };
        return ptr::null_mut();
    }
    // SAFETY: `p` is a live block (or foreign, which yields NULL).
    or_enomem(unsafe { apex::realloc(p as *mut u8, size) })
}

/// # Safety
/// As C `reallocarray`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc(p, total) },
        None => or_enomem(ptr::null_mut()),
    }
}

/// # Safety
/// As POSIX `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let p = apex::malloc_aligned(size, align);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a valid out-pointer.
    unsafe { *out = p as *mut c_void };
    0
}

/// # Safety
/// As C11 `aligned_alloc`.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    or_enomem(apex::malloc_aligned(size, align))
}

/// # Safety
/// As glibc `memalign` (a non-power-of-two alignment is rounded up).
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(align) = align.max(1).checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    };
    or_enomem(apex::malloc_aligned(size, align))
}

/// # Safety
/// As `valloc`.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    or_enomem(apex::malloc_aligned(size, PAGE))
}

/// # Safety
/// As `pvalloc`: page-aligned, size rounded up to whole pages.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_add(PAGE - 1) {
        Some(s) => or_enomem(apex::malloc_aligned(s & !(PAGE - 1), PAGE)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// # Safety
/// As glibc `malloc_usable_size`.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: NULL, foreign or live block.
    unsafe { apex::usable_size(p as *const u8) }
}

/// # Safety
/// As C23 `free_sized`.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: forwarded.
    unsafe { apex::free(p as *mut u8) }
}

/// # Safety
/// As C23 `free_aligned_sized`.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: forwarded.
    unsafe { apex::free(p as *mut u8) }
}

/// Returns free memory to the system; returns 1 (memory was released).
///
/// # Safety
/// Always safe; unsafe only for the C ABI.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> c_int {
    apex::trim() as c_int
}

/// Prints the statistics summary to stderr.
///
/// # Safety
/// Always safe; unsafe only for the C ABI.
#[no_mangle]
pub unsafe extern "C" fn apex_stats_print() {
    apex::print_stats();
}

/// Control and statistics by name, like jemalloc's `mallctl` (the names
/// and rules are in `apexalloc.h`). Returns 0 or an error number.
///
/// # Safety
/// Any pointer may be NULL or bad: bad ones give `EFAULT`.
#[no_mangle]
pub unsafe extern "C" fn apex_ctl(
    name: *const c_char,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *mut c_void,
    newlen: usize,
) -> c_int {
    // SAFETY: forwarded; `apex_ctl` checks every pointer itself.
    unsafe { apex::ctl::apex_ctl(name, oldp, oldlenp, newp, newlen) }
}

/// The calling thread's counts into `*out` (nothing is written when `out`
/// is NULL or not writable).
///
/// # Safety
/// Always safe; unsafe only for the C ABI.
#[no_mangle]
pub unsafe extern "C" fn apex_thread_stats(out: *mut apex::ctl::CThreadStats) {
    apex::ctl::apex_thread_stats(out);
}

/// The allocator's totals into `*out` (nothing is written when `out` is
/// NULL or not writable).
///
/// # Safety
/// Always safe; unsafe only for the C ABI.
#[no_mangle]
pub unsafe extern "C" fn apex_global_stats(out: *mut apex::ctl::CGlobalStats) {
    apex::ctl::apex_global_stats(out);
}

/// Calls `visitor` for every segment and span of the heap (NULL: does
/// nothing).
///
/// # Safety
/// `visitor` is NULL or a function of the `apex_heap_visitor_t` type.
#[no_mangle]
pub unsafe extern "C" fn apex_heap_walk(
    visitor: Option<apex::ctl::CVisitor>,
    userdata: *mut c_void,
) {
    // SAFETY: the caller's contract.
    unsafe { apex::ctl::apex_heap_walk(visitor, userdata) }
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
pub struct Mallinfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

/// glibc's `struct mallinfo` (the same fields as `int`).
#[repr(C)]
pub struct Mallinfo {
    fields: [c_int; 10],
}

/// This allocator's figures in glibc's terms: `arena` is the memory in
/// spans (slabs and large blocks), `hblks` the number of huge blocks,
/// `uordblks` the bytes allocated, `fordblks` the rest of the spans, and
/// `usmblks` the peak of `arena`.
fn mallinfo_now() -> Mallinfo2 {
    let s = apex::stats();
    let allocated = s.allocated as usize;
    Mallinfo2 {
        arena: s.active,
        ordblks: 0,
        smblks: 0,
        hblks: s.huge_live,
        hblkhd: 0,
        usmblks: s.active_peak,
        fsmblks: 0,
        uordblks: allocated,
        fordblks: s.active.saturating_sub(allocated),
        keepcost: 0,
    }
}

/// # Safety
/// Always safe; unsafe only for the C ABI.
#[no_mangle]
pub unsafe extern "C" fn mallinfo2() -> Mallinfo2 {
    mallinfo_now()
}

/// # Safety
/// Always safe; unsafe only for the C ABI.
#[no_mangle]
pub unsafe extern "C" fn mallinfo() -> Mallinfo {
    let m = mallinfo_now();
    let f = [
        m.arena, m.ordblks, m.smblks, m.hblks, m.hblkhd, m.usmblks, m.fsmblks, m.uordblks,
        m.fordblks, m.keepcost,
    ];
    // glibc's `int` fields wrap the same way.
    Mallinfo {
        fields: f.map(|v| v as c_int),
    }
}

/// glibc's `malloc_stats`: this allocator's summary line on stderr.
///
/// # Safety
/// Always safe; unsafe only for the C ABI.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats() {
    apex::print_stats();
}

// ---------------------------------------------------------------------------
// C++ operator new / delete (Itanium ABI names)
// ---------------------------------------------------------------------------

mod cxx;
