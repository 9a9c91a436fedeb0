//! ApexAlloc's allocator core.
//!
//! `#![no_std]` and OS-independent: it obtains memory only through a
//! [`provider::PageProvider`], which the hosted (mmap) and bare-metal (buddy)
//! frontends implement.
//!
//! Layers, each depending only on those above it in this list:
//! - [`provider`]: the page-provider contract;
//! - [`layout`], [`size_class`]: geometry and size classes;
//! - [`segment_map`], [`segment`]: aligned segments and their span tags;
//! - [`page`]: slabs and their sharded free lists;
//! - [`span`]: bins of free spans;
//! - [`global`]: state shared by heaps (abandoned segments, caches, huge
//!   blocks);
//! - [`heap`]: per-thread/per-CPU heaps, the allocation and free paths.
//!
//! Hardening built in from the start: free-list links are encoded with a
//! secret key and their own address; links leaving their segment are
//! reported as corruption; frees of pointers that are not live block starts
//! are reported as invalid or double frees; segment headers carry a keyed
//! cookie. Reports go through [`provider::PageProvider::fatal`] as one line
//! starting `apexalloc: fatal: `.

#![cfg_attr(not(test), no_std)]

pub mod abandoned;
pub mod bins;
pub mod block;
pub mod cache;
pub mod fatal;
pub mod fork;
pub mod global;
pub mod heap;
pub mod layout;
pub mod list;
pub mod options;
pub mod pool;
pub mod provider;
pub mod queues;
pub mod remote;
pub mod segment;
pub mod segment_map;
pub mod size_class;
pub mod span;
pub mod stats;

pub use global::Global;
pub use heap::{owns, snapshot, usable_size, Heap};
pub use provider::{Capabilities, PageProvider};
pub use stats::Snapshot;
