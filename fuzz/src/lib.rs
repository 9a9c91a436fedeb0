//! libFuzzer harness for ApexAlloc's core.
//!
//! Two targets share this library: `ops` runs operation sequences against
//! a shadow model; `corrupt` adds the attacks of a program with a heap bug
//! and accepts only two ends: the allocator keeps its promises for every
//! block the attacks did not touch, or it stops through its fatal path.
//!
//! - [`arena`]: the page provider, one fixed arena reset between inputs;
//! - [`api`]: every call into the core;
//! - [`model`]: the shadow model and the checks of each new block;
//! - [`engine`]: input decoding and the operations;
//! - [`attack`]: the corruption operations.

pub mod api;
pub mod arena;
pub mod attack;
pub mod engine;
pub mod model;

pub use engine::{run, Mode, Outcome};

#[cfg(test)]
mod tests;
