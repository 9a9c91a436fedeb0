//! The shadow model: what every live block must look like, and the checks
//! every block the allocator hands out must pass.
//!
//! Contents are checked at sampled offsets (every byte of the first 16,
//! where free-list links live, then every 61st byte of the first and last
//! 4 KiB, a few bytes in between, and the last byte): a huge block is not
//! touched page by page, so an input stays fast whatever sizes it asks for.

use std::collections::{BTreeMap, VecDeque};

use apex_core::layout::SEGMENT_SIZE;

use crate::api::{Instance, HEADER_BYTES};
use crate::arena::PROVIDER;

/// Freed blocks remembered as targets of use-after-free writes and double
/// frees.
const MAX_FREED: usize = 64;
/// Ranges written by attacks, remembered to excuse zero checks.
const MAX_DIRTY: usize = 64;

/// A live block as the program sees it.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    /// Bytes asked for.
    pub size: usize,
    /// `usable_size` when handed out.
    pub usable: usize,
    pub align: usize,
    pub seed: u8,
    /// The heap that allocated it (frees through the other heap are remote).
    pub heap: usize,
    /// Overwritten by an attack: its contents are no longer checked.
    pub tainted: bool,
}

impl Block {
    /// Bytes of the block that no other live block may share.
    pub fn extent(&self) -> usize {
        self.usable.max(1)
    }

    /// What the block costs towards the input's memory bound.
    pub fn footprint(&self) -> usize {
        self.usable + if self.align > 4096 { self.align } else { 0 }
    }
}

/// The offsets of a `size`-byte block that are filled and checked.
pub fn positions(size: usize) -> impl Iterator<Item = usize> {
    let head = 0..size.min(16);
    let front = (16..size.min(4096)).step_by(61);
    let back_from = size.saturating_sub(4096).max(size.min(4096));
    let back = (back_from..size).step_by(61);
    let mid_step = if size > 8192 { size / 8 } else { 0 };
    let mid = (1..8usize)
        .map(move |k| k * mid_step)
        .filter(move |_| mid_step > 0);
    let last = size.saturating_sub(1)..size;
    head.chain(front).chain(back).chain(mid).chain(last)
}

/// The byte the pattern of `seed` puts at offset `i`.
fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(7))
        .wrapping_add((i >> 8) as u8)
}

/// The shadow model of one input's allocator instance.
#[derive(Default)]
pub struct Model {
    pub live: BTreeMap<usize, Block>,
    /// Live block addresses, for picking one by index.
    pub keys: Vec<usize>,
    pub live_bytes: usize,
    /// Recently freed blocks `(address, usable)`.
    pub freed: VecDeque<(usize, usize)>,
    /// Ranges attacks wrote to.
    pub dirty: VecDeque<(usize, usize)>,
    /// Whether an attack was made: after one, a fatal report or a broken
    /// invariant is the allocator detecting it.
    pub corrupted: bool,
}

impl Model {
    /// Whether any live block shares a byte with `[addr, addr+len)`.
    pub fn hits_live(&self, addr: usize, len: usize) -> bool {
        self.live_overlapping(addr, len).next().is_some()
    }

    /// The live blocks sharing a byte with `[addr, addr+len)`.
    pub fn live_overlapping(&self, addr: usize, len: usize) -> impl Iterator<Item = usize> + '_ {
        let end = addr.saturating_add(len.max(1));
        let before = self
            .live
            .range(..addr)
            .next_back()
            .filter(move |(&q, b)| q + b.extent() > addr)
            .map(|(&q, _)| q);
        let inside = self.live.range(addr..end).map(|(&q, _)| q);
        before.into_iter().chain(inside)
    }

    fn dirty_hits(&self, addr: usize, len: usize) -> bool {
        let end = addr + len;
        self.dirty.iter().any(|&(a, l)| a < end && addr < a + l)
    }

    pub fn remember_dirty(&mut self, addr: usize, len: usize) {
        if self.dirty.len() == MAX_DIRTY {
            self.dirty.pop_front();
        }
        self.dirty.push_back((addr, len));
    }

    pub fn remember_freed(&mut self, addr: usize, usable: usize) {
        if self.freed.len() == MAX_FREED {
            self.freed.pop_front();
        }
        self.freed.push_back((addr, usable));
    }

    /// Checks a block the allocator just handed out: alignment, usable
    /// size, memory that is reserved and accessible, outside every segment
    /// header, not shared with any live block; zeroed when asked. Returns
    /// its usable size.
    ///
    /// # Safety
    /// `p` was just returned by an allocation of `inst` (the checks make
    /// sure it is accessible before reading it).
    pub unsafe fn check_new(
        &self,
        inst: &Instance,
        p: *mut u8,
        size: usize,
        align: usize,
        zeroed: bool,
    ) -> usize {
        let addr = p as usize;
        assert_eq!(
            addr % align.max(16),
            0,
            "block {addr:#x} not aligned to {align}"
        );
        // SAFETY: a block the allocator just handed out.
        let usable = unsafe { inst.usable_size(p) };
        assert!(
            usable >= size,
            "block {addr:#x}: usable {usable} < requested {size}"
        );
        let extent = usable.max(1);
        assert!(
            PROVIDER.is_open(addr, extent),
            "block {addr:#x}+{usable} is not in reserved, accessible memory"
        );
        let mut unit = addr & !(SEGMENT_SIZE - 1);
        while unit < addr + extent {
            assert!(
                !(Instance::is_segment(unit) && addr < unit + HEADER_BYTES),
                "block {addr:#x}+{usable} overlaps the header of segment {unit:#x}"
            );
            unit += SEGMENT_SIZE;
        }
        if let Some(q) = self.live_overlapping(addr, extent).next() {
            let b = self.live[&q];
            panic!(
                "block {addr:#x}+{usable} (asked {size}) overlaps live block {q:#x}+{} (asked {})",
                b.usable, b.size
            );
        }
        if zeroed && !self.dirty_hits(addr, extent) {
            for i in positions(size) {
                // SAFETY: inside the block, accessible (checked above).
                let v = unsafe { *p.add(i) };
                assert_eq!(v, 0, "zeroed block {addr:#x}+{size}: byte {i} is {v:#x}");
            }
        }
        usable
    }

    /// Writes the block's pattern.
    ///
    /// # Safety
    /// `p` is a block of at least `b.usable` writable bytes.
    pub unsafe fn fill(p: *mut u8, b: &Block) {
        for i in positions(b.size) {
            // SAFETY: inside a live block of the model.
            unsafe { *p.add(i) = pattern(b.seed, i) };
        }
        if b.usable > 0 {
            // The last usable byte is the program's too.
            // SAFETY: as above.
            unsafe { *p.add(b.usable - 1) = pattern(b.seed, b.usable - 1) };
        }
    }

    /// Checks the pattern of `b` at `p` up to `upto` bytes (all of it for
    /// `usize::MAX`), after checking the memory is still the block's to
    /// read: reserved and accessible.
    ///
    /// # Safety
    /// `p` is a pointer into the arena (a block the model holds, or its
    /// new place after `realloc`).
    pub unsafe fn check(p: *mut u8, b: &Block, upto: usize) {
        if b.tainted {
            return;
        }
        // A moved block (realloc) is checked at its new place only up to
        // the bytes that moved.
        let span = if upto == usize::MAX {
            b.extent()
        } else {
            upto.clamp(1, b.extent())
        };
        assert!(
            PROVIDER.is_open(p as usize, span),
            "live block {:#x}+{} is no longer in reserved, accessible memory",
            p as usize,
            b.usable
        );
        // SAFETY: accessible, checked above; the caller's contract.
        unsafe { Self::check_bytes(p, b, upto) };
    }

    /// The pattern check alone (see [`Model::check`]).
    ///
    /// # Safety
    /// `p` is readable for `b.usable` bytes (`upto` bytes if less).
    pub unsafe fn check_bytes(p: *mut u8, b: &Block, upto: usize) {
        if b.tainted {
            return;
        }
        let last = (b.usable > 0 && upto == usize::MAX).then(|| b.usable - 1);
        for i in positions(b.size).filter(|&i| i < upto).chain(last) {
            // SAFETY: inside a live block of the model.
            let v = unsafe { *p.add(i) };
            assert_eq!(
                v,
                pattern(b.seed, i),
                "live block {:#x}+{} (usable {}): byte {i} changed",
                p as usize,
                b.size,
                b.usable
            );
        }
    }

    pub fn insert(&mut self, addr: usize, b: Block) {
        self.live_bytes += b.footprint();
        self.live.insert(addr, b);
        self.keys.push(addr);
    }

    /// Removes the live block at `keys[i]`, returning its address.
    pub fn remove_at(&mut self, i: usize) -> (usize, Block) {
        let addr = self.keys.swap_remove(i);
        let b = self.live.remove(&addr).expect("keys and live agree");
        self.live_bytes -= b.footprint();
        (addr, b)
    }
}
