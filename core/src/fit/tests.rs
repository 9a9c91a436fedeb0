use super::*;

use std::alloc::{alloc, Layout};
use std::vec::Vec;

/// Leaked, 4 KiB-aligned memory for chunks.
fn memory(len: usize) -> usize {
    // SAFETY: a non-zero size; never freed (tests may keep pointers).
    let p = unsafe { alloc(Layout::from_size_align(len, 4096).unwrap()) };
    assert!(!p.is_null());
    p as usize
}

/// A boxed instance (about 20 KiB, too big for a test's stack frame).
fn instance(owner: usize, keep_empty: usize) -> Box<Fit> {
    with_quick(owner, keep_empty, 0)
}

/// An instance with quick lists of up to `budget` bytes.
fn with_quick(owner: usize, keep_empty: usize, budget: usize) -> Box<Fit> {
    let mut b = Box::<Fit>::new_uninit();
    // SAFETY: a valid, aligned allocation for a `Fit`.
    unsafe {
        Fit::init(
            b.as_mut_ptr(),
            owner,
            keep_empty,
            budget,
            0x5a5a_1234_8765_a5a5,
        );
        b.assume_init()
    }
}

impl Fit {
    fn alloc_ok(&mut self, size: usize, align: usize) -> *mut u8 {
        self.alloc(size, align).unwrap()
    }
}

/// xorshift, seeded.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fill(p: *mut u8, len: usize, byte: u8) {
    // SAFETY: the block holds `len` bytes.
    unsafe { ptr::write_bytes(p, byte, len) }
}

fn check(p: *mut u8, len: usize, byte: u8) {
    // SAFETY: the block holds `len` bytes.
    let s = unsafe { core::slice::from_raw_parts(p, len) };
    assert!(s.iter().all(|&b| b == byte), "block {p:?} overwritten");
}

#[test]
fn lists_hold_what_they_promise() {
    let mut s = MIN_BLOCK;
    while s < 1 << 30 {
        let (fl, sl) = list_of(s);
        assert!(fl < FL && sl < SL);
        // Every block of the list `list_at_least` names holds `s`: its
        // smallest size is at least `s`.
        let (f2, s2) = list_at_least(s);
        let lowest = if f2 == 0 {
            s2 * GRANULE
        } else {
            let log = f2 as u32 + LINEAR_SHIFT - 1;
            (1 << log) + (s2 << (log - SL_SHIFT))
        };
        assert!(lowest >= s, "{s}: list ({f2},{s2}) starts at {lowest}");
        assert_eq!(list_of(lowest), (f2, s2));
        // And it is the first such list: the one before it starts below.
        assert!((f2, s2) >= (fl, sl));
        s += GRANULE * (1 + s / 512);
    }
    assert_eq!(list_of(MAX_BLOCK).0, FL - 1);
    assert_eq!(block_size_for(1), Some(MIN_BLOCK));
    assert_eq!(block_size_for(24), Some(32));
    assert_eq!(block_size_for(25), Some(48));
    assert_eq!(block_size_for(1000), Some(1008));
    assert_eq!(block_size_for(usize::MAX), None);
}

#[test]
fn random_operations_keep_blocks_intact() {
    random_operations(0);
}

#[test]
fn random_operations_keep_blocks_intact_with_quick_lists() {
    random_operations(64 * 1024);
}

fn random_operations(budget: usize) {
    let mut f = with_quick(3, 1, budget);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // (pointer, size, fill byte)
    let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
    for round in 0..20_000u32 {
        match rng.below(10) {
            0..=4 => {
                let max = if rng.below(8) == 0 { 100_000 } else { 2000 };
                let size = 1 + rng.below(max);
                let align = 8usize << (rng.next().trailing_zeros() / 2).min(9);
                let mut p = f.alloc_ok(size, align);
                if p.is_null() {
                    let len = (size + align + 4096).next_multiple_of(4096).max(256 * 1024);
                    // SAFETY: fresh memory, ours.
                    unsafe { f.add_chunk(memory(len), len, 1) };
                    p = f.alloc_ok(size, align);
                }
                assert!(!p.is_null());
                assert_eq!(p as usize % align.max(GRANULE), 0);
                // SAFETY: a live block.
                assert!(unsafe { usable_size(p) } >= size);
                // SAFETY: as above.
                assert_eq!(unsafe { owner_of(p) }, Some(3));
                let byte = round as u8;
                fill(p, size, byte);
                live.push((p, size, byte));
            }
            5..=7 if !live.is_empty() => {
                let (p, size, byte) = live.swap_remove(rng.below(live.len()));
                check(p, size, byte);
                // SAFETY: a live block of `f`, freed once.
                if let Some(c) = unsafe { f.free(p) }.unwrap() {
                    assert_eq!(c.tag, 1);
                }
            }
            _ if !live.is_empty() => {
                let i = rng.below(live.len());
                let (p, size, byte) = live[i];
                let new = 1 + rng.below(20_000);
                // SAFETY: a live block of `f`.
                if unsafe { f.resize(p, new) }.unwrap() {
                    // SAFETY: as above.
                    assert!(unsafe { usable_size(p) } >= new);
                    check(p, size.min(new), byte);
                    fill(p, new, byte);
                    live[i].1 = new;
                }
            }
            _ => {}
        }
        if round % 500 == 0 {
            f.verify().unwrap();
        }
    }
    f.verify().unwrap();
    let used: usize = live
        .iter()
        // SAFETY: live blocks.
        .map(|&(p, ..)| unsafe { usable_size(p) } + HEADER)
        .sum();
    // Cached blocks count as used until they are handed out or flushed.
    assert_eq!(f.stats().used, used + f.stats().cached);
    for (p, size, byte) in live.drain(..) {
        check(p, size, byte);
        // SAFETY: live blocks, freed once.
        unsafe { f.free(p) }.unwrap();
    }
    f.verify().unwrap();
    let s = f.stats();
    assert_eq!(s.used, s.cached);
    assert!(s.cached <= budget);
    if budget == 0 {
        // Every chunk is empty; all but one were handed back on the way.
        assert_eq!((s.chunks, s.empty_chunks), (1, 1));
    }
    let mut back = 0;
    f.release_empty(|c| back += c.len).unwrap();
    // Cached blocks were freed for real first, so every chunk went back.
    assert_eq!(back, s.chunk_bytes);
    assert_eq!(f.stats(), FitStats::default());
    f.verify().unwrap();
}

#[test]
fn empty_chunks_are_kept_up_to_the_limit_then_returned() {
    let mut f = instance(0, 1);
    let len = 64 * 1024;
    let (a, b) = (memory(len), memory(len));
    // SAFETY: fresh memory, ours.
    unsafe {
        f.add_chunk(a, len, 2);
        f.add_chunk(b, len, 3);
    }
    // Two blocks that each take most of a chunk.
    let x = f.alloc_ok(len - 1024, 16);
    let y = f.alloc_ok(len - 1024, 16);
    assert!(!x.is_null() && !y.is_null());
    assert_eq!(f.stats().empty_chunks, 0);
    // SAFETY: live blocks, each freed once.
    let (cx, cy) = unsafe { (f.free(x).unwrap(), f.free(y).unwrap()) };
    // The first one emptied is kept, the second handed back.
    assert_eq!(cx, None);
    let c = cy.expect("second empty chunk returned");
    assert!(c.len == len && (c.base == a || c.base == b) && c.tag == (c.base == b) as usize + 2);
    assert_eq!(f.stats().chunks, 1);
    f.verify().unwrap();
    // A whole chunk serves a block again.
    let z = f.alloc_ok(len - 1024, 16);
    assert!(!z.is_null());
    assert_eq!(f.alloc_ok(len / 2, 16), ptr::null_mut());
    f.verify().unwrap();
}

#[test]
fn resize_grows_into_the_free_neighbour_and_shrinks_in_place() {
    let mut f = instance(1, 1);
    let len = 256 * 1024;
    // SAFETY: fresh memory, ours.
    unsafe { f.add_chunk(memory(len), len, 0) };
    let a = f.alloc_ok(1000, 16);
    let b = f.alloc_ok(1000, 16);
    let c = f.alloc_ok(1000, 16);
    fill(a, 1000, 1);
    // SAFETY: live blocks of `f`.
    unsafe {
        // b freed: a can grow into it, but not past c.
        assert!(f.free(b).unwrap().is_none());
        assert!(f.resize(a, 2000).unwrap());
        assert!(usable_size(a) >= 2000);
        assert!(!f.resize(a, 3100).unwrap());
        check(a, 1000, 1);
        // Shrinking frees the tail: a block of that size fits there again.
        assert!(f.resize(a, 100).unwrap());
        assert!(usable_size(a) < 200);
        let d = f.alloc_ok(1500, 16);
        let kept = block_size_for(100).unwrap();
        assert_eq!(d as usize, a as usize + kept, "the freed tail is reused");
        // A small shrink keeps the block as it is.
        let before = usable_size(c);
        assert!(f.resize(c, 990).unwrap());
        assert_eq!(usable_size(c), before);
        // The last block grows into the rest of the chunk.
        assert!(f.resize(c, 100_000).unwrap());
        f.verify().unwrap();
        f.free(d).unwrap();
        f.free(a).unwrap();
        f.free(c).unwrap();
    }
    f.verify().unwrap();
    assert_eq!(f.stats().used, 0);
}

#[test]
fn the_last_blocks_of_a_list_still_serve_requests_of_their_size() {
    // Free blocks of one list, some just big enough: the guaranteed-fit
    // search finds nothing above them, the scan of their own list does.
    let mut f = instance(0, 1);
    let len = 1 << 20;
    // SAFETY: fresh memory, ours.
    unsafe { f.add_chunk(memory(len), len, 0) };
    let mut blocks = Vec::new();
    loop {
        let p = f.alloc_ok(5000, 16);
        if p.is_null() {
            break;
        }
        blocks.push(p);
    }
    // Free every other block: holes of exactly one 5000-byte block.
    for p in blocks.iter().step_by(2) {
        // SAFETY: live blocks, freed once.
        unsafe { f.free(*p) }.unwrap();
    }
    let mut again = 0;
    while !f.alloc_ok(5000, 16).is_null() {
        again += 1;
    }
    assert_eq!(again, blocks.len().div_ceil(2));
    f.verify().unwrap();
}

#[test]
fn misuse_is_reported_not_obeyed() {
    let mut f = instance(5, 1);
    let len = 64 * 1024;
    // SAFETY: fresh memory, ours.
    unsafe { f.add_chunk(memory(len), len, 0) };
    let a = f.alloc_ok(100, 16);
    let b = f.alloc_ok(100, 16);
    let c = f.alloc_ok(100, 16);
    // SAFETY: the calls below hand the allocator bad pointers on purpose;
    // each must be caught before anything is written.
    unsafe {
        f.free(b).unwrap();
        assert_eq!(f.free(b), Err((Misuse::DoubleFree, b as usize)));
        // An interior pointer: its "header" is payload bytes.
        fill(a, 100, 0x11);
        assert_eq!(
            f.free(a.add(16)),
            Err((Misuse::InvalidFree, a as usize + 16))
        );
        assert_eq!(
            f.resize(a.add(32), 10),
            Err((Misuse::InvalidRealloc, a as usize + 32))
        );
        // Another instance's block.
        let mut g = instance(6, 1);
        g.add_chunk(memory(len), len, 0);
        let x = g.alloc_ok(64, 16);
        assert_eq!(f.free(x), Err((Misuse::InvalidFree, x as usize)));
        // An overflow from `a` rewrites the links of the free block `b`
        // after it: freeing `a` (which merges with `b`) finds them broken,
        // whether the forged link is no block address at all or the
        // address of a block that does not link back.
        let link = b as *mut usize;
        let saved = *link;
        *link = 0x1234_5670;
        assert_eq!(f.free(a).unwrap_err().0, Misuse::FreeListCorruption);
        *link = c as usize - HEADER;
        assert_eq!(f.free(a).unwrap_err().0, Misuse::FreeListCorruption);
        *link = saved;
        f.free(a).unwrap();
        f.free(c).unwrap();
        f.verify().unwrap();
    }
}

#[test]
fn remote_frees_from_many_threads_all_arrive() {
    use std::sync::Arc;
    let mut f = instance(2, 1);
    let len = 4 << 20;
    // SAFETY: fresh memory, ours.
    unsafe { f.add_chunk(memory(len), len, 0) };
    let blocks: Vec<usize> = (0..4000).map(|_| f.alloc_ok(200, 16) as usize).collect();
    assert!(blocks.iter().all(|&p| p != 0));
    let remote = Arc::new(RemoteFrees::new());
    let handles: Vec<_> = blocks
        .chunks(1000)
        .map(|part| {
            let part = part.to_vec();
            let remote = remote.clone();
            std::thread::spawn(move || {
                for p in part {
                    // SAFETY: each block is pushed once.
                    unsafe { remote.push(p as *mut u8) };
                }
            })
        })
        .collect();
    let mut freed = 0;
    let mut done = false;
    while !done {
        done = handles.iter().all(|h| h.is_finished());
        let mut p = remote.take();
        while !p.is_null() {
            // SAFETY: blocks on the stack are live blocks of `f`.
            unsafe {
                let next = RemoteFrees::next(p);
                f.free(p).unwrap();
                p = next;
            }
            freed += 1;
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(remote.is_empty());
    assert_eq!(freed, blocks.len());
    assert_eq!(f.stats().used, 0);
    f.verify().unwrap();
}

#[test]
fn quick_lists_hand_blocks_back_and_give_them_up_when_memory_is_short() {
    let mut f = with_quick(4, 1, 16 * 1024);
    let len = 64 * 1024;
    // SAFETY: fresh memory, ours.
    unsafe { f.add_chunk(memory(len), len, 0) };
    let a = f.alloc_ok(200, 16);
    let b = f.alloc_ok(200, 16);
    // SAFETY: live blocks of `f`; the misuse below is caught, not obeyed.
    unsafe {
        assert_eq!(f.free(a), Ok(None));
        assert_eq!(f.stats().cached, block_size_for(200).unwrap());
        // Cached, so freeing it again is a double free.
        assert_eq!(f.free(a), Err((Misuse::DoubleFree, a as usize)));
        // The same size gets the same block back.
        assert_eq!(f.alloc_ok(200, 16), a);
        assert_eq!(f.stats().cached, 0);
        f.free(a).unwrap();
        f.free(b).unwrap();
    }
    f.verify().unwrap();
    // A request that only fits once the cached blocks merge with the rest
    // of the chunk: the quick lists are flushed first.
    let big = f.alloc_ok(len - CHUNK_OVERHEAD - HEADER, 16);
    assert!(!big.is_null());
    assert_eq!(f.stats().cached, 0);
    f.verify().unwrap();
    // SAFETY: a live block, freed once.
    unsafe { f.free(big) }.unwrap();
    // An overwritten quick-list link is caught when it is followed.
    let c = f.alloc_ok(100, 16);
    let d = f.alloc_ok(100, 16);
    // SAFETY: live blocks of `f`; the forged link is the attack.
    unsafe {
        f.free(c).unwrap();
        f.free(d).unwrap();
        *(d as *mut usize) = c as usize + 64;
    }
    assert_eq!(f.alloc(100, 16).unwrap_err().0, Misuse::FreeListCorruption);
}

/// The frontend's inline fast paths (`try_push_quick`, `try_pop_quick`)
/// serve exactly what `free` and `alloc` would from the quick lists, send
/// checked blocks to the bins, and decline everything else, misuse
/// included, which the full paths then report.
#[test]
fn quick_fast_paths_serve_cached_blocks_and_decline_everything_else() {
    let mut f = with_quick(7, 1, 1024);
    let len = 64 * 1024;
    // SAFETY: fresh memory, ours.
    unsafe { f.add_chunk(memory(len), len, 0) };
    let a = f.alloc_ok(200, 16);
    let b = f.alloc_ok(200, 16);
    let big = f.alloc_ok(5000, 16);
    // SAFETY: live blocks of `f` and of `g`; the misuse below is declined.
    unsafe {
        // Nothing cached yet: to the bins.
        assert_eq!(f.try_pop_quick(200, 16), QuickPop::Bins);
        assert_eq!(f.try_push_quick(a), QuickPush::Cached);
        assert_eq!(f.stats().cached, block_size_for(200).unwrap());
        // Freed twice: declined, and `free` reports it.
        assert_eq!(f.try_push_quick(a), QuickPush::Declined);
        assert_eq!(f.free(a), Err((Misuse::DoubleFree, a as usize)));
        // Above the quick sizes: checked, then freed into the bins.
        let QuickPush::Bins(block) = f.try_push_quick(big) else {
            panic!("a 5000-byte block is not quick-listed")
        };
        assert_eq!(f.free_checked(block), Ok(None));
        assert_eq!(f.free(big), Err((Misuse::DoubleFree, big as usize)));
        // Another instance's block: declined.
        let mut g = with_quick(8, 1, 1024);
        g.add_chunk(memory(len), len, 0);
        let x = g.alloc_ok(200, 16);
        assert_eq!(f.try_push_quick(x), QuickPush::Declined);
        assert_eq!(g.try_push_quick(x), QuickPush::Cached);
        // An interior pointer: its "header" is payload bytes.
        fill(b, 200, 0x22);
        assert_eq!(f.try_push_quick(b.add(32)), QuickPush::Declined);
        // A stronger alignment or another size goes to the bins.
        assert_eq!(f.try_pop_quick(200, 64), QuickPop::Bins);
        assert_eq!(f.try_pop_quick(300, 16), QuickPop::Bins);
        // The same size gets the same block back.
        assert_eq!(f.try_pop_quick(200, 16), QuickPop::Block(a));
        assert_eq!(f.stats().cached, 0);
        // Over the budget (1 KiB): the fourth 300-byte block goes to the
        // bins.
        let blocks: Vec<_> = (0..4).map(|_| f.alloc_ok(300, 16)).collect();
        for &p in &blocks[..3] {
            assert_eq!(f.try_push_quick(p), QuickPush::Cached);
        }
        let QuickPush::Bins(block) = f.try_push_quick(blocks[3]) else {
            panic!("the budget is full")
        };
        f.free_checked(block).unwrap();
        f.verify().unwrap();
        // An overwritten link: the pop declines without writing, and
        // `alloc` reports it.
        let head = blocks[2];
        *(head as *mut usize) = a as usize + 64;
        assert_eq!(f.try_pop_quick(300, 16), QuickPop::Check(head as usize));
        assert_eq!(f.stats().cached, 3 * block_size_for(300).unwrap());
        assert_eq!(f.alloc(300, 16).unwrap_err().0, Misuse::FreeListCorruption);
    }
}
