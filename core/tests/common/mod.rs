//! A page provider over the host's `std::alloc`, for tests of the core.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::alloc::{alloc_zeroed, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use apex_core::{Capabilities, Global, Heap, PageProvider};

pub struct TestProvider {
    pub reserved: AtomicUsize,
    pub decommits: AtomicUsize,
    /// Bytes passed to `decommit`.
    pub decommitted: AtomicUsize,
    /// A clock the test moves by hand, when `has_clock`.
    pub clock_ms: AtomicU64,
    pub has_clock: bool,
}

impl TestProvider {
    pub const fn new() -> Self {
        TestProvider {
            reserved: AtomicUsize::new(0),
            decommits: AtomicUsize::new(0),
            decommitted: AtomicUsize::new(0),
            clock_ms: AtomicU64::new(1000),
            has_clock: false,
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

// SAFETY: ranges come from the system allocator with the requested layout,
// zeroed, and are freed with the same layout; nothing here allocates through
// the allocator under test.
unsafe impl PageProvider for TestProvider {
    fn capabilities(&self) -> Capabilities {
        let caps =
            Capabilities::LAZY_COMMIT | Capabilities::ZERO_ON_RESERVE | Capabilities::CAN_DECOMMIT;
        if self.has_clock {
            caps | Capabilities::CLOCK
        } else {
            caps
        }
    }
    fn now_ms(&self) -> u64 {
        self.clock_ms.load(Ordering::Relaxed)
    }
    fn reserve(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(len, align).ok()?;
        // SAFETY: non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        self.reserved.fetch_add(len, Ordering::Relaxed);
        NonNull::new(p)
    }
    unsafe fn release(&self, ptr: NonNull<u8>, len: usize) {
        self.reserved.fetch_sub(len, Ordering::Relaxed);
        // The alignment of the reservation is not passed back, but on Linux
        // the system allocator serves aligned layouts with posix_memalign,
        // whose blocks `free` releases whatever their alignment.
        // SAFETY: `ptr` came from `alloc_zeroed` in `reserve`.
        unsafe { libc_free(ptr.as_ptr()) };
    }
    unsafe fn commit(&self, _ptr: NonNull<u8>, _len: usize) -> bool {
        true
    }
    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize) {
        self.decommits.fetch_add(1, Ordering::Relaxed);
        self.decommitted.fetch_add(len, Ordering::Relaxed);
        // Scribble, so code that wrongly relies on decommitted contents fails.
        // SAFETY: the core only decommits free memory inside reservations.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0xAB, len) };
    }
    fn entropy(&self, buf: &mut [u8]) -> bool {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0x5c;
        }
        true
    }
    fn fatal(&self, msg: &str) -> ! {
        panic!("{msg}")
    }
}

extern "C" {
    #[link_name = "free"]
    fn libc_free(p: *mut u8);
}

/// A fresh allocator instance with its own provider (leaked for 'static).
pub fn instance() -> (&'static TestProvider, &'static Global) {
    let p: &'static TestProvider = Box::leak(Box::new(TestProvider::new()));
    let g: &'static Global = Box::leak(Box::new(Global::new(p)));
    (p, g)
}

/// Like [`instance`], with a clock the test moves by hand.
pub fn instance_with_clock() -> (&'static TestProvider, &'static Global) {
    let mut provider = TestProvider::new();
    provider.has_clock = true;
    let p: &'static TestProvider = Box::leak(Box::new(provider));
    let g: &'static Global = Box::leak(Box::new(Global::new(p)));
    (p, g)
}

pub struct HeapBox(pub NonNull<Heap>);
// SAFETY: a heap is used by one thread at a time in these tests.
unsafe impl Send for HeapBox {}

impl HeapBox {
    pub fn new(g: &'static Global) -> Self {
        HeapBox(Heap::create(g).expect("heap"))
    }
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut Heap {
        // SAFETY: one thread uses each heap at a time.
        unsafe { &mut *self.0.as_ptr() }
    }
}

/// Small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
