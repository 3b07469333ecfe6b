//! Dehydration: a serializable snapshot of cached queries ([`DehydratedState`]), what to put
//! in it ([`DehydrateOptions`]), and what hydrating one did ([`HydrateReport`]). The client's
//! `dehydrate` and `hydrate` are in `client/hydration.rs`; pending seeds in `seeds`.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::panic_message;
use crate::inspect::QueryInfo;
use crate::key::QueryKey;
use crate::state::QueryStatus;

/// Cached queries as plain data, to write to a file, send to another process, and
/// [`hydrate`](crate::QueryClient::hydrate) into another client (TanStack Query's
/// `dehydrate` / `hydrate`).
///
/// Made by [`QueryClient::dehydrate`](crate::QueryClient::dehydrate). It serializes with
/// `serde` as this JSON object, which a Python process reads with the Python library's
/// `QueryState.from_dict` and writes with `QueryState.to_dict`:
///
/// ```text
/// {"queries": [
///   {"key": ["user", 42],
///    "state": {"status": "SUCCESS", "fetch_status": "IDLE", "data": {"name": "Ada"},
///              "error": null, "data_updated_at": 1764066000.25, "error_updated_at": null,
///              "fetch_failure_count": 0, "fetch_failure_reason": null}}
/// ]}
/// ```
///
/// - `key` is the query key as an array of its parts (strings, integers, booleans); in Python,
///   `tuple(key)` is the key and `str(tuple(key))` its storage name.
/// - `state` is exactly the record the L2 tier stores (see [`crate::storage::Record`]):
///   statuses by name, `data` as serde writes the query's data type, errors as their
///   messages, times as Unix seconds in floats. `fetch_status` is always `"IDLE"`: a snapshot
///   describes data at rest. Invalidated data is stamped `0.0`, so that it restores stale.
/// - `{}` is a state with no query; each query needs its `key` and `state`, and a record may
///   leave out its optional fields (as [`Record`](crate::storage::Record) reads them).
///   Unknown fields are ignored. Options (stale time, gc time, retries, meta) are not part of
///   it: a restored query gets them from the options it is used with, as TanStack's
///   `hydrate` does.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{DehydratedState, key};
///
/// let text = r#"{"queries": [{"key": ["user", 42], "state": {"status": "SUCCESS",
///     "fetch_status": "IDLE", "data": "Ada", "data_updated_at": 1700000000.5}}]}"#;
/// let state: DehydratedState = serde_json::from_str(text).unwrap();
/// assert_eq!(state.queries[0].key, key!("user", 42));
/// assert_eq!(state.queries[0].state["data"], "Ada");
/// let empty: DehydratedState = serde_json::from_str("{}").unwrap();
/// assert!(empty.queries.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DehydratedState {
    /// The dehydrated queries, in key order.
    #[serde(default)]
    pub queries: Vec<DehydratedQuery>,
}

impl DehydratedState {
    /// A state holding `queries` (for states built by hand, e.g. from another process's
    /// records).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{DehydratedQuery, DehydratedState, key};
    ///
    /// let state = DehydratedState::new(vec![DehydratedQuery::new(
    ///     key!("n"),
    ///     serde_json::json!({"status": "SUCCESS", "fetch_status": "IDLE", "data": 1, "error": null,
    ///         "data_updated_at": 1700000000.0}),
    /// )]);
    /// assert_eq!(state.queries.len(), 1);
    /// ```
    pub fn new(queries: Vec<DehydratedQuery>) -> Self {
        Self { queries }
    }
}

/// One query of a [`DehydratedState`]: its key and its state record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DehydratedQuery {
    /// The query's key (a JSON array of its parts).
    pub key: QueryKey,
    /// The query's state: the JSON object of the L2 record format (Python's
    /// `QueryState.to_dict()`), see [`DehydratedState`].
    pub state: serde_json::Value,
}

impl DehydratedQuery {
    /// A query from its key and its state record.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{DehydratedQuery, key};
    ///
    /// // E.g. from a record another process (Python included) wrote.
    /// let record = r#"{"status": "SUCCESS", "fetch_status": "IDLE", "data": "Ada", "error": null}"#;
    /// let query = DehydratedQuery::new(key!("user", 1), serde_json::from_str(record).unwrap());
    /// assert_eq!(query.state["data"], "Ada");
    /// ```
    pub fn new(key: impl Into<QueryKey>, state: serde_json::Value) -> Self {
        Self { key: key.into(), state }
    }
}

type Predicate = Arc<dyn Fn(&QueryInfo) -> bool + Send + Sync>;

/// What [`QueryClient::dehydrate_with`](crate::QueryClient::dehydrate_with) puts in a
/// [`DehydratedState`] besides the filter: which queries (TanStack's `shouldDehydrateQuery`;
/// by default the successful ones), and whether pending seeds come along.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{DehydrateOptions, QueryStatus};
///
/// // Errors too (their message, and their data if they kept any).
/// let options = DehydrateOptions::new()
///     .should_dehydrate(|q| matches!(q.status, QueryStatus::Success | QueryStatus::Error));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct DehydrateOptions {
    should_dehydrate: Option<Predicate>,
    include_seeds: bool,
}

impl DehydrateOptions {
    /// The defaults: successful queries, no seeds.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{DehydrateOptions, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let ok = QueryOptions::new(key!("ok"), || async { Ok::<u32, String>(1) }).persist();
    /// let bad = QueryOptions::new(key!("bad"), || async { Err::<u32, _>("down".to_string()) }).retry(0).persist();
    /// test.block_on(client.fetch_query(&ok)).unwrap();
    /// let _ = test.block_on(client.fetch_query(&bad));
    /// // The defaults: successful persisted queries only.
    /// assert_eq!(client.dehydrate_with((), DehydrateOptions::new()).queries.len(), 1);
    /// # }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Dehydrates the queries for which `predicate` returns `true`, instead of the successful
    /// ones (the query must still be persistable). A panic in it is logged and counts as
    /// `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{DehydrateOptions, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// for n in 1..=3u32 {
    ///     let options = QueryOptions::new(key!("item", n), move || async move { Ok::<u32, String>(n) }).persist();
    ///     test.block_on(client.fetch_query(&options)).unwrap();
    /// }
    /// client.pause(key!("item", 2));
    /// // Only what is not paused.
    /// let options = DehydrateOptions::new().should_dehydrate(|q| !q.fetch_status.eq(&pystackquery_core::FetchStatus::Paused));
    /// assert_eq!(client.dehydrate_with(key!("item"), options).queries.len(), 2);
    /// # }
    /// ```
    #[must_use]
    pub fn should_dehydrate(
        mut self,
        predicate: impl Fn(&QueryInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.should_dehydrate = Some(Arc::new(predicate));
        self
    }

    /// Also puts in the state the pending seeds whose key the filter's key condition matches:
    /// records hydrated earlier whose key has not been used with persisting options since
    /// (see [`QueryClient::hydrate`](crate::QueryClient::hydrate)), as they were hydrated.
    /// The filter's other conditions and the predicate do not apply to them (they are
    /// records, not queries). Use it to carry a snapshot over from one run to the next when
    /// some keys may go unused in between. Default: `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{DehydrateOptions, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let first = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
    /// test.block_on(first.fetch_query(&options)).unwrap();
    ///
    /// // A second run hydrates the snapshot but never uses "n", then saves its own snapshot.
    /// let second = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// second.hydrate(first.dehydrate(()));
    /// assert!(second.dehydrate(()).queries.is_empty()); // "n" would be lost...
    /// let carried = second.dehydrate_with((), DehydrateOptions::new().include_seeds(true));
    /// assert_eq!(carried.queries.len(), 1); // ...unless seeds come along
    /// # }
    /// ```
    #[must_use]
    pub fn include_seeds(mut self, include: bool) -> Self {
        self.include_seeds = include;
        self
    }

    /// Whether seeds come along.
    pub(crate) fn seeds(&self) -> bool {
        self.include_seeds
    }

    /// Whether the query described by `info` is to be dehydrated.
    pub(crate) fn wants(&self, info: &QueryInfo) -> bool {
        let Some(predicate) = &self.should_dehydrate else {
            return info.status == QueryStatus::Success;
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| predicate(info))).unwrap_or_else(|payload| {
            tracing::error!(
                key = %info.key,
                "should_dehydrate panicked: {}",
                panic_message(&*payload)
            );
            false
        })
    }
}

impl fmt::Debug for DehydrateOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DehydrateOptions")
            .field("should_dehydrate", &self.should_dehydrate.is_some())
            .field("include_seeds", &self.include_seeds)
            .finish()
    }
}

/// What [`QueryClient::hydrate`](crate::QueryClient::hydrate) did with each query of a
/// [`DehydratedState`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HydrateReport {
    /// Restored into a cached query at once.
    pub applied: usize,
    /// Not restored: memory (or a pending seed for the key) holds data as new or newer, or
    /// the record holds nothing to restore (neither data nor an error).
    pub skipped: usize,
    /// Kept as a pending seed, applied when the key is first used with persisting options.
    pub deferred: usize,
    /// The record is not a record, or its data does not decode as the cached query's type.
    pub undecodable: usize,
}

impl HydrateReport {
    pub(crate) fn add(&mut self, outcome: HydrateOutcome) {
        match outcome {
            HydrateOutcome::Applied => self.applied += 1,
            HydrateOutcome::Skipped => self.skipped += 1,
            HydrateOutcome::Deferred => self.deferred += 1,
            HydrateOutcome::Undecodable => self.undecodable += 1,
        }
    }
}

/// What became of one hydrated record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HydrateOutcome {
    Applied,
    Skipped,
    Deferred,
    Undecodable,
}

/// One query's state record, made for a dehydrated state.
#[derive(Debug)]
pub(crate) enum Snapshot {
    /// Encoded.
    Record(serde_json::Value),
    /// The query has no codec (never used with persisting options).
    NotPersisted,
    /// Encoding failed or panicked (or the data's `Clone` did): why.
    Failed(String),
}
