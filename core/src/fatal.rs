//! Heap-misuse reports: one stable line, formatted without allocating, then
//! the provider's `fatal` (abort on Linux, halt in a kernel).

use core::fmt::{self, Write};

use crate::provider::PageProvider;

/// What went wrong; the text is part of the stable message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// A block was freed while already free.
    DoubleFree,
    /// `free` of a pointer inside the heap that is not a live block start.
    InvalidFree,
    /// `realloc` of a pointer inside the heap that is not a live block start.
    InvalidRealloc,
    /// A free-list link points outside the block's segment.
    FreeListCorruption,
    /// A segment header failed its integrity check.
    HeaderCorruption,
}

impl Misuse {
    /// The fixed words of the message.
    pub const fn text(self) -> &'static str {
        match self {
            Misuse::DoubleFree => "double free",
            Misuse::InvalidFree => "invalid free",
            Misuse::InvalidRealloc => "invalid realloc",
            Misuse::FreeListCorruption => "free-list corruption",
            Misuse::HeaderCorruption => "segment header corruption",
        }
    }
}

/// A fixed-size line buffer that silently truncates.
pub struct LineBuf {
    buf: [u8; 160],
    len: usize,
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; 160],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str` pieces are appended, but truncation may split a
        // character; fall back to the longest valid prefix.
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Reports `misuse` at address `ptr` and never returns.
#[cold]
#[inline(never)]
pub fn report(provider: &dyn PageProvider, misuse: Misuse, ptr: usize) -> ! {
    let mut line = LineBuf::new();
    let _ = write!(
        line,
        "apexalloc: fatal: {} (pointer {:#x})",
        misuse.text(),
        ptr
    );
    provider.fatal(line.as_str())
}
