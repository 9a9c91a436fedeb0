//! Free blocks and the links stored inside them.
//!
//! Every link stored inside a free block is encoded with its slab's secret
//! and the block's own address (one `xor` each), so freed memory shows no
//! heap pointers, and a link copied from one slot to another decodes off
//! by the two slots' difference. The encoding alone does not make a link
//! unforgeable: the checks that a popped link lands on a carved block of
//! the same slab, and the live-block bitmap (see `crate::live`), do that.
//! (A multiplicative tweak of the address would send a copied link further
//! away, at two more instructions on every malloc and free; the bitmap
//! already refuses a copied link that lands on a live block.)

/// A free block; its first word is the encoded link to the next one.
#[repr(C)]
pub struct Block {
    next: usize,
}

/// The pad that hides the link stored at `slot`.
#[inline(always)]
fn pad(slot: *mut Block, key: usize) -> usize {
    (slot as usize) ^ key
}

/// Encodes the link stored at `slot`.
#[inline(always)]
pub fn encode(next: *mut Block, slot: *mut Block, key: usize) -> usize {
    (next as usize) ^ pad(slot, key)
}

/// Decodes the link stored at `slot`.
#[inline(always)]
pub fn decode(stored: usize, slot: *mut Block, key: usize) -> *mut Block {
    (stored ^ pad(slot, key)) as *mut Block
}

/// Reads the next link of `b`.
///
/// # Safety
/// `b` must point to a readable block.
#[inline(always)]
pub unsafe fn next_of(b: *mut Block, key: usize) -> *mut Block {
    // SAFETY: the caller guarantees `b` is readable.
    decode(unsafe { (*b).next }, b, key)
}

/// Writes the next link of `b`.
///
/// # Safety
/// `b` must point to a writable block nobody else uses.
#[inline(always)]
pub unsafe fn set_next(b: *mut Block, next: *mut Block, key: usize) {
    // SAFETY: the caller guarantees `b` is writable and ours.
    unsafe { (*b).next = encode(next, b, key) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr;

    #[test]
    fn encoded_links_round_trip_and_hide_pointers() {
        let slot = 0x7f00_0001_0000usize as *mut Block;
        let next = 0x7f00_0001_0040usize as *mut Block;
        let key = 0x9e37_79b9_7f4a_7c15;
        let e = encode(next, slot, key);
        assert_ne!(e, next as usize);
        assert_eq!(decode(e, slot, key), next);
        assert_eq!(
            decode(encode(ptr::null_mut(), slot, key), slot, key),
            ptr::null_mut()
        );
        // A link copied to another slot decodes somewhere else.
        let other = 0x7f00_0001_0080usize as *mut Block;
        let moved = decode(e, other, key) as usize;
        assert_eq!(moved, next as usize ^ 0x80, "{moved:#x}");
        // The stored word shows neither the link nor the slot.
        assert_ne!(e & !0xffff, next as usize & !0xffff);
    }
}
