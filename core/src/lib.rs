//! ApexAlloc's allocator core.
//!
//! `#![no_std]` and OS-independent: it obtains memory only through a
//! [`provider::PageProvider`], which the hosted (mmap) and bare-metal (buddy)
//! frontends implement.
//!
//! Layers, each depending only on those above it in this list (a test,
//! `layers_depend_only_downward`, keeps it so):
//! - [`provider`]: the page-provider contract; [`fatal`], [`options`],
//!   [`harden`] (the mitigation flags and presets); [`stats`];
//! - [`strategy`]: the classic engines (fit policies over boundary-tagged
//!   free lists, segregated lists, a byte buddy, pools and slab caches), a
//!   family of their own over any page provider, sharing nothing with the
//!   layers below;
//! - [`fit`]: two-level segregated best fit over chunks a frontend hands
//!   it (the kernel heap's blocks above the slab sizes);
//! - [`layout`], [`size_class`]: geometry and size classes;
//! - [`list`]: the one intrusive list type; [`live`]: the live-block
//!   bitmap;
//! - [`block`]: free blocks and their encoded links;
//! - [`remote`]: remote frees (the thread-free word, the notify protocol,
//!   delayed frees);
//! - [`span`]: span descriptors and a slab's free lists;
//! - [`segment_map`], [`segment`]: aligned segments, their span tiling and
//!   boundary tags;
//! - [`bins`]: a heap's free spans, carving and coalescing;
//!   [`queues`]: a heap's slab queues and direct table;
//! - [`cache`], [`abandoned`], [`pool`], [`fork`], [`registry`]: the
//!   shared pieces (cached reservations, abandoned segments, heap records,
//!   fork safety, the list of live segments);
//! - [`global`]: state shared by heaps, huge blocks, provider calls;
//! - [`heap`]: per-thread/per-CPU heaps, the allocation and free paths;
//! - [`introspect`]: the heap walk and the statistics computed from it.
//!
//! Hardening runs through every layer, selected at run time by
//! [`harden::Mitigations`] (presets `off`, `default`, `full`): checked
//! free-list links, the live-block bitmap, guard pages, shuffled carving,
//! canaries, zeroing, quarantines and size-class isolation. Reports go
//! through [`provider::PageProvider::fatal`] as one line,
//! `apexalloc: fatal: <what> (<address>, <size>)`.

#![cfg_attr(not(test), no_std)]

pub mod abandoned;
pub mod bins;
pub mod block;
pub mod cache;
pub mod fatal;
pub mod fit;
pub mod fork;
pub mod global;
pub mod harden;
pub mod heap;
pub mod introspect;
pub mod layout;
pub mod list;
pub mod live;
pub mod options;
pub mod pool;
pub mod provider;
pub mod queues;
pub mod registry;
pub mod remote;
pub mod segment;
pub mod segment_map;
pub mod size_class;
pub mod span;
pub mod stats;
pub mod strategy;

pub use global::Global;
pub use heap::{owns, snapshot, snapshot_from, usable_size, usable_size_or, Heap};
pub use provider::{Capabilities, PageProvider};
pub use stats::Snapshot;

/// The layering the crate documentation describes, checked on the sources.
#[cfg(test)]
mod layering {
    /// Modules from the bottom layer up; each may use only those before it.
    const ORDER: &[&str] = &[
        "provider",
        "layout",
        "size_class",
        "fatal",
        "options",
        "harden",
        "stats",
        "strategy",
        "fit",
        "list",
        "live",
        "block",
        "remote",
        "span",
        "segment_map",
        "segment",
        "bins",
        "queues",
        "cache",
        "abandoned",
        "pool",
        "fork",
        "registry",
        "global",
        "heap",
        "introspect",
    ];

    fn sources(module: &str) -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let file = format!("{dir}/{module}.rs");
        if let Ok(text) = std::fs::read_to_string(&file) {
            return vec![(file, text)];
        }
        std::fs::read_dir(format!("{dir}/{module}"))
            .unwrap_or_else(|e| panic!("module {module}: {e}"))
            .map(|e| {
                let path = e.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                (path.display().to_string(), text)
            })
            .collect()
    }

    #[test]
    fn layers_depend_only_downward() {
        for (rank, module) in ORDER.iter().enumerate() {
            for (file, text) in sources(module) {
                for (i, _) in text.match_indices("crate::") {
                    let name: String = text[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let Some(other) = ORDER.iter().position(|m| *m == name) else {
                        continue;
                    };
                    assert!(
                        other <= rank,
                        "{file}: `{module}` uses `{name}`, a layer above it"
                    );
                }
            }
        }
        // Every module is placed in the order.
        let lib = include_str!("lib.rs");
        for line in lib.lines() {
            if let Some(m) = line.strip_prefix("pub mod ") {
                let m = m.trim_end_matches(';');
                assert!(
                    ORDER.contains(&m),
                    "module `{m}` missing from the layer order"
                );
            }
        }
    }
}
