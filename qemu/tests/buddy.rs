//! The buddy page allocator on real kernel memory: allocation patterns,
//! exhaustion and coalescing back to the initial state.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use apex_bare_metal::buddy::{block_size, Buddy, MAX_ORDER, ORDERS, PAGE_SIZE};
use apex_qemu::rng::XorShift;
use apex_qemu::{entry_point, run_tests, BootInfo, Test};

entry_point!(main);

const TESTS: &[Test] = &[
    (
        "orders_are_aligned_and_usable",
        orders_are_aligned_and_usable,
    ),
    ("checkerboard_pages_coalesce", checkerboard_pages_coalesce),
    (
        "exhaustion_returns_none_then_coalesces_to_full",
        exhaustion_returns_none_then_coalesces_to_full,
    ),
    (
        "random_private_buddy_over_reserved_block",
        random_private_buddy_over_reserved_block,
    ),
];

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

fn snapshot(b: &Buddy) -> ([usize; ORDERS], usize) {
    (core::array::from_fn(|k| b.free_blocks(k)), b.free_bytes())
}

/// Bytes between pattern words: one word per cache line.
const STRIDE: usize = 64;

/// Writes a word derived from its address into every cache line of a block.
fn fill(addr: usize, len: usize, salt: u64) {
    for off in (0..len).step_by(STRIDE) {
        // SAFETY: callers pass blocks they own, `len` bytes long.
        unsafe { ((addr + off) as *mut u64).write((addr + off) as u64 ^ salt) };
    }
}

fn check(addr: usize, len: usize, salt: u64) {
    for off in (0..len).step_by(STRIDE) {
        // SAFETY: callers pass blocks they own and filled.
        let v = unsafe { ((addr + off) as *const u64).read() };
        assert_eq!(
            v,
            (addr + off) as u64 ^ salt,
            "block {addr:#x} corrupted at +{off:#x}"
        );
    }
}

fn orders_are_aligned_and_usable(info: &'static BootInfo) {
    let mut b = info.provider().lock();
    let before = snapshot(&b);
    let mut got = Vec::new();
    for order in 0..=10 {
        for _ in 0..3 {
            let a = b.alloc(order).expect("memory for small orders");
            assert_eq!(a % block_size(order), 0);
            fill(a, block_size(order), order as u64);
            got.push((a, order));
        }
    }
    for &(a, order) in &got {
        check(a, block_size(order), order as u64);
    }
    for (a, order) in got {
        // SAFETY: allocated above with this order.
        unsafe { b.free(a, order) };
    }
    assert_eq!(snapshot(&b), before);
    b.verify().unwrap();
}

fn checkerboard_pages_coalesce(info: &'static BootInfo) {
    let mut b = info.provider().lock();
    let before = snapshot(&b);
    let pages: Vec<usize> = (0..4096).map(|_| b.alloc(0).unwrap()).collect();
    let mut odd = Vec::new();
    let mut even = Vec::new();
    for &p in &pages {
        if (p / PAGE_SIZE).is_multiple_of(2) {
            even.push(p)
        } else {
            odd.push(p)
        }
    }
    for &p in &even {
        // SAFETY: allocated above as order 0.
        unsafe { b.free(p, 0) };
    }
    // Half freed: their buddies are still allocated, so they stay pages.
    assert_eq!(b.free_bytes(), before.1 - odd.len() * PAGE_SIZE);
    odd.sort_unstable();
    let paired = even
        .iter()
        .filter(|&&p| odd.binary_search(&(p ^ PAGE_SIZE)).is_ok())
        .count();
    assert!(b.free_blocks(0) >= paired);
    b.verify().unwrap();
    for &p in &odd {
        // SAFETY: allocated above as order 0.
        unsafe { b.free(p, 0) };
    }
    assert_eq!(snapshot(&b), before);
    b.verify().unwrap();
}

fn exhaustion_returns_none_then_coalesces_to_full(info: &'static BootInfo) {
    let mut b = info.provider().lock();
    let before = snapshot(&b);
    let mut got = Vec::new();
    for order in (0..=MAX_ORDER).rev() {
        while let Some(a) = b.alloc(order) {
            // Touch the first and last word of every block.
            fill(a, 8, 1);
            fill(a + block_size(order) - STRIDE, 8, 2);
            got.push((a, order));
        }
    }
    assert_eq!(b.free_bytes(), 0);
    for order in 0..=MAX_ORDER {
        assert!(b.alloc(order).is_none());
    }
    assert!(b.alloc_len(PAGE_SIZE, PAGE_SIZE).is_none());
    let total: usize = got.iter().map(|&(_, k)| block_size(k)).sum();
    assert_eq!(total, before.1);
    for &(a, order) in &got {
        check(a, 8, 1);
        check(a + block_size(order) - STRIDE, 8, 2);
    }
    for (a, order) in got.into_iter().rev() {
        // SAFETY: allocated above with this order.
        unsafe { b.free(a, order) };
    }
    assert_eq!(snapshot(&b), before);
    b.verify().unwrap();
}

fn random_private_buddy_over_reserved_block(info: &'static BootInfo) {
    const LEN: usize = 32 << 20;
    let outer = info.provider().lock().alloc_len(LEN, LEN).unwrap();
    let mut b = Buddy::new();
    // SAFETY: the block is ours until freed below, after `b` is done.
    unsafe { b.add_region(outer + 3 * PAGE_SIZE, LEN - 5 * PAGE_SIZE) }.unwrap();
    let initial = snapshot(&b);
    let mut rng = XorShift::new(0xa11c);
    let mut live: Vec<(usize, usize, u64)> = Vec::new();
    for step in 0..20_000 {
        if !live.is_empty() && rng.below(100) < 45 {
            let (a, order, salt) = live.swap_remove(rng.below(live.len()));
            check(a, 16, salt);
            // SAFETY: a live block of this order.
            unsafe { b.free(a, order) };
        } else {
            let order = if rng.below(8) == 0 {
                rng.below(10)
            } else {
                rng.below(3)
            };
            if let Some(a) = b.alloc(order) {
                assert_eq!(a % block_size(order), 0);
                assert!(a >= outer && a + block_size(order) <= outer + LEN);
                let salt = rng.next_u64();
                fill(a, 16, salt);
                live.push((a, order, salt));
            }
        }
        if step % 2048 == 0 {
            b.verify().unwrap();
            let mut sorted: Vec<(usize, usize)> = live.iter().map(|&(a, k, _)| (a, k)).collect();
            sorted.sort_unstable();
            for w in sorted.windows(2) {
                assert!(
                    w[0].0 + block_size(w[0].1) <= w[1].0,
                    "overlap at {:#x}",
                    w[1].0
                );
            }
        }
    }
    for (a, order, salt) in live {
        check(a, 16, salt);
        // SAFETY: a live block of this order.
        unsafe { b.free(a, order) };
    }
    assert_eq!(snapshot(&b), initial);
    // SAFETY: reserved above with this length; `b` is not used again.
    unsafe { info.provider().lock().free_len(outer, LEN) };
}
