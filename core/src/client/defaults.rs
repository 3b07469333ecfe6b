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
    pub fn get_query_defaults(&self, prefix: impl Into<QueryKey>) -> Option<QueryDefaults> {
        self.ctx.query_defaults.get(&prefix.into())
    }

    /// Registers `defaults` for every mutation whose
    /// [`mutation_key`](crate::MutationOptions::mutation_key) starts with `prefix` (TanStack's
    /// `setMutationDefaults`), replacing those registered for the same prefix.
    pub fn set_mutation_defaults(&self, prefix: impl Into<QueryKey>, defaults: MutationDefaults) {
        self.ctx.mutation_defaults.set(prefix.into(), defaults);
    }

    /// The mutation defaults registered for exactly `prefix`, if any.
    pub fn get_mutation_defaults(&self, prefix: impl Into<QueryKey>) -> Option<MutationDefaults> {
        self.ctx.mutation_defaults.get(&prefix.into())
    }
}
