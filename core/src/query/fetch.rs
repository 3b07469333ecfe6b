//! The fetch: the slot every caller of one fetch shares, join-or-begin, the run loop with
//! retries and panic capture, and the guard that always completes the slot.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use event_listener::Event;

use super::cell::{CellInner, QueryCell};
use super::effects::Effects;
use crate::ctx::Ctx;
use crate::error::{ErasedError, QueryError, panic_message};
use crate::options::OptionsInner;
use crate::retryer::{Outcome, Retryer};
use crate::state::{FetchStatus, QueryStatus};
use crate::storage::record::CodecFn;

/// The outcome of one fetch, shared by every caller that joined it.
pub(crate) struct FetchSlot<T> {
    /// The query generation the fetch was started under.
    pub(crate) generation: u64,
    pub(crate) result: OnceLock<Result<T, ErasedError>>,
    pub(crate) done: Event,
}

impl<T: Clone> FetchSlot<T> {
    pub(crate) fn new(generation: u64) -> Self {
        Self { generation, result: OnceLock::new(), done: Event::new() }
    }

    pub(crate) fn complete(&self, result: Result<T, ErasedError>) {
        let _ = self.result.set(result);
        self.done.notify(usize::MAX);
    }

    /// Waits for the fetch to finish. Dropping the wait does not cancel the fetch.
    pub(crate) async fn wait(&self) -> Result<T, ErasedError> {
        loop {
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            let listener = self.done.listen();
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            listener.await;
        }
    }
}

/// Starts a fetch of a cell with options whose error type is erased.
pub(crate) trait Fetcher<T>: Send + Sync {
    fn start(self: Arc<Self>, cell: &Arc<QueryCell<T>>, ctx: &Arc<Ctx>) -> Arc<FetchSlot<T>>;

    /// How the options persist their data, if they do.
    fn codec(&self) -> Option<CodecFn<T>>;
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// Joins the fetch in flight for the current generation, or starts one.
    pub(crate) fn join_or_begin<E>(
        self: &Arc<Self>,
        g: &mut CellInner<T>,
        ctx: &Arc<Ctx>,
        options: &Arc<OptionsInner<T, E>>,
        effects: &mut Effects<T>,
    ) -> Arc<FetchSlot<T>>
    where
        E: fmt::Display + Send + Sync + 'static,
    {
        if let Some(f) = &g.in_flight
            && f.generation == g.generation
        {
            return f.clone();
        }
        let generation = g.generation;
        let slot = Arc::new(FetchSlot::new(generation));
        g.in_flight = Some(slot.clone());
        g.removal.set_gc_time(options.gc_time.unwrap_or(ctx.config.gc_time));
        Self::cancel_gc(g, effects);
        if g.state.data.is_none() {
            g.state.status = QueryStatus::Pending;
        }
        g.state.fetch_status = FetchStatus::Fetching;
        Self::changed(g, effects);
        let task = run_fetch(self.clone(), ctx.clone(), options.clone(), generation, slot.clone());
        effects.spawns.push(Box::pin(task));
        slot
    }

    /// Starts (or joins) a fetch with `options` and remembers them for later refetches.
    pub(crate) fn fetch_with<E>(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        options: &Arc<OptionsInner<T, E>>,
    ) -> Arc<FetchSlot<T>>
    where
        E: fmt::Display + Send + Sync + 'static,
    {
        let mut effects = Effects::none();
        let slot = {
            let mut g = self.lock();
            g.fetcher = Some(options.clone());
            self.join_or_begin(&mut g, ctx, options, &mut effects)
        };
        effects.run(ctx, &self.key);
        slot
    }

    /// Records the outcome of a fetch started under `generation`.
    pub(crate) fn finish(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        generation: u64,
        slot: &Arc<FetchSlot<T>>,
        result: Result<T, ErasedError>,
        failures: u32,
        before_wake: impl FnOnce(),
    ) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            let current = g.generation == generation && !g.detached;
            let ours = g.in_flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, slot));
            if ours {
                g.in_flight = None;
            }
            if current {
                match &result {
                    Ok(data) => {
                        g.state.status = QueryStatus::Success;
                        g.state.data = Some(data.clone());
                        g.state.error = None;
                        g.state.data_updated_at = Some(ctx.runtime.system_now());
                        g.state.fetch_failure_count = 0;
                        g.state.fetch_failure_reason = None;
                        g.fresh_at = Some(ctx.runtime.now());
                        self.persist(&g, ctx, &mut effects);
                    }
                    Err(error) => {
                        g.state.status = QueryStatus::Error;
                        g.state.error = Some(error.clone());
                        g.state.error_updated_at = Some(ctx.runtime.system_now());
                        g.state.fetch_failure_count = failures;
                        g.state.fetch_failure_reason = Some(error.clone());
                    }
                }
            }
            if ours {
                g.state.fetch_status = Self::idle_fetch_status(&g);
            }
            if current || ours {
                Self::changed(&mut g, &mut effects);
            }
            self.maybe_schedule_gc(&mut g, ctx, &mut effects);
        }
        effects.run(ctx, &self.key);
        before_wake();
        slot.complete(result);
    }

    /// Records a failed attempt that will be retried.
    pub(crate) fn record_failure(
        &self,
        ctx: &Arc<Ctx>,
        generation: u64,
        failures: u32,
        error: ErasedError,
    ) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            if g.generation != generation || g.detached {
                return;
            }
            g.state.fetch_failure_count = failures;
            g.state.fetch_failure_reason = Some(error);
            Self::changed(&mut g, &mut effects);
        }
        effects.run(ctx, &self.key);
    }
}

impl<T, E> Fetcher<T> for OptionsInner<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    fn start(self: Arc<Self>, cell: &Arc<QueryCell<T>>, ctx: &Arc<Ctx>) -> Arc<FetchSlot<T>> {
        cell.fetch_with(ctx, &self)
    }

    fn codec(&self) -> Option<CodecFn<T>> {
        self.codec
    }
}

/// Finishes the slot with [`QueryError::Cancelled`] if the fetch task is dropped unfinished
/// (the runtime shut down), so that no caller waits forever.
pub(crate) struct FetchGuard<T: Clone + Send + Sync + 'static> {
    pub(crate) cell: Arc<QueryCell<T>>,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) generation: u64,
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
        self.cell.finish(&self.ctx, self.generation, &self.slot, result, failures, before_wake);
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for FetchGuard<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.cell.finish(
                &self.ctx,
                self.generation,
                &self.slot,
                Err(ErasedError::Cancelled),
                0,
                || {},
            );
        }
    }
}

/// One fetch: attempts with backoff, panics caught, callbacks run, outcome recorded.
pub(crate) async fn run_fetch<T, E>(
    cell: Arc<QueryCell<T>>,
    ctx: Arc<Ctx>,
    options: Arc<OptionsInner<T, E>>,
    generation: u64,
    slot: Arc<FetchSlot<T>>,
) where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    let retryer = Retryer {
        retries: options.retry.unwrap_or(ctx.config.retry),
        delay: options.retry_delay.clone().unwrap_or_else(|| ctx.config.retry_delay.clone()),
        retry_if: options.retry_if.clone(),
    };
    let runtime = ctx.runtime.clone();
    let mut guard = FetchGuard { cell, ctx, generation, slot, finished: false };
    let Outcome { result, failures } = retryer
        .run(
            &runtime,
            || (options.query_fn)(),
            |failed, error| {
                let erased = ErasedError::Failed(error.clone());
                guard.cell.record_failure(&guard.ctx, generation, failed, erased);
            },
        )
        .await;
    let erased = result.clone().map_err(|e| ErasedError::from_typed(&e));
    // Callbacks run after the state is written and before waiters wake, so a caller that
    // awaited the fetch observes their effects.
    guard.finish(erased, failures, || run_callbacks(&options, &result));
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
