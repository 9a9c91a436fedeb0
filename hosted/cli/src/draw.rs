//! The heap as an SVG picture: every segment a box of 64 KiB cells (one row
//! = 2 MiB), every span drawn over the cells it covers, slabs coloured by
//! the share of their blocks in use and labelled with their block size where
//! the label fits, and a legend.
//!
//! The SVG is written as text; [`crate::render`] turns it into a PNG.

use std::fmt::Write;

use crate::snapshot::{Segment, SegmentKind, Snapshot, Span, SpanKind};
use crate::units::{bytes, short_size};

/// The unit segments are carved in (the core's slice).
pub const SLICE: u64 = 64 * 1024;
/// Cells in one row of a segment's box.
pub const COLUMNS: u64 = 32;
const CELL_W: f64 = 28.0;
const CELL_H: f64 = 20.0;
const MARGIN: f64 = 16.0;
/// Room at the left of a box for the row offsets.
const LEFT: f64 = 64.0;
/// Width of the picture.
pub const WIDTH: f64 = LEFT + COLUMNS as f64 * CELL_W + MARGIN;
const SEG_TITLE_H: f64 = 20.0;
const SEG_GAP: f64 = 14.0;
const HUGE_H: f64 = 28.0;
/// Advance of one character of the label font (DejaVu Sans Mono at 10 px).
const LABEL_CHAR_W: f64 = 6.1;

/// A colour band of slab occupancy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Band {
    /// Legend text.
    pub name: &'static str,
    /// Fill colour.
    pub fill: &'static str,
    /// Label colour readable on `fill`.
    pub ink: &'static str,
}

/// Slab occupancy bands, emptiest first (a yellow-to-red scale).
pub const BANDS: [Band; 6] = [
    Band {
        name: "empty",
        fill: "#ffffcc",
        ink: "#333333",
    },
    Band {
        name: "1-25%",
        fill: "#fed976",
        ink: "#333333",
    },
    Band {
        name: "26-50%",
        fill: "#feb24c",
        ink: "#333333",
    },
    Band {
        name: "51-75%",
        fill: "#fd8d3c",
        ink: "#222222",
    },
    Band {
        name: "76-99%",
        fill: "#f03b20",
        ink: "#ffffff",
    },
    Band {
        name: "full",
        fill: "#bd0026",
        ink: "#ffffff",
    },
];

/// Fill of a large block's span.
pub const LARGE: Band = Band {
    name: "large block",
    fill: "#756bb1",
    ink: "#ffffff",
};
/// Fill of a huge block.
pub const HUGE: Band = Band {
    name: "huge block",
    fill: "#3182bd",
    ink: "#ffffff",
};
/// Fill of free pages.
pub const FREE: Band = Band {
    name: "free",
    fill: "#ffffff",
    ink: "#333333",
};
/// Fill of a span of a kind this version does not know.
pub const OTHER: Band = Band {
    name: "other",
    fill: "#969696",
    ink: "#ffffff",
};
/// Fill of a segment's cells that no span covers (its header).
pub const UNCARVED: &str = "#bdbdbd";

/// The occupancy band of a slab with `used` of `blocks` blocks in use.
pub fn band_index(used: u64, blocks: u64) -> usize {
    if used == 0 || blocks == 0 {
        0
    } else if used >= blocks {
        5
    } else {
        // 1..=25% -> 1, 26..=50% -> 2, ... (rounded up, so any use shows).
        let pct = (used * 100).div_ceil(blocks);
        (pct.div_ceil(25) as usize).clamp(1, 4)
    }
}

/// The colours of a span.
pub fn style_of(span: &Span) -> Band {
    match span.kind {
        SpanKind::Slab => BANDS[band_index(span.used, span.blocks)],
        SpanKind::Large => LARGE,
        SpanKind::Huge => HUGE,
        SpanKind::Free => FREE,
        SpanKind::Other => OTHER,
    }
}

/// The label drawn inside a span: the block size of a slab, the size of a
/// large or huge block; none for free spans.
pub fn label_of(span: &Span) -> Option<String> {
    match span.kind {
        SpanKind::Slab => Some(match (span.block_size.filter(|&b| b > 0), span.class) {
            (Some(b), _) => short_size(b),
            (None, Some(c)) => format!("c{c}"),
            (None, None) => return None,
        }),
        SpanKind::Large => Some(short_size(block_bytes(span))),
        SpanKind::Huge => Some(format!("huge {}", bytes(block_bytes(span)))),
        SpanKind::Free | SpanKind::Other => None,
    }
}

/// The size of a large or huge span's block (its length when not given).
fn block_bytes(span: &Span) -> u64 {
    span.block_size.filter(|&b| b > 0).unwrap_or(span.len)
}

/// Whether `text` fits in a box `width` pixels wide.
pub fn label_fits(text: &str, width: f64) -> bool {
    text.chars().count() as f64 * LABEL_CHAR_W + 3.0 <= width
}

/// Escapes text for XML.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether a segment is drawn as a grid of slices (else as one bar).
fn is_grid(seg: &Segment) -> bool {
    match seg.kind {
        SegmentKind::Small => true,
        SegmentKind::Huge => false,
        SegmentKind::Other => seg.size.is_multiple_of(SLICE) && seg.size <= 64 << 20,
    }
}

/// Height of a run of free rows folded into one band.
const FOLD_H: f64 = 16.0;

/// Where the rows of a segment's box go: a run of two or more rows that
/// free spans cover entirely is folded into one thin band, so that a
/// mostly empty segment does not fill the picture with white.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    /// Top of each row relative to the box, `None` for a folded row.
    row_y: Vec<Option<f64>>,
    /// Folded runs: first row, rows, top of the band.
    folds: Vec<(u64, u64, f64)>,
    /// Height of the box.
    height: f64,
}

fn layout(seg: &Segment) -> Layout {
    if !is_grid(seg) {
        return Layout {
            row_y: vec![Some(0.0)],
            folds: Vec::new(),
            height: HUGE_H,
        };
    }
    let cells = seg.size.div_ceil(SLICE);
    let rows = cells.div_ceil(COLUMNS).max(1);
    let mut free = vec![false; cells as usize];
    for s in seg.spans.iter().filter(|s| s.kind == SpanKind::Free) {
        // Only cells the span covers whole count as free.
        let first = s.offset.div_ceil(SLICE).min(cells);
        let end = ((s.offset + s.len) / SLICE).min(cells);
        for c in first..end {
            free[c as usize] = true;
        }
    }
    let row_free = |r: u64| {
        let end = ((r + 1) * COLUMNS).min(cells);
        (r * COLUMNS..end).all(|c| free[c as usize])
    };
    let mut row_y = Vec::with_capacity(rows as usize);
    let mut folds = Vec::new();
    let mut y = 0.0;
    let mut r = 0;
    while r < rows {
        let mut run = 0;
        while r + run < rows && row_free(r + run) {
            run += 1;
        }
        if run >= 2 {
            folds.push((r, run, y));
            row_y.extend((0..run).map(|_| None));
            y += FOLD_H;
            r += run;
        } else {
            row_y.push(Some(y));
            y += CELL_H;
            r += 1;
        }
    }
    Layout {
        row_y,
        folds,
        height: y,
    }
}

fn segment_height(seg: &Segment) -> f64 {
    SEG_TITLE_H + layout(seg).height + SEG_GAP
}

/// A rectangle of a span's area.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Piece {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// The rectangles a span covers: one per shown grid row it touches (none
/// in folded rows), or one for a bar segment.
fn pieces(seg: &Segment, lay: &Layout, span: &Span, top: f64) -> Vec<Piece> {
    if !is_grid(seg) {
        let width = COLUMNS as f64 * CELL_W;
        let size = seg.size.max(1) as f64;
        let x0 = LEFT + width * (span.offset as f64 / size).min(1.0);
        let x1 = LEFT + width * ((span.offset + span.len) as f64 / size).min(1.0);
        return vec![Piece {
            x: x0,
            y: top,
            w: (x1 - x0).max(1.0),
            h: HUGE_H,
        }];
    }
    let cells = seg.size.div_ceil(SLICE);
    let first = span.offset / SLICE;
    if first >= cells {
        return Vec::new();
    }
    // At least one cell, at most to the end of the segment.
    let end = (span.offset + span.len)
        .div_ceil(SLICE)
        .clamp(first + 1, cells);
    let mut out = Vec::new();
    let mut c = first;
    while c < end {
        let row = c / COLUMNS;
        let stop = end.min((row + 1) * COLUMNS);
        if let Some(Some(y)) = lay.row_y.get(row as usize) {
            out.push(Piece {
                x: LEFT + (c % COLUMNS) as f64 * CELL_W,
                y: top + y,
                w: (stop - c) as f64 * CELL_W,
                h: CELL_H,
            });
        }
        c = stop;
    }
    out
}

/// The tooltip of a span.
fn describe(span: &Span) -> String {
    let place = format!("{} at +{:#x}", bytes(span.len), span.offset);
    match span.kind {
        SpanKind::Slab => {
            let class = span
                .class
                .map(|c| format!(" class {c}"))
                .unwrap_or_default();
            let block = span
                .block_size
                .filter(|&b| b > 0)
                .map(|b| format!(", {} blocks", bytes(b)))
                .unwrap_or_default();
            let use_ = span
                .occupancy()
                .map(|o| {
                    format!(
                        ": {} of {} in use ({:.0}%)",
                        span.used,
                        span.blocks,
                        o * 100.0
                    )
                })
                .unwrap_or_default();
            format!("slab{class}{block}{use_}; {place}")
        }
        SpanKind::Large | SpanKind::Huge => format!(
            "{} block of {}; {place}",
            span.kind,
            bytes(block_bytes(span))
        ),
        SpanKind::Free => format!("free; {place}"),
        SpanKind::Other => format!("unknown span; {place}"),
    }
}

fn segment_title(i: usize, seg: &Segment) -> String {
    let mut slabs = 0;
    let mut large = 0;
    let mut free = 0;
    for s in &seg.spans {
        match s.kind {
            SpanKind::Slab => slabs += 1,
            SpanKind::Large => large += 1,
            SpanKind::Free => free += s.len,
            _ => {}
        }
    }
    let kind = match seg.kind {
        SegmentKind::Small => "segment",
        SegmentKind::Huge => "huge block mapping",
        SegmentKind::Other => "region",
    };
    let owner = if seg.owner == 0 {
        "no owning thread".to_string()
    } else {
        format!("thread {}", seg.owner)
    };
    let mut t = format!(
        "{kind} {}: {:#x}, {}, {owner}",
        i + 1,
        seg.base,
        bytes(seg.size)
    );
    if seg.kind != SegmentKind::Huge {
        let _ = write!(t, ": {slabs} slabs, {large} large, {} free", bytes(free));
    }
    t
}

/// The legend's entries: occupancy bands, then the other span kinds.
pub fn legend_entries() -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = BANDS
        .iter()
        .map(|b| {
            let name = match b.name {
                "empty" => "empty slab".to_string(),
                "full" => "full slab".to_string(),
                n => format!("slab {n} used"),
            };
            (name, b.fill)
        })
        .collect();
    for b in [LARGE, HUGE, FREE] {
        v.push((b.name.to_string(), b.fill));
    }
    v.push(("header / not carved".to_string(), UNCARVED));
    v
}

const LEGEND_PER_ROW: usize = 5;
const LEGEND_ROW_H: f64 = 20.0;

/// The whole picture as SVG text.
pub fn svg(snap: &Snapshot) -> String {
    let legend = legend_entries();
    let legend_rows = legend.len().div_ceil(LEGEND_PER_ROW);
    let title_h = 50.0;
    let body: f64 = snap.segments.iter().map(segment_height).sum();
    let height = MARGIN + title_h + body + legend_rows as f64 * LEGEND_ROW_H + 28.0 + MARGIN;
    let (w, h) = (WIDTH.round(), height.round());
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="#fafafa"/>"##);
    let t = &snap.totals;
    let _ = writeln!(
        o,
        r#"<text x="{MARGIN}" y="{}" font-size="16" font-weight="bold">{}</text>"#,
        MARGIN + 14.0,
        xml_escape(&format!(
            "ApexAlloc heap of {} (pid {})",
            if snap.program.is_empty() {
                "?"
            } else {
                &snap.program
            },
            snap.pid
        ))
    );
    let _ = writeln!(
        o,
        r##"<text x="{MARGIN}" y="{}" fill="#444">{}</text>"##,
        MARGIN + 34.0,
        xml_escape(&format!(
            "{} segments, {} mapped, {} resident; {} in live blocks of {} active ({:.1}% fragmentation); hardening {}",
            snap.segments.len(),
            bytes(t.mapped),
            bytes(t.resident),
            bytes(t.allocated),
            bytes(t.active),
            t.fragmentation_pct,
            if snap.preset.is_empty() { "?" } else { &snap.preset }
        ))
    );
    let mut y = MARGIN + title_h;
    for (i, seg) in snap.segments.iter().enumerate() {
        draw_segment(&mut o, i, seg, y);
        y += segment_height(seg);
    }
    draw_legend(&mut o, &legend, y);
    o.push_str("</svg>\n");
    o
}

fn draw_segment(o: &mut String, i: usize, seg: &Segment, top: f64) {
    let _ = writeln!(
        o,
        r#"<g class="segment" data-base="{:#x}" data-kind="{}">"#,
        seg.base,
        match seg.kind {
            SegmentKind::Small => "small",
            SegmentKind::Huge => "huge",
            SegmentKind::Other => "other",
        }
    );
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
        top + 14.0,
        xml_escape(&segment_title(i, seg))
    );
    let grid_top = top + SEG_TITLE_H;
    let lay = layout(seg);
    let box_w = COLUMNS as f64 * CELL_W;
    let _ = writeln!(
        o,
        r#"<rect x="{LEFT}" y="{grid_top}" width="{box_w}" height="{}" fill="{UNCARVED}"/>"#,
        lay.height
    );
    for span in &seg.spans {
        draw_span(o, seg, &lay, span, grid_top);
    }
    if is_grid(seg) {
        // Row offsets, and faint lines between the cells of shown rows.
        let mut grid = String::new();
        for (r, y) in lay.row_y.iter().enumerate() {
            let Some(y) = y else { continue };
            let y = grid_top + y;
            let _ = writeln!(
                o,
                r##"<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#666">+{}</text>"##,
                LEFT - 6.0,
                y + 14.0,
                short_size(r as u64 * COLUMNS * SLICE)
            );
            for c in 1..COLUMNS {
                let _ = write!(grid, "M{} {y}v{CELL_H}", LEFT + c as f64 * CELL_W);
            }
        }
        if !grid.is_empty() {
            let _ = writeln!(
                o,
                r##"<path d="{grid}" stroke="#000000" stroke-opacity="0.08" fill="none"/>"##
            );
        }
        for &(first, rows, y) in &lay.folds {
            let y = grid_top + y;
            let from = first * COLUMNS * SLICE;
            let to = ((first + rows) * COLUMNS * SLICE).min(seg.size);
            let _ = writeln!(
                o,
                r##"<g class="fold"><rect x="{LEFT}" y="{y}" width="{box_w}" height="{FOLD_H}" fill="#ffffff" stroke="#9e9e9e" stroke-dasharray="4 3"/><text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#666">{} free, +{} to +{} (folded)</text></g>"##,
                LEFT + box_w / 2.0,
                y + 12.0,
                bytes(to - from),
                short_size(from),
                short_size(to)
            );
        }
    }
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{grid_top}" width="{box_w}" height="{}" fill="none" stroke="#737373"/>"##,
        lay.height
    );
    o.push_str("</g>\n");
}

fn draw_span(o: &mut String, seg: &Segment, lay: &Layout, span: &Span, top: f64) {
    let style = style_of(span);
    let mut attrs = format!(
        r#"class="span" data-kind="{}" fill="{}""#,
        span.kind, style.fill
    );
    if let Some(c) = span.class {
        let _ = write!(attrs, r#" data-class="{c}""#);
    }
    if span.kind == SpanKind::Slab {
        let _ = write!(
            attrs,
            r#" data-used="{}" data-blocks="{}""#,
            span.used, span.blocks
        );
    }
    let _ = writeln!(o, "<g {attrs}>");
    let _ = writeln!(o, "<title>{}</title>", xml_escape(&describe(span)));
    let ps = pieces(seg, lay, span, top);
    for p in &ps {
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" stroke="#d9d9d9" stroke-width="1"/>"##,
            p.x + 0.5,
            p.y + 0.5,
            (p.w - 1.0).max(0.5),
            (p.h - 1.0).max(0.5)
        );
    }
    if let (Some(text), Some(widest)) =
        (label_of(span), ps.iter().max_by(|a, b| a.w.total_cmp(&b.w)))
    {
        if label_fits(&text, widest.w) {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" font-family="DejaVu Sans Mono, monospace" font-size="10" text-anchor="middle" fill="{}">{}</text>"#,
                widest.x + widest.w / 2.0,
                widest.y + widest.h / 2.0 + 3.5,
                style.ink,
                xml_escape(&text)
            );
        }
    }
    o.push_str("</g>\n");
}

fn draw_legend(o: &mut String, entries: &[(String, &'static str)], top: f64) {
    let col_w = (WIDTH - 2.0 * MARGIN) / LEGEND_PER_ROW as f64;
    o.push_str("<g class=\"legend\">\n");
    for (i, (name, fill)) in entries.iter().enumerate() {
        let x = MARGIN + (i % LEGEND_PER_ROW) as f64 * col_w;
        let y = top + (i / LEGEND_PER_ROW) as f64 * LEGEND_ROW_H;
        let _ = writeln!(
            o,
            r##"<rect x="{x:.1}" y="{y:.1}" width="14" height="14" fill="{fill}" stroke="#737373"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            x + 20.0,
            y + 11.5,
            xml_escape(name)
        );
    }
    let rows = entries.len().div_ceil(LEGEND_PER_ROW);
    let _ = writeln!(
        o,
        r##"<text x="{MARGIN}" y="{:.1}" fill="#444">one cell = one {} slice, one row = {}; labels: block size of a slab (B, K = KiB), size of a large block</text>"##,
        top + rows as f64 * LEGEND_ROW_H + 12.0,
        bytes(SLICE),
        bytes(SLICE * COLUMNS)
    );
    o.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_occupancy() {
        assert_eq!(band_index(0, 100), 0);
        assert_eq!(band_index(1, 100), 1);
        assert_eq!(band_index(25, 100), 1);
        assert_eq!(band_index(26, 100), 2);
        assert_eq!(band_index(50, 100), 2);
        assert_eq!(band_index(75, 100), 3);
        assert_eq!(band_index(76, 100), 4);
        assert_eq!(band_index(99, 100), 4);
        assert_eq!(band_index(100, 100), 5);
        // One block of many still shows as used, one short of full as not full.
        assert_eq!(band_index(1, 10_000), 1);
        assert_eq!(band_index(9_999, 10_000), 4);
    }

    #[test]
    fn spans_wrap_across_rows() {
        let seg = Segment {
            base: 0,
            size: 32 << 20,
            kind: SegmentKind::Small,
            owner: 1,
            spans: vec![],
        };
        let span = Span {
            offset: 30 * SLICE,
            len: 4 * SLICE,
            kind: SpanKind::Free,
            class: None,
            block_size: None,
            used: 0,
            blocks: 0,
        };
        let ps = pieces(&seg, &layout(&seg), &span, 0.0);
        assert_eq!(ps.len(), 2);
        assert_eq!((ps[0].w, ps[0].y), (2.0 * CELL_W, 0.0));
        assert_eq!((ps[1].x, ps[1].w, ps[1].y), (LEFT, 2.0 * CELL_W, CELL_H));
    }

    #[test]
    fn labels_fit_or_are_left_out() {
        assert!(label_fits("48", CELL_W));
        assert!(label_fits("1.5K", CELL_W));
        assert!(!label_fits("huge 40.0 MiB", CELL_W));
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
