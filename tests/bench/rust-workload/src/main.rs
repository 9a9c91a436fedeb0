//! Allocation-heavy multi-threaded Rust workload.
//!
//! Usage: `rust-alloc [threads] [scale]`
//!
//! Every worker repeatedly builds a `BTreeMap<u64, String>`, a
//! `Vec<String>` of formatted records and a `HashMap` index over them,
//! sorts and filters them, verifies the results against closed-form
//! values and drops everything.  Part of each round's data is sent to the
//! next worker over a channel and dropped there, so some memory is freed
//! by a thread other than the one that allocated it.  Exits with status 1
//! if any check fails.

use std::collections::{BTreeMap, HashMap};
use std::process::exit;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

#[cfg(all(feature = "global-mimalloc", feature = "global-apexalloc"))]
compile_error!("choose at most one of the global-* features");

#[cfg(feature = "global-mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "global-apexalloc")]
#[global_allocator]
static GLOBAL: apexalloc::ApexAlloc = apexalloc::ApexAlloc;

#[cfg(not(any(feature = "global-mimalloc", feature = "global-apexalloc")))]
#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

const ALLOCATOR: &str = if cfg!(feature = "global-apexalloc") {
    "apexalloc"
} else if cfg!(feature = "global-mimalloc") {
    "mimalloc"
} else {
    "system"
};

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    exit(1);
}

/// Small deterministic generator so the workload needs no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One round of work; returns data that the caller hands to another thread.
fn round(worker: usize, round: usize, n: usize) -> Vec<String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((worker as u64) << 32) ^ round as u64 | 1);

    // BTreeMap keyed by 0..n, inserted in random order.
    let mut map = BTreeMap::new();
    let mut keys: Vec<u64> = (0..n as u64).collect();
    for i in (1..keys.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        keys.swap(i, j);
    }
    for &k in &keys {
        map.insert(k, format!("value-{k}-{}", "x".repeat((k % 32) as usize)));
    }
    if map.len() != n {
        fail("BTreeMap size mismatch");
    }
    let key_sum: u64 = map.keys().sum();
    if key_sum != (n as u64) * (n as u64 - 1) / 2 {
        fail("BTreeMap key sum mismatch");
    }
    // Remove every third key, then check what is left.
    for k in (0..n as u64).step_by(3) {
        if map.remove(&k).is_none() {
            fail("BTreeMap lost a key");
        }
    }
    if map.len() != n - (n + 2) / 3 {
        fail("BTreeMap size after removal mismatch");
    }
    for (k, v) in map.range(0..64) {
        if !v.starts_with(&format!("value-{k}-")) {
            fail("BTreeMap value corrupted");
        }
    }

    // Vec<String> records, a HashMap index, sorting.
    let mut records: Vec<String> =
        (0..n).map(|i| format!("{:08}:{}", rng.next() % 1_000_000, i)).collect();
    let index: HashMap<&str, usize> =
        records.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    if index.len() != n {
        fail("HashMap size mismatch");
    }
    for (i, s) in records.iter().enumerate().step_by(97) {
        if index[s.as_str()] != i {
            fail("HashMap lookup mismatch");
        }
    }
    drop(index);
    records.sort_unstable();
    if records.windows(2).any(|w| w[0] > w[1]) {
        fail("sort order broken");
    }
    let tail_sum: usize = records
        .iter()
        .map(|s| s.rsplit(':').next().unwrap().parse::<usize>().unwrap())
        .sum();
    if tail_sum != n * (n - 1) / 2 {
        fail("record payload sum mismatch");
    }

    // Hand every other record to the next worker.
    records.into_iter().step_by(2).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2).max(1);
    let scale: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let rounds = ((80.0 * scale).round() as usize).max(1);
    let n = 20_000;

    let start = Instant::now();
    // Ring of channels: worker i sends to worker (i + 1) % threads.
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::channel::<Vec<String>>()).unzip();
    let mut handles = Vec::new();
    for (w, rx) in receivers.into_iter().enumerate() {
        let tx = senders[(w + 1) % threads].clone();
        handles.push(thread::spawn(move || {
            let mut received = 0usize;
            for r in 0..rounds {
                let batch = round(w, r, n);
                tx.send(batch).expect("peer exited early");
                // Drop whatever has arrived from the previous worker.
                while let Ok(b) = rx.try_recv() {
                    received += b.len();
                }
            }
            drop(tx);
            for b in rx.iter() {
                received += b.len();
            }
            received
        }));
    }
    drop(senders);
    let received: usize = handles.into_iter().map(|h| h.join().expect("worker panicked")).sum();
    if received != threads * rounds * n.div_ceil(2) {
        fail("cross-thread record count mismatch");
    }
    println!(
        "rust-alloc ({ALLOCATOR}): {threads} threads x {rounds} rounds, {:.3} s",
        start.elapsed().as_secs_f64()
    );
}
