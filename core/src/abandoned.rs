//! Segments of heaps that went away (thread exit) with live blocks in them,
//! waiting to be adopted by a heap that needs a segment. Nothing is lost:
//! blocks freed into them meanwhile wait on their spans' thread-free words
//! for the adopter, and `Global::purge_abandoned` returns their free memory
//! (or the whole segment) when nobody adopts them in time.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::segment::Segment;

/// How many of the most recently abandoned segments [`AbandonedStack::pop`]
/// looks through for one on the adopter's node: the walk runs under the
/// list's lock and reads a header per step, so it is bounded.
pub const NODE_SCAN: usize = 32;

/// An intrusive stack of abandoned segments, linked through
/// `Segment::next`. Used under a lock.
pub struct AbandonedStack {
    head: *mut Segment,
}

// SAFETY: the stack only holds segments no thread owns; access is
// serialised by the lock around it.
unsafe impl Send for AbandonedStack {}

impl AbandonedStack {
    pub const fn new() -> Self {
        AbandonedStack {
            head: ptr::null_mut(),
        }
    }

    /// Pushes a segment abandoned at time `now`.
    ///
    /// # Safety
    /// `seg` must be a live segment with no owner that nothing else links.
    pub unsafe fn push(&mut self, seg: *mut Segment, now: u64) {
        // SAFETY: exclusive access to `seg` is handed over.
        unsafe {
            (*seg).abandoned_at = now;
            (*seg).next = self.head;
        }
        self.head = seg;
    }

    /// Pops the most recently abandoned segment placed on memory `node`
    /// (its memory is the most likely to be still resident, and local to
    /// the adopter), looking at the [`NODE_SCAN`] most recent ones; when
    /// none of them is on `node`, the most recent of all. On a machine
    /// with one node every segment is on node 0, so this is the head.
    pub fn pop(&mut self, node: u32) -> Option<*mut Segment> {
        if self.head.is_null() {
            return None;
        }
        let mut link: *mut *mut Segment = &mut self.head;
        // SAFETY: listed segments are live and reachable only through
        // here; the caller's lock serialises access to their links.
        unsafe {
            for _ in 0..NODE_SCAN {
                let seg = *link;
                if seg.is_null() {
                    break;
                }
                if (*seg).node == node {
                    *link = (*seg).next;
                    return Some(seg);
                }
                link = &mut (*seg).next;
            }
            let seg = self.head;
            self.head = (*seg).next;
            Some(seg)
        }
    }

    /// Walks the stack for a purge at `now`, filling at most the given
    /// slices:
    /// - `empties`: segments abandoned for `delay` (any with `force`) all of
    ///   whose blocks other threads have freed are unlinked: the caller
    ///   releases them;
    /// - `due`: segments whose purge deadline passed `delay` ago (any with
    ///   `force`) stay listed, marked `purging`: the caller decommits their
    ///   free spans and clears the mark.
    ///
    /// Returns how many of each it found.
    pub fn select(
        &mut self,
        now: u64,
        delay: u64,
        force: bool,
        due: &mut [*mut Segment],
        empties: &mut [*mut Segment],
    ) -> (usize, usize) {
        let (mut n, mut e) = (0, 0);
        let mut link: *mut *mut Segment = &mut self.head;
        // SAFETY: listed segments are held by nobody; the caller's lock
        // serialises every access to their purge fields and links.
        unsafe {
            while !(*link).is_null() && n < due.len() && e < empties.len() {
                let seg = *link;
                let s = &mut *seg;
                let idle = force || now >= s.abandoned_at.saturating_add(delay);
                if idle && s.all_blocks_freed() {
                    // Nobody will free into it again.
                    *link = s.next;
                    empties[e] = seg;
                    e += 1;
                    continue;
                }
                // `purge_at == 0`: purged already; an abandoned segment
                // gains no free spans until it is adopted.
                if s.purge_at != 0 && (force || now >= s.purge_at.saturating_add(delay)) {
                    s.purge_at = 0;
                    s.purging.store(true, Ordering::Relaxed);
                    due[n] = seg;
                    n += 1;
                }
                link = &mut s.next;
            }
        }
        (n, e)
    }
}

#[cfg(debug_assertions)]
impl AbandonedStack {
    /// Calls `f` on every listed segment.
    pub fn for_each(
        &self,
        mut f: impl FnMut(&Segment) -> Result<(), crate::span::Broken>,
    ) -> Result<(), crate::span::Broken> {
        let mut seg = self.head;
        while !seg.is_null() {
            // SAFETY: listed segments are live; the caller holds the lock.
            unsafe {
                f(&*seg)?;
                seg = (*seg).next;
            }
        }
        Ok(())
    }
}

impl Default for AbandonedStack {
    fn default() -> Self {
        Self::new()
    }
}
