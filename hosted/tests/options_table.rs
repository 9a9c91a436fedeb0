//! The options tables in the README (under "### LD_PRELOAD") and in the
//! `options` module's documentation list exactly the listed entries of
//! `apexalloc::options::OPTIONS`, in order, with the same defaults and
//! meanings.

use std::fs;
use std::path::Path;

use apexalloc::options::OPTIONS;

/// `(name, default, meaning)` of each `| `APEX_...` row in `lines`, with
/// the backticks around the name and the default removed.
fn table_rows<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String, String)> {
    lines
        .filter(|l| l.starts_with("| `APEX_"))
        .map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 3, "not a three-column row: {l}");
            let unquote = |s: &str| s.trim().trim_matches('`').to_string();
            (
                unquote(cells[0]),
                unquote(cells[1]),
                cells[2].trim().to_string(),
            )
        })
        .collect()
}

/// The rows the code's table asks for.
fn expected_rows() -> Vec<(String, String, String)> {
    OPTIONS
        .iter()
        .filter(|o| o.listed)
        .map(|o| {
            (
                o.name.to_string(),
                o.default.to_string(),
                o.meaning.to_string(),
            )
        })
        .collect()
}

/// The table as markdown, to paste when it has changed.
fn markdown() -> String {
    let mut s = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for o in OPTIONS.iter().filter(|o| o.listed) {
        let default = if o.default.bytes().all(|b| b.is_ascii_digit()) {
            o.default.to_string()
        } else {
            format!("`{}`", o.default)
        };
        s += &format!("| `{}` | {} | {} |\n", o.name, default, o.meaning);
    }
    s
}

fn check(what: &str, rows: Vec<(String, String, String)>) {
    assert!(
        rows == expected_rows(),
        "the options table in {what} differs from apexalloc::options::OPTIONS;\n\
         found {rows:#?}\nexpected:\n{}",
        markdown()
    );
}

#[test]
fn readme_table_matches_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = fs::read_to_string(root.join("README.md")).expect("read README.md");
    let start = readme
        .find("### LD_PRELOAD")
        .expect("README.md has a \"### LD_PRELOAD\" section");
    let section = &readme[start + 3..];
    let end = section.find("\n#").unwrap_or(section.len());
    check("README.md", table_rows(section[..end].lines()));
}

#[test]
fn module_doc_table_matches_the_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/options.rs");
    let text = fs::read_to_string(src).expect("read src/options.rs");
    check(
        "hosted/src/options.rs",
        table_rows(text.lines().filter_map(|l| l.strip_prefix("//! "))),
    );
}

#[test]
fn test_aids_are_accepted_but_not_listed() {
    for name in ["APEX_TEST_HANDOFF_FD", "APEX_LIB"] {
        let o = OPTIONS.iter().find(|o| o.name == name).expect(name);
        assert!(!o.listed, "{name} must stay out of the user tables");
    }
    assert!(
        OPTIONS.iter().all(|o| o.name != "APEX_CHECK_DOUBLE_FREE"),
        "APEX_CHECK_DOUBLE_FREE has no effect and must not be accepted"
    );
}
