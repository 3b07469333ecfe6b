//! Query state: statuses, data, errors and timestamps, as observers and callers see them
//! ([`QueryStatus`], [`FetchStatus`], [`QueryState`]). The stored form, `RawState`, is in `raw`.

use std::time::SystemTime;

use crate::error::QueryError;

mod raw;

pub(crate) use raw::{Failure, RawState, next_data_id};

/// The primary status of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum QueryStatus {
    /// Never fetched, or reset.
    #[default]
    Idle,
    /// The first fetch is running; there is no data yet.
    Pending,
    /// Data is available.
    Success,
    /// The last fetch failed and there is an error.
    Error,
}

/// Whether a query is fetching right now, orthogonal to [`QueryStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FetchStatus {
    /// Not fetching.
    #[default]
    Idle,
    /// A fetch is in flight.
    Fetching,
    /// Background fetching is paused ([`crate::QueryClient::pause`]).
    Paused,
}

impl QueryStatus {
    /// The seed's name for the status (`"SUCCESS"`), as written to persistent storage.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryStatus;
    ///
    /// assert_eq!(QueryStatus::Success.name(), "SUCCESS");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Error => "ERROR",
        }
    }

    /// Parses [`name`](Self::name).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryStatus;
    ///
    /// assert_eq!(QueryStatus::from_name("ERROR"), Some(QueryStatus::Error));
    /// assert_eq!(QueryStatus::from_name("error"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "IDLE" => Self::Idle,
            "PENDING" => Self::Pending,
            "SUCCESS" => Self::Success,
            "ERROR" => Self::Error,
            _ => return None,
        })
    }
}

impl FetchStatus {
    /// The seed's name for the fetch status (`"IDLE"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::FetchStatus;
    ///
    /// assert_eq!(FetchStatus::Fetching.name(), "FETCHING");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Fetching => "FETCHING",
            Self::Paused => "PAUSED",
        }
    }

    /// Parses [`name`](Self::name).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::FetchStatus;
    ///
    /// assert_eq!(FetchStatus::from_name("PAUSED"), Some(FetchStatus::Paused));
    /// assert_eq!(FetchStatus::from_name("?"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "IDLE" => Self::Idle,
            "FETCHING" => Self::Fetching,
            "PAUSED" => Self::Paused,
            _ => return None,
        })
    }
}

/// A snapshot of one query's state.
///
/// "No data" is `data: None`, a state rather than a value, so `Option<T>` and `()` are
/// cacheable like any other type.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{QueryState, QueryStatus};
///
/// let state: QueryState<u32, std::io::Error> = QueryState::default();
/// assert_eq!(state.status, QueryStatus::Idle);
/// assert!(state.is_idle() && !state.has_data() && !state.is_fetching());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct QueryState<T, E> {
    /// The primary status.
    pub status: QueryStatus,
    /// Whether a fetch is in flight (or background fetching is paused).
    pub fetch_status: FetchStatus,
    /// The data, if any.
    pub data: Option<T>,
    /// The error of the last failed fetch, if the query is in [`QueryStatus::Error`].
    pub error: Option<QueryError<E>>,
    /// When `data` was fetched or set (wall clock). Invalidation keeps it (see
    /// [`is_invalidated`](Self::is_invalidated)); the L2 record of an invalidated query says
    /// `0.0`, as the Python library's does, and such a record restores as invalidated.
    pub data_updated_at: Option<SystemTime>,
    /// When `error` was recorded (wall clock).
    pub error_updated_at: Option<SystemTime>,
    /// Failed attempts of the current or last fetch; reset to 0 on success.
    pub fetch_failure_count: u32,
    /// The error of the last failed attempt.
    pub fetch_failure_reason: Option<QueryError<E>>,
    /// `data` is the query's placeholder, shown while the first fetch is pending; it was not
    /// fetched and is never stored.
    pub is_placeholder: bool,
    /// The data was invalidated and counts as stale until it is fetched or set again.
    pub is_invalidated: bool,
    /// How many times data was stored (fetched, set, hydrated, or from initial data).
    pub data_update_count: u32,
    /// How many times a fetch failed for good (after its retries).
    pub error_update_count: u32,
}

impl<T, E> QueryState<T, E> {
    /// Never fetched (or reset).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryState;
    ///
    /// let state: QueryState<u32, String> = QueryState::default();
    /// assert!(state.is_idle());
    /// ```
    pub fn is_idle(&self) -> bool {
        self.status == QueryStatus::Idle
    }
    /// First fetch in flight, no data yet.
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
    /// let observer = client.watch(&options);
    /// let _subscription = observer.subscribe(|_| {});
    /// assert!(observer.result().is_pending()); // first fetch started, no data yet
    /// test.run_until_idle();
    /// assert!(observer.result().is_success());
    /// # }
    /// ```
    pub fn is_pending(&self) -> bool {
        self.status == QueryStatus::Pending
    }
    /// Data available.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("n"), 1u32).unwrap();
    /// assert!(client.get_query_state::<u32, String>(key!("n")).unwrap().unwrap().is_success());
    /// # }
    /// ```
    pub fn is_success(&self) -> bool {
        self.status == QueryStatus::Success
    }
    /// Last fetch failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Err::<u32, _>("no".to_string()) }).retry(0);
    /// let _ = test.block_on(client.fetch_query(&options));
    /// let state = client.get_query_state::<u32, String>(key!("n")).unwrap().unwrap();
    /// assert!(state.is_error() && state.error.is_some());
    /// # }
    /// ```
    pub fn is_error(&self) -> bool {
        self.status == QueryStatus::Error
    }
    /// A fetch is in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("n"), 1u32).unwrap();
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(2u32) });
    /// let observer = client.watch(&options);
    /// let _subscription = observer.subscribe(|_| {}); // stale data: refetched in the background
    /// let state = observer.result();
    /// assert!(state.is_fetching() && state.is_success()); // data shown while it refetches
    /// # }
    /// ```
    pub fn is_fetching(&self) -> bool {
        self.fetch_status == FetchStatus::Fetching
    }
    /// Background fetching is paused.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("n"), 1u32).unwrap();
    /// client.pause(key!("n"));
    /// assert!(client.get_query_state::<u32, String>(key!("n")).unwrap().unwrap().is_paused());
    /// # }
    /// ```
    pub fn is_paused(&self) -> bool {
        self.fetch_status == FetchStatus::Paused
    }
    /// First fetch in flight: pending and fetching.
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
    /// let observer = client.watch(&options);
    /// let _subscription = observer.subscribe(|_| {});
    /// assert!(observer.result().is_loading()); // show a spinner
    /// test.run_until_idle();
    /// assert!(!observer.result().is_loading());
    /// # }
    /// ```
    pub fn is_loading(&self) -> bool {
        self.is_pending() && self.is_fetching()
    }
    /// Data (fetched, set or placeholder) is available.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryState;
    ///
    /// let mut state: QueryState<u32, String> = QueryState::default();
    /// assert!(!state.has_data());
    /// state.data = Some(1);
    /// assert!(state.has_data());
    /// ```
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }

    /// Whether the data is stale at `now` (wall clock) for `stale_time`: there is no data, it
    /// was invalidated, it is a placeholder, or it was updated `stale_time` or longer ago (a
    /// timestamp in the future counts as stale). Cheap: no lock, no clock read.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use pystackquery_core::QueryState;
    ///
    /// let mut state: QueryState<u32, String> = QueryState::default();
    /// let now = SystemTime::now();
    /// assert!(state.is_stale(now, Duration::from_secs(60)), "no data");
    /// state.data = Some(1);
    /// state.data_updated_at = Some(now - Duration::from_secs(10));
    /// assert!(!state.is_stale(now, Duration::from_secs(60)));
    /// assert!(state.is_stale(now, Duration::from_secs(5)));
    /// ```
    pub fn is_stale(&self, now: SystemTime, stale_time: std::time::Duration) -> bool {
        if self.data.is_none() || self.is_invalidated || self.is_placeholder {
            return true;
        }
        match self.data_updated_at.map(|at| now.duration_since(at)) {
            Some(Ok(age)) => age >= stale_time,
            _ => true,
        }
    }

    /// Transforms the data, keeping everything else.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryState;
    ///
    /// let mut state: QueryState<Vec<u32>, String> = QueryState::default();
    /// state.data = Some(vec![1, 2, 3]);
    /// let count = state.map(|items| items.len());
    /// assert_eq!(count.data, Some(3));
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> QueryState<U, E> {
        QueryState {
            status: self.status,
            fetch_status: self.fetch_status,
            data: self.data.map(f),
            error: self.error,
            data_updated_at: self.data_updated_at,
            error_updated_at: self.error_updated_at,
            fetch_failure_count: self.fetch_failure_count,
            fetch_failure_reason: self.fetch_failure_reason,
            is_placeholder: self.is_placeholder,
            is_invalidated: self.is_invalidated,
            data_update_count: self.data_update_count,
            error_update_count: self.error_update_count,
        }
    }
}

impl<T, E> Default for QueryState<T, E> {
    fn default() -> Self {
        Self {
            status: QueryStatus::Idle,
            fetch_status: FetchStatus::Idle,
            data: None,
            error: None,
            data_updated_at: None,
            error_updated_at: None,
            fetch_failure_count: 0,
            fetch_failure_reason: None,
            is_placeholder: false,
            is_invalidated: false,
            data_update_count: 0,
            error_update_count: 0,
        }
    }
}

impl<T: Clone, E> Clone for QueryState<T, E> {
    fn clone(&self) -> Self {
        Self {
            status: self.status,
            fetch_status: self.fetch_status,
            data: self.data.clone(),
            error: self.error.clone(),
            data_updated_at: self.data_updated_at,
            error_updated_at: self.error_updated_at,
            fetch_failure_count: self.fetch_failure_count,
            fetch_failure_reason: self.fetch_failure_reason.clone(),
            is_placeholder: self.is_placeholder,
            is_invalidated: self.is_invalidated,
            data_update_count: self.data_update_count,
            error_update_count: self.error_update_count,
        }
    }
}
