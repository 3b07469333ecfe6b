//! The callbacks of [`MutationOptions`]: `on_mutate`, `on_success`, `on_error` and
//! `on_settled`, each in a plain and an async form.

use std::future::Future;
use std::sync::Arc;

use super::context::MutationContext;
use super::options::{MutationOptions, OnError, OnSettled, OnSuccess};
use crate::error::QueryError;

impl<I, T, E> MutationOptions<I, T, E, ()>
where
    I: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Runs before the mutation function, with the input and a context holding the client:
    /// the place for optimistic writes ([`MutationContext::set_optimistic`]). What it returns
    /// is `on_mutate_result` in the other callbacks' context, and the state's `context`.
    ///
    /// If it panics, the mutation function is not called and the run fails with
    /// [`QueryError::Panicked`] ("mutation on_mutate callback panicked: ..."); as in TanStack
    /// Query, `on_error` and `on_settled` still run, with no `on_mutate_result`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("balance"), 100i64).unwrap();
    /// let pay = MutationOptions::new(|amount: i64| async move { Ok::<_, String>(amount) })
    ///     // Returns the balance before the payment: `on_mutate_result` in the other callbacks.
    ///     .on_mutate(|_amount: &i64, cx| cx.client.get_query_data::<i64>(key!("balance")).unwrap())
    ///     .on_success(|amount, _input, cx| {
    ///         let before = cx.on_mutate_result.flatten().unwrap_or(0);
    ///         cx.client.set_query_data(key!("balance"), before - amount).unwrap();
    ///     });
    /// test.block_on(client.mutate(&pay, 30)).unwrap();
    /// assert_eq!(client.get_query_data::<i64>(key!("balance")).unwrap(), Some(70));
    /// # }
    /// ```
    #[must_use]
    pub fn on_mutate<C>(
        self,
        f: impl Fn(&I, &MutationContext) -> C + Send + Sync + 'static,
    ) -> MutationOptions<I, T, E, C>
    where
        C: Clone + Send + Sync + 'static,
    {
        self.on_mutate_async(move |input: I, cx: MutationContext| {
            std::future::ready(f(&input, &cx))
        })
    }

    /// The async form of [`on_mutate`](Self::on_mutate); a panic while the future is created or
    /// polled is handled the same way.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos"), vec!["a".to_string()]).unwrap();
    /// let add = MutationOptions::new(|title: String| async move { Ok::<_, String>(title) })
    ///     .on_mutate_async(|title: String, cx| async move {
    ///         // Stop a refetch in flight from overwriting the optimistic write, then write it.
    ///         cx.client.cancel_queries(key!("todos")).await;
    ///         cx.update_optimistic(key!("todos"), |old: Option<&Vec<String>>| {
    ///             old.map(|todos| [todos.clone(), vec![title.clone()]].concat())
    ///         }).unwrap();
    ///     });
    /// test.block_on(client.mutate(&add, "b".to_string())).unwrap();
    /// assert_eq!(client.get_query_data::<Vec<String>>(key!("todos")).unwrap().unwrap(), ["a", "b"]);
    /// # }
    /// ```
    #[must_use]
    pub fn on_mutate_async<C, Fut>(
        self,
        f: impl Fn(I, MutationContext) -> Fut + Send + Sync + 'static,
    ) -> MutationOptions<I, T, E, C>
    where
        C: Clone + Send + Sync + 'static,
        Fut: Future<Output = C> + Send + 'static,
    {
        // Callbacks set before `on_mutate` were typed for `()`: they get the same context, with
        // `()` in place of the value (`Some(())` once `on_mutate` has run).
        let on_success = self.on_success.map(|cb| -> OnSuccess<I, T, C> {
            Arc::new(move |t, i, cx: MutationContext<C>| {
                cb(t, i, cx.with_result(cx.on_mutate_result.as_ref().map(|_| ())))
            })
        });
        let on_error = self.on_error.map(|cb| -> OnError<I, E, C> {
            Arc::new(move |e, i, cx: MutationContext<C>| {
                cb(e, i, cx.with_result(cx.on_mutate_result.as_ref().map(|_| ())))
            })
        });
        let on_settled = self.on_settled.map(|cb| -> OnSettled<I, T, E, C> {
            Arc::new(move |t, e, i, cx: MutationContext<C>| {
                cb(t, e, i, cx.with_result(cx.on_mutate_result.as_ref().map(|_| ())))
            })
        });
        MutationOptions {
            mutation_fn: self.mutation_fn,
            on_mutate: Some(Arc::new(move |input, cx| Box::pin(f(input, cx)))),
            on_success,
            on_error,
            on_settled,
            retry: self.retry,
            retry_delay: self.retry_delay,
            retry_if: self.retry_if,
            mutation_key: self.mutation_key,
            scope: self.scope,
            gc_time: self.gc_time,
            meta: self.meta,
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
    /// Called with the data, the input and the context after a success.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let create = MutationOptions::new(|name: String| async move { Ok::<_, String>((7u32, name)) })
    ///     .on_success(|(id, name), _input, cx| {
    ///         // Put the server's answer in the cache: no refetch needed.
    ///         cx.client.set_query_data(key!("user", *id), name.clone()).unwrap();
    ///     });
    /// test.block_on(client.mutate(&create, "Ada".to_string())).unwrap();
    /// assert_eq!(client.get_query_data::<String>(key!("user", 7)).unwrap().as_deref(), Some("Ada"));
    /// # }
    /// ```
    #[must_use]
    pub fn on_success(
        self,
        f: impl Fn(&T, &I, &MutationContext<C>) + Send + Sync + 'static,
    ) -> Self {
        self.on_success_async(move |t, i, cx| {
            f(&t, &i, &cx);
            std::future::ready(())
        })
    }

    /// The async form of [`on_success`](Self::on_success); the run settles once its future has
    /// finished.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos"), 0u32).unwrap();
    /// let add = MutationOptions::new(|_title: String| async { Ok::<_, String>(()) })
    ///     .on_success_async(|_data, _title, cx| async move {
    ///         // The run settles only after this invalidation.
    ///         cx.client.invalidate_queries(key!("todos"), false).await;
    ///     });
    /// test.block_on(client.mutate(&add, "write".to_string())).unwrap();
    /// assert!(client.find(key!("todos")).unwrap().is_invalidated);
    /// # }
    /// ```
    #[must_use]
    pub fn on_success_async<Fut: Future<Output = ()> + Send + 'static>(
        mut self,
        f: impl Fn(T, I, MutationContext<C>) -> Fut + Send + Sync + 'static,
    ) -> Self {
        self.on_success = Some(Arc::new(move |t, i, cx| Box::pin(f(t, i, cx))));
        self
    }

    /// Called with the error, the input and the context after a failure (after the retries),
    /// a panic, or an `on_mutate` panic.
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
    /// let toast = Arc::new(Mutex::new(None));
    /// let shown = toast.clone();
    /// let save = MutationOptions::new(|_: u32| async { Err::<(), _>("quota exceeded".to_string()) })
    ///     .retry(0)
    ///     .on_error(move |error, input, _cx| {
    ///         *shown.lock().unwrap() = Some(format!("saving {input} failed: {error}"));
    ///     });
    /// assert!(test.block_on(client.mutate(&save, 3)).is_err());
    /// assert!(toast.lock().unwrap().as_deref().unwrap().starts_with("saving 3 failed"));
    /// # }
    /// ```
    #[must_use]
    pub fn on_error(
        self,
        f: impl Fn(&QueryError<E>, &I, &MutationContext<C>) + Send + Sync + 'static,
    ) -> Self {
        self.on_error_async(move |e, i, cx| {
            f(&e, &i, &cx);
            std::future::ready(())
        })
    }

    /// The async form of [`on_error`](Self::on_error).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos"), 1u32).unwrap();
    /// let save = MutationOptions::new(|_: u32| async { Err::<(), _>("conflict".to_string()) })
    ///     .retry(0)
    ///     .on_error_async(|_error, _input, cx| async move {
    ///         // The server has something else: mark our copy stale.
    ///         cx.client.invalidate_queries(key!("todos"), false).await;
    ///     });
    /// assert!(test.block_on(client.mutate(&save, 2)).is_err());
    /// assert!(client.find(key!("todos")).unwrap().is_invalidated);
    /// # }
    /// ```
    #[must_use]
    pub fn on_error_async<Fut: Future<Output = ()> + Send + 'static>(
        mut self,
        f: impl Fn(QueryError<E>, I, MutationContext<C>) -> Fut + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Arc::new(move |e, i, cx| Box::pin(f(e, i, cx))));
        self
    }

    /// Called after `on_success` or `on_error`, with the data or the error.
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
    /// let settled = Arc::new(AtomicU32::new(0));
    /// let count = settled.clone();
    /// let save = MutationOptions::new(|n: u32| async move { if n > 0 { Ok(n) } else { Err("zero".to_string()) } })
    ///     .retry(0)
    ///     .on_settled(move |_data, _error, _input, _cx| { count.fetch_add(1, Ordering::SeqCst); });
    /// let _ = test.block_on(client.mutate(&save, 1));
    /// let _ = test.block_on(client.mutate(&save, 0));
    /// assert_eq!(settled.load(Ordering::SeqCst), 2); // after a success and after a failure
    /// # }
    /// ```
    #[must_use]
    pub fn on_settled(
        self,
        f: impl Fn(Option<&T>, Option<&QueryError<E>>, &I, &MutationContext<C>) + Send + Sync + 'static,
    ) -> Self {
        self.on_settled_async(move |t, e, i, cx| {
            f(t.as_ref(), e.as_ref(), &i, &cx);
            std::future::ready(())
        })
    }

    /// The async form of [`on_settled`](Self::on_settled).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, QueryOptions, RefetchType, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let todos = QueryOptions::new(key!("todos"), || async { Ok::<_, String>(vec!["from server"]) });
    /// let add = MutationOptions::new(|_title: &'static str| async { Ok::<_, String>(()) })
    ///     .on_settled_async(|_data, _error, _title, cx| async move {
    ///         // Whatever happened, refetch the list (even if nobody observes it).
    ///         cx.client.invalidate_queries(key!("todos"), RefetchType::All).await;
    ///     });
    /// test.block_on(client.fetch_query(&todos)).unwrap();
    /// test.block_on(client.mutate(&add, "write")).unwrap();
    /// assert_eq!(client.cache_stats().fetches, 2); // the first fetch, then the refetch
    /// # }
    /// ```
    #[must_use]
    pub fn on_settled_async<Fut: Future<Output = ()> + Send + 'static>(
        mut self,
        f: impl Fn(Option<T>, Option<QueryError<E>>, I, MutationContext<C>) -> Fut
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.on_settled = Some(Arc::new(move |t, e, i, cx| Box::pin(f(t, e, i, cx))));
        self
    }
}
