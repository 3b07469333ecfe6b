//! [`QueryClient`]: the entry point that owns the cache and runs queries on a [`Runtime`].

use std::fmt;
use std::sync::Arc;

use crate::config::QueryClientConfig;
use crate::ctx::Ctx;
use crate::events::{CacheEvent, EventSubscription};
use crate::handle::ClientHandle;
pub use crate::handle::QueryClient;
use crate::key::QueryKey;
use crate::observer::QueryObserver;
use crate::options::QueryOptions;
use crate::runtime::Runtime;
use crate::storage::StorageStats;

mod bulk;
mod data;
mod defaults;
mod fetch;
mod hydration;
mod inspect;
mod mutations;
mod observers;
mod stats;

impl QueryClient {
    /// A client that spawns and sleeps on `runtime`, with `config`'s defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// // Any `Runtime` works: an adapter crate's (`TokioRuntime::current()?.into_runtime()`, ...)
    /// // or, in tests, the manual one.
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().cache_max_size(100));
    /// assert!(client.is_empty());
    /// let same_cache = client.clone(); // clones share one cache
    /// assert_eq!(same_cache.config().cache_max_size_value(), 100);
    /// # }
    /// ```
    pub fn with_runtime(runtime: Runtime, config: QueryClientConfig) -> Self {
        let ctx = Arc::new(Ctx::new(runtime, config));
        crate::receiver::start(&ctx);
        Self { _handle: Arc::new(ClientHandle { ctx: ctx.clone() }), ctx }
    }

    /// The runtime this client runs on.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let runtime = client.runtime().clone(); // spawn and sleep on the client's executor
    /// let slept = test.block_on(async move {
    ///     let start = runtime.now();
    ///     runtime.sleep(Duration::from_secs(5)).await;
    ///     runtime.now() - start
    /// });
    /// assert_eq!(slept, Duration::from_secs(5));
    /// # }
    /// ```
    pub fn runtime(&self) -> &Runtime {
        &self.ctx.runtime
    }

    /// The client defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let config = QueryClientConfig::default().stale_time(Duration::from_secs(30));
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), config);
    /// assert_eq!(client.config().stale_time_value(), Duration::from_secs(30));
    /// assert!(!client.config().has_storage());
    /// # }
    /// ```
    pub fn config(&self) -> &QueryClientConfig {
        &self.ctx.config
    }

    /// What the L2 tier has done so far (all zero without storage).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let test = TestRuntime::new();
    /// let config = QueryClientConfig::default().storage(MemoryStorage::new());
    /// let client = QueryClient::with_runtime(test.runtime(), config);
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
    /// test.block_on(async {
    ///     client.fetch_query(&options).await.unwrap();
    ///     client.flush_storage().await;
    /// });
    /// let stats = client.storage_stats();
    /// assert_eq!(stats.writes, 1);
    /// assert_eq!(stats.errors + stats.timeouts, 0);
    /// # }
    /// ```
    pub fn storage_stats(&self) -> StorageStats {
        self.ctx.l2.as_ref().map(|l2| l2.stats()).unwrap_or_default()
    }

    /// Waits for the L2 writes and deletes queued before the call: carried out, given up on
    /// (each is bounded by the storage timeout), or dropped because the runtime dropped the
    /// write task (counted in [`StorageStats::write_drops`]). Writes queued later are not
    /// waited for. Call it before exiting to keep the last writes; returns at once without
    /// storage.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    /// use pystackquery_core::storage::MemoryStorage;
    /// use std::sync::Arc;
    ///
    /// let test = TestRuntime::new();
    /// let storage = Arc::new(MemoryStorage::new());
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().storage(storage.clone()));
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
    /// test.block_on(async {
    ///     client.fetch_query(&options).await.unwrap(); // the L2 write is queued, not awaited
    ///     client.flush_storage().await; // e.g. before the process exits
    /// });
    /// assert_eq!(storage.len(), 1);
    /// # }
    /// ```
    pub async fn flush_storage(&self) {
        if let Some(l2) = &self.ctx.l2 {
            l2.flush().await;
        }
    }

    /// Number of queries in memory.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("a"), 1u32).unwrap();
    /// client.set_query_data(key!("b"), 2u32).unwrap();
    /// assert_eq!(client.len(), 2);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.ctx.cache.len()
    }

    /// Whether no query is in memory.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// assert!(client.is_empty());
    /// client.set_query_data(key!("a"), 1u32).unwrap();
    /// assert!(!client.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached keys, least recently used first (the eviction order).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("a"), 1u32).unwrap();
    /// client.set_query_data(key!("b"), 2u32).unwrap();
    /// client.get_query_data::<u32>(key!("a")).unwrap(); // a read makes "a" the most recent
    /// assert_eq!(client.cached_keys(), [key!("b"), key!("a")]);
    /// # }
    /// ```
    pub fn cached_keys(&self) -> Vec<QueryKey> {
        self.ctx.cache.keys_lru_first()
    }

    /// An observer of `options`' query (see [`QueryObserver`]). Nothing happens until its
    /// first subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("user", 1), || async { Ok::<_, String>("Ada".to_string()) });
    /// let observer = client.watch(&options); // nothing fetched yet
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let _subscription = observer.subscribe(move |state| log.lock().unwrap().push(state.data.clone()));
    /// test.run_until_idle(); // the first subscription fetched
    /// client.set_query_data(key!("user", 1), "Grace".to_string()).unwrap();
    /// let seen = seen.lock().unwrap();
    /// assert_eq!(*seen, [None, Some("Ada".to_string()), Some("Grace".to_string())]);
    /// # }
    /// ```
    pub fn watch<T, E>(&self, options: &QueryOptions<T, E>) -> QueryObserver<T, E>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        QueryObserver::new(self.ctx.clone(), options.clone())
    }

    /// Calls `listener` for every [`CacheEvent`] of this client until the returned
    /// subscription is dropped. The listener runs on the thread that caused the event, with no
    /// internal lock held; a panic in it is caught and logged.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{CacheEvent, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let _subscription = client.subscribe_events(move |e| log.lock().unwrap().push(e.clone()));
    /// client.set_query_data(key!("a"), 1).unwrap();
    /// assert_eq!(seen.lock().unwrap()[0], CacheEvent::Added(key!("a")));
    /// # }
    /// ```
    pub fn subscribe_events(
        &self,
        listener: impl Fn(&CacheEvent) + Send + Sync + 'static,
    ) -> EventSubscription {
        self.ctx.events.add(listener)
    }
}

impl fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryClient")
            .field("queries", &self.len())
            .field("config", &self.ctx.config)
            .finish_non_exhaustive()
    }
}
