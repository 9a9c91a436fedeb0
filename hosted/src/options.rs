//! Options from `APEX_*` environment variables.
//!
//! [`OPTIONS`] is the one list of them: start-up reads the environment
//! through it, the `APEX_VERBOSE` settings line prints each listed entry's
//! value from it, and the table below and the one in the README show its
//! names, defaults and meanings (`hosted/tests/options_table.rs` checks
//! that both match it).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `APEX_SHOW_STATS` | 0 | `1`: print a statistics line at exit, `apexalloc[program:pid]: ...`, on the stderr the program started with (even when the program has closed it); `json`: one JSON document instead (totals, size classes, threads, segments; see docs/stats-json.md) |
//! | `APEX_STATS_FILE` | `stderr` | with `APEX_SHOW_STATS`: append the statistics line (or document) to this file instead (`%p` becomes the process id; a relative name is taken from the directory at start) |
//! | `APEX_VERBOSE` | 0 | `1`: print the settings at start, once per process tree (this process's environment then reads `APEX_VERBOSE=S`, which its children inherit); `all`: in every process |
//! | `APEX_HARDEN` | `default` | mitigations against heap exploitation: a preset, `off`, `default` or `full`, then single mitigations added with `+name` or removed with `-name`, comma-separated (`default,+zero,-shuffle`); names: `links`, `bitmap`, `foreign`, `guards`, `shuffle`, `canary`, `zero`, `quarantine`, `isolate`, `large-guards`, `wide-shuffle` (see the README's mitigation table) |
//! | `APEX_PURGE_DELAY_MS` | 100 | how long a segment must go without new free memory before that memory is returned (deferred at most 8×; a reserve of a quarter of what a heap uses stays) |
//! | `APEX_DECOMMIT` | `dontneed` | `free`: return memory with `MADV_FREE` instead of `MADV_DONTNEED` |
//! | `APEX_THP` | 0 | `1`: ask for transparent huge pages (`MADV_HUGEPAGE`) for the hot part of each new segment, its first 4 MiB (header and first slabs; with guard pages on, less the first 2 MiB; see docs/numa-thp.md) |
//! | `APEX_SEGMENT_CACHE` | 8 | empty segments and freed huge blocks kept for reuse |
//! | `APEX_HUGE_CACHE_MB` | 256 | resident bytes of freed huge blocks and empty segments kept for reuse (decommitted after the purge delay) |
//! | `APEX_BACKGROUND_PURGE_MS` | 0 | run a background thread this often that returns cached and abandoned memory (and the shared heap's), so a process that goes quiet after a burst gives memory back; 0: no thread |
//! | `APEX_STRATEGY` | `apex` | the allocation engine: `apex` (the default design), or a classic one, `first-fit`, `next-fit`, `best-fit`, `worst-fit`, `seglist` or `buddy`: one heap for the process under one lock, in the program break (see docs/strategies.md); an unknown name is reported and `apex` kept |
//! | `APEX_MMAP_THRESHOLD` | 131072 | with a classic `APEX_STRATEGY`: requests of this many bytes or more get a mapping of their own; smaller ones come from the engine |
//! | `APEX_LEAKS` | 0 | `1`: at exit, report the blocks still live grouped by the call stack that allocated them, heaviest sites first, after the statistics and to the same place (sampled: see `APEX_LEAKS_SAMPLE` and docs/leaks.md) |
//! | `APEX_LEAKS_SAMPLE` | 524288 | with `APEX_LEAKS`: the mean number of bytes a thread allocates between two sampled blocks (the distance is drawn at random each time); `1`: sample every block |
//!
//! Start-up walks `environ` once, without allocating:
//! - a listed name with a valid value sets its option; an empty value
//!   counts as unset;
//! - an invalid value is reported in one line on stderr, such as
//!   `apexalloc: ignoring APEX_DECOMMIT=bogus (expected dontneed or free);
//!   using dontneed`, and the default stays;
//! - an `APEX_` name the list does not know is reported as
//!   `apexalloc: unknown option APEX_FOO`.
//!
//! Each process reports for itself, at its start.
//!
//! `APEX_VERBOSE=1` prints the settings line once per process tree: after
//! printing it, start-up overwrites the `1` of `APEX_VERBOSE=1` in the
//! process's own environment (the string `environ` points to, in place:
//! no allocation) with `S`, "shown", which prints nothing; programs started
//! from this one inherit it. `APEX_VERBOSE=all` prints in every process.
//!
//! Two names are accepted without being user options (they are in
//! [`OPTIONS`] but not listed): `APEX_TEST_HANDOFF_FD=N`, a test aid (the
//! first cross-thread hand-off writes a byte to descriptor N and pauses
//! there for 300 ms, so a system test can fork in the middle of it), and
//! `APEX_LIB`, with which the system tests choose the library under test
//! (ignored here).

use core::ffi::{c_char, CStr};
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

use apex_core::harden::Mitigations;

use crate::report::{write_once, Line};
use crate::{init, provider, GLOBAL};

/// One option: its name, default and meaning (as in the README), what a
/// valid value looks like, and how to set and show it.
pub struct Opt {
    /// The environment variable.
    pub name: &'static str,
    /// The default, as shown by [`Opt::show`] while the option is unset.
    pub default: &'static str,
    /// What the option does (the README table's text).
    pub meaning: &'static str,
    /// What a valid value looks like (for the warning about a bad one).
    pub expected: &'static str,
    /// A user option: in the README table and the settings line.
    pub listed: bool,
    set: fn(&[u8]) -> bool,
    show: fn(&mut Line<'_>),
}

impl Opt {
    /// Sets the option from `value`; false (and nothing changed) when the
    /// value is not valid. Only start-up calls this, before the first
    /// allocation is served.
    pub fn set(&self, value: &[u8]) -> bool {
        (self.set)(value)
    }

    /// Appends the option's current value to `line`.
    pub fn show(&self, line: &mut Line<'_>) {
        (self.show)(line)
    }
}

/// Every `APEX_*` variable the library accepts; the listed ones first, in
/// the README's order.
pub static OPTIONS: [Opt; 16] = [
    Opt {
        name: "APEX_SHOW_STATS",
        default: "0",
        meaning: "`1`: print a statistics line at exit, `apexalloc[program:pid]: ...`, \
                  on the stderr the program started with (even when the program has closed it); \
                  `json`: one JSON document instead (totals, size classes, threads, segments; \
                  see docs/stats-json.md)",
        expected: "0, 1 or json",
        listed: true,
        set: set_show_stats,
        show: |l| l.push(show_stats_name().to_bytes()),
    },
    Opt {
        name: "APEX_STATS_FILE",
        default: "stderr",
        meaning: "with `APEX_SHOW_STATS`: append the statistics line (or document) to this file instead \
                  (`%p` becomes the process id; a relative name is taken from the directory \
                  at start)",
        expected: "a file name shorter than 4096 bytes",
        listed: true,
        set: set_stats_file,
        show: |l| match stats_file() {
            Some(p) => l.push_printable(p),
            None => l.push(b"stderr"),
        },
    },
    Opt {
        name: "APEX_VERBOSE",
        default: "0",
        meaning: "`1`: print the settings at start, once per process tree (this process's \
                  environment then reads `APEX_VERBOSE=S`, which its children inherit); \
                  `all`: in every process",
        expected: "0, 1 or all",
        listed: true,
        set: set_verbose,
        show: |l| {
            l.push(match VERBOSE.load(Ordering::Relaxed) {
                VERBOSE_ONCE => b"1".as_slice(),
                VERBOSE_ALL => b"all",
                VERBOSE_SHOWN => b"S",
                _ => b"0",
            })
        },
    },
    Opt {
        name: "APEX_HARDEN",
        default: "default",
        meaning: "mitigations against heap exploitation: a preset, `off`, `default` or `full`, then single mitigations added with `+name` or removed with `-name`, comma-separated (`default,+zero,-shuffle`); names: `links`, `bitmap`, `foreign`, `guards`, `shuffle`, `canary`, `zero`, `quarantine`, `isolate`, `large-guards`, `wide-shuffle` (see the README's mitigation table)",
        expected: "off, default or full, then +name or -name for single mitigations",
        listed: true,
        set: set_harden,
        show: show_harden,
    },
    Opt {
        name: "APEX_PURGE_DELAY_MS",
        default: "100",
        meaning: "how long a segment must go without new free memory before that memory is \
                  returned (deferred at most 8×; a reserve of a quarter of what a heap uses \
                  stays)",
        expected: "a whole number of milliseconds",
        listed: true,
        set: |v| {
            number(v).is_some_and(|ms| {
                GLOBAL.options.purge_delay.store(ms, Ordering::Relaxed);
                true
            })
        },
        show: |l| {
            let _ = write!(l, "{}", GLOBAL.options.purge_delay());
        },
    },
    Opt {
        name: "APEX_DECOMMIT",
        default: "dontneed",
        meaning: "`free`: return memory with `MADV_FREE` instead of `MADV_DONTNEED`",
        expected: "dontneed or free",
        listed: true,
        set: |v| {
            let free = match v {
                b"dontneed" => false,
                b"free" => true,
                _ => return false,
            };
            provider::set_decommit_with_free(free);
            true
        },
        show: |l| {
            l.push(if provider::DECOMMIT_WITH_FREE.load(Ordering::Relaxed) {
                b"free".as_slice()
            } else {
                b"dontneed"
            })
        },
    },
    Opt {
        name: "APEX_THP",
        default: "0",
        meaning: "`1`: ask for transparent huge pages (`MADV_HUGEPAGE`) for the hot part of \
                  each new segment, its first 4 MiB (header and first slabs; with guard pages \
                  on, less the first 2 MiB; see docs/numa-thp.md)",
        expected: "0 or 1",
        listed: true,
        set: |v| set_flag(&provider::HUGE_PAGES, v),
        show: |l| show_flag(&provider::HUGE_PAGES, l),
    },
    Opt {
        name: "APEX_SEGMENT_CACHE",
        default: "8",
        meaning: "empty segments and freed huge blocks kept for reuse",
        expected: "a whole number",
        listed: true,
        set: |v| match number(v).and_then(|n| usize::try_from(n).ok()) {
            Some(n) => {
                GLOBAL.options.segment_cache.store(n, Ordering::Relaxed);
                true
            }
            None => false,
        },
        show: |l| {
            let _ = write!(
                l,
                "{}",
                GLOBAL.options.segment_cache.load(Ordering::Relaxed)
            );
        },
    },
    Opt {
        name: "APEX_HUGE_CACHE_MB",
        default: "256",
        meaning: "resident bytes of freed huge blocks and empty segments kept for reuse \
                  (decommitted after the purge delay)",
        expected: "a whole number of MiB",
        listed: true,
        set: |v| match number(v).and_then(|n| usize::try_from(n).ok()) {
            Some(mb) => {
                GLOBAL
                    .options
                    .huge_cache_bytes
                    .store(mb.saturating_mul(1 << 20), Ordering::Relaxed);
                true
            }
            None => false,
        },
        show: |l| {
            let _ = write!(
                l,
                "{}",
                GLOBAL.options.huge_cache_bytes.load(Ordering::Relaxed) >> 20
            );
        },
    },
    Opt {
        name: "APEX_BACKGROUND_PURGE_MS",
        default: "0",
        meaning: "run a background thread this often that returns cached and abandoned \
                  memory (and the shared heap's), so a process that goes quiet after a burst \
                  gives memory back; 0: no thread",
        expected: "a whole number of milliseconds",
        listed: true,
        set: |v| {
            number(v).is_some_and(|ms| {
                init::BACKGROUND_PURGE_MS.store(ms, Ordering::Relaxed);
                true
            })
        },
        show: |l| {
            let _ = write!(l, "{}", init::BACKGROUND_PURGE_MS.load(Ordering::Relaxed));
        },
    },
    Opt {
        name: "APEX_STRATEGY",
        default: "apex",
        meaning: "the allocation engine: `apex` (the default design), or a classic one, `first-fit`, `next-fit`, `best-fit`, `worst-fit`, `seglist` or `buddy`: one heap for the process under one lock, in the program break (see docs/strategies.md); an unknown name is reported and `apex` kept",
        expected: "apex, first-fit, next-fit, best-fit, worst-fit, seglist or buddy",
        listed: true,
        set: crate::strategy::set,
        show: |l| l.push(crate::strategy::name().as_bytes()),
    },
    Opt {
        name: "APEX_MMAP_THRESHOLD",
        default: "131072",
        meaning: "with a classic `APEX_STRATEGY`: requests of this many bytes or more get a mapping of their own; smaller ones come from the engine",
        expected: "a whole number of bytes",
        listed: true,
        set: |v| match number(v).and_then(|n| usize::try_from(n).ok()) {
            Some(n) => {
                crate::strategy::MMAP_THRESHOLD.store(n, Ordering::Relaxed);
                true
            }
            None => false,
        },
        show: |l| {
            let _ = write!(
                l,
                "{}",
                crate::strategy::MMAP_THRESHOLD.load(Ordering::Relaxed)
            );
        },
    },
    Opt {
        name: "APEX_LEAKS",
        default: "0",
        meaning: "`1`: at exit, report the blocks still live grouped by the call stack that allocated them, heaviest sites first, after the statistics and to the same place (sampled: see `APEX_LEAKS_SAMPLE` and docs/leaks.md)",
        expected: "0 or 1",
        listed: true,
        set: crate::leaks::set_enabled,
        show: |l| l.push(if crate::leaks::enabled() { b"1" } else { b"0" }),
    },
    Opt {
        name: "APEX_LEAKS_SAMPLE",
        default: "524288",
        meaning: "with `APEX_LEAKS`: the mean number of bytes a thread allocates between two sampled blocks (the distance is drawn at random each time); `1`: sample every block",
        expected: "a whole number of bytes, at least 1",
        listed: true,
        set: |v| number(v).is_some_and(crate::leaks::set_sample),
        show: |l| {
            let _ = write!(l, "{}", crate::leaks::sample_mean());
        },
    },
    Opt {
        name: "APEX_TEST_HANDOFF_FD",
        default: "-1",
        meaning: "test aid: the first cross-thread hand-off writes a byte to this descriptor \
                  and pauses there for 300 ms",
        expected: "a file descriptor number",
        listed: false,
        set: |v| match number(v).and_then(|n| i32::try_from(n).ok()) {
            Some(fd) => {
                init::arm_handoff_hook(fd);
                true
            }
            None => false,
        },
        show: |l| {
            let _ = write!(l, "{}", init::handoff_fd());
        },
    },
    Opt {
        name: "APEX_LIB",
        default: "",
        meaning: "read by the system tests (the library under test); ignored here",
        expected: "anything",
        listed: false,
        set: |_| true,
        show: |_| {},
    },
];

/// `APEX_SHOW_STATS`: print statistics at exit.
pub(crate) static SHOW_STATS: AtomicBool = AtomicBool::new(false);
/// `APEX_SHOW_STATS=json`: as a JSON document.
pub(crate) static STATS_JSON: AtomicBool = AtomicBool::new(false);

/// Sets `APEX_SHOW_STATS` from `0`, `1` or `json` (also at run time,
/// through `apex_ctl`).
pub(crate) fn set_show_stats(v: &[u8]) -> bool {
    let (on, json) = match v {
        b"0" => (false, false),
        b"1" => (true, false),
        b"json" => (true, true),
        _ => return false,
    };
    STATS_JSON.store(json, Ordering::Relaxed);
    SHOW_STATS.store(on, Ordering::Relaxed);
    true
}

/// The current `APEX_SHOW_STATS` value: `0`, `1` or `json`.
pub(crate) fn show_stats_name() -> &'static CStr {
    match (
        SHOW_STATS.load(Ordering::Relaxed),
        STATS_JSON.load(Ordering::Relaxed),
    ) {
        (false, _) => c"0",
        (true, false) => c"1",
        (true, true) => c"json",
    }
}

fn set_harden(v: &[u8]) -> bool {
    let Ok(text) = core::str::from_utf8(v) else {
        return false;
    };
    match Mitigations::parse(text) {
        Ok(m) => {
            GLOBAL.set_mitigations(m);
            provider::RANDOM_PLACEMENT.store(m.contains(Mitigations::SHUFFLE), Ordering::Relaxed);
            true
        }
        Err(_) => false,
    }
}

fn show_harden(line: &mut Line<'_>) {
    let m = GLOBAL.mitigations();
    if let Some(name) = m.preset_name() {
        line.push(name.as_bytes());
        line.push(b":");
    }
    let _ = m.describe(line);
}

fn set_flag(flag: &AtomicBool, v: &[u8]) -> bool {
    let on = match v {
        b"0" => false,
        b"1" => true,
        _ => return false,
    };
    flag.store(on, Ordering::Relaxed);
    true
}

fn show_flag(flag: &AtomicBool, line: &mut Line<'_>) {
    line.push(if flag.load(Ordering::Relaxed) {
        b"1"
    } else {
        b"0"
    });
}

/// A decimal number without sign; `None` for anything else or overflow.
fn number(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

// ---------------------------------------------------------------------------
// APEX_VERBOSE
// ---------------------------------------------------------------------------

const VERBOSE_OFF: u8 = 0;
const VERBOSE_ONCE: u8 = 1;
const VERBOSE_ALL: u8 = 2;
const VERBOSE_SHOWN: u8 = 3;
static VERBOSE: AtomicU8 = AtomicU8::new(VERBOSE_OFF);

/// The `1` of `APEX_VERBOSE=1` in this process's environment, to be
/// overwritten with `S` once the settings line is out (null: none).
static VERBOSE_MARK: AtomicPtr<c_char> = AtomicPtr::new(core::ptr::null_mut());

fn set_verbose(v: &[u8]) -> bool {
    let mode = match v {
        b"0" => VERBOSE_OFF,
        b"1" => VERBOSE_ONCE,
        b"all" => VERBOSE_ALL,
        b"S" => VERBOSE_SHOWN,
        _ => return false,
    };
    VERBOSE.store(mode, Ordering::Relaxed);
    true
}

/// Prints the settings line when `APEX_VERBOSE` asks for it, in one
/// `write` to stderr, and for `APEX_VERBOSE=1` marks it shown in the
/// environment. Called once, at the end of start-up.
pub(crate) fn print_settings_if_asked() {
    let mode = VERBOSE.load(Ordering::Relaxed);
    if mode != VERBOSE_ONCE && mode != VERBOSE_ALL {
        return;
    }
    let mut buf = [0u8; STATS_PATH_MAX + 1024];
    let mut line = Line::new(&mut buf);
    line.push_prefix();
    let _ = write!(
        line,
        "settings (segments {} MiB, {} build):",
        apex_core::layout::SEGMENT_SIZE >> 20,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    for o in OPTIONS.iter().filter(|o| o.listed) {
        line.push(b" ");
        line.push(o.name.as_bytes());
        line.push(b"=");
        o.show(&mut line);
    }
    write_once(2, line.finish());
    let mark = VERBOSE_MARK.swap(core::ptr::null_mut(), Ordering::Relaxed);
    if !mark.is_null() {
        // SAFETY: `mark` points at the value byte of this process's
        // `APEX_VERBOSE=1` environment string, found by walking `environ`
        // at start-up; environment strings are writable (the initial
        // stack, or memory of `setenv`), and one byte in place keeps the
        // string's length.
        unsafe { mark.write(b'S' as c_char) };
    }
}

// ---------------------------------------------------------------------------
// APEX_STATS_FILE
// ---------------------------------------------------------------------------

/// The longest `APEX_STATS_FILE` path kept (after making it absolute).
pub const STATS_PATH_MAX: usize = 4096;

struct StatsPath {
    buf: [u8; STATS_PATH_MAX],
    len: usize,
}

static STATS_FILE: spin::Once<StatsPath> = spin::Once::new();

/// The `APEX_STATS_FILE` path (absolute unless the start-up directory was
/// unknown), still with its `%p`s.
pub(crate) fn stats_file() -> Option<&'static [u8]> {
    STATS_FILE.get().map(|p| &p.buf[..p.len])
}

/// The `APEX_STATS_FILE` path as a C string (the buffer is zeroed past
/// the path, which is always shorter than it).
pub(crate) fn stats_file_cstr() -> Option<&'static CStr> {
    let p = STATS_FILE.get()?;
    CStr::from_bytes_until_nul(&p.buf[..=p.len]).ok()
}

fn set_stats_file(v: &[u8]) -> bool {
    let mut path = StatsPath {
        buf: [0; STATS_PATH_MAX],
        len: 0,
    };
    if v.first() != Some(&b'/') {
        // SAFETY: getcwd writes a NUL-terminated string of at most the
        // given length into the buffer (it allocates only for a null
        // buffer); on failure it returns null and the name stays relative.
        let cwd = unsafe { libc::getcwd(path.buf.as_mut_ptr().cast(), STATS_PATH_MAX) };
        if !cwd.is_null() {
            // SAFETY: getcwd succeeded, so the buffer holds a C string.
            path.len = unsafe { CStr::from_ptr(cwd) }.to_bytes().len();
            if path.buf[..path.len].last() != Some(&b'/') {
                if path.len + 1 >= STATS_PATH_MAX {
                    return false;
                }
                path.buf[path.len] = b'/';
                path.len += 1;
            }
        }
    }
    if path.len + v.len() >= STATS_PATH_MAX {
        return false;
    }
    path.buf[path.len..path.len + v.len()].copy_from_slice(v);
    path.len += v.len();
    STATS_FILE.call_once(|| path);
    true
}

// ---------------------------------------------------------------------------
// Reading the environment
// ---------------------------------------------------------------------------

/// Reads every `APEX_*` variable of the environment through [`OPTIONS`],
/// reporting bad values and unknown names on stderr. Called once, at
/// start-up, before the core is initialised; it neither allocates nor
/// calls anything that does.
pub(crate) fn read_environment() {
    let mut seen = 0u32;
    // SAFETY: `environ` is the C library's null-terminated array of
    // NUL-terminated strings; nothing changes it while start-up reads it.
    let mut entry = unsafe { libc::environ };
    if entry.is_null() {
        return;
    }
    loop {
        // SAFETY: `entry` points into the array, at most at its null end.
        let s = unsafe { *entry };
        if s.is_null() {
            break;
        }
        // SAFETY: the array's next slot exists (this one was not the end).
        entry = unsafe { entry.add(1) };
        // SAFETY: environment strings are NUL-terminated.
        let bytes = unsafe { CStr::from_ptr(s) }.to_bytes();
        if !bytes.starts_with(b"APEX_") {
            continue;
        }
        let (name, value) = match bytes.iter().position(|&c| c == b'=') {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (bytes, &[][..]),
        };
        let Some(i) = OPTIONS.iter().position(|o| o.name.as_bytes() == name) else {
            report_unknown(name);
            continue;
        };
        // The C library's getenv takes the first of repeated names; so
        // does this. An empty value counts as unset.
        if seen & (1 << i) != 0 {
            continue;
        }
        seen |= 1 << i;
        if value.is_empty() {
            continue;
        }
        let opt = &OPTIONS[i];
        if !opt.set(value) {
            report_bad_value(opt, value);
        } else if opt.name == "APEX_VERBOSE" && value == b"1" {
            // SAFETY: the value starts right after `name=` in the string.
            let mark = unsafe { s.add(name.len() + 1) };
            VERBOSE_MARK.store(mark, Ordering::Relaxed);
        }
    }
}

fn report_unknown(name: &[u8]) {
    let mut buf = [0u8; 512];
    let mut line = Line::new(&mut buf);
    line.push(b"apexalloc: unknown option ");
    line.push_printable(name);
    write_once(2, line.finish());
}

fn report_bad_value(opt: &Opt, value: &[u8]) {
    let mut buf = [0u8; 512];
    let mut line = Line::new(&mut buf);
    let _ = write!(line, "apexalloc: ignoring {}=", opt.name);
    line.push_printable(&value[..value.len().min(200)]);
    let _ = write!(line, " (expected {}); using {}", opt.expected, opt.default);
    write_once(2, line.finish());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number(b"0"), Some(0));
        assert_eq!(number(b"100"), Some(100));
        assert_eq!(number(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"abc",
            b"1x",
            b" 1",
            b"18446744073709551616",
        ] {
            assert_eq!(number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_are_unique_and_fit_the_seen_mask() {
        assert!(OPTIONS.len() <= 32);
        for (i, a) in OPTIONS.iter().enumerate() {
            assert!(a.name.starts_with("APEX_"));
            assert!(OPTIONS[i + 1..].iter().all(|b| b.name != a.name));
        }
    }

    /// Unset options show their documented default (this test binary ran
    /// start-up with its own environment; options set there are skipped).
    #[test]
    fn defaults_match_the_values_in_effect() {
        for o in OPTIONS.iter().filter(|o| o.listed) {
            let mut name = [0u8; 64];
            name[..o.name.len()].copy_from_slice(o.name.as_bytes());
            // SAFETY: `name` is NUL-terminated.
            if !unsafe { libc::getenv(name.as_ptr().cast()) }.is_null() {
                continue;
            }
            let mut buf = [0u8; 64];
            let mut line = Line::new(&mut buf);
            o.show(&mut line);
            let shown = line.finish();
            let shown = &shown[..shown.len() - 1];
            // A preset is shown with its flags after a colon.
            let value = shown.split(|&c| c == b':').next().unwrap_or(shown);
            assert_eq!(value, o.default.as_bytes(), "{}", o.name);
        }
    }
}
