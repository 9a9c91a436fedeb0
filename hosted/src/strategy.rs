//! The classic engines on Linux: `APEX_STRATEGY` picks one at start-up
//! instead of the default engine.
//!
//! The choice is made once, while the options are read, and never
//! changes. The default engine's paths do not look at it: its fast paths
//! are untouched, and only its slow paths (reached when a thread has no
//! heap, which with a classic engine is always) ask [`classic`], one
//! relaxed load.
//!
//! A classic engine is one heap for the whole process behind one lock (a
//! `pthread_mutex_t`, held across `fork` by the handlers registered at
//! start): correct for threaded programs, not fast. Requests below
//! `APEX_MMAP_THRESHOLD` (and within the engine's largest block) come from
//! the engine, whose memory is the program break (`sbrk`): the break grows
//! as the heap needs, and falls again when the top of the heap is free.
//! When the break cannot grow, the engine continues in mappings. Larger
//! requests get a mapping each, with a tag in front of the block and one
//! at the start of the mapping (the [`apex_core::strategy`] tag
//! convention), and are unmapped when freed.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use apex_core::provider::{PageProvider, PAGE_SIZE};
use apex_core::strategy::classic::{Classic, Kind};
use apex_core::strategy::{read_tag, write_tag, Source, State, TAG};
use apex_core::Snapshot;

use crate::provider::MmapProvider;
use crate::{bootstrap, init, tls};

/// Whether a classic engine serves this process (set once, at start-up).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The engine chosen: an index into [`Kind::ALL`].
static KIND: AtomicU8 = AtomicU8::new(0);
/// `APEX_MMAP_THRESHOLD`: requests from this size on get a mapping.
pub(crate) static MMAP_THRESHOLD: AtomicUsize = AtomicUsize::new(128 << 10);

/// Sets `APEX_STRATEGY` (start-up only): `apex` or a classic engine.
pub(crate) fn set(value: &[u8]) -> bool {
    if value == b"apex" {
        ACTIVE.store(false, Ordering::Relaxed);
        return true;
    }
    match Kind::parse(value) {
        Some(k) => {
            let i = Kind::ALL.iter().position(|&x| x == k).unwrap_or(0);
            KIND.store(i as u8, Ordering::Relaxed);
            ACTIVE.store(true, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// The name of the engine serving the process.
pub(crate) fn name() -> &'static str {
    if ACTIVE.load(Ordering::Relaxed) {
        kind().name()
    } else {
        "apex"
    }
}

fn kind() -> Kind {
    Kind::ALL[KIND.load(Ordering::Relaxed) as usize % Kind::ALL.len()]
}

/// What [`classic`] has found: not yet known, the default engine, a
/// classic one.
static MODE: AtomicU8 = AtomicU8::new(MODE_UNKNOWN);
const MODE_UNKNOWN: u8 = 0;
const MODE_APEX: u8 = 1;
const MODE_CLASSIC: u8 = 2;

/// Whether a classic engine serves this process: one relaxed load once
/// start-up has finished. Called on the default engine's slow paths only;
/// before start-up has finished it finishes it first (except in the
/// thread doing it, which uses the bootstrap arena meanwhile).
#[inline(always)]
pub(crate) fn classic() -> bool {
    match MODE.load(Ordering::Relaxed) {
        MODE_APEX => false,
        MODE_CLASSIC => true,
        _ => classic_first(),
    }
}

#[cold]
#[inline(never)]
fn classic_first() -> bool {
    if !init::is_ready() {
        if tls::get() == tls::IN_INIT {
            return false;
        }
        init::ensure_global();
    }
    let on = ACTIVE.load(Ordering::Relaxed);
    MODE.store(if on { MODE_CLASSIC } else { MODE_APEX }, Ordering::Relaxed);
    on
}

// ---------------------------------------------------------------------------
// The program break as a source
// ---------------------------------------------------------------------------

/// The engine's memory: the program break, or mappings once it cannot grow.
struct Brk {
    /// The break cannot grow (another user, a limit): use mappings.
    mapped: bool,
}

/// Growth steps of the break (fewer system calls; the top is given back
/// when free anyway).
const BRK_STEP: usize = 256 << 10;

// SAFETY: ranges are fresh break or fresh mappings, page multiples aligned
// as asked, each used only by the engine; `shrink` moves the break back
// only over the tail the engine gives up. No method allocates.
unsafe impl Source for Brk {
    fn grow(&mut self, min: usize, align: usize) -> Option<(NonNull<u8>, usize)> {
        let len = min.max(BRK_STEP).checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
        if !self.mapped {
            // SAFETY: sbrk(0) only reads the break.
            let cur = unsafe { libc::sbrk(0) } as usize;
            let start = cur.checked_add(align - 1)? & !(align - 1);
            let incr = (start - cur).checked_add(len)?;
            // SAFETY: grows the break; the new range is ours alone (we hold
            // the heap lock, and nothing else in the process uses the
            // break once malloc is ours).
            let old = unsafe { libc::sbrk(incr as libc::intptr_t) };
            if old as isize != -1 && old as usize == cur {
                return NonNull::new(start as *mut u8).map(|p| (p, len));
            }
            if old as isize != -1 {
                // Someone moved the break meanwhile: give it back.
                // SAFETY: undoes exactly the growth just made.
                unsafe { libc::sbrk(-(incr as libc::intptr_t)) };
            }
            self.mapped = true;
        }
        let p = map(len.checked_add(align)?)?;
        // Keep the aligned part; unmap the rest.
        let start = (p + align - 1) & !(align - 1);
        // SAFETY: unmaps the unaligned head and the tail beyond `len` of
        // the mapping just made.
        unsafe {
            if start > p {
                libc::munmap(p as *mut libc::c_void, start - p);
            }
            let end = p + len + align;
            if end > start + len {
                libc::munmap((start + len) as *mut libc::c_void, end - start - len);
            }
        }
        NonNull::new(start as *mut u8).map(|p| (p, len))
    }

    unsafe fn shrink(&mut self, ptr: NonNull<u8>, len: usize) -> bool {
        let p = ptr.as_ptr() as usize;
        // SAFETY: sbrk(0) only reads the break.
        if self.mapped || unsafe { libc::sbrk(0) } as usize != p + len {
            return false;
        }
        // SAFETY: the tail of the break, which the engine gives up.
        unsafe { libc::sbrk(-(len as libc::intptr_t)) as isize != -1 }
    }

    fn fatal(&self, msg: &str) -> ! {
        MmapProvider.fatal(msg)
    }
}

/// A fresh anonymous mapping of `len` bytes (a page multiple).
fn map(len: usize) -> Option<usize> {
    // SAFETY: a new private anonymous mapping; no existing memory changes.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

// ---------------------------------------------------------------------------
// The one lock
// ---------------------------------------------------------------------------

struct Locked {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    heap: UnsafeCell<Option<Classic<Brk>>>,
    peak: UnsafeCell<Peak>,
}

/// The heap as it was when it last grew its live bytes by an eighth
/// (so close to its peak, at a cost of a heap walk a few dozen times in a
/// run): for the fragmentation figures of the exit report.
#[derive(Clone, Copy)]
struct Peak {
    /// Live bytes in the engine then.
    live: usize,
    /// Bytes the engine held then, free bytes among them, and free bytes
    /// in blocks too small for the request being served.
    held: usize,
    free: usize,
    unusable: usize,
}

// SAFETY: `heap` is only touched with `mutex` held.
unsafe impl Sync for Locked {}

static HEAP: Locked = Locked {
    mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    heap: UnsafeCell::new(None),
    peak: UnsafeCell::new(Peak {
        live: 0,
        held: 0,
        free: 0,
        unusable: 0,
    }),
};

/// Runs `f` on the classic heap with the lock held (creating the heap on
/// first use).
fn with<R>(f: impl FnOnce(&mut Classic<Brk>) -> R) -> R {
    // SAFETY: a static, initialised mutex; the heap is used only while it
    // is held, and `f` cannot re-enter (the engines do not allocate).
    unsafe {
        libc::pthread_mutex_lock(HEAP.mutex.get());
        let heap =
            (*HEAP.heap.get()).get_or_insert_with(|| Classic::new(kind(), Brk { mapped: false }));
        let r = f(heap);
        libc::pthread_mutex_unlock(HEAP.mutex.get());
        r
    }
}

extern "C" fn fork_prepare() {
    // SAFETY: the static mutex; released by the handlers below.
    unsafe { libc::pthread_mutex_lock(HEAP.mutex.get()) };
}

extern "C" fn fork_release() {
    // SAFETY: held since `fork_prepare`, in the parent and in the child
    // (where the thread that forked is the one that holds it).
    unsafe { libc::pthread_mutex_unlock(HEAP.mutex.get()) };
}

/// Registers the fork handlers of the lock when a classic engine is
/// active (called once, at start-up, when allocating works).
pub(crate) fn start() {
    if ACTIVE.load(Ordering::Relaxed) {
        // SAFETY: registering plain functions without captured state.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release)) };
    }
}

// ---------------------------------------------------------------------------
// Blocks with a mapping of their own
// ---------------------------------------------------------------------------

static MAPPED_ALLOCS: AtomicU64 = AtomicU64::new(0);
static MAPPED_FREES: AtomicU64 = AtomicU64::new(0);
static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// A block of `size` bytes aligned to `align` in a mapping of its own:
/// a tag at the mapping's start (its length) and one in front of the block
/// (its distance from the start).
fn map_alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(16);
    let head = if align > PAGE_SIZE {
        align + 2 * TAG
    } else {
        (2 * TAG).max(align)
    };
    let Some(len) = size
        .checked_add(head + PAGE_SIZE - 1)
        .map(|n| n & !(PAGE_SIZE - 1))
    else {
        return ptr::null_mut();
    };
    let Some(base) = map(len) else {
        return ptr::null_mut();
    };
    let p = (base + 2 * TAG + align - 1) & !(align - 1);
    // SAFETY: both tags lie in the fresh mapping, before the block.
    unsafe {
        write_tag(base, len, State::Mapped);
        write_tag(p - TAG, p - base, State::Mapped);
    }
    MAPPED_ALLOCS.fetch_add(1, Ordering::Relaxed);
    let now = MAPPED_BYTES.fetch_add(len, Ordering::Relaxed) + len;
    note_peak(now);
    p as *mut u8
}

fn note_peak(mapped: usize) {
    let (held, _) = footprint();
    PEAK_TOTAL.fetch_max(mapped + held, Ordering::Relaxed);
}

fn footprint() -> (usize, usize) {
    // SAFETY: a racy read of two words for statistics only; the heap
    // itself is not touched.
    let s = with(|h| h.stats());
    (s.footprint, s.peak_footprint)
}

/// The mapping (start, length) of a mapped block at `p`, if it is one.
/// Any other address is left alone: it is checked to be readable first
/// when its tag would lie on another page.
fn mapped_block(p: *mut u8) -> Option<(usize, usize)> {
    let a = p as usize;
    if a < PAGE_SIZE || !a.is_multiple_of(16) {
        return None;
    }
    if (a - TAG) / PAGE_SIZE != a / PAGE_SIZE {
        let mut v = 0u8;
        // SAFETY: mincore only reports on the page, writing one byte; the
        // caller's errno is kept (free must not change it).
        let mapped = unsafe {
            let errno = *libc::__errno_location();
            let r = libc::mincore(
                ((a - TAG) & !(PAGE_SIZE - 1)) as *mut libc::c_void,
                1,
                &mut v,
            );
            *libc::__errno_location() = errno;
            r == 0
        };
        if !mapped {
            return None;
        }
    }
    // SAFETY: the tag's page is mapped (the block's own, or checked).
    let (off, st) = unsafe { read_tag(a - TAG) };
    if st != Some(State::Mapped) || off > a || off < 2 * TAG {
        return None;
    }
    let base = a - off;
    // SAFETY: a valid block tag says the mapping starts at `base`.
    match unsafe { read_tag(base) } {
        (len, Some(State::Mapped)) if len > off => Some((base, len)),
        _ => MmapProvider.fatal("apexalloc: fatal: boundary tag corruption (mapped block)"),
    }
}

fn map_free(base: usize, len: usize) {
    // SAFETY: the whole mapping of a block being freed.
    unsafe { libc::munmap(base as *mut libc::c_void, len) };
    MAPPED_FREES.fetch_add(1, Ordering::Relaxed);
    MAPPED_BYTES.fetch_sub(len, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

fn in_engine(size: usize, align: usize) -> bool {
    size.saturating_add(align) < MMAP_THRESHOLD.load(Ordering::Relaxed)
}

/// `malloc` and the aligned functions (`align` a power of two).
// Out of line: the default engine's paths test `classic()` and must not
// carry a classic engine's frame.
#[cold]
#[inline(never)]
pub(crate) fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    if in_engine(size, align) {
        let p = with(|h| {
            let p = if size.saturating_add(align) > h.max_request() {
                ptr::null_mut()
            } else if zero && align <= 16 {
                h.zalloc(size)
            } else {
                h.alloc_aligned(size, align)
            };
            sample(h, size);
            p
        });
        if !p.is_null() {
            if zero && align > 16 {
                // SAFETY: a fresh block of `size` bytes.
                unsafe { ptr::write_bytes(p, 0, size) };
            }
            return p;
        }
    }
    // Fresh mappings read as zero.
    map_alloc(size, align)
}

/// `free`: engine blocks, mapped blocks; anything else is ignored.
///
/// # Safety
/// `p` must be null, foreign, or a live block, not used afterwards.
// Out of line: the default engine's paths test `classic()` and must not
// carry a classic engine's frame.
#[cold]
#[inline(never)]
pub(crate) unsafe fn free(p: *mut u8) {
    if p.is_null() || bootstrap::contains(p) {
        return;
    }
    let in_engine = with(|h| {
        let inside = h.contains(p);
        if inside {
            // SAFETY: a block inside the engine, live or misused: the
            // engine checks its tags.
            unsafe { h.free(p) };
        }
        inside
    });
    if in_engine {
        return;
    }
    if let Some((base, len)) = mapped_block(p) {
        map_free(base, len);
    }
}

/// Usable size; 0 for foreign pointers.
///
/// # Safety
/// `p` must be null, foreign, or a live block.
// Out of line: the default engine's paths test `classic()` and must not
// carry a classic engine's frame.
#[cold]
#[inline(never)]
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    if p.is_null() {
        return 0;
    }
    if bootstrap::contains(p) {
        return bootstrap::size_of(p);
    }
    let n = with(|h| {
        // SAFETY: a live block inside the engine (the caller's promise).
        h.contains(p).then(|| unsafe { h.usable(p) })
    });
    if let Some(n) = n {
        return n;
    }
    match mapped_block(p as *mut u8) {
        Some((base, len)) => base + len - p as usize,
        None => 0,
    }
}

/// `realloc` of a non-null block keeping alignment `align`; null when out
/// of memory (the block stays) or for a foreign pointer.
///
/// # Safety
/// `p` must be a live block (allocated with `align`) or foreign.
// Out of line: the default engine's paths test `classic()` and must not
// carry a classic engine's frame.
#[cold]
#[inline(never)]
pub(crate) unsafe fn realloc(p: *mut u8, align: usize, size: usize) -> *mut u8 {
    let small = in_engine(size, align);
    let r = with(|h| {
        if !h.contains(p) {
            return None;
        }
        if small && size.saturating_add(align) <= h.max_request() {
            // SAFETY: a live engine block (the caller's promise), resized
            // in place or moved within the engine.
            return Some((unsafe { h.realloc(p, align, size) }, 0));
        }
        // SAFETY: as above; it moves to a mapping, outside the lock.
        Some((ptr::null_mut(), unsafe { h.usable(p) }))
    });
    match r {
        Some((q, 0)) => return q,
        Some((_, old)) => return moved(p, old, size, align),
        None => {}
    }
    let Some((base, len)) = mapped_block(p) else {
        return ptr::null_mut();
    };
    let old = base + len - p as usize;
    if !small && size <= old && size >= old / 2 {
        return p;
    }
    if !small && p as usize - base == 2 * TAG {
        // Grow or shrink the mapping itself (the kernel moves pages, not
        // bytes).
        let new_len = (size + 2 * TAG + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
        // SAFETY: the block's whole mapping, moved as one.
        let nb = unsafe {
            libc::mremap(
                base as *mut libc::c_void,
                len,
                new_len,
                libc::MREMAP_MAYMOVE,
            )
        };
        if nb == libc::MAP_FAILED {
            return ptr::null_mut();
        }
        let nb = nb as usize;
        // SAFETY: the tags at the (possibly moved) mapping's start.
        unsafe {
            write_tag(nb, new_len, State::Mapped);
            write_tag(nb + TAG, 2 * TAG, State::Mapped);
        }
        if new_len >= len {
            let now = MAPPED_BYTES.fetch_add(new_len - len, Ordering::Relaxed) + new_len - len;
            note_peak(now);
        } else {
            MAPPED_BYTES.fetch_sub(len - new_len, Ordering::Relaxed);
        }
        return (nb + 2 * TAG) as *mut u8;
    }
    moved(p, old, size, align)
}

/// Moves block `p` (`old` usable bytes) to a new block of `size` bytes.
fn moved(p: *mut u8, old: usize, size: usize, align: usize) -> *mut u8 {
    let q = alloc(size, align, false);
    if !q.is_null() {
        // SAFETY: both blocks are live for the copied length; `p` is freed
        // once, after the copy.
        unsafe {
            ptr::copy_nonoverlapping(p, q, old.min(size));
            free(p);
        }
    }
    q
}

/// Records the heap's fragmentation when its live bytes have grown by an
/// eighth since the last record (called with the lock held).
fn sample(h: &Classic<Brk>, request: usize) {
    let st = h.stats();
    let live = st.in_use + MAPPED_BYTES.load(Ordering::Relaxed);
    PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
    // SAFETY: the record is only touched with the lock held.
    let peak = unsafe { &mut *HEAP.peak.get() };
    if st.in_use <= peak.live + peak.live / 8 {
        return;
    }
    let (unusable, free) = h.fragmentation(request);
    *peak = Peak {
        live: st.in_use,
        held: st.footprint,
        free,
        unusable,
    };
}

static PEAK_LIVE: AtomicUsize = AtomicUsize::new(0);

/// With `APEX_SHOW_STATS=1` (not `json`) and a classic engine, a second line at exit
/// (key=value, bytes): the engine; the peak of live bytes (usable sizes,
/// mapped blocks included) and of bytes held (the engine's memory plus
/// mappings); and, near the engine's peak, its live, held and free bytes,
/// and the free bytes in blocks too small for the request then served
/// (external fragmentation); and the blocks still live at exit and their
/// bytes (leaks, unless the program frees them later in its exit).
#[used]
#[link_section = ".fini_array"]
static REPORT_AT_EXIT: extern "C" fn() = report_at_exit;

extern "C" fn report_at_exit() {
    if !ACTIVE.load(Ordering::Relaxed)
        || !crate::options::SHOW_STATS.load(Ordering::Relaxed)
        || crate::options::STATS_JSON.load(Ordering::Relaxed)
    {
        return;
    }
    let s = stats();
    // SAFETY: read under the lock.
    let peak = with(|_| unsafe { *HEAP.peak.get() });
    let mut buf = [0u8; 512];
    let mut line = crate::report::Line::new(&mut buf);
    line.push_prefix();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "strategy {} peak_live={} peak_held={} at_peak_live={} at_peak_held={} \
             at_peak_free={} at_peak_unusable={} live_blocks={} live_bytes={}",
            name(),
            PEAK_LIVE.load(Ordering::Relaxed),
            s.active_peak,
            peak.live,
            peak.held,
            peak.free,
            peak.unusable,
            s.mallocs - s.frees,
            s.allocated,
        ),
    );
    crate::report::write_once(2, line.finish());
}

/// The statistics of the classic engine and the mapped blocks, in the
/// default engine's terms (no segments: the engine's footprint stands for
/// the spans).
// Out of line: the default engine's paths test `classic()` and must not
// carry a classic engine's frame.
#[cold]
#[inline(never)]
pub(crate) fn stats() -> Snapshot {
    let s = with(|h| h.stats());
    let mapped = MAPPED_BYTES.load(Ordering::Relaxed);
    note_peak(mapped);
    Snapshot {
        mallocs: s.allocations + MAPPED_ALLOCS.load(Ordering::Relaxed),
        frees: s.frees + MAPPED_FREES.load(Ordering::Relaxed),
        allocated: (s.in_use + mapped) as u64,
        active: s.footprint + mapped,
        active_peak: PEAK_TOTAL.load(Ordering::Relaxed).max(s.peak_footprint),
        reserved: s.footprint + mapped,
        huge_live: mapped,
        heaps_live: 1,
        ..Snapshot::default()
    }
}
