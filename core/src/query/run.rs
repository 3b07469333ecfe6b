//! The fetch task: attempts with retries and panic capture, the query's callbacks, and the
//! guard that completes the slot however the task ends.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use super::cell::QueryCell;
use super::fetch::{FetchSlot, clone_data};
use super::shared::{Before, Prior, before_call};
use crate::cancel::QueryContext;
use crate::ctx::Ctx;
use crate::error::{ErasedError, QueryError, panic_message};
use crate::meta::Meta;
use crate::options::{Attempt, OptionsInner};
use crate::retryer::{Outcome, Retryer};
use crate::runtime::Runtime;
use crate::stats::Stat;

/// Finishes the slot with [`QueryError::Cancelled`] if the fetch is dropped unfinished (the
/// runtime dropped the task, maybe before ever polling it, or the fetch was cancelled), so
/// that no caller waits forever. Holds the client weakly: a running fetch does not keep a
/// dropped client, or its cache, alive.
pub(crate) struct FetchGuard<T: Clone + Send + Sync + 'static> {
    pub(crate) cell: Arc<QueryCell<T>>,
    pub(crate) ctx: Weak<Ctx>,
    pub(crate) slot: Arc<FetchSlot<T>>,
    pub(crate) finished: bool,
}

impl<T: Clone + Send + Sync + 'static> FetchGuard<T> {
    pub(crate) fn finish(
        &mut self,
        result: Result<T, ErasedError>,
        failures: u32,
        before_wake: impl FnOnce(),
    ) {
        self.finished = true;
        let ctx = self.ctx.upgrade();
        // Counted before the waiters wake, so a caller sees its fetch's outcome counted.
        if let Some(ctx) = &ctx {
            match &result {
                Ok(_) => {}
                Err(ErasedError::Cancelled) => ctx.stats.add(Stat::Cancellation),
                Err(_) => ctx.stats.add(Stat::Failure),
            }
        }
        self.cell.finish(ctx.as_ref(), &self.slot, result, failures, before_wake);
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for FetchGuard<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Err(ErasedError::Cancelled), 0, || {});
        }
    }
}

/// One fetch: attempts with backoff, panics caught, callbacks run, outcome recorded.
///
/// With a behaviour, `snapshot` is the data the query held when the fetch began (or the
/// panic of its `Clone`): the behaviour gets it once and makes the attempt function.
pub(crate) async fn run_fetch<T, E>(
    mut guard: FetchGuard<T>,
    options: Arc<OptionsInner<T, E>>,
    snapshot: Option<Result<Option<T>, ErasedError>>,
    retryer: Retryer<E>,
    meta: Meta,
    runtime: Runtime,
    prior: Prior,
) where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    let codec = options.codec.map(|codec| codec());
    let held =
        match before_call(&mut guard, options.fetch_tag, codec, options.stale_time, prior).await {
            Before::Adopted => return,
            Before::Call(held) => held,
        };
    let generation = guard.slot.generation;
    let context = QueryContext::new(guard.cell.key.clone(), guard.slot.signal.clone(), meta);
    let mut behavior: Option<Attempt<T, E>> = match (&options.behavior, snapshot) {
        (Some(behavior), Some(Ok(data))) => Some(behavior(data)),
        (Some(_), Some(Err(error))) => {
            let typed = Err(error.typed(&guard.cell.key));
            guard.finish(Err(error), 1, || run_callbacks(&options, &typed));
            return;
        }
        _ => None,
    };
    let mut first = true;
    let Outcome { result, failures } = retryer
        .run_as(
            &runtime,
            "query function",
            || {
                if !std::mem::take(&mut first)
                    && let Some(ctx) = guard.ctx.upgrade()
                {
                    ctx.stats.add(Stat::Retry);
                }
                match &mut behavior {
                    Some(attempt) => attempt(context.clone()),
                    None => (options.query_fn)(context.clone()),
                }
            },
            |failed, error| {
                if let Some(ctx) = guard.ctx.upgrade() {
                    let erased = ErasedError::Failed(error.clone());
                    guard.cell.record_failure(&ctx, generation, failed, erased);
                }
            },
        )
        .await;
    let erased = match &result {
        Ok(data) => clone_data(data),
        Err(error) => Err(ErasedError::from_typed(error)),
    };
    // Callbacks run after the state is written and before waiters wake, so a caller that
    // awaited the fetch observes their effects.
    guard.finish(erased, failures, || run_callbacks(&options, &result));
    // The key's storage lock is released once the record is written (a failed fetch writes
    // none: the waiters then take the lock or fetch themselves).
    if let Some(held) = held {
        held.release().await;
    }
}

pub(crate) fn run_callbacks<T, E>(
    options: &OptionsInner<T, E>,
    outcome: &Result<T, QueryError<E>>,
) {
    let guarded = |name: &str, f: &dyn Fn()| {
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            tracing::error!("query {name} callback panicked: {}", panic_message(&*payload));
        }
    };
    match outcome {
        Ok(data) => {
            if let Some(cb) = &options.on_success {
                guarded("on_success", &|| cb(data));
            }
            if let Some(cb) = &options.on_settled {
                guarded("on_settled", &|| cb(Some(data), None));
            }
        }
        Err(error) => {
            if let Some(cb) = &options.on_error {
                guarded("on_error", &|| cb(error));
            }
            if let Some(cb) = &options.on_settled {
                guarded("on_settled", &|| cb(None, Some(error)));
            }
        }
    }
}
