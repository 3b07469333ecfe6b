//! Data a query shows before its first fetch: placeholder data (shown, never stored) and initial
//! data (stored as if fetched), as values or functions.

use std::fmt;
use std::sync::Arc;

use super::QueryOptions;

/// Initial data: a value, or a function computing it.
pub(crate) enum InitialData<T> {
    Value(T),
    Fn(Arc<dyn Fn() -> T + Send + Sync>),
}

/// Placeholder data: a value, or a function of the data the observer showed last.
pub(crate) enum Placeholder<T> {
    Value(T),
    Fn(PlaceholderFn<T>),
}

/// See [`QueryOptions::placeholder_data_fn`].
pub(crate) type PlaceholderFn<T> = Arc<dyn Fn(Option<&T>) -> Option<T> + Send + Sync>;

impl<T: Clone> Clone for Placeholder<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Value(v) => Self::Value(v.clone()),
            Self::Fn(f) => Self::Fn(f.clone()),
        }
    }
}

impl<T: Clone> Clone for InitialData<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Value(v) => Self::Value(v.clone()),
            Self::Fn(f) => Self::Fn(f.clone()),
        }
    }
}

impl<T, E> QueryOptions<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Shown to observers while the query has no data (idle or pending), with
    /// [`is_placeholder`](crate::QueryState::is_placeholder) set; never cached as fetched data
    /// and never persisted. Default: none. Replaces a
    /// [`placeholder_data_fn`](Self::placeholder_data_fn).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("posts"), || async { Ok::<_, String>(vec!["first post"]) })
    ///     .placeholder_data(vec![]);
    /// let observer = client.watch(&options);
    /// let _subscription = observer.subscribe(|_| {});
    /// let state = observer.result(); // the fetch has not run yet
    /// assert!(state.is_placeholder && state.data == Some(vec![]));
    /// test.run_until_idle();
    /// assert_eq!(observer.result().data, Some(vec!["first post"]));
    /// assert_eq!(client.get_query_data::<Vec<&str>>(key!("posts")).unwrap(), Some(vec!["first post"]));
    /// # }
    /// ```
    #[must_use]
    pub fn placeholder_data(self, data: T) -> Self {
        self.edit(|o| o.placeholder = Some(Placeholder::Value(data)))
    }

    /// As [`placeholder_data`](Self::placeholder_data), computed by `make` from the data the
    /// observer showed last: the data of the last query it showed real data of, which after
    /// [`QueryObserver::set_options`](crate::QueryObserver::set_options) moved it to another
    /// key is the previous key's (TanStack's `placeholderData: (previousData) => ...`).
    /// `make` gets `None` when the observer has shown no data yet, and returns `None` to show
    /// no placeholder. It runs with no lock held, only when the previous data or the options
    /// change, not on every state; a panic in it shows no placeholder (and is logged).
    /// Replaces a [`placeholder_data`](Self::placeholder_data) value.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let page = |n: u32| {
    ///     QueryOptions::new(key!("page", n), move || async move { Ok::<_, String>(n * 10) })
    ///         // The previous page, marked, while the next one loads; 0 before any page.
    ///         .placeholder_data_fn(|previous: Option<&u32>| Some(previous.map_or(0, |p| p + 1)))
    /// };
    /// let observer = client.watch(&page(1));
    /// let _subscription = observer.subscribe(|_| {});
    /// assert_eq!(observer.result().data, Some(0));
    /// test.run_until_idle();
    /// assert_eq!(observer.result().data, Some(10));
    ///
    /// observer.set_options(page(2));
    /// let loading = observer.result();
    /// assert!(loading.is_placeholder && loading.data == Some(11));
    /// test.run_until_idle();
    /// assert_eq!(observer.result().data, Some(20));
    /// # }
    /// ```
    #[must_use]
    pub fn placeholder_data_fn(
        self,
        make: impl Fn(Option<&T>) -> Option<T> + Send + Sync + 'static,
    ) -> Self {
        self.edit(|o| o.placeholder = Some(Placeholder::Fn(Arc::new(make))))
    }

    /// Shows the data the observer showed last as a placeholder while the query has none
    /// (TanStack's `placeholderData: keepPreviousData`): paging with
    /// [`QueryObserver::set_options`](crate::QueryObserver::set_options) from page 1 to page 2
    /// keeps showing page 1, with `is_placeholder` set, until page 2 arrives. The same as
    /// `placeholder_data_fn(|previous| previous.cloned())`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let page = |n: u32| {
    ///     QueryOptions::new(key!("todos", n), move || async move {
    ///         Ok::<_, String>(format!("todos of page {n}"))
    ///     })
    ///     .keep_previous_data()
    /// };
    /// let observer = client.watch(&page(1));
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle();
    ///
    /// observer.set_options(page(2));
    /// let state = observer.result();
    /// assert!(state.is_placeholder);
    /// assert_eq!(state.data.as_deref(), Some("todos of page 1"));
    /// test.run_until_idle();
    /// assert_eq!(observer.result().data.as_deref(), Some("todos of page 2"));
    /// # }
    /// ```
    #[must_use]
    pub fn keep_previous_data(self) -> Self {
        self.placeholder_data_fn(|previous| previous.cloned())
    }

    /// Seeds the cache with `data` when the query has none, without a fetch: unlike
    /// placeholder data it is stored, as if fetched at
    /// [`initial_data_updated_at`](Self::initial_data_updated_at) (default: when it is seeded),
    /// and is fresh or stale by that time. It never replaces data the query already has
    /// (fetched, set, or restored from L2). Default: none.
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
    /// let options = QueryOptions::new(key!("settings"), || async { Ok::<_, String>("fetched") })
    ///     .initial_data("defaults")
    ///     .stale_time(Duration::from_secs(60));
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), "defaults", "no fetch");
    /// # }
    /// ```
    #[must_use]
    pub fn initial_data(self, data: T) -> Self {
        self.edit(|o| o.initial_data = Some(InitialData::Value(data)))
    }

    /// As [`initial_data`](Self::initial_data), computed by `make` when the query is seeded
    /// (only then). A panic in `make` seeds nothing.
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
    /// client.set_query_data(key!("todos"), vec![(1u32, "write".to_string()), (2, "ship".to_string())]).unwrap();
    /// // Seed one todo's query from the list already cached.
    /// let list = client.clone();
    /// let todo = QueryOptions::new(key!("todo", 2), || async { Ok::<_, String>("fetched".to_string()) })
    ///     .initial_data_fn(move || {
    ///         let todos = list.get_query_data::<Vec<(u32, String)>>(key!("todos")).unwrap().unwrap_or_default();
    ///         todos.into_iter().find(|(id, _)| *id == 2).map(|(_, title)| title).unwrap_or_default()
    ///     })
    ///     .stale_time(Duration::from_secs(60));
    /// assert_eq!(test.block_on(client.fetch_query(&todo)).unwrap(), "ship");
    /// # }
    /// ```
    #[must_use]
    pub fn initial_data_fn(self, make: impl Fn() -> T + Send + Sync + 'static) -> Self {
        self.edit(|o| o.initial_data = Some(InitialData::Fn(Arc::new(make))))
    }

    /// When the initial data was current (wall clock), which decides whether it is fresh or
    /// stale. Default: the moment it is seeded.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::{Duration, SystemTime};
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("config"), || async { Ok::<_, String>("fetched") })
    ///     .initial_data("bundled")
    ///     .initial_data_updated_at(SystemTime::now() - Duration::from_secs(3600)) // built an hour ago
    ///     .stale_time(Duration::from_secs(60));
    /// // Seeded, but already stale: returned, and revalidated in the background.
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), "bundled");
    /// test.run_until_idle();
    /// assert_eq!(client.get_query_data::<&str>(key!("config")).unwrap(), Some("fetched"));
    /// # }
    /// ```
    #[must_use]
    pub fn initial_data_updated_at(self, at: std::time::SystemTime) -> Self {
        self.edit(|o| o.initial_data_updated_at = Some(at))
    }
}
