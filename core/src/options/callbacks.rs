//! The callbacks of [`QueryOptions`]: `on_success`, `on_error` and `on_settled`, called after
//! each fetch.

use std::fmt;
use std::sync::Arc;

use super::QueryOptions;
use crate::error::QueryError;

impl<T, E> QueryOptions<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Called with the data after each successful fetch. A panic in it is caught and logged.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let sink = log.clone();
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(5u32) })
    ///     .on_success(move |n| sink.lock().unwrap().push(format!("loaded {n}")));
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// assert_eq!(*log.lock().unwrap(), ["loaded 5"]);
    /// # }
    /// ```
    #[must_use]
    pub fn on_success(self, callback: impl Fn(&T) + Send + Sync + 'static) -> Self {
        self.edit(|o| o.on_success = Some(Arc::new(callback)))
    }

    /// Called with the error after each failed fetch (retries exhausted).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let errors = Arc::new(Mutex::new(Vec::new()));
    /// let sink = errors.clone();
    /// let options = QueryOptions::new(key!("n"), || async { Err::<u32, _>("down".to_string()) })
    ///     .retry(0)
    ///     .on_error(move |error| sink.lock().unwrap().push(error.failed().cloned()));
    /// assert!(test.block_on(client.fetch_query(&options)).is_err());
    /// assert_eq!(*errors.lock().unwrap(), [Some("down".to_string())]);
    /// # }
    /// ```
    #[must_use]
    pub fn on_error(self, callback: impl Fn(&QueryError<E>) + Send + Sync + 'static) -> Self {
        self.edit(|o| o.on_error = Some(Arc::new(callback)))
    }

    /// Called after each fetch, successful or not.
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
    /// let settled = Arc::new(AtomicU32::new(0));
    /// let count = settled.clone();
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) })
    ///     .on_settled(move |_data, _error| { count.fetch_add(1, Ordering::SeqCst); });
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// assert_eq!(settled.load(Ordering::SeqCst), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn on_settled(
        self,
        callback: impl Fn(Option<&T>, Option<&QueryError<E>>) + Send + Sync + 'static,
    ) -> Self {
        self.edit(|o| o.on_settled = Some(Arc::new(callback)))
    }
}
