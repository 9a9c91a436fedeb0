//! ApexAlloc on Linux.
//!
//! This crate binds the `no_std` core to Linux: pages from
//! [`provider::MmapProvider`], one heap per thread reached through
//! initial-exec TLS ([`tls`]), heaps handed back at thread exit, locks made
//! fork-safe, a bootstrap arena for the rare allocation made while the
//! allocator itself is initialising, and options from `APEX_*` environment
//! variables. It exposes a C-like API (used by the `libapexalloc.so` crate)
//! and [`ApexAlloc`], a `GlobalAlloc` for Rust programs:
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: apexalloc::ApexAlloc = apexalloc::ApexAlloc;
//! ```
//!
//! # Options
//! | variable | default | meaning |
//! |---|---|---|
//! | `APEX_SHOW_STATS` | 0 | print a summary at exit |
//! | `APEX_VERBOSE` | 0 | print the configuration at start |
//! | `APEX_PURGE_DELAY_MS` | 100 | how long a quiet segment keeps free memory resident |
//! | `APEX_DECOMMIT` | `dontneed` | `free` uses `MADV_FREE` instead |
//! | `APEX_THP` | 0 | `MADV_HUGEPAGE` on segments |
//! | `APEX_SEGMENT_CACHE` | 8 | empty segments kept for reuse |
//! | `APEX_HUGE_CACHE_MB` | 256 | resident freed huge blocks kept for reuse |
//! | `APEX_BACKGROUND_PURGE_MS` | 0 | run a background purge thread this often (0: none) |

#![no_std]

pub mod bootstrap;
pub mod provider;
pub mod report;
pub mod tls;

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use apex_core::layout::MIN_ALIGN;
use apex_core::{Global, Heap, Snapshot};
use spin::Mutex;

use provider::MmapProvider;

static PROVIDER: MmapProvider = MmapProvider;
/// The one allocator instance of the process.
pub static GLOBAL: Global = Global::new(&PROVIDER);

/// The heap used by threads whose own heap is gone (after thread exit) or
/// could not be created; every operation on it holds the lock.
static SHARED: Mutex<Option<HeapPtr>> = Mutex::new(None);

const UNINIT: u8 = 0;
const INITIALISING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static SHOW_STATS: AtomicBool = AtomicBool::new(false);
static mut THREAD_KEY: libc::pthread_key_t = 0;

#[derive(Clone, Copy)]
struct HeapPtr(NonNull<Heap>);
// SAFETY: the shared heap is only used under its mutex.
unsafe impl Send for HeapPtr {}

// ---------------------------------------------------------------------------
// Initialisation
// ---------------------------------------------------------------------------

fn env_flag(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv with a NUL-terminated name; it does not allocate. The
    // environment outlives every use here (read once at start-up).
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    Some(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
}

fn env_number(name: &core::ffi::CStr) -> Option<u64> {
    let v = env_flag(name)?;
    let mut n: u64 = 0;
    if v.is_empty() {
        return None;
    }
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(n)
}

fn env_on(name: &core::ffi::CStr) -> bool {
    matches!(env_flag(name), Some(v) if !v.is_empty() && v != b"0")
}

fn read_options() {
    let o = &GLOBAL.options;
    if let Some(ms) = env_number(c"APEX_PURGE_DELAY_MS") {
        o.purge_delay.store(ms, Ordering::Relaxed);
    }
    if let Some(n) = env_number(c"APEX_SEGMENT_CACHE") {
        o.segment_cache.store(n as usize, Ordering::Relaxed);
    }
    if let Some(mb) = env_number(c"APEX_HUGE_CACHE_MB") {
        o.huge_cache_bytes
            .store((mb as usize).saturating_mul(1 << 20), Ordering::Relaxed);
    }
    if env_flag(c"APEX_DECOMMIT") == Some(b"free") {
        provider::DECOMMIT_WITH_FREE.store(true, Ordering::Relaxed);
    }
    provider::HUGE_PAGES.store(env_on(c"APEX_THP"), Ordering::Relaxed);
    if let Some(ms) = env_number(c"APEX_BACKGROUND_PURGE_MS") {
        BACKGROUND_PURGE_MS.store(ms, Ordering::Relaxed);
    }
    if let Some(fd) = env_number(c"APEX_TEST_HANDOFF_FD") {
        HANDOFF_FD.store(fd.min(i32::MAX as u64) as i32, Ordering::Relaxed);
        GLOBAL.set_handoff_hook(pause_in_handoff);
    }
    SHOW_STATS.store(env_on(c"APEX_SHOW_STATS"), Ordering::Relaxed);
}

/// `APEX_BACKGROUND_PURGE_MS`: how often the background purge thread runs
/// (0, the default: no thread).
static BACKGROUND_PURGE_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Starts the background purge thread when the option asks for one.
fn start_background_purge() {
    if BACKGROUND_PURGE_MS.load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: a zeroed pthread_t is a valid out-parameter; the thread gets
    // no argument and is detached, so nobody joins it.
    unsafe {
        let mut t: libc::pthread_t = core::mem::zeroed();
        if libc::pthread_create(&mut t, ptr::null(), background_purge, ptr::null_mut()) == 0 {
            libc::pthread_detach(t);
        }
    }
}

/// The background purge: every `APEX_BACKGROUND_PURGE_MS` it runs the
/// decay of what no thread owns (cached segments and huge blocks, abandoned
/// segments) and of the shared heap, so a process that goes quiet after a
/// burst gives the memory back without allocating again. Free memory inside
/// a live thread's heap stays that thread's to return: a heap keeps at most
/// one empty segment, handing the others to the cache this thread purges.
extern "C" fn background_purge(_: *mut libc::c_void) -> *mut libc::c_void {
    let ms = BACKGROUND_PURGE_MS.load(Ordering::Relaxed);
    let pause = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: sleeps; the timespec is valid.
        unsafe { libc::nanosleep(&pause, ptr::null_mut()) };
        if let Some(now) = GLOBAL.now() {
            GLOBAL.decay(now);
        }
        if let Some(h) = *SHARED.lock() {
            // SAFETY: the shared heap is used only under its lock.
            unsafe { (*h.0.as_ptr()).decay() };
        }
    }
}

/// A test aid (`APEX_TEST_HANDOFF_FD=N`): the first cross-thread hand-off
/// writes one byte to file descriptor N and then pauses for 300 ms in its
/// middle, so a test can fork exactly there. Neither call allocates.
static HANDOFF_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(-1);

fn pause_in_handoff() {
    let fd = HANDOFF_FD.swap(-1, Ordering::AcqRel);
    if fd < 0 {
        return;
    }
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 300_000_000,
    };
    // SAFETY: writes one byte from a static buffer and sleeps; a failure of
    // either only weakens the test that asked for it.
    unsafe {
        libc::write(fd, b"h".as_ptr().cast(), 1);
        libc::nanosleep(&pause, ptr::null_mut());
    }
}

/// Initialises the process-wide state once. Allocation requests made by
/// this thread meanwhile go to the bootstrap arena; other threads wait.
#[cold]
fn ensure_global() {
    if STATE.load(Ordering::Acquire) == READY {
        return;
    }
    if STATE
        .compare_exchange(UNINIT, INITIALISING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        while STATE.load(Ordering::Acquire) != READY {
            core::hint::spin_loop();
        }
        return;
    }
    let before = tls::get();
    tls::set(tls::IN_INIT);
    read_options();
    GLOBAL.ensure_init();
    // SAFETY: the key is written once, here, before READY is published.
    unsafe {
        libc::pthread_key_create(ptr::addr_of_mut!(THREAD_KEY), Some(thread_exit));
    }
    // The shared heap exists from the start, with a segment: it is the
    // fallback of threads that cannot get a heap or a segment of their own,
    // which happens exactly when memory is short, when it could not get one
    // either. (Address space only: nothing is touched until it is used.)
    *SHARED.lock() = Heap::create(&GLOBAL).map(|mut h| {
        // SAFETY: just created, not yet shared with anybody.
        unsafe { h.as_mut().add_segment() };
        HeapPtr(h)
    });
    tls::set(before);
    STATE.store(READY, Ordering::Release);
    // These may allocate, which works normally from here on.
    // SAFETY: registering plain functions without captured state.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
    if env_on(c"APEX_VERBOSE") {
        print_config();
    }
    start_background_purge();
}

fn print_config() {
    let o = &GLOBAL.options;
    let _ = writeln!(
        report::Stderr,
        "apexalloc: active (segments {} MiB, purge delay {} ms, decommit {}, THP {}, segment cache {}, huge cache {} MiB, background purge {} ms)",
        apex_core::layout::SEGMENT_SIZE >> 20,
        o.purge_delay(),
        if provider::DECOMMIT_WITH_FREE.load(Ordering::Relaxed) { "MADV_FREE" } else { "MADV_DONTNEED" },
        if provider::HUGE_PAGES.load(Ordering::Relaxed) { "on" } else { "off" },
        o.segment_cache.load(Ordering::Relaxed),
        o.huge_cache_bytes.load(Ordering::Relaxed) >> 20,
        BACKGROUND_PURGE_MS.load(Ordering::Relaxed),
    );
}

/// Runs at load time (before `main`) so options and the banner take effect
/// early; allocations that arrive even earlier initialise lazily.
#[used]
#[link_section = ".init_array"]
static INIT_AT_LOAD: extern "C" fn() = init_at_load;

extern "C" fn init_at_load() {
    ensure_global();
}

/// Prints statistics at exit when `APEX_SHOW_STATS` is set.
#[used]
#[link_section = ".fini_array"]
static STATS_AT_EXIT: extern "C" fn() = stats_at_exit;

extern "C" fn stats_at_exit() {
    if SHOW_STATS.load(Ordering::Relaxed) {
        print_stats();
    }
}

/// Writes a short statistics summary to stderr.
pub fn print_stats() {
    let s = stats();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let _ = writeln!(
        report::Stderr,
        "apexalloc: {} allocations, {} frees ({} from other threads), {:.1} MiB in use, \
         peak {:.1} MiB in spans, {} segments (peak {}), {:.1} MiB reserved, mode {}",
        s.mallocs,
        s.frees,
        s.remote_frees,
        mib(s.allocated),
        mib(s.active_peak as u64),
        s.segments,
        s.segments_peak,
        mib(s.reserved as u64),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}

// ---------------------------------------------------------------------------
// Per-thread heaps
// ---------------------------------------------------------------------------

extern "C" fn thread_exit(value: *mut libc::c_void) {
    // From here on this thread allocates from the shared heap.
    tls::set(tls::EXITED);
    if let Some(h) = NonNull::new(value as *mut Heap) {
        // SAFETY: the key's value is this thread's heap, used by nobody else.
        unsafe { Heap::destroy(h) };
    }
}

/// Runs `f` on the calling thread's heap, or `boot` while this thread is
/// initialising the allocator. The fast path is one TLS load.
#[inline(always)]
fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R, boot: impl FnOnce() -> R) -> R {
    let h = tls::get();
    if h >= tls::FIRST_HEAP {
        // SAFETY: the slot holds this thread's live heap, used only here.
        return f(unsafe { &mut *(h as *mut Heap) });
    }
    with_heap_slow(h, f, boot)
}

#[cold]
#[inline(never)]
fn with_heap_slow<R>(state: usize, f: impl FnOnce(&mut Heap) -> R, boot: impl FnOnce() -> R) -> R {
    if state == tls::IN_INIT {
        return boot();
    }
    if state == tls::UNSET {
        ensure_global();
        tls::set(tls::IN_INIT);
        if let Some(h) = Heap::create(&GLOBAL) {
            tls::set(h.as_ptr() as usize);
            // SAFETY: the key was created in `ensure_global`. A nested
            // allocation inside pthread_setspecific finds the heap set.
            unsafe { libc::pthread_setspecific(THREAD_KEY, h.as_ptr() as *const libc::c_void) };
            // SAFETY: just created for this thread.
            return f(unsafe { &mut *h.as_ptr() });
        }
        tls::set(tls::EXITED);
    }
    let mut shared = SHARED.lock();
    if shared.is_none() {
        *shared = Heap::create(&GLOBAL).map(HeapPtr);
    }
    match *shared {
        // SAFETY: the shared heap is used only under this lock.
        Some(h) => f(unsafe { &mut *h.0.as_ptr() }),
        None => {
            drop(shared);
            boot()
        }
    }
}

// ---------------------------------------------------------------------------
// Fork safety
// ---------------------------------------------------------------------------

extern "C" fn fork_prepare() {
    core::mem::forget(SHARED.lock());
    GLOBAL.lock_all();
}

extern "C" fn fork_parent() {
    // SAFETY: this thread took the locks in `fork_prepare`.
    unsafe {
        GLOBAL.unlock_all();
        SHARED.force_unlock();
    }
}

extern "C" fn fork_child() {
    // SAFETY: the child has one thread, the one that took the locks.
    unsafe {
        GLOBAL.fork_child_reset();
        SHARED.force_unlock();
    }
}

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

/// The calling thread's heap, if it has a live one (one TLS load).
#[inline(always)]
fn own_heap() -> Option<&'static mut Heap> {
    let h = tls::get();
    if h >= tls::FIRST_HEAP {
        // SAFETY: the slot holds this thread's live heap, used only by this
        // thread, and only for the duration of one call.
        Some(unsafe { &mut *(h as *mut Heap) })
    } else {
        None
    }
}

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
    match own_heap() {
        Some(h) => h.try_malloc_fast(size),
        None => ptr::null_mut(),
    }
}

#[cold]
#[inline(never)]
fn malloc_slow(size: usize) -> *mut u8 {
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

#[cold]
#[inline(never)]
fn from_shared(f: impl FnOnce(&mut Heap) -> *mut u8) -> *mut u8 {
    let mut shared = SHARED.lock();
    if shared.is_none() {
        *shared = Heap::create(&GLOBAL).map(HeapPtr);
    }
    match *shared {
        // SAFETY: the shared heap is used only under this lock.
        Some(h) => f(unsafe { &mut *h.0.as_ptr() }),
        None => ptr::null_mut(),
    }
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

#[cold]
#[inline(never)]
fn malloc_slow_c(size: usize) -> *mut u8 {
    let p = malloc_slow(size);
    if p.is_null() {
        // SAFETY: the calling thread's errno location is always valid.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
    }
    p
}

/// Allocates `size` zeroed bytes.
#[inline]
pub fn zalloc(size: usize) -> *mut u8 {
    // Arena memory is never reused, so it is still zero.
    or_shared(
        with_heap(|h| h.zalloc(size), || bootstrap::alloc(size, MIN_ALIGN)),
        |h| h.zalloc(size),
    )
}

/// Allocates `size` bytes aligned to `align` (a power of two).
#[inline]
pub fn malloc_aligned(size: usize, align: usize) -> *mut u8 {
    or_shared(
        with_heap(
            |h| h.malloc_aligned(size, align),
            || bootstrap::alloc(size, align),
        ),
        |h| h.malloc_aligned(size, align),
    )
}

/// Allocates `size` zeroed bytes aligned to `align` (a power of two).
#[inline]
pub fn zalloc_aligned(size: usize, align: usize) -> *mut u8 {
    or_shared(
        with_heap(
            |h| h.zalloc_aligned(size, align),
            || bootstrap::alloc(size, align),
        ),
        |h| h.zalloc_aligned(size, align),
    )
}

/// Frees a block; null and foreign pointers are ignored.
///
/// # Safety
/// `p` must be null, foreign, or a live block of this allocator, not used
/// afterwards.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    if let Some(h) = own_heap() {
        // SAFETY: forwarded from the caller.
        if unsafe { h.try_free_fast(p) } {
            return;
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { free_slow(p) }
}

/// # Safety
/// As [`free`].
#[cold]
#[inline(never)]
unsafe fn free_slow(p: *mut u8) {
    // Bootstrap-arena blocks are not in any segment, so the core treats
    // them as foreign and ignores them, as it should.
    // SAFETY: forwarded from the caller. A block freed while this thread
    // initialises is leaked rather than touching a heap.
    with_heap(|h| unsafe { h.free(p) }, || ())
}

/// Resizes a block (`p` non-null). Null when out of memory (the block stays
/// valid) or when `p` is foreign.
///
/// # Safety
/// `p` must be a live block of this allocator or foreign.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if bootstrap::contains(p) {
        let q = malloc(size);
        if !q.is_null() {
            // SAFETY: both blocks are valid for the copied length.
            unsafe { ptr::copy_nonoverlapping(p, q, bootstrap::size_of(p).min(size)) };
        }
        return q;
    }
    // SAFETY: forwarded from the caller.
    let q = with_heap(|h| unsafe { h.realloc(p, size) }, ptr::null_mut);
    if !q.is_null() || own_heap().is_none() || !apex_core::owns(p) {
        return q;
    }
    // The own heap is out of memory: move the block to the shared heap.
    let q = from_shared(|h| h.malloc(size));
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
    if bootstrap::contains(p) {
        return bootstrap::size_of(p);
    }
    // SAFETY: forwarded from the caller.
    unsafe { apex_core::usable_size(p) }
}

/// Returns free memory of the calling thread's heap and all cached memory
/// to the system. Returns whether the allocator is initialised.
pub fn trim() -> bool {
    if STATE.load(Ordering::Acquire) != READY {
        return false;
    }
    with_heap(|h| h.release_now(), || ());
    true
}

/// Counters summed over all heaps.
pub fn stats() -> Snapshot {
    apex_core::snapshot(&GLOBAL)
}

// ---------------------------------------------------------------------------
// GlobalAlloc
// ---------------------------------------------------------------------------

/// ApexAlloc as a Rust global allocator.
pub struct ApexAlloc;

// SAFETY: blocks are at least `layout.size()` bytes, aligned to
// `layout.align()`, distinct while live, and freed exactly once by `dealloc`;
// `realloc` preserves contents up to the smaller size.
unsafe impl GlobalAlloc for ApexAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            malloc(layout.size())
        } else {
            malloc_aligned(layout.size(), layout.align())
        }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        // SAFETY: `p` came from `alloc` with this allocator.
        unsafe { free(p) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            zalloc(layout.size())
        } else {
            zalloc_aligned(layout.size(), layout.align())
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            // SAFETY: `p` is a live block of ours.
            return unsafe { realloc(p, new_size) };
        }
        // Over-aligned: keep the block if it is big enough, else move it to
        // a new block with the same alignment.
        // SAFETY: `p` is a live block of ours.
        if new_size <= unsafe { usable_size(p) } && new_size >= layout.size() / 2 {
            return p;
        }
        let q = malloc_aligned(new_size, layout.align());
        if !q.is_null() {
            // SAFETY: both blocks hold the copied length; `p` is freed once.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                free(p);
            }
        }
        q
    }
}
