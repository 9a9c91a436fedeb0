//! A libtest-style runner for test kernels.
//!
//! Each test kernel lists its tests in a `const TESTS: &[Test]` and calls
//! [`run_tests`]. The output mimics libtest (`test NAME ... ok` and a
//! closing `test result:` line), since cargo prints nothing of its own for
//! `harness = false` tests. Command-line words (cargo passes the arguments
//! after `--`, `run.sh` forwards them) filter by substring; `--exact`
//! requires equal names; other `--flags` are ignored.
//!
//! A failing test panics; the panic handler calls [`report_failure`], which
//! completes the report before the kernel exits with failure.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use spin::Mutex;

use crate::exit::{exit, ExitCode};
use crate::serial::PanicWriter;
use crate::BootInfo;

/// A named test.
pub type Test = (&'static str, fn(&'static BootInfo));

static RUNNING: AtomicBool = AtomicBool::new(false);
static PASSED: AtomicUsize = AtomicUsize::new(0);
static FILTERED: AtomicUsize = AtomicUsize::new(0);
static CURRENT: Mutex<&str> = Mutex::new("");

/// Runs the tests the command line selects, prints libtest-style results and
/// ends the VM: success if every test returned.
pub fn run_tests(info: &'static BootInfo, tests: &[Test]) -> ! {
    let exact = info.args().any(|a| a == "--exact");
    let selected = |name: &str| {
        let mut filters = info.args().filter(|a| !a.starts_with("--")).peekable();
        filters.peek().is_none()
            || filters.any(|f| if exact { name == f } else { name.contains(f) })
    };
    let count = tests.iter().filter(|(name, _)| selected(name)).count();
    FILTERED.store(tests.len() - count, Ordering::Relaxed);

    crate::println!(
        "\nrunning {count} test{}",
        if count == 1 { "" } else { "s" }
    );
    for &(name, test) in tests.iter().filter(|(name, _)| selected(name)) {
        crate::print!("test {name} ... ");
        *CURRENT.lock() = name;
        RUNNING.store(true, Ordering::SeqCst);
        test(info);
        RUNNING.store(false, Ordering::SeqCst);
        crate::println!("ok");
        PASSED.fetch_add(1, Ordering::Relaxed);
    }
    crate::println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        PASSED.load(Ordering::Relaxed),
        FILTERED.load(Ordering::Relaxed)
    );
    exit(ExitCode::Success)
}

/// Completes the report for a test that panicked. Does nothing outside a
/// test; prints once even if several CPUs panic.
pub fn report_failure() {
    use core::fmt::Write;
    if !RUNNING.swap(false, Ordering::SeqCst) {
        return;
    }
    // The lock is only held briefly by the runner, which is not running now.
    let name = CURRENT.try_lock().map_or("?", |n| *n);
    let _ = write!(
        PanicWriter,
        "FAILED\n\nfailures:\n    {name}\n\ntest result: FAILED. {} passed; 1 failed; 0 ignored; 0 measured; {} filtered out\n",
        PASSED.load(Ordering::Relaxed),
        FILTERED.load(Ordering::Relaxed)
    );
}
