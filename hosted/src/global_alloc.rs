//! [`ApexAlloc`], the allocator as a Rust `#[global_allocator]`.

use core::alloc::{GlobalAlloc, Layout};

use apex_core::layout::MIN_ALIGN;

use crate::api::{free, malloc, malloc_aligned, realloc_aligned, zalloc, zalloc_aligned};

/// ApexAlloc as a Rust global allocator.
pub struct ApexAlloc;

// SAFETY: blocks are at least `layout.size()` bytes, aligned to
// `layout.align()`, distinct while live, and freed exactly once by `dealloc`;
// `realloc` preserves contents up to the smaller size.
unsafe impl GlobalAlloc for ApexAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            malloc(layout.size())
        } else {
            malloc_aligned(layout.size(), layout.align())
        }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        // SAFETY: `p` came from `alloc` with this allocator.
        unsafe { free(p) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            zalloc(layout.size())
        } else {
            zalloc_aligned(layout.size(), layout.align())
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` is a live block of ours allocated with `layout`.
        unsafe { realloc_aligned(p, layout.align(), new_size) }
    }
}
