//! The leak report (`APEX_LEAKS=1`): `c/leaks.c` leaks known blocks from
//! known functions (built with `-rdynamic`, so `dladdr` names them) and
//! frees everything else; the report at exit must list those sites with
//! their exact counts when every block is sampled (`APEX_LEAKS_SAMPLE=1`),
//! estimates within a factor of two at the default rate, the right sites
//! after `realloc` and across threads, nothing when the option is off, and
//! python3 must run with it. `c/leaks_unwind_check.c` checks that the
//! unwinder and `dladdr`, which the report relies on, never call `malloc`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apex_system_tests::{
    c_source_dir, preload, require_apexalloc, require_program, run, test_dir, RunOutput,
};

/// Builds `tests/c/<source>` with `-rdynamic` (its functions exported, so
/// the report can name them).
fn build(source: &str, dir: &Path) -> PathBuf {
    require_program("gcc");
    let src = c_source_dir().join(source);
    let exe = dir.join(source.trim_end_matches(".c"));
    let mut cmd = Command::new("gcc");
    cmd.args([
        "-O1",
        "-g",
        "-pthread",
        "-Wall",
        "-rdynamic",
        "-fno-builtin",
        "-fno-allocation-dce",
        "-std=gnu11",
        "-o",
    ])
    .arg(&exe)
    .arg(&src)
    .arg("-ldl")
    .env_remove("LD_PRELOAD");
    let out = run(&mut cmd, Duration::from_secs(120));
    assert!(out.success(), "compiling {source}:\n{}", out.report());
    exe
}

fn leaks_exe() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build("leaks.c", &test_dir!("leaks-bin")))
}

/// Runs `program args` under the library with `env` (and none of the
/// inherited report options).
fn run_under(program: &Path, args: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let alloc = require_apexalloc();
    let mut cmd = Command::new(program);
    cmd.args(args);
    for v in [
        "APEX_LEAKS",
        "APEX_LEAKS_SAMPLE",
        "APEX_SHOW_STATS",
        "APEX_STATS_FILE",
        "APEX_STRATEGY",
        "APEX_VERBOSE",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    preload(&mut cmd, &alloc);
    run(&mut cmd, Duration::from_secs(180))
}

/// Runs a subtest of `c/leaks.c`, which must succeed.
fn leaks(args: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let out = run_under(leaks_exe(), args, env);
    out.assert_success();
    out.assert_stdout(&format!("{}: ok", args[0]));
    out
}

/// One site of a report.
#[derive(Debug, Clone)]
struct Site {
    bytes: u64,
    blocks: u64,
    sampled: u64,
    /// `function+0xoffset (module) < ...`, innermost first.
    frames: String,
}

impl Site {
    fn first_frame(&self) -> &str {
        self.frames.split(" < ").next().unwrap_or("")
    }
}

/// A process's report.
#[derive(Debug)]
struct Report {
    header: String,
    sites: u64,
    bytes: u64,
    blocks: u64,
    list: Vec<Site>,
}

impl Report {
    /// The sites whose innermost frame is in `function`.
    fn sites_in(&self, function: &str) -> Vec<&Site> {
        let prefix = format!("{function}+");
        self.list
            .iter()
            .filter(|s| s.first_frame().starts_with(&prefix))
            .collect()
    }

    /// The one site in `function`: `(bytes, blocks, sampled)`.
    fn one(&self, function: &str) -> (u64, u64, u64) {
        let sites = self.sites_in(function);
        assert_eq!(sites.len(), 1, "one site in {function}: {self:#?}");
        (sites[0].bytes, sites[0].blocks, sites[0].sampled)
    }
}

/// A number, without the `~` of estimates.
fn number(token: &str) -> u64 {
    token
        .trim_start_matches('~')
        .trim_start_matches('(')
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {token:?}"))
}

/// `N bytes (human) in M blocks`: (N, M) from the tokens after the count.
fn amount(tokens: &[&str]) -> (u64, u64) {
    let bytes = number(tokens[0]);
    assert_eq!(tokens[1], "bytes", "{tokens:?}");
    let at = tokens.iter().position(|t| *t == "in").expect("in");
    (bytes, number(tokens[at + 1]))
}

/// The reports of the processes whose name starts with `program`.
fn reports(stderr: &str, program: &str) -> Vec<Report> {
    let mut out: Vec<Report> = Vec::new();
    let prefix = format!("apexalloc[{program}");
    for line in stderr.lines().filter(|l| l.starts_with(&prefix)) {
        let Some((_, rest)) = line.split_once("]: ") else {
            continue;
        };
        if let Some(h) = rest.strip_prefix("leaks: ") {
            let tokens: Vec<&str> = h.split_whitespace().collect();
            assert!(["site,", "sites,"].contains(&tokens[1]), "{line}");
            let (bytes, blocks) = amount(&tokens[2..]);
            out.push(Report {
                header: line.to_string(),
                sites: number(tokens[0]),
                bytes,
                blocks,
                list: Vec::new(),
            });
        } else if let Some(s) = rest.strip_prefix("leak site ") {
            let (counts, frames) = s.split_once(" at ").expect("frames");
            let tokens: Vec<&str> = counts.split_whitespace().collect();
            let (bytes, blocks) = amount(&tokens[1..]);
            let sampled = number(tokens[tokens.len() - 2]);
            assert_eq!(tokens[tokens.len() - 1], "sampled)", "{line}");
            out.last_mut().expect("a header first").list.push(Site {
                bytes,
                blocks,
                sampled,
                frames: frames.to_string(),
            });
        }
    }
    out
}

/// The one report of `program` in `out`.
fn report(out: &RunOutput, program: &str) -> Report {
    let mut r = reports(&out.stderr, program);
    assert_eq!(r.len(), 1, "one report of {program}:\n{}", out.report());
    let r = r.pop().unwrap();
    // Heaviest first, never the allocator's own frames.
    for w in r.list.windows(2) {
        assert!(w[0].bytes >= w[1].bytes, "{r:#?}");
    }
    for s in &r.list {
        assert!(!s.frames.contains("libapexalloc"), "{s:?}");
    }
    assert!(r.list.len() as u64 <= r.sites, "{r:#?}");
    r
}

fn exact_sites(n: u64, env: &[(&str, &str)]) {
    let arg = n.to_string();
    let out = leaks(&["sites", &arg], env);
    let r = report(&out, "leaks");
    assert!(r.header.contains("(every block sampled)"), "{}", r.header);
    assert_eq!(r.one("leak_small"), (100 * n, n, n), "{r:#?}");
    assert_eq!(r.one("leak_big"), (10_000 * n, n, n), "{r:#?}");
    assert_eq!(r.one("leak_aligned"), (256 * n, n, n), "{r:#?}");
    // Called from main, which the backtrace names too.
    for f in ["leak_small", "leak_big", "leak_aligned"] {
        let s = r.sites_in(f)[0];
        assert!(s.frames.contains(" < main+"), "{s:?}");
        assert!(s.first_frame().ends_with("(leaks)"), "{s:?}");
    }
    // Every block of churn was freed.
    assert!(r.sites_in("churn").is_empty(), "{r:#?}");
    assert!(r.bytes >= 10_356 * n && r.blocks >= 3 * n, "{r:#?}");
}

#[test]
fn every_block_sampled_gives_exact_sites() {
    exact_sites(10, &[("APEX_LEAKS", "1"), ("APEX_LEAKS_SAMPLE", "1")]);
    exact_sites(37, &[("APEX_LEAKS", "1"), ("APEX_LEAKS_SAMPLE", "1")]);
}

#[test]
fn the_heaviest_twenty_sites_are_listed() {
    let out = leaks(
        &["many", "3"],
        &[("APEX_LEAKS", "1"), ("APEX_LEAKS_SAMPLE", "1")],
    );
    let r = report(&out, "leaks");
    assert!(r.sites >= 25, "{r:#?}");
    assert_eq!(r.list.len(), 20, "{r:#?}");
    // leak_site_I leaks 3 (I + 1) blocks of 1000 bytes: 24 down to 5 are
    // listed, heaviest first.
    for (k, i) in (5..25u64).rev().enumerate() {
        let n = 3 * (i + 1);
        let f = format!("leak_site_{i}+");
        assert!(r.list[k].first_frame().starts_with(&f), "{k}: {r:#?}");
        assert_eq!(
            (r.list[k].bytes, r.list[k].blocks, r.list[k].sampled),
            (1000 * n, n, n)
        );
    }
    let other = out
        .stderr
        .lines()
        .find(|l| l.contains("]: other leak sites ("))
        .unwrap_or_else(|| panic!("no line for the other sites:\n{}", out.report()));
    assert!(
        other.contains(&format!("other leak sites ({}): ", r.sites - 20)),
        "{other}"
    );
    // Sites 0 to 4: 3 * (1 + 2 + 3 + 4 + 5) = 45 blocks at least.
    let rest = other.split("): ").nth(1).unwrap();
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let (bytes, blocks) = amount(&tokens);
    assert!(bytes >= 45_000 && blocks >= 45, "{other}");
}

#[test]
fn classic_engines_are_watched_too() {
    exact_sites(
        12,
        &[
            ("APEX_LEAKS", "1"),
            ("APEX_LEAKS_SAMPLE", "1"),
            ("APEX_STRATEGY", "first-fit"),
        ],
    );
}

#[test]
fn realloc_moves_the_sample_to_the_new_block() {
    let out = leaks(
        &["realloc", "6"],
        &[("APEX_LEAKS", "1"), ("APEX_LEAKS_SAMPLE", "1")],
    );
    let r = report(&out, "leaks");
    // malloc(100) -> realloc 5000 -> realloc 4000: the last call counts.
    assert_eq!(r.one("grow_then_shrink"), (6 * 4000, 6, 6), "{r:#?}");
    assert!(r.sites_in("start_block").is_empty(), "{r:#?}");
    assert!(r.sites_in("grown_and_freed").is_empty(), "{r:#?}");
    // A realloc that fails leaves the block, and its sample, in place.
    assert_eq!(r.one("failed_realloc_keeps"), (50, 1, 1), "{r:#?}");
}

#[test]
fn threads_leak_into_one_report() {
    let out = leaks(
        &["threads", "4", "50"],
        &[("APEX_LEAKS", "1"), ("APEX_LEAKS_SAMPLE", "1")],
    );
    let r = report(&out, "leaks");
    let sites = r.sites_in("thread_leak");
    assert!(!sites.is_empty(), "{r:#?}");
    let sum = |f: fn(&Site) -> u64| sites.iter().map(|s| f(s)).sum::<u64>();
    assert_eq!(
        (sum(|s| s.bytes), sum(|s| s.blocks), sum(|s| s.sampled)),
        (4 * 50 * 200, 200, 200),
        "{r:#?}"
    );
    // Blocks main allocated and the threads freed are gone.
    assert!(r.sites_in("handed_over").is_empty(), "{r:#?}");
    assert!(r.sites_in("churn").is_empty(), "{r:#?}");
}

#[test]
fn default_rate_estimates_within_a_factor_of_two() {
    let out = leaks(&["estimate"], &[("APEX_LEAKS", "1")]);
    let r = report(&out, "leaks");
    assert!(r.header.contains("(sampled 1 in 512.0 KiB"), "{}", r.header);
    // 524288 blocks of 64 bytes: about 64 samples, each standing for
    // about 8192 blocks.
    let (bytes, blocks, sampled) = r.one("leak_tiny");
    let real = 524_288u64;
    assert!(
        (real / 2..=real * 2).contains(&blocks) && (real * 32..=real * 128).contains(&bytes),
        "{r:#?}"
    );
    assert!((8..=256).contains(&sampled), "{r:#?}");
    // 16 blocks of 1 MiB: most are sampled, each standing for about 1.16.
    let (bytes, blocks, sampled) = r.one("leak_huge");
    assert!(
        (8..=32).contains(&blocks) && (8 << 20..=32 << 20).contains(&bytes),
        "{r:#?}"
    );
    assert!((4..=16).contains(&sampled), "{r:#?}");
    assert!(r.sites_in("churn").is_empty(), "{r:#?}");
}

#[test]
fn off_by_default_and_with_zero() {
    for env in [&[][..], &[("APEX_LEAKS", "0")][..]] {
        let out = leaks(&["sites", "5"], env);
        assert!(
            !out.stderr.contains("leaks:") && !out.stderr.contains("leak site"),
            "{}",
            out.report()
        );
    }
    // A bad value is reported and the default (off) kept.
    let out = leaks(&["sites", "5"], &[("APEX_LEAKS", "yes")]);
    assert!(
        out.stderr.contains("ignoring APEX_LEAKS=yes") && !out.stderr.contains("leak site"),
        "{}",
        out.report()
    );
    let out = leaks(
        &["sites", "5"],
        &[("APEX_LEAKS", "1"), ("APEX_LEAKS_SAMPLE", "0")],
    );
    assert!(
        out.stderr.contains("ignoring APEX_LEAKS_SAMPLE=0"),
        "{}",
        out.report()
    );
    assert!(
        report(&out, "leaks")
            .header
            .contains("sampled 1 in 512.0 KiB"),
        "{}",
        out.report()
    );
}

#[test]
fn report_follows_the_statistics_in_the_stats_file() {
    let dir = test_dir!("leaks-file");
    let file = dir.join("stats.txt");
    let out = leaks(
        &["sites", "3"],
        &[
            ("APEX_LEAKS", "1"),
            ("APEX_LEAKS_SAMPLE", "1"),
            ("APEX_SHOW_STATS", "1"),
            ("APEX_STATS_FILE", file.to_str().unwrap()),
        ],
    );
    assert!(!out.stderr.contains("leak"), "{}", out.report());
    let text = fs::read_to_string(&file).expect("the stats file");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() >= 4 && lines[0].contains(" allocations, "),
        "{text}"
    );
    assert!(lines[1].contains("]: leaks: "), "{text}");
    let r = reports(&text, "leaks").pop().expect("a report");
    assert_eq!(r.one("leak_big"), (30_000, 3, 3), "{text}");
}

#[test]
fn python3_runs_and_reports() {
    let python = require_program("python3");
    let script = "import json\nd = {str(i): [i] * 3 for i in range(20000)}\n\
                  print(len(json.dumps(d)))";
    let out = run_under(
        &python,
        &["-c", script],
        &[("APEX_LEAKS", "1"), ("APEX_LEAKS_SAMPLE", "4096")],
    );
    out.assert_success();
    out.assert_stdout("595560");
    let r = report(&out, "python");
    assert!(r.header.contains("sampled 1 in 4.0 KiB"), "{}", r.header);
    assert!(r.sites >= 1 && !r.list.is_empty(), "{}", out.report());
    assert!(
        r.list.iter().any(|s| s.frames.contains("python")),
        "no frame in python's code:\n{}",
        out.report()
    );
}

#[test]
fn unwinder_and_dladdr_never_call_malloc() {
    let exe = build("leaks_unwind_check.c", &test_dir!("leaks-unwind"));
    let mut cmd = Command::new(&exe);
    cmd.env_remove("LD_PRELOAD");
    let out = run(&mut cmd, Duration::from_secs(60));
    out.assert_success();
    assert!(out.stdout.starts_with("unwind: ok "), "{}", out.report());
    // The check itself catches a malloc where it is forbidden.
    let mut cmd = Command::new(&exe);
    cmd.arg("trap").env_remove("LD_PRELOAD");
    let out = run(&mut cmd, Duration::from_secs(60));
    assert_eq!(out.signal(), Some(libc::SIGABRT), "{}", out.report());
    assert!(
        out.stderr.contains("malloc called inside"),
        "{}",
        out.report()
    );
}
