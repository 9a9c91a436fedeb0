//! Ending a QEMU run through the `isa-debug-exit` device.
//!
//! Writing `v` to port 0xf4 makes QEMU exit with status `(v << 1) | 1`;
//! `run.sh` maps [`ExitCode::Success`] (status 33) to 0 and everything else
//! to 1.

use crate::io::outb;

/// The `isa-debug-exit` port configured by `run.sh`.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the kernel reports to the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// All went well: QEMU exits with 33.
    Success = 0x10,
    /// A test failed or the kernel panicked: QEMU exits with 35.
    Failure = 0x11,
}

/// Ends the VM. Without the exit device (not under `run.sh`) the CPU halts.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device, which only ends the VM;
    // on a machine without it the write goes nowhere.
    unsafe { outb(DEBUG_EXIT_PORT, code as u8) };
    halt_forever()
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU; no interrupt can wake it.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
