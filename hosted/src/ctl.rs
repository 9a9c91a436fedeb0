//! Control and statistics by name, in the manner of jemalloc's `mallctl`:
//! `apex_ctl` for C (exported by `libapexalloc.so`, declared in
//! `apexalloc.h`) and [`get`], [`set`] and [`run`] for Rust, plus the
//! typed statistics ([`thread_stats`], [`census`]) and the heap walk
//! ([`heap_walk`]).
//!
//! | name | type | access | meaning |
//! |---|---|---|---|
//! | `version` | `const char *` | read | the library's version |
//! | `epoch` | `uint64_t` | read, write | a counter a write advances (statistics are always computed afresh; accepted for jemalloc compatibility) |
//! | `opt.<option>` | see below | read (some write) | each `APEX_*` option: its name lower-cased without `APEX_` |
//! | `stats.<total>` | `size_t` | read | the totals of [`apex_core::introspect::HeapTotals`]: `allocated`, `active`, `resident`, `mapped`, `retained`, `segments`, `huge_blocks`, `slabs`, `large_blocks`, `blocks_active`, `heaps`, `abandoned_segments`, `peak_active`, `mallocs`, `frees`, `remote_frees`, `bytes_allocated`, `bytes_freed`, `foreign_frees` |
//! | `stats.size_classes.count` | `size_t` | read | the number of size classes |
//! | `stats.size_classes.<n>.size`, `.allocated`, `.active_blocks`, `.slabs` | `size_t` | read | class `n`'s block size, bytes and blocks the program holds, and slabs |
//! | `thread.allocated`, `thread.deallocated` | `uint64_t` | read | bytes the calling thread allocated and freed so far |
//! | `thread.mallocs`, `thread.frees`, `thread.remote_frees` | `uint64_t` | read | its operation counts |
//! | `thread.reset` | none | run | hands the calling thread's cached free memory back: frees other threads sent it, and its empty slabs |
//! | `arena.purge` | none | run | returns free memory to the system now (what `malloc_trim` does) |
//! | `harden.flags` | `unsigned` | read | the mitigations in force, as bits (`APEX_HARDEN_*` in the header) |
//! | `harden.preset` | `const char *` | read | `off`, `default`, `full`, or `custom` |
//!
//! Options (`opt.*`): `show_stats` (`const char *`: `0`, `1` or `json`;
//! writable), `stats_file` (`const char *`), `verbose` (`const char *`),
//! `harden` (`const char *`, as the settings line shows it),
//! `purge_delay_ms` (`uint64_t`, writable), `decommit` (`const char *`:
//! `dontneed` or `free`; writable), `thp` (`bool`, writable),
//! `segment_cache` (`size_t`, writable), `huge_cache_mb` (`size_t`,
//! writable), `background_purge_ms` (`uint64_t`), `strategy`
//! (`const char *`), `mmap_threshold` (`size_t`), `leaks` (`bool`),
//! `leaks_sample` (`uint64_t`). The writable ones are
//! read at each use, so a new value takes effect at once; the others are
//! fixed at start-up (writing them fails with `EPERM`).
//!
//! `apex_ctl(name, oldp, oldlenp, newp, newlen)` returns 0 or an error
//! number, as `mallctl` does:
//! - reading: `*oldlenp` must be the size of the value's type (else
//!   `EINVAL`, nothing copied); `oldp == NULL` with `oldlenp != NULL`
//!   stores that size in `*oldlenp`; `oldp != NULL` with `oldlenp == NULL`
//!   is `EINVAL`;
//! - writing: `newlen` must be the size of the type (else `EINVAL`), and
//!   `newp == NULL` with `newlen != 0` is `EINVAL`; a value that is not
//!   writable gives `EPERM`, a value out of range (an unknown `decommit`
//!   word) `EINVAL`;
//! - an action (`thread.reset`, `arena.purge`) runs when neither `oldp`
//!   nor `newp` is given; either one gives `EPERM`;
//! - an unknown name gives `ENOENT`;
//! - a pointer that is not NULL but cannot be read or written (the name,
//!   `oldp`, `oldlenp`, `newp`, or the string a `const char *` written
//!   value points to) gives `EFAULT`: every access to the caller's memory
//!   goes through the kernel (a pipe), so a bad pointer never crashes the
//!   allocator; `EAGAIN` when no file descriptor is left for that.
//!
//! Every name works from any thread, in a child after `fork` and in exit
//! handlers. Statistics are computed when read (a walk of every segment
//! and a pass over every heap's counters); see
//! [`apex_core::introspect`] for what "exact" means.

use core::ffi::{c_char, c_int, c_void, CStr};
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering};

use apex_core::introspect::{self, Census, ThreadStats, WalkItem};
use apex_core::size_class::NUM_CLASSES;

use crate::options::{self, OPTIONS};
use crate::report::Line;
use crate::thread::own_heap;
use crate::user_mem::Probe;
use crate::{init, leaks, provider, strategy, GLOBAL};

/// A value read or written by name. Strings are C strings (the C side's
/// `const char *`); those read live as long as the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Bool(bool),
    U32(u32),
    U64(u64),
    Size(usize),
    Str(&'a CStr),
}

/// The type of a name's value; `Action` for names that are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    U32,
    U64,
    Size,
    Str,
    Action,
}

impl Kind {
    /// Bytes of the value in C (`bool`, `unsigned`, `uint64_t`, `size_t`,
    /// `const char *`; 0 for an action).
    pub fn size(self) -> usize {
        match self {
            Kind::Bool => 1,
            Kind::U32 => 4,
            Kind::U64 => 8,
            Kind::Size => size_of::<usize>(),
            Kind::Str => size_of::<*const c_char>(),
            Kind::Action => 0,
        }
    }
}

impl Value<'_> {
    /// The value's type.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Bool(_) => Kind::Bool,
            Value::U32(_) => Kind::U32,
            Value::U64(_) => Kind::U64,
            Value::Size(_) => Kind::Size,
            Value::Str(_) => Kind::Str,
        }
    }
}

/// Why a request failed; [`CtlError::errno`] is what `apex_ctl` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlError {
    /// No such name (`ENOENT`).
    NotFound,
    /// A length or value that does not fit the name (`EINVAL`).
    Invalid,
    /// Not writable, or an action given a value (`EPERM`).
    Denied,
    /// A pointer that cannot be read or written (`EFAULT`).
    Fault,
    /// No file descriptor left to check pointers with (`EAGAIN`).
    Again,
}

impl CtlError {
    /// The error number `apex_ctl` returns.
    pub fn errno(self) -> c_int {
        match self {
            CtlError::NotFound => libc::ENOENT,
            CtlError::Invalid => libc::EINVAL,
            CtlError::Denied => libc::EPERM,
            CtlError::Fault => libc::EFAULT,
            CtlError::Again => libc::EAGAIN,
        }
    }
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// One `opt.*` name.
struct OptCtl {
    /// The environment variable it mirrors.
    env: &'static str,
    kind: Kind,
    get: fn() -> Value<'static>,
    /// `None`: fixed at start-up.
    set: Option<fn(Value<'_>) -> Result<(), CtlError>>,
}

fn str_value(v: Value<'_>) -> Result<&[u8], CtlError> {
    match v {
        Value::Str(s) => Ok(s.to_bytes()),
        _ => Err(CtlError::Invalid),
    }
}

static OPTS: [OptCtl; 14] = [
    OptCtl {
        env: "APEX_SHOW_STATS",
        kind: Kind::Str,
        get: || Value::Str(options::show_stats_name()),
        set: Some(|v| {
            options::set_show_stats(str_value(v)?)
                .then_some(())
                .ok_or(CtlError::Invalid)
        }),
    },
    OptCtl {
        env: "APEX_STATS_FILE",
        kind: Kind::Str,
        get: || Value::Str(options::stats_file_cstr().unwrap_or(c"stderr")),
        set: None,
    },
    OptCtl {
        env: "APEX_VERBOSE",
        kind: Kind::Str,
        get: || Value::Str(text_of("APEX_VERBOSE")),
        set: None,
    },
    OptCtl {
        env: "APEX_HARDEN",
        kind: Kind::Str,
        get: || Value::Str(text_of("APEX_HARDEN")),
        set: None,
    },
    OptCtl {
        env: "APEX_PURGE_DELAY_MS",
        kind: Kind::U64,
        get: || Value::U64(GLOBAL.options.purge_delay()),
        set: Some(|v| match v {
            Value::U64(ms) => {
                GLOBAL.options.purge_delay.store(ms, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(CtlError::Invalid),
        }),
    },
    OptCtl {
        env: "APEX_DECOMMIT",
        kind: Kind::Str,
        get: || {
            Value::Str(if provider::DECOMMIT_WITH_FREE.load(Ordering::Relaxed) {
                c"free"
            } else {
                c"dontneed"
            })
        },
        set: Some(|v| {
            let free = match str_value(v)? {
                b"dontneed" => false,
                b"free" => true,
                _ => return Err(CtlError::Invalid),
            };
            provider::set_decommit_with_free(free);
            Ok(())
        }),
    },
    OptCtl {
        env: "APEX_THP",
        kind: Kind::Bool,
        get: || Value::Bool(provider::HUGE_PAGES.load(Ordering::Relaxed)),
        set: Some(|v| match v {
            Value::Bool(on) => {
                provider::HUGE_PAGES.store(on, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(CtlError::Invalid),
        }),
    },
    OptCtl {
        env: "APEX_SEGMENT_CACHE",
        kind: Kind::Size,
        get: || Value::Size(GLOBAL.options.segment_cache.load(Ordering::Relaxed)),
        set: Some(|v| match v {
            Value::Size(n) => {
                GLOBAL.options.segment_cache.store(n, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(CtlError::Invalid),
        }),
    },
    OptCtl {
        env: "APEX_HUGE_CACHE_MB",
        kind: Kind::Size,
        get: || Value::Size(GLOBAL.options.huge_cache_bytes.load(Ordering::Relaxed) >> 20),
        set: Some(|v| match v {
            Value::Size(mb) => {
                let bytes = mb.saturating_mul(1 << 20);
                GLOBAL
                    .options
                    .huge_cache_bytes
                    .store(bytes, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(CtlError::Invalid),
        }),
    },
    OptCtl {
        env: "APEX_BACKGROUND_PURGE_MS",
        kind: Kind::U64,
        get: || Value::U64(init::BACKGROUND_PURGE_MS.load(Ordering::Relaxed)),
        set: None,
    },
    OptCtl {
        env: "APEX_STRATEGY",
        kind: Kind::Str,
        get: || Value::Str(text_of("APEX_STRATEGY")),
        set: None,
    },
    OptCtl {
        env: "APEX_MMAP_THRESHOLD",
        kind: Kind::Size,
        get: || Value::Size(strategy::MMAP_THRESHOLD.load(Ordering::Relaxed)),
        set: None,
    },
    OptCtl {
        env: "APEX_LEAKS",
        kind: Kind::Bool,
        get: || Value::Bool(leaks::enabled()),
        set: None,
    },
    OptCtl {
        env: "APEX_LEAKS_SAMPLE",
        kind: Kind::U64,
        get: || Value::U64(leaks::sample_mean()),
        set: None,
    },
];

/// Longest option text kept for `opt.*` strings shown as the settings
/// line shows them.
const OPT_TEXT: usize = 256;

/// The options fixed at start-up whose value is text made at run time.
const TEXT_OPTS: [&str; 3] = ["APEX_VERBOSE", "APEX_HARDEN", "APEX_STRATEGY"];

/// The text of an option of [`TEXT_OPTS`], as the settings line shows it,
/// made once into a static buffer (the value cannot change afterwards).
fn text_of(env: &str) -> &'static CStr {
    static TEXTS: [spin::Once<[u8; OPT_TEXT]>; TEXT_OPTS.len()] =
        [const { spin::Once::new() }; TEXT_OPTS.len()];
    let (Some(slot), Some(o)) = (
        TEXT_OPTS.iter().position(|n| *n == env),
        OPTIONS.iter().find(|o| o.name == env),
    ) else {
        return c"";
    };
    let buf = TEXTS[slot].call_once(|| {
        let mut b = [0u8; OPT_TEXT];
        let mut line = Line::new(&mut b[..OPT_TEXT - 1]);
        o.show(&mut line);
        let n = line.finish().len() - 1; // without the newline
        b[n] = 0;
        b
    });
    CStr::from_bytes_until_nul(buf).unwrap_or(c"")
}

/// The `opt.*` name of an `APEX_*` variable: lower-cased, without the
/// prefix, in `buf`.
fn opt_name<'b>(env: &str, buf: &'b mut [u8; 64]) -> &'b str {
    let rest = env.strip_prefix("APEX_").unwrap_or(env).as_bytes();
    buf[..4].copy_from_slice(b"opt.");
    let n = rest.len().min(60);
    for (i, &c) in rest[..n].iter().enumerate() {
        buf[4 + i] = c.to_ascii_lowercase();
    }
    core::str::from_utf8(&buf[..4 + n]).unwrap_or("")
}

/// A name's last part, whether its value needs a walk of every segment
/// (the others come from counters alone, much cheaper), and how to read
/// it from `T`.
type Field<T> = (&'static str, bool, fn(&T) -> u64);

/// The totals readable as `stats.<name>`.
static TOTALS: [Field<Census>; 19] = [
    ("allocated", false, |c| c.totals.allocated),
    ("active", true, |c| c.totals.active),
    ("resident", true, |c| c.totals.resident),
    ("mapped", false, |c| c.totals.mapped),
    ("retained", false, |c| c.totals.retained),
    ("segments", true, |c| c.totals.segments),
    ("huge_blocks", true, |c| c.totals.huge_blocks),
    ("slabs", true, |c| c.totals.slabs),
    ("large_blocks", true, |c| c.totals.large_blocks),
    ("blocks_active", false, |c| c.totals.blocks_active),
    ("heaps", false, |c| c.totals.heaps),
    ("abandoned_segments", true, |c| c.totals.abandoned_segments),
    ("peak_active", false, |c| c.totals.peak_active),
    ("mallocs", false, |c| c.totals.ops.mallocs),
    ("frees", false, |c| c.totals.ops.frees),
    ("remote_frees", false, |c| c.totals.ops.remote_frees),
    ("bytes_allocated", false, |c| c.totals.ops.bytes_allocated),
    ("bytes_freed", false, |c| c.totals.ops.bytes_freed),
    ("foreign_frees", false, |c| c.totals.foreign_frees),
];

/// The fields of `stats.size_classes.<n>.<field>`.
static CLASS_FIELDS: [Field<introspect::ClassStats>; 4] = [
    ("size", false, |k| k.size as u64),
    ("allocated", false, |k| k.allocated),
    ("active_blocks", false, |k| k.active_blocks),
    ("slabs", true, |k| k.slabs),
];

/// The fields of `thread.<field>`.
static THREAD_FIELDS: [Field<ThreadStats>; 5] = [
    ("allocated", false, |t| t.bytes_allocated),
    ("deallocated", false, |t| t.bytes_freed),
    ("mallocs", false, |t| t.mallocs),
    ("frees", false, |t| t.frees),
    ("remote_frees", false, |t| t.remote_frees),
];

/// A parsed name.
#[derive(Clone, Copy)]
enum Name {
    Version,
    Epoch,
    Opt(usize),
    Total(usize),
    ClassCount,
    Class(usize, usize),
    Thread(usize),
    ThreadReset,
    ArenaPurge,
    HardenFlags,
    HardenPreset,
}

fn parse(name: &str) -> Option<Name> {
    Some(match name {
        "version" => Name::Version,
        "epoch" => Name::Epoch,
        "thread.reset" => Name::ThreadReset,
        "arena.purge" => Name::ArenaPurge,
        "harden.flags" => Name::HardenFlags,
        "harden.preset" => Name::HardenPreset,
        "stats.size_classes.count" => Name::ClassCount,
        _ => {
            if let Some(rest) = name.strip_prefix("stats.size_classes.") {
                let (n, field) = rest.split_once('.')?;
                // Plain decimal, no sign or leading zeros.
                if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
                    return None;
                }
                let n: usize = n.bytes().try_fold(0usize, |a, c| {
                    c.is_ascii_digit()
                        .then(|| a.checked_mul(10)?.checked_add((c - b'0') as usize))
                        .flatten()
                })?;
                if n >= NUM_CLASSES {
                    return None;
                }
                let f = CLASS_FIELDS.iter().position(|(f, ..)| *f == field)?;
                Name::Class(n, f)
            } else if let Some(rest) = name.strip_prefix("stats.") {
                Name::Total(TOTALS.iter().position(|(t, ..)| *t == rest)?)
            } else if let Some(rest) = name.strip_prefix("thread.") {
                Name::Thread(THREAD_FIELDS.iter().position(|(t, ..)| *t == rest)?)
            } else if name.starts_with("opt.") {
                let mut buf = [0u8; 64];
                Name::Opt(
                    OPTS.iter()
                        .position(|o| opt_name(o.env, &mut buf) == name)?,
                )
            } else {
                return None;
            }
        }
    })
}

impl Name {
    fn kind(self) -> Kind {
        match self {
            Name::Version | Name::HardenPreset => Kind::Str,
            Name::Epoch | Name::Thread(_) => Kind::U64,
            Name::Opt(i) => OPTS[i].kind,
            Name::Total(_) | Name::ClassCount | Name::Class(..) => Kind::Size,
            Name::ThreadReset | Name::ArenaPurge => Kind::Action,
            Name::HardenFlags => Kind::U32,
        }
    }

    fn writable(self) -> bool {
        match self {
            Name::Epoch => true,
            Name::Opt(i) => OPTS[i].set.is_some(),
            _ => false,
        }
    }

    fn read(self) -> Value<'static> {
        match self {
            Name::Version => Value::Str(VERSION),
            Name::Epoch => Value::U64(EPOCH.load(Ordering::Relaxed)),
            Name::Opt(i) => (OPTS[i].get)(),
            Name::Total(i) => {
                let (_, walk, get) = TOTALS[i];
                Value::Size(get(&census_of(walk)) as usize)
            }
            Name::ClassCount => Value::Size(NUM_CLASSES),
            Name::Class(n, f) => {
                let (_, walk, get) = CLASS_FIELDS[f];
                Value::Size(get(&census_of(walk).classes[n]) as usize)
            }
            Name::Thread(f) => Value::U64((THREAD_FIELDS[f].2)(&thread_stats())),
            Name::HardenFlags => Value::U32(GLOBAL.mitigations().bits()),
            Name::HardenPreset => Value::Str(match GLOBAL.mitigations().preset_name() {
                Some("off") => c"off",
                Some("default") => c"default",
                Some("full") => c"full",
                _ => c"custom",
            }),
            // Actions have no value; never called for them.
            Name::ThreadReset | Name::ArenaPurge => Value::Size(0),
        }
    }

    fn write(self, v: Value<'_>) -> Result<(), CtlError> {
        if v.kind() != self.kind() {
            return Err(CtlError::Invalid);
        }
        match self {
            Name::Epoch => {
                EPOCH.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Name::Opt(i) => OPTS[i].set.ok_or(CtlError::Denied)?(v),
            _ => Err(CtlError::Denied),
        }
    }

    fn run(self) {
        match self {
            Name::ThreadReset => {
                if let Some(h) = own_heap() {
                    h.release_empty_slabs();
                }
            }
            Name::ArenaPurge => {
                crate::trim();
            }
            _ => {}
        }
    }
}

/// The library's version, `CARGO_PKG_VERSION`.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => c"?",
    };

static EPOCH: AtomicU64 = AtomicU64::new(1);

fn lookup(name: &str) -> Result<Name, CtlError> {
    init::ensure_global();
    parse(name).ok_or(CtlError::NotFound)
}

// ---------------------------------------------------------------------------
// The Rust API
// ---------------------------------------------------------------------------

/// The type of `name`'s value.
pub fn kind(name: &str) -> Result<Kind, CtlError> {
    Ok(lookup(name)?.kind())
}

/// Reads `name` (an action gives [`CtlError::Denied`]).
pub fn get(name: &str) -> Result<Value<'static>, CtlError> {
    let n = lookup(name)?;
    if n.kind() == Kind::Action {
        return Err(CtlError::Denied);
    }
    Ok(n.read())
}

/// Writes `name`: [`CtlError::Denied`] when it is not writable,
/// [`CtlError::Invalid`] for a value of the wrong type or range.
pub fn set(name: &str, value: Value<'_>) -> Result<(), CtlError> {
    let n = lookup(name)?;
    if !n.writable() {
        return Err(CtlError::Denied);
    }
    n.write(value)
}

/// Runs the action `name` (`thread.reset`, `arena.purge`).
pub fn run(name: &str) -> Result<(), CtlError> {
    let n = lookup(name)?;
    if n.kind() != Kind::Action {
        return Err(CtlError::Denied);
    }
    n.run();
    Ok(())
}

/// Calls `f` with every name, in the order of the table above.
pub fn for_each_name(f: &mut dyn FnMut(&str)) {
    for n in ["version", "epoch"] {
        f(n);
    }
    for o in &OPTS {
        let mut buf = [0u8; 64];
        f(opt_name(o.env, &mut buf));
    }
    let mut buf = [0u8; 96];
    for (t, ..) in &TOTALS {
        let mut line = Line::new(&mut buf);
        let _ = write!(line, "stats.{t}");
        f(line_str(&mut line));
    }
    f("stats.size_classes.count");
    for c in 0..NUM_CLASSES {
        for (field, ..) in &CLASS_FIELDS {
            let mut line = Line::new(&mut buf);
            let _ = write!(line, "stats.size_classes.{c}.{field}");
            f(line_str(&mut line));
        }
    }
    for (t, ..) in &THREAD_FIELDS {
        let mut line = Line::new(&mut buf);
        let _ = write!(line, "thread.{t}");
        f(line_str(&mut line));
    }
    for n in [
        "thread.reset",
        "arena.purge",
        "harden.flags",
        "harden.preset",
    ] {
        f(n);
    }
}

fn line_str<'a>(line: &'a mut Line<'_>) -> &'a str {
    let b = line.finish();
    core::str::from_utf8(&b[..b.len() - 1]).unwrap_or("")
}

/// The calling thread's operation counts (zero for a thread that has not
/// allocated yet, or whose heap is gone).
pub fn thread_stats() -> ThreadStats {
    init::ensure_global();
    own_heap().map_or_else(ThreadStats::default, |h| ThreadStats::of_own(h))
}

/// The totals and every size class (see [`apex_core::introspect`]). With
/// a classic `APEX_STRATEGY`, the byte and operation totals are the
/// engine's own counters; the walk, the classes and the segments describe
/// the default engine's heap, which that engine leaves unused.
pub fn census() -> Census {
    census_of(true)
}

/// A census, with the walk's figures only when `walk` (else zero).
fn census_of(walk: bool) -> Census {
    init::ensure_global();
    let mut c = introspect::census_counters(&GLOBAL);
    if walk {
        c.add_walk(&GLOBAL);
    }
    if strategy::classic() {
        let s = strategy::stats();
        let t = &mut c.totals;
        t.allocated = s.allocated;
        t.active = s.active as u64;
        t.mapped = s.reserved as u64;
        t.peak_active = s.active_peak as u64;
        t.ops.mallocs = s.mallocs;
        t.ops.frees = s.frees;
    }
    c
}

/// Calls `f` for every segment and span (see [`apex_core::Global::walk`]);
/// `f` runs without any lock held and may allocate.
pub fn heap_walk(mut f: impl FnMut(&WalkItem)) {
    init::ensure_global();
    GLOBAL.walk(&mut f);
}

/// A live thread's heap and counts, for [`for_each_thread`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The thread's kernel id (`gettid`); 0 for the shared heap (used by
    /// threads that exited or could not get a heap of their own) and for
    /// heaps whose thread is unknown.
    pub tid: u32,
    /// The heap's address (the `owner` of its segments in a walk).
    pub heap: usize,
    pub stats: ThreadStats,
}

/// Calls `f` for every live heap. Threads that exited are not listed:
/// their counts are in the totals, and their segments, if they left live
/// blocks, are walked as abandoned (owner 0) until another thread adopts
/// them.
pub fn for_each_thread(mut f: impl FnMut(&ThreadInfo)) {
    init::ensure_global();
    introspect::for_each_heap(&GLOBAL, &mut |heap, stats| {
        f(&ThreadInfo {
            tid: crate::thread_ids::tid_of(heap),
            heap,
            stats: *stats,
        })
    });
}

// ---------------------------------------------------------------------------
// The C ABI
// ---------------------------------------------------------------------------

/// `apex_ctl` (see the module documentation).
///
/// # Safety
/// None beyond C's: every pointer may be NULL or bad; bad ones give
/// `EFAULT`.
pub unsafe fn apex_ctl(
    name: *const c_char,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *const c_void,
    newlen: usize,
) -> c_int {
    match ctl_c(name, oldp, oldlenp, newp, newlen) {
        Ok(()) => 0,
        Err(e) => e.errno(),
    }
}

fn ctl_c(
    name: *const c_char,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *const c_void,
    newlen: usize,
) -> Result<(), CtlError> {
    if name.is_null() {
        return Err(CtlError::Invalid);
    }
    let probe = Probe::new().map_err(|_| CtlError::Again)?;
    let fault = |e: c_int| {
        if e == libc::ENAMETOOLONG {
            CtlError::NotFound
        } else {
            CtlError::Fault
        }
    };
    let mut buf = [0u8; 128];
    let len = probe.read_cstr(name.cast(), &mut buf).map_err(fault)?;
    let text = core::str::from_utf8(&buf[..len]).map_err(|_| CtlError::NotFound)?;
    let n = lookup(text)?;
    let kind = n.kind();
    let size = kind.size();

    // Check every argument before anything changes.
    let want_old = !oldp.is_null();
    if want_old && oldlenp.is_null() {
        return Err(CtlError::Invalid);
    }
    if !newp.is_null() && newlen != size {
        return Err(if kind == Kind::Action || !n.writable() {
            CtlError::Denied
        } else {
            CtlError::Invalid
        });
    }
    if newp.is_null() && newlen != 0 {
        return Err(CtlError::Invalid);
    }
    if kind == Kind::Action && (want_old || !newp.is_null()) {
        return Err(CtlError::Denied);
    }
    if !newp.is_null() && !n.writable() {
        return Err(CtlError::Denied);
    }
    if !oldlenp.is_null() {
        let have = probe.read_usize(oldlenp).map_err(fault)?;
        if !want_old {
            probe.write_usize(oldlenp, size).map_err(fault)?;
        } else if have != size {
            return Err(CtlError::Invalid);
        }
    }
    // A new value is read whole before anything is written.
    let mut text_in = [0u8; 64];
    let new = if newp.is_null() {
        None
    } else {
        let mut raw = [0u8; 8];
        probe
            .copy_in(newp.cast(), &mut raw[..size])
            .map_err(fault)?;
        Some(match kind {
            Kind::Bool => Value::Bool(raw[0] != 0),
            Kind::U32 => Value::U32(u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]])),
            Kind::U64 => Value::U64(u64::from_ne_bytes(raw)),
            Kind::Size => Value::Size(usize::from_ne_bytes(raw)),
            Kind::Str => {
                let p = usize::from_ne_bytes(raw) as *const u8;
                let l = probe.read_cstr(p, &mut text_in[..63]).map_err(|e| {
                    if e == libc::ENAMETOOLONG {
                        CtlError::Invalid
                    } else {
                        CtlError::Fault
                    }
                })?;
                text_in[l] = 0;
                Value::Str(CStr::from_bytes_until_nul(&text_in).map_err(|_| CtlError::Invalid)?)
            }
            // Refused above: actions take no value.
            Kind::Action => return Err(CtlError::Denied),
        })
    };
    if kind == Kind::Action {
        n.run();
        return Ok(());
    }
    // `epoch` is advanced first and read after, as jemalloc does.
    if let (Name::Epoch, Some(v)) = (n, new) {
        n.write(v)?;
    }
    if want_old {
        let mut out = [0u8; 8];
        match n.read() {
            Value::Bool(b) => out[0] = b as u8,
            Value::U32(x) => out[..4].copy_from_slice(&x.to_ne_bytes()),
            Value::U64(x) => out.copy_from_slice(&x.to_ne_bytes()),
            Value::Size(x) => out.copy_from_slice(&x.to_ne_bytes()),
            Value::Str(s) => out.copy_from_slice(&(s.as_ptr() as usize).to_ne_bytes()),
        }
        probe.copy_out(&out[..size], oldp.cast()).map_err(fault)?;
    }
    match (n, new) {
        (Name::Epoch, _) | (_, None) => Ok(()),
        (_, Some(v)) => n.write(v),
    }
}

/// The C `apex_thread_stats_t` (see `apexalloc.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CThreadStats {
    pub malloc_count: u64,
    pub free_count: u64,
    pub bytes_allocated: u64,
    pub bytes_freed: u64,
    pub remote_frees: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// The C `apex_global_stats_t` (see `apexalloc.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CGlobalStats {
    pub superblocks_allocated: u64,
    pub superblocks_active: u64,
    pub blocks_allocated: u64,
    pub blocks_active: u64,
    pub total_allocated_bytes: u64,
    pub total_freed_bytes: u64,
    pub peak_allocated_bytes: u64,
    pub fragmentation_percent: u64,
}

/// Copies `v` to the caller's `out` through the kernel; nothing is written
/// (and nothing crashes) when `out` is NULL or not writable.
fn copy_struct_out<T: Copy>(v: &T, out: *mut T) {
    if out.is_null() {
        return;
    }
    // SAFETY: `T` is a plain `repr(C)` struct of integers: its bytes are
    // initialised.
    let bytes = unsafe { core::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) };
    if let Ok(p) = Probe::new() {
        let _ = p.copy_out(bytes, out.cast());
    }
}

/// `apex_thread_stats`: the calling thread's counts into `*out`.
pub fn apex_thread_stats(out: *mut CThreadStats) {
    let t = thread_stats();
    let c = CThreadStats {
        malloc_count: t.mallocs,
        free_count: t.frees,
        bytes_allocated: t.bytes_allocated,
        bytes_freed: t.bytes_freed,
        remote_frees: t.remote_frees,
        cache_hits: t.cache_hits,
        cache_misses: t.cache_misses,
    };
    copy_struct_out(&c, out);
}

/// `apex_global_stats`: the totals into `*out`.
pub fn apex_global_stats(out: *mut CGlobalStats) {
    let t = census().totals;
    let c = CGlobalStats {
        superblocks_allocated: t.segments_total + t.huge_total,
        superblocks_active: t.segments + t.huge_blocks,
        blocks_allocated: t.ops.mallocs,
        blocks_active: t.blocks_active,
        total_allocated_bytes: t.ops.bytes_allocated,
        total_freed_bytes: t.ops.bytes_freed,
        peak_allocated_bytes: t.peak_active,
        fragmentation_percent: (t.fragmentation_pct() + 0.5) as u64,
    };
    copy_struct_out(&c, out);
}

/// The C heap visitor (see `apexalloc.h`).
pub type CVisitor = unsafe extern "C" fn(
    block_addr: *mut c_void,
    block_size: usize,
    size_class: usize,
    used_chunks: usize,
    total_chunks: usize,
    userdata: *mut c_void,
);

/// `size_class` values of walk items that are not slabs.
pub const WALK_SEGMENT: usize = usize::MAX;
pub const WALK_FREE: usize = usize::MAX - 1;
pub const WALK_LARGE: usize = usize::MAX - 2;
pub const WALK_HUGE: usize = usize::MAX - 3;

/// `apex_heap_walk`: `visitor` for every segment and span.
///
/// # Safety
/// `visitor` is NULL or a function of the visitor type; it is called with
/// `userdata` as given.
pub unsafe fn apex_heap_walk(visitor: Option<CVisitor>, userdata: *mut c_void) {
    let Some(visit) = visitor else { return };
    heap_walk(|item| {
        let (addr, size, class, used, total) = match *item {
            WalkItem::Segment(s) => (s.base, s.size, WALK_SEGMENT, s.used_bytes, s.size),
            WalkItem::Span(s) => {
                let class = match s.kind {
                    introspect::SpanUse::Slab => s.class,
                    introspect::SpanUse::Free => WALK_FREE,
                    introspect::SpanUse::Large => WALK_LARGE,
                    introspect::SpanUse::Huge => WALK_HUGE,
                };
                (s.addr, s.len, class, s.used, s.blocks)
            }
        };
        // SAFETY: the caller's contract.
        unsafe { visit(addr as *mut c_void, size, class, used, total, userdata) };
    });
}
