//! Process start-up: reading the options, initialising the core, binding
//! threads, and what the options ask for at start (the settings line, the
//! private stderr for the exit statistics, the background purge thread, the
//! hand-off test hook).

use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};

use crate::{leaks, options, report, thread, tls, GLOBAL};

const UNINIT: u8 = 0;
const INITIALISING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Whether the process-wide state is initialised.
pub(crate) fn is_ready() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

/// Initialises the process-wide state once. Allocation requests made by
/// this thread meanwhile go to the bootstrap arena; other threads wait.
#[cold]
pub(crate) fn ensure_global() {
    if STATE.load(Ordering::Acquire) == READY {
        return;
    }
    if STATE
        .compare_exchange(UNINIT, INITIALISING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        while STATE.load(Ordering::Acquire) != READY {
            core::hint::spin_loop();
        }
        return;
    }
    let before = tls::get();
    tls::set(tls::IN_INIT);
    options::read_environment();
    GLOBAL.ensure_init();
    thread::bind_process();
    if options::SHOW_STATS.load(Ordering::Relaxed) || leaks::enabled() {
        report::keep_stderr();
    }
    tls::set(before);
    STATE.store(READY, Ordering::Release);
    // These may allocate, which works normally from here on.
    thread::register_fork_handlers();
    crate::strategy::start();
    options::print_settings_if_asked();
    start_background_purge();
}

/// Runs at load time (before `main`) so options and the settings line take
/// effect early; allocations that arrive even earlier initialise lazily.
#[used]
#[link_section = ".init_array"]
static INIT_AT_LOAD: extern "C" fn() = init_at_load;

extern "C" fn init_at_load() {
    ensure_global();
    // Loading the unwinder takes `dlopen`: here, once the program is
    // loaded, rather than in whichever allocation came first.
    leaks::start();
}

// ---------------------------------------------------------------------------
// Background purge
// ---------------------------------------------------------------------------

/// `APEX_BACKGROUND_PURGE_MS`: how often the background purge thread runs
/// (0, the default: no thread).
pub(crate) static BACKGROUND_PURGE_MS: AtomicU64 = AtomicU64::new(0);

/// Starts the background purge thread when the option asks for one.
fn start_background_purge() {
    if BACKGROUND_PURGE_MS.load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: a zeroed pthread_t is a valid out-parameter; the thread gets
    // no argument and is detached, so nobody joins it.
    unsafe {
        let mut t: libc::pthread_t = core::mem::zeroed();
        if libc::pthread_create(&mut t, ptr::null(), background_purge, ptr::null_mut()) == 0 {
            libc::pthread_detach(t);
        }
    }
}

/// The background purge: every `APEX_BACKGROUND_PURGE_MS` it runs the
/// decay of what no thread owns (cached segments and huge blocks, abandoned
/// segments) and of the shared heap, so a process that goes quiet after a
/// burst gives the memory back without allocating again. Free memory inside
/// a live thread's heap stays that thread's to return: a heap keeps at most
/// one empty segment, handing the others to the cache this thread purges.
extern "C" fn background_purge(_: *mut libc::c_void) -> *mut libc::c_void {
    let ms = BACKGROUND_PURGE_MS.load(Ordering::Relaxed);
    let pause = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: sleeps; the timespec is valid.
        unsafe { libc::nanosleep(&pause, ptr::null_mut()) };
        if let Some(now) = GLOBAL.now() {
            GLOBAL.decay(now);
        }
        thread::decay_shared();
    }
}

// ---------------------------------------------------------------------------
// The hand-off test hook
// ---------------------------------------------------------------------------

/// A test aid (`APEX_TEST_HANDOFF_FD=N`): the first cross-thread hand-off
/// writes one byte to file descriptor N and then pauses for 300 ms in its
/// middle, so a test can fork exactly there. Neither call allocates.
static HANDOFF_FD: AtomicI32 = AtomicI32::new(-1);

/// Arms the hand-off test hook for file descriptor `fd`.
pub(crate) fn arm_handoff_hook(fd: i32) {
    HANDOFF_FD.store(fd, Ordering::Relaxed);
    GLOBAL.set_handoff_hook(pause_in_handoff);
}

/// The file descriptor the hand-off test hook writes to (-1: none).
pub(crate) fn handoff_fd() -> i32 {
    HANDOFF_FD.load(Ordering::Relaxed)
}

fn pause_in_handoff(at: apex_core::fork::HandoffPoint) {
    if at != apex_core::fork::HandoffPoint::Notifying {
        return;
    }
    let fd = HANDOFF_FD.swap(-1, Ordering::AcqRel);
    if fd < 0 {
        return;
    }
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 300_000_000,
    };
    // SAFETY: writes one byte from a static buffer and sleeps; a failure of
    // either only weakens the test that asked for it.
    unsafe {
        libc::write(fd, b"h".as_ptr().cast(), 1);
        libc::nanosleep(&pause, ptr::null_mut());
    }
}
