//! The `apex` command's parts: finding the library, running a program under
//! it, reading the statistics document it writes, and presenting it as
//! tables, a terminal summary and a picture of the heap.
//!
//! The command runs with the system allocator; the programs it runs get
//! `libapexalloc.so` through `LD_PRELOAD`.

pub mod draw;
pub mod library;
pub mod render;
pub mod runner;
pub mod snapshot;
pub mod summary;
pub mod table;
pub mod units;
