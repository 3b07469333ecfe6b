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
    pub fn subscribe(
        &self,
        listener: impl Fn(&QueryState<S, E>) + Send + Sync + 'static,
    ) -> Subscription {
        self.observer.subscribe(listener)
    }

    /// See [`QueryObserver::result`].
    pub fn result(&self) -> QueryState<S, E> {
        self.observer.result()
    }

    /// See [`QueryObserver::stream`].
    pub fn stream(&self) -> QueryStream<S, E> {
        self.observer.stream()
    }

    /// Fetches the next page (see
    /// [`QueryClient::fetch_next_page`](crate::QueryClient::fetch_next_page)) and returns the
    /// resulting state; an error shows in the state, with the pages kept.
    pub async fn fetch_next_page(&self) -> QueryState<S, E> {
        let _ = fetch_page(&self.ctx, &self.options, FetchTag::NextPage).await;
        self.observer.result()
    }

    /// Fetches the previous page (see
    /// [`QueryClient::fetch_previous_page`](crate::QueryClient::fetch_previous_page)) and
    /// returns the resulting state.
    pub async fn fetch_previous_page(&self) -> QueryState<S, E> {
        let _ = fetch_page(&self.ctx, &self.options, FetchTag::PreviousPage).await;
        self.observer.result()
    }

    /// Refetches every page (see [`QueryObserver::refetch`]), joining any fetch in flight.
    pub async fn refetch(&self) -> QueryState<S, E> {
        self.observer.refetch().await
    }

    /// Whether the current data has a next page (see
    /// [`QueryClient::has_next_page`](crate::QueryClient::has_next_page)).
    pub fn has_next_page(&self) -> bool {
        has_page(&self.ctx, &self.options, PageDirection::Forward)
    }

    /// Whether the current data has a previous page (see
    /// [`QueryClient::has_previous_page`](crate::QueryClient::has_previous_page)).
    pub fn has_previous_page(&self) -> bool {
        has_page(&self.ctx, &self.options, PageDirection::Backward)
    }

    /// Whether the fetch in flight is a next-page fetch (also when it fetches the first page
    /// of a query without data).
    pub fn is_fetching_next_page(&self) -> bool {
        self.fetching(FetchTag::NextPage)
    }

    /// Whether the fetch in flight is a previous-page fetch.
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
    pub fn observer(&self) -> &QueryObserver<InfiniteData<Pg, P>, E, S> {
        &self.observer
    }

    /// The options the observer pages with.
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
