//! Reports without allocating: fatal errors ([`write_stderr`]), option
//! warnings, the `APEX_VERBOSE` settings line and the statistics line
//! (with `APEX_SHOW_STATS=json`, the exit report is the document of
//! [`mod@crate::stats_json`] instead, sent to the same place).
//!
//! A report is formatted into a fixed buffer on the stack ([`Line`]) and
//! goes out in one `write`, so lines of processes sharing a pipe or a file
//! do not interleave.
//!
//! Many programs (`ls`, `cat`, `sort`, ...) close stderr before they exit,
//! which would swallow the statistics printed at exit. So when
//! `APEX_SHOW_STATS=1` asks for them, start-up duplicates stderr to a
//! private close-on-exec descriptor (numbered 200 or above when the limit
//! allows) and the exit report goes there; if that descriptor was closed
//! or now names another file, the report falls back to descriptor 2. With
//! `APEX_STATS_FILE` the report is appended to that file instead.

use core::ffi::{c_char, c_int, CStr};
use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::options;

/// Writes `s` to file descriptor 2, retrying short writes.
pub fn write_stderr(s: &str) {
    let mut b = s.as_bytes();
    while !b.is_empty() {
        // SAFETY: the buffer is valid for `b.len()` bytes.
        let n = unsafe { libc::write(2, b.as_ptr() as *const libc::c_void, b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

/// A `fmt::Write` sink that goes straight to stderr.
pub struct Stderr;

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_stderr(s);
        Ok(())
    }
}

/// One line of text in a caller's fixed buffer. Text beyond the buffer is
/// cut off; the last byte is kept for the final newline.
pub struct Line<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Line<'a> {
    /// An empty line in `buf` (at least one byte).
    pub fn new(buf: &'a mut [u8]) -> Self {
        Line { buf, len: 0 }
    }

    /// Appends `bytes` as they are, as far as they fit.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len().saturating_sub(1 + self.len);
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// Appends `bytes` from outside (a name, a value, a path) with control
    /// characters replaced by `?`, so they cannot break the line.
    pub fn push_printable(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let c = if b < 0x20 || b == 0x7f { b'?' } else { b };
            self.push(&[c]);
        }
    }

    /// Appends `apexalloc[<program>:<pid>]: `.
    pub fn push_prefix(&mut self) {
        self.push(b"apexalloc[");
        self.push_printable(program_name());
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let _ = write!(self, ":{pid}]: ");
    }

    /// The line with its final newline.
    pub fn finish(&mut self) -> &[u8] {
        if self.len == 0 || self.buf[self.len - 1] != b'\n' {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
        &self.buf[..self.len]
    }
}

impl fmt::Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

extern "C" {
    /// The C library's base name of `argv[0]`, set before any constructor
    /// runs (glibc and musl).
    #[allow(non_upper_case_globals)]
    static program_invocation_short_name: *const c_char;
}

/// The program's name (the base name of `argv[0]`), at most 64 bytes.
pub(crate) fn program_name() -> &'static [u8] {
    // SAFETY: the C library sets the variable before constructors run and
    // programs do not change it; it is null or a NUL-terminated string
    // that lives as long as the process.
    let name = unsafe {
        let p = program_invocation_short_name;
        if p.is_null() {
            return b"?";
        }
        CStr::from_ptr(p).to_bytes()
    };
    &name[..name.len().min(64)]
}

/// Writes `bytes` to `fd` in one `write` call (repeated only when a signal
/// interrupted it before anything was written). Returns whether all of it
/// was written.
pub fn write_once(fd: c_int, bytes: &[u8]) -> bool {
    loop {
        // SAFETY: the buffer is valid for `bytes.len()` bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            return n as usize == bytes.len();
        }
        // SAFETY: the calling thread's errno location is always valid.
        if unsafe { *libc::__errno_location() } != libc::EINTR {
            return false;
        }
    }
}

// ---------------------------------------------------------------------------
// Where the exit statistics go
// ---------------------------------------------------------------------------

/// The private duplicate of the start-up stderr (-1: none).
static STATS_FD: AtomicI32 = AtomicI32::new(-1);
/// Device and inode of the file it names, to notice when the program
/// closed it and the number now names something else.
static STATS_DEV: AtomicU64 = AtomicU64::new(0);
static STATS_INO: AtomicU64 = AtomicU64::new(0);

/// Lowest numbers tried for the private descriptor, in order (a number at
/// or above the descriptor limit fails with `EINVAL`).
const PRIVATE_FD_MIN: [c_int; 3] = [200, 100, 10];

/// Device and inode of what `fd` names, if it is open.
fn identity(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid out-parameter; a closed `fd` only fails.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Duplicates stderr to a private close-on-exec descriptor for the exit
/// statistics (unless they go to `APEX_STATS_FILE`). Called once, at
/// start-up.
pub(crate) fn keep_stderr() {
    if options::stats_file().is_some() {
        return;
    }
    for min in PRIVATE_FD_MIN {
        // SAFETY: fcntl on a descriptor number; failure is reported.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, min) };
        if fd >= 0 {
            if let Some((dev, ino)) = identity(fd) {
                STATS_DEV.store(dev, Ordering::Relaxed);
                STATS_INO.store(ino, Ordering::Relaxed);
                STATS_FD.store(fd, Ordering::Relaxed);
            }
            return;
        }
        // SAFETY: the calling thread's errno location is always valid.
        if unsafe { *libc::__errno_location() } != libc::EINVAL {
            return; // stderr is closed, or no descriptor is left
        }
    }
}

/// The descriptor for the exit report: the private duplicate while it
/// still names the start-up stderr, else 2.
pub(crate) fn exit_report_fd() -> c_int {
    let fd = STATS_FD.load(Ordering::Relaxed);
    let kept = (
        STATS_DEV.load(Ordering::Relaxed),
        STATS_INO.load(Ordering::Relaxed),
    );
    if fd >= 0 && identity(fd) == Some(kept) {
        fd
    } else {
        2
    }
}

/// Room for a path with its `%p`s replaced and the final NUL.
const PATH_ROOM: usize = options::STATS_PATH_MAX + 64;

/// Appends `line` to the file named by `template` (`%p` replaced by the
/// process id) in one `write`. Returns whether it was written.
fn append_to_file(template: &[u8], line: &[u8]) -> bool {
    let Some(fd) = open_stats_file(template) else {
        return false;
    };
    let ok = write_once(fd, line);
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    ok
}

/// Opens the file named by `template` (`%p` replaced by the process id)
/// for appending, creating it if needed.
pub(crate) fn open_stats_file(template: &[u8]) -> Option<c_int> {
    let mut buf = [0u8; PATH_ROOM];
    let mut path = Line::new(&mut buf);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut rest = template;
    while let Some(i) = rest.windows(2).position(|w| w == b"%p") {
        path.push(&rest[..i]);
        let _ = write!(path, "{pid}");
        rest = &rest[i + 2..];
    }
    path.push(rest);
    if path.len + 1 >= PATH_ROOM {
        return None; // cut off
    }
    let len = path.len;
    buf[len] = 0;
    // SAFETY: `buf` holds a NUL-terminated path; open copies it.
    let fd = unsafe {
        libc::open(
            buf.as_ptr().cast(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    (fd >= 0).then_some(fd)
}

// ---------------------------------------------------------------------------
// The statistics line
// ---------------------------------------------------------------------------

/// Formats `apexalloc[<program>:<pid>]: <counters>` into `line`.
fn stats_line(line: &mut Line<'_>) {
    let s = crate::stats();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    line.push_prefix();
    let _ = write!(
        line,
        "{} allocations, {} frees ({} from other threads), {:.1} MiB in use, \
         peak {:.1} MiB in spans, {} segments (peak {}), {:.1} MiB reserved, mode {}",
        s.mallocs,
        s.frees,
        s.remote_frees,
        mib(s.allocated),
        mib(s.active_peak as u64),
        s.segments,
        s.segments_peak,
        mib(s.reserved as u64),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}

/// Writes the statistics line to stderr in one `write` (for
/// `malloc_stats` and `apex_stats_print`).
pub fn print_stats() {
    let mut buf = [0u8; 512];
    let mut line = Line::new(&mut buf);
    stats_line(&mut line);
    write_once(2, line.finish());
}

/// Prints statistics at exit when `APEX_SHOW_STATS` is set, then the leak
/// report when `APEX_LEAKS` is.
#[used]
#[link_section = ".fini_array"]
static STATS_AT_EXIT: extern "C" fn() = reports_at_exit;

extern "C" fn reports_at_exit() {
    stats_at_exit();
    crate::leaks::report_at_exit();
}

fn stats_at_exit() {
    if !options::SHOW_STATS.load(Ordering::Relaxed) {
        return;
    }
    if options::STATS_JSON.load(Ordering::Relaxed) {
        crate::stats_json::write_at_exit();
        return;
    }
    let mut buf = [0u8; 512];
    let mut line = Line::new(&mut buf);
    stats_line(&mut line);
    let bytes = line.finish();
    if let Some(template) = options::stats_file() {
        if append_to_file(template, bytes) {
            return;
        }
    }
    write_once(exit_report_fd(), bytes);
}
