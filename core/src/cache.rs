//! The cache of whole unused reservations (empty segments and freed huge
//! blocks) kept for reuse: a plain data structure. It decides what to keep,
//! what to hand back and what to evict; `Global` makes the provider calls
//! for whatever it returns.

/// Entries the cache can hold at most (`Options::segment_cache` may limit
/// it further).
pub const CACHE_SLOTS: usize = 16;

/// One cached reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub base: usize,
    pub len: usize,
    /// Its contents are resident (kept hot for quick reuse).
    pub committed: bool,
    /// When it was cached (clock ms, or 0 without a clock).
    pub since: u64,
    /// The memory node its pages are placed on (0 where unknown).
    pub node: u32,
}

const EMPTY: CacheEntry = CacheEntry {
    base: 0,
    len: 0,
    committed: false,
    since: 0,
    node: 0,
};

/// Cached reservations, and the bytes of those kept resident.
pub struct RangeCache {
    entries: [CacheEntry; CACHE_SLOTS],
    count: usize,
    committed_bytes: usize,
}

impl RangeCache {
    pub const fn new() -> Self {
        RangeCache {
            entries: [EMPTY; CACHE_SLOTS],
            count: 0,
            committed_bytes: 0,
        }
    }

    /// Takes the best entry for a request of `len` bytes: exactly `len`
    /// when `exact` (segments); otherwise a range at most 1/2 longer (huge
    /// blocks use it whole), resident ones before decommitted ones (whose
    /// pages would fault in again), then the shortest. With a `node`, an
    /// entry placed on that node goes before any other (one on another
    /// node is still taken when there is no such entry: reusing it beats a
    /// new reservation).
    pub fn take(&mut self, len: usize, exact: bool, node: Option<u32>) -> Option<CacheEntry> {
        // The caller's node first, then resident ranges (a decommitted one
        // faults its pages in again), then the shortest.
        let rank = |e: &CacheEntry| (node.is_some_and(|n| e.node != n), !e.committed, e.len);
        let mut best: Option<usize> = None;
        for (i, e) in self.entries[..self.count].iter().enumerate() {
            let fits = e.len == len || (!exact && e.len > len && e.len - len <= len / 2);
            if fits && best.is_none_or(|b| rank(&self.entries[b]) > rank(e)) {
                best = Some(i);
            }
        }
        Some(self.remove(best?))
    }

    /// How many ranges are cached, their bytes, and the bytes of those
    /// kept resident.
    pub fn totals(&self) -> (usize, usize, usize) {
        let bytes = self.entries[..self.count].iter().map(|e| e.len).sum();
        (self.count, bytes, self.committed_bytes)
    }

    /// Reserves `len` bytes of the resident budget for an entry about to be
    /// put in resident; false when the budget is spent (the caller
    /// decommits it first).
    pub fn reserve_resident(&mut self, len: usize, budget: usize) -> bool {
        if self.committed_bytes + len > budget {
            return false;
        }
        self.committed_bytes += len;
        true
    }

    /// Adds an entry (a resident one must have had its bytes reserved with
    /// [`RangeCache::reserve_resident`]). With `slots` entries already
    /// there, the oldest is evicted and returned: the caller releases it.
    pub fn put(&mut self, e: CacheEntry, slots: usize) -> Option<CacheEntry> {
        let slots = slots.clamp(1, CACHE_SLOTS);
        let mut evicted = None;
        if self.count >= slots {
            let oldest = (0..self.count)
                .min_by_key(|&i| self.entries[i].since)
                .unwrap_or(0);
            evicted = Some(self.remove(oldest));
        }
        self.entries[self.count] = e;
        self.count += 1;
        evicted
    }

    /// Takes any entry (to release everything).
    pub fn pop(&mut self) -> Option<CacheEntry> {
        if self.count == 0 {
            None
        } else {
            Some(self.remove(self.count - 1))
        }
    }

    /// Marks one resident entry cached at least `delay` before `now` as
    /// decommitted and returns it: the caller decommits its body.
    pub fn take_stale_resident(&mut self, now: u64, delay: u64) -> Option<CacheEntry> {
        let i = (0..self.count).find(|&i| {
            let e = &self.entries[i];
            e.committed && now.saturating_sub(e.since) >= delay
        })?;
        let e = &mut self.entries[i];
        e.committed = false;
        self.committed_bytes -= e.len;
        Some(*e)
    }

    fn remove(&mut self, i: usize) -> CacheEntry {
        let e = self.entries[i];
        self.count -= 1;
        self.entries[i] = self.entries[self.count];
        if e.committed {
            self.committed_bytes -= e.len;
        }
        e
    }
}

impl Default for RangeCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: usize, len: usize, committed: bool, since: u64) -> CacheEntry {
        CacheEntry {
            base,
            len,
            committed,
            since,
            node: 0,
        }
    }

    #[test]
    fn takes_the_best_fit_and_evicts_the_oldest() {
        let mut c = RangeCache::new();
        assert!(c.reserve_resident(100, 1000));
        assert_eq!(c.put(entry(1, 100, true, 5), 3), None);
        assert_eq!(c.put(entry(2, 120, false, 3), 3), None);
        assert_eq!(c.put(entry(3, 200, false, 7), 3), None);
        // Full: the oldest (since 3) goes.
        assert_eq!(
            c.put(entry(4, 90, false, 9), 3),
            Some(entry(2, 120, false, 3))
        );
        // Exact requests take only equal lengths.
        assert_eq!(c.take(95, true, None), None);
        // Otherwise within 1/2: a resident one first, then the shortest.
        assert_eq!(c.take(80, false, None).map(|e| e.base), Some(1));
        assert_eq!(
            c.committed_bytes, 0,
            "taking a resident entry frees its budget"
        );
        assert_eq!(c.take(80, false, None).map(|e| e.base), Some(4));
        assert_eq!(c.take(80, false, None), None, "200 is more than 1/2 longer");
    }

    #[test]
    fn resident_budget_and_staleness() {
        let mut c = RangeCache::new();
        assert!(c.reserve_resident(600, 1000));
        assert!(!c.reserve_resident(600, 1000), "over budget");
        c.put(entry(1, 600, true, 10), 8);
        assert_eq!(c.take_stale_resident(50, 100), None, "not stale yet");
        let e = c.take_stale_resident(110, 100).expect("stale");
        assert_eq!((e.base, e.committed), (1, false));
        assert!(c.reserve_resident(1000, 1000), "budget given back");
        assert_eq!(c.pop().map(|e| e.base), Some(1));
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn prefers_the_wanted_node_then_falls_back() {
        let mut c = RangeCache::new();
        let on = |base, node| CacheEntry {
            node,
            ..entry(base, 100, false, 0)
        };
        c.put(on(1, 0), 8);
        c.put(on(2, 1), 8);
        c.put(on(3, 0), 8);
        assert_eq!(c.take(100, true, Some(1)).map(|e| e.base), Some(2));
        // No entry on node 1 left: one on node 0 serves.
        assert_eq!(c.take(100, true, Some(1)).map(|e| e.node), Some(0));
        // Without a node the order is the plain one.
        assert!(c.take(100, true, None).is_some());
        assert_eq!(c.take(100, true, Some(0)), None);
    }
}
