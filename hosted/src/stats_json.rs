//! The statistics as one JSON document (`APEX_SHOW_STATS=json`; the schema
//! is in `docs/stats-json.md`): totals, every size class, the live threads,
//! and every segment with its spans.
//!
//! Written without allocating through the allocator: the document is
//! formatted into a private anonymous mapping (reserved, not committed, so
//! only the pages written become resident) and goes out in one `write`,
//! so documents of processes sharing a file do not interleave. A document
//! larger than the mapping is written in pieces; without a mapping, in
//! pieces through a buffer on the stack.

use core::ffi::c_int;
use core::fmt::{self, Write as _};

use apex_core::introspect::WalkItem;

use crate::ctl::{census, for_each_thread, heap_walk};
use crate::report;
use crate::{thread_ids, GLOBAL};

/// Bytes of the mapping the document is formatted into.
const MAP_BYTES: usize = 64 << 20;

/// Where the document goes: a buffer that is handed to `sink` whenever
/// it fills, and at the end.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    sink: &'a mut dyn FnMut(&[u8]),
}

impl Out<'_> {
    fn bytes(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = b.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// A JSON string: quotes, backslashes and control characters escaped;
    /// bytes outside ASCII (a program name need not be UTF-8) become `?`.
    fn string(&mut self, s: &[u8]) {
        self.bytes(b"\"");
        for &c in s {
            match c {
                b'"' => self.bytes(b"\\\""),
                b'\\' => self.bytes(b"\\\\"),
                0..=0x1f => {
                    let _ = write!(self, "\\u{:04x}", c);
                }
                0x80.. => self.bytes(b"?"),
                _ => self.bytes(&[c]),
            }
        }
        self.bytes(b"\"");
    }
}

impl fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// Writes the document, in pieces, to `sink`, formatting it in `buf`.
fn document(buf: &mut [u8], sink: &mut dyn FnMut(&[u8])) {
    let mut o = Out { buf, len: 0, sink };
    let c = census();
    let t = &c.totals;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = write!(
        o,
        "{{\"apexalloc\": \"{}\", \"pid\": {pid}, \"program\": ",
        env!("CARGO_PKG_VERSION")
    );
    o.string(report::program_name());
    let m = GLOBAL.mitigations();
    let _ = write!(
        o,
        ", \"preset\": \"{}\", \"harden\": [",
        m.preset_name().unwrap_or("custom")
    );
    // The flag names, from their text form (`none` when empty).
    let mut names = [0u8; 160];
    let mut line = report::Line::new(&mut names);
    let _ = m.describe(&mut line);
    let text = line.finish();
    let text = &text[..text.len() - 1];
    if text != b"none" {
        for (i, name) in text.split(|&c| c == b',').enumerate() {
            if i > 0 {
                o.bytes(b", ");
            }
            o.string(name);
        }
    }
    let _ = write!(
        o,
        "],\n\"totals\": {{\"allocated\": {}, \"active\": {}, \"resident\": {}, \"mapped\": {}, \
         \"retained\": {}, \"segments\": {}, \"mallocs\": {}, \"frees\": {}, \"remote_frees\": {}, \
         \"peak_active\": {}, \"fragmentation_pct\": {:.1}}},\n\"classes\": [",
        t.allocated,
        t.active,
        t.resident,
        t.mapped,
        t.retained,
        t.segments,
        t.ops.mallocs,
        t.ops.frees,
        t.ops.remote_frees,
        t.peak_active,
        t.fragmentation_pct(),
    );
    for (i, k) in c.classes.iter().enumerate() {
        let _ = write!(
            o,
            "{}\n {{\"class\": {}, \"size\": {}, \"allocated\": {}, \"active_blocks\": {}, \"slabs\": {}}}",
            if i > 0 { "," } else { "" },
            k.class,
            k.size,
            k.allocated,
            k.active_blocks,
            k.slabs,
        );
    }
    o.bytes(b"],\n\"threads\": [");
    let mut first = true;
    for_each_thread(|th| {
        let _ = write!(
            o,
            "{}\n {{\"tid\": {}, \"allocated\": {}, \"deallocated\": {}, \"mallocs\": {}, \"frees\": {}}}",
            if first { "" } else { "," },
            th.tid,
            th.stats.bytes_allocated,
            th.stats.bytes_freed,
            th.stats.mallocs,
            th.stats.frees,
        );
        first = false;
    });
    o.bytes(b"],\n\"segments\": [");
    let mut segments = 0usize;
    let mut spans = 0usize;
    heap_walk(|item| match item {
        WalkItem::Segment(s) => {
            let _ = write!(
                o,
                "{}\n {{\"base\": \"{:#x}\", \"size\": {}, \"kind\": \"{}\", \"owner\": {}, \"spans\": [",
                if segments == 0 { "" } else { "]}," },
                s.base,
                s.size,
                if s.huge { "huge" } else { "small" },
                thread_ids::tid_of(s.owner),
            );
            segments += 1;
            spans = 0;
        }
        WalkItem::Span(s) => {
            let _ = write!(
                o,
                "{}{{\"offset\": {}, \"len\": {}, \"kind\": \"{}\", \"class\": {}, \"block_size\": {}, \
                 \"used\": {}, \"blocks\": {}}}",
                if spans == 0 { "" } else { ", " },
                s.offset(),
                s.len,
                s.kind.name(),
                s.class,
                s.block_size,
                s.used,
                s.blocks,
            );
            spans += 1;
        }
    });
    if segments > 0 {
        o.bytes(b"]}");
    }
    o.bytes(b"]}\n");
    o.flush();
}

/// Writes the document to `sink` in one piece when a mapping for it can
/// be had (in pieces otherwise). Nothing is allocated through the
/// allocator.
pub fn stats_json(sink: &mut dyn FnMut(&[u8])) {
    // SAFETY: a fresh private anonymous mapping, unmapped below; pages are
    // committed only as the document reaches them.
    let map = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            MAP_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        let mut buf = [0u8; 16 * 1024];
        document(&mut buf, sink);
        return;
    }
    // SAFETY: the mapping is ours, readable and writable, `MAP_BYTES` long.
    let buf = unsafe { core::slice::from_raw_parts_mut(map as *mut u8, MAP_BYTES) };
    document(buf, sink);
    // SAFETY: unmaps the mapping made above; `buf` is not used afterwards.
    unsafe { libc::munmap(map, MAP_BYTES) };
}

/// Writes the document to `fd`.
pub fn write_stats_json(fd: c_int) {
    stats_json(&mut |b| {
        write_all(fd, b);
    });
}

/// Writes all of `b` to `fd` (a pipe may take it in pieces).
fn write_all(fd: c_int, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: the buffer is valid for `b.len()` bytes.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n > 0 {
            b = &b[n as usize..];
            continue;
        }
        // SAFETY: the calling thread's errno location is always valid.
        if n == 0 || unsafe { *libc::__errno_location() } != libc::EINTR {
            return;
        }
    }
}

/// The exit report: the document to `APEX_STATS_FILE` (appended), or to
/// the stderr the program started with.
pub(crate) fn write_at_exit() {
    if let Some(template) = crate::options::stats_file() {
        if let Some(fd) = report::open_stats_file(template) {
            write_stats_json(fd);
            // SAFETY: closes the descriptor opened above.
            unsafe { libc::close(fd) };
            return;
        }
    }
    write_stats_json(report::exit_report_fd());
}
