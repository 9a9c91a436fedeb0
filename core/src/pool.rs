//! A pool of fixed-size metadata records (the heap structs), carved from
//! chunks that `Global` reserves from the provider (so they are counted
//! like every other reservation). Records are reused, never returned: a
//! process with N threads alive at once keeps about N records.
//!
//! Each chunk starts with a header holding a bitmap of its live records, so
//! the pool can visit every live record (statistics) and find a free one
//! without links stored in freed records.

use core::ptr;

/// Bytes of one chunk.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Records are aligned to this (a cache line).
const RECORD_ALIGN: usize = 64;
/// Room for the chunk header before the first record.
const HEADER: usize = RECORD_ALIGN;

#[repr(C)]
struct Chunk {
    next: *mut Chunk,
    /// Bit `i`: record `i` is live.
    live: u64,
    /// Records carved so far.
    carved: u32,
}

/// Records of one size, in chunks.
pub struct MetaPool {
    chunks: *mut Chunk,
}

// SAFETY: the pool is used under a lock; its chunks belong to it alone.
unsafe impl Send for MetaPool {}

/// Records of `size` bytes that fit in a chunk (at most 64, one bitmap).
pub const fn records_per_chunk(size: usize) -> usize {
    let stride = (size + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1);
    let n = (CHUNK_SIZE - HEADER) / stride;
    if n > 64 {
        64
    } else {
        n
    }
}

impl MetaPool {
    pub const fn new() -> Self {
        MetaPool {
            chunks: ptr::null_mut(),
        }
    }

    /// A free record of `size` bytes (always the same size for one pool),
    /// marked live: a freed one, or a new one, getting a fresh chunk from
    /// `new_chunk(CHUNK_SIZE)` (committed, writable memory) when needed.
    /// Its contents are whatever the last user left, or zero.
    pub fn take(
        &mut self,
        size: usize,
        new_chunk: impl FnOnce(usize) -> Option<usize>,
    ) -> Option<*mut u8> {
        let per_chunk = records_per_chunk(size);
        let stride = (size + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1);
        // SAFETY: listed chunks are ours and initialised.
        unsafe {
            // A freed record first, then a new one in the newest chunk.
            let mut c = self.chunks;
            while !c.is_null() {
                let free = !(*c).live & ((1u64 << (*c).carved) - 1);
                if free != 0 {
                    let i = free.trailing_zeros() as usize;
                    (*c).live |= 1 << i;
                    return Some((c as *mut u8).add(HEADER + i * stride));
                }
                c = (*c).next;
            }
            let c = self.chunks;
            if !c.is_null() && ((*c).carved as usize) < per_chunk {
                let i = (*c).carved as usize;
                (*c).carved += 1;
                (*c).live |= 1 << i;
                return Some((c as *mut u8).add(HEADER + i * stride));
            }
            let c = new_chunk(CHUNK_SIZE)? as *mut Chunk;
            c.write(Chunk {
                next: self.chunks,
                live: 1,
                carved: 1,
            });
            self.chunks = c;
            Some((c as *mut u8).add(HEADER))
        }
    }

    /// Marks a record free for reuse.
    ///
    /// # Safety
    /// `record` must come from [`MetaPool::take`] on this pool and be live;
    /// nobody may use it afterwards.
    pub unsafe fn give_back(&mut self, record: *mut u8, size: usize) {
        let stride = (size + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1);
        let c = (record as usize & !(CHUNK_SIZE - 1)) as *mut Chunk;
        let i = (record as usize - c as usize - HEADER) / stride;
        // SAFETY: records live inside their chunk, which starts on a
        // `CHUNK_SIZE` boundary (see `Global::reserve_meta`).
        unsafe { (*c).live &= !(1 << i) };
    }

    /// Calls `f` on every live record.
    pub fn for_each_live(&self, size: usize, mut f: impl FnMut(*mut u8)) {
        let stride = (size + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1);
        let mut c = self.chunks;
        // SAFETY: listed chunks are ours and initialised.
        unsafe {
            while !c.is_null() {
                let mut live = (*c).live;
                while live != 0 {
                    let i = live.trailing_zeros() as usize;
                    live &= live - 1;
                    f((c as *mut u8).add(HEADER + i * stride));
                }
                c = (*c).next;
            }
        }
    }
}

impl Default for MetaPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, Layout};

    fn chunk(len: usize) -> Option<usize> {
        // SAFETY: non-zero size; leaked on purpose (test).
        Some(unsafe { alloc_zeroed(Layout::from_size_align(len, CHUNK_SIZE).unwrap()) } as usize)
    }

    #[test]
    fn records_are_reused_and_visited() {
        let mut pool = MetaPool::new();
        let size = 5000;
        let per = records_per_chunk(size);
        let recs: Vec<*mut u8> = (0..per + 3)
            .map(|_| pool.take(size, chunk).unwrap())
            .collect();
        let mut uniq = recs.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), recs.len(), "records handed out twice");
        for w in uniq.windows(2) {
            assert!(w[1] as usize - w[0] as usize >= size, "records overlap");
        }
        let mut n = 0;
        pool.for_each_live(size, |_| n += 1);
        assert_eq!(n, per + 3);
        // SAFETY: live records of this pool.
        unsafe { pool.give_back(recs[1], size) };
        let mut n = 0;
        pool.for_each_live(size, |r| {
            assert_ne!(r, recs[1]);
            n += 1
        });
        assert_eq!(n, per + 2);
        assert_eq!(
            pool.take(size, |_| None),
            Some(recs[1]),
            "a freed record is reused first"
        );
    }
}
