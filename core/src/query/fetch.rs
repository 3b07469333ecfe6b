//! The fetch: the slot every caller of one fetch shares, join-or-begin, and recording its
//! outcome (the task itself is in `run`).

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use event_listener::Event;

use super::cell::{CellInner, QueryCell};
use super::effects::Effects;
use super::run::{FetchGuard, run_fetch};
use super::shared::Prior;
use crate::cancel::{CancelSignal, UntilCancelled};
use crate::ctx::Ctx;
use crate::error::{ErasedError, panic_message};
use crate::options::{FetchTag, OptionsInner};
use crate::retryer::Retryer;
use crate::state::{FetchStatus, QueryStatus, RawState};
use crate::stats::Stat;
use crate::storage::record::CodecFn;

/// The outcome of one fetch, shared by every caller that joined it.
pub(crate) struct FetchSlot<T> {
    /// The query generation the fetch was started under.
    pub(crate) generation: u64,
    /// What the fetch is for (its options' tag): decides who joins it.
    pub(crate) tag: FetchTag,
    result: OnceLock<Settled<T>>,
    done: Event,
    /// Cancels the fetch: set, the fetch task drops the fetch at its next poll.
    pub(crate) signal: CancelSignal,
    /// What the query showed before this fetch, restored if it is cancelled.
    revert: Revert,
    /// Callers awaiting this slot now.
    waiters: AtomicUsize,
    /// With `cancel_when_unobserved`: the query, to cancel the fetch when its last caller
    /// leaves and it has no observer.
    abandon: Option<Weak<QueryCell<T>>>,
}

/// The part of a query's state a fetch changes before it settles.
#[derive(Clone)]
struct Revert {
    status: QueryStatus,
    failures: u32,
    reason: Option<ErasedError>,
}

enum Settled<T> {
    Done(Result<T, ErasedError>),
    /// Superseded by a newer fetch of the same key: its outcome is this one's.
    Forward(Arc<FetchSlot<T>>),
}

impl<T: Clone + Send + Sync + 'static> FetchSlot<T> {
    fn new(
        generation: u64,
        tag: FetchTag,
        revert: Revert,
        abandon: Option<Weak<QueryCell<T>>>,
    ) -> Self {
        Self {
            waiters: AtomicUsize::new(0),
            abandon,
            generation,
            tag,
            result: OnceLock::new(),
            done: Event::new(),
            signal: CancelSignal::new(),
            revert,
        }
    }

    pub(super) fn complete(&self, result: Result<T, ErasedError>) {
        if self.result.set(Settled::Done(result)).is_ok() {
            self.done.notify(usize::MAX);
        }
    }

    /// Hands this fetch's waiters to `newer` and cancels this fetch.
    pub(crate) fn forward(&self, newer: Arc<Self>) {
        if self.result.set(Settled::Forward(newer)).is_ok() {
            self.done.notify(usize::MAX);
        }
        self.signal.cancel();
    }

    /// Cancels the fetch: its waiters get [`QueryError::Cancelled`] and the query returns to
    /// the state it had before the fetch. Returns whether this call cancelled it.
    pub(crate) fn cancel(&self) -> bool {
        self.result.get().is_none() && self.signal.cancel()
    }

    /// Waits for the fetch (or the fetch that superseded it) to finish. Dropping the wait does
    /// not cancel the fetch. The data is cloned outside every lock; a panicking `Clone` becomes
    /// [`QueryError::Panicked`].
    pub(crate) async fn wait(self: &Arc<Self>) -> Result<T, ErasedError> {
        let _waiting = Waiting::new(self);
        let mut slot = self.clone();
        loop {
            let next = loop {
                if let Some(settled) = slot.result.get() {
                    break settled;
                }
                let listener = slot.done.listen();
                if let Some(settled) = slot.result.get() {
                    break settled;
                }
                listener.await;
            };
            match next {
                Settled::Done(Ok(data)) => return clone_data(data),
                Settled::Done(Err(error)) => return Err(error.clone()),
                Settled::Forward(newer) => slot = newer.clone(),
            }
        }
    }
}

/// Counts one caller awaiting a slot; the last one to leave an unsettled fetch started with
/// `cancel_when_unobserved` cancels it when the query has no observer either.
struct Waiting<'a, T: Clone + Send + Sync + 'static>(&'a Arc<FetchSlot<T>>);

impl<'a, T: Clone + Send + Sync + 'static> Waiting<'a, T> {
    fn new(slot: &'a Arc<FetchSlot<T>>) -> Self {
        slot.waiters.fetch_add(1, Ordering::AcqRel);
        Self(slot)
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        let slot = self.0;
        if slot.waiters.fetch_sub(1, Ordering::AcqRel) == 1 && slot.result.get().is_none() {
            slot.cancel_if_abandoned();
        }
    }
}

impl<T: Clone + Send + Sync + 'static> FetchSlot<T> {
    /// With `cancel_when_unobserved`: cancels the fetch if no caller awaits it and its query
    /// has no observer.
    pub(crate) fn cancel_if_abandoned(&self) {
        let Some(cell) = self.abandon.as_ref().and_then(Weak::upgrade) else { return };
        let unobserved = cell.lock().observers() == 0;
        if unobserved && self.waiters.load(Ordering::Acquire) == 0 {
            self.cancel();
        }
    }
}

/// Clones cached data for a caller, containing a panic in the user's `Clone`.
pub(crate) fn clone_data<T: Clone>(data: &T) -> Result<T, ErasedError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| data.clone())).map_err(|payload| {
        ErasedError::Panicked(
            format!("the data type's Clone panicked: {}", panic_message(&*payload)).into(),
        )
    })
}

/// Starts a fetch of a cell with options whose error type is erased.
pub(crate) trait Fetcher<T>: Send + Sync {
    /// Starts (or joins) a fetch, locking the cell.
    fn start(self: Arc<Self>, cell: &Arc<QueryCell<T>>, ctx: &Arc<Ctx>) -> Arc<FetchSlot<T>>;

    /// Starts (or joins) a fetch under the cell's lock, held by the caller.
    fn begin(
        self: Arc<Self>,
        cell: &Arc<QueryCell<T>>,
        g: &mut CellInner<T>,
        ctx: &Arc<Ctx>,
        effects: &mut Effects<T>,
    ) -> Arc<FetchSlot<T>>;

    /// How the options persist their data, if they do.
    fn codec(&self) -> Option<CodecFn<T>>;

    /// The options' own stale time, if they set one.
    fn stale_time(&self) -> Option<std::time::Duration>;

    /// The options' own persistence max age, if they set one.
    fn persist_max_age(&self) -> Option<std::time::Duration>;
}

impl Revert {
    fn of<T>(state: &RawState<T>) -> Self {
        Self {
            status: state.status,
            failures: state.fetch_failure_count(),
            reason: state.fetch_failure_reason().cloned(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// Joins the fetch in flight for the current generation, or starts one.
    ///
    /// Joining follows the options' [`FetchTag`]: a page fetch (`NextPage`, `PreviousPage`) of
    /// a query with data joins only a fetch with its own tag, and otherwise supersedes the
    /// fetch in flight: the generation moves on so that the older fetch cannot store, and the
    /// older fetch's waiters are forwarded to the new one (as invalidation does). Options
    /// with a behaviour get a copy of the data the query holds now (cloned under the lock:
    /// the data type's `Clone`, contained).
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
        let mut revert = None;
        if let Some(f) = Self::current_fetch(g) {
            let tag = options.fetch_tag;
            if tag == FetchTag::Refetch || f.tag == tag || g.state.data.is_none() {
                return f.clone();
            }
            // What the superseded fetch would have restored is what this one restores.
            revert = Some(f.revert.clone());
            g.generation += 1;
        }
        let generation = g.generation;
        let abandon = options.cancel_when_unobserved.then(|| Arc::downgrade(self));
        let revert = revert.unwrap_or_else(|| Revert::of(&g.state));
        let slot = Arc::new(FetchSlot::new(generation, options.fetch_tag, revert, abandon));
        let snapshot =
            options.behavior.as_ref().map(|_| g.state.data.as_ref().map(clone_data).transpose());
        ctx.stats.add(Stat::Fetch);
        // A fetch of an older generation is obsolete: its waiters get this fetch's outcome. A
        // cancelled one whose task has not ended yet settles as cancelled now.
        if let Some(older) = g.x().in_flight.replace(slot.clone()) {
            if older.signal.is_cancelled() {
                older.complete(Err(ErasedError::Cancelled));
            } else {
                older.forward(slot.clone());
            }
        }
        g.x().gc_time.set(ctx.gc_time(&options.key, options.gc_time));
        Self::cancel_gc(g, effects);
        if g.state.data.is_none() {
            g.state.status = QueryStatus::Pending;
        }
        g.state.fetch_status = FetchStatus::Fetching;
        Self::changed(g, effects);
        let retryer = Retryer {
            retries: ctx.retry(&options.key, options.retry),
            delay: ctx.retry_delay(&options.key, options.retry_delay.as_ref()),
            retry_if: options.retry_if.clone(),
        };
        // The guard exists before the task is spawned: a runtime that drops the task unpolled
        // (it shut down) still completes the slot, with `Cancelled`.
        let guard = FetchGuard {
            cell: self.clone(),
            ctx: Arc::downgrade(ctx),
            slot: slot.clone(),
            finished: false,
        };
        let meta = ctx.meta(&options.key, options.meta.as_ref());
        let prior = Prior { cold: g.state.data.is_none(), invalidated: g.state.is_invalidated };
        let runtime = ctx.runtime.clone();
        let task = run_fetch(guard, options.clone(), snapshot, retryer, meta, runtime, prior);
        effects.spawns.push(Box::pin(UntilCancelled::new(task, slot.signal.clone())));
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
            Self::set_fetcher(&mut g, options.clone(), &mut effects);
            self.join_or_begin(&mut g, ctx, options, &mut effects)
        };
        effects.run(ctx, &self.key);
        slot
    }

    /// The tag of the fetch in flight for the current generation, if any.
    pub(crate) fn fetching_tag(&self) -> Option<FetchTag> {
        Self::current_fetch(&self.lock()).map(|f| f.tag)
    }

    /// Records the outcome of `slot`'s fetch, then wakes its waiters. A cancelled fetch
    /// restores the state it changed; an obsolete one (older generation, removed query) writes
    /// nothing. Without `ctx` (the client is gone) it only wakes the waiters.
    pub(crate) fn finish(
        self: &Arc<Self>,
        ctx: Option<&Arc<Ctx>>,
        slot: &Arc<FetchSlot<T>>,
        result: Result<T, ErasedError>,
        failures: u32,
        before_wake: impl FnOnce(),
    ) {
        let Some(ctx) = ctx else {
            before_wake();
            slot.complete(result);
            return;
        };
        // Cloned before the lock is taken: the data type's `Clone` is user code.
        let mut result = match result {
            Ok(data) => match clone_data(&data) {
                Ok(stored) => Ok((data, Some(stored))),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            let current = g.generation == slot.generation && !g.detached;
            let ours = g.in_flight().is_some_and(|f| Arc::ptr_eq(f, slot));
            if ours && let Some(x) = g.x_opt() {
                x.in_flight = None;
            }
            if current {
                match &mut result {
                    Ok((_, stored)) => {
                        // The copy made before the lock moves in: no clone under it.
                        if let Some(stored) = stored.take() {
                            Self::store_success(&mut g, ctx, stored, &mut effects);
                        }
                        self.persist(&g, ctx, &mut effects);
                    }
                    Err(ErasedError::Cancelled) => {
                        if ours {
                            g.state.status = slot.revert.status;
                            let (failures, reason) =
                                (slot.revert.failures, slot.revert.reason.clone());
                            let values = failures > 0 || reason.is_some();
                            if let Some(f) = g.state.failure_for(values) {
                                f.fetch_failure_count = failures;
                                effects.discard_error(std::mem::replace(
                                    &mut f.fetch_failure_reason,
                                    reason,
                                ));
                            }
                        }
                    }
                    Err(error) => {
                        g.state.status = QueryStatus::Error;
                        let now = ctx.runtime.system_now();
                        let f = g.state.failure_mut();
                        effects.discard_error(f.error.replace(error.clone()));
                        f.error_updated_at = Some(now);
                        f.fetch_failure_count = failures;
                        effects.discard_error(f.fetch_failure_reason.replace(error.clone()));
                        f.error_update_count = f.error_update_count.saturating_add(1);
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
        slot.complete(result.map(|(data, _)| data));
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
            let f = g.state.failure_mut();
            f.fetch_failure_count = failures;
            effects.discard_error(f.fetch_failure_reason.replace(error));
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

    fn begin(
        self: Arc<Self>,
        cell: &Arc<QueryCell<T>>,
        g: &mut CellInner<T>,
        ctx: &Arc<Ctx>,
        effects: &mut Effects<T>,
    ) -> Arc<FetchSlot<T>> {
        cell.join_or_begin(g, ctx, &self, effects)
    }

    fn codec(&self) -> Option<CodecFn<T>> {
        self.codec
    }

    fn stale_time(&self) -> Option<std::time::Duration> {
        self.stale_time
    }

    fn persist_max_age(&self) -> Option<std::time::Duration> {
        self.persist_max_age
    }
}
