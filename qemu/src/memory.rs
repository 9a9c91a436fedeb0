//! Physical memory: the kernel's page provider and its early heap.
//!
//! [`init`] hands every RAM range of the PVH memory map to [`PROVIDER`], minus
//! what is in use or set aside:
//! - everything below 1 MiB (real-mode area, PVH data, the AP trampoline page
//!   at [`AP_TRAMPOLINE`]);
//! - the kernel image, `[__kernel_start, __kernel_end)` from `kernel.ld`,
//!   which includes `.bss` with the boot page tables and stacks;
//! - the start info, its memory map and command line;
//! - everything from 4 GiB up, which the boot page tables do not map.
//!
//! Then [`HEAP`], the early heap, takes [`EARLY_HEAP_SIZE`] bytes from the
//! provider. The global allocator [`ALLOC`] serves allocations from it until
//! a kernel switches it to the per-CPU heaps [`PER_CPU`].

use apex_bare_metal::ranges::{for_each_usable, Range};
use apex_bare_metal::{percpu, BuddyProvider, EarlyHeap, HandOver, KernelAlloc};
use apex_core::Global;

use crate::pvh::{MemoryKind, StartInfo};

/// The page provider over all usable RAM.
pub static PROVIDER: BuddyProvider = BuddyProvider::new();

/// The early-boot heap, carved from [`PROVIDER`].
pub static HEAP: EarlyHeap = EarlyHeap::empty();

/// The allocator core over [`PROVIDER`] behind [`PER_CPU`].
pub static GLOBAL: Global = Global::new(&PROVIDER);

/// One heap per CPU, for [`ALLOC`] once it switches.
pub static PER_CPU: KernelAlloc = KernelAlloc::new(&GLOBAL, percpu::current_cpu_index);

/// The global allocator: [`HEAP`] until a kernel calls `ALLOC.switch()`,
/// [`PER_CPU`] after (most test kernels never switch).
#[cfg_attr(target_os = "none", global_allocator)]
pub static ALLOC: HandOver = HandOver::new(&HEAP, &PER_CPU);

/// Size of [`HEAP`].
pub const EARLY_HEAP_SIZE: usize = 16 << 20;

/// Memory below this is never handed out.
pub const LOW_MEMORY_END: usize = 1 << 20;

/// The boot page tables identity-map only this much.
pub const MAPPED_END: usize = 4 << 30;

/// The page the AP start-up code is copied to (SIPI vector 0x08).
pub const AP_TRAMPOLINE: Range = Range::new(0x8000, 0x1000);

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The kernel image in memory, from the linker script's symbols.
pub fn kernel_image() -> Range {
    // Only the symbols' addresses are taken, never their contents.
    let start = core::ptr::addr_of!(__kernel_start) as usize;
    let end = core::ptr::addr_of!(__kernel_end) as usize;
    Range { start, end }
}

/// What [`init`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStats {
    /// RAM reported by the memory map.
    pub ram_bytes: usize,
    /// Bytes handed to the buddy allocator (before its metadata).
    pub added_bytes: usize,
    /// Regions the buddy allocator took.
    pub regions: usize,
    /// Pieces it rejected (too small for metadata plus a page, or over the
    /// region limit).
    pub rejected: usize,
}

/// Feeds usable RAM to [`PROVIDER`] and sets up [`HEAP`].
///
/// # Safety
/// Call once, on the boot CPU, before anything else uses memory outside the
/// kernel image; `info` must describe this machine.
pub unsafe fn init(info: &StartInfo) -> MemoryStats {
    let [a, b, c] = info.footprint;
    let holes = [
        Range {
            start: 0,
            end: LOW_MEMORY_END,
        },
        AP_TRAMPOLINE,
        kernel_image(),
        Range::new(a.0, a.1),
        Range::new(b.0, b.1),
        Range::new(c.0, c.1),
        Range {
            start: MAPPED_END,
            end: usize::MAX,
        },
    ];
    let mut stats = MemoryStats::default();
    for region in info
        .memory_map()
        .iter()
        .filter(|r| r.kind == MemoryKind::Ram)
    {
        stats.ram_bytes += region.len as usize;
        let ram = Range {
            start: region.start as usize,
            end: region.end() as usize,
        };
        for_each_usable(ram, &holes, |piece| {
            // SAFETY: `piece` is RAM per the firmware, identity-mapped (below
            // MAPPED_END) and, with the holes removed, used by nothing else;
            // the caller runs this once.
            match unsafe { PROVIDER.add_region(piece.start, piece.len()) } {
                Ok(bytes) => {
                    stats.added_bytes += bytes;
                    stats.regions += 1;
                }
                Err(_) => stats.rejected += 1,
            }
        });
    }
    if let Err(e) = HEAP.init_from(&PROVIDER, EARLY_HEAP_SIZE) {
        panic!("early heap: {e:?}");
    }
    stats
}
