//! The `apex` command: reading statistics documents, drawing them, and
//! running programs (under a stand-in library that writes a known
//! document, and under the real libapexalloc.so when it has been built).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use apex_cli::draw::{self, BANDS};
use apex_cli::snapshot::{self, Snapshot, SpanKind};
use apex_cli::{library, render};
use resvg::tiny_skia;

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small.json")
}

fn fixture() -> Snapshot {
    snapshot::load(&fixture_path()).expect("the fixture parses")
}

fn apex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apex"))
        .args(args)
        .output()
        .expect("run apex")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_fixture_parses_into_what_the_json_says() {
    let snap = fixture();
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path()).unwrap()).unwrap();
    assert_eq!(snap.pid, raw["pid"].as_u64().unwrap());
    assert_eq!(
        snap.totals.mallocs,
        raw["totals"]["mallocs"].as_u64().unwrap()
    );
    assert_eq!(snap.harden.len(), raw["harden"].as_array().unwrap().len());
    assert_eq!(snap.classes.len(), raw["classes"].as_array().unwrap().len());
    assert_eq!(snap.threads.len(), raw["threads"].as_array().unwrap().len());
    let raw_segs = raw["segments"].as_array().unwrap();
    assert_eq!(snap.segments.len(), raw_segs.len());
    for (seg, rs) in snap.segments.iter().zip(raw_segs) {
        let base = rs["base"].as_str().unwrap();
        assert_eq!(format!("{:#x}", seg.base), base);
        let raw_spans = rs["spans"].as_array().unwrap();
        assert_eq!(seg.spans.len(), raw_spans.len());
        for (span, r) in seg.spans.iter().zip(raw_spans) {
            assert_eq!(span.kind.to_string(), r["kind"].as_str().unwrap());
            assert_eq!(span.offset, r["offset"].as_u64().unwrap());
            assert_eq!(span.used, r["used"].as_u64().unwrap_or(0));
            assert_eq!(span.block_size, r["block_size"].as_u64());
        }
    }
}

/// The `<g class="span">` elements of a picture, in document order.
fn span_groups<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("span"))
        .collect()
}

/// The band a slab should be coloured with, worked out from the share of
/// blocks in use (quarters, rounded up; exactly empty and full apart).
fn expected_band(used: u64, blocks: u64) -> usize {
    if used == 0 {
        0
    } else if used == blocks {
        5
    } else {
        (used as f64 / blocks as f64 * 4.0).ceil() as usize
    }
}

/// The label a block size should get: bytes below 1 KiB, else KiB.
fn expected_label(size: u64) -> String {
    if size < 1024 {
        size.to_string()
    } else {
        format!("{}K", size / 1024)
    }
}

#[test]
fn svg_has_one_element_per_span_with_its_colour_and_label() {
    let snap = fixture();
    let svg = draw::svg(&snap);
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
    let groups = span_groups(&doc);
    let spans: Vec<_> = snap.segments.iter().flat_map(|s| &s.spans).collect();
    assert_eq!(groups.len(), spans.len());
    let mut bands_seen = [false; 6];
    for (g, span) in groups.iter().zip(&spans) {
        assert_eq!(
            g.attribute("data-kind"),
            Some(span.kind.to_string().as_str())
        );
        let label = g
            .children()
            .find(|n| n.has_tag_name("text"))
            .and_then(|t| t.text());
        let rects = g.children().filter(|n| n.has_tag_name("rect")).count();
        match span.kind {
            SpanKind::Slab => {
                let band = expected_band(span.used, span.blocks);
                bands_seen[band] = true;
                assert_eq!(g.attribute("fill"), Some(BANDS[band].fill), "{span:?}");
                // Every slab of the fixture is at least one cell wide, room
                // for its block size.
                assert_eq!(
                    label,
                    Some(expected_label(span.block_size.unwrap()).as_str())
                );
                assert!(rects >= 1);
            }
            SpanKind::Large => {
                assert_eq!(g.attribute("fill"), Some(draw::LARGE.fill));
                assert_eq!(label, Some(expected_label(span.len).as_str()));
            }
            SpanKind::Huge => {
                assert_eq!(g.attribute("fill"), Some(draw::HUGE.fill));
                assert_eq!(label, Some("huge 40.0 MiB"));
                assert_eq!(rects, 1);
            }
            SpanKind::Free => {
                assert_eq!(g.attribute("fill"), Some(draw::FREE.fill));
                assert_eq!(label, None);
            }
            SpanKind::Other => unreachable!("the fixture has no other kinds"),
        }
    }
    // The fixture has a slab in every band, so every colour was checked.
    assert_eq!(bands_seen, [true; 6]);
    // The legend names every band's colour.
    let legend = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("legend"))
        .expect("a legend");
    for b in BANDS {
        assert!(
            legend
                .descendants()
                .any(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(b.fill)),
            "legend lacks {}",
            b.name
        );
    }
}

#[test]
fn mostly_free_segments_are_folded() {
    let snap = fixture();
    let svg = draw::svg(&snap);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let folds = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("fold"))
        .count();
    // Both small segments are free past their first row.
    assert_eq!(folds, 2);
    // Unfolded, 16 rows of 20 px each would make two segments alone taller
    // than the whole picture is.
    let h: f64 = doc
        .root_element()
        .attribute("height")
        .unwrap()
        .parse()
        .unwrap();
    assert!(h < 2.0 * 16.0 * 20.0, "height {h}");
}

fn svg_size(svg: &str) -> (u32, u32) {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let root = doc.root_element();
    let w: f64 = root.attribute("width").unwrap().parse().unwrap();
    let h: f64 = root.attribute("height").unwrap().parse().unwrap();
    (w as u32, h as u32)
}

#[test]
fn png_decodes_with_the_pictures_size_and_colours() {
    let snap = fixture();
    let svg = draw::svg(&snap);
    let (w, h) = svg_size(&svg);
    let (data, pw, ph) = render::png(&svg, 1.0).expect("render");
    assert_eq!((pw, ph), (w, h));
    let pix = tiny_skia::Pixmap::decode_png(&data).expect("a valid PNG");
    assert_eq!((pix.width(), pix.height()), (w, h));
    // A full slab's rectangle is drawn in the full band's colour.
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let full = span_groups(&doc)
        .into_iter()
        .find(|g| g.attribute("fill") == Some(BANDS[5].fill))
        .unwrap();
    let rect = full.children().find(|n| n.has_tag_name("rect")).unwrap();
    let x: f64 = rect.attribute("x").unwrap().parse().unwrap();
    let y: f64 = rect.attribute("y").unwrap().parse().unwrap();
    let px = pix.pixel(x as u32 + 3, y as u32 + 3).unwrap();
    assert_eq!((px.red(), px.green(), px.blue()), (0xbd, 0x00, 0x26));
    // Twice the scale, twice the pixels.
    let (data2, pw2, ph2) = render::png(&svg, 2.0).unwrap();
    let pix2 = tiny_skia::Pixmap::decode_png(&data2).unwrap();
    assert_eq!((pix2.width(), pix2.height()), (pw2, ph2));
    assert_eq!((pw2, ph2), (2 * w, 2 * h));
}

#[test]
fn heap_from_a_file_writes_both_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("h.svg");
    let png = dir.path().join("h.png");
    let out = apex(&[
        "heap",
        "--from",
        fixture_path().to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(drawn, draw::svg(&fixture()));
    let pix = tiny_skia::Pixmap::load_png(&png).unwrap();
    assert_eq!((pix.width(), pix.height()), svg_size(&drawn));
    // The terminal summary counts slabs per band: one per band, 1-25% two.
    assert!(err.contains("3 segments"), "{err}");
    assert!(err.contains("7 slabs"), "{err}");
    assert!(err.contains("fragmentation: 0.7%"), "{err}");
}

#[test]
fn bad_input_is_reported_not_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"apexalloc": "0.1.0"}"#).unwrap();
    let out = apex(&["heap", "--from", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("not an ApexAlloc statistics document"));
    let out = apex(&["heap", "--from", "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(125));
    let out = apex(&["heap", "--scale", "0", "--from", "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("--scale 0 is out of range"));
    // A command needs a program.
    let out = apex(&["run"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("PROG"), "{}", text(&out.stderr));
}

#[test]
fn heap_writes_heap_svg_when_no_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apex"))
        .args(["heap", "--from", fixture_path().to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drawn = std::fs::read_to_string(dir.path().join("heap.svg")).unwrap();
    assert_eq!(drawn, draw::svg(&fixture()));
}

#[test]
fn a_program_that_cannot_run_gives_the_shells_status() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_library(dir.path());
    let lib = lib.to_str().unwrap();
    let out = apex(&["run", "-q", "--lib", lib, "--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot run /nonexistent/program"));
    // A file that is not executable.
    let out = apex(&[
        "run",
        "-q",
        "--lib",
        lib,
        "--",
        fixture_path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
}

#[test]
fn help_explains_both_commands() {
    let out = apex(&["--help"]);
    let s = text(&out.stdout);
    assert!(out.status.success());
    for needle in ["apex run", "apex heap", "libapexalloc.so", "Examples"] {
        assert!(s.contains(needle), "--help lacks {needle}:\n{s}");
    }
    let s = text(&apex(&["heap", "--help"]).stdout);
    for needle in ["--svg", "--png", "--from", "64 KiB"] {
        assert!(s.contains(needle), "heap --help lacks {needle}:\n{s}");
    }
}

/// Builds the stand-in library from `tests/fixtures/fake_stats.c`.
fn fake_library(dir: &Path) -> PathBuf {
    let lib = dir.join("libfake.so");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_stats.c");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) to build the stand-in library");
    assert!(st.success());
    lib
}

#[test]
fn run_passes_output_and_status_through_and_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_library(dir.path());
    let lib = lib.to_str().unwrap();
    let json = dir.path().join("saved.json");
    let out = apex(&[
        "run",
        "--lib",
        lib,
        "--stats",
        "--harden",
        "full",
        "--leaks",
        "--json",
        json.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        // dash leaves with `_exit` (no exit handlers, so no statistics);
        // `ls` exits normally, with status 2 for a missing file.
        "echo from-the-program; exec ls /nonexistent-apex-test-dir",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(text(&out.stdout), "from-the-program\n");
    // The table is the stand-in's document, of the program's own process.
    assert!(err.contains("fake-program"), "{err}");
    assert!(err.contains("12,345"), "{err}");
    assert!(err.contains("3.0 MiB"), "{err}");
    assert!(err.contains("25.0 %"), "{err}");
    // The options reached the program's environment.
    assert!(err.contains("hardening full (leaks-on)"), "{err}");
    // --stats lists threads.
    assert!(err.contains("threads:"), "{err}");
    let saved = snapshot::load(&json).unwrap();
    assert_eq!(saved.totals.mallocs, 12345);
    assert_eq!(saved.preset, "full");
}

#[test]
fn run_reports_a_signal_as_a_shell_does() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_library(dir.path());
    let out = apex(&[
        "run",
        "--lib",
        lib.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "kill -ABRT $$",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 6), "{err}");
    assert!(err.contains("killed by signal 6 (SIGABRT)"), "{err}");
}

#[test]
fn run_shows_a_child_processs_statistics_when_the_program_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_library(dir.path());
    // The shell is killed (no exit handlers, so no document); its child
    // `/bin/true` exited normally and wrote one.
    let out = apex(&[
        "run",
        "--lib",
        lib.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "/bin/true; kill -KILL $$",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 9), "{err}");
    assert!(err.contains("own process wrote no statistics"), "{err}");
    assert!(err.contains("fake-program"), "{err}");
}

/// The real library, if it has been built (the CI builds it first).
fn real_library() -> Option<PathBuf> {
    match library::find(None) {
        Ok(Some(p)) => Some(p),
        _ => {
            println!(
                "note: libapexalloc.so not found ({}); build it with `cargo build --release -p \
                 apexalloc-preload` to run this test",
                library::candidates()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            None
        }
    }
}

#[test]
fn run_under_the_real_library_passes_the_exit_status_and_draws_its_heap() {
    let Some(lib) = real_library() else { return };
    let lib = lib.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ls.json");
    let out = apex(&[
        "run",
        "--lib",
        lib,
        "--json",
        json.to_str().unwrap(),
        "--",
        "ls",
        "-la",
        "/",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(lib), "{err}");
    // The library's own document, read back: ls allocated, in segments.
    let snap = snapshot::load(&json).unwrap();
    assert_eq!(snap.program, "ls");
    assert!(snap.totals.mallocs > 0, "{snap:?}");
    assert!(!snap.segments.is_empty());
    assert!(err.contains(&format!("ls (pid {})", snap.pid)), "{err}");
    let out = apex(&[
        "run",
        "--lib",
        lib,
        "--",
        "ls",
        "/nonexistent-apex-test-dir",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Its heap drawn: one span element per span of the document.
    let svg = dir.path().join("ls.svg");
    let out = apex(&[
        "heap",
        "--from",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&drawn).unwrap();
    let spans: usize = snap.segments.iter().map(|s| s.spans.len()).sum();
    assert!(spans > 0);
    assert_eq!(span_groups(&doc).len(), spans);
}
