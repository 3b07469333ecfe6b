//! [`QueryInfo`]: what can be read about a cached query without knowing its data type, for
//! filters, dashboards and `/debug/cache` endpoints.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::key::QueryKey;
use crate::state::{FetchStatus, QueryStatus};
use crate::storage::record::unix_seconds;

/// A snapshot of one cached query, whatever its data type: its key, the name of its data
/// type, its statuses, timestamps, staleness, observers and garbage-collection deadline.
///
/// Returned by [`QueryClient::find_all`](crate::QueryClient::find_all) and
/// [`QueryClient::find`](crate::QueryClient::find), and passed to
/// [`QueryFilter::predicate`](crate::QueryFilter::predicate). It serializes (with `serde`) as
/// a flat JSON object: the key as its storage string, statuses by name, wall-clock times as
/// Unix seconds and durations as seconds, ready for a debug endpoint.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, QueryStatus, key};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// client.set_query_data(key!("user", 1), "Ada".to_string()).unwrap();
///
/// let info = client.find(key!("user", 1)).unwrap();
/// assert_eq!(info.status, QueryStatus::Success);
/// assert_eq!(info.type_name, "alloc::string::String");
/// assert_eq!(info.observers, 0);
/// let json = serde_json::to_value(&info).unwrap();
/// assert_eq!(json["key"], "('user', 1)");
/// assert_eq!(json["status"], "SUCCESS");
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct QueryInfo {
    /// The query's key.
    pub key: QueryKey,
    /// The data type's name, as [`std::any::type_name`] gives it.
    pub type_name: &'static str,
    /// The primary status.
    pub status: QueryStatus,
    /// Whether a fetch is in flight, or background fetching is paused.
    pub fetch_status: FetchStatus,
    /// Whether the query holds data.
    pub has_data: bool,
    /// When the data was fetched or set (wall clock).
    pub data_updated_at: Option<SystemTime>,
    /// When the last error was recorded (wall clock).
    pub error_updated_at: Option<SystemTime>,
    /// The data's age: how long ago it was fetched or set (`None` without data).
    pub age: Option<Duration>,
    /// Whether the data is stale: no data, invalidated, or older than the stale time of the
    /// options the query was last used with (or of its defaults, see
    /// [`QueryClient::set_query_defaults`](crate::QueryClient::set_query_defaults)).
    pub is_stale: bool,
    /// Whether the query was invalidated since its data was last stored.
    pub is_invalidated: bool,
    /// Observers attached to the query, enabled or not.
    pub observers: u32,
    /// Enabled observers attached: the query is *active* while this is non-zero.
    pub active_observers: u32,
    /// How long until garbage collection removes the query, if it is scheduled (an observed
    /// or fetching query has none).
    pub gc_in: Option<Duration>,
    /// Whether the query was used with [`persist`](crate::QueryOptions::persist)ed options:
    /// it writes its states to the L2 tier (when the client has one) and can be dehydrated
    /// ([`QueryClient::dehydrate`](crate::QueryClient::dehydrate)).
    pub persisted: bool,
    /// How many times data was stored.
    pub data_update_count: u32,
    /// How many times a fetch ended in error.
    pub error_update_count: u32,
    /// Failed attempts of the current or last fetch.
    pub fetch_failure_count: u32,
    /// The message of the current error, if the query is in [`QueryStatus::Error`].
    pub error: Option<String>,
}

impl QueryInfo {
    /// Whether the query has an enabled observer (TanStack's "active").
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) });
    /// let _subscription = client.watch(&options).subscribe(|_| {});
    /// assert!(client.find(key!("n")).unwrap().is_active());
    /// # }
    /// ```
    pub fn is_active(&self) -> bool {
        self.active_observers > 0
    }

    /// Whether the query holds data.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("n"), 1u32).unwrap();
    /// assert!(client.find(key!("n")).unwrap().has_data());
    /// # }
    /// ```
    pub fn has_data(&self) -> bool {
        self.has_data
    }

    /// Whether a fetch is in flight.
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
    /// let _subscription = client.watch(&options).subscribe(|_| {});
    /// assert!(client.find(key!("n")).unwrap().is_fetching());
    /// test.run_until_idle();
    /// assert!(!client.find(key!("n")).unwrap().is_fetching());
    /// # }
    /// ```
    pub fn is_fetching(&self) -> bool {
        self.fetch_status == FetchStatus::Fetching
    }
}

impl Serialize for QueryInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("QueryInfo", 18)?;
        s.serialize_field("key", self.key.storage_string())?;
        s.serialize_field("type_name", self.type_name)?;
        s.serialize_field("status", self.status.name())?;
        s.serialize_field("fetch_status", self.fetch_status.name())?;
        s.serialize_field("has_data", &self.has_data)?;
        s.serialize_field("data_updated_at", &self.data_updated_at.map(unix_seconds))?;
        s.serialize_field("error_updated_at", &self.error_updated_at.map(unix_seconds))?;
        s.serialize_field("age_secs", &self.age.map(|d| d.as_secs_f64()))?;
        s.serialize_field("is_stale", &self.is_stale)?;
        s.serialize_field("is_invalidated", &self.is_invalidated)?;
        s.serialize_field("observers", &self.observers)?;
        s.serialize_field("active_observers", &self.active_observers)?;
        s.serialize_field("gc_in_secs", &self.gc_in.map(|d| d.as_secs_f64()))?;
        s.serialize_field("persisted", &self.persisted)?;
        s.serialize_field("data_update_count", &self.data_update_count)?;
        s.serialize_field("error_update_count", &self.error_update_count)?;
        s.serialize_field("fetch_failure_count", &self.fetch_failure_count)?;
        s.serialize_field("error", &self.error)?;
        s.end()
    }
}

impl fmt::Display for QueryInfo {
    /// One line: key, status, fetch status, staleness, age, observers and gc deadline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.key,
            self.status.name(),
            self.fetch_status.name(),
            if self.is_stale { "stale" } else { "fresh" }
        )?;
        if let Some(age) = self.age {
            write!(f, " age {:.3}s", age.as_secs_f64())?;
        }
        write!(f, " observers {}/{}", self.active_observers, self.observers)?;
        if let Some(gc) = self.gc_in {
            write!(f, " gc in {:.3}s", gc.as_secs_f64())?;
        }
        Ok(())
    }
}
