//! Mutations on the client: the stateful [`Mutation`], the one-shot [`QueryClient::mutate`],
//! and the mutation cache's listing and counts.

use super::QueryClient;
use crate::mutation::{Mutation, MutationOptions};
use crate::mutations::info::{MutationFilter, MutationInfo, MutationStatus};

impl QueryClient {
    /// A runnable mutation with observable state (see [`Mutation`]). Options it leaves unset
    /// come from the [`MutationDefaults`](crate::MutationDefaults) registered for a prefix of
    /// its [`mutation_key`](MutationOptions::mutation_key), as they are now.
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
    pub fn is_mutating(&self, filter: impl Into<MutationFilter>) -> usize {
        let filter = filter.into().status(MutationStatus::Pending);
        self.ctx.mutations.find(&filter).len()
    }

    /// The mutation runs `filter` chooses, in submission order (TanStack's
    /// `mutationCache.findAll`). Settled runs stay listed for their `gc_time`.
    pub fn find_mutations(&self, filter: impl Into<MutationFilter>) -> Vec<MutationInfo> {
        self.ctx.mutations.find(&filter.into())
    }
}
