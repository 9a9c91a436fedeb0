//! Which thread uses which heap: a fixed table from a heap's address to its
//! thread's kernel id (`gettid`), for the reports that list threads and
//! segment owners. Filled when a thread's heap is created and emptied when
//! it is handed back at thread exit; it costs nothing on any allocation
//! path.
//!
//! Open addressing with linear probing over atomics, no lock: a binding
//! claims an empty slot with a compare-and-swap, an unbinding clears it.
//! Lookups (reports only) scan the whole table, so clearing a slot never
//! breaks a probe chain. A process with more threads alive at once than
//! the table has slots leaves the extra ones unnamed (id 0).

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Slots of the table (threads named at once).
const SLOTS: usize = 4096;

static HEAPS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static TIDS: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];

/// The calling thread's kernel id.
pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

fn home(heap: usize) -> usize {
    // Heap records are 64-byte aligned: drop those bits, then mix.
    (apex_core::global::mix64(heap >> 6)) % SLOTS
}

/// Records that the calling thread uses `heap`.
pub(crate) fn bind(heap: usize) {
    let tid = gettid();
    let start = home(heap);
    for i in 0..SLOTS {
        let slot = (start + i) % SLOTS;
        if HEAPS[slot]
            .compare_exchange(0, heap, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            TIDS[slot].store(tid, Ordering::Release);
            return;
        }
    }
}

/// Forgets `heap` (its thread is exiting).
pub(crate) fn unbind(heap: usize) {
    if let Some(slot) = find(heap) {
        TIDS[slot].store(0, Ordering::Relaxed);
        HEAPS[slot].store(0, Ordering::Release);
    }
}

fn find(heap: usize) -> Option<usize> {
    if heap == 0 {
        return None;
    }
    let start = home(heap);
    (0..SLOTS)
        .map(|i| (start + i) % SLOTS)
        .find(|&s| HEAPS[s].load(Ordering::Acquire) == heap)
}

/// The kernel id of the thread using `heap`; 0 when unknown (the shared
/// heap, a heap whose thread is gone, or a full table).
pub(crate) fn tid_of(heap: usize) -> u32 {
    find(heap).map_or(0, |s| TIDS[s].load(Ordering::Acquire))
}

/// In a forked child, where only the calling thread exists and has a new
/// id: forgets every binding, then binds `heap` (the caller's, or 0).
pub(crate) fn reset_in_child(heap: usize) {
    for s in 0..SLOTS {
        TIDS[s].store(0, Ordering::Relaxed);
        HEAPS[s].store(0, Ordering::Relaxed);
    }
    if heap != 0 {
        bind(heap);
    }
}
