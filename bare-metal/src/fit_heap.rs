//! The kernel heap's blocks above the slab limit: one best-fit instance
//! ([`apex_core::fit::Fit`]) per CPU, over chunks of pages from the page
//! provider.
//!
//! [`KernelAlloc`] sends a request here when it is
//! above its slab limit (or when the CPU's slab heap has no room left). A
//! block is cut to its request (16-byte granules plus an 8-byte header)
//! from a chunk, and freed neighbours merge, so big blocks waste almost
//! nothing, where a slab of a few of them left most of its memory idle.
//!
//! - **Chunks.** An instance that has no free block for a request takes a
//!   chunk of [`CHUNK`] bytes from the provider (one naturally aligned
//!   buddy block, so nothing of the buddy's is left in pieces), or a
//!   larger one cut to a larger request; when the provider has no block
//!   that large, it halves the size down to what the request needs, so
//!   the last free pages still serve blocks. A chunk that becomes entirely
//!   free goes back to the provider at once, except one per instance, kept
//!   against alloc/free cycles at a chunk boundary.
//! - **Ownership.** Each block's header names its instance (the CPU index,
//!   or [`SHARED`] for the shared one). A CPU frees its own blocks in place;
//!   another CPU's block goes onto that CPU's [`RemoteFrees`] stack (no
//!   lock), which the owner empties before it takes more memory, and in
//!   [`KernelAlloc::release_now`](crate::KernelAlloc::release_now).
//! - **Locks.** A CPU's instance is guarded by the CPU's re-entrancy flag,
//!   like its slab heap: no lock, interrupts stay enabled. The shared
//!   instance is used only under the shared lock, with interrupts masked.
//!   The provider masks interrupts around its own lock. Pushing a remote
//!   free takes no lock, so an interrupt handler may free any block.
//! - **State.** An instance's lists take about 20 KiB, reserved from the
//!   provider when the CPU first allocates a big block.

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use apex_core::fatal::Misuse;
use apex_core::fit::{
    self, Chunk, Fit, FitMisuse, RemoteFrees, CHUNK_OVERHEAD, GRANULE, MIN_BLOCK,
};
use apex_core::harden::Mitigations;
use apex_core::provider::{PageProvider, PAGE_SIZE};

use crate::kernel_alloc::{KernelAlloc, Local, Slot};
use crate::percpu::{CpuIndex, MAX_CPUS};

/// The chunk size an instance asks for first (a power of two, so a chunk
/// is exactly one buddy block).
pub const CHUNK: usize = 1 << 20;

/// The owner number of the shared instance (CPUs are `0..MAX_CPUS`).
pub const SHARED: usize = MAX_CPUS;

/// Owner numbers in use: every CPU and the shared instance.
pub(crate) const OWNERS: usize = MAX_CPUS + 1;

const _: () = assert!(OWNERS - 1 <= fit::MAX_OWNER);

/// Empty chunks an instance keeps.
const KEEP_EMPTY: usize = 1;

/// Bytes of freed blocks an instance keeps on its quick lists (see
/// [`apex_core::fit`]): given up whenever it runs out of free blocks, and
/// in [`KernelAlloc::release_now`](crate::KernelAlloc::release_now).
pub const QUICK_BUDGET: usize = 64 * 1024;

/// One owner's remote-free stack, on a cache line of its own (other CPUs
/// write it; the owner reads it when it runs out of free blocks).
#[repr(align(64))]
pub(crate) struct RemoteSlot(pub(crate) RemoteFrees);

/// Bytes reserved for an instance's state.
const STATE_BYTES: usize = size_of::<Fit>().next_multiple_of(PAGE_SIZE);

impl<C: CpuIndex> KernelAlloc<C> {
    fn provider(&self) -> &'static dyn PageProvider {
        self.global().provider()
    }

    /// Whether best fit may serve blocks: not when the instance's
    /// mitigations include ones only the slab heaps have (canaries,
    /// zeroing, quarantines). Then every block goes to the slab heaps from
    /// here on.
    pub(crate) fn fit_allowed(&self) -> bool {
        let allowed = !self
            .global()
            .mitigations()
            .intersects(Mitigations::SLOW_PATHS);
        if !allowed {
            self.slab_limit.store(usize::MAX, Ordering::Relaxed);
        }
        allowed
    }

    /// Reports a misuse the fit instance found; never returns.
    #[cold]
    pub(crate) fn fit_misuse(&self, (what, addr): FitMisuse, size: Option<usize>) -> ! {
        self.global().misuse(what, addr, size)
    }

    /// The slot's fit instance, created on first use; `None` when its
    /// state cannot be reserved.
    fn fit_of<'a>(&self, l: &'a mut Local, owner: usize) -> Option<&'a mut Fit> {
        if l.fit.is_none() {
            let base = self.provider().reserve(STATE_BYTES, PAGE_SIZE)?;
            let state = base.cast::<Fit>();
            // SAFETY: a fresh reservation of at least `size_of::<Fit>()`
            // bytes, page-aligned, ours for good.
            unsafe {
                Fit::init(
                    state.as_ptr(),
                    owner,
                    KEEP_EMPTY,
                    QUICK_BUDGET,
                    self.global().key(),
                )
            };
            l.fit = Some(state);
            // The slab limit is final once best fit serves a block (see
            // `fit_allowed`, which runs first).
            if self.slab_limit.load(Ordering::Relaxed) == 0 {
                l.quick = l.fit;
            }
            crate::log_debug!("KernelAlloc: fit instance {=usize} created", owner);
        }
        // SAFETY: the caller holds the slot exclusively (its CPU's flag or
        // the shared lock) for the life of the reference.
        l.fit.map(|f| unsafe { &mut *f.as_ptr() })
    }

    /// Allocates `size` bytes aligned to `align` from the slot's fit
    /// instance, adding a chunk when no free block fits; null when the
    /// provider has no room either.
    pub(crate) fn fit_alloc(&self, s: &mut Slot<'_>, size: usize, align: usize) -> *mut u8 {
        let owner = s.who;
        let Some(fit) = self.fit_of(s.local, owner) else {
            return ptr::null_mut();
        };
        let mut p = fit
            .alloc(size, align)
            .unwrap_or_else(|m| self.fit_misuse(m, None));
        if p.is_null() {
            // Blocks other CPUs freed come back before more memory is
            // taken.
            let remote = &self.remote[owner].0;
            if !remote.is_empty() {
                self.drain(fit, remote);
                p = fit
                    .alloc(size, align)
                    .unwrap_or_else(|m| self.fit_misuse(m, None));
            }
        }
        if p.is_null() {
            if !self.grow(fit, size, align) {
                return ptr::null_mut();
            }
            p = fit
                .alloc(size, align)
                .unwrap_or_else(|m| self.fit_misuse(m, None));
        }
        p
    }

    /// Frees a block of the slot's own fit instance, returning a chunk it
    /// leaves empty to the provider.
    ///
    /// # Safety
    /// `p` is a live block of this instance, not used afterwards.
    pub(crate) unsafe fn fit_free_local(&self, l: &mut Local, owner: usize, p: *mut u8) {
        let Some(fit) = self.fit_of(l, owner) else {
            // A block of this owner exists, so its instance does.
            self.fit_misuse((Misuse::InvalidFree, p as usize), None)
        };
        // SAFETY: the caller's contract.
        match unsafe { fit.free(p) } {
            Ok(chunk) => self.give_back(chunk),
            Err(m) => self.fit_misuse(m, None),
        }
    }

    /// Resizes a block of the slot's own fit instance in place; false when
    /// its neighbour leaves no room.
    ///
    /// # Safety
    /// `p` is a live block of the slot's instance.
    pub(crate) unsafe fn fit_resize_local(
        &self,
        l: &mut Local,
        p: *mut u8,
        new_size: usize,
    ) -> bool {
        let Some(fit) = l.fit else { return false };
        // SAFETY: the caller holds the slot; `p` is live (its contract).
        unsafe { (*fit.as_ptr()).resize(p, new_size) }.unwrap_or_else(|m| self.fit_misuse(m, None))
    }

    /// [`Fit::slide`] on the slot's own instance: the block moves down
    /// into its free neighbour; null when the neighbours are too small.
    ///
    /// # Safety
    /// `p` is a live block of the slot's instance holding `keep` bytes.
    pub(crate) unsafe fn fit_slide_local(
        &self,
        l: &mut Local,
        p: *mut u8,
        new_size: usize,
        keep: usize,
    ) -> *mut u8 {
        let Some(fit) = l.fit else {
            return ptr::null_mut();
        };
        // SAFETY: the caller holds the slot; `p` is live (its contract).
        unsafe { (*fit.as_ptr()).slide(p, new_size, keep) }
            .unwrap_or_else(|m| self.fit_misuse(m, None))
    }

    /// Frees each block other CPUs handed this instance.
    fn drain(&self, fit: &mut Fit, remote: &RemoteFrees) {
        let mut p = remote.take();
        while !p.is_null() {
            // SAFETY: blocks on an owner's stack are live blocks of its
            // instance, pushed once.
            unsafe {
                let next = RemoteFrees::next(p);
                match fit.free(p) {
                    Ok(chunk) => self.give_back(chunk),
                    Err(m) => self.fit_misuse(m, None),
                }
                p = next;
            }
        }
    }

    /// A chunk an instance no longer uses goes back to the provider.
    pub(crate) fn give_back(&self, chunk: Option<Chunk>) {
        if let Some(c) = chunk {
            // SAFETY: the chunk is exactly a reservation `grow` made, and
            // the instance holds nothing in it any more.
            unsafe {
                self.provider()
                    .release(NonNull::new_unchecked(c.base as *mut u8), c.len)
            };
            self.chunk_bytes.fetch_sub(c.len, Ordering::Relaxed);
        }
    }

    /// Gives `fit` a chunk with a free block for `size` bytes aligned to
    /// `align`: [`CHUNK`] bytes, or the request rounded to pages if that is
    /// larger, halved down to what the request needs while the provider
    /// has no block that large. False when even that fails.
    fn grow(&self, fit: &mut Fit, size: usize, align: usize) -> bool {
        let extra = if align > GRANULE {
            align + MIN_BLOCK
        } else {
            0
        };
        let Some(need) = fit::block_size_for(size)
            .and_then(|b| b.checked_add(extra + CHUNK_OVERHEAD))
            .and_then(|n| n.checked_next_multiple_of(PAGE_SIZE))
            .filter(|&n| n <= fit::MAX_BLOCK)
        else {
            return false;
        };
        let mut len = need.max(CHUNK);
        loop {
            if let Some(base) = self.provider().reserve(len, PAGE_SIZE) {
                // SAFETY: a fresh reservation, page-aligned, `len` bytes
                // (a multiple of 16 and at least one block).
                unsafe { fit.add_chunk(base.as_ptr() as usize, len, 0) };
                self.chunk_bytes.fetch_add(len, Ordering::Relaxed);
                return true;
            }
            if len == need {
                return false;
            }
            len = (len / 2).max(need);
        }
    }

    /// Frees a best-fit block while holding a slot: in place when it is the
    /// slot's own; else under the shared lock when it is the shared
    /// instance's, or onto its owner's stack. Counted as the slot's free.
    ///
    /// # Safety
    /// `p` is a live block of a fit instance of this allocator, not used
    /// afterwards.
    #[inline(always)]
    pub(crate) unsafe fn fit_free_in(&self, s: &mut Slot<'_>, p: *mut u8) {
        // SAFETY: the caller's contract: a header precedes the block.
        let owner = unsafe { fit::owner_of(p) };
        s.counts.free();
        if owner == Some(s.who) {
            if let Some(f) = s.local.fit {
                // SAFETY: the caller holds the slot; the block is its
                // instance's (the caller's contract).
                match unsafe { (*f.as_ptr()).free(p) } {
                    Ok(None) => return,
                    Ok(chunk) => return self.give_back(chunk),
                    Err(m) => self.fit_misuse(m, None),
                }
            }
        }
        if owner != Some(SHARED) {
            s.counts.remote_free();
        }
        // SAFETY: forwarded.
        unsafe { self.fit_free_elsewhere(owner, p) }
    }

    /// [`KernelAlloc::fit_free_in`] of a block that is not the slot's.
    ///
    /// # Safety
    /// As [`KernelAlloc::fit_free_in`].
    #[cold]
    #[inline(never)]
    unsafe fn fit_free_elsewhere(&self, owner: Option<usize>, p: *mut u8) {
        match owner {
            // Taking the shared lock inside a CPU's slot is safe: the lock
            // is only ever held with interrupts masked, and its holders
            // never wait for a CPU's slot.
            // SAFETY: forwarded from the caller.
            Some(SHARED) => self.on_shared(|s| unsafe { self.fit_free_local(s.local, SHARED, p) }),
            // SAFETY: forwarded from the caller; the owner frees it.
            Some(o) if o < OWNERS => unsafe { self.remote[o].0.push(p) },
            _ => self.fit_misuse((Misuse::InvalidFree, p as usize), None),
        }
    }

    /// Frees what other CPUs handed the slot's instance and returns its
    /// empty chunks to the provider.
    pub(crate) fn fit_trim(&self, l: &mut Local, owner: usize) {
        let Some(f) = l.fit else { return };
        // SAFETY: the caller holds the slot.
        let fit = unsafe { &mut *f.as_ptr() };
        self.drain(fit, &self.remote[owner].0);
        if let Err(m) = fit.release_empty(|c| self.give_back(Some(c))) {
            self.fit_misuse(m, None);
        }
    }

    /// Returns every chunk of the slot's instance and its state to the
    /// provider.
    ///
    /// # Safety
    /// None of the instance's blocks is used again (all were freed, or
    /// are abandoned with it).
    pub(crate) unsafe fn fit_destroy(&self, l: &mut Local, owner: usize) {
        l.quick = None;
        let Some(f) = l.fit.take() else { return };
        // Blocks waiting on the stack are the instance's; dropped with it.
        let _ = self.remote[owner].0.take();
        // SAFETY: the caller holds the slot and gives the instance up.
        unsafe {
            (*f.as_ptr()).release_all(|c| self.give_back(Some(c)));
            self.provider().release(f.cast(), STATE_BYTES);
        }
    }
}
