//! Defaults per key prefix ([`QueryDefaults`]) and per mutation key ([`MutationDefaults`]),
//! layered between the client's defaults and each query's or mutation's own options.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::key::QueryKey;
use crate::meta::Meta;
use crate::retryer::RetryDelayFn;
use crate::sync::Mutex;

/// Options for every query under a key prefix, registered with
/// [`QueryClient::set_query_defaults`](crate::QueryClient::set_query_defaults) (TanStack's
/// `setQueryDefaults`). An option a query sets itself wins; one it leaves unset comes from the
/// defaults registered for a prefix of its key (when several prefixes match and set the same
/// option, the one registered last wins, as in TanStack), and otherwise from the client's
/// [`QueryClientConfig`](crate::QueryClientConfig).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pystackquery_core::QueryDefaults;
///
/// let defaults = QueryDefaults::new().stale_time(Duration::from_secs(60)).retry(0);
/// # drop(defaults);
/// ```
#[derive(Clone, Default)]
pub struct QueryDefaults {
    pub(crate) stale_time: Option<Duration>,
    pub(crate) gc_time: Option<Duration>,
    pub(crate) refetch_interval: Option<Duration>,
    pub(crate) retry: Option<u32>,
    pub(crate) retry_delay: Option<RetryDelayFn>,
    pub(crate) meta: Option<Meta>,
}

impl QueryDefaults {
    /// No option set.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryDefaults;
    ///
    /// let defaults = QueryDefaults::new();
    /// assert_eq!(defaults.stale_time_value(), None); // nothing set: the client's config applies
    /// assert_eq!(defaults.stale_time(Duration::from_secs(5)).stale_time_value(), Some(Duration::from_secs(5)));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// How long fetched data counts as fresh.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryDefaults, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let forever = QueryDefaults::new().stale_time(Duration::MAX).gc_time(Duration::MAX);
    /// client.set_query_defaults(key!("static"), forever);
    /// let logo = QueryOptions::new(key!("static", "logo"), || async { Ok::<_, String>(vec![0u8; 4]) });
    /// test.block_on(client.fetch_query(&logo)).unwrap();
    /// test.advance(Duration::from_secs(24 * 3600));
    /// assert!(!client.find(key!("static", "logo")).unwrap().is_stale); // kept, and fresh
    /// # }
    /// ```
    #[must_use]
    pub fn stale_time(mut self, duration: Duration) -> Self {
        self.stale_time = Some(duration);
        self
    }

    /// How long an unobserved query stays cached.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryDefaults;
    ///
    /// let defaults = QueryDefaults::new().gc_time(Duration::from_secs(3600));
    /// assert_eq!(defaults.gc_time_value(), Some(Duration::from_secs(3600)));
    /// ```
    #[must_use]
    pub fn gc_time(mut self, duration: Duration) -> Self {
        self.gc_time = Some(duration);
        self
    }

    /// How often observers refetch.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryDefaults;
    ///
    /// // Every observed "prices" query polls each 10 s unless its options say otherwise.
    /// let defaults = QueryDefaults::new().refetch_interval(Duration::from_secs(10));
    /// assert_eq!(defaults.refetch_interval_value(), Some(Duration::from_secs(10)));
    /// ```
    #[must_use]
    pub fn refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = Some(interval);
        self
    }

    /// Retries after a failed attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryDefaults;
    ///
    /// let defaults = QueryDefaults::new().retry(5);
    /// assert_eq!(defaults.retry_value(), Some(5));
    /// ```
    #[must_use]
    pub fn retry(mut self, retries: u32) -> Self {
        self.retry = Some(retries);
        self
    }

    /// The delay before retry `n` (1-based).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryDefaults;
    ///
    /// let _defaults = QueryDefaults::new().retry(2).retry_delay(|attempt| Duration::from_secs(u64::from(attempt) + 1));
    /// ```
    #[must_use]
    pub fn retry_delay(mut self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.retry_delay = Some(Arc::new(delay));
        self
    }

    /// The stale time set, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::QueryDefaults;
    ///
    /// assert_eq!(QueryDefaults::new().stale_time_value(), None);
    /// assert_eq!(QueryDefaults::new().stale_time(Duration::ZERO).stale_time_value(), Some(Duration::ZERO));
    /// ```
    pub fn stale_time_value(&self) -> Option<Duration> {
        self.stale_time
    }

    /// The gc time set, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryDefaults;
    ///
    /// assert_eq!(QueryDefaults::new().gc_time_value(), None);
    /// ```
    pub fn gc_time_value(&self) -> Option<Duration> {
        self.gc_time
    }

    /// The refetch interval set, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryDefaults;
    ///
    /// assert_eq!(QueryDefaults::new().refetch_interval_value(), None);
    /// ```
    pub fn refetch_interval_value(&self) -> Option<Duration> {
        self.refetch_interval
    }

    /// The retries set, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryDefaults;
    ///
    /// assert_eq!(QueryDefaults::new().retry(1).retry_value(), Some(1));
    /// ```
    pub fn retry_value(&self) -> Option<u32> {
        self.retry
    }

    /// Meta handed to the query function (see [`Meta`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryDefaults, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_defaults(key!("billing"), QueryDefaults::new().meta(serde_json::json!({ "team": "billing" })));
    /// let invoices = QueryOptions::with_context(key!("billing", "invoices"), |cx| async move {
    ///     Ok::<_, String>(cx.meta.get("team").and_then(|t| t.as_str()).unwrap_or("?").to_string())
    /// });
    /// assert_eq!(test.block_on(client.fetch_query(&invoices)).unwrap(), "billing");
    /// # }
    /// ```
    #[must_use]
    pub fn meta(mut self, meta: impl Into<Meta>) -> Self {
        self.meta = Some(meta.into());
        self
    }
}

impl fmt::Debug for QueryDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryDefaults")
            .field("stale_time", &self.stale_time)
            .field("gc_time", &self.gc_time)
            .field("refetch_interval", &self.refetch_interval)
            .field("retry", &self.retry)
            .field("retry_delay", &self.retry_delay.is_some())
            .field("meta", &self.meta)
            .finish()
    }
}

/// Options for every mutation whose mutation key starts with a prefix, registered with
/// [`QueryClient::set_mutation_defaults`](crate::QueryClient::set_mutation_defaults)
/// (TanStack's `setMutationDefaults`). A mutation's own options win; then the defaults
/// registered last for a prefix of its mutation key; then the library defaults (no retry).
#[derive(Clone, Default)]
pub struct MutationDefaults {
    pub(crate) retry: Option<u32>,
    pub(crate) retry_delay: Option<RetryDelayFn>,
}

impl MutationDefaults {
    /// No option set.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::MutationDefaults;
    ///
    /// assert_eq!(MutationDefaults::new().retry_value(), None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Retries after a failed attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::MutationDefaults;
    ///
    /// let defaults = MutationDefaults::new().retry(2);
    /// assert_eq!(defaults.retry_value(), Some(2));
    /// ```
    #[must_use]
    pub fn retry(mut self, retries: u32) -> Self {
        self.retry = Some(retries);
        self
    }

    /// The delay before retry `n` (1-based).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery_core::MutationDefaults;
    ///
    /// let _defaults = MutationDefaults::new().retry(1).retry_delay(|_| Duration::from_millis(500));
    /// ```
    #[must_use]
    pub fn retry_delay(mut self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.retry_delay = Some(Arc::new(delay));
        self
    }

    /// The retries set, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::MutationDefaults;
    ///
    /// assert_eq!(MutationDefaults::new().retry(0).retry_value(), Some(0));
    /// ```
    pub fn retry_value(&self) -> Option<u32> {
        self.retry
    }
}

impl fmt::Debug for MutationDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutationDefaults")
            .field("retry", &self.retry)
            .field("retry_delay", &self.retry_delay.is_some())
            .finish()
    }
}

/// Defaults registered per prefix, in registration order. Reads take a snapshot (an `Arc`
/// clone under a short lock), and skip even that while nothing is registered.
pub(crate) struct Registry<D> {
    any: AtomicBool,
    entries: Mutex<Arc<[(QueryKey, D)]>>,
}

impl<D: Clone> Registry<D> {
    pub(crate) fn new() -> Self {
        Self { any: AtomicBool::new(false), entries: Mutex::new(Arc::from(Vec::new())) }
    }

    /// Registers `defaults` for `prefix`, replacing those registered for the same prefix.
    pub(crate) fn set(&self, prefix: QueryKey, defaults: D) {
        let mut entries = self.entries.lock();
        let mut list: Vec<(QueryKey, D)> =
            entries.iter().filter(|(k, _)| *k != prefix).cloned().collect();
        list.push((prefix, defaults));
        let old = std::mem::replace(&mut *entries, Arc::from(list));
        self.any.store(true, Ordering::Release);
        drop(entries);
        drop(old);
    }

    /// The defaults registered for exactly `prefix`.
    pub(crate) fn get(&self, prefix: &QueryKey) -> Option<D> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().clone();
        entries.iter().find(|(k, _)| k == prefix).map(|(_, d)| d.clone())
    }

    /// The option `pick` chooses, from the defaults registered last among those whose prefix
    /// matches `key` and that set it.
    pub(crate) fn resolve<R>(&self, key: &QueryKey, pick: impl Fn(&D) -> Option<R>) -> Option<R> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().clone();
        entries.iter().rev().filter(|(k, _)| k.is_prefix_of(key)).find_map(|(_, d)| pick(d))
    }
}

impl<D> fmt::Debug for Registry<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("len", &self.entries.lock().len()).finish()
    }
}
