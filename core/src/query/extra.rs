//! The part of a query that an idle query does not carry: its fetch in flight, observers and
//! listeners, how to refetch and persist it, its L2 read, its own gc time and its optimistic
//! runs. Allocated on first use, dropped again when the query is back to holding only data
//! and state (see [`CellInner::trim`]), so a cache of a million idle keys pays one pointer per
//! key for all of it.

use std::sync::Arc;
use std::time::Duration;

use super::cell::CellInner;
use super::fetch::{FetchSlot, Fetcher};
use super::hydrate::HydrationStep;
use crate::gc::removable::GcTime;
use crate::listeners::Listeners;
use crate::state::RawState;
use crate::storage::record::CodecFn;

pub(crate) struct Extra<T> {
    pub(crate) in_flight: Option<Arc<FetchSlot<T>>>,
    /// Observers attached (enabled or not): an observed query is never collected or evicted.
    pub(crate) observers: u32,
    /// Enabled observers attached: the query is "active" (refetched by invalidation and
    /// reset) while this is non-zero.
    pub(crate) active: u32,
    /// Mutation runs whose optimistic writes to this key await their outcome.
    pub(crate) optimistic_runs: u32,
    /// State listeners (observers' attachments).
    pub(crate) listeners: Listeners<RawState<T>>,
    /// How to fetch this key again without a caller's options (invalidation, resume).
    pub(crate) fetcher: Option<Arc<dyn Fetcher<T>>>,
    /// How to persist this key; set by the first persisting options that touch it.
    pub(crate) codec: Option<CodecFn<T>>,
    /// The persistence max age of the last persisting options that touched the key, if they
    /// set one (else the client's applies).
    pub(crate) persist_max_age: Option<Duration>,
    /// The gate of the key's one L2 read, once it has started.
    pub(crate) hydration: Option<HydrationStep>,
    /// The gc time of the options that last fetched or read the key (else the client's, or
    /// its prefix defaults').
    pub(crate) gc_time: GcTime,
}

impl<T> Extra<T> {
    fn new() -> Self {
        Self {
            in_flight: None,
            observers: 0,
            active: 0,
            optimistic_runs: 0,
            listeners: Listeners::new(),
            fetcher: None,
            codec: None,
            persist_max_age: None,
            hydration: None,
            gc_time: GcTime::unset(),
        }
    }

    /// Holds nothing an idle query needs: dropping it loses nothing (and runs no user code).
    fn is_empty(&self) -> bool {
        self.in_flight.is_none()
            && self.observers == 0
            && self.active == 0
            && self.optimistic_runs == 0
            && self.listeners.is_empty()
            && self.fetcher.is_none()
            && self.codec.is_none()
            && self.persist_max_age.is_none()
            && self.hydration.is_none()
            && !self.gc_time.is_set()
    }
}

impl<T> CellInner<T> {
    /// The extra part, allocated on first use.
    pub(crate) fn x(&mut self) -> &mut Extra<T> {
        self.extra.get_or_insert_with(|| Box::new(Extra::new()))
    }

    /// The extra part, if the query has one.
    pub(crate) fn x_ref(&self) -> Option<&Extra<T>> {
        self.extra.as_deref()
    }

    /// The extra part for a change that only clears or lowers something: none means nothing
    /// to change.
    pub(crate) fn x_opt(&mut self) -> Option<&mut Extra<T>> {
        self.extra.as_deref_mut()
    }

    /// Drops the extra part when it holds nothing.
    pub(crate) fn trim(&mut self) {
        if self.extra.as_ref().is_some_and(|x| x.is_empty()) {
            self.extra = None;
        }
    }

    pub(crate) fn in_flight(&self) -> Option<&Arc<FetchSlot<T>>> {
        self.x_ref()?.in_flight.as_ref()
    }

    pub(crate) fn observers(&self) -> u32 {
        self.x_ref().map_or(0, |x| x.observers)
    }

    pub(crate) fn active(&self) -> u32 {
        self.x_ref().map_or(0, |x| x.active)
    }

    pub(crate) fn optimistic_runs(&self) -> u32 {
        self.x_ref().map_or(0, |x| x.optimistic_runs)
    }

    pub(crate) fn fetcher(&self) -> Option<&Arc<dyn Fetcher<T>>> {
        self.x_ref()?.fetcher.as_ref()
    }

    pub(crate) fn codec(&self) -> Option<CodecFn<T>> {
        self.x_ref()?.codec
    }

    pub(crate) fn persist_max_age(&self) -> Option<Duration> {
        self.x_ref()?.persist_max_age
    }

    /// The query's own gc time, or `default`.
    pub(crate) fn gc_time(&self, default: Duration) -> Duration {
        self.x_ref().map_or(default, |x| x.gc_time.get(default))
    }

    pub(crate) fn hydration(&self) -> Option<&HydrationStep> {
        self.x_ref()?.hydration.as_ref()
    }
}
