//! The client's infinite-query operations: the first fetch, a page in either direction, and
//! whether there is one.

use std::fmt;
use std::sync::Arc;

use super::{InfiniteData, InfiniteQueryObserver, InfiniteQueryOptions, PageDirection};
use crate::client::QueryClient;
use crate::ctx::Ctx;
use crate::error::QueryError;
use crate::key::QueryKey;
use crate::observer::QueryObserver;
use crate::options::FetchTag;
use crate::query::{self, Effects, QueryCell, clone_data};

impl QueryClient {
    /// Returns the infinite query's data, fetching it when needed: exactly
    /// [`fetch_query`](Self::fetch_query) with [`InfiniteQueryOptions::query_options`] (fresh
    /// data at once, stale data at once and revalidated, no data fetched and awaited). A fetch
    /// fetches every page (see [the module](crate::infinite)): one at first.
    ///
    /// # Errors
    ///
    /// As [`fetch_query`](Self::fetch_query).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // Pages of three items from a cursor; the last page is short.
    /// let items = InfiniteQueryOptions::new(
    ///     key!("items"),
    ///     0u32,
    ///     |cx| async move { Ok::<_, String>((cx.page_param..(cx.page_param + 3).min(7)).collect::<Vec<u32>>()) },
    ///     |last: &Vec<u32>, _all, cursor, _params| (last.len() == 3).then(|| cursor + 3),
    /// );
    /// let data = test.block_on(client.fetch_infinite_query(&items)).unwrap();
    /// assert_eq!(data.pages, [vec![0, 1, 2]]); // the first page only
    /// assert!(client.has_next_page(&items));
    /// # }
    /// ```
    pub async fn fetch_infinite_query<Pg, P, E>(
        &self,
        options: &InfiniteQueryOptions<Pg, P, E>,
    ) -> Result<InfiniteData<Pg, P>, QueryError<E>>
    where
        Pg: Clone + Send + Sync + 'static,
        P: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        self.fetch_query(options.query_options()).await
    }

    /// Fetches the page after the last one and returns the data with it appended (beyond
    /// [`max_pages`](InfiniteQueryOptions::max_pages) the first page goes). When the next
    /// param is `None` nothing is fetched and the data comes back as it is; without pages the
    /// first page is fetched, with the initial param.
    ///
    /// Concurrent calls share one fetch; a fetch of another kind in flight (the previous page,
    /// a refetch) is superseded, its callers getting this fetch's outcome. A persisted cold
    /// key reads its stored pages first. The query keeps refetching with the plain options
    /// (every page), not with this page fetch.
    ///
    /// # Errors
    ///
    /// The page function's error after its retries (the pages stay as they were),
    /// [`QueryError::Cancelled`] if the fetch is cancelled (`cancel_queries`, removal),
    /// [`QueryError::Panicked`] for a panic in the page or param functions,
    /// [`QueryError::TypeMismatch`] for a key cached with another type.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let letters = InfiniteQueryOptions::new(
    ///     key!("letters"),
    ///     0usize,
    ///     |cx| async move { Ok::<_, String>(["a", "b", "c"][cx.page_param]) },
    ///     |_, _, last, _| (*last < 2).then_some(last + 1),
    /// );
    /// assert_eq!(test.block_on(client.fetch_next_page(&letters)).unwrap().pages, ["a"]);
    /// assert_eq!(test.block_on(client.fetch_next_page(&letters)).unwrap().pages, ["a", "b"]);
    /// assert_eq!(test.block_on(client.fetch_next_page(&letters)).unwrap().pages, ["a", "b", "c"]);
    /// // No next page: nothing is fetched.
    /// assert_eq!(test.block_on(client.fetch_next_page(&letters)).unwrap().pages.len(), 3);
    /// # }
    /// ```
    pub async fn fetch_next_page<Pg, P, E>(
        &self,
        options: &InfiniteQueryOptions<Pg, P, E>,
    ) -> Result<InfiniteData<Pg, P>, QueryError<E>>
    where
        Pg: Clone + Send + Sync + 'static,
        P: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        fetch_page(&self.ctx, options, FetchTag::NextPage).await
    }

    /// Fetches the page before the first one and returns the data with it prepended (beyond
    /// [`max_pages`](InfiniteQueryOptions::max_pages) the last page goes), as
    /// [`fetch_next_page`](Self::fetch_next_page) does the other way, with
    /// [`get_previous_page_param`](InfiniteQueryOptions::get_previous_page_param) (without it
    /// there is no previous page).
    ///
    /// # Errors
    ///
    /// As [`fetch_next_page`](Self::fetch_next_page).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let days = InfiniteQueryOptions::new(
    ///     key!("days"),
    ///     0i32,
    ///     |cx| async move { Ok::<_, String>(format!("day {}", cx.page_param)) },
    ///     |_, _, last, _| (*last < 0).then_some(last + 1),
    /// )
    /// .get_previous_page_param(|_, _, first, _| Some(first - 1));
    /// test.block_on(client.fetch_infinite_query(&days)).unwrap();
    /// assert!(client.has_previous_page(&days) && !client.has_next_page(&days));
    /// let data = test.block_on(client.fetch_previous_page(&days)).unwrap();
    /// assert_eq!(data.pages, ["day -1", "day 0"]);
    /// assert_eq!(data.page_params, [-1, 0]);
    /// # }
    /// ```
    pub async fn fetch_previous_page<Pg, P, E>(
        &self,
        options: &InfiniteQueryOptions<Pg, P, E>,
    ) -> Result<InfiniteData<Pg, P>, QueryError<E>>
    where
        Pg: Clone + Send + Sync + 'static,
        P: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        fetch_page(&self.ctx, options, FetchTag::PreviousPage).await
    }

    /// Whether the query's current data has a next page: it has pages and
    /// `get_next_page_param` gives a param. The function runs on a copy of the data, with no
    /// lock held; a panic in it reads as `false` (and is logged). `false` when the key is not
    /// cached or holds another type. Not a use of the key (its place in the eviction order
    /// stays).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let two_pages = InfiniteQueryOptions::new(
    ///     key!("two"),
    ///     1u32,
    ///     |cx| async move { Ok::<_, String>(cx.page_param) },
    ///     |_last, _all, page, _params| (*page < 2).then(|| page + 1),
    /// );
    /// assert!(!client.has_next_page(&two_pages)); // no data yet
    /// test.block_on(client.fetch_infinite_query(&two_pages)).unwrap();
    /// assert!(client.has_next_page(&two_pages));
    /// test.block_on(client.fetch_next_page(&two_pages)).unwrap();
    /// assert!(!client.has_next_page(&two_pages)); // e.g. hide the "more" button
    /// # }
    /// ```
    pub fn has_next_page<Pg, P, E>(&self, options: &InfiniteQueryOptions<Pg, P, E>) -> bool
    where
        Pg: Clone + Send + Sync + 'static,
        P: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        has_page(&self.ctx, options, PageDirection::Forward)
    }

    /// Whether the query's current data has a previous page, as
    /// [`has_next_page`](Self::has_next_page) with `get_previous_page_param` (`false` without
    /// one).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let forward_only = InfiniteQueryOptions::new(
    ///     key!("log"),
    ///     0u32,
    ///     |cx| async move { Ok::<_, String>(cx.page_param) },
    ///     |_, _, page, _| Some(page + 1),
    /// );
    /// test.block_on(client.fetch_infinite_query(&forward_only)).unwrap();
    /// assert!(!client.has_previous_page(&forward_only)); // no get_previous_page_param
    /// let both = forward_only.get_previous_page_param(|_, _, page, _| page.checked_sub(1));
    /// assert!(!client.has_previous_page(&both)); // page 0 has none before it
    /// # }
    /// ```
    pub fn has_previous_page<Pg, P, E>(&self, options: &InfiniteQueryOptions<Pg, P, E>) -> bool
    where
        Pg: Clone + Send + Sync + 'static,
        P: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        has_page(&self.ctx, options, PageDirection::Backward)
    }

    /// An observer of the infinite query (see [`InfiniteQueryObserver`]). Nothing happens
    /// until its first subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let feed = InfiniteQueryOptions::new(
    ///     key!("feed"),
    ///     1u32,
    ///     |cx| async move { Ok::<_, String>(format!("post {}", cx.page_param)) },
    ///     |_, _, page, _| Some(page + 1),
    /// );
    /// let observer = client.watch_infinite(&feed);
    /// let _subscription = observer.subscribe(|state| {
    ///     if let Some(data) = &state.data { let _rendered = data.pages.join("\n"); }
    /// });
    /// test.run_until_idle();
    /// let state = test.block_on(observer.fetch_next_page()); // "load more"
    /// assert_eq!(state.data.unwrap().pages, ["post 1", "post 2"]);
    /// # }
    /// ```
    pub fn watch_infinite<Pg, P, E>(
        &self,
        options: &InfiniteQueryOptions<Pg, P, E>,
    ) -> InfiniteQueryObserver<Pg, P, E>
    where
        Pg: Clone + Send + Sync + 'static,
        P: Clone + Send + Sync + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let observer = QueryObserver::new(self.ctx.clone(), options.query_options().clone());
        InfiniteQueryObserver::new(self.ctx.clone(), options.clone(), observer)
    }
}

/// Fetches a page in `tag`'s direction (every page when the query has none) and waits for it.
/// The query's refetcher stays the plain options.
pub(super) async fn fetch_page<Pg, P, E>(
    ctx: &Arc<Ctx>,
    options: &InfiniteQueryOptions<Pg, P, E>,
    tag: FetchTag,
) -> Result<InfiniteData<Pg, P>, QueryError<E>>
where
    Pg: Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    let key = options.key();
    let (plain, tagged) = (&options.options.inner, options.tagged(tag));
    let mut hydrated = false;
    let slot = loop {
        let cell =
            query::cell::<InfiniteData<Pg, P>>(ctx, key).map_err(QueryError::TypeMismatch)?;
        if !hydrated && ctx.l2.is_some() {
            // A cold persisted key: its stored pages first, so that the page goes after them.
            let step = cell.begin_hydration(&mut cell.lock(), ctx, plain);
            if let Some(step) = step {
                hydrated = true;
                step.await;
            }
        }
        let mut effects = Effects::none();
        let slot = {
            let mut g = cell.lock();
            if g.detached {
                continue; // Removed since the lookup: look up again.
            }
            QueryCell::set_fetcher(&mut g, plain.clone(), &mut effects);
            cell.join_or_begin(&mut g, ctx, &tagged, &mut effects)
        };
        effects.run(ctx, key);
        break slot;
    };
    drop(tagged);
    slot.wait().await.map_err(|e| e.typed(key))
}

/// Whether the query's current data has a page in `direction`.
pub(super) fn has_page<Pg, P, E>(
    ctx: &Ctx,
    options: &InfiniteQueryOptions<Pg, P, E>,
    direction: PageDirection,
) -> bool
where
    Pg: Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    let Some(cell) = peek::<Pg, P>(ctx, options.key()) else {
        return false;
    };
    // Copied under the query's lock (the data type's `Clone`); the user's function runs after.
    let data = cell.lock().state.data.as_ref().map(clone_data);
    let Some(Ok(data)) = data else { return false };
    match options.pager.param(&data, direction) {
        Ok(param) => param.is_some(),
        Err(message) => {
            tracing::error!(key = %options.key(), "{message}; reading it as no page");
            false
        }
    }
}

/// The key's infinite query if it is cached with these types, without marking it used (a
/// flag read is not a use of the key).
pub(super) fn peek<Pg, P>(ctx: &Ctx, key: &QueryKey) -> Option<Arc<QueryCell<InfiniteData<Pg, P>>>>
where
    Pg: Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
{
    ctx.cache.lookup(key)?.into_any().downcast().ok()
}
