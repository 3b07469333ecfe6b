//! Pending seeds: hydrated records whose key has not been used with persisting options yet,
//! so whose data type is not known. The first such use of the key takes its seed (in
//! `begin_hydration`) and restores it, newer wins. Bounded: at most the cache's size; a seed
//! offered to a full map evicts the oldest one.
//!
//! The map's lock is a leaf: it may be taken under a query's lock (to take the key's seed),
//! and nothing is locked under it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::key::{KeyHashBuilder, QueryKey};
use crate::sync::Mutex;

/// One hydrated record waiting for its key's first persisting use.
#[derive(Debug, Clone)]
pub(crate) struct Seed {
    /// The record (the L2 record format), not yet decoded.
    pub(crate) state: serde_json::Value,
    /// The record's `data_updated_at`, read when it was offered.
    pub(crate) data_updated_at: Option<SystemTime>,
}

/// What [`Seeds::offer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The seed is kept; `evicted` is the key whose seed made room for it, if the map was
    /// full.
    Kept { evicted: Option<QueryKey> },
    /// The key's pending seed is as new or newer: the offered one is dropped.
    Older,
}

/// The client's pending seeds.
pub(crate) struct Seeds {
    /// How many seeds are pending: read without the lock, so that a key's first use costs
    /// one atomic load while there are none.
    pending: AtomicUsize,
    capacity: usize,
    inner: Mutex<SeedMap>,
}

#[derive(Default)]
struct SeedMap {
    by_key: HashMap<QueryKey, (u64, Seed), KeyHashBuilder>,
    /// Offer order, oldest first: the eviction order.
    order: BTreeMap<u64, QueryKey>,
    next: u64,
}

impl SeedMap {
    fn remove(&mut self, key: &QueryKey) -> Option<Seed> {
        let (seq, seed) = self.by_key.remove(key)?;
        self.order.remove(&seq);
        Some(seed)
    }
}

impl Seeds {
    /// A map of at most `capacity` seeds (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            pending: AtomicUsize::new(0),
            capacity: capacity.max(1),
            inner: Mutex::new(SeedMap::default()),
        }
    }

    /// Whether any seed is pending.
    pub(crate) fn any(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// How many seeds are pending.
    pub(crate) fn len(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn set_pending(&self, map: &SeedMap) {
        self.pending.store(map.by_key.len(), Ordering::Release);
    }

    /// Keeps `seed` for `key` unless the key's pending seed is as new or newer (by
    /// `data_updated_at`; a record without one is the oldest).
    pub(crate) fn offer(&self, key: QueryKey, seed: Seed) -> Offer {
        let mut map = self.inner.lock();
        if let Some((_, old)) = map.by_key.get(&key)
            && seed.data_updated_at <= old.data_updated_at
        {
            return Offer::Older;
        }
        let replaced = map.remove(&key);
        let mut evicted = None;
        if map.by_key.len() >= self.capacity
            && let Some((_, oldest)) = map.order.pop_first()
        {
            map.by_key.remove(&oldest);
            evicted = Some(oldest);
        }
        let seq = map.next;
        map.next += 1;
        map.order.insert(seq, key.clone());
        map.by_key.insert(key, (seq, seed));
        self.set_pending(&map);
        drop(map);
        drop(replaced);
        Offer::Kept { evicted }
    }

    /// Takes the key's seed, if any.
    pub(crate) fn take(&self, key: &QueryKey) -> Option<Seed> {
        if !self.any() {
            return None;
        }
        let mut map = self.inner.lock();
        let seed = map.remove(key);
        self.set_pending(&map);
        seed
    }

    /// Whether `key` has a pending seed.
    pub(crate) fn contains(&self, key: &QueryKey) -> bool {
        self.any() && self.inner.lock().by_key.contains_key(key)
    }

    /// A copy of the key's seed, left pending.
    pub(crate) fn peek(&self, key: &QueryKey) -> Option<Seed> {
        if !self.any() {
            return None;
        }
        self.inner.lock().by_key.get(key).map(|(_, seed)| seed.clone())
    }

    /// Copies of the seeds whose key `prefix` chooses (exactly the key if `exact`; every seed
    /// without a prefix), in key order.
    pub(crate) fn matching(&self, prefix: Option<(&QueryKey, bool)>) -> Vec<(QueryKey, Seed)> {
        if !self.any() {
            return Vec::new();
        }
        let map = self.inner.lock();
        let mut out: Vec<(QueryKey, Seed)> = map
            .by_key
            .iter()
            .filter(|(key, _)| chosen(prefix, key))
            .map(|(key, (_, seed))| (key.clone(), seed.clone()))
            .collect();
        drop(map);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Drops the seeds whose key `prefix` chooses (see [`matching`](Self::matching)); returns
    /// how many.
    pub(crate) fn remove_matching(&self, prefix: Option<(&QueryKey, bool)>) -> usize {
        if !self.any() {
            return 0;
        }
        let mut map = self.inner.lock();
        let doomed: Vec<QueryKey> =
            map.by_key.keys().filter(|key| chosen(prefix, key)).cloned().collect();
        let dropped: Vec<Seed> = doomed.iter().filter_map(|key| map.remove(key)).collect();
        self.set_pending(&map);
        drop(map);
        dropped.len()
    }
}

fn chosen(prefix: Option<(&QueryKey, bool)>, key: &QueryKey) -> bool {
    match prefix {
        None => true,
        Some((prefix, true)) => prefix == key,
        Some((prefix, false)) => prefix.is_prefix_of(key),
    }
}

impl std::fmt::Debug for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seeds")
            .field("pending", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{Offer, Seed, Seeds};
    use crate::key::QueryKey;

    fn seed(at: u64) -> Seed {
        Seed {
            state: serde_json::json!({"status": "SUCCESS", "data": at}),
            data_updated_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(at)),
        }
    }

    fn key(name: &str, n: i64) -> QueryKey {
        QueryKey::from((name, n))
    }

    #[test]
    fn newer_wins_and_the_oldest_offer_is_evicted_when_full() {
        let seeds = Seeds::new(2);
        assert!(!seeds.any());
        assert_eq!(seeds.offer(key("a", 1), seed(10)), Offer::Kept { evicted: None });
        assert_eq!(seeds.offer(key("a", 1), seed(10)), Offer::Older, "as new: kept the first");
        assert_eq!(seeds.offer(key("a", 1), seed(5)), Offer::Older);
        assert_eq!(seeds.offer(key("a", 1), seed(11)), Offer::Kept { evicted: None });
        assert_eq!(seeds.offer(key("b", 1), seed(1)), Offer::Kept { evicted: None });
        assert_eq!(seeds.offer(key("c", 1), seed(1)), Offer::Kept { evicted: Some(key("a", 1)) });
        assert_eq!(seeds.len(), 2);
        assert!(seeds.take(&key("a", 1)).is_none());
        assert_eq!(seeds.take(&key("b", 1)).unwrap().state["data"], 1);
        assert_eq!(seeds.len(), 1);
    }

    #[test]
    fn prefixes_choose_seeds() {
        let seeds = Seeds::new(10);
        for (name, n) in [("a", 1), ("a", 2), ("b", 1)] {
            let _ = seeds.offer(key(name, n), seed(1));
        }
        let a = QueryKey::from(("a",));
        let listed: Vec<QueryKey> =
            seeds.matching(Some((&a, false))).into_iter().map(|(k, _)| k).collect();
        assert_eq!(listed, [key("a", 1), key("a", 2)]);
        assert!(seeds.matching(Some((&a, true))).is_empty());
        assert_eq!(seeds.remove_matching(Some((&key("a", 2), true))), 1);
        assert_eq!(seeds.remove_matching(Some((&a, false))), 1);
        assert!(seeds.contains(&key("b", 1)));
        assert_eq!(seeds.remove_matching(None), 1);
        assert!(!seeds.any());
    }
}
