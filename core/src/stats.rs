//! Cache statistics: [`CacheStats`], what a client's memory tier and its fetches have done
//! since the client was built, and [`Counters`], the striped counters that record it.
//!
//! No counter is one shared atomic, which every counting thread would fight over. Each thread
//! is given a stripe on first use (round-robin over [`STRIPES`]); a stripe holds one of each
//! counter on its own pair of cache lines; an increment is a relaxed `fetch_add` on the
//! thread's stripe, and a read sums the stripes. Threads sharing a stripe still count exactly
//! (the adds are atomic); they only share its cache line. A snapshot taken while other threads
//! count may be a few increments behind, and its counters are not read at one instant.
//!
//! The hottest count, a hit on `fetch_query`'s fast path, is not made here: even an
//! uncontended atomic add cost that path a few nanoseconds. The store counts it per shard,
//! under the shard lock the path already holds, and the client adds those counts to
//! [`Stat::Hit`] (hits found on the general path).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What a client's memory cache and its fetches have done since the client was built, from
/// [`QueryClient::cache_stats`](crate::QueryClient::cache_stats). TanStack Query keeps no such
/// counters; these are defined here.
///
/// A read is one call of `fetch_query`, `fetch_query_fresh`, `ensure_query_data` or
/// `prefetch_query`. It is a **hit** when it was answered from the data in memory without
/// waiting, including stale data returned at once while a background revalidation runs; it is
/// a **miss** when the caller waited: for a fetch (started by it, or joined) or for the key's
/// L2 read. A read that fails before either (a key cached with another data type) is neither,
/// and so are `get_query_data`, observers and bulk refetches, which do not read through the
/// cache.
///
/// Fetches are counted whoever starts them (a read, an observer, polling, invalidation, a bulk
/// refetch), once per run of the query function with its retries: once every fetch has
/// settled, `fetches` is the number that succeeded plus `failures` plus `cancellations`.
/// Mutations are not counted.
///
/// # Examples
///
/// ```
/// use pystackquery_core::CacheStats;
///
/// let stats = CacheStats::default();
/// assert_eq!(stats.hit_ratio(), 0.0);
/// assert!(stats.to_string().starts_with("hits 0, misses 0, fetches 0"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from memory without waiting (fresh data, or stale data being revalidated
    /// in the background).
    pub hits: u64,
    /// Reads that waited for a fetch (started or joined) or for an L2 read.
    pub misses: u64,
    /// Fetches started: one per run of the query function, however many attempts its retries
    /// take.
    pub fetches: u64,
    /// Fetches that ended in an error (after their retries), a panic included.
    pub failures: u64,
    /// Attempts after a failed one: a fetch that succeeds on its third call counts two.
    pub retries: u64,
    /// Queries evicted to keep the cache within `cache_max_size` (least recently used first).
    pub evictions: u64,
    /// Unobserved queries removed by garbage collection, `gc_time` after they went idle.
    pub gc_removals: u64,
    /// Fetches that ended cancelled: by `cancel_queries`, `remove_queries`, `clear`, a reset,
    /// `cancel_when_unobserved`, a newer fetch of the same key that superseded it, or a runtime
    /// that dropped the task.
    pub cancellations: u64,
}

impl CacheStats {
    /// The share of reads that were hits, from 0.0 to 1.0 (0.0 before any read).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) }).stale_time(Duration::from_secs(60));
    /// for _ in 0..4 {
    ///     test.block_on(client.fetch_query(&options)).unwrap(); // a miss, then three hits
    /// }
    /// assert_eq!(client.cache_stats().hit_ratio(), 0.75);
    /// # }
    /// ```
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits.saturating_add(self.misses);
        if reads == 0 { 0.0 } else { self.hits as f64 / reads as f64 }
    }
}

impl fmt::Display for CacheStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hits {}, misses {}, fetches {}, failures {}, retries {}, evictions {}, \
             gc removals {}, cancellations {}",
            self.hits,
            self.misses,
            self.fetches,
            self.failures,
            self.retries,
            self.evictions,
            self.gc_removals,
            self.cancellations
        )
    }
}

/// One counter of [`CacheStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    Hit,
    Miss,
    Fetch,
    Failure,
    Retry,
    Eviction,
    GcRemoval,
    Cancellation,
}

/// Number of [`Stat`]s.
const STATS: usize = 8;

/// Stripes per client: enough that a few threads reading at once rarely share one.
pub(crate) const STRIPES: usize = 16;

/// One of each counter, alone on its pair of cache lines (the adjacent-line prefetcher pulls
/// lines in pairs), so that two stripes never share a line.
#[repr(align(128))]
#[derive(Default)]
struct Stripe([AtomicU64; STATS]);

/// The counters of one client, striped by thread.
pub(crate) struct Counters {
    stripes: [Stripe; STRIPES],
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self { stripes: Default::default() }
    }

    /// Counts one `stat` on this thread's stripe.
    #[inline]
    pub(crate) fn add(&self, stat: Stat) {
        self.stripes[stripe()].0[stat as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of `stat` over every stripe.
    pub(crate) fn get(&self, stat: Stat) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0[stat as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Every counter.
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.get(Stat::Hit),
            misses: self.get(Stat::Miss),
            fetches: self.get(Stat::Fetch),
            failures: self.get(Stat::Failure),
            retries: self.get(Stat::Retry),
            evictions: self.get(Stat::Eviction),
            gc_removals: self.get(Stat::GcRemoval),
            cancellations: self.get(Stat::Cancellation),
        }
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

/// This thread's stripe, assigned round-robin on first use. Const-initialised without a
/// destructor, so it is one thread-local read, and it still works while the thread's other
/// thread-locals are being destroyed (a runtime dropping its tasks at thread exit).
#[inline]
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|s| match s.get() {
            usize::MAX => {
                let i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
                s.set(i);
                i
            }
            i => i,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Counters, STRIPES, Stat, stripe};

    #[test]
    fn concurrent_increments_from_several_threads_sum_exactly() {
        const THREADS: usize = 2 * STRIPES + 3; // some threads share a stripe
        const ADDS: u64 = 10_000;
        let counters = Arc::new(Counters::new());
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..ADDS {
                        counters.add(Stat::Hit);
                    }
                    if t % 2 == 0 {
                        counters.add(Stat::Retry);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|_| panic!("a counting thread panicked"));
        }
        let stats = counters.snapshot();
        assert_eq!(stats.hits, THREADS as u64 * ADDS);
        assert_eq!(stats.retries, THREADS.div_ceil(2) as u64);
        assert_eq!((stats.misses, stats.fetches, stats.cancellations), (0, 0, 0));
    }

    #[test]
    fn a_thread_keeps_its_stripe_and_threads_spread_over_the_stripes() {
        let mine = stripe();
        assert_eq!(stripe(), mine);
        let others: std::collections::HashSet<usize> =
            (0..STRIPES).map(|_| std::thread::spawn(stripe).join().unwrap_or(usize::MAX)).collect();
        assert!(others.iter().all(|&i| i < STRIPES));
        assert!(others.len() > 1, "round-robin: {others:?}");
    }
}
