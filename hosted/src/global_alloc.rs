//! [`ApexAlloc`], the allocator as a Rust `#[global_allocator]`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use apex_core::layout::MIN_ALIGN;

use crate::api::{free, malloc, malloc_aligned, realloc, usable_size, zalloc, zalloc_aligned};

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
        if layout.align() <= MIN_ALIGN {
            // SAFETY: `p` is a live block of ours.
            return unsafe { realloc(p, new_size) };
        }
        // Over-aligned: keep the block if it is big enough, else move it to
        // a new block with the same alignment.
        // SAFETY: `p` is a live block of ours.
        if new_size <= unsafe { usable_size(p) } && new_size >= layout.size() / 2 {
            return p;
        }
        let q = malloc_aligned(new_size, layout.align());
        if !q.is_null() {
            // SAFETY: both blocks hold the copied length; `p` is freed once.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                free(p);
            }
        }
        q
    }
}
