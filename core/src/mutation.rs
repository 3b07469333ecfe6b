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

    /// The async form of [`on_mutate`](Self::on_mutate).
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

/// A runnable mutation with observable state. Created by [`QueryClient::mutation`]; cheap to
/// clone (clones share state and listeners).
pub struct Mutation<I, T, E, C = ()> {
    shared: Arc<MutationShared<I, T, E, C>>,
}

struct MutationShared<I, T, E, C> {
    runtime: Runtime,
    options: MutationOptions<I, T, E, C>,
    state: Mutex<(MutationState<T, E>, u64)>,
    listeners: ListenerList<MutationState<T, E>>,
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
                state: Mutex::new((MutationState::default(), 0)),
                listeners: ListenerList::new(),
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> MutationState<T, E> {
        self.shared.state.lock().0.clone()
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
        let (state, version) = {
            let mut guard = self.shared.state.lock();
            f(&mut guard.0);
            guard.1 += 1;
            (guard.0.clone(), guard.1)
        };
        self.shared.listeners.notify(&state, version);
    }

    /// Runs the mutation: `on_mutate`, then the function with retries, then `on_success` or
    /// `on_error`, then `on_settled`. A panic in the function or in `on_mutate` becomes
    /// [`QueryError::Panicked`].
    ///
    /// # Errors
    ///
    /// The function's error after its retries, or a panic.
    pub async fn mutate(&self, input: I) -> Result<T, QueryError<E>> {
        let options = &self.shared.options;
        let runtime = self.shared.runtime.clone();
        let now = runtime.system_now();
        self.update(|s| {
            s.status = MutationStatus::Pending;
            s.submitted_at = Some(now);
            s.error = None;
            s.failure_count = 0;
        });
        let context = match &options.on_mutate {
            Some(on_mutate) => match guarded(on_mutate(input.clone())).await {
                Ok(c) => Some(c),
                Err(message) => {
                    return self.settle(Err(QueryError::Panicked(message)), input, None, 0).await;
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
            .run(
                &runtime,
                || (options.mutation_fn)(input.clone()),
                |failed, _| self.update(|s| s.failure_count = failed),
            )
            .await;
        self.settle(result, input, context, failures).await
    }

    async fn settle(
        &self,
        result: Result<T, QueryError<E>>,
        input: I,
        context: Option<C>,
        failures: u32,
    ) -> Result<T, QueryError<E>> {
        let options = &self.shared.options;
        let now = self.shared.runtime.system_now();
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
                        guarded(cb(data.clone(), input.clone(), context.clone())).await,
                    );
                }
            }
            Err(error) => {
                if let Some(cb) = &options.on_error {
                    log_panic(
                        "on_error",
                        guarded(cb(error.clone(), input.clone(), context.clone())).await,
                    );
                }
            }
        }
        if let Some(cb) = &options.on_settled {
            let (data, error) = match &result {
                Ok(d) => (Some(d.clone()), None),
                Err(e) => (None, Some(e.clone())),
            };
            log_panic("on_settled", guarded(cb(data, error, input, context)).await);
        }
        result
    }
}

async fn guarded<F: Future>(future: F) -> Result<F::Output, Arc<str>> {
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
