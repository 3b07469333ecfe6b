//! Mutations on the client: the stateful [`Mutation`], the one-shot [`QueryClient::mutate`],
//! and the mutation cache's listing and counts.

use super::QueryClient;
use crate::mutation::{Mutation, MutationOptions};
use crate::mutations::info::{MutationFilter, MutationInfo, MutationStatus};

impl QueryClient {
    /// A runnable mutation with observable state (see [`Mutation`]). Options it leaves unset
    /// come from the [`MutationDefaults`](crate::MutationDefaults) registered for a prefix of
    /// its [`mutation_key`](MutationOptions::mutation_key), as they are now.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{MutationOptions, MutationStatus, QueryClient, QueryClientConfig};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let save = client.mutation(MutationOptions::new(|n: u32| async move { Ok::<_, String>(n + 1) }));
    /// let statuses = Arc::new(Mutex::new(Vec::new()));
    /// let log = statuses.clone();
    /// let _subscription = save.subscribe(move |state| log.lock().unwrap().push(state.status));
    /// assert_eq!(test.block_on(save.mutate(1)).unwrap(), 2);
    /// assert_eq!(*statuses.lock().unwrap(), [MutationStatus::Pending, MutationStatus::Success]);
    /// # }
    /// ```
    pub fn mutation<I, T, E, C>(&self, options: MutationOptions<I, T, E, C>) -> Mutation<I, T, E, C>
    where
        I: Clone + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
    {
        let mut options = options;
        if let Some(key) = &options.mutation_key {
            let registry = &self.ctx.mutation_defaults;
            if options.retry.is_none() {
                options.retry = registry.resolve(key, |d| d.retry);
            }
            if options.retry_delay.is_none() {
                options.retry_delay = registry.resolve(key, |d| d.retry_delay.clone());
            }
        }
        Mutation::new(self.clone(), options)
    }

    /// Runs a mutation once, without a [`Mutation`] handle to watch (TanStack's
    /// `mutationCache.build(..).execute(..)`): the same run, callbacks, scope and retries, and
    /// it is listed in the mutation cache like any run.
    ///
    /// # Errors
    ///
    /// As [`Mutation::mutate`].
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
    /// let save = MutationOptions::new(|name: String| async move { Ok::<_, String>(name.len()) })
    ///     .on_success(|len, name, cx| {
    ///         cx.client.set_query_data(key!("user", "name"), name.clone()).unwrap();
    ///         assert_eq!(*len, 3);
    ///     });
    /// // Build the options once; run them per request.
    /// assert_eq!(test.block_on(client.mutate(&save, "Ada".to_string())).unwrap(), 3);
    /// assert_eq!(client.find_mutations(()).len(), 1);
    /// # }
    /// ```
    pub async fn mutate<I, T, E, C>(
        &self,
        options: &MutationOptions<I, T, E, C>,
        input: I,
    ) -> Result<T, crate::QueryError<E>>
    where
        I: Clone + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
    {
        self.mutation(options.clone()).mutate(input).await
    }

    /// How many mutation runs `filter` chooses are pending now (TanStack's `isMutating`,
    /// which counts pending runs only, whatever status the filter asks for); `()` counts every
    /// pending run. A run waiting for its scope's turn is pending.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // An upload that takes an hour, started in the background.
    /// let runtime = test.runtime();
    /// let upload = MutationOptions::new(move |_: ()| {
    ///     let sleep = runtime.sleep(Duration::from_secs(3600));
    ///     async move { sleep.await; Ok::<_, String>(()) }
    /// })
    /// .mutation_key(key!("upload"));
    /// let mutation = client.mutation(upload);
    /// test.runtime().spawn(async move { let _ = mutation.mutate(()).await; });
    /// test.run_until_idle();
    /// assert_eq!(client.is_mutating(key!("upload")), 1);
    /// assert_eq!(client.is_mutating(key!("other")), 0);
    /// test.advance(Duration::from_secs(3600));
    /// assert_eq!(client.is_mutating(()), 0);
    /// # }
    /// ```
    pub fn is_mutating(&self, filter: impl Into<MutationFilter>) -> usize {
        let filter = filter.into().status(MutationStatus::Pending);
        self.ctx.mutations.find(&filter).len()
    }

    /// The mutation runs `filter` chooses, in submission order (TanStack's
    /// `mutationCache.findAll`). Settled runs stay listed for their `gc_time`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationFilter, MutationOptions, MutationStatus, QueryClient, QueryClientConfig, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let fail = MutationOptions::new(|_: u32| async { Err::<(), _>("no".to_string()) })
    ///     .mutation_key(key!("orders", "cancel"))
    ///     .retry(0);
    /// let _ = test.block_on(client.mutate(&fail, 7));
    /// let failed = client.find_mutations(MutationFilter::prefix(key!("orders")).status(MutationStatus::Error));
    /// assert_eq!(failed.len(), 1);
    /// assert_eq!(failed[0].mutation_key, Some(key!("orders", "cancel")));
    /// # }
    /// ```
    pub fn find_mutations(&self, filter: impl Into<MutationFilter>) -> Vec<MutationInfo> {
        self.ctx.mutations.find(&filter.into())
    }
}
