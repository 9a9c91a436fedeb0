//! The per-thread heap pointer in initial-exec TLS.
//!
//! Rust's `thread_local!` in a shared object uses the general-dynamic model,
//! which calls `__tls_get_addr` on every access. Allocators need the
//! initial-exec model (one `%fs`-relative load), which stable Rust cannot
//! request, so the variable is defined in assembly and read with inline
//! assembly through a `@GOTTPOFF` relocation. The library then carries the
//! `STATIC_TLS` flag, as jemalloc and mimalloc do: it works when loaded at
//! start-up (LD_PRELOAD, or linked in) and may be refused by a late
//! `dlopen`.
//!
//! Values below [`FIRST_HEAP`] are states, not heaps.

core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl apex_tls_heap",
    ".hidden apex_tls_heap",
    ".type apex_tls_heap,@object",
    ".size apex_tls_heap,8",
    "apex_tls_heap:",
    ".zero 8",
    ".popsection",
);

/// No heap yet: the next allocation creates one.
pub const UNSET: usize = 0;
/// The thread's heap was destroyed at thread exit: use the shared heap.
pub const EXITED: usize = 1;
/// This thread is initialising the allocator: use the bootstrap arena.
pub const IN_INIT: usize = 2;
/// Smallest value that is a real heap pointer.
pub const FIRST_HEAP: usize = 4096;

/// Reads this thread's slot.
#[inline(always)]
pub fn get() -> usize {
    let v: usize;
    // SAFETY: reads the thread's own initial-exec TLS slot, which exists
    // for every thread once the library is loaded.
    unsafe {
        core::arch::asm!(
            "mov {v}, qword ptr [rip + apex_tls_heap@GOTTPOFF]",
            "mov {v}, qword ptr fs:[{v}]",
            v = out(reg) v,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// Writes this thread's slot.
#[inline(always)]
pub fn set(value: usize) {
    // SAFETY: writes the thread's own initial-exec TLS slot.
    unsafe {
        core::arch::asm!(
            "mov {t}, qword ptr [rip + apex_tls_heap@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {v}",
            t = out(reg) _,
            v = in(reg) value,
            options(nostack, preserves_flags),
        );
    }
}
