//! What an observer shows: a query's raw state with `select` (memoised by data identity) and
//! placeholder data applied, and publishing it as the observer's current result.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::error::{QueryError, TypeMismatch, panic_message};
use crate::key::QueryKey;
use crate::options::{Placeholder, QueryOptions};
use crate::query::{self, QueryCell, clone_data};
use crate::state::{QueryState, QueryStatus, RawState};

use super::{Inner, Shared};

/// What an observer's current result was computed from, so the next state of the same data
/// (or the same placeholder) reuses it instead of running user code again.
#[derive(Clone, Debug, Default)]
pub(super) struct Shown {
    /// The id of the raw data `select` ran on ([`RawState::data_id`]; 0: no real data).
    data_id: u64,
    /// `select`'s panic on that data, if it panicked (the result then keeps the last value it
    /// returned, if any).
    panic: Option<Arc<str>>,
    /// For a placeholder result: the options it was made with (their sequence number) and
    /// the id of the previous data it was made from (0 for a placeholder value).
    placeholder: Option<(u64, u64)>,
}

/// A computed result, ready to publish.
pub(super) struct Computed<T, S, E> {
    pub(super) state: Arc<QueryState<S, E>>,
    shown: Shown,
    /// The query whose data the state shows, when it shows real data while attached.
    source: Option<Arc<QueryCell<T>>>,
}

impl<T, S, E> Computed<T, S, E> {
    /// The state of a key that holds another data type.
    pub(super) fn mismatch(mismatch: TypeMismatch) -> Self {
        let state = QueryState {
            status: QueryStatus::Error,
            error: Some(QueryError::TypeMismatch(mismatch)),
            ..QueryState::default()
        };
        Self { state: Arc::new(state), shown: Shown::default(), source: None }
    }

    /// The state of a query whose copy panicked (the data type's `Clone`), as a read reports it.
    fn panicked(message: Arc<str>) -> Self {
        let state = QueryState {
            status: QueryStatus::Error,
            error: Some(QueryError::Panicked(message)),
            ..QueryState::default()
        };
        Self { state: Arc::new(state), shown: Shown::default(), source: None }
    }
}

/// Values a publication replaced: dropped by the caller after the observer's lock is released
/// (their `Drop` is user code).
#[must_use]
pub(super) struct Replaced<T, S, E> {
    _result: Arc<QueryState<S, E>>,
    _previous: Option<Arc<QueryCell<T>>>,
}

impl<T, S, E> Inner<T, S, E> {
    /// Makes `computed` the current result, as a new version of this observer's states.
    pub(super) fn commit(&mut self, computed: Computed<T, S, E>) -> Replaced<T, S, E> {
        self.version += 1;
        self.shown = computed.shown;
        let previous = match computed.source {
            Some(source) => self.previous.replace(source),
            None => None,
        };
        let result = std::mem::replace(&mut self.result, computed.state);
        Replaced { _result: result, _previous: previous }
    }
}

/// What `compute` reads from the observer, under its lock, before running user code.
pub(super) struct Before<T, S, E> {
    options: QueryOptions<T, E>,
    options_seq: u64,
    last: Arc<QueryState<S, E>>,
    shown: Shown,
    previous: Option<Arc<QueryCell<T>>>,
}

impl<T, S, E> Inner<T, S, E> {
    /// What a computation needs from the observer (drop it outside the lock).
    pub(super) fn before(&self) -> Before<T, S, E> {
        Before {
            options: self.options.clone(),
            options_seq: self.options_seq,
            last: self.result.clone(),
            shown: self.shown.clone(),
            previous: self.previous.clone(),
        }
    }
}

impl<T, E, S> Shared<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// Applies `select` and placeholder data to a raw state of `source` (the attached query;
    /// `None` when unattached). Runs user code: call it with no lock held. `select` runs only
    /// for data other than the data of the current result.
    pub(super) fn compute(
        &self,
        raw: Option<&RawState<T>>,
        source: Option<&Arc<QueryCell<T>>>,
    ) -> Computed<T, S, E> {
        let before = self.lock().before();
        self.compute_from(&before, raw, source)
    }

    /// As [`compute`](Self::compute), from what was read under the observer's lock.
    pub(super) fn compute_from(
        &self,
        before: &Before<T, S, E>,
        raw: Option<&RawState<T>>,
        source: Option<&Arc<QueryCell<T>>>,
    ) -> Computed<T, S, E> {
        let options = &before.options;
        // Built field by field straight into the observer's type: this runs once per observer
        // per state change, and moving whole states around costs more than the fields.
        let key = options.key();
        let mut out: QueryState<S, E> = QueryState::default();
        let mut shown = Shown::default();
        let mut data = None;
        if let Some(raw) = raw {
            out.status = raw.status;
            out.fetch_status = raw.fetch_status;
            out.error = raw.error().map(|e| e.typed(key));
            out.data_updated_at = raw.data_updated_at;
            out.error_updated_at = raw.error_updated_at();
            out.fetch_failure_count = raw.fetch_failure_count();
            out.fetch_failure_reason = raw.fetch_failure_reason().map(|e| e.typed(key));
            out.is_invalidated = raw.is_invalidated;
            out.data_update_count = raw.data_update_count;
            out.error_update_count = raw.error_update_count();
            data = raw.data.as_ref().map(|data| (data, raw.data_id));
        }
        let last = &before.last;
        let mut shows = None;
        if let Some((data, id)) = data {
            shows = source.cloned();
            shown.data_id = id;
            // The data of the current result: what `select` made of it stands (unless copying
            // it panics: `select` runs again).
            let kept = (id != 0 && id == before.shown.data_id)
                .then(|| copy_selected(key, &last.data))
                .flatten();
            if let Some(kept) = kept {
                out.data = kept;
                shown.panic = before.shown.panic.clone();
            } else {
                match self.run_select(key, data) {
                    Ok(selected) => out.data = Some(selected),
                    Err(message) => {
                        out.data = if last.is_placeholder {
                            None
                        } else {
                            copy_selected(key, &last.data).flatten()
                        };
                        shown.panic = Some(message);
                    }
                }
            }
            if let Some(message) = &shown.panic {
                out.status = QueryStatus::Error;
                out.error = Some(QueryError::Panicked(message.clone()));
            }
        } else if matches!(out.status, QueryStatus::Idle | QueryStatus::Pending)
            && let Some(placeholder) = &options.inner.placeholder
        {
            self.show_placeholder(key, placeholder, before, &mut out, &mut shown);
        }
        Computed { state: Arc::new(out), shown, source: shows }
    }

    /// Shows the options' placeholder in `out`, made again only when the options or the
    /// previous data changed.
    fn show_placeholder(
        &self,
        key: &QueryKey,
        placeholder: &Placeholder<T>,
        before: &Before<T, S, E>,
        out: &mut QueryState<S, E>,
        shown: &mut Shown,
    ) {
        let from = match placeholder {
            Placeholder::Value(_) => 0,
            Placeholder::Fn(_) => before.previous.as_ref().map_or(0, |c| c.lock().state.data_id),
        };
        let made_from = (before.options_seq, from);
        if before.last.is_placeholder
            && before.shown.placeholder == Some(made_from)
            && let Some(kept) = copy_selected(key, &before.last.data)
        {
            out.data = kept;
            out.is_placeholder = true;
            shown.placeholder = Some(made_from);
            return;
        }
        let made;
        let value = match placeholder {
            Placeholder::Value(value) => value,
            Placeholder::Fn(make) => {
                // Copied under its query's lock (the data type's `Clone`, as on the hit path);
                // the function runs with no lock held.
                let previous = before.previous.as_ref().and_then(|cell| {
                    let g = cell.lock();
                    g.state.data.as_ref().and_then(|data| clone_data(data).ok())
                });
                match std::panic::catch_unwind(AssertUnwindSafe(|| make(previous.as_ref()))) {
                    Ok(Some(value)) => {
                        made = value;
                        &made
                    }
                    Ok(None) => return,
                    Err(payload) => {
                        let message = panic_message(&*payload);
                        tracing::error!(%key, "placeholder function panicked: {message}");
                        return;
                    }
                }
            }
        };
        match self.run_select(key, value) {
            Ok(selected) => {
                out.data = Some(selected);
                out.is_placeholder = true;
                shown.placeholder = Some(made_from);
            }
            Err(message) => {
                out.status = QueryStatus::Error;
                out.error = Some(QueryError::Panicked(message));
            }
        }
    }

    fn run_select(&self, key: &QueryKey, data: &T) -> Result<S, Arc<str>> {
        std::panic::catch_unwind(AssertUnwindSafe(|| (self.select)(data))).map_err(|payload| {
            let message = format!("select transform panicked: {}", panic_message(&*payload));
            tracing::error!(%key, "{message}");
            message.into()
        })
    }

    /// The result computed from the cache, for an observer that is not attached.
    pub(super) fn current_unattached(&self) -> Computed<T, S, E> {
        let key = self.lock().options.key().clone();
        match query::existing::<T>(&self.ctx, &key) {
            Ok(Some(cell)) => match cell.copy_state(&cell.lock()) {
                Ok(raw) => self.compute(Some(&raw), None),
                Err(message) => Computed::panicked(message),
            },
            Ok(None) => self.compute(None, None),
            Err(mismatch) => Computed::mismatch(mismatch),
        }
    }
}

/// A copy of a value shown before (the selected type's `Clone`, user code), or `None` if the
/// copy panicked.
fn copy_selected<S: Clone>(key: &QueryKey, value: &Option<S>) -> Option<Option<S>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| value.clone()))
        .map_err(|payload| {
            let message = panic_message(&*payload);
            tracing::error!(%key, "the selected value's Clone panicked: {message}");
        })
        .ok()
}
