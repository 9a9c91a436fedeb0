//! The bootstrap arena: a static bump allocator for requests made while the
//! allocator is initialising itself on the same thread (for example by a
//! libc function it calls that allocates). Blocks are never reused; freeing
//! one is a no-op. Each block is preceded by a 16-byte header holding its
//! size, for `realloc` and `malloc_usable_size`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

const ARENA_SIZE: usize = 256 * 1024;
const HEADER: usize = 16;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);
// SAFETY: disjoint ranges are handed out by an atomic bump pointer.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    ARENA.0.get() as usize
}

/// Allocates from the arena; null when it is exhausted.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(HEADER);
    let mut cur = NEXT.load(Ordering::Relaxed);
    loop {
        let start = (base() + cur + HEADER + align - 1) & !(align - 1);
        let Some(end) = start.checked_add(size) else {
            return core::ptr::null_mut();
        };
        if end > base() + ARENA_SIZE {
            return core::ptr::null_mut();
        }
        match NEXT.compare_exchange_weak(cur, end - base(), Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                // SAFETY: [start - HEADER, end) is ours alone now.
                unsafe { ((start - HEADER) as *mut usize).write(size) };
                return start as *mut u8;
            }
            Err(c) => cur = c,
        }
    }
}

/// Whether `p` points into the arena.
#[inline(always)]
pub fn contains(p: *const u8) -> bool {
    (p as usize).wrapping_sub(base()) < ARENA_SIZE
}

/// The requested size of an arena block.
pub fn size_of(p: *const u8) -> usize {
    // SAFETY: arena blocks have their size in the header before them.
    unsafe { ((p as usize - HEADER) as *const usize).read() }
}
