//! The L1 store: sharded maps from key to query, an LRU order, and an ordered prefix index.
//!
//! The map is split into [`SHARDS`] shards, each behind its own mutex, so that hits on
//! different keys from different threads do not queue on one lock. Each shard keeps its
//! queries in a slab with an intrusive LRU list; every list position carries a [`Stamp`]
//! (the client clock at the last use, plus a per-thread sequence to order uses within one clock
//! tick). Eviction compares the least recently used evictable query of every shard and takes
//! the oldest, which is the exact LRU victim for one thread and a close approximation under
//! concurrency. Evictions are rare (an insert into a full cache), hits are not.
//!
//! The ordered index (one `BTreeSet` of keys) answers "every key under this prefix" with one
//! range scan: keys sharing a prefix are contiguous in part-wise order, so the scan costs
//! O(log n + matches) instead of the seed's walk over every key. It is only written while
//! the key's shard lock is held, so it always contains every key the shards contain.
//!
//! The store is generic over the query type it holds (`Q: Stored`): it knows keys, idleness
//! and detaching, nothing of fetching, observers or the client. Lock order: see ARCHITECTURE.md.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::key::{KeyHashBuilder, QueryKey};
use crate::sync::{Mutex, MutexGuard};

/// What the store needs from a query, whatever its data type: nothing of the engine.
pub(crate) trait Stored: Send + Sync + 'static {
    /// The key.
    fn key(&self) -> &QueryKey;
    /// The data type's name, for type-mismatch errors.
    fn type_name(&self) -> &'static str;
    /// Whether the query could be evicted now (neither observed nor fetching).
    fn is_idle(&self) -> bool;
    /// Marks the query as gone from the store if it is neither observed nor fetching (or if
    /// `force`). Returns whether it did. Called with the shard lock held.
    fn try_detach(&self, force: bool) -> bool;
}

/// Number of shards (a power of two).
pub(crate) const SHARDS: usize = 32;

const NIL: u32 = u32::MAX;

/// When a query was last used: nanoseconds on the client clock, then a per-thread sequence
/// that orders uses within one clock reading. 16 bytes, so a list position is 40.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp {
    at: u64,
    seq: u32,
}

impl Stamp {
    /// A stamp for a use at `at` (nanoseconds on the client clock).
    pub(crate) fn new(at: u64) -> Self {
        thread_local! {
            static SEQ: Cell<u32> = const { Cell::new(0) };
        }
        let seq = SEQ.with(|s| {
            let next = s.get().wrapping_add(1);
            s.set(next);
            next
        });
        Self { at, seq }
    }
}

pub(crate) struct QueryCache<Q: ?Sized> {
    shards: Box<[Shard<Q>]>,
    index: Mutex<BTreeSet<QueryKey>>,
    len: AtomicUsize,
    max_size: usize,
}

/// One shard, on its own cache line pair so that two shards never share one.
#[repr(align(128))]
struct Shard<Q: ?Sized> {
    lock: Mutex<ShardInner<Q>>,
    /// Hits answered by [`QueryCache::peek_with`] from this shard. Written only with `lock`
    /// held, so a plain load and store count exactly (no atomic read-modify-write on the hit
    /// path, and no line the hit path does not already own); read without the lock.
    hits: AtomicU64,
}

struct ShardInner<Q: ?Sized> {
    map: HashMap<QueryKey, u32, KeyHashBuilder>,
    slots: Vec<Slot<Q>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
}

struct Slot<Q: ?Sized> {
    entry: Option<Arc<Q>>,
    prev: u32,
    next: u32,
    stamp: Stamp,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}

impl<Q: ?Sized + Stored> QueryCache<Q> {
    pub(crate) fn new(max_size: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard {
                lock: Mutex::new(ShardInner {
                    map: HashMap::default(),
                    slots: Vec::new(),
                    free: Vec::new(),
                    head: NIL,
                    tail: NIL,
                }),
                hits: AtomicU64::new(0),
            })
            .collect();
        Self { shards, index: Mutex::new(BTreeSet::new()), len: AtomicUsize::new(0), max_size }
    }

    fn shard(&self, key: &QueryKey) -> &Shard<Q> {
        // Bits 32.. pick the shard: the maps inside use the low bits for buckets and the top
        // seven as tags, so this keeps both well spread within a shard.
        &self.shards[(key.hash_u64() >> 32) as usize & (SHARDS - 1)]
    }

    /// Runs `f` on the query under `key` with its shard locked; when `f` returns `Some`,
    /// marks the query used at `stamp`, and counts a hit (see [`hits`](Self::hits)) if `hit`
    /// says the answer is one. The hit path: no reference count is touched.
    pub(crate) fn peek_with<R>(
        &self,
        key: &QueryKey,
        stamp: Stamp,
        f: impl FnOnce(&Q) -> Option<R>,
        hit: impl FnOnce(&R) -> bool,
    ) -> Option<R> {
        let shard = self.shard(key);
        let mut inner = lock(&shard.lock);
        let slot = *inner.map.get(key)?;
        let out = f(&**inner.slots[slot as usize].entry.as_ref()?)?;
        inner.touch(slot, stamp);
        if hit(&out) {
            // Every writer holds the shard lock, which orders the writes: nothing is lost.
            shard.hits.store(shard.hits.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        Some(out)
    }

    /// The hits counted by [`peek_with`](Self::peek_with), summed over the shards. Hits
    /// counted by other threads during the call may or may not be included.
    pub(crate) fn hits(&self) -> u64 {
        self.shards.iter().map(|s| s.hits.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }

    /// The query under `key`, marked used at `stamp`.
    pub(crate) fn get(&self, key: &QueryKey, stamp: Stamp) -> Option<Arc<Q>> {
        let mut shard = lock(&self.shard(key).lock);
        let slot = *shard.map.get(key)?;
        shard.touch(slot, stamp);
        shard.slots[slot as usize].entry.clone()
    }

    /// The query under `key`, without marking it used.
    pub(crate) fn lookup(&self, key: &QueryKey) -> Option<Arc<Q>> {
        let shard = lock(&self.shard(key).lock);
        let slot = *shard.map.get(key)?;
        shard.slots[slot as usize].entry.clone()
    }

    /// The query under `key`, created by `make` when missing. Returns the entry and the
    /// queries evicted to make room (already detached; the caller may log them).
    pub(crate) fn get_or_insert_with(
        &self,
        key: &QueryKey,
        stamp: Stamp,
        make: impl FnOnce() -> Arc<Q>,
    ) -> (Arc<Q>, Vec<Arc<Q>>) {
        let entry = {
            let mut shard = lock(&self.shard(key).lock);
            if let Some(&slot) = shard.map.get(key) {
                shard.touch(slot, stamp);
                if let Some(entry) = shard.slots[slot as usize].entry.clone() {
                    return (entry, Vec::new());
                }
            }
            let entry = make();
            shard.insert(key.clone(), entry.clone(), stamp);
            lock(&self.index).insert(key.clone());
            entry
        };
        let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
        let mut evicted = Vec::new();
        if len > self.max_size.max(1) {
            while self.len.load(Ordering::Relaxed) > self.max_size.max(1) {
                match self.evict_one(&entry, stamp.at) {
                    Some(e) => evicted.push(e),
                    None => break,
                }
            }
        }
        (entry, evicted)
    }

    /// Evicts the least recently used idle query other than `keep`.
    ///
    /// Busy queries (observed, fetching) older than the victim were passed over: they count as
    /// used at this moment and move to the front of their shard with a fresh stamp, so a tail
    /// of busy queries is walked once, not on every eviction (eviction stays O(1) amortised),
    /// and the victims are those of an exact LRU under that rule. With no idle query at all,
    /// every busy query walked counts as passed over.
    fn evict_one(&self, keep: &Arc<Q>, now: u64) -> Option<Arc<Q>> {
        // Tried a few times: a candidate may become busy between the scan and the removal.
        for _ in 0..4 {
            let mut best: Option<(Stamp, usize, u32)> = None;
            let mut walked_busy = Vec::new();
            for (i, shard) in self.shards.iter().enumerate() {
                let shard = lock(&shard.lock);
                // Nothing at or after the best candidate so far can beat it: stop there.
                let (candidate, passed_busy) = shard.oldest_idle(keep, best.map(|b| b.0));
                if passed_busy {
                    walked_busy.push(i);
                }
                if let Some((stamp, slot)) = candidate
                    && best.is_none_or(|(s, _, _)| stamp < s)
                {
                    best = Some((stamp, i, slot));
                }
            }
            let Some((stamp, i, slot)) = best else {
                self.promote_busy(&walked_busy, None, keep, now);
                return None;
            };
            let mut shard = lock(&self.shards[i].lock);
            let s = &shard.slots[slot as usize];
            let still = s.stamp == stamp && s.entry.as_ref().is_some_and(|e| e.try_detach(false));
            if still {
                let entry = shard.remove_slot(slot)?;
                drop(shard);
                lock(&self.index).remove(entry.key());
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.promote_busy(&walked_busy, Some(stamp), keep, now);
                return Some(entry);
            }
        }
        None
    }

    /// Moves the busy queries older than `victim` (all of them when `None`) of `shards` to the
    /// front, as used at `now`.
    fn promote_busy(&self, shards: &[usize], victim: Option<Stamp>, keep: &Arc<Q>, now: u64) {
        for &i in shards {
            let mut shard = lock(&self.shards[i].lock);
            let mut at = shard.tail;
            let mut promoted = Vec::new();
            while at != NIL {
                let s = &shard.slots[at as usize];
                if victim.is_some_and(|v| s.stamp >= v) {
                    break;
                }
                if let Some(e) = &s.entry
                    && !same_query(e, keep)
                    && !e.is_idle()
                {
                    promoted.push(at);
                }
                at = s.prev;
            }
            // Oldest first, so that they keep their order among themselves.
            for slot in promoted {
                shard.touch(slot, Stamp::new(now));
            }
        }
    }

    /// Removes `key` if it still holds `expected` and that query agrees to go (`try_detach`).
    pub(crate) fn remove_if_idle(&self, key: &QueryKey, expected: &Arc<Q>) -> bool {
        let mut shard = lock(&self.shard(key).lock);
        let Some(&slot) = shard.map.get(key) else {
            return false;
        };
        let same =
            shard.slots[slot as usize].entry.as_ref().is_some_and(|e| same_query(e, expected));
        if !same || !expected.try_detach(false) {
            return false;
        }
        if let Some(entry) = shard.remove_slot(slot) {
            lock(&self.index).remove(entry.key());
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// Removes `key` if it still holds `expected`, observed or not. Returns whether it did.
    pub(crate) fn remove_entry(&self, key: &QueryKey, expected: &Arc<Q>) -> bool {
        let mut shard = lock(&self.shard(key).lock);
        let Some(&slot) = shard.map.get(key) else {
            return false;
        };
        let same =
            shard.slots[slot as usize].entry.as_ref().is_some_and(|e| same_query(e, expected));
        if !same {
            return false;
        }
        if let Some(entry) = shard.remove_slot(slot) {
            lock(&self.index).remove(entry.key());
            self.len.fetch_sub(1, Ordering::Relaxed);
            entry.try_detach(true);
        }
        true
    }

    /// Keys under `prefix` (every key when `None`), in index order.
    fn keys_under(&self, prefix: Option<&QueryKey>) -> Vec<QueryKey> {
        let index = lock(&self.index);
        match prefix {
            Some(prefix) => index
                .range((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|k| prefix.is_prefix_of(k))
                .cloned()
                .collect(),
            None => index.iter().cloned().collect(),
        }
    }

    /// Removes every query under `prefix` (all when `None`), observed or not.
    pub(crate) fn remove_matching(&self, prefix: Option<&QueryKey>) -> Vec<Arc<Q>> {
        let keys = self.keys_under(prefix);
        let mut removed = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = lock(&self.shard(&key).lock);
            if let Some(&slot) = shard.map.get(&key)
                && let Some(entry) = shard.remove_slot(slot)
            {
                lock(&self.index).remove(entry.key());
                self.len.fetch_sub(1, Ordering::Relaxed);
                entry.try_detach(true);
                removed.push(entry);
            }
        }
        removed
    }

    /// Every query under `prefix` (all when `None`), without touching the LRU order.
    pub(crate) fn find_matching(&self, prefix: Option<&QueryKey>) -> Vec<Arc<Q>> {
        self.keys_under(prefix).iter().filter_map(|k| self.lookup(k)).collect()
    }

    /// Keys in least-recently-used-first order (for tests and inspection).
    pub(crate) fn keys_lru_first(&self) -> Vec<QueryKey> {
        let mut all: Vec<(Stamp, QueryKey)> = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let shard = lock(&shard.lock);
            all.extend(
                shard.slots.iter().filter_map(|s| Some((s.stamp, s.entry.as_ref()?.key().clone()))),
            );
        }
        all.sort_by_key(|a| a.0);
        all.into_iter().map(|(_, k)| k).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// Whether two entries are the same query (compares the data pointers, not the vtables).
pub(crate) fn same_query<Q: ?Sized>(a: &Arc<Q>, b: &Arc<Q>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl<Q: ?Sized + Stored> ShardInner<Q> {
    fn unlink(&mut self, slot: u32) {
        let (prev, next) = (self.slots[slot as usize].prev, self.slots[slot as usize].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, slot: u32) {
        let head = self.head;
        let s = &mut self.slots[slot as usize];
        s.prev = NIL;
        s.next = head;
        if head != NIL {
            self.slots[head as usize].prev = slot;
        }
        self.head = slot;
        if self.tail == NIL {
            self.tail = slot;
        }
    }

    fn touch(&mut self, slot: u32, stamp: Stamp) {
        let s = &mut self.slots[slot as usize];
        // Stamps from other threads may arrive slightly out of order; never move backwards.
        if stamp > s.stamp {
            s.stamp = stamp;
        }
        if self.head != slot {
            self.unlink(slot);
            self.push_front(slot);
        }
    }

    fn insert(&mut self, key: QueryKey, entry: Arc<Q>, stamp: Stamp) {
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.entry = Some(entry);
                s.stamp = stamp;
                slot
            }
            None => {
                self.slots.push(Slot { entry: Some(entry), prev: NIL, next: NIL, stamp });
                // A shard holding four billion queries is beyond any memory this runs in.
                (self.slots.len() - 1) as u32
            }
        };
        self.push_front(slot);
        self.map.insert(key, slot);
    }

    fn remove_slot(&mut self, slot: u32) -> Option<Arc<Q>> {
        let entry = self.slots[slot as usize].entry.take()?;
        self.unlink(slot);
        self.free.push(slot);
        self.map.remove(entry.key());
        Some(entry)
    }

    /// The least recently used query of this shard that could be evicted, other than `keep`,
    /// if it is older than `bound`; and whether busy queries were passed over looking for it.
    fn oldest_idle(&self, keep: &Arc<Q>, bound: Option<Stamp>) -> (Option<(Stamp, u32)>, bool) {
        let mut at = self.tail;
        let mut passed_busy = false;
        while at != NIL {
            let s = &self.slots[at as usize];
            if bound.is_some_and(|b| s.stamp >= b) {
                break;
            }
            match &s.entry {
                Some(e) if same_query(e, keep) => {}
                Some(e) if e.is_idle() => return (Some((s.stamp, at)), passed_busy),
                Some(_) => passed_busy = true,
                None => {}
            }
            at = s.prev;
        }
        (None, passed_busy)
    }
}

impl<Q: ?Sized> std::fmt::Debug for QueryCache<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache").field("len", &self.len.load(Ordering::Relaxed)).finish()
    }
}

#[cfg(test)]
mod tests;
