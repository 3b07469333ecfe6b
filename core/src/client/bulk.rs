//! Operations on every query a [`QueryFilter`] chooses: invalidate, refetch, cancel, remove,
//! reset, count; clearing the cache; pausing and resuming one key's background fetching.

use super::QueryClient;
use crate::coherence::{Announce, CoherenceOp};
use crate::ctx::Entry;
use crate::filter::{QueryFilter, RefetchType};
use crate::key::QueryKey;
use crate::storage::L2Op;

impl QueryClient {
    /// Marks every query `filter` chooses stale (TanStack's `invalidateQueries`). A key is a
    /// prefix filter; the empty key `()` matches every query. The data and its
    /// `data_updated_at` are kept; the state's `is_invalidated` is set until the data is
    /// fetched or set again. The next read of an invalidated key never joins a fetch that
    /// started before the invalidation: it starts a new one.
    ///
    /// `refetch` chooses which of them fetch again at once, under a new generation
    /// ([`RefetchType`]; `true` is [`RefetchType::Active`]: queries with an enabled observer,
    /// `false` is [`RefetchType::None`]). A fetch already in flight for them is cancelled and
    /// its waiters get the new fetch's outcome (TanStack's `cancelRefetch`). Paused queries
    /// and queries observed only by disabled observers are not refetched. The call waits for
    /// the refetches. Returns the number of queries invalidated.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, RefetchType, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos", 1), "write docs".to_string()).unwrap();
    /// client.set_query_data(key!("todos", 2), "ship".to_string()).unwrap();
    ///
    /// // Shorthand: a prefix, and `false` for "mark stale only".
    /// assert_eq!(test.block_on(client.invalidate_queries(key!("todos"), false)), 2);
    /// let state = client.get_query_state::<String, String>(key!("todos", 1)).unwrap().unwrap();
    /// assert!(state.is_invalidated && state.data_updated_at.is_some());
    ///
    /// // The full form: one exact key, refetching it even if nobody observes it.
    /// let one = QueryFilter::exact(key!("todos", 2));
    /// assert_eq!(test.block_on(client.invalidate_queries(one, RefetchType::All)), 1);
    /// # }
    /// ```
    pub async fn invalidate_queries(
        &self,
        filter: impl Into<QueryFilter>,
        refetch: impl Into<RefetchType>,
    ) -> usize {
        let refetch = refetch.into();
        let entries = self.ctx.select(&filter.into());
        let mut waits = Vec::new();
        for entry in &entries {
            if let Some(wait) = entry.clone().invalidate(&self.ctx, refetch) {
                waits.push(wait);
            }
        }
        futures::future::join_all(waits).await;
        entries.len()
    }

    /// Removes every query `filter` chooses from memory, observed or not, and deletes the L2
    /// records of the persisted ones (in the background). Fetches in flight for them are
    /// cancelled (their waiters get [`QueryError::Cancelled`](crate::QueryError::Cancelled)).
    /// Observers of a removed query attach to a new query for the same key at once (fetching
    /// if they are enabled), so they keep receiving its states. Returns the number removed.
    ///
    /// Pending seeds ([`hydrate`](Self::hydrate)) whose key the filter's key condition
    /// chooses are dropped too, unless the filter has other conditions (activity, staleness,
    /// fetch status, a predicate: they describe cached queries, which seeds are not). They
    /// are not counted.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos", 1), "write docs".to_string()).unwrap();
    /// client.set_query_data(key!("todos", 2), "ship".to_string()).unwrap();
    /// client.set_query_data(key!("user"), "Ada".to_string()).unwrap();
    /// assert_eq!(client.remove_queries(QueryFilter::exact(key!("todos", 2))), 1);
    /// assert_eq!(client.remove_queries(key!("todos")), 1); // a key is a prefix filter
    /// assert_eq!(client.cached_keys(), [key!("user")]);
    /// # }
    /// ```
    pub fn remove_queries(&self, filter: impl Into<QueryFilter>) -> usize {
        let filter = filter.into();
        if !filter.needs_info() {
            self.ctx.seeds.remove_matching(filter.key());
        }
        let removed = match filter.key() {
            Some((prefix, false)) if !filter.needs_info() => {
                self.ctx.cache.remove_matching(Some(prefix))
            }
            _ => self
                .ctx
                .select(&filter)
                .into_iter()
                .filter(|entry| self.ctx.cache.remove_entry(entry.key(), entry))
                .collect(),
        };
        self.removed(&removed, true);
        removed.len()
    }

    /// Tells removed queries and the event listeners, deleting L2 records when asked to.
    fn removed(&self, removed: &[Entry], delete_records: bool) {
        for entry in removed {
            if delete_records
                && let Some(l2) = &self.ctx.l2
                && entry.persisted()
            {
                // Other processes are told once the record is gone (coherence bus).
                let announce = self
                    .ctx
                    .publisher
                    .as_ref()
                    .map(|_| Announce { op: CoherenceOp::Remove, at: None });
                l2.enqueue(entry.key().clone(), L2Op::Delete(announce));
            }
            self.ctx.emit_removed(entry.key());
            entry.removed();
        }
    }

    /// Fetches again every query `filter` chooses that has been used with options (so it
    /// knows its function), joining fetches already in flight, and waits for them (TanStack's
    /// `refetchQueries`, with `cancelRefetch: false`). Paused queries and queries observed
    /// only by disabled observers are skipped. Returns how many fetched.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("clock"), || async { Ok::<_, String>(1) });
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// client.set_query_data(key!("no-function"), 2).unwrap(); // never used with options
    /// assert_eq!(test.block_on(client.refetch_queries(QueryFilter::all().stale(true))), 1);
    /// # }
    /// ```
    pub async fn refetch_queries(&self, filter: impl Into<QueryFilter>) -> usize {
        let waits: Vec<_> = self
            .ctx
            .select(&filter.into())
            .into_iter()
            .filter_map(|entry| entry.refetch(&self.ctx))
            .collect();
        let count = waits.len();
        futures::future::join_all(waits).await;
        count
    }

    /// How many queries `filter` chooses are fetching now (TanStack's `isFetching`). The
    /// empty key `()` counts every query.
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
    pub fn is_fetching(&self, filter: impl Into<QueryFilter>) -> usize {
        self.ctx.select(&filter.into()).iter().filter(|q| q.fetching()).count()
    }

    /// Cancels the fetches in flight for every query `filter` chooses: their retries stop,
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
    pub async fn cancel_queries(&self, filter: impl Into<QueryFilter>) -> usize {
        let waits: Vec<_> =
            self.ctx.select(&filter.into()).iter().filter_map(|entry| entry.cancel()).collect();
        let cancelled = waits.len();
        futures::future::join_all(waits).await;
        cancelled
    }

    /// Returns every query `filter` chooses to its initial state (idle, no data), and deletes
    /// the L2 records of the persisted ones. A fetch in flight is cancelled; active queries
    /// (with an enabled observer) fetch again at once, as TanStack's `resetQueries` does.
    /// Returns the number reset.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) });
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// assert_eq!(client.reset_queries(key!("n")), 1);
    /// let state = client.get_query_state::<u32, String>(key!("n")).unwrap().unwrap();
    /// assert!(state.is_idle() && state.data.is_none()); // still cached, as if never fetched
    /// # }
    /// ```
    pub fn reset_queries(&self, filter: impl Into<QueryFilter>) -> usize {
        let entries = self.ctx.select(&filter.into());
        for entry in &entries {
            entry.clone().reset(&self.ctx);
        }
        entries.len()
    }

    /// Removes every query from memory, every settled run from the mutation cache (pending
    /// runs go on), and every pending seed ([`hydrate`](Self::hydrate)). L2 records are kept,
    /// as on eviction, so keys can hydrate again; `remove_queries(())` deletes them too.
    ///
    /// As with [`remove_queries`](Self::remove_queries), fetches in flight are cancelled and
    /// observers attach to new queries for their keys.
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
    /// client.clear();
    /// assert!(client.is_empty());
    /// # }
    /// ```
    pub fn clear(&self) {
        self.ctx.seeds.remove_matching(None);
        let removed = self.ctx.cache.remove_matching(None);
        self.removed(&removed, false);
        for info in self.ctx.mutations.clear_settled() {
            self.ctx.emit(&crate::events::CacheEvent::MutationRemoved(info));
        }
    }

    /// Pauses background fetching (stale refetches, polling) for `key`; its fetch status shows
    /// [`crate::FetchStatus::Paused`]. Returns whether the key is cached.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{FetchStatus, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// assert!(!client.pause(key!("feed")), "not cached");
    /// client.set_query_data(key!("feed"), vec![1u32]).unwrap();
    /// assert!(client.pause(key!("feed")));
    /// let state = client.get_query_state::<Vec<u32>, String>(key!("feed")).unwrap().unwrap();
    /// assert_eq!(state.fetch_status, FetchStatus::Paused);
    /// assert!(client.resume(key!("feed"), false));
    /// # }
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("feed"), || async { Ok::<_, String>(2u32) });
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// client.pause(key!("feed"));
    /// assert!(client.resume(key!("feed"), true)); // and refetch now
    /// test.run_until_idle();
    /// assert_eq!(client.cache_stats().fetches, 2);
    /// # }
    /// ```
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
