//! Mutations: writes with retries, typed optimistic-update context, and listeners.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;

use crate::error::{QueryError, panic_message};
use crate::listeners::{ListenerList, Subscription};
use crate::retryer::{Outcome, RetryDelayFn, RetryIfFn, Retryer, default_retry_delay};
use crate::runtime::{BoxFuture, Runtime};
use crate::sync::Mutex;

type MutationFn<I, T, E> = Arc<dyn Fn(I) -> BoxFuture<Result<T, E>> + Send + Sync>;
type OnMutate<I, C> = Arc<dyn Fn(I) -> BoxFuture<C> + Send + Sync>;
type OnSuccess<I, T, C> = Arc<dyn Fn(T, I, Option<C>) -> BoxFuture<()> + Send + Sync>;
type OnError<I, E, C> = Arc<dyn Fn(QueryError<E>, I, Option<C>) -> BoxFuture<()> + Send + Sync>;
type OnSettled<I, T, E, C> =
    Arc<dyn Fn(Option<T>, Option<QueryError<E>>, I, Option<C>) -> BoxFuture<()> + Send + Sync>;

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

/// What a mutation does: a function from input `I` to `Result<T, E>`, callbacks, retries.
///
/// `C` is the context `on_mutate` returns (for optimistic updates: the value to roll back
/// to); `on_success`, `on_error` and `on_settled` receive it, typed. Set `on_mutate` first: it
/// fixes `C`. Each callback has a sync form and an `_async` form. Retries default to 0.
///
/// Every callback is guarded, in either form: a panic while it is called (for the sync form,
/// the whole callback) or while its future is polled never unwinds out of
/// [`Mutation::mutate`]. A panic in `on_mutate` ends the run (see
/// [`on_mutate`](Self::on_mutate)); a panic in `on_success`, `on_error` or `on_settled` is
/// logged with `tracing` and changes neither the result nor the state.
///
/// # Examples
///
/// ```
/// use pystackquery_core::MutationOptions;
///
/// let options = MutationOptions::new(|title: String| async move { Ok::<_, String>(title.len()) })
///     .on_mutate(|title: &String| format!("previous list before adding {title}"))
///     .on_error(|_err, _title, rollback: Option<&String>| {
///         assert!(rollback.is_some());
///     });
/// # drop(options);
/// ```
pub struct MutationOptions<I, T, E, C = ()> {
    mutation_fn: MutationFn<I, T, E>,
    on_mutate: Option<OnMutate<I, C>>,
    on_success: Option<OnSuccess<I, T, C>>,
    on_error: Option<OnError<I, E, C>>,
    on_settled: Option<OnSettled<I, T, E, C>>,
    retry: u32,
    retry_delay: RetryDelayFn,
    retry_if: Option<RetryIfFn<E>>,
}

impl<I, T, E> MutationOptions<I, T, E, ()>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A mutation calling `mutation_fn`.
    pub fn new<F, Fut>(mutation_fn: F) -> Self
    where
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        Self {
            mutation_fn: Arc::new(move |input| Box::pin(mutation_fn(input))),
            on_mutate: None,
            on_success: None,
            on_error: None,
            on_settled: None,
            retry: 0,
            retry_delay: Arc::new(default_retry_delay),
            retry_if: None,
        }
    }

    /// Runs before the mutation function (e.g. an optimistic `set_query_data`); its return
    /// value is the context the other callbacks receive.
    ///
    /// If it panics, the mutation function is not called and the run fails with
    /// [`QueryError::Panicked`] ("mutation on_mutate callback panicked: ..."); as in TanStack
    /// Query, `on_error` and `on_settled` still run, with no context.
    #[must_use]
    pub fn on_mutate<C>(
        self,
        f: impl Fn(&I) -> C + Send + Sync + 'static,
    ) -> MutationOptions<I, T, E, C>
    where
        C: Clone + Send + Sync + 'static,
    {
        self.on_mutate_async(move |input: I| std::future::ready(f(&input)))
    }

    /// The async form of [`on_mutate`](Self::on_mutate); a panic while the future is created or
    /// polled is handled the same way.
    #[must_use]
    pub fn on_mutate_async<C, Fut>(
        self,
        f: impl Fn(I) -> Fut + Send + Sync + 'static,
    ) -> MutationOptions<I, T, E, C>
    where
        C: Clone + Send + Sync + 'static,
        Fut: Future<Output = C> + Send + 'static,
    {
        let on_success = self
            .on_success
            .map(|cb| -> OnSuccess<I, T, C> { Arc::new(move |t, i, _| cb(t, i, None)) });
        let on_error =
            self.on_error.map(|cb| -> OnError<I, E, C> { Arc::new(move |e, i, _| cb(e, i, None)) });
        let on_settled = self
            .on_settled
            .map(|cb| -> OnSettled<I, T, E, C> { Arc::new(move |t, e, i, _| cb(t, e, i, None)) });
        MutationOptions {
            mutation_fn: self.mutation_fn,
            on_mutate: Some(Arc::new(move |input| Box::pin(f(input)))),
            on_success,
            on_error,
            on_settled,
            retry: self.retry,
            retry_delay: self.retry_delay,
            retry_if: self.retry_if,
        }
    }
}

impl<I, T, E, C> MutationOptions<I, T, E, C>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    /// Called with the result, the input and the context after a success.
    #[must_use]
    pub fn on_success(self, f: impl Fn(&T, &I, Option<&C>) + Send + Sync + 'static) -> Self {
        self.on_success_async(move |t, i, c| {
            f(&t, &i, c.as_ref());
            std::future::ready(())
        })
    }

    /// The async form of [`on_success`](Self::on_success).
    #[must_use]
    pub fn on_success_async<Fut: Future<Output = ()> + Send + 'static>(
        mut self,
        f: impl Fn(T, I, Option<C>) -> Fut + Send + Sync + 'static,
    ) -> Self {
        self.on_success = Some(Arc::new(move |t, i, c| Box::pin(f(t, i, c))));
        self
    }

    /// Called with the error, the input and the context after a failure (retries exhausted):
    /// the place to roll an optimistic update back.
    #[must_use]
    pub fn on_error(
        self,
        f: impl Fn(&QueryError<E>, &I, Option<&C>) + Send + Sync + 'static,
    ) -> Self {
        self.on_error_async(move |e, i, c| {
            f(&e, &i, c.as_ref());
            std::future::ready(())
        })
    }

    /// The async form of [`on_error`](Self::on_error).
    #[must_use]
    pub fn on_error_async<Fut: Future<Output = ()> + Send + 'static>(
        mut self,
        f: impl Fn(QueryError<E>, I, Option<C>) -> Fut + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Arc::new(move |e, i, c| Box::pin(f(e, i, c))));
        self
    }

    /// Called after every run, successful or not.
    #[must_use]
    pub fn on_settled(
        self,
        f: impl Fn(Option<&T>, Option<&QueryError<E>>, &I, Option<&C>) + Send + Sync + 'static,
    ) -> Self {
        self.on_settled_async(move |t, e, i, c| {
            f(t.as_ref(), e.as_ref(), &i, c.as_ref());
            std::future::ready(())
        })
    }

    /// The async form of [`on_settled`](Self::on_settled).
    #[must_use]
    pub fn on_settled_async<Fut: Future<Output = ()> + Send + 'static>(
        mut self,
        f: impl Fn(Option<T>, Option<QueryError<E>>, I, Option<C>) -> Fut + Send + Sync + 'static,
    ) -> Self {
        self.on_settled = Some(Arc::new(move |t, e, i, c| Box::pin(f(t, e, i, c))));
        self
    }

    /// Retries after a failed attempt. Default: 0.
    #[must_use]
    pub fn retry(mut self, retries: u32) -> Self {
        self.retry = retries;
        self
    }

    /// Delay before retry `attempt`. Default: [`default_retry_delay`].
    #[must_use]
    pub fn retry_delay(
        mut self,
        delay: impl Fn(u32) -> std::time::Duration + Send + Sync + 'static,
    ) -> Self {
        self.retry_delay = Arc::new(delay);
        self
    }

    /// Retry only errors for which `predicate(attempt, &error)` holds. Default: all.
    #[must_use]
    pub fn retry_if(mut self, predicate: impl Fn(u32, &E) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }
}

impl<I, T, E, C> fmt::Debug for MutationOptions<I, T, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutationOptions").field("retry", &self.retry).finish_non_exhaustive()
    }
}

/// A runnable mutation with observable state. Created by [`QueryClient::mutation`](crate::QueryClient::mutation); cheap to
/// clone (clones share state and listeners).
pub struct Mutation<I, T, E, C = ()> {
    shared: Arc<MutationShared<I, T, E, C>>,
}

struct MutationShared<I, T, E, C> {
    runtime: Runtime,
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
    pub(crate) fn new(runtime: Runtime, options: MutationOptions<I, T, E, C>) -> Self {
        Self {
            shared: Arc::new(MutationShared {
                runtime,
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
            retries: options.retry,
            delay: options.retry_delay.clone(),
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
