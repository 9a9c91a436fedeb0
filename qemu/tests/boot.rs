//! Boot: the PVH start info is read, its memory map is sane and the page
//! allocator got the RAM it should, minus the holes.

#![no_std]
#![no_main]

use apex_qemu::memory::{kernel_image, AP_TRAMPOLINE, LOW_MEMORY_END};
use apex_qemu::pvh::MemoryKind;
use apex_qemu::{entry_point, run_tests, BootInfo, Test};

entry_point!(main);

const MIB: usize = 1 << 20;

const TESTS: &[Test] = &[
    ("start_info_is_read", start_info_is_read),
    (
        "memory_map_has_low_and_high_ram",
        memory_map_has_low_and_high_ram,
    ),
    ("ram_amount_is_sane", ram_amount_is_sane),
    (
        "buddy_regions_avoid_the_holes",
        buddy_regions_avoid_the_holes,
    ),
    (
        "kernel_image_is_linked_at_1mib",
        kernel_image_is_linked_at_1mib,
    ),
];

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

fn start_info_is_read(info: &'static BootInfo) {
    let si = &info.start_info;
    assert!(si.version >= 1);
    assert!(si.paddr != 0 && si.paddr < LOW_MEMORY_END);
    assert!(si.rsdp_paddr != 0, "QEMU passes the ACPI RSDP");
    assert_eq!(si.memory_map_dropped, 0);
}

fn memory_map_has_low_and_high_ram(info: &'static BootInfo) {
    let map = info.start_info.memory_map();
    assert!(map.len() >= 2);
    let ram = |r: &&apex_qemu::pvh::MemoryRegion| r.kind == MemoryKind::Ram;
    assert!(
        map.iter().filter(ram).any(|r| r.start == 0),
        "conventional memory"
    );
    assert!(
        map.iter().filter(ram).any(|r| r.start == 0x10_0000),
        "RAM from 1 MiB"
    );
    assert!(
        map.iter().any(|r| r.kind != MemoryKind::Ram),
        "reserved ranges"
    );
    // RAM entries do not overlap each other.
    for (i, a) in map
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == MemoryKind::Ram)
    {
        for b in map[i + 1..].iter().filter(ram) {
            assert!(
                a.end() <= b.start || b.end() <= a.start,
                "{a:?} overlaps {b:?}"
            );
        }
    }
}

fn ram_amount_is_sane(info: &'static BootInfo) {
    let ram = info.memory.ram_bytes;
    // run.sh starts QEMU with 256 MiB unless QEMU_MEMORY says otherwise.
    assert!((32 * MIB..=3 * 1024 * MIB).contains(&ram), "RAM {ram:#x}");
    let provider = info.provider();
    let managed = provider.total_bytes();
    let image = kernel_image().len();
    // All RAM except low memory, the kernel image and ~1/4096 of metadata.
    assert!(managed <= ram - image, "managed {managed:#x} of {ram:#x}");
    assert!(
        managed + image + 2 * MIB + ram / 1024 >= ram,
        "managed {managed:#x} of {ram:#x}"
    );
    // Only the early heap is allocated so far.
    let in_use = managed - provider.free_bytes();
    assert_eq!(in_use, apex_qemu::memory::EARLY_HEAP_SIZE);
    assert_eq!(info.memory.rejected, 0);
}

fn buddy_regions_avoid_the_holes(info: &'static BootInfo) {
    let buddy = info.provider().lock();
    let image = kernel_image();
    assert!(buddy.region_count() >= 1);
    for i in 0..buddy.region_count() {
        let (start, end) = buddy.region(i).unwrap();
        assert!(start >= LOW_MEMORY_END, "region {start:#x} below 1 MiB");
        assert!(
            end <= image.start || start >= image.end,
            "region {start:#x}..{end:#x} overlaps the kernel"
        );
        assert!(end <= AP_TRAMPOLINE.start || start >= AP_TRAMPOLINE.end);
        assert!(end <= apex_qemu::memory::MAPPED_END);
    }
    buddy.verify().unwrap();
}

fn kernel_image_is_linked_at_1mib(_info: &'static BootInfo) {
    let image = kernel_image();
    assert_eq!(image.start, 0x10_0000);
    assert!(image.end > image.start && image.end.is_multiple_of(4096));
    // The boot stack lives in .bss, inside the image.
    let here = core::ptr::addr_of!(image) as usize;
    assert!(
        image.start <= here && here < image.end,
        "stack at {here:#x}"
    );
}
