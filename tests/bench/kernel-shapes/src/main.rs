//! Kernel-heap benchmark: ApexAlloc's kernel frontend against the arena
//! allocators kernels use, on talc's random-actions and heap-efficiency
//! shapes over one 128 MiB arena, plus a cross-CPU reuse probe and a
//! largest-block probe.
//!
//! `cargo run --release -- [--trials N] [--ms N | --count N] [--rounds N] [--threads 1,2,4] [--sizes 200,1000]
//! [--only a,b] [--skip-speed] [--skip-memory] [--out PREFIX]` (see `run.sh`), or
//! `-- --index-costs` for the cost of each CPU-index route. Writes a
//! Markdown report to stdout (and `PREFIX.md`), CSV rows to `PREFIX.csv`
//! and a chart to `PREFIX.svg`.

extern crate alloc;

mod allocators;
mod chart;
mod index_cost;
mod results;
mod rng;
mod shapes;
mod workload;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::time::Duration;

use allocators::{set_cpu, Arena, Named, ALL};
use results::{Memory, Speed};

const ARENA_LEN: usize = 128 << 20;
/// talc's max sizes for arena allocators.
const DEFAULT_SIZES: &[usize] = &[200, 1000, 3000, 10000, 30000];

struct Options {
    trials: usize,
    ms: u64,
    rounds: usize,
    threads: Vec<usize>,
    sizes: Vec<usize>,
    only: Option<Vec<String>>,
    /// A fixed number of actions per thread and cell instead of `ms`
    /// (for counting instructions under callgrind).
    count: Option<u64>,
    /// Run the memory shapes (`--skip-memory`: no).
    memory: bool,
    speed: bool,
    index_costs: bool,
    out: Option<String>,
}

fn parse() -> Options {
    let mut o = Options {
        trials: 5,
        ms: 200,
        rounds: 10,
        threads: vec![1, 2, 4],
        sizes: DEFAULT_SIZES.to_vec(),
        only: None,
        count: None,
        memory: true,
        speed: true,
        index_costs: false,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--trials" => o.trials = val().parse().expect("--trials N"),
            "--ms" => o.ms = val().parse().expect("--ms N"),
            "--count" => o.count = Some(val().parse().expect("--count N")),
            "--rounds" => o.rounds = val().parse().expect("--rounds N"),
            "--threads" => {
                o.threads = val()
                    .split(',')
                    .map(|t| t.parse().expect("--threads 1,2,4"))
                    .collect()
            }
            "--sizes" => {
                o.sizes = val()
                    .split(',')
                    .map(|t| t.parse().expect("--sizes 200,1000"))
                    .collect()
            }
            "--only" => o.only = Some(val().split(',').map(str::to_owned).collect()),
            "--skip-speed" => o.speed = false,
            "--skip-memory" => o.memory = false,
            "--index-costs" => o.index_costs = true,
            "--out" => o.out = Some(val()),
            _ => panic!("unknown argument {a}; see the source header for usage"),
        }
    }
    assert!(o.trials >= 1 && o.rounds >= 1);
    assert!(o.sizes.iter().all(|&s| s > 16), "--sizes above 16");
    assert!(o
        .threads
        .iter()
        .all(|&t| (1..=allocators::MAX_THREADS).contains(&t)));
    o
}

/// The one arena, aligned to its size (as a kernel's RAM block usually is)
/// and touched once so no trial pays for first-touch page faults.
fn arena() -> Arena {
    let l = Layout::from_size_align(ARENA_LEN, ARENA_LEN).unwrap();
    // SAFETY: a non-zero size; the block is never freed.
    let base = unsafe { System.alloc(l) };
    assert!(!base.is_null(), "no memory for the arena");
    for i in (0..ARENA_LEN).step_by(4096) {
        // SAFETY: inside the block.
        unsafe { base.add(i).write_volatile(0xab) };
    }
    Arena {
        base,
        len: ARENA_LEN,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One random-actions run of `threads` threads on a fresh instance.
fn run_actions(
    n: &Named,
    arena: Arena,
    threads: usize,
    max: usize,
    seed: u64,
    ms: u64,
    count: Option<u64>,
) -> shapes::Actions {
    let a = (n.build)(arena);
    let a: &(dyn GlobalAlloc + Sync) = &*a;
    let barrier = std::sync::Barrier::new(threads);
    let mut total = shapes::Actions::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    set_cpu(t);
                    barrier.wait();
                    let seed = seed * 64 + t as u64;
                    match count {
                        Some(n) => shapes::random_actions_counted(a, max, seed, n),
                        None => shapes::random_actions(a, max, seed, Duration::from_millis(ms)),
                    }
                })
            })
            .collect();
        for h in handles {
            total.add(&h.join().unwrap());
        }
    });
    total
}

/// Runs `f` on a new thread whose CPU index is `cpu`.
fn on_cpu<R: Send>(cpu: usize, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            set_cpu(cpu);
            f()
        })
        .join()
        .unwrap()
    })
}

fn main() {
    let o = parse();
    if o.index_costs {
        print!("{}", index_cost::report());
        return;
    }
    let selected: Vec<&Named> = ALL
        .iter()
        .filter(|n| {
            // A filter naming an allocator exactly selects it alone, any
            // other selects every name containing it.
            let matches = |x: &String| {
                n.name == x || (!ALL.iter().any(|m| m.name == x) && n.name.contains(x.as_str()))
            };
            o.only.as_ref().is_none_or(|only| only.iter().any(matches))
        })
        .collect();
    assert!(!selected.is_empty(), "--only matched no allocator");
    let arena = arena();
    let mut md = String::new();
    let mut csv = String::from("shape,threads,max_size,allocator,value,unit\n");
    let pct = |x: usize| x as f64 / ARENA_LEN as f64 * 100.0;
    writeln!(
        md,
        "Arena {} MiB; {} trials of {} ms per cell, interleaved, median; heap efficiency over {} rounds.\n",
        ARENA_LEN >> 20,
        o.trials,
        o.ms,
        o.rounds
    )
    .unwrap();

    let mut speed: Vec<Speed> = Vec::new();
    if o.speed {
        for &threads in &o.threads {
            // rates[allocator][size] over trials; move ratio likewise.
            let mut rates = vec![vec![Vec::new(); o.sizes.len()]; selected.len()];
            let mut moved = vec![vec![Vec::new(); o.sizes.len()]; selected.len()];
            for trial in 0..o.trials {
                for (si, &max) in o.sizes.iter().enumerate() {
                    for (ai, n) in selected.iter().enumerate() {
                        let seed = (trial * 100 + si) as u64;
                        let r = run_actions(n, arena, threads, max, seed, o.ms, o.count);
                        let rate = shapes::rate(&r);
                        eprintln!(
                            "{threads} thr, trial {trial}, max {max:>5}: {:<24} {:>7.2} M/CPU-s, {} failed",
                            n.name,
                            rate / 1e6,
                            r.failed
                        );
                        rates[ai][si].push(rate);
                        moved[ai][si].push(r.moved as f64 / r.reallocs.max(1) as f64 * 100.0);
                    }
                }
            }
            let med: Vec<Vec<f64>> = rates
                .iter_mut()
                .map(|r| r.iter_mut().map(|v| median(v)).collect())
                .collect();
            let mov: Vec<Vec<f64>> = moved
                .iter_mut()
                .map(|r| r.iter_mut().map(|v| median(v)).collect())
                .collect();
            speed.push(Speed {
                threads,
                rate: med,
                moved: mov,
            });
        }
        let talc = selected.iter().position(|n| n.name == "talc");
        for Speed {
            threads,
            rate: med,
            moved: mov,
        } in &speed
        {
            writeln!(md, "### Random actions, {threads} thread(s): M actions per CPU-second (ratio to talc)\n").unwrap();
            let head: Vec<String> = o.sizes.iter().map(|m| format!("{m} B")).collect();
            writeln!(md, "| allocator | {} | reallocs moved |", head.join(" | ")).unwrap();
            writeln!(md, "|---|{}---|", "---|".repeat(o.sizes.len())).unwrap();
            for (ai, n) in selected.iter().enumerate() {
                let cells: Vec<String> = (0..o.sizes.len())
                    .map(|si| {
                        let v = med[ai][si];
                        match talc {
                            Some(t) => format!("{:.1} ({:.2})", v / 1e6, v / med[t][si]),
                            None => format!("{:.1}", v / 1e6),
                        }
                    })
                    .collect();
                let mv: Vec<String> = mov[ai].iter().map(|m| format!("{m:.0}")).collect();
                writeln!(
                    md,
                    "| {} | {} | {}% |",
                    n.name,
                    cells.join(" | "),
                    mv.join("/")
                )
                .unwrap();
                for (si, &max) in o.sizes.iter().enumerate() {
                    writeln!(
                        csv,
                        "random-actions,{threads},{max},{},{:.0},actions/CPU-s",
                        n.name, med[ai][si]
                    )
                    .unwrap();
                }
            }
            writeln!(md).unwrap();
        }
    }

    let mut memory: Vec<Memory> = Vec::new();
    for n in selected.iter().filter(|_| o.memory) {
        eprintln!("memory probes: {}", n.name);
        let he = {
            let a = (n.build)(arena);
            on_cpu(0, || shapes::heap_efficiency(&*a, ARENA_LEN, o.rounds, 42))
        };
        let (first, second) = {
            let a = (n.build)(arena);
            let a: &(dyn GlobalAlloc + Sync) = &*a;
            let first = on_cpu(0, || {
                let live = shapes::fill(a, 1000);
                let b = shapes::bytes(&live);
                shapes::release(a, live);
                b
            });
            let second = on_cpu(1, || {
                let live = shapes::fill(a, 1000);
                let b = shapes::bytes(&live);
                shapes::release(a, live);
                b
            });
            (first, second)
        };
        let largest = on_cpu(0, || shapes::largest_block(&|| (n.build)(arena), ARENA_LEN));
        memory.push(Memory {
            name: n.name,
            efficiency: he,
            fill: pct(first),
            reuse: pct(second),
            largest: pct(largest),
        });
    }
    if o.memory {
        writeln!(md, "### Memory: % of the arena\n").unwrap();
        writeln!(md, "| allocator | heap efficiency | 1000 B fill, CPU 0 | same after CPU 0 freed all, CPU 1 | largest block |").unwrap();
        writeln!(md, "|---|---|---|---|---|").unwrap();
    }
    for Memory {
        name,
        efficiency: he,
        fill: first,
        reuse: second,
        largest,
    } in &memory
    {
        writeln!(
            md,
            "| {name} | {he:.1}% | {first:.1}% | {second:.1}% | {largest:.1}% |"
        )
        .unwrap();
        for (shape, v) in [
            ("heap-efficiency", he),
            ("fill-cpu0", first),
            ("cross-cpu-reuse", second),
            ("largest-block", largest),
        ] {
            writeln!(csv, "{shape},1,,{name},{v:.2},%").unwrap();
        }
    }
    print!("{md}");
    if let Some(out) = &o.out {
        std::fs::write(format!("{out}.md"), &md).expect("write the report");
        std::fs::write(format!("{out}.csv"), &csv).expect("write the CSV");
        let names: Vec<&str> = selected.iter().map(|n| n.name).collect();
        std::fs::write(
            format!("{out}.svg"),
            chart::svg(&names, &o.sizes, &speed, &memory),
        )
        .expect("write the chart");
    }
}
