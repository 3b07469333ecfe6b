//! The L1 store: a map from key to query, an LRU order, and an ordered prefix index.
//!
//! One mutex guards all three. Lookups move the entry to the front of the LRU list (a few
//! index writes in a slab, no allocation); inserts evict from the back, skipping queries that
//! are observed or fetching. The ordered index answers "every key under this prefix" with one
//! range scan: keys sharing a prefix are contiguous in part-wise order, so the scan costs
//! O(log n + matches) instead of the seed's walk over every key.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::client::ClientInner;
use crate::key::{KeyHashBuilder, QueryKey};
use crate::runtime::BoxFuture;

/// What the cache needs from a query, whatever its data type.
pub(crate) trait AnyQuery: Send + Sync + 'static {
    /// The key.
    fn key(&self) -> &QueryKey;
    /// The data type's name, for type-mismatch errors.
    fn type_name(&self) -> &'static str;
    /// Marks the query as gone from the cache if it is neither observed nor fetching (or if
    /// `force`). Returns whether it did. Called with the cache lock held.
    fn try_detach(&self, force: bool) -> bool;
    /// Upcast for downcasting to the typed query.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Whether the query writes to L2.
    fn persisted(&self) -> bool;
    /// Marks stale; with `refetch`, refetches if observed. Returns the refetch to wait for.
    fn invalidate(self: Arc<Self>, client: &Arc<ClientInner>, refetch: bool) -> Option<BoxFuture>;
    /// Back to the initial state.
    fn reset(self: Arc<Self>, client: &Arc<ClientInner>);
    /// Pauses background fetching.
    fn pause(&self, client: &ClientInner);
    /// Resumes background fetching.
    fn resume(self: Arc<Self>, client: &Arc<ClientInner>, refetch: bool);
}

/// A shared, type-erased query.
pub(crate) type Entry = Arc<dyn AnyQuery>;

const NIL: usize = usize::MAX;

pub(crate) struct QueryCache {
    inner: Mutex<Inner>,
}

struct Inner {
    map: HashMap<QueryKey, usize, KeyHashBuilder>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    index: BTreeSet<QueryKey>,
    max_size: usize,
}

struct Slot {
    entry: Option<Entry>,
    prev: usize,
    next: usize,
}

impl QueryCache {
    pub(crate) fn new(max_size: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::with_hasher(KeyHashBuilder),
                slots: Vec::new(),
                free: Vec::new(),
                head: NIL,
                tail: NIL,
                index: BTreeSet::new(),
                max_size,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No user code runs under this lock (only `try_detach`, which cannot panic), so a
        // poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The query under `key`, marked most recently used.
    pub(crate) fn get(&self, key: &QueryKey) -> Option<Entry> {
        let mut inner = self.lock();
        let slot = *inner.map.get(key)?;
        inner.touch(slot);
        inner.slots[slot].entry.clone()
    }

    /// The query under `key`, created by `make` when missing. Returns the entry and the
    /// queries evicted to make room (already detached; the caller may log them).
    pub(crate) fn get_or_insert_with(
        &self,
        key: &QueryKey,
        make: impl FnOnce() -> Entry,
    ) -> (Entry, Vec<Entry>) {
        let mut inner = self.lock();
        if let Some(&slot) = inner.map.get(key) {
            inner.touch(slot);
            if let Some(entry) = inner.slots[slot].entry.clone() {
                return (entry, Vec::new());
            }
        }
        let entry = make();
        let mut evicted = Vec::new();
        while inner.map.len() >= inner.max_size.max(1) {
            match inner.evict_one() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        inner.insert(key.clone(), entry.clone());
        (entry, evicted)
    }

    /// Removes `key` if it still holds `expected` and that query agrees to go (`try_detach`).
    pub(crate) fn remove_if_idle(&self, key: &QueryKey, expected: &Entry) -> bool {
        let mut inner = self.lock();
        let Some(&slot) = inner.map.get(key) else {
            return false;
        };
        let same = inner.slots[slot].entry.as_ref().is_some_and(|e| same_query(e, expected));
        if !same || !expected.try_detach(false) {
            return false;
        }
        inner.remove_slot(slot);
        true
    }

    /// Removes every query under `prefix` (all when `None`), observed or not.
    pub(crate) fn remove_matching(&self, prefix: Option<&QueryKey>) -> Vec<Entry> {
        let mut inner = self.lock();
        let keys: Vec<QueryKey> = match prefix {
            Some(prefix) => inner.keys_under(prefix),
            None => inner.index.iter().cloned().collect(),
        };
        let mut removed = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(&slot) = inner.map.get(&key)
                && let Some(entry) = inner.remove_slot(slot)
            {
                entry.try_detach(true);
                removed.push(entry);
            }
        }
        removed
    }

    /// Every query under `prefix` (all when `None`), without touching the LRU order.
    pub(crate) fn find_matching(&self, prefix: Option<&QueryKey>) -> Vec<Entry> {
        let inner = self.lock();
        let keys: Vec<QueryKey> = match prefix {
            Some(prefix) => inner.keys_under(prefix),
            None => inner.index.iter().cloned().collect(),
        };
        keys.iter()
            .filter_map(|k| inner.map.get(k).and_then(|&s| inner.slots[s].entry.clone()))
            .collect()
    }

    /// Keys in least-recently-used-first order (for tests and inspection).
    pub(crate) fn keys_lru_first(&self) -> Vec<QueryKey> {
        let inner = self.lock();
        let mut keys = Vec::with_capacity(inner.map.len());
        let mut at = inner.tail;
        while at != NIL {
            if let Some(e) = &inner.slots[at].entry {
                keys.push(e.key().clone());
            }
            at = inner.slots[at].prev;
        }
        keys
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

/// Whether two entries are the same query (compares the data pointers, not the vtables).
pub(crate) fn same_query(a: &Entry, b: &Entry) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Inner {
    fn keys_under(&self, prefix: &QueryKey) -> Vec<QueryKey> {
        self.index
            .range((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|k| prefix.is_prefix_of(k))
            .cloned()
            .collect()
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next) = (self.slots[slot].prev, self.slots[slot].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
    }

    fn push_front(&mut self, slot: usize) {
        self.slots[slot].prev = NIL;
        self.slots[slot].next = self.head;
        if self.head != NIL {
            self.slots[self.head].prev = slot;
        }
        self.head = slot;
        if self.tail == NIL {
            self.tail = slot;
        }
    }

    fn touch(&mut self, slot: usize) {
        if self.head != slot {
            self.unlink(slot);
            self.push_front(slot);
        }
    }

    fn insert(&mut self, key: QueryKey, entry: Entry) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot].entry = Some(entry);
                slot
            }
            None => {
                self.slots.push(Slot { entry: Some(entry), prev: NIL, next: NIL });
                self.slots.len() - 1
            }
        };
        self.push_front(slot);
        self.index.insert(key.clone());
        self.map.insert(key, slot);
    }

    fn remove_slot(&mut self, slot: usize) -> Option<Entry> {
        let entry = self.slots[slot].entry.take()?;
        self.unlink(slot);
        self.free.push(slot);
        self.map.remove(entry.key());
        self.index.remove(entry.key());
        Some(entry)
    }

    /// Evicts the least recently used query that agrees to go.
    fn evict_one(&mut self) -> Option<Entry> {
        let mut at = self.tail;
        while at != NIL {
            let prev = self.slots[at].prev;
            if self.slots[at].entry.as_ref().is_some_and(|e| e.try_detach(false)) {
                return self.remove_slot(at);
            }
            at = prev;
        }
        None
    }
}
