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
    pub fn with_runtime(runtime: Runtime, config: QueryClientConfig) -> Self {
        let ctx = Arc::new(Ctx::new(runtime, config));
        crate::receiver::start(&ctx);
        Self { _handle: Arc::new(ClientHandle { ctx: ctx.clone() }), ctx }
    }

    /// The runtime this client runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.ctx.runtime
    }

    /// The client defaults.
    pub fn config(&self) -> &QueryClientConfig {
        &self.ctx.config
    }

    /// What the L2 tier has done so far (all zero without storage).
    pub fn storage_stats(&self) -> StorageStats {
        self.ctx.l2.as_ref().map(|l2| l2.stats()).unwrap_or_default()
    }

    /// Waits for the L2 writes and deletes queued before the call: carried out, given up on
    /// (each is bounded by the storage timeout), or dropped because the runtime dropped the
    /// write task (counted in [`StorageStats::write_drops`]). Writes queued later are not
    /// waited for. Call it before exiting to keep the last writes; returns at once without
    /// storage.
    pub async fn flush_storage(&self) {
        if let Some(l2) = &self.ctx.l2 {
            l2.flush().await;
        }
    }

    /// Number of queries in memory.
    pub fn len(&self) -> usize {
        self.ctx.cache.len()
    }

    /// Whether no query is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached keys, least recently used first (the eviction order).
    pub fn cached_keys(&self) -> Vec<QueryKey> {
        self.ctx.cache.keys_lru_first()
    }

    /// An observer of `options`' query (see [`QueryObserver`]). Nothing happens until its
    /// first subscription.
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
