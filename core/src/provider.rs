//! The page-provider contract: the only way the core obtains or returns memory.
//!
//! The core never names an operating system. A frontend hands it a
//! `&'static dyn PageProvider` that knows how to reserve address space and
//! back it with memory: `mmap`/`madvise` on Linux, a buddy page allocator in a
//! kernel, a static array in a test.
//!
//! # The re-entrancy rule
//! A provider must never allocate through the allocator it serves, directly or
//! indirectly (no `Vec`, `Box`, `format!`, no libc function that may call
//! `malloc`). The core calls the provider while holding heap state in an
//! intermediate condition; a call back into `malloc` would observe it or
//! deadlock. Providers use fixed, pre-sized bookkeeping instead.
//!
//! # Ranges
//! Every address and length passed across this trait is a multiple of
//! [`PAGE_SIZE`]. `reserve` hands out a range; the core later gives exactly
//! that range back to `release` (never a part of it). `commit` and
//! `decommit` act on page-aligned sub-ranges of a reserved range.

use core::ptr::NonNull;

use bitflags::bitflags;

/// The granule of every range crossing the provider boundary.
pub const PAGE_SIZE: usize = 4096;

/// The size (and alignment) of the huge pages [`PageProvider::hint_huge_pages`]
/// asks for: x86_64's 2 MiB.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

bitflags! {
    /// What a provider's memory does, so the core can skip needless work.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Capabilities: u32 {
        /// Reserved memory is usable at once and backed on first touch, so
        /// `commit` need not be called before use (Linux overcommit).
        const LAZY_COMMIT = 1 << 0;
        /// Freshly reserved memory reads as zero (anonymous mmap), so
        /// `calloc` of fresh memory needs no memset.
        const ZERO_ON_RESERVE = 1 << 1;
        /// Memory that was decommitted reads as zero once committed again
        /// (`MADV_DONTNEED`, but not `MADV_FREE`).
        const ZERO_AFTER_DECOMMIT = 1 << 2;
        /// `decommit` really returns memory (otherwise the core skips it).
        const CAN_DECOMMIT = 1 << 3;
        /// The core should ask for huge pages on the hot part of new
        /// segments ([`PageProvider::hint_huge_pages`]). Read again for
        /// each new segment, so a provider may switch it at run time.
        const HUGE_PAGES = 1 << 4;
        /// `entropy` returns real randomness rather than a fixed fallback.
        const ENTROPY = 1 << 5;
        /// `now_ms` is a real clock (otherwise decay counts events).
        const CLOCK = 1 << 6;
    }
}

/// A source of page-aligned memory for the allocator core.
///
/// # Safety
/// Implementors promise that:
/// - `reserve(len, align)` returns either `None` or a pointer to `len` bytes
///   aligned to `align`, not overlapping any other live reservation, readable
///   and writable (after `commit` unless [`Capabilities::LAZY_COMMIT`]), and
///   zeroed if [`Capabilities::ZERO_ON_RESERVE`] is claimed;
/// - memory stays valid until the core passes the same range to `release`;
/// - no method allocates through the allocator being served (see the module
///   docs), and every method may be called from any thread concurrently;
/// - the claimed [`Capabilities`] are true.
pub unsafe trait PageProvider: Sync {
    /// What this provider's memory does.
    fn capabilities(&self) -> Capabilities;

    /// Reserves `len` bytes aligned to `align` (a power of two, at least
    /// [`PAGE_SIZE`]); `len` is a multiple of [`PAGE_SIZE`].
    fn reserve(&self, len: usize, align: usize) -> Option<NonNull<u8>>;

    /// Gives back a whole range obtained from `reserve`.
    ///
    /// # Safety
    /// `ptr`/`len` must be exactly a range returned by `reserve` that was not
    /// released since, and nothing may access it afterwards.
    unsafe fn release(&self, ptr: NonNull<u8>, len: usize);

    /// Makes `[ptr, ptr+len)` usable. Returns false when memory is exhausted.
    ///
    /// # Safety
    /// The range must lie inside a live reservation and be page-aligned.
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> bool;

    /// Tells the provider the contents of `[ptr, ptr+len)` are no longer
    /// needed; the memory may be returned to the system. The range stays
    /// reserved and is made usable again by `commit`.
    ///
    /// # Safety
    /// The range must lie inside a live reservation, be page-aligned, and
    /// hold no data anyone still needs.
    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize);

    /// Hints that `[ptr, ptr+len)` would benefit from huge pages. The core
    /// calls it (with [`Capabilities::HUGE_PAGES`]) on the hot part of each
    /// fresh segment: its header and first slabs, [`HUGE_PAGE_SIZE`]-aligned.
    ///
    /// # Safety
    /// The range must lie inside a live reservation.
    unsafe fn hint_huge_pages(&self, _ptr: NonNull<u8>, _len: usize) {}

    /// How many memory nodes (NUMA nodes) the machine has; node numbers run
    /// below it. 1, the default, means memory is uniform: the core then
    /// never calls [`PageProvider::current_node`] or
    /// [`PageProvider::bind_to_node`]. Called once, when the core starts,
    /// so it may read the system's description but must not allocate.
    fn node_count(&self) -> usize {
        1
    }

    /// The node of the processor the calling thread runs on, below
    /// [`PageProvider::node_count`] (a larger answer is taken as the last
    /// node). Called when a heap needs a segment, never on the allocation
    /// fast path, but it should still be cheap (no lock, at most one
    /// system call).
    fn current_node(&self) -> usize {
        0
    }

    /// Asks that the pages of `[ptr, ptr+len)` be placed on memory `node`
    /// from now on: a preference, not a requirement (the system may place
    /// them elsewhere when the node is full), and it need not move pages
    /// that are resident already. The default places nothing.
    ///
    /// # Safety
    /// The range must lie inside a live reservation and be page-aligned;
    /// `node` is below [`PageProvider::node_count`].
    unsafe fn bind_to_node(&self, _ptr: NonNull<u8>, _len: usize, _node: usize) {}

    /// Makes `[ptr, ptr+len)` inaccessible (`accessible == false`: any
    /// access faults) or accessible again. Returns false when the provider
    /// cannot; the core then goes without guard pages and relies on
    /// nothing else from this call.
    ///
    /// # Safety
    /// The range must lie inside a live reservation and be page-aligned;
    /// an inaccessible range must hold nothing anyone will touch.
    unsafe fn protect(&self, _ptr: NonNull<u8>, _len: usize, _accessible: bool) -> bool {
        false
    }

    /// Fills `buf` with random bytes; returns false if no entropy source.
    fn entropy(&self, _buf: &mut [u8]) -> bool {
        false
    }

    /// A monotonic clock in milliseconds, if the provider has one.
    fn now_ms(&self) -> u64 {
        0
    }

    /// Ends the process (or halts the kernel) after a detected heap misuse.
    /// `msg` is one line without a trailing newline. Must not return and must
    /// not allocate.
    fn fatal(&self, msg: &str) -> !;
}
