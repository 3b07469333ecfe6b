//! [`MemoryStorage`]: an L2 backend in a hash map, for tests, examples and benchmarks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{LockOutcome, StorageBackend, StorageFuture};
use crate::sync::{Mutex, MutexGuard};

/// An in-process [`StorageBackend`]: a hash map behind a mutex, with expiry.
///
/// Clones share one map, so a test can hand one clone to a client and inspect the other.
/// Data does not outlive the process; use the facade's SQLite or Redis backends for that.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pystackquery_core::storage::{MemoryStorage, StorageBackend};
///
/// let storage = MemoryStorage::new();
/// storage.insert("('a',)", "{}");
/// assert_eq!(storage.peek("('a',)").as_deref(), Some("{}"));
/// futures::executor::block_on(async {
///     storage.set("('b',)", "[]", Some(Duration::ZERO)).await.unwrap();
///     assert_eq!(storage.get("('b',)").await.unwrap(), None); // expired at once
/// });
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    map: Arc<Mutex<HashMap<String, Slot>>>,
    /// Fetch locks by record key: the owner's token and the expiry, apart from the records.
    locks: Arc<Mutex<HashMap<String, Slot>>>,
}

#[derive(Debug)]
struct Slot {
    value: String,
    expires_at: Option<Instant>,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl MemoryStorage {
    /// An empty store.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let storage = MemoryStorage::new();
    /// assert!(storage.is_empty());
    /// let _config = QueryClientConfig::default().storage(storage);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // No user code runs under this lock; a poisoned map is still a consistent map.
        self.map.lock()
    }

    /// The live value under `key`, read synchronously.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let storage = MemoryStorage::new();
    /// storage.insert("('user', 1)", r#"{"status": "SUCCESS"}"#);
    /// assert_eq!(storage.peek("('user', 1)").as_deref(), Some(r#"{"status": "SUCCESS"}"#));
    /// assert_eq!(storage.peek("('user', 2)"), None);
    /// ```
    pub fn peek(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        self.lock().get(key).filter(|slot| slot.live(now)).map(|slot| slot.value.clone())
    }

    /// Stores `value` under `key` without expiry, synchronously.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    /// use pystackquery_core::storage::MemoryStorage;
    /// use std::sync::Arc;
    ///
    /// // Seed the store with a record, as another process would have written it.
    /// let storage = Arc::new(MemoryStorage::new());
    /// storage.insert("('n',)", r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": 5, "error": null}"#);
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().storage(storage));
    /// assert_eq!(test.block_on(client.get_query_data_async::<u32>(key!("n"))).unwrap(), Some(5));
    /// # }
    /// ```
    pub fn insert(&self, key: impl Into<String>, value: impl Into<String>) {
        self.lock().insert(key.into(), Slot { value: value.into(), expires_at: None });
    }

    /// The time to live left for `key`, if it has one and is live.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::storage::{MemoryStorage, StorageBackend};
    ///
    /// let storage = MemoryStorage::new();
    /// futures::executor::block_on(storage.set("('a',)", "{}", Some(Duration::from_secs(60)))).unwrap();
    /// assert!(storage.ttl("('a',)").unwrap() <= Duration::from_secs(60));
    /// storage.insert("('b',)", "{}");
    /// assert_eq!(storage.ttl("('b',)"), None); // no expiry
    /// # }
    /// ```
    pub fn ttl(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        self.lock().get(key).and_then(|slot| slot.expires_at).map(|at| at - now)
    }

    /// Number of live entries.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let storage = MemoryStorage::new();
    /// storage.insert("a", "1");
    /// storage.insert("b", "2");
    /// assert_eq!(storage.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|slot| slot.live(now)).count()
    }

    /// Whether there is no live entry.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// assert!(MemoryStorage::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live keys, in no particular order.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let storage = MemoryStorage::new();
    /// storage.insert("('a',)", "{}");
    /// storage.insert("('b',)", "{}");
    /// let mut keys = storage.keys();
    /// keys.sort();
    /// assert_eq!(keys, ["('a',)", "('b',)"]);
    /// ```
    pub fn keys(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock().iter().filter(|(_, slot)| slot.live(now)).map(|(k, _)| k.clone()).collect()
    }
}

impl StorageBackend for MemoryStorage {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>> {
        let value = self.peek(key);
        Box::pin(async move { Ok(value) })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> StorageFuture<'a, ()> {
        let expires_at = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        self.lock().insert(key.to_owned(), Slot { value: value.to_owned(), expires_at });
        Box::pin(async { Ok(()) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        self.lock().remove(key);
        Box::pin(async { Ok(()) })
    }

    /// Locks expire by the system's monotonic clock, as records do: clones of one store
    /// (several clients in one process, modelling several processes) share the locks.
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> StorageFuture<'a, LockOutcome> {
        let now = Instant::now();
        let mut locks = self.locks.lock();
        let outcome = if locks.get(key).is_some_and(|slot| slot.live(now)) {
            LockOutcome::Held
        } else {
            let expires_at = now.checked_add(ttl);
            locks.insert(key.to_owned(), Slot { value: token.to_owned(), expires_at });
            LockOutcome::Acquired
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn unlock<'a>(&'a self, key: &'a str, token: &'a str) -> StorageFuture<'a, ()> {
        let mut locks = self.locks.lock();
        if locks.get(key).is_some_and(|slot| slot.value == token) {
            locks.remove(key);
        }
        Box::pin(async { Ok(()) })
    }
}
