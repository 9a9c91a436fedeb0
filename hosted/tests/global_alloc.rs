//! ApexAlloc as a Rust program's `#[global_allocator]`.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: apexalloc::ApexAlloc = apexalloc::ApexAlloc;

#[test]
fn collections_work_and_memory_is_ours() {
    let mut m: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..50_000u64 {
        m.insert(i, format!("value-{i}"));
    }
    assert_eq!(m.len(), 50_000);
    assert_eq!(m[&4242], "value-4242");
    let v: Vec<u64> = (0..1_000_000).collect();
    assert!(apex_core::owns(v.as_ptr() as *const u8));
    assert_eq!(v.iter().sum::<u64>(), 499_999_500_000);
    let s = apexalloc::stats();
    assert!(s.mallocs >= 50_000, "allocations were not counted: {s:?}");
}

#[test]
fn over_aligned_layouts_and_realloc() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let pages: Vec<Box<Page>> = (0..64).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
        assert_eq!(p.0[4095], i as u8);
    }
    let mut v: Vec<u32> = Vec::new();
    for i in 0..3_000_000u32 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<u32>>());
}

#[test]
fn cross_thread_frees_and_thread_churn() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let consumer = thread::spawn(move || {
        let mut n = 0usize;
        for batch in rx {
            n += batch.len();
        }
        n
    });
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for b in 0..200 {
                    let batch: Vec<String> = (0..100).map(|i| format!("{t}-{b}-{i}")).collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 4 * 200 * 100);
    for _ in 0..200 {
        thread::spawn(|| {
            let m: HashMap<u32, Vec<u8>> = (0..100).map(|i| (i, vec![i as u8; 100])).collect();
            assert_eq!(m.len(), 100);
        })
        .join()
        .unwrap();
    }
}
