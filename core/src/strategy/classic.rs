//! One classic engine behind one interface: the engine named at run
//! time ([`Kind`]), with what every engine needs on top of its blocks:
//! over-aligned allocation (a shim tag in front of the aligned address),
//! `realloc`, zeroed allocation, usage statistics, a heap dump, external
//! fragmentation and `verify`.

use core::ptr;

use super::buddy::Buddy;
use super::freelist::{Fit, FreeList};
use super::{read_tag, report, write_tag, Block, Error, Fault, Source, State, Summary, ALIGN, TAG};

/// The engines, by the names `APEX_STRATEGY` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    FirstFit,
    NextFit,
    BestFit,
    WorstFit,
    Seglist,
    Buddy,
}

impl Kind {
    /// Every engine.
    pub const ALL: [Kind; 6] = [
        Kind::FirstFit,
        Kind::NextFit,
        Kind::BestFit,
        Kind::WorstFit,
        Kind::Seglist,
        Kind::Buddy,
    ];

    /// The engine's name.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::FirstFit => "first-fit",
            Kind::NextFit => "next-fit",
            Kind::BestFit => "best-fit",
            Kind::WorstFit => "worst-fit",
            Kind::Seglist => "seglist",
            Kind::Buddy => "buddy",
        }
    }

    /// The engine named `name`.
    pub fn parse(name: &[u8]) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name().as_bytes() == name)
    }
}

// One heap per process (or per test): the size of the larger variant
// costs nothing worth a box, which `no_std` would not have anyway.
#[allow(clippy::large_enum_variant)]
enum Engine<S: Source> {
    List(FreeList<S>),
    Buddy(Buddy<S>),
}

/// Usage counters of a classic heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks handed out and freed so far.
    pub allocations: u64,
    pub frees: u64,
    /// Usable bytes of live blocks now, and at most so far.
    pub in_use: usize,
    pub peak_in_use: usize,
    /// Live blocks.
    pub live: usize,
    /// Bytes held from the source now, and at most so far.
    pub footprint: usize,
    pub peak_footprint: usize,
}

/// A classic heap: one engine, its statistics.
pub struct Classic<S: Source> {
    kind: Kind,
    engine: Engine<S>,
    stats: Stats,
}

macro_rules! each {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            Engine::List($e) => $body,
            Engine::Buddy($e) => $body,
        }
    };
}

impl<S: Source> Classic<S> {
    /// An empty heap of engine `kind` over `src`.
    pub const fn new(kind: Kind, src: S) -> Self {
        let engine = match kind {
            Kind::FirstFit => Engine::List(FreeList::new(src, Fit::First)),
            Kind::NextFit => Engine::List(FreeList::new(src, Fit::Next)),
            Kind::BestFit => Engine::List(FreeList::new(src, Fit::Best)),
            Kind::WorstFit => Engine::List(FreeList::new(src, Fit::Worst)),
            Kind::Seglist => Engine::List(FreeList::new(src, Fit::Segregated)),
            Kind::Buddy => Engine::Buddy(Buddy::new(src)),
        };
        Classic {
            kind,
            engine,
            stats: Stats {
                allocations: 0,
                frees: 0,
                in_use: 0,
                peak_in_use: 0,
                live: 0,
                footprint: 0,
                peak_footprint: 0,
            },
        }
    }

    /// The engine.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The source (for the frontend's own use of it).
    pub fn source(&mut self) -> &mut S {
        each!(&mut self.engine, e => e.source())
    }

    /// The largest request the engine serves (a frontend sends larger ones
    /// elsewhere).
    pub fn max_request(&self) -> usize {
        each!(&self.engine, e => e.max_request())
    }

    /// Whether `p` lies inside the engine's memory.
    pub fn contains(&self, p: *const u8) -> bool {
        each!(&self.engine, e => e.contains(p))
    }

    /// The counters, with the footprint of now.
    pub fn stats(&self) -> Stats {
        let (footprint, peak) = each!(&self.engine, e => e.footprint());
        Stats {
            footprint,
            peak_footprint: peak,
            ..self.stats
        }
    }

    fn count_alloc(&mut self, usable: usize) {
        let s = &mut self.stats;
        s.allocations += 1;
        s.live += 1;
        s.in_use += usable;
        s.peak_in_use = s.peak_in_use.max(s.in_use);
    }

    /// A block of at least `size` bytes, 16-byte aligned; null when the
    /// source has no more memory.
    pub fn alloc(&mut self, size: usize) -> *mut u8 {
        let p = each!(&mut self.engine, e => e.alloc(size));
        if !p.is_null() {
            // SAFETY: a live block just handed out.
            let u = unsafe { self.engine_usable(p) };
            self.count_alloc(u);
        }
        p
    }

    /// A block of at least `size` bytes aligned to `align` (a power of
    /// two). Beyond 16 bytes, the engine's block has room for the aligned
    /// address and a shim tag in front of it pointing back.
    pub fn alloc_aligned(&mut self, size: usize, align: usize) -> *mut u8 {
        if align <= ALIGN {
            return self.alloc(size);
        }
        let Some(total) = size.checked_add(align) else {
            return ptr::null_mut();
        };
        let raw = self.alloc(total);
        if raw.is_null() {
            return raw;
        }
        // The aligned address leaves room for the shim tag after `raw`.
        let q = (raw as usize + TAG + align - 1) & !(align - 1);
        // SAFETY: `q - TAG >= raw` and `q + size <= raw + total`: the tag
        // and the block lie inside the block just allocated.
        unsafe { write_tag(q - TAG, q - raw as usize, State::Shim) };
        q as *mut u8
    }

    /// As [`Self::alloc`], zeroed.
    pub fn zalloc(&mut self, size: usize) -> *mut u8 {
        let p = self.alloc(size);
        if !p.is_null() {
            // SAFETY: a fresh block of at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        p
    }

    /// The engine block holding `p`: itself, or the block a shim tag in
    /// front of it points back to.
    ///
    /// # Safety
    /// `p` must lie inside the engine's memory, 16-byte aligned.
    unsafe fn base(&self, p: *mut u8) -> *mut u8 {
        // SAFETY: the tag lies inside the engine's memory, before `p`.
        match unsafe { read_tag(p as usize - TAG) } {
            (off, Some(State::Shim)) if off >= TAG && off <= p as usize => p.wrapping_sub(off),
            _ => p,
        }
    }

    /// # Safety
    /// `p` must be a live engine block (not a shim address).
    unsafe fn engine_usable(&self, p: *mut u8) -> usize {
        // SAFETY: forwarded from the caller.
        each!(&self.engine, e => unsafe { e.usable(p) })
    }

    /// Frees `p` (null is ignored; misuse is fatal).
    ///
    /// # Safety
    /// `p` must be null or lie inside the engine's memory ([`Self::contains`]);
    /// a live block is not used afterwards.
    pub unsafe fn free(&mut self, p: *mut u8) {
        if p.is_null() {
            return;
        }
        if !(p as usize).is_multiple_of(ALIGN) {
            self.fail(Fault::InvalidFree, p as usize);
        }
        // SAFETY: forwarded from the caller; the engine checks the tags.
        unsafe {
            let b = self.base(p);
            let u = self.engine_usable(b);
            each!(&mut self.engine, e => e.free(b));
            self.stats.frees += 1;
            self.stats.live -= 1;
            self.stats.in_use -= u;
        }
    }

    #[cold]
    fn fail(&self, fault: Fault, addr: usize) -> ! {
        each!(&self.engine, e => report(e.source_ref(), fault, addr))
    }

    /// Usable bytes of the live block at `p` (from `p` on).
    ///
    /// # Safety
    /// `p` must be a live block of this heap.
    pub unsafe fn usable(&self, p: *const u8) -> usize {
        let p = p as *mut u8;
        if !(p as usize).is_multiple_of(ALIGN) {
            self.fail(Fault::InvalidFree, p as usize);
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            let b = self.base(p);
            self.engine_usable(b) - (p as usize - b as usize)
        }
    }

    /// Resizes `p` to `size` bytes keeping alignment `align`: in place
    /// when the engine can, otherwise a new block, the contents copied and
    /// the old block freed. Null (the block untouched) when out of memory.
    ///
    /// # Safety
    /// `p` must be a live block of this heap allocated with `align`.
    pub unsafe fn realloc(&mut self, p: *mut u8, align: usize, size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe {
            let b = self.base(p);
            if b == p && align <= ALIGN {
                let old = self.engine_usable(p);
                if each!(&mut self.engine, e => e.resize(p, size)) {
                    let new = self.engine_usable(p);
                    self.stats.in_use = self.stats.in_use - old + new;
                    self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
                    return p;
                }
            }
            let q = self.alloc_aligned(size, align);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, self.usable(p).min(size));
                self.free(p);
            }
            q
        }
    }

    /// Calls `f` for every block of the engine (shim tags are inside the
    /// blocks and not listed).
    pub fn dump(&self, f: &mut dyn FnMut(Block)) {
        each!(&self.engine, e => e.dump(f))
    }

    /// Walks the whole heap (see the engines' `verify`), and checks the
    /// counters against it.
    pub fn verify(&self) -> Result<Summary, Error> {
        let sum = each!(&self.engine, e => e.verify())?;
        if sum.used_blocks != self.stats.live {
            return Err(Error {
                fault: Fault::TagCorruption,
                addr: 0,
            });
        }
        Ok(sum)
    }

    /// External fragmentation for a next request of `request` bytes: free
    /// bytes in blocks too small to serve it, and all free bytes.
    pub fn fragmentation(&self, request: usize) -> (usize, usize) {
        let need = request.saturating_add(2 * TAG);
        let (mut small, mut free) = (0, 0);
        self.dump(&mut |b| {
            if b.free {
                free += b.size;
                if b.size < need {
                    small += b.size;
                }
            }
        });
        (small, free)
    }
}

/// The tag in front of `p`, if it is a shim (for frontends telling their
/// own blocks apart).
///
/// # Safety
/// The 16 bytes before `p` must be readable.
pub unsafe fn shim_offset(p: *const u8) -> Option<usize> {
    // SAFETY: as the caller guarantees.
    match unsafe { read_tag(p as usize - TAG) } {
        (off, Some(State::Shim)) => Some(off),
        _ => None,
    }
}
