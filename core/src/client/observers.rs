//! How many observers watch a key.

use super::QueryClient;
use crate::key::QueryKey;

impl QueryClient {
    /// How many observers are attached to the query of `key` now, enabled or not: an observer
    /// attaches on its first subscription and detaches on its last unsubscription (or when
    /// [`set_options`](crate::QueryObserver::set_options) moves it to another key). 0 when the
    /// key is not cached. Does not count as a use of the key (its place in the eviction order
    /// stays).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("todos"), || async { Ok::<_, String>(3) });
    /// let (a, b) = (client.watch(&options), client.watch(&options));
    /// assert_eq!(client.observer_count(key!("todos")), 0, "not subscribed yet");
    /// let first = a.subscribe(|_| {});
    /// let _second = a.subscribe(|_| {});
    /// let _third = b.subscribe(|_| {});
    /// assert_eq!(client.observer_count(key!("todos")), 2, "observers, not subscriptions");
    /// drop(first);
    /// assert_eq!(client.observer_count(key!("todos")), 2);
    /// # }
    /// ```
    pub fn observer_count(&self, key: impl Into<QueryKey>) -> usize {
        self.ctx.cache.lookup(&key.into()).map_or(0, |query| query.observer_count())
    }
}
