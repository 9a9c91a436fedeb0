//! The exported C and C++ allocation API, function by function, with its
//! edge cases. Each test runs one subtest of `c/c_api.c` (or the C++
//! program `c/cxx_new.cpp`) with the allocator preloaded.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apex_system_tests::{allocator, compile, preload, run, test_dir, Allocator, RunOutput};

/// `c_api.c` exits with this status when an optional function is absent.
const EXIT_ABSENT: i32 = 3;

fn c_api_exe() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("c_api.c", &test_dir!("c_api-bin")))
}

fn run_c_api(alloc: &Allocator, subtest: &str) -> RunOutput {
    let mut cmd = Command::new(c_api_exe());
    cmd.arg(subtest)
        .env("EXPECT_LIB_SUBSTR", alloc.defining_object_substr())
        .env(
            "EXPECT_FULL_API",
            if alloc.is_apexalloc() { "1" } else { "0" },
        );
    preload(&mut cmd, alloc);
    run(&mut cmd, Duration::from_secs(60))
}

/// Runs a subtest that must pass.
fn subtest(name: &str) {
    let alloc = allocator();
    let out = run_c_api(&alloc, name);
    out.assert_success();
    out.assert_stdout(&format!("{name}: ok"));
}

/// Runs a subtest of an optional C23 function: it must pass when present,
/// and it must be present in ApexAlloc.
fn optional_subtest(name: &str) {
    let alloc = allocator();
    let out = run_c_api(&alloc, name);
    if out.code() == Some(EXIT_ABSENT) {
        assert!(
            !alloc.is_apexalloc(),
            "{name} must be exported by ApexAlloc but was not found:\n{}",
            out.report()
        );
        eprintln!("note: {name} is absent with {alloc:?}; nothing to check");
        return;
    }
    out.assert_success();
}

#[test]
fn malloc_zero() {
    subtest("malloc_zero");
}

#[test]
fn malloc_sizes_up_to_64_mib() {
    subtest("malloc_sizes");
}

#[test]
fn malloc_blocks_are_distinct() {
    subtest("malloc_distinct");
}

#[test]
fn malloc_huge_fails_with_enomem() {
    subtest("malloc_huge");
}

#[test]
fn free_null() {
    subtest("free_null");
}

#[test]
fn calloc_zeroes_and_checks_overflow() {
    subtest("calloc");
}

#[test]
fn realloc_preserves_contents() {
    subtest("realloc");
}

#[test]
fn realloc_to_zero() {
    subtest("realloc_zero");
}

#[test]
fn reallocarray() {
    subtest("reallocarray");
}

#[test]
fn posix_memalign() {
    subtest("posix_memalign");
}

#[test]
fn aligned_alloc() {
    subtest("aligned_alloc");
}

#[test]
fn memalign() {
    subtest("memalign");
}

#[test]
fn valloc() {
    subtest("valloc");
}

#[test]
fn pvalloc() {
    subtest("pvalloc");
}

#[test]
fn malloc_usable_size() {
    subtest("malloc_usable_size");
}

#[test]
fn free_sized() {
    optional_subtest("free_sized");
}

#[test]
fn free_aligned_sized() {
    optional_subtest("free_aligned_sized");
}

#[test]
fn malloc_trim() {
    subtest("malloc_trim");
}

#[test]
fn mallinfo2_reports_bytes_in_use() {
    subtest("mallinfo2");
}

#[test]
fn free_preserves_errno() {
    subtest("free_errno");
}

#[test]
fn symbols_come_from_the_preloaded_library() {
    let alloc = allocator();
    let out = run_c_api(&alloc, "symbols");
    out.assert_success();
    eprintln!("{}", out.stdout);
}

#[test]
fn cxx_operator_new_and_delete() {
    let alloc = allocator();
    let exe = compile("cxx_new.cpp", &test_dir!("cxx_new"));
    let mut cmd = Command::new(exe);
    preload(&mut cmd, &alloc);
    let out = run(&mut cmd, Duration::from_secs(60));
    out.assert_success();
    out.assert_stdout("cxx_new: ok");
}
