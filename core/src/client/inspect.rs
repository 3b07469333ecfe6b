//! Reading the cache without knowing its types: [`QueryInfo`] snapshots of the queries a
//! filter chooses.

use super::QueryClient;
use crate::filter::QueryFilter;
use crate::inspect::QueryInfo;
use crate::key::QueryKey;

impl QueryClient {
    /// A snapshot of every query `filter` chooses, in key order (TanStack's
    /// `queryCache.findAll`): key, data type name, statuses, age, staleness, observers and
    /// garbage-collection deadline, whatever the data types. Nothing is fetched and the LRU
    /// order is not touched. `find_all(())` lists the whole cache, e.g. for a `/debug/cache`
    /// endpoint (a [`QueryInfo`] serializes with `serde`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryFilter, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("user", 1), "Ada".to_string()).unwrap();
    /// client.set_query_data(key!("count"), 3u64).unwrap();
    ///
    /// let listing = client.find_all(());
    /// let keys: Vec<String> = listing.iter().map(|q| q.key.to_string()).collect();
    /// assert_eq!(keys, ["('count',)", "('user', 1)"]);
    /// let json = serde_json::to_string(&listing).unwrap();
    /// assert!(json.contains("\"type_name\":\"u64\""));
    /// # }
    /// ```
    pub fn find_all(&self, filter: impl Into<QueryFilter>) -> Vec<QueryInfo> {
        let filter = filter.into();
        self.ctx
            .candidates(&filter)
            .iter()
            .map(|entry| entry.info(&self.ctx))
            .filter(|info| filter.matches(info))
            .collect()
    }

    /// A snapshot of the query cached under exactly `key`, if any (TanStack's
    /// `queryCache.find` with an exact key).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryStatus, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("user", 1), "Ada".to_string()).unwrap();
    /// let info = client.find(key!("user", 1)).unwrap();
    /// assert_eq!(info.status, QueryStatus::Success);
    /// assert!(info.has_data && info.observers == 0);
    /// assert!(client.find(key!("user")).is_none()); // exact key, not a prefix
    /// # }
    /// ```
    pub fn find(&self, key: impl Into<QueryKey>) -> Option<QueryInfo> {
        let key = key.into();
        self.ctx.cache.lookup(&key).map(|entry| entry.info(&self.ctx))
    }
}
