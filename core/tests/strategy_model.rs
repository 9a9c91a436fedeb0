//! The classic engines against a shadow model: random allocations, frees,
//! reallocations and aligned allocations, every block's contents checked,
//! blocks never overlapping, and `verify()` after every step.

mod strategy_common;

use std::collections::BTreeMap;

use apex_core::strategy::classic::{Classic, Kind};
use strategy_common::{BrkSim, Chunks, XorShift};

struct Live {
    size: usize,
    align: usize,
    fill: u8,
}

fn check(p: usize, l: &Live) {
    // SAFETY: a live block of at least `l.size` bytes.
    let s = unsafe { std::slice::from_raw_parts(p as *const u8, l.size) };
    if let Some(i) = s.iter().position(|&b| b != l.fill) {
        panic!(
            "block {p:#x} byte {i} changed ({:#x} != {:#x})",
            s[i], l.fill
        );
    }
}

fn size(rng: &mut XorShift) -> usize {
    match rng.below(100) {
        0..=69 => 1 + rng.below(128),
        70..=94 => 1 + rng.below(4096),
        95..=98 => 1 + rng.below(64 << 10),
        _ => 1 + rng.below(300 << 10),
    }
}

fn run_model<S: apex_core::strategy::Source>(heap: &mut Classic<S>, seed: u64, steps: usize) {
    let mut rng = XorShift::new(seed);
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut fill = 1u8;
    for step in 0..steps {
        fill = fill.wrapping_add(1).max(1);
        let op = rng.below(100);
        if live.len() < 8 || (op < 45 && live.len() < 300) {
            let (n, align) = if op.is_multiple_of(7) && !op.is_multiple_of(11) {
                (size(&mut rng), 32 << rng.below(8))
            } else {
                (size(&mut rng), 16)
            };
            let p = if op.is_multiple_of(11) {
                heap.zalloc(n)
            } else {
                heap.alloc_aligned(n, align)
            } as usize;
            assert_ne!(p, 0, "step {step}: allocation of {n} failed");
            assert_eq!(p % align, 0, "step {step}: {p:#x} not aligned to {align}");
            // SAFETY: a live block of this heap.
            assert!(unsafe { heap.usable(p as *const u8) } >= n);
            if op.is_multiple_of(11) {
                check(
                    p,
                    &Live {
                        size: n,
                        align,
                        fill: 0,
                    },
                );
            }
            // SAFETY: a fresh block of `n` bytes.
            unsafe { std::ptr::write_bytes(p as *mut u8, fill, n) };
            live.insert(
                p,
                Live {
                    size: n,
                    align,
                    fill,
                },
            );
        } else if op < 80 {
            let k = *live.keys().nth(rng.below(live.len())).unwrap();
            let l = live.remove(&k).unwrap();
            check(k, &l);
            // SAFETY: a live block, freed once.
            unsafe { heap.free(k as *mut u8) };
        } else {
            let k = *live.keys().nth(rng.below(live.len())).unwrap();
            let l = live.remove(&k).unwrap();
            check(k, &l);
            let n = size(&mut rng);
            // SAFETY: a live block allocated with `l.align`.
            let q = unsafe { heap.realloc(k as *mut u8, l.align, n) } as usize;
            assert_ne!(q, 0, "step {step}: realloc to {n} failed");
            assert_eq!(q % l.align, 0);
            check(
                q,
                &Live {
                    size: l.size.min(n),
                    ..l
                },
            );
            // SAFETY: a live block of at least `n` bytes.
            unsafe { std::ptr::write_bytes(q as *mut u8, fill, n) };
            live.insert(
                q,
                Live {
                    size: n,
                    align: l.align,
                    fill,
                },
            );
        }
        // No two live blocks overlap.
        let mut end = 0;
        for (&p, l) in &live {
            assert!(
                p >= end,
                "step {step}: block {p:#x} overlaps the one before"
            );
            end = p + l.size;
        }
        let sum = heap
            .verify()
            .unwrap_or_else(|e| panic!("step {step}: verify: {e:?}"));
        assert_eq!(sum.used_blocks, live.len(), "step {step}");
        let st = heap.stats();
        assert_eq!(st.live, live.len());
        assert!(st.in_use >= live.values().map(|l| l.size).sum::<usize>());
        assert!(sum.footprint <= st.footprint);
    }
    for (p, l) in std::mem::take(&mut live) {
        check(p, &l);
        // SAFETY: a live block, freed once.
        unsafe { heap.free(p as *mut u8) };
    }
    let sum = heap.verify().unwrap();
    assert_eq!(sum.used_blocks, 0);
    assert_eq!(heap.stats().in_use, 0);
}

fn model_brk(kind: Kind) {
    for seed in [1, 2, 3] {
        let mut heap = Classic::new(kind, BrkSim::new(256 << 20));
        run_model(&mut heap, seed * 7919 + kind as u64, 2500);
        // Everything freed: the break is back near its start (free-list
        // engines keep a small rest, the buddy its first top block).
        let left = heap.stats().footprint;
        assert!(left <= 2 << 20, "{kind:?}: {left} bytes still held");
    }
}

fn model_chunks(kind: Kind) {
    let mut heap = Classic::new(kind, Chunks::new(1 << 20));
    run_model(&mut heap, 99 + kind as u64, 1500);
}

#[test]
fn first_fit_model() {
    model_brk(Kind::FirstFit);
    model_chunks(Kind::FirstFit);
}

#[test]
fn next_fit_model() {
    model_brk(Kind::NextFit);
    model_chunks(Kind::NextFit);
}

#[test]
fn best_fit_model() {
    model_brk(Kind::BestFit);
    model_chunks(Kind::BestFit);
}

#[test]
fn worst_fit_model() {
    model_brk(Kind::WorstFit);
    model_chunks(Kind::WorstFit);
}

#[test]
fn seglist_model() {
    model_brk(Kind::Seglist);
    model_chunks(Kind::Seglist);
}

#[test]
fn buddy_model() {
    model_brk(Kind::Buddy);
    model_chunks(Kind::Buddy);
}

#[test]
fn names_round_trip() {
    for k in Kind::ALL {
        assert_eq!(Kind::parse(k.name().as_bytes()), Some(k));
    }
    assert_eq!(Kind::parse(b"apex"), None);
    assert_eq!(Kind::parse(b"bogus"), None);
}
