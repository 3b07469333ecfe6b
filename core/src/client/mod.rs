//! [`QueryClient`]: the entry point that owns the cache and runs queries on a [`Runtime`].

use std::fmt;
use std::sync::Arc;

use crate::config::QueryClientConfig;
use crate::ctx::Ctx;
use crate::events::{CacheEvent, EventSubscription};
use crate::key::QueryKey;
use crate::mutation::{Mutation, MutationOptions};
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
mod observers;
mod stats;

/// Fetches, caches, deduplicates and revalidates data by key.
///
/// A client is cheap to clone (an `Arc`); clones share one cache. It holds no runtime type
/// parameter: spawning and time come from the [`Runtime`] it was built with.
///
/// Dropping the last clone frees the cache: fetches still in flight hold the client only
/// weakly, and are cancelled (their waiters get [`QueryError::Cancelled`](crate::QueryError)),
/// even one whose function never finishes; queued L2 writes are carried out by the write task,
/// which holds the storage, not the client. A live observer subscription keeps the cache (not
/// the client) until it ends, but the client counts as closed: its observers' streams end
/// (see [`QueryStream`](crate::QueryStream)), their polling stops, and they start no new work
/// (a new subscription gets the observer's last state once and attaches to nothing).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let options = QueryOptions::new(("greeting",), || async { Ok::<_, std::io::Error>("hello") });
///
/// let data = test.block_on(client.fetch_query(&options)).unwrap();
/// assert_eq!(data, "hello");
/// assert_eq!(client.get_query_data::<&str>(("greeting",)).unwrap(), Some("hello"));
/// # }
/// ```
#[derive(Clone)]
pub struct QueryClient {
    pub(crate) ctx: Arc<Ctx>,
    /// Shared by the clones of this client only (observers hold `ctx`, not this): its `Drop`
    /// tells the context that the last handle has gone.
    _handle: Arc<ClientHandle>,
}

/// The client's own token: dropped with the last [`QueryClient`] clone, it closes the context.
struct ClientHandle {
    ctx: Arc<Ctx>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.ctx.close();
    }
}

impl QueryClient {
    /// A client that spawns and sleeps on `runtime`, with `config`'s defaults.
    pub fn with_runtime(runtime: Runtime, config: QueryClientConfig) -> Self {
        let ctx = Arc::new(Ctx::new(runtime, config));
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

    /// A runnable mutation (see [`Mutation`]). Options it leaves unset come from the
    /// [`MutationDefaults`](crate::MutationDefaults) registered for a prefix of its
    /// [`mutation_key`](MutationOptions::mutation_key), as they are now.
    pub fn mutation<I, T, E, C>(&self, options: MutationOptions<I, T, E, C>) -> Mutation<I, T, E, C>
    where
        I: Clone + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
    {
        let mut options = options;
        if let Some(key) = &options.mutation_key {
            let registry = &self.ctx.mutation_defaults;
            if options.retry.is_none() {
                options.retry = registry.resolve(key, |d| d.retry);
            }
            if options.retry_delay.is_none() {
                options.retry_delay = registry.resolve(key, |d| d.retry_delay.clone());
            }
        }
        Mutation::new(self.ctx.runtime.clone(), self.ctx.mutating.clone(), options)
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
