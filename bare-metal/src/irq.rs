//! Masking maskable interrupts on the running CPU around a critical section.
//!
//! Every lock of this crate and of the allocator core is taken with
//! interrupts masked on the CPU that takes it (`KernelAlloc` masks them
//! around every path that can reach a lock; `BuddyProvider` and `EarlyHeap`
//! around their own locks). So an interrupt handler never interrupts a
//! holder of a lock on its own CPU, and allocating from a handler cannot
//! deadlock. Only `KernelAlloc`'s fast path runs with interrupts enabled; it
//! takes no lock and is guarded by the per-CPU re-entrancy flag instead.
//!
//! On the host (unit tests, benchmarks) there are no interrupts to mask and
//! `cli` would fault in user mode, so [`masked`] only runs its closure.

/// Runs `f` with maskable interrupts disabled on this CPU, then restores
/// the interrupt flag as it was (so nested sections and code that runs
/// with interrupts already masked, such as a handler, work unchanged).
#[inline(always)]
pub fn masked<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    {
        let flags: u64;
        // SAFETY: reads RFLAGS and clears IF; a kernel runs in ring 0,
        // where `cli` is allowed. No `nomem`: it is a compiler barrier, so
        // no memory access of `f` moves before it.
        unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags) };
        let r = f();
        if flags & (1 << 9) != 0 {
            // SAFETY: interrupts were enabled before; re-enabling them
            // restores that state. A compiler barrier as above.
            unsafe { core::arch::asm!("sti", options(nostack)) };
        }
        r
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    {
        f()
    }
}
