//! One run's bookkeeping on a mutation's shared state: updating the state and telling the
//! listeners, reporting the run to the mutation cache, running the settle callbacks, the final
//! state, and the run's removal from the cache `gc_time` later.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::context::Writes;
use super::{MutationContext, MutationShared, MutationState, MutationStatus, RunGuard, Slot};
use crate::ctx::Ctx;
use crate::error::{QueryError, panic_message};
use crate::events::CacheEvent;
use crate::mutations::info::MutationInfo;

impl<I, T, E, C> MutationShared<I, T, E, C>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    /// Changes the state (only if it shows run `run`, when given) and tells the listeners.
    pub(super) fn update(&self, run: Option<u64>, f: impl FnOnce(&mut Slot<I, T, E, C>)) {
        let notice = {
            let mut slot = self.state.lock();
            if run.is_some_and(|run| slot.run != run) {
                return;
            }
            f(&mut slot);
            slot.version += 1;
            (slot.state.clone(), slot.version)
        };
        self.listeners.notify(&notice.0, notice.1);
    }

    /// Changes run `id`'s state here and its listing in the mutation cache (with an event).
    pub(super) fn report(
        &self,
        ctx: &Ctx,
        id: u64,
        state: impl FnOnce(&mut MutationState<I, T, E, C>),
        info: impl FnOnce(&mut MutationInfo),
    ) {
        self.update(Some(id), |slot| state(&mut slot.state));
        if let Some(info) = ctx.mutations.update(id, info) {
            ctx.emit(&CacheEvent::MutationUpdated(info));
        }
    }

    /// Runs the callbacks for the outcome, then settles the run.
    pub(super) async fn settle(
        &self,
        guard: &mut RunGuard<'_, I, T, E, C>,
        result: Result<T, QueryError<E>>,
        input: I,
        base: &MutationContext,
        context: Option<C>,
    ) -> Result<T, QueryError<E>> {
        let ctx = self.client.ctx.clone();
        if result.is_ok() {
            base.writes.confirm(&ctx);
        }
        guard.outcome = Some(result.clone());
        let options = &self.options;
        let cx = base.with_result(context);
        match &result {
            Ok(data) => {
                if let Some(cb) = &options.on_success {
                    log_panic(
                        "on_success",
                        guarded(|| cb(data.clone(), input.clone(), cx.clone())).await,
                    );
                }
            }
            Err(error) => {
                if let Some(cb) = &options.on_error {
                    log_panic(
                        "on_error",
                        guarded(|| cb(error.clone(), input.clone(), cx.clone())).await,
                    );
                }
            }
        }
        if let Some(cb) = &options.on_settled {
            let (data, error) = match &result {
                Ok(d) => (Some(d.clone()), None),
                Err(e) => (None, Some(e.clone())),
            };
            log_panic("on_settled", guarded(|| cb(data, error, input, cx)).await);
        }
        guard.finish();
        result
    }

    /// Records run `id`'s final state here and in the mutation cache, releases its scope and
    /// optimistic writes, and schedules its removal from the mutation cache.
    pub(super) fn finish(
        &self,
        id: u64,
        result: &Result<T, QueryError<E>>,
        failures: u32,
        writes: &Writes,
    ) {
        let ctx = self.client.ctx.clone();
        if result.is_err() {
            writes.release();
        }
        let now = ctx.runtime.system_now();
        let message = result.as_ref().err().map(error_message);
        self.report(
            &ctx,
            id,
            |s| {
                s.settled_at = Some(now);
                s.is_paused = false;
                match result {
                    Ok(data) => {
                        s.status = MutationStatus::Success;
                        s.data = Some(data.clone());
                        s.error = None;
                        s.failure_count = 0;
                        s.failure_reason = None;
                    }
                    Err(error) => {
                        s.status = MutationStatus::Error;
                        s.data = None;
                        s.error = Some(error.clone());
                        s.failure_count = failures;
                        s.failure_reason = Some(error.clone());
                    }
                }
            },
            |i| {
                i.settled_at = Some(now);
                i.is_paused = false;
                i.status =
                    if result.is_ok() { MutationStatus::Success } else { MutationStatus::Error };
                i.failure_count = if result.is_ok() { 0 } else { failures };
                i.error = message;
            },
        );
        if let Some(scope) = &self.options.scope {
            ctx.mutations.leave_scope(scope, id);
        }
        let gc_time = self.options.gc_time.unwrap_or(ctx.config.gc_time);
        schedule_removal(&ctx, id, gc_time);
    }
}

/// The message of a mutation error for the untyped listing. `E` need not be `Display`; the
/// listing says what kind of error it was.
fn error_message<E>(error: &QueryError<E>) -> String {
    match error {
        QueryError::Failed(_) => "the mutation function failed".to_string(),
        QueryError::Panicked(message) | QueryError::Restored(message) => message.to_string(),
        QueryError::Cancelled => "cancelled".to_string(),
        QueryError::TypeMismatch(mismatch) => mismatch.to_string(),
    }
}

/// Removes run `id` from the mutation cache `gc_time` from now (never, for a time too long to
/// represent). The task holds the client weakly.
fn schedule_removal(ctx: &Arc<Ctx>, id: u64, gc_time: Duration) {
    if gc_time.as_nanos() >= u128::from(u64::MAX) {
        return;
    }
    let weak = Arc::downgrade(ctx);
    let runtime = ctx.runtime.clone();
    ctx.runtime.spawn(Box::pin(async move {
        runtime.sleep(gc_time).await;
        if let Some(ctx) = weak.upgrade()
            && let Some(info) = ctx.mutations.remove(id)
        {
            ctx.emit(&CacheEvent::MutationRemoved(info));
        }
    }));
}

/// Calls a callback and awaits the future it returns, turning a panic in either step into the
/// panic's message. The sync forms of the callbacks run the user's code in the call itself.
pub(super) async fn guarded<F: Future>(call: impl FnOnce() -> F) -> Result<F::Output, Arc<str>> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(call))
        .map_err(|payload| panic_message(&*payload))?;
    AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| panic_message(&*payload))
}

fn log_panic(name: &str, outcome: Result<(), Arc<str>>) {
    if let Err(message) = outcome {
        tracing::error!("mutation {name} callback panicked: {message}");
    }
}
