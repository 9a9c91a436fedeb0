//! GlobalAlloc fast-path micro-benchmarks.
//!
//! Each allocator is driven directly through the `GlobalAlloc` trait (the
//! process-wide global allocator is irrelevant here):
//! * `malloc_free/<alloc>/<size>`: one alloc + dealloc pair;
//! * `realloc_grow/<alloc>`: grow a buffer from 16 B to 1 MiB by doubling;
//! * `cross_thread_free/<alloc>`: this thread allocates a batch of 256
//!   64-byte blocks, another thread frees them (time per batch).
//!
//! Build with `--features mimalloc` (and `apexalloc` when available).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 5] = [16, 64, 256, 1024, 8192];
const BATCH: usize = 256;

/// Raw pointer wrapper so a batch can be sent to the freeing thread.
struct Batch(Vec<*mut u8>);
// SAFETY: the pointers are exclusively owned blocks handed over whole.
unsafe impl Send for Batch {}

fn allocators(mut f: impl FnMut(&'static str, &'static (dyn GlobalAlloc + Sync))) {
    static SYSTEM: System = System;
    f("system", &SYSTEM);
    #[cfg(feature = "mimalloc")]
    {
        static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;
        f("mimalloc", &MI);
    }
    #[cfg(feature = "apexalloc")]
    {
        static APEX: apexalloc::ApexAlloc = apexalloc::ApexAlloc;
        f("apexalloc", &APEX);
    }
}

fn malloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("malloc_free");
    allocators(|name, a| {
        for size in SIZES {
            let layout = Layout::from_size_align(size, 8).unwrap();
            g.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &layout| {
                b.iter(|| {
                    // SAFETY: layout has non-zero size; the block is freed
                    // with the same allocator and layout.
                    unsafe {
                        let p = a.alloc(layout);
                        assert!(!p.is_null());
                        p.write(1);
                        a.dealloc(black_box(p), layout);
                    }
                })
            });
        }
    });
    g.finish();
}

fn realloc_grow(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc_grow");
    allocators(|name, a| {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut size = 16usize;
                let mut layout = Layout::from_size_align(size, 8).unwrap();
                // SAFETY: every realloc passes the block's current layout
                // and the final dealloc its last one.
                unsafe {
                    let mut p = a.alloc(layout);
                    assert!(!p.is_null());
                    p.write(7);
                    while size < (1 << 20) {
                        size *= 2;
                        p = a.realloc(p, layout, size);
                        assert!(!p.is_null() && *p == 7);
                        *p.add(size - 1) = 1;
                        layout = Layout::from_size_align(size, 8).unwrap();
                    }
                    a.dealloc(black_box(p), layout);
                }
            })
        });
    });
    g.finish();
}

fn cross_thread_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread_free");
    let layout = Layout::from_size_align(64, 8).unwrap();
    allocators(|name, a| {
        let (to_freer, freer_rx) = mpsc::sync_channel::<Batch>(4);
        let (done_tx, done_rx) = mpsc::sync_channel::<()>(4);
        let freer = thread::spawn(move || {
            for batch in freer_rx {
                for p in batch.0 {
                    // SAFETY: allocated by `a` with `layout` on the
                    // benchmark thread and never used again there.
                    unsafe { a.dealloc(p, layout) };
                }
                done_tx.send(()).unwrap();
            }
        });
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut v = Vec::with_capacity(BATCH);
                    for _ in 0..BATCH {
                        // SAFETY: non-zero-size layout.
                        let p = unsafe { a.alloc(layout) };
                        assert!(!p.is_null());
                        v.push(p);
                    }
                    to_freer.send(Batch(v)).unwrap();
                    done_rx.recv().unwrap();
                }
                start.elapsed()
            })
        });
        drop(to_freer);
        freer.join().unwrap();
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = malloc_free, realloc_grow, cross_thread_free
}
criterion_main!(benches);
