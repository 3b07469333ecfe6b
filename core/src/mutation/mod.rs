//! Mutations: writes with retries, typed optimistic-update context, and listeners.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;

use crate::error::{QueryError, panic_message};
use crate::listeners::{ListenerList, Subscription};
use crate::retryer::{Outcome, Retryer, default_retry_delay};
use crate::runtime::Runtime;
use crate::sync::Mutex;

mod options;
mod state;

pub use options::MutationOptions;
pub use state::{MutationState, MutationStatus};

/// A runnable mutation with observable state. Created by [`QueryClient::mutation`](crate::QueryClient::mutation); cheap to
/// clone (clones share state and listeners).
pub struct Mutation<I, T, E, C = ()> {
    shared: Arc<MutationShared<I, T, E, C>>,
}

struct MutationShared<I, T, E, C> {
    runtime: Runtime,
    /// The client's count of mutations running (for `QueryClient::is_mutating`).
    running: Arc<AtomicUsize>,
    options: MutationOptions<I, T, E, C>,
    state: Mutex<Slot<T, E>>,
    listeners: ListenerList<MutationState<T, E>>,
}

/// The state with its bookkeeping.
struct Slot<T, E> {
    state: MutationState<T, E>,
    /// Bumped on every change; listeners see the newest state.
    version: u64,
    /// The number of the latest run started by [`Mutation::mutate`].
    run: u64,
}

impl<I, T: Clone, E, C> MutationShared<I, T, E, C> {
    /// Changes the state and tells the listeners.
    fn update(&self, f: impl FnOnce(&mut MutationState<T, E>)) {
        self.update_slot(|slot| f(&mut slot.state));
    }

    /// Changes the state (and the run number) and tells the listeners; returns what `f`
    /// returns.
    fn update_slot<R>(&self, f: impl FnOnce(&mut Slot<T, E>) -> R) -> R {
        let (result, state, version) = {
            let mut slot = self.state.lock();
            let result = f(&mut slot);
            slot.version += 1;
            (result, slot.state.clone(), slot.version)
        };
        self.listeners.notify(&state, version);
        result
    }

    /// Marks run `run` cancelled, if the state still shows it running.
    fn cancel(&self, run: u64) {
        let now = self.runtime.system_now();
        let cancelled = {
            let mut slot = self.state.lock();
            if slot.run != run || slot.state.status != MutationStatus::Pending {
                return;
            }
            slot.state.status = MutationStatus::Error;
            slot.state.error = Some(QueryError::Cancelled);
            slot.state.settled_at = Some(now);
            slot.version += 1;
            (slot.state.clone(), slot.version)
        };
        self.listeners.notify(&cancelled.0, cancelled.1);
    }
}

/// Settles a run as [`QueryError::Cancelled`] if its `mutate()` future is dropped before the
/// run settles.
/// Counts a run in the client's running mutations while it is alive (settled or dropped).
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct RunGuard<'a, I, T: Clone, E, C> {
    shared: &'a MutationShared<I, T, E, C>,
    run: u64,
    armed: bool,
}

impl<I, T: Clone, E, C> Drop for RunGuard<'_, I, T, E, C> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.cancel(self.run);
        }
    }
}

impl<I, T, E, C> Clone for Mutation<I, T, E, C> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<I, T, E, C> Mutation<I, T, E, C>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(
        runtime: Runtime,
        running: Arc<AtomicUsize>,
        options: MutationOptions<I, T, E, C>,
    ) -> Self {
        Self {
            shared: Arc::new(MutationShared {
                runtime,
                running,
                options,
                state: Mutex::new(Slot { state: MutationState::default(), version: 0, run: 0 }),
                listeners: ListenerList::new(),
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> MutationState<T, E> {
        self.shared.state.lock().state.clone()
    }

    /// Calls `listener` on every state change until the subscription is dropped.
    pub fn subscribe(
        &self,
        listener: impl Fn(&MutationState<T, E>) + Send + Sync + 'static,
    ) -> Subscription {
        let id = self.shared.listeners.add(Box::new(move |state, _| listener(state)));
        let shared = self.shared.clone();
        Subscription::new(move || {
            shared.listeners.remove(id);
        })
    }

    /// Back to idle.
    pub fn reset(&self) {
        self.update(|s| *s = MutationState::default());
    }

    fn update(&self, f: impl FnOnce(&mut MutationState<T, E>)) {
        self.shared.update(f);
    }

    /// Runs the mutation: `on_mutate`, then the function with retries, then `on_success` or
    /// `on_error`, then `on_settled`. A panic in the function, in `on_mutate`, or in the retry
    /// predicate or delay becomes [`QueryError::Panicked`]; a panic in another callback is
    /// logged. This future never unwinds.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future before it completes drops whatever it was awaiting (the
    /// `on_mutate` future, the mutation function's future, or a retry delay). If the run had
    /// not settled yet, the state becomes [`MutationStatus::Error`] with
    /// [`QueryError::Cancelled`] and its `settled_at` time, listeners are told, and no
    /// callback runs for it (not `on_error`, not `on_settled`). A future dropped while a
    /// callback runs after settling leaves the settled state as it is. The state is only
    /// changed if it still shows this run: dropping an older run does not touch a newer one.
    ///
    /// # Errors
    ///
    /// The function's error after its retries, or a panic.
    pub async fn mutate(&self, input: I) -> Result<T, QueryError<E>> {
        let options = &self.shared.options;
        let runtime = self.shared.runtime.clone();
        let now = runtime.system_now();
        let run = self.shared.update_slot(|slot| {
            slot.run += 1;
            let s = &mut slot.state;
            s.status = MutationStatus::Pending;
            s.submitted_at = Some(now);
            s.error = None;
            s.failure_count = 0;
            slot.run
        });
        let _running = Running::new(&self.shared.running);
        let mut guard = RunGuard { shared: &self.shared, run, armed: true };
        let context = match &options.on_mutate {
            Some(on_mutate) => match guarded(|| on_mutate(input.clone())).await {
                Ok(c) => Some(c),
                Err(message) => {
                    let error = QueryError::Panicked(
                        format!("mutation on_mutate callback panicked: {message}").into(),
                    );
                    return self.settle(&mut guard, Err(error), input, None, 0).await;
                }
            },
            None => None,
        };
        let retryer = Retryer {
            retries: options.retry.unwrap_or(0),
            delay: options.retry_delay.clone().unwrap_or_else(|| Arc::new(default_retry_delay)),
            retry_if: options.retry_if.clone(),
        };
        let Outcome { result, failures } = retryer
            .run_as(
                &runtime,
                "mutation function",
                || (options.mutation_fn)(input.clone()),
                |failed, _| self.update(|s| s.failure_count = failed),
            )
            .await;
        self.settle(&mut guard, result, input, context, failures).await
    }

    /// Records the outcome of the run `guard` watches (disarming it), then runs the callbacks.
    async fn settle(
        &self,
        guard: &mut RunGuard<'_, I, T, E, C>,
        result: Result<T, QueryError<E>>,
        input: I,
        context: Option<C>,
        failures: u32,
    ) -> Result<T, QueryError<E>> {
        let options = &self.shared.options;
        let now = self.shared.runtime.system_now();
        guard.armed = false;
        self.update(|s| {
            s.settled_at = Some(now);
            s.failure_count = failures;
            match &result {
                Ok(data) => {
                    s.status = MutationStatus::Success;
                    s.data = Some(data.clone());
                }
                Err(error) => {
                    s.status = MutationStatus::Error;
                    s.error = Some(error.clone());
                }
            }
        });
        match &result {
            Ok(data) => {
                if let Some(cb) = &options.on_success {
                    log_panic(
                        "on_success",
                        guarded(|| cb(data.clone(), input.clone(), context.clone())).await,
                    );
                }
            }
            Err(error) => {
                if let Some(cb) = &options.on_error {
                    log_panic(
                        "on_error",
                        guarded(|| cb(error.clone(), input.clone(), context.clone())).await,
                    );
                }
            }
        }
        if let Some(cb) = &options.on_settled {
            let (data, error) = match &result {
                Ok(d) => (Some(d.clone()), None),
                Err(e) => (None, Some(e.clone())),
            };
            log_panic("on_settled", guarded(|| cb(data, error, input, context)).await);
        }
        result
    }
}

/// Calls a callback and awaits the future it returns, turning a panic in either step into the
/// panic's message. The sync forms of the callbacks run the user's code in the call itself.
async fn guarded<F: Future>(call: impl FnOnce() -> F) -> Result<F::Output, Arc<str>> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(call))
        .map_err(|payload| panic_message(&*payload))?;
    AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| panic_message(&*payload))
}

fn log_panic(name: &str, outcome: Result<(), Arc<str>>) {
    if let Err(message) = outcome {
        tracing::error!("mutation {name} callback panicked: {message}");
    }
}

impl<I, T, E, C> fmt::Debug for Mutation<I, T, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutation").finish_non_exhaustive()
    }
}
