//! A heap's size-class queues of slabs, and the direct table that lets the
//! malloc fast path find the current slab of a small request with one load.
//!
//! Each class has a doubly linked queue of its slabs with room, linked
//! through `Span::next/prev`; the first one serves allocations. For every
//! request size up to `DIRECT_MAX`, `direct[direct_index(size)]` points at
//! the first slab of the size's class, or at a shared span that never has
//! free blocks, so the fast path needs no null check. Every queue operation
//! keeps the direct table in step.

use core::cell::UnsafeCell;

use crate::list::List;
use crate::size_class::{
    direct_index, direct_slots, DIRECT_CLASSES, DIRECT_MAX, DIRECT_SLOTS, NUM_CLASSES,
};
use crate::span::Span;

/// A descriptor that never has free blocks: the direct-table entry of a
/// class with no queued slab. Nothing ever writes to it (a slab is only
/// written after a block was found on its free list).
struct EmptySpan(UnsafeCell<Span>);
// SAFETY: the span is never written, only read.
unsafe impl Sync for EmptySpan {}
static EMPTY_SPAN: EmptySpan = EmptySpan(UnsafeCell::new(Span::EMPTY));

#[inline(always)]
const fn empty_span() -> *mut Span {
    EMPTY_SPAN.0.get()
}

/// The queues of one heap.
#[repr(C)]
pub struct SlabQueues {
    direct: [*mut Span; DIRECT_SLOTS],
    queues: [List<Span>; NUM_CLASSES],
    /// Whether the direct table follows the queues; when not, every entry
    /// stays the never-free span, which sends each allocation out of line.
    direct_on: bool,
}

impl SlabQueues {
    /// Empty queues, with a direct table in use or not.
    pub const fn new(direct_on: bool) -> Self {
        SlabQueues {
            direct: [empty_span(); DIRECT_SLOTS],
            queues: [List::new(); NUM_CLASSES],
            direct_on,
        }
    }

    /// The first slab of the class serving a request of `size` bytes, or
    /// the never-free span when that queue is empty: one load.
    ///
    /// # Safety
    /// `size` must be at most `DIRECT_MAX`; unchecked so the fast path has
    /// no panic branch.
    #[inline(always)]
    pub unsafe fn direct(&self, size: usize) -> *mut Span {
        debug_assert!(size <= DIRECT_MAX);
        // SAFETY: `direct_index(size) < DIRECT_SLOTS` for such sizes.
        unsafe { *self.direct.get_unchecked(direct_index(size)) }
    }

    /// Whether the direct table follows the queues: the heap's allocation
    /// fast path is in use.
    #[inline(always)]
    pub fn direct_on(&self) -> bool {
        self.direct_on
    }

    /// The first slab of class `c`'s queue, or null.
    #[inline]
    pub fn first(&self, c: usize) -> *mut Span {
        self.queues[c].first
    }

    /// [`SlabQueues::first`] without the bounds check.
    ///
    /// # Safety
    /// `c` must be a size class; unchecked so the inline paths that call
    /// this have no panic branch.
    #[inline(always)]
    pub unsafe fn first_unchecked(&self, c: usize) -> *mut Span {
        debug_assert!(c < NUM_CLASSES);
        // SAFETY: the caller's contract.
        unsafe { self.queues.get_unchecked(c).first }
    }

    /// Whether class `c`'s queue holds exactly `span`.
    ///
    /// # Safety
    /// `c` must be a size class (unchecked: this runs on every free that
    /// empties a slab).
    #[inline(always)]
    pub unsafe fn holds_only(&self, c: usize, span: *mut Span) -> bool {
        debug_assert!(c < NUM_CLASSES);
        // SAFETY: the caller's contract.
        let q = unsafe { self.queues.get_unchecked(c) };
        q.first == span && q.last == span
    }

    /// Turns the direct table off: every entry becomes the never-free span
    /// and stays so.
    pub fn disable_direct(&mut self) {
        self.direct_on = false;
        self.direct = [empty_span(); DIRECT_SLOTS];
    }

    /// Forgets every queue (the heap gave its segments away).
    pub fn clear(&mut self) {
        *self = Self::new(self.direct_on);
    }

    /// Points the direct-table slots of class `c` at its first slab.
    #[inline]
    fn sync_direct(&mut self, c: usize) {
        if c >= DIRECT_CLASSES || !self.direct_on {
            return;
        }
        let first = self.queues[c].first;
        let entry = if first.is_null() { empty_span() } else { first };
        let (lo, hi) = direct_slots(c);
        for slot in &mut self.direct[lo..=hi] {
            *slot = entry;
        }
    }

    /// Puts a slab at the front of class `c`'s queue.
    ///
    /// # Safety
    /// `span` must be a slab of class `c` of the heap, in no queue.
    pub unsafe fn push_front(&mut self, c: usize, span: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe { self.queues[c].push_front(span) };
        self.sync_direct(c);
    }

    /// Puts a slab at the back of class `c`'s queue.
    ///
    /// # Safety
    /// As [`SlabQueues::push_front`].
    pub unsafe fn push_back(&mut self, c: usize, span: *mut Span) {
        // SAFETY: the caller's contract.
        unsafe { self.queues[c].push_back(span) };
        if self.queues[c].first == span {
            self.sync_direct(c);
        }
    }

    /// Takes a slab out of class `c`'s queue.
    ///
    /// # Safety
    /// `span` must be linked in class `c`'s queue.
    pub unsafe fn remove(&mut self, c: usize, span: *mut Span) {
        // SAFETY: the caller's contract.
        if unsafe { self.queues[c].remove(span) } {
            self.sync_direct(c);
        }
    }

    /// Moves a queued slab to the front of class `c`'s queue.
    ///
    /// # Safety
    /// As [`SlabQueues::remove`].
    pub unsafe fn move_to_front(&mut self, c: usize, span: *mut Span) {
        if self.queues[c].first != span {
            // SAFETY: the caller's contract.
            unsafe {
                self.remove(c, span);
                self.push_front(c, span);
            }
        }
    }
}

#[cfg(debug_assertions)]
impl SlabQueues {
    /// Checks the queues' links and that the direct table points at each
    /// class's first slab; calls `f(class, slab)` on every queued slab.
    pub fn verify(
        &self,
        mut f: impl FnMut(usize, *mut Span) -> Result<(), crate::span::Broken>,
    ) -> Result<(), crate::span::Broken> {
        use crate::span::check;
        for c in 0..NUM_CLASSES {
            let q = self.queues[c];
            let mut prev: *mut Span = core::ptr::null_mut();
            let mut cur = q.first;
            while !cur.is_null() {
                // SAFETY: queued slabs are valid descriptors (checked one
                // link at a time).
                unsafe {
                    check((*cur).prev == prev, "queue back link", cur as usize)?;
                    f(c, cur)?;
                    prev = cur;
                    cur = (*cur).next;
                }
            }
            check(q.last == prev, "queue tail", c)?;
            if c < DIRECT_CLASSES {
                let want = if q.first.is_null() || !self.direct_on {
                    empty_span()
                } else {
                    q.first
                };
                let (lo, hi) = direct_slots(c);
                check(
                    self.direct[lo..=hi].iter().all(|&d| d == want),
                    "direct table out of step with its queue",
                    c,
                )?;
            }
        }
        Ok(())
    }
}

impl Default for SlabQueues {
    fn default() -> Self {
        Self::new(true)
    }
}
