//! [`QueryFilter`]: which queries a bulk operation applies to; [`RefetchType`]: which of the
//! invalidated queries fetch again.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::error::panic_message;
use crate::inspect::QueryInfo;
use crate::key::QueryKey;
use crate::state::FetchStatus;

type Predicate = Arc<dyn Fn(&QueryInfo) -> bool + Send + Sync>;

/// Which queries have observers (TanStack's filter `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Activity {
    #[default]
    All,
    Active,
    Inactive,
}

/// Chooses a set of cached queries: by key (a prefix, or one exact key), by activity (active
/// queries have an enabled observer), staleness, fetch status, and any predicate on the
/// query's [`QueryInfo`]. Every condition set must hold.
///
/// Every client method that acts on a set of queries takes `impl Into<QueryFilter>`, and any
/// key converts into a prefix filter, so `client.invalidate_queries(key!("todos"), true)`
/// reads as before. The empty key `()` (or [`QueryFilter::all`]) matches every query.
///
/// The conditions are TanStack Query's query filters: `queryKey` with `exact`, `type`
/// (`active`, `inactive`, `all`), `stale`, `fetchStatus` and `predicate`.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// client.set_query_data(key!("todos"), 2).unwrap();
/// client.set_query_data(key!("todos", 1), 1).unwrap();
/// client.set_query_data(key!("users", 1), 7).unwrap();
///
/// assert_eq!(client.find_all(key!("todos")).len(), 2); // a prefix
/// assert_eq!(client.find_all(QueryFilter::exact(key!("todos"))).len(), 1);
/// assert_eq!(client.find_all(QueryFilter::all().inactive()).len(), 3); // no observers
/// let numbered = QueryFilter::all().predicate(|q| q.key.len() == 2);
/// assert_eq!(client.remove_queries(numbered), 2);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct QueryFilter {
    key: Option<QueryKey>,
    exact: bool,
    activity: Activity,
    stale: Option<bool>,
    fetch_status: Option<FetchStatus>,
    predicate: Option<Predicate>,
}

impl QueryFilter {
    /// Every query.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("a"), 1u32).unwrap();
    /// client.set_query_data(key!("b", 1), 2u32).unwrap();
    /// assert_eq!(client.find_all(QueryFilter::all()).len(), 2);
    /// assert_eq!(client.find_all(()).len(), 2); // the same: the empty key
    /// # }
    /// ```
    pub fn all() -> Self {
        Self::default()
    }

    /// The queries whose key starts with `prefix` (a key is a prefix of itself).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos"), 0u32).unwrap();
    /// client.set_query_data(key!("todos", 1), 1u32).unwrap();
    /// client.set_query_data(key!("users", 1), 2u32).unwrap();
    /// assert_eq!(client.find_all(QueryFilter::prefix(key!("todos"))).len(), 2);
    /// assert_eq!(client.find_all(key!("todos")).len(), 2); // a key converts to a prefix filter
    /// # }
    /// ```
    pub fn prefix(prefix: impl Into<QueryKey>) -> Self {
        Self { key: Some(prefix.into()), ..Self::default() }
    }

    /// The query with exactly this key, if it is cached.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos"), 0u32).unwrap();
    /// client.set_query_data(key!("todos", 1), 1u32).unwrap();
    /// let listed = client.find_all(QueryFilter::exact(key!("todos")));
    /// assert_eq!(listed.len(), 1);
    /// assert_eq!(listed[0].key, key!("todos"));
    /// # }
    /// ```
    pub fn exact(key: impl Into<QueryKey>) -> Self {
        Self { key: Some(key.into()), exact: true, ..Self::default() }
    }

    /// Only queries with at least one enabled observer.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let shown = QueryOptions::new(key!("shown"), || async { Ok::<_, String>(1u32) });
    /// let _subscription = client.watch(&shown).subscribe(|_| {});
    /// client.set_query_data(key!("hidden"), 2u32).unwrap();
    /// test.run_until_idle();
    /// let active = client.find_all(QueryFilter::all().active());
    /// assert_eq!(active.iter().map(|q| q.key.clone()).collect::<Vec<_>>(), [key!("shown")]);
    /// # }
    /// ```
    #[must_use]
    pub fn active(mut self) -> Self {
        self.activity = Activity::Active;
        self
    }

    /// Only queries with no enabled observer.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let shown = QueryOptions::new(key!("shown"), || async { Ok::<_, String>(1u32) });
    /// let _subscription = client.watch(&shown).subscribe(|_| {});
    /// client.set_query_data(key!("hidden"), 2u32).unwrap();
    /// test.run_until_idle();
    /// // Free memory held by what no screen shows.
    /// assert_eq!(client.remove_queries(QueryFilter::all().inactive()), 1);
    /// assert_eq!(client.cached_keys(), [key!("shown")]);
    /// # }
    /// ```
    #[must_use]
    pub fn inactive(mut self) -> Self {
        self.activity = Activity::Inactive;
        self
    }

    /// Only stale queries (`true`) or only fresh ones (`false`); see [`QueryInfo::is_stale`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let config = QueryClientConfig::default().stale_time(Duration::from_secs(60));
    /// let client = QueryClient::with_runtime(test.runtime(), config);
    /// client.set_query_data(key!("fresh"), 1u32).unwrap();
    /// client.set_query_data(key!("old"), 2u32).unwrap();
    /// test.block_on(client.invalidate_queries(key!("old"), false));
    /// let stale = client.find_all(QueryFilter::all().stale(true));
    /// assert_eq!(stale.iter().map(|q| q.key.clone()).collect::<Vec<_>>(), [key!("old")]);
    /// assert_eq!(client.find_all(QueryFilter::all().stale(false)).len(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn stale(mut self, stale: bool) -> Self {
        self.stale = Some(stale);
        self
    }

    /// Only queries in this fetch status.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{FetchStatus, QueryClient, QueryClientConfig, QueryFilter, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("feed"), 1u32).unwrap();
    /// client.set_query_data(key!("news"), 2u32).unwrap();
    /// client.pause(key!("feed"));
    /// let paused = client.find_all(QueryFilter::all().fetch_status(FetchStatus::Paused));
    /// assert_eq!(paused.len(), 1);
    /// assert_eq!(paused[0].key, key!("feed"));
    /// # }
    /// ```
    #[must_use]
    pub fn fetch_status(mut self, status: FetchStatus) -> Self {
        self.fetch_status = Some(status);
        self
    }

    /// Only queries with a fetch in flight: `fetch_status(FetchStatus::Fetching)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("slow"), || async { Ok::<_, String>(1u32) });
    /// let _subscription = client.watch(&options).subscribe(|_| {}); // starts a fetch
    /// client.set_query_data(key!("idle"), 2u32).unwrap();
    /// assert_eq!(client.find_all(QueryFilter::all().fetching()).len(), 1);
    /// test.run_until_idle();
    /// assert!(client.find_all(QueryFilter::all().fetching()).is_empty());
    /// # }
    /// ```
    #[must_use]
    pub fn fetching(self) -> Self {
        self.fetch_status(FetchStatus::Fetching)
    }

    /// Only queries for which `predicate` returns `true`. A panic in it is logged and counts
    /// as `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("user", 1), "Ada".to_string()).unwrap();
    /// client.set_query_data(key!("user", 2), 7u32).unwrap();
    /// // Choose by anything a `QueryInfo` shows, here the data type.
    /// let strings = QueryFilter::prefix(key!("user")).predicate(|q| q.type_name.ends_with("String"));
    /// assert_eq!(client.remove_queries(strings), 1);
    /// assert_eq!(client.cached_keys(), [key!("user", 2)]);
    /// # }
    /// ```
    #[must_use]
    pub fn predicate(
        mut self,
        predicate: impl Fn(&QueryInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// The key condition, if any: the key and whether it must match exactly.
    pub(crate) fn key(&self) -> Option<(&QueryKey, bool)> {
        self.key.as_ref().map(|k| (k, self.exact))
    }

    /// Whether a condition beyond the key needs the query's [`QueryInfo`].
    pub(crate) fn needs_info(&self) -> bool {
        self.activity != Activity::All
            || self.stale.is_some()
            || self.fetch_status.is_some()
            || self.predicate.is_some()
    }

    /// Whether the conditions beyond the key hold for `info`.
    pub(crate) fn matches(&self, info: &QueryInfo) -> bool {
        let activity = match self.activity {
            Activity::All => true,
            Activity::Active => info.is_active(),
            Activity::Inactive => !info.is_active(),
        };
        activity
            && self.stale.is_none_or(|stale| info.is_stale == stale)
            && self.fetch_status.is_none_or(|status| info.fetch_status == status)
            && self.predicate.as_ref().is_none_or(|p| {
                std::panic::catch_unwind(AssertUnwindSafe(|| p(info))).unwrap_or_else(|payload| {
                    tracing::error!(
                        key = %info.key,
                        "query filter predicate panicked: {}",
                        panic_message(&*payload)
                    );
                    false
                })
            })
    }
}

impl<K: Into<QueryKey>> From<K> for QueryFilter {
    /// A key as a filter is a prefix filter.
    fn from(prefix: K) -> Self {
        Self::prefix(prefix)
    }
}

impl fmt::Debug for QueryFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryFilter")
            .field("key", &self.key)
            .field("exact", &self.exact)
            .field("activity", &self.activity)
            .field("stale", &self.stale)
            .field("fetch_status", &self.fetch_status)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

/// Which invalidated queries [`QueryClient::invalidate_queries`](crate::QueryClient::invalidate_queries)
/// fetches again at once (TanStack's `refetchType`). A `bool` converts: `true` is
/// [`Active`](Self::Active), `false` is [`None`](Self::None).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RefetchType {
    /// Queries with an enabled observer (the default).
    #[default]
    Active,
    /// Queries without one, that have been used with options (so their function is known).
    Inactive,
    /// Both.
    All,
    /// None: only mark them stale; the next read or observer refetches.
    None,
}

impl RefetchType {
    /// Whether a query that is `active` (or not) is refetched.
    pub(crate) fn includes(self, active: bool) -> bool {
        match self {
            Self::Active => active,
            Self::Inactive => !active,
            Self::All => true,
            Self::None => false,
        }
    }
}

impl From<bool> for RefetchType {
    fn from(refetch: bool) -> Self {
        if refetch { Self::Active } else { Self::None }
    }
}
