//! Address-space geometry shared by every layer: slices, segments and the
//! thresholds that decide where an allocation lives.
//!
//! A *segment* is a naturally aligned run of address space, so the segment
//! that holds any pointer `p` is found by masking: `(p - 1) & !SEGMENT_MASK`.
//! (The `- 1` lets a block that starts exactly on a segment boundary find the
//! header of the segment before it; only huge over-aligned blocks do that.)
//! Segments are cut into *slices*; a *span* is a run of slices that is either
//! free, a slab of equal-size blocks, or one large block.

/// log2 of the slice size.
pub const SLICE_SHIFT: usize = 16;
/// 64 KiB: the unit in which segments are carved into spans.
pub const SLICE_SIZE: usize = 1 << SLICE_SHIFT;

/// log2 of the segment size. Kernels with little memory choose 4 MiB
/// segments (feature `small-segments`); hosted builds use 32 MiB, which keeps
/// objects up to 16 MiB inside segments where they are recycled cheaply.
#[cfg(not(feature = "small-segments"))]
pub const SEGMENT_SHIFT: usize = 25;
#[cfg(feature = "small-segments")]
pub const SEGMENT_SHIFT: usize = 22;

/// The size and alignment of a segment.
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// Low bits of an address inside its segment.
pub const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;
/// Slices in one segment, header slices included.
pub const SLICES_PER_SEGMENT: usize = SEGMENT_SIZE / SLICE_SIZE;

/// Objects above this size get a span of their own instead of a slab slot.
pub const MAX_CLASS_SIZE: usize = 512 * 1024;
/// Objects above this size bypass segments and get their own reservation.
pub const LARGE_MAX: usize = SEGMENT_SIZE / 2;

/// Every block is aligned to at least this.
pub const MIN_ALIGN: usize = 16;

/// Rounds `x` up to a multiple of `to` (a power of two).
#[inline(always)]
pub const fn align_up(x: usize, to: usize) -> usize {
    (x + to - 1) & !(to - 1)
}

/// The segment base that holds the block starting at `p`.
#[inline(always)]
pub fn segment_base_of(p: usize) -> usize {
    p.wrapping_sub(1) & !SEGMENT_MASK
}
