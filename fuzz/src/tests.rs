//! The harness checked without libFuzzer: the seeds, the fatal path, the
//! reset between instances and the arena provider.

use std::sync::{Mutex, MutexGuard};

use apex_core::layout::SEGMENT_SIZE;
use apex_core::PageProvider;

use crate::arena::{Flavor, Setup, ARENA_SIZE, PROVIDER};
use crate::engine::{run, Mode, Outcome};

/// The provider, the `Global` slot and the segment map are per process:
/// tests take turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn seeds(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/");
    let mut v: Vec<_> = std::fs::read_dir(format!("{dir}{kind}"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    v.sort();
    assert!(v.len() >= 5, "seeds/{kind} is missing its seeds");
    v
}

#[test]
fn ops_seeds_complete() {
    let _s = serial();
    for (name, data) in seeds("ops") {
        assert_eq!(run(&data, Mode::Ops), Outcome::Completed, "seed {name}");
        // The same input again, on a fresh instance, ends the same way.
        assert_eq!(
            run(&data, Mode::Ops),
            Outcome::Completed,
            "seed {name}, again"
        );
    }
}

#[test]
fn corrupt_seeds_run_and_misuse_is_caught() {
    let _s = serial();
    for (name, data) in seeds("corrupt") {
        let outcome = run(&data, Mode::Corrupt);
        if name.starts_with("ops-") {
            assert_eq!(outcome, Outcome::Completed, "seed {name}");
        }
        if name.starts_with("double-free") {
            match &outcome {
                Outcome::Fatal(m) => assert!(m.contains("double free"), "seed {name}: {m}"),
                other => panic!("seed {name}: double free not caught: {other:?}"),
            }
        }
        if name == "uaf-link" {
            // Caught when the link is followed, or by the heap's own check.
            match &outcome {
                Outcome::Fatal(m) => assert!(m.starts_with("apexalloc: fatal: "), "{m}"),
                Outcome::Detected(m) => assert!(m.contains("link"), "{m}"),
                other => panic!("overwritten link not caught: {other:?}"),
            }
        }
    }
}

/// After an instance died in the fatal path (locks held, segments still in
/// the global segment map), the next input starts from a clean slate.
#[test]
fn a_fatal_instance_leaves_nothing_behind() {
    let _s = serial();
    let double_free = seeds("corrupt")
        .into_iter()
        .find(|(n, _)| n == "double-free")
        .unwrap()
        .1;
    let (base, len) = PROVIDER.arena();
    for _ in 0..3 {
        assert!(matches!(
            run(&double_free, Mode::Corrupt),
            Outcome::Fatal(_)
        ));
        assert!(PROVIDER.bytes_reserved() > 0);
        for (name, data) in seeds("ops") {
            assert_eq!(run(&data, Mode::Ops), Outcome::Completed, "seed {name}");
        }
    }
    // A last reset forgets every segment of the arena.
    crate::api::Instance::start(&crate::engine::decode_config([0; 4]));
    let mut unit = base;
    while unit < base + len {
        assert!(
            !crate::api::Instance::is_segment(unit),
            "segment {unit:#x} left"
        );
        unit += SEGMENT_SIZE;
    }
}

#[test]
fn arena_reservations_are_aligned_disjoint_and_bounded() {
    let _s = serial();
    let setup = |flavor, budget| Setup {
        flavor,
        clock: false,
        budget,
        seed: 1,
    };
    PROVIDER.reset(setup(Flavor::Hosted, 90 << 20));
    let a = PROVIDER
        .reserve(SEGMENT_SIZE, SEGMENT_SIZE)
        .unwrap()
        .as_ptr() as usize;
    let b = PROVIDER.reserve(64 << 10, 64 << 10).unwrap().as_ptr() as usize;
    let c = PROVIDER
        .reserve(SEGMENT_SIZE, SEGMENT_SIZE)
        .unwrap()
        .as_ptr() as usize;
    assert_eq!(a % SEGMENT_SIZE, 0);
    assert_eq!(b % (64 << 10), 0);
    assert_eq!(c % SEGMENT_SIZE, 0);
    assert!(b >= a + SEGMENT_SIZE || b + (64 << 10) <= a);
    assert!(c >= b + (64 << 10) && c != a);
    assert!(PROVIDER.is_open(a, SEGMENT_SIZE));
    assert!(
        !PROVIDER.is_open(b + (64 << 10), 4096),
        "unreserved memory is closed"
    );
    // 32 + 32 + 0.06 MiB reserved: another segment exceeds the budget.
    assert!(PROVIDER.reserve(SEGMENT_SIZE, SEGMENT_SIZE).is_none());
    assert_eq!(PROVIDER.refusals(), 1);
    // SAFETY: `a` is a whole reservation; nothing uses it.
    unsafe { PROVIDER.release(std::ptr::NonNull::new(a as *mut u8).unwrap(), SEGMENT_SIZE) };
    assert!(!PROVIDER.is_open(a, 4096));
    // The freed range is found again.
    let d = PROVIDER
        .reserve(SEGMENT_SIZE, SEGMENT_SIZE)
        .unwrap()
        .as_ptr() as usize;
    assert_eq!(d, a);
    // SAFETY: `d` is reserved and accessible.
    let first = unsafe { *(d as *const u8) };
    assert_eq!(first, 0, "a reused range reads as zero");

    // Strict: reserved memory is accessible only once committed.
    PROVIDER.reset(setup(Flavor::Strict, ARENA_SIZE));
    let s = PROVIDER.reserve(SEGMENT_SIZE, SEGMENT_SIZE).unwrap();
    assert!(!PROVIDER.is_open(s.as_ptr() as usize, 4096));
    // SAFETY: the first page of a live reservation.
    unsafe {
        assert!(PROVIDER.commit(s, 4096));
        assert!(PROVIDER.is_open(s.as_ptr() as usize, 4096));
        PROVIDER.decommit(s, 4096);
    }
    assert!(!PROVIDER.is_open(s.as_ptr() as usize, 4096));
    PROVIDER.reset(setup(Flavor::Hosted, ARENA_SIZE));
    assert_eq!(PROVIDER.bytes_reserved(), 0);
}

/// The content checks see a changed byte anywhere they sample, and the
/// samples cover the link words and the last byte of every size.
#[test]
fn model_checks_catch_changed_bytes() {
    use crate::model::{positions, Block, Model};
    for size in [1usize, 15, 16, 17, 100, 4096, 5000, 70_000] {
        let pos: Vec<usize> = positions(size).collect();
        assert!(pos.iter().all(|&i| i < size));
        assert!((0..size.min(16)).all(|i| pos.contains(&i)));
        assert!(pos.contains(&(size - 1)));
        let mut buf = vec![0u8; size + 16];
        let b = Block {
            size,
            usable: size + 16,
            align: 16,
            seed: 0x5a,
            heap: 0,
            tainted: false,
        };
        // SAFETY: `buf` has `usable` bytes.
        unsafe {
            Model::fill(buf.as_mut_ptr(), &b);
            Model::check_bytes(buf.as_mut_ptr(), &b, usize::MAX);
        }
        for &i in pos.iter().step_by(7).chain([size + 15].iter()) {
            buf[i] ^= 1;
            let p = buf.as_mut_ptr() as usize;
            // SAFETY: as above.
            let r = std::panic::catch_unwind(|| unsafe {
                Model::check_bytes(p as *mut u8, &b, usize::MAX)
            });
            assert!(r.is_err(), "size {size}: byte {i} changed unnoticed");
            buf[i] ^= 1;
        }
        // A tainted block is no longer checked.
        buf[0] ^= 1;
        // SAFETY: as above.
        unsafe { Model::check_bytes(buf.as_mut_ptr(), &Block { tainted: true, ..b }, usize::MAX) };
    }
}
