//! State shared by every heap of one allocator instance: the provider, the
//! secret key, options, the abandoned-segment list, the cache of empty
//! segments and freed huge blocks, and huge-block allocation itself.
//!
//! Everything here is reached only on slow paths; the locks are spin locks
//! held for a few pointer operations, never across a provider call that can
//! be avoided.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use spin::Mutex;

use crate::abandoned::AbandonedStack;
use crate::cache::{CacheEntry, RangeCache};
use crate::fatal::{self, Misuse};
use crate::fork::{ForkGate, ForkGuard};
use crate::harden::Mitigations;
use crate::layout::{align_up, SEGMENT_SIZE, SLICES_PER_SEGMENT, SLICE_SIZE};
use crate::options::Options;
use crate::pool::MetaPool;
use crate::provider::{Capabilities, PageProvider, HUGE_PAGE_SIZE, PAGE_SIZE};
use crate::registry::SegmentRegistry;
use crate::segment::{Segment, GUARD_OFFSET, HEADER_SLICES};
use crate::segment_map;
use crate::span::SpanKind;
use crate::stats::{GlobalStats, HeapStats, Snapshot};

/// One allocator instance: a provider plus everything heaps share.
pub struct Global {
    provider: &'static dyn PageProvider,
    caps: AtomicU32,
    key: AtomicUsize,
    /// A second secret for segment header cookies, so learning the link
    /// key says nothing about them.
    cookie_key: AtomicUsize,
    /// The [`Mitigations`] in force (bits), fixed once the instance starts.
    harden: AtomicU32,
    init: spin::Once<()>,
    pub options: Options,
    pub stats: GlobalStats,
    abandoned: Mutex<AbandonedStack>,
    cache: Mutex<RangeCache>,
    /// Every live segment, for introspection (see [`crate::registry`]); a
    /// leaf lock.
    pub(crate) registry: Mutex<SegmentRegistry>,
    /// The heap structs (see [`crate::pool`]).
    pub(crate) heaps: Mutex<MetaPool>,
    /// Counters of heaps that were destroyed.
    retired: HeapStats,
    /// Set while memory is short (see [`Global::under_pressure`]).
    pressure: AtomicBool,
    /// Memory nodes of the machine (see [`Global::current_node`]); read
    /// from the provider once, at start.
    nodes: AtomicU32,
    /// Operations a `fork` must wait out (see [`crate::fork`]).
    fork: ForkGate,
    /// Held while memory goes back to the provider, and by readers of
    /// other heaps' segment headers (statistics), which must not see a
    /// header unmapped under them.
    pub(crate) release_lock: Mutex<()>,
}

/// The hot part of each fresh segment, from its start: the header and the
/// first slabs, which [`Global`] asks huge pages for (with
/// [`Capabilities::HUGE_PAGES`]; see [`Global::huge_page_part`]).
pub const THP_HOT_BYTES: usize = if 2 * HUGE_PAGE_SIZE < SEGMENT_SIZE {
    2 * HUGE_PAGE_SIZE
} else {
    SEGMENT_SIZE
};

// Segments start on huge-page boundaries, so their interiors are aligned
// for huge pages without anything more.
const _: () = assert!(SEGMENT_SIZE.is_multiple_of(HUGE_PAGE_SIZE));

/// 2^64 divided by the golden ratio: an odd constant with well-mixed bits,
/// folded into the key so it is never a plain address.
const GOLDEN_RATIO_64: usize = 0x9e37_79b9_7f4a_7c15;

/// A bijective mixer (the SplitMix64 finaliser): spreads every input bit
/// over the whole word.
pub fn mix64(mut x: usize) -> usize {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Global {
    /// A new instance over `provider`. Nothing is reserved until the first
    /// heap is created.
    pub const fn new(provider: &'static dyn PageProvider) -> Self {
        Global {
            provider,
            caps: AtomicU32::new(0),
            key: AtomicUsize::new(0),
            cookie_key: AtomicUsize::new(0),
            harden: AtomicU32::new(Mitigations::DEFAULT.bits()),
            init: spin::Once::new(),
            options: Options::new(),
            stats: GlobalStats::new(),
            abandoned: Mutex::new(AbandonedStack::new()),
            cache: Mutex::new(RangeCache::new()),
            registry: Mutex::new(SegmentRegistry::new()),
            heaps: Mutex::new(MetaPool::new()),
            retired: HeapStats::new(),
            pressure: AtomicBool::new(false),
            nodes: AtomicU32::new(1),
            fork: ForkGate::new(),
            release_lock: Mutex::new(()),
        }
    }

    /// Marks the start of a short lock-free operation that a `fork` must
    /// not split (see [`crate::fork`]).
    pub fn fork_guard(&self) -> ForkGuard<'_> {
        self.fork.guard()
    }

    /// The gate `fork` waits at (see [`crate::fork`]).
    pub fn fork_gate(&self) -> &ForkGate {
        &self.fork
    }

    /// See [`ForkGate::set_handoff_hook`].
    pub fn set_handoff_hook(&self, hook: fn(crate::fork::HandoffPoint)) {
        self.fork.set_handoff_hook(hook);
    }

    /// Adds a destroyed heap's counters to the retired totals.
    pub(crate) fn retire_stats(&self, s: &HeapStats) {
        self.retired.absorb(s);
    }

    /// The counters of destroyed heaps, summed.
    pub(crate) fn retired_stats(&self) -> &HeapStats {
        &self.retired
    }

    /// Cached ranges: how many, their bytes, and the bytes of those kept
    /// resident.
    pub(crate) fn cache_totals(&self) -> (usize, usize, usize) {
        self.cache.lock().totals()
    }

    /// Adds a segment whose header is set up to the registry.
    ///
    /// # Safety
    /// `seg` is an initialised, unregistered header that stays valid until
    /// [`Global::unregister`].
    unsafe fn register(&self, seg: *mut Segment) {
        // SAFETY: forwarded from the caller.
        unsafe { self.registry.lock().insert(seg) };
    }

    /// Takes a segment out of the registry before its memory goes back:
    /// a walk holding the lock never reads a released or recycled header.
    ///
    /// # Safety
    /// `seg` is registered.
    unsafe fn unregister(&self, seg: *mut Segment) {
        // SAFETY: forwarded from the caller.
        unsafe { self.registry.lock().remove(seg) };
    }

    /// Global counters plus the retired heaps' totals.
    pub(crate) fn retired_snapshot(&self) -> Snapshot {
        let r = &self.retired;
        let g = &self.stats;
        let ld = |a: &core::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let lu = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let (mallocs, frees, allocated) = r.totals();
        Snapshot {
            mallocs,
            frees,
            allocated,
            remote_frees: ld(&r.remote_frees),
            active: lu(&g.active),
            active_peak: lu(&g.active_peak),
            reserved: lu(&g.reserved),
            decommitted_total: ld(&g.decommitted_total),
            segments: lu(&g.segments),
            segments_peak: lu(&g.segments_peak),
            huge_live: lu(&g.huge_live),
            abandoned: lu(&g.abandoned),
            adopted_total: ld(&g.adopted_total),
            heaps_live: lu(&g.heaps_live),
            foreign_frees: ld(&g.foreign_frees),
        }
    }

    /// Reads capabilities and draws the secret key; idempotent.
    pub fn ensure_init(&self) {
        self.init.call_once(|| {
            self.caps
                .store(self.provider.capabilities().bits(), Ordering::Relaxed);
            let nodes = self.provider.node_count().clamp(1, u32::MAX as usize);
            self.nodes.store(nodes as u32, Ordering::Relaxed);
            let mut buf = [0u8; 16];
            let got = self.provider.entropy(&mut buf);
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&buf[i * 8..i * 8 + 8]);
                if got {
                    usize::from_ne_bytes(w)
                } else {
                    0
                }
            };
            // Without entropy, still make the keys differ between runs when
            // ASLR moves this structure; and never let them be zero.
            let salt = (self as *const Self as usize).rotate_left(32) ^ GOLDEN_RATIO_64;
            self.key.store(word(0) ^ salt | 1, Ordering::Relaxed);
            let cookie = mix64(word(1) ^ salt.rotate_left(17) ^ word(0));
            self.cookie_key.store(cookie | 1, Ordering::Relaxed);
        });
    }

    /// Sets the mitigations in force. Must be called before the first heap
    /// is created (later calls would mix policies within one heap's
    /// lifetime and are ignored).
    pub fn set_mitigations(&self, m: Mitigations) {
        if !self.init.is_completed() {
            self.harden.store(m.bits(), Ordering::Relaxed);
        }
    }

    /// The mitigations in force.
    #[inline]
    pub fn mitigations(&self) -> Mitigations {
        Mitigations::from_bits_truncate(self.harden.load(Ordering::Relaxed))
    }

    /// The secret for segment header cookies.
    #[inline]
    pub fn cookie_key(&self) -> usize {
        self.cookie_key.load(Ordering::Relaxed)
    }

    /// The provider this instance draws from.
    pub fn provider(&self) -> &'static dyn PageProvider {
        self.provider
    }

    /// The secret key for link encoding and header cookies.
    #[inline(always)]
    pub fn key(&self) -> usize {
        self.key.load(Ordering::Relaxed)
    }

    /// The provider's capabilities.
    #[inline]
    pub fn caps(&self) -> Capabilities {
        Capabilities::from_bits_truncate(self.caps.load(Ordering::Relaxed))
    }

    /// Current time for decay (milliseconds): the provider's clock, or
    /// `None` without one (heaps then count slow-path events instead).
    pub fn now(&self) -> Option<u64> {
        if self.caps().contains(Capabilities::CLOCK) {
            Some(self.provider.now_ms())
        } else {
            None
        }
    }

    /// Reports a misuse at `ptr` (a block of `size` bytes, when known) and
    /// ends the process.
    #[cold]
    pub fn misuse(&self, what: Misuse, ptr: usize, size: Option<usize>) -> ! {
        fatal::report(self.provider, what, ptr, size)
    }

    /// Makes a range inaccessible or accessible again, where the provider
    /// can; returns whether it did.
    ///
    /// # Safety
    /// The range is page-aligned, inside a live reservation, and nothing
    /// touches it while it is inaccessible.
    pub unsafe fn protect(&self, addr: usize, len: usize, accessible: bool) -> bool {
        match NonNull::new(addr as *mut u8) {
            // SAFETY: forwarded from the caller.
            Some(p) if len > 0 => unsafe { self.provider.protect(p, len, accessible) },
            _ => false,
        }
    }

    // -----------------------------------------------------------------
    // Placement: memory nodes (NUMA) and huge pages
    // -----------------------------------------------------------------

    /// The memory nodes the provider counted when the instance started
    /// (1 before).
    pub fn node_count(&self) -> usize {
        self.nodes.load(Ordering::Relaxed) as usize
    }

    /// The memory node of the processor the caller runs on. On a machine
    /// with one node this is 0 without asking the provider: a load and a
    /// compare per segment request, nothing on the allocation paths.
    pub fn current_node(&self) -> u32 {
        let nodes = self.nodes.load(Ordering::Relaxed);
        if nodes <= 1 {
            return 0;
        }
        self.provider.current_node().min(nodes as usize - 1) as u32
    }

    /// Asks the provider to place a range's pages on `node`; nothing on a
    /// machine with one node.
    ///
    /// # Safety
    /// The range is page-aligned and inside a live reservation.
    unsafe fn bind_to_node(&self, addr: usize, len: usize, node: u32) {
        if self.nodes.load(Ordering::Relaxed) <= 1 {
            return;
        }
        if let Some(p) = NonNull::new(addr as *mut u8) {
            // SAFETY: forwarded from the caller; `node` came from
            // `current_node`, so it is below the node count.
            unsafe { self.provider.bind_to_node(p, len, node as usize) };
        }
    }

    /// The range of a segment, as offsets from its start, that huge pages
    /// are asked for: the whole huge pages of its hot part
    /// ([`THP_HOT_BYTES`]: the header and the slabs carved first; spans are
    /// carved lowest address first, and a heap's first segment holds a
    /// small program's whole heap). With [`Mitigations::GUARDS`] the
    /// first huge page is left out: the guard page after the header splits
    /// its mapping, so it could never be a huge page, and the header's
    /// first write would fault in all 2 MiB of it before the guard split
    /// it into small pages again, resident but mostly unused. Segments
    /// start on [`HUGE_PAGE_SIZE`] boundaries, so the range is whole huge
    /// pages. Not the whole segment: memory the core decommits in 64 KiB
    /// slices would split huge pages there again, and the kernel's
    /// collapsing of hinted ranges would make resident what the program
    /// never touched.
    pub fn huge_page_part(&self) -> core::ops::Range<usize> {
        let start = if self.mitigations().contains(Mitigations::GUARDS) {
            align_up(GUARD_OFFSET + PAGE_SIZE, HUGE_PAGE_SIZE)
        } else {
            0
        };
        start.min(THP_HOT_BYTES)..THP_HOT_BYTES
    }

    /// Asks for huge pages on the hot part of a fresh segment (see
    /// [`Global::huge_page_part`]), before anything touches it.
    ///
    /// # Safety
    /// `base` is a fresh segment-sized reservation of ours.
    unsafe fn hint_hot_part(&self, base: usize) {
        let part = self.huge_page_part();
        if let Some(p) = NonNull::new((base + part.start) as *mut u8) {
            if !part.is_empty() {
                // SAFETY: the part lies inside the caller's reservation.
                unsafe { self.provider.hint_huge_pages(p, part.len()) };
            }
        }
    }

    /// Finishes a new segment header: the live-block bitmap cleared unless
    /// the memory is known clear (fresh zeroed memory, or a recycled range
    /// whose bitmap the last user left clear), and the guard page after the
    /// header set up on a new reservation ([`Mitigations::GUARDS`]; a
    /// recycled range keeps its guard).
    ///
    /// # Safety
    /// `seg` is a just-initialised header, exclusively the caller's.
    unsafe fn prepare_header(&self, seg: *mut Segment, fresh: bool, recycled: bool) {
        // SAFETY: the caller's contract.
        unsafe {
            if !fresh && !recycled {
                (*seg).live.clear_all();
            }
            if !recycled && self.mitigations().contains(Mitigations::GUARDS) {
                self.protect((*seg).base() + GUARD_OFFSET, PAGE_SIZE, false);
            }
        }
    }

    /// Whether memory decommitted so far reads as zero. Asked after the
    /// decommit (or after taking the range from whoever decommitted it):
    /// a frontend that switches its provider to a non-zeroing decommit at
    /// run time first drops the capability with
    /// [`Global::drop_capabilities`], so a decommit that did not zero is
    /// never taken for one that did.
    pub fn zero_after_decommit(&self) -> bool {
        self.caps().contains(Capabilities::ZERO_AFTER_DECOMMIT)
    }

    /// Withdraws capabilities the provider reported at start-up, for good:
    /// a frontend calls it before its provider stops doing what they
    /// promise (for instance before decommits stop zeroing memory, with a
    /// release store the provider's decommit reads with acquire).
    pub fn drop_capabilities(&self, c: Capabilities) {
        self.caps.fetch_and(!c.bits(), Ordering::SeqCst);
    }

    /// Decommits a range when the provider can.
    ///
    /// # Safety
    /// The range must be inside a live reservation and hold no live data.
    pub unsafe fn decommit(&self, addr: usize, len: usize) {
        if len == 0 || !self.caps().contains(Capabilities::CAN_DECOMMIT) {
            return;
        }
        if let Some(p) = NonNull::new(addr as *mut u8) {
            // SAFETY: forwarded from the caller.
            unsafe { self.provider.decommit(p, len) };
            self.stats
                .decommitted_total
                .fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Makes a range usable again after `decommit` (no-op for lazy
    /// providers). Returns false when out of memory.
    ///
    /// # Safety
    /// The range must be inside a live reservation.
    pub unsafe fn commit(&self, addr: usize, len: usize) -> bool {
        if self.caps().contains(Capabilities::LAZY_COMMIT) {
            return true;
        }
        match NonNull::new(addr as *mut u8) {
            // SAFETY: forwarded from the caller.
            Some(p) => unsafe { self.provider.commit(p, len) },
            None => false,
        }
    }

    /// Reserves from the provider. A failure puts the allocator under
    /// memory pressure until a reservation succeeds again (see
    /// [`Global::under_pressure`]).
    fn reserve(&self, len: usize, align: usize) -> Option<usize> {
        let Some(p) = self.provider.reserve(len, align) else {
            self.pressure.store(true, Ordering::Relaxed);
            return None;
        };
        if self.pressure.load(Ordering::Relaxed) {
            self.pressure.store(false, Ordering::Relaxed);
        }
        self.stats.reserved.fetch_add(len, Ordering::Relaxed);
        Some(p.as_ptr() as usize)
    }

    /// Reserves and commits `len` bytes aligned to `len` for allocator
    /// metadata (see [`crate::pool`]).
    pub fn reserve_meta(&self, len: usize) -> Option<usize> {
        let base = self.reserve(len, len)?;
        // SAFETY: the range was just reserved.
        if !unsafe { self.commit(base, len) } {
            // SAFETY: nothing uses the reservation.
            unsafe { self.release(base, len) };
            return None;
        }
        Some(base)
    }

    /// Whether the last reservation failed: memory is short, so empty
    /// segments and freed huge blocks go back to the provider at once
    /// instead of being kept for reuse, where any heap that needs memory
    /// can get them.
    pub fn under_pressure(&self) -> bool {
        self.pressure.load(Ordering::Relaxed)
    }

    /// # Safety
    /// `base`/`len` must be a whole live reservation nobody uses any more.
    unsafe fn release(&self, base: usize, len: usize) {
        self.stats.reserved.fetch_sub(len, Ordering::Relaxed);
        if let Some(p) = NonNull::new(base as *mut u8) {
            let _readers_out = self.release_lock.lock();
            // SAFETY: forwarded from the caller.
            unsafe { self.provider.release(p, len) };
        }
    }

    /// A fresh or recycled segment with an initialised header, owned by
    /// nobody yet, placed on the caller's memory node (see
    /// [`Global::current_node`]): a cached segment of that node if there
    /// is one, else any cached segment, moved to the node, else a new
    /// reservation bound to it.
    pub fn new_segment(&self) -> Option<*mut Segment> {
        let key = self.cookie_key();
        let caps = self.caps();
        let node = self.current_node();
        // `zero`: the body reads as zero. `fresh`: so does the header; a
        // recycled segment's header was never decommitted and still holds
        // the old descriptors, which must not survive into the new one.
        // `resident`: which slices of a resident recycled body were touched
        // (its header was never decommitted and still says). `bind`: the
        // pages must be placed on `node` (new, or cached from another node).
        let mut resident = None;
        let mut recycled = false;
        let (base, zero, fresh, bind) = match self.cache_take(SEGMENT_SIZE, Some(node)) {
            Some((base, _, committed, placed_on)) => {
                recycled = true;
                if committed {
                    // SAFETY: a cached segment's header is intact and ours.
                    resident = Some(unsafe { (*(base as *const Segment)).resident });
                }
                // Asked after the take: see `zero_after_decommit`.
                let zero = !committed && self.zero_after_decommit();
                (base, zero, false, placed_on != node)
            }
            None => {
                let base = self.reserve(SEGMENT_SIZE, SEGMENT_SIZE)?;
                // Asked afresh: a frontend may switch huge pages at run time.
                if self
                    .provider
                    .capabilities()
                    .contains(Capabilities::HUGE_PAGES)
                {
                    // SAFETY: the range was just reserved.
                    unsafe { self.hint_hot_part(base) };
                }
                let zero = caps.contains(Capabilities::ZERO_ON_RESERVE);
                (base, zero, zero, true)
            }
        };
        if bind {
            // SAFETY: the range is a whole reservation of ours; before the
            // header is touched, so its pages follow too.
            unsafe { self.bind_to_node(base, SEGMENT_SIZE, node) };
        }
        // SAFETY: header pages of a segment are always committed on use.
        if !unsafe { self.commit(base, HEADER_SLICES * SLICE_SIZE) } {
            // SAFETY: the segment is ours and unused.
            unsafe { self.release(base, SEGMENT_SIZE) };
            return None;
        }
        // SAFETY: the range is ours, aligned and unused.
        let seg = unsafe { Segment::init(base, base, SEGMENT_SIZE, key, fresh) };
        // SAFETY: the header is ours; see `prepare_header`.
        unsafe {
            self.prepare_header(seg, fresh, recycled);
            (*seg).node = node;
        }
        // SAFETY: `seg` was just initialised and is exclusively ours.
        unsafe {
            let n = SLICES_PER_SEGMENT - HEADER_SLICES;
            if let Some(mask) = resident {
                (*seg).resident = mask;
            }
            (*seg).mark_free(HEADER_SLICES, n, resident.is_some(), zero);
        }
        segment_map::insert(base);
        // SAFETY: initialised above; it stays valid until `retire_segment`.
        unsafe { self.register(seg) };
        let n = self.stats.segments.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.segments_peak.fetch_max(n, Ordering::Relaxed);
        Some(seg)
    }

    /// Takes back an empty segment: decommitted into the cache, or released.
    ///
    /// # Safety
    /// `seg` must be a live normal segment with no used span, owned by the
    /// caller and unreachable from any heap.
    pub unsafe fn retire_segment(&self, seg: *mut Segment) {
        // SAFETY: the caller hands the segment over exclusively.
        let (base, node) = unsafe { ((*seg).base(), (*seg).node) };
        // SAFETY: a live normal segment is registered.
        unsafe { self.unregister(seg) };
        segment_map::remove(base);
        self.stats.segments.fetch_sub(1, Ordering::Relaxed);
        // Kept resident (within the cache's budget) and decommitted only
        // after the purge delay: in thread churn the next thread takes the
        // segment again within milliseconds, and decommitting it now would
        // only make it fault in again.
        self.cache_put(base, SEGMENT_SIZE, true, node);
    }

    /// Pushes a segment whose owner is gone.
    ///
    /// # Safety
    /// `seg` must be a live segment with `owner == 0` that no heap links.
    pub unsafe fn push_abandoned(&self, seg: *mut Segment) {
        let now = self.now().unwrap_or(0);
        // SAFETY: forwarded from the caller.
        unsafe { self.abandoned.lock().push(seg, now) };
        self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Decommits the touched slices of the free span at `idx` (`n` slices)
    /// of `seg` and marks it clean. Returns how many slices were
    /// decommitted.
    ///
    /// # Safety
    /// The caller holds `seg` (owns it, or took it off the abandoned list),
    /// and the span is free.
    pub unsafe fn decommit_free_span(&self, seg: *mut Segment, idx: usize, n: usize) -> usize {
        let zero_after = || self.zero_after_decommit();
        // SAFETY: the caller's contract; a free span holds no live data.
        unsafe { (*seg).decommit_span_tail(idx, n, idx, &zero_after, |a, l| self.decommit(a, l)) }
    }

    /// Decommits the touched free slices of `seg` beyond the `keep`
    /// lowest-addressed ones (see [`Segment::trim_free`]).
    ///
    /// # Safety
    /// The caller holds `seg` (owns it, or marked it `purging`).
    pub unsafe fn trim_segment(&self, seg: *mut Segment, keep: usize) {
        let zero_after = || self.zero_after_decommit();
        // SAFETY: the caller's contract; free spans hold no live data.
        unsafe { (*seg).trim_free(keep, &zero_after, |a, l| self.decommit(a, l)) };
    }

    /// The decay of what no heap owns: cached ranges older than the purge
    /// delay are decommitted, and so is the free memory of abandoned
    /// segments that waited `PURGE_MAX_DEFER` delays (under thread churn
    /// they are adopted again soon, with their free memory still useful).
    /// Heaps run it on their periodic decay check; a frontend may also run
    /// it from a background thread or an idle loop, so memory goes back
    /// while no heap allocates.
    pub fn decay(&self, now: u64) {
        let abandoned_delay = self
            .options
            .purge_delay()
            .saturating_mul(crate::options::PURGE_MAX_DEFER);
        self.purge_abandoned(now, abandoned_delay, false);
        self.purge_cache(now, false);
    }

    /// Decommits every dirty free span of `seg` and clears its pending
    /// purge.
    ///
    /// # Safety
    /// The caller holds `seg` (owns it, or marked it `purging`).
    pub unsafe fn purge_segment(&self, seg: *mut Segment) {
        // SAFETY: the caller's contract.
        unsafe {
            (*seg).purge_at = 0;
            self.trim_segment(seg, 0);
        }
    }

    /// Decommits the dirty free spans of abandoned segments that gained no
    /// free span for `delay` past their purge deadline (all with `force`),
    /// so the memory of exited threads does not stay resident until someone
    /// adopts it.
    ///
    /// The segments stay on the list throughout: a heap looking for a
    /// segment must never find the list empty because a purge is walking
    /// it, or it maps a fresh segment that then circulates for good (under
    /// thread churn this made the number of segments grow without bound).
    /// Due segments are marked `purging` under the lock and decommitted
    /// after it is dropped, a few at a time; an adopter that pops one
    /// meanwhile waits for the mark to clear (see [`Global::pop_abandoned`]).
    pub fn purge_abandoned(&self, now: u64, delay: u64, force: bool) {
        const BATCH: usize = 8;
        loop {
            if self.stats.abandoned.load(Ordering::Relaxed) == 0 {
                return;
            }
            let mut batch = [ptr::null_mut::<Segment>(); BATCH];
            let mut empties = [ptr::null_mut::<Segment>(); BATCH];
            let (n, e) = {
                // A child forked while segments are marked would wait for
                // ever in `pop_abandoned`, so the marks are made and cleared
                // under a fork guard. The guard comes first and the lock is
                // only tried: `lock_all` holds the lock while it waits for
                // guards to end.
                let _guard = self.fork_guard();
                let Some(mut list) = self.abandoned.try_lock() else {
                    drop(_guard);
                    core::hint::spin_loop();
                    continue;
                };
                let (n, e) = list.select(now, delay, force, &mut batch, &mut empties);
                drop(list);
                self.stats.abandoned.fetch_sub(e, Ordering::Relaxed);
                for &seg in &batch[..n] {
                    // SAFETY: marked `purging`, so nobody else touches the
                    // segment's spans until the mark clears; remote freers
                    // touch only the `thread_free` words of used spans.
                    unsafe {
                        self.purge_segment(seg);
                        (*seg).purging.store(false, Ordering::Release);
                    }
                }
                (n, e)
            };
            // Outside the guard: retiring takes the cache lock.
            for &seg in &empties[..e] {
                // SAFETY: unlisted above, so exclusively ours; every block
                // in it is free.
                unsafe { self.release_abandoned(seg) };
            }
            if n < BATCH && e < BATCH {
                return;
            }
        }
    }

    /// Retires an abandoned segment all of whose blocks were freed: its used
    /// spans become free and it goes to the cache like any empty segment.
    ///
    /// # Safety
    /// `seg` is off the abandoned list, exclusively the caller's, and
    /// [`Segment::all_blocks_freed`] holds for it.
    unsafe fn release_abandoned(&self, seg: *mut Segment) {
        if self.mitigations().contains(Mitigations::BITMAP) {
            // SAFETY: the caller's contract.
            if let Err(b) = unsafe { (*seg).check_remote_frees() } {
                self.misuse(Misuse::DoubleFree, b, None);
            }
        }
        if self.mitigations().contains(Mitigations::LARGE_GUARDS) {
            // The guard pages after its large blocks go, or the next block
            // carved over one would fault.
            // SAFETY: the caller's contract: the tiling is stable.
            for (idx, n) in unsafe { Segment::spans(seg) } {
                // SAFETY: as above.
                let d = unsafe { &(*seg).slices[idx] };
                let (span_end, block_end) = (d.start + n * SLICE_SIZE, d.start + d.block_size);
                if d.kind == SpanKind::Large && span_end > block_end {
                    // SAFETY: the guard lies inside the segment, and nothing
                    // uses it.
                    unsafe { self.protect(block_end, span_end - block_end, true) };
                }
            }
        }
        // SAFETY: the caller's contract.
        let freed = unsafe { (*seg).free_all_spans() };
        self.stats.sub_active(freed * SLICE_SIZE);
        // SAFETY: a normal segment with no used span, owned by nobody.
        unsafe { self.retire_segment(seg) };
    }

    /// Pops an abandoned segment for adoption: one placed on the caller's
    /// memory node first (see [`AbandonedStack::pop`]). An adopted segment
    /// keeps its placement: its live blocks are where they are.
    pub fn pop_abandoned(&self) -> Option<*mut Segment> {
        // Cheap unlocked peek: most slow paths find the list empty.
        if self.stats.abandoned.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let node = self.current_node();
        let seg = self.abandoned.lock().pop(node)?;
        self.stats.abandoned.fetch_sub(1, Ordering::Relaxed);
        self.stats.adopted_total.fetch_add(1, Ordering::Relaxed);
        // A purge still decommitting it finishes within a few system calls.
        // SAFETY: the segment is live; the flag is atomic.
        while unsafe { (*seg).purging.load(Ordering::Acquire) } {
            core::hint::spin_loop();
        }
        Some(seg)
    }

    /// Allocates a block of `size` bytes aligned to `align` in a segment of
    /// its own. Returns the block and whether it is known to be zeroed.
    pub fn alloc_huge(&self, size: usize, align: usize) -> Option<(*mut u8, bool)> {
        // A block of no bytes still needs a byte of its own: at the end of
        // its reservation it would share its address with whatever is
        // mapped next.
        let size = size.max(1);
        let header = HEADER_SLICES * SLICE_SIZE;
        let caps = self.caps();
        let harden = self.mitigations();
        let guard = if harden.contains(Mitigations::LARGE_GUARDS) {
            PAGE_SIZE
        } else {
            0
        };
        let mut reused = false;
        let (base, len, p, seg_base, zero) = if align < SEGMENT_SIZE {
            let off = align_up(header, align.max(PAGE_SIZE));
            // One spare page: a reused range places its block one page
            // away from where the range's last block started, so a stale
            // pointer to that block never names the new one (a huge block
            // freed twice across a reuse is reported, not obeyed).
            let step = align.max(PAGE_SIZE);
            let want = align_up(off.checked_add(size)?.checked_add(step + guard)?, PAGE_SIZE);
            let (base, len, zero) = match self.cache_take(want, None) {
                Some((base, len, committed, _)) => {
                    reused = true;
                    let keep = align_up(want + want / 4, PAGE_SIZE);
                    if committed && len > keep {
                        // A block may take a range half again as long as
                        // it needs, but keeps at most a quarter more of it
                        // resident: the rest goes back.
                        // SAFETY: the range holds no live data.
                        unsafe { self.decommit(base + keep, len - keep) };
                    }
                    (
                        base,
                        len,
                        // Asked after the take: see `zero_after_decommit`.
                        !committed && self.zero_after_decommit(),
                    )
                }
                None => (
                    self.reserve(want, SEGMENT_SIZE)?,
                    want,
                    caps.contains(Capabilities::ZERO_ON_RESERVE),
                ),
            };
            let mut p = base + off;
            // SAFETY: a cached range's header is intact (headers are never
            // decommitted); its first descriptor's start is where its last
            // block (or first span) began.
            if reused && unsafe { (*(base as *const Segment)).slices[HEADER_SLICES].start } == p {
                p += step;
            }
            (base, len, p, base, zero)
        } else {
            // The block sits on an `align` boundary; its header sits one
            // segment earlier, where `segment_base_of` looks for it. A
            // segment-aligned reservation of `align + size` bytes always
            // holds such a boundary at least a segment past its start; an
            // `align`-aligned one would cost the provider twice that.
            let len = align_up(align.checked_add(size)?.checked_add(guard)?, PAGE_SIZE);
            let base = self.reserve(len, SEGMENT_SIZE)?;
            let p = align_up(base + SEGMENT_SIZE, align);
            (
                base,
                len,
                p,
                p - SEGMENT_SIZE,
                caps.contains(Capabilities::ZERO_ON_RESERVE),
            )
        };
        // SAFETY: the reservation is ours; commit the header and the block.
        if !unsafe { self.commit(seg_base, header) && self.commit(p, base + len - p) } {
            // SAFETY: nothing uses the reservation.
            unsafe { self.release(base, len) };
            return None;
        }
        // Only a fresh reservation is known to have a zeroed header.
        let fresh = zero && !reused;
        // SAFETY: `seg_base` is segment-aligned, inside the reservation and
        // unused.
        let seg = unsafe { Segment::init(seg_base, base, len, self.cookie_key(), fresh) };
        // SAFETY: the header is ours; see `prepare_header`.
        unsafe { self.prepare_header(seg, fresh, reused) };
        // SAFETY: freshly initialised and exclusively ours.
        unsafe {
            (*seg).is_huge = true;
            let d = &mut (*seg).slices[HEADER_SLICES];
            d.kind = SpanKind::Huge;
            d.slice_count = 1;
            d.slice_offset = 0;
            d.start = p;
            d.block_size = base + len - p - guard;
            if guard != 0 {
                self.protect(base + len - guard, guard, false);
            }
        }
        segment_map::insert(seg_base);
        // SAFETY: initialised above; it stays valid until `free_huge`.
        unsafe { self.register(seg) };
        self.stats.huge_live.fetch_add(1, Ordering::Relaxed);
        self.stats.add_active(len);
        Some((p as *mut u8, zero))
    }

    /// Frees the block of a huge segment. Its range goes to the cache,
    /// resident (within budget) when `keep_resident`, else decommitted.
    ///
    /// # Safety
    /// `seg` must be a live huge segment whose block is being freed by its
    /// last user.
    pub unsafe fn free_huge(&self, seg: *mut Segment, keep_resident: bool) {
        // SAFETY: the caller hands over the live huge segment.
        let (seg_base, base, len, node) = unsafe {
            let s = &*seg;
            (s.base(), s.reservation, s.reservation_len, s.node)
        };
        // SAFETY: a live huge segment is registered.
        unsafe { self.unregister(seg) };
        // The map remembers that a huge block was here, so a second free of
        // it is told from a foreign pointer.
        segment_map::remove_huge(seg_base);
        self.stats.huge_live.fetch_sub(1, Ordering::Relaxed);
        self.stats.sub_active(len);
        let harden = self.mitigations();
        if harden.contains(Mitigations::LARGE_GUARDS) {
            // SAFETY: the guard page ends the reservation.
            unsafe { self.protect(base + len - PAGE_SIZE, PAGE_SIZE, true) };
        }
        // Quarantined huge blocks go back to the provider at once: the
        // range becomes inaccessible instead of waiting, reusable, in the
        // cache.
        if seg_base == base && !harden.contains(Mitigations::QUARANTINE) {
            if !keep_resident {
                // SAFETY: nothing in the block is live any more.
                unsafe { self.decommit_body(base, len) };
            }
            self.cache_put(base, len, keep_resident, node);
        } else {
            // SAFETY: the whole reservation is unused now.
            unsafe { self.release(base, len) };
        }
    }

    /// Takes a cached range for a request of `len` bytes: exactly `len` for
    /// segments; for huge blocks a range up to 1/2 longer is used whole;
    /// one on `node` first, when given. Returns its base, its real length,
    /// whether it is resident and the node it is placed on.
    fn cache_take(&self, len: usize, node: Option<u32>) -> Option<(usize, usize, bool, u32)> {
        let e = self.cache.lock().take(len, len == SEGMENT_SIZE, node)?;
        Some((e.base, e.len, e.committed, e.node))
    }

    /// Puts a whole unused reservation, placed on memory `node`, into the
    /// cache. Resident ranges stay resident while the resident budget
    /// allows; otherwise they are decommitted first. When the cache is full the oldest entry is
    /// released; under memory pressure the range is released at once.
    fn cache_put(&self, base: usize, len: usize, committed: bool, node: u32) {
        let since = self.now().unwrap_or(0);
        let budget = self.options.huge_cache_bytes.load(Ordering::Relaxed);
        let slots = self.options.segment_cache.load(Ordering::Relaxed);
        if slots == 0 || self.under_pressure() {
            // SAFETY: the caller hands over a whole unused reservation.
            unsafe { self.release(base, len) };
            return;
        }
        let resident = committed && self.cache.lock().reserve_resident(len, budget);
        if committed && !resident {
            // SAFETY: the range holds no live data and is not yet visible.
            unsafe { self.decommit_body(base, len) };
        }
        let entry = CacheEntry {
            base,
            len,
            committed: resident,
            since,
            node,
        };
        let evicted = self.cache.lock().put(entry, slots);
        if let Some(e) = evicted {
            // SAFETY: evicted entries are whole, unused reservations.
            unsafe { self.release(e.base, e.len) };
        }
    }

    /// Decommits everything of a cached reservation but its header.
    ///
    /// # Safety
    /// The range is a whole reservation that holds no live data.
    unsafe fn decommit_body(&self, base: usize, len: usize) {
        let header = HEADER_SLICES * SLICE_SIZE;
        // SAFETY: forwarded from the caller.
        unsafe { self.decommit(base + header, len - header) };
    }

    /// Decommits cached ranges resident for longer than the purge delay;
    /// with `force`, releases every cached range.
    pub fn purge_cache(&self, now: u64, force: bool) {
        let delay = self.options.purge_delay();
        loop {
            let mut cache = self.cache.lock();
            if force {
                let Some(e) = cache.pop() else { return };
                drop(cache);
                // SAFETY: cached ranges are whole, unused reservations.
                unsafe { self.release(e.base, e.len) };
            } else {
                let Some(e) = cache.take_stale_resident(now, delay) else {
                    return;
                };
                drop(cache);
                // SAFETY: cached ranges hold no live data.
                unsafe { self.decommit_body(e.base, e.len) };
            }
        }
    }

    /// Checks what no heap owns: every abandoned segment has no owner and
    /// a consistent span tiling. (Each heap checks its own segments with
    /// `Heap::verify`.)
    #[cfg(debug_assertions)]
    pub fn verify(&self) -> Result<(), crate::span::Broken> {
        use crate::span::check;
        let key = self.cookie_key();
        self.abandoned.lock().for_each(|s| {
            check(s.owner() == 0, "abandoned segment with an owner", s.base())?;
            s.verify(key, |_| Ok(()))
        })
    }

    /// Resets the locks in a forked child, whose other threads are gone.
    ///
    /// # Safety
    /// Only in the child right after `fork`, with the locks having been
    /// taken by [`Global::lock_all`] before the fork.
    pub unsafe fn fork_child_reset(&self) {
        // SAFETY: the child is single-threaded; the holder was the forking
        // thread, which is this one.
        unsafe { self.unlock_locks() };
        self.fork.reset_in_child();
    }

    /// Takes every global lock and waits out the operations a fork must
    /// not split (before `fork`), so the child inherits neither a lock held
    /// by a thread that no longer exists nor a half-done hand-off.
    pub fn lock_all(&self) {
        core::mem::forget(self.heaps.lock());
        core::mem::forget(self.cache.lock());
        core::mem::forget(self.abandoned.lock());
        core::mem::forget(self.release_lock.lock());
        core::mem::forget(self.registry.lock());
        // After the locks: a guarded operation takes no lock, so it always
        // finishes, while a thread waiting to start one holds none.
        self.fork.quiesce();
    }

    /// Releases what [`Global::lock_all`] took (parent after fork).
    ///
    /// # Safety
    /// Only after `lock_all` by this thread.
    pub unsafe fn unlock_all(&self) {
        self.fork.reopen();
        // SAFETY: this thread took them in `lock_all`.
        unsafe { self.unlock_locks() };
    }

    /// # Safety
    /// The locks must have been taken by `lock_all` (in this process or the
    /// parent).
    unsafe fn unlock_locks(&self) {
        // SAFETY: the caller's contract.
        unsafe {
            self.registry.force_unlock();
            self.release_lock.force_unlock();
            self.abandoned.force_unlock();
            self.cache.force_unlock();
            self.heaps.force_unlock();
        }
    }
}
