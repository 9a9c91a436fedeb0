//! Leak reports (`APEX_LEAKS=1`): at exit, the blocks still live, grouped
//! by the call stack that allocated them, heaviest first.
//!
//! Off (the default) this costs nothing on the fast paths: nothing here is
//! reached from them, and the out-of-line paths test one flag. On, every
//! heap is created with its fast paths disabled
//! ([`apex_core::Heap::disable_fast_paths`]), so every allocation and free
//! reaches the frontend's out-of-line paths, which call the hooks below:
//!
//! - **Sampling**, as jemalloc's heap profiler does: each thread counts
//!   down the bytes it allocates; when the count crosses zero the block is
//!   sampled and the next count is drawn from an exponential distribution
//!   with mean `APEX_LEAKS_SAMPLE` bytes (default 512 KiB; `1` samples
//!   every block). A block of `s` bytes is then sampled with probability
//!   `1 - exp(-s / mean)`, and the report counts each sampled block as
//!   `1 / (1 - exp(-s / mean))` blocks of its size (about `mean / s` for
//!   small blocks, 1 for blocks much larger than the mean).
//! - **Backtraces** of sampled blocks: `_Unwind_Backtrace` of libgcc_s
//!   (loaded with `dlopen` at start-up, when the allocator may allocate),
//!   at most 16 frames after the allocator's own (the frames inside the
//!   library's own code are skipped; module `backtrace`). The unwinder reads the
//!   `.eh_frame` tables, so it needs no frame pointers, and it does not
//!   call `malloc` (glibc 2.35 and later find those tables with
//!   `_dl_find_object`; `tests/c/leaks_unwind_check.c` checks it under a
//!   `malloc` that aborts). A thread's nested allocations while it samples
//!   are never sampled.
//! - **Tables** in memory mapped from the system (never `malloc`), under
//!   one spin lock: the live samples (address, size, stack), an
//!   open-addressing table that grows by doubling, and the distinct
//!   backtraces, deduplicated through a hash index. A full table drops new
//!   samples and counts them. A free looks its address up in a small
//!   table of counters first, without the lock, so frees of blocks never
//!   sampled (nearly all) do not take it; a free or `realloc` of a sampled
//!   block removes it (module `table`).
//! - **The report** at exit, after the statistics, in one `write` to the
//!   stderr the program started with (or appended to `APEX_STATS_FILE`):
//!   the totals, then one line per site, the 20 heaviest, with the frames
//!   named by `dladdr` (which sees exported symbols only: build C programs
//!   with `-rdynamic` to see their own function names; module `report`).
//!
//! docs/leaks.md describes the report and what it costs.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::init;

mod backtrace;
mod report;
mod table;

pub(crate) use report::report_at_exit;

use backtrace::DEPTH;
use table::{Sample, FILTER, TABLES};

/// `APEX_LEAKS_SAMPLE`'s default: mean bytes between samples.
pub const DEFAULT_SAMPLE: u64 = 512 * 1024;

/// `APEX_LEAKS`: sample and report. Set at start-up, before any heap
/// exists; read only by the out-of-line paths.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// `APEX_LEAKS_SAMPLE`: mean bytes between samples (1: every block).
static SAMPLE_MEAN: AtomicU64 = AtomicU64::new(DEFAULT_SAMPLE);

/// Whether leak sampling is on.
#[inline(always)]
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Sets `APEX_LEAKS` from `0` or `1` (start-up only).
pub(crate) fn set_enabled(v: &[u8]) -> bool {
    let on = match v {
        b"0" => false,
        b"1" => true,
        _ => return false,
    };
    ENABLED.store(on, Ordering::Relaxed);
    true
}

/// Sets `APEX_LEAKS_SAMPLE` (start-up only); 0 is refused.
pub(crate) fn set_sample(mean: u64) -> bool {
    if mean == 0 {
        return false;
    }
    SAMPLE_MEAN.store(mean, Ordering::Relaxed);
    true
}

/// The mean bytes between samples.
pub(crate) fn sample_mean() -> u64 {
    SAMPLE_MEAN.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// The per-thread sampler, in initial-exec TLS
// ---------------------------------------------------------------------------

/// A thread's sampling state (all zero in a new thread).
#[repr(C)]
struct Sampler {
    /// Bytes left before the next sample.
    countdown: i64,
    /// xorshift state; 0 until the first allocation seeds it.
    rng: u64,
    /// Non-zero while this thread samples or reports: its nested
    /// allocations are not sampled.
    busy: u64,
}

// As the heap slot of `crate::tls`: defined in assembly so that it is
// reached with one `%fs`-relative address computation in the shared
// library too (Rust's `thread_local!` would call `__tls_get_addr`, which
// may allocate).
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl apex_tls_leaks",
    ".hidden apex_tls_leaks",
    ".type apex_tls_leaks,@object",
    ".size apex_tls_leaks,24",
    "apex_tls_leaks:",
    ".zero 24",
    ".popsection",
);

/// The calling thread's sampler.
#[inline(always)]
fn sampler() -> *mut Sampler {
    let (offset, tp): (usize, usize);
    // SAFETY: reads the slot's offset from the thread pointer (a GOT entry
    // the loader filled in) and the thread pointer itself (the first word
    // of the thread control block); both exist in every thread.
    unsafe {
        core::arch::asm!(
            "mov {o}, qword ptr [rip + apex_tls_leaks@GOTTPOFF]",
            "mov {t}, qword ptr fs:[0]",
            o = out(reg) offset,
            t = out(reg) tp,
            options(nostack, readonly, preserves_flags),
        );
    }
    tp.wrapping_add(offset) as *mut Sampler
}

/// Marks the calling thread busy until the guard is dropped.
struct Busy(*mut Sampler);

impl Busy {
    fn new() -> Self {
        let s = sampler();
        // SAFETY: the calling thread's own sampler, used only by it.
        unsafe { (*s).busy += 1 };
        Busy(s)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // SAFETY: as in `Busy::new`.
        unsafe { (*self.0).busy -= 1 };
    }
}

/// The next countdown: exponentially distributed with mean `mean` bytes.
fn next_countdown(rng: &mut u64, mean: u64) -> i64 {
    // xorshift64*: (0, 1] from its top 53 bits.
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    let r = rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let u = ((r >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let bytes = -ln(u) * mean as f64;
    // `as` saturates; at least one byte.
    (bytes as i64).max(1)
}

/// Natural logarithm of a positive normal `x` (about 9 digits).
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52)); // [1, 2)
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh(t), |t| = |m - 1| / (m + 1) < 0.172.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = 1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0))));
    e as f64 * core::f64::consts::LN_2 + 2.0 * t * series
}

/// A seed that differs between threads and runs (never 0).
fn seed(s: *mut Sampler) -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let mut z = tsc ^ (s as u64).rotate_left(32);
    // splitmix64's finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

// ---------------------------------------------------------------------------
// The hooks
// ---------------------------------------------------------------------------

/// Watches an allocation of `size` bytes: `alloc()`'s block is sampled
/// when leak sampling is on and the thread's countdown runs out.
#[inline(always)]
pub(crate) fn watch(size: usize, alloc: impl FnOnce() -> *mut u8) -> *mut u8 {
    let p = alloc();
    if enabled() {
        on_alloc(p, size);
    }
    p
}

/// Counts the block `p` of `size` bytes down and samples it when the
/// countdown runs out. Kept small: the sampling itself is out of line.
#[inline(never)]
pub(crate) fn on_alloc(p: *mut u8, size: usize) {
    if p.is_null() {
        return;
    }
    let s = sampler();
    // SAFETY: the calling thread's own sampler, used only by it (a nested
    // allocation sees `busy` and returns here).
    let state = unsafe { &mut *s };
    if state.busy != 0 {
        return;
    }
    let mean = sample_mean();
    // A live block has at most isize::MAX bytes and the countdown is
    // positive before this, so the subtraction cannot overflow. A new
    // thread's countdown is 0, so its first block goes to `sample`, which
    // draws the first countdown.
    state.countdown -= size.max(1) as i64;
    if state.countdown > 0 && mean > 1 {
        return;
    }
    sample(p, size, s, mean);
}

/// The countdown ran out (or was never drawn): samples `p` unless this is
/// a thread's first block (then it only draws the countdown) or start-up
/// is not finished, and draws the next countdown.
#[cold]
#[inline(never)]
fn sample(p: *mut u8, size: usize, s: *mut Sampler, mean: u64) {
    // SAFETY: as in `on_alloc`.
    let state = unsafe { &mut *s };
    if mean > 1 {
        if state.rng == 0 {
            // This thread's first block: it counts against a first
            // countdown, drawn now.
            state.rng = seed(s);
            state.countdown =
                next_countdown(&mut state.rng, mean).saturating_sub(size.max(1) as i64);
            if state.countdown > 0 {
                return;
            }
        }
        state.countdown = next_countdown(&mut state.rng, mean);
    } else {
        state.countdown = 0;
    }
    if !init::is_ready() {
        return;
    }
    let _busy = Busy::new();
    let mut frames = [0usize; DEPTH];
    let depth = backtrace::capture(&mut frames);
    TABLES.lock().insert(p as usize, size, &frames[..depth]);
}

/// Before `p` is freed: forgets it if it was sampled.
#[inline(always)]
pub(crate) fn before_free(p: *mut u8) {
    if enabled() {
        forget(p);
    }
}

/// Removes `p`'s sample, if it has one, and returns it.
#[cold]
#[inline(never)]
fn forget(p: *mut u8) -> Option<Sample> {
    let filter = FILTER.load(Ordering::Acquire);
    if p.is_null() || filter.is_null() {
        return None;
    }
    // The counter is exact for blocks sampled before the program handed
    // `p` to this thread (that hand-over orders the increment before this
    // load), and only such blocks can be freed here.
    // SAFETY: the filter is FILTER_LEN counters, mapped once and never
    // unmapped; the index is below FILTER_LEN.
    let count = unsafe { (*filter.add(table::filter_slot(p as usize))).load(Ordering::Relaxed) };
    if count == 0 {
        return None;
    }
    TABLES.lock().remove(p as usize)
}

/// `realloc(p, size)` done by `resize`, keeping the samples right: `p`'s
/// sample is removed first (the block may move or be freed), then the new
/// block is sampled like a new allocation of `size` bytes; if `resize`
/// fails, `p` stays live and keeps its sample.
pub(crate) fn watch_realloc(p: *mut u8, size: usize, resize: impl FnOnce() -> *mut u8) -> *mut u8 {
    let old = forget(p);
    let q = resize();
    if q.is_null() {
        if let Some(s) = old {
            TABLES.lock().restore(p as usize, s);
        }
    } else {
        on_alloc(q, size);
    }
    q
}

/// [`watch_realloc`] when leak sampling is on, else just `resize()`.
#[inline(always)]
pub(crate) fn watch_realloc_if_on(
    p: *mut u8,
    size: usize,
    resize: impl FnOnce() -> *mut u8,
) -> *mut u8 {
    if enabled() {
        watch_realloc(p, size, resize)
    } else {
        resize()
    }
}

/// Loads the unwinder and finds the library's own code (this may
/// allocate, so it runs once start-up is done). Samples taken before
/// have no backtrace.
pub(crate) fn start() {
    if !enabled() {
        return;
    }
    let _busy = Busy::new();
    backtrace::start();
}

/// Takes the lock before `fork` (the child's copy must not be held by a
/// thread that does not exist there).
pub(crate) fn fork_prepare() {
    core::mem::forget(TABLES.lock());
}

/// Releases the lock after `fork`, in the parent and in the child.
pub(crate) fn fork_release() {
    // SAFETY: this thread took the lock in `fork_prepare`.
    unsafe { TABLES.force_unlock() };
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn logarithm() {
        for x in [1e-15f64, 1e-6, 0.01, 0.3, 0.5, 0.999, 1.0] {
            let want = match x {
                1.0 => 0.0,
                0.5 => -core::f64::consts::LN_2,
                _ => x.ln(),
            };
            assert!((ln(x) - want).abs() <= 1e-8 * want.abs().max(1.0), "ln {x}");
        }
    }

    #[test]
    fn countdowns_average_the_mean() {
        let mut rng = 0x1234_5678_9abc_def1;
        let n = 100_000;
        let sum: i64 = (0..n).map(|_| next_countdown(&mut rng, 1000)).sum();
        let avg = sum as f64 / n as f64;
        assert!((avg - 1000.0).abs() < 20.0, "{avg}");
    }
}
