//! Mutations: writes with retries, a typed context for their callbacks, optimistic writes that
//! reach L2 only once confirmed, scopes that serialise runs, and a listing of every run in the
//! client's mutation cache.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::ctx::Ctx;
use crate::error::{QueryError, panic_message};
use crate::events::CacheEvent;
use crate::handle::QueryClient;
use crate::listeners::{ListenerList, Subscription};
use crate::mutations::info::MutationInfo;
use crate::retryer::{Outcome, Retryer, default_retry_delay};
use crate::sync::Mutex;

mod callbacks;
mod context;
mod options;
mod state;

pub use context::MutationContext;
use context::Writes;
pub use options::MutationOptions;
pub use state::{MutationState, MutationStatus};

/// A runnable mutation with observable state (TanStack's `MutationObserver`). Created by
/// [`QueryClient::mutation`]; cheap to clone (clones share state and listeners). Its state is
/// that of the latest run it started; for a single call without state, use
/// [`QueryClient::mutate`].
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{MutationOptions, MutationStatus, QueryClient, QueryClientConfig};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let double = client.mutation(MutationOptions::new(|n: u32| async move { Ok::<_, String>(n * 2) }));
/// assert_eq!(test.block_on(double.mutate(21)).unwrap(), 42);
/// let state = double.state();
/// assert_eq!((state.status, state.data, state.variables), (MutationStatus::Success, Some(42), Some(21)));
/// # }
/// ```
///
/// ## Optimistic update with rollback
///
/// `on_mutate` shows the expected result at once with
/// [`MutationContext::update_optimistic`] (or [`set_optimistic`](MutationContext::set_optimistic)):
/// every reader and observer sees it while the request runs, but it reaches L2 storage only if
/// the mutation succeeds. `on_error` puts back what it replaced with
/// [`MutationContext::rollback`]; `on_settled` invalidates the key so that the server's answer
/// replaces the guess either way.
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::{Arc, Mutex};
/// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, QueryOptions, key};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let todos = QueryOptions::new(key!("todos"), || async { Ok::<_, String>(vec!["write docs".to_string()]) });
/// let observer = client.watch(&todos);
/// let shown = Arc::new(Mutex::new(Vec::new()));
/// let log = shown.clone();
/// let _subscription = observer.subscribe(move |s| log.lock().unwrap().push(s.data.clone().unwrap_or_default()));
/// test.run_until_idle(); // the observer fetched the list
///
/// // The server rejects the new item.
/// let add = client.mutation(
///     MutationOptions::new(|_title: String| async { Err::<(), _>("server said no".to_string()) })
///         .retry(0)
///         .on_mutate(|title: &String, cx| {
///             cx.update_optimistic(key!("todos"), |old: Option<&Vec<String>>| {
///                 Some([old.cloned().unwrap_or_default(), vec![title.clone()]].concat())
///             })
///             .unwrap();
///         })
///         .on_error(|_error, _title, cx| cx.rollback())
///         .on_settled_async(|_data, _error, _title, cx| async move {
///             cx.client.invalidate_queries(key!("todos"), true).await;
///         }),
/// );
/// assert!(test.block_on(add.mutate("ship".to_string())).is_err());
/// assert!(add.state().is_error());
///
/// let shown = shown.lock().unwrap();
/// assert!(shown.contains(&vec!["write docs".to_string(), "ship".to_string()])); // the guess, at once
/// assert_eq!(shown.last().unwrap(), &vec!["write docs".to_string()]); // rolled back
/// # }
/// ```
pub struct Mutation<I, T, E, C = ()> {
    shared: Arc<MutationShared<I, T, E, C>>,
}

struct MutationShared<I, T, E, C> {
    client: QueryClient,
    options: MutationOptions<I, T, E, C>,
    state: Mutex<Slot<I, T, E, C>>,
    listeners: ListenerList<MutationState<I, T, E, C>>,
}

/// The state with its bookkeeping.
struct Slot<I, T, E, C> {
    state: MutationState<I, T, E, C>,
    /// Bumped on every change; listeners see the newest state.
    version: u64,
    /// The id of the latest run this handle started: older runs do not touch the state.
    run: u64,
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
    pub(crate) fn new(client: QueryClient, options: MutationOptions<I, T, E, C>) -> Self {
        Self {
            shared: Arc::new(MutationShared {
                client,
                options,
                state: Mutex::new(Slot { state: MutationState::default(), version: 0, run: 0 }),
                listeners: ListenerList::new(),
            }),
        }
    }

    /// The current state.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let divide = client.mutation(MutationOptions::new(|n: u32| async move {
    ///     if n == 0 { Err("division by zero".to_string()) } else { Ok(100 / n) }
    /// }));
    /// assert!(divide.state().is_idle());
    /// let _ = test.block_on(divide.mutate(0));
    /// let state = divide.state();
    /// assert!(state.is_error());
    /// assert_eq!(state.error.unwrap().failed().map(String::as_str), Some("division by zero"));
    /// # }
    /// ```
    pub fn state(&self) -> MutationState<I, T, E, C> {
        self.shared.state.lock().state.clone()
    }

    /// Calls `listener` on every state change until the subscription is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let save = client.mutation(MutationOptions::new(|s: String| async move { Ok::<_, String>(s.len()) }));
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let subscription = save.subscribe(move |state| log.lock().unwrap().push((state.status, state.data)));
    /// test.block_on(save.mutate("hello".to_string())).unwrap();
    /// drop(subscription); // no more calls
    /// assert_eq!(seen.lock().unwrap().last(), Some(&(pystackquery_core::MutationStatus::Success, Some(5))));
    /// # }
    /// ```
    pub fn subscribe(
        &self,
        listener: impl Fn(&MutationState<I, T, E, C>) + Send + Sync + 'static,
    ) -> Subscription {
        let id = self.shared.listeners.add(Box::new(move |state, _| listener(state)));
        let shared = self.shared.clone();
        Subscription::new(move || {
            shared.listeners.remove(id);
        })
    }

    /// Back to idle. A run in flight goes on (and stays in the mutation cache) but no longer
    /// changes this handle's state.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let save = client.mutation(MutationOptions::new(|n: u32| async move { Ok::<_, String>(n) }));
    /// test.block_on(save.mutate(1)).unwrap();
    /// assert!(save.state().is_success());
    /// save.reset(); // e.g. when a form is closed
    /// let state = save.state();
    /// assert!(state.is_idle() && state.data.is_none() && state.variables.is_none());
    /// # }
    /// ```
    pub fn reset(&self) {
        self.shared.update(None, |slot| {
            slot.run = 0;
            slot.state = MutationState::default();
        });
    }

    /// Runs the mutation: `on_mutate`, then (in its scope's turn) the function with retries,
    /// then `on_success` or `on_error`, then `on_settled`; the state settles after them. A panic
    /// in the function, in `on_mutate`, or in the retry predicate or delay becomes
    /// [`QueryError::Panicked`]; a panic in another callback is logged. This future never
    /// unwinds.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future before the function's outcome is known drops whatever it
    /// was awaiting (the `on_mutate` future, its turn in the scope, the function's future, or
    /// a retry delay): the state becomes [`MutationStatus::Error`] with
    /// [`QueryError::Cancelled`] and its `settled_at` time, listeners are told, and no callback
    /// runs for it (not `on_error`, not `on_settled`); its optimistic writes stay unconfirmed
    /// (not persisted). Dropped while a callback runs after the outcome is known, the state
    /// settles with that outcome. The state is only changed if it still shows this run.
    ///
    /// # Errors
    ///
    /// The function's error after its retries, a panic, or [`QueryError::Cancelled`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let add = MutationOptions::new(|title: String| async move { Ok::<_, String>(title) })
    ///     .on_success(|title, _input, cx| {
    ///         cx.client.update_query_data(key!("todos"), |old: Option<&Vec<String>>| {
    ///             let mut todos = old.cloned().unwrap_or_default();
    ///             todos.push(title.clone());
    ///             todos
    ///         }).unwrap();
    ///     });
    /// let add = client.mutation(add);
    /// assert_eq!(test.block_on(add.mutate("write docs".to_string())).unwrap(), "write docs");
    /// assert_eq!(client.get_query_data::<Vec<String>>(key!("todos")).unwrap().unwrap(), ["write docs"]);
    /// # }
    /// ```
    pub async fn mutate(&self, input: I) -> Result<T, QueryError<E>> {
        let shared = &self.shared;
        let ctx = shared.client.ctx.clone();
        let options = &shared.options;
        let id = ctx.mutations.next_id();
        let now = ctx.runtime.system_now();
        let info = MutationInfo::new(id, options.mutation_key.clone(), options.scope.clone(), now);
        ctx.mutations.add(info.clone());
        ctx.emit(&CacheEvent::MutationAdded(info));
        if let Some(scope) = &options.scope {
            ctx.mutations.enter_scope(scope, id);
        }
        shared.update(None, |slot| {
            slot.run = id;
            slot.state = MutationState {
                status: MutationStatus::Pending,
                variables: Some(input.clone()),
                submitted_at: Some(now),
                ..MutationState::default()
            };
        });
        let base = MutationContext {
            client: shared.client.clone(),
            mutation_key: options.mutation_key.clone(),
            meta: options.meta.clone().unwrap_or_default(),
            on_mutate_result: None,
            writes: Arc::new(Writes::default()),
        };
        let mut guard = RunGuard {
            shared,
            id,
            failures: 0,
            outcome: None,
            writes: Some(base.writes.clone()),
            armed: true,
        };
        let context = match &options.on_mutate {
            Some(on_mutate) => match guarded(|| on_mutate(input.clone(), base.clone())).await {
                Ok(c) => {
                    shared.update(Some(id), |slot| slot.state.context = Some(c.clone()));
                    Some(c)
                }
                Err(message) => {
                    let error = QueryError::Panicked(
                        format!("mutation on_mutate callback panicked: {message}").into(),
                    );
                    return shared.settle(&mut guard, Err(error), input, &base, None).await;
                }
            },
            None => None,
        };
        if let Some(scope) = &options.scope
            && !ctx.mutations.is_first(scope, id)
        {
            shared.report(&ctx, id, |s| s.is_paused = true, |i| i.is_paused = true);
            ctx.mutations.wait_turn(scope, id).await;
            shared.report(&ctx, id, |s| s.is_paused = false, |i| i.is_paused = false);
        }
        let retryer = Retryer {
            retries: options.retry.unwrap_or(0),
            delay: options.retry_delay.clone().unwrap_or_else(|| Arc::new(default_retry_delay)),
            retry_if: options.retry_if.clone(),
        };
        let Outcome { result, failures } = retryer
            .run_as(
                &ctx.runtime,
                "mutation function",
                || (options.mutation_fn)(input.clone(), base.clone()),
                |failed, error| {
                    let reason = QueryError::Failed(error.clone());
                    shared.report(
                        &ctx,
                        id,
                        |s| {
                            s.failure_count = failed;
                            s.failure_reason = Some(reason.clone());
                        },
                        |i| i.failure_count = failed,
                    );
                },
            )
            .await;
        guard.failures = failures;
        shared.settle(&mut guard, result, input, &base, context).await
    }
}

impl<I, T, E, C> MutationShared<I, T, E, C>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    /// Changes the state (only if it shows run `run`, when given) and tells the listeners.
    fn update(&self, run: Option<u64>, f: impl FnOnce(&mut Slot<I, T, E, C>)) {
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
    fn report(
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
    async fn settle(
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
    fn finish(&self, id: u64, result: &Result<T, QueryError<E>>, failures: u32, writes: &Writes) {
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

/// Settles a run if its `mutate()` future is dropped: with its outcome when the function has
/// finished (a callback was running), else as [`QueryError::Cancelled`].
struct RunGuard<'a, I, T, E, C>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    shared: &'a MutationShared<I, T, E, C>,
    id: u64,
    failures: u32,
    outcome: Option<Result<T, QueryError<E>>>,
    writes: Option<Arc<Writes>>,
    armed: bool,
}

impl<I, T, E, C> RunGuard<'_, I, T, E, C>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    fn finish(&mut self) {
        if !std::mem::replace(&mut self.armed, false) {
            return;
        }
        let result = self.outcome.take().unwrap_or(Err(QueryError::Cancelled));
        let writes = self.writes.take().unwrap_or_default();
        self.shared.finish(self.id, &result, self.failures, &writes);
    }
}

impl<I, T, E, C> Drop for RunGuard<'_, I, T, E, C>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.finish();
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
        f.debug_struct("Mutation").field("options", &self.shared.options).finish_non_exhaustive()
    }
}
