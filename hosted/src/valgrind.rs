//! Valgrind client requests, so that memcheck sees [`ApexAlloc`]'s blocks
//! as it sees the C library's: leaks, reads of freed blocks, reads past a
//! block's end and uses of uninitialised bytes are reported.
//!
//! With the `valgrind` feature off (the default) every function here is
//! empty and the allocator's code is unchanged. With it on, each request is
//! the magic instruction sequence of `valgrind.h` (x86_64 only; elsewhere
//! the functions stay empty): four rotations of `rdi` that add up to a
//! full turn and an `xchg rbx, rbx`, a no-op on a real CPU that Valgrind's
//! JIT recognises. Outside Valgrind a request costs a handful of
//! instructions and returns its default.
//!
//! The allocator itself reads and writes freed memory (free-list links,
//! canaries, zeroing checks): [`errors_off`]/[`errors_on`] bracket every
//! call into it, so memcheck reports only the program's own accesses.
//!
//! [`ApexAlloc`]: crate::ApexAlloc

/// Request codes from `valgrind.h` and `memcheck.h`.
#[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
mod request {
    pub const MALLOCLIKE_BLOCK: usize = 0x1301;
    pub const FREELIKE_BLOCK: usize = 0x1302;
    pub const RESIZEINPLACE_BLOCK: usize = 0x130b;
    pub const CHANGE_ERR_DISABLEMENT: usize = 0x1801;
    pub const RUNNING_ON_VALGRIND: usize = 0x1001;
    /// `VG_USERREQ_TOOL_BASE('M', 'C')`, memcheck's first request.
    pub const MAKE_MEM_NOACCESS: usize = 0x4d43_0000;
}

/// Issues one client request and returns Valgrind's answer (`default` when
/// not running under Valgrind).
#[cfg(all(feature = "valgrind", target_arch = "x86_64"))]
#[inline(always)]
fn client_request(default: usize, req: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> usize {
    let args: [usize; 6] = [req, a1, a2, a3, a4, 0];
    let result: usize;
    // SAFETY: the rotations of `rdi` add up to 128 bits, leaving it as it
    // was, and `xchg rbx, rbx` changes nothing: on a CPU the sequence only
    // clobbers the flags (not declared preserved). Under Valgrind it reads
    // the six words at `rax` (a live local array: the asm may read memory)
    // and writes the answer to `rdx`.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") default => result,
            options(nostack),
        );
    }
    result
}

#[cfg(not(all(feature = "valgrind", target_arch = "x86_64")))]
#[inline(always)]
fn client_request(default: usize, _: usize, _: usize, _: usize, _: usize, _: usize) -> usize {
    default
}

#[cfg(not(all(feature = "valgrind", target_arch = "x86_64")))]
mod request {
    pub const MALLOCLIKE_BLOCK: usize = 0;
    pub const FREELIKE_BLOCK: usize = 0;
    pub const RESIZEINPLACE_BLOCK: usize = 0;
    pub const CHANGE_ERR_DISABLEMENT: usize = 0;
    pub const RUNNING_ON_VALGRIND: usize = 0;
    pub const MAKE_MEM_NOACCESS: usize = 0;
}

/// Whether the requests are compiled in (the `valgrind` feature, x86_64).
pub const ENABLED: bool = cfg!(all(feature = "valgrind", target_arch = "x86_64"));

/// The number of Valgrind layers the program runs under (0: none).
#[inline]
pub fn running_on_valgrind() -> usize {
    client_request(0, request::RUNNING_ON_VALGRIND, 0, 0, 0, 0)
}

/// Stops memcheck reporting errors from this thread until [`errors_on`]
/// (the calls nest).
#[inline(always)]
pub fn errors_off() {
    if ENABLED {
        client_request(0, request::CHANGE_ERR_DISABLEMENT, 1, 0, 0, 0);
    }
}

/// Undoes one [`errors_off`].
#[inline(always)]
pub fn errors_on() {
    if ENABLED {
        client_request(0, request::CHANGE_ERR_DISABLEMENT, usize::MAX, 0, 0, 0);
    }
}

/// Tells memcheck that `p` is a new block of `size` bytes: addressable,
/// undefined unless `zeroed`, tracked for leaks. A null `p` is ignored.
#[inline(always)]
pub fn malloc_like(p: *mut u8, size: usize, zeroed: bool) {
    if ENABLED && !p.is_null() {
        client_request(
            0,
            request::MALLOCLIKE_BLOCK,
            p as usize,
            size,
            0,
            zeroed as usize,
        );
    }
}

/// Tells memcheck that the block at `p` is freed: any later access is an
/// error until the address is handed out again.
#[inline(always)]
pub fn free_like(p: *mut u8) {
    if ENABLED && !p.is_null() {
        client_request(0, request::FREELIKE_BLOCK, p as usize, 0, 0, 0);
    }
}

/// Tells memcheck that the block at `p` changed from `old` to `new` bytes
/// without moving.
#[inline(always)]
pub fn resize_in_place(p: *mut u8, old: usize, new: usize) {
    if ENABLED && !p.is_null() {
        client_request(0, request::RESIZEINPLACE_BLOCK, p as usize, old, new, 0);
    }
}

/// Tells memcheck that the `len` bytes at `p` may not be accessed (the
/// slack between a block's requested and usable size).
#[inline(always)]
pub fn no_access(p: *mut u8, len: usize) {
    if ENABLED && len > 0 {
        client_request(0, request::MAKE_MEM_NOACCESS, p as usize, len, 0, 0);
    }
}
