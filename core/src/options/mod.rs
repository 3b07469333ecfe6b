//! Per-query options: [`QueryOptions`], its shared `OptionsInner`, construction and the general
//! builders (freshness, gc, refetch interval, enabled, cancellation, meta). The other groups
//! have their own files: `retry`, `callbacks`, `persist`, `seed` (placeholder and initial
//! data) and `behavior` (the fetch behaviour hook).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::QueryContext;
use crate::error::QueryError;
use crate::key::QueryKey;
use crate::meta::Meta;
use crate::retryer::{RetryDelayFn, RetryIfFn};
use crate::runtime::BoxFuture;
use crate::storage::record::CodecFn;

mod behavior;
mod callbacks;
mod persist;
mod retry;
mod seed;

pub(crate) use behavior::{Attempt, Behavior, FetchTag};
pub(crate) use seed::{InitialData, Placeholder};

type QueryFn<T, E> = Arc<dyn Fn(QueryContext) -> BoxFuture<Result<T, E>> + Send + Sync>;
type DataCallback<T> = Arc<dyn Fn(&T) + Send + Sync>;
type ErrorCallback<E> = Arc<dyn Fn(&QueryError<E>) + Send + Sync>;
type SettledCallback<T, E> = Arc<dyn Fn(Option<&T>, Option<&QueryError<E>>) + Send + Sync>;

/// What to fetch for a key, and how: the query function plus options.
///
/// Every option left unset inherits the client's default from [`QueryClientConfig`](crate::QueryClientConfig); an option
/// that is set wins, even when it equals the library default. Build the options once and reuse
/// them: cloning is a reference-count increment.
///
/// The query function is called with no arguments and returns a future of `Result<T, E>`.
/// `T` must be `Clone` (every caller gets a copy; wrap large values in `Arc`), and `E` must
/// implement `Display` (its message is what persistent storage keeps).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pystackquery_core::QueryOptions;
///
/// let options = QueryOptions::new(("user", 42), || async {
///     Ok::<_, std::io::Error>(format!("user 42"))
/// })
/// .stale_time(Duration::from_secs(60))
/// .retry(1);
/// assert_eq!(options.key().to_string(), "('user', 42)");
/// ```
pub struct QueryOptions<T, E> {
    pub(crate) inner: Arc<OptionsInner<T, E>>,
}

pub(crate) struct OptionsInner<T, E> {
    pub(crate) key: QueryKey,
    pub(crate) query_fn: QueryFn<T, E>,
    pub(crate) stale_time: Option<Duration>,
    pub(crate) gc_time: Option<Duration>,
    pub(crate) persist_max_age: Option<Duration>,
    pub(crate) refetch_interval: Option<Duration>,
    pub(crate) retry: Option<u32>,
    pub(crate) retry_delay: Option<RetryDelayFn>,
    pub(crate) retry_if: Option<RetryIfFn<E>>,
    pub(crate) enabled: bool,
    pub(crate) cancel_when_unobserved: bool,
    pub(crate) on_success: Option<DataCallback<T>>,
    pub(crate) on_error: Option<ErrorCallback<E>>,
    pub(crate) on_settled: Option<SettledCallback<T, E>>,
    pub(crate) placeholder: Option<Placeholder<T>>,
    /// Seeds a query that has no data (see [`QueryOptions::initial_data`]).
    pub(crate) initial_data: Option<InitialData<T>>,
    pub(crate) initial_data_updated_at: Option<std::time::SystemTime>,
    /// Handed to the query function (see [`QueryOptions::meta`]).
    pub(crate) meta: Option<Meta>,
    /// Set by [`QueryOptions::persist`]: how to write this query's states to L2.
    pub(crate) codec: Option<CodecFn<T>>,
    /// Runs a fetch instead of `query_fn` when set (the infinite layer's page loop).
    pub(crate) behavior: Option<Behavior<T, E>>,
    /// What fetches with these options are for: decides joining (see [`FetchTag`]).
    pub(crate) fetch_tag: FetchTag,
}

impl<T, E> QueryOptions<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Options for `key`, fetched by `query_fn`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let id = 42;
    /// // The closure captures what it needs; each call returns a new future.
    /// let user = QueryOptions::new(key!("user", id), move || async move { Ok::<_, String>(format!("user {id}")) });
    /// assert_eq!(test.block_on(client.fetch_query(&user)).unwrap(), "user 42");
    /// # }
    /// ```
    pub fn new<K, F, Fut>(key: K, query_fn: F) -> Self
    where
        K: Into<QueryKey>,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        Self::build(key.into(), Arc::new(move |_| Box::pin(query_fn())))
    }

    /// Options for `key`, fetched by `query_fn`, which receives a [`QueryContext`]: the key
    /// and a [`CancelSignal`](crate::CancelSignal) it may watch to stop early when the fetch
    /// is cancelled. A function that ignores the signal is stopped all the same: its future is
    /// dropped at its next poll.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryError, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // A function that would never finish on its own.
    /// let options = QueryOptions::with_context(key!("slow"), |cx| async move {
    ///     cx.signal.cancelled().await;
    ///     Err::<String, _>("stopped".to_string())
    /// });
    /// let waiter = test.runtime().spawn_with_handle({
    ///     let (client, options) = (client.clone(), options.clone());
    ///     async move { client.fetch_query(&options).await }
    /// });
    /// test.run_until_idle();
    /// let cancelled = test.block_on(client.cancel_queries(key!("slow")));
    /// assert_eq!(cancelled, 1);
    /// assert!(matches!(test.block_on(waiter), Err(QueryError::Cancelled)));
    /// # }
    /// ```
    pub fn with_context<K, F, Fut>(key: K, query_fn: F) -> Self
    where
        K: Into<QueryKey>,
        F: Fn(QueryContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        Self::build(key.into(), Arc::new(move |cx| Box::pin(query_fn(cx))))
    }

    /// Options for `key` fetched by `behavior` (see [`Behavior`]); the query function, never
    /// called, fetches with no data to start from.
    pub(crate) fn with_behavior(key: QueryKey, behavior: Behavior<T, E>) -> Self {
        let cold = behavior.clone();
        let query_fn: QueryFn<T, E> = Arc::new(move |cx| cold(None)(cx));
        let mut options = Self::build(key, query_fn);
        Arc::make_mut(&mut options.inner).behavior = Some(behavior);
        options
    }

    fn build(key: QueryKey, query_fn: QueryFn<T, E>) -> Self {
        Self {
            inner: Arc::new(OptionsInner {
                key,
                query_fn,
                stale_time: None,
                gc_time: None,
                persist_max_age: None,
                refetch_interval: None,
                retry: None,
                retry_delay: None,
                retry_if: None,
                enabled: true,
                cancel_when_unobserved: false,
                on_success: None,
                on_error: None,
                on_settled: None,
                placeholder: None,
                initial_data: None,
                initial_data_updated_at: None,
                meta: None,
                codec: None,
                behavior: None,
                fetch_tag: FetchTag::Refetch,
            }),
        }
    }

    pub(super) fn edit(mut self, f: impl FnOnce(&mut OptionsInner<T, E>)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// How long fetched data counts as fresh. Default: the client's (itself 0: always stale).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("rates"), || async { Ok::<_, String>(1.1f64) })
    ///     .stale_time(Duration::from_secs(60));
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// test.advance(Duration::from_secs(59));
    /// test.block_on(client.fetch_query(&options)).unwrap(); // fresh: no fetch
    /// assert_eq!(client.cache_stats().fetches, 1);
    /// test.advance(Duration::from_secs(1));
    /// test.block_on(client.fetch_query(&options)).unwrap(); // stale: returned, refetched behind
    /// test.run_until_idle();
    /// assert_eq!(client.cache_stats().fetches, 2);
    /// # }
    /// ```
    #[must_use]
    pub fn stale_time(self, duration: Duration) -> Self {
        self.edit(|o| o.stale_time = Some(duration))
    }

    /// How long an unobserved query stays cached. Default: the client's (itself 5 minutes).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("search", "rust"), || async { Ok::<_, String>(vec![1, 2]) })
    ///     .gc_time(Duration::from_secs(10));
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// test.advance(Duration::from_secs(11)); // unobserved for longer than gc_time
    /// assert!(client.find(key!("search", "rust")).is_none());
    /// # }
    /// ```
    #[must_use]
    pub fn gc_time(self, duration: Duration) -> Self {
        self.edit(|o| o.gc_time = Some(duration))
    }

    /// Refetch this often while the query has an enabled observer. Default: never.
    ///
    /// `Duration::ZERO` means never (as a falsy interval does in TanStack Query), and so does a
    /// period too long to represent. A tick that falls while the previous fetch is still
    /// running is skipped, not replayed, so polling never fires fetches in a burst.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("status"), || async { Ok::<_, String>("up") })
    ///     .refetch_interval(Duration::from_secs(30));
    /// let subscription = client.watch(&options).subscribe(|_| {}); // polling runs while observed
    /// test.advance(Duration::from_secs(90));
    /// assert_eq!(client.cache_stats().fetches, 4); // at 0, 30, 60 and 90 s
    /// drop(subscription);
    /// test.advance(Duration::from_secs(90));
    /// assert_eq!(client.cache_stats().fetches, 4);
    /// # }
    /// ```
    #[must_use]
    pub fn refetch_interval(self, interval: Duration) -> Self {
        self.edit(|o| o.refetch_interval = Some(interval))
    }

    /// Whether observers fetch automatically. Default: `true`. `fetch_query` and an
    /// observer's explicit `refetch` fetch either way.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let user_id: Option<u32> = None; // not known yet
    /// let options = QueryOptions::new(key!("user", "me"), || async { Ok::<_, String>("Ada") })
    ///     .enabled(user_id.is_some());
    /// let _subscription = client.watch(&options).subscribe(|_| {});
    /// test.run_until_idle();
    /// assert_eq!(client.cache_stats().fetches, 0);
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), "Ada"); // explicit: fetches
    /// # }
    /// ```
    #[must_use]
    pub fn enabled(self, enabled: bool) -> Self {
        self.edit(|o| o.enabled = enabled)
    }

    /// Cancels a fetch started with these options once nobody wants its result: every caller
    /// awaiting it has dropped its future and the query has no observer. Default: `false`, a
    /// fetch runs to completion and is cached even if every caller has gone.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let runtime = test.runtime();
    /// let options = QueryOptions::new(key!("search", "r"), move || {
    ///     let sleep = runtime.sleep(Duration::from_secs(5));
    ///     async move { sleep.await; Ok::<_, String>(vec!["rust"]) }
    /// })
    /// .cancel_when_unobserved(true);
    /// let request = test.runtime().spawn_with_handle({
    ///     let (client, options) = (client.clone(), options.clone());
    ///     async move { client.fetch_query(&options).await }
    /// });
    /// test.run_until_idle();
    /// drop(request); // the user typed another letter: nobody wants this result any more
    /// test.advance(Duration::from_secs(5));
    /// assert_eq!(client.get_query_data::<Vec<&str>>(key!("search", "r")).unwrap(), None);
    /// # }
    /// ```
    #[must_use]
    pub fn cancel_when_unobserved(self, cancel: bool) -> Self {
        self.edit(|o| o.cancel_when_unobserved = cancel)
    }

    /// Free-form information handed to the query function in its
    /// [`QueryContext::meta`] (TanStack's `meta`), e.g. for logging or error messages. It
    /// replaces, as a whole, the meta of the defaults registered for a prefix of the key.
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
    /// let options = QueryOptions::with_context(key!("invoices"), |cx| async move {
    ///     let source = cx.meta.get("source").and_then(|v| v.as_str()).unwrap_or("?");
    ///     Ok::<_, String>(format!("from {source}"))
    /// })
    /// .meta(serde_json::json!({ "source": "billing" }));
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), "from billing");
    /// # }
    /// ```
    #[must_use]
    pub fn meta(self, meta: impl Into<Meta>) -> Self {
        self.edit(|o| o.meta = Some(meta.into()))
    }

    /// The key.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryOptions, key};
    ///
    /// let options = QueryOptions::new(key!("user", 42), || async { Ok::<_, String>(()) });
    /// assert_eq!(options.key(), &key!("user", 42));
    /// # }
    /// ```
    pub fn key(&self) -> &QueryKey {
        &self.inner.key
    }

    /// Whether observers fetch automatically.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryOptions, key};
    ///
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1) });
    /// assert!(options.is_enabled());
    /// assert!(!options.enabled(false).is_enabled());
    /// # }
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The refetch interval, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryOptions, key};
    ///
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1) });
    /// assert_eq!(options.refetch_interval_value(), None);
    /// let polled = options.refetch_interval(Duration::from_secs(5));
    /// assert_eq!(polled.refetch_interval_value(), Some(Duration::from_secs(5)));
    /// # }
    /// ```
    pub fn refetch_interval_value(&self) -> Option<Duration> {
        self.inner.refetch_interval
    }
}

impl<T, E> Clone for QueryOptions<T, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T: Clone, E> Clone for OptionsInner<T, E> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            query_fn: self.query_fn.clone(),
            stale_time: self.stale_time,
            gc_time: self.gc_time,
            persist_max_age: self.persist_max_age,
            refetch_interval: self.refetch_interval,
            retry: self.retry,
            retry_delay: self.retry_delay.clone(),
            retry_if: self.retry_if.clone(),
            enabled: self.enabled,
            cancel_when_unobserved: self.cancel_when_unobserved,
            on_success: self.on_success.clone(),
            on_error: self.on_error.clone(),
            on_settled: self.on_settled.clone(),
            placeholder: self.placeholder.clone(),
            initial_data: self.initial_data.clone(),
            initial_data_updated_at: self.initial_data_updated_at,
            meta: self.meta.clone(),
            codec: self.codec,
            behavior: self.behavior.clone(),
            fetch_tag: self.fetch_tag,
        }
    }
}

impl<T, E> fmt::Debug for QueryOptions<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.inner;
        f.debug_struct("QueryOptions")
            .field("key", &o.key)
            .field("stale_time", &o.stale_time)
            .field("gc_time", &o.gc_time)
            .field("refetch_interval", &o.refetch_interval)
            .field("retry", &o.retry)
            .field("enabled", &o.enabled)
            .field("persisted", &o.codec.is_some())
            .field("persist_max_age", &o.persist_max_age)
            .finish_non_exhaustive()
    }
}
