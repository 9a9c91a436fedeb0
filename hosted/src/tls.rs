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
//! Two slots: the heap, which the fast paths read, always points at a heap
//! (the thread's own, or [`PLACEHOLDER`], on which every fast path fails),
//! so they need no "is there a heap" test; and the state, which only the
//! slow paths read. [`get`]/[`set`] view both as one value: a heap
//! pointer, or a state below [`FIRST_HEAP`].

use core::cell::UnsafeCell;

use apex_core::Heap;

use crate::GLOBAL;

/// The heap of threads that have none of their own (see the module
/// comment). Never written: every fast path on it fails before a write.
pub struct Placeholder(UnsafeCell<Heap>);
// SAFETY: nothing writes to the placeholder; threads only read it.
unsafe impl Sync for Placeholder {}

/// The one placeholder heap.
pub static PLACEHOLDER: Placeholder = Placeholder(UnsafeCell::new(Heap::placeholder(&GLOBAL)));

core::arch::global_asm!(
    // The heap slot starts at the placeholder in every thread: its initial
    // image holds the placeholder's address (relocated at load time).
    ".pushsection .tdata,\"awT\",@progbits",
    ".p2align 3",
    ".globl apex_tls_heap",
    ".hidden apex_tls_heap",
    ".type apex_tls_heap,@object",
    ".size apex_tls_heap,8",
    "apex_tls_heap:",
    ".quad {placeholder}",
    ".popsection",
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl apex_tls_state",
    ".hidden apex_tls_state",
    ".type apex_tls_state,@object",
    ".size apex_tls_state,8",
    "apex_tls_state:",
    ".zero 8",
    ".popsection",
    placeholder = sym PLACEHOLDER,
);

/// No heap yet: the next allocation creates one.
pub const UNSET: usize = 0;
/// The thread's heap was destroyed at thread exit: use the shared heap.
pub const EXITED: usize = 1;
/// This thread is initialising the allocator: use the bootstrap arena.
pub const IN_INIT: usize = 2;
/// The thread has a heap (the state slot's value while the heap slot
/// holds it).
const ACTIVE: usize = 3;
/// Smallest value that is a real heap pointer.
pub const FIRST_HEAP: usize = 4096;

/// The calling thread's heap for the fast paths: its own, or
/// [`PLACEHOLDER`]. One `%fs`-relative load.
#[inline(always)]
pub fn heap() -> *mut Heap {
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
    v as *mut Heap
}

/// The placeholder's address.
#[inline(always)]
pub fn placeholder() -> *mut Heap {
    PLACEHOLDER.0.get()
}

/// Reads this thread's heap pointer, or its state when it has no heap.
#[inline(always)]
pub fn get() -> usize {
    let h = heap();
    if h != placeholder() {
        return h as usize;
    }
    let v: usize;
    // SAFETY: as in `heap`, for the state slot.
    unsafe {
        core::arch::asm!(
            "mov {v}, qword ptr [rip + apex_tls_state@GOTTPOFF]",
            "mov {v}, qword ptr fs:[{v}]",
            v = out(reg) v,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// Sets this thread's heap (a value from [`FIRST_HEAP`] up) or state (a
/// value below; the heap slot then holds the placeholder).
#[inline(always)]
pub fn set(value: usize) {
    let (heap, state) = if value >= FIRST_HEAP {
        (value, ACTIVE)
    } else {
        (placeholder() as usize, value)
    };
    // SAFETY: writes the thread's own initial-exec TLS slots.
    unsafe {
        core::arch::asm!(
            "mov {t}, qword ptr [rip + apex_tls_state@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {s}",
            "mov {t}, qword ptr [rip + apex_tls_heap@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {h}",
            t = out(reg) _,
            s = in(reg) state,
            h = in(reg) heap,
            options(nostack, preserves_flags),
        );
    }
}
