//! Placement on memory nodes and huge-page hints, through a provider that
//! models a machine with two nodes: the node a thread runs on is a
//! thread-local the test sets, and every bind and hint is recorded. Heaps
//! get segments of their node, cached and abandoned segments of their node
//! come first and those of another node serve when there are none, and a
//! machine with one node sees no provider call for any of it.

mod common;

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use apex_core::global::THP_HOT_BYTES;
use apex_core::harden::Mitigations;
use apex_core::layout::{segment_base_of, SEGMENT_SIZE};
use apex_core::provider::HUGE_PAGE_SIZE;
use apex_core::segment::{Segment, GUARD_OFFSET};
use apex_core::{Capabilities, Global, Heap, PageProvider};
use common::{HeapBox, TestProvider};

thread_local! {
    /// The node the calling test thread "runs on".
    static NODE: Cell<usize> = const { Cell::new(0) };
}

fn run_on(node: usize) {
    NODE.with(|n| n.set(node));
}

/// [`TestProvider`]'s memory on a machine of `nodes` nodes.
struct NodeProvider {
    inner: TestProvider,
    nodes: usize,
    /// Whether it claims [`Capabilities::HUGE_PAGES`].
    huge_pages: AtomicBool,
    /// `current_node` calls.
    lookups: AtomicUsize,
    /// `bind_to_node` calls: (address, length, node).
    binds: Mutex<Vec<(usize, usize, usize)>>,
    /// `hint_huge_pages` calls: (address, length).
    hints: Mutex<Vec<(usize, usize)>>,
}

// SAFETY: memory comes from `TestProvider`, which keeps the contract; the
// recording uses the system allocator, never the instance under test.
unsafe impl PageProvider for NodeProvider {
    fn capabilities(&self) -> Capabilities {
        let caps = self.inner.capabilities();
        if self.huge_pages.load(Ordering::Relaxed) {
            caps | Capabilities::HUGE_PAGES
        } else {
            caps
        }
    }
    fn reserve(&self, len: usize, align: usize) -> Option<NonNull<u8>> {
        self.inner.reserve(len, align)
    }
    unsafe fn release(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        unsafe { self.inner.release(ptr, len) }
    }
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> bool {
        // SAFETY: forwarded.
        unsafe { self.inner.commit(ptr, len) }
    }
    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        unsafe { self.inner.decommit(ptr, len) }
    }
    unsafe fn hint_huge_pages(&self, ptr: NonNull<u8>, len: usize) {
        self.hints
            .lock()
            .unwrap()
            .push((ptr.as_ptr() as usize, len));
    }
    fn node_count(&self) -> usize {
        self.nodes
    }
    fn current_node(&self) -> usize {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        NODE.with(Cell::get)
    }
    unsafe fn bind_to_node(&self, ptr: NonNull<u8>, len: usize, node: usize) {
        assert!(node < self.nodes, "bound to node {node} of {}", self.nodes);
        let b = (ptr.as_ptr() as usize, len, node);
        self.binds.lock().unwrap().push(b);
    }
    fn entropy(&self, buf: &mut [u8]) -> bool {
        self.inner.entropy(buf)
    }
    fn fatal(&self, msg: &str) -> ! {
        self.inner.fatal(msg)
    }
}

impl NodeProvider {
    fn binds(&self) -> Vec<(usize, usize, usize)> {
        self.binds.lock().unwrap().clone()
    }
}

fn instance(nodes: usize, huge_pages: bool) -> (&'static NodeProvider, &'static Global) {
    let p: &'static NodeProvider = Box::leak(Box::new(NodeProvider {
        inner: TestProvider::new(),
        nodes,
        huge_pages: AtomicBool::new(huge_pages),
        lookups: AtomicUsize::new(0),
        binds: Mutex::new(Vec::new()),
        hints: Mutex::new(Vec::new()),
    }));
    let g: &'static Global = Box::leak(Box::new(Global::new(p)));
    (p, g)
}

/// The segment holding a block, and the node it says it is placed on.
fn segment(p: *mut u8) -> (usize, u32) {
    assert!(!p.is_null());
    let base = segment_base_of(p as usize);
    // SAFETY: a live block of a normal segment, whose header is at `base`.
    (base, unsafe { (*(base as *const Segment)).node })
}

/// A heap on `node` with one live block; returns both.
fn heap_with_block(g: &'static Global, node: usize) -> (HeapBox, *mut u8) {
    run_on(node);
    let h = HeapBox::new(g);
    let p = h.get().malloc(64);
    (h, p)
}

/// Frees a heap's one block and destroys the heap: its segment, empty,
/// goes to the cache. Returns the segment's base.
fn cache((h, p): (HeapBox, *mut u8)) -> usize {
    let (base, _) = segment(p);
    // SAFETY: a live block of this heap, freed once; the heap then goes.
    unsafe {
        h.get().free(p);
        Heap::destroy(h.0);
    }
    base
}

#[test]
fn heaps_get_segments_bound_to_their_node() {
    let (prov, g) = instance(2, false);
    let (h1, p1) = heap_with_block(g, 1);
    let (h0, p0) = heap_with_block(g, 0);
    assert_eq!(g.node_count(), 2);
    let (s1, n1) = segment(p1);
    let (s0, n0) = segment(p0);
    assert_ne!(s1, s0);
    assert_eq!((n1, n0), (1, 0));
    let binds = prov.binds();
    assert!(binds.contains(&(s1, SEGMENT_SIZE, 1)), "{binds:x?}");
    assert!(binds.contains(&(s0, SEGMENT_SIZE, 0)), "{binds:x?}");
    // A large block comes from the heap's own segment too.
    run_on(1);
    let big = h1.get().malloc(1 << 20);
    assert_eq!(segment(big), (s1, 1));
    // A node number past the last node counts as the last.
    let (_h7, p7) = heap_with_block(g, 7);
    assert_eq!(segment(p7).1, 1);
    // SAFETY: live blocks of these heaps, freed once.
    unsafe {
        h1.get().free(big);
        h1.get().free(p1);
        h0.get().free(p0);
    }
}

#[test]
fn adoption_prefers_the_same_node_then_any() {
    let (prov, g) = instance(2, false);
    let (ha, a) = heap_with_block(g, 1);
    let (hb, b) = heap_with_block(g, 0);
    let (sa, sb) = (segment(a).0, segment(b).0);
    // Both abandoned with a live block; node 0's is the most recent.
    // SAFETY: the heaps are not used again.
    unsafe {
        Heap::destroy(ha.0);
        Heap::destroy(hb.0);
    }
    let binds_before = prov.binds().len();
    // A heap on node 1 adopts node 1's segment, not the most recent one.
    let (hc, c) = heap_with_block(g, 1);
    assert_eq!(segment(c), (sa, 1));
    // Node 1 has none left: node 0's serves, rather than a new segment,
    // and keeps its placement (its live block stays where it is).
    let (hd, d) = heap_with_block(g, 1);
    assert_eq!(segment(d), (sb, 0));
    assert_eq!(prov.binds().len(), binds_before, "adoption binds nothing");
    // SAFETY: the adopters own these segments now; each block is freed
    // once.
    unsafe {
        hc.get().free(a);
        hc.get().free(c);
        hd.get().free(b);
        hd.get().free(d);
    }
}

#[test]
fn the_cache_serves_the_same_node_first_and_moves_another() {
    let (prov, g) = instance(2, false);
    // Both segments exist before either is cached (a heap would take
    // the other's from the cache otherwise).
    let (on0, on1) = (heap_with_block(g, 0), heap_with_block(g, 1));
    let s0 = cache(on0);
    let s1 = cache(on1);
    let reserved = prov.inner.reserved.load(Ordering::Relaxed);
    let binds_before = prov.binds().len();
    // Node 1 gets node 1's segment, though node 0's was cached first.
    let (h, p) = heap_with_block(g, 1);
    assert_eq!(segment(p), (s1, 1));
    assert_eq!(prov.binds().len(), binds_before, "already on node 1");
    // Then node 0's, moved to node 1, rather than a new reservation.
    let (h2, p2) = heap_with_block(g, 1);
    assert_eq!(segment(p2), (s0, 1));
    assert_eq!(prov.binds()[binds_before..], [(s0, SEGMENT_SIZE, 1)]);
    assert_eq!(prov.inner.reserved.load(Ordering::Relaxed), reserved);
    // SAFETY: live blocks of these heaps, freed once.
    unsafe {
        h.get().free(p);
        h2.get().free(p2);
    }
}

#[test]
fn one_node_asks_and_binds_nothing_and_keeps_the_order() {
    let (prov, g) = instance(1, false);
    // The node a thread reports is never asked for.
    let (ha, a) = heap_with_block(g, 1);
    let (hb, b) = heap_with_block(g, 1);
    assert_eq!((segment(a).1, segment(b).1), (0, 0));
    let (sa, sb) = (segment(a).0, segment(b).0);
    // SAFETY: the heaps are not used again.
    unsafe {
        Heap::destroy(ha.0);
        Heap::destroy(hb.0);
    }
    // The most recently abandoned segment is adopted first.
    let (hc, c) = heap_with_block(g, 1);
    let (hd, d) = heap_with_block(g, 1);
    assert_eq!((segment(c).0, segment(d).0), (sb, sa));
    // Emptied and cached, the first cached is taken first.
    // SAFETY: the adopters own these blocks now; each is freed once.
    unsafe {
        hc.get().free(b);
        hd.get().free(a);
    }
    cache((hc, c));
    cache((hd, d));
    let (he, e) = heap_with_block(g, 1);
    assert_eq!(segment(e).0, sb);
    assert_eq!(g.node_count(), 1);
    assert_eq!(prov.lookups.load(Ordering::Relaxed), 0);
    assert!(prov.binds().is_empty());
    cache((he, e));
}

#[test]
fn huge_pages_are_asked_for_the_hot_part_of_fresh_segments_only() {
    let (prov, g) = instance(1, true);
    let hints = || prov.hints.lock().unwrap().clone();
    let (h, p) = heap_with_block(g, 0);
    let (s, _) = segment(p);
    // The default preset has guard pages: the first huge page, split by
    // the header's guard, is left out.
    assert!(g.mitigations().contains(Mitigations::GUARDS));
    let part = g.huge_page_part();
    assert_eq!(part, HUGE_PAGE_SIZE.min(THP_HOT_BYTES)..THP_HOT_BYTES);
    assert!(part.start > GUARD_OFFSET);
    assert_eq!(hints(), [(s + part.start, part.len())]);
    assert_eq!(s % HUGE_PAGE_SIZE, 0);
    const {
        assert!(THP_HOT_BYTES.is_multiple_of(HUGE_PAGE_SIZE));
        assert!(THP_HOT_BYTES <= SEGMENT_SIZE);
    }
    // A recycled segment keeps its hint: none is asked again.
    cache((h, p));
    let (h2, p2) = heap_with_block(g, 0);
    assert_eq!(segment(p2).0, s);
    assert_eq!(hints().len(), 1);
    // Switched off at run time: the next new segment gets no hint; on
    // again, the one after does.
    prov.huge_pages.store(false, Ordering::Relaxed);
    let (_h3, p3) = heap_with_block(g, 0);
    assert_ne!(segment(p3).0, s);
    assert_eq!(hints().len(), 1);
    prov.huge_pages.store(true, Ordering::Relaxed);
    let (_h4, p4) = heap_with_block(g, 0);
    assert_eq!(hints()[1..], [(segment(p4).0 + part.start, part.len())]);
    // SAFETY: a live block of this heap, freed once.
    unsafe { h2.get().free(p2) };
}

#[test]
fn without_guard_pages_the_hint_starts_at_the_header() {
    let (prov, g) = instance(1, true);
    g.set_mitigations(Mitigations::OFF);
    let (_h, p) = heap_with_block(g, 0);
    assert_eq!(g.huge_page_part(), 0..THP_HOT_BYTES);
    assert_eq!(*prov.hints.lock().unwrap(), [(segment(p).0, THP_HOT_BYTES)]);
}
