//! Operations on every query under a key prefix: invalidate, remove, reset, clear; and pausing
//! and resuming one key's background fetching.

use super::QueryClient;
use crate::key::QueryKey;
use crate::storage::L2Op;

impl QueryClient {
    /// Marks every query under `prefix` stale (its `data_updated_at` becomes the Unix epoch).
    /// The next read of an invalidated key never joins a fetch that started before the
    /// invalidation: it starts a new one. With `refetch`, active queries (those with an
    /// enabled observer) fetch again at once under a new generation; a fetch already in flight
    /// for them is cancelled and its waiters get the new fetch's outcome (TanStack's
    /// `cancelRefetch`). The call waits for those refetches. Returns the number of queries
    /// invalidated.
    ///
    /// The empty key `()` matches every query.
    pub async fn invalidate_queries(&self, prefix: impl Into<QueryKey>, refetch: bool) -> usize {
        let prefix = prefix.into();
        let entries = self.ctx.cache.find_matching(Some(&prefix));
        let mut waits = Vec::new();
        for entry in &entries {
            if let Some(wait) = entry.clone().invalidate(&self.ctx, refetch) {
                waits.push(wait);
            }
        }
        futures::future::join_all(waits).await;
        entries.len()
    }

    /// Removes every query under `prefix` from memory, observed or not, and deletes the L2
    /// records of the persisted ones (in the background). Fetches in flight for them are
    /// cancelled (their waiters get [`QueryError::Cancelled`](crate::QueryError::Cancelled)).
    /// Observers of a removed query attach to a new query for the same key at once (fetching
    /// if they are enabled), so they keep receiving its states. Returns the number removed.
    pub fn remove_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let removed = self.ctx.cache.remove_matching(Some(&prefix));
        for entry in &removed {
            if let Some(l2) = &self.ctx.l2
                && entry.persisted()
            {
                l2.enqueue(entry.key().clone(), L2Op::Delete);
            }
            self.ctx.emit_removed(entry.key());
            entry.removed();
        }
        removed.len()
    }

    /// Fetches again every query under `prefix` that has been used with options (so it knows
    /// its function) and is not paused, joining fetches already in flight, and waits for them
    /// (TanStack's `refetchQueries`, with `cancelRefetch: false`). Returns how many fetched.
    pub async fn refetch_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let waits: Vec<_> = self
            .ctx
            .cache
            .find_matching(Some(&prefix))
            .into_iter()
            .filter_map(|entry| entry.refetch(&self.ctx))
            .collect();
        let count = waits.len();
        futures::future::join_all(waits).await;
        count
    }

    /// How many queries under `prefix` are fetching now (TanStack's `isFetching`). The empty
    /// key `()` counts every query.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("todos", 1), || async { Ok::<_, String>(1) });
    /// let _subscription = client.watch(&options).subscribe(|_| {}); // starts a fetch
    /// assert_eq!(client.is_fetching(key!("todos")), 1);
    /// test.run_until_idle();
    /// assert_eq!(client.is_fetching(()), 0);
    /// # }
    /// ```
    pub fn is_fetching(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        self.ctx.cache.find_matching(Some(&prefix)).iter().filter(|q| q.fetching()).count()
    }

    /// How many mutations of this client are running now (TanStack's `isMutating`).
    pub fn is_mutating(&self) -> usize {
        self.ctx.mutating.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Cancels the fetches in flight for every query under `prefix`: their retries stop,
    /// their waiters get [`QueryError::Cancelled`](crate::QueryError::Cancelled), and each
    /// query returns to the state it had before the fetch (TanStack's `revert`). The query
    /// function's [`CancelSignal`](crate::CancelSignal) is set and its future is dropped at
    /// its next poll. Waits until the cancelled fetches have settled; returns how many were
    /// cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos"), vec!["old"]).unwrap();
    /// let options = QueryOptions::new(key!("todos"), || futures::future::pending::<Result<Vec<&str>, String>>());
    /// test.block_on(client.invalidate_queries(key!("todos"), false));
    /// let _stale = test.block_on(client.fetch_query(&options)); // starts a background refetch
    /// assert_eq!(test.block_on(client.cancel_queries(key!("todos"))), 1);
    /// let state = client.get_query_state::<Vec<&str>, String>(key!("todos")).unwrap().unwrap();
    /// assert!(!state.is_fetching());
    /// assert_eq!(state.data, Some(vec!["old"]));
    /// # }
    /// ```
    pub async fn cancel_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let waits: Vec<_> = self
            .ctx
            .cache
            .find_matching(Some(&prefix))
            .iter()
            .filter_map(|entry| entry.cancel())
            .collect();
        let cancelled = waits.len();
        futures::future::join_all(waits).await;
        cancelled
    }

    /// Returns every query under `prefix` to its initial state (idle, no data), and deletes
    /// the L2 records of the persisted ones. A fetch in flight is cancelled; active queries
    /// (with an enabled observer) fetch again at once, as TanStack's `resetQueries` does.
    /// Returns the number reset.
    pub fn reset_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let entries = self.ctx.cache.find_matching(Some(&prefix));
        for entry in &entries {
            entry.clone().reset(&self.ctx);
        }
        entries.len()
    }

    /// Removes every query from memory. L2 records are kept, as on eviction, so keys can
    /// hydrate again; `remove_queries(())` deletes them too.
    ///
    /// As with [`remove_queries`](Self::remove_queries), fetches in flight are cancelled and
    /// observers attach to new queries for their keys.
    pub fn clear(&self) {
        for entry in self.ctx.cache.remove_matching(None) {
            self.ctx.emit_removed(entry.key());
            entry.removed();
        }
    }

    /// Pauses background fetching (stale refetches, polling) for `key`; its fetch status shows
    /// [`crate::FetchStatus::Paused`]. Returns whether the key is cached.
    pub fn pause(&self, key: impl Into<QueryKey>) -> bool {
        let key = key.into();
        match self.ctx.cache.get(&key, self.ctx.stamp()) {
            Some(entry) => {
                entry.pause(&self.ctx);
                true
            }
            None => false,
        }
    }

    /// Resumes background fetching for `key`; with `refetch`, fetches at once. Returns whether
    /// the key is cached.
    pub fn resume(&self, key: impl Into<QueryKey>, refetch: bool) -> bool {
        let key = key.into();
        match self.ctx.cache.get(&key, self.ctx.stamp()) {
            Some(entry) => {
                entry.resume(&self.ctx, refetch);
                true
            }
            None => false,
        }
    }
}
