//! [`MutationStatus`] and [`MutationState`]: what a mutation shows.

use std::time::SystemTime;

use crate::error::QueryError;

/// The status of a mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MutationStatus {
    /// Not run yet, or reset.
    #[default]
    Idle,
    /// Running.
    Pending,
    /// The last run succeeded.
    Success,
    /// The last run failed.
    Error,
}

/// A snapshot of a mutation's state.
#[derive(Debug)]
#[non_exhaustive]
pub struct MutationState<T, E> {
    /// The status.
    pub status: MutationStatus,
    /// The last successful result.
    pub data: Option<T>,
    /// The last error.
    pub error: Option<QueryError<E>>,
    /// When the last run started (wall clock).
    pub submitted_at: Option<SystemTime>,
    /// When the last run settled (wall clock).
    pub settled_at: Option<SystemTime>,
    /// Failed attempts of the last run.
    pub failure_count: u32,
}

impl<T, E> MutationState<T, E> {
    /// Not run yet.
    pub fn is_idle(&self) -> bool {
        self.status == MutationStatus::Idle
    }
    /// Running.
    pub fn is_pending(&self) -> bool {
        self.status == MutationStatus::Pending
    }
    /// Last run succeeded.
    pub fn is_success(&self) -> bool {
        self.status == MutationStatus::Success
    }
    /// Last run failed.
    pub fn is_error(&self) -> bool {
        self.status == MutationStatus::Error
    }
}

impl<T, E> Default for MutationState<T, E> {
    fn default() -> Self {
        Self {
            status: MutationStatus::Idle,
            data: None,
            error: None,
            submitted_at: None,
            settled_at: None,
            failure_count: 0,
        }
    }
}

impl<T: Clone, E> Clone for MutationState<T, E> {
    fn clone(&self) -> Self {
        Self {
            status: self.status,
            data: self.data.clone(),
            error: self.error.clone(),
            submitted_at: self.submitted_at,
            settled_at: self.settled_at,
            failure_count: self.failure_count,
        }
    }
}
