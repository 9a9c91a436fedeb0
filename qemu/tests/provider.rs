//! BuddyProvider through the core's PageProvider trait: reservations of many
//! lengths with alignments from 4 KiB to 4 MiB, write patterns, release.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::ptr::NonNull;

use apex_core::provider::{Capabilities, PageProvider, PAGE_SIZE};
use apex_qemu::rng::XorShift;
use apex_qemu::{entry_point, run_tests, BootInfo, Test};

entry_point!(main);

const TESTS: &[Test] = &[
    (
        "capabilities_match_the_machine",
        capabilities_match_the_machine,
    ),
    ("alignments_4k_to_4m", alignments_4k_to_4m),
    ("random_reserve_release", random_reserve_release),
    ("invalid_requests_fail", invalid_requests_fail),
];

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

fn provider(info: &'static BootInfo) -> &'static dyn PageProvider {
    info.provider()
}

fn pattern(addr: usize, i: usize) -> u8 {
    (addr / PAGE_SIZE + i) as u8
}

/// Writes one byte per page plus the last byte, derived from the address.
fn write_pattern(ptr: NonNull<u8>, len: usize) {
    let addr = ptr.as_ptr() as usize;
    for (i, off) in (0..len).step_by(PAGE_SIZE).chain([len - 1]).enumerate() {
        // SAFETY: `ptr` is a live reservation of `len` bytes.
        unsafe { ptr.as_ptr().add(off).write(pattern(addr, i)) };
    }
}

fn check_pattern(ptr: NonNull<u8>, len: usize) {
    let addr = ptr.as_ptr() as usize;
    for (i, off) in (0..len).step_by(PAGE_SIZE).chain([len - 1]).enumerate() {
        // SAFETY: `ptr` is a live reservation of `len` bytes.
        let v = unsafe { ptr.as_ptr().add(off).read() };
        assert_eq!(
            v,
            pattern(addr, i),
            "reservation {addr:#x}+{off:#x} overwritten"
        );
    }
}

fn assert_disjoint(live: &mut [(NonNull<u8>, usize)]) {
    live.sort_unstable_by_key(|&(p, _)| p.as_ptr() as usize);
    for w in live.windows(2) {
        let (a, alen) = (w[0].0.as_ptr() as usize, w[0].1);
        assert!(
            a + alen <= w[1].0.as_ptr() as usize,
            "reservations overlap at {a:#x}"
        );
    }
}

fn capabilities_match_the_machine(info: &'static BootInfo) {
    let p = provider(info);
    let caps = p.capabilities();
    assert!(caps.contains(Capabilities::LAZY_COMMIT));
    assert!(!caps.contains(Capabilities::ZERO_ON_RESERVE));
    assert!(!caps.contains(Capabilities::CAN_DECOMMIT));
    // Real randomness is claimed only with rdrand; without it the
    // time-stamp counter still gives different bytes on every draw.
    assert_eq!(
        caps.contains(Capabilities::ENTROPY),
        apex_bare_metal::rdrand::available()
    );
    let mut buf = [0u8; 64];
    assert!(p.entropy(&mut buf));
    assert!(buf.iter().any(|&b| b != 0));
    let first = buf;
    assert!(p.entropy(&mut buf));
    assert_ne!(first, buf, "two draws gave the same bytes");
}

fn alignments_4k_to_4m(info: &'static BootInfo) {
    let p = provider(info);
    let free = info.provider().free_bytes();
    let mut live = Vec::new();
    for shift in 12..=22 {
        let align = 1usize << shift;
        for len in [
            PAGE_SIZE,
            2 * PAGE_SIZE,
            5 * PAGE_SIZE,
            align,
            align + PAGE_SIZE,
        ] {
            let ptr = p.reserve(len, align).expect("memory for the reservation");
            assert_eq!(
                ptr.as_ptr() as usize % align,
                0,
                "len {len:#x} align {align:#x}"
            );
            // SAFETY: a live reservation; LAZY_COMMIT makes commit optional,
            // but it must succeed anyway.
            assert!(unsafe { p.commit(ptr, len) });
            write_pattern(ptr, len);
            live.push((ptr, len));
        }
    }
    for &(ptr, len) in &live {
        check_pattern(ptr, len);
    }
    assert_disjoint(&mut live);
    for (ptr, len) in live {
        // SAFETY: decommit is a no-op here, then the range is released
        // exactly as reserved.
        unsafe {
            p.decommit(ptr, len);
            p.release(ptr, len);
        }
    }
    assert_eq!(info.provider().free_bytes(), free);
    info.provider().lock().verify().unwrap();
}

fn random_reserve_release(info: &'static BootInfo) {
    let p = provider(info);
    let free = info.provider().free_bytes();
    let mut rng = XorShift::new(7);
    let mut live: Vec<(NonNull<u8>, usize)> = Vec::new();
    for _ in 0..5000 {
        if !live.is_empty() && rng.below(2) == 0 {
            let (ptr, len) = live.swap_remove(rng.below(live.len()));
            check_pattern(ptr, len);
            // SAFETY: released exactly as reserved.
            unsafe { p.release(ptr, len) };
        } else {
            let len = (1 + rng.below(64)) * PAGE_SIZE;
            let align = PAGE_SIZE << rng.below(11);
            let ptr = p.reserve(len, align).expect("memory");
            assert_eq!(ptr.as_ptr() as usize % align, 0);
            write_pattern(ptr, len);
            live.push((ptr, len));
        }
    }
    assert_disjoint(&mut live);
    for (ptr, len) in live {
        check_pattern(ptr, len);
        // SAFETY: released exactly as reserved.
        unsafe { p.release(ptr, len) };
    }
    assert_eq!(info.provider().free_bytes(), free);
}

fn invalid_requests_fail(info: &'static BootInfo) {
    let p = provider(info);
    assert!(p.reserve(0, PAGE_SIZE).is_none());
    assert!(p.reserve(PAGE_SIZE + 1, PAGE_SIZE).is_none());
    assert!(p.reserve(PAGE_SIZE, 3 * PAGE_SIZE).is_none());
    assert!(
        p.reserve(1 << 30, PAGE_SIZE).is_none(),
        "above the largest block"
    );
    assert!(
        p.reserve(PAGE_SIZE, 1 << 30).is_none(),
        "alignment above the largest block"
    );
}
