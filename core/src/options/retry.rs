//! The retry options of [`QueryOptions`]: how many retries, the delay before each, and which
//! errors are retried.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::QueryOptions;

impl<T, E> QueryOptions<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Retries after a failed first attempt. Default: the client's (itself 3).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let count = calls.clone();
    /// let options = QueryOptions::new(key!("flaky"), move || {
    ///     let n = count.fetch_add(1, Ordering::SeqCst);
    ///     async move { if n < 2 { Err("timeout".to_string()) } else { Ok(n) } }
    /// })
    /// .retry(2);
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), 2); // third attempt
    /// assert_eq!(calls.load(Ordering::SeqCst), 3);
    /// # }
    /// ```
    #[must_use]
    pub fn retry(self, retries: u32) -> Self {
        self.edit(|o| o.retry = Some(retries))
    }

    /// Delay before retry `attempt` (0-based). Default: the client's (itself
    /// [`default_retry_delay`](crate::default_retry_delay): 1 s doubling, capped at 30 s).
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
    /// let options = QueryOptions::new(key!("down"), || async { Err::<u32, _>("503".to_string()) })
    ///     .retry(3)
    ///     .retry_delay(|attempt| Duration::from_millis(100) * (attempt + 1)); // 100, 200, 300 ms
    /// assert!(test.block_on(client.fetch_query(&options)).is_err());
    /// assert_eq!(test.elapsed(), Duration::from_millis(600));
    /// # }
    /// ```
    #[must_use]
    pub fn retry_delay(self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.edit(|o| o.retry_delay = Some(Arc::new(delay)))
    }

    /// Retry only errors for which `predicate(attempt, &error)` is true. Default: retry every
    /// error (a panic is never retried).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// #[derive(Debug)]
    /// enum ApiError { NotFound, Unavailable }
    /// impl std::fmt::Display for ApiError {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
    /// }
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("user", 9), || async { Err::<String, _>(ApiError::NotFound) })
    ///     .retry_if(|_attempt, error| matches!(error, ApiError::Unavailable)); // a 404 won't change
    /// assert!(test.block_on(client.fetch_query(&options)).is_err());
    /// assert_eq!(test.elapsed(), std::time::Duration::ZERO); // no retry delay was slept
    /// # }
    /// ```
    #[must_use]
    pub fn retry_if(self, predicate: impl Fn(u32, &E) -> bool + Send + Sync + 'static) -> Self {
        self.edit(|o| o.retry_if = Some(Arc::new(predicate)))
    }
}
