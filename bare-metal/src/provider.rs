//! [`BuddyProvider`]: the allocator core's page provider in a kernel.
//!
//! Every reservation is a buddy reservation ([`Buddy::alloc_len`]):
//! `reserve(len, align)` takes the block of the order that holds `len`,
//! carved from a free block large enough to be aligned to `align`; the
//! aligned block's unused tail goes straight back to the free lists, and so
//! do the pages past `len` when `len` is more than
//! [`crate::buddy::TRIM_ABOVE_PAGES`] pages. So a reservation's blocks depend on
//! `len` alone, and `release(ptr, len)`, which is not told the alignment,
//! recomputes them. Their orders are also recorded in the buddy's state
//! bytes, which `release` cross-checks: a range that was not reserved with
//! this length is reported through [`PageProvider::fatal`] instead of
//! corrupting the free lists.
//!
//! Physical memory is always present and the kernel identity-maps it, so a
//! reservation is usable at once ([`Capabilities::LAZY_COMMIT`]), `commit`
//! always succeeds and `decommit` does nothing. Released blocks are not
//! cleared, so [`Capabilities::ZERO_ON_RESERVE`] is not claimed.
//!
//! The buddy sits behind a spin lock, held only with interrupts masked on
//! the CPU that holds it (see [`crate::irq`]), so an interrupt handler that
//! reaches the provider never spins on a lock its own CPU holds. No method
//! allocates. [`BuddyProvider::lock`] is the exception: it leaves
//! interrupts alone.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use apex_core::provider::{Capabilities, PageProvider, PAGE_SIZE};
use spin::{Mutex, MutexGuard};

use crate::buddy::{Buddy, RegionError};
use crate::irq;

/// What [`PageProvider::fatal`] calls: prints and halts, never returns.
pub type FatalHandler = fn(&str) -> !;

/// `rdrand` support, probed on first use.
const ENTROPY_UNKNOWN: u8 = 0;
const ENTROPY_NO: u8 = 1;
const ENTROPY_YES: u8 = 2;

/// A [`PageProvider`] over a [`Buddy`] page allocator. See the module docs.
pub struct BuddyProvider {
    buddy: Mutex<Buddy>,
    /// A [`FatalHandler`] stored as an address; 0 means none installed.
    fatal_handler: AtomicUsize,
    entropy: AtomicU8,
}

impl Default for BuddyProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl BuddyProvider {
    /// A provider with no memory yet; usable in a `static`.
    pub const fn new() -> Self {
        BuddyProvider {
            buddy: Mutex::new(Buddy::new()),
            fatal_handler: AtomicUsize::new(0),
            entropy: AtomicU8::new(ENTROPY_UNKNOWN),
        }
    }

    /// Hands a RAM range to the buddy allocator; see [`Buddy::add_region`].
    ///
    /// # Safety
    /// As [`Buddy::add_region`]: the range must be RAM accessible at its own
    /// address and used by nothing else, for as long as this provider or any
    /// reservation from it is in use.
    pub unsafe fn add_region(&self, start: usize, len: usize) -> Result<usize, RegionError> {
        // SAFETY: forwarded from the caller.
        irq::masked(|| unsafe { self.buddy.lock().add_region(start, len) })
    }

    /// Locks the buddy allocator, for statistics and direct page allocation.
    /// Unlike the other methods it leaves interrupts as they are: mask them
    /// (see [`irq::masked`]) while holding the guard if an interrupt handler
    /// might allocate.
    pub fn lock(&self) -> MutexGuard<'_, Buddy> {
        self.buddy.lock()
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> usize {
        irq::masked(|| self.buddy.lock().free_bytes())
    }

    /// Bytes managed, free or reserved.
    pub fn total_bytes(&self) -> usize {
        irq::masked(|| self.buddy.lock().total_bytes())
    }

    /// Installs what [`PageProvider::fatal`] calls. Until then it spins
    /// forever.
    pub fn set_fatal_handler(&self, handler: FatalHandler) {
        self.fatal_handler
            .store(handler as usize, Ordering::Release);
    }

    fn has_entropy(&self) -> bool {
        match self.entropy.load(Ordering::Relaxed) {
            ENTROPY_YES => true,
            ENTROPY_NO => false,
            _ => {
                let yes = crate::rdrand::available();
                self.entropy.store(
                    if yes { ENTROPY_YES } else { ENTROPY_NO },
                    Ordering::Relaxed,
                );
                yes
            }
        }
    }
}

// SAFETY: reservations are buddy blocks, which are disjoint, at least `len`
// bytes long (the order is chosen from `len`) and aligned to `align` (the
// block is carved from a free block of at least that alignment). Memory is
// RAM that the caller of `add_region` promised stays accessible, so it is
// usable without `commit` (LAZY_COMMIT). ZERO_ON_RESERVE is not claimed.
// ENTROPY is claimed only when rdrand exists. The buddy is behind a spin
// lock, and no method allocates.
unsafe impl PageProvider for BuddyProvider {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::LAZY_COMMIT;
        if self.has_entropy() {
            caps |= Capabilities::ENTROPY;
        }
        caps
    }

    fn reserve(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) || !align.is_power_of_two() {
            return None;
        }
        let addr = irq::masked(|| self.buddy.lock().alloc_len(len, align))?;
        NonNull::new(addr as *mut u8)
    }

    unsafe fn release(&self, ptr: NonNull<u8>, len: usize) {
        let addr = ptr.as_ptr() as usize;
        let released = irq::masked(|| {
            let mut buddy = self.buddy.lock();
            if !buddy.is_allocated_len(addr, len) {
                return false;
            }
            // SAFETY: the state bytes confirm a live reservation of this
            // length starts at `addr`; the caller promises it is a whole
            // reservation nobody uses any more.
            unsafe { buddy.free_len(addr, len) };
            true
        });
        if !released {
            self.fatal(
                "apex-bare-metal: release of a range that was not reserved with this length",
            );
        }
    }

    unsafe fn commit(&self, _ptr: NonNull<u8>, _len: usize) -> bool {
        true
    }

    unsafe fn decommit(&self, _ptr: NonNull<u8>, _len: usize) {}

    /// `rdrand` where the CPU has it, else the time-stamp counter (the
    /// capability `ENTROPY`, real randomness, is claimed only for the
    /// former).
    fn entropy(&self, buf: &mut [u8]) -> bool {
        (self.has_entropy() && crate::rdrand::fill(buf)) || crate::rdrand::tsc_fill(buf)
    }

    fn fatal(&self, msg: &str) -> ! {
        crate::log_error!("{=str}", msg);
        let handler = self.fatal_handler.load(Ordering::Acquire);
        if handler != 0 {
            // SAFETY: only `set_fatal_handler` stores a non-zero value, and
            // it stores a `FatalHandler` converted to an address.
            let handler: FatalHandler =
                unsafe { core::mem::transmute::<usize, FatalHandler>(handler) };
            handler(msg);
        }
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec;
    use std::vec::Vec;

    const MIB: usize = 1 << 20;

    /// A provider over `len` bytes of host memory (leaked: the provider may
    /// be referenced from statics in other tests).
    fn provider(len: usize) -> &'static BuddyProvider {
        let buf: &'static mut [u8] = vec![0u8; len + 4 * MIB].leak();
        let base = (buf.as_ptr() as usize).next_multiple_of(4 * MIB);
        let p: &'static BuddyProvider =
            std::boxed::Box::leak(std::boxed::Box::new(BuddyProvider::new()));
        // SAFETY: the leaked buffer is ours forever and the range lies in it.
        unsafe { p.add_region(base, len) }.unwrap();
        p
    }

    #[test]
    fn reserve_release_all_alignments() {
        let p = provider(64 * MIB);
        let full = p.free_bytes();
        let mut live = Vec::new();
        for shift in 12..=22 {
            let align = 1usize << shift;
            for len in [PAGE_SIZE, 3 * PAGE_SIZE, align, 5 * PAGE_SIZE + align] {
                let ptr = p.reserve(len, align).unwrap();
                let addr = ptr.as_ptr() as usize;
                assert_eq!(addr % align, 0, "len {len:#x} align {align:#x}");
                // SAFETY: the reservation is `len` writable bytes.
                unsafe { core::ptr::write_bytes(ptr.as_ptr(), shift as u8, len) };
                live.push((ptr, len, shift as u8));
            }
        }
        for &(ptr, len, fill) in &live {
            // SAFETY: still reserved, and filled above.
            let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) };
            assert!(bytes.iter().all(|&b| b == fill), "reservations overlap");
        }
        for (ptr, len, _) in live {
            // SAFETY: released exactly as reserved, once.
            unsafe { p.release(ptr, len) };
        }
        assert_eq!(p.free_bytes(), full);
        p.lock().verify().unwrap();
    }

    #[test]
    fn bad_requests_and_capabilities() {
        let p = provider(MIB);
        assert!(p.reserve(0, PAGE_SIZE).is_none());
        assert!(p.reserve(100, PAGE_SIZE).is_none());
        assert!(p.reserve(PAGE_SIZE, 3 * PAGE_SIZE).is_none());
        assert!(p.reserve(2 * MIB, PAGE_SIZE).is_none(), "exhausted");
        let caps = p.capabilities();
        assert!(caps.contains(Capabilities::LAZY_COMMIT));
        assert!(!caps.intersects(Capabilities::ZERO_ON_RESERVE | Capabilities::CAN_DECOMMIT));
        let mut buf = [0u8; 32];
        // rdrand or, without it, the time-stamp counter.
        assert!(p.entropy(&mut buf));
        let first = buf;
        assert!(p.entropy(&mut buf));
        assert_ne!(first, buf, "two draws gave the same bytes");
        assert_eq!(
            caps.contains(Capabilities::ENTROPY),
            crate::rdrand::available()
        );
    }

    #[test]
    fn mismatched_release_calls_the_fatal_handler() {
        fn handler(msg: &str) -> ! {
            std::panic!("fatal: {msg}");
        }
        let p = provider(MIB);
        p.set_fatal_handler(handler);
        let ptr = p.reserve(2 * PAGE_SIZE, PAGE_SIZE).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: deliberately the wrong length; the check must catch it
            // before touching the free lists.
            unsafe { p.release(ptr, PAGE_SIZE) }
        }));
        let msg = *result
            .unwrap_err()
            .downcast::<std::string::String>()
            .unwrap();
        assert!(msg.contains("not reserved with this length"), "{msg}");
        // SAFETY: the right length this time.
        unsafe { p.release(ptr, 2 * PAGE_SIZE) };
        p.lock().verify().unwrap();
    }
}
