//! ApexAlloc on Linux.
//!
//! This crate binds the `no_std` core to Linux: pages from
//! [`provider::MmapProvider`], one heap per thread reached through
//! initial-exec TLS ([`tls`]), heaps handed back at thread exit and locks
//! made fork-safe (`thread`), a bootstrap arena for the rare allocation made
//! while the allocator itself is initialising ([`bootstrap`], `init`), and
//! options from `APEX_*` environment variables ([`options`], which lists
//! them). It exposes a C-like API (`malloc`, `free`, ...; used by the
//! `libapexalloc.so` crate), statistics reports ([`report`], and as JSON
//! [`mod@stats_json`]), leak reports at exit (`APEX_LEAKS`, in module
//! `leaks`), control and statistics by name with the typed
//! statistics and the heap walk ([`ctl`]), and [`ApexAlloc`], a
//! `GlobalAlloc` for Rust programs:
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: apexalloc::ApexAlloc = apexalloc::ApexAlloc;
//! ```
//!
//! Nothing here allocates through `malloc`: reports are formatted into
//! fixed buffers on the stack and written with `write`.

#![no_std]

mod api;
pub mod bootstrap;
pub mod ctl;
mod global_alloc;
mod init;
mod leaks;
pub mod options;
pub mod provider;
pub mod report;
pub mod stats_json;
mod strategy;
mod thread;
mod thread_ids;
pub mod tls;
mod user_mem;
pub mod valgrind;

use apex_core::Global;

use provider::MmapProvider;

static PROVIDER: MmapProvider = MmapProvider;
/// The one allocator instance of the process.
pub static GLOBAL: Global = Global::new(&PROVIDER);

pub use apex_core::introspect::{
    Census, ClassStats, HeapTotals, SegmentInfo, SpanInfo, SpanUse, ThreadStats, WalkItem,
};
pub use api::{
    free, malloc, malloc_aligned, malloc_c, realloc, stats, trim, usable_size, zalloc,
    zalloc_aligned,
};
pub use ctl::{census, for_each_thread, heap_walk, thread_stats, ThreadInfo};
pub use global_alloc::ApexAlloc;
pub use report::print_stats;
pub use stats_json::stats_json;
