//! [`QueryClientConfig`]: the client-wide defaults every query option left unset inherits,
//! and the client's storage settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::coherence::CoherenceBus;
use crate::retryer::{RetryDelayFn, default_retry_delay};
use crate::storage::StorageBackend;

/// Client-wide defaults, inherited by every query option left unset.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pystackquery_core::QueryClientConfig;
///
/// let config = QueryClientConfig::default()
///     .stale_time(Duration::from_secs(30))
///     .cache_max_size(10_000);
/// assert_eq!(config.gc_time_value(), Duration::from_secs(300));
/// ```
#[derive(Clone)]
pub struct QueryClientConfig {
    pub(crate) stale_time: Duration,
    pub(crate) gc_time: Duration,
    pub(crate) retry: u32,
    pub(crate) retry_delay: RetryDelayFn,
    pub(crate) cache_max_size: usize,
    pub(crate) storage: Option<Arc<dyn StorageBackend>>,
    pub(crate) storage_timeout: Duration,
    pub(crate) storage_queue_size: usize,
    pub(crate) storage_failure_threshold: u32,
    pub(crate) storage_cooldown: Duration,
    pub(crate) persist_max_age: Duration,
    pub(crate) bus: Option<Arc<dyn CoherenceBus>>,
    pub(crate) storage_first: bool,
    pub(crate) single_flight: Option<Duration>,
}

impl QueryClientConfig {
    /// Default freshness of fetched data. Default: zero (data is stale at once, and the next
    /// read revalidates it in the background).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// // Every query without its own stale time is fresh for 30 s after a fetch.
    /// let config = QueryClientConfig::default().stale_time(Duration::from_secs(30));
    /// assert_eq!(config.stale_time_value(), Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn stale_time(mut self, duration: Duration) -> Self {
        self.stale_time = duration;
        self
    }

    /// Default time an unobserved query stays cached. Default: 300 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// let config = QueryClientConfig::default().gc_time(Duration::from_secs(60));
    /// assert_eq!(config.gc_time_value(), Duration::from_secs(60));
    /// ```
    #[must_use]
    pub fn gc_time(mut self, duration: Duration) -> Self {
        self.gc_time = duration;
        self
    }

    /// Default number of retries after a failed attempt. Default: 3.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// let config = QueryClientConfig::default().retry(0); // fail fast, e.g. in tests
    /// assert_eq!(config.retry_value(), 0);
    /// ```
    #[must_use]
    pub fn retry(mut self, retries: u32) -> Self {
        self.retry = retries;
        self
    }

    /// Default retry delay. Default: [`default_retry_delay`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let config = QueryClientConfig::default().retry(2).retry_delay(|_attempt| Duration::from_millis(250));
    /// let client = QueryClient::with_runtime(test.runtime(), config);
    /// let down = QueryOptions::new(key!("down"), || async { Err::<u32, _>("503".to_string()) });
    /// assert!(test.block_on(client.fetch_query(&down)).is_err());
    /// assert_eq!(test.elapsed(), Duration::from_millis(500)); // two retries, 250 ms apart
    /// # }
    /// ```
    #[must_use]
    pub fn retry_delay(mut self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.retry_delay = Arc::new(delay);
        self
    }

    /// Most queries kept in memory (L1). Default: 1,000. When full, the least recently used
    /// query that is neither observed nor fetching is evicted; if every query is busy, the
    /// cache grows past the bound until one becomes idle.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let config = QueryClientConfig::default().cache_max_size(2);
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), config);
    /// for n in 0..3u32 {
    ///     client.set_query_data(key!("page", n), n).unwrap();
    /// }
    /// assert_eq!(client.cached_keys(), [key!("page", 1), key!("page", 2)]); // the oldest went
    /// assert_eq!(client.cache_stats().evictions, 1);
    /// # }
    /// ```
    #[must_use]
    pub fn cache_max_size(mut self, size: usize) -> Self {
        self.cache_max_size = size;
        self
    }

    /// The L2 tier (see [`crate::storage`]) for queries built with
    /// [`QueryOptions::persist`](crate::QueryOptions::persist). Default: none (memory only).
    ///
    /// Pass an `Arc` to share one backend between clients.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let shared = Arc::new(MemoryStorage::new());
    /// let config = QueryClientConfig::default().storage(shared.clone()); // or `SqliteStorage`, `RedisStorage`
    /// assert!(config.has_storage());
    /// ```
    #[must_use]
    pub fn storage(mut self, backend: impl StorageBackend) -> Self {
        self.storage = Some(Arc::new(backend));
        self
    }

    /// Longest time any storage call may take; a slower call is abandoned and counted as a
    /// timeout. It also bounds how long `fetch_query` waits for a cold key's hydration.
    /// A timeout too large to add to the clock (such as `Duration::MAX`) means no timeout.
    /// Default: 1 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let config = QueryClientConfig::default()
    ///     .storage(MemoryStorage::new())
    ///     .storage_timeout(Duration::from_millis(200)); // a slow store must not hold up reads
    /// assert_eq!(config.storage_timeout_value(), Duration::from_millis(200));
    /// ```
    #[must_use]
    pub fn storage_timeout(mut self, timeout: Duration) -> Self {
        self.storage_timeout = timeout;
        self
    }

    /// Most keys with a write waiting for storage; when full, the oldest waiting write is
    /// dropped (and counted in [`crate::storage::StorageStats::write_drops`]). Default: 1,024.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let config = QueryClientConfig::default().storage(MemoryStorage::new()).storage_queue_size(10_000);
    /// assert!(config.has_storage());
    /// ```
    #[must_use]
    pub fn storage_queue_size(mut self, size: usize) -> Self {
        self.storage_queue_size = size;
        self
    }

    /// After `failures` consecutive failed or timed-out storage calls, stop calling storage
    /// for `cooldown`, then let one probe call through; its success resumes normal use.
    /// A `cooldown` too large to add to the clock (such as `Duration::MAX`) keeps storage off
    /// for the rest of the process once the breaker opens. Default: 5 failures, 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// // After 3 failures in a row, leave storage alone for a minute.
    /// let config = QueryClientConfig::default()
    ///     .storage(MemoryStorage::new())
    ///     .storage_circuit_breaker(3, Duration::from_secs(60));
    /// assert!(config.has_storage());
    /// ```
    #[must_use]
    pub fn storage_circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.storage_failure_threshold = failures;
        self.storage_cooldown = cooldown;
        self
    }

    /// How long persisted queries' L2 records live, apart from how long queries stay in
    /// memory ([`gc_time`](Self::gc_time)), as TanStack's persister `maxAge`: a record is
    /// written with this time to live, and a record whose `data_updated_at` is older than
    /// this is not restored, even if the store kept it. A query's own
    /// [`QueryOptions::persist_max_age`](crate::QueryOptions::persist_max_age) wins.
    ///
    /// `Duration::ZERO` persists nothing: no record is written and none is read. Ten years or
    /// more (such as `Duration::MAX`) writes records without expiry. Default: 24 hours, so a
    /// command-line tool's answers outlive the process by a day.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// let config = QueryClientConfig::default();
    /// assert_eq!(config.persist_max_age_value(), Duration::from_secs(24 * 3600));
    /// let week = config.persist_max_age(Duration::from_secs(7 * 24 * 3600));
    /// assert_eq!(week.gc_time_value(), Duration::from_secs(300)); // memory is unchanged
    /// ```
    #[must_use]
    pub fn persist_max_age(mut self, max_age: Duration) -> Self {
        self.persist_max_age = max_age;
        self
    }

    /// The default persistence max age.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// assert_eq!(QueryClientConfig::default().persist_max_age_value(), Duration::from_secs(24 * 3600));
    /// ```
    pub fn persist_max_age_value(&self) -> Duration {
        self.persist_max_age
    }

    /// Cross-process coherence (see [`crate::coherence`]): invalidation, removal, reset and
    /// new data of persisted keys are published on `bus`, and what other processes publish
    /// reaches this client's memory. Use it with the storage the processes share. Default:
    /// none.
    ///
    /// Pass an `Arc` to share one bus between clients.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::coherence::MemoryBus;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// // Two clients of one process kept coherent over one store (across processes: `RedisBus`).
    /// let (storage, bus) = (Arc::new(MemoryStorage::new()), Arc::new(MemoryBus::new()));
    /// let config = || QueryClientConfig::default().storage(storage.clone()).bus(bus.clone());
    /// assert!(config().has_bus() && config().has_storage());
    /// ```
    #[must_use]
    pub fn bus(mut self, bus: impl CoherenceBus) -> Self {
        self.bus = Some(Arc::new(bus));
        self
    }

    /// Whether a coherence bus is configured.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// assert!(!QueryClientConfig::default().has_bus());
    /// ```
    pub fn has_bus(&self) -> bool {
        self.bus.is_some()
    }

    /// Before a stale persisted key's revalidation calls its query function, read the key's
    /// record (one storage call, bounded by the storage timeout): when another process wrote
    /// data newer than memory's and fresh by the query's stale time, adopt it and make no
    /// call. Default: off (each revalidation of a persisted key would pay one storage read,
    /// which only pays off when several processes share the store).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// // Several processes share the store: adopt what another one fetched before calling.
    /// let config = QueryClientConfig::default().storage(MemoryStorage::new()).storage_first(true);
    /// assert!(config.has_storage());
    /// ```
    #[must_use]
    pub fn storage_first(mut self, enabled: bool) -> Self {
        self.storage_first = enabled;
        self
    }

    /// Cross-process single flight for cold persisted keys: a fetch first takes the key's
    /// lock in storage for `lock_ttl` ([`StorageBackend::try_lock`]); while another process
    /// holds it, the fetch waits for the record that process writes (polling with backoff,
    /// for at most `lock_ttl`) and adopts it with no call. `lock_ttl` should exceed a fetch
    /// with its retries. A backend without locks, or failing storage, fetches as without
    /// this option. Default: off.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// // One process in the fleet fetches a cold key; the others wait up to 30 s for its record.
    /// let config = QueryClientConfig::default()
    ///     .storage(MemoryStorage::new())
    ///     .single_flight(Duration::from_secs(30));
    /// assert!(config.has_storage());
    /// ```
    #[must_use]
    pub fn single_flight(mut self, lock_ttl: Duration) -> Self {
        self.single_flight = Some(lock_ttl);
        self
    }

    /// Whether a storage backend is configured.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// assert!(!QueryClientConfig::default().has_storage());
    /// assert!(QueryClientConfig::default().storage(MemoryStorage::new()).has_storage());
    /// ```
    pub fn has_storage(&self) -> bool {
        self.storage.is_some()
    }

    /// The storage timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// assert_eq!(QueryClientConfig::default().storage_timeout_value(), Duration::from_secs(1));
    /// ```
    pub fn storage_timeout_value(&self) -> Duration {
        self.storage_timeout
    }

    /// The default stale time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// assert_eq!(QueryClientConfig::default().stale_time_value(), Duration::ZERO);
    /// ```
    pub fn stale_time_value(&self) -> Duration {
        self.stale_time
    }

    /// The default gc time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// assert_eq!(QueryClientConfig::default().gc_time_value(), Duration::from_secs(300));
    /// ```
    pub fn gc_time_value(&self) -> Duration {
        self.gc_time
    }

    /// The default retry count.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// assert_eq!(QueryClientConfig::default().retry_value(), 3);
    /// ```
    pub fn retry_value(&self) -> u32 {
        self.retry
    }

    /// The L1 bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryClientConfig;
    ///
    /// assert_eq!(QueryClientConfig::default().cache_max_size_value(), 1_000);
    /// ```
    pub fn cache_max_size_value(&self) -> usize {
        self.cache_max_size
    }
}

impl Default for QueryClientConfig {
    fn default() -> Self {
        Self {
            stale_time: Duration::ZERO,
            gc_time: Duration::from_secs(300),
            retry: 3,
            retry_delay: Arc::new(default_retry_delay),
            cache_max_size: 1000,
            storage: None,
            storage_timeout: Duration::from_secs(1),
            storage_queue_size: 1024,
            storage_failure_threshold: 5,
            storage_cooldown: Duration::from_secs(30),
            persist_max_age: Duration::from_secs(24 * 3600),
            bus: None,
            storage_first: false,
            single_flight: None,
        }
    }
}

impl fmt::Debug for QueryClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryClientConfig")
            .field("stale_time", &self.stale_time)
            .field("gc_time", &self.gc_time)
            .field("retry", &self.retry)
            .field("cache_max_size", &self.cache_max_size)
            .field("storage", &self.storage.is_some())
            .field("storage_timeout", &self.storage_timeout)
            .field("persist_max_age", &self.persist_max_age)
            .field("bus", &self.bus.is_some())
            .field("storage_first", &self.storage_first)
            .field("single_flight", &self.single_flight)
            .finish_non_exhaustive()
    }
}
