//! `apex`: runs programs under ApexAlloc, prints their allocation
//! statistics and draws their heap. `apex --help` explains each command.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use apex_cli::runner::{self, display_command, Failure, RunConfig};
use apex_cli::snapshot::Snapshot;
use apex_cli::{draw, library, render, summary, table};

const EXAMPLES: &str = "\
Examples:
  apex run -- ls -la
      run `ls -la` under the allocator, then print its statistics
  apex run --stats --json stats.json -- python3 script.py
      every size class and thread too; keep the statistics as JSON
  apex run --harden full -- ./my-program
      with every mitigation against heap exploitation on
  apex heap --svg heap.svg --png heap.png -- python3 -c 'print(1)'
      draw the program's heap as it is at exit
  apex heap --from stats.json --png heap.png
      draw a heap saved earlier with --json

apex writes its own output to stderr, so the program's stdout is left alone.
The library is found at $APEX_LIB, next to apex, or in target/release; if it
is missing it is built with `cargo build --release -p apexalloc-preload`.";

/// Run programs under ApexAlloc and look inside their heap.
///
/// `apex run` starts a program with the ApexAlloc library (libapexalloc.so)
/// in place of the C library's malloc, and when the program exits prints
/// how much it allocated, how much memory the allocator held and how it was
/// used. `apex heap` does the same and draws the heap: every segment of
/// address space the allocator reserved, cut into slabs of equal-size
/// blocks, coloured by how full each slab is.
#[derive(Parser, Debug)]
#[command(name = "apex", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a program under the allocator and print its statistics at exit.
    ///
    /// The program runs with LD_PRELOAD=libapexalloc.so and
    /// APEX_SHOW_STATS=json; when it exits, apex reads the statistics the
    /// library wrote and prints the totals (bytes in live blocks, memory
    /// held, fragmentation, allocation counts) and the size classes holding
    /// the most bytes. apex exits with the program's exit status (128 + the
    /// signal number if a signal killed it).
    #[command(
        after_help = "Example:\n  apex run --stats -- python3 -c 'print(sum(range(10**6)))'"
    )]
    Run(RunArgs),
    /// Draw a program's heap at exit as SVG and/or PNG, and summarise it.
    ///
    /// Each segment (32 MiB of address space) is a box of 64 KiB cells, one
    /// row per 2 MiB; each span drawn over it is a slab of one size class
    /// (coloured from pale yellow, empty, to dark red, full, and labelled
    /// with its block size where the label fits), a large block (purple),
    /// or free pages (white). Huge blocks have a mapping each, drawn as one
    /// bar. Without --svg or --png the picture is written to heap.svg.
    #[command(
        after_help = "Examples:\n  apex heap --svg heap.svg --png heap.png -- sqlite3 :memory: 'select 1'\n  apex heap --from stats.json --png heap.png"
    )]
    Heap(HeapArgs),
}

/// Options shared by the commands that run a program.
#[derive(Args, Debug)]
struct Launch {
    /// Hardening for the program (APEX_HARDEN): off, default, full, or a
    /// preset with single mitigations added or removed, e.g. default,+zero
    #[arg(long, value_name = "PRESET")]
    harden: Option<String>,
    /// Save the statistics document (JSON) to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The library to use [default: $APEX_LIB, next to apex, or
    /// target/release/libapexalloc.so; built if none exists]
    #[arg(long, value_name = "PATH")]
    lib: Option<PathBuf>,
    /// No progress messages
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Also print every size class in use and every thread's counters
    #[arg(long)]
    stats: bool,
    /// Report the blocks still live at exit, grouped by allocation site
    /// (APEX_LEAKS=1; the library prints the report on stderr)
    #[arg(long)]
    leaks: bool,
    #[command(flatten)]
    launch: Launch,
    /// The program and its arguments (put them after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROG ARGS"
    )]
    command: Vec<OsString>,
}

#[derive(Args, Debug)]
struct HeapArgs {
    /// Write the picture as SVG to FILE
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Write the picture as PNG to FILE
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// Pixels per SVG unit in the PNG (2 for a sharper, larger picture)
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    scale: f32,
    /// Draw a statistics document saved earlier (with --json or
    /// APEX_SHOW_STATS=json) instead of running a program
    #[arg(long, value_name = "FILE.json", conflicts_with = "command")]
    from: Option<PathBuf>,
    #[command(flatten)]
    launch: Launch,
    /// The program and its arguments (put them after `--`)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROG ARGS",
        required_unless_present = "from"
    )]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Heap(a) => cmd_heap(a),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("apex: {}", e.message);
            ExitCode::from(e.exit_code)
        }
    }
}

/// Runs the program and returns its snapshot (if it wrote one) and exit code.
fn launch(
    command: &[OsString],
    launch: &Launch,
    leaks: bool,
) -> Result<(Option<Snapshot>, i32), Failure> {
    let lib = library::find_or_build(launch.lib.as_deref(), launch.quiet)?;
    if !launch.quiet {
        eprintln!(
            "apex: running `{}` with {}",
            display_command(command),
            lib.display()
        );
    }
    let cfg = RunConfig {
        lib,
        harden: launch.harden.clone(),
        leaks,
    };
    let out = runner::run(command, &cfg)?;
    let code = out.exit_code();
    eprintln!();
    if code != 0 && !launch.quiet {
        match out.status.code() {
            Some(c) => eprintln!("apex: the program exited with status {c}"),
            None => eprintln!("apex: the program ended with status {code} (killed by a signal)"),
        }
    }
    if let Some(note) = &out.note {
        eprintln!("apex: {note}");
    }
    if let (Some(path), Some(raw)) = (&launch.json, &out.raw) {
        runner::save_json(path, raw)?;
        if !launch.quiet {
            eprintln!("apex: statistics saved to {}", path.display());
        }
    }
    Ok((out.snapshot, code))
}

fn cmd_run(a: RunArgs) -> Result<i32, Failure> {
    let (snap, code) = launch(&a.command, &a.launch, a.leaks)?;
    if let Some(s) = snap {
        eprint!("{}", table::report(&s, a.stats));
    }
    Ok(code)
}

fn cmd_heap(a: HeapArgs) -> Result<i32, Failure> {
    // Checked first, before a long program run is wasted on it.
    if !(a.scale > 0.0 && a.scale <= 8.0) {
        return Err(format!("--scale {} is out of range (0 to 8)", a.scale).into());
    }
    let (snap, code) = match &a.from {
        Some(path) => (Some(runner::load(path.as_os_str())?), 0),
        None => launch(&a.command, &a.launch, false)?,
    };
    let Some(snap) = snap else {
        return Ok(if code == 0 { 1 } else { code });
    };
    if a.from.is_some() {
        if let Some(path) = &a.launch.json {
            let raw = serde_json::to_string_pretty(&snap).map_err(|e| e.to_string())?;
            runner::save_json(path, &raw)?;
        }
    }
    if snap.segments.is_empty() {
        eprintln!("apex: the statistics list no segments: there is no heap to draw");
    }
    let svg = draw::svg(&snap);
    let svg_path = match (&a.svg, &a.png) {
        (None, None) => Some(PathBuf::from("heap.svg")),
        (s, _) => s.clone(),
    };
    eprint!("{}", summary::summary(&snap));
    if let Some(path) = &svg_path {
        write(path, svg.as_bytes())?;
        eprintln!(
            "apex: wrote {} ({} spans)",
            path.display(),
            span_count(&snap)
        );
    }
    if let Some(path) = &a.png {
        if !a.launch.quiet {
            eprintln!("apex: rendering {} ...", path.display());
        }
        let (data, w, h) = render::png(&svg, a.scale)?;
        write(path, &data)?;
        eprintln!("apex: wrote {} ({w}x{h} pixels)", path.display());
        if !render::has_fonts() {
            eprintln!(
                "apex: no fonts found, so the PNG has no text (install fonts-dejavu-core); \
                 the SVG has it"
            );
        }
    }
    Ok(code)
}

fn span_count(s: &Snapshot) -> usize {
    s.segments.iter().map(|g| g.spans.len()).sum()
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
