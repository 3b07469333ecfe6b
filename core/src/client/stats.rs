//! [`QueryClient::cache_stats`]: the client's counters of reads, fetches and removals.

use super::QueryClient;
use crate::stats::CacheStats;

impl QueryClient {
    /// What the cache has done since the client was built: hits and misses of the reads
    /// (`fetch_query`, `fetch_query_fresh`, `ensure_query_data`, `prefetch_query`), fetches
    /// started, failed and cancelled, retries, LRU evictions and garbage collections. See
    /// [`CacheStats`] for what each counter counts; L2 counters are in
    /// [`storage_stats`](Self::storage_stats).
    ///
    /// Counting adds no shared atomic to the hit path: a fresh hit is counted by the key's
    /// shard under the lock the lookup holds anyway, everything else on the calling thread's
    /// stripe of striped counters, and this call sums them. Counts made by other threads
    /// during the call may or may not be included.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("user", 1), || async { Ok::<_, String>("Ada") })
    ///     .stale_time(Duration::from_secs(60));
    ///
    /// test.block_on(async {
    ///     client.fetch_query(&options).await.unwrap(); // a miss: waits for the fetch
    ///     client.fetch_query(&options).await.unwrap(); // a hit: fresh data in memory
    /// });
    /// let stats = client.cache_stats();
    /// assert_eq!((stats.hits, stats.misses, stats.fetches), (1, 1, 1));
    /// assert_eq!(stats.hit_ratio(), 0.5);
    /// assert!(stats.to_string().starts_with("hits 1, misses 1, fetches 1, failures 0"));
    /// # }
    /// ```
    pub fn cache_stats(&self) -> CacheStats {
        let mut stats = self.ctx.stats.snapshot();
        // Hits on the fast path are counted by the store's shards; the rest by `Ctx::stats`.
        stats.hits = stats.hits.wrapping_add(self.ctx.cache.hits());
        stats
    }
}
