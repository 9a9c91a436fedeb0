//! The heap walk and the statistics computed from it, against a shadow
//! model of what the test allocated: exact at quiescence on one heap and on
//! several heaps on several threads (with blocks freed by other threads and
//! heaps that went away), and safe while other threads allocate, free and
//! release segments under a walker's feet.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use apex_core::harden::Mitigations;
use apex_core::introspect::{
    census, for_each_heap, span_of, Census, SpanUse, ThreadStats, WalkItem,
};
use apex_core::layout::{LARGE_MAX, MAX_CLASS_SIZE, SEGMENT_SIZE, SLICE_SIZE};
use apex_core::size_class::{class_of, class_size, NUM_CLASSES};
use apex_core::{snapshot, usable_size, Global, Heap};
use common::{instance, HeapBox, Rng};

/// What the program holds, as the test counts it.
#[derive(Default, Clone, Debug)]
struct Model {
    /// Live small blocks per class.
    class_blocks: Vec<u64>,
    /// Live large and huge blocks and their bytes.
    large: u64,
    large_bytes: u64,
    huge: u64,
    huge_bytes: u64,
    /// Cumulative operations.
    mallocs: u64,
    frees: u64,
    bytes_allocated: u64,
    bytes_freed: u64,
    remote_frees: u64,
}

/// Where a block of `size` bytes lives.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Where {
    Class(usize),
    Large,
    Huge,
}

fn where_of(size: usize) -> Where {
    if size <= MAX_CLASS_SIZE {
        Where::Class(class_of(size))
    } else if size <= LARGE_MAX {
        Where::Large
    } else {
        Where::Huge
    }
}

impl Model {
    fn new() -> Self {
        Model {
            class_blocks: vec![0; NUM_CLASSES],
            ..Default::default()
        }
    }

    /// The usable bytes of a block: its class size, or (large and huge)
    /// what the allocator says.
    fn bytes(size: usize, p: *mut u8) -> u64 {
        match where_of(size) {
            Where::Class(c) => class_size(c) as u64,
            // SAFETY: a live block.
            _ => unsafe { usable_size(p) as u64 },
        }
    }

    fn malloc(&mut self, size: usize, p: *mut u8) {
        let b = Self::bytes(size, p);
        match where_of(size) {
            Where::Class(c) => self.class_blocks[c] += 1,
            Where::Large => {
                self.large += 1;
                self.large_bytes += b;
            }
            Where::Huge => {
                self.huge += 1;
                self.huge_bytes += b;
            }
        }
        self.mallocs += 1;
        self.bytes_allocated += b;
    }

    /// Called before the block is freed (its usable size is read).
    fn free(&mut self, size: usize, p: *mut u8, remote: bool) {
        let b = Self::bytes(size, p);
        match where_of(size) {
            // Wrapping: a thread's model goes below zero when it frees
            // other threads' blocks.
            Where::Class(c) => self.class_blocks[c] = self.class_blocks[c].wrapping_sub(1),
            Where::Large => {
                self.large = self.large.wrapping_sub(1);
                self.large_bytes = self.large_bytes.wrapping_sub(b);
            }
            Where::Huge => {
                self.huge = self.huge.wrapping_sub(1);
                self.huge_bytes = self.huge_bytes.wrapping_sub(b);
            }
        }
        self.frees += 1;
        self.bytes_freed += b;
        // A huge block has no owner to send it back to.
        if remote && where_of(size) != Where::Huge {
            self.remote_frees += 1;
        }
    }

    fn merge(&mut self, o: &Model) {
        for c in 0..NUM_CLASSES {
            self.class_blocks[c] = self.class_blocks[c].wrapping_add(o.class_blocks[c]);
        }
        self.large = self.large.wrapping_add(o.large);
        self.large_bytes = self.large_bytes.wrapping_add(o.large_bytes);
        self.huge = self.huge.wrapping_add(o.huge);
        self.huge_bytes = self.huge_bytes.wrapping_add(o.huge_bytes);
        self.mallocs += o.mallocs;
        self.frees += o.frees;
        self.bytes_allocated += o.bytes_allocated;
        self.bytes_freed += o.bytes_freed;
        self.remote_frees += o.remote_frees;
    }

    fn allocated(&self) -> u64 {
        let small = (0..NUM_CLASSES).fold(0u64, |a, c| {
            a.wrapping_add(self.class_blocks[c].wrapping_mul(class_size(c) as u64))
        });
        small
            .wrapping_add(self.large_bytes)
            .wrapping_add(self.huge_bytes)
    }

    fn blocks(&self) -> u64 {
        let small = self
            .class_blocks
            .iter()
            .fold(0u64, |a, &b| a.wrapping_add(b));
        small.wrapping_add(self.large).wrapping_add(self.huge)
    }
}

/// Checks operation counts against a model's. Small blocks are counted
/// in batches (see `apex_core::stats`): a block freed by its own heap
/// counts as neither allocated nor freed until the heap collects it, and a
/// slab that dies counts its never-used blocks as both. So mallocs and
/// frees each differ from the model's by the same number of blocks (and
/// bytes), while their differences and the remote frees are exact.
fn check_ops(t: &ThreadStats, m: &Model, what: &str) {
    assert_eq!(
        t.mallocs.wrapping_sub(t.frees),
        m.mallocs.wrapping_sub(m.frees),
        "{what}: mallocs - frees: {t:?}"
    );
    assert_eq!(
        t.bytes_allocated.wrapping_sub(t.bytes_freed),
        m.bytes_allocated.wrapping_sub(m.bytes_freed),
        "{what}: net bytes"
    );
    assert_eq!(t.remote_frees, m.remote_frees, "{what}: remote frees");
    assert_eq!(t.cache_hits + t.cache_misses, t.mallocs.max(t.cache_misses));
}

/// Checks a census against the model of everything live. `collected`:
/// every block freed by another thread has been taken back by its owner
/// (or nothing was freed remotely), so the walk's own counts are exact.
fn check_census(g: &Global, m: &Model, collected: bool, what: &str) -> Census {
    let c = census(g);
    for k in 0..NUM_CLASSES {
        assert_eq!(
            c.classes[k].active_blocks,
            m.class_blocks[k],
            "{what}: class {k} ({} B) live blocks",
            class_size(k)
        );
        assert_eq!(
            c.classes[k].allocated,
            m.class_blocks[k] * class_size(k) as u64,
            "{what}: class {k} bytes"
        );
    }
    let t = &c.totals;
    assert_eq!(t.allocated, m.allocated(), "{what}: allocated");
    assert_eq!(t.blocks_active, m.blocks(), "{what}: live blocks");
    check_ops(&t.ops, m, what);
    assert_eq!(t.huge_blocks, m.huge, "{what}: huge blocks");
    if collected {
        assert_eq!(t.large_blocks, m.large, "{what}: large blocks");
    } else {
        assert!(t.large_blocks >= m.large, "{what}: large blocks");
    }
    // The counters the text report uses agree.
    let s = snapshot(g);
    assert_eq!(s.allocated, t.allocated, "{what}: snapshot allocated");
    assert_eq!((s.mallocs, s.frees), (t.ops.mallocs, t.ops.frees), "{what}");
    assert_eq!(s.segments as u64, t.segments, "{what}: segments");
    assert_eq!(s.huge_live as u64, t.huge_blocks, "{what}: huge");
    assert!(t.active >= t.allocated, "{what}: active below allocated");
    assert!(t.mapped >= t.active, "{what}: mapped below active");
    let f = t.fragmentation_pct();
    assert!((0.0..=100.0).contains(&f), "{what}: fragmentation {f}");
    c
}

/// Walks and checks the structure: each segment once, spans
/// tiling each normal segment from the header to the end, counts and
/// the running `active` counter consistent. Returns the slabs' `used`
/// per class.
fn check_walk(g: &Global, c: &Census, what: &str) -> Vec<u64> {
    let mut used = vec![0u64; NUM_CLASSES];
    let mut segs = 0u64;
    let mut huge = 0u64;
    let mut last_base = 0usize;
    let mut seen = std::collections::BTreeSet::new();
    let mut next_span = 0usize;
    let mut seg_end = 0usize;
    let mut cur_huge = false;
    let mut huge_slack = 0u64;
    let mut active = 0u64;
    g.walk(&mut |item| match *item {
        WalkItem::Segment(s) => {
            if !cur_huge && segs + huge > 0 {
                assert_eq!(next_span, seg_end, "{what}: spans do not reach the end");
            }
            assert!(seen.insert(s.base), "{what}: a segment visited twice");
            assert_eq!(s.base % SEGMENT_SIZE, 0, "{what}: unaligned segment");
            last_base = s.base;
            seg_end = s.base + s.size;
            cur_huge = s.huge;
            next_span = 0;
            if s.huge {
                huge += 1;
            } else {
                segs += 1;
                assert_eq!(s.size, SEGMENT_SIZE);
            }
        }
        WalkItem::Span(sp) => {
            assert_eq!(sp.segment, last_base, "{what}: span of another segment");
            assert!(sp.addr + sp.len <= seg_end, "{what}: span past its segment");
            if next_span != 0 {
                assert_eq!(sp.addr, next_span, "{what}: gap between spans");
            }
            next_span = sp.addr + sp.len;
            match sp.kind {
                SpanUse::Slab => {
                    assert_eq!(sp.block_size, class_size(sp.class));
                    assert!(sp.used <= sp.carved && sp.carved <= sp.blocks);
                    assert_eq!(sp.blocks, sp.len / sp.block_size);
                    used[sp.class] += sp.used as u64;
                    active += sp.len as u64;
                }
                SpanUse::Large => {
                    assert_eq!(sp.len % SLICE_SIZE, 0);
                    assert!(sp.block_size <= sp.len && sp.used == 1);
                    active += sp.len as u64;
                }
                SpanUse::Huge => {
                    assert!(cur_huge, "{what}: huge span in a normal segment");
                    huge_slack += (seg_end - last_base - sp.len) as u64;
                    active += sp.len as u64;
                }
                SpanUse::Free => assert_eq!(sp.used, 0),
            }
        }
    });
    if !cur_huge && segs > 0 {
        assert_eq!(next_span, seg_end, "{what}: spans do not reach the end");
    }
    let t = &c.totals;
    assert_eq!((segs, huge), (t.segments, t.huge_blocks), "{what}: counts");
    assert_eq!(active, t.active, "{what}: active");
    // The running counter counts huge blocks with their whole reservation.
    let s = snapshot(g);
    assert_eq!(
        s.active as u64,
        t.active + huge_slack,
        "{what}: running active counter"
    );
    used
}

fn sizes(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=699 => 1 + rng.below(512) as usize,
        700..=919 => 513 + rng.below(16_000) as usize,
        920..=969 => 16_000 + rng.below(MAX_CLASS_SIZE as u64 - 16_000) as usize,
        970..=989 => MAX_CLASS_SIZE + 1 + rng.below(4 * SLICE_SIZE as u64) as usize,
        990..=994 => MAX_CLASS_SIZE + 1 + rng.below((LARGE_MAX - MAX_CLASS_SIZE) as u64) as usize,
        // Huge blocks just past the large limit: their segments come and
        // go, at a fraction of the bytes to clear.
        _ => LARGE_MAX + 1 + rng.below(1 << 20) as usize,
    }
}

fn one_heap_matches_the_model(harden: Mitigations) {
    let (_, g) = instance();
    g.set_mitigations(harden);
    let h = HeapBox::new(g);
    let mut m = Model::new();
    let mut live: BTreeMap<usize, usize> = BTreeMap::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // An empty allocator (one heap, nothing allocated yet).
    let c = check_census(g, &m, true, "empty");
    check_walk(g, &c, "empty");
    for round in 0..6 {
        for _ in 0..3000 {
            let size = sizes(&mut rng);
            let p = h.get().malloc(size);
            assert!(!p.is_null());
            m.malloc(size, p);
            live.insert(p as usize, size);
        }
        // Free about half, by address parity of a random draw.
        let victims: Vec<usize> = live.keys().copied().filter(|_| rng.below(2) == 0).collect();
        for p in victims {
            let size = live.remove(&p).unwrap();
            m.free(size, p as *mut u8, false);
            // SAFETY: a live block of this heap.
            unsafe { h.get().free(p as *mut u8) };
        }
        let what = format!("{harden:?} round {round}");
        let c = check_census(g, &m, true, &what);
        let used = check_walk(g, &c, &what);
        // One heap, no remote frees: the slabs' own counts are exact too.
        assert_eq!(used, m.class_blocks, "{what}: slabs' used");
        for (k, cs) in c.classes.iter().enumerate() {
            assert_eq!(cs.used_blocks, m.class_blocks[k], "{what}: class {k}");
            assert!(cs.slabs > 0 || cs.active_blocks == 0);
        }
        // Every live block is inside a span of the right kind and class.
        for (&p, &size) in live.iter().step_by(97) {
            let sp = span_of(g, p).expect("live block in no span");
            match where_of(size) {
                Where::Class(k) => {
                    assert_eq!((sp.kind, sp.class), (SpanUse::Slab, k), "{p:#x}");
                    assert_eq!((p - sp.addr) % sp.block_size, 0, "{p:#x}");
                }
                Where::Large => assert_eq!((sp.kind, sp.addr), (SpanUse::Large, p)),
                Where::Huge => assert_eq!((sp.kind, sp.addr), (SpanUse::Huge, p)),
            }
        }
        // The heap's own counts are the model's (one heap does it all).
        let own = ThreadStats::of_own(h.get());
        check_ops(&own, &m, &format!("{what}: own counts"));
        assert_eq!(own, c.totals.ops, "{what}: one heap");
        assert!(own.cache_misses > 0);
    }
    for (p, size) in std::mem::take(&mut live) {
        m.free(size, p as *mut u8, false);
        // SAFETY: a live block of this heap.
        unsafe { h.get().free(p as *mut u8) };
    }
    let c = check_census(g, &m, true, "all freed");
    check_walk(g, &c, "all freed");
    assert_eq!(c.totals.allocated, 0);
    // SAFETY: the heap is not used afterwards.
    unsafe { Heap::destroy(h.0) };
    let c = check_census(g, &m, true, "heap destroyed");
    assert_eq!(c.totals.heaps, 0);
    assert_eq!(c.totals.ops.mallocs, c.totals.ops.frees, "exited heap");
}

#[test]
fn one_heap_default_preset() {
    one_heap_matches_the_model(Mitigations::DEFAULT);
}

#[test]
fn one_heap_without_mitigations() {
    one_heap_matches_the_model(Mitigations::OFF);
}

/// A block handed between threads.
#[derive(Clone, Copy)]
struct Blk {
    addr: usize,
    size: usize,
}

const THREADS: usize = 4;

#[test]
fn several_threads_with_remote_frees_and_exits() {
    let (_, g) = instance();
    // Each thread's model, and its heap's address.
    let models: Arc<Mutex<Vec<(usize, Model)>>> = Arc::new(Mutex::new(Vec::new()));
    // Blocks each thread leaves for the next one to free.
    let inboxes: Arc<Vec<Mutex<Vec<Blk>>>> =
        Arc::new((0..THREADS).map(|_| Mutex::new(Vec::new())).collect());
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    // Phases: 1 allocate, 2 free own and remote, 3 two threads exit.
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (models, inboxes, barrier) = (models.clone(), inboxes.clone(), barrier.clone());
            thread::spawn(move || {
                let h = HeapBox::new(g);
                let mut m = Model::new();
                let mut rng = Rng(0x9e37_79b9 ^ ((t as u64 + 1) * 0x1000_0001));
                let mut mine = Vec::new();
                for i in 0..4000 {
                    // Mostly small; a few large, one huge per thread.
                    let size = if i == 7 {
                        LARGE_MAX + 1 + t * 4096
                    } else if i % 500 == 3 {
                        MAX_CLASS_SIZE + 1 + rng.below(SLICE_SIZE as u64 * 4) as usize
                    } else {
                        1 + rng.below(3000) as usize
                    };
                    let p = h.get().malloc(size);
                    assert!(!p.is_null());
                    m.malloc(size, p);
                    mine.push(Blk {
                        addr: p as usize,
                        size,
                    });
                }
                // A third of the blocks go to the next thread, which frees
                // them: remote frees into queued and full slabs.
                let give: Vec<Blk> = mine.iter().copied().skip(1).step_by(3).collect();
                mine.retain(|b| !give.iter().any(|x| x.addr == b.addr));
                inboxes[(t + 1) % THREADS].lock().unwrap().extend(give);
                barrier.wait(); // 1
                let got = std::mem::take(&mut *inboxes[t].lock().unwrap());
                for b in got {
                    m.free(b.size, b.addr as *mut u8, true);
                    // SAFETY: a live block handed to this thread.
                    unsafe { h.get().free(b.addr as *mut u8) };
                }
                for b in mine.iter().step_by(2) {
                    m.free(b.size, b.addr as *mut u8, false);
                    // SAFETY: a live block of this heap.
                    unsafe { h.get().free(b.addr as *mut u8) };
                }
                models
                    .lock()
                    .unwrap()
                    .push((h.0.as_ptr() as usize, m.clone()));
                barrier.wait(); // 2: main checks
                barrier.wait(); // 3
                if t % 2 == 0 {
                    // SAFETY: not used afterwards.
                    unsafe { Heap::destroy(h.0) };
                    barrier.wait(); // 4: main checks
                    barrier.wait(); // 5
                    return;
                }
                barrier.wait(); // 4
                barrier.wait(); // 5: main checks, then all go
                                // SAFETY: not used afterwards.
                unsafe { Heap::destroy(h.0) };
            })
        })
        .collect();
    barrier.wait(); // 1
    barrier.wait(); // 2
    let per_heap = models.lock().unwrap().clone();
    let mut all = Model::new();
    for (_, m) in &per_heap {
        all.merge(m);
    }
    // The counts are exact although the owners have not collected the
    // blocks other threads freed.
    let c = check_census(g, &all, false, "threads quiescent");
    let used = check_walk(g, &c, "threads quiescent");
    // The slabs still count those blocks until their owners collect them:
    // never fewer than the live blocks, never more than those plus the
    // blocks freed remotely.
    for (k, (&u, &live)) in used.iter().zip(&all.class_blocks).enumerate() {
        assert!(u >= live, "class {k}: slabs' used below live");
    }
    assert!(used.iter().sum::<u64>() <= all.class_blocks.iter().sum::<u64>() + all.remote_frees);
    // Each heap's own counts, as another thread reads them.
    let mut seen = BTreeMap::new();
    for_each_heap(g, &mut |id, t| {
        seen.insert(id, *t);
    });
    assert_eq!(seen.len(), THREADS);
    for (id, m) in &per_heap {
        check_ops(&seen[id], m, &format!("heap {id:#x}"));
    }
    barrier.wait(); // 3
    barrier.wait(); // 4: two heaps went away; their segments are abandoned
    let c = check_census(g, &all, false, "two heaps exited");
    assert_eq!(c.totals.heaps, THREADS as u64 / 2);
    assert!(c.totals.abandoned_segments > 0);
    check_walk(g, &c, "two heaps exited");
    barrier.wait(); // 5
    for h in handles {
        h.join().unwrap();
    }
    // Every heap is gone: abandoning swept every remote free into its
    // slab, so the slabs' own counts are exact too.
    let c = check_census(g, &all, true, "all heaps exited");
    let used = check_walk(g, &c, "all heaps exited");
    assert_eq!(used, all.class_blocks, "abandoned slabs' used");
    assert_eq!(c.totals.heaps, 0);
    assert_eq!(c.totals.segments, c.totals.abandoned_segments);
}

/// One thread walks and takes censuses over and over while others
/// allocate and free (huge blocks too, whose segments come and go) and
/// heaps come and go (segments retired and recycled): nothing faults, and
/// every walk is well-formed.
#[test]
fn walking_is_safe_while_threads_run() {
    let (_, g) = instance();
    // No cache: retired segments and freed huge blocks go straight back to
    // the provider, which unmaps them (a walk reading one would fault).
    g.options.segment_cache.store(0, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut rng = Rng(77 + t as u64);
                let mut rounds = 0;
                // At least a few rounds, then until the walker is done.
                while rounds < 4 || !stop.load(Ordering::Relaxed) {
                    let h = HeapBox::new(g);
                    let mut live = Vec::new();
                    for _ in 0..3000 {
                        if !live.is_empty() && rng.below(3) == 0 {
                            let i = rng.below(live.len() as u64) as usize;
                            let p: usize = live.swap_remove(i);
                            // SAFETY: a live block of this heap.
                            unsafe { h.get().free(p as *mut u8) };
                        } else {
                            let size = sizes(&mut rng);
                            let p = h.get().malloc(size);
                            assert!(!p.is_null());
                            live.push(p as usize);
                        }
                    }
                    for p in live {
                        // SAFETY: a live block of this heap.
                        unsafe { h.get().free(p as *mut u8) };
                    }
                    // SAFETY: not used afterwards; its segments retire.
                    unsafe { Heap::destroy(h.0) };
                    rounds += 1;
                }
            })
        })
        .collect();
    for i in 0..120 {
        let mut last = 0usize;
        let mut seg_end = 0usize;
        g.walk(&mut |item| match *item {
            WalkItem::Segment(s) => {
                assert!(s.base != last && s.base % SEGMENT_SIZE == 0);
                last = s.base;
                seg_end = s.base + s.size;
                assert!(s.used_bytes <= s.size);
            }
            WalkItem::Span(sp) => {
                assert_eq!(sp.segment, last);
                assert!(sp.addr >= last && sp.addr + sp.len <= seg_end);
                assert!(sp.used <= sp.carved.max(1));
                if sp.kind == SpanUse::Slab {
                    assert!(sp.class < NUM_CLASSES);
                }
            }
        });
        if i % 10 == 0 {
            let c = census(g);
            assert!(c.totals.segments_total >= c.totals.segments);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // Quiescent again: every heap is gone and every block was freed.
    let c = census(g);
    assert_eq!(c.totals.allocated, 0);
    assert_eq!(c.totals.heaps, 0);
}
