//! The panic handler: print, report failure to the runner, stop.

use core::fmt::Write;
use core::panic::PanicInfo;

use crate::exit::{exit, ExitCode};
use crate::serial::PanicWriter;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    crate::test_runner::report_failure();
    let _ = writeln!(PanicWriter, "\nkernel panicked: {info}");
    exit(ExitCode::Failure)
}
