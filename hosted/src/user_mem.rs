//! Copying to and from memory a caller names by pointer (`apex_ctl`'s
//! arguments) without trusting the pointer: every copy goes through a
//! pipe, so an address that is unmapped or not writable makes the kernel
//! fail the `write` or `read` with `EFAULT` instead of faulting in the
//! library. Nothing is allocated; each [`Probe`] is a fresh pipe, closed
//! when it is dropped (so a forked child never shares one).

use core::ffi::c_int;

/// Bytes moved per system call (well inside a pipe's capacity, so a
/// write never blocks).
const CHUNK: usize = 4096;

/// A pipe to copy through.
pub(crate) struct Probe {
    fds: [c_int; 2],
}

fn errno() -> c_int {
    // SAFETY: the calling thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

impl Probe {
    /// A new pipe; the error number when none can be made (no descriptor
    /// left: `EMFILE`, `ENFILE`).
    pub(crate) fn new() -> Result<Probe, c_int> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(errno());
        }
        Ok(Probe { fds })
    }

    /// Pushes `len` bytes at `src` through the pipe and pulls them out at
    /// `dst`; either side may be the caller's untrusted memory.
    fn pass(&self, src: *const u8, dst: *mut u8, len: usize) -> Result<(), c_int> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            // SAFETY: the kernel checks `src` and fails with EFAULT when it
            // is not readable.
            let w = unsafe { libc::write(self.fds[1], src.add(done).cast(), n) };
            if w != n as isize {
                return Err(libc::EFAULT);
            }
            // SAFETY: likewise for `dst` and writability.
            let r = unsafe { libc::read(self.fds[0], dst.add(done).cast(), n) };
            if r != n as isize {
                self.drain();
                return Err(libc::EFAULT);
            }
            done += n;
        }
        Ok(())
    }

    /// Empties the pipe after a failed read, so the next copy starts clean.
    fn drain(&self) {
        let mut sink = [0u8; 256];
        // SAFETY: reads into a local buffer; the pipe does not block.
        while unsafe { libc::read(self.fds[0], sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
    }

    /// Copies `dst.len()` bytes from the caller's `src` into `dst`.
    pub(crate) fn copy_in(&self, src: *const u8, dst: &mut [u8]) -> Result<(), c_int> {
        if src.is_null() {
            return Err(libc::EFAULT);
        }
        self.pass(src, dst.as_mut_ptr(), dst.len())
    }

    /// Copies `src` to the caller's `dst`.
    pub(crate) fn copy_out(&self, src: &[u8], dst: *mut u8) -> Result<(), c_int> {
        if dst.is_null() {
            return Err(libc::EFAULT);
        }
        self.pass(src.as_ptr(), dst, src.len())
    }

    /// Reads a `usize` from the caller's `p`.
    pub(crate) fn read_usize(&self, p: *const usize) -> Result<usize, c_int> {
        let mut b = [0u8; size_of::<usize>()];
        self.copy_in(p.cast(), &mut b)?;
        Ok(usize::from_ne_bytes(b))
    }

    /// Writes a `usize` to the caller's `p`.
    pub(crate) fn write_usize(&self, p: *mut usize, v: usize) -> Result<(), c_int> {
        self.copy_out(&v.to_ne_bytes(), p.cast())
    }

    /// Copies the NUL-terminated string at the caller's `p` into `buf`
    /// (without its NUL) and returns its length; `ENAMETOOLONG` when it
    /// does not fit. Reads page by page, so a string ending just before an
    /// unmapped page is read whole.
    pub(crate) fn read_cstr(&self, p: *const u8, buf: &mut [u8]) -> Result<usize, c_int> {
        if p.is_null() {
            return Err(libc::EFAULT);
        }
        let mut len = 0;
        loop {
            let at = p as usize + len;
            let to_page_end = CHUNK - at % CHUNK;
            let n = to_page_end.min(buf.len() - len);
            if n == 0 {
                return Err(libc::ENAMETOOLONG);
            }
            // SAFETY: `at` is `p` advanced by the bytes read so far.
            self.copy_in(at as *const u8, &mut buf[len..len + n])?;
            if let Some(i) = buf[len..len + n].iter().position(|&c| c == 0) {
                return Ok(len + i);
            }
            len += n;
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        for fd in self.fds {
            // SAFETY: closes a descriptor this probe opened.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_good_memory_and_refuses_bad() {
        let p = Probe::new().unwrap();
        let src = *b"hello, world";
        let mut dst = [0u8; 12];
        p.copy_in(src.as_ptr(), &mut dst).unwrap();
        assert_eq!(dst, src);
        let mut out = [0u8; 5];
        p.copy_out(b"abcde", out.as_mut_ptr()).unwrap();
        assert_eq!(&out, b"abcde");
        // Unmapped, null and read-only memory.
        let bad = 8 as *const u8;
        assert_eq!(p.copy_in(bad, &mut dst), Err(libc::EFAULT));
        assert_eq!(p.copy_out(b"x", core::ptr::null_mut()), Err(libc::EFAULT));
        let ro = b"read-only".as_ptr() as *mut u8;
        assert_eq!(p.copy_out(b"x", ro), Err(libc::EFAULT));
        // The probe still works after failures.
        p.copy_in(src.as_ptr(), &mut dst).unwrap();
        let mut name = [0u8; 64];
        let s = c"stats.allocated";
        assert_eq!(p.read_cstr(s.as_ptr().cast(), &mut name), Ok(15));
        assert_eq!(&name[..15], b"stats.allocated");
        let mut small = [0u8; 4];
        assert_eq!(
            p.read_cstr(s.as_ptr().cast(), &mut small),
            Err(libc::ENAMETOOLONG)
        );
        assert_eq!(p.read_cstr(bad, &mut name), Err(libc::EFAULT));
    }
}
