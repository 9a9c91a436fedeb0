//! The medians the report and the chart are made from.

/// Random actions at one thread count.
pub struct Speed {
    pub threads: usize,
    /// Actions per CPU-second, `[allocator][max size]`.
    pub rate: Vec<Vec<f64>>,
    /// Percentage of reallocations that moved the block, same indices.
    pub moved: Vec<Vec<f64>>,
}

/// The memory shapes of one allocator, each in % of the arena.
pub struct Memory {
    pub name: &'static str,
    pub efficiency: f64,
    /// 1000-byte blocks CPU 0 got.
    pub fill: f64,
    /// 1000-byte blocks CPU 1 got after CPU 0 freed all of its own.
    pub reuse: f64,
    pub largest: f64,
}
