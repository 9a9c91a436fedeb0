//! One intrusive doubly linked list for every list of descriptors: a
//! heap's slab queues, its free-span bins and its segments. The links live
//! in the listed items (`Span::next/prev`, `Segment::next/prev`), so a list
//! costs no memory of its own and an item knows nothing of which list holds
//! it.

use core::ptr;

/// An item with the two links a [`List`] uses.
pub trait Linked {
    /// The item's forward link.
    ///
    /// # Safety
    /// `item` must point to a valid item.
    unsafe fn next_link(item: *mut Self) -> *mut *mut Self;
    /// The item's backward link.
    ///
    /// # Safety
    /// `item` must point to a valid item.
    unsafe fn prev_link(item: *mut Self) -> *mut *mut Self;
}

/// A list of `T`, first to last.
pub struct List<T> {
    pub first: *mut T,
    pub last: *mut T,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for List<T> {}

impl<T: Linked> List<T> {
    pub const fn new() -> Self {
        List {
            first: ptr::null_mut(),
            last: ptr::null_mut(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_null()
    }

    /// Links `item` first.
    ///
    /// # Safety
    /// `item` must be valid and in no list.
    pub unsafe fn push_front(&mut self, item: *mut T) {
        // SAFETY: the caller's contract; listed items are valid.
        unsafe {
            *T::prev_link(item) = ptr::null_mut();
            *T::next_link(item) = self.first;
            if self.first.is_null() {
                self.last = item;
            } else {
                *T::prev_link(self.first) = item;
            }
        }
        self.first = item;
    }

    /// Links `item` last.
    ///
    /// # Safety
    /// As [`List::push_front`].
    pub unsafe fn push_back(&mut self, item: *mut T) {
        // SAFETY: the caller's contract; listed items are valid.
        unsafe {
            *T::next_link(item) = ptr::null_mut();
            *T::prev_link(item) = self.last;
            if self.last.is_null() {
                self.first = item;
            } else {
                *T::next_link(self.last) = item;
            }
        }
        self.last = item;
    }

    /// Unlinks `item` and clears its links. Returns whether it was first.
    ///
    /// # Safety
    /// `item` must be in this list.
    pub unsafe fn remove(&mut self, item: *mut T) -> bool {
        // SAFETY: the caller's contract; listed items are valid.
        unsafe {
            let (prev, next) = (*T::prev_link(item), *T::next_link(item));
            if prev.is_null() {
                self.first = next;
            } else {
                *T::next_link(prev) = next;
            }
            if next.is_null() {
                self.last = prev;
            } else {
                *T::prev_link(next) = prev;
            }
            *T::next_link(item) = ptr::null_mut();
            *T::prev_link(item) = ptr::null_mut();
            prev.is_null()
        }
    }

    /// The item after `item` (null at the end).
    ///
    /// # Safety
    /// `item` must be in this list.
    pub unsafe fn next(&self, item: *mut T) -> *mut T {
        // SAFETY: the caller's contract.
        unsafe { *T::next_link(item) }
    }
}

impl<T: Linked> Default for List<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node {
        next: *mut Node,
        prev: *mut Node,
    }

    impl Linked for Node {
        unsafe fn next_link(item: *mut Self) -> *mut *mut Self {
            // SAFETY: the caller's contract.
            unsafe { &raw mut (*item).next }
        }
        unsafe fn prev_link(item: *mut Self) -> *mut *mut Self {
            // SAFETY: the caller's contract.
            unsafe { &raw mut (*item).prev }
        }
    }

    fn order(l: &List<Node>) -> Vec<*mut Node> {
        let mut v = Vec::new();
        let mut cur = l.first;
        while !cur.is_null() {
            v.push(cur);
            // SAFETY: listed test nodes.
            cur = unsafe { l.next(cur) };
        }
        v
    }

    #[test]
    fn push_and_remove_keep_both_directions() {
        let mut nodes: Vec<Node> = (0..4)
            .map(|_| Node {
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
            })
            .collect();
        let p: Vec<*mut Node> = nodes.iter_mut().map(|n| n as *mut Node).collect();
        let mut l = List::new();
        // SAFETY: distinct valid nodes, each linked once.
        unsafe {
            l.push_back(p[1]);
            l.push_front(p[0]);
            l.push_back(p[2]);
            l.push_back(p[3]);
            assert_eq!(order(&l), p);
            assert!(!l.remove(p[2]));
            assert_eq!(order(&l), vec![p[0], p[1], p[3]]);
            assert!(l.remove(p[0]));
            assert_eq!((l.first, l.last), (p[1], p[3]));
            assert!(!l.remove(p[3]));
            assert!(l.remove(p[1]));
            assert!(l.is_empty() && l.last.is_null());
        }
    }
}
