//! The early heap as the global allocator: Vec, BTreeMap, String, Box.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use apex_qemu::memory::{EARLY_HEAP_SIZE, HEAP};
use apex_qemu::{entry_point, run_tests, BootInfo, Test};

entry_point!(main);

const TESTS: &[Test] = &[
    ("heap_is_set_up", heap_is_set_up),
    ("vec_of_100k", vec_of_100k),
    ("btreemap", btreemap),
    ("strings", strings),
    ("boxes_and_alignment", boxes_and_alignment),
    ("everything_is_given_back", everything_is_given_back),
];

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

fn heap_is_set_up(_info: &'static BootInfo) {
    assert_eq!(HEAP.size(), EARLY_HEAP_SIZE);
}

fn vec_of_100k(_info: &'static BootInfo) {
    let v: Vec<u64> = (0..100_000u64).map(|i| i * 3).collect();
    assert_eq!(v.len(), 100_000);
    assert_eq!(v.iter().sum::<u64>(), 3 * (99_999 * 100_000 / 2));
    let mut grown = Vec::new();
    for i in 0..10_000u32 {
        grown.push(i);
    }
    grown.retain(|x| x % 2 == 0);
    assert_eq!(grown.len(), 5_000);
}

fn btreemap(_info: &'static BootInfo) {
    let mut m = BTreeMap::new();
    for i in 0..10_000u32 {
        m.insert(i.wrapping_mul(2_654_435_761), i);
    }
    assert_eq!(m.len(), 10_000);
    let mut prev = None;
    for &k in m.keys() {
        assert!(prev < Some(k));
        prev = Some(k);
    }
    for i in (0..10_000u32).step_by(2) {
        assert_eq!(m.remove(&i.wrapping_mul(2_654_435_761)), Some(i));
    }
    assert_eq!(m.len(), 5_000);
}

fn strings(_info: &'static BootInfo) {
    let mut s = String::new();
    for i in 0..1000 {
        s.push_str(&format!("{i},"));
    }
    assert!(s.starts_with("0,1,2,"));
    assert!(s.ends_with("998,999,"));
    let words: Vec<&str> = s.split(',').filter(|w| !w.is_empty()).collect();
    assert_eq!(words.len(), 1000);
    assert_eq!(format!("{:>8}|{:#x}", "apex", 255), "    apex|0xff");
}

fn boxes_and_alignment(_info: &'static BootInfo) {
    #[repr(align(4096))]
    struct Span([u8; 4096]);
    let pages: Vec<Box<Span>> = (0..16).map(|i| Box::new(Span([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Span as usize % 4096, 0);
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
    let big = alloc::vec![0xabu8; 4 << 20];
    assert!(big.iter().all(|&b| b == 0xab));
}

fn everything_is_given_back(_info: &'static BootInfo) {
    let before = HEAP.used();
    {
        let v: Vec<String> = (0..2000).map(|i| format!("item {i}")).collect();
        let m: BTreeMap<&str, usize> = v.iter().map(|s| (s.as_str(), s.len())).collect();
        assert_eq!(m.len(), 2000);
        assert!(HEAP.used() > before);
    }
    assert_eq!(HEAP.used(), before);
    // More than the heap holds fails cleanly.
    let mut too_big = Vec::<u8>::new();
    assert!(too_big.try_reserve(EARLY_HEAP_SIZE + 1).is_err());
}
