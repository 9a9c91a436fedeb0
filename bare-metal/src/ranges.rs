//! Cutting holes out of RAM ranges before they reach the page allocator.
//!
//! A firmware memory map reports RAM that still contains the kernel image,
//! boot data or pages set aside for other uses. [`for_each_usable`] removes a
//! list of such holes from one range and reports what is left, without
//! allocating.

/// A half-open address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Range {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
}

impl Range {
    /// `[start, start + len)`, clamped at the top of the address space.
    pub const fn new(start: usize, len: usize) -> Self {
        Range {
            start,
            end: start.saturating_add(len),
        }
    }

    /// The length in bytes.
    pub const fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// True if the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Calls `f` with each maximal piece of `range` that overlaps none of
/// `holes`, in ascending order. Holes may overlap each other, be unsorted or
/// lie outside `range`. O(pieces × holes), for the handful of holes a boot
/// path has.
pub fn for_each_usable(range: Range, holes: &[Range], mut f: impl FnMut(Range)) {
    let mut cursor = range.start;
    while cursor < range.end {
        // The lowest-starting hole that still overlaps [cursor, end).
        let next_hole = holes
            .iter()
            .filter(|h| !h.is_empty() && h.end > cursor && h.start < range.end)
            .min_by_key(|h| h.start);
        match next_hole {
            None => {
                f(Range {
                    start: cursor,
                    end: range.end,
                });
                return;
            }
            Some(hole) => {
                if hole.start > cursor {
                    f(Range {
                        start: cursor,
                        end: hole.start,
                    });
                }
                cursor = hole.end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn pieces(range: Range, holes: &[Range]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for_each_usable(range, holes, |r| out.push((r.start, r.end)));
        out
    }

    fn r(start: usize, end: usize) -> Range {
        Range { start, end }
    }

    #[test]
    fn no_holes_gives_the_range() {
        assert_eq!(pieces(r(10, 100), &[]), [(10, 100)]);
    }

    #[test]
    fn holes_inside_at_edges_and_outside() {
        let holes = [r(50, 60), r(0, 20), r(90, 200), r(300, 400)];
        assert_eq!(pieces(r(10, 100), &holes), [(20, 50), (60, 90)]);
    }

    #[test]
    fn overlapping_and_unsorted_holes() {
        let holes = [r(40, 70), r(30, 50), r(65, 80), r(80, 81)];
        assert_eq!(pieces(r(0, 100), &holes), [(0, 30), (81, 100)]);
    }

    #[test]
    fn fully_covered_and_empty() {
        assert!(pieces(r(10, 20), &[r(0, 30)]).is_empty());
        assert!(pieces(r(10, 10), &[]).is_empty());
        assert_eq!(pieces(r(10, 20), &[r(15, 15)]), [(10, 20)]);
    }

    #[test]
    fn range_new_saturates() {
        let range = Range::new(usize::MAX - 5, 100);
        assert_eq!(range.end, usize::MAX);
        assert_eq!(range.len(), 5);
    }
}
