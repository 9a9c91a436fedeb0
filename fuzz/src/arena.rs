//! A page provider serving every reservation from one fixed arena of
//! address space, reset between inputs.
//!
//! The arena is mapped once, inaccessible (`PROT_NONE`, no swap
//! reservation). A reservation makes its pages accessible and a release
//! makes them inaccessible again, so a core access outside what it
//! reserved (or, in the strict flavour, outside what it committed) faults
//! at once, and libFuzzer reports the crash. Because everything the core
//! ever holds lies in the arena, the harness can write into a freed block
//! without touching memory the process does not own, and ask whether a
//! range is still accessible before it does.
//!
//! [`ArenaProvider::reset`] returns all pages to the system and forgets
//! every reservation: the memory of a thrown-away allocator instance is
//! bounded by the arena whatever the instance leaked or left locked.

use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use apex_core::provider::PAGE_SIZE;
use apex_core::{Capabilities, PageProvider};

/// Address space of the arena. Inputs are bounded far below this (see
/// `engine::MAX_LIVE_BYTES` and the budgets); it is only address space.
pub const ARENA_SIZE: usize = 4 << 30;
/// The arena's alignment: more than any alignment the harness asks for.
const ARENA_ALIGN: usize = 1 << 30;
/// Where the arena is asked to go (see `Arena::map_arena`).
const ARENA_HINT: usize = 0x5a00_0000_0000;
const PAGES: usize = ARENA_SIZE / PAGE_SIZE;
const WORDS: usize = PAGES / 64;
/// Reservations alive at once (segments, huge blocks, metadata chunks).
const MAX_RANGES: usize = 1024;

/// How the provider's memory behaves, chosen per input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Like the Linux frontend: lazy commit, zeroed reservations,
    /// `MADV_DONTNEED` on decommit (reads as zero afterwards).
    Hosted,
    /// Like `MADV_FREE`: decommitted pages keep or lose their contents at
    /// the system's whim; here they are scribbled over, so the core must
    /// not rely on them.
    MadvFree,
    /// Like a kernel's buddy provider: lazy commit, no decommit, and a
    /// reused range still holds what was there before (not zeroed).
    BareMetal,
    /// No lazy commit: memory is accessible only between `commit` and
    /// `decommit`, so the core's commit bookkeeping is checked.
    Strict,
}

impl Flavor {
    /// The flavour selected by two bits of an input.
    pub fn from_bits(b: u8) -> Flavor {
        match b & 3 {
            0 => Flavor::Hosted,
            1 => Flavor::MadvFree,
            2 => Flavor::BareMetal,
            _ => Flavor::Strict,
        }
    }

    fn capabilities(self) -> Capabilities {
        match self {
            Flavor::Hosted => {
                Capabilities::LAZY_COMMIT
                    | Capabilities::ZERO_ON_RESERVE
                    | Capabilities::ZERO_AFTER_DECOMMIT
                    | Capabilities::CAN_DECOMMIT
            }
            Flavor::MadvFree => {
                Capabilities::LAZY_COMMIT
                    | Capabilities::ZERO_ON_RESERVE
                    | Capabilities::CAN_DECOMMIT
            }
            Flavor::BareMetal => Capabilities::LAZY_COMMIT,
            Flavor::Strict => Capabilities::ZERO_ON_RESERVE | Capabilities::CAN_DECOMMIT,
        }
    }
}

/// The payload the provider's `fatal` unwinds with: the core's one-line
/// report. Raised with `resume_unwind`, which skips the panic hook, so
/// libFuzzer's abort-on-panic hook does not see it and the harness catches
/// it with `catch_unwind`.
#[derive(Debug)]
pub struct FatalReport(pub String);

struct State {
    /// Arena start (0 until mapped).
    base: usize,
    /// One bit per page: reserved.
    reserved: Vec<u64>,
    /// One bit per page: accessible (reserved, and committed in the
    /// strict flavour).
    open: Vec<u64>,
    ranges: Vec<(usize, usize)>,
    /// Pages from the arena start that may have been touched.
    high_water: usize,
    bytes_reserved: usize,
    budget: usize,
    refusals: u64,
    flavor: Flavor,
    caps: Capabilities,
    seed: u64,
}

/// The provider (one per process: the core's segment map is global too).
pub struct ArenaProvider {
    state: Mutex<State>,
    clock_ms: AtomicU64,
}

/// The one provider instance.
pub static PROVIDER: ArenaProvider = ArenaProvider {
    state: Mutex::new(State {
        base: 0,
        reserved: Vec::new(),
        open: Vec::new(),
        ranges: Vec::new(),
        high_water: 0,
        bytes_reserved: 0,
        budget: 0,
        refusals: 0,
        flavor: Flavor::Hosted,
        caps: Capabilities::empty(),
        seed: 0,
    }),
    clock_ms: AtomicU64::new(0),
};

fn bit(map: &[u64], page: usize) -> bool {
    map[page / 64] & (1 << (page % 64)) != 0
}

fn set_bits(map: &mut [u64], from: usize, to: usize, on: bool) {
    let mut p = from;
    while p < to {
        // Whole words at once where the range covers them.
        let (mask, next) = if p.is_multiple_of(64) && p + 64 <= to {
            (u64::MAX, p + 64)
        } else {
            (1 << (p % 64), p + 1)
        };
        if on {
            map[p / 64] |= mask;
        } else {
            map[p / 64] &= !mask;
        }
        p = next;
    }
}

/// The first page in `from..to` whose bit is set, if any.
fn first_set(map: &[u64], from: usize, to: usize) -> Option<usize> {
    let mut p = from;
    while p < to {
        if p.is_multiple_of(64) && p + 64 <= to && map[p / 64] == 0 {
            p += 64;
            continue;
        }
        if bit(map, p) {
            return Some(p);
        }
        p += 1;
    }
    None
}

/// Whether every page of `from..to` has its bit set.
fn all_set(map: &[u64], from: usize, to: usize) -> bool {
    let mut p = from;
    while p < to {
        if p.is_multiple_of(64) && p + 64 <= to && map[p / 64] == u64::MAX {
            p += 64;
            continue;
        }
        if !bit(map, p) {
            return false;
        }
        p += 1;
    }
    true
}

/// `mprotect` that must succeed (the range is inside the arena mapping).
fn protect(addr: usize, len: usize, accessible: bool) {
    let prot = if accessible {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_NONE
    };
    // SAFETY: the range lies inside the arena mapping, which only this
    // module and the core (through this provider) use.
    let r = unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) };
    assert_eq!(r, 0, "mprotect({addr:#x}, {len}) failed");
}

/// Returns the pages to the system: they read as zero afterwards.
fn discard(addr: usize, len: usize) {
    // SAFETY: as in `protect`; the contents are no longer needed.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    assert_eq!(r, 0, "madvise({addr:#x}, {len}) failed");
}

/// Overwrites the resident pages of a range (untouched pages stay
/// untouched, so decommitting a mostly unused segment stays cheap).
fn scribble_resident(addr: usize, len: usize) {
    let pages = len / PAGE_SIZE;
    let mut vec = vec![0u8; pages];
    // SAFETY: the range is mapped (part of the arena); `vec` has a byte per
    // page.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore failed");
    for (i, v) in vec.iter().enumerate() {
        if v & 1 != 0 {
            // SAFETY: a page of a live reservation that the core declared
            // free of data (it is decommitting it).
            unsafe { std::ptr::write_bytes((addr + i * PAGE_SIZE) as *mut u8, 0xAB, PAGE_SIZE) };
        }
    }
}

/// The SplitMix64 finaliser: a well-mixed word from a counter.
pub fn splitmix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl State {
    fn map_arena(&mut self) {
        if self.base != 0 {
            return;
        }
        let len = ARENA_SIZE + ARENA_ALIGN;
        // SAFETY: a fresh anonymous mapping that nothing else knows of.
        let p = unsafe {
            libc::mmap(
                // A fixed place (a hint: the kernel picks another if it is
                // taken), so addresses, and the allocator's keys salted
                // with them, repeat from run to run: with a fixed libFuzzer
                // seed and run count, a run is reproducible.
                ARENA_HINT as *mut libc::c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "cannot map the arena");
        self.base = (p as usize).next_multiple_of(ARENA_ALIGN);
        self.reserved = vec![0; WORDS];
        self.open = vec![0; WORDS];
        self.ranges = Vec::with_capacity(MAX_RANGES);
    }

    fn page(&self, addr: usize) -> usize {
        (addr - self.base) / PAGE_SIZE
    }

    fn in_arena(&self, addr: usize, len: usize) -> bool {
        addr >= self.base && addr.saturating_add(len) <= self.base + ARENA_SIZE
    }

    /// The live reservation holding `[addr, addr+len)`, if one does.
    fn holder(&self, addr: usize, len: usize) -> Option<(usize, usize)> {
        self.ranges
            .iter()
            .copied()
            .find(|&(b, l)| addr >= b && addr.saturating_add(len) <= b + l)
    }

    fn reserve(&mut self, len: usize, align: usize) -> Option<usize> {
        let align = align.max(PAGE_SIZE);
        if len == 0 || align > ARENA_ALIGN || self.ranges.len() == MAX_RANGES {
            self.refusals += 1;
            return None;
        }
        if self.bytes_reserved.saturating_add(len) > self.budget {
            self.refusals += 1;
            return None;
        }
        let mut off = 0usize;
        let found = loop {
            if off + len > ARENA_SIZE {
                break None;
            }
            let from = off / PAGE_SIZE;
            match first_set(&self.reserved, from, from + len.div_ceil(PAGE_SIZE)) {
                None => break Some(off),
                Some(used) => off = ((used + 1) * PAGE_SIZE).next_multiple_of(align),
            }
        };
        let Some(off) = found else {
            self.refusals += 1;
            return None;
        };
        let addr = self.base + off;
        let (from, to) = (off / PAGE_SIZE, (off + len) / PAGE_SIZE);
        set_bits(&mut self.reserved, from, to, true);
        if self.flavor != Flavor::Strict {
            set_bits(&mut self.open, from, to, true);
            protect(addr, len, true);
        }
        self.ranges.push((addr, len));
        self.bytes_reserved += len;
        self.high_water = self.high_water.max(to);
        Some(addr)
    }

    fn release(&mut self, addr: usize, len: usize) {
        let i = self
            .ranges
            .iter()
            .position(|&r| r == (addr, len))
            .unwrap_or_else(|| panic!("release of {addr:#x}+{len}: not a reservation"));
        self.ranges.swap_remove(i);
        self.bytes_reserved -= len;
        let (from, to) = (self.page(addr), self.page(addr) + len / PAGE_SIZE);
        set_bits(&mut self.reserved, from, to, false);
        set_bits(&mut self.open, from, to, false);
        // A kernel's buddy allocator hands the old contents out again.
        if self.flavor != Flavor::BareMetal {
            discard(addr, len);
        }
        protect(addr, len, false);
    }

    fn check_inside(&self, what: &str, addr: usize, len: usize) {
        assert!(
            addr.is_multiple_of(PAGE_SIZE)
                && len.is_multiple_of(PAGE_SIZE)
                && self.holder(addr, len).is_some(),
            "{what}({addr:#x}, {len}) outside every reservation"
        );
    }
}

/// Per-input settings of the provider.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub flavor: Flavor,
    pub clock: bool,
    /// Bytes that may be reserved at once; reservations beyond fail.
    pub budget: usize,
    /// Seeds the entropy the core draws its keys from.
    pub seed: u64,
}

impl ArenaProvider {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic under the lock aborts the process (libFuzzer's hook), so
        // a poisoned lock is never seen in a run; in unit tests, go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every reservation and returns the arena's pages to the
    /// system, then applies `setup`. Returns the arena range that the
    /// previous instance may have used, `(start, len)`, so the caller can
    /// clear what the core recorded about it.
    pub fn reset(&self, setup: Setup) -> (usize, usize) {
        let mut s = self.state();
        s.map_arena();
        let used = s.high_water * PAGE_SIZE;
        if used > 0 {
            discard(s.base, used);
            protect(s.base, used, false);
            let words = s.high_water.div_ceil(64);
            s.reserved[..words].fill(0);
            s.open[..words].fill(0);
        }
        s.ranges.clear();
        s.high_water = 0;
        s.bytes_reserved = 0;
        s.refusals = 0;
        s.budget = setup.budget;
        s.flavor = setup.flavor;
        s.caps = setup.flavor.capabilities()
            | if setup.clock {
                Capabilities::CLOCK
            } else {
                Capabilities::empty()
            };
        s.seed = setup.seed;
        self.clock_ms.store(1000, Ordering::Relaxed);
        (s.base, used)
    }

    /// Whether `[addr, addr+len)` is reserved and accessible, so the
    /// harness may write there without faulting.
    pub fn is_open(&self, addr: usize, len: usize) -> bool {
        let s = self.state();
        if len == 0 || !s.in_arena(addr, len) {
            return false;
        }
        let from = s.page(addr);
        let to = s.page(addr + len - 1) + 1;
        all_set(&s.open, from, to)
    }

    /// How many reservations were refused since the last reset (out of
    /// budget): only then may an allocation return null.
    pub fn refusals(&self) -> u64 {
        self.state().refusals
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The arena range, `(start, len)`.
    pub fn arena(&self) -> (usize, usize) {
        let mut s = self.state();
        s.map_arena();
        (s.base, ARENA_SIZE)
    }

    /// Bytes reserved now.
    pub fn bytes_reserved(&self) -> usize {
        self.state().bytes_reserved
    }
}

// SAFETY: reservations are disjoint page ranges of the arena (tracked in
// the `reserved` bitmap), aligned as asked, accessible from reservation to
// release (from commit to decommit in the strict flavour, which does not
// claim LAZY_COMMIT), and zeroed when ZERO_ON_RESERVE is claimed (released
// pages are discarded with MADV_DONTNEED, except in the bare-metal flavour,
// which does not claim it). Nothing here allocates through the allocator
// under test (the harness's own allocations go to the system allocator).
unsafe impl PageProvider for ArenaProvider {
    fn capabilities(&self) -> Capabilities {
        self.state().caps
    }

    fn reserve(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        let got = self.state().reserve(len, align);
        crate::engine::trace!("  provider: reserve({len:#x}, align {align:#x}) -> {got:#x?}");
        NonNull::new(got? as *mut u8)
    }

    unsafe fn release(&self, ptr: NonNull<u8>, len: usize) {
        crate::engine::trace!(
            "  provider: release({:#x}, {len:#x})",
            ptr.as_ptr() as usize
        );
        self.state().release(ptr.as_ptr() as usize, len);
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> bool {
        let mut s = self.state();
        let addr = ptr.as_ptr() as usize;
        s.check_inside("commit", addr, len);
        if s.flavor == Flavor::Strict {
            let from = s.page(addr);
            set_bits(&mut s.open, from, from + len / PAGE_SIZE, true);
            protect(addr, len, true);
        }
        true
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize) {
        let mut s = self.state();
        let addr = ptr.as_ptr() as usize;
        crate::engine::trace!("  provider: decommit({addr:#x}, {len:#x})");
        s.check_inside("decommit", addr, len);
        match s.flavor {
            Flavor::Hosted => discard(addr, len),
            Flavor::MadvFree => scribble_resident(addr, len),
            Flavor::BareMetal => {}
            Flavor::Strict => {
                discard(addr, len);
                protect(addr, len, false);
                let from = s.page(addr);
                set_bits(&mut s.open, from, from + len / PAGE_SIZE, false);
            }
        }
    }

    unsafe fn protect(&self, ptr: NonNull<u8>, len: usize, accessible: bool) -> bool {
        let mut s = self.state();
        // A kernel's provider has no page protection: the core must do
        // without guard pages.
        if s.flavor == Flavor::BareMetal {
            return false;
        }
        let addr = ptr.as_ptr() as usize;
        crate::engine::trace!("  provider: protect({addr:#x}, {len:#x}, {accessible})");
        s.check_inside("protect", addr, len);
        protect(addr, len, accessible);
        let from = s.page(addr);
        set_bits(&mut s.open, from, from + len / PAGE_SIZE, accessible);
        true
    }

    fn entropy(&self, buf: &mut [u8]) -> bool {
        let mut x = self.state().seed;
        for b in buf.iter_mut() {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *b = (splitmix(x) >> 56) as u8;
        }
        true
    }

    fn now_ms(&self) -> u64 {
        self.clock_ms.load(Ordering::Relaxed)
    }

    fn fatal(&self, msg: &str) -> ! {
        crate::engine::trace!(
            "  provider: fatal({msg}) at\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        std::panic::resume_unwind(Box::new(FatalReport(msg.to_string())))
    }
}
