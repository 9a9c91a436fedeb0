//! The report at exit: the live samples summed by site, each sample
//! standing for the blocks it estimates, the heaviest [`TOP`] sites with
//! their frames named by `dladdr`, in one `write`.

use core::ffi::{c_void, CStr};
use core::fmt::{self, Write as _};

use super::backtrace::DEPTH;
use super::table::{map, unmap, TABLES};
use super::{enabled, sample_mean, Busy};
use crate::options;
use crate::report::{self, Line};

/// Sites listed in the report.
pub(crate) const TOP: usize = 20;

const LN_2: f64 = core::f64::consts::LN_2;

/// `exp(-x)` for `x >= 0` (about 13 digits).
fn exp_neg(x: f64) -> f64 {
    if x.is_nan() || x >= 700.0 {
        return 0.0;
    }
    // e^-x = 2^-k e^-r, 0 <= r < ln 2.
    let k = (x / LN_2) as u64;
    let r = x - k as f64 * LN_2;
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..=17 {
        term *= -r / f64::from(i);
        sum += term;
    }
    sum * f64::from_bits((1023 - k) << 52)
}

/// How many blocks of `size` bytes a sample stands for when one byte in
/// `mean` is sampled: the inverse of the chance `1 - exp(-size / mean)`
/// that such a block is sampled (1 when every block is).
pub(crate) fn weight(size: usize, mean: u64) -> f64 {
    if mean <= 1 {
        return 1.0;
    }
    let x = size.max(1) as f64 / mean as f64;
    let p = if x < 1e-6 {
        x * (1.0 - 0.5 * x)
    } else {
        1.0 - exp_neg(x)
    };
    1.0 / p
}

/// One site's totals.
#[derive(Clone, Copy, Default)]
struct Site {
    bytes: f64,
    blocks: f64,
    sampled: u64,
    sampled_bytes: u64,
}

/// A site kept for the report, with its backtrace.
#[derive(Clone, Copy)]
struct Top {
    site: Site,
    depth: usize,
    frames: [usize; DEPTH],
}

/// What the report says.
struct Summary {
    sites: usize,
    total: Site,
    dropped: u64,
    top: [Top; TOP],
    shown: usize,
}

/// Bytes of the report buffer.
const REPORT_BYTES: usize = 256 * 1024;

/// Prints the report at exit when `APEX_LEAKS` is on (called after the
/// statistics).
pub(crate) fn report_at_exit() {
    if !enabled() {
        return;
    }
    // Allocations made while reporting (by this thread) are not sampled.
    let _busy = Busy::new();
    let Some(summary) = summarise() else {
        report::write_stderr("apexalloc: leaks: no memory for the report\n");
        return;
    };
    let buf = map(REPORT_BYTES);
    if buf.is_null() {
        report::write_stderr("apexalloc: leaks: no memory for the report\n");
        return;
    }
    // SAFETY: a fresh mapping of REPORT_BYTES bytes, only used here.
    let text = unsafe { core::slice::from_raw_parts_mut(buf, REPORT_BYTES) };
    let mut out = Line::new(text);
    write_report(&mut out, &summary);
    let bytes = out.finish();
    let mut written = false;
    if let Some(template) = options::stats_file() {
        if let Some(fd) = report::open_stats_file(template) {
            written = report::write_once(fd, bytes);
            // SAFETY: closes the descriptor just opened.
            unsafe { libc::close(fd) };
        }
    }
    if !written {
        report::write_once(report::exit_report_fd(), bytes);
    }
    // SAFETY: the mapping above, no longer used.
    unsafe { unmap(buf, REPORT_BYTES) };
}

/// Sums the live samples by site, under the lock; `None` if memory for
/// the sums could not be had.
fn summarise() -> Option<Summary> {
    let mean = sample_mean();
    let t = TABLES.lock();
    let mut s = Summary {
        sites: 0,
        total: Site::default(),
        dropped: t.dropped,
        top: [Top {
            site: Site::default(),
            depth: 0,
            frames: [0; DEPTH],
        }; TOP],
        shown: 0,
    };
    if t.stacks_len == 0 {
        return Some(s);
    }
    let bytes = t.stacks_len * size_of::<Site>();
    let sums = map(bytes).cast::<Site>();
    if sums.is_null() {
        return None;
    }
    // SAFETY: a fresh zeroed mapping of `stacks_len` sites (all-zero bits
    // are a valid `Site`), only used here.
    let sites = unsafe { core::slice::from_raw_parts_mut(sums, t.stacks_len) };
    t.for_each_live(|e| {
        let w = weight(e.size, mean);
        let site = &mut sites[e.stack as usize];
        site.bytes += w * e.size as f64;
        site.blocks += w;
        site.sampled += 1;
        site.sampled_bytes += e.size as u64;
    });
    for (id, site) in sites.iter().enumerate() {
        if site.sampled == 0 {
            continue;
        }
        s.sites += 1;
        s.total.bytes += site.bytes;
        s.total.blocks += site.blocks;
        s.total.sampled += site.sampled;
        s.total.sampled_bytes += site.sampled_bytes;
        // Insertion into the heaviest TOP, kept sorted.
        let mut at = s.shown;
        while at > 0 && s.top[at - 1].site.bytes < site.bytes {
            at -= 1;
        }
        if at == TOP {
            continue;
        }
        let end = s.shown.min(TOP - 1);
        s.top.copy_within(at..end, at + 1);
        // SAFETY: `id` < stacks_len: a written stack.
        let stack = unsafe { &*t.stacks.add(id) };
        s.top[at] = Top {
            site: *site,
            depth: stack.depth as usize,
            frames: stack.frames,
        };
        s.shown = (s.shown + 1).min(TOP);
    }
    // SAFETY: the mapping above, no longer used.
    unsafe { unmap(sums.cast(), bytes) };
    Some(s)
}

/// A byte count, `1.2 MiB`.
struct Human(f64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = self.0;
        for unit in ["B", "KiB", "MiB", "GiB"] {
            if v < 1024.0 || unit == "GiB" {
                return if unit == "B" {
                    write!(f, "{v:.0} {unit}")
                } else {
                    write!(f, "{v:.1} {unit}")
                };
            }
            v /= 1024.0;
        }
        Ok(())
    }
}

/// `s` unless `n` is 1.
fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `bytes bytes (human) in blocks blocks`, with `~` on estimates.
fn write_amount(out: &mut Line<'_>, site: &Site, exact: bool) {
    if exact {
        let _ = write!(
            out,
            "{} bytes ({}) in {} block{}",
            site.sampled_bytes,
            Human(site.sampled_bytes as f64),
            site.sampled,
            plural(site.sampled)
        );
    } else {
        // `as` rounds toward zero and saturates: add a half to round.
        let blocks = (site.blocks + 0.5) as u64;
        let _ = write!(
            out,
            "~{:.0} bytes ({}) in ~{} block{}",
            site.bytes,
            Human(site.bytes),
            blocks,
            plural(blocks)
        );
    }
}

fn write_report(out: &mut Line<'_>, s: &Summary) {
    let mean = sample_mean();
    let exact = mean <= 1;
    out.push_prefix();
    let _ = write!(out, "leaks: {} site{}, ", s.sites, plural(s.sites as u64));
    write_amount(out, &s.total, exact);
    if exact {
        let _ = write!(out, " (every block sampled");
    } else {
        let _ = write!(
            out,
            " (sampled 1 in {}, {} samples live",
            Human(mean as f64),
            s.total.sampled
        );
    }
    if s.dropped > 0 {
        let _ = write!(out, "; {} samples dropped: tables full", s.dropped);
    }
    out.push(b")");
    for (i, top) in s.top[..s.shown].iter().enumerate() {
        out.push(b"\n");
        out.push_prefix();
        let _ = write!(out, "leak site {}: ", i + 1);
        write_amount(out, &top.site, exact);
        let _ = write!(out, " ({} sampled) at ", top.site.sampled);
        if top.depth == 0 {
            out.push(b"(no backtrace)");
        }
        for (k, &ip) in top.frames[..top.depth].iter().enumerate() {
            if k > 0 {
                out.push(b" < ");
            }
            write_frame(out, ip);
        }
    }
    if s.sites > s.shown {
        let mut rest = s.total;
        for top in &s.top[..s.shown] {
            rest.bytes -= top.site.bytes;
            rest.blocks -= top.site.blocks;
            rest.sampled -= top.site.sampled;
            rest.sampled_bytes -= top.site.sampled_bytes;
        }
        out.push(b"\n");
        out.push_prefix();
        let _ = write!(out, "other leak sites ({}): ", s.sites - s.shown);
        write_amount(out, &rest, exact);
    }
}

/// `function+0xoffset (module)`, `module+0xoffset`, or `0xaddress`.
fn write_frame(out: &mut Line<'_>, ip: usize) {
    // SAFETY: an all-zero Dl_info is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // The return address may be past the end of the calling function (a
    // call that does not return): look up the call instruction.
    // SAFETY: dladdr reads the loader's tables; any address is accepted.
    let found = unsafe { libc::dladdr((ip - 1) as *const c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        let _ = write!(out, "{ip:#x}");
        return;
    }
    // SAFETY: dladdr's strings are NUL-terminated and live as long as
    // their object, which is never unloaded while we report (or the
    // address would not have been found).
    let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    let module = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    };
    let module = if module.is_empty() {
        report::program_name()
    } else {
        module
    };
    if !info.dli_sname.is_null() {
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(info.dli_sname) }.to_bytes();
        out.push_printable(&name[..name.len().min(200)]);
        let _ = write!(out, "+{:#x} (", ip.wrapping_sub(info.dli_saddr as usize));
        out.push_printable(module);
        out.push(b")");
    } else {
        out.push_printable(module);
        let _ = write!(out, "+{:#x}", ip.wrapping_sub(info.dli_fbase as usize));
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn exponential() {
        for x in [0.0f64, 1e-9, 0.001, 0.5, 1.0, 3.7, 20.0, 200.0] {
            let want = (-x).exp();
            assert!((exp_neg(x) - want).abs() <= 1e-12 * want, "exp -{x}");
        }
        assert_eq!(exp_neg(1e9), 0.0);
    }

    #[test]
    fn weights() {
        assert_eq!(weight(16, 1), 1.0);
        // Small blocks stand for about mean / size of them.
        let w = weight(16, 512 * 1024);
        assert!((w - 32768.5).abs() < 0.5, "{w}");
        // Blocks far above the mean are always sampled.
        assert!((weight(64 << 20, 512 * 1024) - 1.0).abs() < 1e-12);
        let w = weight(512 * 1024, 512 * 1024);
        assert!((w - 1.0 / (1.0 - (-1f64).exp())).abs() < 1e-9, "{w}");
    }
}
