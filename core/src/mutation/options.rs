//! [`MutationOptions`]: what a mutation does, its retry policy, its key, scope and meta (its
//! callbacks are in `callbacks`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::context::MutationContext;
use crate::error::QueryError;
use crate::key::QueryKey;
use crate::meta::Meta;
use crate::retryer::{RetryDelayFn, RetryIfFn};
use crate::runtime::BoxFuture;

pub(crate) type MutationFn<I, T, E> =
    Arc<dyn Fn(I, MutationContext) -> BoxFuture<Result<T, E>> + Send + Sync>;
pub(crate) type OnMutate<I, C> = Arc<dyn Fn(I, MutationContext) -> BoxFuture<C> + Send + Sync>;
pub(crate) type OnSuccess<I, T, C> =
    Arc<dyn Fn(T, I, MutationContext<C>) -> BoxFuture<()> + Send + Sync>;
pub(crate) type OnError<I, E, C> =
    Arc<dyn Fn(QueryError<E>, I, MutationContext<C>) -> BoxFuture<()> + Send + Sync>;
pub(crate) type OnSettled<I, T, E, C> = Arc<
    dyn Fn(Option<T>, Option<QueryError<E>>, I, MutationContext<C>) -> BoxFuture<()> + Send + Sync,
>;

/// What a mutation does: a function from input `I` to `Result<T, E>`, callbacks, retries, and
/// optionally a mutation key (for defaults and filters), a scope (runs one at a time) and meta.
///
/// Each callback receives a [`MutationContext`]: the client, the mutation key and meta, and
/// what `on_mutate` returned, typed as `C`. `on_mutate` fixes `C`; callbacks set before it
/// keep working and receive the same context with `()` in place of the value (their closures
/// were typed for `()`, so no value can be silently missing: the compiler rejects a callback
/// set before `on_mutate` that asks for it). Optimistic updates rarely need `C` at all:
/// write with [`MutationContext::set_optimistic`] in `on_mutate` and undo with
/// [`MutationContext::rollback`] in `on_error`. Each callback has a sync form and an `_async`
/// form. Retries default to 0.
///
/// Every callback is guarded, in either form: a panic while it is called (for the sync form,
/// the whole callback) or while its future is polled never unwinds out of
/// [`Mutation::mutate`](super::Mutation::mutate). A panic in `on_mutate` ends the run (see
/// [`on_mutate`](Self::on_mutate)); a panic in `on_success`, `on_error` or `on_settled` is
/// logged with `tracing` and changes neither the result nor the state.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// client.set_query_data(key!("todos"), vec!["write docs".to_string()]).unwrap();
///
/// let add = MutationOptions::new(|title: String| async move { Ok::<_, String>(title.len()) })
///     .mutation_key(key!("todos", "add"))
///     // The builder order does not matter.
///     .on_settled_async(|_len, _error, _title, cx| async move {
///         cx.client.invalidate_queries(key!("todos"), false).await;
///     })
///     .on_mutate(|title: &String, cx| {
///         cx.update_optimistic(key!("todos"), |todos: Option<&Vec<String>>| {
///             let mut todos = todos.cloned().unwrap_or_default();
///             todos.push(title.clone());
///             Some(todos)
///         })
///         .is_ok()
///     })
///     .on_error(|_error, _title, cx| cx.rollback())
///     .on_success(|len, _title, cx| assert_eq!((*len, cx.on_mutate_result), (4, Some(true))));
///
/// assert_eq!(test.block_on(client.mutate(&add, "ship".to_string())).unwrap(), 4);
/// let todos = client.get_query_data::<Vec<String>>(key!("todos")).unwrap().unwrap();
/// assert_eq!(todos, ["write docs", "ship"]);
/// # }
/// ```
pub struct MutationOptions<I, T, E, C = ()> {
    pub(crate) mutation_fn: MutationFn<I, T, E>,
    pub(crate) on_mutate: Option<OnMutate<I, C>>,
    pub(crate) on_success: Option<OnSuccess<I, T, C>>,
    pub(crate) on_error: Option<OnError<I, E, C>>,
    pub(crate) on_settled: Option<OnSettled<I, T, E, C>>,
    pub(crate) retry: Option<u32>,
    pub(crate) retry_delay: Option<RetryDelayFn>,
    pub(crate) retry_if: Option<RetryIfFn<E>>,
    pub(crate) mutation_key: Option<QueryKey>,
    pub(crate) scope: Option<Arc<str>>,
    pub(crate) gc_time: Option<Duration>,
    pub(crate) meta: Option<Meta>,
}

impl<I, T, E, C> Clone for MutationOptions<I, T, E, C> {
    fn clone(&self) -> Self {
        Self {
            mutation_fn: self.mutation_fn.clone(),
            on_mutate: self.on_mutate.clone(),
            on_success: self.on_success.clone(),
            on_error: self.on_error.clone(),
            on_settled: self.on_settled.clone(),
            retry: self.retry,
            retry_delay: self.retry_delay.clone(),
            retry_if: self.retry_if.clone(),
            mutation_key: self.mutation_key.clone(),
            scope: self.scope.clone(),
            gc_time: self.gc_time,
            meta: self.meta.clone(),
        }
    }
}

impl<I, T, E> MutationOptions<I, T, E, ()>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A mutation calling `mutation_fn`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // The function takes one input (use a tuple or struct for several) and returns a future.
    /// let transfer = MutationOptions::new(|(from, to, amount): (String, String, u64)| async move {
    ///     Ok::<_, String>(format!("{amount} from {from} to {to}"))
    /// });
    /// let done = test.block_on(client.mutate(&transfer, ("a".into(), "b".into(), 5))).unwrap();
    /// assert_eq!(done, "5 from a to b");
    /// # }
    /// ```
    pub fn new<F, Fut>(mutation_fn: F) -> Self
    where
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        Self::build(Arc::new(move |input, _| Box::pin(mutation_fn(input))))
    }

    /// A mutation calling `mutation_fn` with the input and a [`MutationContext`] (the client,
    /// the mutation key and meta; TanStack's `MutationFunctionContext`), e.g. to read the
    /// cache or to tag a request with the meta.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("cart"), 2u32).unwrap();
    /// let checkout = MutationOptions::with_context(|extra: u32, cx| async move {
    ///     let in_cart = cx.client.get_query_data::<u32>(key!("cart")).unwrap().unwrap_or(0);
    ///     Ok::<_, String>(in_cart + extra)
    /// });
    /// assert_eq!(test.block_on(client.mutate(&checkout, 1)).unwrap(), 3);
    /// # }
    /// ```
    pub fn with_context<F, Fut>(mutation_fn: F) -> Self
    where
        F: Fn(I, MutationContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        Self::build(Arc::new(move |input, cx| Box::pin(mutation_fn(input, cx))))
    }

    fn build(mutation_fn: MutationFn<I, T, E>) -> Self {
        Self {
            mutation_fn,
            on_mutate: None,
            on_success: None,
            on_error: None,
            on_settled: None,
            retry: None,
            retry_delay: None,
            retry_if: None,
            mutation_key: None,
            scope: None,
            gc_time: None,
            meta: None,
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
    /// A key naming this kind of mutation (TanStack's `mutationKey`): defaults registered with
    /// [`QueryClient::set_mutation_defaults`](crate::QueryClient::set_mutation_defaults) for a
    /// prefix of it apply to options this mutation leaves unset, and
    /// [`MutationFilter`](crate::MutationFilter)s choose runs by it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationDefaults, MutationOptions, QueryClient, QueryClientConfig, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_mutation_defaults(key!("todos"), MutationDefaults::new().retry(2));
    /// let options = MutationOptions::new(|title: String| async move { Ok::<_, String>(title) })
    ///     .mutation_key(key!("todos", "add"));
    /// let mutation = client.mutation(options);
    /// assert_eq!(test.block_on(mutation.mutate("write".to_string())).unwrap(), "write");
    /// # }
    /// ```
    #[must_use]
    pub fn mutation_key(mut self, key: impl Into<QueryKey>) -> Self {
        self.mutation_key = Some(key.into());
        self
    }

    /// The mutation key, if one was set.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{MutationOptions, key};
    ///
    /// let options = MutationOptions::new(|n: u32| async move { Ok::<_, String>(n) });
    /// assert_eq!(options.key(), None);
    /// let options = options.mutation_key(key!("orders", "place"));
    /// assert_eq!(options.key(), Some(&key!("orders", "place")));
    /// ```
    pub fn key(&self) -> Option<&QueryKey> {
        self.mutation_key.as_ref()
    }

    /// Runs of mutations with the same scope id run one at a time, in the order they were
    /// submitted (TanStack v5's `scope: { id }`). `on_mutate` runs at once; the mutation
    /// function waits for the earlier runs of the scope to settle, and the state shows
    /// `is_paused` meanwhile. A failure does not stop the runs after it. Default: no scope
    /// (runs are concurrent).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let (runtime, writes) = (test.runtime(), log.clone());
    /// let save = MutationOptions::new(move |n: u64| {
    ///     let (runtime, writes) = (runtime.clone(), writes.clone());
    ///     async move {
    ///         // The first save is the slowest, yet the second waits for it.
    ///         runtime.sleep(std::time::Duration::from_millis(100 - n * 10)).await;
    ///         writes.lock().unwrap().push(n);
    ///         Ok::<_, String>(n)
    ///     }
    /// })
    /// .scope("document-42");
    /// test.block_on(futures::future::join(client.mutate(&save, 1), client.mutate(&save, 2)));
    /// assert_eq!(*log.lock().unwrap(), [1, 2]);
    /// # }
    /// ```
    #[must_use]
    pub fn scope(mut self, id: impl Into<String>) -> Self {
        self.scope = Some(Arc::from(id.into()));
        self
    }

    /// How long a settled run stays in the client's mutation cache (where
    /// [`QueryClient::find_mutations`](crate::QueryClient::find_mutations) lists it). Default:
    /// the client's `gc_time` (5 minutes).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let ping = MutationOptions::new(|_: ()| async { Ok::<_, String>(()) }).gc_time(Duration::from_secs(10));
    /// test.block_on(client.mutate(&ping, ())).unwrap();
    /// assert_eq!(client.find_mutations(()).len(), 1); // listed while settled...
    /// test.advance(Duration::from_secs(10));
    /// assert!(client.find_mutations(()).is_empty()); // ...for gc_time
    /// # }
    /// ```
    #[must_use]
    pub fn gc_time(mut self, duration: Duration) -> Self {
        self.gc_time = Some(duration);
        self
    }

    /// Free-form information for the callbacks (in their context's `meta`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let save = MutationOptions::with_context(|_: (), cx| async move {
    ///     Ok::<_, String>(cx.meta.get("audit").and_then(|v| v.as_bool()).unwrap_or(false))
    /// })
    /// .meta(serde_json::json!({ "audit": true }));
    /// assert!(test.block_on(client.mutate(&save, ())).unwrap());
    /// # }
    /// ```
    #[must_use]
    pub fn meta(mut self, meta: impl Into<Meta>) -> Self {
        self.meta = Some(meta.into());
        self
    }

    /// Retries after a failed attempt. Default: the
    /// [`MutationDefaults`](crate::MutationDefaults) registered for a prefix of the
    /// [`mutation_key`](Self::mutation_key), else 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let attempts = Arc::new(AtomicU32::new(0));
    /// let count = attempts.clone();
    /// let send = MutationOptions::new(move |_: ()| {
    ///     let n = count.fetch_add(1, Ordering::SeqCst);
    ///     async move { if n == 0 { Err("timeout".to_string()) } else { Ok(n) } }
    /// })
    /// .retry(1); // only for idempotent writes
    /// assert_eq!(test.block_on(client.mutate(&send, ())).unwrap(), 1);
    /// assert_eq!(attempts.load(Ordering::SeqCst), 2);
    /// # }
    /// ```
    #[must_use]
    pub fn retry(mut self, retries: u32) -> Self {
        self.retry = Some(retries);
        self
    }

    /// Delay before retry `attempt`. Default: the registered
    /// [`MutationDefaults`](crate::MutationDefaults)', else
    /// [`default_retry_delay`](crate::default_retry_delay).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let send = MutationOptions::new(|_: ()| async { Err::<(), _>("busy".to_string()) })
    ///     .retry(2)
    ///     .retry_delay(|_attempt| Duration::from_secs(2));
    /// assert!(test.block_on(client.mutate(&send, ())).is_err());
    /// assert_eq!(test.elapsed(), Duration::from_secs(4));
    /// # }
    /// ```
    #[must_use]
    pub fn retry_delay(mut self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.retry_delay = Some(Arc::new(delay));
        self
    }

    /// Retry only errors for which `predicate(attempt, &error)` holds. Default: all.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let send = MutationOptions::new(|_: ()| async { Err::<(), _>(422u16) }) // an HTTP status
    ///     .retry(3)
    ///     .retry_if(|_attempt, status| *status >= 500); // a 4xx would fail again
    /// assert!(test.block_on(client.mutate(&send, ())).is_err());
    /// assert_eq!(test.elapsed(), Duration::ZERO); // not retried
    /// # }
    /// ```
    #[must_use]
    pub fn retry_if(mut self, predicate: impl Fn(u32, &E) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }
}

impl<I, T, E, C> fmt::Debug for MutationOptions<I, T, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutationOptions")
            .field("mutation_key", &self.mutation_key)
            .field("scope", &self.scope)
            .field("retry", &self.retry)
            .field("gc_time", &self.gc_time)
            .finish_non_exhaustive()
    }
}
