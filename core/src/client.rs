//! [`QueryClient`]: the entry point that owns the cache and runs queries on a [`Runtime`].

use std::fmt;
use std::sync::Arc;

use std::time::Instant;

use crate::cache::{Entry, QueryCache, Stamp};
use crate::error::{QueryError, TypeMismatch};
use crate::events::{CacheEvent, EventHub, EventSubscription};
use crate::gc::GcQueue;
use crate::key::QueryKey;
use crate::mutation::{Mutation, MutationOptions};
use crate::observer::QueryObserver;
use crate::options::{QueryClientConfig, QueryOptions};
use crate::query::{Effects, FetchSlot, QueryCell, QuickAnswer};
use crate::runtime::Runtime;
use crate::state::QueryState;
use crate::storage::record::Record;
use crate::storage::{L2, L2Op, L2Settings, StorageStats};

/// Fetches, caches, deduplicates and revalidates data by key.
///
/// A client is cheap to clone (an `Arc`); clones share one cache. It holds no runtime type
/// parameter: spawning and time come from the [`Runtime`] it was built with.
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
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) runtime: Runtime,
    pub(crate) config: QueryClientConfig,
    pub(crate) cache: QueryCache,
    pub(crate) events: Arc<EventHub>,
    pub(crate) l2: Option<Arc<L2>>,
    pub(crate) gc: GcQueue,
    /// The origin of the client clock (see [`ClientInner::clock`]).
    pub(crate) base: Instant,
}

impl QueryClient {
    /// A client that spawns and sleeps on `runtime`, with `config`'s defaults.
    pub fn with_runtime(runtime: Runtime, config: QueryClientConfig) -> Self {
        let cache = QueryCache::new(config.cache_max_size);
        let l2 = config.storage.clone().map(|backend| {
            let settings = L2Settings {
                timeout: config.storage_timeout,
                queue_capacity: config.storage_queue_size,
                failure_threshold: config.storage_failure_threshold,
                cooldown: config.storage_cooldown,
            };
            Arc::new(L2::new(backend, runtime.clone(), settings))
        });
        let base = runtime.now();
        Self {
            inner: Arc::new(ClientInner {
                runtime,
                config,
                cache,
                events: Arc::new(EventHub::new()),
                l2,
                gc: GcQueue::new(),
                base,
            }),
        }
    }

    /// The runtime this client runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The client defaults.
    pub fn config(&self) -> &QueryClientConfig {
        &self.inner.config
    }

    /// Returns the key's data, fetching it when needed (stale-while-revalidate).
    ///
    /// - Fresh data is returned at once.
    /// - Stale data is returned at once, and one background refetch starts (unless one is in
    ///   flight or the query is paused).
    /// - Without data, the call waits for a fetch. Concurrent callers share one fetch and its
    ///   result, error included.
    ///
    /// Dropping the returned future never cancels the fetch: it runs on the runtime, and its
    /// result is cached even if every caller has gone away.
    ///
    /// With L2 storage and [`QueryOptions::persist`], the first use of a cold key first reads
    /// its record, waiting at most the storage timeout; restored fresh data is returned
    /// without a fetch, restored stale data is returned and revalidated.
    ///
    /// # Errors
    ///
    /// The fetch's error after its retries ([`QueryError::Failed`]), a panic in the query
    /// function ([`QueryError::Panicked`]), or a key cached with another data type
    /// ([`QueryError::TypeMismatch`]).
    pub async fn fetch_query<T, E>(&self, options: &QueryOptions<T, E>) -> Result<T, QueryError<E>>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let stale_time = options.inner.stale_time.unwrap_or(self.inner.config.stale_time);
        // The hit path: one shard lock and one query lock, no reference counts touched, no
        // allocation. Anything else (a miss, stale data to revalidate, hydration, a type
        // mismatch) takes the general path below.
        let now = self.inner.runtime.now();
        let stamp = Stamp::new(now);
        let quick = self.inner.cache.peek_with(options.key(), stamp, |entry| {
            let cell = entry.as_any().downcast_ref::<QueryCell<T>>()?;
            QueryCell::quick_answer(&cell.lock(), now, stale_time)
        });
        match quick {
            Some(QuickAnswer::Data(data)) => Ok(data),
            Some(QuickAnswer::Join(slot)) => slot.wait().await.map_err(|e| e.typed(options.key())),
            None => Box::pin(self.fetch_query_general(options, stale_time)).await,
        }
    }

    async fn fetch_query_general<T, E>(
        &self,
        options: &QueryOptions<T, E>,
        stale_time: std::time::Duration,
    ) -> Result<T, QueryError<E>>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let key = options.key();
        enum Plan<T> {
            Data(T),
            Wait(Arc<FetchSlot<T>>),
            Hydrate(crate::query::HydrationStep),
        }
        let mut hydration_waited = false;
        let slot: Arc<FetchSlot<T>> = 'lookup: loop {
            let cell = self.cell::<T>(key).map_err(QueryError::TypeMismatch)?;
            let mut effects = Effects::none();
            let plan = 'plan: {
                let mut g = cell.lock();
                if g.detached {
                    continue 'lookup; // Removed between the lookup and the lock: look up again.
                }
                if !hydration_waited
                    && let Some(step) = cell.begin_hydration(&mut g, &self.inner, &options.inner)
                {
                    break 'plan Plan::Hydrate(step);
                }
                let now = self.inner.runtime.now();
                match g.state.data.clone() {
                    Some(data) => {
                        if QueryCell::is_stale(&g, now, stale_time)
                            && !QueryCell::is_fetching(&g)
                            && !g.paused
                        {
                            QueryCell::set_fetcher(&mut g, options.inner.clone());
                            let _ = cell.join_or_begin(
                                &mut g,
                                &self.inner,
                                &options.inner,
                                &mut effects,
                            );
                        }
                        Plan::Data(data)
                    }
                    None => {
                        QueryCell::set_fetcher(&mut g, options.inner.clone());
                        Plan::Wait(cell.join_or_begin(
                            &mut g,
                            &self.inner,
                            &options.inner,
                            &mut effects,
                        ))
                    }
                }
            };
            effects.run(&self.inner, key);
            match plan {
                Plan::Data(data) => return Ok(data),
                Plan::Wait(slot) => break slot,
                Plan::Hydrate(step) => {
                    hydration_waited = true;
                    step.settle(&self.inner).await;
                }
            }
        };
        slot.wait().await.map_err(|e| e.typed(key))
    }

    /// Warms the cache: fetches when the key has no data or stale data, and swallows errors
    /// (logged at `debug`).
    pub async fn prefetch_query<T, E>(&self, options: &QueryOptions<T, E>)
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let stale_time = options.inner.stale_time.unwrap_or(self.inner.config.stale_time);
        let cell = match self.cell::<T>(options.key()) {
            Ok(cell) => cell,
            Err(mismatch) => {
                tracing::debug!("prefetch skipped: {mismatch}");
                return;
            }
        };
        if self.inner.l2.is_some() {
            let step = {
                let mut g = cell.lock();
                cell.begin_hydration(&mut g, &self.inner, &options.inner)
            };
            if let Some(step) = step {
                step.settle(&self.inner).await;
            }
        }
        let needs_fetch = {
            let g = cell.lock();
            g.state.data.is_none() || QueryCell::is_stale(&g, self.inner.runtime.now(), stale_time)
        };
        if needs_fetch {
            let slot = cell.fetch_with(&self.inner, &options.inner);
            if let Err(error) = slot.wait().await {
                tracing::debug!(key = %options.key(), "prefetch failed: {error}");
            }
        }
    }

    /// The key's data from memory, without fetching. `Ok(None)` when the key is not cached or
    /// has no data.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`.
    pub fn get_query_data<T>(&self, key: impl Into<QueryKey>) -> Result<Option<T>, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let key = key.into();
        Ok(self.existing::<T>(&key)?.and_then(|cell| cell.lock().state.data.clone()))
    }

    /// The key's data from memory, or else from L2 storage (without putting it in memory).
    /// `Ok(None)` when neither has it, when storage fails or times out, or when the record
    /// does not decode as `T` (counted in [`StorageStats::decode_failures`]).
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key is in memory with another type than `T`.
    pub async fn get_query_data_async<T>(
        &self,
        key: impl Into<QueryKey>,
    ) -> Result<Option<T>, TypeMismatch>
    where
        T: Clone + Send + Sync + serde::de::DeserializeOwned + 'static,
    {
        let key = key.into();
        if let Some(cell) = self.existing::<T>(&key)?
            && let Some(data) = cell.lock().state.data.clone()
        {
            return Ok(Some(data));
        }
        let Some(l2) = &self.inner.l2 else {
            return Ok(None);
        };
        Ok(l2.read(&key, Record::<T>::from_json).await.and_then(|record| record.data))
    }

    /// What the L2 tier has done so far (all zero without storage).
    pub fn storage_stats(&self) -> StorageStats {
        self.inner.l2.as_ref().map(|l2| l2.stats()).unwrap_or_default()
    }

    /// Waits until every queued L2 write and delete has been carried out or given up on
    /// (each is bounded by the storage timeout). Call it before exiting to keep the last
    /// writes; returns at once without storage.
    pub async fn flush_storage(&self) {
        if let Some(l2) = &self.inner.l2 {
            l2.flush().await;
        }
    }

    /// The key's full state from memory. `Ok(None)` when the key is not cached.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another data type than `T` (a cached error of
    /// another type than `E` shows as [`QueryError::TypeMismatch`] inside the state).
    pub fn get_query_state<T, E>(
        &self,
        key: impl Into<QueryKey>,
    ) -> Result<Option<QueryState<T, E>>, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let key = key.into();
        Ok(self.existing::<T>(&key)?.map(|cell| {
            let g = cell.lock();
            g.state.typed(&key)
        }))
    }

    /// Writes data for a key as if it had just been fetched, creating the query when missing.
    /// A fetch in flight for the key finishes but does not overwrite this value.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`.
    pub fn set_query_data<T>(&self, key: impl Into<QueryKey>, data: T) -> Result<(), TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let key = key.into();
        let cell = self.cell::<T>(&key)?;
        let mut effects = Effects::none();
        cell.set_data(&self.inner, &mut cell.lock(), data, &mut effects);
        effects.run(&self.inner, &key);
        Ok(())
    }

    /// Replaces a key's data with `update(old)`, creating the query when missing, and returns
    /// the new value. `update` runs without any lock held (it may call back into the client);
    /// if the data changes meanwhile, it runs again on the newer value.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`.
    pub fn update_query_data<T>(
        &self,
        key: impl Into<QueryKey>,
        mut update: impl FnMut(Option<&T>) -> T,
    ) -> Result<T, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let key = key.into();
        loop {
            let cell = self.cell::<T>(&key)?;
            let (old, version) = {
                let g = cell.lock();
                (g.state.data.clone(), g.version)
            };
            let new = update(old.as_ref());
            let mut effects = Effects::none();
            {
                let mut g = cell.lock();
                if g.detached || g.version != version {
                    continue;
                }
                cell.set_data(&self.inner, &mut g, new.clone(), &mut effects);
            }
            effects.run(&self.inner, &key);
            return Ok(new);
        }
    }

    /// Marks every query under `prefix` stale (its `data_updated_at` becomes the Unix epoch).
    /// With `refetch`, observed queries fetch again at once, under a new generation, so a
    /// fetch that was already in flight cannot land its older result; the call waits for
    /// those refetches. Returns the number of queries invalidated.
    ///
    /// The empty key `()` matches every query.
    pub async fn invalidate_queries(&self, prefix: impl Into<QueryKey>, refetch: bool) -> usize {
        let prefix = prefix.into();
        let entries = self.inner.cache.find_matching(Some(&prefix));
        let mut waits = Vec::new();
        for entry in &entries {
            if let Some(wait) = entry.clone().invalidate(&self.inner, refetch) {
                waits.push(wait);
            }
        }
        futures::future::join_all(waits).await;
        entries.len()
    }

    /// Removes every query under `prefix` from memory, observed or not, and deletes the L2
    /// records of the persisted ones (in the background). Fetches in flight for them finish
    /// without writing anywhere. Returns the number removed.
    pub fn remove_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let removed = self.inner.cache.remove_matching(Some(&prefix));
        for entry in &removed {
            if let Some(l2) = &self.inner.l2
                && entry.persisted()
            {
                l2.enqueue(entry.key().clone(), L2Op::Delete);
            }
            self.inner.emit_removed(entry.key());
        }
        removed.len()
    }

    /// Returns every query under `prefix` to its initial state (idle, no data), and deletes
    /// the L2 records of the persisted ones. Returns the number reset.
    pub fn reset_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let entries = self.inner.cache.find_matching(Some(&prefix));
        for entry in &entries {
            entry.clone().reset(&self.inner);
        }
        entries.len()
    }

    /// Removes every query from memory. L2 records are kept, as on eviction, so keys can
    /// hydrate again; `remove_queries(())` deletes them too.
    pub fn clear(&self) {
        for entry in self.inner.cache.remove_matching(None) {
            self.inner.emit_removed(entry.key());
        }
    }

    /// Pauses background fetching (stale refetches, polling) for `key`; its fetch status shows
    /// [`crate::FetchStatus::Paused`]. Returns whether the key is cached.
    pub fn pause(&self, key: impl Into<QueryKey>) -> bool {
        let key = key.into();
        match self.inner.cache.get(&key, self.inner.stamp()) {
            Some(entry) => {
                entry.pause(&self.inner);
                true
            }
            None => false,
        }
    }

    /// Resumes background fetching for `key`; with `refetch`, fetches at once. Returns whether
    /// the key is cached.
    pub fn resume(&self, key: impl Into<QueryKey>, refetch: bool) -> bool {
        let key = key.into();
        match self.inner.cache.get(&key, self.inner.stamp()) {
            Some(entry) => {
                entry.resume(&self.inner, refetch);
                true
            }
            None => false,
        }
    }

    /// Number of queries in memory.
    pub fn len(&self) -> usize {
        self.inner.cache.len()
    }

    /// Whether no query is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached keys, least recently used first (the eviction order).
    pub fn cached_keys(&self) -> Vec<QueryKey> {
        self.inner.cache.keys_lru_first()
    }

    /// An observer of `options`' query (see [`QueryObserver`]). Nothing happens until its
    /// first subscription.
    pub fn watch<T, E>(&self, options: &QueryOptions<T, E>) -> QueryObserver<T, E>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        QueryObserver::new(self.clone(), options.clone())
    }

    /// A runnable mutation (see [`Mutation`]).
    pub fn mutation<I, T, E, C>(&self, options: MutationOptions<I, T, E, C>) -> Mutation<I, T, E, C>
    where
        I: Clone + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
    {
        Mutation::new(self.clone(), options)
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
        self.inner.events.add(Arc::new(listener))
    }

    /// The key's typed query, created when missing.
    pub(crate) fn cell<T>(&self, key: &QueryKey) -> Result<Arc<QueryCell<T>>, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let mut created = false;
        let (entry, evicted) = self.inner.cache.get_or_insert_with(key, self.inner.stamp(), || {
            created = true;
            Arc::new(QueryCell::<T>::new(key.clone()))
        });
        if created {
            self.inner.emit(&CacheEvent::Added(key.clone()));
        }
        for e in &evicted {
            tracing::debug!(key = %e.key(), "evicted least recently used query");
            self.inner.emit_removed(e.key());
        }
        downcast::<T>(key, entry)
    }

    /// The key's typed query, if cached.
    pub(crate) fn existing<T>(
        &self,
        key: &QueryKey,
    ) -> Result<Option<Arc<QueryCell<T>>>, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let entry = self.inner.cache.get(key, self.inner.stamp());
        entry.map(|entry| downcast::<T>(key, entry)).transpose()
    }
}

fn downcast<T>(key: &QueryKey, entry: Entry) -> Result<Arc<QueryCell<T>>, TypeMismatch>
where
    T: Clone + Send + Sync + 'static,
{
    let cached = entry.type_name();
    entry.into_any().downcast::<QueryCell<T>>().map_err(|_| TypeMismatch {
        key: key.clone(),
        requested: std::any::type_name::<T>(),
        cached,
    })
}

impl ClientInner {
    /// The runtime clock as nanoseconds since the client was built.
    pub(crate) fn clock(&self) -> u64 {
        self.since_base(self.runtime.now())
    }

    fn since_base(&self, now: Instant) -> u64 {
        // Saturates after 584 years.
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The storage timeout, or zero without storage (nothing to wait for).
    pub(crate) fn storage_timeout(&self) -> std::time::Duration {
        self.l2.as_ref().map_or(std::time::Duration::ZERO, |l2| l2.timeout())
    }

    /// A use stamp for the LRU order, now.
    pub(crate) fn stamp(&self) -> Stamp {
        Stamp::new(self.runtime.now())
    }

    pub(crate) fn emit(&self, event: &CacheEvent) {
        self.events.emit(event);
    }

    pub(crate) fn emit_removed(&self, key: &QueryKey) {
        self.events.emit(&CacheEvent::Removed(key.clone()));
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // Detach every query, and let the gc sweeper see that the client is gone.
        let _ = self.cache.remove_matching(None);
        self.gc.close();
    }
}

impl fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryClient")
            .field("queries", &self.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
