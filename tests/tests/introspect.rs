//! Introspection from C: `apex_ctl` (every name, every error path),
//! `apex_thread_stats`, `apex_global_stats` and `apex_heap_walk`, from any
//! thread, in a fork child and at exit (`c/introspect.c`, one subtest per
//! test), and the JSON report of `APEX_SHOW_STATS=json` parsed with
//! python3 and checked against what the program did.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apex_system_tests::{
    compile, preload, require_apexalloc, require_program, run, test_dir, RunOutput,
};

fn exe() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| compile("introspect.c", &test_dir!("introspect-bin")))
}

fn run_subtest(subtest: &str, env: &[(&str, &str)]) -> RunOutput {
    let alloc = require_apexalloc();
    let mut cmd = Command::new(exe());
    cmd.arg(subtest);
    // The subtests check the defaults of the options they read.
    for v in [
        "APEX_HARDEN",
        "APEX_DECOMMIT",
        "APEX_PURGE_DELAY_MS",
        "APEX_SHOW_STATS",
        "APEX_STATS_FILE",
        "APEX_STRATEGY",
        "APEX_VERBOSE",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    preload(&mut cmd, &alloc);
    run(&mut cmd, Duration::from_secs(120))
}

fn subtest(name: &str) {
    let out = run_subtest(name, &[]);
    out.assert_success();
    out.assert_stdout(&format!("{name}: ok"));
}

#[test]
fn every_name_reads_with_its_size() {
    subtest("names");
}

#[test]
fn every_error_path_returns_its_error_and_never_crashes() {
    subtest("errors");
}

/// `opt.decommit` switched to `free` at run time: memory given back with
/// `MADV_FREE` keeps its contents, so calloc must not take it for zero.
#[test]
fn calloc_is_zeroed_after_decommit_switches_to_free() {
    subtest("decommit");
}

#[test]
fn values_follow_the_program_and_options_write_back() {
    subtest("values");
}

#[test]
fn thread_and_global_stats_structs() {
    subtest("structs");
}

#[test]
fn heap_walk_finds_every_block() {
    subtest("walk");
}

#[test]
fn threads_remote_frees_and_exact_totals_at_a_barrier() {
    subtest("threads");
}

#[test]
fn works_in_a_fork_child() {
    subtest("fork");
}

#[test]
fn works_from_an_exit_handler() {
    subtest("atexit");
}

/// The subtests again under the other presets (canaries change which
/// class a request lands in; quarantines hold freed blocks).
#[test]
fn presets_off_and_full() {
    for preset in ["off", "full"] {
        for name in ["values", "structs", "walk", "threads"] {
            let out = run_subtest(name, &[("APEX_HARDEN", preset)]);
            assert!(
                out.success() && out.stdout.contains(&format!("{name}: ok")),
                "APEX_HARDEN={preset} {name}:\n{}",
                out.report()
            );
        }
    }
}

/// A python3 program that reads the JSON report and prints what the test
/// checks, one `key value` per line, after checking the schema.
const SUMMARIZE: &str = r#"
import json, sys
d = json.load(open(sys.argv[1]))
keys = ["apexalloc", "pid", "program", "preset", "harden", "totals", "classes", "threads", "segments"]
assert list(d.keys()) == keys, list(d.keys())
t = d["totals"]
assert list(t.keys()) == ["allocated", "active", "resident", "mapped", "retained", "segments",
    "mallocs", "frees", "remote_frees", "peak_active", "fragmentation_pct"], list(t.keys())
for c in d["classes"]:
    assert list(c.keys()) == ["class", "size", "allocated", "active_blocks", "slabs"], c
    assert c["allocated"] == c["size"] * c["active_blocks"], c
for th in d["threads"]:
    assert list(th.keys()) == ["tid", "allocated", "deallocated", "mallocs", "frees"], th
small = huge = 0
for s in d["segments"]:
    assert list(s.keys()) == ["base", "size", "kind", "owner", "spans"], s
    base = int(s["base"], 16)
    if s["kind"] == "small":
        small += 1
        # Spans tile the segment after its header, in order.
        end = s["spans"][0]["offset"]
        for sp in s["spans"]:
            assert list(sp.keys()) == ["offset", "len", "kind", "class", "block_size", "used", "blocks"], sp
            assert sp["offset"] == end, (s["base"], sp)
            end += sp["len"]
            assert sp["kind"] in ("slab", "large", "free"), sp
            assert sp["used"] <= sp["blocks"], sp
        assert end == s["size"], s["base"]
    else:
        assert s["kind"] == "huge" and len(s["spans"]) == 1, s
        huge += 1
        sp = s["spans"][0]
        print("huge_block", hex(base + sp["offset"]), sp["len"], sp["used"])
print("version", d["apexalloc"])
print("pid", d["pid"])
print("program", d["program"])
print("preset", d["preset"])
print("harden", ",".join(d["harden"]))
for k, v in t.items():
    print("total_" + k, v)
print("classes", len(d["classes"]))
for c in d["classes"]:
    print("class_%d" % c["class"], c["size"], c["active_blocks"], c["slabs"])
print("class_sum", sum(c["allocated"] for c in d["classes"]))
print("threads", " ".join(str(th["tid"]) for th in d["threads"]))
for th in d["threads"]:
    print("thread_%d" % th["tid"], th["allocated"] - th["deallocated"], th["mallocs"] - th["frees"])
print("small_segments", small)
print("huge_segments", huge)
owners = sorted(set(s["owner"] for s in d["segments"] if s["kind"] == "small"))
print("owners", " ".join(map(str, owners)))
"#;

#[test]
fn json_report_at_exit_matches_the_program() {
    let python = require_program("python3");
    let dir = test_dir!("introspect-json");
    let template = dir.join("stats-%p.json");
    let out = run_subtest(
        "json",
        &[
            ("APEX_SHOW_STATS", "json"),
            ("APEX_STATS_FILE", template.to_str().unwrap()),
        ],
    );
    out.assert_success().assert_stdout("json: ok");
    // What the program said.
    let said: BTreeMap<String, String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("json: "))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    // The file is named after the process id.
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one report file: {files:?}");
    let file = &files[0];
    let summary = Command::new(python)
        .arg("-c")
        .arg(SUMMARIZE)
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&summary.stdout).into_owned();
    assert!(
        summary.status.success(),
        "the report does not parse or breaks the schema:\n{}\n{}",
        String::from_utf8_lossy(&summary.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    let facts: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once(' ')).collect();
    let fact = |k: &str| -> &str { facts.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}")) };
    let num = |k: &str| -> u64 { fact(k).parse().unwrap() };

    // Header.
    let file_pid = file
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("stats-")
        .to_string();
    assert_eq!(fact("pid"), file_pid);
    assert_eq!(fact("program"), "introspect");
    assert_eq!(fact("preset"), "default");
    assert_eq!(fact("harden"), "links,bitmap,foreign,guards,shuffle");
    assert!(fact("version").contains('.'));

    // The 1000 blocks of the class of 3000 bytes the program left live.
    let class_line = &said["class"]; // "<c> size <size> blocks <n>"
    let parts: Vec<&str> = class_line.split_whitespace().collect();
    let (c, size) = (parts[0], parts[2]);
    let class_fact: Vec<u64> = fact(&format!("class_{c}"))
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(class_fact[0].to_string(), size);
    assert_eq!(class_fact[1], 1000, "live blocks of class {c}");
    assert!(class_fact[2] >= 1, "slabs of class {c}");
    assert_eq!(num("classes"), 104);

    // The huge block, live, as one huge segment.
    let huge_addr = said["huge"].trim();
    let huge: Vec<&str> = fact("huge_block").split_whitespace().collect();
    assert_eq!(huge[0], huge_addr, "the huge block's address");
    assert!(huge[1].parse::<u64>().unwrap() >= 40 << 20);
    assert_eq!(huge[2], "1");
    assert_eq!(num("huge_segments"), 1);

    // Totals: everything live is in the classes or the huge block.
    let allocated = num("total_allocated");
    assert!(allocated >= num("class_sum") + (40 << 20), "{text}");
    assert_eq!(num("total_segments"), num("small_segments"));
    let segs: Vec<u64> = said["segments"]
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(num("small_segments"), segs[0], "segments as apex_ctl said");
    assert!(num("total_active") >= allocated);
    assert!(num("total_mapped") >= num("total_active"));
    assert!(num("total_mallocs") >= num("total_frees") + 1500);
    assert!(num("total_peak_active") >= num("total_active"));
    let frag: f64 = fact("total_fragmentation_pct").parse().unwrap();
    assert!((0.0..=100.0).contains(&frag));

    // Threads: the main thread and the one still running are listed (the
    // latter with its 500 blocks of 700 bytes); the one that exited is not.
    let tids: Vec<&str> = fact("threads").split_whitespace().collect();
    let main = said["main"].trim_start_matches("thread ").trim();
    let live = said["live"].trim_start_matches("thread ").trim();
    let exited = said["exited"].trim_start_matches("thread ").trim();
    assert!(tids.contains(&main), "main thread {main} in {tids:?}");
    assert!(tids.contains(&live), "live thread {live} in {tids:?}");
    assert!(
        !tids.contains(&exited),
        "exited thread {exited} in {tids:?}"
    );
    let live_counts: Vec<u64> = fact(&format!("thread_{live}"))
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(live_counts[0], 500 * 704, "live thread's bytes");
    assert_eq!(live_counts[1], 500, "live thread's blocks");
    // Segments name their owning threads.
    let owners: Vec<&str> = fact("owners").split_whitespace().collect();
    assert!(
        owners.contains(&main) && owners.contains(&live),
        "{owners:?}"
    );
}
