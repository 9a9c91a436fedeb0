//! A buddy page allocator over physical memory regions.
//!
//! Memory is handed over as page-aligned RAM ranges ([`Buddy::add_region`]).
//! Each region gives up its last few pages to a metadata array holding one
//! state byte per managed page; the rest is cut into naturally aligned
//! power-of-two blocks of [`PAGE_SIZE`] `<< order` bytes, for orders
//! `0..=`[`MAX_ORDER`] (4 KiB to 64 MiB).
//!
//! # Data structures
//! - One free list per order, an intrusive doubly linked list whose
//!   `FreeNode` lives in the first bytes of each free block. Unlinking a
//!   known block is O(1).
//! - A bitmask of non-empty lists, so finding the smallest large-enough free
//!   block is one `trailing_zeros`.
//! - The state byte of a block's first page: `FREE` or `USED` plus the
//!   order, or 0 for a page that does not start a block. The buddy of a block
//!   is `addr ^ size`; whether it is free with the same order is one byte
//!   read, so coalescing costs O(1) per level.
//! - Regions are kept sorted by address; mapping an address to its region is
//!   a binary search over at most [`MAX_REGIONS`] entries.
//!
//! Allocation and free are therefore O(log n): at most [`MAX_ORDER`] splits
//! or merges, each O(1).
//!
//! # Addresses
//! Addresses are plain `usize`s and are dereferenced as pointers: the buddy
//! allocator must run where every managed byte is accessible at its own
//! address (an identity-mapped kernel, or ordinary memory in host tests).
//! Address 0 is never managed; it marks the end of a free list.

use core::ptr;

/// The smallest block: order 0.
pub const PAGE_SIZE: usize = apex_core::provider::PAGE_SIZE;

/// The largest order: blocks of `PAGE_SIZE << MAX_ORDER` = 64 MiB.
pub const MAX_ORDER: usize = 14;

/// The number of orders, `0..=MAX_ORDER`.
pub const ORDERS: usize = MAX_ORDER + 1;

/// How many disjoint regions one allocator can manage.
pub const MAX_REGIONS: usize = 32;

/// State-byte flag: the page starts a free block (low bits: its order).
const FREE: u8 = 0x80;
/// State-byte flag: the page starts an allocated block (low bits: its order).
const USED: u8 = 0x40;
/// The order bits of a state byte.
const ORDER_MASK: u8 = 0x3f;

/// The size in bytes of a block of `order`.
#[inline]
pub const fn block_size(order: usize) -> usize {
    PAGE_SIZE << order
}

/// The smallest order whose blocks hold `len` bytes (`len == 0` counts as one
/// page), or `None` above [`MAX_ORDER`].
pub const fn order_for_len(len: usize) -> Option<usize> {
    let pages = if len == 0 { 1 } else { len.div_ceil(PAGE_SIZE) };
    let order = ceil_log2(pages);
    if order > MAX_ORDER {
        None
    } else {
        Some(order)
    }
}

/// The smallest order whose blocks are aligned to `align` (any power of two;
/// at most [`PAGE_SIZE`] means order 0), or `None` above [`MAX_ORDER`] or for
/// a non-power-of-two `align`.
pub const fn order_for_align(align: usize) -> Option<usize> {
    if !align.is_power_of_two() {
        return None;
    }
    if align <= PAGE_SIZE {
        return Some(0);
    }
    let order = (align / PAGE_SIZE).trailing_zeros() as usize;
    if order > MAX_ORDER {
        None
    } else {
        Some(order)
    }
}

/// Reservations of more pages than this give back the unused tail of their
/// power-of-two block ([`Buddy::alloc_len`]); smaller ones keep it (a few
/// pages at most, and one block is cheaper to track).
pub const TRIM_ABOVE_PAGES: usize = 16;

/// Pages that hold `len` bytes (at least one).
const fn pages_of(len: usize) -> usize {
    if len == 0 {
        1
    } else {
        len.div_ceil(PAGE_SIZE)
    }
}

/// Whether a reservation of `pages` pages in a block of `order` is trimmed.
const fn trims(pages: usize, order: usize) -> bool {
    pages > TRIM_ABOVE_PAGES && pages < 1 << order
}

/// Candidate starts of a reservation above the largest block are at least
/// this far apart.
const RUN_STEP: usize = 2 << 20;

/// The blocks `(address, order)` that `[addr, addr + pages)` is cut into:
/// at each address the largest block aligned there that fits. For a range
/// starting at the start of a power-of-two block that holds it, that is
/// one block per set bit of `pages`, largest first.
fn range_blocks(addr: usize, pages: usize) -> impl Iterator<Item = (usize, usize)> {
    let end = addr + pages * PAGE_SIZE;
    let mut at = addr;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let mut k = MAX_ORDER;
        while !at.is_multiple_of(block_size(k)) || end - at < block_size(k) {
            k -= 1;
        }
        let block = (at, k);
        at += block_size(k);
        Some(block)
    })
}

/// `ceil(log2(n))` for `n >= 1`.
const fn ceil_log2(n: usize) -> usize {
    if n <= 1 {
        0
    } else {
        (usize::BITS - (n - 1).leading_zeros()) as usize
    }
}

/// Why [`Buddy::add_region`] did not take a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RegionError {
    /// After page alignment the range cannot hold its metadata and one page.
    TooSmall,
    /// [`MAX_REGIONS`] regions are already managed.
    TooManyRegions,
    /// The range overlaps a region already managed.
    Overlap,
}

/// The links of a free block, stored in its first bytes.
#[repr(C)]
struct FreeNode {
    next: usize,
    prev: usize,
}

/// One managed range: `[base, end)` are the managed pages, `[end, top)`
/// holds their state bytes. The state bytes sit at the end so that a range
/// aligned at its start keeps its largest blocks whole.
#[derive(Clone, Copy, Debug)]
struct Region {
    /// First managed page, the start of the page-aligned range.
    base: usize,
    /// End of the managed pages (exclusive), where the state bytes start.
    end: usize,
    /// End of the page-aligned range.
    top: usize,
}

impl Region {
    const EMPTY: Region = Region {
        base: 0,
        end: 0,
        top: 0,
    };

    #[inline]
    fn contains(&self, addr: usize) -> bool {
        self.base <= addr && addr < self.end
    }

    /// The state byte of the page at `addr`, which must lie in the region.
    #[inline]
    fn state_ptr(&self, addr: usize) -> *mut u8 {
        debug_assert!(self.contains(addr));
        (self.end + (addr - self.base) / PAGE_SIZE) as *mut u8
    }
}

/// A buddy allocator of physical pages. See the module docs.
pub struct Buddy {
    regions: [Region; MAX_REGIONS],
    nregions: usize,
    /// First block of each order's free list, 0 when empty.
    heads: [usize; ORDERS],
    /// Bit `k` set iff `heads[k] != 0`.
    nonempty: u32,
    /// Length of each free list.
    counts: [usize; ORDERS],
    free_bytes: usize,
    total_bytes: usize,
    meta_bytes: usize,
}

impl Default for Buddy {
    fn default() -> Self {
        Self::new()
    }
}

impl Buddy {
    /// An allocator managing nothing yet.
    pub const fn new() -> Self {
        Buddy {
            regions: [Region::EMPTY; MAX_REGIONS],
            nregions: 0,
            heads: [0; ORDERS],
            nonempty: 0,
            counts: [0; ORDERS],
            free_bytes: 0,
            total_bytes: 0,
            meta_bytes: 0,
        }
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// Bytes managed (free or allocated), not counting metadata.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes of the added ranges used for state bytes (whole pages).
    pub fn metadata_bytes(&self) -> usize {
        self.meta_bytes
    }

    /// The number of free blocks of `order`.
    pub fn free_blocks(&self, order: usize) -> usize {
        self.counts[order]
    }

    /// The number of regions managed.
    pub fn region_count(&self) -> usize {
        self.nregions
    }

    /// The managed range `(base, end)` of region `i` (sorted by address).
    pub fn region(&self, i: usize) -> Option<(usize, usize)> {
        self.regions[..self.nregions]
            .get(i)
            .map(|r| (r.base, r.end))
    }

    /// Hands the pages of `[start, start + len)` to the allocator and returns
    /// how many bytes became allocatable. The range is shrunk to whole pages;
    /// a page at address 0 is left out. Its last pages (about 1/4096 of it)
    /// hold the state bytes, so a range aligned at its start keeps its
    /// largest blocks.
    ///
    /// To leave holes (the kernel image, firmware data), call this once per
    /// usable piece; [`crate::ranges::for_each_usable`] computes the pieces.
    ///
    /// # Safety
    /// The whole range must be RAM that is readable and writable at its own
    /// address, used by nothing else, and stay so for as long as this
    /// allocator or any block it hands out is in use.
    pub unsafe fn add_region(&mut self, start: usize, len: usize) -> Result<usize, RegionError> {
        let lo = match start.checked_add(PAGE_SIZE - 1) {
            Some(v) => (v & !(PAGE_SIZE - 1)).max(PAGE_SIZE),
            None => return Err(RegionError::TooSmall),
        };
        let hi = start.saturating_add(len) & !(PAGE_SIZE - 1);
        if hi <= lo {
            return Err(RegionError::TooSmall);
        }
        let pages = (hi - lo) / PAGE_SIZE;
        // m pages of state bytes cover the other pages - m: m * 4096 >= pages - m.
        let meta_pages = pages.div_ceil(PAGE_SIZE + 1);
        let managed = pages - meta_pages;
        if managed == 0 {
            return Err(RegionError::TooSmall);
        }

        // Sorted insertion point, then the overlap check against neighbours.
        let idx = self.regions[..self.nregions].partition_point(|r| r.base < lo);
        if idx > 0 && self.regions[idx - 1].top > lo {
            return Err(RegionError::Overlap);
        }
        if idx < self.nregions && self.regions[idx].base < hi {
            return Err(RegionError::Overlap);
        }
        if self.nregions == MAX_REGIONS {
            return Err(RegionError::TooManyRegions);
        }

        let region = Region {
            base: lo,
            end: hi - meta_pages * PAGE_SIZE,
            top: hi,
        };
        // SAFETY: the caller gives us [lo, hi) exclusively; the state bytes
        // occupy the first `managed` bytes of its last `meta_pages` pages.
        unsafe { ptr::write_bytes(region.end as *mut u8, 0, managed) };
        self.regions.copy_within(idx..self.nregions, idx + 1);
        self.regions[idx] = region;
        self.nregions += 1;

        // Cut the managed pages into the largest naturally aligned blocks.
        let mut addr = region.base;
        while addr < region.end {
            let mut order = MAX_ORDER;
            while !addr.is_multiple_of(block_size(order)) || region.end - addr < block_size(order) {
                order -= 1;
            }
            // SAFETY: the block lies in the region just added and is not on
            // any list yet.
            unsafe { self.push(&region, addr, order) };
            addr += block_size(order);
        }

        let bytes = managed * PAGE_SIZE;
        self.total_bytes += bytes;
        self.free_bytes += bytes;
        self.meta_bytes += meta_pages * PAGE_SIZE;
        crate::log_debug!(
            "buddy: region {=usize:#x}..{=usize:#x}, {=usize} KiB",
            region.base,
            region.end,
            bytes / 1024
        );
        Ok(bytes)
    }

    /// Allocates a block of `order`; its address is aligned to its size.
    pub fn alloc(&mut self, order: usize) -> Option<usize> {
        self.alloc_aligned(order, 0)
    }

    /// Allocates a block of `order` whose address is aligned to
    /// `block_size(align_order)`. With `align_order > order` a larger block
    /// is split and its tail returned to the free lists, so only
    /// `block_size(order)` bytes are used. Free it with `order`.
    pub fn alloc_aligned(&mut self, order: usize, align_order: usize) -> Option<usize> {
        let want = order.max(align_order);
        if want > MAX_ORDER {
            return None;
        }
        let candidates = self.nonempty & !((1u32 << want) - 1);
        if candidates == 0 {
            return None;
        }
        let mut k = candidates.trailing_zeros() as usize;
        let addr = self.heads[k];
        let region = self
            .region_of(addr)
            .expect("buddy: free block outside every region");
        // SAFETY: `addr` heads list k, so it is a free block of order k in
        // `region`; the halves split off lie inside it.
        unsafe {
            self.unlink(addr, k);
            while k > order {
                k -= 1;
                self.push(&region, addr + block_size(k), k);
            }
            *region.state_ptr(addr) = USED | order as u8;
        }
        self.free_bytes -= block_size(order);
        Some(addr)
    }

    /// Allocates `len` bytes aligned to `align` (a power of two). Up to
    /// [`TRIM_ABOVE_PAGES`] pages the block is the power of two that holds
    /// `len`; above, only the pages `len` needs stay allocated (a run of
    /// blocks, one per set bit of the page count, largest first) and the
    /// rest of the power-of-two block goes back to the free lists, so a
    /// 40 MiB request takes 40 MiB, not 64. Above the largest block the
    /// reservation is a run of free blocks found by a linear search
    /// (`alloc_run`), and so is one of at least 2 MiB whose power of two
    /// has no free block. Free it with [`Buddy::free_len`] and the same
    /// `len`.
    pub fn alloc_len(&mut self, len: usize, align: usize) -> Option<usize> {
        let align_order = order_for_align(align)?;
        let pages = pages_of(len);
        let Some(order) = order_for_len(len) else {
            return self.alloc_run(pages, block_size(align_order));
        };
        let Some(addr) = self.alloc_aligned(order, align_order) else {
            // No free block of the power of two: a trimmed reservation of
            // a few MiB may still fit in a run of smaller free blocks (it
            // is recorded as such a run either way).
            if trims(pages, order) && pages * PAGE_SIZE >= RUN_STEP {
                return self.alloc_run(pages, block_size(align_order));
            }
            return None;
        };
        if trims(pages, order) {
            // SAFETY: `addr` is the block of `order` just allocated.
            unsafe { self.trim(addr, order, pages) };
        }
        Some(addr)
    }

    /// A reservation above the largest block: the first `align`-aligned
    /// run of `pages` free pages inside one region, taken as the blocks
    /// [`range_blocks`] cuts it into. A linear search over the candidate
    /// starts (one per `align`, at least 2 MiB apart), so meant for the rare
    /// requests above 64 MiB.
    fn alloc_run(&mut self, pages: usize, align: usize) -> Option<usize> {
        let step = align.max(RUN_STEP);
        let len = pages.checked_mul(PAGE_SIZE)?;
        for i in 0..self.nregions {
            let region = self.regions[i];
            let mut start = region.base.checked_next_multiple_of(step)?;
            while start.checked_add(len).is_some_and(|end| end <= region.end) {
                let free = range_blocks(start, pages).all(|(at, k)| {
                    self.free_block_containing(&region, at)
                        .is_some_and(|(_, o)| o >= k)
                });
                if free {
                    for (at, k) in range_blocks(start, pages) {
                        // SAFETY: checked just above: each block lies in a
                        // free block of at least its order.
                        unsafe { self.carve(&region, at, k) };
                    }
                    return Some(start);
                }
                start += step;
            }
        }
        None
    }

    /// The free block `(start, order)` that contains the page at `addr`.
    fn free_block_containing(&self, region: &Region, addr: usize) -> Option<(usize, usize)> {
        for k in 0..ORDERS {
            let start = addr & !(block_size(k) - 1);
            if start < region.base {
                break;
            }
            // SAFETY: `start` lies in `region` (below `addr`, at or above
            // its base).
            if unsafe { *region.state_ptr(start) } == FREE | k as u8 {
                return Some((start, k));
            }
        }
        None
    }

    /// Takes the block of `order` at `addr` out of the free block that
    /// contains it, splitting that one, and marks it allocated.
    ///
    /// # Safety
    /// A free block of at least `order` must contain `[addr, addr + size)`,
    /// with `addr` aligned to the size.
    unsafe fn carve(&mut self, region: &Region, addr: usize, order: usize) {
        let (mut c, mut k) = self
            .free_block_containing(region, addr)
            .expect("buddy: carving outside every free block");
        // SAFETY: `c` heads a free block of order `k` on list `k`; the
        // halves split off lie inside it and are on no list.
        unsafe {
            self.unlink(c, k);
            while k > order {
                k -= 1;
                let upper = c + block_size(k);
                if addr >= upper {
                    self.push(region, c, k);
                    c = upper;
                } else {
                    self.push(region, upper, k);
                }
            }
            *region.state_ptr(addr) = USED | order as u8;
        }
        self.free_bytes -= block_size(order);
    }

    /// Keeps the first `pages` pages of the allocated block at `addr` (as
    /// the blocks [`range_blocks`] cuts them into, each marked allocated)
    /// and frees the rest.
    ///
    /// # Safety
    /// `addr` must be an allocated block of `order`, `pages < 2^order`.
    unsafe fn trim(&mut self, addr: usize, order: usize, pages: usize) {
        let region = self.region_of(addr).expect("an allocated block");
        for (at, k) in range_blocks(addr, pages) {
            // SAFETY: `at` lies in the block, in `region`.
            unsafe { *region.state_ptr(at) = USED | k as u8 };
        }
        // The tail: at each offset, the largest block aligned there (it
        // always fits, since the block's end is aligned to 2^order).
        let mut offset = pages;
        while offset < 1 << order {
            let k = offset.trailing_zeros() as usize;
            // SAFETY: the tail is ours, on no list, inside `region`.
            unsafe { self.push(&region, addr + offset * PAGE_SIZE, k) };
            self.free_bytes += block_size(k);
            offset += 1 << k;
        }
    }

    /// Whether a reservation of `len` bytes from [`Buddy::alloc_len`] starts
    /// at `addr` (every block of its run is allocated with the expected
    /// order).
    pub fn is_allocated_len(&self, addr: usize, len: usize) -> bool {
        let pages = pages_of(len);
        match order_for_len(len) {
            Some(order) if !trims(pages, order) => self.allocated_order(addr) == Some(order),
            _ => range_blocks(addr, pages).all(|(at, k)| self.allocated_order(at) == Some(k)),
        }
    }

    /// The order of the allocated block starting at `addr`, or `None` if no
    /// allocated block starts there.
    pub fn allocated_order(&self, addr: usize) -> Option<usize> {
        let region = self.region_of(addr)?;
        if !addr.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        // SAFETY: `addr` lies in `region`, whose state bytes are ours.
        let state = unsafe { *region.state_ptr(addr) };
        (state & USED != 0).then_some((state & ORDER_MASK) as usize)
    }

    /// Returns a block to the allocator, merging it with free buddies.
    ///
    /// # Panics
    /// If no allocated block of `order` starts at `addr`. This catches double
    /// frees and wrong orders, not frees of blocks nobody allocated.
    ///
    /// # Safety
    /// `addr` must come from an allocation of this allocator with this
    /// `order`, not freed since, and nothing may access the block afterwards.
    pub unsafe fn free(&mut self, addr: usize, order: usize) {
        assert_eq!(
            self.allocated_order(addr),
            Some(order),
            "buddy: free of a block that is not allocated with this order"
        );
        let region = self.region_of(addr).expect("checked above");
        self.free_bytes += block_size(order);

        let mut addr = addr;
        let mut k = order;
        while k < MAX_ORDER {
            let buddy = addr ^ block_size(k);
            if buddy < region.base || buddy + block_size(k) > region.end {
                break;
            }
            // SAFETY: `buddy` lies in `region`.
            if unsafe { *region.state_ptr(buddy) } != FREE | k as u8 {
                break;
            }
            // SAFETY: the buddy is a free block of order k, so it is on list
            // k; the higher of the two halves stops starting a block.
            unsafe {
                self.unlink(buddy, k);
                *region.state_ptr(addr.max(buddy)) = 0;
            }
            addr = addr.min(buddy);
            k += 1;
        }
        // SAFETY: [addr, addr + size) is now free and on no list.
        unsafe { self.push(&region, addr, k) };
    }

    /// [`Buddy::free`] for a reservation from [`Buddy::alloc_len`]: each
    /// block of its run merges with its free buddies.
    ///
    /// # Panics
    /// As [`Buddy::free`].
    ///
    /// # Safety
    /// As [`Buddy::free`]; `len` must be the one passed to `alloc_len`.
    pub unsafe fn free_len(&mut self, addr: usize, len: usize) {
        let pages = pages_of(len);
        match order_for_len(len) {
            // SAFETY: forwarded from the caller.
            Some(order) if !trims(pages, order) => unsafe { self.free(addr, order) },
            _ => {
                for (at, k) in range_blocks(addr, pages) {
                    // SAFETY: forwarded from the caller: each block of the
                    // run was allocated with this order by `trim` or
                    // `alloc_run`.
                    unsafe { self.free(at, k) }
                }
            }
        }
    }

    /// Walks every free list and checks links, state bytes, counts and the
    /// free byte total. O(free blocks); a debugging and test aid.
    pub fn verify(&self) -> Result<(), &'static str> {
        let mut free = 0;
        for k in 0..ORDERS {
            let mut prev = 0;
            let mut addr = self.heads[k];
            let mut n = 0;
            while addr != 0 {
                let region = self.region_of(addr).ok_or("free block outside regions")?;
                if !addr.is_multiple_of(block_size(k)) || addr + block_size(k) > region.end {
                    return Err("free block misaligned or past its region");
                }
                // SAFETY: `addr` lies in `region` and heads a free block, so
                // its state byte and its node are ours to read.
                let (state, node) =
                    unsafe { (*region.state_ptr(addr), ptr::read(addr as *const FreeNode)) };
                if state != FREE | k as u8 {
                    return Err("free block with a wrong state byte");
                }
                if node.prev != prev {
                    return Err("broken prev link");
                }
                n += 1;
                if n > self.counts[k] {
                    return Err("free list longer than its count");
                }
                prev = addr;
                addr = node.next;
            }
            if n != self.counts[k] {
                return Err("free list shorter than its count");
            }
            if (self.nonempty >> k) & 1 != (n != 0) as u32 {
                return Err("non-empty mask out of date");
            }
            free += n * block_size(k);
        }
        if free != self.free_bytes {
            return Err("free byte count out of date");
        }
        Ok(())
    }

    /// The region holding `addr`, by binary search.
    fn region_of(&self, addr: usize) -> Option<Region> {
        let regions = &self.regions[..self.nregions];
        let idx = regions.partition_point(|r| r.base <= addr);
        let region = *regions.get(idx.checked_sub(1)?)?;
        region.contains(addr).then_some(region)
    }

    /// Puts a block on list `order` and marks it free.
    ///
    /// # Safety
    /// `[addr, addr + block_size(order))` must lie in `region`, be aligned to
    /// its size, be unused, and be on no free list.
    unsafe fn push(&mut self, region: &Region, addr: usize, order: usize) {
        let head = self.heads[order];
        // SAFETY: the caller gives us the block; its first bytes hold the node.
        unsafe {
            ptr::write(
                addr as *mut FreeNode,
                FreeNode {
                    next: head,
                    prev: 0,
                },
            );
            if head != 0 {
                (*(head as *mut FreeNode)).prev = addr;
            }
            *region.state_ptr(addr) = FREE | order as u8;
        }
        self.heads[order] = addr;
        self.nonempty |= 1 << order;
        self.counts[order] += 1;
    }

    /// Takes a block off list `order`. Its state byte is left to the caller.
    ///
    /// # Safety
    /// `addr` must be a block on list `order`.
    unsafe fn unlink(&mut self, addr: usize, order: usize) {
        // SAFETY: listed blocks hold valid nodes whose neighbours are listed.
        unsafe {
            let FreeNode { next, prev } = ptr::read(addr as *const FreeNode);
            if prev != 0 {
                (*(prev as *mut FreeNode)).next = next;
            } else {
                self.heads[order] = next;
            }
            if next != 0 {
                (*(next as *mut FreeNode)).prev = prev;
            }
        }
        if self.heads[order] == 0 {
            self.nonempty &= !(1 << order);
        }
        self.counts[order] -= 1;
    }
}

#[cfg(test)]
mod tests;
