//! The state as the cache stores it: [`RawState`] (errors without their type) and its shared
//! error side, [`Failure`]; and the process-wide identities of stored data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::{FetchStatus, QueryState, QueryStatus};
use crate::error::ErasedError;
use crate::key::QueryKey;

/// Identities of stored data, from one counter for the whole process (0: no data).
static NEXT_DATA_ID: AtomicU64 = AtomicU64::new(1);

/// A new data identity, for data just stored (see [`RawState::data_id`]).
pub(crate) fn next_data_id() -> u64 {
    NEXT_DATA_ID.fetch_add(1, Ordering::Relaxed)
}

/// The state as the cache stores it: errors without their type.
///
/// The error side (last error, failure count and reason, their times and counts) is shared
/// and allocated only once a query has failed: a query that never failed pays one pointer
/// for it, and copying a state for the listeners copies that pointer.
#[derive(Clone, Debug)]
pub(crate) struct RawState<T> {
    /// Which data this is: every write of data (fetch, set, hydration, initial data) takes a
    /// new id, unique across queries, so observers can tell "same data, other state" (a fetch
    /// starting or ending, an invalidation) without comparing values. 0 with no data.
    pub(crate) data_id: u64,
    pub(crate) status: QueryStatus,
    pub(crate) fetch_status: FetchStatus,
    pub(crate) is_invalidated: bool,
    pub(crate) data_update_count: u32,
    pub(crate) data: Option<T>,
    pub(crate) data_updated_at: Option<SystemTime>,
    failure: Option<Arc<Failure>>,
}

/// The error side of a [`RawState`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Failure {
    pub(crate) error: Option<ErasedError>,
    pub(crate) error_updated_at: Option<SystemTime>,
    pub(crate) fetch_failure_count: u32,
    pub(crate) fetch_failure_reason: Option<ErasedError>,
    pub(crate) error_update_count: u32,
}

impl<T> Default for RawState<T> {
    fn default() -> Self {
        Self {
            data_id: 0,
            status: QueryStatus::Idle,
            fetch_status: FetchStatus::Idle,
            is_invalidated: false,
            data_update_count: 0,
            data: None,
            data_updated_at: None,
            failure: None,
        }
    }
}

impl<T> RawState<T> {
    pub(crate) fn error(&self) -> Option<&ErasedError> {
        self.failure.as_ref()?.error.as_ref()
    }

    pub(crate) fn error_updated_at(&self) -> Option<SystemTime> {
        self.failure.as_ref()?.error_updated_at
    }

    pub(crate) fn fetch_failure_count(&self) -> u32 {
        self.failure.as_ref().map_or(0, |f| f.fetch_failure_count)
    }

    pub(crate) fn fetch_failure_reason(&self) -> Option<&ErasedError> {
        self.failure.as_ref()?.fetch_failure_reason.as_ref()
    }

    pub(crate) fn error_update_count(&self) -> u32 {
        self.failure.as_ref().map_or(0, |f| f.error_update_count)
    }

    /// The error side, to change (allocated, or unshared from copies handed out, first).
    pub(crate) fn failure_mut(&mut self) -> &mut Failure {
        Arc::make_mut(self.failure.get_or_insert_with(Default::default))
    }

    /// The error side, to clear or lower something in: none means nothing to change.
    pub(crate) fn failure_opt(&mut self) -> Option<&mut Failure> {
        self.failure.as_mut().map(Arc::make_mut)
    }

    /// The error side for writing values that are all empty unless `values`: allocated when
    /// there is something to write, left unallocated when there is nothing to clear either.
    pub(crate) fn failure_for(&mut self, values: bool) -> Option<&mut Failure> {
        if values { Some(self.failure_mut()) } else { self.failure_opt() }
    }

    /// Takes the whole error side (for a reset).
    pub(crate) fn take_failure(&mut self) -> Option<Arc<Failure>> {
        self.failure.take()
    }
}

impl<T: Clone> RawState<T> {
    pub(crate) fn typed<E: Send + Sync + 'static>(&self, key: &QueryKey) -> QueryState<T, E> {
        QueryState {
            status: self.status,
            fetch_status: self.fetch_status,
            data: self.data.clone(),
            error: self.error().map(|e| e.typed(key)),
            data_updated_at: self.data_updated_at,
            error_updated_at: self.error_updated_at(),
            fetch_failure_count: self.fetch_failure_count(),
            fetch_failure_reason: self.fetch_failure_reason().map(|e| e.typed(key)),
            is_placeholder: false,
            is_invalidated: self.is_invalidated,
            data_update_count: self.data_update_count,
            error_update_count: self.error_update_count(),
        }
    }
}
