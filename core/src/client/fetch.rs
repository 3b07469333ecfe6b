//! Reading through the cache: `fetch_query` (hit, join, stale-while-revalidate, cold fetch,
//! hydration first) and `prefetch_query`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::QueryClient;
use crate::cache::Stamp;
use crate::error::{ErasedError, QueryError};
use crate::options::QueryOptions;
use crate::query::{self, Effects, FetchSlot, HydrationStep, QueryCell, QuickAnswer, clone_data};
use crate::stats::Stat;

impl QueryClient {
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
    /// without a fetch, restored stale data is returned and revalidated. The same goes for a
    /// record hydrated into the client ([`hydrate`](Self::hydrate)) that was waiting for the
    /// key's first use with persisting options.
    ///
    /// # Errors
    ///
    /// The fetch's error after its retries ([`QueryError::Failed`]), a panic in the query
    /// function ([`QueryError::Panicked`]), or a key cached with another data type
    /// ([`QueryError::TypeMismatch`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryError, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let user = QueryOptions::new(key!("user", 42), || async { Ok::<_, String>("Ada".to_string()) })
    ///     .stale_time(Duration::from_secs(60));
    /// test.block_on(async {
    ///     assert_eq!(client.fetch_query(&user).await.unwrap(), "Ada"); // fetched
    ///     assert_eq!(client.fetch_query(&user).await.unwrap(), "Ada"); // fresh: from memory
    /// });
    /// assert_eq!(client.cache_stats().fetches, 1);
    ///
    /// // The query function's error comes back typed, after its retries.
    /// let down = QueryOptions::new(key!("down"), || async { Err::<u32, _>("503".to_string()) }).retry(0);
    /// let error = test.block_on(client.fetch_query(&down)).unwrap_err();
    /// assert!(matches!(error, QueryError::Failed(_)));
    /// assert_eq!(error.failed().map(String::as_str), Some("503"));
    /// # }
    /// ```
    pub async fn fetch_query<T, E>(&self, options: &QueryOptions<T, E>) -> Result<T, QueryError<E>>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let stale_time = self.ctx.stale_time(&options.inner.key, options.inner.stale_time);
        // The hit path: one shard lock and one query lock, no reference counts touched, no
        // allocation. Anything else (a miss, stale data to revalidate, hydration, a type
        // mismatch) takes the general path below.
        let now = self.ctx.runtime.now();
        let now = self.ctx.nanos(now);
        // Before the clock base only on a clock that runs backwards: the oldest stamp.
        let stamp = Stamp::new(u64::try_from(now).unwrap_or(0));
        // A hit is counted by the store, under the shard lock it holds anyway (a panicking
        // `Clone` of cached data is still an answer from memory): no shared atomic here.
        let quick = self.ctx.cache.peek_with(
            options.key(),
            stamp,
            |entry| {
                let cell = entry.as_any().downcast_ref::<QueryCell<T>>()?;
                let g = cell.lock();
                // Persisting options must mark the key persisted (and take its pending seed,
                // if any): the general path does that.
                if options.inner.codec.is_some()
                    && g.codec().is_none()
                    && (self.ctx.l2.is_some() || self.ctx.seeds.any())
                {
                    return None;
                }
                QueryCell::quick_answer(&g, now, stale_time)
            },
            |answer| !matches!(answer, QuickAnswer::Join(_)),
        );
        match quick {
            Some(QuickAnswer::Data(data)) => Ok(data),
            Some(QuickAnswer::Join(slot)) => {
                self.ctx.stats.add(Stat::Miss);
                slot.wait().await.map_err(|e| e.typed(options.key()))
            }
            Some(QuickAnswer::Failed(error)) => Err(error.typed(options.key())),
            None => Box::pin(self.fetch_query_general(options, stale_time, false)).await,
        }
    }

    /// Returns the key's data if it is fresh; otherwise fetches (or joins the fetch in flight)
    /// and waits for it: TanStack's `fetchQuery`. Side by side with the other reads:
    ///
    /// | method | fresh data | stale data | no data |
    /// |---|---|---|---|
    /// | [`fetch_query`](Self::fetch_query) | returned | returned at once, revalidated in the background | fetched, awaited |
    /// | `fetch_query_fresh` | returned | refetched, awaited | fetched, awaited |
    /// | [`ensure_query_data`](Self::ensure_query_data) | returned | returned, never revalidated | fetched, awaited |
    ///
    /// # Errors
    ///
    /// As [`fetch_query`](Self::fetch_query); a failed refetch of stale data is an error here
    /// (the stale data stays cached).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let version = Arc::new(AtomicU32::new(0));
    /// let counter = version.clone();
    /// let options = QueryOptions::new(key!("config"), move || {
    ///     let v = counter.fetch_add(1, Ordering::SeqCst) + 1;
    ///     async move { Ok::<_, String>(v) }
    /// })
    /// .stale_time(Duration::from_secs(60));
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), 1);
    /// test.advance(Duration::from_secs(61)); // stale now
    /// assert_eq!(test.block_on(client.ensure_query_data(&options)).unwrap(), 1, "as it is");
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), 1, "stale, revalidating");
    /// test.advance(Duration::from_secs(61));
    /// assert_eq!(test.block_on(client.fetch_query_fresh(&options)).unwrap(), 3, "waited");
    /// # }
    /// ```
    pub async fn fetch_query_fresh<T, E>(
        &self,
        options: &QueryOptions<T, E>,
    ) -> Result<T, QueryError<E>>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let stale_time = self.ctx.stale_time(&options.inner.key, options.inner.stale_time);
        Box::pin(self.fetch_query_general(options, stale_time, true)).await
    }

    /// Returns the key's data whatever its staleness, fetching (and waiting) only when there is
    /// none: never a background revalidation. TanStack's `ensureQueryData`. See the table on
    /// [`fetch_query_fresh`](Self::fetch_query_fresh).
    ///
    /// # Errors
    ///
    /// As [`fetch_query`](Self::fetch_query), for the fetch of a key without data.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("config"), || async { Ok::<_, String>(2u32) });
    /// client.set_query_data(key!("config"), 1u32).unwrap(); // stale at once (stale_time 0)
    /// // Any data is good enough: no fetch, not even in the background.
    /// assert_eq!(test.block_on(client.ensure_query_data(&options)).unwrap(), 1);
    /// assert_eq!(client.cache_stats().fetches, 0);
    /// # }
    /// ```
    pub async fn ensure_query_data<T, E>(
        &self,
        options: &QueryOptions<T, E>,
    ) -> Result<T, QueryError<E>>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        // With an endless stale time any data is fresh enough, so nothing revalidates.
        Box::pin(self.fetch_query_general(options, Duration::MAX, false)).await
    }

    async fn fetch_query_general<T, E>(
        &self,
        options: &QueryOptions<T, E>,
        stale_time: Duration,
        wait_for_stale: bool,
    ) -> Result<T, QueryError<E>>
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let key = options.key();
        enum Plan<T> {
            Data(Result<T, ErasedError>),
            Wait(Arc<FetchSlot<T>>),
            Hydrate(HydrationStep),
        }
        let mut hydration_waited = false;
        let slot: Arc<FetchSlot<T>> = 'lookup: loop {
            let cell = query::cell::<T>(&self.ctx, key).map_err(QueryError::TypeMismatch)?;
            let mut effects = Effects::none();
            let mut initial = cell.initial_for(&options.inner);
            let plan = 'plan: {
                let mut g = cell.lock();
                if g.detached {
                    continue 'lookup; // Removed between the lookup and the lock: look up again.
                }
                if !hydration_waited
                    && let Some(step) = cell.begin_hydration(&mut g, &self.ctx, &options.inner)
                {
                    break 'plan Plan::Hydrate(step);
                }
                QueryCell::seed_initial(
                    &mut g,
                    &self.ctx,
                    &options.inner,
                    &mut initial,
                    &mut effects,
                );
                let now = self.ctx.now_nanos();
                let data = g.state.data.as_ref().map(clone_data);
                let stale = data.is_some() && QueryCell::is_stale(&g, now, stale_time);
                // Wait for a fetch (no data, or stale data the caller will not take), start one
                // in the background (stale data, none running, not paused), or neither.
                let wait = data.is_none() || (stale && wait_for_stale);
                let background =
                    !wait && stale && QueryCell::current_fetch(&g).is_none() && !g.paused;
                // A read that fetches records its options; so does any read of a query without
                // options (new, or served from a restored record), as TanStack's `build` creates
                // a query with them: a listing's staleness and a bulk refetch follow them. One
                // that has some (an observer's) keeps them otherwise. (The hit path leaves them.)
                if wait || background || g.fetcher().is_none() {
                    QueryCell::set_fetcher(&mut g, options.inner.clone(), &mut effects);
                }
                match data {
                    Some(data) if !wait => {
                        if background {
                            let _ =
                                cell.join_or_begin(&mut g, &self.ctx, &options.inner, &mut effects);
                        }
                        Plan::Data(data)
                    }
                    _ => Plan::Wait(cell.join_or_begin(
                        &mut g,
                        &self.ctx,
                        &options.inner,
                        &mut effects,
                    )),
                }
            };
            effects.run(&self.ctx, key);
            match plan {
                Plan::Data(data) => {
                    // A read that waited for the key's L2 read is a miss, whatever it found.
                    self.ctx.stats.add(if hydration_waited { Stat::Miss } else { Stat::Hit });
                    return data.map_err(|e| e.typed(key));
                }
                Plan::Wait(slot) => {
                    self.ctx.stats.add(Stat::Miss);
                    break slot;
                }
                Plan::Hydrate(step) => {
                    hydration_waited = true;
                    step.await;
                }
            }
        };
        slot.wait().await.map_err(|e| e.typed(key))
    }

    /// Warms the cache: fetches when the key has no data or stale data, and swallows errors
    /// (logged at `debug`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let report = QueryOptions::new(key!("report"), || async { Ok::<_, String>(vec![1, 2, 3]) });
    /// test.block_on(client.prefetch_query(&report)); // nothing to unwrap: errors are swallowed
    /// assert_eq!(client.get_query_data::<Vec<i32>>(key!("report")).unwrap(), Some(vec![1, 2, 3]));
    /// # }
    /// ```
    pub async fn prefetch_query<T, E>(&self, options: &QueryOptions<T, E>)
    where
        T: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let stale_time = self.ctx.stale_time(&options.inner.key, options.inner.stale_time);
        let cell = match query::cell::<T>(&self.ctx, options.key()) {
            Ok(cell) => cell,
            Err(mismatch) => {
                tracing::debug!("prefetch skipped: {mismatch}");
                return;
            }
        };
        let mut hydration_waited = false;
        let step = {
            let mut g = cell.lock();
            cell.begin_hydration(&mut g, &self.ctx, &options.inner)
        };
        if let Some(step) = step {
            hydration_waited = true;
            step.await;
        }
        let needs_fetch = {
            let g = cell.lock();
            g.state.data.is_none() || QueryCell::is_stale(&g, self.ctx.now_nanos(), stale_time)
        };
        self.ctx.stats.add(if needs_fetch || hydration_waited { Stat::Miss } else { Stat::Hit });
        if needs_fetch {
            let slot = cell.fetch_with(&self.ctx, &options.inner);
            if let Err(error) = slot.wait().await {
                tracing::debug!(key = %options.key(), "prefetch failed: {error}");
            }
        }
    }
}
