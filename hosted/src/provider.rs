//! The Linux page provider: `mmap`/`munmap`/`madvise`, nothing else.
//!
//! Reservations are anonymous private mappings, backed lazily by the kernel
//! on first touch. They are not `MAP_NORESERVE`: like glibc's, a request
//! the kernel's overcommit policy deems impossible (larger than memory and
//! swap, in the default heuristic mode) fails with `ENOMEM` at `malloc`
//! instead of succeeding and meeting the OOM killer later. Alignment comes
//! from mapping `len + align` and unmapping the excess on both sides.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use apex_core::provider::{Capabilities, PageProvider, PAGE_SIZE};

/// How freed memory is returned to the kernel.
pub static DECOMMIT_WITH_FREE: AtomicBool = AtomicBool::new(false);
/// Whether segments get `MADV_HUGEPAGE`.
pub static HUGE_PAGES: AtomicBool = AtomicBool::new(false);
/// Place aligned reservations (segments) at random addresses
/// ([`apex_core::harden::Mitigations::SHUFFLE`]), so the heap's layout
/// differs from run to run beyond what ASLR gives the first mapping.
pub static RANDOM_PLACEMENT: AtomicBool = AtomicBool::new(true);
/// The state of the placement generator (seeded from `getrandom` on
/// first use).
static PLACEMENT_STATE: AtomicUsize = AtomicUsize::new(0);

/// Tries to map `len` bytes at a random `align`-aligned address between
/// 1 TiB and 64 TiB (the kernel takes the address as a hint: if that range
/// is not free it picks another, which is given back, and the caller
/// falls back to an ordinary mapping).
fn map_at_random(len: usize, align: usize) -> Option<usize> {
    let mut state = PLACEMENT_STATE.load(Ordering::Relaxed);
    if state == 0 {
        let mut seed = [0u8; 8];
        // SAFETY: `seed` is writable for its length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getrandom,
                seed.as_mut_ptr(),
                8usize,
                libc::GRND_NONBLOCK,
            )
        };
        if n != 8 {
            return None;
        }
        state = usize::from_ne_bytes(seed) | 1;
    }
    // A Weyl step, mixed: concurrent callers may share a step, which only
    // makes two hints equal.
    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    PLACEMENT_STATE.store(state, Ordering::Relaxed);
    let r = apex_core::global::mix64(state);
    // Clear of the program, its libraries and the stack, which Linux
    // places near the top of the 128 TiB space.
    let hint = ((1usize << 40) + r % (63usize << 40)) & !(align - 1);
    // SAFETY: a private anonymous mapping with a hint (no MAP_FIXED): it
    // never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    if p as usize != hint {
        unmap(p as usize, len);
        return None;
    }
    Some(hint)
}

/// Anonymous memory from the kernel.
pub struct MmapProvider;

fn map(len: usize) -> Option<usize> {
    // SAFETY: anonymous private mapping; no file, no fixed address.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        Some(p as usize)
    }
}

fn unmap(addr: usize, len: usize) {
    if len > 0 {
        // `free` must never change errno, and it can end up here.
        let _errno = SavedErrno::new();
        // SAFETY: callers pass ranges of mappings they own.
        unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    }
}

/// Restores `errno` when dropped.
struct SavedErrno(libc::c_int);

impl SavedErrno {
    fn new() -> Self {
        // SAFETY: the calling thread's errno location is always valid.
        SavedErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for SavedErrno {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

// SAFETY: every range handed out is a fresh private anonymous mapping of the
// requested length and alignment (zeroed by the kernel); `release` unmaps
// exactly such ranges; only raw system calls are used, never malloc.
unsafe impl PageProvider for MmapProvider {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::LAZY_COMMIT
            | Capabilities::ZERO_ON_RESERVE
            | Capabilities::CAN_DECOMMIT
            | Capabilities::ENTROPY
            | Capabilities::CLOCK;
        if !DECOMMIT_WITH_FREE.load(Ordering::Relaxed) {
            c |= Capabilities::ZERO_AFTER_DECOMMIT;
        }
        if HUGE_PAGES.load(Ordering::Relaxed) {
            c |= Capabilities::HUGE_PAGES;
        }
        c
    }

    fn reserve(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        if align <= PAGE_SIZE {
            return NonNull::new(map(len)? as *mut u8);
        }
        if RANDOM_PLACEMENT.load(Ordering::Relaxed) {
            if let Some(p) = map_at_random(len, align) {
                return NonNull::new(p as *mut u8);
            }
        }
        // Often the kernel hands out an aligned address by itself.
        let p = map(len)?;
        if p % align == 0 {
            return NonNull::new(p as *mut u8);
        }
        unmap(p, len);
        let over = len.checked_add(align)?;
        let p = map(over)?;
        let start = (p + align - 1) & !(align - 1);
        unmap(p, start - p);
        unmap(start + len, p + over - (start + len));
        NonNull::new(start as *mut u8)
    }

    unsafe fn release(&self, ptr: NonNull<u8>, len: usize) {
        unmap(ptr.as_ptr() as usize, len);
    }

    unsafe fn commit(&self, _ptr: NonNull<u8>, _len: usize) -> bool {
        true
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize) {
        let advice = if DECOMMIT_WITH_FREE.load(Ordering::Relaxed) {
            libc::MADV_FREE
        } else {
            libc::MADV_DONTNEED
        };
        let _errno = SavedErrno::new();
        // SAFETY: the core passes page-aligned ranges of live mappings.
        unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, len, advice) };
    }

    unsafe fn hint_huge_pages(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: the range is a live mapping of ours.
        unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    }

    unsafe fn protect(&self, ptr: NonNull<u8>, len: usize, accessible: bool) -> bool {
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        let _errno = SavedErrno::new();
        // SAFETY: the core passes a page-aligned range of its own
        // reservation, which nothing touches while it is inaccessible.
        unsafe { libc::mprotect(ptr.as_ptr() as *mut libc::c_void, len, prot) == 0 }
    }

    fn entropy(&self, buf: &mut [u8]) -> bool {
        // SAFETY: writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getrandom,
                buf.as_mut_ptr(),
                buf.len(),
                libc::GRND_NONBLOCK,
            )
        };
        n == buf.len() as libc::c_long
    }

    fn now_ms(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }

    fn fatal(&self, msg: &str) -> ! {
        crate::report::write_stderr(msg);
        crate::report::write_stderr("\n");
        // SAFETY: abort is always safe to call; it raises SIGABRT.
        unsafe { libc::abort() }
    }
}
