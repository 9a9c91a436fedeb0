//! The terminal summary `apex heap` prints next to the picture.

use std::fmt::Write;

use crate::draw::{band_index, BANDS};
use crate::snapshot::{SegmentKind, Snapshot, SpanKind};
use crate::units::{bytes, count};

/// Counts over every span of a snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeapCounts {
    /// Segments carved into spans.
    pub small_segments: u64,
    /// Mappings of huge blocks.
    pub huge_segments: u64,
    /// Slabs per occupancy band ([`BANDS`] order).
    pub slabs_by_band: [u64; 6],
    /// Bytes of slabs.
    pub slab_bytes: u64,
    /// Bytes of blocks in use in slabs (used × block size).
    pub slab_used_bytes: u64,
    /// Large blocks and their bytes.
    pub large: (u64, u64),
    /// Huge blocks and their bytes.
    pub huge: (u64, u64),
    /// Free spans and their bytes.
    pub free: (u64, u64),
}

impl HeapCounts {
    /// Counts the spans of `snap`.
    pub fn of(snap: &Snapshot) -> Self {
        let mut c = HeapCounts::default();
        for seg in &snap.segments {
            match seg.kind {
                SegmentKind::Huge => c.huge_segments += 1,
                _ => c.small_segments += 1,
            }
            for s in &seg.spans {
                match s.kind {
                    SpanKind::Slab => {
                        c.slabs_by_band[band_index(s.used, s.blocks)] += 1;
                        c.slab_bytes += s.len;
                        c.slab_used_bytes += s.used * s.block_size.unwrap_or(0);
                    }
                    SpanKind::Large => c.large = (c.large.0 + 1, c.large.1 + s.len),
                    SpanKind::Huge => c.huge = (c.huge.0 + 1, c.huge.1 + s.len),
                    SpanKind::Free => c.free = (c.free.0 + 1, c.free.1 + s.len),
                    SpanKind::Other => {}
                }
            }
        }
        c
    }

    /// Slabs of every band.
    pub fn slabs(&self) -> u64 {
        self.slabs_by_band.iter().sum()
    }
}

/// A bar of `n` out of `max`, at most `width` characters.
fn bar(n: u64, max: u64, width: usize) -> String {
    if max == 0 || n == 0 {
        return String::new();
    }
    let len = ((n as f64 / max as f64) * width as f64).ceil() as usize;
    "#".repeat(len.clamp(1, width))
}

/// The summary text.
pub fn summary(snap: &Snapshot) -> String {
    let c = HeapCounts::of(snap);
    let t = &snap.totals;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "heap of {} (pid {}): {} segments ({} carved into spans, {} huge-block mappings), \
         {} mapped, {} resident",
        if snap.program.is_empty() {
            "?"
        } else {
            &snap.program
        },
        snap.pid,
        snap.segments.len(),
        c.small_segments,
        c.huge_segments,
        bytes(t.mapped),
        bytes(t.resident)
    );
    let _ = writeln!(
        o,
        "  spans: {} slabs ({}), {} large ({}), {} huge ({}), {} free ({})",
        count(c.slabs()),
        bytes(c.slab_bytes),
        count(c.large.0),
        bytes(c.large.1),
        count(c.huge.0),
        bytes(c.huge.1),
        count(c.free.0),
        bytes(c.free.1)
    );
    if c.slabs() > 0 {
        let _ = writeln!(o, "  slabs by blocks in use:");
        let max = c.slabs_by_band.iter().copied().max().unwrap_or(0);
        let num_w = count(max).len();
        for (b, n) in BANDS.iter().zip(c.slabs_by_band) {
            let line = format!(
                "    {:<6}  {:>num_w$}  {}",
                b.name,
                count(n),
                bar(n, max, 40)
            );
            let _ = writeln!(o, "{}", line.trim_end());
        }
        if c.slab_bytes > 0 && c.slab_used_bytes > 0 {
            let _ = writeln!(
                o,
                "  blocks in use fill {:.1}% of the slabs' bytes",
                100.0 * c.slab_used_bytes as f64 / c.slab_bytes as f64
            );
        }
    }
    let _ = writeln!(
        o,
        "  fragmentation: {:.1}% ({} active, {} of it in live blocks)",
        t.fragmentation_pct,
        bytes(t.active),
        bytes(t.allocated)
    );
    for (i, seg) in snap.segments.iter().enumerate() {
        let slabs = seg
            .spans
            .iter()
            .filter(|s| s.kind == SpanKind::Slab)
            .count();
        let full = seg
            .spans
            .iter()
            .filter(|s| s.kind == SpanKind::Slab && s.blocks > 0 && s.used >= s.blocks)
            .count();
        let free: u64 = seg
            .spans
            .iter()
            .filter(|s| s.kind == SpanKind::Free)
            .map(|s| s.len)
            .sum();
        let what = match seg.kind {
            SegmentKind::Huge => "huge".to_string(),
            _ => format!(
                "{slabs} slabs ({full} full), {} large, {} free",
                seg.spans
                    .iter()
                    .filter(|s| s.kind == SpanKind::Large)
                    .count(),
                bytes(free)
            ),
        };
        let owner = if seg.owner == 0 {
            "no owner".to_string()
        } else {
            format!("thread {}", seg.owner)
        };
        let _ = writeln!(
            o,
            "  {:>3}. {:#x} {:>10}  {owner}: {what}",
            i + 1,
            seg.base,
            bytes(seg.size)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_and_show_any_count() {
        assert_eq!(bar(0, 10, 40), "");
        assert_eq!(bar(10, 10, 40).len(), 40);
        assert_eq!(bar(1, 1000, 40).len(), 1);
        assert_eq!(bar(5, 10, 40).len(), 20);
    }
}
