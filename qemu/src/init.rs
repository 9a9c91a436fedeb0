//! Kernel start-up after the boot stub, and the [`entry_point!`](crate::entry_point) macro.

use spin::Once;

use crate::memory::{self, MemoryStats};
use crate::pvh::StartInfo;
use crate::{exit, serial};

/// What the kernel learned while booting; handed to the kernel's main.
#[derive(Debug)]
pub struct BootInfo {
    /// The PVH start info, copied.
    pub start_info: StartInfo,
    /// How physical memory was handed to the page provider.
    pub memory: MemoryStats,
}

impl BootInfo {
    /// The page provider over all usable RAM.
    pub fn provider(&self) -> &'static apex_bare_metal::BuddyProvider {
        &memory::PROVIDER
    }

    /// The words of the kernel command line.
    pub fn args(&self) -> impl Iterator<Item = &str> {
        self.start_info.cmdline().split_ascii_whitespace()
    }
}

static BOOT_INFO: Once<BootInfo> = Once::new();

/// Brings the machine up: serial ports, start info, page provider, early
/// heap, this CPU's index. Called by the code [`entry_point!`](crate::entry_point) generates.
///
/// # Safety
/// Call once, from the boot stub's call into Rust, with the start info
/// address QEMU passed.
pub unsafe fn init(start_info_paddr: usize) -> &'static BootInfo {
    serial::init();
    memory::PROVIDER.set_fatal_handler(fatal);
    apex_bare_metal::percpu::register_current_cpu();

    // SAFETY: the caller passes QEMU's start info, still untouched.
    let start_info = match unsafe { StartInfo::read(start_info_paddr) } {
        Ok(info) => info,
        Err(e) => panic!("PVH start info at {start_info_paddr:#x}: {e:?}"),
    };
    // SAFETY: first and only call, on the boot CPU, before any other memory use.
    let memory = unsafe { memory::init(&start_info) };
    crate::logger::init();
    BOOT_INFO.call_once(|| BootInfo { start_info, memory })
}

/// The provider's fatal-error hook: report and fail the run.
fn fatal(msg: &str) -> ! {
    use core::fmt::Write;
    crate::test_runner::report_failure();
    let _ = writeln!(serial::PanicWriter, "\nfatal: {msg}");
    exit::exit(exit::ExitCode::Failure)
}

/// Defines the kernel's entry: `entry_point!(main)` with
/// `fn main(info: &'static BootInfo) -> !`. The boot stub calls the generated
/// `apex_rust_entry`, which runs [`init`] and then `main`.
#[macro_export]
macro_rules! entry_point {
    ($main:path) => {
        #[no_mangle]
        extern "C" fn apex_rust_entry(start_info_paddr: u64) -> ! {
            let main: fn(&'static $crate::BootInfo) -> ! = $main;
            // SAFETY: the boot stub calls this once, passing QEMU's %ebx.
            let info = unsafe { $crate::init::init(start_info_paddr as usize) };
            main(info)
        }
    };
}

/// Asks `run.sh` to start QEMU with `n` CPUs for this kernel (unless
/// `QEMU_SMP` overrides it). The runner finds the marker string in the ELF.
#[macro_export]
macro_rules! qemu_smp {
    ($n:literal) => {
        #[used]
        static QEMU_SMP_REQUEST: &str = concat!("apex-qemu:smp=", $n, ";");
    };
}
