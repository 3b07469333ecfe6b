//! Persistence options of [`QueryOptions`]: `persist` (opt in to the L2 tier), its record's
//! max age, and `is_persisted`.

use std::fmt;
use std::time::Duration;

use super::QueryOptions;
use crate::storage::record::{Codec, CodecFn};

impl<T, E> QueryOptions<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// How long this query's L2 record lives, apart from how long the query stays in memory
    /// ([`gc_time`](Self::gc_time)): the record's time to live in storage, and the oldest
    /// (by its `data_updated_at`) a record may be to be restored. Default: the client's
    /// ([`QueryClientConfig::persist_max_age`](crate::QueryClientConfig::persist_max_age),
    /// itself 24 hours). `Duration::ZERO` keeps the query out of storage; ten years or more
    /// (such as `Duration::MAX`) writes records without expiry. Only matters with
    /// [`persist`](Self::persist).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::QueryOptions;
    ///
    /// // Memory keeps the query five minutes after its last observer; storage keeps it a week.
    /// let options = QueryOptions::new(("catalog",), || async { Ok::<_, String>(vec!["tea".to_string()]) })
    ///     .gc_time(Duration::from_secs(300))
    ///     .persist_max_age(Duration::from_secs(7 * 24 * 3600))
    ///     .persist();
    /// assert!(options.is_persisted());
    /// # }
    /// ```
    #[must_use]
    pub fn persist_max_age(self, max_age: Duration) -> Self {
        self.edit(|o| o.persist_max_age = Some(max_age))
    }
}

impl<T, E> QueryOptions<T, E>
where
    T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Keeps this query in the client's L2 storage as well as in memory (see
    /// [`crate::storage`]). Without storage configured on the client this does nothing.
    /// Default: memory only.
    ///
    /// Persistence is opt-in per query because Rust cannot ask at run time whether a type
    /// implements `Serialize`: queries whose data cannot be serialized simply never call this,
    /// and share the client with persisted ones. Any use of a key with persisting options
    /// (fetch, prefetch, observer) marks the key persisted, so `set_query_data` and
    /// invalidation of that key are written too.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::QueryOptions;
    ///
    /// let options = QueryOptions::new(("user", 1), || async {
    ///     Ok::<_, std::io::Error>(vec!["Ada".to_string()])
    /// })
    /// .persist();
    /// assert!(options.is_persisted());
    /// ```
    #[must_use]
    pub fn persist(self) -> Self {
        self.edit(|o| o.codec = Some(Codec::<T>::serde as CodecFn<T>))
    }
}

impl<T, E> QueryOptions<T, E> {
    /// Whether [`persist`](Self::persist) was called.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryOptions, key};
    ///
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) });
    /// assert!(!options.is_persisted());
    /// assert!(options.persist().is_persisted());
    /// # }
    /// ```
    pub fn is_persisted(&self) -> bool {
        self.inner.codec.is_some()
    }
}
