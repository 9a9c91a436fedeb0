//! Helpers for ApexAlloc's whole-system tests.
//!
//! The tests build small C/C++ programs (sources in `tests/c/`) and run them,
//! and a few real tools, with the allocator library injected via
//! `LD_PRELOAD`. This crate finds the library, compiles the programs, and
//! runs commands with a hard timeout while capturing their output.
//!
//! Selecting the allocator under test (environment variable `APEX_LIB`):
//! - unset: `<workspace>/target/release/libapexalloc.so`, which must exist;
//! - a path: that shared library is preloaded (any malloc replacement works,
//!   except for the ApexAlloc-specific checks in `misuse.rs`);
//! - `none` or `system`: nothing is preloaded and the system allocator is
//!   used, which is useful to check the tests themselves.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The allocator the tests run programs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// A shared library injected with `LD_PRELOAD`.
    Preload(PathBuf),
    /// No preload: the C library's own allocator.
    System,
}

impl Allocator {
    /// A substring of the file name of the object that must define `malloc`
    /// inside a preloaded process (checked with `dladdr`).
    pub fn defining_object_substr(&self) -> String {
        match self {
            Allocator::Preload(path) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Allocator::System => "libc.so".to_string(),
        }
    }

    /// True when the allocator under test is ApexAlloc itself.
    pub fn is_apexalloc(&self) -> bool {
        matches!(self, Allocator::Preload(p)
            if p.file_name().is_some_and(|n| n.to_string_lossy().contains("apexalloc")))
    }
}

/// Root of the Cargo workspace (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// Directory holding the C and C++ sources of the test programs.
pub fn c_source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c")
}

/// The allocator under test, from `APEX_LIB` (see the crate docs).
///
/// Panics with instructions when the library does not exist: a missing
/// library is a test failure, never a silent skip.
pub fn allocator() -> Allocator {
    match std::env::var_os("APEX_LIB") {
        Some(v) if v == "none" || v == "system" => Allocator::System,
        Some(v) if !v.is_empty() => {
            let path = PathBuf::from(v);
            assert!(
                path.is_file(),
                "APEX_LIB={} does not name an existing file",
                path.display()
            );
            Allocator::Preload(fs::canonicalize(&path).unwrap_or(path))
        }
        _ => {
            let path = workspace_root().join("target/release/libapexalloc.so");
            assert!(
                path.is_file(),
                "the allocator library {} does not exist; build it first with \
                 `cargo build --release -p apexalloc-preload` (or point APEX_LIB \
                 at another malloc library)",
                path.display()
            );
            Allocator::Preload(path)
        }
    }
}

/// Fails the test unless the allocator under test is ApexAlloc; for checks
/// of behaviour only ApexAlloc promises (its fatal error messages, ...).
pub fn require_apexalloc() -> Allocator {
    let alloc = allocator();
    assert!(
        alloc.is_apexalloc(),
        "this test checks ApexAlloc-specific behaviour and needs libapexalloc.so, \
         but the allocator under test is {alloc:?} (unset APEX_LIB or point it at \
         libapexalloc.so)"
    );
    alloc
}

/// Sets `LD_PRELOAD` on `cmd` for the allocator under test (and removes any
/// inherited value when testing the system allocator).
pub fn preload<'a>(cmd: &'a mut Command, alloc: &Allocator) -> &'a mut Command {
    match alloc {
        Allocator::Preload(path) => cmd.env("LD_PRELOAD", path),
        Allocator::System => cmd.env_remove("LD_PRELOAD"),
    }
}

/// A fresh, empty scratch directory for one test (or one test file).
///
/// Prefer the [`test_dir!`] macro, which places it in the integration test's
/// `CARGO_TARGET_TMPDIR`. The directory name includes the process id so that
/// concurrent runs of the suite do not clash; old directories left behind
/// by processes that no longer exist are removed.
pub fn fresh_dir(tmp_root: &str, name: &str) -> PathBuf {
    let root = Path::new(tmp_root).join("apex-system-tests");
    fs::create_dir_all(&root).expect("create the temp root");
    remove_stale_dirs(&root);
    let dir = root.join(format!("{}-{name}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("clear the old temp dir");
    }
    fs::create_dir_all(&dir).expect("create the temp dir");
    dir
}

/// Removes `<pid>-*` directories whose process is gone, once they are an
/// hour old (recent ones are kept for inspecting failures).
fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, _)) = name.split_once('-') else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old && pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            // Several test threads may race on this; losing the race is fine.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `test_dir!("name")`: a fresh scratch directory for the calling test,
/// under the integration test's `CARGO_TARGET_TMPDIR`.
#[macro_export]
macro_rules! test_dir {
    ($name:expr) => {
        $crate::fresh_dir(env!("CARGO_TARGET_TMPDIR"), $name)
    };
}

/// Compiles `tests/c/<source>` into `out_dir` with gcc (C) or g++ (C++,
/// chosen by the `.cpp` extension) and returns the executable's path.
///
/// Flags: `-O1 -g -pthread -Wall`, plus `-fno-builtin` and
/// `-fno-allocation-dce` so the compiler can neither fold nor elide the
/// allocator calls that the programs exist to make.
pub fn compile(source: &str, out_dir: &Path) -> PathBuf {
    let src = c_source_dir().join(source);
    assert!(src.is_file(), "missing test source {}", src.display());
    let is_cxx = src.extension() == Some(OsStr::new("cpp"));
    let compiler = if is_cxx { "g++" } else { "gcc" };
    require_program(compiler);
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    let exe = out_dir.join(stem);
    let mut cmd = Command::new(compiler);
    cmd.args([
        "-O1",
        "-g",
        "-pthread",
        "-Wall",
        "-fno-builtin",
        "-fno-allocation-dce",
    ])
    .arg(if is_cxx { "-std=c++17" } else { "-std=gnu11" })
    .arg("-o")
    .arg(&exe)
    .arg(&src)
    .arg("-ldl")
    .env_remove("LD_PRELOAD");
    let out = run(&mut cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "compiling {} failed:\n{}",
        src.display(),
        out.report()
    );
    if !out.stderr.trim().is_empty() {
        // Warnings do not fail the build, but they are worth seeing.
        eprintln!("{compiler} warnings for {source}:\n{}", out.stderr);
    }
    exe
}

/// Fails the test with installation instructions if `program` is not on
/// `PATH`.
pub fn require_program(program: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed but this test needs it; \
             run `tests/install-deps.sh` (as root) to install the test dependencies"
        )
    })
}

/// Looks `program` up on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

/// What a finished command did.
#[derive(Debug)]
pub struct RunOutput {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    /// Exited normally with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, if it exited normally.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that killed it, if any.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// A human-readable account of the run, for assertion messages.
    pub fn report(&self) -> String {
        let how = match (self.code(), self.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
            _ => format!("{:?}", self.status),
        };
        format!(
            "command: {}\nresult: {how} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.cmdline,
            self.elapsed,
            tail(&self.stdout, 6000),
            tail(&self.stderr, 6000)
        )
    }

    /// Panics with the full report unless the command exited with status 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed:\n{}", self.report());
        self
    }

    /// Panics with the full report unless stdout contains `line`.
    #[track_caller]
    pub fn assert_stdout(&self, line: &str) -> &Self {
        assert!(
            self.stdout.contains(line),
            "missing {line:?} on stdout:\n{}",
            self.report()
        );
        self
    }
}

/// Name of a few signals, for messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "other",
    }
}

/// The last `max` bytes of `s` (on a char boundary).
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `cmd` to completion with no input; see [`run_with_input`].
pub fn run(cmd: &mut Command, timeout: Duration) -> RunOutput {
    run_with_input(cmd, None, timeout)
}

/// Runs `cmd`, feeding it `input` on stdin (or /dev/null), capturing stdout
/// and stderr, with a hard `timeout`.
///
/// The child runs in its own process group without core dumps. When it
/// exceeds the timeout the whole group is killed and the test fails (this
/// function panics with the output gathered so far). Once the child exits,
/// any leftover processes of its group are killed too, so a stray
/// grandchild can neither keep the pipes open nor outlive the test.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> RunOutput {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let pgid = child.id() as i32;

    let stdin_writer = input.map(|bytes| {
        let mut stdin = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        // A child that exits without reading everything makes this fail
        // with EPIPE, which is not an error here.
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })
    });
    let (tx, rx) = mpsc::channel();
    let spawn_reader = |mut pipe: Box<dyn Read + Send>, which: u8| {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((which, buf));
        });
    };
    spawn_reader(Box::new(child.stdout.take().unwrap()), 1);
    spawn_reader(Box::new(child.stderr.take().unwrap()), 2);
    drop(tx);

    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(pgid);
            break child.wait().expect("wait for killed child");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    kill_group(pgid);

    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for (which, buf) in rx.iter() {
        if which == 1 {
            stdout = buf;
        } else {
            stderr = buf;
        }
    }
    if let Some(writer) = stdin_writer {
        let _ = writer.join();
    }
    let out = RunOutput {
        cmdline,
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed,
    };
    assert!(
        !timed_out,
        "timed out after {timeout:?} (process group killed):\n{}",
        out.report()
    );
    out
}

fn kill_group(pgid: i32) {
    // SAFETY: plain syscall; the group was created for this child and a
    // group that no longer exists just yields ESRCH.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
