//! The typed Rust side of introspection, in a program whose global
//! allocator is ApexAlloc: `apexalloc::ctl` by name, the thread and global
//! statistics, the heap walk, the per-thread listing and the JSON document.
//!
//! One test function runs the checks in order, so no other test thread
//! allocates while exact figures are compared.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

use apexalloc::ctl::{self, CtlError, Kind, Value};
use apexalloc::options::OPTIONS;
use apexalloc::{SpanUse, WalkItem};

#[global_allocator]
static GLOBAL: apexalloc::ApexAlloc = apexalloc::ApexAlloc;

/// The class size serving a request of `size` bytes, from the ctl table.
fn class_of(size: usize) -> (usize, usize) {
    let Ok(Value::Size(n)) = ctl::get("stats.size_classes.count") else {
        panic!("no class count");
    };
    (0..n)
        .map(|c| {
            let Ok(Value::Size(s)) = ctl::get(&format!("stats.size_classes.{c}.size")) else {
                panic!("class {c}");
            };
            (c, s)
        })
        .find(|&(_, s)| s >= size)
        .expect("a class")
}

fn size(name: &str) -> usize {
    match ctl::get(name) {
        Ok(Value::Size(v)) => v,
        other => panic!("{name}: {other:?}"),
    }
}

fn every_name_reads_as_its_kind() {
    let mut names = Vec::new();
    ctl::for_each_name(&mut |n| names.push(n.to_string()));
    assert!(names.len() > 400, "{} names", names.len());
    let unique: BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "names are unique");
    for n in &names {
        let kind = ctl::kind(n).unwrap_or_else(|e| panic!("{n}: {e:?}"));
        match kind {
            Kind::Action => {
                assert_eq!(ctl::get(n), Err(CtlError::Denied), "{n}");
                assert_eq!(ctl::run(n), Ok(()), "{n}");
            }
            k => {
                let v = ctl::get(n).unwrap_or_else(|e| panic!("{n}: {e:?}"));
                assert_eq!(v.kind(), k, "{n}");
                assert_eq!(ctl::run(n), Err(CtlError::Denied), "{n}");
            }
        }
    }
    // Every listed option has its `opt.` name.
    for o in OPTIONS.iter().filter(|o| o.listed) {
        let name = format!("opt.{}", o.name.trim_start_matches("APEX_").to_lowercase());
        assert!(names.contains(&name), "{name} for {}", o.name);
    }
    // Errors.
    for bad in [
        "",
        "stats",
        "stats.bogus",
        "opt.APEX_THP",
        "stats.size_classes.104.size",
    ] {
        assert_eq!(ctl::get(bad), Err(CtlError::NotFound), "{bad:?}");
    }
    assert_eq!(
        ctl::set("stats.allocated", Value::Size(1)),
        Err(CtlError::Denied)
    );
    assert_eq!(
        ctl::set("opt.purge_delay_ms", Value::Size(1)),
        Err(CtlError::Invalid),
        "wrong type"
    );
    assert_eq!(
        ctl::set("opt.decommit", Value::Str(c"sometimes")),
        Err(CtlError::Invalid)
    );
    // A round trip.
    let Ok(Value::U64(old)) = ctl::get("opt.purge_delay_ms") else {
        panic!()
    };
    ctl::set("opt.purge_delay_ms", Value::U64(old + 7)).unwrap();
    assert_eq!(ctl::get("opt.purge_delay_ms"), Ok(Value::U64(old + 7)));
    ctl::set("opt.purge_delay_ms", Value::U64(old)).unwrap();
    let Ok(Value::Str(v)) = ctl::get("version") else {
        panic!()
    };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// Other threads of the test harness may allocate a little meanwhile:
/// global figures are checked to this slack, the thread's own exactly.
const SLACK_BLOCKS: u64 = 32;
const SLACK_BYTES: u64 = 64 << 10;

fn stats_follow_allocations() {
    let (c, csize) = class_of(200);
    let before = apexalloc::census();
    let t0 = apexalloc::thread_stats();
    let boxes: Vec<Box<[u8; 200]>> = (0..3000).map(|i| Box::new([i as u8; 200])).collect();
    let big = vec![7u8; 40 << 20];
    let after = apexalloc::census();
    let t1 = apexalloc::thread_stats();
    // SAFETY: live blocks of this allocator.
    let (vec_bytes, big_bytes) = unsafe {
        (
            apexalloc::usable_size(boxes.as_ptr().cast()),
            apexalloc::usable_size(big.as_ptr()),
        )
    };
    assert!(big_bytes >= 40 << 20);
    // This thread's own counts: exact. (A thread may free more than it
    // allocated, others' blocks: hence the wrapping.)
    let net = |t: &apexalloc::ThreadStats| t.bytes_allocated.wrapping_sub(t.bytes_freed);
    let live = |t: &apexalloc::ThreadStats| t.mallocs.wrapping_sub(t.frees);
    let expect = 3000 * csize as u64 + (vec_bytes + big_bytes) as u64;
    assert_eq!(net(&t1).wrapping_sub(net(&t0)), expect);
    assert_eq!(live(&t1).wrapping_sub(live(&t0)), 3002);
    // The totals and the class.
    let k0 = before.classes[c].active_blocks;
    let k1 = after.classes[c].active_blocks;
    assert!(
        k1 - k0 >= 3000 && k1 - k0 <= 3000 + SLACK_BLOCKS,
        "class {c}: {k0} -> {k1}"
    );
    assert_eq!(after.classes[c].allocated, k1 * csize as u64);
    assert_eq!(after.totals.huge_blocks, before.totals.huge_blocks + 1);
    let grew = after.totals.allocated.wrapping_sub(before.totals.allocated);
    assert!(grew.abs_diff(expect) <= SLACK_BYTES, "{grew} vs {expect}");
    let blocks = after
        .totals
        .blocks_active
        .wrapping_sub(before.totals.blocks_active);
    assert!(blocks.abs_diff(3002) <= SLACK_BLOCKS, "{blocks}");
    assert!(after.totals.ops.mallocs >= t1.mallocs);
    // The same figures by name.
    let by_name = size("stats.allocated") as u64;
    assert!(by_name.abs_diff(after.totals.allocated) <= SLACK_BYTES);
    let by_name = size(&format!("stats.size_classes.{c}.active_blocks")) as u64;
    assert!(by_name.abs_diff(k1) <= SLACK_BLOCKS);

    // The walk finds every box in a slab of its class, and the big block.
    let mut spans = Vec::new();
    let mut segments = 0;
    apexalloc::heap_walk(|item| match item {
        WalkItem::Segment(_) => segments += 1,
        WalkItem::Span(s) => spans.push(*s),
    });
    assert_eq!(
        segments as u64,
        after.totals.segments + after.totals.huge_blocks
    );
    for b in boxes.iter().step_by(50) {
        let a = &**b as *const [u8; 200] as usize;
        let s = spans
            .iter()
            .find(|s| (s.addr..s.addr + s.len).contains(&a))
            .expect("box in a span");
        assert_eq!((s.kind, s.class, s.block_size), (SpanUse::Slab, c, csize));
    }
    let a = big.as_ptr() as usize;
    assert!(spans
        .iter()
        .any(|s| s.kind == SpanUse::Huge && s.addr == a && s.len >= 40 << 20));
    drop(spans);
    drop(boxes);
    drop(big);
    let t2 = apexalloc::thread_stats();
    assert_eq!(net(&t2), net(&t0));
    let end = apexalloc::census();
    assert!(end.classes[c].active_blocks.abs_diff(k0) <= SLACK_BLOCKS);
    assert_eq!(end.totals.huge_blocks, before.totals.huge_blocks);
}

fn threads_are_listed_with_their_counts() {
    let barrier = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let first = apexalloc::thread_stats();
                let v: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
                let mine = apexalloc::thread_stats();
                let live = |t: &apexalloc::ThreadStats| t.mallocs.wrapping_sub(t.frees);
                // The boxes and the vector.
                assert_eq!(live(&mine).wrapping_sub(live(&first)), 1001);
                barrier.wait(); // the main thread looks
                barrier.wait();
                drop(v);
                (i, tid, mine)
            })
        })
        .collect();
    barrier.wait();
    let mut listed = Vec::new();
    apexalloc::for_each_thread(|t| listed.push(*t));
    barrier.wait();
    for w in workers {
        let (_, tid, mine) = w.join().unwrap();
        let t = listed
            .iter()
            .find(|t| t.tid == tid)
            .unwrap_or_else(|| panic!("thread {tid} not listed: {listed:?}"));
        assert_eq!(t.stats, mine, "the thread's own counts, read from outside");
    }
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    assert!(listed.iter().any(|t| t.tid == me));
}

fn json_document_is_complete() {
    let mut doc = Vec::new();
    apexalloc::stats_json(&mut |b| doc.extend_from_slice(b));
    let text = String::from_utf8(doc).unwrap();
    assert!(text.starts_with("{\"apexalloc\": \""), "{}", &text[..80]);
    assert!(text.ends_with("]}\n"));
    for key in [
        "\"totals\"",
        "\"classes\"",
        "\"threads\"",
        "\"segments\"",
        "\"spans\"",
    ] {
        assert!(text.contains(key), "{key}");
    }
    assert_eq!(text.matches("{\"class\": ").count(), 104);
    let opens = text.matches(['{', '[']).count();
    let closes = text.matches(['}', ']']).count();
    assert_eq!(opens, closes, "balanced");
}

#[test]
fn introspection_through_the_rust_api() {
    every_name_reads_as_its_kind();
    stats_follow_allocations();
    threads_are_listed_with_their_counts();
    json_document_is_complete();
}
