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
    /// The canary after a block was overwritten (a linear overflow).
    HeapOverflow,
    /// A freed (zeroed) block was written before it was handed out again.
    WriteAfterFree,
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
            Misuse::HeapOverflow => "heap overflow",
            Misuse::WriteAfterFree => "write after free",
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

/// Formats the stable one-line report: `apexalloc: fatal: <what>
/// (<address>, <size>)`, where the size is the block's (its size class or
/// its usable size) or `unknown size` for a pointer outside the heap.
pub fn format(line: &mut LineBuf, misuse: Misuse, ptr: usize, size: Option<usize>) {
    let _ = match size {
        Some(n) => write!(
            line,
            "apexalloc: fatal: {} ({:#x}, {} B)",
            misuse.text(),
            ptr,
            n
        ),
        None => write!(
            line,
            "apexalloc: fatal: {} ({:#x}, unknown size)",
            misuse.text(),
            ptr
        ),
    };
}

/// Reports `misuse` at address `ptr` (a block of `size` bytes, if known)
/// and never returns.
#[cold]
#[inline(never)]
pub fn report(provider: &dyn PageProvider, misuse: Misuse, ptr: usize, size: Option<usize>) -> ! {
    let mut line = LineBuf::new();
    format(&mut line, misuse, ptr, size);
    provider.fatal(line.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_stable() {
        let mut l = LineBuf::new();
        format(&mut l, Misuse::DoubleFree, 0x7f00_0000_1040, Some(64));
        assert_eq!(
            l.as_str(),
            "apexalloc: fatal: double free (0x7f0000001040, 64 B)"
        );
        let mut l = LineBuf::new();
        format(&mut l, Misuse::InvalidFree, 0x1000, None);
        assert_eq!(
            l.as_str(),
            "apexalloc: fatal: invalid free (0x1000, unknown size)"
        );
    }
}
