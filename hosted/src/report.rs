//! Writing to stderr without allocating: for fatal errors, the start-up
//! banner and the exit statistics.

use core::fmt;

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
