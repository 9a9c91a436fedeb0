//! A plain SVG chart of the results, written without any plotting library:
//! single-thread speed as a ratio to talc per max size, and heap efficiency.

use std::fmt::Write as _;

use crate::results::{Memory, Speed};

/// One bar group per max size (single thread, ratio to talc) and one group
/// of heap-efficiency bars.
pub fn svg(names: &[&str], sizes: &[usize], speed: &[Speed], memory: &[Memory]) -> String {
    const COLORS: [&str; 10] = [
        "#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#e45756", "#72b7b2", "#eeca3b",
        "#ff9da6", "#79706e",
    ];
    let (w, h, top, left, plot_h) = (900.0, 420.0, 40.0, 50.0, 280.0);
    let mut s = String::new();
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#).unwrap();
    writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    let bar = 9.0;
    let group = bar * names.len() as f64 + 14.0;
    // Left: single-thread ratio to talc, 0..2.
    let talc = names.iter().position(|n| *n == "talc");
    if let (Some(Speed { rate: med, .. }), Some(t)) =
        (speed.iter().find(|sp| sp.threads == 1), talc)
    {
        writeln!(s, r#"<text x="{left}" y="20" font-size="13">Random actions, 1 thread: ratio to talc (higher is better)</text>"#).unwrap();
        for k in 0..=4 {
            let v = k as f64 * 0.5;
            let y = top + plot_h - v / 2.0 * plot_h;
            writeln!(s, r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}">{v:.1}</text>"##, left + group * sizes.len() as f64, left - 28.0, y + 4.0).unwrap();
        }
        for (si, size) in sizes.iter().enumerate() {
            let x0 = left + si as f64 * group + 7.0;
            for (ai, _) in names.iter().enumerate() {
                let r = (med[ai][si] / med[t][si]).min(2.0);
                let bh = r / 2.0 * plot_h;
                writeln!(
                    s,
                    r#"<rect x="{}" y="{}" width="{bar}" height="{bh}" fill="{}"/>"#,
                    x0 + ai as f64 * bar,
                    top + plot_h - bh,
                    COLORS[ai % COLORS.len()]
                )
                .unwrap();
            }
            writeln!(
                s,
                r#"<text x="{}" y="{}">{size} B</text>"#,
                x0 + 10.0,
                top + plot_h + 14.0
            )
            .unwrap();
        }
    }
    // Right: heap efficiency, 0..100%.
    let right = left + group * sizes.len() as f64 + 60.0;
    writeln!(
        s,
        r#"<text x="{right}" y="20" font-size="13">Heap efficiency (%)</text>"#
    )
    .unwrap();
    for k in 0..=4 {
        let v = k as f64 * 25.0;
        let y = top + plot_h - v / 100.0 * plot_h;
        writeln!(s, r##"<line x1="{right}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}">{v:.0}</text>"##, right + 16.0 * memory.len() as f64, right - 24.0, y + 4.0).unwrap();
    }
    for (ai, m) in memory.iter().enumerate() {
        let (name, he) = (m.name, m.efficiency);
        let bh = he / 100.0 * plot_h;
        let c = names.iter().position(|n| *n == name).unwrap_or(ai);
        writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="{bh}" fill="{}"/>"#,
            right + ai as f64 * 16.0,
            top + plot_h - bh,
            COLORS[c % COLORS.len()]
        )
        .unwrap();
    }
    // Legend.
    for (ai, name) in names.iter().enumerate() {
        let x = left + (ai % 4) as f64 * 200.0;
        let y = top + plot_h + 40.0 + (ai / 4) as f64 * 18.0;
        writeln!(s, r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{name}</text>"#, y - 9.0, COLORS[ai % COLORS.len()], x + 14.0, y).unwrap();
    }
    s.push_str("</svg>\n");
    s
}
