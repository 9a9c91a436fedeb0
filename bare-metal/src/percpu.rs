//! CPU identification for per-CPU data.
//!
//! Per-CPU heaps need a small dense index for the running CPU. x86 names
//! CPUs by local APIC ID, which firmware may assign sparsely, so each CPU
//! registers once at bring-up ([`register_current_cpu`]) and receives the
//! next free index; afterwards [`current_cpu_index`] maps the APIC ID read
//! from CPUID back to it without locking.
//!
//! This module only identifies CPUs. The per-CPU allocator built on it is
//! [`KernelAlloc`](crate::KernelAlloc) (`kernel_alloc.rs`): pass it
//! [`current_cpu_index`] and it gives each registered CPU a heap of its
//! own; a CPU that has not registered yet uses its shared heap.
//!
//! Limits: at most [`MAX_CPUS`] CPUs register (further calls return
//! `None`, and those CPUs keep using the shared heap), and APIC IDs are the
//! 8-bit initial IDs from CPUID leaf 1: on x2APIC systems with IDs above
//! 255, CPUs whose IDs agree in the low 8 bits share one index (still
//! safe with `KernelAlloc`, whose per-CPU heap is behind a lock: the CPU
//! that finds it taken uses the shared heap, but they contend).

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// The most CPUs the kernel supports; indices are `0..MAX_CPUS`.
pub const MAX_CPUS: usize = 32;

/// Marks an APIC ID that no CPU has registered.
const UNREGISTERED: u8 = u8::MAX;

/// Dense index of each 8-bit APIC ID.
static INDEX_OF_APIC: [AtomicU8; 256] = [const { AtomicU8::new(UNREGISTERED) }; 256];

/// Indices handed out so far.
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// The initial local APIC ID of the running CPU (CPUID leaf 1, bits 31:24 of EBX).
pub fn lapic_id() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        let leaf1 = core::arch::x86_64::__cpuid(1);
        (leaf1.ebx >> 24) as u8
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Gives the running CPU the next dense index, or returns the one it already
/// has. `None` once [`MAX_CPUS`] CPUs are registered. Call it once per CPU,
/// on that CPU, before anything uses [`current_cpu_index`].
pub fn register_current_cpu() -> Option<usize> {
    let slot = &INDEX_OF_APIC[lapic_id() as usize];
    let known = slot.load(Ordering::Acquire);
    if known != UNREGISTERED {
        return Some(known as usize);
    }
    let index = REGISTERED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CPUS).then_some(n + 1)
        })
        .ok()?;
    slot.store(index as u8, Ordering::Release);
    Some(index)
}

/// The dense index of the running CPU, or `None` if it never registered.
pub fn current_cpu_index() -> Option<usize> {
    let index = INDEX_OF_APIC[lapic_id() as usize].load(Ordering::Acquire);
    (index != UNREGISTERED).then_some(index as usize)
}

/// How many CPUs have registered.
pub fn registered_cpus() -> usize {
    REGISTERED.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Host threads migrate between CPUs, so only properties that hold on any
    // CPU are checked here; the SMP test kernel checks the rest.
    #[test]
    fn registration_gives_small_indices() {
        let index = register_current_cpu().unwrap();
        assert!(index < MAX_CPUS);
        assert!(registered_cpus() >= 1 && registered_cpus() <= MAX_CPUS);
        assert!(current_cpu_index().is_none_or(|i| i < registered_cpus()));
    }
}
