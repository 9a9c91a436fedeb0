//! QEMU's firmware configuration interface (I/O ports 0x510/0x511).
//!
//! Used for facts firmware tables would give on real hardware, such as the
//! CPU count (the MADT reached through the ACPI RSDP).

use crate::io::{inb, outw};

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const NB_CPUS: u16 = 0x05;

/// The number of CPUs QEMU was started with (`-smp`).
pub fn cpu_count() -> usize {
    // SAFETY: selecting a fw_cfg item and reading its bytes has no other
    // effect; without fw_cfg the reads return 0xff, caught below.
    let n = unsafe {
        outw(SELECTOR, NB_CPUS);
        u16::from_le_bytes([inb(DATA), inb(DATA)])
    };
    match n {
        0 | 0xffff => 1,
        n => n as usize,
    }
}
