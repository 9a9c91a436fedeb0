//! Heap-exploitation attacks against each hardening preset.
//!
//! Every program `c/attack_*.c` performs one classic attack through the
//! libc API and reports `ATTACK SUCCEEDED: ...` or `ATTACK DEFEATED: ...`
//! (see `c/attack.h`), unless the allocator stops it first: a fatal line
//! `apexalloc: fatal: <what> (...)` and SIGABRT, or SIGSEGV at the
//! attacker's own write (a guard page). Each attack runs under
//! `APEX_HARDEN=off`, `default` and `full`; the test prints the table of
//! outcomes (attack × preset), then checks it against [`EXPECTED`].
//!
//! These are ApexAlloc's own guarantees, so the test requires
//! libapexalloc.so. `tests/hardening-compare.sh` runs the same programs
//! under other allocators.

use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use apex_system_tests::{compile, preload, require_apexalloc, run, test_dir, Allocator};

/// The presets, in table order.
const PRESETS: [&str; 3] = ["off", "default", "full"];

/// What a preset must do against an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The attack works: `ATTACK SUCCEEDED` (the program demonstrates it).
    Succeeds,
    /// The attack is stopped: detected (fatal line and SIGABRT), defeated
    /// (the program saw it fail), or faulted at the attacker's write.
    Stopped,
    /// Not checked (the outcome is still printed).
    Any,
}

use Expect::{Any, Stopped, Succeeds};

/// One attack: program, variant (its first argument), and what each preset
/// (`off`, `default`, `full`) must do. The one place to adjust as
/// mitigations change.
#[rustfmt::skip]
const EXPECTED: &[(&str, &str, [Expect; 3])] = &[
    // 1. Free-list link forgery.
    ("attack_link_forgery", "aligned", [Succeeds, Stopped, Stopped]),
    ("attack_link_forgery", "misaligned", [Succeeds, Stopped, Stopped]),
    ("attack_link_forgery", "cross-slab", [Succeeds, Stopped, Stopped]),
    // 2. Free of a never-allocated slot (under `off`, a slot on a free list
    // or beyond the carved part may still be caught by the allocator's own
    // checks).
    ("attack_free_unallocated", "near", [Any, Stopped, Stopped]),
    ("attack_free_unallocated", "far", [Any, Stopped, Stopped]),
    // 3. Double frees.
    ("attack_double_free", "small", [Stopped, Stopped, Stopped]),
    ("attack_double_free", "small-interleaved", [Stopped, Stopped, Stopped]),
    ("attack_double_free", "large-remote", [Any, Stopped, Stopped]),
    ("attack_double_free", "huge", [Any, Stopped, Stopped]),
    ("attack_double_free", "huge-stale", [Any, Stopped, Stopped]),
    // 4. Cross-class reuse of a dangling pointer.
    ("attack_cross_class", "reuse", [Succeeds, Any, Stopped]),
    // 5. Backward overflow into the segment's metadata.
    ("attack_metadata_underflow", "backward", [Any, Stopped, Stopped]),
    // 6. Overflow into a live neighbour.
    ("attack_overflow", "small", [Succeeds, Any, Stopped]),
    ("attack_overflow", "large", [Succeeds, Any, Stopped]),
    ("attack_overflow", "huge", [Any, Any, Stopped]),
    // 7. Use after free.
    ("attack_uaf", "read", [Succeeds, Any, Stopped]),
    ("attack_uaf", "write-small", [Succeeds, Any, Stopped]),
    ("attack_uaf", "write-large", [Succeeds, Any, Stopped]),
    // 8. Foreign pointers.
    ("attack_foreign", "stack", [Any, Stopped, Stopped]),
    ("attack_foreign", "global", [Any, Stopped, Stopped]),
    ("attack_foreign", "interior", [Stopped, Stopped, Stopped]),
    ("attack_foreign", "forged", [Any, Stopped, Stopped]),
    ("attack_foreign", "realloc-stack", [Any, Stopped, Stopped]),
    // 9. Predictable layout (run LAYOUT_RUNS times, see `layout_outcome`).
    ("attack_layout", "sequence", [Succeeds, Stopped, Stopped]),
];

/// Runs of the layout program whose first offsets are compared: five, so
/// that even a shuffle among only the 50 or so blocks of one carving step
/// gives five equal offsets by chance less than once in a million.
const LAYOUT_RUNS: usize = 5;

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// `ATTACK SUCCEEDED`: the attacker got what they wanted.
    Succeeded(String),
    /// `ATTACK SUCCEEDED: the allocator crashed/hung ...`: no detection,
    /// the allocator ran on corrupted state until it faulted or hung.
    AllocatorCrashed(String),
    /// `ATTACK DEFEATED`: the attack did not work, no crash.
    Defeated(String),
    /// SIGABRT with `apexalloc: fatal: <what>`; holds `<what>`.
    Detected(String),
    /// SIGSEGV/SIGBUS between "about to write" and "write done".
    SegvAtWrite,
    /// Anything else (another signal, an exit status, a timeout).
    Other(String),
}

impl Outcome {
    fn stopped(&self) -> bool {
        matches!(
            self,
            Outcome::Defeated(_) | Outcome::Detected(_) | Outcome::SegvAtWrite
        )
    }

    fn meets(&self, expect: Expect) -> bool {
        match expect {
            Expect::Succeeds => matches!(self, Outcome::Succeeded(_)),
            Expect::Stopped => self.stopped(),
            Expect::Any => true,
        }
    }

    /// The program's explanation or the allocator's message, for the
    /// details under the table.
    fn detail(&self) -> &str {
        match self {
            Outcome::Succeeded(m)
            | Outcome::AllocatorCrashed(m)
            | Outcome::Defeated(m)
            | Outcome::Detected(m)
            | Outcome::Other(m) => m,
            Outcome::SegvAtWrite => "SIGSEGV at the attacker's write",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeeded(_) => write!(f, "SUCCEEDED"),
            Outcome::AllocatorCrashed(m) if m.contains("hung") => write!(f, "HUNG"),
            Outcome::AllocatorCrashed(_) => write!(f, "CRASHED"),
            Outcome::Defeated(_) => write!(f, "DEFEATED"),
            Outcome::Detected(what) => write!(f, "DETECTED({what})"),
            Outcome::SegvAtWrite => write!(f, "SEGV(at write)"),
            Outcome::Other(m) => write!(f, "OTHER({})", m.lines().next().unwrap_or("")),
        }
    }
}

/// Classifies a finished run (see [`Outcome`]).
fn classify(stdout: &str, stderr: &str, code: Option<i32>, signal: Option<i32>) -> Outcome {
    let verdict = |word: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(word))
            .map(str::to_string)
    };
    if code == Some(0) {
        if let Some(m) = verdict("ATTACK SUCCEEDED: ") {
            return if m.starts_with("the allocator crashed") || m.starts_with("the allocator hung")
            {
                Outcome::AllocatorCrashed(m)
            } else {
                Outcome::Succeeded(m)
            };
        }
        if let Some(m) = verdict("ATTACK DEFEATED: ") {
            return Outcome::Defeated(m);
        }
    }
    if signal == Some(libc::SIGABRT) {
        if let Some(rest) = stderr
            .lines()
            .find_map(|l| l.strip_prefix("apexalloc: fatal: "))
        {
            let what = rest.split(" (").next().unwrap_or(rest).to_string();
            return Outcome::Detected(what);
        }
    }
    let about = stdout.lines().any(|l| l.starts_with("about to write"));
    let done = stdout.lines().any(|l| l == "write done");
    if matches!(signal, Some(libc::SIGSEGV | libc::SIGBUS)) && about && !done {
        return Outcome::SegvAtWrite;
    }
    let how = match (code, signal) {
        (_, Some(s)) => format!("signal {s}"),
        (Some(c), _) => format!("exit {c}"),
        _ => "unknown".to_string(),
    };
    let last = stderr.lines().last().unwrap_or("");
    Outcome::Other(format!("{how}; stderr: {last}"))
}

/// Compiles each attack program once.
fn executables(names: &[&str]) -> HashMap<String, PathBuf> {
    let dir = test_dir!("hardening-bin");
    names
        .iter()
        .map(|n| (n.to_string(), compile(&format!("{n}.c"), &dir)))
        .collect()
}

/// Runs one program variant under `preset`; a run that exceeds its time
/// limit is an `Other` outcome, not a test panic.
fn run_once(exe: &PathBuf, variant: &str, preset: &str, alloc: &Allocator) -> (Outcome, String) {
    let mut cmd = Command::new(exe);
    cmd.arg(variant).env("APEX_HARDEN", preset);
    preload(&mut cmd, alloc);
    // A timeout panics inside `run`; keep it to this run.
    let result = panic::catch_unwind(AssertUnwindSafe(|| run(&mut cmd, Duration::from_secs(15))));
    match result {
        Ok(out) => (
            classify(&out.stdout, &out.stderr, out.code(), out.signal()),
            out.stdout,
        ),
        Err(_) => (Outcome::Other("timeout (15 s)".to_string()), String::new()),
    }
}

/// The layout program's `first_offset`, if it printed one.
fn first_offset(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("LAYOUT "))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("first_offset=")))
        .map(str::to_string)
}

/// The layout attack succeeds when a run finds a fixed stride, or when
/// every run's first block has the same offset in its 64 KiB window.
fn layout_outcome(exe: &PathBuf, variant: &str, preset: &str, alloc: &Allocator) -> Outcome {
    let mut offsets = Vec::new();
    for _ in 0..LAYOUT_RUNS {
        let (outcome, stdout) = run_once(exe, variant, preset, alloc);
        if !matches!(outcome, Outcome::Defeated(_)) {
            return outcome;
        }
        match first_offset(&stdout) {
            Some(o) => offsets.push(o),
            None => return Outcome::Other("no LAYOUT line".to_string()),
        }
    }
    if offsets.windows(2).all(|w| w[0] == w[1]) {
        Outcome::Succeeded(format!(
            "the first block is at offset {} of its 64 KiB window in all {LAYOUT_RUNS} runs",
            offsets[0]
        ))
    } else {
        Outcome::Defeated(format!(
            "no fixed stride, first offsets differ: {}",
            offsets.join(", ")
        ))
    }
}

/// Runs every (attack, preset) pair, two at a time per core.
fn run_all(alloc: &Allocator) -> Vec<[Outcome; 3]> {
    let mut names: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    names.dedup();
    let exes = executables(&names);
    let jobs: Vec<(usize, usize)> = (0..EXPECTED.len())
        .flat_map(|i| (0..PRESETS.len()).map(move |p| (i, p)))
        .collect();
    let results = Mutex::new(vec![
        [
            Outcome::Other(String::new()),
            Outcome::Other(String::new()),
            Outcome::Other(String::new()),
        ];
        EXPECTED.len()
    ]);
    let next = AtomicUsize::new(0);
    let workers = thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(&(i, p)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (program, variant, _) = EXPECTED[i];
                    let exe = &exes[program];
                    let outcome = if program == "attack_layout" {
                        layout_outcome(exe, variant, PRESETS[p], alloc)
                    } else {
                        run_once(exe, variant, PRESETS[p], alloc).0
                    };
                    results.lock().unwrap()[i][p] = outcome;
                }
            });
        }
    });
    results.into_inner().unwrap()
}

/// The summary: one row per attack, one column per preset, failed
/// expectations marked `!`, then each outcome's explanation.
fn summary(results: &[[Outcome; 3]]) -> String {
    let name = |i: usize| {
        let (p, v, _) = EXPECTED[i];
        format!("{} {v}", p.trim_start_matches("attack_"))
    };
    let width = (0..EXPECTED.len())
        .map(|i| name(i).len())
        .max()
        .unwrap_or(0);
    let cell = |i: usize, p: usize| {
        let o = &results[i][p];
        let mark = if o.meets(EXPECTED[i].2[p]) { "" } else { " !" };
        format!("{o}{mark}")
    };
    let mut cols = [0usize; 3];
    for (p, col) in cols.iter_mut().enumerate() {
        *col = (0..EXPECTED.len())
            .map(|i| cell(i, p).len())
            .chain([PRESETS[p].len()])
            .max()
            .unwrap_or(0);
    }
    let mut s = format!(
        "{:width$} | {:w0$} | {:w1$} | {:w2$}\n",
        "attack",
        PRESETS[0],
        PRESETS[1],
        PRESETS[2],
        w0 = cols[0],
        w1 = cols[1],
        w2 = cols[2]
    );
    for i in 0..EXPECTED.len() {
        s += &format!(
            "{:width$} | {:w0$} | {:w1$} | {:w2$}\n",
            name(i),
            cell(i, 0),
            cell(i, 1),
            cell(i, 2),
            w0 = cols[0],
            w1 = cols[1],
            w2 = cols[2]
        );
    }
    s += "(! = not what EXPECTED says)\n\ndetails:\n";
    for (i, row) in results.iter().enumerate() {
        for (p, o) in row.iter().enumerate() {
            s += &format!("  {} [{}]: {o}: {}\n", name(i), PRESETS[p], o.detail());
        }
    }
    s
}

#[test]
fn attacks_against_each_preset() {
    let alloc = require_apexalloc();
    let results = run_all(&alloc);
    let table = summary(&results);
    println!("{table}");
    let mut failures = Vec::new();
    for (&(program, variant, expect), row) in EXPECTED.iter().zip(&results) {
        for p in 0..PRESETS.len() {
            if !row[p].meets(expect[p]) {
                failures.push(format!(
                    "{program} {variant} under APEX_HARDEN={}: expected {:?}, got {} ({})",
                    PRESETS[p],
                    expect[p],
                    row[p],
                    row[p].detail()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} outcome(s) differ from EXPECTED:\n{}\n\n{table}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn outcomes_are_classified() {
    /// Exit code and signal of a run.
    type Status = (Option<i32>, Option<i32>);
    let sig = |s| (None, Some(s));
    let cases: [(&str, &str, Status, Outcome); 7] = [
        (
            "ATTACK SUCCEEDED: got it\n",
            "",
            (Some(0), None),
            Outcome::Succeeded("got it".into()),
        ),
        (
            "x\nATTACK SUCCEEDED: the allocator hung on y\n",
            "",
            (Some(0), None),
            Outcome::AllocatorCrashed("the allocator hung on y".into()),
        ),
        (
            "ATTACK DEFEATED: no\n",
            "",
            (Some(0), None),
            Outcome::Defeated("no".into()),
        ),
        (
            "",
            "apexalloc: fatal: double free (0x10, 64 B)\n",
            sig(libc::SIGABRT),
            Outcome::Detected("double free".into()),
        ),
        (
            "about to write 5 bytes\n",
            "",
            sig(libc::SIGSEGV),
            Outcome::SegvAtWrite,
        ),
        (
            "about to write 5 bytes\nwrite done\n",
            "",
            sig(libc::SIGSEGV),
            Outcome::Other("signal 11; stderr: ".into()),
        ),
        (
            "",
            "free(): invalid pointer\n",
            sig(libc::SIGABRT),
            Outcome::Other("signal 6; stderr: free(): invalid pointer".into()),
        ),
    ];
    for (stdout, stderr, (code, signal), want) in cases {
        assert_eq!(
            classify(stdout, stderr, code, signal),
            want,
            "{stdout:?} {stderr:?}"
        );
    }
    assert!(Outcome::SegvAtWrite.meets(Stopped));
    assert!(!Outcome::AllocatorCrashed("the allocator crashed".into()).meets(Stopped));
    assert!(!Outcome::AllocatorCrashed("the allocator crashed".into()).meets(Succeeds));
    assert!(!Outcome::Detected("heap overflow".into()).meets(Succeeds));
}
