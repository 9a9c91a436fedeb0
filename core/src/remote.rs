//! Remote frees: how a block freed by a thread other than its owner gets
//! back to the owner, without locks and without the owner's fast path ever
//! touching an atomic.
//!
//! Each used span has a [`ThreadFree`] word: a lock-free list of blocks
//! other threads freed, pushed with a CAS. Its low two bits hold a
//! [`Notify`] state, its top 16 bits the number of blocks on the list, so
//! the owner takes the list whole without walking it (each block there sits
//! in the freeing thread's cache). The owner moves the list into the slab's
//! `free` list only when `free` runs dry.
//!
//! # The notify protocol
//! Full slabs leave their size-class queue, so the owner would never look at
//! their thread-free word again. A full slab is therefore put in state
//! `Notify`: the first remote free that finds that state does not push its
//! block, but switches the state to `Notifying`, hands the block to the
//! owning heap's [`DelayedList`] (which the owner drains on its slow path,
//! bringing the slab back into its queue) and then resets the state to
//! `Normal`. The owner never frees a span or abandons its heap while a span
//! is `Notifying`, so the remote thread may still read the heap pointer.
//! The two steps of a hand-off run under a fork guard (see
//! `Global::fork_guard`), so a forked child never inherits a `Notifying`
//! span whose notifier does not exist there.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::block::{set_next, Block};

/// States kept in the low bits of a [`ThreadFree`] word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Notify {
    /// Remote frees push onto the page.
    Normal = 0,
    /// The page is full and out of its queue: tell the owner.
    Notify = 1,
    /// A remote thread is telling the owner right now.
    Notifying = 2,
    /// The span's one large block is freed: handed over to its owner's
    /// delayed list, or waiting, inaccessible, in its owner's quarantine.
    /// Any remote free of it is a double free, and nothing may be written
    /// into it.
    Freed = 3,
}

const STATE_MASK: usize = 3;
/// Bits 48 and up of the word count the blocks on the list, so the
/// owner takes the list without walking it (each block there sits in the
/// freeing thread's cache: a walk would be one cache miss after another).
/// A slab never holds more than 4096 blocks, well inside 16 bits.
const COUNT_SHIFT: u32 = 48;
const COUNT_ONE: usize = 1 << COUNT_SHIFT;

/// The list head stored in a thread-free word: bits 2..48, sign-extended
/// from bit 47 so upper-half (kernel) addresses survive.
#[inline(always)]
fn tf_head(word: usize) -> *mut Block {
    ((((word << 16) as isize) >> 16) as usize & !STATE_MASK) as *mut Block
}

/// The number of blocks on the list of a thread-free word.
#[inline(always)]
fn tf_count(word: usize) -> u32 {
    (word >> COUNT_SHIFT) as u32
}

/// A thread-free word from a head, a count and a state.
#[inline(always)]
fn tf_pack(head: *mut Block, count: u32, state: usize) -> usize {
    (head as usize & (COUNT_ONE - 1)) | ((count as usize) << COUNT_SHIFT) | state
}

/// What [`ThreadFree::push`] did with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemotePush {
    /// The block is on the span's thread-free list.
    Pushed,
    /// The slab is parked full (`Notify`); nothing was done.
    MustNotify,
    /// The caller now holds `Notifying` and must hand the block over.
    Notifying,
    /// The span is in state `Freed`: nothing was done (a double free).
    Freed,
}

/// The thread-free word of a used span: blocks other threads freed, plus
/// the [`Notify`] state (see the module documentation).
#[repr(transparent)]
pub struct ThreadFree(AtomicUsize);

impl ThreadFree {
    /// An empty list in state `Normal`.
    pub const fn new() -> Self {
        ThreadFree(AtomicUsize::new(0))
    }

    /// Empties the word and sets state `Normal` (a span being set up or
    /// retired; nobody else may use it).
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Sets state `Notify` on an empty word, for a span that starts out
    /// full (a large block): its remote free notifies the owner.
    pub fn arm(&self) {
        self.0.store(Notify::Notify as usize, Ordering::Release);
    }

    /// Pushes a block freed by another thread.
    ///
    /// When the page is in state `Notify` the block is *not* pushed: with
    /// `may_notify` the state becomes `Notifying` and the caller must hand
    /// the block to the owner and then call [`ThreadFree::end_notifying`]
    /// ([`RemotePush::Notifying`]); without it nothing changes
    /// ([`RemotePush::MustNotify`]), so the caller can first make the
    /// hand-off safe against `fork` and then call again.
    ///
    /// # Safety
    /// `b` must be a live block of the span this word belongs to, given up
    /// by the caller.
    pub unsafe fn push(&self, b: *mut Block, key: usize, may_notify: bool) -> RemotePush {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let state = cur & STATE_MASK;
            if state == Notify::Freed as usize {
                // The block is inaccessible: it must not be written.
                return RemotePush::Freed;
            }
            let new = if state == Notify::Notify as usize {
                if !may_notify {
                    return RemotePush::MustNotify;
                }
                (cur & !STATE_MASK) | Notify::Notifying as usize
            } else {
                let head = tf_head(cur);
                // SAFETY: `b` is ours until the CAS publishes it.
                unsafe { set_next(b, head, key) };
                tf_pack(b, tf_count(cur) + 1, state)
            };
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if state == Notify::Notify as usize => return RemotePush::Notifying,
                Ok(_) => return RemotePush::Pushed,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Ends a `Notifying` phase in state `then`: `Normal` for a slab,
    /// `Freed` for a large block (its one block has been freed, so any
    /// further remote free of it is a double free).
    pub fn end_notifying(&self, then: Notify) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let new = (cur & !STATE_MASK) | then as usize;
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sets the notify state, waiting out a remote `Notifying` phase.
    /// Setting `Notify` succeeds only while `thread_free` is empty (a slab
    /// with pending remote frees is not full); returns whether it was set.
    pub fn set_notify(&self, want: Notify) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur & STATE_MASK == Notify::Notifying as usize {
                core::hint::spin_loop();
                cur = self.0.load(Ordering::Acquire);
                continue;
            }
            if want == Notify::Notify && cur & !STATE_MASK != 0 {
                return false;
            }
            let new = (cur & !STATE_MASK) | want as usize;
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes every remotely freed block, keeping the state bits. Returns the
    /// list head and the number of blocks on it.
    pub fn take(&self) -> (*mut Block, u32) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur & !STATE_MASK == 0 {
                return (ptr::null_mut(), 0);
            }
            match self.0.compare_exchange_weak(
                cur,
                cur & STATE_MASK,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (tf_head(cur), tf_count(cur)),
                Err(actual) => cur = actual,
            }
        }
    }

    /// The notify state.
    pub fn state(&self) -> usize {
        self.0.load(Ordering::Acquire) & STATE_MASK
    }

    /// How many blocks are on the list (read from the word itself, no
    /// block is touched).
    pub fn count(&self) -> u32 {
        tf_count(self.0.load(Ordering::Acquire))
    }

    /// Head of the remote list without taking it (for checks by the owner,
    /// who is the only one that ever removes blocks from it).
    pub fn peek(&self) -> *mut Block {
        tf_head(self.0.load(Ordering::Acquire))
    }
}

impl Default for ThreadFree {
    fn default() -> Self {
        Self::new()
    }
}

/// A heap's delayed-free list: blocks of its full slabs that other threads
/// handed over through the notify protocol. Any thread pushes; the owner
/// takes the whole list.
pub struct DelayedList(AtomicUsize);

impl DelayedList {
    pub const fn new() -> Self {
        DelayedList(AtomicUsize::new(0))
    }

    /// Pushes a block (any thread).
    ///
    /// # Safety
    /// `b` must be a block the caller gives up, writable, and `key` the
    /// owner's link key.
    pub unsafe fn push(&self, b: *mut Block, key: usize) {
        let mut head = self.0.load(Ordering::Relaxed);
        loop {
            // SAFETY: `b` is ours until the CAS publishes it.
            unsafe { set_next(b, head as *mut Block, key) };
            match self.0.compare_exchange_weak(
                head,
                b as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Takes every block pushed so far (the owner), as a list linked with
    /// the owner's key; null when empty. Cheap when empty: one load.
    pub fn take(&self) -> *mut Block {
        if self.0.load(Ordering::Relaxed) == 0 {
            return ptr::null_mut();
        }
        self.0.swap(0, Ordering::Acquire) as *mut Block
    }
}

impl Default for DelayedList {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::next_of;

    #[test]
    fn remote_frees_are_counted_in_the_word() {
        let mut blocks = [[0usize; 2]; 5];
        let word = ThreadFree::new();
        let key = 0x1234_5678_9abc_def1;
        for b in blocks.iter_mut() {
            // SAFETY: each block is a distinct writable pair of words.
            let r = unsafe { word.push(b.as_mut_ptr() as *mut Block, key, false) };
            assert_eq!(r, RemotePush::Pushed);
        }
        let last = blocks[4].as_mut_ptr() as *mut Block;
        assert_eq!(word.peek(), last);
        let (head, n) = word.take();
        assert_eq!((head, n), (last, 5));
        assert_eq!(word.take(), (ptr::null_mut(), 0));
        // The links still chain all five, newest first.
        let mut cur = head;
        let mut seen = 0;
        while !cur.is_null() {
            seen += 1;
            // SAFETY: blocks of this test, linked above.
            cur = unsafe { next_of(cur, key) };
        }
        assert_eq!(seen, 5);
        // Upper-half addresses keep their sign through the packing.
        let high = 0xffff_8000_1234_5670usize as *mut Block;
        assert_eq!(tf_head(tf_pack(high, 7, 2)), high);
        assert_eq!(tf_count(tf_pack(high, 7, 2)), 7);
    }
}
