//! Packaging for C users: `install.sh` into a temporary prefix, a C program
//! built with `pkg-config --cflags --libs apexalloc` and run against the
//! installed library; the library's SONAME and its exported symbols (the C
//! API and the C++ operators, nothing of the Rust runtime).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apex_system_tests::{
    require_apexalloc, require_program, run, test_dir, workspace_root, Allocator,
};

/// A C user of the installed library: allocates through it (it must be the
/// `malloc` the program gets), frees with the C23 sized functions and prints
/// the statistics line.
const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apexalloc.h>

int main(void) {
    char *p = malloc(100);
    if (!p) return 1;
    strcpy(p, "hello");
    void *q = aligned_alloc(64, 256);
    if (!q || ((size_t)q & 63)) return 2;
    Dl_info info;
    if (!dladdr((void *)malloc, &info) || !info.dli_fname) return 3;
    printf("malloc from %s\n", info.dli_fname);
    free_sized(p, 100);
    free_aligned_sized(q, 64, 256);
    apex_stats_print();
    puts("pkg_config_user: ok");
    return 0;
}
"#;

/// The library under test (ApexAlloc's: its packaging is checked).
fn library() -> PathBuf {
    match require_apexalloc() {
        Allocator::Preload(path) => path,
        Allocator::System => unreachable!("require_apexalloc returns ApexAlloc"),
    }
}

/// Runs `install.sh --prefix <prefix> --lib <library>`.
fn install(prefix: &Path) {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .arg("--lib")
        .arg(library())
        .env_remove("LD_PRELOAD")
        .env_remove("DESTDIR");
    run(&mut cmd, Duration::from_secs(60)).assert_success();
}

/// Runs a tool and returns its standard output.
fn output_of(program: &str, args: &[&str], path: &Path) -> String {
    require_program(program);
    let mut cmd = Command::new(program);
    cmd.args(args).arg(path).env_remove("LD_PRELOAD");
    let out = run(&mut cmd, Duration::from_secs(60));
    out.assert_success();
    out.stdout
}

#[test]
fn installed_library_links_with_pkg_config() {
    require_program("gcc");
    let pkg_config = require_program("pkg-config");
    let dir = test_dir!("packaging-pkg-config");
    let prefix = dir.join("prefix");
    install(&prefix);

    let libdir = prefix.join("lib");
    for file in [
        libdir.join("libapexalloc.so.0"),
        prefix.join("include/apexalloc.h"),
        libdir.join("pkgconfig/apexalloc.pc"),
    ] {
        assert!(file.is_file(), "{} was not installed", file.display());
    }
    let link = fs::read_link(libdir.join("libapexalloc.so")).expect("libapexalloc.so symlink");
    assert_eq!(link, Path::new("libapexalloc.so.0"));

    let mut cmd = Command::new(pkg_config);
    cmd.args(["--cflags", "--libs", "apexalloc"])
        .env("PKG_CONFIG_PATH", libdir.join("pkgconfig"));
    let flags = run(&mut cmd, Duration::from_secs(30));
    flags.assert_success();
    let flags: Vec<&str> = flags.stdout.split_whitespace().collect();
    assert!(
        flags.contains(&"-lapexalloc"),
        "pkg-config flags without -lapexalloc: {flags:?}"
    );

    let source = dir.join("pkg_config_user.c");
    fs::write(&source, PROGRAM).unwrap();
    let exe = dir.join("pkg_config_user");
    let mut cmd = Command::new("gcc");
    cmd.args(["-O1", "-Wall", "-Werror", "-std=gnu11", "-o"])
        .arg(&exe)
        .arg(&source)
        .args(&flags)
        .env_remove("LD_PRELOAD");
    run(&mut cmd, Duration::from_secs(120)).assert_success();

    let dynamic = output_of("readelf", &["-d"], &exe);
    assert!(
        dynamic.contains("Shared library: [libapexalloc.so.0]"),
        "the program does not record libapexalloc.so.0:\n{dynamic}"
    );

    let mut cmd = Command::new(&exe);
    cmd.env("LD_LIBRARY_PATH", &libdir)
        .env_remove("LD_PRELOAD")
        .env_remove("APEX_STATS_FILE");
    let out = run(&mut cmd, Duration::from_secs(30));
    out.assert_success();
    out.assert_stdout("pkg_config_user: ok");
    let from = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("malloc from "))
        .unwrap_or_default();
    assert!(
        from.ends_with("/libapexalloc.so.0"),
        "malloc does not come from the installed library:\n{}",
        out.report()
    );
    let stats = out
        .stderr
        .lines()
        .find(|l| l.starts_with("apexalloc[") && l.contains(" allocations, "))
        .unwrap_or_else(|| panic!("no statistics line:\n{}", out.report()));
    let allocations: u64 = stats
        .split_once("]: ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable statistics line: {stats}"));
    assert!(allocations >= 2, "{stats}");
}

/// The names `exports.map` makes global.
fn exports_map() -> BTreeSet<String> {
    let path = workspace_root().join("hosted/preload/exports.map");
    let text = fs::read_to_string(&path).unwrap();
    // Drop comments, then take the `global:` section.
    let mut plain = String::new();
    let mut rest = text.as_str();
    while let Some((before, after)) = rest.split_once("/*") {
        plain.push_str(before);
        rest = after.split_once("*/").map_or("", |(_, a)| a);
    }
    plain.push_str(rest);
    let global = plain
        .split_once("global:")
        .and_then(|(_, g)| g.split_once("local:"))
        .map(|(g, _)| g)
        .expect("exports.map has a global: and a local: section");
    global
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The function names `apexalloc.h` declares.
fn header_functions() -> BTreeSet<String> {
    let text = fs::read_to_string(workspace_root().join("hosted/apexalloc.h")).unwrap();
    text.lines()
        .map(str::trim_start)
        .filter(|l| !(l.starts_with("/*") || l.starts_with('*') || l.starts_with('#')))
        .filter_map(|l| {
            let (before, _) = l.split_once('(')?;
            let name = before
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

#[test]
fn only_the_c_api_is_exported() {
    let lib = library();
    let dynamic = output_of("readelf", &["-d"], &lib);
    assert!(
        dynamic.contains("Library soname: [libapexalloc.so.0]"),
        "SONAME is not libapexalloc.so.0:\n{dynamic}"
    );

    let symbols = output_of("nm", &["-D", "--defined-only"], &lib);
    let exported: BTreeSet<String> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(String::from)
        .collect();
    let expected = exports_map();
    assert!(expected.contains("malloc") && expected.contains("_Znwm"));
    let extra: Vec<_> = exported.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&exported).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "exported but not in exports.map: {extra:?}; in exports.map but not exported: {missing:?}"
    );
    let header = header_functions();
    assert!(header.contains("apex_stats_print") && header.contains("free_sized"));
    let undeclared: Vec<_> = header.difference(&exported).collect();
    assert!(
        undeclared.is_empty(),
        "declared in apexalloc.h but not exported: {undeclared:?}"
    );
}
