//! Memory-checking tools with ApexAlloc (docs/tools.md).
//!
//! `ApexAlloc` with the `valgrind` feature under Valgrind's memcheck: a
//! deliberate leak is reported as "definitely lost", a deliberate read of a
//! freed block as an invalid read inside that block, and a program that
//! frees everything gets no report under any hardening preset. The program
//! is `hosted/examples/valgrind_client.rs`, built here into a target
//! directory of its own. Skipped, with a note, when `valgrind` is not
//! installed (`tests/install-deps.sh` installs it).
//!
//! And what docs/tools.md says of C programs: AddressSanitizer brings its
//! own malloc and refuses to start with libapexalloc.so preloaded; memcheck
//! replaces the preloaded malloc with its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apex_system_tests::{allocator, compile, preload, run, test_dir, workspace_root, Allocator};

fn valgrind_present() -> bool {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("note: valgrind is not installed; skipping (tests/install-deps.sh installs it)");
    }
    found
}

/// The library under test if it is ApexAlloc (these checks are about it).
fn apexalloc_under_test() -> Option<Allocator> {
    let alloc = allocator();
    if !alloc.is_apexalloc() {
        println!("note: the allocator under test is {alloc:?}, not ApexAlloc; skipping");
        return None;
    }
    Some(alloc)
}

/// Builds the client program once per test process.
fn client() -> &'static PathBuf {
    static CLIENT: OnceLock<PathBuf> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("valgrind-client");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "-p",
                "apexalloc",
                "--features",
                "valgrind",
                "--example",
                "valgrind_client",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the valgrind client failed");
        target.join("debug/examples/valgrind_client")
    })
}

/// Runs the client under memcheck and returns memcheck's report.
fn memcheck(mode: &str, harden: &str) -> String {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--track-origins=yes",
    ])
    .arg(client())
    .arg(mode)
    .env("APEX_HARDEN", harden)
    .env_remove("LD_PRELOAD");
    let out = run(&mut cmd, Duration::from_secs(300));
    let report = out.stderr;
    assert!(
        report.contains("Memcheck"),
        "valgrind did not run memcheck:\n{report}"
    );
    report
}

/// The figure memcheck gives for `what` in its leak summary, in bytes.
fn summary_bytes(report: &str, what: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.contains(what))?;
    let after = line.split(what).nth(1)?;
    after
        .split_whitespace()
        .next()?
        .replace(',', "")
        .parse()
        .ok()
}

#[test]
fn memcheck_reports_a_leak_through_apexalloc() {
    if !valgrind_present() {
        return;
    }
    let report = memcheck("leak", "default");
    // Eight 3000-byte blocks are lost; a stale copy of a pointer in a
    // register or in the allocator's own bookkeeping (a slab's first block)
    // may keep one of them reachable.
    let lost = summary_bytes(&report, "definitely lost:").unwrap_or(0);
    assert!(
        (7 * 3000..=8 * 3000).contains(&lost),
        "memcheck did not report the leak:\n{report}"
    );
    assert!(
        report.contains("are definitely lost") && report.contains("valgrind_client::leak"),
        "the leak is not attributed to its allocation site:\n{report}"
    );
}

#[test]
fn memcheck_reports_a_use_after_free_through_apexalloc() {
    if !valgrind_present() {
        return;
    }
    let report = memcheck("use-after-free", "default");
    let invalid = report
        .find("Invalid read of size 1")
        .unwrap_or_else(|| panic!("no invalid read reported:\n{report}"));
    let rest = &report[invalid..];
    assert!(
        rest.contains("valgrind_client::use_after_free")
            && rest.contains("is 8 bytes inside a block of size 64 free'd"),
        "the invalid read is not placed in the freed block:\n{report}"
    );
    assert!(
        report.contains("ERROR SUMMARY: 1 errors"),
        "errors other than the deliberate one:\n{report}"
    );
}

#[test]
fn memcheck_reports_a_read_past_the_requested_size() {
    if !valgrind_present() {
        return;
    }
    // The allocator rounds 100 bytes up to its 112-byte class; the 12
    // bytes of slack are announced as inaccessible.
    let report = memcheck("past-end", "default");
    assert!(
        report.contains("Invalid read of size 1")
            && report.contains("is 0 bytes after a block of size 100 alloc'd")
            && report.contains("valgrind_client::past_end"),
        "the read past the end was not reported:\n{report}"
    );
}

#[test]
fn memcheck_reports_a_use_of_uninitialised_memory() {
    if !valgrind_present() {
        return;
    }
    let report = memcheck("uninit", "default");
    // The origin is the block announced to memcheck, in the function
    // that allocated it.
    let origin = report
        .split("Uninitialised value was created by a heap allocation")
        .nth(1)
        .unwrap_or("");
    assert!(
        origin.contains("valgrind_client::uninit"),
        "the origin is not the allocation:\n{report}"
    );
    assert!(
        report.contains("Conditional jump or move depends on uninitialised value(s)")
            && report.contains("Uninitialised value was created by a heap allocation"),
        "the uninitialised read was not reported:\n{report}"
    );
}

#[test]
fn memcheck_is_silent_about_a_correct_program_under_every_preset() {
    if !valgrind_present() {
        return;
    }
    for harden in ["off", "default", "full"] {
        let report = memcheck("clean", harden);
        assert!(
            report.contains("ERROR SUMMARY: 0 errors"),
            "APEX_HARDEN={harden}: memcheck reported errors in a correct program \
             (the allocator's own accesses must not be reported):\n{report}"
        );
        assert_eq!(
            summary_bytes(&report, "definitely lost:"),
            Some(0),
            "APEX_HARDEN={harden}:\n{report}"
        );
        // memcheck saw the program's blocks (thousands of them), not only
        // the C library's few.
        let allocs: u64 = report
            .lines()
            .find_map(|l| l.split("total heap usage: ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .map(|n| n.replace(',', "").parse().unwrap())
            .unwrap_or(0);
        assert!(
            allocs > 4_000,
            "APEX_HARDEN={harden}: memcheck saw {allocs} blocks:\n{report}"
        );
    }
}

#[test]
fn asan_brings_its_own_malloc_and_refuses_the_preloaded_one() {
    let Some(lib) = apexalloc_under_test() else {
        return;
    };
    let dir = test_dir!("asan");
    let src = apex_system_tests::c_source_dir().join("use_after_free.c");
    let exe = dir.join("use_after_free_asan");
    let built = Command::new("gcc")
        .args(["-g", "-O0", "-fsanitize=address", "-o"])
        .arg(&exe)
        .arg(&src)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run gcc");
    if !built.status.success() {
        println!(
            "note: gcc cannot build with -fsanitize=address here (libasan missing?); skipping:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        return;
    }
    // On its own, ASan's allocator catches the read.
    let out = run(
        Command::new(&exe).env_remove("LD_PRELOAD"),
        Duration::from_secs(60),
    );
    assert!(
        out.stderr.contains("heap-use-after-free"),
        "ASan missed the read:\n{}",
        out.report()
    );
    // With the library preloaded ahead of it, ASan will not start.
    let out = run(
        preload(&mut Command::new(&exe), &lib),
        Duration::from_secs(60),
    );
    assert!(!out.success(), "{}", out.report());
    assert!(
        out.stderr.contains("ASan runtime does not come first"),
        "{}",
        out.report()
    );
}

#[test]
fn memcheck_replaces_the_preloaded_malloc_of_a_c_program() {
    if !valgrind_present() {
        return;
    }
    let Some(lib) = apexalloc_under_test() else {
        return;
    };
    let dir = test_dir!("memcheck-preload");
    let exe = compile("use_after_free.c", &dir);
    let mut cmd = Command::new("valgrind");
    cmd.arg(&exe).env("APEX_SHOW_STATS", "1");
    let out = run(preload(&mut cmd, &lib), Duration::from_secs(120));
    // memcheck's allocator served the program and caught the read ...
    assert!(
        out.stderr.contains("Invalid read of size 1")
            && out.stderr.contains("inside a block of size 64 free'd"),
        "{}",
        out.report()
    );
    // ... while the library, loaded all the same, allocated nothing.
    assert!(
        out.stderr.contains(": 0 allocations, 0 frees"),
        "{}",
        out.report()
    );
}
