//! A program for Valgrind's memcheck, with `ApexAlloc` as its global
//! allocator built with the `valgrind` feature. The argument chooses what
//! it does:
//!
//! - `clean`: vectors grown and shrunk (`realloc` in place and moved),
//!   strings, a map, zeroed and over-aligned blocks, blocks freed by
//!   another thread; everything freed, so memcheck must report nothing;
//! - `leak`: loses eight 3000-byte blocks ("definitely lost");
//! - `use-after-free`: reads a byte of a freed 64-byte block ("Invalid
//!   read ... inside a block of size 64 free'd");
//! - `past-end`: reads the byte after a 100-byte block, inside the
//!   112-byte block the allocator gave ("Invalid read ... 0 bytes after a
//!   block of size 100 alloc'd");
//! - `uninit`: branches on a byte never written ("Conditional jump or move
//!   depends on uninitialised value(s)").
//!
//! `tests/tests/tools.rs` builds and runs it:
//! `cargo build -p apexalloc --features valgrind --example valgrind_client`.

use std::collections::HashMap;
use std::hint::black_box;

#[global_allocator]
static A: apexalloc::ApexAlloc = apexalloc::ApexAlloc;

fn clean() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..100_000 {
        v.push(i);
    }
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v.iter().sum::<u64>(), 45);
    let mut s = String::new();
    for i in 0..2_000 {
        s.push_str(&i.to_string());
    }
    let mut m: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0..1_000 {
        m.insert(format!("key-{i}"), vec![i as u8; i % 300 + 1]);
    }
    assert_eq!(m["key-299"].len(), 300);
    let z = vec![0u32; 50_000];
    assert!(z.iter().all(|&x| x == 0));
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let pages: Vec<Box<Page>> = (0..8).map(|i| Box::new(Page([i; 4096]))).collect();
    assert_eq!(pages[7].0[4095], 7);
    let big = vec![1u8; 40 << 20];
    assert_eq!(big[big.len() - 1], 1);
    // Blocks allocated here and freed by another thread.
    let boxes: Vec<Box<[u8; 100]>> = (0..1_000).map(|_| Box::new([3; 100])).collect();
    std::thread::spawn(move || drop(black_box(boxes)))
        .join()
        .unwrap();
    black_box((v, s, m, z, pages, big));
}

#[inline(never)]
fn leak() -> usize {
    let mut total = 0;
    for i in 0..8 {
        let v = vec![i as u8; 3000];
        total += v.len();
        std::mem::forget(black_box(v));
    }
    total
}

/// Overwrites the stack below the caller, so that no stale copy of a leaked
/// pointer keeps its block reachable.
#[inline(never)]
fn scrub_stack() {
    black_box([0u8; 16 * 1024]);
}

#[inline(never)]
fn use_after_free() -> u8 {
    let p = Box::into_raw(Box::new([7u8; 64]));
    // SAFETY: `p` came from `Box::into_raw` and is freed once.
    drop(unsafe { Box::from_raw(p) });
    // The deliberate error memcheck must report.
    // SAFETY: none: this reads freed memory on purpose; the block is not
    // handed out again in between and its pages stay mapped.
    unsafe { std::ptr::read_volatile(p.cast::<u8>().add(8)) }
}

#[inline(never)]
fn past_end() -> u8 {
    let v: Vec<u8> = black_box(vec![1u8; 100]);
    // SAFETY: none: reads one byte past the block on purpose (the
    // allocator's block is larger, so the byte is mapped).
    unsafe { std::ptr::read_volatile(v.as_ptr().add(100)) }
}

#[inline(never)]
fn uninit() -> bool {
    let v: Vec<u8> = Vec::with_capacity(100);
    // SAFETY: none: reads a byte never written on purpose (it is inside
    // the block, so it is mapped).
    let x = unsafe { std::ptr::read_volatile(v.as_ptr().add(5)) };
    x == 3
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("clean") => clean(),
        Some("leak") => {
            println!("leaked {} bytes", leak());
            scrub_stack();
        }
        Some("use-after-free") => println!("read {}", use_after_free()),
        Some("past-end") => println!("read {}", past_end()),
        Some("uninit") => {
            if uninit() {
                println!("three");
            }
        }
        _ => {
            eprintln!("usage: valgrind_client clean|leak|use-after-free|past-end|uninit");
            std::process::exit(2);
        }
    }
}
