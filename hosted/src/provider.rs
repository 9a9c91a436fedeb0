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

/// How freed memory is returned to the kernel: `MADV_FREE` (the pages
/// keep their contents until the kernel needs them) rather than
/// `MADV_DONTNEED` (they read as zero). Set it with
/// [`set_decommit_with_free`].
pub static DECOMMIT_WITH_FREE: AtomicBool = AtomicBool::new(false);

/// Switches how freed memory is returned (`APEX_DECOMMIT`, `opt.decommit`).
/// Before the first `MADV_FREE`, the allocator stops taking decommitted
/// memory for zero, for good (memory given back with `MADV_FREE` earlier
/// may still hold data after switching back): the capability is dropped
/// first, and the release store here pairs with the acquire load in
/// `decommit`, so no decommit that did not zero is taken for one that did.
pub fn set_decommit_with_free(free: bool) {
    if free {
        crate::GLOBAL.drop_capabilities(Capabilities::ZERO_AFTER_DECOMMIT);
    }
    DECOMMIT_WITH_FREE.store(free, Ordering::Release);
}
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

// ---------------------------------------------------------------------------
// Memory nodes (NUMA)
// ---------------------------------------------------------------------------

/// The machine's memory nodes, once read (0: not read yet).
static NODE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The highest node `mbind` is asked for: the node mask is one word.
const MAX_BIND_NODE: usize = 63;

/// `MPOL_PREFERRED` of `<linux/mempolicy.h>`: allocate on the given node
/// when it has free memory, else anywhere.
const MPOL_PREFERRED: libc::c_int = 1;

/// The number of memory nodes: one more than the highest node listed in
/// `/sys/devices/system/node/online`, read once with raw system calls into
/// a buffer on the stack (start-up cannot allocate). 1 when the file is
/// missing or unreadable (a kernel without NUMA).
fn node_count() -> usize {
    let known = NODE_COUNT.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    let _errno = SavedErrno::new();
    let mut buf = [0u8; 256];
    let path = c"/sys/devices/system/node/online";
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    let mut n = 0;
    if fd >= 0 {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let got = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
        n = usize::try_from(got).unwrap_or(0);
        // SAFETY: our own descriptor.
        unsafe { libc::syscall(libc::SYS_close, fd) };
    }
    let count = parse_node_list(&buf[..n]).unwrap_or(1);
    NODE_COUNT.store(count, Ordering::Relaxed);
    count
}

/// One more than the highest node of a kernel node list (`0`, `0-3`,
/// `0,2-3`, with a trailing newline); `None` when it is not one.
fn parse_node_list(text: &[u8]) -> Option<usize> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let mut highest = None;
    for range in text.split(|&c| c == b',') {
        // The last number of `a-b` or `a` is the range's highest.
        let last = range.rsplit(|&c| c == b'-').next()?;
        if last.is_empty() || last.len() > 6 || !last.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = last
            .iter()
            .fold(0usize, |n, &c| n * 10 + usize::from(c - b'0'));
        highest = highest.max(Some(n));
    }
    highest.map(|h| h + 1)
}

/// The node of the CPU the calling thread runs on (`getcpu`), 0 when the
/// call fails.
fn current_node() -> usize {
    let _errno = SavedErrno::new();
    let (mut cpu, mut node) = (0u32, 0u32);
    // SAFETY: both out-parameters are valid; the third (a cache the kernel
    // ignores since 2.6.24) may be null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            core::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r == 0 {
        node as usize
    } else {
        0
    }
}

/// Prefers `node` for the pages of a range (`mbind` with
/// `MPOL_PREFERRED`; pages already resident stay where they are). Only
/// with two nodes or more: on one node there is nothing to choose.
/// Returns whether the kernel took the policy.
///
/// # Safety
/// The range is page-aligned and a live mapping of ours.
unsafe fn bind(addr: usize, len: usize, node: usize) -> bool {
    if node > MAX_BIND_NODE || node_count() < 2 {
        return false;
    }
    // SAFETY: forwarded from the caller.
    unsafe { mbind_preferred(addr, len, node) }
}

/// The `mbind` system call itself.
///
/// # Safety
/// As [`bind`]; `node <= MAX_BIND_NODE`.
unsafe fn mbind_preferred(addr: usize, len: usize, node: usize) -> bool {
    let _errno = SavedErrno::new();
    let mask: libc::c_ulong = 1 << node;
    // SAFETY: the caller's range; the mask is one word, and `maxnode`
    // counts one bit more than it holds, as the kernel expects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            MPOL_PREFERRED,
            &mask as *const libc::c_ulong,
            (MAX_BIND_NODE + 2) as libc::c_ulong,
            0u32,
        )
    };
    r == 0
}

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
        if !DECOMMIT_WITH_FREE.load(Ordering::Acquire) {
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
        let advice = if DECOMMIT_WITH_FREE.load(Ordering::Acquire) {
            libc::MADV_FREE
        } else {
            libc::MADV_DONTNEED
        };
        let _errno = SavedErrno::new();
        // SAFETY: the core passes page-aligned ranges of live mappings.
        unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, len, advice) };
    }

    unsafe fn hint_huge_pages(&self, ptr: NonNull<u8>, len: usize) {
        let _errno = SavedErrno::new();
        // SAFETY: the range is a live mapping of ours.
        unsafe { libc::madvise(ptr.as_ptr() as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    }

    fn node_count(&self) -> usize {
        node_count()
    }

    fn current_node(&self) -> usize {
        current_node()
    }

    unsafe fn bind_to_node(&self, ptr: NonNull<u8>, len: usize, node: usize) {
        // SAFETY: the core passes a page-aligned range of a live mapping.
        unsafe { bind(ptr.as_ptr() as usize, len, node) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(parse_node_list(b"0\n"), Some(1));
        assert_eq!(parse_node_list(b"0-1\n"), Some(2));
        assert_eq!(parse_node_list(b"0,2-3"), Some(4));
        assert_eq!(parse_node_list(b"1,0"), Some(2));
        for bad in [&b""[..], b"\n", b"x", b"0-", b"0,,1", b"1234567"] {
            assert_eq!(parse_node_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_machine_has_nodes_and_runs_on_one() {
        let n = node_count();
        assert!(n >= 1);
        assert_eq!(NODE_COUNT.load(Ordering::Relaxed), n, "read once, kept");
        assert!(current_node() < n);
    }

    /// The policy a page of ours has (`get_mempolicy` with `MPOL_F_ADDR`).
    fn policy_at(addr: usize) -> Option<libc::c_int> {
        let mut mode: libc::c_int = -1;
        // SAFETY: `mode` is a valid out-parameter; no node mask is asked
        // for.
        let r = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &mut mode as *mut libc::c_int,
                core::ptr::null_mut::<libc::c_ulong>(),
                0 as libc::c_ulong,
                addr,
                2 as libc::c_ulong, // MPOL_F_ADDR
            )
        };
        (r == 0).then_some(mode)
    }

    #[test]
    fn binding_sets_a_preferred_policy_only_with_two_nodes() {
        let len = 4 * PAGE_SIZE;
        let a = map(len).expect("map");
        let Some(before) = policy_at(a) else {
            // A kernel without NUMA support: nothing to bind.
            unmap(a, len);
            return;
        };
        assert_eq!(before, 0, "MPOL_DEFAULT on a fresh mapping");
        // SAFETY: `a` is our fresh mapping.
        let bound = unsafe { bind(a, len, 0) };
        assert_eq!(bound, node_count() >= 2);
        let expected = if bound { MPOL_PREFERRED } else { 0 };
        assert_eq!(policy_at(a), Some(expected));
        // The system call itself works here too, on node 0.
        // SAFETY: as above.
        assert!(unsafe { mbind_preferred(a, len, 0) });
        assert_eq!(policy_at(a + PAGE_SIZE), Some(MPOL_PREFERRED));
        unmap(a, len);
    }
}
