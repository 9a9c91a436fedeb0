//! [`ApexAlloc`], the allocator as a Rust `#[global_allocator]`.
//!
//! With the `valgrind` feature every block is announced to memcheck
//! ([`crate::valgrind`]); without it those calls are empty and compile to
//! nothing.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use apex_core::layout::MIN_ALIGN;

use crate::api::{
    free, malloc, malloc_aligned, realloc_aligned, usable_size, zalloc, zalloc_aligned,
};
use crate::valgrind;

/// ApexAlloc as a Rust global allocator.
pub struct ApexAlloc;

// SAFETY: blocks are at least `layout.size()` bytes, aligned to
// `layout.align()`, distinct while live, and freed exactly once by `dealloc`;
// `realloc` preserves contents up to the smaller size.
unsafe impl GlobalAlloc for ApexAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        valgrind::errors_off();
        let p = if layout.align() <= MIN_ALIGN {
            malloc(layout.size())
        } else {
            malloc_aligned(layout.size(), layout.align())
        };
        announce(p, layout.size(), false);
        p
    }

    #[inline(always)]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        // Announced before the block is really freed: once it is, another
        // thread may get the same address and announce it as new.
        valgrind::free_like(p);
        valgrind::errors_off();
        // SAFETY: `p` came from `alloc` with this allocator.
        unsafe { free(p) }
        valgrind::errors_on();
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        valgrind::errors_off();
        let p = if layout.align() <= MIN_ALIGN {
            zalloc(layout.size())
        } else {
            zalloc_aligned(layout.size(), layout.align())
        };
        announce(p, layout.size(), true);
        p
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if valgrind::ENABLED {
            // SAFETY: forwarded from the caller.
            return unsafe { realloc_announced(self, p, layout, new_size) };
        }
        // SAFETY: `p` is a live block of ours allocated with `layout`.
        unsafe { realloc_aligned(p, layout.align(), new_size) }
    }
}

/// Ends the [`valgrind::errors_off`] an allocation began and announces its
/// block `p` (if any) to memcheck: `size` bytes, defined if `zeroed`, and
/// the rest of its usable size inaccessible, so that a read past the
/// requested size is reported as with the C library's malloc.
#[inline(always)]
fn announce(p: *mut u8, size: usize, zeroed: bool) {
    if !valgrind::ENABLED || p.is_null() {
        valgrind::errors_on();
        return;
    }
    // SAFETY: `p` is a live block just allocated.
    let usable = unsafe { usable_size(p) };
    valgrind::errors_on();
    valgrind::malloc_like(p, size, zeroed);
    // `usable - size` bytes lie inside the block, past its requested end.
    valgrind::no_access(p.wrapping_add(size), usable.saturating_sub(size));
}

/// `realloc` with every step announced to memcheck: in place when the new
/// size fits the block and uses at least half of it, else a new block, a
/// copy (which carries memcheck's defined/undefined state of each byte
/// along) and a free. The allocator's own `realloc` would free the old
/// block before it could be announced as freed, racing with other threads.
///
/// # Safety
/// As [`GlobalAlloc::realloc`].
#[cold]
unsafe fn realloc_announced(a: &ApexAlloc, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    valgrind::errors_off();
    // SAFETY: `p` is a live block of ours.
    let usable = unsafe { usable_size(p) };
    valgrind::errors_on();
    if new_size <= usable && new_size >= usable / 2 {
        valgrind::resize_in_place(p, layout.size(), new_size);
        return p;
    }
    // SAFETY: `new_size` is non-zero and, rounded up to `layout.align()`,
    // does not overflow (the caller's contract).
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    // SAFETY: a valid layout of non-zero size.
    let q = unsafe { a.alloc(new_layout) };
    if !q.is_null() {
        // SAFETY: both blocks are live, distinct, and at least the copied
        // length; `p` is freed once, after the copy.
        unsafe {
            ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
            a.dealloc(p, layout);
        }
    }
    q
}
