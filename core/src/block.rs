//! Free blocks and the links stored inside them.
//!
//! Every link stored inside a free block is encoded with a secret key and
//! the block's own address (safe-linking), so a leaked or overwritten link
//! does not give an attacker a usable pointer.

/// A free block; its first word is the encoded link to the next one.
#[repr(C)]
pub struct Block {
    next: usize,
}

/// Encodes the link stored at `slot`.
#[inline(always)]
pub fn encode(next: *mut Block, slot: *mut Block, key: usize) -> usize {
    (next as usize) ^ (slot as usize).rotate_left(23) ^ key
}

/// Decodes the link stored at `slot`.
#[inline(always)]
pub fn decode(stored: usize, slot: *mut Block, key: usize) -> *mut Block {
    (stored ^ (slot as usize).rotate_left(23) ^ key) as *mut Block
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
    }
}
