//! What can be read about a mutation run whatever its types: [`MutationStatus`],
//! [`MutationInfo`], and [`MutationFilter`] to choose runs by key, status or predicate.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::error::panic_message;
use crate::key::QueryKey;
use crate::storage::record::unix_seconds;

/// The status of a mutation.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{MutationState, MutationStatus};
///
/// let state: MutationState<u32, u32, String> = MutationState::default();
/// let label = match state.status {
///     MutationStatus::Idle => "Save",
///     MutationStatus::Pending => "Saving...",
///     MutationStatus::Success => "Saved",
///     MutationStatus::Error => "Retry",
///     _ => "Save", // the enum is `#[non_exhaustive]`
/// };
/// assert_eq!(label, "Save");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MutationStatus {
    /// Not run yet, or reset.
    #[default]
    Idle,
    /// Running (or waiting for its turn in its scope).
    Pending,
    /// The last run succeeded.
    Success,
    /// The last run failed.
    Error,
}

impl MutationStatus {
    /// The status's name (`"PENDING"`), as the query statuses are named.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::MutationStatus;
    ///
    /// assert_eq!(MutationStatus::Pending.name(), "PENDING");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Error => "ERROR",
        }
    }
}

/// A snapshot of one mutation run in the client's mutation cache, whatever its types
/// (TanStack's `Mutation` as the mutation cache lists it).
///
/// Every [`Mutation::mutate`](crate::Mutation::mutate) and
/// [`QueryClient::mutate`](crate::QueryClient::mutate) call is one run, with its own id. Runs
/// stay listed until `gc_time` after they settle.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{MutationOptions, MutationStatus, QueryClient, QueryClientConfig, key, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let upload = MutationOptions::new(|_: ()| async { Ok::<_, String>(()) })
///     .mutation_key(key!("upload"))
///     .scope("uploads");
/// test.block_on(client.mutate(&upload, ())).unwrap();
/// let info = &client.find_mutations(())[0];
/// assert_eq!((info.mutation_key.clone(), info.scope.as_deref()), (Some(key!("upload")), Some("uploads")));
/// assert_eq!(info.status, MutationStatus::Success);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MutationInfo {
    /// The run's id, unique within its client, increasing in submission order.
    pub id: u64,
    /// The options' [`mutation_key`](crate::MutationOptions::mutation_key), if any.
    pub mutation_key: Option<QueryKey>,
    /// The options' [`scope`](crate::MutationOptions::scope), if any.
    pub scope: Option<Arc<str>>,
    /// The status.
    pub status: MutationStatus,
    /// Waiting for an earlier run of its scope to settle.
    pub is_paused: bool,
    /// Failed attempts so far.
    pub failure_count: u32,
    /// When the run started (wall clock).
    pub submitted_at: Option<SystemTime>,
    /// When it settled (wall clock).
    pub settled_at: Option<SystemTime>,
    /// The error's message, once it failed.
    pub error: Option<String>,
}

impl MutationInfo {
    pub(crate) fn new(
        id: u64,
        mutation_key: Option<QueryKey>,
        scope: Option<Arc<str>>,
        submitted_at: SystemTime,
    ) -> Self {
        Self {
            id,
            mutation_key,
            scope,
            status: MutationStatus::Pending,
            is_paused: false,
            failure_count: 0,
            submitted_at: Some(submitted_at),
            settled_at: None,
            error: None,
        }
    }
}

impl Serialize for MutationInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("MutationInfo", 9)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field(
            "mutation_key",
            &self.mutation_key.as_ref().map(QueryKey::storage_string),
        )?;
        s.serialize_field("scope", &self.scope.as_deref())?;
        s.serialize_field("status", self.status.name())?;
        s.serialize_field("is_paused", &self.is_paused)?;
        s.serialize_field("failure_count", &self.failure_count)?;
        s.serialize_field("submitted_at", &self.submitted_at.map(unix_seconds))?;
        s.serialize_field("settled_at", &self.settled_at.map(unix_seconds))?;
        s.serialize_field("error", &self.error)?;
        s.end()
    }
}

type Predicate = Arc<dyn Fn(&MutationInfo) -> bool + Send + Sync>;

/// Chooses mutation runs (TanStack's `MutationFilters`): by mutation key (a prefix, or exact),
/// status, and a predicate; every condition set must hold. Any key converts into a prefix
/// filter, and the empty key `()` (or [`MutationFilter::all`]) matches every run, including
/// runs without a mutation key; a key condition never matches a run without one.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{MutationFilter, MutationStatus, key};
///
/// let pending_todos = MutationFilter::prefix(key!("todos")).status(MutationStatus::Pending);
/// # drop(pending_todos);
/// ```
#[derive(Clone, Default)]
pub struct MutationFilter {
    key: Option<QueryKey>,
    exact: bool,
    status: Option<MutationStatus>,
    predicate: Option<Predicate>,
}

impl MutationFilter {
    /// Every run.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationFilter, MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let ping = MutationOptions::new(|_: ()| async { Ok::<_, String>(()) });
    /// test.block_on(client.mutate(&ping, ())).unwrap();
    /// assert_eq!(client.find_mutations(MutationFilter::all()).len(), 1);
    /// # }
    /// ```
    pub fn all() -> Self {
        Self::default()
    }

    /// Runs whose mutation key starts with `prefix`; the empty key matches every run.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationFilter, MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let add = MutationOptions::new(|_: ()| async { Ok::<_, String>(()) }).mutation_key(key!("todos", "add"));
    /// let other = MutationOptions::new(|_: ()| async { Ok::<_, String>(()) }).mutation_key(key!("users", "add"));
    /// test.block_on(client.mutate(&add, ())).unwrap();
    /// test.block_on(client.mutate(&other, ())).unwrap();
    /// assert_eq!(client.find_mutations(MutationFilter::prefix(key!("todos"))).len(), 1);
    /// # }
    /// ```
    pub fn prefix(prefix: impl Into<QueryKey>) -> Self {
        let key = prefix.into();
        Self { key: (!key.is_empty()).then_some(key), ..Self::default() }
    }

    /// Runs whose mutation key is exactly `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationFilter, MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let add = MutationOptions::new(|_: ()| async { Ok::<_, String>(()) }).mutation_key(key!("todos", "add"));
    /// test.block_on(client.mutate(&add, ())).unwrap();
    /// assert_eq!(client.find_mutations(MutationFilter::exact(key!("todos"))).len(), 0);
    /// assert_eq!(client.find_mutations(MutationFilter::exact(key!("todos", "add"))).len(), 1);
    /// # }
    /// ```
    pub fn exact(key: impl Into<QueryKey>) -> Self {
        Self { key: Some(key.into()), exact: true, ..Self::default() }
    }

    /// Only runs in this status.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationFilter, MutationOptions, MutationStatus, QueryClient, QueryClientConfig};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let check = MutationOptions::new(|n: u32| async move { if n > 0 { Ok(n) } else { Err("zero".to_string()) } });
    /// test.block_on(client.mutate(&check, 1)).unwrap();
    /// let _ = test.block_on(client.mutate(&check, 0));
    /// let ok = client.find_mutations(MutationFilter::all().status(MutationStatus::Success));
    /// assert_eq!(ok.len(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn status(mut self, status: MutationStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only runs for which `predicate` returns `true`; a panic in it counts as `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationFilter, MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let flaky = MutationOptions::new(|_: ()| async { Err::<(), _>("busy".to_string()) }).retry(2);
    /// let _ = test.block_on(client.mutate(&flaky, ()));
    /// let retried = client.find_mutations(MutationFilter::all().predicate(|m| m.failure_count > 1));
    /// assert_eq!(retried.len(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn predicate(
        mut self,
        predicate: impl Fn(&MutationInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether `info` passes every condition.
    pub(crate) fn matches(&self, info: &MutationInfo) -> bool {
        let key = match (&self.key, &info.mutation_key) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(have)) => {
                if self.exact {
                    want == have
                } else {
                    want.is_prefix_of(have)
                }
            }
        };
        key && self.status.is_none_or(|s| s == info.status)
            && self.predicate.as_ref().is_none_or(|p| {
                std::panic::catch_unwind(AssertUnwindSafe(|| p(info))).unwrap_or_else(|payload| {
                    tracing::error!(
                        "mutation filter predicate panicked: {}",
                        panic_message(&*payload)
                    );
                    false
                })
            })
    }
}

impl<K: Into<QueryKey>> From<K> for MutationFilter {
    /// A key as a filter is a prefix filter.
    fn from(prefix: K) -> Self {
        Self::prefix(prefix)
    }
}

impl fmt::Debug for MutationFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutationFilter")
            .field("key", &self.key)
            .field("exact", &self.exact)
            .field("status", &self.status)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}
