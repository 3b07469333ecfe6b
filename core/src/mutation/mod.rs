//! Mutations: writes with retries, a typed context for their callbacks, optimistic writes that
//! reach L2 only once confirmed, scopes that serialise runs, and a listing of every run in the
//! client's mutation cache.
//!
//! Here: the [`Mutation`] handle and one run (`mutate`, with the guard that settles a dropped
//! run); `run` holds the run's bookkeeping on the shared state, `options` and `callbacks` the
//! [`MutationOptions`], `context` the callbacks' context, `state` the public state.

use std::fmt;
use std::sync::Arc;

use crate::error::QueryError;
use crate::events::CacheEvent;
use crate::handle::QueryClient;
use crate::listeners::{ListenerList, Subscription};
use crate::mutations::info::MutationInfo;
use crate::retryer::{Outcome, Retryer, default_retry_delay};
use crate::sync::Mutex;

mod callbacks;
mod context;
mod options;
mod run;
mod state;

pub use context::MutationContext;
use context::Writes;
pub use options::MutationOptions;
use run::guarded;
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

impl<I, T, E, C> fmt::Debug for Mutation<I, T, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutation").field("options", &self.shared.options).finish_non_exhaustive()
    }
}
