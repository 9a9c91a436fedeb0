//! Heap misuse, hardened_malloc style: each bug must kill the program with
//! SIGABRT and one line on stderr beginning `apexalloc: fatal: <what>`;
//! freeing memory the allocator never handed out must be ignored.
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

fn run_misuse(subtest: &str) -> RunOutput {
    let alloc = require_apexalloc();
    let mut cmd = Command::new(misuse_exe());
    cmd.arg(subtest);
    preload(&mut cmd, &alloc);
    run(&mut cmd, Duration::from_secs(30))
}

/// The subtest must die by SIGABRT after printing a line that starts with
/// `apexalloc: fatal: <message>`.
fn expect_fatal(subtest: &str, message: &str) {
    let out = run_misuse(subtest);
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

/// The subtest must run to completion: the allocator ignores the pointer.
fn expect_ignored(subtest: &str) {
    let out = run_misuse(subtest);
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
fn free_of_static_memory_is_ignored() {
    expect_ignored("foreign_static");
}

#[test]
fn free_of_stack_memory_is_ignored() {
    expect_ignored("foreign_stack");
}

#[test]
fn free_of_foreign_mmap_is_ignored() {
    expect_ignored("foreign_mmap");
}
