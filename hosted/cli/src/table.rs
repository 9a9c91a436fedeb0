//! The statistics table `apex run` prints.

use std::fmt::Write;

use crate::snapshot::Snapshot;
use crate::units::{bytes, count};

/// Size classes shown without `--stats`.
pub const TOP_CLASSES: usize = 10;

/// Lays out rows of cells in columns: the first column left-aligned, the
/// others right-aligned, two spaces apart.
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, "  {cell:<w$}", w = widths[0]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The header line: version, program, pid and hardening.
pub fn header(s: &Snapshot) -> String {
    let harden = if s.harden.is_empty() {
        String::from("none")
    } else {
        s.harden.join(" ")
    };
    let preset = if s.preset.is_empty() {
        String::new()
    } else {
        format!("{} ", s.preset)
    };
    format!(
        "apexalloc {}: {} (pid {}), hardening {preset}({harden})\n",
        s.version,
        if s.program.is_empty() {
            "?"
        } else {
            &s.program
        },
        s.pid
    )
}

/// The totals, one figure a line with what it means.
pub fn totals(s: &Snapshot) -> String {
    let t = &s.totals;
    let remote = if t.frees > 0 {
        format!(
            "{} from other threads ({:.1}%)",
            count(t.remote_frees),
            100.0 * t.remote_frees as f64 / t.frees as f64
        )
    } else {
        String::new()
    };
    let rows: Vec<Vec<String>> = vec![
        row(["allocated", &bytes(t.allocated), "in live blocks"]),
        row([
            "active",
            &bytes(t.active),
            "in slabs and large blocks in use, and huge blocks",
        ]),
        row([
            "peak active",
            &bytes(t.peak_active),
            "the most active at once",
        ]),
        row([
            "resident",
            &bytes(t.resident),
            "in memory (touched and not given back)",
        ]),
        row(["mapped", &bytes(t.mapped), "address space reserved"]),
        row([
            "retained",
            &bytes(t.retained),
            "mapped, but given back to the system",
        ]),
        row([
            "fragmentation",
            &format!("{:.1} %", t.fragmentation_pct),
            "of active not in live blocks",
        ]),
        row(["segments", &count(t.segments), ""]),
        row([
            "mallocs",
            &count(t.mallocs),
            &format!("{} live", count(t.mallocs.saturating_sub(t.frees))),
        ]),
        row(["frees", &count(t.frees), &remote]),
    ];
    // The meaning column is text: left-aligned after the figures.
    let mut out = String::new();
    let name_w = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let fig_w = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    for r in rows {
        let line = format!("  {:<name_w$}  {:>fig_w$}  {}", r[0], r[1], r[2]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Size classes with live bytes, most bytes first; `limit` of them.
pub fn classes(s: &Snapshot, limit: Option<usize>) -> String {
    let mut cls: Vec<_> = s
        .classes
        .iter()
        .filter(|c| c.allocated > 0 || c.slabs > 0)
        .collect();
    cls.sort_by(|a, b| b.allocated.cmp(&a.allocated).then(a.class.cmp(&b.class)));
    let shown = limit.unwrap_or(cls.len()).min(cls.len());
    let total: u64 = s.classes.iter().map(|c| c.allocated).sum();
    let mut rows = vec![row([
        "class",
        "block",
        "allocated",
        "share",
        "live blocks",
        "slabs",
    ])];
    for c in &cls[..shown] {
        rows.push(vec![
            c.class.to_string(),
            bytes(c.size),
            bytes(c.allocated),
            if total > 0 {
                format!("{:.1}%", 100.0 * c.allocated as f64 / total as f64)
            } else {
                "-".into()
            },
            count(c.active_blocks),
            count(c.slabs),
        ]);
    }
    let mut out = columns(&rows);
    if shown < cls.len() {
        let _ = writeln!(
            out,
            "  ... {} more classes in use (apex run --stats shows all)",
            cls.len() - shown
        );
    }
    out
}

/// Per-thread counters.
pub fn threads(s: &Snapshot) -> String {
    let mut rows = vec![row(["tid", "allocated", "deallocated", "mallocs", "frees"])];
    for t in &s.threads {
        rows.push(vec![
            t.tid.to_string(),
            bytes(t.allocated),
            bytes(t.deallocated),
            count(t.mallocs),
            count(t.frees),
        ]);
    }
    columns(&rows)
}

/// The whole report: header, totals, the top size classes (all of them and
/// the threads with `detailed`).
pub fn report(s: &Snapshot, detailed: bool) -> String {
    let mut out = header(s);
    out.push('\n');
    out.push_str(&totals(s));
    let in_use = s
        .classes
        .iter()
        .filter(|c| c.allocated > 0 || c.slabs > 0)
        .count();
    if in_use > 0 {
        out.push('\n');
        if detailed {
            out.push_str("size classes in use, by bytes allocated:\n");
        } else {
            out.push_str("top size classes by bytes allocated:\n");
        }
        out.push_str(&classes(s, (!detailed).then_some(TOP_CLASSES)));
    }
    if detailed && !s.threads.is_empty() {
        out.push_str("\nthreads:\n");
        out.push_str(&threads(s));
    }
    out
}
