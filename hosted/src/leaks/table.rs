//! The live samples (address, size, backtrace) and the distinct
//! backtraces, in memory mapped from the system (never `malloc`), under one
//! spin lock; and the counters a free reads without the lock to tell that
//! its block cannot have been sampled.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use spin::Mutex;

use super::backtrace::DEPTH;

/// A live sampled block.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Live {
    /// The block's address; 0: an empty slot.
    pub(super) addr: usize,
    /// The size requested.
    pub(super) size: usize,
    /// Its backtrace's index in the stack table.
    pub(super) stack: u32,
    _pad: u32,
}

/// What a removed sample was.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    size: usize,
    stack: u32,
}

/// A distinct backtrace.
#[repr(C)]
pub(super) struct Stack {
    hash: u64,
    pub(super) depth: u32,
    _pad: u32,
    pub(super) frames: [usize; DEPTH],
}

/// Live-table slots at first, and at most (24 bytes each).
const LIVE_MIN: usize = 1 << 12;
const LIVE_MAX: usize = 1 << 22;
/// Distinct backtraces kept at most, and their hash index's slots.
const STACKS_MAX: usize = 1 << 16;
const INDEX_SLOTS: usize = 2 * STACKS_MAX;
/// Counters of live samples by address hash, read without the lock.
const FILTER_LEN: usize = 1 << 18;

/// The filter (null until the first sample).
pub(super) static FILTER: AtomicPtr<AtomicU8> = AtomicPtr::new(ptr::null_mut());

pub(super) static TABLES: Mutex<Tables> = Mutex::new(Tables::new());

/// The live samples and the distinct backtraces, in mapped memory.
pub(super) struct Tables {
    live: *mut Live,
    live_slots: usize,
    live_len: usize,
    pub(super) stacks: *mut Stack,
    pub(super) stacks_len: usize,
    index: *mut u32,
    filter: *mut AtomicU8,
    /// Samples dropped because a table was full.
    pub(super) dropped: u64,
    /// Mapping the tables failed: every sample is dropped.
    failed: bool,
}

// SAFETY: the pointers are to mappings owned by the tables, used only
// under the lock.
unsafe impl Send for Tables {}

/// Multiplicative hash of an address (blocks are 16-byte aligned).
fn addr_hash(addr: usize) -> u64 {
    ((addr >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The filter counter of `addr`.
pub(super) fn filter_slot(addr: usize) -> usize {
    (addr_hash(addr) >> (64 - FILTER_LEN.trailing_zeros())) as usize
}

/// `bytes` of fresh zeroed memory from the system; null on failure.
pub(super) fn map(bytes: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Returns a mapping of [`map`].
///
/// # Safety
/// `p` and `bytes` must be those of one earlier [`map`], not used after.
pub(super) unsafe fn unmap(p: *mut u8, bytes: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(p.cast(), bytes) };
}

impl Tables {
    const fn new() -> Self {
        Tables {
            live: ptr::null_mut(),
            live_slots: 0,
            live_len: 0,
            stacks: ptr::null_mut(),
            stacks_len: 0,
            index: ptr::null_mut(),
            filter: ptr::null_mut(),
            dropped: 0,
            failed: false,
        }
    }

    /// Maps the tables on first use; false if that failed.
    fn ready(&mut self) -> bool {
        if !self.live.is_null() {
            return true;
        }
        if self.failed {
            return false;
        }
        let live = map(LIVE_MIN * size_of::<Live>());
        let stacks = map(STACKS_MAX * size_of::<Stack>());
        let index = map(INDEX_SLOTS * size_of::<u32>());
        let filter = map(FILTER_LEN);
        if live.is_null() || stacks.is_null() || index.is_null() || filter.is_null() {
            self.failed = true;
            return false;
        }
        self.live = live.cast();
        self.live_slots = LIVE_MIN;
        self.stacks = stacks.cast();
        self.index = index.cast();
        self.filter = filter.cast();
        FILTER.store(self.filter, Ordering::Release);
        true
    }

    /// Records a sample: block `addr` of `size` bytes allocated from
    /// `frames`. A block already recorded is overwritten.
    pub(super) fn insert(&mut self, addr: usize, size: usize, frames: &[usize]) {
        if !self.ready() {
            self.dropped += 1;
            return;
        }
        let Some(stack) = self.stack_id(frames) else {
            self.dropped += 1;
            return;
        };
        if !self.put(addr, Sample { size, stack }) {
            self.dropped += 1;
        }
    }

    /// Puts back a sample [`Tables::remove`] took (a failed `realloc`).
    pub(super) fn restore(&mut self, addr: usize, s: Sample) {
        if !self.put(addr, s) {
            self.dropped += 1;
        }
    }

    /// The index of the backtrace `frames`, added if new; `None` when the
    /// stack table is full.
    fn stack_id(&mut self, frames: &[usize]) -> Option<u32> {
        let hash = frames.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &f| {
            (h ^ f as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let mask = INDEX_SLOTS - 1;
        let mut slot = (hash as usize) & mask;
        loop {
            // SAFETY: the index has INDEX_SLOTS entries; slot <= mask.
            let entry = unsafe { &mut *self.index.add(slot) };
            if *entry == 0 {
                if self.stacks_len == STACKS_MAX {
                    return None;
                }
                let id = self.stacks_len;
                let mut s = Stack {
                    hash,
                    depth: frames.len() as u32,
                    _pad: 0,
                    frames: [0; DEPTH],
                };
                s.frames[..frames.len()].copy_from_slice(frames);
                // SAFETY: id < STACKS_MAX, the table's capacity.
                unsafe { self.stacks.add(id).write(s) };
                self.stacks_len += 1;
                *entry = id as u32 + 1;
                return Some(id as u32);
            }
            let id = *entry - 1;
            // SAFETY: index entries name stacks already written.
            let s = unsafe { &*self.stacks.add(id as usize) };
            if s.hash == hash && s.frames[..s.depth as usize] == *frames {
                return Some(id);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn live_slot(&self, addr: usize) -> usize {
        (addr_hash(addr) >> (64 - self.live_slots.trailing_zeros())) as usize
    }

    /// Slot `i` of the live table (`i < live_slots`).
    fn get(&self, i: usize) -> Live {
        debug_assert!(i < self.live_slots);
        // SAFETY: the table has `live_slots` entries, used only under the
        // lock.
        unsafe { self.live.add(i).read() }
    }

    /// Writes slot `i` of the live table (`i < live_slots`).
    fn set(&mut self, i: usize, e: Live) {
        debug_assert!(i < self.live_slots);
        // SAFETY: as in `get`.
        unsafe { self.live.add(i).write(e) }
    }

    /// Adds or overwrites the live sample at `addr`; false when the table
    /// is full and cannot grow.
    fn put(&mut self, addr: usize, s: Sample) -> bool {
        if !self.ready() {
            return false;
        }
        if (self.live_len + 1) * 2 > self.live_slots {
            self.grow();
            // Past half full only when growing failed: allow up to 7/8.
            if (self.live_len + 1) * 8 > self.live_slots * 7 {
                return false;
            }
        }
        let mask = self.live_slots - 1;
        let mut i = self.live_slot(addr);
        let entry = Live {
            addr,
            size: s.size,
            stack: s.stack,
            _pad: 0,
        };
        loop {
            let e = self.get(i);
            if e.addr == addr {
                self.set(i, entry);
                return true;
            }
            if e.addr == 0 {
                self.set(i, entry);
                self.live_len += 1;
                // SAFETY: the filter has FILTER_LEN counters.
                let c = unsafe { &*self.filter.add(filter_slot(addr)) };
                let n = c.load(Ordering::Relaxed);
                // A saturated counter stays (it can no longer count down).
                if n < u8::MAX {
                    c.store(n + 1, Ordering::Relaxed);
                }
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes the live sample at `addr` (backward-shift deletion, so no
    /// tombstones accumulate).
    pub(super) fn remove(&mut self, addr: usize) -> Option<Sample> {
        if self.live.is_null() {
            return None;
        }
        let mask = self.live_slots - 1;
        let mut i = self.live_slot(addr);
        loop {
            let e = self.get(i);
            if e.addr == 0 {
                return None;
            }
            if e.addr == addr {
                break;
            }
            i = (i + 1) & mask;
        }
        let found = self.get(i);
        // Shift later entries of the run back into the hole when their
        // home slot does not lie between the hole and them.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.get(j);
            if e.addr == 0 {
                break;
            }
            let home = self.live_slot(e.addr);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.set(hole, e);
                hole = j;
            }
        }
        self.set(
            hole,
            Live {
                addr: 0,
                size: 0,
                stack: 0,
                _pad: 0,
            },
        );
        self.live_len -= 1;
        // SAFETY: the filter has FILTER_LEN counters.
        let c = unsafe { &*self.filter.add(filter_slot(addr)) };
        let n = c.load(Ordering::Relaxed);
        if n != 0 && n < u8::MAX {
            c.store(n - 1, Ordering::Relaxed);
        }
        Some(Sample {
            size: found.size,
            stack: found.stack,
        })
    }

    /// Doubles the live table (nothing changes if it cannot).
    fn grow(&mut self) {
        let slots = self.live_slots * 2;
        if slots > LIVE_MAX {
            return;
        }
        let new = map(slots * size_of::<Live>()).cast::<Live>();
        if new.is_null() {
            return;
        }
        let (old, old_slots) = (self.live, self.live_slots);
        self.live = new;
        self.live_slots = slots;
        let mask = slots - 1;
        for k in 0..old_slots {
            // SAFETY: k < old_slots, the old table's size.
            let e = unsafe { *old.add(k) };
            if e.addr == 0 {
                continue;
            }
            let mut i = self.live_slot(e.addr);
            while self.get(i).addr != 0 {
                i = (i + 1) & mask;
            }
            self.set(i, e);
        }
        // SAFETY: the old table, mapped with this size, no longer used.
        unsafe { unmap(old.cast(), old_slots * size_of::<Live>()) };
    }

    /// Calls `f` with each live sample.
    pub(super) fn for_each_live(&self, mut f: impl FnMut(&Live)) {
        for i in 0..self.live_slots {
            let e = self.get(i);
            if e.addr != 0 {
                f(&e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// The tables against a model: inserts, overwrites, removes (with the
    /// runs backward deletion shifts) and growth.
    #[test]
    fn tables_match_a_model() {
        let mut t = Tables::new();
        let mut model = std::collections::BTreeMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..200_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Few distinct addresses, so there are many collisions.
            let addr = 0x1000 + ((rng % 20_000) as usize) * 16;
            if rng & (1 << 40) == 0 {
                let frames = [addr & 0xff0, 7];
                t.insert(addr, step as usize, &frames[..1 + (rng >> 50) as usize % 2]);
                model.insert(addr, step as usize);
            } else {
                let got = t.remove(addr).map(|s| s.size);
                assert_eq!(got, model.remove(&addr), "step {step}");
            }
        }
        assert_eq!(t.live_len, model.len());
        assert!(t.live_slots >= 2 * model.len());
        let mut seen = 0;
        t.for_each_live(|e| {
            assert_eq!(model.get(&e.addr), Some(&e.size));
            seen += 1;
        });
        assert_eq!(seen, model.len());
        assert_eq!(t.dropped, 0);
        // Frames 0x000..0xff0 in steps of 16, alone or with a 7: at most
        // 512 distinct backtraces.
        assert!(t.stacks_len <= 512, "{}", t.stacks_len);
        // Filter counters are exact while nothing saturates.
        for (&addr, _) in model.iter().take(100) {
            // SAFETY: the filter has FILTER_LEN counters.
            let c = unsafe { &*t.filter.add(filter_slot(addr)) };
            assert!(c.load(Ordering::Relaxed) >= 1);
        }
    }
}
