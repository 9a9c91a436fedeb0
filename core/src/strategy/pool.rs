//! Fixed-size allocation: a slab object cache and a typed [`Pool<T>`] on
//! top of it.
//!
//! A [`SlabCache`] serves objects of one size from slabs of [`SLAB`]
//! bytes aligned to their size (so an object's slab is its address with
//! the low bits cleared). The optional constructor runs once per object,
//! when its slab is created; a freed object keeps its constructed state
//! and is handed out again as it was (the free list is a stack of object
//! indices in the slab header, not links written into the objects). Slabs
//! with free objects are on a partial list; a slab whose objects are all
//! free is kept for reuse (slabs are never given back: the point of the
//! cache is that its memory stays ready).
//!
//! ```text
//! slab: | magic | next | prev | free count | free-index stack ... | objects ... |
//! ```

use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};

use super::{check_word, report, Fault, Source, State};

/// Bytes of a slab.
pub const SLAB: usize = 64 << 10;
/// The largest object a slab cache serves.
pub const MAX_OBJECT: usize = SLAB / 8;

/// A slab cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Objects handed out and freed so far.
    pub allocations: u64,
    pub frees: u64,
    /// Objects handed out and not freed.
    pub live: usize,
    /// Slabs held.
    pub slabs: usize,
    /// Constructor calls (once per object ever carved).
    pub constructed: u64,
}

#[repr(C)]
struct SlabHead {
    /// Check word of the slab's address (a pointer into something else
    /// fails it).
    magic: usize,
    next: *mut SlabHead,
    prev: *mut SlabHead,
    free: usize,
    // Followed by the free-index stack (u16 each), then the objects.
}

/// A cache of objects of one size and alignment.
pub struct SlabCache<S: Source> {
    src: S,
    size: usize,
    /// Offset of the first object in a slab.
    first: usize,
    per_slab: usize,
    ctor: Option<fn(*mut u8)>,
    /// Slabs with at least one free object.
    partial: *mut SlabHead,
    stats: CacheStats,
}

// SAFETY: the cache owns its slabs; moving it to another thread moves that
// ownership (the raw pointers are into memory only it uses).
unsafe impl<S: Source + Send> Send for SlabCache<S> {}

impl<S: Source> SlabCache<S> {
    /// A cache of objects of `size` bytes aligned to `align` (a power of
    /// two), with an optional constructor run once per object. `None`
    /// when the object is larger than [`MAX_OBJECT`].
    pub fn new(src: S, size: usize, align: usize, ctor: Option<fn(*mut u8)>) -> Option<Self> {
        let align = align.max(8);
        let size = size.max(1).checked_add(align - 1)? & !(align - 1);
        if size > MAX_OBJECT || !align.is_power_of_two() || align > SLAB / 8 {
            return None;
        }
        // The most objects whose index stack and bodies fit.
        let mut n = (SLAB - size_of::<SlabHead>()) / (size + 2);
        let first = loop {
            let first = (size_of::<SlabHead>() + 2 * n + align - 1) & !(align - 1);
            if first + n * size <= SLAB {
                break first;
            }
            n -= 1;
        };
        Some(SlabCache {
            src,
            size,
            first,
            per_slab: n,
            ctor,
            partial: ptr::null_mut(),
            stats: CacheStats::default(),
        })
    }

    /// Object size (rounded up to the alignment).
    pub fn object_size(&self) -> usize {
        self.size
    }

    /// Objects in one slab.
    pub fn per_slab(&self) -> usize {
        self.per_slab
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn stack(s: *mut SlabHead) -> *mut u16 {
        s.wrapping_add(1).cast()
    }

    /// An object (constructed, or as its last user left it); `None` when
    /// the source has no more memory.
    pub fn alloc(&mut self) -> Option<NonNull<u8>> {
        if self.partial.is_null() && !self.grow() {
            return None;
        }
        let s = self.partial;
        // SAFETY: `s` is a live slab of this cache with a free object.
        unsafe {
            (*s).free -= 1;
            let i = *Self::stack(s).add((*s).free) as usize;
            if (*s).free == 0 {
                self.partial = (*s).next;
                if !self.partial.is_null() {
                    (*self.partial).prev = ptr::null_mut();
                }
            }
            self.stats.allocations += 1;
            self.stats.live += 1;
            NonNull::new(s.cast::<u8>().add(self.first + i * self.size))
        }
    }

    /// Returns an object to its slab.
    ///
    /// # Safety
    /// `p` must be an object of this cache, not used afterwards. A pointer
    /// into memory no slab holds is reported as an invalid free; one not
    /// at an object start, or an object already free, likewise (freeing
    /// twice is found by a scan of the slab's free indices).
    pub unsafe fn free(&mut self, p: NonNull<u8>) {
        let addr = p.as_ptr() as usize;
        let s = (addr & !(SLAB - 1)) as *mut SlabHead;
        // SAFETY: for an object of this cache, `s` is its slab, whose
        // header and stack we own; the magic check rejects other memory
        // before anything else is read.
        unsafe {
            if (*s).magic != check_word(s as usize, self.size, State::Fence) {
                report(&self.src, Fault::InvalidFree, addr);
            }
            let off = addr - s as usize;
            if off < self.first || !(off - self.first).is_multiple_of(self.size) {
                report(&self.src, Fault::InvalidFree, addr);
            }
            let i = (off - self.first) / self.size;
            let stack = Self::stack(s);
            let free = (*s).free;
            if i >= self.per_slab || (0..free).any(|k| *stack.add(k) as usize == i) {
                report(&self.src, Fault::DoubleFree, addr);
            }
            *stack.add(free) = i as u16;
            (*s).free = free + 1;
            if free == 0 {
                (*s).prev = ptr::null_mut();
                (*s).next = self.partial;
                if !self.partial.is_null() {
                    (*self.partial).prev = s;
                }
                self.partial = s;
            }
        }
        self.stats.frees += 1;
        self.stats.live -= 1;
    }

    /// Adds a slab, constructing its objects.
    fn grow(&mut self) -> bool {
        let Some((p, _)) = self.src.grow(SLAB, SLAB) else {
            return false;
        };
        let s = p.as_ptr().cast::<SlabHead>();
        // SAFETY: a fresh range of at least SLAB bytes aligned to SLAB.
        unsafe {
            s.write(SlabHead {
                magic: check_word(s as usize, self.size, State::Fence),
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                free: self.per_slab,
            });
            // Lowest index on top, so objects are handed out in order.
            for k in 0..self.per_slab {
                *Self::stack(s).add(k) = (self.per_slab - 1 - k) as u16;
            }
            if let Some(ctor) = self.ctor {
                for i in 0..self.per_slab {
                    ctor(s.cast::<u8>().add(self.first + i * self.size));
                }
                self.stats.constructed += self.per_slab as u64;
            }
        }
        self.partial = s;
        self.stats.slabs += 1;
        true
    }
}

/// A pool of values of type `T`: a slab cache of `T`-sized objects.
pub struct Pool<T, S: Source> {
    cache: SlabCache<S>,
    _t: PhantomData<T>,
}

impl<T, S: Source> Pool<T, S> {
    /// An empty pool; `None` when `T` is larger than [`MAX_OBJECT`].
    pub fn new(src: S) -> Option<Self> {
        Some(Pool {
            cache: SlabCache::new(src, size_of::<T>(), align_of::<T>(), None)?,
            _t: PhantomData,
        })
    }

    /// Moves `value` into the pool; `None` (and `value` dropped) when out
    /// of memory.
    pub fn alloc(&mut self, value: T) -> Option<NonNull<T>> {
        let p = self.cache.alloc()?.cast::<T>();
        // SAFETY: a free object of `T`'s size and alignment.
        unsafe { p.as_ptr().write(value) };
        Some(p)
    }

    /// Drops the value at `p` and returns its slot.
    ///
    /// # Safety
    /// `p` must come from [`Pool::alloc`] of this pool and not be used
    /// afterwards.
    pub unsafe fn free(&mut self, p: NonNull<T>) {
        // SAFETY: a live value of this pool, dropped once, then its slot
        // returned.
        unsafe {
            ptr::drop_in_place(p.as_ptr());
            self.cache.free(p.cast());
        }
    }

    /// The counters of the underlying cache.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}
