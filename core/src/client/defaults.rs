//! Defaults per key prefix and per mutation key, between the client's defaults and each
//! query's or mutation's own options.

use super::QueryClient;
use crate::defaults::{MutationDefaults, QueryDefaults};
use crate::key::QueryKey;

impl QueryClient {
    /// Registers `defaults` for every query whose key starts with `prefix` (TanStack's
    /// `setQueryDefaults`), replacing those registered for the same prefix. They apply from
    /// the next use of such a key: an option the query's own [`QueryOptions`](crate::QueryOptions)
    /// set wins; among the defaults of several matching prefixes, the one registered last
    /// that sets the option wins; then the client's config.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryDefaults, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_defaults(key!("config"), QueryDefaults::new().stale_time(Duration::from_secs(600)));
    ///
    /// let options = QueryOptions::new(key!("config", "flags"), || async { Ok::<_, String>(1) });
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// assert!(!client.find(key!("config", "flags")).unwrap().is_stale); // ten minutes fresh
    /// # }
    /// ```
    pub fn set_query_defaults(&self, prefix: impl Into<QueryKey>, defaults: QueryDefaults) {
        self.ctx.query_defaults.set(prefix.into(), defaults);
    }

    /// The defaults registered for exactly `prefix`, if any (TanStack's `getQueryDefaults`
    /// merges every matching prefix instead; options are resolved that way when used).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryDefaults, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_defaults(key!("config"), QueryDefaults::new().stale_time(Duration::from_secs(600)));
    /// let defaults = client.get_query_defaults(key!("config")).unwrap();
    /// assert_eq!(defaults.stale_time_value(), Some(Duration::from_secs(600)));
    /// assert!(client.get_query_defaults(key!("config", "flags")).is_none()); // exact prefix only
    /// # }
    /// ```
    pub fn get_query_defaults(&self, prefix: impl Into<QueryKey>) -> Option<QueryDefaults> {
        self.ctx.query_defaults.get(&prefix.into())
    }

    /// Registers `defaults` for every mutation whose
    /// [`mutation_key`](crate::MutationOptions::mutation_key) starts with `prefix` (TanStack's
    /// `setMutationDefaults`), replacing those registered for the same prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{MutationDefaults, MutationOptions, QueryClient, QueryClientConfig, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_mutation_defaults(key!("orders"), MutationDefaults::new().retry(0));
    /// let place = MutationOptions::new(|_id: u32| async { Err::<(), _>("rejected".to_string()) })
    ///     .mutation_key(key!("orders", "place"));
    /// assert!(test.block_on(client.mutate(&place, 1)).is_err());
    /// assert_eq!(test.elapsed(), Duration::ZERO); // one attempt: no retry delay was slept
    /// # }
    /// ```
    pub fn set_mutation_defaults(&self, prefix: impl Into<QueryKey>, defaults: MutationDefaults) {
        self.ctx.mutation_defaults.set(prefix.into(), defaults);
    }

    /// The mutation defaults registered for exactly `prefix`, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationDefaults, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_mutation_defaults(key!("orders"), MutationDefaults::new().retry(1));
    /// assert_eq!(client.get_mutation_defaults(key!("orders")).unwrap().retry_value(), Some(1));
    /// assert!(client.get_mutation_defaults(key!("users")).is_none());
    /// # }
    /// ```
    pub fn get_mutation_defaults(&self, prefix: impl Into<QueryKey>) -> Option<MutationDefaults> {
        self.ctx.mutation_defaults.get(&prefix.into())
    }
}
