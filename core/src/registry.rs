//! The registry of live segments: every segment that heaps carve spans
//! from and every huge block's segment, from the moment its header is set
//! up until just before its memory goes back to the cache or the provider.
//!
//! It exists for introspection (the heap walk, statistics computed from
//! it): no allocation or free consults it, and it changes only on slow
//! paths (a segment set up or retired, a huge block allocated or freed),
//! in constant time. The list is intrusive (through [`Segment::reg_next`]
//! and [`Segment::reg_prev`]) and kept in the order segments were
//! registered: each gets the next sequence number ([`Segment::reg_seq`]),
//! so a walk that drops the lock between steps resumes at "the first
//! segment numbered at least this" and never visits one twice.
//!
//! `Global` keeps it under a spin lock that is a leaf: nothing else is
//! locked while it is held. A segment in the registry is never released,
//! so whoever holds the lock may read any registered header.

use core::ptr;

use crate::segment::Segment;

/// The live segments, in the order they were registered, and counts of
/// them.
pub struct SegmentRegistry {
    head: *mut Segment,
    tail: *mut Segment,
    /// The sequence number the next segment gets (from 1).
    next_seq: u64,
    /// Segments taken out so far: while it stays the same, every segment
    /// a walk saw registered still is (see [`SegmentRegistry::removals`]).
    removals: u64,
    /// Registered normal segments and huge blocks.
    normal: usize,
    huge: usize,
    /// Normal segments and huge blocks ever registered.
    normal_total: u64,
    huge_total: u64,
}

// SAFETY: the registry is used under a lock; the segments it links stay
// valid while they are registered.
unsafe impl Send for SegmentRegistry {}

impl SegmentRegistry {
    pub const fn new() -> Self {
        SegmentRegistry {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            next_seq: 1,
            removals: 0,
            normal: 0,
            huge: 0,
            normal_total: 0,
            huge_total: 0,
        }
    }

    /// Adds a segment at the end, with the next sequence number.
    ///
    /// # Safety
    /// `seg` is an initialised segment header that is not registered and
    /// stays valid until [`SegmentRegistry::remove`] takes it out.
    pub unsafe fn insert(&mut self, seg: *mut Segment) {
        // SAFETY: registered headers are valid (the caller's contract for
        // each of them); `seg` is the caller's.
        unsafe {
            (*seg).reg_seq = self.next_seq;
            self.next_seq += 1;
            (*seg).reg_prev = self.tail;
            (*seg).reg_next = ptr::null_mut();
            if self.tail.is_null() {
                self.head = seg;
            } else {
                (*self.tail).reg_next = seg;
            }
            self.tail = seg;
            if (*seg).is_huge {
                self.huge += 1;
                self.huge_total += 1;
            } else {
                self.normal += 1;
                self.normal_total += 1;
            }
        }
    }

    /// Takes a registered segment out.
    ///
    /// # Safety
    /// `seg` is registered here.
    pub unsafe fn remove(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` and its neighbours are registered, hence valid.
        unsafe {
            let (prev, next) = ((*seg).reg_prev, (*seg).reg_next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).reg_next = next;
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).reg_prev = prev;
            }
            (*seg).reg_prev = ptr::null_mut();
            (*seg).reg_next = ptr::null_mut();
            self.removals += 1;
            if (*seg).is_huge {
                self.huge -= 1;
            } else {
                self.normal -= 1;
            }
        }
    }

    /// The first registered segment whose sequence number is at least
    /// `seq` (a walk's resumption point).
    pub fn first_from(&self, seq: u64) -> Option<*mut Segment> {
        let mut s = self.head;
        // SAFETY: registered headers are valid.
        while !s.is_null() && unsafe { (*s).reg_seq } < seq {
            // SAFETY: as above.
            s = unsafe { (*s).reg_next };
        }
        (!s.is_null()).then_some(s)
    }

    /// The registered segment after `seg`.
    ///
    /// # Safety
    /// `seg` is registered here.
    pub unsafe fn next(&self, seg: *mut Segment) -> Option<*mut Segment> {
        // SAFETY: the caller's contract.
        let n = unsafe { (*seg).reg_next };
        (!n.is_null()).then_some(n)
    }

    /// How many segments were taken out so far. A walk that saw a segment
    /// registered may use it again after dropping and retaking the lock
    /// while this count has not changed (segments are only added at the
    /// end meanwhile), without searching for it from the start.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Registered normal segments.
    pub fn segments(&self) -> usize {
        self.normal
    }

    /// Registered huge blocks.
    pub fn huge_blocks(&self) -> usize {
        self.huge
    }

    /// Normal segments set up so far (new or recycled from the cache).
    pub fn segments_total(&self) -> u64 {
        self.normal_total
    }

    /// Huge blocks allocated so far.
    pub fn huge_total(&self) -> u64 {
        self.huge_total
    }
}

impl Default for SegmentRegistry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::alloc::Layout;

    /// A zeroed header on the host heap (zero is a valid header).
    fn header(huge: bool) -> (*mut Segment, Layout) {
        let layout = Layout::new::<Segment>();
        // SAFETY: non-zero size; zeroed memory is a valid header.
        let seg = unsafe { std::alloc::alloc_zeroed(layout) as *mut Segment };
        assert!(!seg.is_null());
        // SAFETY: exclusively ours.
        unsafe { (*seg).is_huge = huge };
        (seg, layout)
    }

    /// The segments in registry order, with their sequence numbers.
    fn listed(reg: &SegmentRegistry) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        let mut s = reg.first_from(0);
        while let Some(p) = s {
            // SAFETY: registered.
            out.push((p as usize, unsafe { (*p).reg_seq }));
            // SAFETY: registered.
            s = unsafe { reg.next(p) };
        }
        out
    }

    #[test]
    fn keeps_registration_order_and_counts() {
        let hs: Vec<_> = (0..5).map(|i| header(i == 3)).collect();
        let addr = |i: usize| hs[i].0 as usize;
        let mut reg = SegmentRegistry::new();
        for i in [2, 0, 4, 1, 3] {
            // SAFETY: valid, unregistered headers that outlive the registry.
            unsafe { reg.insert(hs[i].0) };
        }
        let order = |reg: &SegmentRegistry| listed(reg).iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(order(&reg), [2, 0, 4, 1, 3].map(addr));
        let seqs: Vec<u64> = listed(&reg).iter().map(|e| e.1).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!((reg.segments(), reg.huge_blocks()), (4, 1));
        assert_eq!(reg.first_from(3), Some(hs[4].0));
        assert_eq!(reg.first_from(6), None);
        assert_eq!(reg.removals(), 0);
        // Remove the first, a middle one and the last; a walk resuming
        // at a removed one's number goes on with the next.
        for i in [2, 4, 3] {
            // SAFETY: registered.
            unsafe { reg.remove(hs[i].0) };
        }
        assert_eq!(order(&reg), [0, 1].map(addr));
        assert_eq!(reg.removals(), 3);
        assert_eq!(reg.first_from(3), Some(hs[1].0));
        assert_eq!(reg.segments() + reg.huge_blocks(), 2);
        // Registered again: at the end, with a new number.
        // SAFETY: valid and unregistered.
        unsafe { reg.insert(hs[2].0) };
        assert_eq!(order(&reg), [0, 1, 2].map(addr));
        assert_eq!(listed(&reg)[2].1, 6);
        assert_eq!(reg.segments_total() + reg.huge_total(), 6);
        for (seg, layout) in hs {
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(seg as *mut u8, layout) };
        }
    }
}
