//! Finding `libapexalloc.so`, or building it from the source tree this
//! command was built from.

use std::env;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The library's file name.
pub const LIB_NAME: &str = "libapexalloc.so";
/// The Cargo package that builds it.
pub const PRELOAD_PACKAGE: &str = "apexalloc-preload";

/// The workspace this command was built from (it may since have moved).
pub fn source_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Places where a built library may be, in the order they are tried:
/// next to this executable, the `release` directory of the target
/// directory it lives in (`target/debug/apex` -> `target/release`),
/// `$CARGO_TARGET_DIR/release`, and the source workspace's `target/release`.
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(dir.clone());
        // Test binaries live one level deeper, in `target/debug/deps`.
        for up in [dir.parent(), dir.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            dirs.push(up.join("release"));
        }
    }
    if let Some(target) = env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(target).join("release"));
    }
    dirs.push(source_workspace().join("target/release"));
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = d.join(LIB_NAME);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The library named by `explicit` (a `--lib` option) or `$APEX_LIB`, or the
/// first of [`candidates`] that exists. `Err` when a named file is missing;
/// `Ok(None)` when nothing was named and nothing was found.
pub fn find(explicit: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let named = explicit.map(Path::to_path_buf).or_else(|| {
        env::var_os("APEX_LIB")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = named {
        return if path.is_file() {
            Ok(Some(absolute(&path)))
        } else {
            Err(format!(
                "{} does not exist (named by --lib or APEX_LIB)",
                path.display()
            ))
        };
    }
    Ok(candidates()
        .into_iter()
        .find(|p| p.is_file())
        .map(|p| absolute(&p)))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Finds the library, building it when it is nowhere to be found.
pub fn find_or_build(explicit: Option<&Path>, quiet: bool) -> Result<PathBuf, String> {
    if let Some(p) = find(explicit)? {
        return Ok(p);
    }
    let ws = source_workspace();
    if !ws.join("hosted/preload/Cargo.toml").is_file() {
        return Err(format!(
            "{LIB_NAME} was not found (looked in: {}) and the source tree it is built from \
             is gone; point APEX_LIB or --lib at the library",
            candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    build(&ws, quiet)
}

/// Runs `cargo build --release -p apexalloc-preload` in `workspace` with
/// cargo's progress on stderr, and returns the library it produced (read
/// from cargo's machine-readable messages, so any target directory works).
pub fn build(workspace: &Path, quiet: bool) -> Result<PathBuf, String> {
    let ws = absolute(workspace);
    if !quiet {
        eprintln!(
            "apex: {LIB_NAME} not found; building it with `cargo build --release -p \
             {PRELOAD_PACKAGE}` in {} (about a minute the first time)",
            ws.display()
        );
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ws)
        .args(["build", "--release", "-p", PRELOAD_PACKAGE])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        });
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run cargo to build {LIB_NAME}: {e}"))?;
    let mut found = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(p) = artifact_with_name(&line, LIB_NAME) {
                found = Some(p);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo failed: {e}"))?;
    if !status.success() {
        return Err(format!("building {LIB_NAME} failed ({status})"));
    }
    let lib =
        found.ok_or_else(|| format!("cargo built {PRELOAD_PACKAGE} but named no {LIB_NAME}"))?;
    if !quiet {
        eprintln!("apex: built {}", lib.display());
    }
    Ok(lib)
}

/// The file called `name` among the `filenames` of one cargo
/// `compiler-artifact` message.
fn artifact_with_name(line: &str, name: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    msg.get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .map(PathBuf::from)
        .find(|p| p.file_name().is_some_and(|n| n == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_library_from_cargo_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","filenames":["/t/release/libapexalloc.so"],"executable":null}"#;
        assert_eq!(
            artifact_with_name(line, LIB_NAME),
            Some(PathBuf::from("/t/release/libapexalloc.so"))
        );
        let other =
            r#"{"reason":"compiler-artifact","filenames":["/t/release/libapex_core.rlib"]}"#;
        assert_eq!(artifact_with_name(other, LIB_NAME), None);
        assert_eq!(
            artifact_with_name(r#"{"reason":"build-finished","success":true}"#, LIB_NAME),
            None
        );
        assert_eq!(artifact_with_name("Compiling apex-core", LIB_NAME), None);
    }

    #[test]
    fn a_named_library_must_exist() {
        let err = find(Some(Path::new("/nonexistent/libapexalloc.so"))).unwrap_err();
        assert!(err.contains("/nonexistent/libapexalloc.so"), "{err}");
    }

    #[test]
    fn candidates_include_the_source_tree() {
        let c = candidates();
        assert!(c.iter().all(|p| p.ends_with(LIB_NAME)));
        assert!(c.contains(&source_workspace().join("target/release").join(LIB_NAME)));
    }
}
