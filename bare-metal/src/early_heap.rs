//! [`EarlyHeap`]: the kernel's heap before the per-CPU heaps exist.
//!
//! A first-fit free-list heap ([`linked_list_allocator`]) behind one spin
//! lock, over a fixed block taken from the page allocator once at boot. It
//! makes `alloc` (`Vec`, `BTreeMap`, `String`) usable from the first moments
//! of boot; it is simple rather than fast: allocation scans a free list and
//! every CPU contends for the same lock (held with interrupts masked, see
//! [`crate::irq`]). It never grows and never gives its memory back.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use apex_core::provider::{PageProvider, PAGE_SIZE};
use linked_list_allocator::Heap;
use spin::Mutex;

use crate::irq;

/// Why an [`EarlyHeap`] could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EarlyHeapError {
    /// The heap already has memory.
    AlreadyInitialized,
    /// The page provider could not supply the requested size.
    OutOfMemory,
    /// The size is zero or too small to hold the heap's bookkeeping.
    TooSmall,
}

/// The early-boot heap; `#[global_allocator]`-ready. See the module docs.
///
/// Until [`EarlyHeap::init`] or [`EarlyHeap::init_from`] runs, every
/// allocation fails.
pub struct EarlyHeap {
    heap: Mutex<Heap>,
    /// `[start, end)` of the heap's memory, set once by `init`; read
    /// without the lock by [`EarlyHeap::contains`].
    start: AtomicUsize,
    end: AtomicUsize,
}

impl Default for EarlyHeap {
    fn default() -> Self {
        Self::empty()
    }
}

impl EarlyHeap {
    /// A heap without memory; usable in a `static`.
    pub const fn empty() -> Self {
        EarlyHeap {
            heap: Mutex::new(Heap::empty()),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }

    /// Gives the heap `[start, start + len)`.
    ///
    /// # Safety
    /// The range must be valid, writable memory used by nothing else, for
    /// the rest of the program.
    pub unsafe fn init(&self, start: *mut u8, len: usize) -> Result<(), EarlyHeapError> {
        if len < 4 * core::mem::size_of::<usize>() {
            return Err(EarlyHeapError::TooSmall);
        }
        let mut heap = self.heap.lock();
        if heap.size() != 0 {
            return Err(EarlyHeapError::AlreadyInitialized);
        }
        // SAFETY: the heap is empty (checked under the lock) and the caller
        // gives us the range for good.
        unsafe { heap.init(start, len) };
        self.start.store(start as usize, Ordering::Relaxed);
        self.end.store(start as usize + len, Ordering::Release);
        crate::log_debug!(
            "early heap: {=usize} KiB at {=usize:#x}",
            len / 1024,
            start as usize
        );
        Ok(())
    }

    /// Reserves `len` bytes (rounded up to whole pages) from `provider` and
    /// makes them the heap. The reservation is never released.
    pub fn init_from(&self, provider: &dyn PageProvider, len: usize) -> Result<(), EarlyHeapError> {
        if len == 0 {
            return Err(EarlyHeapError::TooSmall);
        }
        if self.heap.lock().size() != 0 {
            return Err(EarlyHeapError::AlreadyInitialized);
        }
        let len = len.next_multiple_of(PAGE_SIZE);
        let mem = provider
            .reserve(len, PAGE_SIZE)
            .ok_or(EarlyHeapError::OutOfMemory)?;
        // SAFETY: `commit` needs a live reservation, which `mem` is.
        if !unsafe { provider.commit(mem, len) } {
            // SAFETY: `mem`/`len` is the untouched reservation from above.
            unsafe { provider.release(mem, len) };
            return Err(EarlyHeapError::OutOfMemory);
        }
        // SAFETY: the reservation is committed, ours alone, and never
        // released, so it stays valid for the rest of the program.
        let result = unsafe { self.init(mem.as_ptr(), len) };
        if result.is_err() {
            // SAFETY: another CPU initialized the heap first; nothing used
            // our reservation.
            unsafe { provider.release(mem, len) };
        }
        result
    }

    /// Whether `p` lies in the heap's memory (so a block at `p` is this
    /// heap's): two loads and two compares, no lock.
    #[inline]
    pub fn contains(&self, p: *const u8) -> bool {
        let end = self.end.load(Ordering::Acquire);
        let p = p as usize;
        p < end && p >= self.start.load(Ordering::Relaxed)
    }

    /// Bytes the heap manages.
    pub fn size(&self) -> usize {
        self.heap.lock().size()
    }

    /// Bytes currently allocated (including alignment padding).
    pub fn used(&self) -> usize {
        self.heap.lock().used()
    }

    /// Bytes currently free.
    pub fn free(&self) -> usize {
        self.heap.lock().free()
    }
}

// SAFETY: `linked_list_allocator::Heap` hands out disjoint blocks that fit
// the layout, and the lock serializes all access to it.
unsafe impl GlobalAlloc for EarlyHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Interrupts masked while the lock is held (see `crate::irq`).
        irq::masked(|| {
            self.heap
                .lock()
                .allocate_first_fit(layout)
                .map_or(ptr::null_mut(), NonNull::as_ptr)
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the GlobalAlloc contract: `ptr` came from `alloc` on this
        // heap with `layout`, so it is non-null and owned by the heap.
        irq::masked(|| unsafe {
            self.heap
                .lock()
                .deallocate(NonNull::new_unchecked(ptr), layout)
        });
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::provider::BuddyProvider;
    use std::vec;

    #[test]
    fn heap_from_provider_allocates_and_frees() {
        let buf: &'static mut [u8] = vec![0u8; 2 << 20].leak();
        let provider: &'static BuddyProvider =
            std::boxed::Box::leak(std::boxed::Box::new(BuddyProvider::new()));
        // SAFETY: the leaked buffer is ours forever.
        unsafe { provider.add_region(buf.as_mut_ptr() as usize, buf.len()) }.unwrap();

        let heap = EarlyHeap::empty();
        // SAFETY: a layout with non-zero size; allocation fails without memory.
        assert!(unsafe { heap.alloc(Layout::new::<u64>()) }.is_null());
        heap.init_from(provider, 64 * 1024 + 1).unwrap();
        assert_eq!(heap.size(), 68 * 1024);
        assert_eq!(
            heap.init_from(provider, PAGE_SIZE),
            Err(EarlyHeapError::AlreadyInitialized)
        );

        let layout = Layout::from_size_align(1000, 64).unwrap();
        let mut ptrs = std::vec::Vec::new();
        for i in 0..20u8 {
            // SAFETY: non-zero-size layout.
            let p = unsafe { heap.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % 64, 0);
            // SAFETY: `p` is 1000 writable bytes.
            unsafe { p.write_bytes(i, 1000) };
            ptrs.push(p);
        }
        assert!(heap.used() >= 20 * 1000);
        for (i, &p) in ptrs.iter().enumerate() {
            // SAFETY: still allocated.
            assert!(unsafe { core::slice::from_raw_parts(p, 1000) }
                .iter()
                .all(|&b| b == i as u8));
        }
        for p in ptrs {
            // SAFETY: allocated above with `layout`, freed once.
            unsafe { heap.dealloc(p, layout) };
        }
        assert_eq!(heap.used(), 0);
        // SAFETY: far larger than the heap: must fail, not crash.
        assert!(unsafe { heap.alloc(Layout::from_size_align(1 << 20, 8).unwrap()) }.is_null());
    }
}
