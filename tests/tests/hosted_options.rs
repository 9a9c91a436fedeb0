//! The hosted library's options and reports under `LD_PRELOAD`: the exit
//! statistics survive a program closing stderr, go to `APEX_STATS_FILE`
//! (with `%p`) in one intact line per process, bad values and unknown
//! names are reported once and change nothing, and `APEX_VERBOSE=1` prints
//! the settings once per process tree (`all`: in every process).
//!
//! The program is `c/stats_output.c`; these checks are ApexAlloc's own.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use apex_system_tests::{
    compile, preload, require_apexalloc, require_program, run, test_dir, RunOutput,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn stats_output_exe() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("stats_output.c", &test_dir!("stats_output-bin")))
}

/// `program` with the library preloaded and exactly the `APEX_*`
/// variables in `env` (inherited ones are removed, except `APEX_LIB`).
fn command(program: &Path, env: &[(&str, &str)]) -> Command {
    let alloc = require_apexalloc();
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("APEX_") && name != "APEX_LIB" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    preload(&mut cmd, &alloc);
    cmd
}

/// Runs `stats_output [mode]` and checks that it succeeded; returns the
/// output and the pid it printed.
fn run_stats_output(mode: &str, env: &[(&str, &str)]) -> (RunOutput, u32) {
    let mut cmd = command(stats_output_exe(), env);
    if !mode.is_empty() {
        cmd.arg(mode);
    }
    let out = run(&mut cmd, TIMEOUT);
    out.assert_success();
    out.assert_stdout("stats_output: ok");
    let pid = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("stats_output: pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid line:\n{}", out.report()));
    (out, pid)
}

/// Whether `text` matches `pattern`, where `#` stands for one or more
/// digits and `*` for one or more lowercase letters.
fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < p.len() {
        let class: Option<fn(&u8) -> bool> = match p[i] {
            b'#' => Some(u8::is_ascii_digit),
            b'*' => Some(u8::is_ascii_lowercase),
            _ => None,
        };
        match class {
            Some(class) => {
                let n = t[j..].iter().take_while(|c| class(c)).count();
                if n == 0 {
                    return false;
                }
                j += n;
            }
            None if t.get(j) == Some(&p[i]) => j += 1,
            None => return false,
        }
        i += 1;
    }
    j == t.len()
}

/// A parsed statistics line: program name, pid, allocations.
#[derive(Debug, PartialEq)]
struct StatsLine {
    program: String,
    pid: u32,
    allocations: u64,
}

/// Parses `apexalloc[<program>:<pid>]: <counters>`; `None` unless the
/// whole line has exactly that shape.
fn parse_stats_line(line: &str) -> Option<StatsLine> {
    let rest = line.strip_prefix("apexalloc[")?;
    let (head, counters) = rest.split_once("]: ")?;
    let (program, pid) = head.rsplit_once(':')?;
    if !matches(
        "# allocations, # frees (# from other threads), #.# MiB in use, \
         peak #.# MiB in spans, # segments (peak #), #.# MiB reserved, mode *",
        counters,
    ) {
        return None;
    }
    Some(StatsLine {
        program: program.to_string(),
        pid: pid.parse().ok()?,
        allocations: counters.split(' ').next()?.parse().ok()?,
    })
}

/// The statistics lines in `text`.
fn stats_lines(text: &str) -> Vec<StatsLine> {
    text.lines().filter_map(parse_stats_line).collect()
}

/// Settings lines (`APEX_VERBOSE`) in `text`.
fn settings_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("apexalloc[") && l.contains("]: settings ("))
        .collect()
}

#[test]
fn stats_line_pattern_is_strict() {
    let good = "apexalloc[ls:42]: 12 allocations, 3 frees (0 from other threads), 0.1 MiB \
                in use, peak 1.2 MiB in spans, 2 segments (peak 2), 64.1 MiB reserved, mode release";
    assert_eq!(
        parse_stats_line(good),
        Some(StatsLine {
            program: "ls".into(),
            pid: 42,
            allocations: 12
        })
    );
    assert_eq!(parse_stats_line(&good.replace(", mode release", "")), None);
    assert_eq!(parse_stats_line(&good.replace("1.2", "1.")), None);
    assert_eq!(parse_stats_line(&good.replace("42", "x")), None);
    assert_eq!(parse_stats_line(&format!("{good}apexalloc[ls:1]: 1")), None);
}

/// A program that closes stderr before it exits still gets its statistics
/// line, written through the descriptor duplicated at start-up.
#[test]
fn stats_survive_a_closed_stderr() {
    let (out, pid) = run_stats_output("close", &[("APEX_SHOW_STATS", "1")]);
    let lines = stats_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "one statistics line:\n{}", out.report());
    assert_eq!(lines[0].program, "stats_output", "{}", out.report());
    assert_eq!(lines[0].pid, pid, "{}", out.report());
    assert!(lines[0].allocations >= 12_000, "{}", out.report());
}

/// `ls -la` closes stderr at exit too.
#[test]
fn stats_of_ls() {
    let ls = require_program("ls");
    let dir = test_dir!("stats-ls");
    fs::write(dir.join("file"), "x").unwrap();
    let mut cmd = command(&ls, &[("APEX_SHOW_STATS", "1")]);
    cmd.arg("-la").arg(&dir);
    let out = run(&mut cmd, TIMEOUT);
    out.assert_success();
    let lines = stats_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "one statistics line:\n{}", out.report());
    assert_eq!(lines[0].program, "ls", "{}", out.report());
    assert!(lines[0].allocations > 0, "{}", out.report());
}

/// `APEX_STATS_FILE` with `%p`: the line goes to the file named with the
/// child's pid, not to stderr; a relative name is resolved at start, so a
/// program that changes directory still writes there.
#[test]
fn stats_file_with_pid() {
    let dir = test_dir!("stats-file");
    let template = dir.join("stats-%p.txt");
    let (out, pid) = run_stats_output(
        "",
        &[
            ("APEX_SHOW_STATS", "1"),
            ("APEX_STATS_FILE", template.to_str().unwrap()),
        ],
    );
    assert!(stats_lines(&out.stderr).is_empty(), "{}", out.report());
    let file = dir.join(format!("stats-{pid}.txt"));
    let text = fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), out.report()));
    let lines = stats_lines(&text);
    assert_eq!(lines.len(), 1, "{text:?}");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert_eq!(lines[0].program, "stats_output");
    assert_eq!(lines[0].pid, pid);

    let mut cmd = command(
        stats_output_exe(),
        &[("APEX_SHOW_STATS", "1"), ("APEX_STATS_FILE", "rel-%p.txt")],
    );
    cmd.arg("chdir").current_dir(&dir);
    let out = run(&mut cmd, TIMEOUT);
    out.assert_success();
    let pid = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("stats_output: pid "));
    let file = dir.join(format!("rel-{}.txt", pid.unwrap().trim()));
    let text = fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), out.report()));
    assert_eq!(stats_lines(&text).len(), 1, "{text:?}");
}

/// Eight processes appending to one file at once leave eight intact lines
/// (each report is one `write` to a file opened with `O_APPEND`).
#[test]
fn stats_file_shared_by_parallel_processes() {
    let dir = test_dir!("stats-shared");
    let file = dir.join("all.txt");
    let path = file.to_str().unwrap().to_string();
    let pids: Vec<u32> = (0..8)
        .map(|_| {
            let path = path.clone();
            thread::spawn(move || {
                run_stats_output("", &[("APEX_SHOW_STATS", "1"), ("APEX_STATS_FILE", &path)]).1
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 8, "{text}");
    let mut lines = stats_lines(&text);
    assert_eq!(lines.len(), 8, "every line must parse:\n{text}");
    lines.sort_by_key(|l| l.pid);
    let mut expected = pids;
    expected.sort();
    assert_eq!(lines.iter().map(|l| l.pid).collect::<Vec<_>>(), expected);
    assert!(lines.iter().all(|l| l.program == "stats_output"));
}

/// A bad value or an unknown name: exactly one line on stderr, and the
/// program runs normally.
#[test]
fn bad_values_and_unknown_names_are_reported_once() {
    let cases = [
        (
            "APEX_PURGE_DELAY_MS",
            "abc",
            "apexalloc: ignoring APEX_PURGE_DELAY_MS=abc (expected a whole number of \
             milliseconds); using 100",
        ),
        (
            "APEX_DECOMMIT",
            "bogus",
            "apexalloc: ignoring APEX_DECOMMIT=bogus (expected dontneed or free); using dontneed",
        ),
        (
            "APEX_SEGMENT_CACHE",
            "-1",
            "apexalloc: ignoring APEX_SEGMENT_CACHE=-1 (expected a whole number); using 8",
        ),
        (
            "APEX_SHOW_STATS",
            "yes",
            "apexalloc: ignoring APEX_SHOW_STATS=yes (expected 0, 1 or json); using 0",
        ),
        ("APEX_FOO", "1", "apexalloc: unknown option APEX_FOO"),
        (
            "APEX_CHECK_DOUBLE_FREE",
            "0",
            "apexalloc: unknown option APEX_CHECK_DOUBLE_FREE",
        ),
    ];
    for (name, value, message) in cases {
        let (out, _) = run_stats_output("", &[(name, value)]);
        assert_eq!(
            out.stderr.lines().collect::<Vec<_>>(),
            [message],
            "{name}={value}:\n{}",
            out.report()
        );
    }
    // Accepted without a word: the test aid, the system tests' selector,
    // good values and empty ones.
    let (out, _) = run_stats_output(
        "",
        &[
            ("APEX_TEST_HANDOFF_FD", "99"),
            ("APEX_LIB", "whatever"),
            ("APEX_DECOMMIT", "free"),
            ("APEX_THP", ""),
        ],
    );
    assert_eq!(out.stderr, "", "{}", out.report());
}

/// The defaults stay in effect after a bad value (as the settings line
/// shows).
#[test]
fn bad_values_keep_the_defaults() {
    let (out, _) = run_stats_output(
        "",
        &[
            ("APEX_VERBOSE", "all"),
            ("APEX_PURGE_DELAY_MS", "abc"),
            ("APEX_DECOMMIT", "bogus"),
            ("APEX_SEGMENT_CACHE", "-1"),
            ("APEX_HUGE_CACHE_MB", "99999999999999999999999"),
        ],
    );
    let settings = settings_lines(&out.stderr);
    assert_eq!(settings.len(), 1, "{}", out.report());
    for value in [
        " APEX_PURGE_DELAY_MS=100 ",
        " APEX_DECOMMIT=dontneed ",
        " APEX_SEGMENT_CACHE=8 ",
        " APEX_HUGE_CACHE_MB=256 ",
    ] {
        assert!(settings[0].contains(value), "{value}:\n{}", out.report());
    }
    assert_eq!(out.stderr.lines().count(), 5, "{}", out.report());
}

/// `APEX_VERBOSE=1` prints the settings once in a process tree (the
/// children see `APEX_VERBOSE=S`); `all` prints them in every process.
#[test]
fn verbose_once_per_process_tree() {
    let sh = require_program("sh");
    let script = "ls >/dev/null; ls >/dev/null; echo \"verbose=$APEX_VERBOSE\"";

    let mut cmd = command(&sh, &[("APEX_VERBOSE", "1")]);
    cmd.arg("-c").arg(script);
    let out = run(&mut cmd, TIMEOUT);
    out.assert_success();
    let lines = settings_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.report());
    assert!(lines[0].starts_with("apexalloc[sh:"), "{}", out.report());
    assert!(lines[0].contains(" APEX_VERBOSE=1 "), "{}", out.report());
    out.assert_stdout("verbose=S");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.report());

    let mut cmd = command(&sh, &[("APEX_VERBOSE", "all")]);
    cmd.arg("-c").arg(script);
    let out = run(&mut cmd, TIMEOUT);
    out.assert_success();
    let lines = settings_lines(&out.stderr);
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(lines.len(), 3, "{}", out.report());
    assert_eq!(count("apexalloc[sh:"), 1, "{}", out.report());
    assert_eq!(count("apexalloc[ls:"), 2, "{}", out.report());
    out.assert_stdout("verbose=all");
}
