//! [`InfiniteQueryOptions`]: the page function, the param functions, and the query options of
//! an infinite query.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::pager::Pager;
use super::{InfiniteData, PageContext};
use crate::key::QueryKey;
use crate::meta::Meta;
use crate::options::{FetchTag, OptionsInner, QueryOptions};

/// What to fetch for an infinite query, and how: the page function, the initial page param,
/// the functions computing the next (and previous) page's param, and query options.
///
/// Build them once and reuse them; cloning is a few reference-count increments. The query
/// they describe is an ordinary query of [`InfiniteData<Pg, P>`]: pass
/// [`query_options`](Self::query_options) to any client operation (`fetch_query`,
/// `ensure_query_data`, `prefetch_query`, `watch`, ...). See [the module](crate::infinite) for
/// how fetches page.
///
/// `Pg` is a page, `P` a page param. A param that may be "nothing" and still be fetched (as
/// TanStack's `initialPageParam: null`) is an `Option` in `P`; the param functions return
/// `None` for "no such page".
///
/// A panic in a param function during a fetch fails that fetch with
/// [`QueryError::Panicked`](crate::QueryError::Panicked) naming the function (never retried;
/// the pages the query had stay); in `has_next_page` / `has_previous_page` it reads as "no
/// page" and is logged.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{InfiniteData, InfiniteQueryOptions, QueryClient, QueryClientConfig, key};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// // Pages of three numbers; the cursor is the first number of a page; 9 numbers in all.
/// let numbers = InfiniteQueryOptions::new(
///     key!("numbers"),
///     0u32,
///     |cx| async move { Ok::<_, String>((cx.page_param..cx.page_param + 3).collect::<Vec<u32>>()) },
///     |_last, _all, last_param, _params| (*last_param < 6).then_some(last_param + 3),
/// );
/// let first = test.block_on(client.fetch_infinite_query(&numbers)).unwrap();
/// assert_eq!(first, InfiniteData { pages: vec![vec![0, 1, 2]], page_params: vec![0] });
/// assert!(client.has_next_page(&numbers));
/// test.block_on(client.fetch_next_page(&numbers)).unwrap();
/// let all = test.block_on(client.fetch_next_page(&numbers)).unwrap();
/// assert_eq!(all.page_params, vec![0, 3, 6]);
/// assert!(!client.has_next_page(&numbers));
/// # }
/// ```
pub struct InfiniteQueryOptions<Pg, P, E> {
    pub(super) pager: Arc<Pager<Pg, P, E>>,
    /// The plain options: fetches every page; what the query refetches with.
    pub(super) options: QueryOptions<InfiniteData<Pg, P>, E>,
}

impl<Pg, P, E> InfiniteQueryOptions<Pg, P, E>
where
    Pg: Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Options for `key`, whose first page has param `initial_page_param`, fetched by
    /// `page_fn`. `get_next_page_param(last_page, all_pages, last_param, all_params)` gives the
    /// param of the page after the last one, or `None` when there is none; it is never called
    /// without pages.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // A page is a `Vec` of items plus the cursor of the next page, as many APIs return.
    /// let posts = InfiniteQueryOptions::new(
    ///     key!("posts"),
    ///     None::<String>, // the first page has no cursor
    ///     |cx| async move {
    ///         let next = if cx.page_param.is_none() { Some("c2".to_string()) } else { None };
    ///         Ok::<_, String>((vec![format!("after {:?}", cx.page_param)], next))
    ///     },
    ///     |last, _all_pages, _last_cursor, _all_cursors| last.1.clone().map(Some),
    /// );
    /// test.block_on(client.fetch_infinite_query(&posts)).unwrap();
    /// let data = test.block_on(client.fetch_next_page(&posts)).unwrap();
    /// assert_eq!(data.page_params, [None, Some("c2".to_string())]);
    /// assert!(!client.has_next_page(&posts));
    /// # }
    /// ```
    pub fn new<K, F, Fut, N>(
        key: K,
        initial_page_param: P,
        page_fn: F,
        get_next_page_param: N,
    ) -> Self
    where
        K: Into<QueryKey>,
        F: Fn(PageContext<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Pg, E>> + Send + 'static,
        N: Fn(&Pg, &[Pg], &P, &[P]) -> Option<P> + Send + Sync + 'static,
    {
        let pager = Arc::new(Pager {
            initial: initial_page_param,
            page_fn: Arc::new(move |cx| Box::pin(page_fn(cx))),
            next: Arc::new(get_next_page_param),
            previous: None,
            max_pages: 0,
            pages: None,
        });
        let options = QueryOptions::with_behavior(key.into(), pager.behavior(FetchTag::Refetch));
        Self { pager, options }
    }

    /// Enables backward paging: `get_previous_page_param(first_page, all_pages, first_param,
    /// all_params)` gives the param of the page before the first one, or `None` when there is
    /// none. Without it there is never a previous page.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 5u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .get_previous_page_param(|_first, _all, first_param, _params| first_param.checked_sub(1));
    /// test.block_on(client.fetch_infinite_query(&pages)).unwrap();
    /// let data = test.block_on(client.fetch_previous_page(&pages)).unwrap();
    /// assert_eq!(data.pages, [4, 5]);
    /// # }
    /// ```
    #[must_use]
    pub fn get_previous_page_param(
        self,
        f: impl Fn(&Pg, &[Pg], &P, &[P]) -> Option<P> + Send + Sync + 'static,
    ) -> Self {
        self.edit_pager(|p| p.previous = Some(Arc::new(f)))
    }

    /// Keeps at most `max_pages` pages: a page fetched forward drops the first page, one fetched
    /// backward drops the last. 0 (the default) keeps every page.
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
    /// let window = InfiniteQueryOptions::new(
    ///     key!("window"),
    ///     1i32,
    ///     |cx| async move { Ok::<_, String>(cx.page_param * 10) },
    ///     |_, _, last, _| Some(last + 1),
    /// )
    /// .get_previous_page_param(|_, _, first, _| Some(first - 1))
    /// .max_pages(2);
    /// test.block_on(client.fetch_infinite_query(&window)).unwrap();
    /// test.block_on(client.fetch_next_page(&window)).unwrap();
    /// let data = test.block_on(client.fetch_next_page(&window)).unwrap();
    /// assert_eq!(data.page_params, vec![2, 3]);
    /// let data = test.block_on(client.fetch_previous_page(&window)).unwrap();
    /// assert_eq!(data.pages, vec![10, 20]);
    /// # }
    /// ```
    #[must_use]
    pub fn max_pages(self, max_pages: usize) -> Self {
        self.edit_pager(|p| p.max_pages = max_pages)
    }

    /// How many pages a first fetch or a refetch fetches (stopping early when there is no
    /// next page), instead of as many as are cached (TanStack's `pages` option of
    /// `fetchInfiniteQuery`). It stays with these options: an invalidation or a poll that
    /// refetches with them fetches as many. Page fetches are not affected.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // Prefetch the first three pages of a list at once.
    /// let list = InfiniteQueryOptions::new(key!("list"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .pages(3);
    /// let data = test.block_on(client.fetch_infinite_query(&list)).unwrap();
    /// assert_eq!(data.pages, [0, 1, 2]);
    /// # }
    /// ```
    #[must_use]
    pub fn pages(self, pages: usize) -> Self {
        self.edit_pager(|p| p.pages = Some(pages))
    }

    fn edit_pager(mut self, f: impl FnOnce(&mut Pager<Pg, P, E>)) -> Self {
        let mut pager = Pager::clone(&self.pager);
        f(&mut pager);
        self.pager = Arc::new(pager);
        let behavior = self.pager.behavior(FetchTag::Refetch);
        Arc::make_mut(&mut self.options.inner).behavior = Some(behavior);
        self
    }

    fn edit(
        mut self,
        f: impl FnOnce(QueryOptions<InfiniteData<Pg, P>, E>) -> QueryOptions<InfiniteData<Pg, P>, E>,
    ) -> Self {
        self.options = f(self.options);
        self
    }

    /// See [`QueryOptions::stale_time`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::{InfiniteQueryOptions, key};
    ///
    /// let _feed = InfiniteQueryOptions::new(key!("feed"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .stale_time(Duration::from_secs(30))
    ///     .gc_time(Duration::from_secs(600))
    ///     .retry(1);
    /// ```
    #[must_use]
    pub fn stale_time(self, duration: Duration) -> Self {
        self.edit(|o| o.stale_time(duration))
    }

    /// See [`QueryOptions::gc_time`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::{InfiniteQueryOptions, key};
    ///
    /// let _feed = InfiniteQueryOptions::new(key!("feed"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .gc_time(Duration::from_secs(600)); // keep scrolled pages ten minutes after leaving the screen
    /// ```
    #[must_use]
    pub fn gc_time(self, duration: Duration) -> Self {
        self.edit(|o| o.gc_time(duration))
    }

    /// See [`QueryOptions::retry`]. A retry of a refetch of every page resumes at the page
    /// that failed; a retry of a page fetch fetches the same page.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{InfiniteQueryOptions, key};
    ///
    /// let _feed = InfiniteQueryOptions::new(key!("feed"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .retry(2);
    /// ```
    #[must_use]
    pub fn retry(self, retries: u32) -> Self {
        self.edit(|o| o.retry(retries))
    }

    /// See [`QueryOptions::retry_delay`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::{InfiniteQueryOptions, key};
    ///
    /// let _feed = InfiniteQueryOptions::new(key!("feed"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .retry_delay(|attempt| Duration::from_millis(200 << attempt));
    /// ```
    #[must_use]
    pub fn retry_delay(self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.edit(|o| o.retry_delay(delay))
    }

    /// See [`QueryOptions::enabled`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let search = InfiniteQueryOptions::new(key!("search", ""), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .enabled(false); // an empty search box: don't fetch
    /// let _subscription = client.watch_infinite(&search).subscribe(|_| {});
    /// test.run_until_idle();
    /// assert_eq!(client.cache_stats().fetches, 0);
    /// # }
    /// ```
    #[must_use]
    pub fn enabled(self, enabled: bool) -> Self {
        self.edit(|o| o.enabled(enabled))
    }

    /// See [`QueryOptions::refetch_interval`]: each poll refetches every page.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let feed = InfiniteQueryOptions::new(key!("feed"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .refetch_interval(Duration::from_secs(60));
    /// let _subscription = client.watch_infinite(&feed).subscribe(|_| {});
    /// test.advance(Duration::from_secs(60));
    /// assert_eq!(client.cache_stats().fetches, 2); // the first fetch, then one poll
    /// # }
    /// ```
    #[must_use]
    pub fn refetch_interval(self, interval: Duration) -> Self {
        self.edit(|o| o.refetch_interval(interval))
    }

    /// See [`QueryOptions::meta`]; every page's [`PageContext::meta`] carries it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let feed = InfiniteQueryOptions::new(key!("feed"), 0u32, |cx| async move {
    ///     Ok::<_, String>(cx.meta.get("size").and_then(|v| v.as_u64()).unwrap_or(10))
    /// }, |_, _, p, _| Some(p + 1))
    /// .meta(serde_json::json!({ "size": 25 }));
    /// assert_eq!(test.block_on(client.fetch_infinite_query(&feed)).unwrap().pages, [25]);
    /// # }
    /// ```
    #[must_use]
    pub fn meta(self, meta: impl Into<Meta>) -> Self {
        self.edit(|o| o.meta(meta))
    }

    /// The key.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{InfiniteQueryOptions, key};
    ///
    /// let feed = InfiniteQueryOptions::new(key!("feed", 1), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1));
    /// assert_eq!(feed.key(), &key!("feed", 1));
    /// ```
    pub fn key(&self) -> &QueryKey {
        self.options.key()
    }

    /// The options of the query as an ordinary query of [`InfiniteData`]: any client
    /// operation accepts them. A fetch with them fetches every page (see [the
    /// module](crate::infinite)).
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
    /// let feed = InfiniteQueryOptions::new(
    ///     key!("feed"),
    ///     0u32,
    ///     |cx| async move { Ok::<_, String>(format!("page {}", cx.page_param)) },
    ///     |_, _, last, _| Some(last + 1),
    /// );
    /// let data = test.block_on(client.ensure_query_data(feed.query_options())).unwrap();
    /// assert_eq!(data.pages, vec!["page 0"]);
    /// # }
    /// ```
    pub fn query_options(&self) -> &QueryOptions<InfiniteData<Pg, P>, E> {
        &self.options
    }

    /// The options of a page fetch in `tag`'s direction: the plain options with the tag and
    /// the page loop for it.
    pub(super) fn tagged(&self, tag: FetchTag) -> Arc<OptionsInner<InfiniteData<Pg, P>, E>> {
        let mut inner = OptionsInner::clone(&self.options.inner);
        inner.fetch_tag = tag;
        inner.behavior = Some(self.pager.behavior(tag));
        Arc::new(inner)
    }
}

impl<Pg, P, E> InfiniteQueryOptions<Pg, P, E>
where
    Pg: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    P: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// See [`QueryOptions::persist`]: the record's `data` holds `pages` and `pageParams`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    /// use pystackquery_core::storage::MemoryStorage;
    /// use std::sync::Arc;
    ///
    /// let test = TestRuntime::new();
    /// let storage = Arc::new(MemoryStorage::new());
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().storage(storage.clone()));
    /// let feed = InfiniteQueryOptions::new(key!("feed"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .persist();
    /// test.block_on(async {
    ///     client.fetch_infinite_query(&feed).await.unwrap();
    ///     client.flush_storage().await;
    /// });
    /// let record = storage.peek("('feed',)").unwrap();
    /// assert!(record.contains("\"pageParams\": [0]"));
    /// # }
    /// ```
    #[must_use]
    pub fn persist(self) -> Self {
        self.edit(QueryOptions::persist)
    }
}

impl<Pg, P, E> Clone for InfiniteQueryOptions<Pg, P, E> {
    fn clone(&self) -> Self {
        Self { pager: self.pager.clone(), options: self.options.clone() }
    }
}

impl<Pg, P, E> fmt::Debug for InfiniteQueryOptions<Pg, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfiniteQueryOptions")
            .field("options", &self.options)
            .field("max_pages", &self.pager.max_pages)
            .field("pages", &self.pager.pages)
            .field("backward", &self.pager.previous.is_some())
            .finish_non_exhaustive()
    }
}
