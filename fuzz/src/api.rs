//! Every call the harness makes into the core, in one place, so a change
//! of the core's API (such as the hardening presets) is a few lines here.
//!
//! An [`Instance`] is one allocator: a `Global` over the arena provider and
//! two heaps. Heap 1 stands for "another thread": blocks of heap 0 freed
//! through it take the remote-free path. Instances are thrown away, never
//! torn down: [`Instance::start`] resets the arena and clears the core's
//! global segment map over it, then builds a fresh `Global` in a static
//! slot, so an instance that ended in the fatal path (with locks held and
//! structures half-updated) costs nothing afterwards.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::sync::atomic::Ordering;

use apex_core::layout::{SEGMENT_SIZE, SLICE_SIZE};
use apex_core::segment::HEADER_SLICES;
use apex_core::{segment_map, Global, Heap};

use crate::arena::{Setup, PROVIDER};

/// Run-time options and mitigations of an instance.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub setup: Setup,
    pub purge_delay_ms: u64,
    pub segment_cache: usize,
    pub huge_cache_bytes: usize,
    /// `apex_core::harden::Mitigations` bits; `None` keeps the core's
    /// default preset.
    pub mitigations: Option<u32>,
}

/// The storage every instance's `Global` is built in.
struct Slot(UnsafeCell<MaybeUninit<Global>>);
// SAFETY: the harness is single-threaded; the slot is rewritten only by
// `Instance::start`, when no reference to the previous instance is used
// any more (the previous `Instance` was dropped or is never touched again).
unsafe impl Sync for Slot {}
static SLOT: Slot = Slot(UnsafeCell::new(MaybeUninit::uninit()));

/// The mitigations the `corrupt` target always runs with: those that
/// promise to stop its attacks (forged links, double and invalid frees).
/// Without them those attacks are not expected to be caught; the `ops`
/// target covers every preset, `off` included.
pub fn with_attack_mitigations(m: Option<u32>) -> Option<u32> {
    use apex_core::harden::Mitigations;
    let m = m.map_or(Mitigations::DEFAULT, Mitigations::from_bits_truncate);
    Some((m | Mitigations::LINKS | Mitigations::BITMAP).bits())
}

/// Bytes at the start of a segment that hold its header (never a block).
pub const HEADER_BYTES: usize = HEADER_SLICES * SLICE_SIZE;

/// One allocator instance and its two heaps.
pub struct Instance {
    global: &'static Global,
    heaps: [NonNull<Heap>; 2],
}

impl Instance {
    /// A fresh instance. The previous one must not be used again.
    pub fn start(cfg: &Config) -> Instance {
        let (base, used) = PROVIDER.reset(cfg.setup);
        // The segment map is global to the process: forget every segment
        // of the previous instance, which the core never removed if it
        // ended in the fatal path (or simply kept its memory).
        let mut unit = base;
        while unit < base + used {
            segment_map::remove(unit);
            unit += SEGMENT_SIZE;
        }
        // SAFETY: see `Slot`: nothing refers to the previous `Global` any
        // more; it owns no resources outside the arena, so it is
        // overwritten without being dropped.
        let global: &'static Global = unsafe { (*SLOT.0.get()).write(Global::new(&PROVIDER)) };
        global
            .options
            .purge_delay
            .store(cfg.purge_delay_ms, Ordering::Relaxed);
        global
            .options
            .segment_cache
            .store(cfg.segment_cache, Ordering::Relaxed);
        global
            .options
            .huge_cache_bytes
            .store(cfg.huge_cache_bytes, Ordering::Relaxed);
        if let Some(bits) = cfg.mitigations {
            global.set_mitigations(apex_core::harden::Mitigations::from_bits_truncate(bits));
        }
        let heap = || Heap::create(global).expect("the first metadata chunk always fits");
        let heaps = [heap(), heap()];
        Instance { global, heaps }
    }

    fn heap(&mut self, h: usize) -> &mut Heap {
        // SAFETY: both heaps are live for the instance's lifetime and used
        // by this thread only; `&mut self` makes the borrow exclusive.
        unsafe { &mut *self.heaps[h & 1].as_ptr() }
    }

    pub fn malloc(&mut self, h: usize, size: usize) -> *mut u8 {
        self.heap(h).malloc(size)
    }

    pub fn zalloc(&mut self, h: usize, size: usize) -> *mut u8 {
        self.heap(h).zalloc(size)
    }

    pub fn malloc_aligned(&mut self, h: usize, size: usize, align: usize) -> *mut u8 {
        self.heap(h).malloc_aligned(size, align)
    }

    pub fn zalloc_aligned(&mut self, h: usize, size: usize, align: usize) -> *mut u8 {
        self.heap(h).zalloc_aligned(size, align)
    }

    /// # Safety
    /// `p` is a live block of this instance, or (to attack it) any pointer
    /// whose reads by the core stay inside the arena or fault there.
    pub unsafe fn realloc(&mut self, h: usize, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { self.heap(h).realloc(p, size) }
    }

    /// # Safety
    /// `p` was allocated with at least `align` alignment; as [`Instance::realloc`].
    pub unsafe fn realloc_aligned(
        &mut self,
        h: usize,
        p: *mut u8,
        align: usize,
        size: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { self.heap(h).realloc_aligned(p, align, size) }
    }

    /// # Safety
    /// As [`Instance::realloc`]; `p` is not used afterwards.
    pub unsafe fn free(&mut self, h: usize, p: *mut u8) {
        // SAFETY: forwarded from the caller.
        unsafe { self.heap(h).free(p) }
    }

    /// # Safety
    /// As [`Instance::realloc`].
    pub unsafe fn usable_size(&self, p: *const u8) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { apex_core::usable_size(p) }
    }

    /// Checks both heaps and what no heap owns.
    pub fn verify(&mut self) -> Result<(), String> {
        for h in 0..2 {
            if let Err(e) = self.heap(h).verify() {
                return Err(format!("heap {h}: {} at {:#x}", e.what, e.at));
            }
        }
        self.global
            .verify()
            .map_err(|e| format!("global: {} at {:#x}", e.what, e.at))
    }

    pub fn decay(&mut self, h: usize) {
        self.heap(h).decay();
    }

    pub fn release_now(&mut self, h: usize) {
        self.heap(h).release_now();
    }

    pub fn release_empty_slabs(&mut self, h: usize) {
        self.heap(h).release_empty_slabs();
    }

    /// Destroys heap `h` (its segments are abandoned, its blocks stay
    /// live) and creates a new one in its place, as a thread exiting and
    /// another starting.
    pub fn recreate(&mut self, h: usize) {
        let old = self.heaps[h & 1];
        // SAFETY: `old` came from `Heap::create` and is replaced below.
        unsafe { Heap::destroy(old) };
        self.heaps[h & 1] = Heap::create(self.global).expect("a retired heap record is reused");
    }

    /// `(mallocs - frees, bytes allocated)` over every heap.
    pub fn live_counts(&self) -> (u64, u64) {
        let s = apex_core::snapshot(self.global);
        (s.mallocs.wrapping_sub(s.frees), s.allocated)
    }

    /// Whether `base` is a segment the core owns now.
    pub fn is_segment(base: usize) -> bool {
        segment_map::contains(base)
    }
}
