//! The main kernel (`cargo run`): boots, reports the machine and the
//! allocators, exercises them briefly and exits with success.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use apex_core::provider::{Capabilities, PageProvider};
use apex_qemu::memory::{kernel_image, HEAP};
use apex_qemu::{entry_point, println, BootInfo};

entry_point!(main);

const MIB: usize = 1 << 20;

fn main(info: &'static BootInfo) -> ! {
    println!("ApexAlloc bare-metal kernel");
    let image = kernel_image();
    println!(
        "kernel image {:#x}..{:#x} ({} KiB)",
        image.start,
        image.end,
        image.len() / 1024
    );
    println!("command line: {:?}", info.start_info.cmdline());
    println!("memory map (PVH start info v{}):", info.start_info.version);
    for r in info.start_info.memory_map() {
        println!("  {:#012x}..{:#012x} {:?}", r.start, r.end(), r.kind);
    }

    let provider = info.provider();
    println!(
        "buddy: {} MiB RAM, {} MiB managed in {} regions, {} MiB free",
        info.memory.ram_bytes / MIB,
        provider.total_bytes() / MIB,
        info.memory.regions,
        provider.free_bytes() / MIB
    );
    println!("provider capabilities: {:?}", provider.capabilities());
    let mut seed = [0u8; 8];
    if provider.capabilities().contains(Capabilities::ENTROPY) && provider.entropy(&mut seed) {
        println!("rdrand: {:#018x}", u64::from_le_bytes(seed));
    } else {
        println!("rdrand: not available on this CPU model");
    }
    println!("CPUs: {}", apex_qemu::fw_cfg::cpu_count());

    // A short round trip through both allocators.
    let block = provider
        .reserve(4 * MIB, 4 * MIB)
        .expect("4 MiB from the page provider");
    // SAFETY: `block` is a fresh 4 MiB reservation, usable at once (LAZY_COMMIT).
    unsafe { block.as_ptr().write_bytes(0xa5, 4 * MIB) };
    // SAFETY: released exactly as reserved.
    unsafe { provider.release(block, 4 * MIB) };
    let squares: Vec<u64> = (0..10_000u64).map(|i| i * i).collect();
    let index: BTreeMap<u64, usize> = squares.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    assert_eq!(index[&(4321 * 4321)], 4321);
    println!(
        "early heap: {} KiB of {} KiB in use",
        HEAP.used() / 1024,
        HEAP.size() / 1024
    );
    drop((squares, index));

    println!("all good");
    apex_qemu::exit::exit(apex_qemu::exit::ExitCode::Success)
}
