//! [`MutationOptions`]: what a mutation does, its callbacks and its retry policy.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::error::QueryError;
use crate::key::QueryKey;
use crate::retryer::{RetryDelayFn, RetryIfFn};
use crate::runtime::BoxFuture;

pub(crate) type MutationFn<I, T, E> = Arc<dyn Fn(I) -> BoxFuture<Result<T, E>> + Send + Sync>;
pub(crate) type OnMutate<I, C> = Arc<dyn Fn(I) -> BoxFuture<C> + Send + Sync>;
pub(crate) type OnSuccess<I, T, C> = Arc<dyn Fn(T, I, Option<C>) -> BoxFuture<()> + Send + Sync>;
pub(crate) type OnError<I, E, C> =
    Arc<dyn Fn(QueryError<E>, I, Option<C>) -> BoxFuture<()> + Send + Sync>;
pub(crate) type OnSettled<I, T, E, C> =
    Arc<dyn Fn(Option<T>, Option<QueryError<E>>, I, Option<C>) -> BoxFuture<()> + Send + Sync>;

/// What a mutation does: a function from input `I` to `Result<T, E>`, callbacks, retries.
///
/// `C` is the context `on_mutate` returns (for optimistic updates: the value to roll back
/// to); `on_success`, `on_error` and `on_settled` receive it, typed. Set `on_mutate` first: it
/// fixes `C`. Each callback has a sync form and an `_async` form. Retries default to 0.
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
    pub(crate) mutation_fn: MutationFn<I, T, E>,
    pub(crate) on_mutate: Option<OnMutate<I, C>>,
    pub(crate) on_success: Option<OnSuccess<I, T, C>>,
    pub(crate) on_error: Option<OnError<I, E, C>>,
    pub(crate) on_settled: Option<OnSettled<I, T, E, C>>,
    pub(crate) retry: Option<u32>,
    pub(crate) retry_delay: Option<RetryDelayFn>,
    pub(crate) mutation_key: Option<QueryKey>,
    pub(crate) retry_if: Option<RetryIfFn<E>>,
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
            retry: None,
            retry_delay: None,
            mutation_key: None,
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
            mutation_key: self.mutation_key,
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

    /// A key naming this kind of mutation (TanStack's `mutationKey`): defaults registered with
    /// [`QueryClient::set_mutation_defaults`](crate::QueryClient::set_mutation_defaults) for a
    /// prefix of it apply to options this mutation leaves unset.
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
    pub fn key(&self) -> Option<&QueryKey> {
        self.mutation_key.as_ref()
    }

    /// Retries after a failed attempt. Default: the [`MutationDefaults`](crate::MutationDefaults)
    /// registered for a prefix of the [`mutation_key`](Self::mutation_key), else 0.
    #[must_use]
    pub fn retry(mut self, retries: u32) -> Self {
        self.retry = Some(retries);
        self
    }

    /// Delay before retry `attempt`. Default: the registered
    /// [`MutationDefaults`](crate::MutationDefaults)', else
    /// [`default_retry_delay`](crate::default_retry_delay).
    #[must_use]
    pub fn retry_delay(
        mut self,
        delay: impl Fn(u32) -> std::time::Duration + Send + Sync + 'static,
    ) -> Self {
        self.retry_delay = Some(Arc::new(delay));
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
        f.debug_struct("MutationOptions")
            .field("mutation_key", &self.mutation_key)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}
