//! The mitigations on the kernel frontend: each attack runs against its own
//! allocator instance (a `Global` over the kernel's buddy provider, behind a
//! `KernelAlloc`) with the preset it needs, and must end in the provider's
//! fatal hook with the exact line the hosted library prints. The first seven
//! attack the slab heaps (a `KernelAlloc` that puts small blocks there), the
//! last five the best-fit blocks every other block is (the default).
//!
//! A detected misuse never returns, so the fatal hook is the test's
//! continuation: it checks the line, then starts the next attack on a fresh
//! instance (the abandoned one is never touched again). The last attack's
//! hook ends the run with success; a wrong line, an attack that completes,
//! or a panic ends it with failure.

#![no_std]
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use apex_bare_metal::kernel_alloc::SMALL_SLAB_LIMIT;
use apex_bare_metal::KernelAlloc;
use apex_core::harden::Mitigations;
use apex_core::Global;
use apex_qemu::exit::{exit, ExitCode};
use apex_qemu::memory::PROVIDER;
use apex_qemu::{entry_point, println, BootInfo};

entry_point!(main);

fn on_cpu_zero() -> Option<usize> {
    Some(0)
}

/// One instance per attack: a fatal line leaves its state mid-operation.
static GLOBALS: [Global; 12] = [const { Global::new(&PROVIDER) }; 12];

/// Small blocks in the slab heaps.
const fn slabs(i: usize) -> KernelAlloc {
    KernelAlloc::with_slab_limit(&GLOBALS[i], on_cpu_zero, SMALL_SLAB_LIMIT)
}

/// Every block from best fit (the default).
const fn best_fit(i: usize) -> KernelAlloc {
    KernelAlloc::new(&GLOBALS[i], on_cpu_zero)
}

static HEAPS: [KernelAlloc; 12] = [
    slabs(0),
    slabs(1),
    slabs(2),
    slabs(3),
    slabs(4),
    slabs(5),
    slabs(6),
    best_fit(7),
    best_fit(8),
    best_fit(9),
    best_fit(10),
    best_fit(11),
];

/// An attack: its name, the preset it runs under, the start of the line it
/// must end with, and the attack itself (which must not return).
type Attack = (
    &'static str,
    Mitigations,
    &'static str,
    fn(&'static KernelAlloc),
);

const ATTACKS: [Attack; 12] = [
    (
        "double_free",
        Mitigations::DEFAULT,
        "apexalloc: fatal: double free (0x",
        double_free,
    ),
    (
        "forged_free_list_link",
        Mitigations::DEFAULT,
        "apexalloc: fatal: free-list corruption (0x",
        forged_link,
    ),
    (
        "interior_pointer_free",
        Mitigations::OFF,
        "apexalloc: fatal: invalid free (0x",
        interior_free,
    ),
    (
        "never_handed_out_slot_free",
        Mitigations::DEFAULT,
        "apexalloc: fatal: double free (0x",
        never_handed_out,
    ),
    (
        "stack_pointer_free",
        Mitigations::DEFAULT,
        "apexalloc: fatal: invalid free (0x",
        stack_free,
    ),
    (
        "overflow_into_canary",
        Mitigations::FULL,
        "apexalloc: fatal: heap overflow (0x",
        overflow,
    ),
    (
        "write_after_free",
        Mitigations::FULL,
        "apexalloc: fatal: write after free (0x",
        write_after_free,
    ),
    (
        "best_fit_double_free",
        Mitigations::DEFAULT,
        "apexalloc: fatal: double free (0x",
        fit_double_free,
    ),
    (
        "best_fit_cached_double_free",
        Mitigations::DEFAULT,
        "apexalloc: fatal: double free (0x",
        fit_cached_double_free,
    ),
    (
        "best_fit_forged_quick_list_link",
        Mitigations::DEFAULT,
        "apexalloc: fatal: free-list corruption (0x",
        fit_forged_quick_link,
    ),
    (
        "best_fit_overflow_into_free_neighbour",
        Mitigations::DEFAULT,
        "apexalloc: fatal: free-list corruption (0x",
        fit_overflow_into_neighbour,
    ),
    (
        "best_fit_interior_pointer_free",
        Mitigations::DEFAULT,
        "apexalloc: fatal: invalid free (0x",
        fit_interior_free,
    ),
];

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn main(_info: &'static BootInfo) -> ! {
    PROVIDER.set_fatal_handler(fatal);
    println!("\nrunning {} tests", ATTACKS.len());
    run_next()
}

/// Starts the next attack on its own instance.
fn run_next() -> ! {
    let i = NEXT.load(Ordering::SeqCst);
    let (name, preset, _, attack) = ATTACKS[i];
    apex_qemu::print!("test {name} ... ");
    GLOBALS[i].set_mitigations(preset);
    attack(&HEAPS[i]);
    println!("FAILED (the attack went undetected)");
    exit(ExitCode::Failure)
}

/// The provider's fatal hook: the attack's continuation.
fn fatal(msg: &str) -> ! {
    let i = NEXT.load(Ordering::SeqCst);
    let expected = ATTACKS[i].2;
    if !msg.starts_with(expected) {
        println!("FAILED\nexpected a line starting {expected:?}, got {msg:?}");
        exit(ExitCode::Failure);
    }
    println!("ok ({msg})");
    if i + 1 == ATTACKS.len() {
        println!(
            "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n",
            ATTACKS.len()
        );
        exit(ExitCode::Success);
    }
    NEXT.store(i + 1, Ordering::SeqCst);
    run_next()
}

fn alloc(h: &KernelAlloc, size: usize) -> *mut u8 {
    // SAFETY: non-zero size, alignment 16.
    let p = unsafe { h.alloc(Layout::from_size_align(size, 16).unwrap()) };
    assert!(!p.is_null());
    p
}

fn free(h: &KernelAlloc, p: *mut u8, size: usize) {
    // SAFETY: the attacks free what they like; the allocator must cope.
    unsafe { h.dealloc(p, Layout::from_size_align(size, 16).unwrap()) }
}

fn double_free(h: &'static KernelAlloc) {
    let p = alloc(h, 48);
    free(h, p, 48);
    free(h, p, 48);
}

/// Reads the next free block's link past the end of a live block, learns
/// its pad, and points it at the live block.
fn forged_link(h: &'static KernelAlloc) {
    GLOBALS[1].set_mitigations(Mitigations::DEFAULT - Mitigations::SHUFFLE);
    let victim = alloc(h, 48);
    let b1 = victim.wrapping_add(48);
    let b2 = victim.wrapping_add(96);
    // SAFETY: reading and writing past the victim is the attack.
    unsafe {
        let pad = *(b1 as *const usize) ^ (b2 as usize);
        *(b1 as *mut usize) = (victim as usize) ^ pad;
    }
    for _ in 0..4 {
        alloc(h, 48);
    }
}

fn interior_free(h: &'static KernelAlloc) {
    let p = alloc(h, 256);
    free(h, p.wrapping_add(16), 240);
}

fn never_handed_out(h: &'static KernelAlloc) {
    // In address order, so the attacker knows which slot is next.
    GLOBALS[3].set_mitigations(Mitigations::DEFAULT - Mitigations::SHUFFLE);
    let p = alloc(h, 64);
    // Carved with `p` and waiting on the free list, never handed out.
    free(h, p.wrapping_add(64), 64);
}

fn stack_free(h: &'static KernelAlloc) {
    let mut local = [0u8; 64];
    free(h, local.as_mut_ptr(), 64);
}

fn overflow(h: &'static KernelAlloc) {
    let p = alloc(h, 40);
    // SAFETY: `p` is a live block; the byte after its usable size is the
    // canary's, and changing it is the attack.
    unsafe {
        let n = apex_core::usable_size(p);
        *p.add(n) = !*p.add(n);
    }
    free(h, p, 40);
}

fn write_after_free(h: &'static KernelAlloc) {
    let p = alloc(h, 64);
    free(h, p, 64);
    // SAFETY: the write after free is the attack.
    unsafe { *p.add(24) = 1 };
    for _ in 0..1000 {
        let q = alloc(h, 64);
        free(h, q, 64);
    }
    for _ in 0..20_000 {
        alloc(h, 64);
    }
}

/// A block above the quick lists' sizes, freed twice: the second free
/// finds its header marked free.
fn fit_double_free(h: &'static KernelAlloc) {
    let p = alloc(h, 8000);
    let _keep = alloc(h, 8000);
    free(h, p, 8000);
    free(h, p, 8000);
}

/// A small block freed twice: the first free put it on a quick list, and
/// the second finds it marked cached.
fn fit_cached_double_free(h: &'static KernelAlloc) {
    let p = alloc(h, 100);
    free(h, p, 100);
    free(h, p, 100);
}

/// Overwrites the link of a block waiting on a quick list (a write after
/// free) with an address of the attacker's choosing: the allocation that
/// would follow it finds the link out of reach (it is stored masked, so the
/// forged value decodes to garbage).
fn fit_forged_quick_link(h: &'static KernelAlloc) {
    let victim = alloc(h, 100);
    let a = alloc(h, 100);
    let b = alloc(h, 100);
    free(h, a, 100);
    free(h, b, 100);
    // SAFETY: writing into the freed block is the attack.
    unsafe { *(b as *mut usize) = victim as usize - 8 };
    for _ in 0..3 {
        alloc(h, 100);
    }
}

/// A linear overflow from one block into the free block after it rewrites
/// that block's free-list links; freeing the first block, which merges
/// with it, finds them broken before following them.
fn fit_overflow_into_neighbour(h: &'static KernelAlloc) {
    let a = alloc(h, 8000);
    let b = alloc(h, 8000);
    let _c = alloc(h, 8000);
    free(h, b, 8000);
    // SAFETY: writing past `a`'s end, into `b`'s header and links, is the
    // attack (the header is kept as it was).
    unsafe {
        let n = apex_core::fit::usable_size(a);
        let links = a.add(n + 8) as *mut usize;
        links.write(a as usize);
        links.add(1).write(a as usize);
    }
    free(h, a, 8000);
}

/// Frees a pointer into the middle of a block: its "header" is payload.
fn fit_interior_free(h: &'static KernelAlloc) {
    let p = alloc(h, 5000);
    // SAFETY: 5000 writable bytes.
    unsafe { p.write_bytes(0x5a, 5000) };
    free(h, p.wrapping_add(64), 4936);
}
