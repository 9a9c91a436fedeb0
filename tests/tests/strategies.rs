//! The classic engines selected with `APEX_STRATEGY`: each runs the C API
//! subtests, the misuse checks, a threaded stress program, forks among
//! allocating threads, and real programs (python3, sqlite3, gcc, git) with
//! output identical to the system allocator's; the selection itself shows
//! in the settings line and the statistics.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apex_system_tests::{
    compile, preload, require_apexalloc, require_program, run, run_with_input, test_dir, RunOutput,
};

const ENGINES: [&str; 6] = [
    "first-fit",
    "next-fit",
    "best-fit",
    "worst-fit",
    "seglist",
    "buddy",
];

fn exe(source: &str) -> PathBuf {
    static EXES: OnceLock<std::sync::Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let mut v = EXES.get_or_init(Default::default).lock().unwrap();
    if let Some((_, p)) = v.iter().find(|(s, _)| s == source) {
        return p.clone();
    }
    let p = compile(source, &test_dir!(&format!("strategies-{source}")));
    v.push((source.to_string(), p.clone()));
    p
}

/// Runs `program args` with the library preloaded and `APEX_STRATEGY`.
fn run_with(engine: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let alloc = require_apexalloc();
    let mut cmd = Command::new(program);
    cmd.args(args).env("APEX_STRATEGY", engine);
    for (k, v) in env {
        cmd.env(k, v);
    }
    preload(&mut cmd, &alloc);
    run(&mut cmd, Duration::from_secs(120))
}

const C_API_SUBTESTS: [&str; 19] = [
    "malloc_zero",
    "malloc_sizes",
    "malloc_distinct",
    "malloc_huge",
    "free_null",
    "calloc",
    "realloc",
    "realloc_zero",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "free_sized",
    "free_aligned_sized",
    "malloc_trim",
    "free_errno",
];

fn c_api(engine: &str) {
    let alloc = require_apexalloc();
    let substr = alloc.defining_object_substr();
    for sub in C_API_SUBTESTS {
        let out = run_with(
            engine,
            &exe("c_api.c"),
            &[sub],
            &[("EXPECT_LIB_SUBSTR", &substr), ("EXPECT_FULL_API", "1")],
        );
        assert!(
            out.success() && out.stdout.lines().any(|l| l == format!("{sub}: ok")),
            "{engine}: c_api {sub}:\n{}",
            out.report()
        );
    }
}

fn misuse(engine: &str) {
    for (sub, msg) in [
        ("double_free", "double free"),
        ("invalid_free_small", "invalid free"),
    ] {
        let out = run_with(engine, &exe("misuse.c"), &[sub], &[]);
        assert_eq!(
            out.signal(),
            Some(libc::SIGABRT),
            "{engine} {sub}:\n{}",
            out.report()
        );
        let prefix = format!("apexalloc: fatal: {msg}");
        assert!(
            out.stderr.lines().any(|l| l.starts_with(&prefix)),
            "{engine} {sub}: no line {prefix:?}:\n{}",
            out.report()
        );
    }
    for sub in ["foreign_static", "foreign_stack", "foreign_mmap"] {
        let out = run_with(engine, &exe("misuse.c"), &[sub], &[]);
        assert!(out.success(), "{engine} {sub}:\n{}", out.report());
    }
}

fn threads(engine: &str) {
    let out = run_with(engine, &exe("mt_random.c"), &["4", "30000"], &[]);
    assert!(out.success(), "{engine}: mt_random:\n{}", out.report());
}

/// Forks while other threads allocate: the lock is held across `fork`, so
/// the child can allocate.
fn fork(engine: &str) {
    let out = run_with(engine, &exe("fork_threads.c"), &["20"], &[]);
    assert!(out.success(), "{engine}: fork_threads:\n{}", out.report());
}

/// The exit report's live blocks and bytes (the leak figures).
fn live_at_exit(engine: &str, arg: &str) -> (u64, u64) {
    let out = run_with(
        engine,
        &exe("strategy_leaks.c"),
        &[arg],
        &[("APEX_SHOW_STATS", "1")],
    );
    assert!(out.success(), "{}", out.report());
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(&format!(" strategy {engine} ")))
        .unwrap_or_else(|| panic!("no exit report:\n{}", out.report()));
    let field = |k: &str| -> u64 {
        let v = line.split(&format!(" {k}=")).nth(1).unwrap_or("");
        v.split(' ').next().unwrap().parse().unwrap()
    };
    (field("live_blocks"), field("live_bytes"))
}

/// Blocks a program never frees are counted as live at exit.
fn leaks(engine: &str) {
    let (blocks0, bytes0) = live_at_exit(engine, "none");
    let (blocks5, bytes5) = live_at_exit(engine, "five");
    assert_eq!(blocks5 - blocks0, 5, "{engine}: five blocks leaked");
    assert!(
        bytes5 - bytes0 >= 5000,
        "{engine}: {bytes5} - {bytes0} bytes for five 1000-byte blocks"
    );
}

fn selected(engine: &str) {
    let out = run_with(
        engine,
        Path::new("/bin/true"),
        &[],
        &[("APEX_VERBOSE", "1"), ("APEX_SHOW_STATS", "1")],
    );
    assert!(out.success(), "{}", out.report());
    assert!(
        out.stderr.contains(&format!("APEX_STRATEGY={engine} ")),
        "the settings line names the engine:\n{}",
        out.report()
    );
    // The classic engines hold no segments: the counters are theirs.
    assert!(
        out.stderr.contains(" 0 segments (peak 0)"),
        "statistics of the classic engine:\n{}",
        out.report()
    );
}

// ---------------------------------------------------------------------------
// Real programs: the same steps plainly and with each engine
// ---------------------------------------------------------------------------

/// Runs `program args` (stdin `input`) in `dir`, preloaded with `engine`
/// or plainly; the transcript with `dir` replaced by `<dir>`.
fn transcript(
    dir: &Path,
    engine: Option<&str>,
    program: &str,
    args: &[&str],
    input: Option<&[u8]>,
    env: &[(&str, &str)],
) -> String {
    let mut cmd = Command::new(require_program(program));
    cmd.args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env_remove("LD_PRELOAD");
    for (k, v) in env {
        cmd.env(k, v.replace("<dir>", &dir.to_string_lossy()));
    }
    if let Some(e) = engine {
        cmd.env("APEX_STRATEGY", e);
        preload(&mut cmd, &require_apexalloc());
    }
    let out = run_with_input(&mut cmd, input, Duration::from_secs(180));
    let d = dir.to_string_lossy();
    format!(
        "$ {program} {}\n[{:?} {:?}]\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.code(),
        out.signal(),
        out.stdout.replace(&*d, "<dir>"),
        out.stderr.replace(&*d, "<dir>")
    )
}

type Steps<'a> = &'a [(&'a str, Vec<&'a str>, Option<Vec<u8>>)];

/// Runs `steps` plainly and with `engine`, each in a fresh directory
/// prepared by `setup`; the transcripts must be identical.
fn compare(
    name: &str,
    engine: &str,
    setup: impl Fn(&Path),
    steps: Steps<'_>,
    env: &[(&str, &str)],
) {
    let root = test_dir!(&format!("strategies-{name}-{engine}"));
    let mut all = Vec::new();
    for (sub, e) in [("plain", None), ("engine", Some(engine))] {
        let d = root.join(sub);
        fs::create_dir_all(&d).unwrap();
        setup(&d);
        let t: Vec<String> = steps
            .iter()
            .map(|(p, a, i)| transcript(&d, e, p, a, i.as_deref(), env))
            .collect();
        all.push(t);
    }
    for t in &all[0] {
        assert!(
            t.contains("[Some(0) None]"),
            "{name}: the plain run failed:\n{t}"
        );
    }
    for (a, b) in all[0].iter().zip(&all[1]) {
        assert!(
            a == b,
            "{name} with {engine}:\n--- plain ---\n{a}\n--- engine ---\n{b}"
        );
    }
}

const PYTHON: &str = r#"
import json, random, re
random.seed(7)
d = {str(i): [random.random() for _ in range(i % 40)] for i in range(20000)}
s = json.dumps(d, sort_keys=True)
words = re.findall(r"[0-9]+", s)
big = bytearray()
for i in range(3000):
    big += bytes(random.randrange(256) for _ in range(i % 97))
parts = [s[i:i + 1000] for i in range(0, len(s), 1000)]
print(len(s), len(words), len(big), sum(map(len, parts)), hash(tuple(sorted(d)[:100])))
"#;

fn python3(engine: &str) {
    compare(
        "python3",
        engine,
        |_| {},
        &[("python3", vec!["-c", PYTHON], None)],
        &[("PYTHONHASHSEED", "0"), ("PYTHONDONTWRITEBYTECODE", "1")],
    );
}

fn sqlite3(engine: &str) {
    let mut sql = String::from(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, cat INTEGER, blob BLOB);\nBEGIN;\n",
    );
    for i in 0..3000 {
        let _ = writeln!(
            sql,
            "INSERT INTO t(name, cat, blob) VALUES('n-{i}-{}', {}, zeroblob({}));",
            "y".repeat(i % 40),
            i % 23,
            i % 500
        );
    }
    sql.push_str(
        "COMMIT;\nCREATE INDEX t_cat ON t(cat, name);\n\
         SELECT cat, count(*), max(name), sum(length(blob)) FROM t GROUP BY cat ORDER BY cat;\n\
         DELETE FROM t WHERE id % 4 = 0;\nVACUUM;\nSELECT count(*) FROM t;\nPRAGMA integrity_check;\n",
    );
    compare(
        "sqlite3",
        engine,
        |_| {},
        &[("sqlite3", vec!["test.db"], Some(sql.into_bytes()))],
        &[],
    );
}

fn gcc(engine: &str) {
    let mut src = String::from("#include <stdio.h>\n");
    for f in 0..120 {
        let _ = writeln!(
            src,
            "static unsigned long f{f}(unsigned long x) {{ unsigned long a = {f}u; \
             for (int i = 0; i < {}; i++) a = a * 31u + (x ^ i); return a; }}",
            5 + f % 11
        );
    }
    src.push_str("int main(void) { unsigned long t = 0;\n");
    for f in 0..120 {
        let _ = writeln!(src, "t += f{f}(t);");
    }
    src.push_str("printf(\"%lu\\n\", t); return 0; }\n");
    compare(
        "gcc",
        engine,
        |d| fs::write(d.join("p.c"), &src).unwrap(),
        &[
            ("gcc", vec!["-O2", "-Wall", "-o", "p", "p.c"], None),
            ("sh", vec!["-c", "./p && md5sum p.c"], None),
        ],
        &[],
    );
}

fn git(engine: &str) {
    let setup = |d: &Path| {
        fs::create_dir_all(d.join("r/src")).unwrap();
        for i in 0..120 {
            let body: String = (0..i % 30 + 1)
                .map(|l| format!("line {l} of {i}\n"))
                .collect();
            fs::write(d.join(format!("r/src/f{i:03}.txt")), body).unwrap();
        }
    };
    let g = |args: &[&'static str]| {
        let mut v = vec![
            "-C",
            "r",
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
        ];
        v.extend_from_slice(args);
        ("git", v, None)
    };
    compare(
        "git",
        engine,
        setup,
        &[
            g(&["init", "-q", "-b", "main"]),
            g(&["add", "."]),
            g(&["commit", "-q", "-m", "one"]),
            (
                "sh",
                vec!["-c", "for f in r/src/f0*.txt; do echo x >> $f; done"],
                None,
            ),
            g(&["commit", "-q", "-a", "-m", "two"]),
            g(&["log", "--format=%H %T %s"]),
            g(&["diff", "--stat", "HEAD~1", "HEAD"]),
            g(&["repack", "-a", "-d", "-q"]),
            g(&["fsck", "--strict", "--no-progress"]),
        ],
        &[
            ("HOME", "<dir>"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z"),
            ("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z"),
        ],
    );
}

macro_rules! engine_tests {
    ($($module:ident => $name:expr),* $(,)?) => {$(
        mod $module {
            #[test]
            fn selected() {
                super::selected($name);
            }
            #[test]
            fn c_api() {
                super::c_api($name);
            }
            #[test]
            fn misuse() {
                super::misuse($name);
            }
            #[test]
            fn threads() {
                super::threads($name);
            }
            #[test]
            fn fork() {
                super::fork($name);
            }
            #[test]
            fn leaks() {
                super::leaks($name);
            }
            #[test]
            fn python3() {
                super::python3($name);
            }
            #[test]
            fn sqlite3() {
                super::sqlite3($name);
            }
            #[test]
            fn gcc() {
                super::gcc($name);
            }
            #[test]
            fn git() {
                super::git($name);
            }
        }
    )*};
}

engine_tests! {
    first_fit => "first-fit",
    next_fit => "next-fit",
    best_fit => "best-fit",
    worst_fit => "worst-fit",
    seglist => "seglist",
    buddy => "buddy",
}

#[test]
fn unknown_engine_is_reported_and_the_default_kept() {
    let out = run_with(
        "quick-fit",
        Path::new("/bin/true"),
        &[],
        &[("APEX_VERBOSE", "1"), ("APEX_SHOW_STATS", "1")],
    );
    assert!(out.success(), "{}", out.report());
    assert!(
        out.stderr.contains("ignoring APEX_STRATEGY=quick-fit"),
        "{}",
        out.report()
    );
    assert!(
        out.stderr.contains("APEX_STRATEGY=apex "),
        "{}",
        out.report()
    );
    // The names the library accepts are the engines tested here.
    let expected = format!(
        "(expected apex, {} or {});",
        ENGINES[..5].join(", "),
        ENGINES[5]
    );
    assert!(
        out.stderr.contains(&expected),
        "{expected}\n{}",
        out.report()
    );
}
