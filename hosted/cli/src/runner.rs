//! Running a program under the library and collecting the statistics
//! document it writes at exit.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::snapshot::{self, Snapshot};

/// How to run the program.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// The library to preload.
    pub lib: PathBuf,
    /// `APEX_HARDEN` for the program (unset: the program's environment decides).
    pub harden: Option<String>,
    /// Sets `APEX_LEAKS=1`.
    pub leaks: bool,
}

/// Why `apex` could not do what it was asked, and the exit status to
/// leave with: 127 for a program that does not exist and 126 for one that
/// cannot be run, as shells do; 125 for anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The exit status.
    pub exit_code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            exit_code: 125,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// What running the program gave.
#[derive(Debug)]
pub struct Outcome {
    /// How the program ended.
    pub status: ExitStatus,
    /// The statistics document of the program's own process, or of the
    /// busiest one it started when it wrote none itself.
    pub snapshot: Option<Snapshot>,
    /// That document as written.
    pub raw: Option<String>,
    /// How many processes wrote statistics (a shell script's children do too).
    pub processes: usize,
    /// Why the document shown is not the program's own, or why there is none.
    pub note: Option<String>,
}

impl Outcome {
    /// The exit code to pass on: the program's, or 128 + signal number as
    /// shells report a program killed by a signal.
    pub fn exit_code(&self) -> i32 {
        exit_code(self.status)
    }
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// `LD_PRELOAD` with `lib` first, keeping what the environment preloads.
fn preload_value(lib: &Path, existing: Option<OsString>) -> OsString {
    let mut v = lib.as_os_str().to_os_string();
    if let Some(old) = existing.filter(|o| !o.is_empty()) {
        v.push(" ");
        v.push(old);
    }
    v
}

/// Runs `argv` with the library preloaded and `APEX_SHOW_STATS=json`, waits
/// for it (ignoring Ctrl-C meanwhile, which the program receives as well),
/// and reads the statistics it wrote.
pub fn run(argv: &[OsString], cfg: &RunConfig) -> Result<Outcome, Failure> {
    let (prog, args) = argv.split_first().ok_or("no program to run")?;
    let dir = tempfile::Builder::new()
        .prefix("apex-stats-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env(
            "LD_PRELOAD",
            preload_value(&cfg.lib, std::env::var_os("LD_PRELOAD")),
        )
        .env("APEX_SHOW_STATS", "json")
        // `%p`: one file per process, so a program's children cannot mix
        // their documents into its own.
        .env("APEX_STATS_FILE", dir.path().join("stats-%p.json"));
    if let Some(h) = &cfg.harden {
        cmd.env("APEX_HARDEN", h);
    }
    if cfg.leaks {
        cmd.env("APEX_LEAKS", "1");
    }
    let mut child = cmd.spawn().map_err(|e| Failure {
        message: format!("cannot run {}: {e}", Path::new(prog).display()),
        exit_code: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    })?;
    let pid = u64::from(child.id());
    let previous = ignore_interrupts();
    let waited = child.wait();
    restore_interrupts(previous);
    let status = waited.map_err(|e| format!("waiting for the program failed: {e}"))?;
    let (snapshot, raw, processes, mut note) = collect(dir.path(), pid);
    if snapshot.is_none() && note.is_none() {
        note = Some(match status.signal() {
            Some(sig) => format!(
                "the program was killed by signal {sig} ({}) before it could write its statistics",
                signal_name(sig)
            ),
            None => "the program wrote no statistics: it does not load the library \
                     (a static or setuid program), or it left without running exit handlers \
                     (_exit, exec)"
                .to_string(),
        });
    }
    Ok(Outcome {
        status,
        snapshot,
        raw,
        processes,
        note,
    })
}

type Collected = (Option<Snapshot>, Option<String>, usize, Option<String>);

/// Reads every document in `dir` and picks the one of process `pid`, or
/// else the one with the most allocations.
pub fn collect(dir: &Path, pid: u64) -> Collected {
    let mut docs: Vec<(Snapshot, String)> = Vec::new();
    let mut errors = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        // Several documents in one file when the name had no `%p`.
        let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
        loop {
            match stream.next() {
                Some(Ok(value)) => {
                    let raw = serde_json::to_string_pretty(&value).unwrap_or_default();
                    match serde_json::from_value::<Snapshot>(value) {
                        Ok(s) => docs.push((s, raw)),
                        Err(e) => errors.push(format!("{}: {e}", path.display())),
                    }
                }
                Some(Err(e)) => {
                    errors.push(format!("{}: {e}", path.display()));
                    break;
                }
                None => break,
            }
        }
    }
    let processes = docs.len();
    let own = docs.iter().position(|(s, _)| s.pid == pid);
    let (pick, note) = match own {
        Some(i) => (Some(i), None),
        None if docs.is_empty() => (
            None,
            (!errors.is_empty())
                .then(|| format!("the statistics could not be read: {}", errors.join("; "))),
        ),
        None => {
            let i = (0..docs.len())
                .max_by_key(|&i| docs[i].0.totals.mallocs)
                .unwrap_or(0);
            let s = &docs[i].0;
            (
                Some(i),
                Some(format!(
                    "the program's own process wrote no statistics; showing {} (pid {}), \
                     the busiest of the {} processes it started",
                    s.program, s.pid, processes
                )),
            )
        }
    };
    match pick {
        Some(i) => {
            let (s, raw) = docs.swap_remove(i);
            (Some(s), Some(raw), processes, note)
        }
        None => (None, None, processes, note),
    }
}

/// Ignores SIGINT and SIGQUIT in this process while the program runs: the
/// terminal sends them to both, and the program decides what they mean.
fn ignore_interrupts() -> [libc::sighandler_t; 2] {
    // SAFETY: installing SIG_IGN is async-signal-safe and touches no Rust
    // state; the previous handlers are returned to be restored.
    unsafe {
        [
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        ]
    }
}

fn restore_interrupts(previous: [libc::sighandler_t; 2]) {
    // SAFETY: puts back the handlers `ignore_interrupts` replaced.
    unsafe {
        libc::signal(libc::SIGINT, previous[0]);
        libc::signal(libc::SIGQUIT, previous[1]);
    }
}

/// `SIGABRT` for 6, and so on.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// The program's name as the user typed it, for messages.
pub fn display_command(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            // Quoted as a shell would need it, so the line can be pasted.
            let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
            if s.is_empty() || !s.chars().all(plain) {
                format!("'{}'", s.replace('\'', r"'\''"))
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the document as read to `path`.
pub fn save_json(path: &Path, raw: &str) -> Result<(), String> {
    fs::write(path, format!("{raw}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Loads a document given on the command line (`--from FILE`).
pub fn load(path: &OsStr) -> Result<Snapshot, String> {
    snapshot::load(Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_keeps_what_was_there() {
        let lib = Path::new("/x/libapexalloc.so");
        assert_eq!(
            preload_value(lib, None),
            OsString::from("/x/libapexalloc.so")
        );
        assert_eq!(
            preload_value(lib, Some("libother.so".into())),
            OsString::from("/x/libapexalloc.so libother.so")
        );
    }

    #[test]
    fn commands_are_quoted_for_display() {
        let argv: Vec<OsString> = ["python3", "-c", "print('hi')"].map(Into::into).to_vec();
        assert_eq!(display_command(&argv), r"python3 -c 'print('\''hi'\'')'");
        let argv: Vec<OsString> = ["ls", "-la", "/tmp", "a*b", ""].map(Into::into).to_vec();
        assert_eq!(display_command(&argv), "ls -la /tmp 'a*b' ''");
    }

    #[test]
    fn picks_the_programs_own_document_or_the_busiest() {
        let dir = tempfile::tempdir().unwrap();
        let doc = |pid: u64, mallocs: u64| {
            format!(
                r#"{{"apexalloc": "0.1.0", "pid": {pid}, "program": "p{pid}", "totals": {{"allocated": 0,
                "active": 0, "resident": 0, "mapped": 0, "retained": 0, "segments": 0,
                "mallocs": {mallocs}, "frees": 0, "remote_frees": 0, "peak_active": 0,
                "fragmentation_pct": 0.0}}}}"#
            )
        };
        fs::write(dir.path().join("stats-10.json"), doc(10, 5)).unwrap();
        fs::write(dir.path().join("stats-11.json"), doc(11, 50)).unwrap();
        let (s, _, n, note) = collect(dir.path(), 10);
        assert_eq!((s.unwrap().pid, n, note), (10, 2, None));
        let (s, _, _, note) = collect(dir.path(), 99);
        assert_eq!(s.unwrap().pid, 11);
        assert!(note.unwrap().contains("busiest"));
        let empty = tempfile::tempdir().unwrap();
        fs::write(empty.path().join("stats-12.json"), "{broken").unwrap();
        let (s, _, _, note) = collect(empty.path(), 12);
        assert!(s.is_none());
        assert!(note.unwrap().contains("could not be read"));
    }
}
