//! The heap's side of the mitigations (see [`crate::harden`]): collecting
//! remote frees against the live-block bitmap, carving in random order,
//! and the out-of-line paths of the `full` preset (canaries, zero on free,
//! the quarantine).

use core::ptr;

use crate::block::{next_of, Block};
use crate::fatal::Misuse;
use crate::harden::Mitigations;
use crate::layout::segment_base_of;
use crate::remote::{Notify, RemotePush};
use crate::segment::{segment_of, Segment};
use crate::segment_map;
use crate::span::{Span, SpanKind};

use super::*;

/// Bytes of the canary after each small block.
const CANARY_BYTES: usize = 8;

/// [`Mitigations::SHUFFLE`] shuffles fresh blocks inside groups of
/// neighbours at least this many bytes long...
const SHUFFLE_GROUP_BYTES: usize = 256;
/// ...and at least this many blocks.
const SHUFFLE_GROUP_MIN: usize = 4;

/// How many neighbouring blocks of `block_size` bytes [`Heap::extend`]
/// shuffles together under [`Mitigations::SHUFFLE`]. Blocks handed out
/// one after another stay within a few cache lines of each other: programs
/// that use together what they allocated together (an interpreter's
/// objects, a database's rows) keep their cache locality. Shuffling each
/// whole 4 KiB carve spread them over 64 lines and cost CPython 25% of its
/// time; 256-byte groups cost nothing measurable, while consecutive blocks
/// still come at no fixed distance (see `docs/hardening.md`).
fn shuffle_group(block_size: usize) -> usize {
    (SHUFFLE_GROUP_BYTES / block_size.max(1)).max(SHUFFLE_GROUP_MIN)
}
/// Small blocks held back from reuse per heap.
pub(super) const QUARANTINE_SLOTS: usize = 128;
/// Large blocks held back (inaccessible) per heap.
pub(super) const LARGE_QUARANTINE_SLOTS: usize = 8;
/// A FIFO of blocks waiting before they can be reused.
pub(super) struct Quarantine<const N: usize> {
    slots: [usize; N],
    next: usize,
}

impl<const N: usize> Quarantine<N> {
    pub(super) const fn new() -> Self {
        Quarantine {
            slots: [0; N],
            next: 0,
        }
    }

    /// Whether `addr` is waiting here.
    fn holds(&self, addr: usize) -> bool {
        self.slots.contains(&addr)
    }

    /// Puts `entry` in and returns the oldest entry it displaces (0 if
    /// none).
    fn push(&mut self, entry: usize) -> usize {
        let old = self.slots[self.next];
        self.slots[self.next] = entry;
        self.next = (self.next + 1) % N;
        old
    }

    /// Takes every entry out, oldest first.
    fn drain(&mut self, mut f: impl FnMut(usize)) {
        for i in 0..N {
            let k = (self.next + i) % N;
            let e = core::mem::replace(&mut self.slots[k], 0);
            if e != 0 {
                f(e);
            }
        }
    }
}

/// The canary of the block at `b` of a slab with link secret `secret`.
#[inline]
fn canary(b: usize, secret: usize) -> u64 {
    (crate::global::mix64(b ^ secret) as u64) | 1
}

impl Heap {
    /// The bytes a small block gives up for its canary.
    #[inline(always)]
    pub(super) fn tail_bytes(&self) -> usize {
        if self.harden.contains(Mitigations::CANARY) {
            CANARY_BYTES
        } else {
            0
        }
    }

    /// Carves fresh blocks into `page`'s free list, in random order with
    /// [`Mitigations::SHUFFLE`] (inside groups of neighbours, or across the
    /// whole carve with [`Mitigations::WIDE_SHUFFLE`]), zeroed with
    /// [`Mitigations::ZERO`] (the reuse check expects every free block to
    /// read as zero).
    ///
    /// # Safety
    /// `page` is an own slab with an empty `free` list.
    pub(super) unsafe fn extend(&mut self, page: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe {
            let first = (*page).start + (*page).carved;
            let bytes = EXTEND_BYTES.max(MIN_EXTEND * (*page).block_size);
            // Blocks above half a page are carved a few at a time, in
            // address order: a page-sized carve of them would hold one
            // block, with no order to shuffle (and no division to pay).
            let one_block = (*page).block_size > EXTEND_BYTES / 2;
            let shuffle = if one_block {
                None
            } else if self.harden.contains(Mitigations::WIDE_SHUFFLE) {
                Some((&mut self.rng, usize::MAX))
            } else if self.harden.contains(Mitigations::SHUFFLE) {
                Some((&mut self.rng, shuffle_group((*page).block_size)))
            } else {
                None
            };
            let n = (*page).extend(bytes, shuffle);
            self.stats
                .add_class_mallocs((*page).class as usize, n as u64);
            if self.harden.contains(Mitigations::ZERO) && !(*page).span_is_zero && n > 0 {
                let bs = (*page).block_size;
                // Zero all but each block's link word.
                for i in 0..n as usize {
                    let b = first + i * bs;
                    ptr::write_bytes((b + 8) as *mut u8, 0, bs - 8);
                }
            }
        }
    }

    /// Moves remote frees (or, without any, `local_free`) into an empty
    /// `free` list. With the bitmap, each remotely freed block's live bit
    /// is cleared, which catches a block freed twice from other threads
    /// and a forged remote list.
    ///
    /// # Safety
    /// `page` is an own slab.
    pub(super) unsafe fn collect(&mut self, page: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe {
            if !(*page).free.is_null() {
                return;
            }
            let (tf, n) = (*page).thread_free.take();
            let c = (*page).class as usize;
            if tf.is_null() {
                // With `free` empty, every carved block not counted in
                // `used` is on `local_free`: the local frees since the last
                // collection, counted here in one go.
                let k = (*page).capacity.saturating_sub((*page).used) as u64;
                if k > 0 && !(*page).local_free.is_null() {
                    self.stats.add_class_frees(c, k);
                    self.stats.add_class_mallocs(c, k);
                }
                (*page).collect_local();
                return;
            }
            self.stats.add_class_mallocs(c, n as u64);
            if self.harden.contains(Mitigations::BITMAP) {
                self.clear_remote_bits(page, tf, n);
            }
            (*page).used -= n;
            (*page).free = tf;
            (*page).free_is_zero = false;
        }
    }

    /// Walks the `n` blocks of a remote list taken from `page`, clearing
    /// their live bits; ends the process on a block that is not a live
    /// block of the slab.
    ///
    /// # Safety
    /// `page` is an own slab and `tf`/`n` its taken remote list.
    #[cold]
    unsafe fn clear_remote_bits(&mut self, page: *mut Span, tf: *mut Block, n: u32) {
        // SAFETY: list members were checked to be blocks of this slab
        // before they are read.
        unsafe {
            let seg = segment_of(page);
            let mut b = tf;
            for _ in 0..n {
                if !(*page).is_carved_block(b as usize) {
                    self.corrupt_list(page, b);
                }
                if !(*seg).live.clear(b as usize) {
                    let size = (*page).block_size;
                    self.global
                        .misuse(Misuse::DoubleFree, b as usize, Some(size));
                }
                b = next_of(b, (*page).secret);
            }
            if !b.is_null() {
                self.corrupt_list(page, b);
            }
        }
    }

    /// The `full` checks of a block about to be handed out: still zero
    /// since it was freed (else something wrote to it after the free), and
    /// its canary written.
    ///
    /// # Safety
    /// `b` is a block of the own slab `page`, just popped.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn check_reused(&mut self, page: *mut Span, b: *mut Block) {
        // SAFETY: the block is ours and `block_size` long.
        unsafe {
            let bs = (*page).block_size;
            if self.harden.contains(Mitigations::ZERO) {
                // The first word holds the free-list link.
                let words = core::slice::from_raw_parts((b as *const u64).add(1), bs / 8 - 1);
                if words.iter().any(|&w| w != 0) {
                    self.global
                        .misuse(Misuse::WriteAfterFree, b as usize, Some(bs));
                }
            }
            if (*page).tail != 0 {
                let at = (b as usize + bs - CANARY_BYTES) as *mut u64;
                at.write(canary(b as usize, (*page).secret));
            }
        }
    }

    /// A slab block freed under the `full` preset (own or another heap's):
    /// its canary checked, its contents zeroed, then, if it is our own,
    /// held in the quarantine (the block it displaces is freed for real).
    ///
    /// # Safety
    /// `b` is a live block of the slab `page`, given up by the caller; for
    /// an own block (`own`) its live bit is already cleared.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn free_small_hardened(&mut self, page: *mut Span, b: *mut Block, own: bool) {
        // SAFETY: the caller's contract.
        unsafe {
            let bs = (*page).block_size;
            if (*page).tail != 0 {
                let at = (b as usize + bs - CANARY_BYTES) as *const u64;
                if at.read() != canary(b as usize, (*page).secret) {
                    self.global
                        .misuse(Misuse::HeapOverflow, b as usize, Some((*page).usable()));
                }
            }
            if self.harden.contains(Mitigations::ZERO) {
                ptr::write_bytes(b as *mut u8, 0, bs);
            }
            // Only own blocks wait here. Another heap's block goes to its
            // owner at once, whose live-block bitmap then catches a second
            // free of it; held here, a block freed twice could be handed
            // out again meanwhile, and the stale free would then reach its
            // next owner.
            if !own {
                return self.free_remote(segment_of(page), page, b);
            }
            if !self.harden.contains(Mitigations::QUARANTINE) {
                return self.push_local(page, b);
            }
            if self.quarantine.holds(b as usize) {
                self.global
                    .misuse(Misuse::DoubleFree, b as usize, Some((*page).usable()));
            }
            // Counted freed while it waits; counted back in as a cached
            // block when it reaches its slab's list (see `crate::stats`).
            self.stats.add_class_frees((*page).class as usize, 1);
            let old = self.quarantine.push(b as usize);
            if old != 0 {
                self.release_quarantined(old);
            }
        }
    }

    /// Frees a quarantined block for real, onto its slab's local list.
    /// Its slab stays ours and used while it waits (its `used` still counts
    /// it, and a heap empties its quarantine before it gives its segments
    /// up), so the block is checked, not trusted, only against corruption
    /// of the heap itself.
    unsafe fn release_quarantined(&mut self, addr: usize) {
        let seg = segment_base_of(addr) as *mut Segment;
        // SAFETY: read only once the map says the segment is live.
        let ours = segment_map::contains(seg as usize) && unsafe { (*seg).owner() } == self.id();
        let found = if ours {
            // SAFETY: a live segment of ours; `find_block` validates the
            // pointer.
            unsafe { find_block(seg, addr) }
        } else {
            Found::Invalid(Misuse::DoubleFree, None)
        };
        let Found::Block(page, _) = found else {
            self.global.misuse(Misuse::DoubleFree, addr, None);
        };
        // SAFETY: an own live block of the slab `page`, its bit cleared.
        unsafe {
            self.stats.add_class_mallocs((*page).class as usize, 1);
            self.push_local(page, addr as *mut Block);
        }
    }

    /// Frees every quarantined block for real (the heap is going away, or
    /// memory is short).
    pub(super) fn flush_quarantine(&mut self) {
        let mut q = core::mem::replace(&mut self.quarantine, Quarantine::new());
        // SAFETY: quarantined entries are blocks given up earlier.
        q.drain(|e| unsafe { self.release_quarantined(e) });
        let mut q = core::mem::replace(&mut self.large_quarantine, Quarantine::new());
        // SAFETY: as above; large entries are own, inaccessible blocks.
        q.drain(|e| unsafe { self.free_large_now(e) });
    }

    /// An own large block freed under [`Mitigations::QUARANTINE`]: made
    /// inaccessible and held back; the block it displaces is freed.
    ///
    /// # Safety
    /// `page` is an own large span whose block is given up.
    pub(super) unsafe fn quarantine_large(&mut self, page: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe {
            let start = (*page).start;
            if self.large_quarantine.holds(start) {
                self.global
                    .misuse(Misuse::DoubleFree, start, Some((*page).usable()));
            }
            let len = (*page).slice_count as usize * crate::layout::SLICE_SIZE;
            // Remote frees of it now report a double free without writing
            // the link into the inaccessible block.
            (*page).thread_free.set_notify(Notify::Freed);
            self.global.protect(start, len, false);
            let old = self.large_quarantine.push(start);
            if old != 0 {
                self.free_large_now(old);
            }
        }
    }

    /// Frees a quarantined own large block for real.
    unsafe fn free_large_now(&mut self, start: usize) {
        // SAFETY: quarantined large blocks are own spans that stay used.
        unsafe {
            let seg = segment_of(start as *const u8);
            let page = (*seg)
                .page_of(start)
                .map_or(ptr::null_mut(), |p| p as *const Span as *mut Span);
            if page.is_null() || (*page).kind != SpanKind::Large {
                self.global.misuse(Misuse::InvalidFree, start, None);
            }
            let len = (*page).slice_count as usize * crate::layout::SLICE_SIZE;
            self.global.protect(start, len, true);
            (*page).used = 0;
            self.retire_span(page);
        }
    }

    /// Makes the guard page after a large block accessible again (its span
    /// is about to be freed).
    ///
    /// # Safety
    /// `page` is an own large span whose block is given up.
    pub(super) unsafe fn unguard_large(&self, page: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe {
            let span_end = (*page).start + (*page).slice_count as usize * crate::layout::SLICE_SIZE;
            let block_end = (*page).start + (*page).block_size;
            if span_end > block_end {
                self.global.protect(block_end, span_end - block_end, true);
            }
        }
    }

    /// A free of an own block whose live bit is clear: freed already
    /// (it sits on a free list) or never handed out.
    ///
    /// # Safety
    /// `b` is a block start of the own slab `page`.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn free_not_live(&self, page: *mut Span, b: *mut Block) -> ! {
        // SAFETY: the caller's contract.
        unsafe {
            let size = Some((*page).usable());
            let freed = (*page).kind == SpanKind::Slab
                && ((*page).list_contains(b) || self.quarantine.holds(b as usize));
            let what = if freed || (*page).kind != SpanKind::Slab {
                Misuse::DoubleFree
            } else {
                Misuse::InvalidFree
            };
            self.global.misuse(what, b as usize, size)
        }
    }

    /// A pointer that is in no segment of ours: a huge block freed twice
    /// (its segment was a huge one, now gone), or a foreign pointer.
    /// Reported with [`Mitigations::FOREIGN`], counted and ignored without.
    #[cold]
    pub(super) fn free_foreign(&mut self, addr: usize, realloc: bool) {
        let seg = segment_base_of(addr);
        if self.harden.contains(Mitigations::FOREIGN) {
            let what = if segment_map::was_huge(seg) {
                Misuse::DoubleFree
            } else if realloc {
                Misuse::InvalidRealloc
            } else {
                Misuse::InvalidFree
            };
            self.global.misuse(what, addr, None);
        }
        self.global
            .stats
            .foreign_frees
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    /// Frees a block of another heap's span through the remote path.
    ///
    /// # Safety
    /// `b` is a live block of `page` in the live segment `seg`, given up.
    pub(super) unsafe fn free_remote(&mut self, seg: *mut Segment, page: *mut Span, b: *mut Block) {
        // SAFETY: the caller's contract.
        unsafe {
            crate::stats::bump(&self.stats.remote_frees, 1);
            let large = (*page).kind == SpanKind::Large;
            match (*page).thread_free.push(b, (*page).secret, false) {
                RemotePush::MustNotify => self.hand_over(page, seg, b),
                RemotePush::Freed => {
                    self.global
                        .misuse(Misuse::DoubleFree, b as usize, Some((*page).usable()))
                }
                // An owned large block's span waits in `Notify` for its one
                // free (and is `Freed` once that free was handed over); an
                // abandoned one's list holds at most that one free. (The
                // owner is not consulted: an adopter may be taking the
                // segment over right now.)
                RemotePush::Pushed if large && (*page).thread_free.count() > 1 => self
                    .global
                    .misuse(Misuse::DoubleFree, b as usize, Some((*page).usable())),
                _ => {}
            }
        }
    }
}
