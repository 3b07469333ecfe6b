//! [`MutationState`]: what a mutation shows.

use std::time::SystemTime;

use crate::error::QueryError;
pub use crate::mutations::info::MutationStatus;

/// A snapshot of a mutation's state (TanStack's `MutationState`): the status, the last run's
/// input (`variables`), what its `on_mutate` returned (`context`), its data or error, and its
/// failures.
///
/// While the callbacks of a run (`on_success`, `on_error`, `on_settled`) run, the status is
/// still [`MutationStatus::Pending`]; it changes once they have finished, as in TanStack Query.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{MutationOptions, MutationStatus, QueryClient, QueryClientConfig, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let save = client.mutation(
///     MutationOptions::new(|name: String| async move { Ok::<_, String>(name.len()) })
///         .on_mutate(|_name: &String, _cx| "draft-1"), // becomes `context`
/// );
/// test.block_on(save.mutate("Ada".to_string())).unwrap();
/// let state = save.state();
/// assert_eq!(state.status, MutationStatus::Success);
/// assert_eq!((state.data, state.variables.as_deref(), state.context), (Some(3), Some("Ada"), Some("draft-1")));
/// assert!(state.submitted_at.is_some() && state.settled_at.is_some());
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct MutationState<I, T, E, C = ()> {
    /// The status.
    pub status: MutationStatus,
    /// The last run's data, once it succeeded.
    pub data: Option<T>,
    /// The last run's error, once it failed.
    pub error: Option<QueryError<E>>,
    /// The last run's input.
    pub variables: Option<I>,
    /// What the last run's `on_mutate` returned.
    pub context: Option<C>,
    /// Failed attempts of the last run (on failure: every attempt).
    pub failure_count: u32,
    /// The error of the last failed attempt.
    pub failure_reason: Option<QueryError<E>>,
    /// The last run waits for an earlier run of its [scope](crate::MutationOptions::scope).
    pub is_paused: bool,
    /// When the last run started (wall clock).
    pub submitted_at: Option<SystemTime>,
    /// When the last run settled (wall clock).
    pub settled_at: Option<SystemTime>,
}

impl<I, T, E, C> MutationState<I, T, E, C> {
    /// Not run yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::MutationState;
    ///
    /// let state: MutationState<u32, u32, String> = MutationState::default();
    /// assert!(state.is_idle());
    /// ```
    pub fn is_idle(&self) -> bool {
        self.status == MutationStatus::Idle
    }
    /// Running.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let save = client.mutation(MutationOptions::new(|n: u32| async move { Ok::<_, String>(n) }));
    /// let observed = save.clone();
    /// let _subscription = save.subscribe(move |state| {
    ///     if state.is_pending() {
    ///         assert_eq!(state.variables, Some(5)); // e.g. disable the form while it saves
    ///     }
    /// });
    /// test.block_on(save.mutate(5)).unwrap();
    /// assert!(!observed.state().is_pending());
    /// # }
    /// ```
    pub fn is_pending(&self) -> bool {
        self.status == MutationStatus::Pending
    }
    /// Last run succeeded.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let save = client.mutation(MutationOptions::new(|n: u32| async move { Ok::<_, String>(n) }));
    /// test.block_on(save.mutate(1)).unwrap();
    /// assert!(save.state().is_success());
    /// # }
    /// ```
    pub fn is_success(&self) -> bool {
        self.status == MutationStatus::Success
    }
    /// Last run failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let save = client.mutation(MutationOptions::new(|_: u32| async { Err::<(), _>("no".to_string()) }).retry(0));
    /// let _ = test.block_on(save.mutate(1));
    /// assert!(save.state().is_error());
    /// # }
    /// ```
    pub fn is_error(&self) -> bool {
        self.status == MutationStatus::Error
    }
}

impl<I, T, E, C> Default for MutationState<I, T, E, C> {
    fn default() -> Self {
        Self {
            status: MutationStatus::Idle,
            data: None,
            error: None,
            variables: None,
            context: None,
            failure_count: 0,
            failure_reason: None,
            is_paused: false,
            submitted_at: None,
            settled_at: None,
        }
    }
}

impl<I: Clone, T: Clone, E, C: Clone> Clone for MutationState<I, T, E, C> {
    fn clone(&self) -> Self {
        Self {
            status: self.status,
            data: self.data.clone(),
            error: self.error.clone(),
            variables: self.variables.clone(),
            context: self.context.clone(),
            failure_count: self.failure_count,
            failure_reason: self.failure_reason.clone(),
            is_paused: self.is_paused,
            submitted_at: self.submitted_at,
            settled_at: self.settled_at,
        }
    }
}
