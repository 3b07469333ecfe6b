//! [`InfiniteQueryObserver`]: a [`QueryObserver`] of an infinite query, with page fetching
//! and the paging flags.

use std::fmt;
use std::sync::Arc;

use super::client::{fetch_page, has_page, peek};
use super::{InfiniteData, InfiniteQueryOptions, PageDirection};
use crate::ctx::Ctx;
use crate::listeners::Subscription;
use crate::observer::{QueryObserver, QueryStream};
use crate::options::FetchTag;
use crate::state::QueryState;

/// Watches an infinite query (TanStack's `InfiniteQueryObserver`): a [`QueryObserver`] of
/// its [`InfiniteData`] (listeners, stream, `select`, polling, which refetches every page),
/// plus page fetching and the paging flags.
///
/// Created by [`QueryClient::watch_infinite`](crate::QueryClient::watch_infinite). The flags
/// (`has_next_page`, `is_fetching_next_page`, ...) are read from the query when called, not
/// carried in the state; `has_*_page` look at the raw pages, not the selected value. Page
/// fetching works with or without a subscription.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::{Arc, Mutex};
/// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let feed = InfiniteQueryOptions::new(
///     key!("feed"),
///     1u32,
///     |cx| async move { Ok::<_, String>(format!("post {}", cx.page_param)) },
///     |_, _, last, _| (*last < 3).then_some(last + 1),
/// );
/// let observer = client.watch_infinite(&feed).select(|data| data.pages.len());
/// let counts = Arc::new(Mutex::new(Vec::new()));
/// let log = counts.clone();
/// let _subscription = observer.subscribe(move |state| log.lock().unwrap().push(state.data));
/// test.run_until_idle();
/// assert!(observer.has_next_page());
///
/// let state = test.block_on(observer.fetch_next_page());
/// assert_eq!(state.data, Some(2));
/// assert!(!observer.is_fetching_next_page());
/// assert_eq!(counts.lock().unwrap().last(), Some(&Some(2)));
/// # }
/// ```
pub struct InfiniteQueryObserver<Pg, P, E, S = InfiniteData<Pg, P>> {
    ctx: Arc<Ctx>,
    options: InfiniteQueryOptions<Pg, P, E>,
    observer: QueryObserver<InfiniteData<Pg, P>, E, S>,
}

impl<Pg, P, E> InfiniteQueryObserver<Pg, P, E>
where
    Pg: Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    pub(super) fn new(
        ctx: Arc<Ctx>,
        options: InfiniteQueryOptions<Pg, P, E>,
        observer: QueryObserver<InfiniteData<Pg, P>, E>,
    ) -> Self {
        Self { ctx, options, observer }
    }
}

impl<Pg, P, E, S> InfiniteQueryObserver<Pg, P, E, S>
where
    Pg: Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// An observer whose listeners get `select(&data)` instead of the pages (see
    /// [`QueryObserver::select`]). Call it before subscribing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move { Ok::<_, String>(vec![cx.page_param; 2]) }, |_, _, p, _| Some(p + 1));
    /// // Listeners get the flattened items rather than the pages.
    /// let items = client.watch_infinite(&pages).select(|data| data.pages.concat());
    /// let _subscription = items.subscribe(|_| {});
    /// test.run_until_idle();
    /// let state = test.block_on(items.fetch_next_page());
    /// assert_eq!(state.data, Some(vec![0, 0, 1, 1]));
    /// # }
    /// ```
    pub fn select<S2>(
        self,
        select: impl Fn(&InfiniteData<Pg, P>) -> S2 + Send + Sync + 'static,
    ) -> InfiniteQueryObserver<Pg, P, E, S2>
    where
        S2: Clone + Send + Sync + 'static,
    {
        let Self { ctx, options, observer } = self;
        InfiniteQueryObserver { ctx, options, observer: observer.select(select) }
    }

    /// See [`QueryObserver::subscribe`]: the first subscription fetches (every page) if the
    /// data is missing or stale.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1));
    /// let counts = Arc::new(Mutex::new(Vec::new()));
    /// let log = counts.clone();
    /// let observer = client.watch_infinite(&pages);
    /// let _subscription = observer.subscribe(move |s| log.lock().unwrap().push(s.data.as_ref().map_or(0, |d| d.pages.len())));
    /// test.run_until_idle();
    /// test.block_on(observer.fetch_next_page());
    /// assert_eq!(counts.lock().unwrap().last(), Some(&2));
    /// # }
    /// ```
    pub fn subscribe(
        &self,
        listener: impl Fn(&QueryState<S, E>) + Send + Sync + 'static,
    ) -> Subscription {
        self.observer.subscribe(listener)
    }

    /// See [`QueryObserver::result`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1));
    /// test.block_on(client.fetch_infinite_query(&pages)).unwrap();
    /// let observer = client.watch_infinite(&pages);
    /// assert_eq!(observer.result().data.unwrap().page_params, [0]);
    /// # }
    /// ```
    pub fn result(&self) -> QueryState<S, E> {
        self.observer.result()
    }

    /// See [`QueryObserver::stream`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use futures::StreamExt;
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1));
    /// let mut states = client.watch_infinite(&pages).stream();
    /// test.block_on(async {
    ///     assert!(states.next().await.unwrap().data.is_none());
    ///     assert_eq!(states.next().await.unwrap().data.unwrap().pages, [0]);
    /// });
    /// # }
    /// ```
    pub fn stream(&self) -> QueryStream<S, E> {
        self.observer.stream()
    }

    /// Fetches the next page (see
    /// [`QueryClient::fetch_next_page`](crate::QueryClient::fetch_next_page)) and returns the
    /// resulting state; an error shows in the state, with the pages kept.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move {
    ///     if cx.page_param < 2 { Ok(cx.page_param) } else { Err("end of data".to_string()) }
    /// }, |_, _, p, _| Some(p + 1))
    /// .retry(0);
    /// let observer = client.watch_infinite(&pages);
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle();
    /// assert_eq!(test.block_on(observer.fetch_next_page()).data.unwrap().pages, [0, 1]);
    /// let failed = test.block_on(observer.fetch_next_page());
    /// assert!(failed.is_error() && failed.data.unwrap().pages == [0, 1]); // pages kept
    /// # }
    /// ```
    pub async fn fetch_next_page(&self) -> QueryState<S, E> {
        let _ = fetch_page(&self.ctx, &self.options, FetchTag::NextPage).await;
        self.observer.result()
    }

    /// Fetches the previous page (see
    /// [`QueryClient::fetch_previous_page`](crate::QueryClient::fetch_previous_page)) and
    /// returns the resulting state.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // A chat history opened at message 10, scrolling up.
    /// let chat = InfiniteQueryOptions::new(key!("chat"), 10i32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1))
    ///     .get_previous_page_param(|_, _, first, _| (*first > 0).then(|| first - 1));
    /// let observer = client.watch_infinite(&chat);
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle();
    /// let state = test.block_on(observer.fetch_previous_page());
    /// assert_eq!(state.data.unwrap().pages, [9, 10]);
    /// # }
    /// ```
    pub async fn fetch_previous_page(&self) -> QueryState<S, E> {
        let _ = fetch_page(&self.ctx, &self.options, FetchTag::PreviousPage).await;
        self.observer.result()
    }

    /// Refetches every page (see [`QueryObserver::refetch`]), joining any fetch in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let count = calls.clone();
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, move |cx| {
    ///     count.fetch_add(1, Ordering::SeqCst);
    ///     async move { Ok::<_, String>(cx.page_param) }
    /// }, |_, _, p, _| Some(p + 1));
    /// let observer = client.watch_infinite(&pages);
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle();
    /// test.block_on(observer.fetch_next_page());
    /// test.block_on(observer.refetch()); // both pages again
    /// assert_eq!(calls.load(Ordering::SeqCst), 4);
    /// # }
    /// ```
    pub async fn refetch(&self) -> QueryState<S, E> {
        self.observer.refetch().await
    }

    /// Whether the current data has a next page (see
    /// [`QueryClient::has_next_page`](crate::QueryClient::has_next_page)).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let one_page = InfiniteQueryOptions::new(key!("one"), 0u32, |_| async { Ok::<_, String>("all") }, |_, _, _, _| None);
    /// let observer = client.watch_infinite(&one_page);
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle();
    /// assert!(!observer.has_next_page());
    /// # }
    /// ```
    pub fn has_next_page(&self) -> bool {
        has_page(&self.ctx, &self.options, PageDirection::Forward)
    }

    /// Whether the current data has a previous page (see
    /// [`QueryClient::has_previous_page`](crate::QueryClient::has_previous_page)).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let days = InfiniteQueryOptions::new(key!("days"), 0i32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, _, _| None)
    ///     .get_previous_page_param(|_, _, first, _| Some(first - 1));
    /// let observer = client.watch_infinite(&days);
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle();
    /// assert!(observer.has_previous_page() && !observer.has_next_page());
    /// # }
    /// ```
    pub fn has_previous_page(&self) -> bool {
        has_page(&self.ctx, &self.options, PageDirection::Backward)
    }

    /// Whether the fetch in flight is a next-page fetch (also when it fetches the first page
    /// of a query without data).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let runtime = test.runtime();
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, move |cx| {
    ///     let (page, sleep) = (cx.page_param, runtime.sleep(Duration::from_secs(u64::from(cx.page_param))));
    ///     async move { sleep.await; Ok::<_, String>(page) } // page n takes n seconds
    /// }, |_, _, p, _| Some(p + 1));
    /// let observer = Arc::new(client.watch_infinite(&pages));
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle(); // page 0
    /// let more = test.runtime().spawn_with_handle({
    ///     let observer = observer.clone();
    ///     async move { observer.fetch_next_page().await }
    /// });
    /// test.run_until_idle();
    /// assert!(observer.is_fetching_next_page()); // e.g. a spinner below the list
    /// test.advance(Duration::from_secs(1));
    /// assert!(!observer.is_fetching_next_page());
    /// assert_eq!(test.block_on(more).data.unwrap().pages, [0, 1]);
    /// # }
    /// ```
    pub fn is_fetching_next_page(&self) -> bool {
        self.fetching(FetchTag::NextPage)
    }

    /// Whether the fetch in flight is a previous-page fetch.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1));
    /// let observer = client.watch_infinite(&pages);
    /// assert!(!observer.is_fetching_previous_page()); // e.g. show a spinner at the top while true
    /// # }
    /// ```
    pub fn is_fetching_previous_page(&self) -> bool {
        self.fetching(FetchTag::PreviousPage)
    }

    fn fetching(&self, tag: FetchTag) -> bool {
        let cell = peek::<Pg, P>(&self.ctx, self.options.key());
        cell.is_some_and(|cell| cell.fetching_tag() == Some(tag))
    }

    /// The underlying observer of the query's [`InfiniteData`] (e.g. for
    /// [`subscriber_count`](QueryObserver::subscriber_count)). Page fetches keep using the
    /// options this observer was made with, whatever options are set on it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1));
    /// let observer = client.watch_infinite(&pages);
    /// let _subscription = observer.subscribe(|_| {});
    /// assert_eq!(observer.observer().subscriber_count(), 1);
    /// # }
    /// ```
    pub fn observer(&self) -> &QueryObserver<InfiniteData<Pg, P>, E, S> {
        &self.observer
    }

    /// The options the observer pages with.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let pages = InfiniteQueryOptions::new(key!("p"), 0u32, |cx| async move { Ok::<_, String>(cx.page_param) }, |_, _, p, _| Some(p + 1));
    /// let observer = client.watch_infinite(&pages);
    /// assert_eq!(observer.options().key(), &key!("p"));
    /// # }
    /// ```
    pub fn options(&self) -> &InfiniteQueryOptions<Pg, P, E> {
        &self.options
    }
}

impl<Pg, P, E, S> fmt::Debug for InfiniteQueryObserver<Pg, P, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfiniteQueryObserver")
            .field("observer", &self.observer)
            .finish_non_exhaustive()
    }
}
