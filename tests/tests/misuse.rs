//! Heap misuse, hardened_malloc style: each bug must kill the program with
//! SIGABRT and one line on stderr beginning `apexalloc: fatal: <what>`.
//! Freeing memory the allocator never handed out (stack, statics, other
//! mappings) is such a bug under the default preset; with the `foreign`
//! mitigation switched off it is ignored.
//!
//! These are ApexAlloc's own guarantees, so every test here requires
//! libapexalloc.so and fails with any other allocator.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apex_system_tests::{compile, preload, require_apexalloc, run, test_dir, RunOutput};

fn misuse_exe() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("misuse.c", &test_dir!("misuse-bin")))
}

fn run_misuse(subtest: &str, harden: Option<&str>) -> RunOutput {
    let alloc = require_apexalloc();
    let mut cmd = Command::new(misuse_exe());
    cmd.arg(subtest);
    if let Some(h) = harden {
        cmd.env("APEX_HARDEN", h);
    }
    preload(&mut cmd, &alloc);
    run(&mut cmd, Duration::from_secs(30))
}

/// The subtest must die by SIGABRT after printing a line that starts with
/// `apexalloc: fatal: <message>`.
fn expect_fatal(subtest: &str, message: &str) {
    let out = run_misuse(subtest, None);
    assert_eq!(
        out.signal(),
        Some(libc::SIGABRT),
        "expected death by SIGABRT:\n{}",
        out.report()
    );
    let prefix = format!("apexalloc: fatal: {message}");
    assert!(
        out.stderr.lines().any(|l| l.starts_with(&prefix)),
        "expected a stderr line starting with {prefix:?}:\n{}",
        out.report()
    );
}

/// The subtest must run to completion: the allocator ignores the pointer
/// (the `foreign` mitigation off).
fn expect_ignored(subtest: &str) {
    let out = run_misuse(subtest, Some("default,-foreign"));
    out.assert_success();
    out.assert_stdout(&format!("{subtest}: ok"));
}

#[test]
fn double_free_aborts() {
    expect_fatal("double_free", "double free");
}

#[test]
fn free_of_interior_pointer_of_small_block_aborts() {
    expect_fatal("invalid_free_small", "invalid free");
}

#[test]
fn free_of_interior_pointer_of_large_block_aborts() {
    expect_fatal("invalid_free_large", "invalid free");
}

#[test]
fn realloc_of_interior_pointer_aborts() {
    expect_fatal("invalid_realloc", "invalid realloc");
}

#[test]
fn free_of_static_memory_aborts_or_is_ignored_without_the_check() {
    expect_fatal("foreign_static", "invalid free (0x");
    expect_ignored("foreign_static");
}

#[test]
fn free_of_stack_memory_aborts_or_is_ignored_without_the_check() {
    expect_fatal("foreign_stack", "invalid free (0x");
    expect_ignored("foreign_stack");
}

#[test]
fn free_of_foreign_mmap_aborts_or_is_ignored_without_the_check() {
    expect_fatal("foreign_mmap", "invalid free (0x");
    expect_ignored("foreign_mmap");
}
