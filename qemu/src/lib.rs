//! ApexAlloc's bare-metal test kernels.
//!
//! Every binary of this crate is an x86_64 kernel booted by QEMU through the
//! PVH entry point (see `README.md`). The library holds what they share:
//!
//! - [`boot`]: the 32-bit entry stub and the switch to long mode;
//! - [`init`]: start-up in Rust, [`BootInfo`], [`entry_point!`];
//! - [`pvh`]: reading QEMU's `hvm_start_info` and memory map;
//! - [`memory`]: the buddy page provider over usable RAM, the early heap and
//!   the per-CPU heaps (the global allocator hands over from one to the
//!   other);
//! - [`smp`]: starting the other CPUs; [`fw_cfg`]: how many there are;
//! - [`interrupts`]: an IDT and the local APIC timer;
//! - [`serial`], [`exit`], [`io`]: console output, ending the VM, port I/O;
//! - [`test_runner`]: libtest-style test lists for `harness = false` kernels;
//!   [`rng`]: a reproducible random generator for them;
//! - [`logger`]: optional defmt output on COM2.
//!
//! The panic handler prints the panic and ends the VM with failure.

#![no_std]

pub mod boot;
pub mod exit;
pub mod fw_cfg;
pub mod init;
pub mod interrupts;
pub mod io;
pub mod logger;
pub mod memory;
#[cfg(target_os = "none")]
mod panic;
pub mod pvh;
pub mod rng;
pub mod serial;
pub mod smp;
pub mod test_runner;

pub use init::BootInfo;
pub use test_runner::{run_tests, Test};
