//! The heap's self-check: every invariant the heap can see from its own
//! thread, at a point where no other thread frees into it. Compiled in debug
//! builds and tests only.

use crate::layout::SLICE_SIZE;
use crate::span::{check, Broken, SpanKind};

use crate::segment::segment_of;

use super::*;

impl Heap {
    /// Checks this heap: its segments' span tiling and header cookies, that
    /// the bins hold exactly the free spans of its segments, that every
    /// slab accounts for each of its blocks exactly once with links inside
    /// the slab, and that each slab is either queued under its class (and
    /// the direct table agrees) or parked full, never both, and that no
    /// live bit is set in a free span. Call it from
    /// the owning thread while no other thread frees into the heap.
    pub fn verify(&self) -> Result<(), Broken> {
        let id = self.id();
        let mut free_spans = 0;
        let mut slabs_not_full = 0;
        let mut seg = self.segments.first;
        while !seg.is_null() {
            // SAFETY: own segments, linked through `next`.
            let s = unsafe { &*seg };
            check(
                s.owner() == id,
                "another heap's segment in the list",
                s.base(),
            )?;
            check(!s.is_huge, "huge segment in a heap's list", s.base())?;
            s.verify(self.global.cookie_key(), |idx| {
                let d = &s.slices[idx];
                match d.kind {
                    SpanKind::Free => {
                        free_spans += 1;
                        let end = s.slice_addr(idx) + d.slice_count as usize * SLICE_SIZE;
                        check(
                            s.live.none_in(s.slice_addr(idx), end),
                            "live bit set in a free span",
                            s.slice_addr(idx),
                        )?;
                    }
                    SpanKind::Slab => {
                        // SAFETY: an own slab.
                        unsafe { d.verify_slab()? };
                        if !d.in_full {
                            slabs_not_full += 1;
                        }
                    }
                    SpanKind::Large => {
                        check(d.in_full && d.used <= 1, "large block not parked", d.start)?
                    }
                    SpanKind::Huge => {}
                }
                Ok(())
            })?;
            seg = s.next;
        }
        let binned = self.bins.verify()?;
        check(
            binned == free_spans,
            "free spans missing from the bins, or foreign ones in them",
            id,
        )?;
        let mut queued = 0;
        self.queues.verify(|c, slab| {
            // SAFETY: queued descriptors are valid (checked by the walk).
            let d = unsafe { &*slab };
            check(
                d.kind == SpanKind::Slab,
                "queued span is not a slab",
                slab as usize,
            )?;
            check(
                d.class as usize == c,
                "slab queued under another class",
                slab as usize,
            )?;
            check(!d.in_full, "parked slab still queued", slab as usize)?;
            // SAFETY: the descriptor lies in some segment's header.
            let owner = unsafe { (*segment_of(slab)).owner() };
            check(owner == id, "another heap's slab queued", slab as usize)?;
            queued += 1;
            Ok(())
        })?;
        check(
            queued == slabs_not_full,
            "a slab is neither queued nor parked full",
            id,
        )
    }
}
