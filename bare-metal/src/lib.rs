//! ApexAlloc's kernel frontend.
//!
//! The pieces a `#![no_std]` x86_64 kernel needs to run the allocator core
//! over physical memory:
//!
//! - [`buddy`]: a buddy page allocator over the RAM ranges of the boot
//!   memory map (4 KiB to 64 MiB blocks, O(log n) allocation and free);
//! - [`ranges`]: cutting holes (kernel image, boot data) out of those ranges;
//! - [`provider`]: [`BuddyProvider`], the core's
//!   [`PageProvider`](apex_core::provider::PageProvider) over the buddy
//!   allocator;
//! - [`kernel_alloc`]: [`KernelAlloc`], the core's heaps as the kernel's
//!   `#[global_allocator]`, slab heaps for small blocks and best-fit
//!   instances ([`fit_heap`]) for the rest, one of each per CPU;
//! - [`early_heap`]: [`EarlyHeap`], a simple global allocator for early boot,
//!   carved from the buddy allocator, used until per-CPU heaps exist;
//! - [`hand_over`]: [`HandOver`], the `#[global_allocator]` that serves
//!   early boot from the early heap and then switches to `KernelAlloc`;
//! - [`percpu`]: dense CPU indices (APIC IDs, or one instruction with
//!   `IA32_TSC_AUX`), the plumbing for the per-CPU heaps;
//! - [`irq`]: masking interrupts around locks, so handlers may allocate;
//! - [`rdrand`]: hardware entropy where the CPU has it.
//!
//! The crate assumes physical memory is accessible at its own address (an
//! identity map). With the `defmt` feature it logs through defmt; only a
//! kernel that provides a defmt logger may enable it.
//!
//! The host unit tests run these pieces over ordinary memory
//! (`cargo test -p apex-bare-metal`); the test kernels in `qemu/` run them on
//! physical memory in QEMU, on up to 4 CPUs.

#![no_std]

/// Logs at debug level through defmt when the `defmt` feature is on.
#[cfg(feature = "defmt")]
macro_rules! log_debug {
    ($($arg:tt)*) => { defmt::debug!($($arg)*) };
}

/// Logs at debug level through defmt when the `defmt` feature is on.
#[cfg(not(feature = "defmt"))]
macro_rules! log_debug {
    ($($arg:tt)*) => {{}};
}

/// Logs at error level through defmt when the `defmt` feature is on.
#[cfg(feature = "defmt")]
macro_rules! log_error {
    ($($arg:tt)*) => { defmt::error!($($arg)*) };
}

/// Logs at error level through defmt when the `defmt` feature is on.
#[cfg(not(feature = "defmt"))]
macro_rules! log_error {
    ($($arg:tt)*) => {{}};
}

pub(crate) use log_debug;
pub(crate) use log_error;

pub mod buddy;
pub mod early_heap;
pub mod fit_heap;
pub mod hand_over;
pub mod irq;
pub mod kernel_alloc;
pub mod percpu;
pub mod provider;
pub mod ranges;
pub mod rdrand;

pub use buddy::Buddy;
pub use early_heap::EarlyHeap;
pub use hand_over::HandOver;
pub use kernel_alloc::KernelAlloc;
pub use provider::BuddyProvider;
pub use ranges::Range;
