//! Real programs under LD_PRELOAD: ls, bash, python3, gcc, git and sqlite3
//! run the same steps twice, once with the system allocator and once with
//! the allocator under test, each in its own scratch directory; the
//! transcripts (exit status, stdout, stderr) must be identical.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apex_system_tests::{allocator, preload, require_program, run_with_input, test_dir, Allocator};

/// One command of a scenario.
struct Step {
    /// A program on PATH, or a path relative to the scenario's directory
    /// when it starts with `./`.
    program: String,
    args: Vec<String>,
    input: Option<Vec<u8>>,
}

fn step(program: &str, args: &[&str]) -> Step {
    Step {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        input: None,
    }
}

fn step_with_input(program: &str, args: &[&str], input: impl Into<Vec<u8>>) -> Step {
    Step {
        input: Some(input.into()),
        ..step(program, args)
    }
}

const STEP_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `steps` in `dir` (with `alloc` preloaded, or plainly when `None`)
/// and returns one transcript entry per step. Occurrences of `dir` in the
/// output are replaced by `<dir>` so the two runs compare equal.
fn run_steps(
    dir: &Path,
    alloc: Option<&Allocator>,
    steps: &[Step],
    env: &[(&str, String)],
) -> Vec<String> {
    let dir_str = dir.to_string_lossy().into_owned();
    steps
        .iter()
        .map(|s| {
            let program = if let Some(local) = s.program.strip_prefix("./") {
                dir.join(local)
            } else {
                require_program(&s.program)
            };
            let mut cmd = Command::new(&program);
            cmd.args(&s.args)
                .current_dir(dir)
                .env("LC_ALL", "C")
                .env("TZ", "UTC")
                .env_remove("LD_PRELOAD");
            for (k, v) in env {
                cmd.env(k, v.replace("<dir>", &dir_str));
            }
            if let Some(alloc) = alloc {
                preload(&mut cmd, alloc);
            }
            let out = run_with_input(&mut cmd, s.input.as_deref(), STEP_TIMEOUT);
            let status = match (out.code(), out.signal()) {
                (Some(c), _) => format!("exit {c}"),
                (_, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("{:?}", out.status),
            };
            format!(
                "$ {} {}\n[{status}]\n--- stdout ---\n{}\n--- stderr ---\n{}",
                s.program,
                s.args.join(" "),
                out.stdout.replace(&dir_str, "<dir>"),
                out.stderr.replace(&dir_str, "<dir>")
            )
        })
        .collect()
}

/// Runs the scenario plainly and preloaded, in `<test dir>/plain` and
/// `<test dir>/preloaded` (each prepared by `setup`), and asserts that the
/// plain run succeeded and that both transcripts are identical. Returns the
/// two directories for further checks.
fn compare(
    name: &str,
    tmp: PathBuf,
    setup: impl Fn(&Path),
    steps: &[Step],
    env: &[(&str, String)],
) -> (PathBuf, PathBuf) {
    let alloc = allocator();
    let plain_dir = tmp.join("plain");
    let preload_dir = tmp.join("preloaded");
    for d in [&plain_dir, &preload_dir] {
        fs::create_dir_all(d).unwrap();
        setup(d);
    }
    let plain = run_steps(&plain_dir, None, steps, env);
    for t in &plain {
        assert!(
            t.contains("\n[exit 0]\n"),
            "{name}: the reference run (no preload) failed, so the test setup is broken:\n{t}"
        );
    }
    let preloaded = run_steps(&preload_dir, Some(&alloc), steps, env);
    for (i, (a, b)) in plain.iter().zip(&preloaded).enumerate() {
        if a != b {
            panic!(
                "{name}: step {} behaves differently with {alloc:?} preloaded\n{}",
                i + 1,
                describe_difference(a, b)
            );
        }
    }
    (plain_dir, preload_dir)
}

/// The command and status lines of both transcripts, and a few lines of
/// each around the first line where they differ.
fn describe_difference(plain: &str, preloaded: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (plain.lines().collect(), preloaded.lines().collect());
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let window = |lines: &[&str]| {
        let start = first.saturating_sub(5).max(2);
        let end = (first + 6).min(lines.len());
        let mut out = lines
            .iter()
            .take(2)
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        if start > 2 {
            out.push_str("...\n");
        }
        for (n, l) in lines.iter().enumerate().take(end).skip(start) {
            let marker = if n == first { ">" } else { " " };
            let _ = writeln!(out, "{marker} {}", clip(l));
        }
        out
    };
    format!(
        "first difference at transcript line {}\n===== without preload =====\n{}===== with preload =====\n{}",
        first + 1,
        window(&a),
        window(&b)
    )
}

fn clip(s: &str) -> &str {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn no_setup(_: &Path) {}

#[test]
fn ls() {
    compare(
        "ls",
        test_dir!("ls"),
        no_setup,
        &[
            step("ls", &["-la", "/usr"]),
            step("ls", &["-laR", "/usr/include"]),
        ],
        &[],
    );
}

const BASH_SCRIPT: &str = r#"
set -e
declare -a arr
declare -A map
s=""
for ((i = 0; i < 3000; i++)); do
    s+="item$i,"
    arr+=("value-$((i * 7 % 1000))")
    map["k$((i % 500))"]+="$i;"
done
echo "string length: ${#s}"
echo "array: ${#arr[@]} elements, [1234]=${arr[1234]}"
echo "map: ${#map[@]} keys, k42 length ${#map[k42]}"
joined=$(IFS=:; echo "${arr[*]}")
echo "joined length: ${#joined}"
up=${s^^}
echo "upper: ${up:0:40}"
sorted=$(printf '%s\n' "${arr[@]}" | sort | uniq -c | sort -rn | head -5)
echo "$sorted"
words=()
for w in $(seq 1 2000); do words+=("$(printf 'w%05d' "$w")"); done
echo "${words[0]} ${words[1999]} ${#words[@]}"
"#;

#[test]
fn bash_strings_and_arrays() {
    compare(
        "bash",
        test_dir!("bash"),
        no_setup,
        &[step("bash", &["-c", BASH_SCRIPT])],
        &[],
    );
}

const PYTHON_SCRIPT: &str = r#"
import hashlib, json, threading

h = hashlib.sha256()
d = {}
for i in range(200000):
    d["key%d" % i] = [i, str(i) * (i % 7), {"n": i % 13}]
lst = sorted(d.items(), key=lambda kv: (len(kv[1][1]), kv[0]))
h.update(json.dumps(lst[:5000]).encode())
s = "".join(str(x * x) for x in range(100000))
h.update(s.encode())
big = 1
for i in range(1, 3000):
    big *= i
h.update(hex(big).encode())  # str() of huge ints is limited
words = [w.upper()[::-1] for w in ("alpha beta gamma delta " * 20000).split()]
h.update(" ".join(words).encode())

results = [None] * 4
def work(n):
    acc = {}
    for i in range(50000):
        acc.setdefault(i % 1000, []).append(str(i * n))
    results[n] = sum(len(v) for v in acc.values())
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
h.update(repr(results).encode())
del d, lst, s, words
print("entries", 200000, "results", results)
print("checksum", h.hexdigest())
"#;

#[test]
fn python3_allocation_heavy_script() {
    compare(
        "python3",
        test_dir!("python3"),
        no_setup,
        &[step("python3", &["-c", PYTHON_SCRIPT])],
        &[
            ("PYTHONHASHSEED", "0".into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ],
    );
}

/// A C program big enough to make the compiler work: many functions with
/// loops and switches, whose output depends on all of them.
fn generated_c_source() -> String {
    let mut src = String::from("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n");
    for f in 0..300 {
        let _ = write!(
            src,
            "static unsigned long f{f}(unsigned long x) {{\n\
             \tunsigned long acc = {f}u;\n\
             \tfor (int i = 0; i < {n}; i++) {{\n\
             \t\tswitch ((x + i) % 5) {{\n\
             \t\tcase 0: acc += x * {a}u; break;\n\
             \t\tcase 1: acc ^= acc >> {b}; break;\n\
             \t\tcase 2: acc = acc * 31u + i; break;\n\
             \t\tcase 3: acc -= x / {c}u; break;\n\
             \t\tdefault: acc += (unsigned long)i * i;\n\
             \t\t}}\n\t}}\n\treturn acc;\n}}\n\n",
            n = 10 + f % 17,
            a = f * 3 + 1,
            b = 1 + f % 13,
            c = f % 7 + 1,
        );
    }
    src.push_str("int main(void) {\n\tunsigned long total = 0;\n\tchar *buf = malloc(100000);\n");
    for f in 0..300 {
        let _ = writeln!(src, "\ttotal += f{f}(total + {f}u);");
    }
    src.push_str(
        "\tfor (int i = 0; i < 1000; i++) total += (unsigned long)snprintf(buf, 100000, \"%lu-%d\", total, i);\n\
         \tprintf(\"total %lu\\n\", total);\n\tfree(buf);\n\treturn 0;\n}\n",
    );
    src
}

#[test]
fn gcc_compiles_identically() {
    let src = generated_c_source();
    let (plain, preloaded) = compare(
        "gcc",
        test_dir!("gcc"),
        |d| fs::write(d.join("prog.c"), &src).unwrap(),
        &[
            step("gcc", &["-O2", "-Wall", "-o", "prog", "prog.c"]),
            step("gcc", &["-O1", "-c", "-o", "prog.o", "prog.c"]),
            step("./prog", &[]),
        ],
        &[],
    );
    for file in ["prog", "prog.o"] {
        let a = fs::read(plain.join(file)).unwrap();
        let b = fs::read(preloaded.join(file)).unwrap();
        assert!(
            a == b,
            "gcc produced a different {file} with the allocator preloaded"
        );
    }
}

#[test]
fn git_commit_is_deterministic() {
    require_program("git");
    let setup = |d: &Path| {
        let work = d.join("repo");
        fs::create_dir_all(work.join("src/nested")).unwrap();
        for i in 0..200 {
            let body: String = (0..(i % 40 + 1))
                .map(|l| format!("line {l} of file {i}\n"))
                .collect();
            let sub = if i % 3 == 0 { "src/nested" } else { "src" };
            fs::write(work.join(format!("{sub}/file{i:03}.txt")), body).unwrap();
        }
        fs::write(work.join("README"), "a test repository\n").unwrap();
    };
    let g = |args: &[&str]| {
        let mut all = vec![
            "-C",
            "repo",
            "-c",
            "user.name=Apex Tester",
            "-c",
            "user.email=tester@example.com",
        ];
        all.extend_from_slice(args);
        step("git", &all)
    };
    // The transcripts include `git log --format=%H` and the tree listing:
    // the same content, author and dates must give the same hashes.
    compare(
        "git",
        test_dir!("git"),
        setup,
        &[
            g(&["init", "-q", "-b", "main"]),
            g(&["add", "."]),
            g(&["commit", "-q", "-m", "initial commit"]),
            step("bash", &["-c", "for f in $(ls repo/src/*.txt | head -50); do echo change >> $f; done; rm repo/README"]),
            g(&["commit", "-q", "-a", "-m", "second commit"]),
            g(&["log", "--format=%H %T %s"]),
            g(&["cat-file", "-p", "HEAD^{tree}"]),
            g(&["diff", "--stat", "HEAD~1", "HEAD"]),
            g(&["repack", "-a", "-d", "-q"]),
            g(&["fsck", "--strict", "--no-progress"]),
            g(&["log", "--format=%H"]),
        ],
        &[
            ("HOME", "<dir>".into()),
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z".into()),
            ("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z".into()),
        ],
    );
}

#[test]
fn sqlite3_inserts_and_queries() {
    let mut sql = String::from(
        "PRAGMA journal_mode=WAL;\n\
         CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, category INTEGER, price REAL, payload BLOB);\n\
         BEGIN;\n",
    );
    for i in 0..5000 {
        let _ = writeln!(
            sql,
            "INSERT INTO items(name, category, price, payload) VALUES('item-{i}-{}', {}, {}.{:02}, zeroblob({}));",
            "x".repeat(i % 50),
            i % 37,
            i % 1000,
            i % 100,
            i % 300
        );
    }
    sql.push_str(
        "COMMIT;\n\
         CREATE INDEX items_by_category ON items(category, price);\n\
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000)\n\
           INSERT INTO items(name, category, price) SELECT 'gen-' || x, x % 11, x * 0.5 FROM n;\n\
         SELECT count(*), sum(length(name)), sum(length(payload)) FROM items;\n\
         SELECT category, count(*), round(avg(price), 3), max(name) FROM items GROUP BY category ORDER BY category;\n\
         SELECT name FROM items WHERE category = 7 AND price > 400 ORDER BY price DESC, name LIMIT 10;\n\
         SELECT group_concat(name, ',') FROM (SELECT name FROM items ORDER BY name DESC LIMIT 50);\n\
         DELETE FROM items WHERE id % 3 = 0;\n\
         VACUUM;\n\
         SELECT count(*), total(price) FROM items;\n\
         PRAGMA integrity_check;\n",
    );
    compare(
        "sqlite3",
        test_dir!("sqlite3"),
        no_setup,
        &[step_with_input("sqlite3", &["test.db"], sql)],
        &[],
    );
}
